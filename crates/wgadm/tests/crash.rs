//! Crash safety of the state: every writing command is killed at each of its steps by outside
//! fault injection (`strace -e inject=SYSCALL:signal=KILL:when=N`, no hooks in wgadm), made to
//! fail at each fsync and rename (`error=EIO`/`ENOSPC`), and killed at random instants. After
//! each, the next wgadm command (`check --keys`) must be clean and the state must be exactly the
//! state before the command or a state after it.

mod common;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{tool, Env};

/// Regular files of a state, relative to it, with bytes and mode; directories with their mode
/// when they hold anything (an empty directory is no state).
type Snap = BTreeMap<String, (Vec<u8>, u32)>;

fn snap(dir: &Path) -> Snap {
    let mut out = Snap::new();
    walk(dir, dir, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut Snap) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries {
        let p = e.unwrap().path();
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let meta = std::fs::symlink_metadata(&p).unwrap();
        let mode = meta.permissions().mode() & 0o7777;
        if meta.is_dir() {
            let before = out.len();
            walk(root, &p, out);
            if out.len() > before {
                out.insert(format!("{rel}/"), (Vec::new(), mode));
            }
        } else {
            assert!(meta.is_file(), "{rel} is not a regular file");
            out.insert(rel, (std::fs::read(&p).unwrap(), mode));
        }
    }
}

/// Makes `dir` hold exactly `state` (the lock is on the directory itself, nothing to copy).
fn restore(dir: &Path, state: &Snap) {
    let _ = std::fs::remove_dir_all(dir);
    if state.is_empty() {
        return;
    }
    std::fs::DirBuilder::new().mode(0o700).create(dir).unwrap();
    for (rel, (_, mode)) in state {
        if let Some(d) = rel.strip_suffix('/') {
            std::fs::DirBuilder::new()
                .mode(*mode)
                .create(dir.join(d))
                .unwrap();
        }
    }
    for (rel, (bytes, mode)) in state {
        if !rel.ends_with('/') {
            let p = dir.join(rel);
            std::fs::write(&p, bytes).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).unwrap();
        }
    }
}

fn public_key_line(bytes: &[u8]) -> Option<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .find(|l| l.starts_with("public_key:"))
        .map(str::to_owned)
}

fn masked(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .lines()
        .filter(|l| !l.starts_with("public_key:"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether `got` is a state after the command whose clean run on `before` gave `reference`:
/// the same files and modes; every file the command does not change as before; every secret
/// it writes new; every YAML file as in the reference but for a public key, which is new where
/// the reference's is (and `check --keys` proves it belongs to its key file).
fn is_after(before: &Snap, reference: &Snap, got: &Snap) -> bool {
    let names = |s: &Snap| s.iter().map(|(k, v)| (k.clone(), v.1)).collect::<Vec<_>>();
    if names(reference) != names(got) {
        return false;
    }
    reference.iter().all(|(rel, (want, _))| {
        let have = &got[rel].0;
        let old = before.get(rel).map(|v| &v.0);
        if old == Some(want) {
            return have == want;
        }
        if rel.ends_with(".key") || rel.ends_with(".psk") {
            return Some(have) != old;
        }
        let old_pk = old.and_then(|o| public_key_line(o));
        let pk_ok = if public_key_line(want) == old_pk {
            public_key_line(have) == old_pk
        } else {
            public_key_line(have) != old_pk
        };
        masked(have) == masked(want) && pk_ok
    })
}

/// One command to crash, on a state made by `setup`.
struct Case {
    args: Vec<String>,
    vault: bool,
}

struct Counts {
    kills: usize,
    errors: usize,
    checked: usize,
    before: usize,
    after: usize,
    torn: usize,
}

impl Counts {
    fn new() -> Self {
        Counts {
            kills: 0,
            errors: 0,
            checked: 0,
            before: 0,
            after: 0,
            torn: 0,
        }
    }
}

fn pubkey() -> String {
    wgadm::secrets::generate_private()
        .unwrap()
        .public_key()
        .to_string()
}

/// The argument list of wgadm (binary first) for `env` and `args`.
fn wgadm_argv(env: &Env, args: &[String]) -> Vec<OsString> {
    let mut v: Vec<OsString> = vec![env!("CARGO_BIN_EXE_wgadm").into()];
    v.push("--state".into());
    v.push(env.state.clone().into());
    if let Some(pw) = &env.vault_password {
        v.push("--vault-password-file".into());
        v.push(pw.clone().into());
    }
    v.extend(args.iter().map(OsString::from));
    v
}

fn command(argv: &[OsString]) -> Command {
    let mut c = Command::new(&argv[0]);
    c.args(&argv[1..])
        .env_remove("ANSIBLE_VAULT_PASSWORD_FILE")
        .env_remove("WGADM_STATE")
        .stdin(Stdio::null());
    c
}

/// The state before each case: `alice` (generated key and preshared key), `bob` (his own
/// public key, disabled).
fn base_state(env: &Env) -> Snap {
    let _ = std::fs::remove_dir_all(&env.state);
    env.init(&[]);
    env.run(&["peer", "add", "alice", "--preshared-key"]).ok();
    env.run(&["peer", "add", "bob", "--public-key", &pubkey()])
        .ok();
    env.run(&["peer", "disable", "bob"]).ok();
    snap(&env.state)
}

/// After a crash or failure: the next command recovers, `check --keys` is clean, and the
/// state is the before or an after.
#[track_caller]
fn judge(env: &Env, before: &Snap, reference: &Snap, what: &str, counts: &mut Counts) {
    let check = env.run(&["check", "--keys"]);
    let got = snap(&env.state);
    counts.checked += 1;
    let is_before = &got == before;
    let is_after = !is_before && is_after(before, reference, &got);
    if before.is_empty() && is_before {
        assert!(
            check.stderr.contains("no wgadm state here"),
            "{what}: {}",
            check.stderr
        );
    } else {
        assert_eq!(
            check.code, 0,
            "{what}: check --keys is not clean:\n{}\n{}",
            check.stdout, check.stderr
        );
    }
    if is_before {
        counts.before += 1;
    } else if is_after {
        counts.after += 1;
    } else {
        counts.torn += 1;
        panic!(
            "{what}: torn state: files {:?}, before {:?}, after {:?}",
            got.keys().collect::<Vec<_>>(),
            before.keys().collect::<Vec<_>>(),
            reference.keys().collect::<Vec<_>>()
        );
    }
}

const KILL_SYSCALLS: &[&str] = &[
    "openat",
    "write",
    "fsync",
    "fdatasync",
    "rename",
    "renameat",
    "renameat2",
    "unlink",
    "unlinkat",
    "mkdir",
    "mkdirat",
];
/// With a vault the code paths are those without one; only the steps that touch the state's
/// names are crashed there, since each vault run costs PBKDF2.
const VAULT_KILL_SYSCALLS: &[&str] = &["fsync", "rename", "unlink", "mkdir"];

/// Runs `case` under strace with `inject` for N = 1, 2, ... until it completes.
fn crash_case(env: &Env, before: &Snap, case: &Case, counts: &mut Counts) {
    restore(&env.state, before);
    let argv = wgadm_argv(env, &case.args);
    let clean = command(&argv).output().unwrap();
    assert!(
        clean.status.success(),
        "{:?}: {}",
        case.args,
        String::from_utf8_lossy(&clean.stderr)
    );
    let reference = snap(&env.state);
    let syscalls = if case.vault {
        VAULT_KILL_SYSCALLS
    } else {
        KILL_SYSCALLS
    };
    let mut faults: Vec<(String, bool)> = syscalls
        .iter()
        .map(|s| (format!("{s}:signal=KILL"), true))
        .collect();
    if !case.vault {
        for s in ["fsync", "rename"] {
            faults.push((format!("{s}:error=EIO"), false));
        }
        faults.push(("rename:error=ENOSPC".into(), false));
    }
    for (fault, kill) in faults {
        let syscall = fault.split(':').next().unwrap().to_owned();
        for n in 1.. {
            assert!(n < 1000, "{fault} never let {:?} finish", case.args);
            restore(&env.state, before);
            let mut strace = tool("strace");
            strace
                .args(["-f", "-qq", "-o", "/dev/null", "-e"])
                .arg(format!("trace={syscall}"))
                .arg("-e")
                .arg(format!("inject={fault}:when={n}"))
                .arg("--")
                .args(&argv)
                .env_remove("ANSIBLE_VAULT_PASSWORD_FILE")
                .env_remove("WGADM_STATE")
                .stdin(Stdio::null());
            let out = strace.output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            if out.status.success() {
                // N went past the last such call: the command ran to the end.
                assert_eq!(snap(&env.state).len(), reference.len());
                break;
            }
            let what = format!("{:?} with {fault}:when={n}", case.args);
            if kill {
                counts.kills += 1;
            } else {
                counts.errors += 1;
                assert!(
                    stderr.contains("wgadm: error:")
                        && (stderr.contains("Input/output error")
                            || stderr.contains("No space left")),
                    "{what}: no clear error: {stderr}"
                );
                for secret in ["PrivateKey", "PresharedKey"] {
                    assert!(!stderr.contains(secret), "{what}: {stderr}");
                }
            }
            judge(env, before, &reference, &what, counts);
        }
    }
}

fn cases(vault: bool) -> Vec<Case> {
    let args: Vec<Vec<String>> = vec![
        vec!["init", "--force", "--endpoint", "vpn2.example.com"],
        vec!["peer", "add", "carol"],
        vec!["peer", "add", "dave", "--public-key", &pubkey()],
        vec!["peer", "add", "erin", "--preshared-key"],
        vec!["peer", "set", "alice", "--keepalive", "15"],
        vec!["peer", "disable", "alice"],
        vec!["peer", "enable", "bob"],
        vec!["peer", "remove", "alice"],
        vec!["peer", "rotate", "alice"],
        vec!["peer", "rotate", "alice", "--public-key", &pubkey()],
    ]
    .into_iter()
    .map(|a| a.into_iter().map(|s| s.to_owned()).collect())
    .collect();
    args.into_iter().map(|args| Case { args, vault }).collect()
}

fn run_all(vault: bool, only: Option<&[&str]>) -> Counts {
    let env = if vault { Env::with_vault() } else { Env::new() };
    let mut counts = Counts::new();
    // init on a missing directory.
    let init = Case {
        args: ["init", "--endpoint", "vpn.example.com"]
            .map(String::from)
            .to_vec(),
        vault,
    };
    crash_case(&env, &Snap::new(), &init, &mut counts);
    let before = base_state(&env);
    for case in cases(vault) {
        if only.is_some_and(|o| !o.iter().any(|w| case.args.join(" ").contains(w))) {
            continue;
        }
        crash_case(&env, &before, &case, &mut counts);
    }
    counts
}

fn print(name: &str, c: &Counts) {
    println!(
        "crash ({name}): kills={} errors={} states_checked={} before={} after={} torn={}",
        c.kills, c.errors, c.checked, c.before, c.after, c.torn
    );
}

#[test]
fn every_writing_command_killed_or_failing_at_each_step_leaves_before_or_after() {
    let c = run_all(false, None);
    print("plaintext keys", &c);
    assert_eq!(c.torn, 0);
    assert!(c.before > 0 && c.after > 0, "both outcomes must occur");
}

#[test]
fn vault_commands_killed_at_each_step_leave_before_or_after() {
    let c = run_all(
        true,
        Some(&["init", "add erin", "rotate alice", "remove", "add dave"]),
    );
    print("vault keys", &c);
    assert_eq!(c.torn, 0);
    assert!(c.before > 0 && c.after > 0, "both outcomes must occur");
}

/// A random number below `n` (n > 0).
fn below(n: u64) -> u64 {
    let r = wgadm::secrets::random32().unwrap();
    u64::from_le_bytes(r[..8].try_into().unwrap()) % n
}

/// A command that fits the current state (peer names taken from its files).
fn random_command(state: &Snap, serial: &mut usize) -> Vec<String> {
    let peers: Vec<String> = state
        .keys()
        .filter_map(|k| k.strip_prefix("peers/")?.strip_suffix(".yml"))
        .map(str::to_owned)
        .collect();
    *serial += 1;
    let new = format!("p{serial}");
    let pick = |i: u64| peers[i as usize % peers.len()].clone();
    let args: Vec<String> = match (below(9), peers.is_empty()) {
        (0, _) | (_, true) => vec!["peer".into(), "add".into(), new],
        (1, _) => vec!["peer", "add", &new, "--preshared-key"]
            .into_iter()
            .map(String::from)
            .collect(),
        (2, _) => vec![
            "peer".into(),
            "add".into(),
            new,
            "--public-key".into(),
            pubkey(),
        ],
        (3, _) => vec!["peer", "set", &pick(below(99)), "--keepalive"]
            .into_iter()
            .map(String::from)
            .chain([format!("{}", below(60))])
            .collect(),
        (4, _) => vec!["peer".into(), "disable".into(), pick(below(99))],
        (5, _) => vec!["peer".into(), "enable".into(), pick(below(99))],
        (6, _) if peers.len() > 3 => vec!["peer".into(), "remove".into(), pick(below(99))],
        (7, _) => vec!["peer".into(), "rotate".into(), pick(below(99))],
        _ => vec!["init", "--force", "--endpoint", "vpn.example.com"]
            .into_iter()
            .map(String::from)
            .collect(),
    };
    args
}

/// Kills random commands at random instants until `kills` kills have landed (a kill after
/// the command ended does not count) or `iterations` commands ran.
fn random_kills(vault: bool, kills: usize, iterations: usize) -> Counts {
    let env = if vault { Env::with_vault() } else { Env::new() };
    env.init(&[]);
    let spare = tempfile::tempdir().unwrap();
    let ref_env = Env {
        state: spare.path().join("state"),
        vault_password: env.vault_password.clone(),
        tmp: tempfile::tempdir().unwrap(),
    };
    for i in 0..4 {
        env.run(&["peer", "add", &format!("p0{i}")]).ok();
    }
    let mut counts = Counts::new();
    let mut serial = 0;
    let mut i = 0;
    while counts.kills < kills && i < iterations {
        i += 1;
        let before = snap(&env.state);
        let args = random_command(&before, &mut serial);
        restore(&ref_env.state, &before);
        // The command's duration, measured by a clean run on a copy of the same state.
        let started = Instant::now();
        let reference = command(&wgadm_argv(&ref_env, &args)).output().unwrap();
        let typical = started.elapsed();
        assert!(
            reference.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&reference.stderr)
        );
        let reference = snap(&ref_env.state);
        let mut child = command(&wgadm_argv(&env, &args))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let delay = typical.as_micros() as u64;
        // A random instant within the command's run, not a wait for anything.
        std::thread::sleep(Duration::from_micros(below(delay.max(1))));
        if child.try_wait().unwrap().is_none() {
            counts.kills += 1;
        }
        let _ = child.kill();
        child.wait().unwrap();
        judge(
            &env,
            &before,
            &reference,
            &format!("iteration {i}: {args:?}"),
            &mut counts,
        );
    }
    counts
}

#[test]
fn random_kill_9_during_mixed_commands_leaves_before_or_after() {
    let plain = random_kills(false, 500, 10_000);
    print("random kill -9, plaintext keys", &plain);
    assert_eq!(plain.kills, 500, "kills kept missing");
    let vault = random_kills(true, usize::MAX, 12);
    print("random kill -9, vault keys", &vault);
    assert_eq!(plain.torn + vault.torn, 0);
}
