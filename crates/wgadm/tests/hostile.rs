//! Hostile and hand-broken state files and arguments: each is refused with a message that names
//! the file, the line or field and what is expected, never quotes a secret, exits non-zero and
//! leaves the state byte for byte as it was.

mod common;

use std::time::Instant;

use common::Env;

/// Runs `args`, expects failure mentioning every needle and none of `secrets`, and checks that
/// nothing in the state changed. Returns stderr.
#[track_caller]
fn refused(env: &Env, args: &[&str], needles: &[&str], secrets: &[&str]) -> String {
    let before = env.snapshot();
    let run = env.run(args);
    for s in secrets {
        assert!(
            !run.stderr.contains(s) && !run.stdout.contains(s),
            "`{}` printed a secret:\n{}{}",
            args.join(" "),
            run.stdout,
            run.stderr
        );
    }
    let err = run.fails_with(needles);
    assert_eq!(
        before,
        env.snapshot(),
        "the state changed after a refused `{}`",
        args.join(" ")
    );
    err
}

/// The base64 of a key file (plaintext state), what must never appear in a message.
fn key_text(env: &Env, rel: &str) -> String {
    env.read(rel).trim().to_owned()
}

/// Every command that reads the state refuses it, naming `file`.
#[track_caller]
fn every_reader_refuses(env: &Env, needles: &[&str], secrets: &[&str]) {
    for args in [
        &["check"][..],
        &["peer", "list"],
        &["render"],
        &["peer", "add", "zed"],
        &["--json", "check"],
    ] {
        refused(env, args, needles, secrets);
    }
}

#[test]
fn a_key_file_over_a_peer_file_is_refused_without_printing_the_key() {
    let env = Env::new();
    env.init(&[]);
    env.run(&["peer", "add", "alice"]).ok();
    env.run(&["peer", "add", "bob"]).ok();
    let alice_key = key_text(&env, "peers/alice.key");
    let server_key = key_text(&env, "server.key");
    std::fs::copy(env.path("peers/alice.key"), env.path("peers/bob.yml")).unwrap();
    every_reader_refuses(
        &env,
        &[
            "peers/bob.yml: holds a single line of text",
            "address, public_key",
            "restore it from a backup",
        ],
        &[&alice_key, &server_key],
    );
}

#[test]
fn a_peer_file_linked_to_the_server_key_never_prints_it() {
    let env = Env::new();
    env.init(&[]);
    let server_key = key_text(&env, "server.key");
    std::os::unix::fs::symlink("../server.key", env.path("peers/x.yml")).unwrap();
    // Refused whether the link is read (this message) or refused as a link: either way the
    // message names the file and holds no key.
    every_reader_refuses(&env, &["peers/x.yml"], &[&server_key]);
}

#[test]
fn a_bad_value_or_an_unknown_field_is_named_without_the_value() {
    let env = Env::new();
    env.init(&[]);
    env.run(&["peer", "add", "alice"]).ok();
    let secret = key_text(&env, "peers/alice.key");
    let original = env.read("peers/alice.yml");

    let bad = original.replace("keepalive: 25", &format!("keepalive: {secret}"));
    std::fs::write(env.path("peers/alice.yml"), bad).unwrap();
    refused(
        &env,
        &["check"],
        &["peers/alice.yml: line 3, column 12: field `keepalive`: expected a number of seconds"],
        &[&secret],
    );

    let bad = format!("{original}{secret}: 1\n");
    std::fs::write(env.path("peers/alice.yml"), bad).unwrap();
    refused(
        &env,
        &["check"],
        &["peers/alice.yml: line 5, column 1: an unknown field: a peer file has only the fields"],
        &[&secret],
    );

    let bad = format!("{original}colour: blue\n");
    std::fs::write(env.path("peers/alice.yml"), bad).unwrap();
    refused(
        &env,
        &["check"],
        &["peers/alice.yml: line 5, column 1: the unknown field `colour`"],
        &[&secret],
    );
}

#[test]
fn a_hand_edited_endpoint_cannot_add_a_line_to_client_configs() {
    let env = Env::new();
    env.init(&[]);
    env.run(&["peer", "add", "alice"]).ok();
    let server = env.read("server.yml");
    for injected in [
        // A YAML escape and a literal block: both give a value with a line break.
        "endpoint: \"vpn.example.com:51820\\nPostUp = touch /tmp/wgadm-pwned\"",
        "endpoint: |\n  vpn.example.com:51820\n  PostUp = touch /tmp/wgadm-pwned",
        "endpoint: vpn.example.com:51820 # PostUp",
        "endpoint: \"vpn.example.com:51820 #PostUp\"",
        "endpoint: \"vpn.example.com:51820\\rPostUp = x\"",
        "endpoint: 2001:db8::1:51820",
        "endpoint: vpn.example.com",
        "endpoint: vpn.example.com:0",
    ] {
        let bad = server.replace("endpoint: vpn.example.com:51820", injected);
        assert_ne!(bad, server);
        std::fs::write(env.path("server.yml"), &bad).unwrap();
        // `# PostUp` is a YAML comment: that file is valid and its endpoint harmless.
        if injected == "endpoint: vpn.example.com:51820 # PostUp" {
            let conf = env.run(&["peer", "config", "alice"]).ok();
            assert!(!conf.contains("PostUp"), "{conf}");
            continue;
        }
        for args in [&["check"][..], &["peer", "config", "alice"], &["render"]] {
            let err = refused(
                &env,
                args,
                &[
                    "server.yml: line 5, column",
                    "field `endpoint`: expected HOST:PORT",
                ],
                &[],
            );
            assert!(!err.contains("PostUp"), "{err}");
        }
    }
}

#[test]
fn init_takes_only_a_host_and_port_as_endpoint() {
    let env = Env::new();
    for bad in [
        "vpn.example.com:51820\nPostUp = touch /tmp/wgadm-pwned",
        "vpn.example.com#x",
        "a b",
        "vpn.example.com:0",
        "vpn.example.com:65536",
        "2001:db8::1",
        "[2001:db8::1",
        "-bad.example.com",
        "1.2.3",
        "",
    ] {
        refused(
            &env,
            &["init", &format!("--endpoint={bad}")],
            &["--endpoint", "give HOST or HOST:PORT"],
            &[],
        );
        assert!(!env.state.exists(), "a failed init left a directory behind");
    }
    for (given, stored) in [
        ("vpn.example.com", "endpoint: vpn.example.com:51820\n"),
        ("[2001:db8::1]", "endpoint: '[2001:db8::1]:51820'\n"),
        ("192.0.2.1:443", "endpoint: 192.0.2.1:443\n"),
    ] {
        env.run(&["init", "--endpoint", given, "--force"]).ok();
        let server = env.read("server.yml");
        assert!(server.contains(stored), "{server}");
    }
}

#[test]
fn nested_brackets_and_oversized_files_are_refused_in_milliseconds() {
    let env = Env::new();
    env.init(&[]);
    env.run(&["peer", "add", "alice"]).ok();
    // The file: 200 KB of '[' (took over a minute), and one under the size limit.
    for (file, text, needle) in [
        (
            "peers/bomb.yml",
            "[".repeat(200_000),
            "is larger than 64 KiB",
        ),
        (
            "peers/bomb.yml",
            format!("address: {}", "{a: ".repeat(16_000)),
            "line 1, column 138: more than 32 '[' or '{'",
        ),
        (
            "server.yml",
            format!("{}x: {}", env.read("server.yml"), "[".repeat(60_000)),
            "more than 32 '[' or '{'",
        ),
    ] {
        let original = std::fs::read(env.path(file)).ok();
        std::fs::write(env.path(file), &text).unwrap();
        for args in [&["check"][..], &["peer", "list"]] {
            let start = Instant::now();
            refused(&env, args, &[file, needle], &[]);
            println!(
                "{file} ({} bytes): `{}` refused in {} ms",
                text.len(),
                args.join(" "),
                start.elapsed().as_millis()
            );
        }
        match original {
            Some(bytes) => std::fs::write(env.path(file), bytes).unwrap(),
            None => std::fs::remove_file(env.path(file)).unwrap(),
        }
    }
    env.run(&["check"]).ok();
}

#[test]
fn a_byte_order_mark_is_tolerated() {
    let env = Env::new();
    env.init(&[]);
    env.run(&["peer", "add", "alice"]).ok();
    for file in ["server.yml", "peers/alice.yml"] {
        let text = format!("\u{feff}{}", env.read(file));
        std::fs::write(env.path(file), text).unwrap();
    }
    env.run(&["check"]).ok();
    assert!(env.run(&["peer", "list"]).ok().contains("alice"));
}

#[test]
fn low_order_public_keys_are_refused() {
    let env = Env::new();
    env.init(&[]);
    env.run(&["peer", "add", "alice"]).ok();
    let zero = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    // p + 1 with the top bit set: a non-canonical encoding of the point 1.
    let p_plus_one = "7v////////////////////////////////////////8=";
    for key in [zero, p_plus_one] {
        refused(
            &env,
            &["peer", "add", "bob", "--public-key", key],
            &[
                "--public-key",
                "low-order X25519 point",
                "wg genkey | wg pubkey",
            ],
            &[],
        );
        refused(
            &env,
            &["peer", "rotate", "alice", "--public-key", key],
            &["low-order X25519 point"],
            &[],
        );
    }
    let peer = env.read("peers/alice.yml");
    let real = peer
        .lines()
        .find_map(|l| l.strip_prefix("public_key: "))
        .unwrap()
        .to_owned();
    std::fs::write(env.path("peers/alice.yml"), peer.replace(&real, zero)).unwrap();
    let server = env.read("server.yml");
    let server_real = server
        .lines()
        .find_map(|l| l.strip_prefix("public_key: "))
        .unwrap()
        .to_owned();
    std::fs::write(
        env.path("server.yml"),
        server.replace(&server_real, p_plus_one),
    )
    .unwrap();
    let err = refused(
        &env,
        &["check"],
        &[
            "server.yml: public_key: is a low-order X25519 point",
            "peers/alice.yml: public_key: is a low-order X25519 point",
        ],
        &[],
    );
    assert!(!err.contains(zero), "{err}");
}

#[test]
fn subnets_are_bounded_and_clear_of_the_deny_list() {
    let env = Env::new();
    refused(
        &env,
        &["init", "--endpoint", "x.example", "--subnet", "0.0.0.0/0"],
        &[
            "server.yml: subnet: 0.0.0.0/0 is larger than a /8",
            "/8 to /30",
        ],
        &[],
    );
    refused(
        &env,
        &[
            "init",
            "--endpoint",
            "x.example",
            "--subnet",
            "172.16.10.0/24",
        ],
        &["server.yml: deny: 172.16.10.0/24 covers the server's own address 172.16.10.1"],
        &[],
    );
    refused(
        &env,
        &[
            "init",
            "--endpoint",
            "x.example",
            "--subnet",
            "192.168.100.0/24",
            "--deny",
            "192.168.100.128/25",
        ],
        &["server.yml: subnet: 192.168.100.0/24 overlaps the denied range 192.168.100.128/25"],
        &[],
    );
    assert!(!env.state.exists(), "a failed init left a directory behind");
    env.run(&["init", "--endpoint", "x.example", "--subnet", "10.0.0.0/8"])
        .ok();

    // The same on a hand-edited server.yml.
    env.init(&["--force"]);
    let server = env.read("server.yml");
    std::fs::write(
        env.path("server.yml"),
        server.replace("subnet: 192.168.100.0/24", "subnet: 0.0.0.0/0"),
    )
    .unwrap();
    refused(
        &env,
        &["check"],
        &["server.yml: subnet: 0.0.0.0/0 is larger than a /8"],
        &[],
    );
}

#[test]
fn expiry_dates_are_from_1970_to_9999() {
    let env = Env::new();
    env.init(&[]);
    env.run(&["peer", "add", "alice"]).ok();
    refused(
        &env,
        &["peer", "add", "bob", "--expires", "0999-01-01"],
        &["--expires", "from 1970-01-01 to 9999-12-31"],
        &[],
    );
    let peer = env.read("peers/alice.yml");
    std::fs::write(
        env.path("peers/alice.yml"),
        format!("{peer}expires: 0999-01-01\n"),
    )
    .unwrap();
    refused(
        &env,
        &["check"],
        &["peers/alice.yml: line 5, column 10: field `expires`: expected a date YYYY-MM-DD from 1970-01-01 to 9999-12-31"],
        &[],
    );
}

#[test]
fn an_unreadable_server_yml_is_named_not_the_directory() {
    let env = Env::new();
    env.init(&[]);
    std::fs::remove_file(env.path("server.yml")).unwrap();
    std::fs::create_dir(env.path("server.yml")).unwrap();
    let err = refused(&env, &["check"], &["server.yml"], &[]);
    let dir = env.state.display().to_string();
    assert!(
        err.contains(&format!("{dir}/server.yml")),
        "the message should name the file:\n{err}"
    );
}

#[test]
fn a_file_name_with_a_line_break_cannot_forge_a_message_line() {
    let env = Env::new();
    env.init(&[]);
    std::fs::write(
        env.path("peers/a\nPostUp = x\u{1b}[31m.yml"),
        "address: 192.168.100.9\n",
    )
    .unwrap();
    let err = refused(
        &env,
        &["check"],
        &["peers/\"a\\nPostUp = x\\u{1b}[31m.yml\"", "rename the file"],
        &[],
    );
    assert!(
        !err.lines().any(|l| l.starts_with("PostUp")) && !err.contains('\u{1b}'),
        "{err}"
    );
}
