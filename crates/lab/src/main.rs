//! `wgadm-lab`: the lab of this crate for shell scripts.
//!
//! ```text
//! wgadm-lab run [--clients N] [--namespace ROLE]... -- COMMAND [ARG]...
//! wgadm-lab wrapper DIR
//! wgadm-lab reap
//! ```
//!
//! `run` builds the lab, runs COMMAND with the lab's names in its environment
//! ([`wgadm_lab::Lab::shell_env`]), and removes the lab when COMMAND exits, also when it fails or
//! is interrupted (SIGINT, SIGTERM and SIGHUP are passed on to COMMAND, then the lab is removed).
//! It exits with COMMAND's status (128 + the signal when a signal ended it). A `run` killed with
//! SIGKILL sends COMMAND SIGTERM (PR_SET_PDEATHSIG) and leaves its lab behind; the next lab (or
//! `reap`) removes it, as its owner is gone.
//!
//! `wrapper DIR` is for scripts whose namespaces come from elsewhere (tests/ansible: the LXC
//! rig): it writes the lab's wireguard-go wrapper as DIR/wireguard-go-lab and prints that path,
//! for `WG_QUICK_USERSPACE_IMPLEMENTATION`; the script ends the wireguard-go processes by the
//! PIDs in DIR/pids/.

use std::fs;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use wgadm_lab::Lab;

const USAGE: &str = "usage: wgadm-lab run [--clients N] [--namespace ROLE]... -- COMMAND [ARG]...
       wgadm-lab wrapper DIR
       wgadm-lab reap
run: builds the network-namespace lab, runs COMMAND in the host's namespace with the lab's
names in LAB_* variables (and WG_QUICK_USERSPACE_IMPLEMENTATION), removes the lab when it exits.
wrapper: writes the lab's wireguard-go wrapper as DIR/wireguard-go-lab and prints its path;
each wireguard-go it starts records its PID in DIR/pids/IFNAME.pid, for the caller to end it.
reap: removes what labs of processes that are gone left behind.";

/// What `run` was asked for.
struct RunArgs {
    clients: usize,
    namespaces: Vec<String>,
    command: Vec<String>,
}

fn parse_run(args: &[String]) -> Result<RunArgs, String> {
    let mut run = RunArgs {
        clients: 0,
        namespaces: Vec::new(),
        command: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--clients" => {
                let n = it.next().ok_or("--clients wants a number")?;
                run.clients = n
                    .parse()
                    .ok()
                    .filter(|n| *n <= 200)
                    .ok_or(format!("--clients {n}: want a whole number from 0 to 200"))?;
            }
            "--namespace" => {
                let role = it.next().ok_or("--namespace wants a role")?;
                let ok = !role.is_empty()
                    && role.len() <= 8
                    && role
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
                if !ok {
                    return Err(format!(
                        "--namespace {role:?}: want 1 to 8 lowercase letters and digits"
                    ));
                }
                if ["server", "wan", "mgmt", "dmz"].contains(&role.as_str())
                    || role.starts_with("client")
                    || run.namespaces.contains(role)
                {
                    return Err(format!("--namespace {role}: the lab already has it"));
                }
                run.namespaces.push(role.clone());
            }
            "--" => {
                run.command = it.cloned().collect();
                break;
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if run.command.is_empty() {
        return Err("no command after --".into());
    }
    Ok(run)
}

fn run(args: RunArgs) -> Result<ExitCode, String> {
    // Registered before anything is built: from here on these signals cannot end this process
    // before the lab is removed.
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])
        .map_err(|e| format!("cannot catch signals: {e}"))?;
    let child_pid = Arc::new(AtomicI32::new(0));
    let forward = Arc::clone(&child_pid);
    std::thread::spawn(move || {
        for sig in signals.forever() {
            let pid = forward.load(Ordering::SeqCst);
            if pid > 0 {
                // SAFETY: kill(2) with a PID this process started and has not yet waited for.
                unsafe { libc::kill(pid, sig) };
            }
        }
    });

    let mut lab = Lab::new(args.clients);
    for role in &args.namespaces {
        lab.add_namespace(role);
    }
    let mut command = Command::new(&args.command[0]);
    command.args(&args.command[1..]).envs(lab.shell_env());
    // SAFETY: prctl(2) is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        // A `run` killed outright takes COMMAND with it (SIGTERM), so nothing goes on using a
        // lab the next one reaps.
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", args.command[0]))?;
    child_pid.store(
        i32::try_from(child.id()).unwrap_or(0),
        std::sync::atomic::Ordering::SeqCst,
    );
    let status = child
        .wait()
        .map_err(|e| format!("waiting for {}: {e}", args.command[0]))?;
    // Waited for: its PID may be reused, so no signal goes to it any more.
    child_pid.store(0, Ordering::SeqCst);
    drop(lab);
    let code = match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(s)) => 128 + s,
        (None, None) => 1,
    };
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

/// `wrapper DIR`: the wrapper without a lab, for namespaces made elsewhere.
fn wrapper(dir: &str) -> Result<ExitCode, String> {
    let dir = Path::new(dir);
    let pids = dir.join("pids");
    fs::create_dir_all(&pids).map_err(|e| format!("cannot create {}: {e}", pids.display()))?;
    let path = dir.join("wireguard-go-lab");
    wgadm_lab::write_userspace_wrapper(dir, &path);
    println!("{}", path.display());
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    // The lab panics with what is missing (root, a tool): say it as a tool does, no backtrace.
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("panic");
        eprintln!("wgadm-lab: {msg}");
    }));
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("run") => parse_run(&args[1..]).and_then(run),
        Some("wrapper") if args.len() == 2 => wrapper(&args[1]),
        Some("reap") if args.len() == 1 => {
            wgadm_lab::reap_stale_labs();
            Ok(ExitCode::SUCCESS)
        }
        Some("-h" | "--help") => {
            println!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        _ => Err(USAGE.to_owned()),
    };
    result.unwrap_or_else(|e| {
        eprintln!("wgadm-lab: {e}");
        ExitCode::from(2)
    })
}
