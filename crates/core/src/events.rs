//! What happened between two observations of the interface: the daemon's log lines (issue 5).
//!
//! [`diff`] compares two [`Status`]es (the state joined with the device, see [`crate::status`])
//! and names what changed: a peer connected (a fresh handshake after none or a stale one) or
//! disconnected (its handshake grew older than the connected window), a peer roamed (its
//! endpoint changed), the device's peer set or port changed (an apply, or someone by hand), the
//! interface vanished or came back. [`state_changes`] does the same for two loads of the state.
//! Peers are told apart by public key, the device's own identity, and named by the newer state.
//!
//! Every event turns into an ordered list of fields ([`Event::fields`]) that the shell writes
//! as logfmt or JSON. No field ever holds a private or preshared key: there is none here.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};

use crate::refused::Report;
use crate::status::{PeerState, PeerStatus, Status};
use crate::{Key, State};

/// Lists of peer names in one line are cut after this many; a count field gives the total.
pub const MAX_NAMES: usize = 20;

/// How loud an event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Routine.
    Info,
    /// Worth a look.
    Warn,
    /// Something failed.
    Error,
}

impl Level {
    /// The name in a log line.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

/// A field's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// Text.
    Str(String),
    /// A number.
    Int(u64),
    /// A list of names (logfmt joins it with commas, JSON keeps it a list).
    List(Vec<String>),
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(s)
    }
}

impl From<u64> for Value {
    fn from(n: u64) -> Self {
        Value::Int(n)
    }
}

impl From<usize> for Value {
    fn from(n: usize) -> Self {
        Value::Int(n as u64)
    }
}

impl From<u16> for Value {
    fn from(n: u16) -> Self {
        Value::Int(u64::from(n))
    }
}

/// A peer as events name it: by name when the state knows it, else by public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRef {
    /// Its name in the state.
    pub name: Option<String>,
    /// Its VPN address in the state.
    pub address: Option<Ipv4Addr>,
    /// Its public key (only shown for a peer the state does not know).
    pub public_key: Key,
}

impl PeerRef {
    fn of(p: &PeerStatus) -> Self {
        PeerRef {
            name: p.name.clone(),
            address: p.address,
            public_key: p.public_key,
        }
    }

    /// Its name, or its public key for a peer the state does not know.
    pub fn label(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| self.public_key.to_string())
    }

    fn fields(&self, out: &mut Vec<(&'static str, Value)>) {
        match &self.name {
            Some(n) => out.push(("peer", n.as_str().into())),
            None => out.push(("public_key", self.public_key.to_string().into())),
        }
        if let Some(a) = self.address {
            out.push(("address", a.to_string().into()));
        }
    }
}

/// One thing that happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The interface exists (first seen, or back after it vanished).
    InterfaceUp {
        /// Its port.
        listen_port: Option<u16>,
        /// Peers on the device.
        peers: usize,
        /// Peers connected.
        connected: usize,
    },
    /// The interface is gone (or not there when the daemon starts).
    InterfaceDown {
        /// Peers that were connected before.
        connected_before: usize,
    },
    /// A fresh handshake after none or a stale one.
    PeerConnected {
        /// Who.
        peer: PeerRef,
        /// From where.
        endpoint: Option<String>,
    },
    /// The latest handshake grew older than the connected window (or the peer left the device).
    PeerDisconnected {
        /// Who.
        peer: PeerRef,
        /// Where it was last seen.
        endpoint: Option<String>,
        /// Seconds since its latest handshake.
        handshake_age: Option<u64>,
    },
    /// The peer now sends from another address (roaming).
    EndpointChanged {
        /// Who.
        peer: PeerRef,
        /// The previous endpoint.
        from: String,
        /// The new one.
        to: String,
    },
    /// The device's configuration changed: peers added or removed, another port.
    ConfigChanged {
        /// Peers now on the device that were not (names, or public keys of unknown peers).
        added: Vec<String>,
        /// Peers no longer on the device.
        removed: Vec<String>,
        /// The port, when it changed: (from, to).
        listen_port: Option<(u16, u16)>,
        /// Peers on the device now.
        peers: usize,
    },
    /// The state directory was read again and differs.
    StateReloaded {
        /// Peer names new in the state.
        added: Vec<String>,
        /// Peer names gone from the state.
        removed: Vec<String>,
        /// Peers whose file changed.
        changed: Vec<String>,
        /// Whether server.yml changed.
        server_changed: bool,
        /// Peers in the state now.
        peers: usize,
    },
    /// Handshake initiations that got no response (see [`crate::refused`]).
    Refused(Report),
}

impl Event {
    /// The event's name, the `event` field of its line.
    pub fn name(&self) -> &'static str {
        match self {
            Event::InterfaceUp { .. } => "interface_up",
            Event::InterfaceDown { .. } => "interface_down",
            Event::PeerConnected { .. } => "peer_connected",
            Event::PeerDisconnected { .. } => "peer_disconnected",
            Event::EndpointChanged { .. } => "endpoint_changed",
            Event::ConfigChanged { .. } => "config_changed",
            Event::StateReloaded { .. } => "state_reloaded",
            Event::Refused(Report::Source { .. }) => "handshake_refused",
            Event::Refused(Report::Others { .. }) => "handshake_refused_summary",
        }
    }

    /// How loud it is.
    pub fn level(&self) -> Level {
        match self {
            Event::InterfaceDown { .. } | Event::Refused(_) => Level::Warn,
            _ => Level::Info,
        }
    }

    /// Its fields after `event`, in a fixed order.
    pub fn fields(&self) -> Vec<(&'static str, Value)> {
        let mut f: Vec<(&'static str, Value)> = Vec::new();
        let endpoint = |f: &mut Vec<(&'static str, Value)>, e: &Option<String>| {
            f.push(("endpoint", e.as_deref().unwrap_or("-").into()));
        };
        match self {
            Event::InterfaceUp {
                listen_port,
                peers,
                connected,
            } => {
                if let Some(p) = listen_port {
                    f.push(("listen_port", (*p).into()));
                }
                f.push(("peers", (*peers).into()));
                f.push(("connected", (*connected).into()));
            }
            Event::InterfaceDown { connected_before } => {
                f.push(("connected_before", (*connected_before).into()));
            }
            Event::PeerConnected { peer, endpoint: e } => {
                peer.fields(&mut f);
                endpoint(&mut f, e);
            }
            Event::PeerDisconnected {
                peer,
                endpoint: e,
                handshake_age,
            } => {
                peer.fields(&mut f);
                endpoint(&mut f, e);
                match handshake_age {
                    Some(a) => f.push(("handshake_age", (*a).into())),
                    None => f.push(("handshake_age", "-".into())),
                }
            }
            Event::EndpointChanged { peer, from, to } => {
                peer.fields(&mut f);
                f.push(("endpoint", to.as_str().into()));
                f.push(("previous_endpoint", from.as_str().into()));
            }
            Event::ConfigChanged {
                added,
                removed,
                listen_port,
                peers,
            } => {
                names(&mut f, "added", added);
                names(&mut f, "removed", removed);
                if let Some((from, to)) = listen_port {
                    f.push(("listen_port", (*to).into()));
                    f.push(("previous_listen_port", (*from).into()));
                }
                f.push(("peers", (*peers).into()));
            }
            Event::StateReloaded {
                added,
                removed,
                changed,
                server_changed,
                peers,
            } => {
                names(&mut f, "added", added);
                names(&mut f, "removed", removed);
                names(&mut f, "changed", changed);
                if *server_changed {
                    f.push(("server", "changed".into()));
                }
                f.push(("peers", (*peers).into()));
            }
            Event::Refused(report) => refused_fields(&mut f, report),
        }
        f
    }
}

/// The fields of a refused-handshake report.
fn refused_fields(f: &mut Vec<(&'static str, Value)>, report: &Report) {
    match report {
        Report::Source {
            source,
            port,
            count,
            source_total,
            total,
        } => {
            f.push(("source", source.to_string().into()));
            f.push(("endpoint", endpoint_of(*source, *port).into()));
            f.push(("count", (*count).into()));
            f.push(("source_total", (*source_total).into()));
            f.push(("total", (*total).into()));
        }
        Report::Others {
            sources,
            untracked_sources_attempts,
            count,
            total,
        } => {
            f.push(("sources", (*sources).into()));
            if *untracked_sources_attempts > 0 {
                f.push((
                    "untracked_sources_count",
                    (*untracked_sources_attempts).into(),
                ));
            }
            f.push(("count", (*count).into()));
            f.push(("total", (*total).into()));
        }
    }
}

/// `IP:PORT`, IPv6 in brackets, as WireGuard writes endpoints.
fn endpoint_of(ip: IpAddr, port: u16) -> String {
    std::net::SocketAddr::new(ip, port).to_string()
}

/// A list field cut after [`MAX_NAMES`], with a `<key>_count` field when it was cut; nothing
/// when the list is empty.
fn names(f: &mut Vec<(&'static str, Value)>, key: &'static str, list: &[String]) {
    if list.is_empty() {
        return;
    }
    f.push((
        key,
        Value::List(list.iter().take(MAX_NAMES).cloned().collect()),
    ));
    if list.len() > MAX_NAMES {
        let count_key = match key {
            "added" => "added_count",
            "removed" => "removed_count",
            _ => "changed_count",
        };
        f.push((count_key, list.len().into()));
    }
}

/// Whether the device has the peer (as opposed to a state peer that is not applied).
fn on_device(p: &PeerStatus) -> bool {
    matches!(
        p.state,
        PeerState::Applied | PeerState::PendingRemoval | PeerState::Unknown
    )
}

/// What to log about the first observation: whether the interface is there.
pub fn initial(cur: &Status) -> Vec<Event> {
    if cur.up {
        vec![Event::InterfaceUp {
            listen_port: cur.listen_port,
            peers: cur.peers.iter().filter(|p| on_device(p)).count(),
            connected: cur.peers_connected,
        }]
    } else {
        vec![Event::InterfaceDown {
            connected_before: 0,
        }]
    }
}

/// What happened between two observations. While the interface is down nothing else is
/// reported; when it comes back, peers are reported as they connect again.
pub fn diff(prev: &Status, cur: &Status) -> Vec<Event> {
    let mut out = match (prev.up, cur.up) {
        (true, false) => {
            return vec![Event::InterfaceDown {
                connected_before: prev.peers_connected,
            }]
        }
        (false, false) => return Vec::new(),
        (false, true) => initial(cur),
        (true, true) => config_change(prev, cur).into_iter().collect(),
    };
    peer_changes(prev, cur, &mut out);
    out
}

/// Peers added to or removed from the device, or a new listen port; `None` when neither.
fn config_change(prev: &Status, cur: &Status) -> Option<Event> {
    let keys = |s: &Status| -> HashSet<Key> {
        s.peers
            .iter()
            .filter(|p| on_device(p))
            .map(|p| p.public_key)
            .collect()
    };
    let (before, now) = (keys(prev), keys(cur));
    let label = |p: &PeerStatus| PeerRef::of(p).label();
    let added: Vec<String> = cur
        .peers
        .iter()
        .filter(|p| on_device(p) && !before.contains(&p.public_key))
        .map(label)
        .collect();
    let removed: Vec<String> = prev
        .peers
        .iter()
        .filter(|p| on_device(p) && !now.contains(&p.public_key))
        .map(|p| {
            // Named by the newer state when it still knows the key.
            cur.peers
                .iter()
                .find(|c| c.public_key == p.public_key && c.name.is_some())
                .map_or_else(|| label(p), label)
        })
        .collect();
    let port = match (prev.listen_port, cur.listen_port) {
        (Some(a), Some(b)) if a != b => Some((a, b)),
        _ => None,
    };
    if added.is_empty() && removed.is_empty() && port.is_none() {
        return None;
    }
    Some(Event::ConfigChanged {
        added,
        removed,
        listen_port: port,
        peers: now.len(),
    })
}

/// Peers that connected, disconnected or moved, in the order of `cur`; then connected peers
/// that vanished from the state and the device alike.
fn peer_changes(prev: &Status, cur: &Status, out: &mut Vec<Event>) {
    let previous: HashMap<Key, &PeerStatus> =
        prev.peers.iter().map(|p| (p.public_key, p)).collect();
    let mut seen = HashSet::new();
    for p in &cur.peers {
        seen.insert(p.public_key);
        let before = previous.get(&p.public_key).copied();
        let was = before.is_some_and(|b| b.connected);
        if p.connected && !was {
            out.push(Event::PeerConnected {
                peer: PeerRef::of(p),
                endpoint: p.endpoint.clone(),
            });
        }
        if !p.connected && was {
            out.push(Event::PeerDisconnected {
                peer: PeerRef::of(p),
                endpoint: p
                    .endpoint
                    .clone()
                    .or_else(|| before.and_then(|b| b.endpoint.clone())),
                handshake_age: p.handshake_age_seconds,
            });
        }
        if let (Some(from), Some(to)) = (before.and_then(|b| b.endpoint.as_ref()), &p.endpoint) {
            if from != to {
                out.push(Event::EndpointChanged {
                    peer: PeerRef::of(p),
                    from: from.clone(),
                    to: to.clone(),
                });
            }
        }
    }
    for p in prev.peers.iter().filter(|p| !seen.contains(&p.public_key)) {
        if p.connected {
            out.push(Event::PeerDisconnected {
                peer: PeerRef::of(p),
                endpoint: p.endpoint.clone(),
                handshake_age: None,
            });
        }
    }
}

/// What changed between two loads of the state; `None` when nothing did.
pub fn state_changes(old: &State, new: &State) -> Option<Event> {
    let added: Vec<String> = new
        .peers
        .keys()
        .filter(|n| !old.peers.contains_key(*n))
        .map(ToString::to_string)
        .collect();
    let removed: Vec<String> = old
        .peers
        .keys()
        .filter(|n| !new.peers.contains_key(*n))
        .map(ToString::to_string)
        .collect();
    let changed: Vec<String> = new
        .peers
        .iter()
        .filter(|(n, p)| old.peers.get(*n).is_some_and(|o| o != *p))
        .map(|(n, _)| n.to_string())
        .collect();
    let server_changed = old.server != new.server;
    if added.is_empty() && removed.is_empty() && changed.is_empty() && !server_changed {
        return None;
    }
    Some(Event::StateReloaded {
        added,
        removed,
        changed,
        server_changed,
        peers: new.peers.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{Observed, ObservedPeer};
    use crate::status::status_within;
    use crate::testing::{peer, state};
    use crate::Date;
    use std::collections::BTreeMap;

    const WINDOW: u64 = 180;

    fn today() -> Date {
        Date::parse("2026-11-24").unwrap()
    }

    fn two_peers() -> State {
        let mut s = state("192.168.100.0/24", "192.168.100.1");
        s.peers
            .insert("alice".parse().unwrap(), peer("192.168.100.2", 1));
        s.peers
            .insert("bob".parse().unwrap(), peer("192.168.100.3", 2));
        s
    }

    fn dev(key: u8, handshake: u64, endpoint: Option<&str>) -> ObservedPeer {
        ObservedPeer {
            public_key: Key::from([key; 32]),
            preshared_key: None,
            endpoint: endpoint.map(str::to_owned),
            allowed_ips: vec![],
            latest_handshake: handshake,
            rx_bytes: 0,
            tx_bytes: 0,
            keepalive: 0,
        }
    }

    fn observe(s: &State, peers: Option<Vec<ObservedPeer>>, now: u64) -> Status {
        let o = peers.map(|peers| Observed {
            public_key: None,
            listen_port: 51820,
            peers,
        });
        status_within(s, o.as_ref(), &BTreeMap::new(), now, today(), WINDOW)
    }

    fn names(events: &[Event]) -> Vec<&'static str> {
        events.iter().map(Event::name).collect()
    }

    #[test]
    fn connect_roam_disconnect_and_come_back() {
        let s = two_peers();
        let a = "198.51.100.10:40000";
        let b = "198.51.100.60:41000";
        let t0 = observe(&s, Some(vec![dev(1, 0, None), dev(2, 0, None)]), 1000);
        assert_eq!(names(&initial(&t0)), ["interface_up"]);
        let t1 = observe(&s, Some(vec![dev(1, 1001, Some(a)), dev(2, 0, None)]), 1002);
        let e = diff(&t0, &t1);
        assert_eq!(names(&e), ["peer_connected"]);
        let f = e[0].fields();
        assert_eq!(f[0], ("peer", "alice".into()));
        assert_eq!(f[1], ("address", "192.168.100.2".into()));
        assert_eq!(f[2], ("endpoint", a.into()));
        // Still connected, nothing to say.
        let t2 = observe(&s, Some(vec![dev(1, 1001, Some(a)), dev(2, 0, None)]), 1100);
        assert!(diff(&t1, &t2).is_empty());
        // Roaming while connected: only the endpoint.
        let t3 = observe(&s, Some(vec![dev(1, 1001, Some(b)), dev(2, 0, None)]), 1110);
        let e = diff(&t2, &t3);
        assert_eq!(names(&e), ["endpoint_changed"]);
        assert!(e[0].fields().contains(&("previous_endpoint", a.into())));
        // The handshake grows stale: disconnected, with its age.
        let t4 = observe(
            &s,
            Some(vec![dev(1, 1001, Some(b)), dev(2, 0, None)]),
            1001 + 180,
        );
        let e = diff(&t3, &t4);
        assert_eq!(names(&e), ["peer_disconnected"]);
        assert!(e[0].fields().contains(&("handshake_age", 180u64.into())));
        // Back from elsewhere: connected and roamed.
        let t5 = observe(&s, Some(vec![dev(1, 1300, Some(a)), dev(2, 0, None)]), 1301);
        assert_eq!(
            names(&diff(&t4, &t5)),
            ["peer_connected", "endpoint_changed"]
        );
    }

    #[test]
    fn the_interface_vanishes_and_comes_back() {
        let s = two_peers();
        let up = observe(&s, Some(vec![dev(1, 999, Some("198.51.100.10:1"))]), 1000);
        let down = observe(&s, None, 1005);
        let e = diff(&up, &down);
        assert_eq!(
            e,
            vec![Event::InterfaceDown {
                connected_before: 1
            }]
        );
        assert_eq!(e[0].level(), Level::Warn);
        assert!(diff(&down, &observe(&s, None, 1010)).is_empty());
        assert_eq!(names(&initial(&down)), ["interface_down"]);
        // Back: up, and peers connect as they handshake again; no config_changed noise.
        let back = observe(&s, Some(vec![dev(1, 0, None), dev(2, 0, None)]), 1020);
        assert_eq!(names(&diff(&down, &back)), ["interface_up"]);
        let again = observe(
            &s,
            Some(vec![dev(1, 1021, Some("198.51.100.10:2")), dev(2, 0, None)]),
            1022,
        );
        assert_eq!(names(&diff(&back, &again)), ["peer_connected"]);
    }

    #[test]
    fn config_changes_name_the_peers() {
        let s = two_peers();
        let before = observe(&s, Some(vec![dev(1, 0, None)]), 1000);
        // bob applied, an unknown key appeared.
        let after = observe(
            &s,
            Some(vec![dev(1, 0, None), dev(2, 0, None), dev(9, 0, None)]),
            1001,
        );
        let e = diff(&before, &after);
        assert_eq!(names(&e), ["config_changed"]);
        let added = Value::List(vec!["bob".into(), Key::from([9; 32]).to_string()]);
        assert!(e[0].fields().contains(&("added", added)), "{e:?}");
        // A connected alice removed: config_changed names her, and she is disconnected.
        let t = observe(
            &s,
            Some(vec![dev(1, 1000, Some("198.51.100.10:1")), dev(2, 0, None)]),
            1001,
        );
        let gone = observe(&s, Some(vec![dev(2, 0, None)]), 1002);
        let e = diff(&t, &gone);
        assert_eq!(names(&e), ["config_changed", "peer_disconnected"]);
        assert!(e[0]
            .fields()
            .contains(&("removed", Value::List(vec!["alice".into()]))));
        // A new port.
        let mut moved = gone.clone();
        moved.listen_port = Some(51821);
        let e = diff(&gone, &moved);
        assert!(e[0]
            .fields()
            .contains(&("previous_listen_port", 51820u16.into())));
    }

    #[test]
    fn long_lists_are_cut_with_a_count() {
        let many: Vec<String> = (0..25).map(|i| format!("p{i}")).collect();
        let e = Event::ConfigChanged {
            added: many,
            removed: vec![],
            listen_port: None,
            peers: 25,
        };
        let f = e.fields();
        match &f[0].1 {
            Value::List(l) => assert_eq!(l.len(), MAX_NAMES),
            v => panic!("{v:?}"),
        }
        assert_eq!(f[1], ("added_count", 25usize.into()));
        assert!(!f.iter().any(|(k, _)| *k == "removed"));
    }

    #[test]
    fn unknown_peers_go_by_public_key() {
        let s = two_peers();
        let t0 = observe(&s, Some(vec![dev(9, 0, None)]), 1000);
        let t1 = observe(&s, Some(vec![dev(9, 1000, Some("198.51.100.9:9"))]), 1001);
        let e = diff(&t0, &t1);
        let f = e[0].fields();
        assert_eq!(f[0], ("public_key", Key::from([9; 32]).to_string().into()));
        assert!(!f.iter().any(|(k, _)| *k == "peer" || *k == "address"));
    }

    #[test]
    fn state_reloads_say_what_changed() {
        let old = two_peers();
        assert_eq!(state_changes(&old, &old), None);
        let mut new = old.clone();
        let alice = new.peers.remove(&"alice".parse().unwrap()).unwrap();
        new.peers.insert("alicia".parse().unwrap(), alice);
        new.peers.get_mut(&"bob".parse().unwrap()).unwrap().enabled = false;
        let e = state_changes(&old, &new).unwrap();
        let f = e.fields();
        assert_eq!(f[0], ("added", Value::List(vec!["alicia".into()])));
        assert_eq!(f[1], ("removed", Value::List(vec!["alice".into()])));
        assert_eq!(f[2], ("changed", Value::List(vec!["bob".into()])));
        assert_eq!(e.name(), "state_reloaded");
    }

    #[test]
    fn refused_reports_become_lines() {
        let e = Event::Refused(Report::Source {
            source: "198.51.100.66".parse().unwrap(),
            port: 40000,
            count: 3,
            source_total: 5,
            total: 7,
        });
        assert_eq!(e.name(), "handshake_refused");
        assert_eq!(
            e.fields(),
            vec![
                ("source", "198.51.100.66".into()),
                ("endpoint", "198.51.100.66:40000".into()),
                ("count", 3u64.into()),
                ("source_total", 5u64.into()),
                ("total", 7u64.into()),
            ]
        );
        let v6 = Event::Refused(Report::Source {
            source: "2001:db8::1".parse().unwrap(),
            port: 1,
            count: 1,
            source_total: 1,
            total: 1,
        });
        assert!(v6
            .fields()
            .contains(&("endpoint", "[2001:db8::1]:1".into())));
    }
}
