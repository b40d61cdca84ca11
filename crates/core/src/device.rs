//! What a live WireGuard device reports, and the parser of `wg show <if> dump`.

use ipnet::Ipv4Net;

use crate::{Key, Secret};

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

fn none(field: &str) -> Option<&str> {
    (field != "(none)" && field != "off" && !field.is_empty()).then_some(field)
}

/// Parses the output of `wg show <if> dump`: a tab-separated interface line (private key,
/// public key, listen port, fwmark) and then one line per peer (public key, preshared key,
/// endpoint, allowed ips, latest handshake, rx, tx, keepalive). The error names the line.
pub fn parse_dump(text: &str) -> Result<Observed, String> {
    let mut lines = text.lines();
    let first = lines.next().ok_or("`wg show dump` printed nothing")?;
    let f: Vec<&str> = first.split('\t').collect();
    if f.len() != 4 {
        return Err(format!(
            "line 1 of `wg show dump` has {} fields, expected 4",
            f.len()
        ));
    }
    let number = |line: usize, what: &str, v: &str| -> Result<u64, String> {
        v.parse()
            .map_err(|_| format!("line {line} of `wg show dump`: {what} is not a number"))
    };
    let key = |line: usize, v: &str| {
        Key::parse(v).map_err(|e| format!("line {line} of `wg show dump`: key {e}"))
    };
    let mut observed = Observed {
        public_key: none(f[1]).map(|k| key(1, k)).transpose()?,
        listen_port: number(1, "listen port", f[2])? as u16,
        peers: Vec::new(),
    };
    for (i, line) in lines.enumerate() {
        let n = i + 2;
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() != 8 {
            return Err(format!(
                "line {n} of `wg show dump` has {} fields, expected 8",
                f.len()
            ));
        }
        let allowed_ips = none(f[3])
            .map(|list| {
                list.split(',')
                    .filter(|a| !a.contains(':'))
                    .map(|a| {
                        a.parse()
                            .map_err(|_| format!("line {n} of `wg show dump`: bad allowed ip {a}"))
                    })
                    .collect::<Result<Vec<Ipv4Net>, String>>()
            })
            .transpose()?
            .unwrap_or_default();
        observed.peers.push(ObservedPeer {
            public_key: key(n, f[0])?,
            preshared_key: none(f[1])
                .map(|k| {
                    Secret::parse(k)
                        .map_err(|e| format!("line {n} of `wg show dump`: preshared key {e}"))
                })
                .transpose()?,
            endpoint: none(f[2]).map(str::to_owned),
            allowed_ips,
            latest_handshake: number(n, "latest handshake", f[4])?,
            rx_bytes: number(n, "rx bytes", f[5])?,
            tx_bytes: number(n, "tx bytes", f[6])?,
            keepalive: none(f[7])
                .map(|k| number(n, "keepalive", k))
                .transpose()?
                .unwrap_or(0) as u16,
        });
    }
    Ok(observed)
}

/// Parses the answer of a userspace implementation (wireguard-go) to `get=1` on its UAPI
/// socket: `key=value` lines, keys in hex, a `public_key=` line starting each peer, ending in
/// `errno=N`. For monitoring: the interface's private key and the preshared keys are skipped
/// unread, so `public_key` and every `preshared_key` of the result are `None`. Time is
/// `last_handshake_time_sec`, whole seconds as in `wg show dump`.
pub fn parse_uapi(text: &str) -> Result<Observed, String> {
    let mut observed = Observed::default();
    let mut errno = None;
    for (i, line) in text.lines().enumerate() {
        if line.is_empty() {
            continue;
        }
        let n = i + 1;
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| format!("line {n} of the UAPI answer has no '='"))?;
        let number = |what: &str| -> Result<u64, String> {
            v.parse()
                .map_err(|_| format!("line {n} of the UAPI answer: {what} is not a number"))
        };
        let peer = observed.peers.last_mut();
        match (k, peer) {
            ("private_key" | "preshared_key" | "fwmark" | "protocol_version", _) => {}
            ("listen_port", _) => {
                observed.listen_port = u16::try_from(number("listen_port")?)
                    .map_err(|_| format!("line {n} of the UAPI answer: bad listen_port"))?
            }
            ("errno", _) => errno = Some(number("errno")?),
            ("public_key", _) => observed.peers.push(ObservedPeer {
                public_key: Key::from(
                    hex32(v)
                        .ok_or_else(|| format!("line {n} of the UAPI answer: bad public_key"))?,
                ),
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
            ("last_handshake_time_sec", Some(p)) => p.latest_handshake = number(k)?,
            ("rx_bytes", Some(p)) => p.rx_bytes = number(k)?,
            ("tx_bytes", Some(p)) => p.tx_bytes = number(k)?,
            ("persistent_keepalive_interval", Some(p)) => {
                p.keepalive = u16::try_from(number(k)?).unwrap_or(u16::MAX)
            }
            // IPv6 allowed ips are skipped: wgadm manages IPv4.
            ("allowed_ip", Some(p)) if !v.contains(':') => p.allowed_ips.push(
                v.parse()
                    .map_err(|_| format!("line {n} of the UAPI answer: bad allowed ip {v}"))?,
            ),
            _ => {}
        }
    }
    match errno {
        Some(0) => Ok(observed),
        Some(e) => Err(format!("the UAPI answered errno={e}")),
        None => Err("the UAPI answer has no errno line (cut short?)".into()),
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
        assert!(parse_uapi("listen_port=1\nerrno=19\n")
            .unwrap_err()
            .contains("19"));
        assert!(parse_uapi("listen_port=1\n").is_err());
        let bad = format!("public_key={}\nerrno=0\n", "zz".repeat(32));
        assert!(parse_uapi(&bad).unwrap_err().contains("line 1"));
        // Errors never echo a secret line.
        let e =
            parse_uapi(&format!("private_key={}\nlisten_port=x\n", "33".repeat(32))).unwrap_err();
        assert!(!e.contains("3333"), "{e}");
    }

    #[test]
    fn bad_dumps_name_the_line() {
        assert!(parse_dump("").is_err());
        assert!(parse_dump("a\tb\n").unwrap_err().contains("line 1"));
        let k = Key::from([1; 32]);
        let bad = format!("(none)\t{k}\t1\toff\n{k}\t(none)\t(none)\t(none)\tx\t0\t0\toff\n");
        assert!(parse_dump(&bad).unwrap_err().contains("line 2"));
    }
}
