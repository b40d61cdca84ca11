//! End-to-end tests of `wgadm::device` in the network-namespace lab, without the CLI: a state
//! built in code, configs rendered by the core, the server brought up with `Backend::up`, real
//! clients brought up with the real wg-quick, and changes applied with `plan` + `Backend::apply`
//! while a client pings through the tunnel every 10 ms.
//!
//! Run as root: `cargo test -p wgadm --features root-tests --test device_lab -- --nocapture`.

mod lab;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use lab::{Lab, SERVER_WAN};
use wgadm::device::Backend;
use wgadm_core::plan::{plan, Desired, Plan};
use wgadm_core::{render, Date, InterfaceName, Key, Peer, PeerName, Secret, Server, State};

const VPN_SERVER: Ipv4Addr = Ipv4Addr::new(192, 168, 100, 1);
const PORT: u16 = 51820;

fn today() -> Date {
    Date::parse("2026-01-15").unwrap()
}

fn random32() -> [u8; 32] {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).unwrap();
    b
}

fn new_private_key() -> Secret {
    Secret::private_from_random(random32())
}

fn name(s: &str) -> PeerName {
    s.parse().unwrap()
}

/// The server side of a test: the state, its secrets, and the backend driving the server
/// namespace's interface.
struct Vpn {
    state: State,
    server_key: Secret,
    /// Private keys of the peers (all generated here).
    keys: BTreeMap<PeerName, Secret>,
    psks: BTreeMap<PeerName, Secret>,
    iface: InterfaceName,
    backend: Backend,
    /// The `wg-quick` the backend runs, the only program it may start (a lab script that
    /// counts its calls): reading and changing the device start none.
    wg_quick: PathBuf,
    _config_dir: tempfile::TempDir,
}

impl Vpn {
    /// A state with the peers `(name, last octet)`, its server config written and brought up
    /// in the lab's server namespace with `Backend::up`.
    fn up(lab: &Lab, peers: &[(&str, u8)]) -> Vpn {
        let iface: InterfaceName = lab.wg_name("s").parse().unwrap();
        let server_key = new_private_key();
        // From JSON, as server.yml would give it: fields added to the model later take their
        // defaults here too.
        let server: Server = serde_json::from_value(serde_json::json!({
            "interface": iface.as_str(),
            "subnet": "192.168.100.0/24",
            "address": VPN_SERVER.to_string(),
            "listen_port": PORT,
            "endpoint": format!("{SERVER_WAN}:{PORT}"),
            "public_key": server_key.public_key().to_string(),
            "access": ["192.168.0.0/16"],
            "deny": ["172.16.10.0/24"],
        }))
        .unwrap();
        let mut state = State {
            server,
            peers: BTreeMap::new(),
        };
        let mut keys = BTreeMap::new();
        for (n, octet) in peers {
            let key = new_private_key();
            state.peers.insert(name(n), peer(*octet, key.public_key()));
            keys.insert(name(n), key);
        }
        let config_dir = tempfile::tempdir().unwrap();
        let wg_quick = lab.ns_tool(&lab.server, "wg-quick");
        let backend = Backend::new(config_dir.path().to_path_buf())
            .with_wg_quick(&wg_quick)
            .with_userspace(lab.userspace_wrapper())
            .with_netns(format!("/run/netns/{}", lab.server));
        backend.preflight().unwrap();
        let vpn = Vpn {
            state,
            server_key,
            keys,
            psks: BTreeMap::new(),
            iface,
            backend,
            wg_quick,
            _config_dir: config_dir,
        };
        let text = render::server_config(&vpn.state, &vpn.server_key, &vpn.psks, today());
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(vpn.backend.config_path(&vpn.iface))
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
        vpn.backend.up(&vpn.iface).unwrap();
        vpn
    }

    /// Brings up peer `n` as a client in namespace `ns` with the real wg-quick and its rendered
    /// config; returns the client's interface name and config path.
    fn client_up(&self, lab: &Lab, ns: &str, role: &str, n: &str) -> (String, PathBuf) {
        let iface = lab.wg_name(role);
        let p = &self.state.peers[&name(n)];
        let text = render::client_config(
            &self.state,
            &name(n),
            p,
            Some(&self.keys[&name(n)]),
            self.psks.get(&name(n)),
        );
        let conf = lab.write_conf(&iface, &text);
        lab.wg_quick_up(ns, &conf);
        (iface, conf)
    }

    /// The plan from the live device to the state.
    fn plan(&self) -> Plan {
        let observed = self
            .backend
            .show(&self.iface)
            .unwrap()
            .expect("the interface is up");
        let desired = Desired::from_state(&self.state, &self.psks, today());
        let names: HashMap<Key, PeerName> = self
            .state
            .peers
            .iter()
            .map(|(n, p)| (p.public_key, n.clone()))
            .collect();
        plan(&desired, &observed, &names)
    }

    /// Plans and applies; checks that the device then matches (an empty plan). Returns the
    /// plan applied and how long `apply` took.
    fn sync(&self, lab: &Lab) -> (Plan, Duration) {
        let p = self.plan();
        let before = lab.tool_calls(&self.wg_quick).len();
        let start = Instant::now();
        self.backend
            .apply(&self.iface, &p, &self.server_key)
            .unwrap();
        let took = start.elapsed();
        let calls = lab.tool_calls(&self.wg_quick);
        assert!(
            calls[before..].is_empty(),
            "apply goes through the device layer and starts no process: {calls:?}"
        );
        let after = self.plan();
        assert!(
            after.is_empty(),
            "the device differs after apply: {:?}",
            after.summary()
        );
        (p, took)
    }

    fn add_peer(&mut self, n: &str, octet: u8) {
        let key = new_private_key();
        self.state
            .peers
            .insert(name(n), peer(octet, key.public_key()));
        self.keys.insert(name(n), key);
    }

    fn public_key(&self, n: &str) -> String {
        self.state.peers[&name(n)].public_key.to_string()
    }
}

fn peer(octet: u8, public_key: Key) -> Peer {
    serde_json::from_value(serde_json::json!({
        "address": Ipv4Addr::new(192, 168, 100, octet).to_string(),
        "public_key": public_key.to_string(),
        "keepalive": 25,
        "enabled": true,
    }))
    .unwrap()
}

/// Lets client 0's ping loop (every 10 ms, ~128 bytes each) run through about `ms` of steady
/// traffic between two changes: polled on the server's counter, not slept.
fn traffic_for(lab: &Lab, iface: &str, peer: &str, ms: u64) {
    lab.wait_for_traffic(iface, peer, ms / 10 * 128, Duration::from_secs(10));
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root, wireguard-go and wg-quick: make test, or as root: cargo test --features root-tests"
)]
fn a_client_handshakes_and_pings_the_server() {
    let lab = Lab::new(1);
    let vpn = Vpn::up(&lab, &[("alice", 2)]);
    let observed = vpn.backend.show(&vpn.iface).unwrap().unwrap();
    assert_eq!(observed.public_key, Some(vpn.state.server.public_key));
    assert_eq!(observed.listen_port, PORT);
    assert_eq!(observed.peers.len(), 1);
    assert!(vpn.plan().is_empty(), "a fresh interface matches its state");

    let start = Instant::now();
    let (client_iface, _) = vpn.client_up(&lab, &lab.clients[0], "c0", "alice");
    let up = start.elapsed();
    lab.wait_for_ping(&lab.clients[0], VPN_SERVER, Duration::from_secs(10));
    let first_ping = start.elapsed();
    println!(
        "wg-quick up took {} ms; first answered ping {} ms after wg-quick up started",
        up.as_millis(),
        first_ping.as_millis()
    );
    assert!(
        first_ping < Duration::from_secs(5),
        "US1: tunnel within 5 s"
    );

    let alice = vpn.public_key("alice");
    let seen = vpn.backend.show(&vpn.iface).unwrap().unwrap();
    let p = seen
        .peers
        .iter()
        .find(|p| p.public_key.to_string() == alice)
        .unwrap();
    assert!(p.latest_handshake > 0 && p.rx_bytes > 0, "{p:?}");
    assert!(lab.latest_handshake(&lab.clients[0], &client_iface, None) > 0);

    // The lab around it: the management hosts answer through the tunnel and the server's
    // forwarding (their default route is the server), the server reaches the DMZ host.
    for host in lab::MGMT_HOSTS {
        assert!(
            lab.ping_once(&lab.clients[0], host, Duration::from_secs(2)),
            "{host}"
        );
    }
    assert!(lab.ping_once(&lab.server, lab::DMZ_HOST, Duration::from_secs(2)));
    lab.tcp_listen(&lab.mgmt, lab::MGMT_HOSTS[1], 8080);
    assert!(lab.tcp_connect(
        &lab.clients[0],
        lab::MGMT_HOSTS[1],
        8080,
        Duration::from_secs(2)
    ));
    assert!(!lab.tcp_connect(
        &lab.clients[0],
        lab::MGMT_HOSTS[1],
        8081,
        Duration::from_secs(2)
    ));
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root, wireguard-go and wg-quick: make test, or as root: cargo test --features root-tests"
)]
fn changing_other_peers_loses_no_packets() {
    let lab = Lab::new(1);
    let mut vpn = Vpn::up(&lab, &[("alice", 2)]);
    vpn.client_up(&lab, &lab.clients[0], "c0", "alice");
    lab.wait_for_ping(&lab.clients[0], VPN_SERVER, Duration::from_secs(10));
    let ping = lab.ping_loop(&lab.clients[0], VPN_SERVER);
    let (iface, alice) = (vpn.iface.to_string(), vpn.public_key("alice"));
    traffic_for(&lab, &iface, &alice, 500);

    // Add three peers, one with a preshared key.
    vpn.add_peer("bob", 3);
    vpn.add_peer("carol", 4);
    vpn.add_peer("dave", 5);
    vpn.psks
        .insert(name("carol"), Secret::preshared_from_random(random32()));
    let (p, took) = vpn.sync(&lab);
    assert_eq!(p.summary().added, ["bob", "carol", "dave"]);
    assert_eq!(p.changes.len(), 3, "{:?}", p.summary());
    println!("apply: added 3 peers in {} ms", took.as_millis());
    traffic_for(&lab, &iface, &alice, 300);

    // Update them in place: a new address, a preshared key set, one cleared, and a keepalive
    // someone set by hand turned off again.
    let server_ns = lab.server.clone();
    let bob = vpn.public_key("bob");
    lab.run(
        &server_ns,
        &[
            "wg",
            "set",
            vpn.iface.as_str(),
            "peer",
            &bob,
            "persistent-keepalive",
            "25",
        ],
    );
    vpn.state.peers.get_mut(&name("bob")).unwrap().address = Ipv4Addr::new(192, 168, 100, 20);
    vpn.psks.remove(&name("carol"));
    vpn.psks
        .insert(name("dave"), Secret::preshared_from_random(random32()));
    let (p, took) = vpn.sync(&lab);
    assert_eq!(
        p.summary().updated,
        ["bob", "carol", "dave"],
        "{:?}",
        p.summary()
    );
    assert!(p.summary().added.is_empty() && p.summary().removed.is_empty());
    println!("apply: updated 3 peers in place in {} ms", took.as_millis());
    let seen = vpn.backend.show(&vpn.iface).unwrap().unwrap();
    let find = |n: &str| {
        let k = vpn.state.peers[&name(n)].public_key;
        seen.peers
            .iter()
            .find(|p| p.public_key == k)
            .unwrap()
            .clone()
    };
    assert_eq!(
        find("bob").allowed_ips,
        ["192.168.100.20/32".parse().unwrap()]
    );
    assert_eq!(find("bob").keepalive, 0);
    assert!(find("carol").preshared_key.is_none());
    assert!(find("dave").preshared_key.is_some());
    traffic_for(&lab, &iface, &alice, 300);

    // Nothing to do: nothing changes.
    let p = vpn.plan();
    assert!(p.is_empty());
    let before = lab.tool_calls(&vpn.wg_quick).len();
    vpn.backend.apply(&vpn.iface, &p, &vpn.server_key).unwrap();
    assert_eq!(
        lab.tool_calls(&vpn.wg_quick).len(),
        before,
        "an empty plan starts nothing"
    );
    traffic_for(&lab, &iface, &alice, 300);

    // Remove them: one disabled, one expired, one deleted.
    vpn.state.peers.get_mut(&name("bob")).unwrap().enabled = false;
    vpn.state.peers.get_mut(&name("carol")).unwrap().expires = Some(today());
    vpn.state.peers.remove(&name("dave"));
    let (p, took) = vpn.sync(&lab);
    assert_eq!(p.summary().removed.len(), 3, "{:?}", p.summary());
    println!("apply: removed 3 peers in {} ms", took.as_millis());
    let seen = vpn.backend.show(&vpn.iface).unwrap().unwrap();
    assert_eq!(seen.peers.len(), 1);
    assert_eq!(
        seen.peers[0].public_key.to_string(),
        vpn.public_key("alice")
    );
    traffic_for(&lab, &iface, &alice, 500);

    let stats = ping.stop();
    println!(
        "ping every 10 ms through all of it: {} sent, {} answered, lost {:?}",
        stats.transmitted, stats.received, stats.lost
    );
    assert!(stats.received > 100, "{stats:?}");
    assert!(stats.lost.is_empty(), "packets lost: {stats:?}");
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root, wireguard-go and wg-quick: make test, or as root: cargo test --features root-tests"
)]
fn a_removed_peer_gets_no_handshake() {
    let lab = Lab::new(2);
    let mut vpn = Vpn::up(&lab, &[("alice", 2), ("bob", 3)]);
    let (alice_ns, bob_ns) = (lab.clients[0].clone(), lab.clients[1].clone());
    vpn.client_up(&lab, &alice_ns, "c0", "alice");
    let (bob_iface, bob_conf) = vpn.client_up(&lab, &bob_ns, "c1", "bob");
    lab.wait_for_ping(&alice_ns, VPN_SERVER, Duration::from_secs(10));
    lab.wait_for_ping(&bob_ns, VPN_SERVER, Duration::from_secs(10));

    vpn.state.peers.get_mut(&name("bob")).unwrap().enabled = false;
    let (p, _) = vpn.sync(&lab);
    assert_eq!(p.summary().removed, ["bob"]);

    // A fresh start of bob's client: it must not get a handshake, however long it tries.
    lab.wg_quick_down(&bob_ns, &bob_conf);
    lab.wg_quick_up(&bob_ns, &bob_conf);
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        assert!(!lab.ping_once(&bob_ns, VPN_SERVER, Duration::from_millis(250)));
        assert_eq!(
            lab.latest_handshake(&bob_ns, &bob_iface, None),
            0,
            "bob got a handshake"
        );
    }
    assert!(
        lab.ping_once(&alice_ns, VPN_SERVER, Duration::from_secs(1)),
        "alice still works"
    );

    // Control: enabled again, the same client gets through (it retries every 5 s).
    vpn.state.peers.get_mut(&name("bob")).unwrap().enabled = true;
    vpn.sync(&lab);
    let took = lab.wait_for_ping(&bob_ns, VPN_SERVER, Duration::from_secs(20));
    println!(
        "bob re-enabled: answered again after {} ms",
        took.as_millis()
    );
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root, wireguard-go and wg-quick: make test, or as root: cargo test --features root-tests"
)]
fn show_of_a_missing_interface_is_none() {
    let lab = Lab::new(0);
    let backend = Backend::new(lab.dir().to_path_buf());
    let missing: InterfaceName = lab.wg_name("m").parse().unwrap();
    assert!(backend.show(&missing).unwrap().is_none());
    // And in the host's namespace, with the plain tools.
    assert!(Backend::new(lab.dir().to_path_buf())
        .show(&missing)
        .unwrap()
        .is_none());
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root, wireguard-go and wg-quick: make test, or as root: cargo test --features root-tests"
)]
fn interface_settings_and_errors() {
    let lab = Lab::new(0);
    let mut vpn = Vpn::up(&lab, &[("alice", 2)]);

    let e = vpn.backend.up(&vpn.iface).unwrap_err().to_string();
    assert!(
        e.contains(vpn.iface.as_str()) && e.contains("already up"),
        "{e}"
    );
    println!("up twice: {e}");

    // A new server key and port: the private key goes through wg's stdin.
    let old_key = vpn.server_key.expose();
    vpn.server_key = new_private_key();
    vpn.state.server.public_key = vpn.server_key.public_key();
    vpn.state.server.listen_port = PORT + 1;
    let (p, _) = vpn.sync(&lab);
    assert_eq!(p.summary().interface, ["private_key", "listen_port"]);
    let seen = vpn.backend.show(&vpn.iface).unwrap().unwrap();
    assert_eq!(seen.public_key, Some(vpn.server_key.public_key()));
    assert_eq!(seen.listen_port, PORT + 1);

    // Errors name the interface and what to do, and carry no key.
    let missing: InterfaceName = lab.wg_name("m").parse().unwrap();
    let mut p = vpn.plan();
    p.changes.push(wgadm_core::plan::Change::PrivateKey);
    let e = vpn
        .backend
        .apply(&missing, &p, &vpn.server_key)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(missing.as_str()) && e.contains("bring it up first"),
        "{e}"
    );
    println!("apply to a missing interface: {e}");
    assert!(!e.contains(vpn.server_key.expose().as_str()) && !e.contains(old_key.as_str()));

    vpn.backend.down(&vpn.iface).unwrap();
    assert!(vpn.backend.show(&vpn.iface).unwrap().is_none());
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root, wireguard-go and wg-quick: make test, or as root: cargo test --features root-tests"
)]
fn the_lab_leaves_nothing_behind() {
    let check = |footprint: &lab::Footprint| {
        let left = footprint.remains();
        assert!(left.is_empty(), "the lab left: {left:#?}");
    };
    let lab = Lab::new(1);
    let vpn = Vpn::up(&lab, &[("alice", 2)]);
    vpn.client_up(&lab, &lab.clients[0], "c0", "alice");
    lab.wait_for_ping(&lab.clients[0], VPN_SERVER, Duration::from_secs(10));
    let ping = lab.ping_loop(&lab.clients[0], VPN_SERVER);
    lab.tcp_listen(&lab.mgmt, lab::MGMT_HOSTS[0], 8080);
    lab.spawn(&lab.server, &["sleep", "600"], "sleep.log");
    let footprint = lab.footprint();
    assert!(
        footprint
            .procs
            .iter()
            .filter(|p| p.what.starts_with("wireguard-go"))
            .count()
            == 2
    );
    assert!(
        footprint.procs.iter().all(lab::Proc::alive),
        "{footprint:#?}"
    );
    assert!(!footprint.remains().is_empty());
    // The lab goes first, with the ping still running: it must kill it itself.
    drop(lab);
    check(&footprint);
    drop(ping);
    drop(vpn);

    // Also when the test panics half-way.
    eprintln!("the_lab_leaves_nothing_behind: the panic below is on purpose");
    let footprint = std::panic::catch_unwind(|| {
        let lab = Lab::new(1);
        let vpn = Vpn::up(&lab, &[("alice", 2)]);
        vpn.client_up(&lab, &lab.clients[0], "c0", "alice");
        let footprint = lab.footprint();
        std::panic::panic_any(footprint);
    })
    .unwrap_err()
    .downcast::<lab::Footprint>()
    .unwrap();
    assert_eq!(footprint.procs.len(), 2, "{footprint:#?}");
    check(&footprint);
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root, wireguard-go and wg-quick: make test, or as root: cargo test --features root-tests"
)]
fn five_thousand_peers_in_one_process_each_way() {
    const N: usize = 5000;
    let lab = Lab::new(1);
    let mut vpn = Vpn::up(&lab, &[("alice", 2)]);
    vpn.client_up(&lab, &lab.clients[0], "c0", "alice");
    lab.wait_for_ping(&lab.clients[0], VPN_SERVER, Duration::from_secs(10));
    let ping = lab.ping_loop(&lab.clients[0], VPN_SERVER);

    // Peers that never connect: random public keys, addresses in 10.0.0.0/8 (AllowedIPs only).
    for i in 0..N {
        let address = Ipv4Addr::new(10, 1 + (i / 250) as u8, 0, 1 + (i % 250) as u8);
        let mut p = peer(2, Key::from(random32()));
        p.address = address;
        vpn.state.peers.insert(name(&format!("bulk{i}")), p);
    }
    let timed = |what: &str, f: &mut dyn FnMut()| {
        let start = Instant::now();
        f();
        println!("{N} peers: {what}: {} ms", start.elapsed().as_millis());
    };
    let (p, took) = vpn.sync(&lab);
    assert_eq!(p.summary().added.len(), N);
    println!(
        "{N} peers: apply (add, one change set): {} ms",
        took.as_millis()
    );
    timed("show (device layer read + convert)", &mut || {
        let o = vpn.backend.show(&vpn.iface).unwrap().unwrap();
        assert_eq!(o.peers.len(), N + 1);
    });
    timed("plan against the live device (show + diff)", &mut || {
        assert!(vpn.plan().is_empty());
    });

    // Every one of them gets a preshared key: still one change set.
    for i in 0..N {
        vpn.psks.insert(
            name(&format!("bulk{i}")),
            Secret::preshared_from_random(random32()),
        );
    }
    let (p, took) = vpn.sync(&lab);
    assert_eq!(p.summary().updated.len(), N);
    println!(
        "{N} peers: apply (update in place, preshared keys): {} ms",
        took.as_millis()
    );

    // What wgadm did so far cost alice nothing. The comparison below runs `wg syncconf`, which
    // re-sets the listen port and so makes wireguard-go rebind (DESIGN.md: one packet may be
    // lost): alice's loss is counted for wgadm's steps only.
    traffic_for(&lab, vpn.iface.as_str(), &vpn.public_key("alice"), 300);
    let stats = ping.stop();
    println!(
        "ping through wgadm's add and update of {N} peers: {} sent, {} answered, lost {:?}",
        stats.transmitted, stats.received, stats.lost
    );
    assert!(stats.lost.is_empty(), "{stats:?}");

    // For comparison: wg syncconf to the same state from a rendered config (no change), then
    // removing them all with wgadm.
    let conf = lab.write_conf(
        "syncconf",
        &render::server_config(&vpn.state, &vpn.server_key, &vpn.psks, today()),
    );
    let stripped = lab.run(&lab.server, &["wg-quick", "strip", conf.to_str().unwrap()]);
    let stripped_path = lab.dir().join("conf/stripped.conf");
    fs::write(&stripped_path, stripped).unwrap();
    timed("wg syncconf, nothing to change", &mut || {
        lab.run(
            &lab.server,
            &[
                "wg",
                "syncconf",
                vpn.iface.as_str(),
                stripped_path.to_str().unwrap(),
            ],
        );
    });
    let full = (vpn.state.clone(), vpn.psks.clone());
    vpn.state.peers.retain(|n, _| n.as_str() == "alice");
    vpn.psks.clear();
    let ping = lab.ping_loop(&lab.clients[0], VPN_SERVER);
    traffic_for(&lab, vpn.iface.as_str(), &vpn.public_key("alice"), 300);
    let (p, took) = vpn.sync(&lab);
    assert_eq!(p.summary().removed.len(), N);
    println!("{N} peers: apply (remove): {} ms", took.as_millis());
    traffic_for(&lab, vpn.iface.as_str(), &vpn.public_key("alice"), 300);
    let stats = ping.stop();
    println!(
        "ping through wgadm's removal of {N} peers: {} sent, {} answered, lost {:?}",
        stats.transmitted, stats.received, stats.lost
    );
    assert!(stats.lost.is_empty(), "{stats:?}");
    timed(
        "wg syncconf, adding them back with preshared keys",
        &mut || {
            lab.run(
                &lab.server,
                &[
                    "wg",
                    "syncconf",
                    vpn.iface.as_str(),
                    stripped_path.to_str().unwrap(),
                ],
            );
        },
    );
    // What syncconf made of the rendered config is exactly what wgadm plans for the state.
    (vpn.state, vpn.psks) = full;
    assert!(vpn.plan().is_empty());
}
