//! The desired state: what `server.yml` and `peers/NAME.yml` say. Secrets are not part of it;
//! the shell reads them from key files only when a command needs them.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::{Date, Endpoint, InterfaceName, Key, PeerName};

/// The default client keepalive in seconds (FR-008): short enough for most NAT timeouts.
pub const DEFAULT_KEEPALIVE: u16 = 25;

/// `server.yml`: the interface and the policy defaults for peers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    /// The WireGuard interface, e.g. `wg0`.
    pub interface: InterfaceName,
    /// The VPN subnet peers get their addresses from.
    pub subnet: Ipv4Net,
    /// The server's own address in the subnet.
    pub address: Ipv4Addr,
    /// The UDP port WireGuard listens on.
    pub listen_port: u16,
    /// `HOST:PORT` that clients connect to.
    pub endpoint: Endpoint,
    /// The server's public key (its private key is in `server.key`).
    pub public_key: Key,
    /// What a peer may reach unless its own file says otherwise.
    pub access: Vec<Ipv4Net>,
    /// Never reachable from the VPN, whatever an access list says.
    #[serde(default)]
    pub deny: Vec<Ipv4Net>,
    /// DNS servers written into client configs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<IpAddr>,
    /// The keepalive new peers get.
    #[serde(default = "default_keepalive")]
    pub keepalive: u16,
    /// Source NAT for traffic from the VPN toward the access networks.
    #[serde(default)]
    pub nat: Nat,
    /// Who may reach the listen port (SR-005); empty means anyone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_sources: Vec<Ipv4Net>,
    /// New connections from outside the VPN (the management network, the server's other
    /// networks) toward peers' VPN addresses: dropped unless this says `allow`.
    #[serde(default, skip_serializing_if = "Inbound::is_drop")]
    pub inbound: Inbound,
}

/// `server.yml: inbound`: whether hosts outside the VPN may open connections to peers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Inbound {
    /// Only replies to flows a peer started reach it from outside the VPN.
    #[default]
    Drop,
    /// Anyone the server routes for may open connections to peers.
    Allow,
}

impl Inbound {
    fn is_drop(&self) -> bool {
        *self == Inbound::Drop
    }
}

/// `server.yml: nat`: how the networks behind the server answer VPN traffic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Nat {
    /// Rewrite the source of VPN traffic to the server's address on the way out, so the
    /// networks behind it need no route back to the VPN subnet.
    #[default]
    Masquerade,
    /// Forward VPN addresses unchanged: the router has a route back to the VPN subnet.
    None,
}

fn default_keepalive() -> u16 {
    DEFAULT_KEEPALIVE
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// `peers/NAME.yml`: one peer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    /// The peer's VPN address; on the server its AllowedIPs is this address as a /32.
    pub address: Ipv4Addr,
    /// The peer's public key.
    pub public_key: Key,
    /// What the peer may reach; absent means the server's default access.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<Vec<Ipv4Net>>,
    /// PersistentKeepalive in the client config, seconds; 0 turns it off.
    pub keepalive: u16,
    /// A disabled peer stays in the state but not on the device.
    pub enabled: bool,
    /// From this date on (UTC) the peer is left off the device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<Date>,
    /// Whether `peers/NAME.psk` holds a preshared key for this peer.
    #[serde(default, skip_serializing_if = "is_false")]
    pub preshared_key: bool,
}

/// The whole desired state: the server and its peers, ordered by name.
#[derive(Debug, Clone, PartialEq)]
pub struct State {
    /// `server.yml`.
    pub server: Server,
    /// `peers/*.yml`, by name.
    pub peers: BTreeMap<PeerName, Peer>,
}

impl State {
    /// The access list in force for a peer: its own, or the server's default.
    pub fn access_of<'a>(&'a self, peer: &'a Peer) -> &'a [Ipv4Net] {
        peer.access.as_deref().unwrap_or(&self.server.access)
    }

    /// Whether a peer belongs on the live device today: enabled and not expired.
    pub fn is_active(peer: &Peer, today: Date) -> bool {
        peer.enabled && peer.expires.is_none_or(|e| today < e)
    }

    /// The peers that belong on the device today, by name.
    pub fn active_peers(&self, today: Date) -> impl Iterator<Item = (&PeerName, &Peer)> {
        self.peers
            .iter()
            .filter(move |(_, p)| Self::is_active(p, today))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firewall_fields_have_defaults_and_parse() {
        let base = "interface: wg0\nsubnet: 192.168.100.0/24\naddress: 192.168.100.1\n\
                    listen_port: 51820\nendpoint: vpn.example.com:51820\n\
                    public_key: 7u7u7u7u7u7u7u7u7u7u7u7u7u7u7u7u7u7u7u7u7u4=\n\
                    access: [192.168.0.0/16]\n";
        // A server.yml from before the firewall stays valid: masquerade, open port.
        let old: Server = serde_norway::from_str(base).unwrap();
        assert_eq!(old.nat, Nat::Masquerade);
        assert!(old.allowed_sources.is_empty());
        let text = format!("{base}nat: none\nallowed_sources: [203.0.113.0/24]\n");
        let new: Server = serde_norway::from_str(&text).unwrap();
        assert_eq!(new.nat, Nat::None);
        assert_eq!(
            new.allowed_sources,
            ["203.0.113.0/24".parse::<Ipv4Net>().unwrap()]
        );
        // Written back: nat always (a policy worth seeing), allowed_sources only when set.
        let yaml = serde_norway::to_string(&old).unwrap();
        assert!(
            yaml.contains("nat: masquerade\n") && !yaml.contains("allowed_sources"),
            "{yaml}"
        );
        let bad = format!("{base}nat: snat\n");
        let err = serde_norway::from_str::<Server>(&bad)
            .unwrap_err()
            .to_string();
        assert!(err.contains("masquerade") && err.contains("none"), "{err}");
    }

    #[test]
    fn expiry_is_exclusive() {
        let mut p = Peer {
            address: "192.168.100.2".parse().unwrap(),
            public_key: Key::from([1; 32]),
            access: None,
            keepalive: 25,
            enabled: true,
            expires: Some(Date::parse("2026-12-01").unwrap()),
            preshared_key: false,
        };
        assert!(State::is_active(&p, Date::parse("2026-11-30").unwrap()));
        assert!(!State::is_active(&p, Date::parse("2026-12-01").unwrap()));
        p.expires = None;
        p.enabled = false;
        assert!(!State::is_active(&p, Date::parse("2026-11-30").unwrap()));
    }
}
