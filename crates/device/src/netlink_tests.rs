//! Tests on recorded messages. The byte layouts follow the kernel's
//! `include/uapi/linux/wireguard.h` (the tree in its "Documentation" comment: device attributes,
//! `WGDEVICE_A_PEERS` of nested peers, each with `WGPEER_A_ALLOWEDIPS` of nested allowed IPs),
//! `<linux/netlink.h>` (16-byte `nlmsghdr`, 4-byte aligned `nlattr`s, `NLMSG_ERROR` carrying a
//! negative errno, `NLMSG_DONE` ending a dump) and `<linux/genetlink.h>` (4-byte `genlmsghdr`).
//! They are written out here by a tiny encoder independent of the one under test.

use super::*;
use crate::{PeerUpdate, Secret};
use std::net::SocketAddr;
use std::time::Duration;

const FAMILY: u16 = 0x1b; // a family id the controller could hand out
const NLM_F_MULTI: u16 = 2;

fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
    v.extend_from_slice(&kind.to_ne_bytes());
    v.extend_from_slice(value);
    while v.len() % 4 != 0 {
        v.push(0);
    }
    v
}

fn nested(kind: u16, parts: &[Vec<u8>]) -> Vec<u8> {
    nla(kind | NLA_F_NESTED, &parts.concat())
}

fn nlmsg(kind: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&((16 + payload.len()) as u32).to_ne_bytes());
    v.extend_from_slice(&kind.to_ne_bytes());
    v.extend_from_slice(&flags.to_ne_bytes());
    v.extend_from_slice(&seq.to_ne_bytes());
    v.extend_from_slice(&4242u32.to_ne_bytes()); // our port id
    v.extend_from_slice(payload);
    v
}

/// A `WG_CMD_GET_DEVICE` answer message (genl header + attributes), flagged NLM_F_MULTI.
fn device_msg(seq: u32, attrs: &[Vec<u8>]) -> Vec<u8> {
    let mut payload = vec![WG_CMD_GET_DEVICE, WG_GENL_VERSION, 0, 0];
    payload.extend(attrs.concat());
    nlmsg(FAMILY, NLM_F_MULTI, seq, &payload)
}

fn done(seq: u32, errno: i32) -> Vec<u8> {
    nlmsg(NLMSG_DONE, NLM_F_MULTI, seq, &(-errno).to_ne_bytes())
}

fn error(seq: u32, errno: i32) -> Vec<u8> {
    let mut payload = (-errno).to_ne_bytes().to_vec();
    payload.extend(nlmsg(FAMILY, 0, seq, &[])); // the request's header, echoed
    nlmsg(NLMSG_ERROR, 0, seq, &payload)
}

fn sockaddr_in(ip: [u8; 4], port: u16) -> Vec<u8> {
    let mut v = (libc::AF_INET as u16).to_ne_bytes().to_vec();
    v.extend(port.to_be_bytes());
    v.extend(ip);
    v.extend([0; 8]);
    v
}

fn allowed_v4(ip: [u8; 4], cidr: u8) -> Vec<u8> {
    nested(
        0,
        &[
            nla(WGALLOWEDIP_A_FAMILY, &(libc::AF_INET as u16).to_ne_bytes()),
            nla(WGALLOWEDIP_A_IPADDR, &ip),
            nla(WGALLOWEDIP_A_CIDR_MASK, &[cidr]),
        ],
    )
}

fn allowed_v6(ip: std::net::Ipv6Addr, cidr: u8) -> Vec<u8> {
    nested(
        0,
        &[
            nla(WGALLOWEDIP_A_FAMILY, &(libc::AF_INET6 as u16).to_ne_bytes()),
            nla(WGALLOWEDIP_A_IPADDR, &ip.octets()),
            nla(WGALLOWEDIP_A_CIDR_MASK, &[cidr]),
        ],
    )
}

fn timespec(sec: i64, nsec: i64) -> Vec<u8> {
    let mut v = sec.to_ne_bytes().to_vec();
    v.extend(nsec.to_ne_bytes());
    v
}

fn device_attrs() -> Vec<Vec<u8>> {
    vec![
        nla(1, &7u32.to_ne_bytes()), // WGDEVICE_A_IFINDEX
        nla(WGDEVICE_A_IFNAME, b"wg0\0"),
        nla(WGDEVICE_A_PRIVATE_KEY, &[0x11; 32]),
        nla(WGDEVICE_A_PUBLIC_KEY, &[0x12; 32]),
        nla(WGDEVICE_A_LISTEN_PORT, &51820u16.to_ne_bytes()),
        nla(WGDEVICE_A_FWMARK, &0u32.to_ne_bytes()),
    ]
}

/// A peer as the kernel's `get_peer` writes it (wireguard/netlink.c): every field, a zero PSK
/// when none is set, the endpoint only when known.
fn peer(key: u8, psk: u8, endpoint: Option<Vec<u8>>, ips: &[Vec<u8>]) -> Vec<u8> {
    let mut parts = vec![
        nla(WGPEER_A_PUBLIC_KEY, &[key; 32]),
        nla(WGPEER_A_PRESHARED_KEY, &[psk; 32]),
        nla(WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL, &25u16.to_ne_bytes()),
        nla(WGPEER_A_LAST_HANDSHAKE_TIME, &timespec(1764556149, 5000)),
        nla(WGPEER_A_RX_BYTES, &3400u64.to_ne_bytes()),
        nla(WGPEER_A_TX_BYTES, &1200u64.to_ne_bytes()),
        nla(10, &1u32.to_ne_bytes()), // WGPEER_A_PROTOCOL_VERSION
    ];
    if let Some(e) = endpoint {
        parts.push(nla(WGPEER_A_ENDPOINT, &e));
    }
    parts.push(nested(WGPEER_A_ALLOWEDIPS, ips));
    nested(0, &parts)
}

#[test]
fn reads_a_recorded_get_answer_with_peers() {
    let mut attrs = device_attrs();
    attrs.push(nested(
        WGDEVICE_A_PEERS,
        &[
            peer(
                0x22,
                0xab,
                Some(sockaddr_in([198, 51, 100, 7], 40000)),
                &[
                    allowed_v4([10, 8, 0, 2], 32),
                    allowed_v6("fd00::2".parse().unwrap(), 128),
                ],
            ),
            peer(0x33, 0, None, &[allowed_v4([10, 8, 0, 3], 32)]),
        ],
    ));
    let mut datagram = device_msg(9, &attrs);
    datagram.extend(done(9, 0));
    let mut reader = DumpReader::default();
    assert!(reader.feed("wg0", &datagram, 9).unwrap());
    let dev = reader.finish();
    assert_eq!(dev.public_key, Some(Key::from([0x12; 32])));
    assert_eq!((dev.listen_port, dev.fwmark), (51820, 0));
    assert_eq!(dev.peers.len(), 2);
    let a = &dev.peers[0];
    assert_eq!(a.public_key, Key::from([0x22; 32]));
    assert!(a.has_preshared_key());
    assert_eq!(
        a.endpoint,
        Some("198.51.100.7:40000".parse::<SocketAddr>().unwrap())
    );
    assert_eq!(a.latest_handshake, Some(Duration::new(1764556149, 5000)));
    assert_eq!((a.rx_bytes, a.tx_bytes, a.keepalive), (3400, 1200, 25));
    assert_eq!(
        a.allowed_ips,
        vec![
            "10.8.0.2/32".parse::<IpNet>().unwrap(),
            "fd00::2/128".parse().unwrap()
        ]
    );
    let b = &dev.peers[1];
    assert!(!b.has_preshared_key(), "a zero PSK is no PSK");
    assert_eq!(b.endpoint, None);
    // The private key is not kept anywhere in what is returned.
    assert!(!format!("{dev:?}").contains(&Key::from([0x11; 32]).to_string()));
}

#[test]
fn joins_a_multipart_dump_where_a_peer_continues_in_the_next_message() {
    // Message 1: the device and peer A, then peer B with its first allowed IPs.
    let mut m1 = device_attrs();
    m1.push(nested(
        WGDEVICE_A_PEERS,
        &[
            peer(0x22, 0, None, &[allowed_v4([10, 8, 0, 2], 32)]),
            peer(
                0x33,
                0,
                None,
                &[allowed_v4([10, 8, 0, 3], 32), allowed_v4([10, 9, 0, 0], 24)],
            ),
        ],
    ));
    // Message 2: B again (key and the rest of its allowed IPs), then C.
    let mut m2 = device_attrs();
    m2.push(nested(
        WGDEVICE_A_PEERS,
        &[
            nested(
                0,
                &[
                    nla(WGPEER_A_PUBLIC_KEY, &[0x33; 32]),
                    nested(WGPEER_A_ALLOWEDIPS, &[allowed_v4([10, 10, 0, 0], 16)]),
                ],
            ),
            peer(0x44, 0, None, &[allowed_v4([10, 8, 0, 4], 32)]),
        ],
    ));
    let mut reader = DumpReader::default();
    // Each message in its own datagram, DONE in a third: the reader waits for DONE.
    assert!(!reader.feed("wg0", &device_msg(5, &m1), 5).unwrap());
    assert!(!reader.feed("wg0", &device_msg(5, &m2), 5).unwrap());
    // A stray answer to an older request is ignored.
    assert!(!reader.feed("wg0", &error(4, libc::EINVAL), 5).unwrap());
    assert!(reader.feed("wg0", &done(5, 0), 5).unwrap());
    let dev = reader.finish();
    let keys: Vec<_> = dev.peers.iter().map(|p| p.public_key).collect();
    assert_eq!(
        keys,
        vec![
            Key::from([0x22; 32]),
            Key::from([0x33; 32]),
            Key::from([0x44; 32])
        ]
    );
    assert_eq!(
        dev.peers[1].allowed_ips,
        vec![
            "10.8.0.3/32".parse::<IpNet>().unwrap(),
            "10.9.0.0/24".parse().unwrap(),
            "10.10.0.0/16".parse().unwrap()
        ]
    );
}

#[test]
fn an_error_answer_becomes_a_typed_error() {
    let mut reader = DumpReader::default();
    let e = reader.feed("wg9", &error(3, libc::ENODEV), 3).unwrap_err();
    assert!(
        matches!(e, Error::NoSuchInterface { ref iface } if iface == "wg9"),
        "{e:?}"
    );
    let e = DumpReader::default()
        .feed("wg9", &error(3, libc::EPERM), 3)
        .unwrap_err();
    assert!(matches!(e, Error::PermissionDenied { .. }), "{e:?}");
    let e = DumpReader::default()
        .feed("wg9", &error(3, libc::EOPNOTSUPP), 3)
        .unwrap_err();
    assert!(
        matches!(&e, Error::Kernel { source, .. } if source.raw_os_error() == Some(libc::EOPNOTSUPP)),
        "{e:?}"
    );
    // A dump that fails part way ends in DONE with a negative errno.
    let e = DumpReader::default()
        .feed("wg9", &done(3, libc::EINTR), 3)
        .unwrap_err();
    assert!(matches!(e, Error::Kernel { .. }), "{e:?}");
    assert_eq!(ack_of(&error(8, 0), 8), Ok(Some(0)));
    assert_eq!(ack_of(&error(8, libc::EINVAL), 8), Ok(Some(libc::EINVAL)));
    assert_eq!(ack_of(&error(7, 0), 8), Ok(None));
}

#[test]
fn truncated_or_overrunning_messages_are_malformed_not_a_panic() {
    let mut attrs = device_attrs();
    attrs.push(nested(
        WGDEVICE_A_PEERS,
        &[peer(0x22, 0, None, &[allowed_v4([10, 8, 0, 2], 32)])],
    ));
    let msg = device_msg(1, &attrs);
    for cut in 0..msg.len() {
        let mut truncated = msg[..cut].to_vec();
        if cut >= 4 {
            // Keep the header's length consistent so that the attributes themselves overrun.
            truncated[..4].copy_from_slice(&(cut as u32).to_ne_bytes());
        }
        let _ = DumpReader::default().feed("wg0", &truncated, 1);
    }
    // A peer without a public key is refused.
    let mut attrs = device_attrs();
    attrs.push(nested(
        WGDEVICE_A_PEERS,
        &[nested(0, &[nla(WGPEER_A_RX_BYTES, &1u64.to_ne_bytes())])],
    ));
    let e = DumpReader::default()
        .feed("wg0", &device_msg(1, &attrs), 1)
        .unwrap_err();
    assert!(matches!(e, Error::Malformed { .. }), "{e:?}");
}

#[test]
fn the_get_request_is_a_dump_naming_the_interface() {
    let req = encode_get(FAMILY, "wg0", 77);
    let msg = messages(&req).next().unwrap().unwrap();
    assert_eq!(msg.kind, FAMILY);
    assert_eq!(msg.seq, 77);
    let flags = u16::from_ne_bytes([req[6], req[7]]);
    assert_eq!(flags & NLM_F_DUMP, NLM_F_DUMP);
    assert_eq!(flags & NLM_F_REQUEST, NLM_F_REQUEST);
    assert_eq!(&msg.payload[..2], &[WG_CMD_GET_DEVICE, WG_GENL_VERSION]);
    assert_eq!(&msg.payload[4..], &nla(WGDEVICE_A_IFNAME, b"wg0\0")[..]);
    let fam = encode_get_family(1);
    assert_eq!(u16::from_ne_bytes([fam[4], fam[5]]), GENL_ID_CTRL);
    assert_eq!(&fam[20..], &nla(CTRL_ATTR_FAMILY_NAME, b"wireguard\0")[..]);
}

/// What a SET message says, decoded for assertions.
#[derive(Debug, Default)]
struct DecodedSet {
    ifname: String,
    listen_port: Option<u16>,
    private_key: bool,
    device_flags: bool,
    peers: Vec<DecodedPeer>,
}

#[derive(Debug, Default, Clone)]
struct DecodedPeer {
    key: u8,
    flags: u32,
    psk: Option<[u8; 32]>,
    endpoint: Option<Vec<u8>>,
    keepalive: Option<u16>,
    ips: Vec<IpNet>,
}

fn decode_set(bytes: &[u8]) -> DecodedSet {
    let msg = messages(bytes).next().unwrap().unwrap();
    assert_eq!(msg.kind, FAMILY);
    assert_eq!(msg.payload[0], WG_CMD_SET_DEVICE);
    let flags = u16::from_ne_bytes([bytes[6], bytes[7]]);
    assert_eq!(flags, NLM_F_REQUEST | NLM_F_ACK);
    let mut out = DecodedSet::default();
    for a in attributes(&msg.payload[4..]) {
        let a = a.unwrap();
        match a.kind {
            WGDEVICE_A_IFNAME => {
                out.ifname =
                    String::from_utf8(a.value.split(|&b| b == 0).next().unwrap().to_vec()).unwrap()
            }
            WGDEVICE_A_LISTEN_PORT => out.listen_port = Some(u16_of(a.value).unwrap()),
            WGDEVICE_A_PRIVATE_KEY => out.private_key = true,
            5 => out.device_flags = true, // WGDEVICE_A_FLAGS (REPLACE_PEERS)
            WGDEVICE_A_PEERS => {
                for p in attributes(a.value) {
                    let mut peer = DecodedPeer::default();
                    for f in attributes(p.unwrap().value) {
                        let f = f.unwrap();
                        match f.kind {
                            WGPEER_A_PUBLIC_KEY => peer.key = f.value[0],
                            WGPEER_A_FLAGS => peer.flags = u32_of(f.value).unwrap(),
                            WGPEER_A_PRESHARED_KEY => peer.psk = Some(*key_of(f.value).unwrap()),
                            WGPEER_A_ENDPOINT => peer.endpoint = Some(f.value.to_vec()),
                            WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL => {
                                peer.keepalive = Some(u16_of(f.value).unwrap())
                            }
                            WGPEER_A_ALLOWEDIPS => {
                                for ip in attributes(f.value) {
                                    peer.ips.push(parse_allowed_ip(ip.unwrap().value).unwrap());
                                }
                            }
                            other => panic!("unexpected peer attribute {other}"),
                        }
                    }
                    out.peers.push(peer);
                }
            }
            other => panic!("unexpected device attribute {other}"),
        }
    }
    out
}

fn key(b: u8) -> Key {
    Key::from([b; 32])
}

#[test]
fn set_encodes_each_kind_of_peer_change_with_its_flags() {
    let changes = ChangeSet {
        listen_port: Some(51821),
        peers: vec![
            PeerChange::Set(PeerUpdate {
                preshared_key: PresharedKey::Set(Secret::preshared_from_random([0xab; 32])),
                endpoint: Some("198.51.100.7:40000".parse().unwrap()),
                keepalive: Some(25),
                allowed_ips: Some(vec!["10.8.0.2/32".parse().unwrap()]),
                ..PeerUpdate::new(key(1))
            }),
            PeerChange::Set(PeerUpdate {
                update_only: true,
                preshared_key: PresharedKey::Clear,
                ..PeerUpdate::new(key(2))
            }),
            PeerChange::Remove(key(3)),
        ],
        ..ChangeSet::default()
    };
    let messages = encode_set(FAMILY, "wg0", &changes, 100, MESSAGE_LIMIT);
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].peers, vec![0, 1, 2]);
    let d = decode_set(&messages[0].bytes);
    assert_eq!(d.ifname, "wg0");
    assert_eq!(d.listen_port, Some(51821));
    assert!(!d.private_key);
    assert!(!d.device_flags, "never WGDEVICE_F_REPLACE_PEERS");
    let [a, b, c] = &d.peers[..] else {
        panic!("{d:?}")
    };
    assert_eq!((a.key, a.flags), (1, WGPEER_F_REPLACE_ALLOWEDIPS));
    assert_eq!(a.psk, Some([0xab; 32]));
    assert_eq!(a.endpoint, Some(sockaddr_in([198, 51, 100, 7], 40000)));
    assert_eq!(a.keepalive, Some(25));
    assert_eq!(a.ips, vec!["10.8.0.2/32".parse::<IpNet>().unwrap()]);
    assert_eq!((b.key, b.flags), (2, WGPEER_F_UPDATE_ONLY));
    assert_eq!(b.psk, Some([0; 32]), "clearing sends a zero key");
    assert!(b.ips.is_empty() && b.keepalive.is_none() && b.endpoint.is_none());
    assert_eq!((c.key, c.flags), (3, WGPEER_F_REMOVE_ME));
    assert!(c.psk.is_none() && c.ips.is_empty());
}

#[test]
fn set_leaves_interface_fields_out_unless_asked_and_sends_them_once() {
    let changes = ChangeSet {
        private_key: Some(Secret::preshared_from_random([0x55; 32])),
        peers: (0..200)
            .map(|i| PeerChange::Remove(Key::from([i as u8; 32])))
            .collect(),
        ..ChangeSet::default()
    };
    let messages = encode_set(FAMILY, "wg0", &changes, 1, MESSAGE_LIMIT);
    assert!(messages.len() > 1);
    let decoded: Vec<_> = messages.iter().map(|m| decode_set(&m.bytes)).collect();
    assert!(decoded[0].private_key);
    assert!(decoded[1..]
        .iter()
        .all(|d| !d.private_key && d.listen_port.is_none()));
    assert!(decoded
        .iter()
        .all(|d| d.listen_port.is_none() && d.ifname == "wg0"));
    let only_peers = encode_set(
        FAMILY,
        "wg0",
        &ChangeSet {
            peers: vec![PeerChange::Remove(key(1))],
            ..ChangeSet::default()
        },
        1,
        MESSAGE_LIMIT,
    );
    let d = decode_set(&only_peers[0].bytes);
    assert!(d.listen_port.is_none() && !d.private_key);
}

#[test]
fn set_splits_many_peers_over_messages_of_one_page_in_order() {
    let changes = ChangeSet {
        peers: (0..1000u32)
            .map(|i| {
                PeerChange::Set(PeerUpdate {
                    preshared_key: PresharedKey::Set(Secret::preshared_from_random([7; 32])),
                    allowed_ips: Some(vec![IpNet::new(
                        std::net::Ipv4Addr::from(0x0a08_0000 + i).into(),
                        32,
                    )
                    .unwrap()]),
                    ..PeerUpdate::new(Key::from([(i % 251) as u8; 32]))
                })
            })
            .collect(),
        ..ChangeSet::default()
    };
    let messages = encode_set(FAMILY, "wg0", &changes, 10, MESSAGE_LIMIT);
    assert!(messages.len() >= 25, "{} messages", messages.len());
    let mut seen = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        assert!(
            m.bytes.len() <= MESSAGE_LIMIT,
            "message {i}: {}",
            m.bytes.len()
        );
        assert_eq!(
            super::messages(&m.bytes).next().unwrap().unwrap().seq,
            10 + i as u32
        );
        let d = decode_set(&m.bytes);
        assert_eq!(d.peers.len(), m.peers.len());
        for p in &d.peers {
            assert_eq!(p.flags, WGPEER_F_REPLACE_ALLOWEDIPS);
            assert_eq!(p.ips.len(), 1);
        }
        seen.extend(m.peers.iter().copied());
    }
    assert_eq!(seen, (0..1000).collect::<Vec<_>>());
}

#[test]
fn a_peer_with_more_allowed_ips_than_fit_continues_without_replace() {
    let ips: Vec<IpNet> = (0..400u32)
        .map(|i| IpNet::new(std::net::Ipv4Addr::from(0x0a00_0000 + (i << 8)).into(), 24).unwrap())
        .collect();
    let changes = ChangeSet {
        peers: vec![
            PeerChange::Remove(key(9)),
            PeerChange::Set(PeerUpdate {
                update_only: true,
                keepalive: Some(25),
                allowed_ips: Some(ips.clone()),
                ..PeerUpdate::new(key(1))
            }),
            PeerChange::Set(PeerUpdate::new(key(2))),
        ],
        ..ChangeSet::default()
    };
    let messages = encode_set(FAMILY, "wg0", &changes, 1, MESSAGE_LIMIT);
    assert!(messages.len() >= 3, "{} messages", messages.len());
    let decoded: Vec<_> = messages.iter().map(|m| decode_set(&m.bytes)).collect();
    let mut got = Vec::new();
    let mut first = true;
    for d in &decoded {
        for p in d.peers.iter().filter(|p| p.key == 1) {
            let replace = p.flags & WGPEER_F_REPLACE_ALLOWEDIPS != 0;
            assert_eq!(replace, first, "REPLACE_ALLOWEDIPS only in the first part");
            assert_ne!(
                p.flags & WGPEER_F_UPDATE_ONLY,
                0,
                "UPDATE_ONLY in every part"
            );
            assert_eq!(
                p.keepalive.is_some(),
                first,
                "fields only in the first part"
            );
            first = false;
            got.extend(p.ips.iter().copied());
        }
    }
    assert_eq!(got, ips);
    assert!(messages.iter().all(|m| m.bytes.len() <= MESSAGE_LIMIT));
    assert_eq!(decoded.last().unwrap().peers.last().unwrap().key, 2);
    // A tiny limit still makes progress: one allowed IP per message at worst.
    let tiny = encode_set(FAMILY, "wg0", &changes, 1, 128);
    let count: usize = tiny
        .iter()
        .map(|m| {
            decode_set(&m.bytes)
                .peers
                .iter()
                .map(|p| p.ips.len())
                .sum::<usize>()
        })
        .sum();
    assert_eq!(count, 400);
}

#[test]
fn an_ipv6_endpoint_is_a_sockaddr_in6() {
    let e: SocketAddr = "[fd00::1]:51820".parse().unwrap();
    let bytes = encode_sockaddr(&e);
    assert_eq!(bytes.len(), 28);
    assert_eq!(parse_sockaddr(&bytes).unwrap(), Some(e));
    let v4: SocketAddr = "192.0.2.1:1".parse().unwrap();
    assert_eq!(parse_sockaddr(&encode_sockaddr(&v4)).unwrap(), Some(v4));
}
