//! The server's endpoint, `HOST:PORT`, as every client config carries it.
//!
//! It is the one free-form text of the state that reaches a rendered config, so it is a type
//! that only a valid endpoint can become: a DNS name (letters, digits and '-' in dot-separated
//! labels), a dotted IPv4 address or a bracketed IPv6 address, then `:` and a port 1-65535.
//! Nothing else (no white space, no '#', no control character) can be in it, so a hand-edited
//! `server.yml` cannot add a line to a client config.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A validated `HOST:PORT`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Endpoint(String);

/// Why an endpoint was refused. Never contains the input: it comes from a hand-edited file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// Empty.
    #[error("is empty")]
    Empty,
    /// A character no host name or address has.
    #[error(
        "contains white space or another character that is not allowed (only letters, \
         digits, '.', '-', ':' and the brackets of an IPv6 address)"
    )]
    BadChar,
    /// An IPv6 address without brackets.
    #[error("looks like an IPv6 address: put it in brackets, like [2001:db8::1]:51820")]
    UnbracketedIpv6,
    /// `[` without `]`, text between `]` and `:`, or a bracketed text that is no IPv6 address.
    #[error("has brackets that do not hold just an IPv6 address")]
    BadIpv6,
    /// No `:PORT`.
    #[error("has no port: write HOST:PORT")]
    NoPort,
    /// The port is not 1-65535 written plainly.
    #[error("has a port that is not a number 1-65535 (without leading zeros)")]
    BadPort,
    /// The host is no DNS name.
    #[error(
        "has a host that is neither an IPv4 address nor a DNS name (labels of 1-63 letters, \
         digits or '-', not starting or ending with '-', at most 253 characters in all, \
         the last label not all digits)"
    )]
    BadHost,
}

fn port(text: &str) -> Result<u16, EndpointError> {
    if text.is_empty()
        || text.len() > 5
        || !text.bytes().all(|b| b.is_ascii_digit())
        || text.starts_with('0')
    {
        return Err(EndpointError::BadPort);
    }
    match text.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(EndpointError::BadPort),
    }
}

fn dns_name(host: &str) -> bool {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    // A last label of digits only would be a mistyped IPv4 address (no top-level domain is
    // numeric, RFC 3696 section 2), and resolvers would read some of those as numbers.
    host.len() <= 253
        && host.split('.').all(label_ok)
        && host
            .rsplit('.')
            .next()
            .is_some_and(|l| !l.bytes().all(|b| b.is_ascii_digit()))
}

impl Endpoint {
    /// Parses `HOST:PORT`; the port is required.
    pub fn parse(text: &str) -> Result<Self, EndpointError> {
        Self::parse_with_default(text, None)
    }

    /// Parses `HOST:PORT` or `HOST`, which gets `default_port` (what `init --endpoint` does
    /// with `--listen-port`).
    pub fn with_default_port(text: &str, default_port: u16) -> Result<Self, EndpointError> {
        Self::parse_with_default(text, Some(default_port))
    }

    fn parse_with_default(text: &str, default_port: Option<u16>) -> Result<Self, EndpointError> {
        if text.is_empty() {
            return Err(EndpointError::Empty);
        }
        if !text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
        {
            return Err(EndpointError::BadChar);
        }
        let (host, port_text) = if let Some(rest) = text.strip_prefix('[') {
            let (inside, after) = rest.split_once(']').ok_or(EndpointError::BadIpv6)?;
            if inside.parse::<Ipv6Addr>().is_err() {
                return Err(EndpointError::BadIpv6);
            }
            let port_text = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or(EndpointError::BadIpv6)?),
            };
            (format!("[{inside}]"), port_text)
        } else {
            if text.contains('[') || text.contains(']') {
                return Err(EndpointError::BadIpv6);
            }
            match text.split_once(':') {
                Some((_, rest)) if rest.contains(':') => {
                    return Err(EndpointError::UnbracketedIpv6)
                }
                Some((h, p)) => (h.to_owned(), Some(p)),
                None => (text.to_owned(), None),
            }
        };
        if !host.starts_with('[') && host.parse::<Ipv4Addr>().is_err() && !dns_name(&host) {
            return Err(EndpointError::BadHost);
        }
        let port = match (port_text, default_port) {
            (Some(p), _) => port(p)?,
            (None, Some(p)) if p > 0 => p,
            (None, Some(_)) => return Err(EndpointError::BadPort),
            (None, None) => return Err(EndpointError::NoPort),
        };
        Ok(Endpoint(format!("{host}:{port}")))
    }

    /// The endpoint as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl std::str::FromStr for Endpoint {
    type Err = EndpointError;
    fn from_str(s: &str) -> Result<Self, EndpointError> {
        Endpoint::parse(s)
    }
}

impl Serialize for Endpoint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Endpoint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::de::parsed(d, "the endpoint", Endpoint::parse)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_names_and_addresses_with_a_port() {
        for ok in [
            "vpn.example.com:51820",
            "localhost:1",
            "a-b.c0.example:65535",
            "1.2.3.4:443",
            "[2001:db8::1]:51820",
            "[::1]:9",
            "xn--bcher-kva.example:51820",
        ] {
            assert_eq!(Endpoint::parse(ok).unwrap().as_str(), ok);
        }
        let l63 = "a".repeat(63);
        let long = format!("{l63}.{l63}.{l63}.{}:1", "a".repeat(61));
        assert!(Endpoint::parse(&long).is_ok());
    }

    #[test]
    fn init_fills_in_the_port() {
        let e = |t: &str| Endpoint::with_default_port(t, 51820).map(|e| e.to_string());
        assert_eq!(e("vpn.example.com").unwrap(), "vpn.example.com:51820");
        assert_eq!(e("1.2.3.4:443").unwrap(), "1.2.3.4:443");
        assert_eq!(e("[2001:db8::1]").unwrap(), "[2001:db8::1]:51820");
        assert_eq!(
            Endpoint::parse("vpn.example.com"),
            Err(EndpointError::NoPort)
        );
    }

    #[test]
    fn refuses_everything_else_without_echoing_it() {
        let l63 = "a".repeat(63);
        let too_long = format!("{l63}.{l63}.{l63}.{}:1", "a".repeat(62));
        let bad_label = format!("{}.example:1", "a".repeat(64));
        for bad in [
            "",
            "vpn.example.com:51820\nPostUp = touch /tmp/pwned",
            "vpn.example.com:51820\r",
            "vpn.example.com:51820 # x",
            "vpn.example.com:51820#",
            "a b:1",
            "host:0",
            "host:65536",
            "host:x",
            "host:",
            "host:+1",
            "host:0443",
            "host:1:2",
            "2001:db8::5",
            "[::1",
            "[::1]x:1",
            "[vpn.example.com]:1",
            "[1.2.3.4]:1",
            ":51820",
            "-a.example:1",
            "a-.example:1",
            "a..b:1",
            ".a:1",
            "a.:1",
            "1.2.3.256:1",
            "1.2.3:1",
            "0x7f.1:1",
            "a_b.example:1",
            "vpn.\u{e9}xample:1",
            "host:1\u{0}",
            &too_long,
            &bad_label,
        ] {
            let err = Endpoint::parse(bad).expect_err(bad);
            let msg = err.to_string();
            assert!(bad.is_empty() || !msg.contains(bad), "{msg}");
        }
    }

    proptest! {
        /// Whatever is accepted is one line of host characters: no way to add a line or a
        /// comment to a config.
        #[test]
        fn accepted_endpoints_are_plain(text in "\\PC{0,40}|[a-z0-9.:\\[\\]\\-\n#]{0,40}") {
            if let Ok(e) = Endpoint::parse(&text) {
                prop_assert!(e.as_str().bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b)));
                prop_assert_eq!(e.as_str(), text.as_str());
            }
        }
    }
}
