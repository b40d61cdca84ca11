//! The wgadm binary, command by command, including every bad input the contract names: each
//! must fail with a message that names the problem and leave the state byte-for-byte as it was.

mod common;

use std::io::Write;
use std::process::Stdio;

use common::{tool, Env};

fn pubkey() -> String {
    // A fresh key pair per call; the private key never leaves this function.
    let private = wgadm::secrets::generate_private().unwrap();
    private.public_key().to_string()
}

/// Runs `args`, expects failure mentioning `needles`, and checks nothing in the state changed.
#[track_caller]
fn refused(env: &Env, args: &[&str], needles: &[&str]) -> String {
    let before = env.snapshot();
    let err = env.run(args).fails_with(needles);
    assert_eq!(
        before,
        env.snapshot(),
        "the state changed after a refused `{}`",
        args.join(" ")
    );
    err
}

#[test]
fn init_lays_out_the_state_directory() {
    let env = Env::new();
    env.init(&["--dns", "192.168.1.1"]);
    let server = env.read("server.yml");
    for line in [
        "interface: wg0",
        "subnet: 192.168.100.0/24",
        "address: 192.168.100.1",
        "listen_port: 51820",
        "endpoint: vpn.example.com:51820",
        "- 192.168.0.0/16",
        "- 172.16.10.0/24",
        "- 192.168.1.1",
    ] {
        assert!(
            server.contains(line),
            "server.yml lacks {line:?}:\n{server}"
        );
    }
    assert_eq!(env.mode("server.key"), 0o600);
    assert!(env.path("peers").is_dir());
    // The public key in server.yml belongs to server.key, as `wg pubkey` computes it.
    let mut wg = tool("wg")
        .arg("pubkey")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wg.stdin
        .take()
        .unwrap()
        .write_all(env.read("server.key").as_bytes())
        .unwrap();
    let public = String::from_utf8(wg.wait_with_output().unwrap().stdout).unwrap();
    assert!(server.contains(&format!("public_key: {}", public.trim())));
}

#[test]
fn init_refuses_to_overwrite_without_force_and_keeps_peers_with_it() {
    let env = Env::new();
    env.init(&[]);
    env.run(&["peer", "add", "alice"]).ok();
    refused(
        &env,
        &["init", "--endpoint", "other.example.com"],
        &["server.yml already exists", "--force"],
    );
    let old_key = env.read("server.key");
    env.run(&["init", "--endpoint", "other.example.com", "--force"])
        .ok();
    assert_ne!(old_key, env.read("server.key"));
    assert!(env.path("peers/alice.yml").exists());
}

#[test]
fn init_validates_its_arguments() {
    let env = Env::new();
    refused(
        &env,
        &["init", "--endpoint", "a b"],
        &["--endpoint", "white space"],
    );
    refused(
        &env,
        &["init", "--endpoint", "x", "--access", "172.16.0.0/12"],
        &["overlaps the denied range 172.16.10.0/24"],
    );
    refused(
        &env,
        &["init", "--endpoint", "x", "--address", "10.0.0.1"],
        &["server.yml: address: 10.0.0.1 is not a host address"],
    );
    refused(
        &env,
        &[
            "init",
            "--endpoint",
            "x",
            "--interface",
            "much-too-long-name",
        ],
        &["1 to 15 characters"],
    );
    assert!(!env.state.exists(), "a failed init left a directory behind");
}

#[test]
fn peers_get_the_lowest_free_address_and_removed_ones_come_back() {
    let env = Env::new();
    env.init(&[]);
    for name in ["a", "b", "c"] {
        env.run(&["peer", "add", name]).ok();
    }
    assert!(env.read("peers/b.yml").contains("address: 192.168.100.3"));
    env.run(&["peer", "remove", "b"]).ok();
    assert!(!env.path("peers/b.yml").exists() && !env.path("peers/b.key").exists());
    env.run(&["peer", "add", "d"]).ok();
    assert!(env.read("peers/d.yml").contains("address: 192.168.100.3"));
    env.run(&["peer", "add", "e", "--address", "192.168.100.200"])
        .ok();
    env.run(&["peer", "add", "f"]).ok();
    assert!(env.read("peers/f.yml").contains("address: 192.168.100.5"));
    assert_eq!(env.mode("peers/a.key"), 0o600);
}

#[test]
fn peer_add_rejects_bad_input_and_changes_nothing() {
    let env = Env::new();
    env.init(&[]);
    let alice_key = pubkey();
    env.run(&["peer", "add", "alice", "--public-key", &alice_key])
        .ok();
    let server_key = env
        .read("server.yml")
        .lines()
        .find_map(|l| l.strip_prefix("public_key: ").map(str::to_owned))
        .unwrap();

    refused(
        &env,
        &["peer", "add", "alice"],
        &["peer alice already exists"],
    );
    refused(
        &env,
        &["peer", "add", "bob", "--public-key", &alice_key],
        &["the state has a problem:\n  peers/bob.yml: public_key: is already used by peers/alice.yml"],
    );
    refused(
        &env,
        &["peer", "add", "bob", "--public-key", &server_key],
        &["the server's own public key"],
    );
    refused(
        &env,
        &["peer", "add", "bob", "--address", "192.168.100.2"],
        &[
            "peers/bob.yml: address: 192.168.100.2 is already used by peers/alice.yml",
            "overlap",
        ],
    );
    refused(
        &env,
        &["peer", "add", "bob", "--address", "10.1.2.3"],
        &["10.1.2.3 is outside the subnet 192.168.100.0/24"],
    );
    refused(
        &env,
        &["peer", "add", "bob", "--address", "192.168.100.255"],
        &["network or broadcast"],
    );
    refused(
        &env,
        &["peer", "add", "bob", "--address", "192.168.100.1"],
        &["the server's own address"],
    );
    refused(
        &env,
        &["peer", "add", "bob", "--access", "172.16.10.0/28"],
        &["peers/bob.yml: access: 172.16.10.0/28 overlaps the denied range 172.16.10.0/24"],
    );
    refused(
        &env,
        &["peer", "add", "bob", "--public-key", "not-a-key"],
        &["not valid base64"],
    );
    refused(
        &env,
        &["peer", "add", "bob", "--public-key", "AAAA"],
        &["3 bytes, a WireGuard key has 32"],
    );
    refused(
        &env,
        &["peer", "add", "../escape"],
        &["may only contain letters"],
    );
    refused(
        &env,
        &["peer", "add", ".hidden"],
        &["may not start with '.'"],
    );
    refused(
        &env,
        &["peer", "add", &"x".repeat(65)],
        &["1 to 64 characters"],
    );
    refused(
        &env,
        &["peer", "add", "bob", "--expires", "2026-02-30"],
        &["not a valid YYYY-MM-DD date"],
    );
    refused(
        &env,
        &[
            "peer",
            "add",
            "bob",
            "--config-out",
            "/nonexistent/dir/bob.conf",
        ],
        &["/nonexistent/dir/bob.conf"],
    );
    assert!(!env.tmp.path().join("escape.yml").exists());
}

#[test]
fn a_full_pool_is_a_clear_error() {
    let env = Env::new();
    env.init(&["--subnet", "10.99.0.0/29"]);
    for i in 0..5 {
        env.run(&["peer", "add", &format!("p{i}")]).ok();
    }
    refused(
        &env,
        &["peer", "add", "one-too-many"],
        &[
            "no free address in 10.99.0.0/29",
            "all 5 peer addresses are taken",
        ],
    );
}

#[test]
fn broken_yaml_is_reported_with_its_file_and_changes_nothing() {
    let env = Env::new();
    env.init(&[]);
    env.run(&["peer", "add", "alice"]).ok();
    std::fs::write(env.path("peers/bad.yml"), "address: [oops\n").unwrap();
    let extra = env.read("peers/alice.yml") + "colour: blue\n";
    std::fs::write(env.path("peers/alice.yml"), extra).unwrap();
    // check names both files at once.
    let err = refused(
        &env,
        &["check"],
        &["peers/bad.yml", "peers/alice.yml", "unknown field `colour`"],
    );
    assert!(err.contains("2 problems"), "{err}");
    refused(&env, &["peer", "add", "bob"], &["peers/bad.yml"]);
    refused(&env, &["render"], &["peers/alice.yml"]);
}

#[test]
fn check_reports_every_problem_and_stray_or_loose_key_files() {
    let env = Env::new();
    env.init(&[]);
    env.run(&["peer", "add", "alice"]).ok();
    env.run(&["peer", "add", "bob"]).ok();
    env.run(&["check"]).ok();
    // Make two peers collide and loosen a key file, by hand.
    let bob = env
        .read("peers/bob.yml")
        .replace("192.168.100.3", "192.168.100.2");
    std::fs::write(env.path("peers/bob.yml"), bob).unwrap();
    std::fs::write(env.path("peers/ghost.key"), "x").unwrap();
    std::fs::set_permissions(
        env.path("peers/alice.key"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    // The clash is told to both peers, each naming the other.
    let err = env.run(&["check"]).fails_with(&[
        "peers/bob.yml: address: 192.168.100.2 is already used by peers/alice.yml",
        "peers/alice.yml: address: 192.168.100.2 is already used by peers/bob.yml",
        "peers/ghost.key: belongs to no peer",
        "peers/alice.key: has mode 644",
    ]);
    assert!(err.contains("4 problems"), "{err}");
    let json: serde_json::Value =
        serde_json::from_str(&env.run(&["--json", "check"]).stdout).unwrap();
    assert_eq!(json["ok"], false);
    assert_eq!(json["problems"].as_array().unwrap().len(), 4);
}

#[test]
fn check_with_keys_finds_a_key_that_does_not_match() {
    let env = Env::new();
    env.init(&[]);
    env.run(&["peer", "add", "alice"]).ok();
    env.run(&["peer", "add", "bob"]).ok();
    let bob_key = env.read("peers/bob.key");
    std::fs::write(env.path("peers/alice.key"), bob_key).unwrap();
    env.run(&["check"]).ok();
    env.run(&["check", "--keys"])
        .fails_with(&["peers/alice.key: does not belong to the public key"]);
}

#[test]
fn list_and_show_in_text_and_json() {
    let env = Env::new();
    env.init(&[]);
    env.run(&["peer", "add", "alice", "--preshared-key"]).ok();
    env.run(&[
        "peer",
        "add",
        "bob",
        "--public-key",
        &pubkey(),
        "--access",
        "192.168.1.10/32",
        "--expires",
        "2099-01-01",
    ])
    .ok();
    let list: serde_json::Value =
        serde_json::from_str(&env.run(&["--json", "peer", "list"]).ok()).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["name"], "alice");
    assert_eq!(list[0]["address"], "192.168.100.2");
    assert_eq!(list[0]["enabled"], true);
    assert_eq!(list[0]["private_key_here"], true);
    assert_eq!(list[0]["preshared_key"], true);
    assert_eq!(list[1]["access"][0], "192.168.1.10/32");
    assert_eq!(list[1]["expires"], "2099-01-01");
    assert_eq!(list[1]["private_key_here"], false);
    assert!(list[0]["public_key"].as_str().unwrap().len() == 44);
    let table = env.run(&["peer", "list"]).ok();
    assert!(table.starts_with("NAME "), "{table}");
    assert!(table.contains("bob") && table.contains("2099-01-01"));
    let show = env.run(&["peer", "show", "bob"]).ok();
    assert!(
        show.contains("kept by its owner") && show.contains("192.168.1.10/32"),
        "{show}"
    );
    env.run(&["peer", "show", "nobody"])
        .fails_with(&["there is no peer nobody"]);
}

#[test]
fn no_output_ever_contains_a_private_or_preshared_key() {
    let env = Env::new();
    env.init(&[]);
    env.run(&["peer", "add", "alice", "--preshared-key"]).ok();
    let secrets: Vec<String> = ["server.key", "peers/alice.key", "peers/alice.psk"]
        .iter()
        .map(|f| env.read(f).trim().to_owned())
        .collect();
    for args in [
        vec!["peer", "list"],
        vec!["--json", "peer", "list"],
        vec!["peer", "show", "alice"],
        vec!["--json", "peer", "show", "alice"],
        vec!["check"],
        vec!["--json", "check"],
        vec!["peer", "disable", "alice"],
        vec!["peer", "enable", "alice"],
    ] {
        let run = env.run(&args);
        for s in &secrets {
            assert!(
                !run.stdout.contains(s) && !run.stderr.contains(s),
                "`{}` printed a secret",
                args.join(" ")
            );
        }
    }
}

#[test]
fn client_configs_are_split_tunnels_with_the_right_keys() {
    let env = Env::new();
    env.init(&["--dns", "192.168.1.1"]);
    env.run(&[
        "peer",
        "add",
        "alice",
        "--preshared-key",
        "--access",
        "192.168.1.0/24,192.168.2.0/24",
        "--keepalive",
        "15",
    ])
    .ok();
    let conf = env.run(&["peer", "config", "alice"]).ok();
    let private = env.read("peers/alice.key");
    let psk = env.read("peers/alice.psk");
    let server_pub = env
        .read("server.yml")
        .lines()
        .find_map(|l| l.strip_prefix("public_key: ").map(str::to_owned))
        .unwrap();
    for line in [
        format!("PrivateKey = {}", private.trim()),
        "Address = 192.168.100.2/32".into(),
        "DNS = 192.168.1.1".into(),
        format!("PublicKey = {server_pub}"),
        format!("PresharedKey = {}", psk.trim()),
        "Endpoint = vpn.example.com:51820".into(),
        "AllowedIPs = 192.168.1.0/24, 192.168.2.0/24".into(),
        "PersistentKeepalive = 15".into(),
    ] {
        assert!(conf.contains(&format!("{line}\n")), "config lacks {line:?}");
    }
    // --config-out writes the same text, mode 0600.
    let out = env.tmp.path().join("bob.conf");
    env.run(&["peer", "add", "bob", "--config-out", out.to_str().unwrap()])
        .ok();
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        env.run(&["peer", "config", "bob"]).ok()
    );
    assert_eq!(
        std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o600
    );
}
use std::os::unix::fs::PermissionsExt;

#[test]
fn a_peer_with_its_own_key_gets_a_config_to_complete_and_no_qr() {
    let env = Env::new();
    env.init(&[]);
    env.run(&["peer", "add", "carol", "--public-key", &pubkey()])
        .ok();
    assert!(!env.path("peers/carol.key").exists());
    let run = env.run(&["peer", "config", "carol"]);
    assert_eq!(run.code, 0);
    assert!(run
        .stdout
        .contains("PrivateKey = <the private key of this peer, kept by its owner>"));
    assert!(run
        .stderr
        .contains("its owner puts their private key on the PrivateKey line"));
    env.run(&["peer", "qr", "carol"]).fails_with(&[
        "peer carol brought its own public key",
        "wgadm peer config carol",
    ]);
    env.run(&["peer", "add", "dave", "--public-key", &pubkey(), "--qr"])
        .fails_with(&["peer dave brought its own public key"]);
}

#[test]
fn disable_enable_expire_and_rotate_shape_the_server_config() {
    let env = Env::new();
    env.init(&[]);
    env.run(&["peer", "add", "alice", "--preshared-key"]).ok();
    env.run(&["peer", "add", "bob"]).ok();
    let render = |env: &Env| env.run(&["render"]).ok();
    assert!(render(&env).contains("# alice\n") && render(&env).contains("# bob\n"));
    env.run(&["peer", "disable", "bob"]).ok();
    assert!(!render(&env).contains("# bob\n"));
    assert!(env.read("peers/bob.yml").contains("enabled: false"));
    env.run(&["peer", "enable", "bob"]).ok();
    assert!(render(&env).contains("# bob\n"));

    let before_pub = env.read("peers/alice.yml");
    let before_psk = env.read("peers/alice.psk");
    env.run(&["peer", "rotate", "alice"]).ok();
    let after = env.read("peers/alice.yml");
    assert_ne!(before_pub, after);
    assert!(after.contains("address: 192.168.100.2"));
    assert_ne!(before_psk, env.read("peers/alice.psk"));
    // rotate to a key the owner brings: the private key here goes away.
    let own = pubkey();
    env.run(&["peer", "rotate", "alice", "--public-key", &own])
        .ok();
    assert!(env.read("peers/alice.yml").contains(&own));
    assert!(!env.path("peers/alice.key").exists());
    env.run(&["check", "--keys"]).ok();
}

#[test]
fn an_expired_peer_stays_in_the_state_but_not_on_the_server() {
    let env = Env::new();
    env.init(&[]);
    let run = env.run(&["peer", "add", "old", "--expires", "2020-01-01"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("expires 2020-01-01"), "{}", run.stderr);
    assert!(!env.run(&["render"]).ok().contains("# old"));
    assert!(env.run(&["peer", "list"]).ok().contains("expired"));
}

#[test]
fn rendered_configs_are_accepted_by_wg_quick_strip_and_wg() {
    let env = Env::new();
    env.init(&["--listen-port", "51999"]);
    env.run(&["peer", "add", "alice", "--preshared-key"]).ok();
    env.run(&["peer", "add", "bob"]).ok();
    let dir = env.tmp.path();
    let server = dir.join("wg0.conf");
    std::fs::write(&server, env.run(&["render"]).ok()).unwrap();
    let stripped = tool("wg-quick").arg("strip").arg(&server).output().unwrap();
    assert!(
        stripped.status.success(),
        "{}",
        String::from_utf8_lossy(&stripped.stderr)
    );
    let stripped = String::from_utf8(stripped.stdout).unwrap();
    assert!(
        !stripped.contains("Address"),
        "strip keeps only wg(8) fields:\n{stripped}"
    );
    assert_eq!(stripped.matches("[Peer]").count(), 2);
    assert!(stripped.contains("ListenPort = 51999"));
    // wg(8) itself derives the public keys the state records from the private keys in the configs.
    let derive = |private: &str| {
        let mut wg = tool("wg")
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
    };
    let key_of = |text: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix("PrivateKey = "))
            .unwrap()
            .to_owned()
    };
    assert!(env.read("server.yml").contains(&derive(&key_of(&stripped))));
    let client = dir.join("wgc0.conf");
    std::fs::write(&client, env.run(&["peer", "config", "alice"]).ok()).unwrap();
    let c = tool("wg-quick").arg("strip").arg(&client).output().unwrap();
    assert!(c.status.success(), "{}", String::from_utf8_lossy(&c.stderr));
    let c = String::from_utf8(c.stdout).unwrap();
    assert!(env.read("peers/alice.yml").contains(&derive(&key_of(&c))));
    assert!(c.contains("PresharedKey = "));
}

#[test]
fn the_qr_code_holds_exactly_the_client_config() {
    let env = Env::new();
    env.init(&[]);
    env.run(&["peer", "add", "phone", "--preshared-key"]).ok();
    let png = env.tmp.path().join("phone.png");
    env.run(&[
        "peer",
        "qr",
        "phone",
        "--format",
        "png",
        "-o",
        png.to_str().unwrap(),
    ])
    .ok();
    assert_eq!(
        std::fs::metadata(&png).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let out = tool("zbarimg")
        .args(["--nodbus", "--raw", "-q", "--oneshot", "-Sbinary"])
        .arg(&png)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        env.run(&["peer", "config", "phone"]).ok()
    );
    let ansi = env.run(&["peer", "qr", "phone"]).ok();
    assert!(ansi.contains('▀') || ansi.contains('▄'));
    let svg = env.run(&["peer", "qr", "phone", "--format", "svg"]).ok();
    assert!(svg.contains("</svg>"));
}

#[test]
fn concurrent_adds_never_corrupt_the_state() {
    let env = Env::new();
    env.init(&[]);
    let children: Vec<_> = (0..12)
        .map(|i| {
            env.cmd()
                .args(["peer", "add", &format!("p{i}")])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    env.run(&["check", "--keys"]).ok();
    let list: serde_json::Value =
        serde_json::from_str(&env.run(&["--json", "peer", "list"]).ok()).unwrap();
    let mut addrs: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["address"].as_str().unwrap())
        .collect();
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), 12);
    assert!(
        env.snapshot()
            .keys()
            .all(|p| !p.to_string_lossy().contains(".wgadm-")),
        "temp files left behind"
    );
}

#[test]
fn commands_on_a_missing_state_say_how_to_create_one() {
    let env = Env::new();
    env.run(&["peer", "list"])
        .fails_with(&["no wgadm state here", "wgadm init"]);
    assert!(!env.state.exists());
}

#[test]
fn shell_completions_are_generated() {
    let env = Env::new();
    let bash = env.run(&["completions", "bash"]).ok();
    assert!(bash.contains("wgadm") && bash.contains("peer"));
}

#[test]
fn usage_errors_exit_2() {
    let env = Env::new();
    assert_eq!(env.run(&["peer", "frobnicate"]).code, 2);
}

#[test]
fn peer_set_changes_one_peer_within_the_rules() {
    let env = Env::new();
    env.init(&[]);
    env.run(&["peer", "add", "alice"]).ok();
    env.run(&["peer", "add", "bob"]).ok();
    env.run(&[
        "peer",
        "set",
        "alice",
        "--access",
        "192.168.1.0/24",
        "--keepalive",
        "10",
        "--expires",
        "2099-12-31",
    ])
    .ok();
    let conf = env.run(&["peer", "config", "alice"]).ok();
    assert!(
        conf.contains("AllowedIPs = 192.168.1.0/24\n")
            && conf.contains("PersistentKeepalive = 10\n"),
        "{conf}"
    );
    assert!(env.read("peers/alice.yml").contains("expires: 2099-12-31"));
    env.run(&[
        "peer",
        "set",
        "alice",
        "--default-access",
        "--no-expiry",
        "--keepalive",
        "0",
    ])
    .ok();
    let conf = env.run(&["peer", "config", "alice"]).ok();
    assert!(
        conf.contains("AllowedIPs = 192.168.0.0/16\n") && !conf.contains("PersistentKeepalive"),
        "{conf}"
    );
    assert!(!env.read("peers/alice.yml").contains("expires"));
    refused(
        &env,
        &["peer", "set", "alice", "--address", "192.168.100.3"],
        // The peer being changed first, the other one after; and only from its side.
        &["the state has a problem:\n  peers/alice.yml: address: 192.168.100.3 is already used by peers/bob.yml"],
    );
    refused(
        &env,
        &["peer", "set", "alice", "--access", "172.16.10.0/24"],
        &["overlaps the denied range"],
    );
    refused(
        &env,
        &["peer", "set", "nobody", "--keepalive", "5"],
        &["there is no peer nobody"],
    );
    assert_eq!(
        env.run(&[
            "peer",
            "set",
            "alice",
            "--access",
            "10.0.0.0/8",
            "--default-access"
        ])
        .code,
        2
    );
}

/// Starts `n` `wgadm init`s at once and returns their outputs.
fn concurrent_inits(env: &Env, n: usize) -> Vec<std::process::Output> {
    let children: Vec<_> = (0..n)
        .map(|_| {
            env.cmd()
                .args(["init", "--endpoint", "vpn.example.com"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect()
}

#[test]
fn of_concurrent_inits_on_a_missing_or_empty_directory_exactly_one_wins() {
    for empty in [false, true] {
        for _ in 0..3 {
            let env = Env::new();
            if empty {
                std::fs::create_dir(&env.state).unwrap();
            }
            let outs = concurrent_inits(&env, 16);
            let won = outs.iter().filter(|o| o.status.success()).count();
            assert_eq!(won, 1, "{won} inits succeeded (empty dir: {empty})");
            for o in outs.iter().filter(|o| !o.status.success()) {
                let err = String::from_utf8_lossy(&o.stderr);
                assert!(
                    err.contains("already initialised")
                        && err.contains(&*env.state.to_string_lossy()),
                    "{err}"
                );
            }
            // server.key belongs to server.yml's public key (check always opens it).
            env.run(&["check", "--keys"]).ok();
            let files: Vec<_> = env.snapshot().into_keys().collect();
            assert_eq!(files.len(), 3, "{files:?}");
        }
    }
}

#[test]
fn state_files_that_are_symlinks_fifos_or_huge_are_refused_by_name_and_never_read() {
    let env = Env::new();
    env.init(&[]);
    env.run(&["peer", "add", "alice"]).ok();
    let server_key = env.read("server.key");
    let secret = server_key.trim();
    // A peer file that points at the server's private key.
    std::os::unix::fs::symlink("../server.key", env.path("peers/x.yml")).unwrap();
    for args in [&["check"][..], &["peer", "list"], &["peer", "add", "bob"]] {
        let err = refused(&env, args, &["peers/x.yml", "symbolic link"]);
        assert!(!err.contains(secret), "the key leaked: {err}");
    }
    std::fs::remove_file(env.path("peers/x.yml")).unwrap();
    // A fifo would block a reader forever; it is refused at once.
    let fifo = std::ffi::CString::new(
        env.path("peers/f.yml")
            .into_os_string()
            .into_encoded_bytes(),
    )
    .unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    // (Not `refused`: its snapshot would block reading the fifo.)
    env.run(&["check"])
        .fails_with(&["peers/f.yml", "a fifo, not a regular file"]);
    std::fs::remove_file(env.path("peers/f.yml")).unwrap();
    // Too large: refused before reading, the content never echoed.
    let big = format!("address: 192.168.100.9\n# {}\n", "MARKER".repeat(20_000));
    std::fs::write(env.path("peers/big.yml"), big).unwrap();
    let err = refused(&env, &["check"], &["peers/big.yml", "larger than 64 KiB"]);
    assert!(!err.contains("MARKER"), "{err}");
    std::fs::remove_file(env.path("peers/big.yml")).unwrap();
    // A key file that is a symlink is not followed either.
    let alice_key = env.path("peers/alice.key");
    let copy = env.tmp.path().join("elsewhere.key");
    std::fs::rename(&alice_key, &copy).unwrap();
    std::os::unix::fs::symlink(&copy, &alice_key).unwrap();
    let err = refused(
        &env,
        &["peer", "config", "alice"],
        &["peers/alice.key", "symbolic link"],
    );
    assert!(!err.contains(env.read("peers/alice.key").trim()), "{err}");
    refused(
        &env,
        &["check", "--keys"],
        &["peers/alice.key: is a symbolic link"],
    );
    std::fs::remove_file(&alice_key).unwrap();
    std::fs::rename(&copy, &alice_key).unwrap();
    // server.yml itself.
    let yml = env.path("server.yml");
    std::fs::rename(&yml, env.tmp.path().join("server.yml")).unwrap();
    std::os::unix::fs::symlink(env.tmp.path().join("server.yml"), &yml).unwrap();
    refused(&env, &["peer", "list"], &["server.yml", "symbolic link"]);
}

#[test]
fn check_names_everything_in_the_state_directory_that_is_not_state() {
    let env = Env::new();
    env.init(&[]);
    env.run(&["peer", "add", "alice"]).ok();
    env.run(&["check"]).ok();
    std::fs::write(env.path("notes.txt"), "hello").unwrap();
    std::fs::create_dir(env.path("peers/old")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", env.path("link")).unwrap();
    // A temporary file an older wgadm left beside its target, holding a private key.
    std::fs::write(
        env.path("peers/.alice.key.wgadm-4242"),
        env.read("peers/alice.key"),
    )
    .unwrap();
    let err = env.run(&["check"]).fails_with(&[
        "notes.txt: is not part of the state (a file)",
        "link: is not part of the state (a symbolic link)",
        "peers/old: is not part of the state (a directory)",
        "peers/.alice.key.wgadm-4242: is left over from an interrupted wgadm command",
    ]);
    assert!(err.contains("4 problems"), "{err}");
    // The next command that changes the state removes the leftover, and nothing else.
    env.run(&["peer", "add", "bob"]).ok();
    assert!(!env.path("peers/.alice.key.wgadm-4242").exists());
    assert!(env.path("notes.txt").exists() && env.path("peers/old").exists());
}

#[test]
fn a_change_that_never_committed_is_discarded_by_the_next_command_with_a_message() {
    let env = Env::new();
    env.init(&[]);
    env.run(&["peer", "add", "alice"]).ok();
    let before = env.snapshot();
    // What a wgadm killed while staging leaves: a temporary file, no journal.
    std::fs::write(env.path(".wgadm-tmp-0123456789abcdef"), "half a key").unwrap();
    let run = env.run(&["peer", "list"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("removed 1 temporary file(s) an interrupted wgadm command left"),
        "{}",
        run.stderr
    );
    assert_eq!(before, env.snapshot());
    // A journal that is torn (its checksum does not match) was never committed either.
    std::fs::write(
        env.path(".wgadm-journal"),
        "wgadm-journal 1\nremove peers/alice.yml\n",
    )
    .unwrap();
    env.run(&["check", "--keys"]).ok();
    assert_eq!(before, env.snapshot());
}
