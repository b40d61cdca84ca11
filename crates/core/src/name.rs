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

fn name_chars_ok(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl PeerName {
    /// The longest name accepted.
    pub const MAX_LEN: usize = 64;

    /// Validates a peer name; the error says what is wrong and what is allowed.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() || s.len() > Self::MAX_LEN {
            return Err(format!(
                "peer name {s:?} must be 1 to {} characters long",
                Self::MAX_LEN
            ));
        }
        if !name_chars_ok(s) {
            return Err(format!(
                "peer name {s:?} may only contain letters, digits, '-', '_' and '.'"
            ));
        }
        if s.starts_with('.') {
            return Err(format!(
                "peer name {s:?} may not start with '.' (it becomes a file name)"
            ));
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
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() || s.len() > 15 {
            return Err(format!(
                "interface name {s:?} must be 1 to 15 characters long (a Linux limit)"
            ));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'=' | b'+'))
            || s == "."
            || s == ".."
        {
            return Err(format!(
                "interface name {s:?} may only contain letters, digits and '-_.=+'"
            ));
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
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
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
}
