//! A bare network namespace (only `lo`), for tests that need one but not the lab's topology (the
//! nft tests, the device layer's live tests). Named like the lab's own (`wgadm-lab-PID-...`), so
//! one left by a killed test process is reaped like a lab.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::host::reap_stale_labs;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A network namespace of this process, deleted on drop.
#[derive(Debug)]
pub struct Namespace {
    name: String,
}

impl Namespace {
    /// Makes `wgadm-lab-PID-nN-ROLE` with `lo` up. `Err` says why not (e.g. not root).
    pub fn new(role: &str) -> Result<Namespace, String> {
        reap_stale_labs();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        // 'n' before the counter: never the same as a lab's `wgadm-lab-PID-N-ROLE`.
        let name = format!("wgadm-lab-{}-n{n}-{role}", std::process::id());
        run(&["netns", "add", &name])?;
        let ns = Namespace { name };
        run(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Its name, for `ip netns exec NAME` and `ip -n NAME`.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Namespace {
    /// Deletes the namespace (and with it its links). Never panics: it runs while a failed test
    /// unwinds; a failure is printed.
    fn drop(&mut self) {
        if let Err(e) = run(&["netns", "del", &self.name]) {
            eprintln!("lab: could not delete namespace {}: {e}", self.name);
        }
    }
}

fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "`ip {}` failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}
