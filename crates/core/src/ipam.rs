//! Address allocation in the VPN subnet: the lowest free host address, never the network,
//! broadcast or server address.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::State;

/// The subnet has no free address left.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "no free address in {subnet}: all {capacity} peer addresses are taken; \
     remove or reuse a peer, or move to a larger subnet"
)]
pub struct PoolExhausted {
    /// The VPN subnet.
    pub subnet: Ipv4Net,
    /// How many peers it holds.
    pub capacity: u64,
}

/// Whether `addr` may be given to a peer: inside the subnet, not network, broadcast or server.
pub fn is_assignable(subnet: Ipv4Net, server: Ipv4Addr, addr: Ipv4Addr) -> bool {
    subnet.contains(&addr)
        && addr != subnet.network()
        && addr != subnet.broadcast()
        && addr != server
}

/// How many peers a subnet holds: its hosts minus the server (when the server is inside).
pub fn capacity(subnet: Ipv4Net, server: Ipv4Addr) -> u64 {
    let size = 1u64 << (32 - subnet.prefix_len());
    let hosts = size.saturating_sub(2);
    hosts - u64::from(hosts > 0 && is_assignable(subnet, Ipv4Addr::UNSPECIFIED, server))
}

/// The lowest address of the subnet that no peer uses and that is not reserved.
pub fn lowest_free(state: &State) -> Result<Ipv4Addr, PoolExhausted> {
    let server = &state.server;
    let used: HashSet<Ipv4Addr> = state.peers.values().map(|p| p.address).collect();
    let first = u32::from(server.subnet.network());
    let last = u32::from(server.subnet.broadcast());
    (first..=last)
        .map(Ipv4Addr::from)
        .find(|a| is_assignable(server.subnet, server.address, *a) && !used.contains(a))
        .ok_or(PoolExhausted {
            subnet: server.subnet,
            capacity: capacity(server.subnet, server.address),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{peer, state};
    use proptest::prelude::*;

    #[test]
    fn capacity_counts_hosts_minus_server() {
        let net: Ipv4Net = "192.168.100.0/24".parse().unwrap();
        assert_eq!(capacity(net, "192.168.100.1".parse().unwrap()), 253);
        assert_eq!(
            capacity("10.0.0.0/30".parse().unwrap(), "10.0.0.1".parse().unwrap()),
            1
        );
    }

    #[test]
    fn takes_the_lowest_free_and_reuses_removed_addresses() {
        let mut s = state("192.168.100.0/24", "192.168.100.1");
        assert_eq!(lowest_free(&s).unwrap().to_string(), "192.168.100.2");
        s.peers
            .insert("a".parse().unwrap(), peer("192.168.100.2", 1));
        s.peers
            .insert("b".parse().unwrap(), peer("192.168.100.3", 2));
        assert_eq!(lowest_free(&s).unwrap().to_string(), "192.168.100.4");
        s.peers.remove(&"a".parse().unwrap());
        assert_eq!(lowest_free(&s).unwrap().to_string(), "192.168.100.2");
    }

    #[test]
    fn a_full_pool_is_an_error_naming_subnet_and_capacity() {
        let mut s = state("10.9.0.0/29", "10.9.0.1");
        for (i, a) in (2..=6).enumerate() {
            s.peers.insert(
                format!("p{i}").parse().unwrap(),
                peer(&format!("10.9.0.{a}"), i as u8),
            );
        }
        let err = lowest_free(&s).unwrap_err();
        assert_eq!(err.capacity, 5);
        assert!(err.to_string().contains("10.9.0.0/29"), "{err}");
        assert!(err.to_string().contains("all 5"), "{err}");
    }

    proptest! {
        #[test]
        fn never_hands_out_a_used_or_reserved_address(
            prefix in 24u8..=30,
            server_off in 1u32..4,
            used in proptest::collection::btree_set(0u32..256, 0..80),
        ) {
            let net = Ipv4Net::new("10.20.30.0".parse().unwrap(), prefix).unwrap();
            let server = Ipv4Addr::from(u32::from(net.network()) + server_off);
            let mut s = state(&net.to_string(), &server.to_string());
            for (i, off) in used.iter().enumerate() {
                let a = Ipv4Addr::from(u32::from(net.network()) + off);
                if is_assignable(net, server, a) {
                    s.peers.insert(format!("p{i}").parse().unwrap(), peer(&a.to_string(), i as u8));
                }
            }
            match lowest_free(&s) {
                Ok(a) => {
                    prop_assert!(is_assignable(net, server, a));
                    prop_assert!(s.peers.values().all(|p| p.address != a));
                    // Lowest: nothing free below it.
                    for lower in u32::from(net.network())..u32::from(a) {
                        let l = Ipv4Addr::from(lower);
                        prop_assert!(!is_assignable(net, server, l) || s.peers.values().any(|p| p.address == l));
                    }
                }
                Err(e) => prop_assert_eq!(s.peers.len() as u64, e.capacity),
            }
        }
    }
}
