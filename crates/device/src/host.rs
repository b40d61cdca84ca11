//! The one place that talks to a live WireGuard interface.
//!
//! Reading and changing the device go through the device layer ([`crate::Device`]): generic
//! netlink for the kernel module, the UAPI socket for a userspace implementation
//! (wireguard-go), chosen per interface the way `wg` chooses (the socket
//! `/var/run/wireguard/IF.sock` exists → userspace, else the kernel). No `wg` process runs, no
//! key is in an argument list or a file, and errors are typed (an errno), never another
//! program's message. `apply` and the daemon read through this same module.
//!
//! Bringing the interface up and down stays with `wg-quick` (or the unit `wg-quick@IF` where
//! systemd manages it), so boot and `apply` agree on how the interface is made.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use crate::{ChangeSet, Device, PeerChange, PeerUpdate, PresharedKey, WireGuard};
use ipnet::IpNet;
use wgadm_core::device::Observed;
use wgadm_core::plan::{Change, DesiredPeer, Plan};
use wgadm_core::{InterfaceName, Key, Secret};

/// Where wg-quick looks for `<interface>.conf` when given only an interface name.
pub const DEFAULT_CONFIG_DIR: &str = "/etc/wireguard";

/// The environment variable that tells wg-quick which userspace implementation to start when
/// the kernel module is missing (wg-quick's default is `wireguard-go`).
pub const USERSPACE_ENV: &str = "WG_QUICK_USERSPACE_IMPLEMENTATION";

/// What went wrong talking to the device. Messages name the interface, what failed and what
/// to do; they never contain a private or preshared key.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// A tool wgadm needs is not installed.
    #[error("`{tool}` not found ({looked}): install the Debian package `{package}` (scripts/setup.sh does)")]
    ToolMissing {
        /// The program name.
        tool: String,
        /// Where it was looked for.
        looked: String,
        /// The Debian package that provides it.
        package: &'static str,
    },
    /// Neither the kernel module nor a userspace implementation is available.
    #[error(
        "no WireGuard implementation: the kernel module is not loaded (/sys/module/wireguard is \
         missing) and no userspace implementation was found ({looked}); load the module \
         (`modprobe wireguard`; in a Proxmox container load it on the host, via \
         /etc/modules-load.d/wireguard.conf) or install the package `wireguard-go` and pass \
         /dev/net/tun into the container"
    )]
    NoImplementation {
        /// What was looked for.
        looked: String,
    },
    /// A tool could not be started at all.
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        /// The command, without secrets.
        command: String,
        /// Why the start failed.
        #[source]
        source: io::Error,
    },
    /// A tool ran and failed.
    #[error("`{command}` failed for interface {iface} ({status}): {stderr}{hint}")]
    Failed {
        /// The interface.
        iface: InterfaceName,
        /// The command, shortened, without secrets.
        command: String,
        /// How it exited.
        status: String,
        /// What it printed on stderr.
        stderr: String,
        /// What to do about it (empty, or starting with "; ").
        hint: String,
    },
    /// A change was sent to an interface that does not exist.
    #[error(
        "interface {iface} does not exist (no WireGuard interface of that name, kernel or \
         userspace): bring it up first (`wgadm apply` does, with wg-quick)"
    )]
    Missing {
        /// The interface.
        iface: InterfaceName,
    },
    /// The device layer failed or the device refused a request.
    #[error("{source}{hint}")]
    Device {
        /// What the device layer said (it names the interface, and the peer when one).
        #[source]
        source: Box<crate::Error>,
        /// What to do about it (empty, or starting with "; ").
        hint: String,
    },
    /// The interface is still missing after `up` reported success.
    #[error("{how} reported success, but interface {iface} does not exist afterwards; {hint}")]
    NotUp {
        /// The interface.
        iface: InterfaceName,
        /// What brought it up.
        how: String,
        /// Where to look.
        hint: String,
    },
    /// `up` was asked for an interface whose config has not been written.
    #[error("cannot bring up {iface}: its wg-quick config {path} does not exist; write it first")]
    ConfigMissing {
        /// The interface.
        iface: InterfaceName,
        /// Where the config should be.
        path: PathBuf,
    },
    /// Another socket holds the UDP port WireGuard should listen on.
    #[error(
        "UDP port {port} is already in use{}: stop that service, or choose another listen_port",
        holder.as_ref().map_or_else(String::new, |h| format!(" by {h}"))
    )]
    PortInUse {
        /// The port.
        port: u16,
        /// Who holds it (`pid 123 (name)`), when that can be found.
        holder: Option<String>,
    },
    /// Binding the port failed for another reason than its being in use.
    #[error("cannot check whether UDP port {port} is free: {source}")]
    PortCheck {
        /// The port.
        port: u16,
        /// Why the test bind failed.
        #[source]
        source: io::Error,
    },
}

impl DeviceError {
    /// The error for a failed request to the device, with what to do for the usual errnos.
    fn device(source: crate::Error) -> DeviceError {
        let errno = std::error::Error::source(&source)
            .and_then(|s| s.downcast_ref::<io::Error>())
            .and_then(io::Error::raw_os_error);
        let hint = match errno {
            Some(libc::EADDRINUSE) => {
                "; another service holds the listen port: stop it or choose another listen_port \
                 (wireguard-go has then closed its old port; `wgadm apply` sets it again)"
            }
            Some(libc::EOPNOTSUPP) => "; the interface is not a WireGuard interface",
            _ => "",
        };
        DeviceError::Device {
            source: Box::new(source),
            hint: hint.into(),
        }
    }
}

/// Which implementation serves an interface, as `status` shows it: `kernel (netlink)` or
/// `userspace (UAPI /var/run/wireguard/IF.sock)`.
pub use crate::Backend as DeviceBackend;

/// The live-device shell: the device layer for reading and changing an interface, `wg-quick`
/// (or systemd's `wg-quick@IF`) for bringing it up and down, and the directory of its configs.
#[derive(Debug, Clone)]
pub struct Backend {
    wg_quick: PathBuf,
    config_dir: PathBuf,
    userspace: Option<PathBuf>,
    /// Where userspace implementations put their UAPI sockets.
    socket_dir: PathBuf,
    /// `Some(program)`: systemd manages wg-quick@IF through this systemctl (for tests);
    /// `None`: find out ([`Backend::systemd_manages`]).
    systemctl: Option<PathBuf>,
    /// The network namespace of the kernel interfaces (`None`: this process's own).
    netns: Option<PathBuf>,
}

impl Backend {
    /// A backend using `wg-quick` from PATH and configs in `config_dir` (normally
    /// [`DEFAULT_CONFIG_DIR`]).
    pub fn new(config_dir: PathBuf) -> Self {
        Backend {
            wg_quick: "wg-quick".into(),
            config_dir,
            userspace: None,
            socket_dir: crate::SOCKET_DIR.into(),
            systemctl: None,
            netns: None,
        }
    }

    /// Reads and changes kernel interfaces in the network namespace `netns` (a file such as
    /// `/run/netns/NAME`), for a caller that runs in another one (the lab's tests, whose
    /// `wg-quick` runs under `ip netns exec`).
    pub fn with_netns(mut self, netns: impl Into<PathBuf>) -> Self {
        self.netns = Some(netns.into());
        self
    }

    /// Uses this `wg-quick` program (a name looked up on PATH, or a path).
    pub fn with_wg_quick(mut self, wg_quick: impl Into<PathBuf>) -> Self {
        self.wg_quick = wg_quick.into();
        self
    }

    /// Has wg-quick start this userspace implementation when the kernel module is missing (it is
    /// passed as `WG_QUICK_USERSPACE_IMPLEMENTATION`). Without it the environment's value, if
    /// any, passes through unchanged.
    pub fn with_userspace(mut self, program: impl Into<PathBuf>) -> Self {
        self.userspace = Some(program.into());
        self
    }

    /// Starts interfaces as the unit `wg-quick@IF` through this `systemctl`, whatever the
    /// config directory (for tests with a stand-in).
    pub fn with_systemctl(mut self, program: impl Into<PathBuf>) -> Self {
        self.systemctl = Some(program.into());
        self
    }

    /// Looks for userspace UAPI sockets in this directory instead of /var/run/wireguard (for
    /// tests with a stand-in).
    pub fn with_socket_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.socket_dir = dir.into();
        self
    }

    /// The directory of wg-quick configs.
    pub fn config_dir(&self) -> &Path {
        &self.config_dir
    }

    /// Where the wg-quick config of `iface` lives: `<config_dir>/<iface>.conf`.
    pub fn config_path(&self, iface: &InterfaceName) -> PathBuf {
        self.config_dir.join(format!("{iface}.conf"))
    }

    /// Which implementation serves `iface` now: userspace when its UAPI socket exists, else the
    /// kernel (the rule of `wg` itself).
    pub fn backend_of(&self, iface: &InterfaceName) -> DeviceBackend {
        let socket = self.socket_dir.join(format!("{iface}.sock"));
        if socket.exists() {
            DeviceBackend::Userspace { socket }
        } else {
            DeviceBackend::Kernel
        }
    }

    /// The device layer's handle on `iface`.
    fn device(&self, iface: &InterfaceName) -> Result<Device, DeviceError> {
        let device = Device::with_backend(iface.as_str(), self.backend_of(iface))
            .map_err(DeviceError::device)?;
        Ok(match &self.netns {
            Some(ns) => device.in_netns(ns),
            None => device,
        })
    }

    /// Checks that everything needed to run an interface is installed: `wg` and `wg-quick`
    /// (wg-quick runs `wg` itself) and `ip`, and either the kernel module or a userspace
    /// implementation. The error names what is missing and the package to install.
    pub fn preflight(&self) -> Result<(), DeviceError> {
        for (tool, package) in [
            (Path::new("wg"), "wireguard-tools"),
            (self.wg_quick.as_path(), "wireguard-tools"),
            (Path::new("ip"), "iproute2"),
        ] {
            if find_program(tool).is_none() {
                return Err(DeviceError::ToolMissing {
                    tool: tool.display().to_string(),
                    looked: looked_where(tool),
                    package,
                });
            }
        }
        if kernel_module_available() {
            return Ok(());
        }
        let userspace = self
            .userspace
            .clone()
            .or_else(|| std::env::var_os(USERSPACE_ENV).map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("wireguard-go"));
        if find_program(&userspace).is_some() {
            return Ok(());
        }
        Err(DeviceError::NoImplementation {
            looked: format!("{} ({})", userspace.display(), looked_where(&userspace)),
        })
    }

    /// Reads the interface: its public key, port and peers, in one request to the device (no
    /// process). `None` when no WireGuard interface of that name exists.
    pub fn show(&self, iface: &InterfaceName) -> Result<Option<Observed>, DeviceError> {
        match self.device(iface)?.read() {
            Ok(found) => Ok(Some(Observed::from(found))),
            // No socket and no kernel module, or the kernel has no such interface.
            Err(crate::Error::NoSuchInterface { .. } | crate::Error::NoKernelModule { .. }) => {
                Ok(None)
            }
            Err(e) => Err(DeviceError::device(e)),
        }
    }

    /// Creates the interface from its config (`wg-quick up`), which the caller has written to
    /// [`Backend::config_path`]. With the default config directory wg-quick gets the interface
    /// name (as `wg-quick@IF` does); otherwise the full path, from which it takes the name.
    ///
    /// Where systemd runs and the config is in the default directory, the interface is started
    /// as the unit `wg-quick@IF` instead, so that systemd knows it is up: `systemctl status`,
    /// a later `systemctl restart` and the next boot then agree with what apply did.
    ///
    /// Afterwards the interface must exist, else the error says so: a unit still "active
    /// (exited)" after its link was deleted makes `systemctl start` a no-op, so an active unit
    /// whose link is gone is restarted instead.
    pub fn up(&self, iface: &InterfaceName) -> Result<(), DeviceError> {
        let how = match self.systemctl_program() {
            Some(systemctl) => {
                let unit = format!("wg-quick@{iface}.service");
                let active = run(
                    Command::new(&systemctl),
                    &systemctl,
                    &["is-active".into(), "--quiet".into(), unit.clone().into()],
                )?
                .status
                .success();
                // `up` runs only when the link is missing, so an active unit is stale.
                let verb = if active { "restart" } else { "start" };
                // Without its dependencies: wg-quick@ wants wgadm-firewall.service, whose
                // `wgadm firewall apply` would wait for the state lock apply holds, and apply
                // has just put the firewall in force itself.
                let args = [
                    OsString::from(verb),
                    "--job-mode=ignore-dependencies".into(),
                    unit.clone().into(),
                ];
                let out = run(Command::new(&systemctl), &systemctl, &args)?;
                if !out.status.success() {
                    let stderr = String::from_utf8_lossy(&out.stderr);
                    return Err(failed(iface, &systemctl, &args, out.status, &stderr, &[]));
                }
                format!("`systemctl {verb} --job-mode=ignore-dependencies {unit}`")
            }
            None => {
                self.wg_quick("up", iface)?;
                format!("`wg-quick up {iface}`")
            }
        };
        if self.show(iface)?.is_none() {
            return Err(DeviceError::NotUp {
                iface: iface.clone(),
                hint: format!(
                    "see `journalctl -u wg-quick@{iface}` (or run `wg-quick up {iface}` by \
                     hand to see its messages), then run `wgadm apply` again"
                ),
                how,
            });
        }
        Ok(())
    }

    /// The systemctl that manages wg-quick@IF, when one does.
    fn systemctl_program(&self) -> Option<PathBuf> {
        match &self.systemctl {
            Some(p) => Some(p.clone()),
            None => self.systemd_manages().then(|| PathBuf::from("systemctl")),
        }
    }

    /// Whether systemd is the init system and has the wg-quick@ unit for our config directory.
    fn systemd_manages(&self) -> bool {
        self.config_dir == Path::new(DEFAULT_CONFIG_DIR)
            && Path::new("/run/systemd/system").is_dir()
            && [
                "/lib/systemd/system",
                "/usr/lib/systemd/system",
                "/etc/systemd/system",
            ]
            .iter()
            .any(|d| Path::new(d).join("wg-quick@.service").is_file())
    }

    /// Removes the interface (`wg-quick down`), with its routes and PostDown commands.
    pub fn down(&self, iface: &InterfaceName) -> Result<(), DeviceError> {
        self.wg_quick("down", iface)
    }

    fn wg_quick(&self, verb: &str, iface: &InterfaceName) -> Result<(), DeviceError> {
        let path = self.config_path(iface);
        if !path.is_file() {
            return Err(DeviceError::ConfigMissing {
                iface: iface.clone(),
                path,
            });
        }
        let target: OsString = if self.config_dir == Path::new(DEFAULT_CONFIG_DIR) {
            iface.as_str().into()
        } else {
            path.into()
        };
        let args = [OsString::from(verb), target];
        let mut command = Command::new(&self.wg_quick);
        if let Some(userspace) = &self.userspace {
            command.env(USERSPACE_ENV, userspace);
        }
        let out = run(command, &self.wg_quick, &args)?;
        if out.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(failed(
            iface,
            &self.wg_quick,
            &args,
            out.status,
            &stderr,
            &[],
        ))
    }

    /// Applies a plan: every change of the plan in one change set, sent to the device in one
    /// request (the kernel gets it in page-sized messages, each acknowledged). An empty plan
    /// sends nothing. Peers are changed in place, never removed and re-added; the peer list is
    /// never replaced; the private key and listen port are sent only when the plan says so.
    pub fn apply(
        &self,
        iface: &InterfaceName,
        plan: &Plan,
        private_key: &Secret,
    ) -> Result<(), DeviceError> {
        if plan.is_empty() {
            return Ok(());
        }
        self.send(iface, &change_set(plan, private_key))
    }

    /// Takes peers off the device by public key and changes nothing else: no key is read,
    /// written or sent, so a caller without access to key files (the daemon enforcing an
    /// expiry) can use it. Other peers' tunnels are not touched.
    pub fn remove_peers(&self, iface: &InterfaceName, keys: &[Key]) -> Result<(), DeviceError> {
        let changes = ChangeSet {
            peers: keys.iter().map(|k| PeerChange::Remove(*k)).collect(),
            ..ChangeSet::default()
        };
        self.send(iface, &changes)
    }

    fn send(&self, iface: &InterfaceName, changes: &ChangeSet) -> Result<(), DeviceError> {
        match self.device(iface)?.apply(changes) {
            Ok(()) => Ok(()),
            Err(crate::Error::NoSuchInterface { .. } | crate::Error::NoKernelModule { .. }) => {
                Err(DeviceError::Missing {
                    iface: iface.clone(),
                })
            }
            Err(e) => Err(DeviceError::device(e)),
        }
    }
}

/// The device layer's change set for a plan, in plan order (removals before additions, so an
/// address moved from one key to another is never claimed twice).
fn change_set(plan: &Plan, private_key: &Secret) -> ChangeSet {
    let mut set = ChangeSet::default();
    for change in &plan.changes {
        match change {
            Change::PrivateKey => set.private_key = Some(private_key.clone()),
            Change::ListenPort { to, .. } => set.listen_port = Some(*to),
            Change::Add(peer) => set.peers.push(PeerChange::Set(PeerUpdate {
                allowed_ips: Some(allowed_ips(peer)),
                preshared_key: peer
                    .preshared_key
                    .clone()
                    .map_or(PresharedKey::Keep, PresharedKey::Set),
                ..PeerUpdate::new(peer.public_key)
            })),
            Change::Update {
                peer,
                allowed_ips: ips,
                preshared_key,
                keepalive,
            } => set.peers.push(PeerChange::Set(PeerUpdate {
                allowed_ips: ips.then(|| allowed_ips(peer)),
                preshared_key: match (preshared_key, &peer.preshared_key) {
                    (false, _) => PresharedKey::Keep,
                    (true, Some(psk)) => PresharedKey::Set(psk.clone()),
                    (true, None) => PresharedKey::Clear,
                },
                keepalive: keepalive.then_some(0),
                ..PeerUpdate::new(peer.public_key)
            })),
            Change::Remove { public_key, .. } => set.peers.push(PeerChange::Remove(*public_key)),
        }
    }
    set
}

fn allowed_ips(peer: &DesiredPeer) -> Vec<IpNet> {
    peer.allowed_ips.iter().map(|n| IpNet::V4(*n)).collect()
}

/// Checks that nothing holds UDP `port` (on IPv4 or IPv6) in this network namespace, by trying
/// to bind it. The error names the holding process when it can be found.
pub fn check_port_free(port: u16) -> Result<(), DeviceError> {
    match UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port)) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            return Err(DeviceError::PortInUse {
                port,
                holder: port_holder(port),
            })
        }
        Err(source) => return Err(DeviceError::PortCheck { port, source }),
    }
    // A host without IPv6 cannot bind [::]; only "in use" matters here.
    match UdpSocket::bind((Ipv6Addr::UNSPECIFIED, port)) {
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(DeviceError::PortInUse {
            port,
            holder: port_holder(port),
        }),
        _ => Ok(()),
    }
}

/// Who holds UDP `port` in this network namespace: `pid N (comm)`, `the kernel (...)` for a
/// socket without a process (kernel WireGuard), or `None` when nobody does or the holder cannot
/// be seen (another user's process, without root).
pub fn port_holder(port: u16) -> Option<String> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/udp", "/proc/net/udp6"] {
        if let Ok(text) = fs::read_to_string(table) {
            inodes.extend(socket_inodes(&text, port));
        }
    }
    if inodes.is_empty() {
        return None;
    }
    let wanted: Vec<String> = inodes
        .iter()
        .filter(|&&i| i != 0)
        .map(|i| format!("socket:[{i}]"))
        .collect();
    if wanted.is_empty() {
        return Some("the kernel (probably another WireGuard interface)".into());
    }
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(fds) = fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = fs::read_link(fd.path()) else {
                continue;
            };
            if wanted.iter().any(|w| target.as_os_str() == OsStr::new(w)) {
                let comm = fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
                return Some(format!("pid {pid} ({})", comm.trim()));
            }
        }
    }
    None
}

/// The inodes of the sockets bound to local `port` in a /proc/net/udp{,6} table.
fn socket_inodes(table: &str, port: u16) -> Vec<u64> {
    let suffix = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            (f.len() > 9 && f[1].ends_with(&suffix))
                .then(|| f[9].parse().ok())
                .flatten()
        })
        .collect()
}

/// Output of a finished tool.
struct Finished {
    status: ExitStatus,
    stderr: Vec<u8>,
}

/// Runs `command` with `args` and waits for it.
fn run(mut command: Command, program: &Path, args: &[OsString]) -> Result<Finished, DeviceError> {
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let spawn_error = |source| DeviceError::Spawn {
        command: show_command(program, args),
        source,
    };
    let child = command.spawn().map_err(spawn_error)?;
    let out = child.wait_with_output().map_err(spawn_error)?;
    Ok(Finished {
        status: out.status,
        stderr: out.stderr,
    })
}

/// The command line for a message: at most 12 arguments, then how many more.
fn show_command(program: &Path, args: &[OsString]) -> String {
    const SHOWN: usize = 12;
    let mut text = program.display().to_string();
    for a in args.iter().take(SHOWN) {
        text.push(' ');
        text.push_str(&a.to_string_lossy());
    }
    if args.len() > SHOWN {
        text.push_str(&format!(" ... ({} more arguments)", args.len() - SHOWN));
    }
    text
}

/// The error for a tool that failed, with its stderr cleaned of any key it was handed (wg
/// echoes a malformed key file's content) and a hint for the usual causes.
fn failed(
    iface: &InterfaceName,
    program: &Path,
    args: &[OsString],
    status: ExitStatus,
    stderr: &str,
    secrets: &[&Secret],
) -> DeviceError {
    let mut clean = stderr.trim().to_owned();
    for secret in secrets {
        let text = secret.expose();
        if clean.contains(text.as_str()) {
            clean = clean.replace(text.as_str(), "<redacted>");
        }
    }
    if clean.is_empty() {
        clean = "(no error output)".into();
    }
    let hint = if clean.contains("No such device") || clean.contains("Protocol not supported") {
        format!("; the interface {iface} does not exist: bring it up first")
    } else if clean.contains("already exists") {
        format!("; {iface} is already up: take it down first, or apply changes to it instead")
    } else if clean.contains("Operation not permitted") || clean.contains("Permission denied") {
        "; this needs root (CAP_NET_ADMIN)".into()
    } else if clean.contains("Address already in use") {
        "; another service holds the listen port: stop it or choose another listen_port".into()
    } else {
        String::new()
    };
    DeviceError::Failed {
        iface: iface.clone(),
        command: show_command(program, args),
        status: status.to_string(),
        stderr: clean,
        hint,
    }
}

/// Where a program resolves: itself when it contains a slash, else the first executable file
/// of that name on PATH.
fn find_program(program: &Path) -> Option<PathBuf> {
    let executable = |p: &Path| {
        fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.components().count() > 1 || program.is_absolute() {
        return executable(program).then(|| program.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| executable(p))
}

fn looked_where(program: &Path) -> String {
    if program.components().count() > 1 || program.is_absolute() {
        format!("{} is not an executable file", program.display())
    } else {
        "not on PATH".into()
    }
}

/// Whether the kernel has WireGuard: loaded (or built in), or available for `ip link add` to
/// load on demand (listed in this kernel's modules.dep).
fn kernel_module_available() -> bool {
    if Path::new("/sys/module/wireguard").exists() {
        return true;
    }
    let Ok(release) = fs::read_to_string("/proc/sys/kernel/osrelease") else {
        return false;
    };
    let deps = Path::new("/lib/modules")
        .join(release.trim())
        .join("modules.dep");
    fs::read_to_string(deps).is_ok_and(|d| d.contains("/wireguard.ko"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipnet::Ipv4Net;
    use std::io::Write;
    use std::os::unix::net::UnixListener;
    use wgadm_core::{Key, PeerName};

    fn iface() -> InterfaceName {
        "wg0".parse().unwrap()
    }

    fn desired(byte: u8, ip: &str, psk: Option<u8>) -> DesiredPeer {
        DesiredPeer {
            name: PeerName::parse(&format!("p{byte}")).unwrap(),
            public_key: Key::from([byte; 32]),
            allowed_ips: vec![ip.parse::<Ipv4Net>().unwrap()],
            preshared_key: psk.map(|b| Secret::preshared_from_random([b; 32])),
        }
    }

    #[test]
    fn a_plan_becomes_one_change_set_in_order() {
        let private = Secret::private_from_random([3; 32]);
        let plan = Plan {
            changes: vec![
                Change::PrivateKey,
                Change::ListenPort { from: 1, to: 2 },
                Change::Remove {
                    name: None,
                    public_key: Key::from([9; 32]),
                },
                Change::Update {
                    peer: desired(6, "192.168.100.6/32", None),
                    allowed_ips: false,
                    preshared_key: true,
                    keepalive: true,
                },
                Change::Add(desired(5, "192.168.100.5/32", Some(55))),
            ],
        };
        let set = change_set(&plan, &private);
        assert_eq!(
            set.private_key.as_ref().map(|k| k.expose()),
            Some(private.expose())
        );
        assert_eq!(set.listen_port, Some(2));
        assert_eq!(set.fwmark, None);
        let keys: Vec<Key> = set.peers.iter().map(|c| *c.public_key()).collect();
        assert_eq!(
            keys,
            [Key::from([9; 32]), Key::from([6; 32]), Key::from([5; 32])]
        );
        assert!(matches!(set.peers[0], PeerChange::Remove(_)));
        let PeerChange::Set(update) = &set.peers[1] else {
            panic!("an update: {:?}", set.peers[1]);
        };
        assert!(matches!(update.preshared_key, PresharedKey::Clear));
        assert_eq!(
            (update.keepalive, update.allowed_ips.is_none()),
            (Some(0), true)
        );
        assert!(!update.update_only && update.endpoint.is_none());
        let PeerChange::Set(add) = &set.peers[2] else {
            panic!("an add: {:?}", set.peers[2]);
        };
        assert_eq!(
            add.allowed_ips,
            Some(vec!["192.168.100.5/32".parse().unwrap()])
        );
        let PresharedKey::Set(psk) = &add.preshared_key else {
            panic!("a preshared key");
        };
        assert_eq!(
            psk.expose(),
            Secret::preshared_from_random([55; 32]).expose()
        );
        assert_eq!(add.keepalive, None);

        // Nothing else is sent: no interface field the plan does not name.
        let only_peer = change_set(
            &Plan {
                changes: vec![Change::Add(desired(5, "192.168.100.5/32", None))],
            },
            &private,
        );
        assert!(only_peer.private_key.is_none() && only_peer.listen_port.is_none());
        let PeerChange::Set(add) = &only_peer.peers[0] else {
            panic!("an add");
        };
        assert!(matches!(add.preshared_key, PresharedKey::Keep));
    }

    #[test]
    fn preflight_names_the_missing_tool_and_package() {
        let b = Backend::new("/nonexistent".into()).with_wg_quick("/nonexistent/wg-quick");
        let e = b.preflight().unwrap_err().to_string();
        assert!(
            e.contains("/nonexistent/wg-quick") && e.contains("wireguard-tools"),
            "{e}"
        );
        let b = Backend::new("/nonexistent".into()).with_wg_quick("no-such-wg-quick-here");
        let e = b.preflight().unwrap_err().to_string();
        assert!(
            e.contains("not on PATH") && e.contains("wireguard-tools"),
            "{e}"
        );
    }

    #[test]
    fn config_paths_and_missing_configs() {
        let b = Backend::new("/nonexistent/cfg".into());
        assert_eq!(
            b.config_path(&iface()),
            PathBuf::from("/nonexistent/cfg/wg0.conf")
        );
        let e = b.up(&iface()).unwrap_err();
        assert!(matches!(e, DeviceError::ConfigMissing { .. }), "{e}");
        assert!(e.to_string().contains("/nonexistent/cfg/wg0.conf"));
    }

    #[test]
    fn reads_socket_inodes_from_proc_net_udp() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
          1: 00000000:CA6C 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4242 2 0000000000000000 0\n\
          2: 0100007F:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 17 2 0000000000000000 0\n";
        assert_eq!(socket_inodes(table, 51820), vec![4242]);
        assert_eq!(socket_inodes(table, 53), vec![17]);
        assert!(socket_inodes(table, 1).is_empty());
    }

    #[test]
    fn a_held_port_names_its_holder() {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = socket.local_addr().unwrap().port();
        let holder = port_holder(port).unwrap();
        assert!(
            holder.starts_with(&format!("pid {} (", std::process::id())),
            "{holder}"
        );
        let e = check_port_free(port).unwrap_err();
        assert!(matches!(e, DeviceError::PortInUse { .. }), "{e}");
        assert!(e.to_string().contains(&holder), "{e}");
        drop(socket);
        check_port_free(port).unwrap();
    }

    /// A stand-in for a userspace WireGuard's UAPI socket: it answers every `get=1` with an
    /// interface on port 51820 and no peers. It is bound under `dir` as `wg0.sock.down`; the
    /// link "exists" while the socket is renamed to `wg0.sock`.
    fn fake_uapi(dir: &Path) {
        let listener = UnixListener::bind(dir.join("wg0.sock.down")).unwrap();
        std::thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                let mut buf = [0u8; 64];
                let _ = io::Read::read(&mut conn, &mut buf);
                let _ = conn.write_all(b"listen_port=51820\nerrno=0\n\n");
            }
        });
    }

    /// A stand-in for `systemctl` whose unit is "active" while `active` exists; `start` and
    /// `restart` make the link (rename the fake UAPI socket into place).
    fn fake_systemd(dir: &Path) -> PathBuf {
        let systemctl = dir.join("systemctl");
        let d = dir.display();
        fs::write(
            &systemctl,
            format!(
                "#!/bin/sh\necho \"$@\" >> {d}/calls\n\
                 link() {{ [ -e {d}/wg0.sock ] || mv {d}/wg0.sock.down {d}/wg0.sock; }}\n\
                 case \"$1\" in\n\
                 probe) exit 0;;\n\
                 is-active) [ -e {d}/active ];;\n\
                 start) [ -e {d}/active ] || {{ touch {d}/active; link; }};;\n\
                 restart) touch {d}/active; link;;\n\
                 esac\n"
            ),
        )
        .unwrap();
        fs::set_permissions(&systemctl, fs::Permissions::from_mode(0o755)).unwrap();
        // Another test thread forking while the file was open for writing makes exec fail with
        // ETXTBSY until that child has exec'd: wait for it.
        while let Err(e) = Command::new(&systemctl).arg("probe").status() {
            assert_eq!(e.kind(), io::ErrorKind::ExecutableFileBusy, "{e}");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        fake_uapi(dir);
        systemctl
    }

    #[test]
    fn an_active_unit_without_its_link_is_restarted_and_the_link_verified() {
        let tmp = tempfile::tempdir().unwrap();
        let systemctl = fake_systemd(tmp.path());
        let b = Backend::new(tmp.path().into())
            .with_socket_dir(tmp.path())
            .with_systemctl(&systemctl);
        let unlink = || {
            fs::rename(
                tmp.path().join("wg0.sock"),
                tmp.path().join("wg0.sock.down"),
            )
            .unwrap()
        };
        // "active (exited)" with the link deleted: `start` would do nothing.
        fs::write(tmp.path().join("active"), "").unwrap();
        b.up(&iface()).unwrap();
        let calls = fs::read_to_string(tmp.path().join("calls")).unwrap();
        assert!(
            calls.contains("restart --job-mode=ignore-dependencies wg-quick@wg0.service"),
            "{calls}"
        );
        assert!(!calls.contains("\nstart "), "{calls}");
        assert_eq!(b.show(&iface()).unwrap().unwrap().listen_port, 51820);
        assert!(matches!(
            b.backend_of(&iface()),
            DeviceBackend::Userspace { .. }
        ));

        // Inactive: started; a start that leaves no link is an error naming the unit.
        fs::remove_file(tmp.path().join("calls")).unwrap();
        unlink();
        fs::remove_file(tmp.path().join("active")).unwrap();
        b.up(&iface()).unwrap();
        let calls = fs::read_to_string(tmp.path().join("calls")).unwrap();
        assert!(
            calls.contains("start --job-mode=ignore-dependencies wg-quick@wg0.service"),
            "{calls}"
        );
        unlink();
        fs::write(tmp.path().join("active"), "").unwrap();
        fs::write(&systemctl, "#!/bin/sh\nexit 0\n").unwrap();
        let e = b.up(&iface()).unwrap_err();
        assert!(matches!(e, DeviceError::NotUp { .. }), "{e}");
        let text = e.to_string();
        assert!(
            text.contains("does not exist") && text.contains("journalctl -u wg-quick@wg0"),
            "{text}"
        );
    }

    #[test]
    fn a_missing_interface_reads_as_none_and_a_change_to_it_says_bring_it_up() {
        let tmp = tempfile::tempdir().unwrap();
        let b = Backend::new(tmp.path().into()).with_socket_dir(tmp.path());
        // No socket: the kernel is asked, which has no such interface (or no module at all).
        let missing: InterfaceName = "wgadm-nx0".parse().unwrap();
        assert_eq!(b.backend_of(&missing), DeviceBackend::Kernel);
        assert!(b.show(&missing).unwrap().is_none());
        let e = b.remove_peers(&missing, &[Key::from([1; 32])]).unwrap_err();
        assert!(matches!(e, DeviceError::Missing { .. }), "{e}");
        assert!(e.to_string().contains("bring it up first"), "{e}");
    }
}
