//! `wgadm apply` and `wgadm status` end to end: the real wgadm binary runs in the lab's server
//! namespace; clients use, unchanged, the configs `wgadm peer config` prints, with the real
//! wg-quick; wireguard-go stands in for the kernel module.
//!
//! Run as root: `cargo test -p wgadm --features root-tests --test apply_lab -- --nocapture`.

mod lab;

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lab::server::Server;
use lab::{Lab, MGMT_HOSTS};

const VPN_SERVER: Ipv4Addr = Ipv4Addr::new(192, 168, 100, 1);

/// Whether the client in `ns` can complete a handshake now: its tunnel is brought down and up
/// again (a fresh session), then it pings the server until `within` has passed.
fn fresh_handshake(
    lab: &Lab,
    ns: &str,
    conf: &std::path::Path,
    iface: &str,
    within: Duration,
) -> bool {
    lab.wg_quick_down(ns, conf);
    lab.wg_quick_up(ns, conf);
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if lab.ping_once(ns, VPN_SERVER, Duration::from_millis(500)) {
            return true;
        }
    }
    lab.latest_handshake(ns, iface, None) != 0
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root, wireguard-go and wg-quick: make test, or as root: cargo test --features root-tests"
)]
fn a_client_connects_within_5_seconds_and_status_shows_it() {
    let lab = Lab::new(1);
    let server = Server::new(&lab);
    server.ok(&["peer", "add", "alice"]);
    let out = server.json(&["apply"]);
    assert_eq!(out["brought_up"], true);
    assert_eq!(out["added"], serde_json::json!(["alice"]));
    let conf = server.config_dir.join(format!("{}.conf", server.iface));
    assert_eq!(
        std::fs::metadata(&conf).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let start = Instant::now();
    let client_conf = server.connect(0, "alice");
    lab.wait_for_ping(&lab.clients[0], VPN_SERVER, Duration::from_secs(5));
    let took = start.elapsed();
    println!(
        "SC-001: wg-quick up to the first answered ping: {:.0} ms",
        took.as_secs_f64() * 1000.0
    );
    assert!(
        lab.ping_once(&lab.clients[0], MGMT_HOSTS[0], Duration::from_secs(2)),
        "the management network is reachable"
    );

    let alice = server.status_of("alice");
    assert_eq!(alice["state"], "applied");
    assert_eq!(alice["connected"], true);
    assert_eq!(
        alice["endpoint"].as_str().unwrap().split(':').next(),
        Some("198.51.100.10")
    );
    assert!(alice["rx_bytes"].as_u64().unwrap() > 0 && alice["tx_bytes"].as_u64().unwrap() > 0);
    let text = server.ok(&["status"]);
    assert!(text.contains("1 of 1 peers connected"), "{text}");
    // Status never shows a secret.
    for f in ["server.key", "peers/alice.key"] {
        let key = std::fs::read_to_string(server.state.join(f)).unwrap();
        assert!(
            !text.contains(key.trim()) && !server.ok(&["--json", "status"]).contains(key.trim())
        );
    }

    // A second apply has nothing to do.
    let again = server.json(&["apply"]);
    assert_eq!(again["changed"], false, "{again}");

    // `peer add --json --apply`: one JSON document with the peer and what apply did.
    let added = server.json(&["peer", "add", "zed", "--apply"]);
    assert_eq!(added["name"], "zed");
    assert_eq!(
        added["apply"]["added"],
        serde_json::json!(["zed"]),
        "{added}"
    );

    // Drift: a peer put on the device by hand shows as unknown, and apply removes it.
    let stray = wgadm::secrets::generate_private()
        .unwrap()
        .public_key()
        .to_string();
    lab.run(
        &lab.server,
        &[
            "wg",
            "set",
            &server.iface,
            "peer",
            &stray,
            "allowed-ips",
            "192.168.100.99/32",
        ],
    );
    let st = server.json(&["status"]);
    assert!(st["peers"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["state"] == "unknown" && p["public_key"] == stray.as_str()));
    let out = server.json(&["apply"]);
    assert_eq!(out["removed"], serde_json::json!([stray]));

    // US1-3: `wg-quick down` leaves no interface and no route behind, also for a full tunnel.
    let client = &lab.clients[0];
    let iface = client_conf
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    lab.wg_quick_down(client, &client_conf);
    let text = std::fs::read_to_string(&client_conf).unwrap();
    let full = text
        .lines()
        .map(|l| {
            if l.starts_with("AllowedIPs") {
                "AllowedIPs = 0.0.0.0/0".to_owned()
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n";
    std::fs::write(&client_conf, full).unwrap();
    let before = (
        lab.run(client, &["ip", "route", "show", "table", "all"]),
        lab.run(client, &["ip", "rule"]),
    );
    lab.wg_quick_up(client, &client_conf);
    lab.wait_for_ping(client, VPN_SERVER, Duration::from_secs(5));
    assert_ne!(
        before.1,
        lab.run(client, &["ip", "rule"]),
        "a full tunnel adds policy rules"
    );
    lab.wg_quick_down(client, &client_conf);
    let links = lab.run(client, &["ip", "-o", "link"]);
    assert!(!links.contains(&iface), "{iface} is left: {links}");
    assert_eq!(
        before,
        (
            lab.run(client, &["ip", "route", "show", "table", "all"]),
            lab.run(client, &["ip", "rule"])
        )
    );
}
#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root, wireguard-go and wg-quick: make test, or as root: cargo test --features root-tests"
)]
fn changing_other_peers_loses_no_packets_and_updates_keep_sessions() {
    let lab = Lab::new(1);
    let server = Server::new(&lab);
    server.ok(&["peer", "add", "alice"]);
    server.ok(&["peer", "add", "bob"]);
    server.ok(&["apply"]);
    server.connect(0, "alice");
    lab.wait_for_ping(&lab.clients[0], VPN_SERVER, Duration::from_secs(5));
    let rx_before = server.status_of("alice")["rx_bytes"].as_u64().unwrap();

    let ping = lab.ping_loop(&lab.clients[0], VPN_SERVER);
    lab.wait_for_ping(&lab.clients[0], VPN_SERVER, Duration::from_secs(5));
    let steps: &[&[&str]] = &[
        &["peer", "add", "carol", "--apply"],
        &["peer", "add", "dave", "--preshared-key"],
        &["apply"],
        &["peer", "disable", "bob", "--apply"],
        &["peer", "enable", "bob", "--apply"],
        &["peer", "rotate", "carol", "--apply"],
        &[
            "peer",
            "set",
            "dave",
            "--address",
            "192.168.100.77",
            "--apply",
        ],
        &["peer", "remove", "carol", "--apply"],
        &["apply"],
        // alice herself: a new access list and keepalive change her config, not her session.
        &[
            "peer",
            "set",
            "alice",
            "--access",
            "192.168.0.0/16,10.0.0.0/8",
            "--keepalive",
            "15",
            "--apply",
        ],
    ];
    let alice_key = server.public_key("alice");
    for args in steps {
        // When each step ran, to set against the ping loop's reply times if one is lost.
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        println!("step at {:.3}: {}", at.as_secs_f64(), args.join(" "));
        server.ok(args);
        // Let alice's pings meet each new configuration: ~10 more of them arrive.
        lab.wait_for_traffic(&server.iface, &alice_key, 1000, Duration::from_secs(10));
    }
    let stats = ping.stop();
    println!(
        "FR-006: {} pings through {} changes, lost {:?}",
        stats.transmitted,
        steps.len(),
        stats.lost
    );
    assert!(stats.transmitted > 50, "the ping loop ran: {stats:?}");
    assert!(
        stats.lost.is_empty(),
        "packets lost while other peers changed: {stats:?}"
    );
    let alice = server.status_of("alice");
    assert_eq!(alice["state"], "applied");
    assert!(
        alice["rx_bytes"].as_u64().unwrap() > rx_before,
        "alice kept her session: her counters went on"
    );
    let dump = lab.run(&lab.server, &["wg", "show", &server.iface, "allowed-ips"]);
    assert!(
        dump.contains("192.168.100.77/32"),
        "dave moved in place: {dump}"
    );
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root, wireguard-go and wg-quick: make test, or as root: cargo test --features root-tests"
)]
fn disabled_removed_and_wrongly_keyed_clients_get_no_handshake() {
    let lab = Lab::new(2);
    let server = Server::new(&lab);
    server.ok(&["peer", "add", "alice"]);
    server.ok(&["peer", "add", "bob"]);
    server.ok(&["apply"]);
    let bob_conf = server.connect(1, "bob");
    let bob_iface = bob_conf.file_stem().unwrap().to_str().unwrap().to_owned();
    let (bob_ns, alice_ns) = (lab.clients[1].clone(), lab.clients[0].clone());
    lab.wait_for_ping(&bob_ns, VPN_SERVER, Duration::from_secs(5));

    server.ok(&["peer", "disable", "bob", "--apply"]);
    assert!(
        !fresh_handshake(&lab, &bob_ns, &bob_conf, &bob_iface, Duration::from_secs(7)),
        "a disabled peer completed a handshake"
    );
    server.ok(&["peer", "enable", "bob", "--apply"]);
    // Enabled again it connects (its client retries every 5 s, REKEY_TIMEOUT).
    lab.wait_for_ping(&bob_ns, VPN_SERVER, Duration::from_secs(20));

    let bob_key = server.public_key("bob");
    server.ok(&["peer", "remove", "bob", "--apply"]);
    assert!(!lab
        .run(&lab.server, &["wg", "show", &server.iface, "peers"])
        .contains(&bob_key));
    assert!(
        !fresh_handshake(&lab, &bob_ns, &bob_conf, &bob_iface, Duration::from_secs(7)),
        "a removed peer completed a handshake"
    );

    // US1-4: alice's config with another private key: no handshake, nothing through.
    let conf = server.client_conf(0, "alice", true);
    let alice_iface = conf.file_stem().unwrap().to_str().unwrap().to_owned();
    lab.wg_quick_up(&alice_ns, &conf);
    for _ in 0..3 {
        assert!(!lab.ping_once(&alice_ns, VPN_SERVER, Duration::from_secs(1)));
    }
    assert_eq!(lab.latest_handshake(&alice_ns, &alice_iface, None), 0);
    assert_eq!(
        server.status_of("alice")["latest_handshake"],
        serde_json::Value::Null
    );
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root, wireguard-go and wg-quick: make test, or as root: cargo test --features root-tests"
)]
fn twenty_clients_connect_at_once_each_with_its_own_address() {
    const N: usize = 20;
    let lab = Lab::new(N);
    let server = Server::new(&lab);
    for i in 0..N {
        server.ok(&["peer", "add", &format!("c{i:02}")]);
    }
    server.ok(&["apply"]);
    for i in 0..N {
        server.connect(i, &format!("c{i:02}"));
    }
    // Everyone pings at the same time.
    let pings: Vec<_> = lab
        .clients
        .iter()
        .map(|ns| {
            Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    ns,
                    "ping",
                    "-n",
                    "-q",
                    "-c",
                    "20",
                    "-i",
                    "0.05",
                    "-W",
                    "5",
                    &VPN_SERVER.to_string(),
                ])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (i, p) in pings.into_iter().enumerate() {
        let out = p.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "client {i}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let st = server.json(&["status"]);
    assert_eq!(st["peers_connected"], N);
    let peers = st["peers"].as_array().unwrap();
    let addresses: HashSet<&str> = peers
        .iter()
        .map(|p| p["address"].as_str().unwrap())
        .collect();
    let endpoints: HashSet<&str> = peers
        .iter()
        .map(|p| p["endpoint"].as_str().unwrap())
        .collect();
    assert_eq!((addresses.len(), endpoints.len()), (N, N));
    // Each client got the address its config names, and no other.
    for i in 0..N {
        let want = server.json(&["peer", "show", &format!("c{i:02}")])["address"]
            .as_str()
            .unwrap()
            .to_owned();
        let have = lab.run(
            &lab.clients[i],
            &[
                "ip",
                "-4",
                "-o",
                "addr",
                "show",
                "dev",
                &lab.wg_name(&format!("c{i}")),
            ],
        );
        assert!(have.contains(&format!("{want}/32")), "client {i}: {have}");
    }
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root, wireguard-go and wg-quick: make test, or as root: cargo test --features root-tests"
)]
fn apply_refuses_bad_input_and_changes_nothing() {
    let lab = Lab::new(0);
    let server = Server::new(&lab);
    server.ok(&["peer", "add", "alice"]);
    let conf = server.config_dir.join(format!("{}.conf", server.iface));
    let no_device = |lab: &Lab| {
        !lab.run(&lab.server, &["ip", "-o", "link"])
            .contains(&server.iface)
    };

    // The listen port is taken: the holder is named, nothing is written or brought up.
    let holder = lab.spawn(&lab.server, &["python3", "-c", "import socket,time; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('0.0.0.0', 51820)); print('bound', flush=True); time.sleep(600)"], "holder.log");
    lab::poll("the port holder binds", Duration::from_secs(10), || {
        std::fs::read_to_string(lab.dir().join("holder.log"))
            .ok()
            .filter(|t| t.contains("bound"))
    });
    let out = server.wgadm(&["apply"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("51820") && err.contains("python3"),
        "{err}"
    );
    assert!(!conf.exists() && no_device(&lab));
    lab.kill(holder);

    // A state that fails check.
    let good = std::fs::read_to_string(server.state.join("peers/alice.yml")).unwrap();
    std::fs::write(
        server.state.join("peers/alice.yml"),
        good.replace("192.168.100.2", "10.0.0.2"),
    )
    .unwrap();
    let out = server.wgadm(&["apply"]);
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("peers/alice.yml: address: 10.0.0.2 is outside the subnet"));
    assert!(!conf.exists() && no_device(&lab));
    std::fs::write(server.state.join("peers/alice.yml"), good).unwrap();

    // An interface name the kernel would refuse.
    let yml = std::fs::read_to_string(server.state.join("server.yml")).unwrap();
    std::fs::write(
        server.state.join("server.yml"),
        yml.replace(&server.iface, "much-too-long-name"),
    )
    .unwrap();
    let out = server.wgadm(&["apply"]);
    // A hand-edited server.yml is refused by the YAML schema (crates/core/src/yaml.rs), which
    // words the bound as "1-15 letters"; `init --interface` says "1 to 15 characters".
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("server.yml") && stderr.contains("1-15 letters"),
        "{stderr}"
    );
    std::fs::write(server.state.join("server.yml"), yml).unwrap();

    // wg missing from PATH.
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.server,
            "env",
            "PATH=/nonexistent",
            env!("CARGO_BIN_EXE_wgadm"),
            "apply",
        ])
        .env("WGADM_STATE", &server.state)
        .env("WGADM_CONFIG_DIR", &server.config_dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("wireguard-tools"),
        "{err}"
    );
    assert!(!conf.exists() && no_device(&lab));

    // And with all of that mended, it works.
    server.ok(&["apply"]);
    assert!(conf.exists() && !no_device(&lab));
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root, wireguard-go, wg-quick and nft: make test, or as root: cargo test --features root-tests"
)]
fn apply_enforces_access_on_the_server_whatever_the_client_routes() {
    let lab = Lab::new(2);
    let server = Server::new(&lab);
    server.ok(&["peer", "add", "alice"]);
    server.ok(&["peer", "add", "bob", "--access", "192.168.1.10/32"]);
    let dry = server.ok(&["apply", "--dry-run"]);
    assert!(
        dry.contains("would: load nftables table inet wgadm") && dry.contains("table inet wgadm {"),
        "{dry}"
    );
    assert!(
        lab.try_run(&lab.server, &["nft", "list", "table", "inet", "wgadm"])
            .status
            .code()
            != Some(0),
        "dry-run loaded the firewall"
    );
    server.ok(&["apply"]);
    assert_eq!(
        lab.run(&lab.server, &["sysctl", "-n", "net.ipv4.ip_forward"])
            .trim(),
        "1"
    );
    assert!(server
        .ok(&["firewall", "show"])
        .contains("table inet wgadm {"));

    // Both clients route everything through the tunnel: only the server's rules stand between
    // them and the DMZ.
    for (i, peer) in ["alice", "bob"].iter().enumerate() {
        let text = server.ok(&["peer", "config", peer]);
        let full: String = text
            .lines()
            .map(|l| {
                if l.starts_with("AllowedIPs") {
                    "AllowedIPs = 0.0.0.0/0\n".to_owned()
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        let conf = lab.write_conf(&lab.wg_name(&format!("c{i}")), &full);
        lab.wg_quick_up(&lab.clients[i], &conf);
    }
    let (alice, bob) = (&lab.clients[0], &lab.clients[1]);
    lab.wait_for_ping(alice, MGMT_HOSTS[0], Duration::from_secs(5));
    assert!(lab.ping_once(alice, MGMT_HOSTS[1], Duration::from_secs(2)));
    for _ in 0..3 {
        assert!(
            !lab.ping_once(alice, lab::DMZ_HOST, Duration::from_millis(500)),
            "alice reached the DMZ"
        );
    }
    assert!(
        server.status_of("alice")["denied_packets"]
            .as_u64()
            .unwrap()
            >= 3
    );

    lab.wait_for_ping(bob, MGMT_HOSTS[0], Duration::from_secs(5));
    assert!(
        !lab.ping_once(bob, MGMT_HOSTS[1], Duration::from_secs(1)),
        "bob reached .11 outside his access list"
    );
    assert!(
        !lab.ping_once(bob, VPN_SERVER, Duration::from_secs(1)),
        "bob reached the server outside his access list"
    );

    // Widening bob's access list opens .11 at once; alice keeps her path meanwhile.
    server.ok(&[
        "peer",
        "set",
        "bob",
        "--access",
        "192.168.1.0/24",
        "--apply",
    ]);
    assert!(lab.ping_once(bob, MGMT_HOSTS[1], Duration::from_secs(2)));
    assert!(lab.ping_once(alice, MGMT_HOSTS[0], Duration::from_secs(2)));
}
