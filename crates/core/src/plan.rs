//! The plan: the smallest set of per-peer changes that brings a live device to the desired
//! state without disturbing anyone else.
//!
//! Measured on wireguard-go (DESIGN.md): adding, updating or removing *other* peers one at a
//! time loses nothing, while replacing the peer list, removing and re-adding a peer, or
//! re-setting the listen port to the same value cuts live tunnels. So the plan never replaces
//! the peer list, updates peers in place, and touches interface fields only when they differ.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use ipnet::Ipv4Net;
use serde::Serialize;

use crate::device::Observed;
use crate::{Date, Key, PeerName, Secret, State};

/// One peer as it should be on the device.
#[derive(Debug, Clone)]
pub struct DesiredPeer {
    /// The peer's name in the state.
    pub name: PeerName,
    /// Its identity on the device.
    pub public_key: Key,
    /// Server-side AllowedIPs: the peer's address as a /32.
    pub allowed_ips: Vec<Ipv4Net>,
    /// Its preshared key, if it has one.
    pub preshared_key: Option<Secret>,
}

/// The device as it should be.
#[derive(Debug, Clone)]
pub struct Desired {
    /// The port to listen on.
    pub listen_port: u16,
    /// The public key of the private key the device should have.
    pub public_key: Key,
    /// The active peers.
    pub peers: Vec<DesiredPeer>,
}

impl Desired {
    /// The device that a state asks for today: its active peers, with their preshared keys.
    pub fn from_state(
        state: &State,
        preshared_keys: &BTreeMap<PeerName, Secret>,
        today: Date,
    ) -> Self {
        Desired {
            listen_port: state.server.listen_port,
            public_key: state.server.public_key,
            peers: state
                .active_peers(today)
                .map(|(name, p)| DesiredPeer {
                    name: name.clone(),
                    public_key: p.public_key,
                    allowed_ips: vec![Ipv4Net::from(p.address)],
                    preshared_key: preshared_keys.get(name).cloned(),
                })
                .collect(),
        }
    }
}

/// One change to the live device.
#[derive(Debug, Clone)]
pub enum Change {
    /// The device holds another private key: set the state's.
    PrivateKey,
    /// Listen on another port.
    ListenPort {
        /// The port now.
        from: u16,
        /// The port wanted.
        to: u16,
    },
    /// A peer the device does not have.
    Add(DesiredPeer),
    /// A peer whose settings differ; only the fields that are `Some` change.
    Update {
        /// The peer as desired.
        peer: DesiredPeer,
        /// New AllowedIPs, when they differ.
        allowed_ips: bool,
        /// The preshared key differs (set it, or clear it when the peer has none).
        preshared_key: bool,
        /// Server-side keepalive is set on the device and should be off.
        keepalive: bool,
    },
    /// A peer to take off the device: disabled, expired, removed, rotated away, or unknown.
    Remove {
        /// The peer's name, when the state knows the key.
        name: Option<PeerName>,
        /// Its public key.
        public_key: Key,
    },
}

/// The changes, in the order to apply them: interface, removals, updates, additions.
/// Removals come first so an address moved from one key to another is never claimed twice.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// The changes.
    pub changes: Vec<Change>,
}

/// What a plan does, by peer name, for `apply --json` (`changed_when` in Ansible).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Whether anything changes.
    pub changed: bool,
    /// Interface fields that change (`private_key`, `listen_port`).
    pub interface: Vec<String>,
    /// Peers added.
    pub added: Vec<String>,
    /// Peers updated in place.
    pub updated: Vec<String>,
    /// Peers removed; unknown peers by public key.
    pub removed: Vec<String>,
}

/// Compares the desired device with the observed one. `names` maps every public key in the
/// state (active or not) to its peer, so that removals can be named.
pub fn plan(desired: &Desired, observed: &Observed, names: &HashMap<Key, PeerName>) -> Plan {
    let mut changes = Vec::new();
    if observed.public_key != Some(desired.public_key) {
        changes.push(Change::PrivateKey);
    }
    if observed.listen_port != desired.listen_port {
        changes.push(Change::ListenPort {
            from: observed.listen_port,
            to: desired.listen_port,
        });
    }
    let wanted: HashMap<Key, &DesiredPeer> =
        desired.peers.iter().map(|p| (p.public_key, p)).collect();
    let present: HashMap<Key, _> = observed.peers.iter().map(|p| (p.public_key, p)).collect();

    for o in &observed.peers {
        if !wanted.contains_key(&o.public_key) {
            changes.push(Change::Remove {
                name: names.get(&o.public_key).cloned(),
                public_key: o.public_key,
            });
        }
    }
    let mut additions = Vec::new();
    for d in &desired.peers {
        match present.get(&d.public_key) {
            None => additions.push(Change::Add(d.clone())),
            Some(o) => {
                let mut have = o.allowed_ips.clone();
                have.sort();
                let mut want = d.allowed_ips.clone();
                want.sort();
                let psk_differs = match (&o.preshared_key, &d.preshared_key) {
                    (None, None) => false,
                    (Some(a), Some(b)) => a.expose() != b.expose(),
                    _ => true,
                };
                let update = Change::Update {
                    peer: d.clone(),
                    allowed_ips: have != want,
                    preshared_key: psk_differs,
                    keepalive: o.keepalive != 0,
                };
                if have != want || psk_differs || o.keepalive != 0 {
                    changes.push(update);
                }
            }
        }
    }
    changes.extend(additions);
    Plan { changes }
}

impl Plan {
    /// True when the device already matches.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// The plan by peer name.
    pub fn summary(&self) -> Summary {
        let mut s = Summary {
            changed: !self.changes.is_empty(),
            interface: vec![],
            added: vec![],
            updated: vec![],
            removed: vec![],
        };
        for c in &self.changes {
            match c {
                Change::PrivateKey => s.interface.push("private_key".into()),
                Change::ListenPort { .. } => s.interface.push("listen_port".into()),
                Change::Add(p) => s.added.push(p.name.to_string()),
                Change::Update { peer, .. } => s.updated.push(peer.name.to_string()),
                Change::Remove { name, public_key } => s.removed.push(
                    name.as_ref()
                        .map_or_else(|| public_key.to_string(), ToString::to_string),
                ),
            }
        }
        s
    }
}

/// One line per change, as `apply --dry-run` prints it. Never shows a key that is secret.
impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ips = |p: &DesiredPeer| {
            p.allowed_ips
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        match self {
            Change::PrivateKey => write!(f, "set interface private key (from server.key)"),
            Change::ListenPort { from, to } => write!(f, "set listen-port {to} (now {from})"),
            Change::Add(p) => write!(
                f,
                "add peer {} public-key {} allowed-ips {}{}",
                p.name,
                p.public_key,
                ips(p),
                if p.preshared_key.is_some() {
                    " preshared-key"
                } else {
                    ""
                }
            ),
            Change::Update {
                peer,
                allowed_ips,
                preshared_key,
                keepalive,
            } => {
                write!(
                    f,
                    "update peer {} public-key {}:",
                    peer.name, peer.public_key
                )?;
                if *allowed_ips {
                    write!(f, " allowed-ips {}", ips(peer))?;
                }
                if *preshared_key {
                    let what = if peer.preshared_key.is_some() {
                        "set"
                    } else {
                        "clear"
                    };
                    write!(f, " preshared-key ({what})")?;
                }
                if *keepalive {
                    write!(f, " persistent-keepalive off")?;
                }
                Ok(())
            }
            Change::Remove {
                name: Some(n),
                public_key,
            } => {
                write!(f, "remove peer {n} public-key {public_key}")
            }
            Change::Remove {
                name: None,
                public_key,
            } => {
                write!(f, "remove unknown peer public-key {public_key}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::ObservedPeer;
    use crate::testing::{peer, state};

    fn today() -> Date {
        Date::parse("2026-11-24").unwrap()
    }

    fn observed_from(desired: &Desired) -> Observed {
        Observed {
            public_key: Some(desired.public_key),
            listen_port: desired.listen_port,
            peers: desired
                .peers
                .iter()
                .map(|p| ObservedPeer {
                    public_key: p.public_key,
                    preshared_key: p.preshared_key.clone(),
                    endpoint: None,
                    allowed_ips: p.allowed_ips.clone(),
                    latest_handshake: 0,
                    rx_bytes: 0,
                    tx_bytes: 0,
                    keepalive: 0,
                })
                .collect(),
        }
    }

    fn names(s: &State) -> HashMap<Key, PeerName> {
        s.peers
            .iter()
            .map(|(n, p)| (p.public_key, n.clone()))
            .collect()
    }

    #[test]
    fn in_sync_means_no_changes() {
        let mut s = state("192.168.100.0/24", "192.168.100.1");
        s.peers
            .insert("a".parse().unwrap(), peer("192.168.100.2", 1));
        let d = Desired::from_state(&s, &BTreeMap::new(), today());
        let p = plan(&d, &observed_from(&d), &names(&s));
        assert!(p.is_empty(), "{:?}", p);
        assert!(!p.summary().changed);
    }

    #[test]
    fn only_what_differs_changes_and_removals_come_first() {
        let mut s = state("192.168.100.0/24", "192.168.100.1");
        s.peers
            .insert("keep".parse().unwrap(), peer("192.168.100.2", 1));
        s.peers
            .insert("moved".parse().unwrap(), peer("192.168.100.3", 2));
        s.peers
            .insert("gone".parse().unwrap(), peer("192.168.100.4", 3));
        let before = Desired::from_state(&s, &BTreeMap::new(), today());
        let mut observed = observed_from(&before);
        observed.peers.push(ObservedPeer {
            public_key: Key::from([9; 32]),
            ..observed.peers[0].clone()
        });

        s.peers.get_mut(&"moved".parse().unwrap()).unwrap().address =
            "192.168.100.9".parse().unwrap();
        s.peers.get_mut(&"gone".parse().unwrap()).unwrap().enabled = false;
        s.peers
            .insert("new".parse().unwrap(), peer("192.168.100.5", 4));
        let after = Desired::from_state(&s, &BTreeMap::new(), today());
        let p = plan(&after, &observed, &names(&s));
        let lines: Vec<String> = p.changes.iter().map(ToString::to_string).collect();
        assert_eq!(p.changes.len(), 4, "{lines:#?}");
        assert!(lines[0].starts_with("remove peer gone"), "{lines:#?}");
        assert!(lines[1].starts_with("remove unknown peer"), "{lines:#?}");
        assert!(
            lines[2].starts_with("update peer moved")
                && lines[2].ends_with("allowed-ips 192.168.100.9/32")
        );
        assert!(lines[3].starts_with("add peer new"));
        let sum = p.summary();
        assert_eq!(sum.added, vec!["new"]);
        assert_eq!(sum.updated, vec!["moved"]);
        assert_eq!(sum.removed.len(), 2);
        assert!(sum.interface.is_empty());
    }

    #[test]
    fn interface_fields_change_only_when_they_differ() {
        let s = state("192.168.100.0/24", "192.168.100.1");
        let d = Desired::from_state(&s, &BTreeMap::new(), today());
        let mut o = observed_from(&d);
        o.listen_port = 51821;
        o.public_key = None;
        let p = plan(&d, &o, &names(&s));
        assert_eq!(p.summary().interface, vec!["private_key", "listen_port"]);
    }

    #[test]
    fn a_rotated_key_is_a_removal_and_an_addition() {
        let mut s = state("192.168.100.0/24", "192.168.100.1");
        s.peers
            .insert("a".parse().unwrap(), peer("192.168.100.2", 1));
        let o = observed_from(&Desired::from_state(&s, &BTreeMap::new(), today()));
        s.peers.get_mut(&"a".parse().unwrap()).unwrap().public_key = Key::from([5; 32]);
        let p = plan(
            &Desired::from_state(&s, &BTreeMap::new(), today()),
            &o,
            &names(&s),
        );
        let sum = p.summary();
        assert_eq!(sum.added, vec!["a"]);
        assert_eq!(sum.removed, vec![Key::from([1; 32]).to_string()]);
    }
}
