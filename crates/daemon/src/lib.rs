//! `wgadm daemon` (issue 5): watches the live interface and says what happens to it.
//!
//! Every `--interval` it reads the device through [`wgadm_device::host`] (netlink for the kernel,
//! the UAPI socket for wireguard-go: one request, no process), joins it with the state ([`wgadm_core::status`]), logs what changed
//! ([`wgadm_core::events`]: connected, disconnected, roamed, configuration changed, interface
//! gone or back), writes the status snapshot atomically ([`snapshot`]) and hands it to the
//! Prometheus endpoint ([`metrics`]). A reader thread ([`nflog`]) feeds the firewall's copies
//! of handshake messages to the refused-handshake tracker ([`wgadm_core::refused`]), whose
//! rate-limited lines are logged within a second. A peer whose expiry day has come is taken
//! off the device and out of the firewall in the first poll of that day ([`expiry`]).
//!
//! It keeps running through everything that can pass: the interface vanishing, `wg` failing, a
//! state that does not load (the previous one stays in use), an unwritable snapshot. Each is
//! logged and counted (metrics `wgadm_*_errors_total`). It stops on SIGTERM or SIGINT and
//! reloads the state on SIGHUP; it also reloads by itself when the state directory or `peers/`
//! changes (every wgadm command writes by renaming files there), so `wgadm peer add --apply`
//! shows up by name at once. It never reads a key file, and no line, snapshot or metric holds
//! a private or preshared key.

#![warn(missing_docs)]

pub mod error;
pub mod expiry;
pub mod guard;
pub mod log;
pub mod metrics;
pub mod nflog;
pub mod snapshot;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Args;
use wgadm_core::device::Observed;
use wgadm_core::events::{self, Level, Value};
use wgadm_core::firewall::{Counter, HANDSHAKE_LOG};
use wgadm_core::refused::{Moment, Tracker};
use wgadm_core::snapshot::{DaemonInfo, HandshakeLogInfo, Snapshot, MAX_REFUSED_SOURCES};
use wgadm_core::status::{status_within, CONNECTED_WINDOW};
use wgadm_core::{Date, State};

pub use crate::error::{Error, Result};
use log::{LogFormat, Logger};
use wgadm_device::host::Backend;
use wgadm_firewall::Nft;
use wgadm_state::Store;

/// What the daemon watches and changes: the state directory, the live device and the
/// firewall. The binary builds it from the same options every command gets.
#[derive(Clone, Copy)]
pub struct Ctx<'a> {
    /// The state directory.
    pub store: &'a Store,
    /// The live WireGuard device.
    pub device: &'a Backend,
    /// The nftables firewall.
    pub firewall: &'a Nft,
}

/// Drop counters come from `nft -j list set`, which costs 30 ms at 250 peers and 160 ms at
/// 5,000: they are read at most this often, not every poll.
const DROPS_REFRESH: Duration = Duration::from_secs(60);
/// A handshake log that could not be bound is tried again this often.
const NFLOG_RETRY: Duration = Duration::from_secs(60);
/// The same error is logged again at most this often (they are counted every time).
const ERROR_REPEAT: Duration = Duration::from_secs(60);
/// Refused handshakes are judged and logged this often between polls.
const TICK: Duration = Duration::from_secs(1);

/// `wgadm daemon`: its options.
#[derive(Debug, Clone, Args)]
pub struct DaemonArgs {
    /// Seconds between polls of the device (fractions allowed, at least 0.01).
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_interval)]
    pub interval: f64,
    /// Where to serve Prometheus metrics (GET /metrics): IP:PORT, or `off`.
    #[arg(long, value_name = "ADDR|off", default_value = "127.0.0.1:9586")]
    pub metrics_listen: String,
    /// The status snapshot written after every poll (world-readable JSON without key
    /// material, for monitoring agents and `wgadm status --from-snapshot`), or `off`.
    #[arg(long, value_name = "PATH|off", default_value = snapshot::DEFAULT_PATH)]
    pub snapshot: PathBuf,
    /// The format of the log lines on stderr.
    #[arg(long, value_enum, default_value = "logfmt")]
    pub log_format: LogFormat,
    /// A handshake younger than this many seconds counts as connected.
    #[arg(long, value_name = "SECS", default_value_t = CONNECTED_WINDOW)]
    pub connected_window: u64,
    /// Do not read the handshake log (NFLOG groups 51820 and 51821): no refused handshakes.
    #[arg(long)]
    pub no_handshake_log: bool,
    /// Do not guard the firewall: by default the daemon keeps the WireGuard interface from
    /// forwarding while table inet wgadm is missing or changed, and loads it again.
    #[arg(long)]
    pub no_firewall_guard: bool,
}

fn parse_interval(text: &str) -> std::result::Result<f64, String> {
    let v: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if !(0.01..=86_400.0).contains(&v) {
        return Err(format!("{v} s is out of range: 0.01 to 86400"));
    }
    Ok(v)
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The daemon's clock: monotonic milliseconds since it started, and the wall clock.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
}

impl Clock {
    fn new() -> Self {
        Clock {
            start: Instant::now(),
        }
    }

    /// Now, on both clocks.
    pub fn now(&self) -> Moment {
        Moment {
            mono_ms: u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX),
            unix: unix_now(),
        }
    }
}

/// Logs an error at most once per [`ERROR_REPEAT`] while it stays the same.
#[derive(Default)]
struct Quiet {
    last: Option<(String, Instant)>,
}

impl Quiet {
    fn log(&mut self, logger: &Logger, event: &str, message: &str) {
        let due = match &self.last {
            Some((m, at)) => m != message || at.elapsed() >= ERROR_REPEAT,
            None => true,
        };
        if due {
            logger.line(Level::Error, event, &[("error", message.into())]);
            self.last = Some((message.to_owned(), Instant::now()));
        }
    }

    /// The trouble is over: log that once.
    fn clear(&mut self, logger: &Logger, event: &str) {
        if self.last.take().is_some() {
            logger.line(Level::Info, event, &[]);
        }
    }
}

/// The handshake log reader thread, or when it last failed.
enum HandshakeReader {
    Off,
    Running(JoinHandle<std::io::Result<()>>),
    Down(Instant),
}

/// The mtimes that say the state directory changed.
fn state_stamp(ctx: &Ctx) -> Option<(SystemTime, SystemTime)> {
    let m = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    Some((
        m(ctx.store.dir())?,
        m(&ctx.store.peers_dir()).unwrap_or(UNIX_EPOCH),
    ))
}

/// Loads the state under a shared lock, without waiting: `Ok(None)` while another wgadm holds
/// the lock (the caller tries again next poll). Like every command, it first finishes or
/// discards a change an interrupted wgadm left.
fn load_state(ctx: &Ctx) -> Result<Option<State>> {
    match ctx.store.try_lock_shared()? {
        Some(_lock) => Ok(Some(ctx.store.load()?)),
        None => Ok(None),
    }
}

/// Reads the device through the device layer (netlink or the UAPI socket, as `apply` does):
/// one request, no process.
fn observe(ctx: &Ctx, state: &State) -> Result<Option<Observed>> {
    Ok(ctx.device.show(&state.server.interface)?)
}

/// Runs the daemon until SIGTERM or SIGINT.
pub fn run(ctx: &Ctx, args: DaemonArgs) -> Result<()> {
    let metrics_addr = metrics::parse_listen(&args.metrics_listen)
        .map_err(|e| Error::Invalid(format!("--metrics-listen: {e}")))?;
    let snapshot_path = (args.snapshot.as_os_str() != "off").then(|| args.snapshot.clone());
    let interval = Duration::from_secs_f64(args.interval);

    let term = Arc::new(AtomicBool::new(false));
    let hup = Arc::new(AtomicBool::new(false));
    for (sig, flag) in [
        (signal_hook::consts::SIGTERM, &term),
        (signal_hook::consts::SIGINT, &term),
        (signal_hook::consts::SIGHUP, &hup),
    ] {
        signal_hook::flag::register(sig, Arc::clone(flag))
            .map_err(|e| Error::Invalid(format!("cannot handle signal {sig}: {e}")))?;
    }

    // The state must load at start: a daemon without one has nothing to name. While another
    // wgadm holds the lock it waits, and a SIGTERM meanwhile is a clean stop (exit 0).
    let mut waiting = false;
    let mut state = loop {
        match load_state(ctx)? {
            Some(s) => break s,
            None if term.load(Ordering::Relaxed) => {
                Logger::new(args.log_format, "").line(
                    Level::Info,
                    "daemon_stopping",
                    &[
                        ("polls", 0u64.into()),
                        ("waited_for", "the state lock".into()),
                    ],
                );
                return Ok(());
            }
            None => {
                if !waiting {
                    waiting = true;
                    Logger::new(args.log_format, "").line(
                        Level::Info,
                        "waiting_for_state_lock",
                        &[("state", ctx.store.dir().display().to_string().into())],
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    let mut stamp = state_stamp(ctx);
    let mut logger = Logger::new(args.log_format, state.server.interface.as_str());
    let clock = Clock::new();
    let started_at = unix_now();

    let stop = Arc::new(AtomicBool::new(false));
    let latest: metrics::Latest = Arc::new(Mutex::new(None));
    let metrics_thread = match metrics_addr {
        Some(addr) => {
            let (bound, handle) =
                metrics::spawn(addr, latest.clone(), stop.clone()).map_err(|e| {
                    Error::Invalid(format!(
                        "--metrics-listen {addr}: cannot listen ({e}); choose another address \
                         or `off`"
                    ))
                })?;
            Some((bound, handle))
        }
        None => None,
    };
    if let Some(p) = &snapshot_path {
        snapshot::remove_stale_temps(p);
    }

    logger.line(
        Level::Info,
        "daemon_started",
        &[
            ("version", env!("CARGO_PKG_VERSION").into()),
            ("pid", u64::from(std::process::id()).into()),
            ("interval", format!("{}", args.interval).into()),
            (
                "snapshot",
                snapshot_path
                    .as_ref()
                    .map_or_else(|| "off".into(), |p| p.display().to_string())
                    .into(),
            ),
            (
                "metrics",
                metrics_thread
                    .as_ref()
                    .map_or_else(|| "off".into(), |(a, _)| a.to_string())
                    .into(),
            ),
            ("connected_window", args.connected_window.into()),
            ("peers", state.peers.len().into()),
        ],
    );

    let tracker = Arc::new(Mutex::new(Tracker::new()));
    let mut reader = if args.no_handshake_log {
        HandshakeReader::Off
    } else {
        start_reader(&tracker, clock, &stop, &logger)
    };

    let mut guard = guard::Guard::start(
        ctx,
        &state,
        interval,
        &stop,
        &logger,
        !args.no_firewall_guard,
    );

    let mut info = DaemonInfo {
        pid: std::process::id(),
        started_at,
        interval: args.interval,
        version: env!("CARGO_PKG_VERSION").into(),
        polls: 0,
        poll_errors: 0,
        state_errors: 0,
        snapshot_errors: 0,
        last_poll_seconds: 0.0,
        poll_seconds_total: 0.0,
    };
    // The previous poll, as snapshot: events are what changed since.
    let mut prev: Option<Arc<Snapshot>> = None;
    let mut drops: BTreeMap<Ipv4Addr, Counter> = BTreeMap::new();
    let mut drops_at: Option<Instant> = None;
    let (mut poll_quiet, mut state_quiet, mut snapshot_quiet) =
        (Quiet::default(), Quiet::default(), Quiet::default());
    let mut expiry = expiry::Enforcer::default();
    let mut next_poll = Instant::now();
    let mut next_tick = Instant::now() + TICK;

    while !term.load(Ordering::Relaxed) {
        if guard.tick(ctx, &state, &logger) {
            next_poll = Instant::now();
        }
        let now_i = Instant::now();
        if now_i >= next_tick {
            next_tick = now_i + TICK;
            for r in lock(&tracker).tick(clock.now()) {
                logger.event(&events::Event::Refused(r));
            }
            reader = check_reader(reader, &tracker, clock, &stop, &logger);
        }
        if now_i < next_poll {
            let wake = next_poll.min(next_tick);
            // Short sleeps, so a signal is acted on within 100 ms.
            std::thread::sleep(
                wake.saturating_duration_since(now_i)
                    .min(Duration::from_millis(100)),
            );
            continue;
        }
        next_poll = now_i + interval;
        let poll_start = Instant::now();

        // The state: on SIGHUP, or when the directory changed.
        let forced = hup.swap(false, Ordering::Relaxed);
        let now_stamp = state_stamp(ctx);
        if forced || now_stamp != stamp {
            match load_state(ctx) {
                Ok(Some(new)) => {
                    stamp = now_stamp;
                    state_quiet.clear(&logger, "state_ok");
                    if new.server.interface != state.server.interface {
                        logger.set_interface(new.server.interface.as_str());
                        prev = None;
                    }
                    match events::state_changes(&state, &new) {
                        Some(e) => logger.event(&e),
                        None if forced => logger.line(
                            Level::Info,
                            "state_reloaded",
                            &[
                                ("peers", new.peers.len().into()),
                                ("changes", "none".into()),
                            ],
                        ),
                        None => {}
                    }
                    state = new;
                }
                // Another wgadm holds the lock: next poll (a SIGHUP stays pending). The device
                // is not read either: that wgadm may be changing it right now, and a peer it
                // adds would be seen before the state that names it (seen in the VM lab, where
                // `peer add bob --apply` logged config_changed with bob's key, not his name).
                Ok(None) => {
                    if forced {
                        hup.store(true, Ordering::Relaxed);
                    }
                    continue;
                }
                Err(e) => {
                    // Not again until the directory changes once more or SIGHUP.
                    stamp = now_stamp;
                    info.state_errors += 1;
                    state_quiet.log(&logger, "state_error", &e.to_string());
                }
            }
        }

        let observed = match observe(ctx, &state) {
            Ok(o) => {
                poll_quiet.clear(&logger, "poll_ok");
                o
            }
            Err(e) => {
                info.poll_errors += 1;
                poll_quiet.log(&logger, "poll_error", &e.to_string());
                // No snapshot from a failed poll: the last one ages, which monitoring sees.
                continue;
            }
        };
        let now = unix_now();
        let today = Date::from_unix_seconds(i64::try_from(now).unwrap_or(i64::MAX));
        // Expiry on time: a peer whose day has come goes off; then the device is read again.
        let observed = match expiry.poll(ctx, &state, observed.as_ref(), today, &logger) {
            true => observe(ctx, &state).unwrap_or(observed),
            false => observed,
        };
        if drops_at.is_none_or(|t| t.elapsed() >= DROPS_REFRESH) {
            // Without nft or its table there are no drop counters, which is no failure.
            if let Ok(d) = ctx.firewall.drop_counters() {
                drops = d;
            }
            drops_at = Some(Instant::now());
        }
        let st = status_within(
            &state,
            observed.as_ref(),
            &drops,
            now,
            today,
            args.connected_window,
        );
        drop(observed);
        info.polls += 1;
        let (refused_total, sources, log_info) = {
            let t = lock(&tracker);
            let c = t.counters();
            (
                c.refused,
                t.sources(MAX_REFUSED_SOURCES),
                HandshakeLogInfo {
                    up: matches!(reader, HandshakeReader::Running(_)),
                    initiations: c.initiations,
                    responses: c.responses,
                    untracked: c.untracked,
                    lost: c.lost,
                },
            )
        };
        let snap = Arc::new(
            wgadm_core::snapshot::snapshot(
                st,
                now,
                info.clone(),
                refused_total,
                sources,
                args.connected_window,
                log_info,
            )
            .with_firewall(guard.info()),
        );
        let happened = match &prev {
            Some(p) => events::diff(&p.status, &snap.status),
            None => events::initial(&snap.status),
        };
        for e in &happened {
            logger.event(e);
        }
        if let Some(p) = &snapshot_path {
            match snapshot::write(p, &snap) {
                Ok(()) => snapshot_quiet.clear(&logger, "snapshot_ok"),
                Err(e) => {
                    info.snapshot_errors += 1;
                    snapshot_quiet.log(&logger, "snapshot_error", &e.to_string());
                }
            }
        }
        *latest.lock().unwrap_or_else(|p| p.into_inner()) = Some(snap.clone());
        prev = Some(snap);
        release_free_memory();
        // Measured after the write, so the next snapshot and metrics show the whole poll.
        info.last_poll_seconds = poll_start.elapsed().as_secs_f64();
        info.poll_seconds_total += info.last_poll_seconds;
    }

    logger.line(
        Level::Info,
        "daemon_stopping",
        &[("polls", info.polls.into())],
    );
    stop.store(true, Ordering::Relaxed);
    if let HandshakeReader::Running(h) = reader {
        let _ = h.join();
    }
    if let Some((_, h)) = metrics_thread {
        let _ = h.join();
    }
    Ok(())
}

/// Hands the poll's freed memory back to the system. A poll at 5,000 peers allocates some
/// 5 MB for a moment (the device's answer, the observed peers, the maps of the diff), and glibc
/// keeps freed heap pages resident: 18 MB of RSS instead of 9 (measured here). `malloc_trim`
/// returns them; it costs well under a millisecond at that size.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn lock(t: &Mutex<Tracker>) -> std::sync::MutexGuard<'_, Tracker> {
    t.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn start_reader(
    tracker: &Arc<Mutex<Tracker>>,
    clock: Clock,
    stop: &Arc<AtomicBool>,
    logger: &Logger,
) -> HandshakeReader {
    let bound = nflog::Reader::bind(HANDSHAKE_LOG).and_then(|reader| {
        let (t, s) = (tracker.clone(), stop.clone());
        std::thread::Builder::new()
            .name("wgadm-nflog".into())
            .spawn(move || reader.run(t, clock, s))
    });
    match bound {
        Ok(handle) => {
            logger.line(
                Level::Info,
                "handshake_log_ready",
                &[(
                    "groups",
                    Value::List(vec![
                        HANDSHAKE_LOG.initiation_group.to_string(),
                        HANDSHAKE_LOG.response_group.to_string(),
                    ]),
                )],
            );
            HandshakeReader::Running(handle)
        }
        Err(e) => {
            logger.line(
                Level::Error,
                "handshake_log_error",
                &[
                    ("error", e.to_string().into()),
                    (
                        "hint",
                        "refused handshakes are not counted until this is fixed; the daemon \
                         needs CAP_NET_ADMIN, and no other process may read NFLOG groups \
                         51820 and 51821 in this network namespace; retrying every minute"
                            .into(),
                    ),
                ],
            );
            HandshakeReader::Down(Instant::now())
        }
    }
}

/// Notices a reader thread that ended, and retries a failed one now and then.
fn check_reader(
    reader: HandshakeReader,
    tracker: &Arc<Mutex<Tracker>>,
    clock: Clock,
    stop: &Arc<AtomicBool>,
    logger: &Logger,
) -> HandshakeReader {
    match reader {
        HandshakeReader::Running(h) if h.is_finished() => {
            let why = match h.join() {
                Ok(Ok(())) => "the reader stopped".to_owned(),
                Ok(Err(e)) => e.to_string(),
                Err(_) => "the reader thread panicked".to_owned(),
            };
            logger.line(
                Level::Error,
                "handshake_log_error",
                &[("error", why.into())],
            );
            HandshakeReader::Down(Instant::now())
        }
        HandshakeReader::Down(at) if at.elapsed() >= NFLOG_RETRY => {
            start_reader(tracker, clock, stop, logger)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals() {
        assert_eq!(parse_interval("5").unwrap(), 5.0);
        assert_eq!(parse_interval("0.05").unwrap(), 0.05);
        assert!(parse_interval("0").is_err());
        assert!(parse_interval("x").is_err());
        assert!(parse_interval("100000").is_err());
    }
}
