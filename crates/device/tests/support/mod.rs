//! A network namespace with one WireGuard interface in it, for live tests and the benchmark:
//! wireguard-go (userspace) or, where the module exists, a kernel `wireguard` link. The namespace
//! is the lab's bare one (crates/lab: named after this process, reaped if it is killed); the
//! interface's name carries this process's PID and a counter (wireguard-go's socket path is not
//! namespaced). Everything is removed on drop, also when a test panics: wireguard-go is killed
//! by its PID, then the namespace (and with it the link) is deleted.
#![allow(dead_code)]

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use wgadm_device::SOCKET_DIR;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Which implementation to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Userspace,
    Kernel,
}

/// A namespace with one interface.
pub struct Rig {
    pub netns: String,
    pub iface: String,
    wireguard_go: Option<Child>,
    // Dropped after `Drop::drop` has ended wireguard-go.
    _ns: wgadm_lab::Namespace,
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Rig {
    /// Makes the namespace and the interface. `Err` says why (not root, no module, no tool).
    pub fn new(kind: Kind) -> Result<Rig, String> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        // At most 15 characters: "wgd" + PID (up to 7 digits) + kind + counter.
        let tag = if kind == Kind::Kernel { 'k' } else { 'u' };
        let iface = format!("wgd{pid}{tag}{n}");
        let ns = wgadm_lab::Namespace::new(&format!("dev{tag}"))?;
        let mut rig = Rig {
            netns: ns.name().to_owned(),
            iface,
            wireguard_go: None,
            _ns: ns,
        };
        match kind {
            Kind::Kernel => run(Command::new("ip").args([
                "-n",
                &rig.netns,
                "link",
                "add",
                &rig.iface,
                "type",
                "wireguard",
            ]))?,
            Kind::Userspace => {
                let child = Command::new("ip")
                    .args([
                        "netns",
                        "exec",
                        &rig.netns,
                        "wireguard-go",
                        "-f",
                        &rig.iface,
                    ])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .map_err(|e| format!("wireguard-go: {e}"))?;
                rig.wireguard_go = Some(child);
                let socket = rig.socket();
                let deadline = Instant::now() + Duration::from_secs(20);
                while !socket.exists() {
                    if let Some(Ok(Some(status))) = rig.wireguard_go.as_mut().map(|c| c.try_wait())
                    {
                        return Err(format!("wireguard-go exited: {status}"));
                    }
                    if Instant::now() > deadline {
                        return Err("wireguard-go made no socket in 20 s".into());
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
        // Up, as a server's interface is: the kernel binds its UDP port only while the link is
        // up (a port set on a down link is just stored).
        run(Command::new("ip").args(["-n", &rig.netns, "link", "set", &rig.iface, "up"]))?;
        Ok(rig)
    }

    /// The UAPI socket of a userspace interface.
    pub fn socket(&self) -> PathBuf {
        Path::new(SOCKET_DIR).join(format!("{}.sock", self.iface))
    }

    /// Moves the calling thread into the namespace (netlink is per namespace; the UAPI socket
    /// is not). Test threads are not reused, so this does not leak into other tests.
    pub fn enter(&self) {
        let file = File::open(format!("/run/netns/{}", self.netns)).expect("netns file");
        // SAFETY: setns on a valid namespace fd; affects only this thread.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
    }

    /// `wg show IF dump` run inside the namespace.
    pub fn wg_dump(&self) -> String {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.netns,
                "wg",
                "show",
                &self.iface,
                "dump",
            ])
            .stdin(Stdio::null())
            .output()
            .expect("wg");
        assert!(
            out.status.success(),
            "wg show dump: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if let Some(mut child) = self.wireguard_go.take() {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_file(self.socket());
        }
    }
}

/// Whether the kernel can make a WireGuard link here (the module is loaded or loadable).
pub fn kernel_available() -> Result<(), String> {
    Rig::new(Kind::Kernel).map(drop)
}
