//! A reader for wg-quick's INI-like config format, enough to check what the renderers write
//! and to read configs back.

/// One `[Section]` with its `Key = Value` lines in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// `Interface` or `Peer`.
    pub name: String,
    /// The entries as written, keys as in the file.
    pub entries: Vec<(String, String)>,
}

impl Section {
    /// The first value of a key (keys compare case-insensitively, as wg-quick does).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }
}

/// Why a config was refused; the message names the line (1-based).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfError {
    /// A line that is neither `Key = Value` nor `[Section]`.
    #[error("line {0}: expected `Key = Value` or `[Section]`")]
    NotKeyValue(usize),
    /// `Key = Value` before the first `[Section]`.
    #[error("line {0}: a key before any [Section]; start with [Interface]")]
    KeyBeforeSection(usize),
}

/// Parses a config; comments (`#`) and blank lines are skipped. The error names the line.
pub fn parse(text: &str) -> Result<Vec<Section>, ConfError> {
    let mut sections: Vec<Section> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            sections.push(Section {
                name: name.trim().to_owned(),
                entries: Vec::new(),
            });
            continue;
        }
        let (k, v) = line.split_once('=').ok_or(ConfError::NotKeyValue(i + 1))?;
        let section = sections
            .last_mut()
            .ok_or(ConfError::KeyBeforeSection(i + 1))?;
        section
            .entries
            .push((k.trim().to_owned(), v.trim().to_owned()));
    }
    Ok(sections)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sections_and_keys() {
        let c = parse("# x\n[Interface]\nListenPort = 1\n\n[Peer] # y\npublickey=abc=\n").unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].get("listenport"), Some("1"));
        assert_eq!(c[1].get("PublicKey"), Some("abc="));
        assert_eq!(parse("Key = 1\n"), Err(ConfError::KeyBeforeSection(1)));
        assert!(parse("Key = 1\n")
            .unwrap_err()
            .to_string()
            .contains("line 1"));
        assert_eq!(
            parse("[Peer]\nnonsense\n").unwrap_err().to_string(),
            "line 2: expected `Key = Value` or `[Section]`"
        );
    }
}
