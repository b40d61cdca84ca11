//! Builders for unit tests.

use crate::model::Nat;
use crate::{Key, Peer, Server, State};

/// A state with the spec's defaults and no peers.
pub fn state(subnet: &str, address: &str) -> State {
    State {
        server: Server {
            interface: "wg0".parse().unwrap(),
            subnet: subnet.parse().unwrap(),
            address: address.parse().unwrap(),
            listen_port: 51820,
            endpoint: "vpn.example.com:51820".parse().unwrap(),
            public_key: Key::from([0xee; 32]),
            access: vec!["192.168.0.0/16".parse().unwrap()],
            deny: vec!["172.16.10.0/24".parse().unwrap()],
            dns: vec![],
            keepalive: 25,
            nat: Nat::Masquerade,
            allowed_sources: vec![],
            inbound: Default::default(),
        },
        peers: Default::default(),
    }
}

/// An enabled peer with the server's default access and a key made of `key_byte`.
pub fn peer(address: &str, key_byte: u8) -> Peer {
    Peer {
        address: address.parse().unwrap(),
        public_key: Key::from([key_byte; 32]),
        access: None,
        keepalive: 25,
        enabled: true,
        expires: None,
        preshared_key: false,
    }
}
