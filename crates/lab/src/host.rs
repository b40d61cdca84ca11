//! The host's side: `ip` in the host's namespace, the root and tools check, reaping labs whose
//! owner is gone.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::process::{signal, wait_gone, Proc};
use crate::{kernel, KERNEL_ENV, SETUP_HINT};

/// `ip ARGS` in the host's namespace (only ever `netns add` or `-n OURS ...`).
pub(crate) fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run ip: {e}; {SETUP_HINT}"));
    check(&format!("ip {}", args.join(" ")), &out);
}

pub(crate) fn check(command: &str, out: &Output) {
    assert!(
        out.status.success(),
        "`{command}` failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Removes what labs of test processes that no longer exist left behind (a run killed with
/// SIGKILL or by a timeout cannot clean up): their namespaces, the processes inside them (by
/// PID), their wireguard-go sockets and temp dirs. Every name carries its owner's PID, so only
/// labs whose owner is gone are touched. [`Lab::new`] calls it; `wgadm-lab reap` too.
pub fn reap_stale_labs() {
    let owner_gone = |name: &str| -> bool {
        let Some(rest) = name.strip_prefix("wgadm-lab-") else {
            return false;
        };
        let pid = rest.split('-').next().unwrap_or("");
        !pid.is_empty()
            && pid.bytes().all(|b| b.is_ascii_digit())
            && !Path::new("/proc").join(pid).exists()
    };
    let mut dead_tags = BTreeSet::new();
    for e in fs::read_dir("/run/netns").into_iter().flatten().flatten() {
        let ns = e.file_name().to_string_lossy().into_owned();
        if !owner_gone(&ns) {
            continue;
        }
        if let Some(pid) = ns.split('-').nth(2).and_then(|p| p.parse::<u32>().ok()) {
            dead_tags.insert(format!("wl{pid:x}x"));
        }
        let pids = Command::new("ip").args(["netns", "pids", &ns]).output();
        let procs: Vec<Proc> = pids
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .filter_map(|pid| Proc::of(pid, "stale lab process"))
            .collect();
        signal(&procs, "KILL");
        wait_gone(&procs, Duration::from_secs(2));
        let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        eprintln!("lab: removed namespace {ns}, left by a test process that is gone");
    }
    for e in fs::read_dir("/var/run/wireguard")
        .into_iter()
        .flatten()
        .flatten()
    {
        let sock = e.file_name().to_string_lossy().into_owned();
        if dead_tags.iter().any(|t| sock.starts_with(t.as_str())) {
            let _ = fs::remove_file(e.path());
        }
    }
    for e in fs::read_dir(std::env::temp_dir())
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if owner_gone(&name) {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// Panics with [`SETUP_HINT`] unless this process is root and the tools are installed.
pub(crate) fn require_root_and_tools() {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("");
    assert!(euid == "0", "not running as root: {SETUP_HINT}");
    let path = std::env::var_os("PATH").unwrap_or_default();
    let missing: Vec<&str> = [
        "ip",
        "wg",
        "wg-quick",
        "wireguard-go",
        "ping",
        "sysctl",
        "kill",
        "bash",
        "timeout",
    ]
    .into_iter()
    .filter(|tool| !(kernel() && *tool == "wireguard-go"))
    .filter(|tool| !std::env::split_paths(&path).any(|d| d.join(tool).is_file()))
    .collect();
    assert!(
        missing.is_empty(),
        "missing {}: {SETUP_HINT}",
        missing.join(", ")
    );
    if kernel() {
        // Loaded on demand by the first `ip link add ... type wireguard`; modprobe says why not.
        let _ = Command::new("modprobe").arg("wireguard").status();
        assert!(
            Path::new("/sys/module/wireguard").exists(),
            "{KERNEL_ENV}=1 but the kernel has no wireguard module"
        );
        return;
    }
    assert!(
        Path::new("/dev/net/tun").exists(),
        "/dev/net/tun is missing (wireguard-go needs it): {SETUP_HINT}"
    );
}
