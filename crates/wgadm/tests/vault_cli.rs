//! Key files in Ansible Vault through the wgadm binary, checked against the real `ansible-vault`.

mod common;

use common::{tool, Env};

fn ansible_vault(env: &Env, args: &[&str]) -> String {
    let out = tool("ansible-vault")
        .args(args)
        .arg("--vault-password-file")
        .arg(env.vault_password.as_ref().unwrap())
        .env("ANSIBLE_LOCAL_TEMP", env.tmp.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ansible-vault {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn key_files_are_vault_encrypted_and_ansible_vault_opens_them() {
    let env = Env::with_vault();
    env.init(&[]);
    env.run(&["peer", "add", "alice", "--preshared-key"]).ok();
    for file in ["server.key", "peers/alice.key", "peers/alice.psk"] {
        let text = env.read(file);
        assert!(
            text.starts_with("$ANSIBLE_VAULT;1.1;AES256\n"),
            "{file} is not a vault file"
        );
        assert_eq!(env.mode(file), 0o600);
        let plain = ansible_vault(&env, &["view", env.path(file).to_str().unwrap()]);
        assert_eq!(plain.trim().len(), 44, "{file} holds a base64 key");
    }
    // The config carries the decrypted key, the one ansible-vault shows.
    let key = ansible_vault(
        &env,
        &["view", env.path("peers/alice.key").to_str().unwrap()],
    );
    let conf = env.run(&["peer", "config", "alice"]).ok();
    assert!(conf.contains(&format!("PrivateKey = {}\n", key.trim())));
    env.run(&["check", "--keys"]).ok();
}

#[test]
fn files_encrypted_by_ansible_vault_are_read_1_1_and_1_2() {
    let env = Env::with_vault();
    env.init(&[]);
    env.run(&["peer", "add", "alice"]).ok();
    let pw = env
        .vault_password
        .as_ref()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let key = env.path("server.key");
    ansible_vault(&env, &["decrypt", key.to_str().unwrap()]);
    ansible_vault(&env, &["encrypt", key.to_str().unwrap()]);
    assert!(env
        .read("server.key")
        .starts_with("$ANSIBLE_VAULT;1.1;AES256"));
    env.run(&["render"]).ok();
    let peer_key = env.path("peers/alice.key");
    ansible_vault(&env, &["decrypt", peer_key.to_str().unwrap()]);
    let out = tool("ansible-vault")
        .args([
            "encrypt",
            "--vault-id",
            &format!("prod@{pw}"),
            peer_key.to_str().unwrap(),
        ])
        .env("ANSIBLE_LOCAL_TEMP", env.tmp.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(env
        .read("peers/alice.key")
        .starts_with("$ANSIBLE_VAULT;1.2;AES256;prod"));
    env.run(&["peer", "config", "alice"]).ok();
    env.run(&["check", "--keys"]).ok();
}

#[test]
fn a_missing_or_wrong_password_is_a_clear_error_and_changes_nothing() {
    let env = Env::with_vault();
    env.init(&[]);
    env.run(&["peer", "add", "alice"]).ok();
    let before = env.snapshot();

    let mut no_password = Env::new();
    no_password.state = env.state.clone();
    no_password.run(&["render"]).fails_with(&[
        "server.key",
        "Ansible Vault",
        "--vault-password-file",
    ]);
    no_password
        .run(&["peer", "config", "alice"])
        .fails_with(&["peers/alice.key", "Ansible Vault"]);
    no_password.run(&["peer", "add", "bob"]).fails_with(&[
        "server.key is encrypted with Ansible Vault",
        "peers/bob.key must be too",
    ]);

    let mut wrong = Env::new();
    wrong.state = env.state.clone();
    let bad = env.tmp.path().join("wrong-pass");
    std::fs::write(&bad, "not the password\n").unwrap();
    wrong.vault_password = Some(bad);
    wrong
        .run(&["render"])
        .fails_with(&["server.key", "password"]);
    wrong.run(&["peer", "add", "bob"]).fails_with(&["password"]);
    wrong
        .run(&["peer", "rotate", "alice"])
        .fails_with(&["password"]);

    let mut missing = Env::new();
    missing.state = env.state.clone();
    missing.vault_password = Some(env.tmp.path().join("no-such-file"));
    missing
        .run(&["peer", "add", "bob"])
        .fails_with(&["no-such-file"]);
    assert_eq!(before, env.snapshot(), "a failed command changed the state");
}

#[test]
fn ansibles_own_environment_variable_is_honoured() {
    let env = Env::with_vault();
    let mut c = env.cmd();
    // Env::cmd passes --vault-password-file; drop it by building the command by hand.
    c = std::process::Command::new(c.get_program());
    c.args([
        "--state",
        env.state.to_str().unwrap(),
        "init",
        "--endpoint",
        "vpn.example.com",
    ])
    .env(
        "ANSIBLE_VAULT_PASSWORD_FILE",
        env.vault_password.as_ref().unwrap(),
    );
    assert!(c.status().unwrap().success());
    assert!(env
        .read("server.key")
        .starts_with("$ANSIBLE_VAULT;1.1;AES256"));
    ansible_vault(&env, &["view", env.path("server.key").to_str().unwrap()]);
}
