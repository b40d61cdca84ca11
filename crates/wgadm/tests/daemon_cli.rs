//! `wgadm daemon` without a device (issue 10): what it does before its first poll, and where
//! its lines go. No root needed: the daemon never gets past the state lock here, or polls an
//! interface that does not exist.

mod common;

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::Env;

/// The daemon with its stderr in `log`; `journal`: `JOURNAL_STREAM` names that file, as
/// systemd sets it when stderr is the journal.
fn daemon(env: &Env, log: &Path, journal: bool) -> Child {
    let file = File::create(log).unwrap();
    let meta = file.metadata().unwrap();
    let mut c = env.cmd();
    c.args([
        "daemon",
        "--interval",
        "0.1",
        "--metrics-listen",
        "off",
        "--no-handshake-log",
        "--snapshot",
        "off",
        // This daemon runs in the host's network namespace: its firewall guard would load
        // `table inet wgadm` there, add the gate rule and switch IPv4 forwarding on.
        "--no-firewall-guard",
    ])
    .env_remove("JOURNAL_STREAM")
    .stdout(Stdio::null())
    .stderr(file);
    if journal {
        c.env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()));
    }
    c.spawn().unwrap()
}

/// Waits (polling, up to `timeout`) until `log` has a line containing `needle`; returns it.
fn wait_line(log: &Path, needle: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(l) = text.lines().find(|l| l.contains(needle)) {
            return l.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no line with {needle:?} within {timeout:?}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_exit(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn kill(child: &Child, sig: i32) {
    let pid = i32::try_from(child.id()).unwrap();
    // SAFETY: a signal to our own child, by its PID.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
}

const SIGTERM: i32 = libc::SIGTERM;
const SIGKILL: i32 = libc::SIGKILL;

#[test]
fn sigterm_while_waiting_for_the_state_lock_stops_the_daemon_at_once() {
    let env = Env::new();
    env.init(&[]);
    // Another wgadm (this test) holds the state's lock exclusively, as a long `apply` would.
    let dir = File::open(&env.state).unwrap();
    dir.lock().unwrap();
    let log = env.tmp.path().join("daemon.log");
    let mut child = daemon(&env, &log, false);
    wait_line(
        &log,
        "event=waiting_for_state_lock",
        Duration::from_secs(10),
    );
    let sent = Instant::now();
    kill(&child, SIGTERM);
    let status = wait_exit(&mut child, Duration::from_secs(10));
    if status.is_none() {
        kill(&child, SIGKILL);
        let _ = child.wait();
    }
    let took = sent.elapsed();
    let status = status.expect("the daemon ignored SIGTERM while waiting for the lock");
    assert_eq!(status.code(), Some(0), "a SIGTERM is a clean stop");
    let line = wait_line(&log, "event=daemon_stopping", Duration::from_secs(1));
    assert!(line.contains("waited_for=\"the state lock\""), "{line}");
    println!("stopped {took:?} after SIGTERM while the lock was held");
    drop(dir);
}

#[test]
fn under_the_journal_lines_carry_their_priority_and_elsewhere_not() {
    let env = Env::new();
    env.init(&[]);
    for journal in [true, false] {
        let log = env.tmp.path().join(format!("daemon-journal-{journal}.log"));
        let mut child = daemon(&env, &log, journal);
        // The interface does not exist here: the daemon starts (info), then its state is
        // broken by hand and it says so (error).
        let started = wait_line(&log, "event=daemon_started", Duration::from_secs(10));
        std::fs::write(env.path("peers/bad.yml"), "address: [\n").unwrap();
        let error = wait_line(&log, "event=state_error", Duration::from_secs(10));
        std::fs::remove_file(env.path("peers/bad.yml")).unwrap();
        kill(&child, SIGTERM);
        let status = wait_exit(&mut child, Duration::from_secs(10));
        if status.is_none() {
            kill(&child, SIGKILL);
            let _ = child.wait();
        }
        assert_eq!(status.and_then(|s| s.code()), Some(0));
        if journal {
            assert!(started.starts_with("<6>ts="), "{started}");
            assert!(error.starts_with("<3>ts="), "{error}");
        } else {
            assert!(started.starts_with("ts="), "{started}");
            assert!(error.starts_with("ts="), "{error}");
        }
    }
}
