//! The WireGuard device layer of wgadm: read a live interface and apply per-peer changes to it,
//! through one type, [`Device`], with two backends chosen per interface.
//!
//! # Design
//!
//! - **Kernel** ([`Backend::Kernel`]): generic netlink, family `"wireguard"` (the layout is the
//!   kernel's `include/uapi/linux/wireguard.h`). `WG_CMD_GET_DEVICE` is a dump
//!   (`NLM_F_REQUEST | NLM_F_DUMP`) answered in several `NLM_F_MULTI` messages; a peer whose
//!   allowed IPs do not fit in one message continues in the next one under the same public key,
//!   and the reader joins them (as wireguard-tools' `coalesce_peers` does). `WG_CMD_SET_DEVICE`
//!   messages are kept to one page (4096 bytes, wireguard-tools' `SOCKET_BUFFER_SIZE`): a large
//!   change set is split over several messages, each acknowledged before the next is sent, and a
//!   peer whose allowed IPs overflow continues in the next message without
//!   `WGPEER_F_REPLACE_ALLOWEDIPS` (so the second half does not wipe the first).
//! - **Userspace** ([`Backend::Userspace`]): the cross-platform UAPI of wireguard-go and
//!   boringtun on `/var/run/wireguard/IF.sock`: `get=1\n\n` and `set=1\n...\n\n`, answered by
//!   `key=value` lines ending in `errno=N` and a blank line. The socket stays open after the
//!   answer, so the reader stops at that blank line instead of waiting for EOF. Keys are hex.
//! - **Choice** ([`Backend::detect`]): the UAPI socket exists → userspace; otherwise the kernel.
//!   This is the rule of `wg` itself, so this crate and `wg` always talk to the same thing.
//!
//! Only per-peer changes exist ([`ChangeSet`]): there is no way to replace the whole peer list,
//! and an update is made in place, never by removing and re-adding the peer. Both cut the tunnel
//! of every peer concerned for a rekey timeout (~15 s, see DESIGN.md "Applying to the live device
//! without disruption"). Interface fields (listen port, private key, fwmark) are sent only when
//! the change set names them: re-setting the same listen port makes wireguard-go rebind.
//!
//! Bringing the interface up and down stays with `wg-quick` (boot and `apply` agree on
//! `wg-quick@IF`): [`host`] runs it, checks the host before (preflight, the listen port) and
//! turns a plan into change sets; the rest of this crate only talks to an interface that exists.
//!
//! # Secrets
//!
//! Private and preshared keys live only in memory, as [`Secret`] (zeroized on drop, redacted in
//! `Debug`): never in argv, the environment or a file. Every buffer that carries one (a `set`
//! request, a `get` answer, a netlink message) is a [`zeroize::Zeroizing`] buffer allocated at
//! its final size, so no stale copy is left behind by a reallocation. The interface's private key
//! is read only to derive its public key and then dropped.
//!
//! # What differs between the kernel and userspace
//!
//! | | kernel (netlink) | userspace (UAPI) |
//! |---|---|---|
//! | interface public key | sent by the kernel | derived here from the private key |
//! | no such interface | `ENODEV` → [`Error::NoSuchInterface`] | no socket → the kernel backend is chosen and answers `ENODEV` (or [`Error::NoKernelModule`]) |
//! | rejected change | negative errno in `NLMSG_ERROR` (`EINVAL`, `EPERM`, ...) | `errno=N` line ([`Error::Userspace`]) |
//! | large change | several messages, each acknowledged | one stream, one answer |
//! | preshared key unset | 32 zero bytes | 64 zero hex digits |
//! | latest handshake never | 0 s, 0 ns | `last_handshake_time_sec=0` |
//! | listen port set while the link is down | stored, bound when the link comes up | bound at once |
//! | listen port already in use | `EADDRINUSE`; the old port stays bound | `errno=-98`; wireguard-go has closed its old socket and is left unbound (`listen_port` reads 0): set the old port again |
//! | reading 250 / 5,000 peers (measured 2026-12-01) | 8.4x / 3.2x faster than spawning `wg show dump` (Debian 13 kernel 6.12 under TCG emulation) | 1.4x at 5,000 (wireguard-go's own answer is most of the time) |
//!
//! In both, a change set that fails part way leaves the changes before the failing message (or,
//! for userspace, the failing line) in force: callers re-read the device before retrying.

#![warn(missing_docs)]

pub mod host;
mod netlink;
mod uapi;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ipnet::IpNet;
pub use wgadm_core::{Key, Secret};
use zeroize::Zeroizing;

/// Where userspace implementations put their UAPI sockets (not namespaced).
pub const SOCKET_DIR: &str = "/var/run/wireguard";

/// An interface as the device reports it. Its private key is never kept, only the public key.
#[derive(Debug, Clone, Default)]
pub struct Interface {
    /// The public key of the interface's private key; `None` when no private key is set.
    pub public_key: Option<Key>,
    /// The UDP port it listens on (0: none yet).
    pub listen_port: u16,
    /// The firewall mark on its outgoing packets (0: none).
    pub fwmark: u32,
    /// Its peers, in the order the device lists them.
    pub peers: Vec<Peer>,
}

/// What wgadm's core compares with the wanted state, the same as its `wg show dump` and UAPI
/// parsers give: IPv6 allowed IPs are left out (wgadm manages IPv4), the endpoint is text.
impl From<Interface> for wgadm_core::device::Observed {
    fn from(iface: Interface) -> Self {
        wgadm_core::device::Observed {
            public_key: iface.public_key,
            listen_port: iface.listen_port,
            peers: iface
                .peers
                .into_iter()
                .map(|p| wgadm_core::device::ObservedPeer {
                    public_key: p.public_key,
                    preshared_key: p.preshared_key,
                    endpoint: p.endpoint.map(|e| e.to_string()),
                    allowed_ips: p
                        .allowed_ips
                        .into_iter()
                        .filter_map(|n| match n {
                            IpNet::V4(v4) => Some(v4),
                            IpNet::V6(_) => None,
                        })
                        .collect(),
                    latest_handshake: p.latest_handshake.map_or(0, |d| d.as_secs()),
                    rx_bytes: p.rx_bytes,
                    tx_bytes: p.tx_bytes,
                    keepalive: p.keepalive,
                })
                .collect(),
        }
    }
}

/// One peer as the device reports it.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The peer's public key: its identity on the device.
    pub public_key: Key,
    /// The preshared key, when one is set. Its `Debug` is redacted; it is kept so that a caller
    /// can compare it with the wanted one (a rotation changes it).
    pub preshared_key: Option<Secret>,
    /// The endpoint the peer was last seen at (or was configured with).
    pub endpoint: Option<SocketAddr>,
    /// The peer's allowed IPs, in the device's order.
    pub allowed_ips: Vec<IpNet>,
    /// Time of the latest handshake since the Unix epoch; `None` when there never was one.
    pub latest_handshake: Option<Duration>,
    /// Bytes received from the peer.
    pub rx_bytes: u64,
    /// Bytes sent to the peer.
    pub tx_bytes: u64,
    /// Persistent keepalive interval in seconds (0: off).
    pub keepalive: u16,
}

impl Peer {
    fn new(public_key: Key) -> Self {
        Peer {
            public_key,
            preshared_key: None,
            endpoint: None,
            allowed_ips: Vec::new(),
            latest_handshake: None,
            rx_bytes: 0,
            tx_bytes: 0,
            keepalive: 0,
        }
    }

    /// Whether a preshared key is set (the one fact about it that may be shown).
    pub fn has_preshared_key(&self) -> bool {
        self.preshared_key.is_some()
    }
}

/// A set of changes to one interface. Applying it touches only what it names: the peers it
/// lists and the interface fields that are `Some`.
#[derive(Debug, Default)]
pub struct ChangeSet {
    /// A new private key for the interface (changes its public key: every client must follow).
    pub private_key: Option<Secret>,
    /// A new listen port. Send it only when it changes: wireguard-go rebinds even on the same
    /// value and drops a packet meanwhile.
    pub listen_port: Option<u16>,
    /// A new firewall mark (0 removes it).
    pub fwmark: Option<u32>,
    /// Peer changes, applied in order.
    pub peers: Vec<PeerChange>,
}

impl ChangeSet {
    /// Whether applying it would send nothing.
    pub fn is_empty(&self) -> bool {
        self.private_key.is_none()
            && self.listen_port.is_none()
            && self.fwmark.is_none()
            && self.peers.is_empty()
    }
}

/// One change to one peer.
#[derive(Debug)]
pub enum PeerChange {
    /// Add the peer, or update it in place when it exists (its session and counters stay).
    Set(PeerUpdate),
    /// Remove the peer (nothing happens when it does not exist).
    Remove(Key),
}

impl PeerChange {
    /// The public key of the peer this change is about.
    pub fn public_key(&self) -> &Key {
        match self {
            PeerChange::Set(p) => &p.public_key,
            PeerChange::Remove(k) => k,
        }
    }
}

/// What to do with a peer's preshared key.
#[derive(Debug, Default)]
pub enum PresharedKey {
    /// Leave it as it is.
    #[default]
    Keep,
    /// Set it to this key.
    Set(Secret),
    /// Remove it (the device stores 32 zero bytes).
    Clear,
}

/// The fields to set on one peer. `None` (or [`PresharedKey::Keep`]) leaves a field as it is.
#[derive(Debug)]
pub struct PeerUpdate {
    /// The peer's public key.
    pub public_key: Key,
    /// Only update: when the peer does not exist, do nothing instead of adding it
    /// (`WGPEER_F_UPDATE_ONLY` / `update_only=true`).
    pub update_only: bool,
    /// The preshared key.
    pub preshared_key: PresharedKey,
    /// A fixed endpoint for the peer.
    pub endpoint: Option<SocketAddr>,
    /// Persistent keepalive interval in seconds (0: off).
    pub keepalive: Option<u16>,
    /// `Some`: replace the peer's allowed IPs with exactly these, atomically
    /// (`WGPEER_F_REPLACE_ALLOWEDIPS` / `replace_allowed_ips=true`).
    pub allowed_ips: Option<Vec<IpNet>>,
}

impl PeerUpdate {
    /// A change that names the peer and leaves every field as it is (adding it bare if absent).
    pub fn new(public_key: Key) -> Self {
        PeerUpdate {
            public_key,
            update_only: false,
            preshared_key: PresharedKey::Keep,
            endpoint: None,
            keepalive: None,
            allowed_ips: None,
        }
    }
}

/// Which implementation serves an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// The kernel module, over generic netlink.
    Kernel,
    /// A userspace implementation (wireguard-go, boringtun) over its UAPI socket.
    Userspace {
        /// The socket's path.
        socket: PathBuf,
    },
}

impl Backend {
    /// The backend `wg` would use: the UAPI socket when it exists, else the kernel.
    pub fn detect(iface: &str) -> Backend {
        let socket = Path::new(SOCKET_DIR).join(format!("{iface}.sock"));
        if socket.exists() {
            Backend::Userspace { socket }
        } else {
            Backend::Kernel
        }
    }

    /// A short name for status output: `kernel` or `userspace`.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Kernel => "kernel",
            Backend::Userspace { .. } => "userspace",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Backend::Kernel => f.write_str("kernel (netlink)"),
            Backend::Userspace { socket } => write!(f, "userspace (UAPI {})", socket.display()),
        }
    }
}

/// Why reading or changing a device failed. The OS error (errno) is kept as the source; no
/// message of another program is parsed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The interface does not exist (netlink `ENODEV`).
    #[error("interface {iface}: no such WireGuard interface (bring it up first, e.g. `wg-quick up {iface}`)")]
    NoSuchInterface {
        /// The interface name.
        iface: String,
    },
    /// Neither a UAPI socket nor the kernel's `wireguard` netlink family exists.
    #[error("interface {iface}: no userspace WireGuard socket and no WireGuard kernel module (generic netlink family \"wireguard\" is unknown): load the module or start wireguard-go")]
    NoKernelModule {
        /// The interface name.
        iface: String,
    },
    /// Not allowed (netlink `EPERM`: needs CAP_NET_ADMIN in the interface's network namespace).
    #[error("interface {iface}: permission denied (needs CAP_NET_ADMIN)")]
    PermissionDenied {
        /// The interface name.
        iface: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The kernel refused a request (e.g. `EINVAL`, `EOPNOTSUPP` for a non-WireGuard link).
    #[error("interface {iface}: the kernel refused the {what}{}: {source}", peer_suffix(.peer))]
    Kernel {
        /// The interface name.
        iface: String,
        /// What was asked: `read`, `change`.
        what: &'static str,
        /// The peer concerned, when the refused message was about one peer only.
        peer: Option<Key>,
        /// The errno, as an OS error.
        #[source]
        source: io::Error,
    },
    /// A userspace implementation answered `errno=N` with N not 0.
    #[error("interface {iface}: the userspace WireGuard refused the {what} (errno={errno}){}: {source}", peer_suffix(.peer))]
    Userspace {
        /// The interface name.
        iface: String,
        /// What was asked: `read`, `change`.
        what: &'static str,
        /// The errno number as sent (wireguard-go sends it negated; the source has its value).
        errno: i64,
        /// The peer concerned, when the request was about one peer only.
        peer: Option<Key>,
        /// The errno, as an OS error.
        #[source]
        source: io::Error,
    },
    /// The socket could not be used (connect, send, receive).
    #[error("interface {iface}: {channel}: {source}")]
    Io {
        /// The interface name.
        iface: String,
        /// The channel: the UAPI socket's path, or `netlink`.
        channel: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// An answer that does not follow the protocol.
    #[error("interface {iface}: malformed answer from the device: {what}")]
    Malformed {
        /// The interface name.
        iface: String,
        /// What was wrong.
        what: String,
    },
    /// The interface name cannot be sent (empty, longer than 15 bytes, or with a NUL).
    #[error("interface name {0:?} is not valid (1 to 15 bytes, no '/', ':', NUL or white space)")]
    BadName(String),
}

fn peer_suffix(peer: &Option<Key>) -> String {
    match peer {
        Some(k) => format!(" for peer {k}"),
        None => String::new(),
    }
}

/// One WireGuard interface and the backend that serves it.
#[derive(Debug, Clone)]
pub struct Device {
    iface: String,
    backend: Backend,
    /// The network namespace whose kernel interface this is (`None`: the caller's own).
    netns: Option<PathBuf>,
}

/// The operations wgadm needs from a device, as a trait so that the shell can be tested with a
/// fake one.
pub trait WireGuard {
    /// Reads the interface and all its peers.
    fn read(&self) -> Result<Interface, Error>;
    /// Applies a change set (see [`ChangeSet`]).
    fn apply(&self, changes: &ChangeSet) -> Result<(), Error>;
    /// The backend serving the interface.
    fn backend(&self) -> &Backend;
}

impl Device {
    /// The device for interface `iface`, with the backend `wg` would use ([`Backend::detect`]).
    pub fn open(iface: &str) -> Result<Device, Error> {
        check_name(iface)?;
        Device::with_backend(iface, Backend::detect(iface))
    }

    /// The device for interface `iface` on an explicit backend.
    pub fn with_backend(iface: &str, backend: Backend) -> Result<Device, Error> {
        check_name(iface)?;
        Ok(Device {
            iface: iface.to_owned(),
            backend,
            netns: None,
        })
    }

    /// Talks to the kernel in the network namespace `netns` (a file such as `/run/netns/NAME`)
    /// instead of the caller's own. Userspace sockets are files, which namespaces do not
    /// separate, so this matters only for the kernel backend.
    pub fn in_netns(mut self, netns: impl Into<PathBuf>) -> Device {
        self.netns = Some(netns.into());
        self
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.iface
    }
}

impl WireGuard for Device {
    fn read(&self) -> Result<Interface, Error> {
        match &self.backend {
            Backend::Kernel => netlink::read(&self.iface, self.netns.as_deref()),
            Backend::Userspace { socket } => uapi::read(&self.iface, socket),
        }
    }

    fn apply(&self, changes: &ChangeSet) -> Result<(), Error> {
        if changes.is_empty() {
            return Ok(());
        }
        match &self.backend {
            Backend::Kernel => netlink::apply(&self.iface, changes, self.netns.as_deref()),
            Backend::Userspace { socket } => uapi::apply(&self.iface, socket, changes),
        }
    }

    fn backend(&self) -> &Backend {
        &self.backend
    }
}

/// Refuses a name the kernel would refuse (`dev_valid_name`): it also becomes a socket path.
fn check_name(iface: &str) -> Result<(), Error> {
    let bad = iface.is_empty()
        || iface.len() > 15
        || iface == "."
        || iface == ".."
        || iface
            .bytes()
            .any(|b| b == 0 || b == b'/' || b == b':' || b.is_ascii_whitespace());
    if bad {
        return Err(Error::BadName(iface.to_owned()));
    }
    Ok(())
}

/// The raw bytes of a secret, in a buffer wiped on drop. `Secret` shows itself only as base64.
fn secret_bytes(secret: &Secret) -> Zeroizing<[u8; 32]> {
    let text = secret.expose();
    let mut out = Zeroizing::new([0u8; 32]);
    // A Secret always holds exactly 32 bytes, so its base64 always decodes into 32 bytes.
    if let Ok(decoded) = STANDARD.decode(text.as_bytes()).map(Zeroizing::new) {
        if decoded.len() == 32 {
            out.copy_from_slice(&decoded);
        }
    }
    out
}

/// A secret from raw bytes (the device's answer); `None` for the all-zero "unset" value.
fn secret_from(bytes: &[u8; 32]) -> Option<Secret> {
    if bytes.iter().all(|&b| b == 0) {
        None
    } else {
        Some(Secret::preshared_from_random(*bytes))
    }
}

/// The error for errno `errno` about interface `iface`: the named kinds for `ENODEV` and `EPERM`.
fn kernel_error(iface: &str, what: &'static str, errno: i32, peer: Option<Key>) -> Error {
    match errno {
        libc::ENODEV => Error::NoSuchInterface {
            iface: iface.to_owned(),
        },
        libc::EPERM => Error::PermissionDenied {
            iface: iface.to_owned(),
            source: io::Error::from_raw_os_error(errno),
        },
        _ => Error::Kernel {
            iface: iface.to_owned(),
            what,
            peer,
            source: io::Error::from_raw_os_error(errno),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_preshared_key_never_shows_in_debug() {
        let mut peer = Peer::new(Key::from([7; 32]));
        peer.preshared_key = Some(Secret::preshared_from_random([0xab; 32]));
        let text = format!("{peer:?}");
        assert!(text.contains("redacted"), "{text}");
        assert!(!text.contains(&STANDARD.encode([0xab; 32])), "{text}");
        assert!(!text.to_lowercase().contains("abab"), "{text}");
        assert!(peer.has_preshared_key());
        let change = PeerChange::Set(PeerUpdate {
            preshared_key: PresharedKey::Set(Secret::preshared_from_random([0xab; 32])),
            ..PeerUpdate::new(Key::from([7; 32]))
        });
        assert!(!format!("{change:?}").to_lowercase().contains("abab"));
    }

    #[test]
    fn converts_to_what_the_core_parsers_give() {
        let dump = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\tBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\t51820\toff\n\
                    AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\t(none)\t[fd00::1]:4000\t10.8.0.2/32,fd00::2/128\t1764556149\t10\t20\t25\n";
        let want = wgadm_core::device::parse_dump(dump).unwrap();
        let mut peer = Peer::new(Key::from([1; 32]));
        peer.endpoint = Some("[fd00::1]:4000".parse().unwrap());
        peer.allowed_ips = vec![
            "10.8.0.2/32".parse().unwrap(),
            "fd00::2/128".parse().unwrap(),
        ];
        peer.latest_handshake = Some(Duration::new(1764556149, 999));
        (peer.rx_bytes, peer.tx_bytes, peer.keepalive) = (10, 20, 25);
        let got = wgadm_core::device::Observed::from(Interface {
            public_key: Some(Key::from([7; 32])),
            listen_port: 51820,
            fwmark: 0,
            peers: vec![peer],
        });
        assert_eq!(format!("{got:?}"), format!("{want:?}"));
    }

    #[test]
    fn secret_bytes_round_trip() {
        let s = Secret::preshared_from_random([0x5a; 32]);
        assert_eq!(*secret_bytes(&s), [0x5a; 32]);
        assert!(secret_from(&[0; 32]).is_none());
    }

    #[test]
    fn errors_name_the_interface_and_peer_and_keep_errno() {
        let e = kernel_error("wg0", "change", libc::EINVAL, Some(Key::from([1; 32])));
        let text = e.to_string();
        assert!(
            text.contains("wg0") && text.contains(&Key::from([1; 32]).to_string()),
            "{text}"
        );
        let source = std::error::Error::source(&e)
            .and_then(|s| s.downcast_ref::<io::Error>())
            .and_then(io::Error::raw_os_error);
        assert_eq!(source, Some(libc::EINVAL));
        assert!(matches!(
            kernel_error("wg0", "read", libc::ENODEV, None),
            Error::NoSuchInterface { .. }
        ));
        assert!(matches!(
            kernel_error("wg0", "read", libc::EPERM, None),
            Error::PermissionDenied { .. }
        ));
    }

    #[test]
    fn bad_names_are_refused_before_anything_is_sent() {
        assert!(Device::with_backend("", Backend::Kernel).is_err());
        assert!(Device::with_backend("0123456789abcdef", Backend::Kernel).is_err());
        for bad in ["..", "a/b", "../x", "wg 0", "wg:0"] {
            assert!(Device::open(bad).is_err(), "{bad}");
        }
        assert!(Device::with_backend("wg0", Backend::Kernel).is_ok());
    }
}
