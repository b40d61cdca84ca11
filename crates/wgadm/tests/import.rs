//! `wgadm import` from sources the tests make in each format (keys from the real `wg genkey`,
//! a real SQLite file), the equivalence of the rendered config with the source by the real
//! `wg-quick strip`, every refusal with its message, re-issuing every client config, and the
//! server key rotation.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::{snapshot, tool, Env};

fn genkey() -> String {
    let out = tool("wg").arg("genkey").output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn genpsk() -> String {
    let out = tool("wg").arg("genpsk").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn pubkey(private: &str) -> String {
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
}

fn write(path: &Path, text: &str) {
    if let Some(d) = path.parent() {
        fs::create_dir_all(d).unwrap();
    }
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
}

/// A server config reduced to what matters to clients: the private key and port (from the
/// real `wg-quick strip`), the interface addresses (strip drops them, so from the file), and
/// each peer's preshared key and AllowedIPs, by public key.
#[derive(Debug, PartialEq)]
struct Normal {
    private_key: String,
    listen_port: String,
    addresses: BTreeSet<String>,
    peers: BTreeMap<String, (Option<String>, BTreeSet<String>)>,
}

fn list(v: &str) -> impl Iterator<Item = String> + '_ {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

fn normalise(conf: &Path) -> Normal {
    let out = tool("wg-quick").arg("strip").arg(conf).output().unwrap();
    assert!(
        out.status.success(),
        "wg-quick strip {}: {}",
        conf.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let stripped = String::from_utf8(out.stdout).unwrap();
    let mut n = Normal {
        private_key: String::new(),
        listen_port: String::new(),
        addresses: BTreeSet::new(),
        peers: BTreeMap::new(),
    };
    let mut current: Option<(String, Option<String>, BTreeSet<String>)> = None;
    let flush = |c: &mut Option<(String, Option<String>, BTreeSet<String>)>, n: &mut Normal| {
        if let Some((k, psk, ips)) = c.take() {
            assert!(n.peers.insert(k, (psk, ips)).is_none(), "duplicate peer");
        }
    };
    for line in stripped.lines() {
        // wg-quick passes comments through to wg(8), which skips them.
        let line = line.split('#').next().unwrap().trim();
        if line == "[Peer]" {
            flush(&mut current, &mut n);
            current = Some((String::new(), None, BTreeSet::new()));
            continue;
        }
        let Some((k, v)) = line.split_once(" = ") else {
            continue;
        };
        match (&mut current, k) {
            (None, "PrivateKey") => n.private_key = v.to_owned(),
            (None, "ListenPort") => n.listen_port = v.to_owned(),
            (Some(c), "PublicKey") => c.0 = v.to_owned(),
            (Some(c), "PresharedKey") => c.1 = Some(v.to_owned()),
            (Some(c), "AllowedIPs") => c.2.extend(list(v)),
            _ => panic!("unexpected line in strip output: {k}"),
        }
    }
    flush(&mut current, &mut n);
    // The Address lines: everything before the first [Peer].
    let text = fs::read_to_string(conf).unwrap();
    for line in text.lines().take_while(|l| l.trim() != "[Peer]") {
        let line = line.split('#').next().unwrap();
        if let Some((k, v)) = line.split_once('=') {
            if k.trim().eq_ignore_ascii_case("address") {
                n.addresses.extend(list(v));
            }
        }
    }
    n
}

/// `wgadm render` of the env's state, written to a file wg-quick can strip.
fn rendered(env: &Env) -> Normal {
    let path = env.tmp.path().join("rendered").join("wg0.conf");
    write(&path, &env.run(&["render"]).ok());
    normalise(&path)
}

struct Client {
    private: String,
    public: String,
    psk: Option<String>,
}

fn client(psk: bool) -> Client {
    let private = genkey();
    Client {
        public: pubkey(&private),
        private,
        psk: psk.then(genpsk),
    }
}

fn peer_section(c: &Client, allowed: &str) -> String {
    let mut s = format!("[Peer]\nPublicKey = {}\n", c.public);
    if let Some(p) = &c.psk {
        s.push_str(&format!("PresharedKey = {p}\n"));
    }
    s.push_str(&format!("AllowedIPs = {allowed}\n"));
    s
}

fn client_conf(c: &Client, address: &str, server_public: &str, keepalive: u16) -> String {
    let mut s = format!(
        "[Interface]\nPrivateKey = {}\nAddress = {address}/24\nDNS = 9.9.9.9\n\n[Peer]\nPublicKey = {server_public}\n",
        c.private
    );
    if let Some(p) = &c.psk {
        s.push_str(&format!("PresharedKey = {p}\n"));
    }
    s.push_str(&format!(
        "Endpoint = vpn.example.org:51888\nAllowedIPs = 0.0.0.0/0, ::/0\nPersistentKeepalive = {keepalive}\n"
    ));
    s
}

/// A hand-written wg0.conf with three peers named by comments, and client configs for two.
struct HandWritten {
    dir: PathBuf,
    conf: PathBuf,
    clients: PathBuf,
    server_private: String,
    peers: Vec<Client>,
}

fn hand_written(env: &Env) -> HandWritten {
    let dir = env.tmp.path().join("old");
    let server_private = genkey();
    let server_public = pubkey(&server_private);
    let peers = vec![client(true), client(false), client(false)];
    let text = format!(
        "# my server\n[Interface]\nAddress = 10.9.0.1/24\nListenPort = 51888\nPrivateKey = {server_private}\n\
         SaveConfig = false\n\n# alice\n{}\n# Client: bob\n{}\n{}",
        peer_section(&peers[0], "10.9.0.2/32"),
        peer_section(&peers[1], "10.9.0.3/32"),
        peer_section(&peers[2], "10.9.0.10/32"),
    );
    let conf = dir.join("wg0.conf");
    write(&conf, &text);
    let clients = dir.join("clients");
    write(
        &clients.join("alice-phone.conf"),
        &client_conf(&peers[0], "10.9.0.2", &server_public, 15),
    );
    write(
        &clients.join("carol.conf"),
        &client_conf(&peers[2], "10.9.0.10", &server_public, 0),
    );
    HandWritten {
        dir,
        conf,
        clients,
        server_private,
        peers,
    }
}

#[test]
fn wg_quick_import_renders_an_equivalent_config_and_keeps_client_keys() {
    let env = Env::new();
    let src = hand_written(&env);
    let conf = src.conf.to_str().unwrap();
    let clients = src.clients.to_str().unwrap();
    let out = env
        .run(&["import", "wg-quick", conf, "--clients", clients])
        .ok();
    assert!(out.contains("imported 3 peers"), "{out}");
    assert!(out.contains("endpoint vpn.example.org:51888"), "{out}");
    assert_eq!(rendered(&env), normalise(&src.conf));
    // Names: from the comments, from the client config's file name where there is none.
    let peers = env.run(&["--json", "peer", "list"]).ok();
    let peers: serde_json::Value = serde_json::from_str(&peers).unwrap();
    let names: Vec<&str> = peers
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alice", "bob", "carol"]);
    assert_eq!(
        peers[1]["private_key_here"], false,
        "bob brings his own key"
    );
    assert_eq!(env.read("peers/alice.key").trim(), src.peers[0].private);
    assert_eq!(env.mode("peers/alice.key"), 0o600);
    assert_eq!(env.mode("peers/alice.psk"), 0o600);
    assert_eq!(env.mode("server.key"), 0o600);
    assert_eq!(env.read("server.key").trim(), src.server_private);
    // The clients' own settings come along: alice's keepalive, carol's "off".
    assert!(env.read("peers/alice.yml").contains("keepalive: 15"));
    assert!(env.read("peers/carol.yml").contains("keepalive: 0"));
    // alice's new config works as her old one: same key, PSK, server, endpoint.
    let alice = env.run(&["peer", "config", "alice"]).ok();
    for same in [
        format!("PrivateKey = {}", src.peers[0].private),
        format!("PresharedKey = {}", src.peers[0].psk.as_ref().unwrap()),
        format!("PublicKey = {}", pubkey(&src.server_private)),
        "Endpoint = vpn.example.org:51888".into(),
        "Address = 10.9.0.2/32".into(),
        "DNS = 9.9.9.9".into(),
    ] {
        assert!(alice.contains(&same), "{same} missing from\n{alice}");
    }
    env.run(&["check", "--keys"]).ok();
    // A second import into the same state is refused.
    let before = env.snapshot();
    env.run(&["import", "wg-quick", conf])
        .fails_with(&["already holds a wgadm state", "--state DIR"]);
    assert_eq!(before, env.snapshot());
}

#[test]
fn dry_run_lists_and_writes_nothing() {
    let env = Env::new();
    let src = hand_written(&env);
    let out = env
        .run(&[
            "import",
            "wg-quick",
            src.conf.to_str().unwrap(),
            "--dry-run",
            "--endpoint",
            "vpn.example.net",
        ])
        .ok();
    assert!(out.contains("would import 3 peers"), "{out}");
    assert!(out.contains("endpoint vpn.example.net:51888"), "{out}");
    assert!(
        out.contains("named peer-10.9.0.10: ") && out.contains("the source gives no name"),
        "{out}"
    );
    assert!(!env.state.exists());
    assert!(!out.contains(&src.server_private));
    // --json: one document, no secret in it.
    let out = env
        .run(&[
            "--json",
            "import",
            "wg-quick",
            src.conf.to_str().unwrap(),
            "--dry-run",
            "--endpoint",
            "vpn.example.net",
        ])
        .ok();
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["dry_run"], true);
    assert_eq!(j["peers"].as_array().unwrap().len(), 3);
    assert_eq!(j["peers"][0]["name"], "alice");
    assert_eq!(j["listen_port"], 51888);
    for p in &src.peers {
        assert!(!out.contains(&p.private));
        assert!(p.psk.as_ref().is_none_or(|k| !out.contains(k)));
    }
    assert!(!env.state.exists());
}

#[test]
fn import_into_a_vault_keeps_every_key_encrypted() {
    let env = Env::with_vault();
    let src = hand_written(&env);
    env.run(&[
        "import",
        "wg-quick",
        src.conf.to_str().unwrap(),
        "--clients",
        src.clients.to_str().unwrap(),
    ])
    .ok();
    for f in [
        "server.key",
        "peers/alice.key",
        "peers/alice.psk",
        "peers/carol.key",
    ] {
        assert!(
            env.read(f).starts_with("$ANSIBLE_VAULT;1.1;AES256"),
            "{f} is not a vault file"
        );
    }
    env.run(&["check", "--keys"]).ok();
    assert_eq!(rendered(&env), normalise(&src.conf));
    // A rotated key stays under the vault.
    env.run(&["server", "rotate-key"]).ok();
    assert!(env
        .read("server.key")
        .starts_with("$ANSIBLE_VAULT;1.1;AES256"));
    env.run(&["check", "--keys"]).ok();
}

/// Runs an import that must fail; checks the messages and that nothing was written.
#[track_caller]
fn refused(env: &Env, args: &[&str], needles: &[&str]) -> String {
    let err = env.run(args).fails_with(needles);
    assert!(!env.state.exists(), "a refused import left {:?}", env.state);
    assert!(
        err.contains("nothing was written") || !err.contains("problem"),
        "{err}"
    );
    err
}

#[test]
fn what_the_model_cannot_hold_is_listed_and_refused_unless_dropped() {
    let env = Env::new();
    let server = genkey();
    let (a, b, c) = (client(false), client(false), client(false));
    let text = format!(
        "[Interface]\nPrivateKey = {server}\nAddress = 10.9.0.1/24, fd00:9::1/64\nListenPort = 51820\n\
         PostUp = iptables -t nat -A POSTROUTING -o eth0 -j MASQUERADE\nMTU = 1420\n\n# a\n{}\n# site\n{}\n# c\n{}Endpoint = 192.0.2.7:51820\n",
        peer_section(&a, "10.9.0.2/32, fd00:9::2/128"),
        peer_section(&b, "192.168.77.0/24"),
        peer_section(&c, "10.9.0.4/32"),
    );
    let conf = env.tmp.path().join("wg0.conf");
    write(&conf, &text);
    let conf = conf.to_str().unwrap();
    let args = ["import", "wg-quick", conf, "--endpoint", "vpn.example.com"];
    let err = refused(
        &env,
        &args,
        &[
            "cannot import",
            "6 problems (nothing was written)",
            "line 5: PostUp is not kept by wgadm",
            "line 6: MTU is not kept by wgadm",
            "Address fd00:9::1/64: wgadm keeps one IPv4 address",
            "AllowedIPs fd00:9::2/128: wgadm gives each peer one IPv4 address",
            "with --drop-unsupported the routes are dropped and the peer keeps its /32",
            "AllowedIPs 192.168.77.0/24",
            "with --drop-unsupported the peer is left out",
            "Endpoint on the server side is not kept by wgadm",
            "can be left out with --drop-unsupported",
        ],
    );
    assert!(
        !err.contains(&server),
        "the private key leaked into a message"
    );
    let mut dropping = args.to_vec();
    dropping.push("--drop-unsupported");
    let out = env.run(&dropping).ok();
    assert!(out.contains("imported 2 peers"), "{out}");
    assert_eq!(out.matches("left out: ").count(), 6, "{out}");
    assert!(env.path("peers/a.yml").exists() && !env.path("peers/site.yml").exists());
}

#[test]
fn conflicts_are_reported_all_at_once() {
    let env = Env::new();
    let server = genkey();
    let (a, b, c) = (client(false), client(false), client(false));
    let text = format!(
        "[Interface]\nPrivateKey = {server}\nAddress = 10.9.0.1/24\nListenPort = 51820\n\n\
         # a\n{}\n# twin\n{}\n# same-ip\n{}\n# far\n{}\n# low\n[Peer]\nPublicKey = AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\nAllowedIPs = 10.9.0.9/32\n",
        peer_section(&a, "10.9.0.2/32"),
        peer_section(&a, "10.9.0.3/32"),
        peer_section(&b, "10.9.0.2/32"),
        peer_section(&c, "10.8.0.5/32"),
    );
    let conf = env.tmp.path().join("wg0.conf");
    write(&conf, &text);
    refused(
        &env,
        &["import", "wg-quick", conf.to_str().unwrap()],
        &[
            "5 problems",
            "line 12: the same PublicKey as",
            "line 17: address 10.9.0.2 is also",
            "line 22: address 10.8.0.5 is outside the subnet 10.9.0.0/24",
            "line 27: the PublicKey is a low-order point",
            "--endpoint: the source names no endpoint clients connect to; pass --endpoint HOST[:PORT]",
        ],
    );
}

#[test]
fn a_broken_source_is_refused_with_the_place() {
    let env = Env::new();
    let conf = env.tmp.path().join("wg0.conf");
    write(
        &conf,
        "[Interface]\nPrivateKey = notakey\nAddress = 10.9.0.1/24\n[Peer]\nPublicKey = x\nAllowedIPs = 10.9.0.2/32\nBogus = 1\n",
    );
    refused(
        &env,
        &[
            "import",
            "wg-quick",
            conf.to_str().unwrap(),
            "--endpoint",
            "h",
        ],
        &[
            "line 2: the server's PrivateKey is not valid base64",
            "no ListenPort",
            "line 7: Bogus is no wg-quick [Peer] setting",
            "the PublicKey is not valid base64",
        ],
    );
    refused(
        &env,
        &["import", "wg-quick", "/nonexistent/wg0.conf"],
        &["/nonexistent/wg0.conf"],
    );
}

/// A PiVPN installation: wg0.conf with blocks (one client disabled), keys/, configs/.
#[test]
fn pivpn_import_is_equivalent_and_keeps_names_keys_and_disabled_clients() {
    let env = Env::new();
    let root = env.tmp.path().join("etc-wireguard");
    let server = genkey();
    let server_public = pubkey(&server);
    write(&root.join("keys/server_priv"), &format!("{server}\n"));
    write(&root.join("keys/server_pub"), &format!("{server_public}\n"));
    let clients = [
        ("phone", client(true), "10.6.0.2"),
        ("laptop", client(true), "10.6.0.3"),
        ("old-tablet", client(true), "10.6.0.4"),
    ];
    let mut conf = format!(
        "[Interface]\nPrivateKey = {server}\nAddress = 10.6.0.1/24\nMTU = 1420\nListenPort = 51820\n"
    );
    let mut txt = String::new();
    for (i, (name, c, ip)) in clients.iter().enumerate() {
        let disabled = if *name == "old-tablet" {
            "#[disabled] "
        } else {
            ""
        };
        conf.push_str(&format!("### begin {name} ###\n"));
        for line in peer_section(c, &format!("{ip}/32")).lines() {
            conf.push_str(&format!("{disabled}{line}\n"));
        }
        conf.push_str(&format!("### end {name} ###\n"));
        write(
            &root.join(format!("keys/{name}_priv")),
            &format!("{}\n", c.private),
        );
        write(
            &root.join(format!("keys/{name}_pub")),
            &format!("{}\n", c.public),
        );
        write(
            &root.join(format!("keys/{name}_psk")),
            &format!("{}\n", c.psk.as_ref().unwrap()),
        );
        txt.push_str(&format!("{name} {} {} {ip}\n", c.public, 1_700_000_000 + i));
        write(
            &root.join(format!("configs/{name}.conf")),
            &client_conf(c, ip, &server_public, 25)
                .replace("vpn.example.org:51888", "203.0.113.9:51820"),
        );
    }
    write(&root.join("wg0.conf"), &conf);
    write(&root.join("configs/clients.txt"), &txt);
    let root_s = root.to_str().unwrap();
    // PiVPN's MTU line is refused first, listed, then dropped on request.
    refused(
        &env,
        &["import", "pivpn", root_s],
        &["line 4: MTU is not kept by wgadm", "--drop-unsupported"],
    );
    let out = env
        .run(&["import", "pivpn", root_s, "--drop-unsupported"])
        .ok();
    assert!(out.contains("imported 3 peers from PiVPN"), "{out}");
    assert!(out.contains("endpoint 203.0.113.9:51820"), "{out}");
    assert!(env.read("peers/old-tablet.yml").contains("enabled: false"));
    for (name, c, _) in &clients {
        assert_eq!(env.read(&format!("peers/{name}.key")).trim(), c.private);
        assert_eq!(
            env.read(&format!("peers/{name}.psk")).trim(),
            *c.psk.as_ref().unwrap()
        );
    }
    // wg-quick skips the disabled block's commented lines, and wgadm leaves disabled peers off.
    assert_eq!(rendered(&env), normalise(&root.join("wg0.conf")));
}

/// wg-easy 14: wg0.json, and the wg0.conf wg-easy 14 writes from it (its template).
#[test]
fn wg_easy_14_json_import_is_equivalent_to_the_config_wg_easy_writes() {
    let env = Env::new();
    let server = genkey();
    let cs = [client(true), client(true), client(false)];
    let json = serde_json::json!({
        "server": {"privateKey": server, "publicKey": pubkey(&server), "address": "10.8.0.1"},
        "clients": {
            "0b5fc7c2-1111-4b1c-9f3a-000000000001": {"id": "0b5fc7c2-1111-4b1c-9f3a-000000000001", "name": "Anna's iPhone", "address": "10.8.0.2",
                "privateKey": cs[0].private, "publicKey": cs[0].public, "preSharedKey": cs[0].psk,
                "createdAt": "2024-05-01T10:00:00.000Z", "updatedAt": "2024-05-01T10:00:00.000Z", "enabled": true},
            "0b5fc7c2-1111-4b1c-9f3a-000000000002": {"id": "0b5fc7c2-1111-4b1c-9f3a-000000000002", "name": "laptop", "address": "10.8.0.3",
                "privateKey": cs[1].private, "publicKey": cs[1].public, "preSharedKey": cs[1].psk,
                "createdAt": "2024-05-01T10:00:00.000Z", "updatedAt": "2024-05-01T10:00:00.000Z", "enabled": true},
            "0b5fc7c2-1111-4b1c-9f3a-000000000003": {"id": "0b5fc7c2-1111-4b1c-9f3a-000000000003", "name": "gone", "address": "10.8.0.4",
                "privateKey": cs[2].private, "publicKey": cs[2].public,
                "createdAt": "2024-05-01T10:00:00.000Z", "updatedAt": "2024-05-01T10:00:00.000Z", "enabled": false}
        }
    });
    let path = env.tmp.path().join("wg0.json");
    write(&path, &serde_json::to_string_pretty(&json).unwrap());
    // What wg-easy 14's saveConfig writes: enabled clients only.
    let mut conf = format!(
        "# Note: Do not edit this file directly.\n# Your changes will be overwritten!\n\n# Server\n[Interface]\n\
         PrivateKey = {server}\nAddress = 10.8.0.1/24\nListenPort = 51820\nPreUp = \nPostUp = iptables -t nat -A POSTROUTING -s 10.8.0.0/24 -o eth0 -j MASQUERADE\nPreDown = \nPostDown = \n"
    );
    for (id, c, ip) in [("1", &cs[0], "10.8.0.2"), ("2", &cs[1], "10.8.0.3")] {
        conf.push_str(&format!(
            "\n# Client: x ({id})\n[Peer]\nPublicKey = {}\nPresharedKey = {}\nAllowedIPs = {ip}/32\n",
            c.public,
            c.psk.as_ref().unwrap()
        ));
    }
    let wg_easy_conf = env.tmp.path().join("wg-easy").join("wg0.conf");
    write(&wg_easy_conf, &conf);
    let out = env
        .run(&[
            "import",
            "wg-easy",
            path.to_str().unwrap(),
            "--endpoint",
            "vpn.example.com",
        ])
        .ok();
    assert!(out.contains("imported 3 peers from wg-easy 14"), "{out}");
    assert!(env
        .read("peers/Anna-s-iPhone.yml")
        .contains("enabled: true"));
    assert!(env.read("peers/gone.yml").contains("enabled: false"));
    assert_eq!(env.read("peers/laptop.key").trim(), cs[1].private);
    assert_eq!(rendered(&env), normalise(&wg_easy_conf));
    env.run(&["check", "--keys"]).ok();

    // A wg0.json whose server keys do not match, and one that is no JSON at all.
    let env2 = Env::new();
    let mut bad = json.clone();
    bad["server"]["publicKey"] = serde_json::Value::String(cs[0].public.clone());
    write(&path, &bad.to_string());
    refused(
        &env2,
        &[
            "import",
            "wg-easy",
            path.to_str().unwrap(),
            "--endpoint",
            "h",
        ],
        &["wg0.json: server: the server's public key does not belong to its private key"],
    );
    write(&path, "{\"server\": ");
    refused(
        &env2,
        &[
            "import",
            "wg-easy",
            path.to_str().unwrap(),
            "--endpoint",
            "h",
        ],
        &["wg0.json: is not JSON: EOF while parsing"],
    );
}

/// wg-easy 15: a real SQLite file with the columns of its schema (interfaces_table,
/// clients_table) and one column a later version might add.
fn wg_easy_15_db(path: &Path, server: &str, clients: &[(&str, &Client, &str, Option<&str>, bool)]) {
    let db = rusqlite::Connection::open(path).unwrap();
    db.execute_batch(
        "CREATE TABLE interfaces_table (name TEXT PRIMARY KEY NOT NULL, device TEXT NOT NULL, port INTEGER NOT NULL UNIQUE,
            private_key TEXT NOT NULL, public_key TEXT NOT NULL, ipv4_cidr TEXT NOT NULL, ipv6_cidr TEXT NOT NULL,
            mtu INTEGER NOT NULL, enabled INTEGER NOT NULL, created_at TEXT DEFAULT (CURRENT_TIMESTAMP) NOT NULL,
            updated_at TEXT DEFAULT (CURRENT_TIMESTAMP) NOT NULL);
         CREATE TABLE clients_table (id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, user_id INTEGER NOT NULL,
            interface_id TEXT NOT NULL, name TEXT NOT NULL, ipv4_address TEXT NOT NULL UNIQUE, ipv6_address TEXT NOT NULL UNIQUE,
            pre_up TEXT DEFAULT '' NOT NULL, post_up TEXT DEFAULT '' NOT NULL, pre_down TEXT DEFAULT '' NOT NULL,
            post_down TEXT DEFAULT '' NOT NULL, private_key TEXT NOT NULL, public_key TEXT NOT NULL,
            pre_shared_key TEXT NOT NULL, expires_at TEXT, allowed_ips TEXT NOT NULL, server_allowed_ips TEXT NOT NULL,
            persistent_keepalive INTEGER NOT NULL, mtu INTEGER NOT NULL, dns TEXT NOT NULL, enabled INTEGER NOT NULL,
            created_at TEXT DEFAULT (CURRENT_TIMESTAMP) NOT NULL, updated_at TEXT DEFAULT (CURRENT_TIMESTAMP) NOT NULL,
            a_later_column TEXT);",
    )
    .unwrap();
    db.execute(
        "INSERT INTO interfaces_table (name, device, port, private_key, public_key, ipv4_cidr, ipv6_cidr, mtu, enabled)
         VALUES ('wg0', 'eth0', 51821, ?1, ?2, '10.8.0.0/24', 'fdcc:ad94:bacf:61a4::cafe:0/112', 1420, 1)",
        [server, &pubkey(server)],
    )
    .unwrap();
    for (name, c, ip, v6, enabled) in clients {
        db.execute(
            "INSERT INTO clients_table (user_id, interface_id, name, ipv4_address, ipv6_address, private_key, public_key,
                pre_shared_key, expires_at, allowed_ips, server_allowed_ips, persistent_keepalive, mtu, dns, enabled)
             VALUES (1, 'wg0', ?1, ?2, ?3, ?4, ?5, ?6, NULL, '[\"0.0.0.0/0\"]', '[]', 0, 1420, '[\"1.1.1.1\"]', ?7)",
            rusqlite::params![name, ip, v6.unwrap_or(""), c.private, c.public, c.psk.as_deref().unwrap_or(""), *enabled as i64],
        )
        .unwrap();
    }
}

#[test]
fn wg_easy_15_sqlite_import_reads_columns_by_name() {
    let env = Env::new();
    let server = genkey();
    let cs = [client(true), client(true)];
    let db = env.tmp.path().join("wg-easy.db");
    wg_easy_15_db(
        &db,
        &server,
        &[
            (
                "phone",
                &cs[0],
                "10.8.0.2",
                Some("fdcc:ad94:bacf:61a4::cafe:2"),
                true,
            ),
            (
                "tv",
                &cs[1],
                "10.8.0.3",
                Some("fdcc:ad94:bacf:61a4::cafe:3"),
                false,
            ),
        ],
    );
    // wg-easy 15 gives the interface and every client an IPv6 address: listed and refused,
    // then left out on request.
    let args = [
        "import",
        "wg-easy",
        db.to_str().unwrap(),
        "--endpoint",
        "vpn.example.com",
    ];
    refused(
        &env,
        &args,
        &[
            "3 problems",
            "wg-easy.db: interfaces_table: Address fdcc:ad94:bacf:61a4::cafe:1/112: wgadm keeps one IPv4 address",
            "clients_table id 1 (\"phone\"): AllowedIPs fdcc:ad94:bacf:61a4::cafe:2/128",
            "clients_table id 2 (\"tv\"): AllowedIPs fdcc:ad94:bacf:61a4::cafe:3/128",
        ],
    );
    let mut dropping = args.to_vec();
    dropping.push("--drop-unsupported");
    let out = env.run(&dropping).ok();
    assert!(out.contains("imported 2 peers from wg-easy 15"), "{out}");
    assert!(env.read("server.yml").contains("listen_port: 51821"));
    assert!(env.read("peers/phone.yml").contains("keepalive: 0"));
    assert!(env.read("peers/tv.yml").contains("enabled: false"));
    assert_eq!(
        env.read("peers/phone.psk").trim(),
        *cs[0].psk.as_ref().unwrap()
    );
    assert_eq!(env.read("peers/tv.key").trim(), cs[1].private);
    // What wg-easy 15 puts on the interface, its IPv6 part aside: the enabled client.
    let conf = env.tmp.path().join("wg-easy").join("wg0.conf");
    write(
        &conf,
        &format!(
            "[Interface]\nPrivateKey = {server}\nAddress = 10.8.0.1/24\nListenPort = 51821\nMTU = 1420\n\n[Peer]\nPublicKey = {}\nPresharedKey = {}\nAllowedIPs = 10.8.0.2/32\n",
            cs[0].public,
            cs[0].psk.as_ref().unwrap()
        ),
    );
    assert_eq!(rendered(&env), normalise(&conf));

    // A file that is SQLite but not wg-easy's.
    let env = Env::new();
    let other = env.tmp.path().join("other.db");
    rusqlite::Connection::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE t (x INTEGER);")
        .unwrap();
    refused(
        &env,
        &["import", "wg-easy", other.to_str().unwrap()],
        &["other.db: cannot read it as wg-easy's SQLite database: no such table: interfaces_table"],
    );
}

#[test]
fn every_client_config_and_qr_code_is_reissued_at_once() {
    let env = Env::new();
    let src = hand_written(&env);
    env.run(&[
        "import",
        "wg-quick",
        src.conf.to_str().unwrap(),
        "--clients",
        src.clients.to_str().unwrap(),
    ])
    .ok();
    let out_dir = env.tmp.path().join("out");
    let out_s = out_dir.to_str().unwrap();
    let out = env
        .run(&["peer", "config", "--all", "--out-dir", out_s])
        .ok();
    assert!(out.contains("wrote 3 files (mode 0600)"), "{out}");
    for name in ["alice", "bob", "carol"] {
        let f = out_dir.join(format!("{name}.conf"));
        assert_eq!(
            fs::metadata(&f).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::read_to_string(&f).unwrap(),
            env.run(&["peer", "config", name]).ok()
        );
    }
    let before = snapshot(&out_dir);
    env.run(&["peer", "config", "--all", "--out-dir", out_s])
        .fails_with(&[
            "3 already exist (nothing was written); pass --force",
            "alice.conf",
        ]);
    assert_eq!(before, snapshot(&out_dir));
    env.run(&["peer", "config", "--all", "--out-dir", out_s, "--force"])
        .ok();
    // Never into the state or the wg-quick config directory.
    let inside = env.state.join("configs");
    env.run(&[
        "peer",
        "config",
        "--all",
        "--out-dir",
        inside.to_str().unwrap(),
    ])
    .fails_with(&["is inside the state directory"]);
    assert!(!inside.exists());
    // QR codes likewise; bob brought his own key, so his is skipped and said so.
    let qr_dir = env.tmp.path().join("qr");
    let out = env
        .run(&[
            "peer",
            "qr",
            "--all",
            "--format",
            "png",
            "--out-dir",
            qr_dir.to_str().unwrap(),
        ])
        .ok();
    assert!(
        out.contains("wrote 2 files") && out.contains("skipped bob"),
        "{out}"
    );
    let png = fs::read(qr_dir.join("alice.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG"));
    assert_eq!(
        fs::metadata(qr_dir.join("carol.png"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    env.run(&["peer", "qr"]).fails_with(&["<NAME>"]);
    env.run(&["peer", "config", "alice", "--out-dir", out_s])
        .fails_with(&["--all"]);
    env.run(&["peer", "config", "--all"])
        .fails_with(&["--out-dir"]);
}

#[test]
fn server_key_rotation_reissues_every_config_with_the_new_key() {
    let env = Env::new();
    let src = hand_written(&env);
    env.run(&[
        "import",
        "wg-quick",
        src.conf.to_str().unwrap(),
        "--clients",
        src.clients.to_str().unwrap(),
    ])
    .ok();
    let old_public = pubkey(&src.server_private);
    let out = env.run(&["server", "rotate-key"]).ok();
    assert!(
        out.contains("cannot connect until it has it")
            && out.contains("peer config --all --out-dir"),
        "{out}"
    );
    let new_private = env.read("server.key").trim().to_owned();
    assert_ne!(new_private, src.server_private);
    let new_public = pubkey(&new_private);
    assert!(env.read("server.yml").contains(&new_public));
    assert_eq!(env.mode("server.key"), 0o600);
    let dir = env.tmp.path().join("reissued");
    env.run(&[
        "peer",
        "config",
        "--all",
        "--out-dir",
        dir.to_str().unwrap(),
    ])
    .ok();
    for name in ["alice", "bob", "carol"] {
        let text = fs::read_to_string(dir.join(format!("{name}.conf"))).unwrap();
        assert!(
            text.contains(&format!("PublicKey = {new_public}")),
            "{text}"
        );
        assert!(!text.contains(&old_public));
    }
    // Peers keep their keys: only the server's changed.
    assert_eq!(env.read("peers/alice.key").trim(), src.peers[0].private);
    let r = rendered(&env);
    assert_eq!(r.private_key, new_private);
    assert_eq!(r.peers, normalise(&src.conf).peers);
    env.run(&["check", "--keys"]).ok();
    let _ = src.dir;
}
