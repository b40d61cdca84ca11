//! `wgadm netbox sync` and `peer add --ipam netbox` against a real NetBox (IR-006).
//!
//! `tests/netbox/test.sh` (`make test-netbox`) installs and starts NetBox on 127.0.0.1 and runs
//! these with WGADM_TEST_NETBOX_URL and WGADM_TEST_NETBOX_TOKEN_FILE set. Without them the
//! ignored tests fail: they never pass without having talked to NetBox (`make test` skips them
//! in its first cargo run by their prefix `real_netbox_` and runs them in `make test-netbox`).
//! The tests share one NetBox, so they run one at a time, each with a subnet and names of its own.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use common::{snapshot, Env, Run};
use serde_json::{json, Value};

/// One test at a time: they share the NetBox (and its tag and custom fields).
static NETBOX: Mutex<()> = Mutex::new(());

/// The NetBox the test script started.
struct NetBox {
    url: String,
    token_file: PathBuf,
    auth: String,
    agent: ureq::Agent,
}

impl NetBox {
    fn from_env() -> NetBox {
        let var = |name: &str| {
            std::env::var(name).unwrap_or_else(|_| {
                panic!("{name} is not set: run these tests with tests/netbox/test.sh (make test-netbox)")
            })
        };
        let url = var("WGADM_TEST_NETBOX_URL");
        let token_file = PathBuf::from(var("WGADM_TEST_NETBOX_TOKEN_FILE"));
        let token = std::fs::read_to_string(&token_file)
            .unwrap()
            .trim()
            .to_owned();
        let auth = if token.starts_with("nbt_") {
            format!("Bearer {token}")
        } else {
            format!("Token {token}")
        };
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .new_agent();
        NetBox {
            url,
            token_file,
            auth,
            agent,
        }
    }

    fn api(&self, path: &str) -> String {
        format!("{}/api/{path}", self.url)
    }

    /// GETs a list endpoint with filters (all pages NetBox gives at once: the tests stay small).
    fn list(&self, endpoint: &str, query: &[(&str, &str)]) -> Vec<Value> {
        let mut req = self
            .agent
            .get(self.api(endpoint))
            .header("Authorization", &self.auth)
            .query("limit", "1000");
        for (k, v) in query {
            req = req.query(*k, *v);
        }
        let mut resp = req.call().unwrap();
        assert_eq!(resp.status(), 200, "GET {endpoint}");
        let body: Value = resp.body_mut().read_json().unwrap();
        body["results"].as_array().unwrap().clone()
    }

    /// The one object matching the filters.
    fn one(&self, endpoint: &str, query: &[(&str, &str)]) -> Value {
        let all = self.list(endpoint, query);
        assert_eq!(all.len(), 1, "{endpoint} {query:?}: {all:#?}");
        all[0].clone()
    }

    fn create(&self, endpoint: &str, body: Value) -> Value {
        let mut resp = self
            .agent
            .post(self.api(endpoint))
            .header("Authorization", &self.auth)
            .send_json(&body)
            .unwrap();
        let status = resp.status();
        let body: Value = resp.body_mut().read_json().unwrap();
        assert_eq!(status, 201, "POST {endpoint}: {body}");
        body
    }

    /// The IP addresses in a prefix, by host address.
    fn addresses(&self, subnet: &str) -> Vec<Value> {
        self.list("ipam/ip-addresses/", &[("parent", subnet)])
    }

    fn address(&self, host: &str) -> Value {
        self.one("ipam/ip-addresses/", &[("address", host)])
    }

    /// `--netbox-url URL --netbox-token-file F`.
    fn args(&self) -> Vec<String> {
        vec![
            "--netbox-url".into(),
            self.url.clone(),
            "--netbox-token-file".into(),
            self.token_file.display().to_string(),
        ]
    }
}

fn tagged(object: &Value) -> bool {
    object["tags"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["slug"] == "wgadm")
}

fn run(env: &Env, args: &[&str], netbox: &NetBox) -> Run {
    let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    all.extend(netbox.args());
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    env.run(&all)
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// A lab state: a server and peers in `subnet`, one of them expired.
fn lab(subnet: &str) -> Env {
    let env = Env::new();
    env.init(&["--subnet", subnet]);
    env.run(&["peer", "add", "alice"]).ok();
    env.run(&["peer", "add", "bob"]).ok();
    env.run(&["peer", "add", "carol", "--expires", "2020-01-01"])
        .ok();
    env
}

fn host(subnet: &str, last: u8) -> String {
    let net = subnet.split('/').next().unwrap();
    let mut parts: Vec<&str> = net.split('.').collect();
    let last = last.to_string();
    parts[3] = &last;
    parts.join(".")
}

#[test]
#[ignore = "needs a NetBox: run via the README's test command"]
fn real_netbox_sync_puts_the_server_tunnel_and_peers_in_netbox_and_a_second_run_changes_nothing() {
    let _one = NETBOX.lock().unwrap_or_else(|e| e.into_inner());
    let nb = NetBox::from_env();
    let subnet = "10.77.1.0/24";
    let env = lab(subnet);
    let sync = [
        "netbox",
        "sync",
        "--json",
        "--vm-name",
        "vpn-t1",
        "--cluster",
        "pve-t1",
        "--vmid",
        "90",
    ];

    let started = std::time::Instant::now();
    let out = json_of(&run(&env, &sync, &nb).ok());
    eprintln!("first sync: {:?}", started.elapsed());
    assert_eq!(out["changed"], true, "{out:#}");
    assert_eq!(out["dry_run"], false);
    assert!(out["skipped"].as_array().unwrap().is_empty(), "{out:#}");
    assert!(out["warnings"].as_array().unwrap().is_empty(), "{out:#}");
    let created: BTreeSet<&str> = out["created"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["object"].as_str().unwrap())
        .collect();
    for kind in [
        "ipam.prefix",
        "ipam.ipaddress",
        "virtualization.cluster",
        "virtualization.virtualmachine",
        "virtualization.vminterface",
        "vpn.tunnel",
        "vpn.tunneltermination",
    ] {
        assert!(created.contains(kind), "{kind} not created: {out:#}");
    }

    // Every object, read back through the API.
    let prefix = nb.one("ipam/prefixes/", &[("prefix", subnet)]);
    assert!(tagged(&prefix));
    assert_eq!(prefix["status"]["value"], "active");
    let cluster = nb.one("virtualization/clusters/", &[("name", "pve-t1")]);
    assert_eq!(cluster["type"]["name"], "LXC");
    let vm = nb.one("virtualization/virtual-machines/", &[("name", "vpn-t1")]);
    assert!(tagged(&vm));
    assert_eq!(vm["cluster"]["id"], cluster["id"]);
    assert_eq!(vm["custom_fields"]["wgadm_vmid"], 90);
    let vm_id = vm["id"].to_string();
    let interfaces = nb.list(
        "virtualization/interfaces/",
        &[("virtual_machine_id", vm_id.as_str())],
    );
    let names: BTreeSet<&str> = interfaces
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, BTreeSet::from(["eth0", "wg0"]));
    let wg0 = interfaces.iter().find(|i| i["name"] == "wg0").unwrap();
    let server = nb.address(&host(subnet, 1));
    assert_eq!(server["address"], "10.77.1.1/24");
    assert_eq!(server["assigned_object_type"], "virtualization.vminterface");
    assert_eq!(server["assigned_object_id"], wg0["id"]);
    assert!(tagged(&server));
    let tunnel = nb.one("vpn/tunnels/", &[("name", "vpn-t1-wg0")]);
    assert_eq!(tunnel["encapsulation"]["value"], "wireguard");
    assert_eq!(tunnel["status"]["value"], "active");
    let tunnel_id = tunnel["id"].to_string();
    let hub = nb.one(
        "vpn/tunnel-terminations/",
        &[("tunnel_id", tunnel_id.as_str())],
    );
    assert_eq!(hub["role"]["value"], "hub");
    assert_eq!(hub["termination_type"], "virtualization.vminterface");
    assert_eq!(hub["termination_id"], wg0["id"]);
    let peers = json_of(&env.run(&["--json", "peer", "list"]).ok());
    for p in peers.as_array().unwrap() {
        let ip = nb.address(p["address"].as_str().unwrap());
        assert!(tagged(&ip), "{ip:#}");
        assert_eq!(ip["custom_fields"]["wgadm_peer"], p["name"]);
        assert_eq!(ip["custom_fields"]["wgadm_public_key"], p["public_key"]);
        let status = if p["name"] == "carol" {
            "deprecated"
        } else {
            "active"
        };
        assert_eq!(ip["status"]["value"], status, "{}", p["name"]);
    }

    // Again: nothing to do, and --dry-run says so too.
    let started = std::time::Instant::now();
    let again = json_of(&run(&env, &sync, &nb).ok());
    eprintln!("second sync (no changes): {:?}", started.elapsed());
    assert_eq!(again["changed"], false, "{again:#}");
    for list in ["created", "updated", "deleted", "skipped", "steps"] {
        assert!(again[list].as_array().unwrap().is_empty(), "{again:#}");
    }
    let mut dry: Vec<&str> = sync.to_vec();
    dry.push("--dry-run");
    let dry = json_of(&run(&env, &dry, &nb).ok());
    assert_eq!(
        (dry["changed"].clone(), dry["dry_run"].clone()),
        (json!(false), json!(true))
    );
    let text = run(&env, &sync[..2], &nb).ok();
    assert!(
        text.contains("is in sync: nothing to do")
            || text.contains("would")
            || text.contains("did"),
        "{text}"
    );
}

#[test]
#[ignore = "needs a NetBox: run via the README's test command"]
fn real_netbox_disabled_and_removed_peers_change_status_or_go_and_hand_made_objects_stay() {
    let _one = NETBOX.lock().unwrap_or_else(|e| e.into_inner());
    let nb = NetBox::from_env();
    let subnet = "10.77.2.0/24";
    let env = lab(subnet);
    let sync = [
        "netbox",
        "sync",
        "--vm-name",
        "vpn-t2",
        "--cluster",
        "pve-t2",
    ];
    run(&env, &sync, &nb).ok();
    // Made by hand in the same prefix: one address alone, one where a peer will go.
    let loose = nb.create(
        "ipam/ip-addresses/",
        json!({"address": format!("{}/24", host(subnet, 200)), "status": "reserved",
               "description": "printer"}),
    );
    let squatter = nb.create(
        "ipam/ip-addresses/",
        json!({"address": format!("{}/24", host(subnet, 201)), "status": "reserved"}),
    );
    env.run(&["peer", "disable", "bob"]).ok();
    env.run(&["peer", "remove", "alice"]).ok();
    let dave_address = host(subnet, 201);
    env.run(&["peer", "add", "dave", "--address", &dave_address])
        .ok();
    let alice = nb.address(&host(subnet, 2));

    // The plan first: it names every change, and changes nothing.
    let mut dry: Vec<&str> = sync.to_vec();
    dry.push("--dry-run");
    let plan = run(&env, &dry, &nb).ok();
    assert!(
        plan.contains(&format!(
            "would: update IP address {}/24 (peer bob)",
            host(subnet, 3)
        )),
        "{plan}"
    );
    assert!(plan.contains("status active -> deprecated"), "{plan}");
    assert!(
        plan.contains(&format!("would: delete IP address {}/24", host(subnet, 2))),
        "{plan}"
    );
    assert!(plan.contains("skipped: IP address"), "{plan}");
    assert_eq!(nb.address(&host(subnet, 3))["status"]["value"], "active");

    let out = json_of(
        &run(
            &env,
            &[
                "--json",
                "netbox",
                "sync",
                "--vm-name",
                "vpn-t2",
                "--cluster",
                "pve-t2",
            ],
            &nb,
        )
        .ok(),
    );
    assert_eq!(out["changed"], true);
    let updated = &out["updated"][0];
    assert_eq!(
        updated["changes"]["status"],
        json!({"from": "active", "to": "deprecated"})
    );
    assert_eq!(out["deleted"][0]["id"], alice["id"], "{out:#}");
    assert_eq!(out["skipped"][0]["id"], squatter["id"], "{out:#}");
    let reason = out["skipped"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("not created by wgadm"), "{reason}");

    assert_eq!(
        nb.address(&host(subnet, 3))["status"]["value"],
        "deprecated"
    );
    assert!(nb
        .list(
            "ipam/ip-addresses/",
            &[("address", host(subnet, 2).as_str())]
        )
        .is_empty());
    // What wgadm did not make is as it was.
    let loose_now = nb.address(&host(subnet, 200));
    assert_eq!(loose_now["status"]["value"], "reserved");
    assert_eq!(loose_now["last_updated"], loose["last_updated"]);
    let squatter_now = nb.address(&dave_address);
    assert_eq!(squatter_now["last_updated"], squatter["last_updated"]);
    assert!(!tagged(&squatter_now));

    // Tagging it hands it to wgadm: the next sync makes it dave's.
    let mut req = nb
        .agent
        .patch(nb.api(&format!("ipam/ip-addresses/{}/", squatter["id"])))
        .header("Authorization", &nb.auth);
    req = req.header("Content-Type", "application/json");
    let resp = req.send_json(json!({"tags": [{"slug": "wgadm"}]})).unwrap();
    assert_eq!(resp.status(), 200);
    let out = json_of(
        &run(
            &env,
            &[
                "--json",
                "netbox",
                "sync",
                "--vm-name",
                "vpn-t2",
                "--cluster",
                "pve-t2",
            ],
            &nb,
        )
        .ok(),
    );
    assert_eq!(out["updated"].as_array().unwrap().len(), 1, "{out:#}");
    assert_eq!(
        nb.address(&dave_address)["custom_fields"]["wgadm_peer"],
        "dave"
    );
    let out = json_of(
        &run(
            &env,
            &[
                "--json",
                "netbox",
                "sync",
                "--vm-name",
                "vpn-t2",
                "--cluster",
                "pve-t2",
            ],
            &nb,
        )
        .ok(),
    );
    assert_eq!(out["changed"], false, "{out:#}");
    assert_eq!(
        nb.addresses(subnet).len(),
        5,
        "server, bob, carol, dave, printer"
    );
}

#[test]
#[ignore = "needs a NetBox: run via the README's test command"]
fn real_netbox_concurrent_ipam_netbox_adds_get_different_addresses() {
    let _one = NETBOX.lock().unwrap_or_else(|e| e.into_inner());
    let nb = NetBox::from_env();
    let subnet = "10.77.3.0/24";
    let env = lab(subnet);

    // Before a sync NetBox does not know the prefix: wgadm says what to do.
    let before = env.snapshot();
    run(&env, &["peer", "add", "early", "--ipam", "netbox"], &nb)
        .fails_with(&["10.77.3.0/24", "wgadm netbox sync"]);
    assert_eq!(env.snapshot(), before, "the state changed");

    run(
        &env,
        &[
            "netbox",
            "sync",
            "--vm-name",
            "vpn-t3",
            "--cluster",
            "pve-t3",
        ],
        &nb,
    )
    .ok();
    // A second administrator with a copy of the state: the lock on one directory does not
    // serialize the two, only NetBox does.
    let other = Env::new();
    copy_dir(&env.state, &other.state);
    let count = 4;
    let children: Vec<_> = (0..count)
        .map(|i| {
            let who = if i % 2 == 0 { &env } else { &other };
            let mut cmd = who.cmd();
            cmd.args([
                "--json",
                "peer",
                "add",
                &format!("laptop{i}"),
                "--ipam",
                "netbox",
            ])
            .args(nb.args())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
            cmd.spawn().unwrap()
        })
        .collect();
    let mut addresses = BTreeSet::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v = json_of(&stdout);
        let address = v["address"].as_str().unwrap().to_owned();
        let ip = nb.address(&address);
        assert_eq!(ip["id"], v["netbox_ip_id"]);
        assert_eq!(ip["custom_fields"]["wgadm_peer"], v["name"]);
        assert_eq!(ip["custom_fields"]["wgadm_public_key"], v["public_key"]);
        assert!(tagged(&ip));
        addresses.insert(address);
    }
    assert_eq!(
        addresses.len(),
        count,
        "two adds got the same address: {addresses:?}"
    );

    // The address is the peer's record: a sync of its state finds nothing to change for it.
    let out = json_of(
        &run(
            &env,
            &[
                "--json",
                "netbox",
                "sync",
                "--vm-name",
                "vpn-t3",
                "--cluster",
                "pve-t3",
                "--dry-run",
            ],
            &nb,
        )
        .ok(),
    );
    let updated = out["updated"].as_array().unwrap();
    assert!(updated.is_empty(), "{out:#}");

    // When the local add fails after NetBox handed out an address, the address goes back.
    let ips_before = nb.addresses(subnet).len();
    let before = env.snapshot();
    run(
        &env,
        &[
            "peer",
            "add",
            "unlucky",
            "--ipam",
            "netbox",
            "--config-out",
            "/nonexistent/dir/unlucky.conf",
        ],
        &nb,
    )
    .fails_with(&["/nonexistent/dir/unlucky.conf"]);
    assert_eq!(env.snapshot(), before);
    assert_eq!(
        nb.addresses(subnet).len(),
        ips_before,
        "the address stayed taken"
    );
}

#[test]
#[ignore = "needs a NetBox: run via the README's test command"]
fn real_netbox_a_bad_token_or_an_unreachable_netbox_is_a_clear_error_and_the_state_stays() {
    let _one = NETBOX.lock().unwrap_or_else(|e| e.into_inner());
    let nb = NetBox::from_env();
    let env = lab("10.77.4.0/24");
    let bad = env.tmp.path().join("bad-token");
    let secret = "nbt_AAAAAAAAAAAA.wrongwrongwrongwrongwrongwrongwrongwrong";
    std::fs::write(&bad, format!("{secret}\n")).unwrap();
    chmod600(&bad);
    let before = env.snapshot();
    let with_bad = |args: &[&str]| {
        let mut all: Vec<&str> = args.to_vec();
        let bad = bad.to_str().unwrap();
        all.extend(["--netbox-url", &nb.url, "--netbox-token-file", bad]);
        env.run(&all)
    };
    for args in [
        &["netbox", "sync"][..],
        &["peer", "add", "eve", "--ipam", "netbox"][..],
    ] {
        let err =
            with_bad(args).fails_with(&["refused the API token", "HTTP 403", "Invalid v2 token"]);
        assert!(!err.contains("wrongwrong"), "the token leaked: {err}");
        assert_eq!(env.snapshot(), before, "{args:?} changed the state");
    }
    // The token from the environment, and no token at all.
    let mut cmd = env.cmd();
    cmd.args(["netbox", "sync", "--netbox-url", &nb.url])
        .env("WGADM_NETBOX_TOKEN", secret)
        .env_remove("NETBOX_TOKEN")
        .env_remove("WGADM_NETBOX_TOKEN_FILE");
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refused the API token") && !err.contains("wrongwrong"),
        "{err}"
    );
    let mut cmd = env.cmd();
    cmd.args(["netbox", "sync", "--netbox-url", &nb.url])
        .env_remove("WGADM_NETBOX_TOKEN")
        .env_remove("NETBOX_TOKEN")
        .env_remove("WGADM_NETBOX_TOKEN_FILE");
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no NetBox API token"),
        "{err}"
    );

    // Nothing listens on 127.0.0.1:9.
    let token = nb.token_file.to_str().unwrap();
    for args in [
        &["netbox", "sync"][..],
        &["peer", "add", "eve", "--ipam", "netbox"][..],
    ] {
        let mut all: Vec<&str> = args.to_vec();
        all.extend([
            "--netbox-url",
            "http://127.0.0.1:9",
            "--netbox-token-file",
            token,
        ]);
        env.run(&all)
            .fails_with(&["cannot reach NetBox at http://127.0.0.1:9", "--netbox-url"]);
        assert_eq!(env.snapshot(), before);
    }
}

fn copy_dir(from: &Path, to: &Path) {
    for (path, (bytes, mode)) in snapshot(from) {
        let rel = path.strip_prefix(from).unwrap();
        let dest = to.join(rel);
        if std::fs::metadata(&path).unwrap().is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
        } else {
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            std::fs::write(&dest, bytes).unwrap();
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode)).unwrap();
    }
}

/// A one-shot HTTP server on 127.0.0.1 that answers every request with `body`.
fn fake_netbox(body: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().take(4) {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
}

/// Runs without a NetBox: a fake one on 127.0.0.1 that is too old, or is no NetBox at all.
#[test]
fn an_old_netbox_or_something_else_is_refused_with_the_version_needed() {
    let env = Env::new();
    env.init(&[]);
    let token = env.tmp.path().join("token");
    std::fs::write(&token, "0123456789abcdef0123456789abcdef01234567\n").unwrap();
    chmod600(&token);
    let before = env.snapshot();
    let attempt = |url: &str| {
        env.run(&[
            "netbox",
            "sync",
            "--netbox-url",
            url,
            "--netbox-token-file",
            token.to_str().unwrap(),
        ])
    };
    let old = fake_netbox(r#"{"netbox-version": "3.7.8", "django-version": "4.2"}"#);
    attempt(&old).fails_with(&[
        "NetBox 3.7.8 is too old",
        "4.0.0 or later",
        "4.1.8 or later",
    ]);
    let other = fake_netbox(r#"{"hello": "world"}"#);
    attempt(&other).fails_with(&["did not answer like NetBox's REST API", "netbox-version"]);
    attempt("ftp://127.0.0.1/").fails_with(&["not an http:// or https:// URL"]);
    assert_eq!(env.snapshot(), before);
}

fn chmod600(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// Runs without a NetBox: a token file others can read, or a symbolic link to one, is refused
/// before any connection, without the token in the message, and the state stays.
#[test]
fn a_token_file_others_can_read_or_a_link_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    env.init(&[]);
    let secret = "0123456789abcdef0123456789abcdef01234567";
    let token = env.tmp.path().join("token");
    std::fs::write(&token, format!("{secret}\n")).unwrap();
    let link = env.tmp.path().join("token-link");
    std::os::unix::fs::symlink(&token, &link).unwrap();
    let before = env.snapshot();
    // A NetBox that would accept anything: the refusal must come before the connection.
    let url = fake_netbox(r#"{"netbox-version": "4.3.0", "django-version": "5.2"}"#);
    let attempt = |file: &Path| {
        env.run(&[
            "netbox",
            "sync",
            "--dry-run",
            "--netbox-url",
            &url,
            "--netbox-token-file",
            file.to_str().unwrap(),
        ])
    };
    for mode in [0o644, 0o640, 0o604] {
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(mode)).unwrap();
        let err = attempt(&token).fails_with(&[
            token.to_str().unwrap(),
            &format!("has mode {mode:o}"),
            "chmod 600",
        ]);
        assert!(!err.contains(secret), "the token leaked: {err}");
    }
    chmod600(&token);
    let err = attempt(&link).fails_with(&["symbolic link", link.to_str().unwrap()]);
    assert!(!err.contains(secret), "the token leaked: {err}");
    assert_eq!(env.snapshot(), before);
}
