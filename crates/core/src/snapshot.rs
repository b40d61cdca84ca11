//! The daemon's status snapshot (issue 5): what monitoring agents read without root, e.g.
//! `/run/wgadm/status.json`, and what `wgadm status --from-snapshot` prints.
//!
//! The Zabbix template codes against this schema: fields may be added, never renamed or
//! removed, and [`VERSION`] changes only when that rule has to break. It holds public keys and
//! addresses, never a private or preshared key ([`PeerStatus`] has no field for one).
//!
//! ```json
//! {"version":1,"generated_at":1732480000,"daemon":{"pid":123,"started_at":1732470000,"interval":5,...},
//!  "interface":"wg0","up":true,"listen_port":51820,
//!  "peers_total":3,"peers_connected":2,"refused_handshakes_total":7,
//!  "peers":[{"name":"alice","address":"192.168.100.2","public_key":"...","state":"applied",...}],
//!  "refused_sources":[{"source":"198.51.100.66","count":3,"last_seen":1732479999,"last_port":40000}],
//!  "connected_window":180,"handshake_log":{"up":true,...}}
//! ```

use serde::{Deserialize, Serialize, Serializer};

use crate::refused::RefusedSource;
use crate::status::Status;

/// The schema version.
pub const VERSION: u32 = 1;

/// At most this many sources are listed in `refused_sources`, the most refused first; the
/// total counts them all.
pub const MAX_REFUSED_SOURCES: usize = 100;

/// The daemon that wrote the snapshot and its own counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaemonInfo {
    /// Its process id.
    pub pid: u32,
    /// Unix time it started.
    pub started_at: u64,
    /// Seconds between polls (a whole number unless set otherwise).
    #[serde(serialize_with = "seconds")]
    pub interval: f64,
    /// The wgadm version.
    #[serde(default)]
    pub version: String,
    /// Polls since it started.
    #[serde(default)]
    pub polls: u64,
    /// Polls that failed to read the device.
    #[serde(default)]
    pub poll_errors: u64,
    /// Failed reloads of the state directory (the previous state stays in use).
    #[serde(default)]
    pub state_errors: u64,
    /// Snapshots that could not be written.
    #[serde(default)]
    pub snapshot_errors: u64,
    /// How long the latest poll took, seconds (reading the device, joining it with the
    /// state, logging, writing the snapshot).
    #[serde(default)]
    pub last_poll_seconds: f64,
    /// All polls together, seconds: divided by `polls`, the mean cost of one.
    #[serde(default)]
    pub poll_seconds_total: f64,
}

/// The handshake log reader (NFLOG) and what it saw.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandshakeLogInfo {
    /// Whether the reader is bound to its NFLOG groups; when not, nothing is counted.
    pub up: bool,
    /// Handshake initiations seen.
    pub initiations: u64,
    /// Handshake responses and cookie replies seen.
    pub responses: u64,
    /// Initiations not judged because too many were waiting.
    pub untracked: u64,
    /// Times messages were lost (socket buffer overflow).
    pub lost: u64,
}

/// The firewall guard of the daemon (issue 10): whether `table inet wgadm` is in force.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirewallInfo {
    /// The daemon guards the firewall (not started with `--no-firewall-guard`).
    pub guarded: bool,
    /// It reads netfilter's change notifications (else it checks every interval only).
    pub notified: bool,
    /// The table with the state's ruleset was in force at the latest check; while it is not,
    /// nothing is forwarded from the WireGuard interface.
    pub in_force: bool,
    /// Times the daemon found the table missing or changed and loaded it again.
    pub restored: u64,
    /// Checks or restores that failed.
    pub restore_errors: u64,
}

/// The snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// [`VERSION`].
    pub version: u32,
    /// Unix time of the poll it shows.
    pub generated_at: u64,
    /// Who wrote it.
    pub daemon: DaemonInfo,
    /// `interface`, `up`, `listen_port`, `peers_total`, `peers_connected` (handshake younger
    /// than `connected_window`) and `peers` (state peers by name first, then unknown ones with
    /// name null), at the top level of the JSON. Held once: the daemon diffs the next poll
    /// against it, so a 5,000-peer status is not kept twice.
    #[serde(flatten)]
    pub status: Status,
    /// Refused handshake attempts since the daemon started.
    pub refused_handshakes_total: u64,
    /// Sources of refused attempts, the most refused first, at most [`MAX_REFUSED_SOURCES`].
    pub refused_sources: Vec<RefusedSource>,
    /// Seconds a handshake counts as connected.
    #[serde(default)]
    pub connected_window: u64,
    /// The handshake log reader.
    #[serde(default)]
    pub handshake_log: HandshakeLogInfo,
    /// The firewall guard.
    #[serde(default)]
    pub firewall: FirewallInfo,
}

impl Snapshot {
    /// The snapshot with the firewall guard's findings.
    pub fn with_firewall(mut self, firewall: FirewallInfo) -> Self {
        self.firewall = firewall;
        self
    }
}

/// Builds a snapshot from a status and what the daemon knows.
pub fn snapshot(
    status: Status,
    generated_at: u64,
    daemon: DaemonInfo,
    refused_total: u64,
    refused_sources: Vec<RefusedSource>,
    connected_window: u64,
    handshake_log: HandshakeLogInfo,
) -> Snapshot {
    Snapshot {
        version: VERSION,
        generated_at,
        daemon,
        status,
        refused_handshakes_total: refused_total,
        refused_sources,
        connected_window,
        handshake_log,
        firewall: FirewallInfo::default(),
    }
}

/// Seconds as an integer when whole (the schema's `"interval":5`), else as a fraction.
fn seconds<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.fract() == 0.0 && *v >= 0.0 && *v < 9.0e15 {
        s.serialize_u64(*v as u64)
    } else {
        s.serialize_f64(*v)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::status::{PeerState, PeerStatus};
    use crate::Key;

    pub(crate) fn example() -> Snapshot {
        let status = Status {
            interface: "wg0".into(),
            up: true,
            listen_port: Some(51820),
            peers_total: 2,
            peers_connected: 1,
            peers: vec![
                PeerStatus {
                    name: Some("alice".into()),
                    address: Some("192.168.100.2".parse().unwrap()),
                    public_key: Key::from([1; 32]),
                    state: PeerState::Applied,
                    enabled: true,
                    endpoint: Some("198.51.100.10:40000".into()),
                    latest_handshake: Some(1_732_479_990),
                    handshake_age_seconds: Some(10),
                    connected: true,
                    rx_bytes: 1234,
                    tx_bytes: 5678,
                    denied_packets: 0,
                    expires: Some(crate::Date::parse("2026-12-15").unwrap()),
                    expires_in_days: Some(21),
                },
                PeerStatus {
                    name: None,
                    address: None,
                    public_key: Key::from([9; 32]),
                    state: PeerState::Unknown,
                    enabled: false,
                    endpoint: None,
                    latest_handshake: None,
                    handshake_age_seconds: None,
                    connected: false,
                    rx_bytes: 0,
                    tx_bytes: 0,
                    denied_packets: 0,
                    expires: None,
                    expires_in_days: None,
                },
            ],
        };
        snapshot(
            status,
            1_732_480_000,
            DaemonInfo {
                pid: 123,
                started_at: 1_732_470_000,
                interval: 5.0,
                version: "0.1.0".into(),
                polls: 10,
                poll_errors: 1,
                state_errors: 0,
                snapshot_errors: 0,
                last_poll_seconds: 0.002,
                poll_seconds_total: 0.02,
            },
            7,
            vec![RefusedSource {
                source: "198.51.100.66".parse().unwrap(),
                count: 3,
                last_seen: 1_732_479_999,
                last_port: 40000,
            }],
            180,
            HandshakeLogInfo {
                up: true,
                initiations: 20,
                responses: 13,
                untracked: 0,
                lost: 0,
            },
        )
    }

    #[test]
    fn the_schema_the_template_reads() {
        let v: serde_json::Value = serde_json::to_value(example()).unwrap();
        assert_eq!(v["version"], 1);
        assert_eq!(v["generated_at"], 1_732_480_000u64);
        assert_eq!(v["daemon"]["pid"], 123);
        assert_eq!(v["daemon"]["started_at"], 1_732_470_000u64);
        assert_eq!(v["daemon"]["interval"].to_string(), "5");
        assert_eq!(v["interface"], "wg0");
        assert_eq!(v["up"], true);
        assert_eq!(v["listen_port"], 51820);
        assert_eq!(
            (v["peers_total"].clone(), v["peers_connected"].clone()),
            (2.into(), 1.into())
        );
        assert_eq!(v["refused_handshakes_total"], 7);
        let alice = &v["peers"][0];
        for (k, want) in [
            ("name", serde_json::json!("alice")),
            ("address", "192.168.100.2".into()),
            ("public_key", Key::from([1; 32]).to_string().into()),
            ("state", "applied".into()),
            ("enabled", true.into()),
            ("endpoint", "198.51.100.10:40000".into()),
            ("latest_handshake", 1_732_479_990u64.into()),
            ("handshake_age_seconds", 10.into()),
            ("connected", true.into()),
            ("rx_bytes", 1234.into()),
            ("tx_bytes", 5678.into()),
            ("denied_packets", 0.into()),
        ] {
            assert_eq!(alice[k], want, "{k}");
        }
        assert_eq!(v["peers"][1]["name"], serde_json::Value::Null);
        assert_eq!(v["refused_sources"][0]["source"], "198.51.100.66");
        assert_eq!(v["refused_sources"][0]["count"], 3);
        assert_eq!(v["refused_sources"][0]["last_seen"], 1_732_479_999u64);
        // A fractional interval stays a number.
        let mut s = example();
        s.daemon.interval = 0.5;
        assert_eq!(serde_json::to_value(&s).unwrap()["daemon"]["interval"], 0.5);
    }

    #[test]
    fn it_reads_back() {
        let text = serde_json::to_string(&example()).unwrap();
        let back: Snapshot = serde_json::from_str(&text).unwrap();
        assert_eq!(back, example());
        assert_eq!(back.status.peers_connected, 1);
        // The minimal schema of the issue, without the added fields, reads too.
        let minimal = r#"{"version":1,"generated_at":1,"daemon":{"pid":1,"started_at":1,"interval":5},
            "interface":"wg0","up":false,"listen_port":null,"peers_total":0,"peers_connected":0,
            "refused_handshakes_total":0,"peers":[],"refused_sources":[]}"#;
        let m: Snapshot = serde_json::from_str(minimal).unwrap();
        assert!(!m.status.up && m.daemon.interval == 5.0);
    }
}
