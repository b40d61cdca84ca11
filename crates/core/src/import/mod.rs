//! Import of an existing WireGuard server (wg-quick, PiVPN, wg-easy) into a wgadm state.
//!
//! Each reader turns its format into a [`Source`]: the server's key, port and addresses and
//! one [`SourcePeer`] per client, with what wgadm cannot hold listed as it was found.
//! [`build`] then makes the state, or reports every problem at once: what the model cannot
//! hold ([`IssueKind::Unsupported`], dropped only when the user asks) and conflicts
//! ([`IssueKind::Conflict`], never dropped). Pure: the shell reads the files.

pub mod wgeasy;
pub mod wgquick;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};

use crate::model::{Nat, DEFAULT_KEEPALIVE};
use crate::{
    check, Date, Endpoint, InterfaceName, Key, Peer, PeerName, Problem, Secret, Server, State,
};

/// Whether an issue can be dropped at the user's request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssueKind {
    /// Something wgadm's model cannot hold: refused unless the user asks to drop it.
    Unsupported,
    /// Something wrong in the source (duplicates, bad keys, addresses outside the subnet).
    Conflict,
}

/// One thing found in a source that stops (or, dropped, changes) the import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// The kind.
    pub kind: IssueKind,
    /// Where: the file and line or record, and the peer.
    pub place: String,
    /// What it is and what to do.
    pub message: String,
}

impl Issue {
    fn unsupported(place: &str, message: impl Into<String>) -> Self {
        Issue {
            kind: IssueKind::Unsupported,
            place: place.to_owned(),
            message: message.into(),
        }
    }

    /// A conflict at `place`.
    pub fn conflict(place: &str, message: impl Into<String>) -> Self {
        Issue {
            kind: IssueKind::Conflict,
            place: place.to_owned(),
            message: message.into(),
        }
    }

    /// As a [`Problem`], for the shell's error type.
    pub fn to_problem(&self) -> Problem {
        Problem {
            place: self.place.clone(),
            message: self.message.clone(),
        }
    }
}

/// A server as read from its source, before anything is checked.
#[derive(Debug, Default)]
pub struct Source {
    /// `wg-quick`, `PiVPN` or `wg-easy`.
    pub kind: &'static str,
    /// The file the server was read from, for messages.
    pub file: String,
    /// Where the server's own settings are, for messages [default: `FILE: [Interface]`].
    pub server_place: Option<String>,
    /// The server's private key.
    pub private_key: Option<Secret>,
    /// The server's public key where the source states it (checked against the private key).
    pub public_key: Option<String>,
    /// `ListenPort`.
    pub listen_port: Option<u16>,
    /// The interface's addresses, as written.
    pub addresses: Vec<String>,
    /// Interface settings wgadm does not keep, as `Key` names with where they were.
    pub interface_extras: Vec<(String, String)>,
    /// The clients.
    pub peers: Vec<SourcePeer>,
    /// Where clients connect to, when a client config or the source says.
    pub endpoint: Option<String>,
    /// DNS servers client configs name.
    pub dns: Vec<IpAddr>,
    /// Problems found while reading (bad keys, unreadable lines).
    pub issues: Vec<Issue>,
}

/// A client as read from its source.
#[derive(Debug, Clone, Default)]
pub struct SourcePeer {
    /// Where it was found, for messages (`wg0.conf line 12`).
    pub place: String,
    /// The name the source gives it, if any.
    pub name: Option<String>,
    /// The public key as written.
    pub public_key: String,
    /// Its preshared key.
    pub preshared_key: Option<Secret>,
    /// Its AllowedIPs on the server, as written.
    pub allowed_ips: Vec<String>,
    /// Its private key, when the source keeps it.
    pub private_key: Option<Secret>,
    /// Whether it is on the server.
    pub enabled: bool,
    /// The client's PersistentKeepalive, when its config or record says.
    pub keepalive: Option<u16>,
    /// When it expires.
    pub expires: Option<Date>,
    /// Peer settings on the server that wgadm does not keep (`Endpoint`, `PersistentKeepalive`).
    pub extras: Vec<String>,
}

/// What the user decides about the new state.
#[derive(Debug, Clone)]
pub struct Options {
    /// The interface name.
    pub interface: InterfaceName,
    /// `--endpoint`, else the one the source names.
    pub endpoint: Option<String>,
    /// The default access list.
    pub access: Vec<Ipv4Net>,
    /// The deny list.
    pub deny: Vec<Ipv4Net>,
    /// `--dns`, else what client configs say.
    pub dns: Vec<IpAddr>,
    /// Source NAT.
    pub nat: Nat,
    /// `--drop-unsupported`: leave out what the model cannot hold instead of refusing.
    pub drop_unsupported: bool,
}

/// An imported state with its secrets.
#[derive(Debug)]
pub struct Imported {
    /// The state.
    pub state: State,
    /// `server.key`.
    pub server_key: Secret,
    /// `peers/NAME.key` for peers whose private key was found.
    pub peer_keys: BTreeMap<PeerName, Secret>,
    /// `peers/NAME.psk`.
    pub preshared_keys: BTreeMap<PeerName, Secret>,
    /// What was left out at the user's request.
    pub dropped: Vec<Issue>,
    /// Peers whose name was made up or changed: (where, new name, why).
    pub renamed: Vec<(String, PeerName, String)>,
}

/// A name from a comment or a source's name field, where it looks like one: kept as it is
/// when it is a valid peer name, else with runs of other characters turned into `-`.
pub fn name_from(text: &str) -> Option<PeerName> {
    let mut text = text.trim();
    // `# Client: alice` and `### Client alice`, as some tools write them.
    for prefix in ["client:", "client ", "peer:", "name:"] {
        if text.len() > prefix.len()
            && text
                .get(..prefix.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
        {
            text = text[prefix.len()..].trim();
            break;
        }
    }
    if let Ok(n) = text.parse::<PeerName>() {
        return Some(n);
    }
    // A sentence is no name.
    if text.split_whitespace().count() > 3 {
        return None;
    }
    let mut out = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let out = out.trim_matches('-');
    let out: String = out.chars().take(64).collect();
    out.parse().ok()
}

fn parse_port(text: &str) -> Option<u16> {
    text.trim().parse().ok().filter(|p| *p != 0)
}

/// Builds the state from a source, or returns every issue at once.
pub fn build(mut source: Source, opts: &Options) -> Result<Imported, Vec<Issue>> {
    let mut issues = std::mem::take(&mut source.issues);
    let server = server_part(&mut source, opts, &mut issues);
    let mut accepted = Accepted::default();
    for sp in std::mem::take(&mut source.peers) {
        accepted.add(sp, server.net, &mut issues);
    }
    finish(server, accepted, source.dns, issues, opts)
}

/// The server's own settings, each `None` where the source lacks or breaks it (with an issue
/// reported).
struct ServerPart {
    key: Option<Secret>,
    listen_port: Option<u16>,
    net: Option<Ipv4Net>,
    endpoint: Option<Endpoint>,
}

/// Reads the server's settings out of `source`, reporting what is missing or wrong.
fn server_part(source: &mut Source, opts: &Options, issues: &mut Vec<Issue>) -> ServerPart {
    let iface_place = source
        .server_place
        .clone()
        .unwrap_or_else(|| format!("{}: [Interface]", source.file));
    for (key, place) in &source.interface_extras {
        issues.push(Issue::unsupported(
            place,
            format!(
                "{key} is not kept by wgadm (it writes the interface config itself; its nftables \
                 firewall does the forwarding and masquerading such scripts usually do); pass \
                 --drop-unsupported to import without it"
            ),
        ));
    }
    let key = source.private_key.take();
    if key.is_none() {
        issues.push(Issue::conflict(
            &iface_place,
            "no server PrivateKey found; import needs the server's private key so that clients keep working",
        ));
    }
    if let (Some(k), Some(p)) = (&key, &source.public_key) {
        if Key::parse(p).ok() != Some(k.public_key()) {
            issues.push(Issue::conflict(
                &iface_place,
                "the server's public key does not belong to its private key; fix the source",
            ));
        }
    }
    let listen_port = source.listen_port;
    if listen_port.is_none() {
        issues.push(Issue::conflict(
            &iface_place,
            "no ListenPort: clients could not know where to connect; add `ListenPort = PORT` to the source",
        ));
    }
    let net = interface_address(&source.addresses, &iface_place, issues);
    let endpoint_text = opts.endpoint.clone().or(source.endpoint.clone());
    let endpoint = server_endpoint(endpoint_text.as_deref(), listen_port, issues);
    ServerPart {
        key,
        listen_port,
        net,
        endpoint,
    }
}

/// The interface address: exactly one IPv4 address with its prefix.
fn interface_address(
    addresses: &[String],
    iface_place: &str,
    issues: &mut Vec<Issue>,
) -> Option<Ipv4Net> {
    let mut iface_net: Option<Ipv4Net> = None;
    let mut extra_addresses = Vec::new();
    for a in addresses {
        match a.parse::<IpNet>() {
            Ok(IpNet::V4(n)) if iface_net.is_none() => iface_net = Some(n),
            Ok(_) => extra_addresses.push(a.clone()),
            Err(_) => issues.push(Issue::conflict(
                iface_place,
                format!("Address {a:?} is not an address with a prefix (like 10.6.0.1/24)"),
            )),
        }
    }
    if !extra_addresses.is_empty() {
        issues.push(Issue::unsupported(
            iface_place,
            format!(
                "Address {}: wgadm keeps one IPv4 address and subnet (no IPv6, no second \
                 address); pass --drop-unsupported to import without {}",
                extra_addresses.join(", "),
                if extra_addresses.len() == 1 {
                    "it"
                } else {
                    "them"
                }
            ),
        ));
    }
    if iface_net.is_none() && !addresses.iter().any(|a| a.parse::<IpNet>().is_err()) {
        issues.push(Issue::conflict(
            iface_place,
            "no IPv4 Address: wgadm needs the server's VPN address and subnet, like 10.6.0.1/24",
        ));
    }
    iface_net
}

/// Where clients connect to: `--endpoint`, else the source's, with the listen port when it
/// names none.
fn server_endpoint(
    text: Option<&str>,
    listen_port: Option<u16>,
    issues: &mut Vec<Issue>,
) -> Option<Endpoint> {
    let Some(e) = text else {
        issues.push(Issue::conflict(
            "--endpoint",
            "the source names no endpoint clients connect to; pass --endpoint HOST[:PORT]",
        ));
        return None;
    };
    match Endpoint::with_default_port(e, listen_port.unwrap_or(51820)) {
        Ok(e) => Some(e),
        Err(err) => {
            issues.push(Issue::conflict(
                "--endpoint",
                format!("{err}; give HOST or HOST:PORT"),
            ));
            None
        }
    }
}

/// The peers taken so far, their secrets, and which keys and addresses are taken (by the
/// place that took them, for messages).
#[derive(Default)]
struct Accepted {
    peers: BTreeMap<PeerName, Peer>,
    peer_keys: BTreeMap<PeerName, Secret>,
    psks: BTreeMap<PeerName, Secret>,
    renamed: Vec<(String, PeerName, String)>,
    by_key: HashMap<Key, String>,
    by_address: HashMap<Ipv4Addr, String>,
}

impl Accepted {
    /// Takes a peer, or reports why not. Every check runs, so one pass reports everything
    /// wrong with the peer.
    fn add(&mut self, sp: SourcePeer, net: Option<Ipv4Net>, issues: &mut Vec<Issue>) {
        let place = sp.place.clone();
        let (public, mut ok) = self.public_key(&sp, issues);
        for extra in &sp.extras {
            issues.push(Issue::unsupported(
                &place,
                format!("{extra} on the server side is not kept by wgadm; pass --drop-unsupported to import without it"),
            ));
        }
        let Some(address) = allowed_address(&sp, &mut ok, issues) else {
            return;
        };
        if let Some(net) = net {
            ok &= address_fits(address, net, &place, issues);
        }
        if let Some(first) = self.by_address.insert(address, place.clone()) {
            issues.push(Issue::conflict(
                &place,
                format!("address {address} is also {first}'s; give one of them another address"),
            ));
            ok = false;
        }
        if !ok {
            return;
        }
        let Some(name) = self.name_for(sp.name.as_deref(), &place, address) else {
            return;
        };
        if let Some(k) = sp.private_key {
            self.peer_keys.insert(name.clone(), k);
        }
        let has_psk = sp.preshared_key.is_some();
        if let Some(k) = sp.preshared_key {
            self.psks.insert(name.clone(), k);
        }
        self.peers.insert(
            name,
            Peer {
                address,
                public_key: public,
                access: None,
                keepalive: sp.keepalive.unwrap_or(DEFAULT_KEEPALIVE),
                enabled: sp.enabled,
                expires: sp.expires,
                preshared_key: has_psk,
            },
        );
    }

    /// The peer's public key, and `false` when it is refused: not a key, low-order, another
    /// peer's, or not its private key's.
    fn public_key(&mut self, sp: &SourcePeer, issues: &mut Vec<Issue>) -> (Key, bool) {
        let place = &sp.place;
        let (public, mut ok) = match Key::parse(&sp.public_key) {
            Ok(k) if k.is_low_order() => {
                issues.push(Issue::conflict(
                    place,
                    "the PublicKey is a low-order point (all zeros, for instance) that authenticates nobody; remove this peer or give its real key",
                ));
                (k, false)
            }
            Ok(k) => (k, true),
            Err(e) => {
                issues.push(Issue::conflict(place, format!("the PublicKey {e}")));
                (Key::from([0; 32]), false)
            }
        };
        if ok {
            if let Some(first) = self.by_key.insert(public, place.clone()) {
                issues.push(Issue::conflict(
                    place,
                    format!("the same PublicKey as {first}; a key belongs to one peer, remove one of them"),
                ));
                ok = false;
            }
        }
        if let Some(k) = &sp.private_key {
            if k.public_key() != public && ok {
                issues.push(Issue::conflict(
                    place,
                    "its private key does not belong to its PublicKey; fix or remove the stray key",
                ));
                ok = false;
            }
        }
        (public, ok)
    }

    /// The peer's name: its own where it is one, else `peer-ADDRESS`, numbered when taken;
    /// every made-up or changed name is recorded in `renamed`.
    fn name_for(
        &mut self,
        given: Option<&str>,
        place: &str,
        address: Ipv4Addr,
    ) -> Option<PeerName> {
        // Digits, dots and a dash: always a valid name.
        let fallback = format!("peer-{address}").parse::<PeerName>().ok()?;
        let mut name = match given.map(|n| (n, name_from(n))) {
            Some((_, Some(n))) => n,
            Some((orig, None)) => {
                self.renamed.push((
                    place.to_owned(),
                    fallback.clone(),
                    format!("{orig:?} does not look like a name"),
                ));
                fallback
            }
            None => {
                self.renamed.push((
                    place.to_owned(),
                    fallback.clone(),
                    "the source gives no name".into(),
                ));
                fallback
            }
        };
        if self.peers.contains_key(&name) {
            let taken = name.clone();
            name = (2..)
                .filter_map(|i| format!("{}-{i}", taken.as_str()).parse::<PeerName>().ok())
                .find(|n| !self.peers.contains_key(n))?;
            self.renamed.push((
                place.to_owned(),
                name.clone(),
                format!("{taken} is taken by another peer"),
            ));
        }
        Some(name)
    }
}

/// The peer's address: the one /32 of its AllowedIPs; anything else is a route wgadm cannot
/// hold. `None` leaves the peer out; a broken entry sets `ok` to false.
fn allowed_address(sp: &SourcePeer, ok: &mut bool, issues: &mut Vec<Issue>) -> Option<Ipv4Addr> {
    let place = &sp.place;
    let mut address = None;
    let mut routes = Vec::new();
    for a in &sp.allowed_ips {
        match a.parse::<IpNet>() {
            Ok(IpNet::V4(n)) if n.prefix_len() == 32 && address.is_none() => {
                address = Some(n.addr())
            }
            Ok(_) => routes.push(a.clone()),
            Err(_) => {
                issues.push(Issue::conflict(
                    place,
                    format!("AllowedIPs {a:?} is not an address or network"),
                ));
                *ok = false;
            }
        }
    }
    if !routes.is_empty() {
        let what = if address.is_some() {
            "the routes are dropped and the peer keeps its /32"
        } else {
            "the peer is left out"
        };
        issues.push(Issue::unsupported(
            place,
            format!(
                "AllowedIPs {}: wgadm gives each peer one IPv4 address (no subnet routed \
                 through a peer, no IPv6); with --drop-unsupported {what}",
                routes.join(", ")
            ),
        ));
    }
    if address.is_none() && routes.is_empty() && *ok {
        issues.push(Issue::conflict(
            place,
            "no AllowedIPs: the peer has no address",
        ));
    }
    address
}

/// Whether a peer's address is a host address of the server's subnet other than the
/// server's own; reports why not.
fn address_fits(address: Ipv4Addr, net: Ipv4Net, place: &str, issues: &mut Vec<Issue>) -> bool {
    let subnet = net.trunc();
    if !subnet.contains(&address) || address == subnet.network() || address == subnet.broadcast() {
        issues.push(Issue::conflict(
            place,
            format!("address {address} is outside the subnet {subnet} (or its network or broadcast address); give the peer an address inside it"),
        ));
        return false;
    }
    if address == net.addr() {
        issues.push(Issue::conflict(
            place,
            format!("address {address} is the server's own; give the peer another"),
        ));
        return false;
    }
    true
}

/// Sorts the issues (conflicts always refuse; unsupported ones refuse unless dropped at the
/// user's request), makes the state and checks it with every state's rules.
fn finish(
    server: ServerPart,
    accepted: Accepted,
    source_dns: Vec<IpAddr>,
    issues: Vec<Issue>,
    opts: &Options,
) -> Result<Imported, Vec<Issue>> {
    let (mut refused, unsupported): (Vec<Issue>, Vec<Issue>) = issues
        .into_iter()
        .partition(|i| i.kind == IssueKind::Conflict);
    let mut dropped = Vec::new();
    if opts.drop_unsupported {
        dropped = unsupported;
    } else {
        refused.extend(unsupported);
    }
    let (Some(server_key), Some(net), Some(endpoint), Some(listen_port)) =
        (server.key, server.net, server.endpoint, server.listen_port)
    else {
        return Err(refused);
    };
    let dns = if opts.dns.is_empty() {
        source_dns
    } else {
        opts.dns.clone()
    };
    let state = State {
        server: Server {
            interface: opts.interface.clone(),
            subnet: net.trunc(),
            address: net.addr(),
            listen_port,
            endpoint,
            public_key: server_key.public_key(),
            access: opts.access.clone(),
            deny: opts.deny.clone(),
            dns,
            keepalive: DEFAULT_KEEPALIVE,
            nat: opts.nat,
            allowed_sources: Vec::new(),
            // An imported server gets the same default as a new one: no connections opened
            // from outside the VPN toward peers (`inbound: allow` in server.yml to change it).
            inbound: Default::default(),
        },
        peers: accepted.peers,
    };
    // The rules every state keeps (subnet size, access lists): reported with the rest.
    for p in check(&state) {
        refused.push(Issue::conflict(&p.place, p.message));
    }
    if !refused.is_empty() {
        return Err(refused);
    }
    Ok(Imported {
        state,
        server_key,
        peer_keys: accepted.peer_keys,
        preshared_keys: accepted.psks,
        dropped,
        renamed: accepted.renamed,
    })
}

/// Parses a port value, for the readers.
pub(crate) fn port(text: &str) -> Option<u16> {
    parse_port(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(drop: bool) -> Options {
        Options {
            interface: "wg0".parse().unwrap(),
            endpoint: Some("vpn.example.com".into()),
            access: vec!["192.168.0.0/16".parse().unwrap()],
            deny: vec![],
            dns: vec![],
            nat: Nat::Masquerade,
            drop_unsupported: drop,
        }
    }

    fn private(b: u8) -> Secret {
        Secret::private_from_random([b; 32])
    }

    fn conf(peers: &str) -> String {
        format!(
            "[Interface]\nPrivateKey = {}\nAddress = 10.6.0.1/24\nListenPort = 51820\n{peers}",
            *private(1).expose()
        )
    }

    fn peer(comment: &str, key: u8, allowed: &str) -> String {
        format!(
            "\n{comment}\n[Peer]\nPublicKey = {}\nAllowedIPs = {allowed}\n",
            private(key).public_key()
        )
    }

    #[test]
    fn names_come_from_comments_that_look_like_names() {
        assert_eq!(name_from("alice").unwrap().as_str(), "alice");
        assert_eq!(name_from("Client: bob").unwrap().as_str(), "bob");
        assert_eq!(name_from("Bob's phone").unwrap().as_str(), "Bob-s-phone");
        assert!(name_from("this is the phone of my neighbour").is_none());
        assert!(name_from("ü").is_none());
        assert!(name_from("clientü").is_some_and(|n| n.as_str() == "client"));
    }

    #[test]
    fn a_plain_config_imports_with_names_and_keys() {
        let text = conf(&(peer("# alice", 2, "10.6.0.2/32") + &peer("", 3, "10.6.0.3/32")));
        let imp = build(wgquick::parse_server(&text, "wg0.conf"), &opts(false)).unwrap();
        let names: Vec<&str> = imp.state.peers.keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["alice", "peer-10.6.0.3"]);
        assert_eq!(imp.state.server.subnet.to_string(), "10.6.0.0/24");
        assert_eq!(imp.state.server.public_key, private(1).public_key());
        assert_eq!(imp.renamed.len(), 1);
    }

    #[test]
    fn a_taken_name_gets_a_suffix() {
        let text = conf(&(peer("# phone", 2, "10.6.0.2/32") + &peer("# phone", 3, "10.6.0.3/32")));
        let imp = build(wgquick::parse_server(&text, "wg0.conf"), &opts(false)).unwrap();
        let names: Vec<&str> = imp.state.peers.keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["phone", "phone-2"]);
        assert!(imp.renamed[0].2.contains("phone is taken"));
    }

    #[test]
    fn every_conflict_is_reported_at_once() {
        let text = conf(
            &(peer("# a", 2, "10.6.0.2/32")
                + &peer("# b", 2, "10.6.0.3/32")
                + &peer("# c", 4, "10.6.0.2/32")
                + &peer("# d", 5, "10.7.0.9/32")
                + &peer("# e", 6, "10.6.0.1/32")),
        );
        let issues = build(wgquick::parse_server(&text, "wg0.conf"), &opts(true)).unwrap_err();
        let all: Vec<String> = issues
            .iter()
            .map(|i| format!("{}: {}", i.place, i.message))
            .collect();
        assert_eq!(issues.len(), 4, "{all:#?}");
        assert!(
            all[0].contains("the same PublicKey as wg0.conf line 7"),
            "{all:#?}"
        );
        assert!(
            all[1].contains("address 10.6.0.2 is also wg0.conf line 7's"),
            "{all:#?}"
        );
        assert!(
            all[2].contains("outside the subnet 10.6.0.0/24"),
            "{all:#?}"
        );
        assert!(all[3].contains("the server's own"), "{all:#?}");
    }

    #[test]
    fn unsupported_is_refused_unless_dropped() {
        let text = conf(
            &(peer("# a", 2, "10.6.0.2/32, fd00::2/128") + &peer("# site", 3, "192.168.50.0/24")),
        )
        .replace(
            "ListenPort",
            "PostUp = iptables -A FORWARD -i wg0 -j ACCEPT\nListenPort",
        );
        let issues = build(wgquick::parse_server(&text, "wg0.conf"), &opts(false)).unwrap_err();
        assert_eq!(issues.len(), 3, "{issues:#?}");
        assert!(issues.iter().all(|i| i.kind == IssueKind::Unsupported));
        assert!(issues[0].message.starts_with("PostUp is not kept"));
        let imp = build(wgquick::parse_server(&text, "wg0.conf"), &opts(true)).unwrap();
        assert_eq!(imp.dropped.len(), 3);
        let names: Vec<&str> = imp.state.peers.keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["a"]);
    }

    #[test]
    fn secrets_never_reach_a_message() {
        let bad = "[Interface]\nPrivateKey = c2VjcmV0LXNlY3JldC1zZWNyZXQ=\nAddress = 10.6.0.1/24\n\
                   ListenPort = 1\n[Peer]\nPublicKey = x\nPresharedKey = c2VjcmV0LXNlY3JldC1zZWNyZXQ=\nAllowedIPs = 10.6.0.2/32\n";
        let issues = build(wgquick::parse_server(bad, "wg0.conf"), &opts(false)).unwrap_err();
        for i in &issues {
            assert!(
                !i.message.contains("c2VjcmV0") && !i.place.contains("c2VjcmV0"),
                "{i:?}"
            );
        }
        assert!(issues
            .iter()
            .any(|i| i.message.contains("PrivateKey decodes to 20 bytes")));
        assert!(issues
            .iter()
            .any(|i| i.message.contains("PresharedKey decodes to 20 bytes")));
    }

    #[test]
    fn pivpn_blocks_name_peers_and_mark_disabled_ones() {
        let block = |name: &str, key: u8, ip: &str, off: bool| {
            let p = if off { "#[disabled] " } else { "" };
            format!(
                "### begin {name} ###\n{p}[Peer]\n{p}PublicKey = {}\n{p}AllowedIPs = {ip}\n### end {name} ###\n",
                private(key).public_key()
            )
        };
        let text = conf(
            &(block("phone", 2, "10.6.0.2/32", false) + &block("old", 3, "10.6.0.3/32", true)),
        );
        let mut src = wgquick::parse_server(&text, "wg0.conf");
        let mut keys = BTreeMap::new();
        keys.insert("phone".to_owned(), private(2).expose().to_string());
        wgquick::add_pivpn(&mut src, &keys, "");
        let imp = build(src, &opts(false)).unwrap();
        let old = &imp.state.peers[&"old".parse::<PeerName>().unwrap()];
        assert!(!old.enabled);
        assert!(imp
            .peer_keys
            .contains_key(&"phone".parse::<PeerName>().unwrap()));
        assert_eq!(imp.peer_keys.len(), 1);
    }
}
