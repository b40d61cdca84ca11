//! Taking over a running WireGuard server: wg-quick brings the interface up from a hand-written
//! config, clients connect and ping; `wgadm import` and the first `wgadm apply` must change no
//! peer and lose no packet. Then the server key is rotated and the reconnect measured.
//!
//! Run as root: `cargo test -p wgadm --features root-tests --test import_lab -- --nocapture`.

mod lab;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lab::server::Server;
use lab::{Lab, SERVER_WAN};

/// Inside the default access list (192.168.0.0/16): wgadm's firewall lets a peer reach only
/// its access list, the server's own VPN address included.
const VPN_SERVER: Ipv4Addr = Ipv4Addr::new(192, 168, 100, 1);

fn genkey() -> String {
    let out = Command::new("wg").arg("genkey").output().unwrap();
    assert!(out.status.success(), "wg genkey");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn pubkey(private: &str) -> String {
    use std::io::Write;
    let mut wg = Command::new("wg")
        .arg("pubkey")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wg.stdin
        .take()
        .unwrap()
        .write_all(private.as_bytes())
        .unwrap();
    String::from_utf8(wg.wait_with_output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_owned()
}

/// What the device holds that matters to clients, from `wg show IFACE dump`: the interface's
/// public key and port, and per peer its key, PSK (as a hash: no secret in a failure message),
/// endpoint, AllowedIPs and keepalive; not counters or handshakes.
fn device_config(lab: &Lab, iface: &str) -> Vec<String> {
    use std::hash::{Hash, Hasher};
    let dump = lab.run(&lab.server, &["wg", "show", iface, "dump"]);
    let mut lines: Vec<String> = dump
        .lines()
        .enumerate()
        .map(|(i, l)| {
            let f: Vec<&str> = l.split('\t').collect();
            if i == 0 {
                format!("interface {} {} {}", f[1], f[2], f[3])
            } else {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                f[1].hash(&mut h);
                format!(
                    "peer {} psk#{:x} {} {} {}",
                    f[0],
                    h.finish(),
                    f[2],
                    f[3],
                    f[7]
                )
            }
        })
        .collect();
    lines.sort();
    lines
}

struct Old<'a> {
    server: Server<'a>,
    /// Client i's config path and public key.
    clients: Vec<(PathBuf, String)>,
    client_dir: PathBuf,
    psk: String,
}

/// The old server: a hand-written config brought up by wg-quick, two clients connected.
fn old_server(lab: &Lab) -> Old<'_> {
    let server = Server {
        lab,
        state: lab.dir().join("state"),
        config_dir: lab.dir().join("wireguard"),
        iface: lab.wg_name("s"),
    };
    std::fs::create_dir_all(&server.config_dir).unwrap();
    let server_private = genkey();
    let server_public = pubkey(&server_private);
    let psk = {
        let out = Command::new("wg").arg("genpsk").output().unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let mut conf = format!(
        "[Interface]\nPrivateKey = {server_private}\nAddress = {VPN_SERVER}/24\nListenPort = 51820\n"
    );
    let client_dir = lab.dir().join("old-clients");
    std::fs::create_dir_all(&client_dir).unwrap();
    let mut clients = Vec::new();
    for (i, name) in ["alice", "bob"].iter().enumerate() {
        let private = genkey();
        let public = pubkey(&private);
        let address = format!("192.168.100.{}", i + 2);
        let psk_line = if i == 0 {
            format!("PresharedKey = {psk}\n")
        } else {
            String::new()
        };
        conf.push_str(&format!(
            "\n# {name}\n[Peer]\nPublicKey = {public}\n{psk_line}AllowedIPs = {address}/32\n"
        ));
        let client = format!(
            "[Interface]\nPrivateKey = {private}\nAddress = {address}/24\n\n[Peer]\nPublicKey = {server_public}\n{psk_line}\
             Endpoint = {SERVER_WAN}:51820\nAllowedIPs = 192.168.100.0/24\nPersistentKeepalive = 25\n"
        );
        let path = lab.write_conf(&lab.wg_name(&format!("c{i}")), &client);
        std::fs::write(client_dir.join(format!("{name}.conf")), &client).unwrap();
        clients.push((path, public));
    }
    let server_conf = server.config_dir.join(format!("{}.conf", server.iface));
    std::fs::write(&server_conf, conf).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&server_conf, std::fs::Permissions::from_mode(0o600)).unwrap();
    lab.wg_quick_up(&lab.server, &server_conf);
    for (i, (path, _)) in clients.iter().enumerate() {
        lab.wg_quick_up(&lab.clients[i], path);
        lab.wait_for_ping(&lab.clients[i], VPN_SERVER, Duration::from_secs(10));
    }
    Old {
        server,
        clients,
        client_dir,
        psk,
    }
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root, wireguard-go and wg-quick: make test, or as root: cargo test --features root-tests"
)]
fn import_and_first_apply_take_over_a_running_server_without_losing_a_packet() {
    let lab = &Lab::new(2);
    let old = old_server(lab);
    let server = &old.server;
    let before = device_config(lab, &server.iface);

    let loops: Vec<_> = (0..2)
        .map(|i| lab.ping_loop(&lab.clients[i], VPN_SERVER))
        .collect();
    for (_, public) in &old.clients {
        lab.wait_for_traffic(&server.iface, public, 512, Duration::from_secs(10));
    }
    let conf = server.config_dir.join(format!("{}.conf", server.iface));
    let out = server.ok(&[
        "import",
        "wg-quick",
        conf.to_str().unwrap(),
        "--clients",
        old.client_dir.to_str().unwrap(),
        "--endpoint",
        &SERVER_WAN.to_string(),
    ]);
    assert!(out.contains("imported 2 peers"), "{out}");
    let applied = server.json(&["apply"]);
    for field in ["interface", "added", "updated", "removed"] {
        assert_eq!(
            applied[field],
            serde_json::json!([]),
            "the first apply changed the device: {applied}"
        );
    }
    assert_eq!(applied["brought_up"], false, "{applied}");
    assert_eq!(applied["firewall_changed"], true, "{applied}");
    // The tunnel answers through wgadm's firewall now (the loops' counters below only show
    // that packets arrived, not that they were answered).
    for i in 0..2 {
        assert!(lab.ping_once(&lab.clients[i], VPN_SERVER, Duration::from_secs(2)));
    }
    // Let both loops meet the new firewall and config before counting.
    for (_, public) in &old.clients {
        lab.wait_for_traffic(&server.iface, public, 512, Duration::from_secs(10));
    }
    let stats: Vec<_> = loops.into_iter().map(|l| l.stop()).collect();
    for (i, s) in stats.iter().enumerate() {
        println!(
            "take-over: client {i}: {} sent, {} answered, lost {:?}",
            s.transmitted, s.received, s.lost
        );
        assert!(s.lost.is_empty(), "client {i} lost packets: {:?}", s.lost);
        assert!(s.received > 0);
    }
    assert_eq!(before, device_config(lab, &server.iface));
    // The device's PSK is the imported one, byte for byte.
    let dump = lab.run(
        &lab.server,
        &["wg", "show", &server.iface, "preshared-keys"],
    );
    assert!(dump.contains(&old.psk));
    assert!(std::fs::read_to_string(&conf)
        .unwrap()
        .starts_with("# Managed by wgadm"));
    let again = server.json(&["apply"]);
    assert_eq!(again["changed"], false, "{again}");
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root, wireguard-go and wg-quick: make test, or as root: cargo test --features root-tests"
)]
fn server_key_rotation_cuts_old_configs_and_clients_reconnect_with_the_new_one() {
    let lab = &Lab::new(2);
    let old = old_server(lab);
    let server = &old.server;
    let conf = server.config_dir.join(format!("{}.conf", server.iface));
    server.ok(&[
        "import",
        "wg-quick",
        conf.to_str().unwrap(),
        "--clients",
        old.client_dir.to_str().unwrap(),
        "--endpoint",
        &SERVER_WAN.to_string(),
    ]);
    server.ok(&["apply"]);
    let alice_loop = lab.ping_loop(&lab.clients[0], VPN_SERVER);
    lab.wait_for_traffic(
        &server.iface,
        &old.clients[0].1,
        512,
        Duration::from_secs(10),
    );

    let rotated = Instant::now();
    let out = server.json(&["server", "rotate-key", "--apply"]);
    assert_eq!(
        out["apply"]["interface"],
        serde_json::json!(["private_key"]),
        "{out}"
    );
    let reissued = lab.dir().join("reissued");
    server.ok(&[
        "peer",
        "config",
        "--all",
        "--out-dir",
        reissued.to_str().unwrap(),
    ]);

    // bob keeps his old config: a fresh session with it cannot be made any more.
    let (bob_conf, _) = &old.clients[1];
    lab.wg_quick_down(&lab.clients[1], bob_conf);
    lab.wg_quick_up(&lab.clients[1], bob_conf);
    assert!(
        !lab.ping_once(&lab.clients[1], VPN_SERVER, Duration::from_secs(3)),
        "a client with the old server key still got through"
    );

    // alice gets hers: down with the old, up with the new, and time until a ping answers.
    let (alice_conf, _) = &old.clients[0];
    lab.wg_quick_down(&lab.clients[0], alice_conf);
    std::fs::copy(reissued.join("alice.conf"), alice_conf).unwrap();
    let start = Instant::now();
    lab.wg_quick_up(&lab.clients[0], alice_conf);
    let up = start.elapsed();
    let reconnect = lab.wait_for_ping(&lab.clients[0], VPN_SERVER, Duration::from_secs(30));
    let outage = rotated.elapsed();
    lab.wait_for_traffic(
        &server.iface,
        &old.clients[0].1,
        512,
        Duration::from_secs(10),
    );
    let stats = alice_loop.stop();
    println!(
        "rotation: alice's wg-quick up with the reissued config took {:.0} ms, then {:.0} ms to the \
         first answered ping; from `server rotate-key --apply` to that ping (reissue, bob's check \
         and her restart included): {:.0} ms; her 10 ms ping loop lost {} of {} packets",
        up.as_secs_f64() * 1000.0,
        reconnect.as_secs_f64() * 1000.0,
        outage.as_secs_f64() * 1000.0,
        stats.lost.len(),
        stats.transmitted
    );
    assert!(
        !stats.lost.is_empty(),
        "a rotation must cut the old session"
    );
    // bob, given his reissued config, is back too.
    lab.wg_quick_down(&lab.clients[1], bob_conf);
    std::fs::copy(reissued.join("bob.conf"), bob_conf).unwrap();
    lab.wg_quick_up(&lab.clients[1], bob_conf);
    let bob = lab.wait_for_ping(&lab.clients[1], VPN_SERVER, Duration::from_secs(30));
    println!(
        "rotation: bob reconnected {:.0} ms after wg-quick up with his reissued config",
        bob.as_secs_f64() * 1000.0
    );
}
