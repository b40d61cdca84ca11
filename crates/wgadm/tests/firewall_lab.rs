//! The firewall proven with packets through real WireGuard tunnels in the namespace lab
//! (issue 4): clients whose configs route everything (AllowedIPs 0.0.0.0/0) get only what the
//! server lets through. The state is built in code, the device driven with `plan` +
//! `wgadm::device`, the firewall with `wgadm_core::firewall` + `wgadm::firewall`.
//!
//! Run as root: `cargo test -p wgadm --features root-tests --test firewall_lab -- --nocapture`.

mod lab;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use lab::{client_wan, Lab, DMZ_HOST, MGMT_HOSTS, SERVER_DMZ, SERVER_WAN};
use wgadm::device::Backend;
use wgadm::firewall::Nft;
use wgadm_core::firewall::{ruleset, Options};
use wgadm_core::model::Nat;
use wgadm_core::plan::{plan, Desired};
use wgadm_core::{render, Date, InterfaceName, Key, Peer, PeerName, Secret, Server, State};

const VPN_SERVER: Ipv4Addr = Ipv4Addr::new(192, 168, 100, 1);
const PORT: u16 = 51820;
const TCP_PORT: u16 = 8022;
const SHORT: Duration = Duration::from_millis(700);

fn today() -> Date {
    Date::parse("2026-01-15").unwrap()
}

fn name(s: &str) -> PeerName {
    s.parse().unwrap()
}

fn vpn_addr(octet: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 100, octet)
}

fn new_private_key() -> Secret {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).unwrap();
    Secret::private_from_random(b)
}

/// The server of a test: state, keys, device backend and firewall in the lab's server
/// namespace.
struct Vpn {
    state: State,
    server_key: Secret,
    keys: BTreeMap<PeerName, Secret>,
    iface: InterfaceName,
    backend: Backend,
    nft: Nft,
    _config_dir: tempfile::TempDir,
}

impl Vpn {
    /// The server with peers `(name, last octet, access)`, its interface up and the firewall
    /// loaded.
    fn up(lab: &Lab, peers: &[(&str, u8, Option<&[&str]>)], allowed: &[Ipv4Addr]) -> Vpn {
        let iface: InterfaceName = lab.wg_name("s").parse().unwrap();
        let server_key = new_private_key();
        let mut state = State {
            server: Server {
                interface: iface.clone(),
                subnet: "192.168.100.0/24".parse().unwrap(),
                address: VPN_SERVER,
                listen_port: PORT,
                endpoint: format!("{SERVER_WAN}:{PORT}").parse().unwrap(),
                public_key: server_key.public_key(),
                access: vec!["192.168.0.0/16".parse().unwrap()],
                deny: vec!["172.16.10.0/24".parse().unwrap()],
                dns: vec![],
                keepalive: 25,
                nat: Nat::Masquerade,
                allowed_sources: allowed.iter().map(|a| Ipv4Net::from(*a)).collect(),
                inbound: Default::default(),
            },
            peers: BTreeMap::new(),
        };
        let mut keys = BTreeMap::new();
        for (n, octet, access) in peers {
            let key = new_private_key();
            state.peers.insert(
                name(n),
                Peer {
                    address: vpn_addr(*octet),
                    public_key: key.public_key(),
                    access: access.map(|l| l.iter().map(|a| a.parse().unwrap()).collect()),
                    keepalive: 25,
                    enabled: true,
                    expires: None,
                    preshared_key: false,
                },
            );
            keys.insert(name(n), key);
        }
        let config_dir = tempfile::tempdir().unwrap();
        let backend = Backend::new(config_dir.path().to_path_buf())
            .with_wg_quick(lab.ns_tool(&lab.server, "wg-quick"))
            .with_userspace(lab.userspace_wrapper())
            .with_netns(format!("/run/netns/{}", lab.server));
        backend.preflight().unwrap();
        let nft = Nft::with_command("ip", ["netns", "exec", lab.server.as_str(), "nft"]);
        nft.preflight().unwrap();
        let vpn = Vpn {
            state,
            server_key,
            keys,
            iface,
            backend,
            nft,
            _config_dir: config_dir,
        };
        let text = render::server_config(&vpn.state, &vpn.server_key, &BTreeMap::new(), today());
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(vpn.backend.config_path(&vpn.iface))
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
        vpn.backend.up(&vpn.iface).unwrap();
        assert!(vpn.firewall(), "the first firewall loads");
        vpn
    }

    /// Loads the firewall for the state, carrying the drop counters over; returns whether it
    /// changed.
    fn firewall(&self) -> bool {
        let options = Options {
            carried_drops: self.nft.drop_counters().unwrap(),
            ..Options::default()
        };
        self.nft
            .apply(&ruleset(&self.state, today(), &options))
            .unwrap()
    }

    /// Brings the device and then the firewall to the state.
    fn sync(&self) {
        let observed = self.backend.show(&self.iface).unwrap().unwrap();
        let desired = Desired::from_state(&self.state, &BTreeMap::new(), today());
        let names: HashMap<Key, PeerName> = self
            .state
            .peers
            .iter()
            .map(|(n, p)| (p.public_key, n.clone()))
            .collect();
        let p = plan(&desired, &observed, &names);
        self.backend
            .apply(&self.iface, &p, &self.server_key)
            .unwrap();
        self.firewall();
    }

    /// Brings up peer `n` in `ns` with a config that routes everything through the tunnel,
    /// so only the server's firewall decides what the peer reaches.
    fn client_up(&self, lab: &Lab, ns: &str, role: &str, n: &str) -> PathBuf {
        let iface = lab.wg_name(role);
        let p = &self.state.peers[&name(n)];
        let text =
            render::client_config(&self.state, &name(n), p, Some(&self.keys[&name(n)]), None);
        let everything = text
            .lines()
            .map(|l| {
                if l.starts_with("AllowedIPs = ") {
                    "AllowedIPs = 0.0.0.0/0"
                } else {
                    l
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        let conf = lab.write_conf(&iface, &everything);
        lab.wg_quick_up(ns, &conf);
        conf
    }

    fn drops(&self, octet: u8) -> u64 {
        self.nft
            .drop_counters()
            .unwrap()
            .get(&vpn_addr(octet))
            .map_or(0, |c| c.packets)
    }
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root, nft, wireguard-go and wg-quick: make test, or as root: cargo test --features root-tests"
)]
fn the_server_enforces_access_lists() {
    let lab = Lab::new(2);
    let limited: &[&str] = &["192.168.1.10/32"];
    let mut vpn = Vpn::up(&lab, &[("alice", 2, None), ("bob", 3, Some(limited))], &[]);
    let (a, b) = (lab.clients[0].clone(), lab.clients[1].clone());
    vpn.client_up(&lab, &a, "c0", "alice");
    vpn.client_up(&lab, &b, "c1", "bob");
    lab.wait_for_ping(&a, MGMT_HOSTS[0], Duration::from_secs(10));
    lab.wait_for_ping(&b, MGMT_HOSTS[0], Duration::from_secs(10));
    for h in MGMT_HOSTS {
        lab.tcp_listen(&lab.mgmt, h, TCP_PORT);
    }
    lab.tcp_listen(&lab.dmz, DMZ_HOST, TCP_PORT);

    // 1. The default access reaches both management hosts, ping and TCP; the DMZ never.
    for h in MGMT_HOSTS {
        assert!(lab.ping_once(&a, h, SHORT), "alice pings {h}");
        assert!(
            lab.tcp_connect(&a, h, TCP_PORT, SHORT),
            "alice opens TCP on {h}"
        );
    }
    let before = vpn.drops(2);
    assert!(
        !lab.ping_once(&a, DMZ_HOST, SHORT),
        "alice must not reach the DMZ"
    );
    assert!(
        !lab.tcp_connect(&a, DMZ_HOST, TCP_PORT, SHORT),
        "no TCP to the DMZ"
    );
    assert!(
        !lab.ping_once(&a, SERVER_DMZ, SHORT),
        "nor the server's DMZ address"
    );
    assert!(vpn.drops(2) >= before + 3, "alice's drop counter moves");
    assert!(
        lab.ping_once(&a, VPN_SERVER, SHORT),
        "alice pings the server's VPN address"
    );

    // 2. A peer limited to .10 reaches .10 and not .11, nor the server.
    assert!(lab.ping_once(&b, MGMT_HOSTS[0], SHORT));
    assert!(lab.tcp_connect(&b, MGMT_HOSTS[0], TCP_PORT, SHORT));
    assert!(
        !lab.ping_once(&b, MGMT_HOSTS[1], SHORT),
        "bob must not reach .11"
    );
    assert!(!lab.tcp_connect(&b, MGMT_HOSTS[1], TCP_PORT, SHORT));
    assert!(!lab.ping_once(&b, VPN_SERVER, SHORT));

    // 3. Peer to peer: closed by default (192.168.0.0/16 covers the VPN subnet but does not
    // open it), open where an access list names the other peer.
    assert!(
        !lab.ping_once(&a, vpn_addr(3), SHORT),
        "alice must not reach bob"
    );
    vpn.state.peers.get_mut(&name("alice")).unwrap().access = Some(vec![
        "192.168.0.0/16".parse().unwrap(),
        "192.168.100.3/32".parse().unwrap(),
    ]);
    vpn.sync();
    assert!(
        lab.ping_once(&a, vpn_addr(3), SHORT),
        "alice reaches bob once allowed"
    );
    assert!(
        !lab.ping_once(&b, vpn_addr(2), SHORT),
        "but bob still not alice"
    );

    // 5. Firewall changes while alice's traffic flows lose none of her packets: another
    // peer added, bob's access widened, and (4.) bob disabled.
    let ping = lab.ping_loop(&a, MGMT_HOSTS[1]);
    // Alice's pings (~128 bytes each, every 10 ms) meet each firewall in force: polled on the
    // server's counter rather than slept.
    let (iface, alice) = (
        vpn.iface.to_string(),
        vpn.keys[&name("alice")].public_key().to_string(),
    );
    let traffic =
        |ms: u64| lab.wait_for_traffic(&iface, &alice, ms / 10 * 128, Duration::from_secs(10));
    traffic(400);
    let key = new_private_key();
    vpn.state.peers.insert(
        name("carol"),
        Peer {
            address: vpn_addr(4),
            public_key: key.public_key(),
            access: None,
            keepalive: 25,
            enabled: true,
            expires: None,
            preshared_key: false,
        },
    );
    let t = Instant::now();
    vpn.sync();
    println!(
        "device + firewall sync (peer added): {} ms",
        t.elapsed().as_millis()
    );
    traffic(300);
    vpn.state.peers.get_mut(&name("bob")).unwrap().access =
        Some(vec!["192.168.1.0/24".parse().unwrap()]);
    vpn.sync();
    assert!(
        lab.ping_once(&b, MGMT_HOSTS[1], SHORT),
        "bob reaches .11 after widening"
    );
    traffic(300);

    // 4. Disabled: bob's rules are gone and he is cut off; alice loses nothing.
    vpn.state.peers.get_mut(&name("bob")).unwrap().enabled = false;
    vpn.sync();
    let listing = vpn.nft.listing().unwrap().unwrap();
    // (alice's access still names bob's address: that is her rule, not his)
    assert!(!listing.contains("192.168.100.3 ."), "{listing}");
    assert!(!vpn.nft.drop_counters().unwrap().contains_key(&vpn_addr(3)));
    assert!(
        !lab.ping_once(&b, MGMT_HOSTS[0], SHORT),
        "a disabled peer is cut off"
    );
    traffic(400);
    let stats = ping.stop();
    println!(
        "alice's ping every 10 ms through three firewall changes: {} sent, {} answered, lost {:?}",
        stats.transmitted, stats.received, stats.lost
    );
    assert!(stats.received > 100, "{stats:?}");
    assert!(stats.lost.is_empty(), "alice lost packets: {stats:?}");
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root, nft, wireguard-go and wg-quick: make test, or as root: cargo test --features root-tests"
)]
fn handshakes_from_outside_allowed_sources_get_no_answer() {
    let lab = Lab::new(2);
    // Only client 0's address may reach the listen port.
    let vpn = Vpn::up(
        &lab,
        &[("alice", 2, None), ("bob", 3, None)],
        &[client_wan(0)],
    );
    let (a, b) = (lab.clients[0].clone(), lab.clients[1].clone());
    vpn.client_up(&lab, &a, "c0", "alice");
    vpn.client_up(&lab, &b, "c1", "bob");
    lab.wait_for_ping(&a, VPN_SERVER, Duration::from_secs(10));
    // Bob's key is valid, his source is not allowed: a few tries over more than one
    // handshake retry interval (5 s) get no answer.
    let deadline = Instant::now() + Duration::from_secs(6);
    while Instant::now() < deadline {
        assert!(!lab.ping_once(&b, VPN_SERVER, Duration::from_millis(500)));
    }
    let bob = vpn.state.peers[&name("bob")].public_key.to_string();
    assert_eq!(
        lab.latest_handshake(&lab.server, vpn.iface.as_str(), Some(&bob)),
        0,
        "the server must not have answered bob"
    );
    let listing = vpn.nft.listing().unwrap().unwrap();
    let dropped = listing
        .lines()
        .find(|l| l.contains("not in allowed_sources"))
        .unwrap_or_default()
        .to_owned();
    println!("{}", dropped.trim());
    assert!(!dropped.contains("packets 0 "), "{dropped}");
    assert!(
        lab.ping_once(&a, VPN_SERVER, SHORT),
        "alice still gets through"
    );
}

/// The handle nft gave table `inet wgadm`: a new handle means the table was deleted and made
/// anew (handles of chains and sets restart with each new table, a table's do not).
fn table_handle(lab: &Lab) -> String {
    let out = lab.run(
        &lab.server,
        &["nft", "-a", "list", "table", "inet", "wgadm"],
    );
    out.lines()
        .find_map(|l| {
            l.strip_prefix("table inet wgadm { # handle ")
                .map(str::to_owned)
        })
        .unwrap_or_else(|| panic!("no handle for table inet wgadm in\n{out}"))
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root, nft, wireguard-go and wg-quick: make test, or as root: cargo test --features root-tests"
)]
fn whole_ruleset_changes_keep_the_table_and_lose_no_packets() {
    // On the kernel, a table deleted and made anew in one transaction dropped a forwarded
    // packet now and then: its new `access` set answered "no" for lookups until the end of the
    // commit (docs/kernel.md). A whole-ruleset load now changes the table in place.
    const CHANGES: usize = 30;
    let lab = Lab::new(1);
    let mut vpn = Vpn::up(&lab, &[("alice", 2, None)], &[]);
    let a = lab.clients[0].clone();
    vpn.client_up(&lab, &a, "c0", "alice");
    lab.wait_for_ping(&a, MGMT_HOSTS[1], Duration::from_secs(10));
    let before = table_handle(&lab);
    let (iface, alice) = (
        vpn.iface.to_string(),
        vpn.keys[&name("alice")].public_key().to_string(),
    );
    let ping = lab.ping_loop(&a, MGMT_HOSTS[1]);
    let traffic =
        |ms: u64| lab.wait_for_traffic(&iface, &alice, ms / 10 * 128, Duration::from_secs(10));
    traffic(200);
    let deny: Ipv4Net = "172.16.10.0/24".parse().unwrap();
    let more: Ipv4Net = "172.16.11.0/24".parse().unwrap();
    // At least CHANGES loads, and on until a hundred pings' worth of alice's traffic crossed
    // the server while loads ran: on a fast host 30 loads end within a few pings, which would
    // prove nothing.
    let t = Instant::now();
    let start = lab.received_from(&iface, &alice);
    let covered = || lab.received_from(&iface, &alice) >= start + 100 * 128;
    let mut loads = 0;
    while loads < CHANGES || !covered() {
        assert!(
            loads < 100 * CHANGES,
            "alice's ping stopped crossing the server during the loads"
        );
        // `deny` is part of the table's shape: every load replaces the whole ruleset.
        vpn.state.server.deny = if loads % 2 == 0 {
            vec![deny, more]
        } else {
            vec![deny]
        };
        assert!(vpn.firewall(), "change {loads} is loaded");
        loads += 1;
    }
    println!(
        "{loads} whole-ruleset loads in {} ms",
        t.elapsed().as_millis()
    );
    traffic(200);
    let stats = ping.stop();
    println!(
        "alice's ping every 10 ms through {loads} whole-ruleset loads: {} sent, {} answered, lost {:?}",
        stats.transmitted, stats.received, stats.lost
    );
    assert_eq!(
        table_handle(&lab),
        before,
        "the table was deleted and made anew"
    );
    assert!(stats.received > 100, "{stats:?}");
    assert!(stats.lost.is_empty(), "alice lost packets: {stats:?}");
}
