//! What a live WireGuard device reports, and the parser of `wg show <if> dump`.

use ipnet::Ipv4Net;

use crate::{Key, KeyError, Secret};

/// The interface as observed. Its private key is never kept: only the public key.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The interface's public key, if it has a private key set.
    pub public_key: Option<Key>,
    /// The UDP port it listens on (0: none).
    pub listen_port: u16,
    /// Its peers, in the order the device lists them.
    pub peers: Vec<ObservedPeer>,
}

/// One peer as the device reports it.
#[derive(Debug, Clone)]
pub struct ObservedPeer {
    /// The peer's public key: its identity on the device.
    pub public_key: Key,
    /// The preshared key, when one is set. Kept only to compare with the desired one.
    pub preshared_key: Option<Secret>,
    /// The last endpoint the peer was seen at, as `IP:PORT`.
    pub endpoint: Option<String>,
    /// Its AllowedIPs (IPv4 only: wgadm manages IPv4).
    pub allowed_ips: Vec<Ipv4Net>,
    /// Unix time of the latest handshake; 0 when there never was one.
    pub latest_handshake: u64,
    /// Bytes received from the peer.
    pub rx_bytes: u64,
    /// Bytes sent to the peer.
    pub tx_bytes: u64,
    /// PersistentKeepalive on this side, seconds (0: off).
    pub keepalive: u16,
}

/// Which text [`ParseError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The output of `wg show <if> dump`.
    Dump,
    /// A userspace implementation's answer to `get=1`.
    Uapi,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Origin::Dump => "`wg show dump`",
            Origin::Uapi => "the UAPI answer",
        })
    }
}

/// Why a device's report could not be read: the message names the text and the line, and
/// never repeats a secret (private and preshared keys are not quoted).
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// `wg show dump` printed nothing at all.
    #[error("`wg show dump` printed nothing")]
    Empty,
    /// A dump line with the wrong number of tab-separated fields.
    #[error("line {line} of `wg show dump` has {found} fields, expected {expected}")]
    Fields {
        /// The line, 1-based.
        line: usize,
        /// The fields it has.
        found: usize,
        /// The fields it should have.
        expected: usize,
    },
    /// A field that should be a number.
    #[error("line {line} of {origin}: {what} is not a number")]
    Number {
        /// The text.
        origin: Origin,
        /// The line, 1-based.
        line: usize,
        /// The field.
        what: &'static str,
        /// Why.
        source: std::num::ParseIntError,
    },
    /// A key that is not a WireGuard key.
    #[error("line {line} of `wg show dump`: {what} {source}")]
    Key {
        /// The line, 1-based.
        line: usize,
        /// `key` or `preshared key`.
        what: &'static str,
        /// Why.
        source: KeyError,
    },
    /// An allowed ip that is not an IPv4 network.
    #[error("line {line} of {origin}: bad allowed ip {value}")]
    AllowedIp {
        /// The text.
        origin: Origin,
        /// The line, 1-based.
        line: usize,
        /// The value as written.
        value: String,
        /// Why.
        source: ipnet::AddrParseError,
    },
    /// A UAPI line without `=`.
    #[error("line {0} of the UAPI answer has no '='")]
    NoEquals(usize),
    /// A UAPI listen port above 65535.
    #[error("line {line} of the UAPI answer: bad listen_port")]
    ListenPort {
        /// The line, 1-based.
        line: usize,
        /// Why.
        source: std::num::TryFromIntError,
    },
    /// A UAPI public key that is not 64 hex digits.
    #[error("line {0} of the UAPI answer: bad public_key")]
    HexKey(usize),
    /// The implementation answered with an error.
    #[error("the UAPI answered errno={0}")]
    Errno(u64),
    /// The answer ended before its `errno=` line.
    #[error("the UAPI answer has no errno line (cut short?)")]
    NoErrno,
}

fn none(field: &str) -> Option<&str> {
    (field != "(none)" && field != "off" && !field.is_empty()).then_some(field)
}

/// A number field of line `line` of `origin`.
fn number(origin: Origin, line: usize, what: &'static str, v: &str) -> Result<u64, ParseError> {
    v.parse().map_err(|source| ParseError::Number {
        origin,
        line,
        what,
        source,
    })
}

/// The IPv4 networks of an allowed-ips field; IPv6 ones are skipped (wgadm manages IPv4).
fn allowed_ip(origin: Origin, line: usize, v: &str) -> Result<Ipv4Net, ParseError> {
    v.parse().map_err(|source| ParseError::AllowedIp {
        origin,
        line,
        value: v.to_owned(),
        source,
    })
}

/// Parses the output of `wg show <if> dump`: a tab-separated interface line (private key,
/// public key, listen port, fwmark) and then one line per peer (public key, preshared key,
/// endpoint, allowed ips, latest handshake, rx, tx, keepalive). The error names the line.
pub fn parse_dump(text: &str) -> Result<Observed, ParseError> {
    let mut lines = text.lines();
    let first = lines.next().ok_or(ParseError::Empty)?;
    let f = fields(first, 1, 4)?;
    let key = |line: usize, v: &str| {
        Key::parse(v).map_err(|source| ParseError::Key {
            line,
            what: "key",
            source,
        })
    };
    let mut observed = Observed {
        public_key: none(f[1]).map(|k| key(1, k)).transpose()?,
        listen_port: number(Origin::Dump, 1, "listen port", f[2])? as u16,
        peers: Vec::new(),
    };
    for (i, line) in lines.enumerate() {
        let n = i + 2;
        let f = fields(line, n, 8)?;
        let allowed_ips = none(f[3])
            .map(|list| {
                list.split(',')
                    .filter(|a| !a.contains(':'))
                    .map(|a| allowed_ip(Origin::Dump, n, a))
                    .collect::<Result<Vec<Ipv4Net>, ParseError>>()
            })
            .transpose()?
            .unwrap_or_default();
        let number = |what, v| number(Origin::Dump, n, what, v);
        observed.peers.push(ObservedPeer {
            public_key: key(n, f[0])?,
            preshared_key: none(f[1])
                .map(|k| {
                    Secret::parse(k).map_err(|source| ParseError::Key {
                        line: n,
                        what: "preshared key",
                        source,
                    })
                })
                .transpose()?,
            endpoint: none(f[2]).map(str::to_owned),
            allowed_ips,
            latest_handshake: number("latest handshake", f[4])?,
            rx_bytes: number("rx bytes", f[5])?,
            tx_bytes: number("tx bytes", f[6])?,
            keepalive: none(f[7])
                .map(|k| number("keepalive", k))
                .transpose()?
                .unwrap_or(0) as u16,
        });
    }
    Ok(observed)
}

/// The tab-separated fields of dump line `line`, which must have `expected` of them.
fn fields(text: &str, line: usize, expected: usize) -> Result<Vec<&str>, ParseError> {
    let f: Vec<&str> = text.split('\t').collect();
    if f.len() != expected {
        return Err(ParseError::Fields {
            line,
            found: f.len(),
            expected,
        });
    }
    Ok(f)
}

/// Parses the answer of a userspace implementation (wireguard-go) to `get=1` on its UAPI
/// socket: `key=value` lines, keys in hex, a `public_key=` line starting each peer, ending in
/// `errno=N`. For monitoring: the interface's private key and the preshared keys are skipped
/// unread, so `public_key` and every `preshared_key` of the result are `None`. Time is
/// `last_handshake_time_sec`, whole seconds as in `wg show dump`.
pub fn parse_uapi(text: &str) -> Result<Observed, ParseError> {
    let mut observed = Observed::default();
    let mut errno = None;
    for (i, line) in text.lines().enumerate() {
        if line.is_empty() {
            continue;
        }
        let n = i + 1;
        let (k, v) = line.split_once('=').ok_or(ParseError::NoEquals(n))?;
        let number = |what| number(Origin::Uapi, n, what, v);
        let peer = observed.peers.last_mut();
        match (k, peer) {
            ("private_key" | "preshared_key" | "fwmark" | "protocol_version", _) => {}
            ("listen_port", _) => {
                observed.listen_port = u16::try_from(number("listen_port")?)
                    .map_err(|source| ParseError::ListenPort { line: n, source })?
            }
            ("errno", _) => errno = Some(number("errno")?),
            ("public_key", _) => observed.peers.push(ObservedPeer {
                public_key: Key::from(hex32(v).ok_or(ParseError::HexKey(n))?),
                preshared_key: None,
                endpoint: None,
                allowed_ips: Vec::new(),
                latest_handshake: 0,
                rx_bytes: 0,
                tx_bytes: 0,
                keepalive: 0,
            }),
            (_, None) => {}
            ("endpoint", Some(p)) => p.endpoint = Some(v.to_owned()),
            ("last_handshake_time_sec", Some(p)) => {
                p.latest_handshake = number("last_handshake_time_sec")?
            }
            ("rx_bytes", Some(p)) => p.rx_bytes = number("rx_bytes")?,
            ("tx_bytes", Some(p)) => p.tx_bytes = number("tx_bytes")?,
            ("persistent_keepalive_interval", Some(p)) => {
                p.keepalive =
                    u16::try_from(number("persistent_keepalive_interval")?).unwrap_or(u16::MAX)
            }
            // IPv6 allowed ips are skipped: wgadm manages IPv4.
            ("allowed_ip", Some(p)) if !v.contains(':') => {
                p.allowed_ips.push(allowed_ip(Origin::Uapi, n, v)?)
            }
            _ => {}
        }
    }
    match errno {
        Some(0) => Ok(observed),
        Some(e) => Err(ParseError::Errno(e)),
        None => Err(ParseError::NoErrno),
    }
}

/// 64 hex digits as 32 bytes.
fn hex32(text: &str) -> Option<[u8; 32]> {
    let b = text.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_dump() {
        let a = Key::from([1; 32]);
        let b = Key::from([2; 32]);
        let text = format!(
            "(none)\t{a}\t51820\toff\n\
             {b}\t(none)\t10.0.0.2:4000\t192.168.100.2/32\t1700000000\t100\t200\toff\n\
             {a}\t{b}\t(none)\t(none)\t0\t0\t0\t25\n"
        );
        let o = parse_dump(&text).unwrap();
        assert_eq!(o.public_key, Some(a));
        assert_eq!(o.listen_port, 51820);
        assert_eq!(o.peers.len(), 2);
        assert_eq!(o.peers[0].endpoint.as_deref(), Some("10.0.0.2:4000"));
        assert_eq!(
            o.peers[0].allowed_ips,
            vec!["192.168.100.2/32".parse::<Ipv4Net>().unwrap()]
        );
        assert_eq!((o.peers[0].rx_bytes, o.peers[0].tx_bytes), (100, 200));
        assert!(o.peers[1].preshared_key.is_some() && o.peers[1].allowed_ips.is_empty());
        assert_eq!(o.peers[1].keepalive, 25);
    }

    #[test]
    fn parses_a_uapi_answer_without_reading_secrets() {
        let a = Key::from([0xab; 32]);
        let text = format!(
            "private_key={}\nlisten_port=51820\npublic_key={}\npreshared_key={}\n\
             protocol_version=1\nendpoint=198.51.100.10:40000\nlast_handshake_time_sec=1700000000\n\
             last_handshake_time_nsec=5\ntx_bytes=200\nrx_bytes=100\n\
             persistent_keepalive_interval=25\nallowed_ip=192.168.100.2/32\nallowed_ip=fd00::2/128\n\
             public_key={}\nlast_handshake_time_sec=0\nerrno=0\n\n",
            "11".repeat(32),
            a.to_hex(),
            "22".repeat(32),
            Key::from([1; 32]).to_hex()
        );
        let o = parse_uapi(&text).unwrap();
        assert_eq!((o.public_key, o.listen_port), (None, 51820));
        assert_eq!(o.peers.len(), 2);
        let p = &o.peers[0];
        assert_eq!(p.public_key, a);
        assert!(p.preshared_key.is_none());
        assert_eq!(p.endpoint.as_deref(), Some("198.51.100.10:40000"));
        assert_eq!(
            (p.latest_handshake, p.rx_bytes, p.tx_bytes, p.keepalive),
            (1_700_000_000, 100, 200, 25)
        );
        assert_eq!(
            p.allowed_ips,
            vec!["192.168.100.2/32".parse::<Ipv4Net>().unwrap()]
        );
        assert!(matches!(
            parse_uapi("listen_port=1\nerrno=19\n"),
            Err(ParseError::Errno(19))
        ));
        assert!(parse_uapi("listen_port=1\n").is_err());
        let bad = format!("public_key={}\nerrno=0\n", "zz".repeat(32));
        assert_eq!(
            parse_uapi(&bad).unwrap_err().to_string(),
            "line 1 of the UAPI answer: bad public_key"
        );
        // Errors never echo a secret line.
        let e =
            parse_uapi(&format!("private_key={}\nlisten_port=x\n", "33".repeat(32))).unwrap_err();
        let text = e.to_string();
        assert!(!text.contains("3333"), "{text}");
        // The cause is kept for a caller that wants it.
        assert!(std::error::Error::source(&e).is_some(), "{e:?}");
    }

    #[test]
    fn bad_dumps_name_the_line() {
        assert!(parse_dump("").is_err());
        assert_eq!(
            parse_dump("a\tb\n").unwrap_err().to_string(),
            "line 1 of `wg show dump` has 2 fields, expected 4"
        );
        let k = Key::from([1; 32]);
        let bad = format!("(none)\t{k}\t1\toff\n{k}\t(none)\t(none)\t(none)\tx\t0\t0\toff\n");
        assert_eq!(
            parse_dump(&bad).unwrap_err().to_string(),
            "line 2 of `wg show dump`: latest handshake is not a number"
        );
    }
}
