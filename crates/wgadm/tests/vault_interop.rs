//! Interop of `wgadm::vault` with the real `ansible-vault` (pip ansible-core, see
//! scripts/setup.sh). These tests fail, never skip, when ansible-vault is missing: byte
//! compatibility with Ansible is the point of the module.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;
use wgadm::vault::{decrypt, encrypt, VaultPassword};

/// 32 ASCII bytes: ansible uses `ANSIBLE_VAULT_ENCRYPT_SALT`'s raw bytes as the salt (it does
/// not hex-decode it), so these are both the env value and our `salt` argument.
const SALT: &[u8; 32] = b"wgadm-interop-salt-0123456789abc";

fn plaintexts() -> Vec<Vec<u8>> {
    vec![
        b"".to_vec(),
        b"x".to_vec(),
        b"0123456789abcdef".to_vec(), // one whole block: padding adds a second
        b"cGVlciBwcml2YXRlIGtleSBpbiBiYXNlNjQgZm9ybWF0IQ==\n".to_vec(),
        (0..=255u8).collect(), // every byte value, NUL and non-UTF-8 included
        "ünïcödé\r\nsecond line\n".repeat(20).into_bytes(),
    ]
}

/// A scratch directory with a plain password file "pw" holding `password` plus a newline.
fn scratch(password: &str) -> (TempDir, PathBuf) {
    let dir = TempDir::new().expect("temp dir");
    let pw = dir.path().join("pw");
    std::fs::write(&pw, format!("{password}\n")).expect("write password file");
    (dir, pw)
}

/// `ansible-vault ARGS` run in `dir`, isolated from the caller's Ansible settings.
fn ansible_vault(dir: &Path, args: &[&str], salt: Option<&[u8; 32]>) -> Output {
    let mut cmd = Command::new("ansible-vault");
    // cwd = dir keeps a stray ansible.cfg out; the env vars would override our arguments.
    cmd.current_dir(dir).args(args);
    for var in [
        "ANSIBLE_CONFIG",
        "ANSIBLE_VAULT_PASSWORD_FILE",
        "ANSIBLE_VAULT_IDENTITY",
        "ANSIBLE_VAULT_IDENTITY_LIST",
        "ANSIBLE_VAULT_ENCRYPT_IDENTITY",
        "ANSIBLE_VAULT_ENCRYPT_SALT",
    ] {
        cmd.env_remove(var);
    }
    if let Some(salt) = salt {
        cmd.env(
            "ANSIBLE_VAULT_ENCRYPT_SALT",
            std::str::from_utf8(salt).expect("ASCII salt"),
        );
    }
    let out = cmd.output().unwrap_or_else(|e| {
        panic!(
            "cannot run `ansible-vault` ({e}). It comes from pip ansible-core: run \
             scripts/setup.sh, then make sure ansible-vault is on PATH."
        )
    });
    assert!(
        out.status.success(),
        "ansible-vault {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `ansible-vault encrypt` of `plain` with the password from `pw` (a file or script), as 1.1
/// via `--vault-password-file`, or as 1.2 via `--vault-id LABEL@pw`; returns the file text.
fn ansible_encrypt(
    dir: &Path,
    plain: &[u8],
    pw: &Path,
    label: Option<&str>,
    salt: Option<&[u8; 32]>,
) -> Vec<u8> {
    let file = dir.join("secret");
    std::fs::write(&file, plain).expect("write plaintext");
    let pw = pw.to_str().expect("UTF-8 temp path");
    let f = file.to_str().expect("UTF-8 temp path");
    let vault_id = label.map(|l| format!("{l}@{pw}"));
    let how = match &vault_id {
        Some(id) => ["--vault-id", id.as_str()],
        None => ["--vault-password-file", pw],
    };
    ansible_vault(dir, &["encrypt", how[0], how[1], f], salt);
    std::fs::read(&file).expect("read vault file")
}

/// Installs an executable script. `install` writes it from its own process so that no write
/// descriptor of ours can leak into a child another test thread forks, which would make
/// executing the script fail with ETXTBSY.
fn install_script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let staged = dir.join(format!("{name}.staged"));
    std::fs::write(&staged, body).expect("write staged script");
    let path = dir.join(name);
    let ok = Command::new("install")
        .args(["-m", "0755"])
        .arg(&staged)
        .arg(&path)
        .status()
        .expect("run install(1)");
    assert!(ok.success(), "install(1) failed");
    path
}

#[test]
fn ansible_vault_opens_our_files() {
    let (dir, pw) = scratch("correct horse battery staple");
    let password = VaultPassword::from_file(&pw).expect("password");
    let pw = pw.to_str().expect("UTF-8 temp path");
    let file = dir.path().join("ours.vault");
    let f = file.to_str().expect("UTF-8 temp path");
    for (i, plain) in plaintexts().iter().enumerate() {
        std::fs::write(&file, encrypt(plain, &password, &[i as u8; 32])).expect("write");
        let out = ansible_vault(
            dir.path(),
            &["decrypt", "--vault-password-file", pw, "--output", "-", f],
            None,
        );
        assert_eq!(
            out.stdout, *plain,
            "ansible-vault decrypt of plaintext #{i}"
        );
    }
    // `view` prints through Ansible's display, which appends a newline.
    std::fs::write(&file, encrypt(b"viewed", &password, SALT)).expect("write");
    let out = ansible_vault(dir.path(), &["view", "--vault-password-file", pw, f], None);
    assert_eq!(out.stdout, b"viewed\n");
}

#[test]
fn we_open_ansible_1_1_and_1_2_files() {
    let (dir, pw) = scratch("s3cret");
    let password = VaultPassword::from_file(&pw).expect("password");
    for plain in plaintexts() {
        let v11 = ansible_encrypt(dir.path(), &plain, &pw, None, None);
        assert!(v11.starts_with(b"$ANSIBLE_VAULT;1.1;AES256\n"));
        assert_eq!(*decrypt(&v11, &password).expect("decrypt 1.1"), plain);

        let v12 = ansible_encrypt(dir.path(), &plain, &pw, Some("wg-prod"), None);
        assert!(v12.starts_with(b"$ANSIBLE_VAULT;1.2;AES256;wg-prod\n"));
        assert_eq!(*decrypt(&v12, &password).expect("decrypt 1.2"), plain);

        let wrong = VaultPassword::new("s3cret ");
        assert!(decrypt(&v12, &wrong).is_err(), "wrong password accepted");
    }
}

#[test]
fn our_output_is_byte_identical_to_ansible_with_fixed_salt() {
    let (dir, pw) = scratch("hunter2");
    let password = VaultPassword::from_file(&pw).expect("password");
    for plain in plaintexts() {
        let ours = encrypt(&plain, &password, SALT);
        let theirs = ansible_encrypt(dir.path(), &plain, &pw, None, Some(SALT));
        assert_eq!(ours.as_bytes(), theirs, "1.1 for {} bytes", plain.len());

        // 1.2 differs only in the header: the vault id is not part of the crypto.
        let theirs = ansible_encrypt(dir.path(), &plain, &pw, Some("lab"), Some(SALT));
        let ours_12 = ours.replacen(
            "$ANSIBLE_VAULT;1.1;AES256",
            "$ANSIBLE_VAULT;1.2;AES256;lab",
            1,
        );
        assert_eq!(ours_12.as_bytes(), theirs, "1.2 for {} bytes", plain.len());
    }
}

#[test]
fn password_scripts_and_files_read_like_ansible() {
    let dir = TempDir::new().expect("temp dir");
    // Ansible strips only CR/LF from a script's stdout, but all whitespace from a plain file.
    let script = install_script(
        dir.path(),
        "pass.sh",
        "#!/bin/sh\nprintf '  sp ace \\r\\n'\n",
    );
    // A `*-client` script is asked for `--vault-id default`; it must see exactly that.
    let client = install_script(
        dir.path(),
        "pass-client.sh",
        "#!/bin/sh\n[ \"$*\" = '--vault-id default' ] || exit 2\necho client-pw\n",
    );
    let plain_file = dir.path().join("pw.txt");
    std::fs::write(&plain_file, "\t  sp ace \n").expect("write password file");
    let failing = install_script(dir.path(), "fail.sh", "#!/bin/sh\nexit 3\n");
    let empty = install_script(dir.path(), "empty.sh", "#!/bin/sh\necho\n");

    for source in [&script, &client, &plain_file] {
        let password = VaultPassword::from_file(source).expect("password from file");
        let src = source.to_str().expect("UTF-8 temp path");
        // Ansible encrypts with the file, we decrypt; then the other way round.
        let theirs = ansible_encrypt(dir.path(), b"key", source, None, None);
        assert_eq!(
            &*decrypt(&theirs, &password).expect("decrypt"),
            b"key",
            "{src}"
        );
        let file = dir.path().join("ours.vault");
        std::fs::write(&file, encrypt(b"key", &password, SALT)).expect("write");
        let f = file.to_str().expect("UTF-8 temp path");
        let args = ["decrypt", "--vault-password-file", src, "--output", "-", f];
        assert_eq!(
            ansible_vault(dir.path(), &args, None).stdout,
            b"key",
            "{src}"
        );
    }
    // The script's password keeps its spaces, so it is not the plain file's password.
    let from_script = VaultPassword::from_file(&script).expect("password");
    let theirs = ansible_encrypt(dir.path(), b"key", &plain_file, None, None);
    assert!(decrypt(&theirs, &from_script).is_err());

    let err = VaultPassword::from_file(&failing).expect_err("failing script");
    assert!(err.to_string().contains("fail.sh"), "{err}");
    let err = VaultPassword::from_file(&empty).expect_err("empty script output");
    assert!(err.to_string().contains("empty"), "{err}");
}
