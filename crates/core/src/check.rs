//! Validation of a whole state. Every problem is reported at once, each naming the file and
//! field it is in and what to do about it.

use std::collections::HashMap;
use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::ipam::is_assignable;
use crate::{Key, PeerName, State};

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
    let here = |field: &str| format!("server.yml: {field}");

    if server.subnet.prefix_len() > 30 {
        report(
            here("subnet"),
            format!(
                "{} holds no peers; use a /30 or larger subnet",
                server.subnet
            ),
        );
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
    check_access(&server.access, &server.deny, here("access"), &mut report);

    let mut by_address: HashMap<Ipv4Addr, &PeerName> = HashMap::new();
    let mut by_key: HashMap<Key, &PeerName> = HashMap::new();
    for (name, peer) in &state.peers {
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
        if let Some(other) = by_address.insert(peer.address, name) {
            report(
                at("address"),
                format!(
                "{} is also the address of peer {other}: their server-side AllowedIPs overlap; \
                 give one of them another address",
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
        if let Some(other) = by_key.insert(peer.public_key, name) {
            report(
                at("public_key"),
                format!(
                    "is also the public key of peer {other}; every peer needs its own key pair"
                ),
            );
        }
        if let Some(access) = &peer.access {
            for net in access.iter().filter(|n| !canonical(n)) {
                report(
                    at("access"),
                    format!("{net} has host bits set; write it as {}", net.trunc()),
                );
            }
            check_access(access, &server.deny, at("access"), &mut report);
        }
    }
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
        assert!(
            m.contains("peers/bob.yml: address: 192.168.100.2 is also the address of peer alice"),
            "{m}"
        );
        assert!(
            m.contains("peers/bob.yml: public_key: is also the public key of peer alice"),
            "{m}"
        );
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
        assert_eq!(check(&s).len(), 5);
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
}
