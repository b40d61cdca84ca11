//! Who is connected: the state joined with the observed device. Used by `wgadm status` and by
//! the daemon's snapshots, so it never carries a private or preshared key.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::device::Observed;
use crate::firewall::Counter;
use crate::{Date, Key, State};
use std::collections::BTreeMap;

/// A handshake younger than this (seconds) means connected: WireGuard re-handshakes every two
/// minutes while traffic or keepalives flow, so 180 s leaves room for one missed rekey.
pub const CONNECTED_WINDOW: u64 = 180;

/// Where a peer stands between the state and the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerState {
    /// Active in the state and on the device.
    Applied,
    /// Active in the state, missing on the device: `wgadm apply` puts it there.
    NotApplied,
    /// Disabled in the state and not on the device.
    Disabled,
    /// Expired in the state and not on the device.
    Expired,
    /// Disabled or expired in the state but still on the device: `wgadm apply` removes it.
    PendingRemoval,
    /// On the device but unknown to the state (drift): `wgadm apply` removes it.
    Unknown,
}

/// One peer's status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// The peer's name; absent for a device peer the state does not know.
    pub name: Option<String>,
    /// Its VPN address in the state.
    pub address: Option<Ipv4Addr>,
    /// Its public key.
    pub public_key: Key,
    /// Between state and device.
    pub state: PeerState,
    /// Whether the state has it enabled.
    pub enabled: bool,
    /// The address it was last seen at.
    pub endpoint: Option<String>,
    /// Unix time of its latest handshake.
    pub latest_handshake: Option<u64>,
    /// Seconds since that handshake.
    pub handshake_age_seconds: Option<u64>,
    /// A handshake within the connected window ([`CONNECTED_WINDOW`] unless the caller chose
    /// another, see [`status_within`]).
    pub connected: bool,
    /// Bytes received from it.
    pub rx_bytes: u64,
    /// Bytes sent to it.
    pub tx_bytes: u64,
    /// Packets it sent toward denied destinations, dropped by the firewall.
    pub denied_packets: u64,
    /// Its expiry day in the state (UTC; from that day on it is off), when it has one.
    #[serde(default)]
    pub expires: Option<Date>,
    /// Days from today to that day: 1 means it goes off at the coming midnight UTC, 0 or less
    /// that it is off (expired that many days ago).
    #[serde(default)]
    pub expires_in_days: Option<i64>,
}

/// The interface's status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The interface name.
    pub interface: String,
    /// Whether the interface exists.
    pub up: bool,
    /// The port it listens on.
    pub listen_port: Option<u16>,
    /// Peers in the state plus unknown ones on the device.
    pub peers_total: usize,
    /// Peers with a recent handshake.
    pub peers_connected: usize,
    /// Every peer, state peers by name first, then unknown ones.
    pub peers: Vec<PeerStatus>,
}

/// Joins the state with the device as observed at `now` (Unix seconds).
/// `drops` are the firewall's per-peer drop counters, by VPN address.
pub fn status(
    state: &State,
    observed: Option<&Observed>,
    drops: &BTreeMap<Ipv4Addr, Counter>,
    now: u64,
    today: Date,
) -> Status {
    status_within(state, observed, drops, now, today, CONNECTED_WINDOW)
}

/// [`status`] with another connected window (seconds): a peer is connected when its latest
/// handshake is younger than `window`. The daemon takes it from `--connected-window`, so tests
/// can see a disconnect without waiting three minutes.
pub fn status_within(
    state: &State,
    observed: Option<&Observed>,
    drops: &BTreeMap<Ipv4Addr, Counter>,
    now: u64,
    today: Date,
    window: u64,
) -> Status {
    let when = When { now, window };
    let mut peers = state_peers(state, observed, drops, today, when);
    if let Some(o) = observed {
        let known: std::collections::HashSet<Key> =
            state.peers.values().map(|p| p.public_key).collect();
        for d in o.peers.iter().filter(|d| !known.contains(&d.public_key)) {
            peers.push(peer_status(
                None,
                None,
                d.public_key,
                PeerState::Unknown,
                false,
                Some(d),
                when,
            ));
        }
    }
    Status {
        interface: state.server.interface.to_string(),
        up: observed.is_some(),
        listen_port: observed.map(|o| o.listen_port),
        peers_total: peers.len(),
        peers_connected: peers.iter().filter(|p| p.connected).count(),
        peers,
    }
}

/// The state's peers, in the state's order, each joined with the device, its drop counter
/// and its expiry.
fn state_peers(
    state: &State,
    observed: Option<&Observed>,
    drops: &BTreeMap<Ipv4Addr, Counter>,
    today: Date,
    when: When,
) -> Vec<PeerStatus> {
    let on_device: HashMap<Key, &crate::device::ObservedPeer> = observed
        .map(|o| o.peers.iter().map(|p| (p.public_key, p)).collect())
        .unwrap_or_default();
    let today_n = crate::expiry::unix_day(today);
    let mut peers = Vec::with_capacity(state.peers.len());
    for (name, p) in &state.peers {
        let device = on_device.get(&p.public_key).copied();
        let state = match (State::is_active(p, today), device.is_some(), p.enabled) {
            (true, true, _) => PeerState::Applied,
            (true, false, _) => PeerState::NotApplied,
            (false, true, _) => PeerState::PendingRemoval,
            (false, false, false) => PeerState::Disabled,
            (false, false, true) => PeerState::Expired,
        };
        let mut status = peer_status(
            Some(name.to_string()),
            Some(p.address),
            p.public_key,
            state,
            p.enabled,
            device,
            when,
        );
        status.denied_packets = drops.get(&p.address).map_or(0, |c| c.packets);
        status.expires = p.expires;
        status.expires_in_days = p.expires.map(|e| crate::expiry::unix_day(e) - today_n);
        peers.push(status);
    }
    peers
}

/// The time of an observation and the connected window, both in seconds.
#[derive(Clone, Copy)]
struct When {
    now: u64,
    window: u64,
}

fn peer_status(
    name: Option<String>,
    address: Option<Ipv4Addr>,
    public_key: Key,
    state: PeerState,
    enabled: bool,
    device: Option<&crate::device::ObservedPeer>,
    when: When,
) -> PeerStatus {
    let When { now, window } = when;
    let handshake = device.map(|d| d.latest_handshake).filter(|&t| t > 0);
    let age = handshake.map(|t| now.saturating_sub(t));
    PeerStatus {
        name,
        address,
        public_key,
        state,
        enabled,
        endpoint: device.and_then(|d| d.endpoint.clone()),
        latest_handshake: handshake,
        handshake_age_seconds: age,
        connected: age.is_some_and(|a| a < window),
        rx_bytes: device.map_or(0, |d| d.rx_bytes),
        tx_bytes: device.map_or(0, |d| d.tx_bytes),
        denied_packets: 0,
        expires: None,
        expires_in_days: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::ObservedPeer;
    use crate::testing::{peer, state};

    fn seen(key: u8, handshake: u64) -> ObservedPeer {
        ObservedPeer {
            public_key: Key::from([key; 32]),
            preshared_key: None,
            endpoint: Some("198.51.100.7:40000".into()),
            allowed_ips: vec![],
            latest_handshake: handshake,
            rx_bytes: 10,
            tx_bytes: 20,
            keepalive: 0,
        }
    }

    #[test]
    fn joins_state_and_device() {
        let today = Date::parse("2026-11-24").unwrap();
        let mut s = state("192.168.100.0/24", "192.168.100.1");
        s.peers
            .insert("fresh".parse().unwrap(), peer("192.168.100.2", 1));
        s.peers
            .insert("stale".parse().unwrap(), peer("192.168.100.3", 2));
        s.peers
            .insert("missing".parse().unwrap(), peer("192.168.100.4", 3));
        let mut off = peer("192.168.100.5", 4);
        off.enabled = false;
        s.peers.insert("off".parse().unwrap(), off);
        let observed = Observed {
            public_key: None,
            listen_port: 51820,
            peers: vec![seen(1, 1000), seen(2, 1000 - 180), seen(4, 0), seen(9, 0)],
        };
        let drops = BTreeMap::from([(
            "192.168.100.2".parse().unwrap(),
            Counter {
                packets: 3,
                bytes: 252,
            },
        )]);
        let st = status(&s, Some(&observed), &drops, 1000 + 179, today);
        let by = |n: &str| {
            st.peers
                .iter()
                .find(|p| p.name.as_deref() == Some(n))
                .unwrap()
        };
        assert!(by("fresh").connected && by("fresh").state == PeerState::Applied);
        assert_eq!(by("fresh").handshake_age_seconds, Some(179));
        assert_eq!(
            (by("fresh").denied_packets, by("stale").denied_packets),
            (3, 0)
        );
        assert!(!by("stale").connected);
        assert_eq!(by("missing").state, PeerState::NotApplied);
        assert_eq!(by("off").state, PeerState::PendingRemoval);
        assert_eq!(
            (by("fresh").expires, by("fresh").expires_in_days),
            (None, None)
        );
        assert_eq!(by("off").latest_handshake, None);
        assert_eq!(st.peers.last().unwrap().state, PeerState::Unknown);
        assert_eq!((st.peers_total, st.peers_connected), (5, 1));
        // A shorter window: the same handshake is stale sooner.
        let short = status_within(&s, Some(&observed), &drops, 1000 + 10, today, 10);
        assert!(!short.peers[0].connected && short.peers_connected == 0);
        let down = status(&s, None, &BTreeMap::new(), 0, today);
        assert!(
            !down.up
                && down
                    .peers
                    .iter()
                    .all(|p| p.state == PeerState::NotApplied || p.state == PeerState::Disabled)
        );
    }

    #[test]
    fn days_to_expiry() {
        let today = Date::parse("2026-11-24").unwrap();
        let mut s = state("192.168.100.0/24", "192.168.100.1");
        let mut soon = peer("192.168.100.2", 1);
        soon.expires = Some(Date::parse("2026-12-08").unwrap());
        s.peers.insert("soon".parse().unwrap(), soon);
        let mut tomorrow = peer("192.168.100.3", 2);
        tomorrow.expires = Some(Date::parse("2026-11-25").unwrap());
        s.peers.insert("tomorrow".parse().unwrap(), tomorrow);
        let mut gone = peer("192.168.100.4", 3);
        gone.expires = Some(Date::parse("2026-11-20").unwrap());
        s.peers.insert("gone".parse().unwrap(), gone);
        s.peers
            .insert("never".parse().unwrap(), peer("192.168.100.5", 4));
        let observed = Observed {
            public_key: None,
            listen_port: 51820,
            peers: vec![seen(9, 0)],
        };
        let st = status(&s, Some(&observed), &BTreeMap::new(), 1000, today);
        let by = |n: &str| {
            st.peers
                .iter()
                .find(|p| p.name.as_deref() == Some(n))
                .unwrap()
        };
        assert_eq!(by("soon").expires_in_days, Some(14));
        assert_eq!(by("soon").expires, Some(Date::parse("2026-12-08").unwrap()));
        assert_eq!(by("tomorrow").expires_in_days, Some(1));
        assert_eq!(by("tomorrow").state, PeerState::NotApplied);
        assert_eq!(by("gone").expires_in_days, Some(-4));
        assert_eq!(by("gone").state, PeerState::Expired);
        assert_eq!(by("never").expires_in_days, None);
        // The device's unknown peer has no expiry.
        assert_eq!(st.peers.last().unwrap().expires_in_days, None);
    }
}
