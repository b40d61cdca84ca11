//! wg-quick configs: the server's (`/etc/wireguard/wg0.conf`) and each client's.
//!
//! Both contain private keys, so they come back in [`Zeroizing`] strings.

use std::collections::BTreeMap;
use std::fmt::Write;

use zeroize::Zeroizing;

use crate::{Date, Peer, PeerName, Secret, State};

/// The line a client config carries where a peer brought its own key pair.
pub const OWNER_KEY_PLACEHOLDER: &str = "<the private key of this peer, kept by its owner>";

fn join<T: ToString>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The server's wg-quick config: the interface with its private key in the file (never in a
/// PostUp, which `wg syncconf` would drop), and one `[Peer]` per active peer with its /32.
/// No `DNS=` (it needs resolvconf on the server) and no `SaveConfig` (it would overwrite us).
pub fn server_config(
    state: &State,
    private_key: &Secret,
    preshared_keys: &BTreeMap<PeerName, Secret>,
    today: Date,
) -> Zeroizing<String> {
    let s = &state.server;
    let mut out = Zeroizing::new(String::with_capacity(256 + 160 * state.peers.len()));
    let _ = write!(
        out,
        "# Managed by wgadm: change the state with `wgadm`, not this file.\n\
         [Interface]\nPrivateKey = {}\nAddress = {}/{}\nListenPort = {}\n",
        *private_key.expose(),
        s.address,
        s.subnet.prefix_len(),
        s.listen_port
    );
    for (name, peer) in state.active_peers(today) {
        let _ = write!(out, "\n# {name}\n[Peer]\nPublicKey = {}\n", peer.public_key);
        if let Some(psk) = preshared_keys.get(name) {
            let _ = writeln!(out, "PresharedKey = {}", *psk.expose());
        }
        let _ = writeln!(out, "AllowedIPs = {}/32", peer.address);
    }
    out
}

/// A client's wg-quick config. Its AllowedIPs is the peer's access list, so the tunnel carries
/// only what the peer may reach (split tunnel, SR-006). Without `private_key` (a peer that
/// brought its own key) the PrivateKey line holds [`OWNER_KEY_PLACEHOLDER`] for its owner to fill.
pub fn client_config(
    state: &State,
    name: &PeerName,
    peer: &Peer,
    private_key: Option<&Secret>,
    preshared_key: Option<&Secret>,
) -> Zeroizing<String> {
    let s = &state.server;
    let mut out = Zeroizing::new(String::with_capacity(400));
    let key = private_key.map(|k| k.expose());
    let _ = write!(
        out,
        "# wgadm peer {name} of {}\n[Interface]\nPrivateKey = {}\nAddress = {}/32\n",
        s.endpoint,
        key.as_deref().map_or(OWNER_KEY_PLACEHOLDER, |k| k.as_str()),
        peer.address
    );
    if !s.dns.is_empty() {
        let _ = writeln!(out, "DNS = {}", join(&s.dns));
    }
    let _ = write!(out, "\n[Peer]\nPublicKey = {}\n", s.public_key);
    if let Some(psk) = preshared_key {
        let _ = writeln!(out, "PresharedKey = {}", *psk.expose());
    }
    let _ = write!(
        out,
        "Endpoint = {}\nAllowedIPs = {}\n",
        s.endpoint,
        join(state.access_of(peer))
    );
    if peer.keepalive > 0 {
        let _ = writeln!(out, "PersistentKeepalive = {}", peer.keepalive);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conf;
    use crate::testing::{peer, state};
    use proptest::prelude::*;

    fn today() -> Date {
        Date::parse("2026-11-24").unwrap()
    }

    #[test]
    fn server_config_lists_active_peers_only() {
        let mut s = state("192.168.100.0/24", "192.168.100.1");
        s.peers
            .insert("alice".parse().unwrap(), peer("192.168.100.2", 1));
        let mut off = peer("192.168.100.3", 2);
        off.enabled = false;
        s.peers.insert("bob".parse().unwrap(), off);
        let mut old = peer("192.168.100.4", 3);
        old.expires = Some(Date::parse("2026-11-24").unwrap());
        s.peers.insert("carol".parse().unwrap(), old);
        let key = Secret::private_from_random([9; 32]);
        let text = server_config(&s, &key, &BTreeMap::new(), today());
        assert!(text.contains("# alice\n[Peer]"), "{}", *text);
        assert!(
            !text.contains("bob") && !text.contains("carol"),
            "{}",
            *text
        );
        assert!(!text.contains("DNS") && !text.contains("SaveConfig") && !text.contains("PostUp"));
        assert!(text.contains("Address = 192.168.100.1/24\nListenPort = 51820\n"));
    }

    #[test]
    fn client_config_is_a_split_tunnel() {
        let mut s = state("192.168.100.0/24", "192.168.100.1");
        s.server.dns = vec!["192.168.1.1".parse().unwrap()];
        let p = peer("192.168.100.2", 1);
        let text = client_config(&s, &"alice".parse().unwrap(), &p, None, None);
        assert!(text.contains(&format!("PrivateKey = {OWNER_KEY_PLACEHOLDER}\n")));
        assert!(text.contains("Address = 192.168.100.2/32\nDNS = 192.168.1.1\n"));
        assert!(text.contains("AllowedIPs = 192.168.0.0/16\nPersistentKeepalive = 25\n"));
        assert!(text.contains("Endpoint = vpn.example.com:51820\n"));
    }

    /// The lines a config may have: comments, section headers and these keys, nothing else.
    fn lines_are_only(text: &str, keys: &[&str]) -> Result<usize, String> {
        let mut n = 0;
        for line in text.split('\n') {
            n += 1;
            if line.chars().any(|c| c.is_control()) {
                return Err(format!("control character in {line:?}"));
            }
            let ok = line.is_empty()
                || line.starts_with("# ")
                || line == "[Interface]"
                || line == "[Peer]"
                || line.split_once(" = ").is_some_and(|(k, v)| {
                    keys.contains(&k) && !v.is_empty() && !v.contains('#') && !v.contains(" = ")
                });
            if !ok {
                return Err(format!("unexpected line {line:?}"));
            }
        }
        Ok(n)
    }

    fn endpoint_strategy() -> impl Strategy<Value = crate::Endpoint> {
        let label = "[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?";
        prop_oneof![
            (proptest::collection::vec(label, 1..4), "[a-z]{2,6}")
                .prop_map(|(l, tld)| format!("{}.{tld}", l.join("."))),
            any::<[u8; 4]>().prop_map(|b| std::net::Ipv4Addr::from(b).to_string()),
            any::<[u16; 8]>().prop_map(|b| format!("[{}]", std::net::Ipv6Addr::from(b))),
        ]
        .prop_flat_map(|host| (Just(host), 1u16..=65535))
        .prop_map(|(host, port)| format!("{host}:{port}").parse().unwrap())
    }

    proptest! {
        /// Whatever an accepted model holds (any endpoint, names, DNS servers, access lists,
        /// keepalives), every rendered line is a header, a comment or one known key, and there
        /// are exactly as many lines as the model asks for: no field can add a line.
        #[test]
        fn no_model_adds_a_line_to_a_config(
            endpoint in endpoint_strategy(),
            dns in proptest::collection::vec(any::<std::net::IpAddr>(), 0..3),
            names in proptest::collection::btree_set("[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", 1..5),
            access in proptest::collection::vec((any::<[u8; 4]>(), 0u8..=32), 1..4),
            keepalive in any::<u16>(),
            psk in any::<bool>(),
        ) {
            let mut s = state("192.168.100.0/24", "192.168.100.1");
            s.server.endpoint = endpoint;
            s.server.dns = dns;
            let access: Vec<ipnet::Ipv4Net> = access
                .iter()
                .map(|(a, p)| ipnet::Ipv4Net::new((*a).into(), *p).unwrap().trunc())
                .collect();
            for (i, name) in names.iter().enumerate() {
                let mut p = peer(&format!("192.168.100.{}", i + 2), i as u8 + 1);
                p.keepalive = keepalive;
                p.access = Some(access.clone());
                s.peers.insert(name.parse().unwrap(), p);
            }
            let key = Secret::private_from_random([5; 32]);
            let psk_key = Secret::preshared_from_random([6; 32]);
            let psks: BTreeMap<PeerName, Secret> = if psk {
                s.peers.keys().map(|n| (n.clone(), psk_key.clone())).collect()
            } else {
                BTreeMap::new()
            };
            let server = server_config(&s, &key, &psks, today());
            let n = lines_are_only(&server, &["PrivateKey", "Address", "ListenPort", "PublicKey", "PresharedKey", "AllowedIPs"]);
            // Header comment, 4 interface lines, then per peer: blank, comment, 3 or 4 lines;
            // and the final newline.
            let per_peer = if psk { 6 } else { 5 };
            prop_assert_eq!(n, Ok(5 + per_peer * s.peers.len() + 1));
            for (name, p) in &s.peers {
                let client = client_config(&s, name, p, Some(&key), psks.get(name));
                let n = lines_are_only(&client, &["PrivateKey", "Address", "DNS", "PublicKey", "PresharedKey", "Endpoint", "AllowedIPs", "PersistentKeepalive"]);
                let expected = 4 + usize::from(!s.server.dns.is_empty()) + 3
                    + usize::from(psk) + 2 + usize::from(keepalive > 0) + 1;
                prop_assert_eq!(n, Ok(expected), "{}", *client);
                let parsed = conf::parse(&client).unwrap();
                prop_assert_eq!(parsed.len(), 2);
                let endpoint = s.server.endpoint.to_string();
                prop_assert_eq!(parsed[1].get("Endpoint"), Some(endpoint.as_str()));
            }
        }

        /// What the renderer writes, a wg-quick parser reads back: the same keys, addresses
        /// and peers, in order.
        #[test]
        fn server_config_round_trips(
            peers in proptest::collection::btree_map("[a-z][a-z0-9_.-]{0,20}", (2u8..250, any::<[u8; 32]>(), any::<bool>()), 0..30),
            priv_bytes in any::<[u8; 32]>(),
        ) {
            let mut s = state("192.168.100.0/24", "192.168.100.1");
            let mut psks = BTreeMap::new();
            let mut used = std::collections::HashSet::new();
            for (name, (host, key, psk)) in &peers {
                if !used.insert(*host) { continue; }
                let name: PeerName = name.parse().unwrap();
                let mut p = peer(&format!("192.168.100.{host}"), 0);
                p.public_key = (*key).into();
                if *psk { psks.insert(name.clone(), Secret::preshared_from_random(*key)); }
                s.peers.insert(name, p);
            }
            let private = Secret::private_from_random(priv_bytes);
            let text = server_config(&s, &private, &psks, today());
            let parsed = conf::parse(&text).unwrap();
            prop_assert_eq!(parsed[0].name.as_str(), "Interface");
            let exposed = private.expose();
            prop_assert_eq!(parsed[0].get("PrivateKey"), Some(exposed.as_str()));
            prop_assert_eq!(parsed.len() - 1, s.peers.len());
            for (section, (name, p)) in parsed[1..].iter().zip(&s.peers) {
                let pk = p.public_key.to_string();
                prop_assert_eq!(section.get("PublicKey"), Some(pk.as_str()));
                let allowed = format!("{}/32", p.address);
                prop_assert_eq!(section.get("AllowedIPs"), Some(allowed.as_str()));
                let psk = psks.get(name).map(|k| k.expose().to_string());
                prop_assert_eq!(section.get("PresharedKey"), psk.as_deref());
            }
        }
    }
}
