//! Names that become file names or kernel interface names, so they are checked strictly.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A peer's name: 1-64 of `A-Z a-z 0-9 - _ .`, not starting with a dot. It names the files
/// `peers/NAME.yml` and `peers/NAME.key`, so anything that could leave that folder is refused.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerName(String);

/// A network interface name as Linux accepts it: 1-15 bytes, no `/`, no white space.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InterfaceName(String);

/// Why a peer or interface name was refused: the message quotes the name and says what is
/// allowed, so the user can pick one that is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Empty or longer than [`PeerName::MAX_LEN`].
    #[error("peer name {0:?} must be 1 to {max} characters long", max = PeerName::MAX_LEN)]
    PeerLength(String),
    /// A character outside `A-Z a-z 0-9 - _ .`.
    #[error("peer name {0:?} may only contain letters, digits, '-', '_' and '.'")]
    PeerChars(String),
    /// A leading dot (a hidden file, or `..`).
    #[error("peer name {0:?} may not start with '.' (it becomes a file name)")]
    PeerDot(String),
    /// Empty or longer than 15 bytes.
    #[error("interface name {0:?} must be 1 to 15 characters long (a Linux limit)")]
    InterfaceLength(String),
    /// A character the kernel or wg-quick refuses, or `.`/`..`.
    #[error("interface name {0:?} may only contain letters, digits and '-_.=+'")]
    InterfaceChars(String),
}

fn name_chars_ok(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl PeerName {
    /// The longest name accepted.
    pub const MAX_LEN: usize = 64;

    /// Validates a peer name; the error says what is wrong and what is allowed.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if s.is_empty() || s.len() > Self::MAX_LEN {
            return Err(NameError::PeerLength(s.to_owned()));
        }
        if !name_chars_ok(s) {
            return Err(NameError::PeerChars(s.to_owned()));
        }
        if s.starts_with('.') {
            return Err(NameError::PeerDot(s.to_owned()));
        }
        Ok(PeerName(s.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl InterfaceName {
    /// Validates an interface name the way the kernel does (IFNAMSIZ is 16 with the NUL).
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if s.is_empty() || s.len() > 15 {
            return Err(NameError::InterfaceLength(s.to_owned()));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'=' | b'+'))
            || s == "."
            || s == ".."
        {
            return Err(NameError::InterfaceChars(s.to_owned()));
        }
        Ok(InterfaceName(s.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! text_impls {
    ($t:ty) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", self.0)
            }
        }
        impl std::str::FromStr for $t {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                Self::parse(s)
            }
        }
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                crate::de::parsed(d, "", Self::parse)
            }
        }
    };
}
text_impls!(PeerName);
text_impls!(InterfaceName);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for ok in ["alice", "alice-phone", "a_b.c", "A1", &"x".repeat(64)] {
            assert!(PeerName::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_names_that_escape_or_hide() {
        for bad in [
            "",
            "..",
            "../etc",
            "a/b",
            ".hidden",
            "a b",
            "é",
            &"x".repeat(65),
            "a\0",
        ] {
            assert!(PeerName::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn interface_names_follow_the_kernel() {
        assert!(InterfaceName::parse("wg0").is_ok());
        assert!(InterfaceName::parse("wgadm-test-1234").is_ok());
        for bad in ["", "wgadm-test-12345", "a/b", "a b", ".."] {
            assert!(InterfaceName::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn errors_quote_the_name_and_say_what_is_allowed() {
        let text = |e: NameError| e.to_string();
        assert_eq!(
            text(PeerName::parse("a/b").unwrap_err()),
            "peer name \"a/b\" may only contain letters, digits, '-', '_' and '.'"
        );
        assert_eq!(
            text(PeerName::parse("").unwrap_err()),
            "peer name \"\" must be 1 to 64 characters long"
        );
        assert_eq!(
            PeerName::parse(".x").unwrap_err(),
            NameError::PeerDot(".x".into())
        );
        assert_eq!(
            text(InterfaceName::parse("wgadm-test-12345").unwrap_err()),
            "interface name \"wgadm-test-12345\" must be 1 to 15 characters long (a Linux limit)"
        );
    }
}
