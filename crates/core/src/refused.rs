//! Refused handshakes (SR-007, issue 5): WireGuard answers a handshake initiation it accepts
//! with a response whose receiver index is the initiation's sender index, and says nothing at
//! all to one it refuses (an unknown or wrong key, a disabled or removed peer). The firewall
//! copies initiations arriving at the listen port and responses leaving it to NFLOG (see
//! [`crate::firewall::HandshakeLog`]); the daemon feeds both to a [`Tracker`], which calls an
//! initiation that got no response within [`MATCH_WINDOW_MS`] a refused attempt by its source.
//!
//! Refusals are counted in total and per source address, and reported for the log at most once
//! per source per [`LOG_INTERVAL_MS`], with at most [`MAX_LINES_PER_INTERVAL`] source lines plus
//! one summary line per interval whatever arrives: a flood, spoofed sources included, cannot
//! fill a disk. Memory is bounded too ([`MAX_PENDING`], [`MAX_SOURCES`]).
//!
//! Time comes in as arguments ([`Moment`]), so every rule here is a plain unit test.

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use serde::{Deserialize, Serialize};

/// How long an initiation may wait for its response. A client itself gives up after 5 s
/// (REKEY_TIMEOUT) and sends a new initiation, so a later response would be of no use to it;
/// real responses arrive within milliseconds (NFLOG batching adds at most its flush timeout).
pub const MATCH_WINDOW_MS: u64 = 5_000;
/// Each source gets at most one log line per interval; its count says how many refusals the
/// line stands for.
pub const LOG_INTERVAL_MS: u64 = 60_000;
/// Source lines per interval, all sources together; the rest go into one summary line.
pub const MAX_LINES_PER_INTERVAL: usize = 20;
/// Initiations waiting for a response at most; more are counted as untracked, not judged.
pub const MAX_PENDING: usize = 16_384;
/// Sources with their own counters at most; refusals from further sources are counted in the
/// total and in the summary line only.
pub const MAX_SOURCES: usize = 4_096;
/// A source not seen for this long is forgotten (its refusals stay in the total).
pub const SOURCE_TTL_MS: u64 = 24 * 3_600_000;

/// WireGuard message types (the first byte; three reserved zero bytes follow).
const INITIATION: u8 = 1;
const RESPONSE: u8 = 2;
const COOKIE_REPLY: u8 = 3;

/// A WireGuard handshake message seen by the firewall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handshake {
    /// A handshake initiation (type 1) arriving at the listen port.
    Initiation {
        /// The sender index the client chose.
        sender: u32,
        /// Where it came from.
        source: SocketAddr,
    },
    /// A handshake response (type 2) or a cookie reply (type 3) leaving the listen port: either
    /// way the server took the initiation with this sender index up (a cookie reply means "under
    /// load, try again with this cookie", not a refusal).
    Response {
        /// The initiation's sender index.
        receiver: u32,
    },
}

/// Reads a WireGuard handshake message from an IP packet as NFLOG hands it over (from the
/// network header on; the packet may be cut after the first bytes of the WireGuard message).
/// Anything else gives `None`.
pub fn parse_packet(packet: &[u8]) -> Option<Handshake> {
    let version = packet.first()? >> 4;
    let (source_ip, udp) = match version {
        4 => {
            let ihl = usize::from(packet[0] & 0x0f) * 4;
            if ihl < 20 || *packet.get(9)? != 17 {
                return None;
            }
            let src: [u8; 4] = packet.get(12..16)?.try_into().ok()?;
            (IpAddr::V4(Ipv4Addr::from(src)), packet.get(ihl..)?)
        }
        6 => {
            // Extension headers are not followed: WireGuard sends none.
            if *packet.get(6)? != 17 {
                return None;
            }
            let src: [u8; 16] = packet.get(8..24)?.try_into().ok()?;
            (IpAddr::V6(Ipv6Addr::from(src)), packet.get(40..)?)
        }
        _ => return None,
    };
    let port = u16::from_be_bytes(udp.get(0..2)?.try_into().ok()?);
    let udp_len = u16::from_be_bytes(udp.get(4..6)?.try_into().ok()?);
    let msg = udp.get(8..)?;
    let word = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(msg.get(at..at + 4)?.try_into().ok()?))
    };
    if msg.get(1..4)? != [0, 0, 0] {
        return None;
    }
    // The UDP length (header included) must be the message's fixed size, as the rules match.
    match (msg[0], udp_len) {
        (INITIATION, 156) => Some(Handshake::Initiation {
            sender: word(4)?,
            source: SocketAddr::new(source_ip, port),
        }),
        (RESPONSE, 100) => Some(Handshake::Response { receiver: word(8)? }),
        (COOKIE_REPLY, 72) => Some(Handshake::Response { receiver: word(4)? }),
        _ => None,
    }
}

/// A point in time, twice: a monotonic clock for matching and rate limiting (immune to clock
/// changes) and the wall clock for what is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moment {
    /// Milliseconds on a monotonic clock.
    pub mono_ms: u64,
    /// Unix seconds.
    pub unix: u64,
}

/// One source's refused attempts, for the snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedSource {
    /// The source address (without port: a client picks a new port now and then).
    pub source: IpAddr,
    /// Refused attempts from it since the daemon started (or since it was last forgotten).
    pub count: u64,
    /// Unix time of its latest refused attempt.
    pub last_seen: u64,
    /// The source port of that attempt.
    pub last_port: u16,
}

/// What to log after a [`Tracker::tick`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// Refused attempts from one source since its previous line.
    Source {
        /// The source address.
        source: IpAddr,
        /// The source port of the latest attempt.
        port: u16,
        /// Attempts since the source's previous line.
        count: u64,
        /// Attempts from this source in all.
        source_total: u64,
        /// Attempts from all sources in all.
        total: u64,
    },
    /// Refused attempts of sources over this interval's line budget (or beyond
    /// [`MAX_SOURCES`]), in one line.
    Others {
        /// Distinct tracked sources summarized.
        sources: usize,
        /// Attempts from sources without counters of their own (beyond [`MAX_SOURCES`]).
        untracked_sources_attempts: u64,
        /// Attempts summarized in all.
        count: u64,
        /// Attempts from all sources in all.
        total: u64,
    },
}

#[derive(Debug, Clone)]
struct Pending {
    source: SocketAddr,
    at_ms: u64,
}

#[derive(Debug, Clone, Default)]
struct SourceStats {
    count: u64,
    unlogged: u64,
    last_seen: u64,
    last_seen_ms: u64,
    last_port: u16,
    last_logged_ms: Option<u64>,
}

/// Counters for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Refused attempts in all.
    pub refused: u64,
    /// Initiations seen.
    pub initiations: u64,
    /// Responses and cookie replies seen.
    pub responses: u64,
    /// Initiations not judged because [`MAX_PENDING`] were already waiting.
    pub untracked: u64,
    /// Times the log reader lost messages (the waiting initiations were then dropped unjudged).
    pub lost: u64,
}

/// Pairs initiations with responses and counts the ones left unanswered.
#[derive(Debug, Default)]
pub struct Tracker {
    pending: HashMap<u32, Pending>,
    /// Responses read before their initiation (two NFLOG groups are flushed separately).
    answered: HashMap<u32, u64>,
    sources: HashMap<IpAddr, SourceStats>,
    counters: Counters,
    /// Refusals from sources beyond MAX_SOURCES not yet in a summary line.
    untracked_unlogged: u64,
    window_start_ms: Option<u64>,
    lines_in_window: usize,
    others_logged_in_window: bool,
    others_sources: HashSet<IpAddr>,
    others_untracked: u64,
    others_count: u64,
}

impl Tracker {
    /// An empty tracker.
    pub fn new() -> Self {
        Tracker::default()
    }

    /// Takes in one handshake message seen at `at`.
    pub fn observe(&mut self, message: Handshake, at: Moment) {
        match message {
            Handshake::Initiation { sender, source } => {
                self.counters.initiations += 1;
                if self.answered.remove(&sender).is_some() {
                    return;
                }
                if self.pending.len() >= MAX_PENDING && !self.pending.contains_key(&sender) {
                    self.counters.untracked += 1;
                    return;
                }
                self.pending.insert(
                    sender,
                    Pending {
                        source,
                        at_ms: at.mono_ms,
                    },
                );
            }
            Handshake::Response { receiver } => {
                self.counters.responses += 1;
                if self.pending.remove(&receiver).is_none() && self.answered.len() < MAX_PENDING {
                    self.answered.insert(receiver, at.mono_ms);
                }
            }
        }
    }

    /// The reader lost messages (the socket's buffer overflowed): a waiting initiation may have
    /// had a response that was lost, so none of them is judged.
    pub fn lost(&mut self) {
        self.counters.lost += 1;
        self.pending.clear();
        self.answered.clear();
    }

    /// Judges the initiations whose window has passed and returns what to log now.
    pub fn tick(&mut self, now: Moment) -> Vec<Report> {
        let expired: Vec<Pending> = {
            let mut out = Vec::new();
            self.pending.retain(|_, p| {
                let keep = now.mono_ms.saturating_sub(p.at_ms) < MATCH_WINDOW_MS;
                if !keep {
                    out.push(p.clone());
                }
                keep
            });
            out
        };
        self.answered
            .retain(|_, at| now.mono_ms.saturating_sub(*at) < MATCH_WINDOW_MS);
        // Oldest first, so the port reported is the latest one.
        let mut expired = expired;
        expired.sort_by_key(|p| p.at_ms);
        for p in expired {
            self.refused(p.source, p.at_ms, now);
        }
        self.sources.retain(|_, s| {
            s.unlogged > 0 || now.mono_ms.saturating_sub(s.last_seen_ms) < SOURCE_TTL_MS
        });
        self.reports(now)
    }

    fn refused(&mut self, source: SocketAddr, at_ms: u64, now: Moment) {
        self.counters.refused += 1;
        // The wall time of the attempt, from its age on the monotonic clock.
        let age_s = now.mono_ms.saturating_sub(at_ms) / 1000;
        let seen = now.unix.saturating_sub(age_s);
        let full = self.sources.len() >= MAX_SOURCES;
        match self.sources.get_mut(&source.ip()) {
            Some(s) => {
                s.count += 1;
                s.unlogged += 1;
                s.last_seen = seen;
                s.last_seen_ms = at_ms;
                s.last_port = source.port();
            }
            None if full => self.untracked_unlogged += 1,
            None => {
                self.sources.insert(
                    source.ip(),
                    SourceStats {
                        count: 1,
                        unlogged: 1,
                        last_seen: seen,
                        last_seen_ms: at_ms,
                        last_port: source.port(),
                        last_logged_ms: None,
                    },
                );
            }
        }
    }

    fn reports(&mut self, now: Moment) -> Vec<Report> {
        let new_window = self
            .window_start_ms
            .is_none_or(|start| now.mono_ms.saturating_sub(start) >= LOG_INTERVAL_MS);
        if new_window {
            self.window_start_ms = Some(now.mono_ms);
            self.lines_in_window = 0;
            self.others_logged_in_window = false;
        }
        let mut due: Vec<(IpAddr, u64)> = self
            .sources
            .iter()
            .filter(|(_, s)| {
                s.unlogged > 0
                    && s.last_logged_ms
                        .is_none_or(|t| now.mono_ms.saturating_sub(t) >= LOG_INTERVAL_MS)
            })
            .map(|(ip, s)| (*ip, s.unlogged))
            .collect();
        // The busiest sources get the lines; the order is fixed so the output is too.
        due.sort_by_key(|&(ip, n)| (Reverse(n), ip));
        let mut out = Vec::new();
        for (ip, _) in due {
            let Some(s) = self.sources.get_mut(&ip) else {
                continue;
            };
            if self.lines_in_window < MAX_LINES_PER_INTERVAL {
                self.lines_in_window += 1;
                out.push(Report::Source {
                    source: ip,
                    port: s.last_port,
                    count: s.unlogged,
                    source_total: s.count,
                    total: self.counters.refused,
                });
            } else {
                self.others_sources.insert(ip);
                self.others_count += s.unlogged;
            }
            s.unlogged = 0;
            s.last_logged_ms = Some(now.mono_ms);
        }
        self.others_untracked += self.untracked_unlogged;
        self.others_count += self.untracked_unlogged;
        self.untracked_unlogged = 0;
        if self.others_count > 0 && !self.others_logged_in_window {
            self.others_logged_in_window = true;
            out.push(Report::Others {
                sources: self.others_sources.len(),
                untracked_sources_attempts: self.others_untracked,
                count: self.others_count,
                total: self.counters.refused,
            });
            self.others_sources.clear();
            self.others_untracked = 0;
            self.others_count = 0;
        }
        out
    }

    /// The counters.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Initiations waiting for their response.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Sources with their own counters.
    pub fn source_count(&self) -> usize {
        self.sources.len()
    }

    /// At most `limit` sources, the most refused first (then the latest seen, then by address).
    pub fn sources(&self, limit: usize) -> Vec<RefusedSource> {
        let mut all: Vec<RefusedSource> = self
            .sources
            .iter()
            .map(|(ip, s)| RefusedSource {
                source: *ip,
                count: s.count,
                last_seen: s.last_seen,
                last_port: s.last_port,
            })
            .collect();
        all.sort_by(|a, b| {
            (Reverse(a.count), Reverse(a.last_seen), a.source).cmp(&(
                Reverse(b.count),
                Reverse(b.last_seen),
                b.source,
            ))
        });
        all.truncate(limit);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Moment {
        Moment {
            mono_ms: ms,
            unix: 1_700_000_000 + ms / 1000,
        }
    }

    fn src(last: u8, port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, last)), port)
    }

    fn init(sender: u32, source: SocketAddr) -> Handshake {
        Handshake::Initiation { sender, source }
    }

    fn resp(receiver: u32) -> Handshake {
        Handshake::Response { receiver }
    }

    /// An IPv4 packet carrying a WireGuard message of `kind` with the given indices.
    fn packet(kind: u8, udp_len: u16, a: u32, b: u32) -> Vec<u8> {
        let mut p = vec![
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0, 198, 51, 100, 66, 198, 51, 100, 1,
        ];
        p.extend_from_slice(&40000u16.to_be_bytes());
        p.extend_from_slice(&51820u16.to_be_bytes());
        p.extend_from_slice(&udp_len.to_be_bytes());
        p.extend_from_slice(&[0, 0]);
        p.extend_from_slice(&[kind, 0, 0, 0]);
        p.extend_from_slice(&a.to_le_bytes());
        p.extend_from_slice(&b.to_le_bytes());
        p
    }

    #[test]
    fn parses_the_three_handshake_messages() {
        assert_eq!(
            parse_packet(&packet(1, 156, 0xdead_beef, 0)),
            Some(init(0xdead_beef, "198.51.100.66:40000".parse().unwrap()))
        );
        // A response: sender at 4, receiver at 8.
        assert_eq!(
            parse_packet(&packet(2, 100, 7, 0xdead_beef)),
            Some(resp(0xdead_beef))
        );
        // A cookie reply: receiver at 4.
        assert_eq!(
            parse_packet(&packet(3, 72, 0xdead_beef, 0)),
            Some(resp(0xdead_beef))
        );
        // Data (type 4), wrong sizes, reserved bytes set, cut packets, not UDP: nothing.
        assert_eq!(parse_packet(&packet(4, 100, 1, 2)), None);
        assert_eq!(parse_packet(&packet(1, 100, 1, 2)), None);
        let mut reserved = packet(1, 156, 1, 2);
        reserved[29] = 1;
        assert_eq!(parse_packet(&reserved), None);
        let full = packet(1, 156, 1, 2);
        for cut in 0..32 {
            assert_eq!(parse_packet(&full[..cut]), None, "cut at {cut}");
        }
        let mut tcp = packet(1, 156, 1, 2);
        tcp[9] = 6;
        assert_eq!(parse_packet(&tcp), None);
        // IPv6.
        let mut v6 = vec![0x60, 0, 0, 0, 0, 0, 17, 64];
        v6.extend_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
        v6.extend_from_slice(&[0; 16]);
        v6.extend_from_slice(&full[20..]);
        assert_eq!(
            parse_packet(&v6),
            Some(init(1, "[2001:db8::7]:40000".parse().unwrap()))
        );
    }

    #[test]
    fn answered_initiations_are_not_refused() {
        let mut t = Tracker::new();
        t.observe(init(1, src(10, 1000)), at(0));
        t.observe(resp(1), at(3));
        // A cookie reply counts as an answer too, and a response may be read first.
        t.observe(resp(2), at(10));
        t.observe(init(2, src(10, 1000)), at(11));
        assert!(t.tick(at(60_000)).is_empty());
        assert_eq!(t.counters().refused, 0);
        assert_eq!((t.counters().initiations, t.counters().responses), (2, 2));
        assert_eq!(t.pending(), 0);
    }

    #[test]
    fn an_unanswered_initiation_is_refused_after_the_window() {
        let mut t = Tracker::new();
        t.observe(init(9, src(66, 40000)), at(1_000));
        assert!(t.tick(at(1_000 + MATCH_WINDOW_MS - 1)).is_empty());
        let r = t.tick(at(1_000 + MATCH_WINDOW_MS));
        assert_eq!(
            r,
            vec![Report::Source {
                source: src(66, 0).ip(),
                port: 40000,
                count: 1,
                source_total: 1,
                total: 1
            }]
        );
        // A response after the window does not undo it.
        t.observe(resp(9), at(7_000));
        assert_eq!(t.counters().refused, 1);
        let s = t.sources(10);
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].count, s[0].last_port), (1, 40000));
        assert_eq!(s[0].last_seen, 1_700_000_001);
    }

    #[test]
    fn one_line_per_source_per_minute_with_its_count() {
        let mut t = Tracker::new();
        let mut lines = Vec::new();
        // One refused attempt every 5 s for 3 minutes: 36 attempts.
        for i in 0..36u32 {
            let ms = u64::from(i) * 5_000;
            t.observe(init(i, src(66, 40000 + i as u16)), at(ms));
            lines.extend(t.tick(at(ms + MATCH_WINDOW_MS)));
        }
        lines.extend(t.tick(at(36 * 5_000 + 60_000)));
        let counts: Vec<u64> = lines
            .iter()
            .map(|r| match r {
                Report::Source { count, .. } => *count,
                Report::Others { .. } => panic!("no summary for one source"),
            })
            .collect();
        // The first at once, then one a minute carrying what came in between.
        assert_eq!(counts.iter().sum::<u64>(), 36, "{counts:?}");
        assert!(counts.len() <= 5 && counts[0] == 1, "{counts:?}");
        assert_eq!(t.counters().refused, 36);
    }

    #[test]
    fn a_flood_from_many_sources_is_bounded() {
        let mut t = Tracker::new();
        let mut lines = 0;
        let mut summarized = 0;
        // 100,000 refused attempts from 50,000 addresses within 20 seconds.
        for i in 0..100_000u32 {
            let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + (i % 50_000)));
            let ms = u64::from(i) / 5;
            t.observe(init(i, SocketAddr::new(ip, 1)), at(ms));
            if i % 1000 == 0 {
                for r in t.tick(at(ms)) {
                    lines += 1;
                    if let Report::Others { count, .. } = r {
                        summarized += count;
                    }
                }
            }
        }
        for s in [110_000, 170_000, 230_000] {
            for r in t.tick(at(s)) {
                lines += 1;
                if let Report::Others { count, .. } = r {
                    summarized += count;
                }
            }
        }
        assert_eq!(t.counters().refused + t.counters().untracked, 100_000);
        assert!(t.source_count() <= MAX_SOURCES);
        // Four intervals at most: 21 lines each.
        assert!(lines <= 4 * (MAX_LINES_PER_INTERVAL + 1), "{lines} lines");
        assert!(summarized > 0);
        assert!(t.counters().untracked > 0, "the pending table is bounded");
    }

    #[test]
    fn lost_messages_leave_the_waiting_initiations_unjudged() {
        let mut t = Tracker::new();
        t.observe(init(1, src(10, 1)), at(0));
        t.lost();
        assert!(t.tick(at(60_000)).is_empty());
        assert_eq!(t.counters().refused, 0);
        assert_eq!(t.counters().lost, 1);
    }

    #[test]
    fn sources_are_sorted_and_forgotten_after_a_day() {
        let mut t = Tracker::new();
        for (i, last) in [(1u32, 5u8), (2, 6), (3, 6)] {
            t.observe(init(i, src(last, 1)), at(0));
        }
        t.tick(at(MATCH_WINDOW_MS));
        let s = t.sources(10);
        assert_eq!(s[0].source, src(6, 1).ip());
        assert_eq!((s[0].count, s[1].count), (2, 1));
        assert_eq!(t.sources(1).len(), 1);
        t.tick(at(MATCH_WINDOW_MS + SOURCE_TTL_MS));
        assert_eq!(t.source_count(), 0);
        assert_eq!(t.counters().refused, 3);
    }
}
