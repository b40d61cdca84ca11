//! The firewall fails closed (issue 10, item 7): real nft, real packets through wireguard-go in
//! the namespace lab. A client routes everything through the tunnel and pings a management
//! host and the DMZ host every 10 ms; counters in THOSE namespaces count what arrives:
//!
//! - at the DMZ host: every echo request (nothing may ever arrive);
//! - at the management host: echo requests whose source is a VPN address. With wgadm's table
//!   in force they arrive masqueraded (from the server's 192.168.1.1), so a VPN source means a
//!   packet was forwarded without the table.
//!
//! Run as root: `cargo test -p wgadm --features root-tests --test failclosed_lab -- --nocapture`.

mod lab;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use lab::server::Server;
use lab::{poll, Lab, DMZ_HOST, MGMT_HOSTS};

const VPN_SUBNET: &str = "192.168.100.0/24";

/// Counters in the management and DMZ namespaces (prerouting, before anything else).
struct Arrivals<'a> {
    lab: &'a Lab,
}

impl<'a> Arrivals<'a> {
    fn install(lab: &'a Lab) -> Self {
        for (ns, rule) in [
            (
                &lab.mgmt,
                format!("ip saddr {VPN_SUBNET} counter name seen"),
            ),
            (
                &lab.dmz,
                "icmp type echo-request counter name seen".to_owned(),
            ),
        ] {
            let script = format!(
                "table inet arrivals {{\n counter seen {{}}\n chain pre {{\n  type filter hook prerouting priority -300; policy accept;\n  {rule}\n }}\n}}\n"
            );
            let file = lab.dir().join(format!("arrivals-{ns}.nft"));
            std::fs::write(&file, script).unwrap();
            lab.run(ns, &["nft", "-f", &file.display().to_string()]);
        }
        Arrivals { lab }
    }

    fn count(&self, ns: &str) -> u64 {
        let text = self
            .lab
            .run(ns, &["nft", "list", "counter", "inet", "arrivals", "seen"]);
        text.split_whitespace()
            .skip_while(|w| *w != "packets")
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no packet count in {text}"))
    }

    /// (unmasqueraded VPN packets at the management host, packets at the DMZ host)
    fn unfiltered(&self) -> (u64, u64) {
        (self.count(&self.lab.mgmt), self.count(&self.lab.dmz))
    }

    fn reset(&self) {
        for ns in [&self.lab.mgmt, &self.lab.dmz] {
            self.lab
                .run(ns, &["nft", "reset", "counter", "inet", "arrivals", "seen"]);
        }
    }
}

/// alice, routing everything through the tunnel, connected and reaching the management host.
fn full_tunnel_client(server: &Server) -> String {
    let lab = server.lab;
    let text = server.ok(&["peer", "config", "alice"]);
    let full: String = text
        .lines()
        .map(|l| match l.starts_with("AllowedIPs") {
            true => "AllowedIPs = 0.0.0.0/0\n".to_owned(),
            false => format!("{l}\n"),
        })
        .collect();
    let conf = lab.write_conf(&lab.wg_name("c0"), &full);
    lab.wg_quick_up(&lab.clients[0], &conf);
    lab.wait_for_ping(&lab.clients[0], MGMT_HOSTS[0], Duration::from_secs(20));
    server.public_key("alice")
}

/// A PATH whose `nft` refuses every `-f` load as a kernel without nft_nat would, and runs the
/// real nft for everything else (wgadm runs it with `WGADM_NFT=nft`: by default it calls
/// libnftables in-process, which a PATH cannot stand in for).
fn refusing_path(lab: &Lab) -> String {
    let dir = lab.dir().join("refusing");
    std::fs::create_dir_all(&dir).unwrap();
    let real = ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("nft installed");
    let script = dir.join("nft");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do [ \"$a\" = -f ] && {{ echo 'Error: Could not process rule: No such file or directory' >&2; exit 1; }}; done\nexec {real} \"$@\"\n"
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

fn iface_forwarding(server: &Server) -> String {
    server
        .lab
        .run(
            &server.lab.server,
            &[
                "sysctl",
                "-n",
                &format!("net.ipv4.conf.{}.forwarding", server.iface),
            ],
        )
        .trim()
        .to_owned()
}

/// Pings the management host and the DMZ host from alice every 10 ms until `during` returns,
/// plus `after` bytes more through the tunnel; returns the management loop's statistics.
fn with_pings(server: &Server, alice: &str, during: impl FnOnce(), after: u64) -> lab::PingStats {
    let lab = server.lab;
    let mgmt = lab.ping_loop(&lab.clients[0], MGMT_HOSTS[0]);
    let dmz = lab.ping_loop(&lab.clients[0], DMZ_HOST);
    lab.wait_for_traffic(&server.iface, alice, 128 * 20, Duration::from_secs(20));
    during();
    lab.wait_for_traffic(&server.iface, alice, after, Duration::from_secs(30));
    drop(dmz);
    mgmt.stop()
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root, wireguard-go, wg-quick and nft: make test, or as root: cargo test --features root-tests"
)]
fn a_refused_ruleset_leaves_nothing_forwarded() {
    let lab = Lab::new(1);
    let server = Server::new(&lab);
    server.ok(&["peer", "add", "alice"]);
    let path = refusing_path(&lab);

    // A first apply on a fresh server whose nft refuses: no interface, forwarding untouched.
    let before = lab.run(&lab.server, &["sysctl", "-n", "net.ipv4.ip_forward"]);
    let out = server
        .command(&["apply"])
        .env("PATH", &path)
        .env("WGADM_NFT", "nft")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "apply succeeded with a refused ruleset"
    );
    assert!(err.contains("nft refused the ruleset"), "{err}");
    assert!(
        !lab.try_run(&lab.server, &["ip", "link", "show", &server.iface])
            .status
            .success(),
        "the interface came up without its firewall"
    );
    assert_eq!(
        lab.run(&lab.server, &["sysctl", "-n", "net.ipv4.ip_forward"]),
        before
    );

    // Up with the real nft; then the table goes (a flushed ruleset, a restarted nftables) and
    // the next apply meets an nft that refuses.
    server.ok(&["apply"]);
    let alice = full_tunnel_client(&server);
    let arrivals = Arrivals::install(&lab);
    lab.run(&lab.server, &["nft", "delete", "table", "inet", "wgadm"]);
    let out = server
        .command(&["apply"])
        .env("PATH", &path)
        .env("WGADM_NFT", "nft")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "apply succeeded with a refused ruleset"
    );
    assert!(
        err.contains("nft refused the ruleset") && err.contains("nft_nat"),
        "{err}"
    );
    assert_eq!(iface_forwarding(&server), "0");
    arrivals.reset();
    let stats = with_pings(&server, &alice, || {}, 128 * 100);
    let (mgmt, dmz) = arrivals.unfiltered();
    println!(
        "refused ruleset: {} pings sent toward the management host (and as many toward the \
         DMZ) at 10 ms: {mgmt} arrived unfiltered at the management host, {dmz} at the DMZ",
        stats.transmitted
    );
    assert!(stats.transmitted >= 50, "{stats:?}");
    assert_eq!((mgmt, dmz), (0, 0), "packets forwarded without the table");

    // The real nft again: the table is verified, then forwarding goes back on.
    let out = server.ok(&["apply"]);
    assert!(
        out.contains(&format!("switch on forwarding from {}", server.iface)),
        "{out}"
    );
    assert_eq!(iface_forwarding(&server), "1");
    lab.wait_for_ping(&lab.clients[0], MGMT_HOSTS[0], Duration::from_secs(10));
    assert!(!lab.ping_once(&lab.clients[0], DMZ_HOST, Duration::from_millis(500)));
    assert_eq!(arrivals.unfiltered(), (0, 0));
}

/// The daemon, started by the lab (killed by PID when the lab ends).
struct Daemon<'a> {
    lab: &'a Lab,
    log: PathBuf,
    snapshot: PathBuf,
}

impl<'a> Daemon<'a> {
    fn start(server: &'a Server, interval: &str) -> Self {
        let lab = server.lab;
        let snapshot = lab.dir().join("status.json");
        let (state, snap) = (
            server.state.display().to_string(),
            snapshot.display().to_string(),
        );
        lab.spawn(
            &lab.server,
            &[
                env!("CARGO_BIN_EXE_wgadm"),
                "--state",
                &state,
                "daemon",
                "--snapshot",
                &snap,
                "--interval",
                interval,
                "--metrics-listen",
                "off",
            ],
            "daemon.log",
        );
        Daemon {
            lab,
            log: lab.dir().join("daemon.log"),
            snapshot,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn lines(&self, event: &str) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains(&format!("event={event}")))
            .map(str::to_owned)
            .collect()
    }

    fn wait_lines(&self, event: &str, n: usize, timeout: Duration) -> Vec<String> {
        poll(&format!("{n} {event} lines"), timeout, || {
            let l = self.lines(event);
            (l.len() >= n).then_some(l)
        })
    }

    fn firewall(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(&self.snapshot).unwrap_or_default();
        serde_json::from_str::<serde_json::Value>(&text)
            .map(|v| v["firewall"].clone())
            .unwrap_or_default()
    }

    fn wait_in_force(&self, restored: u64) {
        poll(
            &format!("the snapshot with the firewall in force, restored {restored}"),
            Duration::from_secs(20),
            || {
                let f = self.firewall();
                (f["in_force"] == true && f["restored"].as_u64() >= Some(restored)).then_some(())
            },
        );
        let _ = self.lab;
    }
}

fn window_ms(line: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("window_ms="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no window_ms in {line}"))
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root, wireguard-go, wg-quick and nft: make test, or as root: cargo test --features root-tests"
)]
fn the_daemon_shuts_forwarding_at_once_when_the_table_goes_and_restores_it() {
    let lab = Lab::new(1);
    let server = Server::new(&lab);
    server.ok(&["peer", "add", "alice"]);
    server.ok(&["apply"]);
    let alice = full_tunnel_client(&server);
    let arrivals = Arrivals::install(&lab);
    // A long interval: the restore has to come from netfilter's notifications.
    let daemon = Daemon::start(&server, "30");
    daemon.wait_in_force(0);
    let f = daemon.firewall();
    assert_eq!(
        (&f["guarded"], &f["notified"]),
        (&serde_json::json!(true), &serde_json::json!(true)),
        "{f}"
    );

    let cases: [(&str, Vec<&str>); 3] = [
        ("nft flush ruleset", vec!["nft", "flush", "ruleset"]),
        (
            "nft delete table inet wgadm",
            vec!["nft", "delete", "table", "inet", "wgadm"],
        ),
        // What `systemctl restart nftables` runs: /etc/nftables.conf, which starts with
        // `flush ruleset` and then loads its own tables, in one transaction.
        ("an nftables.conf reload", vec![]),
    ];
    let conf = lab.dir().join("nftables.conf");
    std::fs::write(
        &conf,
        "flush ruleset\ntable inet filter {\n chain input { type filter hook input priority filter; policy accept; }\n}\n",
    )
    .unwrap();
    let conf = conf.display().to_string();
    for (n, (what, cmd)) in cases.iter().enumerate() {
        arrivals.reset();
        let mut took = Duration::ZERO;
        let stats = with_pings(
            &server,
            &alice,
            || {
                let start = Instant::now();
                match cmd.is_empty() {
                    true => lab.run(&lab.server, &["nft", "-f", &conf]),
                    false => lab.run(&lab.server, cmd),
                };
                daemon.wait_lines("firewall_restored", n + 1, Duration::from_secs(10));
                took = start.elapsed();
            },
            128 * 100,
        );
        let line = daemon.lines("firewall_restored")[n].clone();
        let (mgmt, dmz) = arrivals.unfiltered();
        println!(
            "{what}: restored after {} ms (daemon: {} ms without the table); ping every 10 ms \
             to the management host: {} lost of {} (sequence numbers {:?}); arrived unfiltered: \
             {mgmt} at the management host, {dmz} at the DMZ",
            took.as_millis(),
            window_ms(&line),
            stats.lost.len(),
            stats.transmitted,
            stats.lost
        );
        assert_eq!(
            (mgmt, dmz),
            (0, 0),
            "{what}: packets forwarded without the table"
        );
        let missing = daemon.lines("firewall_missing");
        assert!(
            missing.len() > n && missing[n].contains("shut_by=\"netfilter notification\""),
            "{missing:?}"
        );
        assert!(missing[n].contains("level=warn"), "{}", missing[n]);
        daemon.wait_in_force(n as u64 + 1);
        assert_eq!(iface_forwarding(&server), "1");
        assert!(!lab.ping_once(&lab.clients[0], DMZ_HOST, Duration::from_millis(300)));
    }

    // A rule added by hand under wgadm's comment: noticed and replaced.
    lab.run(
        &lab.server,
        &[
            "nft",
            "insert",
            "rule",
            "inet",
            "wgadm",
            "forward",
            "iifname",
            &server.iface,
            "accept",
        ],
    );
    daemon.wait_lines("firewall_changed", 1, Duration::from_secs(10));
    daemon.wait_in_force(4);
    let rules = lab.run(
        &lab.server,
        &["nft", "list", "chain", "inet", "wgadm", "forward"],
    );
    assert!(
        !rules.contains(&format!("iifname \"{}\" accept", server.iface)),
        "{rules}"
    );

    // wgadm's own changes are not taken for tampering, and a later restore loads the state
    // as it is now (bob included). The guard handles notifications in order: once the next
    // restore is logged, the apply's reload has been judged too.
    server.ok(&["peer", "add", "bob", "--apply"]);
    lab.wait_for_ping(&lab.clients[0], MGMT_HOSTS[0], Duration::from_secs(10));
    lab.run(&lab.server, &["nft", "delete", "table", "inet", "wgadm"]);
    daemon.wait_lines("firewall_restored", 5, Duration::from_secs(10));
    daemon.wait_in_force(5);
    let bob = server.json(&["peer", "show", "bob"])["address"]
        .as_str()
        .unwrap()
        .to_owned();
    let set = lab.run(
        &lab.server,
        &["nft", "list", "set", "inet", "wgadm", "deny_drops"],
    );
    assert!(set.contains(&bob), "{set}");
    assert_eq!(
        daemon.lines("firewall_changed").len(),
        1,
        "{}",
        daemon.log()
    );
    assert_eq!(
        daemon.lines("firewall_missing").len(),
        4,
        "{}",
        daemon.log()
    );
    assert_eq!(arrivals.unfiltered(), (0, 0));
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root, wireguard-go, wg-quick and nft: make test, or as root: cargo test --features root-tests"
)]
fn new_connections_toward_peers_are_dropped_unless_inbound_allows_them() {
    let lab = Lab::new(1);
    let server = Server::new(&lab);
    server.ok(&["peer", "add", "alice"]);
    // Routed, not masqueraded, so the management host has a way back and can reach alice.
    let yml = server.state.join("server.yml");
    let text = std::fs::read_to_string(&yml).unwrap();
    std::fs::write(&yml, text.replace("nat: masquerade", "nat: none")).unwrap();
    server.ok(&["apply"]);
    lab.run(
        &lab.mgmt,
        &["ip", "route", "replace", VPN_SUBNET, "via", "192.168.1.1"],
    );
    full_tunnel_client_routed(&server);
    let alice_addr = server.json(&["peer", "show", "alice"])["address"]
        .as_str()
        .unwrap()
        .to_owned();
    let alice: Ipv4Addr = alice_addr.parse().unwrap();
    lab.tcp_listen(&lab.clients[0], alice, 8080);
    // Alice's own flows come back (her pings were answered); the management host cannot
    // open one to her.
    assert!(
        !lab.tcp_connect(&lab.mgmt, alice, 8080, Duration::from_secs(1)),
        "a new connection from the management network reached a peer by default"
    );
    assert!(!lab.ping_once(&lab.mgmt, alice, Duration::from_millis(500)));

    std::fs::write(
        &yml,
        format!("{}inbound: allow\n", std::fs::read_to_string(&yml).unwrap()),
    )
    .unwrap();
    server.ok(&["apply"]);
    assert!(
        lab.tcp_connect(&lab.mgmt, alice, 8080, Duration::from_secs(3)),
        "inbound: allow did not let the management host reach the peer"
    );
    assert!(lab.ping_once(&lab.mgmt, alice, Duration::from_secs(2)));
}

/// alice with the config as wgadm makes it; waits until she reaches the management host.
fn full_tunnel_client_routed(server: &Server) {
    let lab = server.lab;
    server.connect(0, "alice");
    lab.wait_for_ping(&lab.clients[0], MGMT_HOSTS[0], Duration::from_secs(20));
}
