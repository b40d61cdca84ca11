//! The kernel backend: generic netlink, family `"wireguard"`, version 1.
//!
//! The message layout is the kernel's `include/uapi/linux/wireguard.h` (the "Documentation"
//! comment at its top): `WG_CMD_GET_DEVICE` only as a dump, answered by `NLM_F_MULTI` messages
//! that each repeat the interface attributes and carry some of the peers under
//! `WGDEVICE_A_PEERS`; `WG_CMD_SET_DEVICE` with the same tree plus per-peer `WGPEER_A_FLAGS`.
//! The splitting of large SET requests follows wireguard-tools' `ipc-linux.h`
//! (`kernel_set_device`). The few attribute encoders are written here on plain byte buffers
//! rather than taken from `netlink-packet-wireguard` 0.5: its attribute enums hold the private
//! and preshared keys as plain arrays that derive `Debug` and `Clone` (printable, copied, never
//! wiped), and it leaves splitting a large SET to the caller, which is most of the work here.
//! The socket is `netlink-sys`, already used by the daemon.

use std::io;
use std::path::Path;

use ipnet::IpNet;
use netlink_sys::{protocols::NETLINK_GENERIC, Socket, SocketAddr};
use zeroize::Zeroizing;

use crate::{
    kernel_error, secret_bytes, secret_from, ChangeSet, Error, Interface, Key, Peer, PeerChange,
    PresharedKey,
};

// <linux/netlink.h>
const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLM_F_DUMP: u16 = 0x300;
const NLA_F_NESTED: u16 = 1 << 15;
const NLA_TYPE_MASK: u16 = !(NLA_F_NESTED | (1 << 14));
// <linux/genetlink.h>
const GENL_HDRLEN: usize = 4;
const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
// <linux/wireguard.h>
const WG_GENL_NAME: &str = "wireguard";
const WG_GENL_VERSION: u8 = 1;
const WG_CMD_GET_DEVICE: u8 = 0;
const WG_CMD_SET_DEVICE: u8 = 1;
const WGDEVICE_A_IFNAME: u16 = 2;
const WGDEVICE_A_PRIVATE_KEY: u16 = 3;
const WGDEVICE_A_PUBLIC_KEY: u16 = 4;
const WGDEVICE_A_LISTEN_PORT: u16 = 6;
const WGDEVICE_A_FWMARK: u16 = 7;
const WGDEVICE_A_PEERS: u16 = 8;
/// `WGPEER_F_REMOVE_ME`: remove the peer.
pub(crate) const WGPEER_F_REMOVE_ME: u32 = 1;
/// `WGPEER_F_REPLACE_ALLOWEDIPS`: the allowed IPs in this message replace the peer's.
pub(crate) const WGPEER_F_REPLACE_ALLOWEDIPS: u32 = 2;
/// `WGPEER_F_UPDATE_ONLY`: do not create the peer.
pub(crate) const WGPEER_F_UPDATE_ONLY: u32 = 4;
const WGPEER_A_PUBLIC_KEY: u16 = 1;
const WGPEER_A_PRESHARED_KEY: u16 = 2;
const WGPEER_A_FLAGS: u16 = 3;
const WGPEER_A_ENDPOINT: u16 = 4;
const WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL: u16 = 5;
const WGPEER_A_LAST_HANDSHAKE_TIME: u16 = 6;
const WGPEER_A_RX_BYTES: u16 = 7;
const WGPEER_A_TX_BYTES: u16 = 8;
const WGPEER_A_ALLOWEDIPS: u16 = 9;
const WGALLOWEDIP_A_FAMILY: u16 = 1;
const WGALLOWEDIP_A_IPADDR: u16 = 2;
const WGALLOWEDIP_A_CIDR_MASK: u16 = 3;

/// The size of one SET message: a page, as wireguard-tools uses (`mnl_ideal_socket_buffer_size`).
pub(crate) const MESSAGE_LIMIT: usize = 4096;
/// The receive buffer: the kernel sizes dump messages to at most 32 KiB.
const RECEIVE_BUFFER: usize = 64 << 10;

const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

const fn nla_size(payload: usize) -> usize {
    4 + align4(payload)
}

/// A netlink message under construction, in a buffer allocated once at its limit.
pub(crate) struct MessageBuilder {
    buf: Zeroizing<Vec<u8>>,
    limit: usize,
}

impl MessageBuilder {
    fn new(family: u16, flags: u16, seq: u32, cmd: u8, version: u8, limit: usize) -> Self {
        let mut buf = Zeroizing::new(Vec::with_capacity(limit));
        buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_len, set by finish
        buf.extend_from_slice(&family.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid: the kernel
        buf.extend_from_slice(&[cmd, version, 0, 0]);
        MessageBuilder { buf, limit }
    }

    fn room(&self) -> usize {
        self.limit.saturating_sub(self.buf.len())
    }

    fn put(&mut self, kind: u16, value: &[u8]) {
        let len = u16::try_from(4 + value.len()).unwrap_or(u16::MAX);
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(value);
        let padded = align4(self.buf.len());
        self.buf.resize(padded, 0);
    }

    fn put_u16(&mut self, kind: u16, v: u16) {
        self.put(kind, &v.to_ne_bytes());
    }

    fn put_u32(&mut self, kind: u16, v: u32) {
        self.put(kind, &v.to_ne_bytes());
    }

    fn put_str(&mut self, kind: u16, s: &str) {
        let mut v = Vec::with_capacity(s.len() + 1);
        v.extend_from_slice(s.as_bytes());
        v.push(0);
        self.put(kind, &v);
    }

    fn nest_start(&mut self, kind: u16) -> usize {
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0, 0]);
        self.buf
            .extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        at
    }

    fn nest_end(&mut self, at: usize) {
        let len = u16::try_from(self.buf.len() - at).unwrap_or(u16::MAX);
        self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn finish(mut self) -> Zeroizing<Vec<u8>> {
        let len = u32::try_from(self.buf.len()).unwrap_or(u32::MAX);
        self.buf[..4].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

/// The request resolving the `wireguard` family's id.
pub(crate) fn encode_get_family(seq: u32) -> Zeroizing<Vec<u8>> {
    let mut m = MessageBuilder::new(
        GENL_ID_CTRL,
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        CTRL_CMD_GETFAMILY,
        1,
        128,
    );
    m.put_str(CTRL_ATTR_FAMILY_NAME, WG_GENL_NAME);
    m.finish()
}

/// The `WG_CMD_GET_DEVICE` dump request for `iface`.
pub(crate) fn encode_get(family: u16, iface: &str, seq: u32) -> Zeroizing<Vec<u8>> {
    let mut m = MessageBuilder::new(
        family,
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_DUMP,
        seq,
        WG_CMD_GET_DEVICE,
        WG_GENL_VERSION,
        64,
    );
    m.put_str(WGDEVICE_A_IFNAME, iface);
    m.finish()
}

/// One encoded SET message and the indices (in the change set) of the peers it carries.
pub(crate) struct SetMessage {
    pub(crate) bytes: Zeroizing<Vec<u8>>,
    pub(crate) peers: Vec<usize>,
}

/// The size of the attributes a peer's first (or continuation) entry needs before its allowed
/// IPs, and the size of each allowed IP.
fn peer_head_size(change: &PeerChange, continuation: bool) -> usize {
    let mut size = 4 + nla_size(32) + nla_size(4);
    if let (PeerChange::Set(p), false) = (change, continuation) {
        if !matches!(p.preshared_key, PresharedKey::Keep) {
            size += nla_size(32);
        }
        size += p.endpoint.map_or(0, |e| nla_size(sockaddr_len(&e)));
        size += p.keepalive.map_or(0, |_| nla_size(2));
    }
    size
}

fn allowed_ip_size(ip: &IpNet) -> usize {
    let addr = match ip {
        IpNet::V4(_) => 4,
        IpNet::V6(_) => 16,
    };
    4 + nla_size(2) + nla_size(addr) + nla_size(1)
}

fn sockaddr_len(e: &std::net::SocketAddr) -> usize {
    match e {
        std::net::SocketAddr::V4(_) => 16, // struct sockaddr_in
        std::net::SocketAddr::V6(_) => 28, // struct sockaddr_in6
    }
}

fn encode_sockaddr(e: &std::net::SocketAddr) -> Vec<u8> {
    let mut v = Vec::with_capacity(28);
    match e {
        std::net::SocketAddr::V4(a) => {
            v.extend_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
            v.extend_from_slice(&a.port().to_be_bytes());
            v.extend_from_slice(&a.ip().octets());
            v.extend_from_slice(&[0; 8]);
        }
        std::net::SocketAddr::V6(a) => {
            v.extend_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
            v.extend_from_slice(&a.port().to_be_bytes());
            v.extend_from_slice(&a.flowinfo().to_be_bytes());
            v.extend_from_slice(&a.ip().octets());
            v.extend_from_slice(&a.scope_id().to_ne_bytes());
        }
    }
    v
}

/// Encodes a change set as SET messages of at most `limit` bytes each. The first message
/// carries the interface fields; every message names the interface. A peer whose allowed IPs do
/// not fit continues in the next message with its public key, its remaining allowed IPs, and
/// without `WGPEER_F_REPLACE_ALLOWEDIPS` (which would wipe the ones already sent).
pub(crate) fn encode_set(
    family: u16,
    iface: &str,
    changes: &ChangeSet,
    first_seq: u32,
    limit: usize,
) -> Vec<SetMessage> {
    let mut messages = Vec::new();
    let mut index = 0; // the next peer to encode
    let mut ip_offset = 0; // how many of its allowed IPs are already sent
    let mut seq = first_seq;
    loop {
        let mut m = MessageBuilder::new(
            family,
            NLM_F_REQUEST | NLM_F_ACK,
            seq,
            WG_CMD_SET_DEVICE,
            WG_GENL_VERSION,
            limit,
        );
        seq = seq.wrapping_add(1);
        m.put_str(WGDEVICE_A_IFNAME, iface);
        if messages.is_empty() {
            if let Some(key) = &changes.private_key {
                m.put(WGDEVICE_A_PRIVATE_KEY, &secret_bytes(key)[..]);
            }
            if let Some(port) = changes.listen_port {
                m.put_u16(WGDEVICE_A_LISTEN_PORT, port);
            }
            if let Some(mark) = changes.fwmark {
                m.put_u32(WGDEVICE_A_FWMARK, mark);
            }
        }
        let mut carried = Vec::new();
        if index < changes.peers.len() {
            let peers = m.nest_start(WGDEVICE_A_PEERS);
            while let Some(change) = changes.peers.get(index) {
                let continuation = ip_offset > 0;
                let ips: &[IpNet] = match change {
                    PeerChange::Set(p) => p.allowed_ips.as_deref().unwrap_or(&[]),
                    PeerChange::Remove(_) => &[],
                };
                let remaining = &ips[ip_offset..];
                let mut need = peer_head_size(change, continuation);
                if let Some(first) = remaining.first() {
                    need += 4 + allowed_ip_size(first);
                }
                // Room for the peer nest's end is included; at least one peer always fits in
                // an empty message (a peer head is at most ~130 bytes).
                if need > m.room() && !carried.is_empty() {
                    break;
                }
                let peer = m.nest_start(0);
                m.put(WGPEER_A_PUBLIC_KEY, change.public_key().as_bytes());
                let mut flags = 0;
                match change {
                    PeerChange::Remove(_) => flags |= WGPEER_F_REMOVE_ME,
                    PeerChange::Set(p) => {
                        if p.update_only {
                            flags |= WGPEER_F_UPDATE_ONLY;
                        }
                        if p.allowed_ips.is_some() && !continuation {
                            flags |= WGPEER_F_REPLACE_ALLOWEDIPS;
                        }
                        if !continuation {
                            match &p.preshared_key {
                                PresharedKey::Keep => {}
                                PresharedKey::Set(psk) => {
                                    m.put(WGPEER_A_PRESHARED_KEY, &secret_bytes(psk)[..])
                                }
                                PresharedKey::Clear => m.put(WGPEER_A_PRESHARED_KEY, &[0; 32]),
                            }
                            if let Some(e) = &p.endpoint {
                                m.put(WGPEER_A_ENDPOINT, &encode_sockaddr(e));
                            }
                            if let Some(k) = p.keepalive {
                                m.put_u16(WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL, k);
                            }
                        }
                    }
                }
                if flags != 0 {
                    m.put_u32(WGPEER_A_FLAGS, flags);
                }
                carried.push(index);
                let mut sent = 0;
                if !remaining.is_empty() {
                    let list = m.nest_start(WGPEER_A_ALLOWEDIPS);
                    for ip in remaining {
                        // The first one always goes in (it was counted in `need`, or this
                        // peer opens the message): every message makes progress.
                        if sent > 0 && allowed_ip_size(ip) > m.room() {
                            break;
                        }
                        let entry = m.nest_start(0);
                        match ip {
                            IpNet::V4(n) => {
                                m.put_u16(WGALLOWEDIP_A_FAMILY, libc::AF_INET as u16);
                                m.put(WGALLOWEDIP_A_IPADDR, &n.addr().octets());
                            }
                            IpNet::V6(n) => {
                                m.put_u16(WGALLOWEDIP_A_FAMILY, libc::AF_INET6 as u16);
                                m.put(WGALLOWEDIP_A_IPADDR, &n.addr().octets());
                            }
                        }
                        m.put(WGALLOWEDIP_A_CIDR_MASK, &[ip.prefix_len()]);
                        m.nest_end(entry);
                        sent += 1;
                    }
                    m.nest_end(list);
                }
                m.nest_end(peer);
                if sent < remaining.len() {
                    ip_offset += sent;
                    break;
                }
                ip_offset = 0;
                index += 1;
            }
            m.nest_end(peers);
        }
        messages.push(SetMessage {
            bytes: m.finish(),
            peers: carried,
        });
        if index >= changes.peers.len() {
            return messages;
        }
    }
}

/// One netlink attribute: its type (flags masked off) and payload.
struct Nla<'a> {
    kind: u16,
    value: &'a [u8],
}

/// Iterates the attributes in `buf`; stops at the first malformed one (reported by `check`).
fn attributes(buf: &[u8]) -> impl Iterator<Item = Result<Nla<'_>, String>> {
    let mut rest = buf;
    std::iter::from_fn(move || {
        if rest.len() < 4 {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([rest[0], rest[1]]));
        let kind = u16::from_ne_bytes([rest[2], rest[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > rest.len() {
            rest = &[];
            return Some(Err(format!("attribute {kind} with length {len} overruns")));
        }
        let value = &rest[4..len];
        rest = &rest[align4(len).min(rest.len())..];
        Some(Ok(Nla { kind, value }))
    })
}

fn u16_of(v: &[u8]) -> Result<u16, String> {
    <[u8; 2]>::try_from(v)
        .map(u16::from_ne_bytes)
        .map_err(|_| "a u16 attribute of the wrong size".into())
}

fn u32_of(v: &[u8]) -> Result<u32, String> {
    <[u8; 4]>::try_from(v)
        .map(u32::from_ne_bytes)
        .map_err(|_| "a u32 attribute of the wrong size".into())
}

fn u64_of(v: &[u8]) -> Result<u64, String> {
    <[u8; 8]>::try_from(v)
        .map(u64::from_ne_bytes)
        .map_err(|_| "a u64 attribute of the wrong size".into())
}

fn key_of(v: &[u8]) -> Result<Zeroizing<[u8; 32]>, String> {
    let mut out = Zeroizing::new([0u8; 32]);
    if v.len() != 32 {
        return Err(format!("a key of {} bytes", v.len()));
    }
    out.copy_from_slice(v);
    Ok(out)
}

fn parse_sockaddr(v: &[u8]) -> Result<Option<std::net::SocketAddr>, String> {
    if v.len() < 2 {
        return Err("a truncated endpoint".into());
    }
    let family = i32::from(u16::from_ne_bytes([v[0], v[1]]));
    if family == libc::AF_INET && v.len() >= 8 {
        let port = u16::from_be_bytes([v[2], v[3]]);
        let ip = std::net::Ipv4Addr::new(v[4], v[5], v[6], v[7]);
        Ok(Some((ip, port).into()))
    } else if family == libc::AF_INET6 && v.len() >= 28 {
        let port = u16::from_be_bytes([v[2], v[3]]);
        let flow = u32::from_be_bytes([v[4], v[5], v[6], v[7]]);
        let mut octets = [0u8; 16];
        octets.copy_from_slice(&v[8..24]);
        let scope = u32::from_ne_bytes([v[24], v[25], v[26], v[27]]);
        Ok(Some(std::net::SocketAddr::V6(std::net::SocketAddrV6::new(
            octets.into(),
            port,
            flow,
            scope,
        ))))
    } else if family == libc::AF_UNSPEC {
        Ok(None)
    } else {
        Err(format!("an endpoint of family {family}"))
    }
}

fn parse_allowed_ip(v: &[u8]) -> Result<IpNet, String> {
    let (mut family, mut addr, mut cidr) = (None, None, None);
    for nla in attributes(v) {
        let nla = nla?;
        match nla.kind {
            WGALLOWEDIP_A_FAMILY => family = Some(i32::from(u16_of(nla.value)?)),
            WGALLOWEDIP_A_IPADDR => addr = Some(nla.value),
            WGALLOWEDIP_A_CIDR_MASK => cidr = nla.value.first().copied(),
            _ => {}
        }
    }
    let (Some(family), Some(addr), Some(cidr)) = (family, addr, cidr) else {
        return Err("an allowed IP without family, address or mask".into());
    };
    let ip: std::net::IpAddr = match (family, addr.len()) {
        (f, 4) if f == libc::AF_INET => <[u8; 4]>::try_from(addr).map_err(|_| "bad IPv4")?.into(),
        (f, 16) if f == libc::AF_INET6 => {
            <[u8; 16]>::try_from(addr).map_err(|_| "bad IPv6")?.into()
        }
        _ => return Err(format!("an allowed IP of family {family}")),
    };
    IpNet::new(ip, cidr).map_err(|_| format!("an allowed IP {ip}/{cidr}"))
}

fn parse_peer(v: &[u8]) -> Result<Peer, String> {
    let mut peer: Option<Peer> = None;
    let mut pending_psk = None;
    let mut rest = Vec::new();
    for nla in attributes(v) {
        let nla = nla?;
        if nla.kind == WGPEER_A_PUBLIC_KEY {
            peer = Some(Peer::new(Key::from(*key_of(nla.value)?)));
        } else {
            rest.push(nla);
        }
    }
    let Some(mut peer) = peer else {
        return Err("a peer without a public key".into());
    };
    for nla in rest {
        match nla.kind {
            WGPEER_A_PRESHARED_KEY => pending_psk = Some(key_of(nla.value)?),
            WGPEER_A_ENDPOINT => peer.endpoint = parse_sockaddr(nla.value)?,
            WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL => peer.keepalive = u16_of(nla.value)?,
            WGPEER_A_LAST_HANDSHAKE_TIME => {
                // struct __kernel_timespec: two s64 (seconds, nanoseconds).
                if nla.value.len() != 16 {
                    return Err("a handshake time that is not a __kernel_timespec".into());
                }
                let sec = u64_of(&nla.value[..8])?;
                let nsec = u64_of(&nla.value[8..])?;
                if sec != 0 || nsec != 0 {
                    peer.latest_handshake = Some(std::time::Duration::new(
                        sec,
                        u32::try_from(nsec).unwrap_or(0),
                    ));
                }
            }
            WGPEER_A_RX_BYTES => peer.rx_bytes = u64_of(nla.value)?,
            WGPEER_A_TX_BYTES => peer.tx_bytes = u64_of(nla.value)?,
            WGPEER_A_ALLOWEDIPS => {
                for ip in attributes(nla.value) {
                    peer.allowed_ips.push(parse_allowed_ip(ip?.value)?);
                }
            }
            _ => {}
        }
    }
    peer.preshared_key = pending_psk.and_then(|k| secret_from(&k));
    Ok(peer)
}

/// Accumulates the messages of a GET dump into an [`Interface`].
#[derive(Default)]
pub(crate) struct DumpReader {
    iface: Interface,
    done: bool,
}

impl DumpReader {
    /// Feeds one datagram (one or more netlink messages). Returns whether the dump is complete.
    pub(crate) fn feed(&mut self, name: &str, datagram: &[u8], seq: u32) -> Result<bool, Error> {
        for msg in messages(datagram) {
            let msg = msg.map_err(|what| malformed(name, what))?;
            if msg.seq != seq {
                continue; // an answer to an earlier request
            }
            match msg.kind {
                NLMSG_DONE => {
                    // A dump's DONE carries an int: 0, or the negative errno of a dump that
                    // failed part way.
                    let errno = msg
                        .payload
                        .get(..4)
                        .map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                    if errno != 0 {
                        return Err(kernel_error(name, "read", -errno, None));
                    }
                    self.done = true;
                }
                NLMSG_ERROR => {
                    let errno = error_of(&msg).map_err(|what| malformed(name, what))?;
                    if errno != 0 {
                        return Err(kernel_error(name, "read", errno, None));
                    }
                }
                _ => {
                    let attrs = msg
                        .payload
                        .get(GENL_HDRLEN..)
                        .ok_or_else(|| malformed(name, "a message shorter than its header"))?;
                    self.device_message(attrs)
                        .map_err(|what| malformed(name, &what))?;
                }
            }
        }
        Ok(self.done)
    }

    fn device_message(&mut self, attrs: &[u8]) -> Result<(), String> {
        for nla in attributes(attrs) {
            let nla = nla?;
            match nla.kind {
                // Only the public key is kept; the private key is not even copied.
                WGDEVICE_A_PUBLIC_KEY => {
                    let key = key_of(nla.value)?;
                    self.iface.public_key = (key.iter().any(|&b| b != 0)).then(|| Key::from(*key));
                }
                WGDEVICE_A_LISTEN_PORT => self.iface.listen_port = u16_of(nla.value)?,
                WGDEVICE_A_FWMARK => self.iface.fwmark = u32_of(nla.value)?,
                WGDEVICE_A_PEERS => {
                    for entry in attributes(nla.value) {
                        let peer = parse_peer(entry?.value)?;
                        // A peer cut at a message boundary continues under the same key in the
                        // next message: join its allowed IPs (wireguard-tools' coalesce_peers).
                        match self.iface.peers.last_mut() {
                            Some(last) if last.public_key == peer.public_key => {
                                last.allowed_ips.extend(peer.allowed_ips)
                            }
                            _ => self.iface.peers.push(peer),
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    pub(crate) fn finish(self) -> Interface {
        self.iface
    }
}

/// One netlink message of a datagram.
struct Message<'a> {
    kind: u16,
    seq: u32,
    payload: &'a [u8],
}

fn messages(datagram: &[u8]) -> impl Iterator<Item = Result<Message<'_>, &'static str>> {
    let mut rest = datagram;
    std::iter::from_fn(move || {
        if rest.len() < NLMSG_HDRLEN {
            return None;
        }
        let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            rest = &[];
            return Some(Err("a netlink message whose length overruns the datagram"));
        }
        let msg = Message {
            kind: u16::from_ne_bytes([rest[4], rest[5]]),
            seq: u32::from_ne_bytes([rest[8], rest[9], rest[10], rest[11]]),
            payload: &rest[NLMSG_HDRLEN..len],
        };
        rest = &rest[align4(len).min(rest.len())..];
        Some(Ok(msg))
    })
}

/// The errno of an `NLMSG_ERROR` message (positive; 0 is an acknowledgement).
fn error_of(msg: &Message<'_>) -> Result<i32, &'static str> {
    let b = msg.payload.get(..4).ok_or("a truncated NLMSG_ERROR")?;
    Ok(-i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

fn malformed(iface: &str, what: &str) -> Error {
    Error::Malformed {
        iface: iface.to_owned(),
        what: what.to_owned(),
    }
}

/// A generic netlink socket bound to the kernel, with the `wireguard` family resolved.
struct Connection {
    socket: Socket,
    family: u16,
    seq: u32,
    iface: String,
    buf: Zeroizing<Vec<u8>>,
}

impl Connection {
    fn open(iface: &str, netns: Option<&Path>) -> Result<Connection, Error> {
        let io_err = |source: io::Error| Error::Io {
            iface: iface.to_owned(),
            channel: "netlink".into(),
            source,
        };
        let mut socket = match netns {
            None => Socket::new(NETLINK_GENERIC),
            Some(ns) => socket_in(ns),
        }
        .map_err(io_err)?;
        socket.bind_auto().map_err(io_err)?;
        socket.connect(&SocketAddr::new(0, 0)).map_err(io_err)?;
        let mut conn = Connection {
            socket,
            family: 0,
            seq: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.subsec_nanos()),
            iface: iface.to_owned(),
            buf: Zeroizing::new(vec![0; RECEIVE_BUFFER]),
        };
        conn.family = conn.resolve_family()?;
        Ok(conn)
    }

    fn io_err(&self, source: io::Error) -> Error {
        Error::Io {
            iface: self.iface.clone(),
            channel: "netlink".into(),
            source,
        }
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn send(&self, bytes: &[u8]) -> Result<(), Error> {
        loop {
            match self.socket.send(bytes, 0) {
                Ok(_) => return Ok(()),
                // Interrupted by a stop and continue: nothing was sent, send again.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.io_err(e)),
            }
        }
    }

    /// Receives one datagram into the connection's buffer; returns its length.
    fn receive(&mut self) -> Result<usize, Error> {
        let n = loop {
            let mut slice: &mut [u8] = &mut self.buf[..];
            match self.socket.recv(&mut slice, libc::MSG_TRUNC) {
                Ok(n) => break n,
                // Interrupted by a stop and continue before a datagram came: wait again.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(Error::Io {
                        iface: self.iface.clone(),
                        channel: "netlink".into(),
                        source: e,
                    })
                }
            }
        };
        if n > RECEIVE_BUFFER {
            return Err(malformed(
                &self.iface,
                "a netlink datagram larger than 64 KiB",
            ));
        }
        Ok(n)
    }

    fn resolve_family(&mut self) -> Result<u16, Error> {
        let seq = self.next_seq();
        self.send(&encode_get_family(seq))?;
        let mut family = None;
        loop {
            let n = self.receive()?;
            for msg in messages(&self.buf[..n]) {
                let msg = msg.map_err(|w| malformed(&self.iface, w))?;
                if msg.seq != seq {
                    continue;
                }
                if msg.kind == NLMSG_ERROR {
                    match error_of(&msg).map_err(|w| malformed(&self.iface, w))? {
                        0 => {
                            return family.ok_or_else(|| {
                                malformed(&self.iface, "no CTRL_ATTR_FAMILY_ID in the answer")
                            })
                        }
                        libc::ENOENT => {
                            return Err(Error::NoKernelModule {
                                iface: self.iface.clone(),
                            })
                        }
                        errno => return Err(kernel_error(&self.iface, "read", errno, None)),
                    }
                }
                for nla in attributes(msg.payload.get(GENL_HDRLEN..).unwrap_or(&[])) {
                    let nla = nla.map_err(|w| malformed(&self.iface, &w))?;
                    if nla.kind == CTRL_ATTR_FAMILY_ID {
                        family = Some(u16_of(nla.value).map_err(|w| malformed(&self.iface, &w))?);
                    }
                }
            }
        }
    }
}

/// A generic netlink socket in the network namespace `netns` (a file such as
/// `/run/netns/NAME`). A socket belongs to the namespace it was created in for its whole life,
/// so a short-lived thread enters the namespace, creates it and ends; the caller's threads stay
/// where they are.
fn socket_in(netns: &Path) -> io::Result<Socket> {
    let ns = std::fs::File::open(netns)?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                use std::os::fd::AsRawFd;
                // SAFETY: setns on this thread only, with a namespace fd we hold open.
                if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                Socket::new(NETLINK_GENERIC)
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the namespace thread panicked")))
    })
}

/// Reads the interface with a `WG_CMD_GET_DEVICE` dump.
pub(crate) fn read(iface: &str, netns: Option<&Path>) -> Result<Interface, Error> {
    let mut conn = Connection::open(iface, netns)?;
    let seq = conn.next_seq();
    conn.send(&encode_get(conn.family, iface, seq))?;
    let mut reader = DumpReader::default();
    loop {
        let n = conn.receive()?;
        if reader.feed(iface, &conn.buf[..n], seq)? {
            return Ok(reader.finish());
        }
    }
}

/// Applies a change set with `WG_CMD_SET_DEVICE` messages, each acknowledged before the next.
pub(crate) fn apply(iface: &str, changes: &ChangeSet, netns: Option<&Path>) -> Result<(), Error> {
    let mut conn = Connection::open(iface, netns)?;
    let first = conn.seq.wrapping_add(1);
    let messages = encode_set(conn.family, iface, changes, first, MESSAGE_LIMIT);
    for (i, message) in messages.iter().enumerate() {
        let seq = first.wrapping_add(i as u32);
        conn.send(&message.bytes)?;
        loop {
            let n = conn.receive()?;
            if let Some(errno) = ack_of(&conn.buf[..n], seq).map_err(|w| malformed(iface, w))? {
                if errno != 0 {
                    let peer = match message.peers.as_slice() {
                        [only] => changes.peers.get(*only).map(|c| *c.public_key()),
                        _ => None,
                    };
                    return Err(kernel_error(iface, "change", errno, peer));
                }
                break;
            }
        }
    }
    Ok(())
}

/// The errno of the acknowledgement of request `seq` in a datagram, if it is there.
pub(crate) fn ack_of(datagram: &[u8], seq: u32) -> Result<Option<i32>, &'static str> {
    for msg in messages(datagram) {
        let msg = msg?;
        if msg.seq == seq && msg.kind == NLMSG_ERROR {
            return error_of(&msg).map(Some);
        }
    }
    Ok(None)
}

#[cfg(test)]
#[path = "netlink_tests.rs"]
mod tests;
