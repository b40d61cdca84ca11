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

/// Parses a config; comments (`#`) and blank lines are skipped. The error names the line.
pub fn parse(text: &str) -> Result<Vec<Section>, String> {
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
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| format!("line {}: expected `Key = Value` or `[Section]`", i + 1))?;
        let section = sections
            .last_mut()
            .ok_or_else(|| format!("line {}: a key before any [Section]", i + 1))?;
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
        assert!(parse("Key = 1\n").unwrap_err().contains("line 1"));
        assert!(parse("[Peer]\nnonsense\n").unwrap_err().contains("line 2"));
    }
}
