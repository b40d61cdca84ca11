//! Files wgadm writes for the user (`peer add --config-out`, `peer qr -o`): never inside the
//! state or the WireGuard config directory, never through a link or into a device, fifo or
//! directory, an existing file replaced only with `--force`, `-` is stdout, and a command that
//! fails leaves the user's files and the state as they were. Every refusal comes before any
//! change.

mod common;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::{snapshot, Env};

/// The state, the files in the scratch directory (outside the state) and /dev/null's kind.
fn everything(env: &Env) -> (impl PartialEq + std::fmt::Debug, Vec<(PathBuf, String)>) {
    let mut outside: Vec<(PathBuf, String)> = std::fs::read_dir(env.tmp.path())
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let what = if m.file_type().is_symlink() {
                format!("link to {}", std::fs::read_link(&p).unwrap().display())
            } else if m.file_type().is_fifo() {
                "fifo".into()
            } else if m.is_dir() {
                format!("dir {:?}", snapshot(&p).keys().collect::<Vec<_>>())
            } else {
                format!(
                    "{:?} {:o}",
                    std::fs::read(&p).unwrap(),
                    m.permissions().mode() & 0o7777
                )
            };
            (p, what)
        })
        .collect();
    outside.sort();
    (env.snapshot(), outside)
}

/// Runs `args`, expects failure mentioning `needles`, and checks that nothing changed: not
/// the state, not a file beside it, not /dev/null.
#[track_caller]
fn refused(env: &Env, args: &[&str], needles: &[&str]) -> String {
    let before = everything(env);
    let err = env.run(args).fails_with(needles);
    assert_eq!(
        before,
        everything(env),
        "`{}` changed something",
        args.join(" ")
    );
    assert!(std::fs::metadata("/dev/null")
        .unwrap()
        .file_type()
        .is_char_device());
    err
}

fn setup() -> (Env, PathBuf) {
    let env = Env::new();
    env.init(&[]);
    env.run(&["peer", "add", "alice"]).ok();
    let conf_dir = env.tmp.path().join("wireguard");
    std::fs::create_dir(&conf_dir).unwrap();
    (env, conf_dir)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Every way an output path is refused, for both commands.
#[test]
fn bad_output_paths_are_refused_before_anything_changes() {
    let (env, conf_dir) = setup();
    let tmp = env.tmp.path();
    let victim = tmp.join("victim");
    std::fs::write(&victim, "a file of the user's\n").unwrap();
    std::os::unix::fs::symlink(&victim, tmp.join("link")).unwrap();
    std::os::unix::fs::symlink(tmp.join("nowhere"), tmp.join("dangling")).unwrap();
    std::os::unix::fs::symlink(&env.state, tmp.join("state-link")).unwrap();
    let fifo = tmp.join("fifo");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let server_key = env.path("server.key");
    let cases: Vec<(PathBuf, Vec<&str>)> = vec![
        (server_key.clone(), vec!["is inside", "state"]),
        (env.path("peers/bob.conf"), vec!["is inside"]),
        // Through a link to the state directory, and through `..`.
        (tmp.join("state-link/server.key"), vec!["is inside"]),
        (env.path("peers/../server.yml"), vec!["is inside"]),
        (conf_dir.join("wg0.conf"), vec!["is inside", s(&conf_dir)]),
        (
            tmp.join("link"),
            vec!["is a symbolic link", "never through a link"],
        ),
        (tmp.join("dangling"), vec!["is a symbolic link"]),
        (fifo.clone(), vec!["is a fifo"]),
        (PathBuf::from("/dev/null"), vec!["is a device"]),
        (tmp.to_path_buf(), vec!["is a directory"]),
        (
            tmp.join("no-such-dir/out.conf"),
            vec!["no-such-dir", "create it first"],
        ),
        (victim.clone(), vec!["exists; pass --force"]),
    ];
    for (path, needles) in &cases {
        let mut all = needles.clone();
        all.push(s(path));
        let conf = ["--config-dir", s(&conf_dir)];
        let mut add = conf.to_vec();
        add.extend(["peer", "add", "bob", "--config-out", s(path)]);
        refused(&env, &add, &all);
        let mut qr = conf.to_vec();
        qr.extend(["peer", "qr", "alice", "--format", "png", "-o", s(path)]);
        refused(&env, &qr, &all);
        // --force replaces only a regular file outside the two directories.
        if !needles[0].starts_with("exists") {
            add.push("--force");
            refused(&env, &add, needles);
            qr.push("--force");
            refused(&env, &qr, needles);
        }
    }
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "a file of the user's\n"
    );
    assert!(env.read("server.key").trim().len() == 44);
    env.run(&["check", "--keys"]).ok();
}

#[test]
fn a_new_file_is_created_0600_and_an_existing_one_replaced_only_with_force() {
    let (env, _) = setup();
    let tmp = env.tmp.path();
    let out = tmp.join("bob.conf");
    env.run(&["peer", "add", "bob", "--config-out", s(&out)])
        .ok();
    let bob = env.run(&["peer", "config", "bob"]).ok();
    assert_eq!(std::fs::read_to_string(&out).unwrap(), bob);
    assert_eq!(
        std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // An existing file: refused without --force, replaced whole (a new inode) with it.
    let mine = tmp.join("mine.conf");
    std::fs::write(&mine, "keep me\n").unwrap();
    std::fs::set_permissions(&mine, std::fs::Permissions::from_mode(0o644)).unwrap();
    // A second name for the same inode sees no private key after the replacement.
    std::fs::hard_link(&mine, tmp.join("mine-hardlink")).unwrap();
    refused(
        &env,
        &["peer", "add", "carol", "--config-out", s(&mine)],
        &["exists; pass --force"],
    );
    env.run(&["peer", "add", "carol", "--config-out", s(&mine), "--force"])
        .ok();
    assert_eq!(
        std::fs::read_to_string(&mine).unwrap(),
        env.run(&["peer", "config", "carol"]).ok()
    );
    assert_eq!(
        std::fs::metadata(&mine).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::read_to_string(tmp.join("mine-hardlink")).unwrap(),
        "keep me\n"
    );

    // qr -o: the same rules.
    let png = tmp.join("alice.png");
    env.run(&["peer", "qr", "alice", "--format", "png", "-o", s(&png)])
        .ok();
    assert!(std::fs::read(&png).unwrap().starts_with(b"\x89PNG"));
    refused(
        &env,
        &["peer", "qr", "alice", "--format", "png", "-o", s(&png)],
        &["exists; pass --force"],
    );
    env.run(&[
        "peer",
        "qr",
        "alice",
        "--format",
        "png",
        "-o",
        s(&png),
        "--force",
    ])
    .ok();
    // No temporary file is left beside the outputs.
    let names: Vec<String> = std::fs::read_dir(tmp)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.contains(".wgadm-")), "{names:?}");
}

#[test]
fn dash_is_stdout() {
    let (env, _) = setup();
    let out = env.run(&["peer", "add", "bob", "--config-out", "-"]).ok();
    let conf = env.run(&["peer", "config", "bob"]).ok();
    assert!(out.starts_with("added peer bob"), "{out}");
    assert!(out.ends_with(&conf), "{out}");
    assert!(!env.tmp.path().join("-").exists());
    refused(
        &env,
        &["--json", "peer", "add", "carol", "--config-out", "-"],
        &["--config-out -", "--json"],
    );
    let svg = env
        .run(&["peer", "qr", "alice", "--format", "svg", "-o", "-"])
        .ok();
    assert!(svg.contains("<svg"), "{svg}");
}

/// A command that fails after its output path was checked leaves the user's file as it was
/// (never deleted or truncated) and creates none.
#[test]
fn a_failing_command_leaves_the_users_file_alone() {
    let (env, _) = setup();
    let tmp = env.tmp.path();
    let mine = tmp.join("mine.conf");
    std::fs::write(&mine, "keep me\n").unwrap();
    let fresh = tmp.join("fresh.conf");
    for (out, force) in [(&mine, true), (&fresh, false)] {
        let mut args = vec!["peer", "add", "alice", "--config-out", s(out)];
        if force {
            args.push("--force");
        }
        // alice exists already.
        refused(&env, &args, &["peer alice already exists"]);
        args[2] = "bob";
        args.extend(["--address", "10.9.9.9"]);
        refused(&env, &args, &["10.9.9.9"]);
    }
    assert_eq!(std::fs::read_to_string(&mine).unwrap(), "keep me\n");
    assert!(!fresh.exists());
}
