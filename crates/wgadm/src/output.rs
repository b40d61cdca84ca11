//! Writing results: JSON for machines, aligned tables for people. A closed pipe
//! (`wgadm peer list | head`) ends the output quietly instead of panicking.

use std::io::{self, Write};

use serde::Serialize;

use crate::error::{Error, Result};

/// Writes text to stdout.
pub fn print(text: &str) -> Result<()> {
    write_stdout(text.as_bytes())
}

/// Writes bytes to stdout.
pub fn write_stdout(bytes: &[u8]) -> Result<()> {
    let mut out = io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        r => r.map_err(|e| Error::io("<stdout>".as_ref(), e)),
    }
}

/// Writes a value as pretty JSON and a newline.
pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::Invalid(format!("cannot write JSON: {e}")))?;
    text.push('\n');
    print(&text)
}

/// Formats rows under a header with columns padded to the widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let cells = |row: &[String]| row.iter().map(|c| c.chars().count()).collect::<Vec<_>>();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, w) in cells(row).into_iter().enumerate() {
            match widths.get_mut(i) {
                Some(width) => *width = (*width).max(w),
                None => widths.push(w),
            }
        }
    }
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    let mut out = String::new();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(&widths) {
            line.push_str(cell);
            line.extend(std::iter::repeat_n(' ', width - cell.chars().count() + 2));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn tables_align_columns() {
        let t = super::table(&["NAME", "IP"], &[vec!["alice".into(), "1".into()]]);
        assert_eq!(t, "NAME   IP\nalice  1\n");
    }
}
