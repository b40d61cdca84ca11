//! `wgadm::firewall` against the real nft, in network namespaces these tests create and always
//! delete (a `Drop` guard, also when a test panics). Nothing here touches the host's own
//! ruleset; traffic stays between namespaces made here.
//!
//! The packet test stands a veth named like the WireGuard interface in for it: the ruleset
//! matches the interface by name, so the rules are exercised exactly, without WireGuard. Tests
//! through real tunnels live with the lab.
//!
//! Run as root: `cargo test -p wgadm --features root-tests --test firewall_nft -- --nocapture`.
//! Without root or nft they fail and say so; they never pass silently.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use wgadm::firewall::{FirewallError, Nft, Put};
use wgadm_core::firewall::{digest, ruleset, Counter, HandshakeLog, LogTarget, Options};
use wgadm_core::model::Nat;
use wgadm_core::{Date, Key, Peer, Server, State};

const HINT: &str = "the firewall tests need root and nft (package nftables) and iproute2: run \
                    `bash scripts/setup.sh` as root, then `make test` (or, as root, `cargo test \
                    --features root-tests`)";

fn today() -> Date {
    Date::parse("2026-01-15").unwrap()
}

/// Panics with [`HINT`] unless we are root and nft and ip run.
fn require_root_and_tools() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next().map(str::to_owned));
    assert_eq!(uid.as_deref(), Some("0"), "not root: {HINT}");
    for tool in [["nft", "--version"], ["ip", "-V"]] {
        let ok = Command::new(tool[0])
            .arg(tool[1])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "{} does not run: {HINT}", tool[0]);
    }
}

fn check(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run ip {args:?}: {e}"));
    check(&format!("ip {}", args.join(" ")), &out);
}

/// A network namespace of this test process (the lab's bare one), deleted on drop.
struct Netns {
    name: String,
    _ns: wgadm_lab::Namespace,
}

impl Netns {
    fn new(role: &str) -> Netns {
        require_root_and_tools();
        let ns = wgadm_lab::Namespace::new(role).unwrap_or_else(|e| panic!("{e}: {HINT}"));
        Netns {
            name: ns.name().to_owned(),
            _ns: ns,
        }
    }

    /// nftables inside this namespace, the way wgadm reaches it: libnftables in-process.
    fn nft(&self) -> Nft {
        let nft = Nft::library_in_netns(format!("/run/netns/{}", self.name));
        assert!(nft.in_process(), "libnftables.so.1 does not load: {HINT}");
        nft
    }

    /// The nft program inside this namespace, the way wgadm runs it with `WGADM_NFT=nft` (or
    /// without libnftables).
    fn nft_program(&self) -> Nft {
        Nft::with_command("ip", ["netns", "exec", self.name.as_str(), "nft"])
    }

    /// Both ways, the in-process one first.
    fn both(&self) -> [(&'static str, Nft); 2] {
        [
            ("libnftables", self.nft()),
            ("nft program", self.nft_program()),
        ]
    }

    fn try_run(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {args:?} in {}: {e}", self.name))
    }

    fn run(&self, args: &[&str]) -> String {
        let out = self.try_run(args);
        check(&format!("{} in {}", args.join(" "), self.name), &out);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Loads a script with the real `nft -f`, for tables that are not ours.
    fn nft_script(&self, script: &str) {
        let path = std::env::temp_dir().join(format!("{}.nft", self.name));
        std::fs::write(&path, script).unwrap();
        let out = self.try_run(&["nft", "-f", path.to_str().unwrap()]);
        let _ = std::fs::remove_file(&path);
        check("nft -f", &out);
    }

    fn ping(&self, from: Ipv4Addr, to: Ipv4Addr) -> bool {
        self.try_run(&[
            "ping",
            "-n",
            "-q",
            "-c",
            "1",
            "-W",
            "1",
            "-I",
            &from.to_string(),
            &to.to_string(),
        ])
        .status
        .success()
    }
}

fn key(i: u32) -> Key {
    let mut k = [7u8; 32];
    k[..4].copy_from_slice(&i.to_be_bytes());
    Key::from(k)
}

fn server(subnet: &str, address: &str, interface: &str) -> Server {
    Server {
        interface: interface.parse().unwrap(),
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
    }
}

fn peer(address: Ipv4Addr, i: u32, access: Option<Vec<Ipv4Net>>) -> Peer {
    Peer {
        address,
        public_key: key(i),
        access,
        keepalive: 25,
        enabled: true,
        expires: None,
        preshared_key: false,
    }
}

/// `n` peers in 10.100.0.0/16: every 10th with its own access list, every 50th disabled,
/// every 7th allowed to reach the peer after it.
fn state_with(n: u32) -> State {
    let mut state = State {
        server: server("10.100.0.0/16", "10.100.0.1", "wg0"),
        peers: BTreeMap::new(),
    };
    state.server.allowed_sources = vec!["203.0.113.0/24".parse().unwrap()];
    let base = u32::from(Ipv4Addr::new(10, 100, 0, 2));
    for i in 0..n {
        let address = Ipv4Addr::from(base + i);
        let access = match i {
            _ if i % 10 == 0 => Some(vec![
                format!("192.168.{}.0/24", i % 250).parse().unwrap(),
                "10.20.0.0/16".parse().unwrap(),
            ]),
            _ if i % 7 == 0 => Some(vec![
                "192.168.0.0/16".parse().unwrap(),
                Ipv4Net::from(Ipv4Addr::from(base + i + 1)),
            ]),
            _ => None,
        };
        let mut p = peer(address, i, access);
        p.enabled = i % 50 != 49;
        state
            .peers
            .insert(format!("peer{i:05}").parse().unwrap(), p);
    }
    state
}

fn active(state: &State) -> usize {
    state.active_peers(today()).count()
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root and nft: make test, or as root: cargo test --features root-tests"
)]
fn rulesets_for_20_250_and_5000_peers_load() {
    let ns = Netns::new("load");
    for (way, nft) in ns.both() {
        println!("{way}");
        loads_and_removes(&nft);
    }
}

fn loads_and_removes(nft: &Nft) {
    nft.preflight().expect("preflight");
    for n in [20, 250, 5000] {
        let state = state_with(n);
        let text = ruleset(&state, today(), &Options::default());
        assert!(nft.apply(&text).expect("apply"), "{n} peers: not loaded");
        // The same ruleset again changes nothing and loads nothing.
        assert!(
            !nft.apply(&text).expect("apply again"),
            "{n} peers: reloaded"
        );
        assert_eq!(
            nft.loaded_digest().unwrap().as_deref(),
            digest(&text),
            "{n} peers"
        );
        let counters = nft.drop_counters().expect("drop counters");
        assert_eq!(counters.len(), active(&state), "{n} peers");
        assert!(counters.values().all(|c| *c == Counter::default()));
        let listing = nft.listing().unwrap().unwrap();
        assert!(listing.contains("10.100.0.2 . 192.168.0.0/24"), "{n} peers");
        // The disabled peer 49 (10.100.0.51) has no element at all.
        if n > 50 {
            assert!(!listing.contains("10.100.0.51 "), "{n} peers");
            assert!(!listing.contains("10.100.0.51,"), "{n} peers");
        }
    }
    assert!(nft.remove().unwrap());
    assert!(!nft.remove().unwrap(), "a second remove finds nothing");
    assert!(nft.listing().unwrap().is_none());
    assert!(nft.drop_counters().unwrap().is_empty());
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root and nft: make test, or as root: cargo test --features root-tests"
)]
fn every_variant_of_the_ruleset_loads() {
    let ns = Netns::new("variants");
    let nft = ns.nft();
    let handshakes = HandshakeLog {
        initiation_group: 7,
        response_group: 8,
    };
    let mut loaded = 0;
    for nat in [Nat::Masquerade, Nat::None] {
        for allowed in [
            vec![],
            vec![
                "203.0.113.0/24".parse().unwrap(),
                "198.51.100.7/32".parse().unwrap(),
            ],
        ] {
            for handshake_log in [None, Some(handshakes)] {
                for log_denied in [None, Some(LogTarget::Kernel), Some(LogTarget::Group(9))] {
                    let mut state = state_with(30);
                    state.server.nat = nat;
                    state.server.allowed_sources = allowed.clone();
                    // An odd interface name and an empty deny list load too.
                    state.server.interface = "wg-a.b=c+d".parse().unwrap();
                    state.server.deny = vec![];
                    let options = Options {
                        handshake_log,
                        log_denied,
                        ..Options::default()
                    };
                    let text = ruleset(&state, today(), &options);
                    let what = format!("{nat:?} {allowed:?} {handshake_log:?} {log_denied:?}");
                    assert!(
                        nft.apply(&text)
                            .unwrap_or_else(|e| panic!("{what}: {e}\n{text}")),
                        "{what}"
                    );
                    loaded += 1;
                }
            }
        }
    }
    assert_eq!(loaded, 24);
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root and nft: make test, or as root: cargo test --features root-tests"
)]
fn a_refused_ruleset_leaves_the_previous_one_in_force() {
    let ns = Netns::new("refused");
    for (way, nft) in ns.both() {
        println!("{way}");
        refused_leaves_previous(&nft);
        assert!(nft.remove().unwrap(), "{way}");
    }
}

fn refused_leaves_previous(nft: &Nft) {
    let state = state_with(20);
    let good = ruleset(&state, today(), &Options::default());
    assert!(nft.apply(&good).unwrap());
    let before = nft.listing().unwrap().unwrap();

    // A state change, so the digest differs and apply really loads.
    let mut changed = state.clone();
    changed.server.listen_port = 51999;
    let next = ruleset(&changed, today(), &Options::default());
    // 1. nft refuses while parsing: a set that does not exist.
    let parse_error = next.replace("@peer_access accept", "@no_such_set accept");
    // 2. the kernel refuses at commit, after the batch already deleted the table: a loop.
    let kernel_error = next.replace(
        "\tchain denied {\n",
        "\tchain loop_a {\n\t\tjump loop_b\n\t}\n\tchain loop_b {\n\t\tjump loop_a\n\t}\n\
         \tchain denied {\n\t\tjump loop_a\n",
    );
    // 3. overlapping intervals in one set (what aggregation prevents).
    let overlap = next.replace(
        "\t\t\t172.16.10.0/24,\n",
        "\t\t\t172.16.10.0/24,\n\t\t\t172.16.10.128/25,\n",
    );
    for (what, bad) in [
        ("parse error", parse_error),
        ("kernel error", kernel_error),
        ("overlap", overlap),
    ] {
        assert_ne!(bad, next, "{what}: the test did not change the ruleset");
        let err = nft.apply(&bad).expect_err(what);
        let message = err.to_string();
        assert!(
            matches!(err, FirewallError::Refused { .. }),
            "{what}: {message}"
        );
        assert!(
            message.contains("the firewall in force is unchanged"),
            "{what}: {message}"
        );
        // nft's own words, pointing at the line of the script (as `nft -f -` names it).
        if what == "parse error" {
            assert!(message.contains("/dev/stdin:"), "{what}: {message}");
        }
        println!("{what}: {message}\n");
        assert_eq!(
            nft.listing().unwrap().as_deref(),
            Some(before.as_str()),
            "{what}: the ruleset in force changed"
        );
        assert!(
            nft.listing().unwrap().unwrap().contains("udp dport 51820"),
            "{what}"
        );
    }
    // The good change still loads afterwards.
    assert!(nft.apply(&next).unwrap());
    assert!(nft.listing().unwrap().unwrap().contains("udp dport 51999"));
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root and nft: make test, or as root: cargo test --features root-tests"
)]
fn other_tables_survive_our_apply_and_remove() {
    let ns = Netns::new("others");
    // Someone else's tables, one of them also named wgadm but in another family.
    ns.nft_script(
        "table inet other {\n\
         \tset blocked { type ipv4_addr; elements = { 198.51.100.99 } }\n\
         \tchain input { type filter hook input priority -10; policy accept;\n\
         \t\tip saddr @blocked counter drop\n\t}\n}\n\
         table ip wgadm {\n\tchain postrouting { type nat hook postrouting priority 100; policy accept;\n\
         \t\tcounter\n\t}\n}\n",
    );
    let others = || {
        let inet = ns.run(&["nft", "list", "table", "inet", "other"]);
        let ip = ns.run(&["nft", "list", "table", "ip", "wgadm"]);
        (inet, ip)
    };
    let before = others();
    let nft = ns.nft();
    let mut state = state_with(20);
    assert!(nft
        .apply(&ruleset(&state, today(), &Options::default()))
        .unwrap());
    assert_eq!(others(), before);
    state.server.nat = Nat::None;
    assert!(nft
        .apply(&ruleset(&state, today(), &Options::default()))
        .unwrap());
    assert_eq!(others(), before);
    assert!(nft.remove().unwrap());
    assert_eq!(others(), before);
    let tables = ns.run(&["nft", "list", "tables"]);
    assert_eq!(tables, "table inet other\ntable ip wgadm\n");
}

/// Builds a server namespace whose `wg0` is a veth to a "peers" namespace holding the peers'
/// addresses, plus a management host (192.168.1.10 and .11) and a DMZ host (172.16.10.5)
/// behind the server.
struct Topology {
    server: Netns,
    peers: Netns,
    mgmt: Netns,
    dmz: Netns,
}

impl Topology {
    fn new(peer_addrs: &[Ipv4Addr]) -> Topology {
        let b = Topology {
            server: Netns::new("srv"),
            peers: Netns::new("peers"),
            mgmt: Netns::new("mgmt"),
            dmz: Netns::new("dmz"),
        };
        let (s, p, m, d) = (&b.server.name, &b.peers.name, &b.mgmt.name, &b.dmz.name);
        ip(&[
            "-n", s, "link", "add", "wg0", "type", "veth", "peer", "name", "p0", "netns", p,
        ]);
        ip(&["-n", s, "addr", "add", "192.168.100.1/24", "dev", "wg0"]);
        ip(&["-n", s, "link", "set", "wg0", "up"]);
        for a in peer_addrs {
            ip(&["-n", p, "addr", "add", &format!("{a}/24"), "dev", "p0"]);
        }
        ip(&["-n", p, "link", "set", "p0", "up"]);
        ip(&["-n", p, "route", "add", "default", "via", "192.168.100.1"]);
        for (ns, gw, hosts) in [
            (
                m,
                "192.168.1.1/24",
                &["192.168.1.10/24", "192.168.1.11/24"][..],
            ),
            (d, "172.16.10.1/24", &["172.16.10.5/24"][..]),
        ] {
            ip(&[
                "-n", s, "link", "add", "out", "type", "veth", "peer", "name", "in", "netns", ns,
            ]);
            // Two links named "out" cannot share a namespace: name them after the network.
            let name = if ns == m { "mgmt0" } else { "dmz0" };
            ip(&["-n", s, "link", "set", "out", "name", name]);
            ip(&["-n", s, "addr", "add", gw, "dev", name]);
            ip(&["-n", s, "link", "set", name, "up"]);
            for h in hosts {
                ip(&["-n", ns, "addr", "add", h, "dev", "in"]);
            }
            // No route back to the VPN subnet: replies find their way only with masquerade.
            ip(&["-n", ns, "link", "set", "in", "up"]);
        }
        b
    }
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root and nft: make test, or as root: cargo test --features root-tests"
)]
fn packets_follow_the_rules_and_drop_counters_read_back() {
    let alice: Ipv4Addr = "192.168.100.2".parse().unwrap();
    let bob: Ipv4Addr = "192.168.100.3".parse().unwrap();
    let mgmt10: Ipv4Addr = "192.168.1.10".parse().unwrap();
    let mgmt11: Ipv4Addr = "192.168.1.11".parse().unwrap();
    let dmz: Ipv4Addr = "172.16.10.5".parse().unwrap();
    let server_vpn: Ipv4Addr = "192.168.100.1".parse().unwrap();
    let server_dmz: Ipv4Addr = "172.16.10.1".parse().unwrap();
    let b = Topology::new(&[alice, bob]);

    // IPv4 forwarding, switched on by wgadm in the server namespace only: the test runs
    // itself there (ip netns exec), as wgadm would run inside a container.
    let inner = Command::new("ip")
        .args(["netns", "exec", &b.server.name])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "ip_forward_inside_a_namespace",
            "--include-ignored",
            "--nocapture",
        ])
        .env("WGADM_FW_INNER", "1")
        .output()
        .unwrap();
    check("the ip_forward test inside the server namespace", &inner);
    let stdout = String::from_utf8_lossy(&inner.stdout);
    assert!(stdout.contains("1 passed"), "{stdout}");
    assert_eq!(
        b.server
            .run(&["cat", "/proc/sys/net/ipv4/ip_forward"])
            .trim(),
        "1"
    );

    let mut state = State {
        server: server("192.168.100.0/24", "192.168.100.1", "wg0"),
        peers: BTreeMap::new(),
    };
    state
        .peers
        .insert("alice".parse().unwrap(), peer(alice, 1, None));
    state.peers.insert(
        "bob".parse().unwrap(),
        peer(bob, 2, Some(vec![Ipv4Net::from(mgmt10)])),
    );
    let nft = b.server.nft();
    assert!(nft
        .apply(&ruleset(&state, today(), &Options::default()))
        .unwrap());

    let p = &b.peers;
    assert!(p.ping(alice, mgmt10), "alice (default access) reaches .10");
    assert!(p.ping(alice, mgmt11), "alice (default access) reaches .11");
    assert!(p.ping(bob, mgmt10), "bob reaches .10");
    assert!(!p.ping(bob, mgmt11), "bob must not reach .11");
    assert!(!p.ping(alice, dmz), "the DMZ host must be unreachable");
    assert!(!p.ping(alice, dmz), "the DMZ host must be unreachable");
    assert!(
        !p.ping(bob, server_dmz),
        "the server's DMZ address must be unreachable"
    );
    assert!(
        p.ping(alice, server_vpn),
        "alice reaches the server's VPN address"
    );
    assert!(
        !p.ping(bob, server_vpn),
        "bob's access list does not cover the server"
    );

    let counters = nft.drop_counters().unwrap();
    assert_eq!(counters.len(), 2);
    assert_eq!(counters[&alice].packets, 2, "{counters:?}");
    assert_eq!(counters[&alice].bytes, 2 * 84, "{counters:?}");
    assert_eq!(counters[&bob].packets, 1, "{counters:?}");

    // Carried over a reload that changes the state (bob gets .11 too).
    state.peers.get_mut(&"bob".parse().unwrap()).unwrap().access =
        Some(vec![Ipv4Net::from(mgmt10), Ipv4Net::from(mgmt11)]);
    let options = Options {
        carried_drops: counters.clone(),
        ..Options::default()
    };
    assert!(nft.apply(&ruleset(&state, today(), &options)).unwrap());
    assert_eq!(nft.drop_counters().unwrap(), counters);
    assert!(p.ping(bob, mgmt11), "bob reaches .11 after the change");

    // Disabling alice removes her element and cuts her off.
    state
        .peers
        .get_mut(&"alice".parse().unwrap())
        .unwrap()
        .enabled = false;
    assert!(nft
        .apply(&ruleset(&state, today(), &Options::default()))
        .unwrap());
    assert!(!p.ping(alice, mgmt10), "a disabled peer has no rule left");
    assert!(!nft.drop_counters().unwrap().contains_key(&alice));

    // nat: none: the management host has no route back, so nothing comes back.
    state.server.nat = Nat::None;
    assert!(nft
        .apply(&ruleset(&state, today(), &Options::default()))
        .unwrap());
    assert!(
        !p.ping(bob, mgmt10),
        "without masquerade and without a route back"
    );
    ip(&[
        "-n",
        &b.mgmt.name,
        "route",
        "add",
        "192.168.100.0/24",
        "via",
        "192.168.1.1",
    ]);
    assert!(p.ping(bob, mgmt10), "with the router's route back");
    let _ = &b.dmz;
}

/// Runs only inside the server namespace of the packet test (see there).
#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root and nft: make test, or as root: cargo test --features root-tests"
)]
fn ip_forward_inside_a_namespace() {
    require_root_and_tools();
    if std::env::var_os("WGADM_FW_INNER").is_none() {
        return;
    }
    // A new namespace copies IPv4's switches from the host's (net.core.devconf_inherit_init_net
    // 0 means "inherit" for IPv4), so start from off whatever the host has.
    std::fs::write(wgadm::firewall::IP_FORWARD, "0\n").unwrap();
    assert!(wgadm::firewall::enable_ip_forward().unwrap(), "it was off");
    assert!(
        !wgadm::firewall::enable_ip_forward().unwrap(),
        "now it is on"
    );
}

#[test]
#[cfg_attr(
    not(feature = "bench"),
    ignore = "benchmark (needs root and nft; prints numbers): make bench"
)]
fn bench_firewall_ruleset_load() {
    let ns = Netns::new("bench");
    let nft = ns.nft();
    println!("peers  render     first load  reload      unchanged  counters  +1 peer in place (digest read included)");
    for n in [20, 250, 5000] {
        let state = state_with(n);
        let t = Instant::now();
        let text = ruleset(&state, today(), &Options::default());
        let render = t.elapsed();
        let t = Instant::now();
        assert!(nft.apply(&text).unwrap());
        let load = t.elapsed();
        let mut changed = state.clone();
        changed.server.listen_port += 1;
        let next = ruleset(&changed, today(), &Options::default());
        let t = Instant::now();
        assert!(nft.apply(&next).unwrap());
        let reload = t.elapsed();
        let t = Instant::now();
        assert!(!nft.apply(&next).unwrap());
        let unchanged = t.elapsed();
        let t = Instant::now();
        assert_eq!(nft.drop_counters().unwrap().len(), active(&state));
        let counters = t.elapsed();
        // One peer added, in place (after a first put that keeps the elements).
        let cache = tempfile::tempdir().unwrap();
        let kept = ns.nft().with_elements_dir(cache.path());
        let base = Options::default();
        kept.put(&changed, today(), &base, None).unwrap();
        let mut more = changed.clone();
        more.peers.insert(
            "added".parse().unwrap(),
            peer(Ipv4Addr::new(10, 100, 250, 250), 99_999, None),
        );
        let t = Instant::now();
        let digest_now = kept.loaded_digest().unwrap();
        let put = kept
            .put(&more, today(), &base, digest_now.as_deref())
            .unwrap();
        let in_place = t.elapsed();
        assert!(matches!(put, Put::Elements { .. }), "{put:?}");
        println!(
            "{n:>5}  {:>9}  {:>10}  {:>10}  {:>9}  {:>8}  {:>8}   ({} KiB script)",
            ms(render),
            ms(load),
            ms(reload),
            ms(unchanged),
            ms(counters),
            ms(in_place),
            text.len() / 1024
        );
        assert!(nft.remove().unwrap());
    }
}

/// Every set's elements in the table in force, each as nft's JSON of it, sorted: what two
/// tables hold can be compared whatever order nft lists them in.
fn elements_in_force(ns: &Netns) -> BTreeMap<String, Vec<String>> {
    let json = ns.run(&["nft", "-j", "-s", "list", "table", "inet", "wgadm"]);
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    let mut out = BTreeMap::new();
    for item in value["nftables"].as_array().unwrap() {
        if let Some(set) = item.get("set") {
            let name = set["name"].as_str().unwrap().to_owned();
            let mut elems: Vec<String> = set
                .get("elem")
                .and_then(|e| e.as_array())
                .map(|a| a.iter().map(ToString::to_string).collect())
                .unwrap_or_default();
            elems.sort();
            out.insert(name, elems);
        }
    }
    out
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root and nft: make test, or as root: cargo test --features root-tests"
)]
fn peer_changes_update_the_elements_in_place_and_shape_changes_replace_the_table() {
    let ns = Netns::new("inplace");
    let fresh = Netns::new("fresh");
    let cache = tempfile::tempdir().unwrap();
    let nft = ns.nft().with_elements_dir(cache.path());
    let base = Options::default();
    let mut state = state_with(250);
    let loaded = |nft: &Nft| nft.loaded_digest().unwrap();

    // First load: the table, with a carried drop counter on the first peer.
    let first = Ipv4Addr::new(10, 100, 0, 2);
    let carried = Options {
        carried_drops: [(
            first,
            Counter {
                packets: 7,
                bytes: 700,
            },
        )]
        .into_iter()
        .collect(),
        ..base.clone()
    };
    assert_eq!(
        nft.put(&state, today(), &carried, None).unwrap(),
        Put::Table
    );
    let wanted = |s: &State| digest(&ruleset(s, today(), &base)).unwrap().to_owned();
    assert_eq!(loaded(&nft).as_deref(), Some(wanted(&state).as_str()));
    assert_eq!(
        nft.put(&state, today(), &base, loaded(&nft).as_deref())
            .unwrap(),
        Put::Unchanged
    );

    // Peers added, removed, re-enabled and with another access list: elements only.
    let mut p = peer(Ipv4Addr::new(10, 100, 9, 9), 9999, None);
    p.access = Some(vec!["172.30.0.0/16".parse().unwrap()]);
    state.peers.insert("added".parse().unwrap(), p);
    state.peers.remove(&"peer00003".parse().unwrap());
    state
        .peers
        .get_mut(&"peer00049".parse().unwrap())
        .unwrap()
        .enabled = true;
    state
        .peers
        .get_mut(&"peer00010".parse().unwrap())
        .unwrap()
        .access = Some(vec!["192.168.77.0/24".parse().unwrap()]);
    let put = nft
        .put(&state, today(), &base, loaded(&nft).as_deref())
        .unwrap();
    let Put::Elements { added, removed } = put else {
        panic!("a peer change replaced the table: {put:?}");
    };
    println!("in place: {added} elements added, {removed} deleted");
    assert!(added >= 4 && removed >= 3, "{put:?}");
    assert_eq!(loaded(&nft).as_deref(), Some(wanted(&state).as_str()));
    // The same elements as a table loaded from scratch for that state.
    fresh
        .nft()
        .with_elements_dir(cache.path().join("fresh"))
        .put(&state, today(), &base, None)
        .unwrap();
    assert_eq!(elements_in_force(&ns), elements_in_force(&fresh));
    // The untouched peer kept counting: its counter was not reset.
    assert_eq!(
        nft.drop_counters().unwrap().get(&first),
        Some(&Counter {
            packets: 7,
            bytes: 700
        })
    );

    // A torn kept copy of the elements in force (cut short): its content no longer matches
    // its name, so it is not diffed against; the table is replaced instead, and what is in
    // force is still exactly the state's.
    let now = loaded(&nft).unwrap();
    let kept = cache.path().join(now.split_once('-').unwrap().1);
    let text = std::fs::read_to_string(&kept).unwrap();
    std::fs::write(&kept, &text[..text.len() / 2]).unwrap();
    state.peers.remove(&"peer00007".parse().unwrap());
    assert_eq!(
        nft.put(&state, today(), &base, Some(&now)).unwrap(),
        Put::Table
    );
    assert_eq!(loaded(&nft).as_deref(), Some(wanted(&state).as_str()));
    fresh
        .nft()
        .with_elements_dir(cache.path().join("fresh"))
        .put(&state, today(), &base, None)
        .unwrap();
    assert_eq!(elements_in_force(&ns), elements_in_force(&fresh));

    // An element deleted by hand: the in-place change is refused as a whole and the table
    // is replaced instead, so what is in force is still exactly the state's.
    ns.run(&[
        "nft",
        "delete",
        "element",
        "inet",
        "wgadm",
        "deny_drops",
        "{",
        "10.100.0.4",
        "}",
    ]);
    state.peers.remove(&"peer00002".parse().unwrap());
    assert_eq!(
        nft.put(&state, today(), &base, loaded(&nft).as_deref())
            .unwrap(),
        Put::Table
    );
    assert_eq!(loaded(&nft).as_deref(), Some(wanted(&state).as_str()));
    fresh
        .nft()
        .with_elements_dir(cache.path().join("fresh"))
        .put(&state, today(), &base, None)
        .unwrap();
    assert_eq!(elements_in_force(&ns), elements_in_force(&fresh));

    // A shape change (the listen port) replaces the table.
    state.server.listen_port += 1;
    assert_eq!(
        nft.put(&state, today(), &base, loaded(&nft).as_deref())
            .unwrap(),
        Put::Table
    );
    // Without the kept elements (another cache, e.g. after a reboot) a peer change replaces
    // the table too: correct, only slower.
    state.peers.remove(&"peer00005".parse().unwrap());
    let other = ns.nft().with_elements_dir(cache.path().join("empty"));
    assert_eq!(
        other
            .put(&state, today(), &base, loaded(&nft).as_deref())
            .unwrap(),
        Put::Table
    );
    assert_eq!(loaded(&nft).as_deref(), Some(wanted(&state).as_str()));
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}
