//! The firewall guard (issue 10): `table inet wgadm` stays in force, or nothing is forwarded
//! from the WireGuard interface.
//!
//! `nft flush ruleset` (which `systemctl restart nftables` runs) removes wgadm's table with
//! everything else, and the VPN would then reach whatever the server routes to. The gate that
//! survives a flushed ruleset lies outside nftables: the kernel forwards an IPv4 packet only
//! when its INPUT interface's `net.ipv4.conf.IF.forwarding` is 1 (see
//! [`wgadm_firewall::set_iface_forwarding`]). So:
//!
//! - a watcher thread listens to netfilter's own notifications (a `NETLINK_NETFILTER` socket
//!   in the group `NFNLGRP_NFTABLES`, which receives every committed ruleset change) and, at
//!   the end of a transaction that deleted wgadm's table, sets the interface's forwarding to 0
//!   at once, before anything else;
//! - the daemon's loop (within 100 ms of a notification, and every interval without one)
//!   compares the table in force with the state's ruleset; when it is missing or another one,
//!   it keeps the gate shut, loads the ruleset again under the state's shared lock, verifies
//!   it, opens the gate, and logs `firewall_missing` / `firewall_changed` and
//!   `firewall_restored` (with the window in milliseconds) at warning priority.
//!
//! Whether the table is in force goes into the snapshot and the metrics
//! (`wgadm_firewall_in_force`), so monitoring can alert.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use wgadm_core::events::Level;
use wgadm_core::firewall::{digest, ruleset, shape, Options, TABLE_NAME};
use wgadm_core::snapshot::FirewallInfo;
use wgadm_core::{Date, State};

use super::log::Logger;
use crate::Ctx;
use wgadm_firewall::options as firewall_options;
use wgadm_firewall::{self as firewall, Nft};

/// `NETLINK_NETFILTER`.
const NETLINK_NETFILTER: libc::c_int = 12;
/// `NFNLGRP_NFTABLES`: every committed nf_tables change.
const NFNLGRP_NFTABLES: libc::c_int = 7;
/// `NFNL_SUBSYS_NFTABLES`, the high byte of the message type.
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_DELTABLE: u16 = 2;
/// Sent once at the end of every committed transaction.
const NFT_MSG_NEWGEN: u16 = 15;
/// `NFPROTO_INET`.
const NFPROTO_INET: u8 = 1;
/// Attribute 1 is the table's name in every table, chain, rule, set and element message.
const ATTR_TABLE: u16 = 1;
/// How often the watcher looks at the stop flag.
const WATCH_TICK: Duration = Duration::from_millis(200);
/// A failed restore is logged again at most this often.
const ERROR_REPEAT: Duration = Duration::from_secs(60);

/// What one transaction did to wgadm's table, as far as its notifications tell.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// The table was deleted (and not created again later in the transaction).
    pub gone: bool,
    /// Something in the table (or the table itself) changed.
    pub touched: bool,
}

/// Reads the nf_tables notifications in one datagram into `seen`; returns true at the end of
/// a transaction (`NFT_MSG_NEWGEN`).
pub fn parse(buf: &[u8], seen: &mut Seen) -> bool {
    let mut end = false;
    let mut at = 0;
    while at + 16 <= buf.len() {
        let len = u32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]) as usize;
        if len < 16 || at + len > buf.len() {
            break;
        }
        let kind = u16::from_ne_bytes([buf[at + 4], buf[at + 5]]);
        let msg = &buf[at..at + len];
        at += (len + 3) & !3;
        if kind >> 8 != NFNL_SUBSYS_NFTABLES || msg.len() < 20 {
            continue;
        }
        let op = kind & 0xff;
        if op == NFT_MSG_NEWGEN {
            end = true;
            continue;
        }
        if msg[16] != NFPROTO_INET || table_name(&msg[20..]) != Some(TABLE_NAME.as_bytes()) {
            continue;
        }
        seen.touched = true;
        match op {
            NFT_MSG_DELTABLE => seen.gone = true,
            NFT_MSG_NEWTABLE => seen.gone = false,
            _ => {}
        }
    }
    end
}

/// The table-name attribute among netlink attributes, without its NUL.
fn table_name(mut attrs: &[u8]) -> Option<&[u8]> {
    while attrs.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([attrs[0], attrs[1]]));
        // The top bits flag nesting and byte order.
        let kind = u16::from_ne_bytes([attrs[2], attrs[3]]) & 0x3fff;
        if len < 4 || len > attrs.len() {
            return None;
        }
        if kind == ATTR_TABLE {
            let value = &attrs[4..len];
            return Some(value.strip_suffix(&[0]).unwrap_or(value));
        }
        attrs = &attrs[((len + 3) & !3).min(attrs.len())..];
    }
    None
}

/// What the watcher thread and the loop share.
#[derive(Default)]
struct Shared {
    /// A notification touched wgadm's table: check at the next wake.
    dirty: AtomicBool,
    /// The interface to shut.
    iface: Mutex<String>,
    /// When the watcher shut the gate because the table was deleted.
    closed_at: Mutex<Option<Instant>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The netlink socket the watcher reads.
struct Socket(libc::c_int);

impl Drop for Socket {
    fn drop(&mut self) {
        // SAFETY: the descriptor is ours and closed once.
        unsafe {
            libc::close(self.0);
        }
    }
}

impl Socket {
    /// A `NETLINK_NETFILTER` socket in the group `NFNLGRP_NFTABLES` (needs CAP_NET_ADMIN).
    fn bind() -> io::Result<Socket> {
        // SAFETY: plain socket calls on a descriptor we own; every pointer points at a live
        // local of the size passed.
        unsafe {
            let fd = libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                NETLINK_NETFILTER,
            );
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            let sock = Socket(fd);
            let mut addr: libc::sockaddr_nl = std::mem::zeroed();
            addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
            if libc::bind(
                fd,
                (&raw const addr).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            ) < 0
            {
                return Err(io::Error::last_os_error());
            }
            let group = NFNLGRP_NFTABLES;
            if libc::setsockopt(
                fd,
                libc::SOL_NETLINK,
                libc::NETLINK_ADD_MEMBERSHIP,
                (&raw const group).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            ) < 0
            {
                return Err(io::Error::last_os_error());
            }
            let tv = libc::timeval {
                tv_sec: 0,
                tv_usec: WATCH_TICK.as_micros() as libc::suseconds_t,
            };
            if libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const tv).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            ) < 0
            {
                return Err(io::Error::last_os_error());
            }
            // A flushed ruleset of many tables is a burst of notifications.
            let size: libc::c_int = 1 << 20;
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&raw const size).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
            Ok(sock)
        }
    }

    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for its length.
        let n = unsafe { libc::recv(self.0, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}

/// Reads notifications until `stop`; shuts the gate the moment a transaction deleted the
/// table, and marks every transaction that touched it for a check.
fn watch(sock: Socket, shared: Arc<Shared>, stop: Arc<AtomicBool>) -> io::Result<()> {
    let mut buf = vec![0u8; 1 << 16];
    let mut seen = Seen::default();
    while !stop.load(Ordering::Relaxed) {
        let n = match sock.recv(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            // ENOBUFS: notifications were lost; what happened is unknown, so check.
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                shared.dirty.store(true, Ordering::Relaxed);
                continue;
            }
            Err(e) => return Err(e),
        };
        if !parse(&buf[..n], &mut seen) {
            continue;
        }
        if seen.gone {
            let iface = lock(&shared.iface).clone();
            if firewall::set_iface_forwarding(&iface, false).is_ok() {
                lock(&shared.closed_at).get_or_insert_with(Instant::now);
            }
        }
        if seen.touched {
            shared.dirty.store(true, Ordering::Relaxed);
        }
        seen = Seen::default();
    }
    Ok(())
}

/// The guard, driven by the daemon's loop through [`Guard::tick`].
pub struct Guard {
    enabled: bool,
    nft: Nft,
    interval: Duration,
    shared: Arc<Shared>,
    watcher: Option<JoinHandle<io::Result<()>>>,
    next_check: Instant,
    /// Since when the table has not been in force (as found by a check or the watcher).
    missing_since: Option<Instant>,
    last_error: Option<(String, Instant)>,
    /// The rules of the table last found or put in force (`nft -t -s`): a table that still
    /// carries the right digest but other rules was changed by hand.
    known: Option<(String, String)>,
    info: FirewallInfo,
}

impl Guard {
    /// Starts watching (unless `enabled` is false: then [`Guard::info`] says so and nothing
    /// is done). The first check runs at the first tick.
    pub fn start(
        ctx: &Ctx,
        state: &State,
        interval: Duration,
        stop: &Arc<AtomicBool>,
        logger: &Logger,
        enabled: bool,
    ) -> Guard {
        let shared = Arc::new(Shared::default());
        *lock(&shared.iface) = state.server.interface.to_string();
        let mut watcher = None;
        if enabled {
            let spawned = Socket::bind().and_then(|sock| {
                let (sh, st) = (shared.clone(), stop.clone());
                std::thread::Builder::new()
                    .name("wgadm-nftwatch".into())
                    .spawn(move || watch(sock, sh, st))
            });
            match spawned {
                Ok(h) => watcher = Some(h),
                Err(e) => logger.line(
                    Level::Warn,
                    "firewall_watch_error",
                    &[
                        ("error", e.to_string().into()),
                        (
                            "hint",
                            "netfilter notifications are not read (the daemon needs \
                             CAP_NET_ADMIN): the firewall is checked every interval only"
                                .into(),
                        ),
                    ],
                ),
            }
        }
        Guard {
            enabled,
            nft: ctx.firewall.clone(),
            interval,
            info: FirewallInfo {
                guarded: enabled,
                notified: watcher.is_some(),
                ..FirewallInfo::default()
            },
            shared,
            watcher,
            next_check: Instant::now(),
            missing_since: None,
            last_error: None,
            known: None,
        }
    }

    /// What the snapshot and the metrics show.
    pub fn info(&self) -> FirewallInfo {
        self.info.clone()
    }

    /// Checks the firewall when a notification came or an interval passed since the last
    /// check; restores it when it is missing or another one. Returns true when what
    /// [`Guard::info`] says changed, so the caller publishes it at once.
    pub fn tick(&mut self, ctx: &Ctx, state: &State, logger: &Logger) -> bool {
        if !self.enabled {
            return false;
        }
        let before = self.info.clone();
        self.tick_inner(ctx, state, logger);
        self.info != before
    }

    fn tick_inner(&mut self, ctx: &Ctx, state: &State, logger: &Logger) {
        if let Some(h) = self.watcher.take_if(|h| h.is_finished()) {
            let why = match h.join() {
                Ok(Ok(())) => "stopped".to_owned(),
                Ok(Err(e)) => e.to_string(),
                Err(_) => "the watcher thread panicked".to_owned(),
            };
            self.info.notified = false;
            logger.line(
                Level::Warn,
                "firewall_watch_error",
                &[("error", why.into())],
            );
        }
        let dirty = self.shared.dirty.swap(false, Ordering::Relaxed);
        if !dirty && Instant::now() < self.next_check {
            return;
        }
        self.next_check = Instant::now() + self.interval;
        *lock(&self.shared.iface) = state.server.interface.to_string();
        if let Err(why) = self.check(ctx, state, logger) {
            self.info.restore_errors += 1;
            let due = match &self.last_error {
                Some((m, at)) => *m != why || at.elapsed() >= ERROR_REPEAT,
                None => true,
            };
            if due {
                logger.line(
                    Level::Error,
                    "firewall_restore_error",
                    &[
                        ("error", why.clone().into()),
                        (
                            "hint",
                            "forwarding from the interface stays off until table inet wgadm \
                             is in force; retrying every interval (or run `wgadm apply`)"
                                .into(),
                        ),
                    ],
                );
                self.last_error = Some((why, Instant::now()));
            }
        }
    }

    fn check(&mut self, ctx: &Ctx, state: &State, logger: &Logger) -> Result<(), String> {
        let iface = state.server.interface.to_string();
        let today = Date::from_unix_seconds(i64::try_from(super::unix_now()).unwrap_or(0));
        let wanted_of =
            |s: &State| digest(&ruleset(s, today, &firewall_options())).map(str::to_owned);
        let listing = match self.nft.rules_listing() {
            Ok(l) => l,
            Err(e) => {
                self.shut(&iface, logger, "firewall_missing", "nft cannot list it");
                return Err(e.to_string());
            }
        };
        // The digest lives in one small set (the rules listing omits elements).
        let found = match listing {
            Some(_) => match self.nft.loaded_digest() {
                Ok(d) => d,
                Err(e) => {
                    self.shut(&iface, logger, "firewall_missing", "nft cannot list it");
                    return Err(e.to_string());
                }
            },
            None => None,
        };
        // Same digest, other rules: edited by hand under wgadm's comment. (A wgadm command
        // that loads a table changes the digest with the state.)
        let edited = matches!(
            (&self.known, &found, &listing),
            (Some((d, l)), Some(f), Some(now)) if d == f && l != now
        );
        // A table of the wanted shape whose peers' elements lag the state (a peer changed but
        // not applied yet, or expiring at this midnight, which the expiry enforcer changes in
        // place in this same poll) is wgadm's and filtering: in force. Putting the state's
        // peers in is `apply`'s and the expiry's job, not a restore.
        let current = |wanted: &Option<String>| match (&found, wanted) {
            (Some(f), Some(w)) => shape(f) == shape(w),
            _ => false,
        };
        if current(&wanted_of(state)) && !edited {
            self.remember(&found, &listing);
            return self.in_force(&iface, logger);
        }
        if found.is_none() {
            self.shut(
                &iface,
                logger,
                "firewall_missing",
                "table inet wgadm is gone",
            );
        }
        // The state on disk may be newer than the loop's (an apply just loaded its table):
        // read it under the shared lock, held while restoring so no apply runs meanwhile.
        let Some(state_lock) = ctx.store.try_lock_shared().map_err(|e| e.to_string())? else {
            // A wgadm command is at work and will put its own table in force.
            self.shared.dirty.store(true, Ordering::Relaxed);
            return Ok(());
        };
        let fresh = ctx.store.load().map_err(|e| e.to_string())?;
        let wanted = wanted_of(&fresh);
        // A newer table from a wgadm command (its digest moved with the state).
        if current(&wanted) && !edited {
            self.remember(&found, &listing);
            return self.in_force(&iface, logger);
        }
        if found.is_some() {
            self.shut(
                &iface,
                logger,
                "firewall_changed",
                "table inet wgadm is not the one wgadm loaded",
            );
        }
        let options = Options {
            carried_drops: self.nft.drop_counters().unwrap_or_default(),
            ..firewall_options()
        };
        // Replaced whole (`None`: whatever is there is not trusted), its elements kept so the
        // next peer change is made in place.
        self.nft
            .put(&fresh, today, &options, None)
            .map_err(|e| e.to_string())?;
        let listing = self.nft.rules_listing().map_err(|e| e.to_string())?;
        let now = self.nft.loaded_digest().map_err(|e| e.to_string())?;
        let now = now.as_deref();
        if now.is_none() || now != wanted.as_deref() {
            return Err(format!(
                "table inet wgadm is not in force after loading it ({})",
                now.map_or_else(|| "no table".to_owned(), |d| format!("digest {d}"))
            ));
        }
        firewall::switch_on(&iface).map_err(|e| e.to_string())?;
        self.remember(&wanted, &listing);
        drop(state_lock);
        let window = self
            .missing_since
            .take()
            .map_or(0, |t| t.elapsed().as_millis());
        *lock(&self.shared.closed_at) = None;
        self.info.in_force = true;
        self.info.restored += 1;
        self.last_error = None;
        logger.line(
            Level::Warn,
            "firewall_restored",
            &[
                (
                    "window_ms",
                    u64::try_from(window).unwrap_or(u64::MAX).into(),
                ),
                (
                    "detail",
                    "table inet wgadm loaded again; forwarding from the interface is back on"
                        .into(),
                ),
            ],
        );
        Ok(())
    }

    fn remember(&mut self, digest: &Option<String>, listing: &Option<String>) {
        self.known = digest.clone().zip(listing.clone());
    }

    /// The table in force is the wanted one: make sure the gate is open.
    fn in_force(&mut self, iface: &str, logger: &Logger) -> Result<(), String> {
        if self.missing_since.is_none() && lock(&self.shared.closed_at).is_some() {
            // The watcher shut forwarding for a table that someone else put back before this
            // check (wgadm-firewall.service restarts with nftables.service; a wgadm command):
            // the window happened all the same, and the log says so.
            self.shut(
                iface,
                logger,
                "firewall_missing",
                "table inet wgadm was gone (put back by another before the daemon's check)",
            );
        }
        firewall::switch_on(iface).map_err(|e| e.to_string())?;
        if let Some(since) = self.missing_since.take() {
            let window = u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX);
            logger.line(
                Level::Warn,
                "firewall_restored",
                &[
                    ("window_ms", window.into()),
                    ("detail", "table inet wgadm is in force again".into()),
                ],
            );
        }
        *lock(&self.shared.closed_at) = None;
        self.info.in_force = true;
        self.last_error = None;
        Ok(())
    }

    /// Keeps `iface` from forwarding; logs the first time.
    fn shut(&mut self, iface: &str, logger: &Logger, event: &str, why: &str) {
        let shut = firewall::set_iface_forwarding(iface, false);
        self.info.in_force = false;
        if self.missing_since.is_some() {
            return;
        }
        let by_watcher = *lock(&self.shared.closed_at);
        self.missing_since = Some(by_watcher.unwrap_or_else(Instant::now));
        logger.line(
            Level::Warn,
            event,
            &[
                ("detail", why.into()),
                (
                    "forwarding",
                    match shut {
                        Ok(_) => "off until the table is back".to_owned(),
                        Err(e) => format!("could not be switched off: {e}"),
                    }
                    .into(),
                ),
                (
                    "shut_by",
                    if by_watcher.is_some() {
                        "netfilter notification"
                    } else {
                        "check"
                    }
                    .into(),
                ),
            ],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&u16::try_from(4 + value.len()).unwrap().to_ne_bytes());
        a.extend_from_slice(&kind.to_ne_bytes());
        a.extend_from_slice(value);
        while a.len() % 4 != 0 {
            a.push(0);
        }
        a
    }

    fn msg(op: u16, family: u8, table: Option<&str>) -> Vec<u8> {
        let mut body = vec![family, 0, 0, 0];
        if let Some(t) = table {
            body.extend(attr(ATTR_TABLE, format!("{t}\0").as_bytes()));
        }
        let mut m = Vec::new();
        m.extend_from_slice(&u32::try_from(16 + body.len()).unwrap().to_ne_bytes());
        m.extend_from_slice(&((NFNL_SUBSYS_NFTABLES << 8) | op).to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend(body);
        m
    }

    #[test]
    fn a_deleted_table_is_gone_a_reload_is_not() {
        // `nft flush ruleset`: our table and another one deleted, then the generation.
        let mut seen = Seen::default();
        let mut flush = msg(8, NFPROTO_INET, Some("wgadm"));
        flush.extend(msg(NFT_MSG_DELTABLE, NFPROTO_INET, Some("wgadm")));
        flush.extend(msg(NFT_MSG_DELTABLE, 2, Some("filter")));
        assert!(!parse(&flush, &mut seen));
        assert!(parse(&msg(NFT_MSG_NEWGEN, 0, None), &mut seen));
        assert_eq!(
            seen,
            Seen {
                gone: true,
                touched: true
            }
        );

        // wgadm's own reload: deleted and created again in one transaction.
        let mut seen = Seen::default();
        let mut reload = msg(NFT_MSG_DELTABLE, NFPROTO_INET, Some("wgadm"));
        reload.extend(msg(NFT_MSG_NEWTABLE, NFPROTO_INET, Some("wgadm")));
        reload.extend(msg(3, NFPROTO_INET, Some("wgadm")));
        reload.extend(msg(NFT_MSG_NEWGEN, 0, None));
        assert!(parse(&reload, &mut seen));
        assert!(!seen.gone && seen.touched);

        // Someone else's table, or ip/wgadm: not ours.
        let mut seen = Seen::default();
        let mut other = msg(NFT_MSG_DELTABLE, NFPROTO_INET, Some("wgadmx"));
        other.extend(msg(NFT_MSG_DELTABLE, 2, Some("wgadm")));
        assert!(!parse(&other, &mut seen));
        assert_eq!(seen, Seen::default());
        // A truncated message ends the parse without a panic.
        assert!(!parse(&flush[..30], &mut Seen::default()));
    }
}
