//! The userspace backend: the cross-platform UAPI of wireguard-go and boringtun over the unix
//! socket `/var/run/wireguard/IF.sock` (<https://www.wireguard.com/xplatform/>).
//!
//! A request is `get=1\n\n` or `set=1\n` followed by `key=value` lines and a blank line. The
//! answer is `key=value` lines (for `get`) ending in `errno=N` and a blank line; the connection
//! stays open afterwards, so the reader stops at that blank line. The answer is parsed line by
//! line as it arrives, from a fixed buffer: the interface's private key (the first line of a
//! `get` answer) is never copied into a growing buffer, and every buffer is wiped on drop.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;
use zeroize::Zeroizing;

use crate::{
    secret_bytes, secret_from, ChangeSet, Error, Interface, Key, Peer, PeerChange, PresharedKey,
    Secret,
};

/// A line longer than this is not from a WireGuard implementation.
const MAX_LINE: usize = 4096;
/// How long one request may take before it is given up (a hung implementation).
const TIMEOUT: Duration = Duration::from_secs(30);

/// Reads the interface over its UAPI socket.
pub(crate) fn read(iface: &str, socket: &Path) -> Result<Interface, Error> {
    let mut parser = GetParser::default();
    let errno = exchange(iface, socket, b"get=1\n\n", |line| parser.line(iface, line))?;
    if errno != 0 {
        return Err(userspace_error(iface, "read", errno, None));
    }
    Ok(parser.finish())
}

/// Applies a change set with one `set=1` request.
pub(crate) fn apply(iface: &str, socket: &Path, changes: &ChangeSet) -> Result<(), Error> {
    let request = encode_set(changes);
    let errno = exchange(iface, socket, &request, |line| {
        // A `set` answer is only `errno=N`; anything else is ignored like an unknown key.
        let _ = line;
        Ok(())
    })?;
    if errno != 0 {
        let peer = match changes.peers.as_slice() {
            [only] => Some(*only.public_key()),
            _ => None,
        };
        return Err(userspace_error(iface, "change", errno, peer));
    }
    Ok(())
}

fn userspace_error(iface: &str, what: &'static str, errno: i64, peer: Option<Key>) -> Error {
    // wireguard-go sends the errno negated (`errno=-22`); take its magnitude.
    let raw = i32::try_from(errno.unsigned_abs()).unwrap_or(libc::EIO);
    Error::Userspace {
        iface: iface.to_owned(),
        what,
        errno,
        peer,
        source: io::Error::from_raw_os_error(raw),
    }
}

/// Sends `request` and feeds every answer line but the final `errno=N` to `on_line`; returns N.
fn exchange(
    iface: &str,
    socket: &Path,
    request: &[u8],
    mut on_line: impl FnMut(&str) -> Result<(), Error>,
) -> Result<i64, Error> {
    let io_err = |source: io::Error| Error::Io {
        iface: iface.to_owned(),
        channel: socket.display().to_string(),
        source,
    };
    let mut stream = UnixStream::connect(socket).map_err(io_err)?;
    stream.set_read_timeout(Some(TIMEOUT)).map_err(io_err)?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(io_err)?;
    stream.write_all(request).map_err(io_err)?;
    let mut reader = LineReader::default();
    let mut buf = Zeroizing::new([0u8; 16 << 10]);
    let mut errno = None;
    loop {
        // A stop and continue (job control, a frozen cgroup) ends a read that has a timeout with
        // EINTR even without a signal handler: read again.
        let n = match stream.read(&mut buf[..]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err(e)),
        };
        if n == 0 {
            return Err(malformed(
                iface,
                "the socket closed before `errno=` and a blank line",
            ));
        }
        let mut done = false;
        reader.feed(iface, &buf[..n], |line| {
            if done {
                return Err(malformed(iface, "data after the end of the answer"));
            }
            match (errno, line) {
                (Some(_), "") => {
                    done = true;
                    Ok(())
                }
                (Some(_), _) => Err(malformed(iface, "a line after `errno=`")),
                (None, line) => match line.strip_prefix("errno=") {
                    Some(v) => {
                        errno = Some(v.parse::<i64>().map_err(|_| {
                            malformed(iface, &format!("`errno={v}` is not a number"))
                        })?);
                        Ok(())
                    }
                    None => on_line(line),
                },
            }
        })?;
        if done {
            // `done` is only set once `errno` is.
            return Ok(errno.unwrap_or(0));
        }
    }
}

fn malformed(iface: &str, what: &str) -> Error {
    Error::Malformed {
        iface: iface.to_owned(),
        what: what.to_owned(),
    }
}

/// Splits a byte stream into lines without keeping more than one partial line.
#[derive(Default)]
struct LineReader {
    pending: Zeroizing<Vec<u8>>,
}

impl LineReader {
    fn feed(
        &mut self,
        iface: &str,
        mut bytes: &[u8],
        mut on_line: impl FnMut(&str) -> Result<(), Error>,
    ) -> Result<(), Error> {
        if self.pending.capacity() < MAX_LINE {
            // Allocated once at its final size, so a partial secret is never left in a freed
            // smaller buffer.
            self.pending.reserve_exact(MAX_LINE);
        }
        while let Some(pos) = bytes.iter().position(|&b| b == b'\n') {
            let line = if self.pending.is_empty() {
                &bytes[..pos]
            } else {
                self.push(iface, &bytes[..pos])?;
                &self.pending[..]
            };
            let text = std::str::from_utf8(line)
                .map_err(|_| malformed(iface, "a line that is not UTF-8"))?;
            on_line(text)?;
            self.pending.clear();
            bytes = &bytes[pos + 1..];
        }
        self.push(iface, bytes)
    }

    fn push(&mut self, iface: &str, bytes: &[u8]) -> Result<(), Error> {
        if self.pending.len() + bytes.len() > MAX_LINE {
            return Err(malformed(
                iface,
                &format!("a line longer than {MAX_LINE} bytes"),
            ));
        }
        self.pending.extend_from_slice(bytes);
        Ok(())
    }
}

/// Builds an [`Interface`] from the lines of a `get` answer.
#[derive(Default)]
struct GetParser {
    iface: Interface,
    handshake_sec: u64,
    handshake_nsec: u32,
}

impl GetParser {
    fn line(&mut self, iface: &str, line: &str) -> Result<(), Error> {
        let Some((key, value)) = line.split_once('=') else {
            return Err(malformed(iface, "a line without `=`"));
        };
        let bad = |what: &str| malformed(iface, &format!("{key}: {what}"));
        let number = |v: &str| v.parse::<u64>().map_err(|_| bad("not a number"));
        if key == "public_key" {
            self.close_peer();
            let key = Key::from(*hex32(value).ok_or_else(|| bad("not 64 hex digits"))?);
            self.iface.peers.push(Peer::new(key));
            return Ok(());
        }
        if key == "private_key" {
            // Read only to derive the public key: the kernel sends the public key itself.
            let bytes = hex32(value).ok_or_else(|| bad("not 64 hex digits"))?;
            self.iface.public_key = secret_from(&bytes).map(|s| s.public_key());
            return Ok(());
        }
        let peer = self.iface.peers.last_mut();
        match (key, peer) {
            ("listen_port", _) => {
                self.iface.listen_port = value.parse().map_err(|_| bad("not a port"))?
            }
            ("fwmark", _) => self.iface.fwmark = value.parse().map_err(|_| bad("not a number"))?,
            ("preshared_key", Some(p)) => {
                let bytes = hex32(value).ok_or_else(|| bad("not 64 hex digits"))?;
                p.preshared_key = secret_from(&bytes);
            }
            ("endpoint", Some(p)) => {
                p.endpoint = Some(
                    value
                        .parse::<SocketAddr>()
                        .map_err(|_| bad("not IP:PORT"))?,
                )
            }
            ("allowed_ip", Some(p)) => p
                .allowed_ips
                .push(value.parse::<IpNet>().map_err(|_| bad("not an IP/CIDR"))?),
            ("last_handshake_time_sec", Some(_)) => self.handshake_sec = number(value)?,
            ("last_handshake_time_nsec", Some(_)) => {
                self.handshake_nsec = value.parse().map_err(|_| bad("not a number"))?
            }
            ("rx_bytes", Some(p)) => p.rx_bytes = number(value)?,
            ("tx_bytes", Some(p)) => p.tx_bytes = number(value)?,
            ("persistent_keepalive_interval", Some(p)) => {
                p.keepalive = value.parse().map_err(|_| bad("not a number"))?
            }
            // protocol_version and keys of newer implementations.
            _ => {}
        }
        Ok(())
    }

    fn close_peer(&mut self) {
        if let Some(p) = self.iface.peers.last_mut() {
            if self.handshake_sec != 0 || self.handshake_nsec != 0 {
                p.latest_handshake = Some(Duration::new(self.handshake_sec, self.handshake_nsec));
            }
        }
        self.handshake_sec = 0;
        self.handshake_nsec = 0;
    }

    fn finish(mut self) -> Interface {
        self.close_peer();
        self.iface
    }
}

/// Decodes 64 hex digits.
fn hex32(text: &str) -> Option<Zeroizing<[u8; 32]>> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = Zeroizing::new([0u8; 32]);
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

/// Appends `key=HEX\n` for a secret without an intermediate string of the secret.
fn push_secret(out: &mut Zeroizing<String>, key: &str, secret: &Secret) {
    let bytes = secret_bytes(secret);
    push_hex(out, key, &bytes);
}

fn push_hex(out: &mut Zeroizing<String>, key: &str, bytes: &[u8; 32]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push_str(key);
    out.push('=');
    for b in bytes {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 15)] as char);
    }
    out.push('\n');
}

/// The `set=1` request for a change set. Per peer, `update_only` and `remove` follow
/// `public_key` directly: wireguard-go acts on them as soon as it reads them.
pub(crate) fn encode_set(changes: &ChangeSet) -> Zeroizing<Vec<u8>> {
    // An upper bound of the request's size, so that the buffer holding secrets is never
    // reallocated (which would leave a copy behind).
    let mut size = 64 + 80 + 40;
    for change in &changes.peers {
        size += 256;
        if let PeerChange::Set(p) = change {
            size += p.allowed_ips.as_ref().map_or(0, |ips| ips.len() * 64);
        }
    }
    let mut out = Zeroizing::new(String::with_capacity(size));
    out.push_str("set=1\n");
    if let Some(key) = &changes.private_key {
        push_secret(&mut out, "private_key", key);
    }
    if let Some(port) = changes.listen_port {
        let _ = writeln!(out, "listen_port={port}");
    }
    if let Some(mark) = changes.fwmark {
        let _ = writeln!(out, "fwmark={mark}");
    }
    for change in &changes.peers {
        match change {
            PeerChange::Remove(key) => {
                push_hex(&mut out, "public_key", key.as_bytes());
                out.push_str("remove=true\n");
            }
            PeerChange::Set(p) => {
                push_hex(&mut out, "public_key", p.public_key.as_bytes());
                if p.update_only {
                    out.push_str("update_only=true\n");
                }
                match &p.preshared_key {
                    PresharedKey::Keep => {}
                    PresharedKey::Set(psk) => push_secret(&mut out, "preshared_key", psk),
                    PresharedKey::Clear => push_hex(&mut out, "preshared_key", &[0; 32]),
                }
                if let Some(endpoint) = p.endpoint {
                    let _ = writeln!(out, "endpoint={endpoint}");
                }
                if let Some(keepalive) = p.keepalive {
                    let _ = writeln!(out, "persistent_keepalive_interval={keepalive}");
                }
                if let Some(ips) = &p.allowed_ips {
                    out.push_str("replace_allowed_ips=true\n");
                    for ip in ips {
                        let _ = writeln!(out, "allowed_ip={ip}");
                    }
                }
            }
        }
    }
    out.push('\n');
    debug_assert!(out.len() <= size, "the set request outgrew its buffer");
    Zeroizing::new(std::mem::take(&mut *out).into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PeerUpdate;

    fn hex(b: u8) -> String {
        format!("{b:02x}").repeat(32)
    }

    /// A `get` answer as wireguard-go v0.0.20220316 writes it (device/uapi.go, IpcGetOperation):
    /// interface lines, then per peer `public_key` first; `errno=0` and a blank line at the end.
    fn recorded_get() -> String {
        format!(
            "private_key={}\nlisten_port=51820\nfwmark=4660\n\
             public_key={}\npreshared_key={}\nprotocol_version=1\nendpoint=198.51.100.7:40000\n\
             last_handshake_time_sec=1764556149\nlast_handshake_time_nsec=5000\n\
             tx_bytes=1200\nrx_bytes=3400\npersistent_keepalive_interval=25\n\
             allowed_ip=10.8.0.2/32\nallowed_ip=fd00::2/128\n\
             public_key={}\npreshared_key={}\nprotocol_version=1\n\
             last_handshake_time_sec=0\nlast_handshake_time_nsec=0\ntx_bytes=0\nrx_bytes=0\n\
             persistent_keepalive_interval=0\n\
             errno=0\n\n",
            hex(0x11),
            hex(0x22),
            hex(0x33),
            hex(0x44),
            hex(0)
        )
    }

    fn parse(answer: &str, chunk: usize) -> Result<(Interface, i64), Error> {
        let mut parser = GetParser::default();
        let mut reader = LineReader::default();
        let mut errno = None;
        let mut done = false;
        for piece in answer.as_bytes().chunks(chunk) {
            reader.feed("wgt", piece, |line| {
                if let Some(v) = line.strip_prefix("errno=") {
                    errno = v.parse().ok();
                    Ok(())
                } else if line.is_empty() {
                    done = true;
                    Ok(())
                } else {
                    parser.line("wgt", line)
                }
            })?;
        }
        assert!(done);
        Ok((parser.finish(), errno.unwrap()))
    }

    #[test]
    fn parses_a_recorded_get_answer_in_any_chunking() {
        for chunk in [1, 7, 64, 1 << 20] {
            let (dev, errno) = parse(&recorded_get(), chunk).unwrap();
            assert_eq!(errno, 0);
            let private = Secret::preshared_from_random([0x11; 32]);
            assert_eq!(dev.public_key, Some(private.public_key()));
            assert_eq!((dev.listen_port, dev.fwmark), (51820, 4660));
            assert_eq!(dev.peers.len(), 2);
            let a = &dev.peers[0];
            assert_eq!(a.public_key, Key::from([0x22; 32]));
            assert!(a.has_preshared_key());
            assert_eq!(a.endpoint, Some("198.51.100.7:40000".parse().unwrap()));
            assert_eq!(a.latest_handshake, Some(Duration::new(1764556149, 5000)));
            assert_eq!((a.rx_bytes, a.tx_bytes, a.keepalive), (3400, 1200, 25));
            assert_eq!(
                a.allowed_ips,
                vec![
                    "10.8.0.2/32".parse::<IpNet>().unwrap(),
                    "fd00::2/128".parse().unwrap()
                ]
            );
            let b = &dev.peers[1];
            assert!(!b.has_preshared_key(), "all-zero PSK is no PSK");
            assert_eq!(b.latest_handshake, None);
            assert_eq!(b.endpoint, None);
        }
    }

    #[test]
    fn a_malformed_line_names_the_key() {
        let mut parser = GetParser::default();
        parser
            .line("wgt", &format!("public_key={}", hex(1)))
            .unwrap();
        let e = parser.line("wgt", "rx_bytes=lots").unwrap_err();
        assert!(e.to_string().contains("rx_bytes"), "{e}");
        assert!(parser.line("wgt", "public_key=zz").is_err());
        assert!(parser.line("wgt", "no equals sign").is_err());
    }

    #[test]
    fn an_error_answer_keeps_the_errno() {
        let (_, errno) = parse("errno=-22\n\n", 3).unwrap();
        assert_eq!(errno, -22);
        let e = userspace_error("wgt", "change", errno, Some(Key::from([9; 32])));
        let source = std::error::Error::source(&e)
            .and_then(|s| s.downcast_ref::<io::Error>())
            .and_then(io::Error::raw_os_error);
        assert_eq!(source, Some(libc::EINVAL));
        assert!(e.to_string().contains(&Key::from([9; 32]).to_string()));
    }

    #[test]
    fn an_overlong_line_is_refused() {
        let mut reader = LineReader::default();
        let long = vec![b'a'; MAX_LINE + 1];
        assert!(reader.feed("wgt", &long, |_| Ok(())).is_err());
    }

    #[test]
    fn encodes_per_peer_changes_and_never_replace_peers() {
        let changes = ChangeSet {
            private_key: None,
            listen_port: Some(51821),
            fwmark: None,
            peers: vec![
                PeerChange::Set(PeerUpdate {
                    preshared_key: PresharedKey::Set(Secret::preshared_from_random([0xab; 32])),
                    endpoint: Some("[fd00::1]:51820".parse().unwrap()),
                    keepalive: Some(25),
                    allowed_ips: Some(vec!["10.8.0.2/32".parse().unwrap()]),
                    ..PeerUpdate::new(Key::from([0x22; 32]))
                }),
                PeerChange::Set(PeerUpdate {
                    update_only: true,
                    preshared_key: PresharedKey::Clear,
                    ..PeerUpdate::new(Key::from([0x33; 32]))
                }),
                PeerChange::Remove(Key::from([0x44; 32])),
            ],
        };
        let request = encode_set(&changes);
        let text = std::str::from_utf8(&request).unwrap();
        let expected = format!(
            "set=1\nlisten_port=51821\n\
             public_key={}\npreshared_key={}\nendpoint=[fd00::1]:51820\n\
             persistent_keepalive_interval=25\nreplace_allowed_ips=true\nallowed_ip=10.8.0.2/32\n\
             public_key={}\nupdate_only=true\npreshared_key={}\n\
             public_key={}\nremove=true\n\n",
            hex(0x22),
            hex(0xab),
            hex(0x33),
            hex(0),
            hex(0x44)
        );
        assert_eq!(text, expected);
        assert!(!text.contains("replace_peers"));
    }

    #[test]
    fn an_empty_allowed_ips_list_clears_them() {
        let changes = ChangeSet {
            peers: vec![PeerChange::Set(PeerUpdate {
                allowed_ips: Some(vec![]),
                ..PeerUpdate::new(Key::from([1; 32]))
            })],
            ..ChangeSet::default()
        };
        let request = encode_set(&changes);
        assert!(std::str::from_utf8(&request)
            .unwrap()
            .ends_with("replace_allowed_ips=true\n\n"));
    }
}
