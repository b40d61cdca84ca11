//! Processes the lab started, known by PID and start time; signals and waits.

use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A process the lab started, identified by PID and start time so that a reused PID is never
/// mistaken for it.
#[derive(Debug, Clone)]
pub struct Proc {
    /// Its PID.
    pub pid: u32,
    /// Its start time (field 22 of /proc/PID/stat).
    pub start: u64,
    /// What it is, for messages.
    pub what: String,
}

impl Proc {
    pub(crate) fn of(pid: u32, what: &str) -> Option<Proc> {
        stat(pid).map(|(_, start)| Proc {
            pid,
            start,
            what: what.to_owned(),
        })
    }

    /// Whether it still runs (a zombie waiting for init to reap it does not count).
    pub fn alive(&self) -> bool {
        matches!(stat(self.pid), Some((state, start)) if start == self.start && state != 'Z' && state != 'X')
    }
}

/// State and start time of a process, from /proc/PID/stat.
pub(crate) fn stat(pid: u32) -> Option<(char, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces: the fields after it follow the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some((f.first()?.chars().next()?, f.get(19)?.parse().ok()?))
}

pub(crate) fn signal(procs: &[Proc], sig: &str) {
    for p in procs.iter().filter(|p| p.alive()) {
        let _ = Command::new("kill")
            .args([&format!("-{sig}"), &p.pid.to_string()])
            .stderr(Stdio::null())
            .status();
    }
}

pub(crate) fn wait_gone(procs: &[Proc], timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while procs.iter().any(Proc::alive) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}
