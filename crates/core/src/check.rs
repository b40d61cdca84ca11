//! Validation of a whole state. Every problem is reported at once, each naming the file and
//! field it is in and what to do about it.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::ipam::is_assignable;
use crate::{Key, Peer, PeerName, Server, State};

/// One thing wrong with the state.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Problem {
    /// Where: a file of the state directory and, after a colon, the field.
    pub place: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.place, self.message)
    }
}

/// A file name as a message may show it: as it is when it is plain printable ASCII, else
/// quoted and escaped, so a name holding a line break or a terminal escape cannot forge lines
/// or colours in a message.
pub fn shown_file_name(name: &str) -> String {
    if !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'\\' && b != b'"')
    {
        name.to_owned()
    } else {
        format!("{name:?}")
    }
}

/// The file a peer lives in, relative to the state directory.
pub fn peer_file(name: &PeerName) -> String {
    format!("peers/{name}.yml")
}

fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

fn canonical(net: &Ipv4Net) -> bool {
    net.addr() == net.network()
}

/// Checks the server and every peer, and the peers against each other.
pub fn check(state: &State) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut report = |place: String, message: String| problems.push(Problem { place, message });
    let server = &state.server;
    check_server(server, &mut report);
    let mut by_address: BTreeMap<Ipv4Addr, Vec<&PeerName>> = BTreeMap::new();
    let mut by_key: BTreeMap<Key, Vec<&PeerName>> = BTreeMap::new();
    for (name, peer) in &state.peers {
        check_peer(server, name, peer, &mut report);
        by_address.entry(peer.address).or_default().push(name);
        by_key.entry(peer.public_key).or_default().push(name);
    }
    check_clashes(&by_address, &by_key, &mut report);
    problems
}

/// `server.yml` on its own: subnet size and shape, the server's address, deny, keys, lists.
fn check_server(server: &Server, report: &mut impl FnMut(String, String)) {
    let here = |field: &str| format!("server.yml: {field}");
    if server.subnet.prefix_len() > MAX_SUBNET_PREFIX {
        report(
            here("subnet"),
            format!(
                "{} holds no peers; use a /{MAX_SUBNET_PREFIX} or larger subnet",
                server.subnet
            ),
        );
    }
    if server.subnet.prefix_len() < MIN_SUBNET_PREFIX {
        report(
            here("subnet"),
            format!(
                "{} is larger than a /{MIN_SUBNET_PREFIX}: wg-quick routes the whole subnet into \
                 the tunnel, so it would take over the server's own routes; use a /{MIN_SUBNET_PREFIX} \
                 to /{MAX_SUBNET_PREFIX} (a /24 holds 253 peers)",
                server.subnet
            ),
        );
    }
    check_server_deny(server, report);
    if server.public_key.is_low_order() {
        report(here("public_key"), LOW_ORDER.into());
    }
    if !canonical(&server.subnet) {
        report(
            here("subnet"),
            format!(
                "{} has host bits set; write it as {}",
                server.subnet,
                server.subnet.trunc()
            ),
        );
    }
    if !is_assignable(server.subnet, Ipv4Addr::UNSPECIFIED, server.address) {
        report(
            here("address"),
            format!(
                "{} is not a host address of the subnet {}; pick one inside it",
                server.address, server.subnet
            ),
        );
    }
    if server.listen_port == 0 {
        report(here("listen_port"), "must be 1-65535".into());
    }
    for (field, list) in [
        ("access", &server.access),
        ("deny", &server.deny),
        ("allowed_sources", &server.allowed_sources),
    ] {
        for net in list.iter().filter(|n| !canonical(n)) {
            report(
                here(field),
                format!("{net} has host bits set; write it as {}", net.trunc()),
            );
        }
    }
    check_access(&server.access, &server.deny, here("access"), report);
}

/// The deny list against the server's own address and the VPN subnet.
fn check_server_deny(server: &Server, report: &mut impl FnMut(String, String)) {
    if let Some(d) = server.deny.iter().find(|d| d.contains(&server.address)) {
        report(
            "server.yml: deny".into(),
            format!(
                "{d} covers the server's own address {}: the VPN could not reach its server; \
                 narrow the deny list or move the VPN subnet",
                server.address
            ),
        );
        return;
    }
    for d in server.deny.iter().filter(|d| overlaps(&server.subnet, d)) {
        report(
            "server.yml: subnet".into(),
            format!(
                "{} overlaps the denied range {d} (server.yml: deny): peers would get \
                 addresses the firewall refuses; pick a subnet outside the deny list",
                server.subnet
            ),
        );
    }
}

/// One peer against the server: its address, its key, its access list.
fn check_peer(
    server: &Server,
    name: &PeerName,
    peer: &Peer,
    report: &mut impl FnMut(String, String),
) {
    let at = |field: &str| format!("{}: {field}", peer_file(name));
    if !is_assignable(server.subnet, server.address, peer.address) {
        let why = if !server.subnet.contains(&peer.address) {
            format!("is outside the subnet {}", server.subnet)
        } else if peer.address == server.address {
            "is the server's own address".to_owned()
        } else {
            format!("is the network or broadcast address of {}", server.subnet)
        };
        report(
            at("address"),
            format!(
                "{} {why}; choose another or let wgadm pick the lowest free one",
                peer.address
            ),
        );
    }
    if peer.public_key == server.public_key {
        report(
            at("public_key"),
            "is the server's own public key; every peer needs its own key pair".into(),
        );
    }
    if peer.public_key.is_low_order() {
        report(at("public_key"), LOW_ORDER.into());
    }
    if let Some(access) = &peer.access {
        for net in access.iter().filter(|n| !canonical(n)) {
            report(
                at("access"),
                format!("{net} has host bits set; write it as {}", net.trunc()),
            );
        }
        check_access(access, &server.deny, at("access"), report);
    }
}

/// Peers sharing an address or a key. Each peer of a clash gets its own line naming the
/// others, so whichever peer a command is about comes first in its message.
fn check_clashes(
    by_address: &BTreeMap<Ipv4Addr, Vec<&PeerName>>,
    by_key: &BTreeMap<Key, Vec<&PeerName>>,
    report: &mut impl FnMut(String, String),
) {
    for (address, names) in by_address.iter().filter(|(_, n)| n.len() > 1) {
        for name in names {
            report(
                format!("{}: address", peer_file(name)),
                format!(
                    "{address} is already used by {}: their server-side AllowedIPs would \
                     overlap; give this peer another address (or let wgadm pick a free one)",
                    others(names, name)
                ),
            );
        }
    }
    for names in by_key.values().filter(|n| n.len() > 1) {
        for name in names {
            report(
                format!("{}: public_key", peer_file(name)),
                format!(
                    "is already used by {}; every peer needs its own key pair \
                     (`wgadm peer rotate` gives this one a new one)",
                    others(names, name)
                ),
            );
        }
    }
}

/// What a public key of small order is told.
const LOW_ORDER: &str = "is a low-order X25519 point (all zeros, for instance) that every \
    private key shares the same secret with, so it authenticates nobody; use the real public \
    key of a key pair (`wg genkey | wg pubkey`)";

/// The smallest subnet: a /30 holds one peer.
pub const MAX_SUBNET_PREFIX: u8 = 30;
/// The largest subnet. wg-quick routes the interface's whole subnet into the tunnel, so a
/// short prefix would capture the server's own traffic (a /0 its default route), and ipam
/// walks the subnet address by address; 16 million peers is more than any server holds.
pub const MIN_SUBNET_PREFIX: u8 = 8;

/// `peers/OTHER.yml` for every peer of `names` but `me`, joined.
fn others(names: &[&PeerName], me: &PeerName) -> String {
    names
        .iter()
        .filter(|n| **n != me)
        .map(|n| peer_file(n))
        .collect::<Vec<_>>()
        .join(" and ")
}

/// What a command that changes `changed` must refuse: the problems `after` has that `before`
/// did not, those about `changed` first, and without the mirror images on other peers of a
/// clash that `changed`'s own lines already name.
pub fn refusals(before: &State, after: &State, changed: &PeerName) -> Vec<Problem> {
    let own = format!("{}:", peer_file(changed));
    let theirs = peer_file(changed);
    let mut problems = new_problems(before, after);
    let own_lines: Vec<Problem> = problems
        .iter()
        .filter(|p| p.place.starts_with(&own))
        .cloned()
        .collect();
    problems.retain(|p| {
        p.place.starts_with(&own)
            || !(p.message.contains(&theirs)
                && own_lines
                    .iter()
                    .any(|o| o.place.rsplit(": ").next() == p.place.rsplit(": ").next()))
    });
    problems.sort_by_key(|p| !p.place.starts_with(&own));
    problems
}

/// The problems `after` has that `before` did not: what a change would break. A command refuses
/// those and leaves problems that were already there to `wgadm check`.
pub fn new_problems(before: &State, after: &State) -> Vec<Problem> {
    let old: std::collections::HashSet<Problem> = check(before).into_iter().collect();
    check(after)
        .into_iter()
        .filter(|p| !old.contains(p))
        .collect()
}

fn check_access(
    access: &[Ipv4Net],
    deny: &[Ipv4Net],
    place: String,
    report: &mut impl FnMut(String, String),
) {
    if access.is_empty() {
        report(
            place.clone(),
            "is empty: the peer could reach nothing; list at least one network".into(),
        );
    }
    for a in access {
        for d in deny.iter().filter(|d| overlaps(a, d)) {
            report(
                place.clone(),
                format!(
                    "{a} overlaps the denied range {d} (server.yml: deny); narrow the access list"
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{peer, state};

    fn messages(s: &State) -> Vec<String> {
        check(s).iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_clean_state_has_no_problems() {
        let mut s = state("192.168.100.0/24", "192.168.100.1");
        s.peers
            .insert("alice".parse().unwrap(), peer("192.168.100.2", 1));
        assert_eq!(messages(&s), Vec::<String>::new());
    }

    #[test]
    fn reports_every_problem_at_once_with_file_and_peer() {
        let mut s = state("192.168.100.0/24", "192.168.100.1");
        s.peers
            .insert("alice".parse().unwrap(), peer("192.168.100.2", 1));
        s.peers
            .insert("bob".parse().unwrap(), peer("192.168.100.2", 1));
        let mut carol = peer("10.0.0.1", 3);
        carol.access = Some(vec!["172.16.0.0/12".parse().unwrap()]);
        s.peers.insert("carol".parse().unwrap(), carol);
        s.peers
            .insert("dave".parse().unwrap(), peer("192.168.100.1", 4));
        let m = messages(&s).join("\n");
        // A clash is told to each of its peers, naming the others.
        for (me, other) in [("alice", "bob"), ("bob", "alice")] {
            assert!(
                m.contains(&format!(
                    "peers/{me}.yml: address: 192.168.100.2 is already used by peers/{other}.yml"
                )),
                "{m}"
            );
            assert!(
                m.contains(&format!(
                    "peers/{me}.yml: public_key: is already used by peers/{other}.yml"
                )),
                "{m}"
            );
        }
        assert!(
            m.contains("peers/carol.yml: address: 10.0.0.1 is outside the subnet 192.168.100.0/24"),
            "{m}"
        );
        assert!(
            m.contains(
                "peers/carol.yml: access: 172.16.0.0/12 overlaps the denied range 172.16.10.0/24"
            ),
            "{m}"
        );
        assert!(
            m.contains("peers/dave.yml: address: 192.168.100.1 is the server's own address"),
            "{m}"
        );
        assert_eq!(check(&s).len(), 7);
    }

    #[test]
    fn allowed_sources_need_clean_networks() {
        let mut s = state("192.168.100.0/24", "192.168.100.1");
        s.server.allowed_sources = vec![
            "203.0.113.7/24".parse().unwrap(),
            "198.51.100.7/32".parse().unwrap(),
        ];
        assert_eq!(
            messages(&s),
            ["server.yml: allowed_sources: 203.0.113.7/24 has host bits set; write it as 203.0.113.0/24"]
        );
    }

    #[test]
    fn server_problems_name_server_yml() {
        let mut s = state("192.168.100.0/24", "192.168.100.255");
        s.server.access = vec!["172.16.10.0/25".parse().unwrap()];
        let m = messages(&s).join("\n");
        assert!(
            m.contains("server.yml: address: 192.168.100.255 is not a host address"),
            "{m}"
        );
        assert!(
            m.contains("server.yml: access: 172.16.10.0/25 overlaps the denied range"),
            "{m}"
        );
    }

    #[test]
    fn odd_file_names_are_escaped_in_messages() {
        assert_eq!(shown_file_name("alice.yml"), "alice.yml");
        assert_eq!(shown_file_name("a\nb.yml"), "\"a\\nb.yml\"");
        assert_eq!(shown_file_name("\u{1b}[31mx.yml"), "\"\\u{1b}[31mx.yml\"");
        assert_eq!(shown_file_name("a b.yml"), "\"a b.yml\"");
    }

    #[test]
    fn subnets_are_bounded_and_kept_clear_of_the_deny_list() {
        let m = messages(&state("0.0.0.0/0", "0.0.0.1")).join("\n");
        assert!(
            m.contains("server.yml: subnet: 0.0.0.0/0 is larger than a /8"),
            "{m}"
        );
        assert!(messages(&state("10.0.0.0/8", "10.0.0.1")).is_empty());
        assert!(messages(&state("10.0.0.0/30", "10.0.0.1")).is_empty());
        let m = messages(&state("10.0.0.0/31", "10.0.0.1")).join("\n");
        assert!(m.contains("holds no peers; use a /30 or larger"), "{m}");

        // The deny list equal to the subnet covers the server's own address.
        let s = state("172.16.10.0/24", "172.16.10.1");
        assert_eq!(
            messages(&s),
            [
                "server.yml: deny: 172.16.10.0/24 covers the server's own address 172.16.10.1: \
              the VPN could not reach its server; narrow the deny list or move the VPN subnet"
            ]
        );
        // Overlapping without covering the server: named on the subnet.
        let mut s = state("192.168.100.0/24", "192.168.100.1");
        s.server.deny.push("192.168.100.128/25".parse().unwrap());
        let m = messages(&s).join("\n");
        assert!(
            m.contains(
                "server.yml: subnet: 192.168.100.0/24 overlaps the denied range 192.168.100.128/25"
            ),
            "{m}"
        );
    }

    #[test]
    fn low_order_public_keys_are_refused_everywhere() {
        let mut s = state("192.168.100.0/24", "192.168.100.1");
        s.server.public_key = Key::from([0; 32]);
        s.peers
            .insert("alice".parse().unwrap(), peer("192.168.100.2", 0));
        let m = messages(&s).join("\n");
        assert!(
            m.contains("server.yml: public_key: is a low-order X25519 point"),
            "{m}"
        );
        assert!(
            m.contains("peers/alice.yml: public_key: is a low-order X25519 point"),
            "{m}"
        );
    }

    #[test]
    fn a_refusal_names_the_changed_peer_first_and_the_other_after() {
        let mut before = state("192.168.100.0/24", "192.168.100.1");
        before
            .peers
            .insert("bob".parse().unwrap(), peer("192.168.100.2", 2));
        let mut after = before.clone();
        // "aaa" sorts before "bob": the clash must still be told from aaa's side only.
        let aaa: PeerName = "aaa".parse().unwrap();
        after.peers.insert(aaa.clone(), peer("192.168.100.2", 2));
        let r: Vec<String> = refusals(&before, &after, &aaa)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            r,
            [
                "peers/aaa.yml: address: 192.168.100.2 is already used by peers/bob.yml: their \
                 server-side AllowedIPs would overlap; give this peer another address (or let \
                 wgadm pick a free one)",
                "peers/aaa.yml: public_key: is already used by peers/bob.yml; every peer needs \
                 its own key pair (`wgadm peer rotate` gives this one a new one)"
            ]
        );
    }
}
