//! One vault mode and one password per state (server.key's), `wgadm vault
//! encrypt|decrypt|rekey`, and a server.key that is not server.yml's: every refusal names the
//! file and leaves the state byte for byte as it was; key files are checked with the real
//! `ansible-vault`.

mod common;

use std::path::{Path, PathBuf};

use common::{tool, Env};

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

/// The same state directory seen with another password file (or none).
fn with_password(env: &Env, password: Option<&Path>) -> Env {
    let mut other = Env::new();
    other.state = env.state.clone();
    other.vault_password = password.map(Path::to_owned);
    other
}

fn password_file(env: &Env, name: &str, password: &str) -> PathBuf {
    let path = env.tmp.path().join(name);
    std::fs::write(&path, format!("{password}\n")).unwrap();
    path
}

/// `ansible-vault ACTION FILE` with `password`; Ok(stdout) or Err(stderr).
fn ansible_vault(env: &Env, action: &str, file: &Path, password: &Path) -> Result<String, String> {
    let out = tool("ansible-vault")
        .current_dir(env.tmp.path())
        .args([action, file.to_str().unwrap(), "--vault-password-file"])
        .arg(password)
        .env_remove("ANSIBLE_VAULT_PASSWORD_FILE")
        .env_remove("ANSIBLE_CONFIG")
        .env("ANSIBLE_LOCAL_TEMP", env.tmp.path())
        .output()
        .unwrap();
    match out.status.success() {
        true => Ok(String::from_utf8(out.stdout).unwrap()),
        false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
    }
}

fn is_vault(env: &Env, rel: &str) -> bool {
    env.read(rel).starts_with("$ANSIBLE_VAULT;")
}

const KEY_FILES: [&str; 4] = [
    "server.key",
    "peers/alice.key",
    "peers/alice.psk",
    "peers/bob.key",
];

#[test]
fn init_force_keeps_the_state_vault_mode_and_password() {
    let env = Env::with_vault();
    env.init(&[]);
    env.run(&["peer", "add", "alice", "--preshared-key"]).ok();
    let other = password_file(&env, "other-pass", "another password");
    let force = ["init", "--endpoint", "vpn.example.com", "--force"];

    refused(
        &with_password(&env, None),
        &force,
        &[
            "server.key is encrypted with Ansible Vault",
            "--vault-password-file",
        ],
    );
    refused(
        &with_password(&env, Some(&other)),
        &force,
        &["does not open", "server.key", "wgadm vault rekey"],
    );
    // The state's own password: a new key pair, still in the vault, under the same password.
    let old = env.read("server.key");
    env.run(&force).ok();
    assert_ne!(old, env.read("server.key"));
    assert!(is_vault(&env, "server.key"));
    ansible_vault(
        &env,
        "view",
        &env.path("server.key"),
        env.vault_password.as_ref().unwrap(),
    )
    .unwrap();
    assert!(ansible_vault(&env, "view", &env.path("server.key"), &other).is_err());
    env.run(&["check", "--keys"]).ok();
}

#[test]
fn a_plaintext_state_gets_no_vault_key_and_a_vault_state_no_plaintext_key() {
    let plain = Env::new();
    plain.init(&[]);
    plain.run(&["peer", "add", "alice", "--preshared-key"]).ok();
    let pw = password_file(&plain, "pass", "a password");
    let with_pw = with_password(&plain, Some(&pw));
    for args in [
        &["init", "--endpoint", "vpn.example.com", "--force"][..],
        &["peer", "add", "bob"][..],
        &[
            "peer",
            "add",
            "bob",
            "--public-key",
            "o4Zy9vJtPZzGT4HnNaYh2QWJZXdTUGcjvFlNvGa3Q3E=",
            "--preshared-key",
        ][..],
        &["peer", "rotate", "alice"][..],
    ] {
        refused(
            &with_pw,
            args,
            &[
                "server.key is plaintext",
                "must be too",
                "wgadm vault encrypt",
            ],
        );
    }
    // Commands that write no key still work with a password configured.
    with_pw.run(&["peer", "disable", "alice"]).ok();
    with_pw.run(&["check", "--keys"]).ok();

    let vaulted = Env::with_vault();
    vaulted.init(&[]);
    vaulted
        .run(&["peer", "add", "alice", "--preshared-key"])
        .ok();
    let none = with_password(&vaulted, None);
    for args in [
        &["init", "--endpoint", "vpn.example.com", "--force"][..],
        &["peer", "add", "bob"][..],
        &["peer", "rotate", "alice"][..],
    ] {
        refused(&none, args, &["server.key is encrypted with Ansible Vault"]);
    }
}

#[test]
fn check_keys_names_every_key_in_the_wrong_mode() {
    let env = Env::with_vault();
    env.init(&[]);
    env.run(&["peer", "add", "alice"]).ok();
    env.run(&["peer", "add", "bob", "--preshared-key"]).ok();
    env.run(&["peer", "add", "carol"]).ok();
    let pw = env.vault_password.clone().unwrap();
    let other = password_file(&env, "other-pass", "another password");
    // alice.key plaintext beside vault keys; bob.psk under another password.
    ansible_vault(&env, "decrypt", &env.path("peers/alice.key"), &pw).unwrap();
    ansible_vault(&env, "decrypt", &env.path("peers/bob.psk"), &pw).unwrap();
    ansible_vault(&env, "encrypt", &env.path("peers/bob.psk"), &other).unwrap();
    for f in ["peers/alice.key", "peers/bob.psk"] {
        std::fs::set_permissions(
            env.path(f),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
    }
    let err = refused(
        &env,
        &["check", "--keys"],
        &[
            "the state has 2 problems",
            "peers/alice.key: is plaintext, but server.key is encrypted with Ansible Vault",
            "peers/bob.psk: cannot be opened with the state's vault password",
        ],
    );
    assert!(!err.contains("carol"), "{err}");
    // The way out refuses while a key cannot be opened, naming it, and changes nothing.
    refused(
        &env,
        &["vault", "encrypt"],
        &["peers/bob.psk: cannot be opened", "nothing was changed"],
    );
    // With bob.psk back under the state's password, encrypt makes the state one again.
    ansible_vault(&env, "decrypt", &env.path("peers/bob.psk"), &other).unwrap();
    ansible_vault(&env, "encrypt", &env.path("peers/bob.psk"), &pw).unwrap();
    env.run(&["vault", "encrypt"]).ok();
    assert!(is_vault(&env, "peers/alice.key"));
    env.run(&["check", "--keys"]).ok();

    // A plaintext state with one vault key.
    let plain = Env::new();
    plain.init(&[]);
    plain.run(&["peer", "add", "alice"]).ok();
    ansible_vault(&plain, "encrypt", &plain.path("peers/alice.key"), &pw).unwrap();
    std::fs::set_permissions(
        plain.path("peers/alice.key"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    refused(
        &with_password(&plain, Some(&pw)),
        &["check", "--keys"],
        &[
            "peers/alice.key: is encrypted with Ansible Vault, but server.key is plaintext",
            "wgadm vault decrypt",
        ],
    );
    with_password(&plain, Some(&pw))
        .run(&["vault", "decrypt"])
        .ok();
    assert!(!is_vault(&plain, "peers/alice.key"));
    plain.run(&["check", "--keys"]).ok();
}

#[test]
fn vault_decrypt_encrypt_and_rekey_rewrite_every_key_at_once() {
    let env = Env::with_vault();
    env.init(&[]);
    env.run(&["peer", "add", "alice", "--preshared-key"]).ok();
    env.run(&["peer", "add", "bob"]).ok();
    let old_pw = env.vault_password.clone().unwrap();
    let new_pw = password_file(&env, "new-pass", "a brand new password");
    // What the keys are: the server config and a client config carry them all.
    let server_conf = env.run(&["render"]).ok();
    let alice_conf = env.run(&["peer", "config", "alice"]).ok();
    let plain = with_password(&env, None);
    let fresh = with_password(&env, Some(&new_pw));

    // --dry-run lists every key file and changes nothing.
    let before = env.snapshot();
    let listed = env.run(&["vault", "decrypt", "--dry-run"]).ok();
    for f in KEY_FILES {
        assert!(listed.contains(f), "{f} not listed:\n{listed}");
    }
    assert_eq!(before, env.snapshot());
    refused(
        &plain,
        &["vault", "decrypt"],
        &["server.key", "--vault-password-file"],
    );
    refused(
        &env,
        &[
            "vault",
            "rekey",
            "--new-vault-password-file",
            "/nonexistent/pw",
        ],
        &["/nonexistent/pw"],
    );

    // decrypt: every key plaintext 0600, the same keys, no password needed.
    env.run(&["vault", "decrypt"]).ok();
    for f in KEY_FILES {
        assert!(!is_vault(&env, f), "{f} is still a vault file");
        assert_eq!(env.mode(f), 0o600);
    }
    assert_eq!(plain.run(&["render"]).ok(), server_conf);
    assert_eq!(plain.run(&["peer", "config", "alice"]).ok(), alice_conf);
    plain.run(&["check", "--keys"]).ok();
    refused(
        &env,
        &[
            "vault",
            "rekey",
            "--new-vault-password-file",
            new_pw.to_str().unwrap(),
        ],
        &["plaintext", "wgadm vault encrypt"],
    );
    refused(&plain, &["vault", "encrypt"], &["--vault-password-file"]);

    // encrypt: every key a vault file ansible-vault opens with the password.
    env.run(&["vault", "encrypt"]).ok();
    for f in KEY_FILES {
        assert!(is_vault(&env, f), "{f} is not a vault file");
        assert_eq!(env.mode(f), 0o600);
        ansible_vault(&env, "view", &env.path(f), &old_pw).unwrap();
    }
    assert_eq!(env.run(&["render"]).ok(), server_conf);

    // rekey: the new password opens every key, the old one none.
    env.run(&[
        "vault",
        "rekey",
        "--new-vault-password-file",
        new_pw.to_str().unwrap(),
    ])
    .ok();
    for f in KEY_FILES {
        assert_eq!(env.mode(f), 0o600);
        let shown = ansible_vault(&env, "view", &env.path(f), &new_pw).unwrap();
        assert_eq!(shown.trim().len(), 44, "{f} holds a base64 key");
        assert!(
            ansible_vault(&env, "view", &env.path(f), &old_pw).is_err(),
            "{f} opens with the old password"
        );
    }
    assert_eq!(fresh.run(&["render"]).ok(), server_conf);
    assert_eq!(fresh.run(&["peer", "config", "alice"]).ok(), alice_conf);
    fresh.run(&["check", "--keys"]).ok();
    refused(&env, &["render"], &["server.key", "password"]);
    refused(&env, &["peer", "add", "carol"], &["password"]);
    // No key file left behind under a temporary name.
    let names: Vec<String> = std::fs::read_dir(env.path("peers"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
}

#[test]
fn render_and_apply_refuse_a_server_key_of_another_server_yml() {
    let env = Env::new();
    env.init(&[]);
    env.run(&["peer", "add", "alice"]).ok();
    let other = Env::new();
    other.init(&[]);
    std::fs::write(env.path("server.key"), other.read("server.key")).unwrap();
    // apply must stop before it touches the config directory (or anything else).
    let conf_dir = env.tmp.path().join("wireguard");
    std::fs::create_dir(&conf_dir).unwrap();
    let conf_dir = conf_dir.to_str().unwrap();
    let needles = [
        env.path("server.key").to_str().unwrap().to_owned(),
        env.path("server.yml").to_str().unwrap().to_owned(),
        "does not belong to".to_owned(),
        "wgadm init --force".to_owned(),
    ];
    let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
    for args in [
        &["render"][..],
        &["--config-dir", conf_dir, "apply"][..],
        &["--config-dir", conf_dir, "apply", "--dry-run"][..],
        &[
            "--config-dir",
            conf_dir,
            "peer",
            "enable",
            "alice",
            "--apply",
        ][..],
    ] {
        let err = env.run(args).fails_with(&needles);
        assert!(
            !err.contains(other.read("server.key").trim()),
            "a private key leaked: {err}"
        );
    }
    assert_eq!(std::fs::read_dir(conf_dir).unwrap().count(), 0);
    env.run(&["check"])
        .fails_with(&["server.key: does not belong to the public key"]);
}
