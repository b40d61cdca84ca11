//! `wgadm-lab run` and `reap` as scripts use them: the lab's names reach the command, and the lab
//! is gone after the command fails, after the run is terminated, and (through `reap`) after it
//! was killed outright. Root only: as root, `cargo test -p wgadm-lab --features root-tests`.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const LAB: &str = env!("CARGO_BIN_EXE_wgadm-lab");

/// Calls `f` every 20 ms until it is true; panics naming `what` after 20 s.
fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "waited 20 s for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The `KEY=VALUE` lines of an `env` dump.
fn var(env: &str, key: &str) -> String {
    env.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{key} is not in the command's environment:\n{env}"))
        .to_owned()
}

/// Namespaces of the lab whose `run` had this PID.
fn namespaces_of(run_pid: u32) -> Vec<String> {
    let prefix = format!("wgadm-lab-{run_pid}-");
    fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&prefix))
        .collect()
}

/// Whether a process runs (a zombie does not count).
fn running(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rfind(')')
                .and_then(|i| s[i + 2..].chars().next())
                .map(|state| state != 'Z' && state != 'X')
        })
        .unwrap_or(false)
}

/// Starts `wgadm-lab run --clients 1 -- sh -c SCRIPT`; SCRIPT writes its environment and its
/// PID to `dir/env` and `dir/pid`, then runs `then`.
fn start(dir: &Path, then: &str) -> Child {
    let script = format!(
        "env > {d}/env.tmp && mv {d}/env.tmp {d}/env && echo $$ > {d}/pid && {then}",
        d = dir.display()
    );
    Command::new(LAB)
        .args(["run", "--clients", "1", "--", "sh", "-c", &script])
        .stdin(Stdio::null())
        .spawn()
        .expect("start wgadm-lab")
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig} {pid} failed");
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root: make test, or as root: cargo test --features root-tests"
)]
fn the_command_gets_the_names_and_the_lab_goes_when_it_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let env_file = tmp.path().join("env");
    let out = Command::new(LAB)
        .args([
            "run",
            "--clients",
            "2",
            "--namespace",
            "twin",
            "--",
            "sh",
            "-c",
            &format!(
                "env > {} && ip netns exec \"${{LAB_NS_CLIENTS%% *}}\" ping -n -c 1 -W 5 \
                 \"$LAB_SERVER_WAN\" && ip netns exec \"$LAB_NS_MGMT\" ping -n -c 1 -W 5 \
                 \"$LAB_DMZ_HOST\" && exit 7",
                env_file.display()
            ),
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(7),
        "the lab's exit status is the command's; the pings must have passed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let env = fs::read_to_string(&env_file).unwrap();
    let clients: Vec<String> = var(&env, "LAB_NS_CLIENTS")
        .split(' ')
        .map(str::to_owned)
        .collect();
    assert_eq!(clients.len(), 2);
    let mut all = clients;
    for key in [
        "LAB_NS_SERVER",
        "LAB_NS_WAN",
        "LAB_NS_MGMT",
        "LAB_NS_DMZ",
        "LAB_NS_TWIN",
    ] {
        all.push(var(&env, key));
    }
    assert!(var(&env, "WG_QUICK_USERSPACE_IMPLEMENTATION").starts_with(&var(&env, "LAB_DIR")));
    assert!(var(&env, "LAB_WG_PREFIX").len() <= 12);
    for ns in &all {
        assert!(
            !Path::new("/run/netns").join(ns).exists(),
            "namespace {ns} is left"
        );
    }
    assert!(
        !Path::new(&var(&env, "LAB_DIR")).exists(),
        "the lab's dir is left"
    );
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root: make test, or as root: cargo test --features root-tests"
)]
fn a_terminated_run_ends_its_command_and_removes_the_lab() {
    let tmp = tempfile::tempdir().unwrap();
    let mut run = start(tmp.path(), "exec sleep 1000");
    let pid_file = tmp.path().join("pid");
    wait_until("the command to start", || {
        fs::read_to_string(&pid_file).is_ok_and(|t| t.ends_with('\n'))
    });
    let command: u32 = fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(!namespaces_of(run.id()).is_empty());
    signal(run.id(), "-TERM");
    let status = run.wait().unwrap();
    assert_eq!(status.code(), Some(143), "TERM passed on to the command");
    assert!(!running(command), "the command {command} still runs");
    assert_eq!(namespaces_of(run.id()), Vec::<String>::new());
    let env = fs::read_to_string(tmp.path().join("env")).unwrap();
    assert!(
        !Path::new(&var(&env, "LAB_DIR")).exists(),
        "the lab's dir is left"
    );
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root: make test, or as root: cargo test --features root-tests"
)]
fn a_killed_run_takes_its_command_along_and_reap_removes_its_lab() {
    let tmp = tempfile::tempdir().unwrap();
    let mut run = start(tmp.path(), "exec sleep 1000");
    let pid_file = tmp.path().join("pid");
    wait_until("the command to start", || {
        fs::read_to_string(&pid_file).is_ok_and(|t| t.ends_with('\n'))
    });
    let command: u32 = fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let owner = run.id();
    signal(owner, "-KILL");
    run.wait().unwrap();
    wait_until("the command to end with its lab's owner", || {
        !running(command)
    });
    assert!(
        !namespaces_of(owner).is_empty(),
        "a lab killed outright cannot clean up: its namespaces stay until reaped"
    );
    let out = Command::new(LAB).arg("reap").output().unwrap();
    assert!(out.status.success());
    assert_eq!(namespaces_of(owner), Vec::<String>::new());
    let env = fs::read_to_string(tmp.path().join("env")).unwrap();
    assert!(
        !Path::new(&var(&env, "LAB_DIR")).exists(),
        "the lab's dir is left"
    );
}

#[test]
fn bad_arguments_are_refused_before_any_lab_is_built() {
    for args in [
        vec!["run", "--clients", "x", "--", "true"],
        vec!["run", "--clients", "201", "--", "true"],
        vec!["run", "--namespace", "server", "--", "true"],
        vec!["run", "--namespace", "Bad-Role", "--", "true"],
        vec!["run", "--clients", "1"],
        vec!["run", "--bogus"],
        vec!["frobnicate"],
        vec!["wrapper"],
        vec!["wrapper", "a", "b"],
    ] {
        let out = Command::new(LAB).args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.starts_with("wgadm-lab: "), "{args:?}: {err}");
    }
}

/// tests/ansible takes only the wrapper: it must land where asked, with the PID directory the
/// script's cleanup reads, and its path on stdout (the script captures it).
#[test]
fn wrapper_writes_the_lab_wrapper_and_its_pid_dir_where_asked() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wg-go");
    let out = Command::new(LAB)
        .args(["wrapper", dir.to_str().unwrap()])
        .env_remove("WGADM_LAB_KERNEL")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = dir.join("wireguard-go-lab");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        path.to_str().unwrap()
    );
    let mode = fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(
        mode & 0o111,
        0o111,
        "the wrapper is not executable: {mode:o}"
    );
    let script = fs::read_to_string(&path).unwrap();
    assert!(
        script.contains(&format!("{}/pids/$iface.pid", dir.display())),
        "{script}"
    );
    assert!(dir.join("pids").is_dir());
}
