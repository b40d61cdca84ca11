//! The one place that talks to a live WireGuard interface.
//!
//! It drives the `wg` and `wg-quick` tools of wireguard-tools rather than netlink or the
//! userspace socket directly: `wg` already hides the kernel module versus a userspace
//! implementation (wireguard-go) behind one command line, so what the lab exercises here against
//! wireguard-go is exactly what runs against the kernel on Proxmox.
//!
//! Three operations, like wireguard-tools' ipc.c: read the device ([`Backend::show`]), change it
//! ([`Backend::apply`], a [`Plan`] of per-peer changes), and create it ([`Backend::up`]).
//!
//! Secrets: private and preshared keys never appear in an argument list (anyone can read
//! `/proc/PID/cmdline`), in an error or in a log. The private key reaches `wg` through a pipe on
//! its standard input (`private-key /dev/stdin`); preshared keys through 0600 files in a fresh
//! 0700 directory on tmpfs that is removed when the command returns. `wg show dump` prints the
//! interface's private key: its output is wiped from memory after parsing and never kept.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, Write};
use std::net::{Ipv4Addr, Ipv6Addr, UdpSocket};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use wgadm_core::device::{parse_dump, Observed};
use wgadm_core::plan::{Change, DesiredPeer, Plan};
use wgadm_core::{InterfaceName, Key, Secret};
use zeroize::Zeroizing;

/// Where wg-quick looks for `<interface>.conf` when given only an interface name.
pub const DEFAULT_CONFIG_DIR: &str = "/etc/wireguard";

/// The environment variable that tells wg-quick which userspace implementation to start when
/// the kernel module is missing (wg-quick's default is `wireguard-go`).
pub const USERSPACE_ENV: &str = "WG_QUICK_USERSPACE_IMPLEMENTATION";

/// How many bytes of arguments one `wg set` may carry: three quarters of what execve accepts
/// here after the environment (Linux allows a quarter of the stack limit, at most 6 MiB, for
/// arguments and environment together). With the usual 8 MiB stack that is about 1.5 MiB:
/// some 13,000 added peers, or 8,000 added with preshared keys, so a plan for 5,000 peers is
/// one process.
fn arg_budget() -> usize {
    const DEFAULT_STACK: usize = 8 << 20;
    let stack = fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("Max stack size"))?;
            // "Max stack size  8388608  unlimited  bytes": the soft limit is the 4th word.
            line.split_whitespace().nth(3)?.parse::<usize>().ok()
        })
        .unwrap_or(DEFAULT_STACK);
    let limit = (stack / 4).min(6 << 20);
    let env: usize = std::env::vars_os()
        .map(|(k, v)| k.len() + v.len() + 2 + 8)
        .sum();
    (limit.saturating_sub(env) / 4 * 3).max(64 << 10)
}

/// What went wrong talking to the device. Messages name the interface, the command, what the
/// tool said, and what to do; they never contain a private or preshared key.
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
        /// What it printed on stderr, with any key it was given redacted.
        stderr: String,
        /// What to do about it (empty, or starting with "; ").
        hint: String,
    },
    /// `wg show dump` printed something we cannot read.
    #[error("cannot read the state of interface {iface} from `wg show {iface} dump`: {message}")]
    Dump {
        /// The interface.
        iface: InterfaceName,
        /// What is wrong with the output (never its content: it holds the private key).
        message: String,
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
    /// The temporary key files for `wg set` could not be written.
    #[error(
        "cannot write the temporary preshared key files for `wg set {iface}` in {dir}: {source}"
    )]
    KeyFiles {
        /// The interface.
        iface: InterfaceName,
        /// The directory that failed.
        dir: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
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

/// The live-device backend: the `wg` and `wg-quick` programs, the directory of wg-quick configs,
/// and optionally a userspace implementation for wg-quick to start.
#[derive(Debug, Clone)]
pub struct Backend {
    wg: PathBuf,
    wg_quick: PathBuf,
    config_dir: PathBuf,
    userspace: Option<PathBuf>,
    key_dir: PathBuf,
    /// `Some(program)`: systemd manages wg-quick@IF through this systemctl (for tests);
    /// `None`: find out ([`Backend::systemd_manages`]).
    systemctl: Option<PathBuf>,
}

impl Backend {
    /// A backend using `wg` and `wg-quick` from PATH and configs in `config_dir` (normally
    /// [`DEFAULT_CONFIG_DIR`]). Temporary key files go to /dev/shm (tmpfs, so they never reach a
    /// disk) or, where that is missing, the temp directory.
    pub fn new(config_dir: PathBuf) -> Self {
        let shm = Path::new("/dev/shm");
        Backend {
            wg: "wg".into(),
            wg_quick: "wg-quick".into(),
            config_dir,
            userspace: None,
            systemctl: None,
            key_dir: if shm.is_dir() {
                shm.to_path_buf()
            } else {
                std::env::temp_dir()
            },
        }
    }

    /// Uses this `wg` program (a name looked up on PATH, or a path).
    pub fn with_wg(mut self, wg: impl Into<PathBuf>) -> Self {
        self.wg = wg.into();
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

    /// Puts the temporary preshared key files under this directory (it should be on tmpfs).
    pub fn with_key_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.key_dir = dir.into();
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

    /// Checks that everything needed to run an interface is installed: `wg`, `wg-quick` and
    /// `ip`, and either the kernel module or a userspace implementation. The error names what is
    /// missing and the package to install.
    pub fn preflight(&self) -> Result<(), DeviceError> {
        for (tool, package) in [
            (self.wg.as_path(), "wireguard-tools"),
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

    /// Reads the interface: its public key, port and peers (`wg show IF dump`, one process).
    /// `None` when no WireGuard interface of that name exists.
    pub fn show(&self, iface: &InterfaceName) -> Result<Option<Observed>, DeviceError> {
        let args = [OsString::from("show"), iface.as_str().into(), "dump".into()];
        let out = run(self.wg_command(), &self.wg, &args, None)?;
        // The first line of the dump is the interface's private key: wipe the buffer on drop.
        let stdout = Zeroizing::new(out.stdout);
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            // ENODEV: the kernel module is loaded and has no such interface. EPROTONOSUPPORT:
            // no kernel module and no userspace socket of that name, so no such interface
            // either (checked with wireguard-tools 1.0.20210914 and wireguard-go 0.0.20220316).
            if stderr.contains("No such device") || stderr.contains("Protocol not supported") {
                return Ok(None);
            }
            return Err(failed(iface, &self.wg, &args, out.status, &stderr, &[]));
        }
        let text = std::str::from_utf8(&stdout).map_err(|_| DeviceError::Dump {
            iface: iface.clone(),
            message: "the output is not UTF-8".into(),
        })?;
        parse_dump(text)
            .map(Some)
            .map_err(|message| DeviceError::Dump {
                iface: iface.clone(),
                message,
            })
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
                    None,
                )?
                .status
                .success();
                // `up` runs only when the link is missing, so an active unit is stale.
                let verb = if active { "restart" } else { "start" };
                let args = [OsString::from(verb), unit.clone().into()];
                let out = run(Command::new(&systemctl), &systemctl, &args, None)?;
                if !out.status.success() {
                    let stderr = String::from_utf8_lossy(&out.stderr);
                    return Err(failed(iface, &systemctl, &args, out.status, &stderr, &[]));
                }
                format!("`systemctl {verb} {unit}`")
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
        let out = run(command, &self.wg_quick, &args, None)?;
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

    /// Applies a plan with `wg set`: every change of the plan in one process (a plan larger
    /// than some 8,000-13,000 peer changes is split into several, in order). An empty plan starts
    /// nothing. Peers are changed in place, never removed and re-added; the peer list is never
    /// replaced; the private key and listen port are sent only when the plan says so.
    pub fn apply(
        &self,
        iface: &InterfaceName,
        plan: &Plan,
        private_key: &Secret,
    ) -> Result<(), DeviceError> {
        if plan.is_empty() {
            return Ok(());
        }
        let dir = self.key_dir.join(format!("wgadm-keys-{}", random_hex()));
        let (commands, psks) = set_commands(iface, plan, &dir, arg_budget());
        // Dropped (and removed) only after the last `wg set` has read the files.
        let _key_files = if psks.is_empty() {
            None
        } else {
            Some(
                KeyFiles::create(&dir, &psks).map_err(|source| DeviceError::KeyFiles {
                    iface: iface.clone(),
                    dir: self.key_dir.clone(),
                    source,
                })?,
            )
        };
        let mut secrets: Vec<&Secret> = psks;
        secrets.push(private_key);
        for command in commands {
            let key = command.private_key.then(|| private_key.expose());
            let stdin = key.as_ref().map(|k| k.as_bytes());
            let out = run(self.wg_command(), &self.wg, &command.args, stdin)?;
            if !out.status.success() {
                let stderr = String::from_utf8_lossy(&out.stderr);
                return Err(failed(
                    iface,
                    &self.wg,
                    &command.args,
                    out.status,
                    &stderr,
                    &secrets,
                ));
            }
        }
        Ok(())
    }

    /// Takes peers off the device by public key (`wg set IF peer KEY remove ...`) and changes
    /// nothing else: no key is read, written or sent, so a caller without access to key files
    /// (the daemon enforcing an expiry) can use it. Other peers' tunnels are not touched.
    pub fn remove_peers(&self, iface: &InterfaceName, keys: &[Key]) -> Result<(), DeviceError> {
        let plan = Plan {
            changes: keys
                .iter()
                .map(|k| Change::Remove {
                    name: None,
                    public_key: *k,
                })
                .collect(),
        };
        // Removals carry no preshared key, so no key file is ever made under this directory.
        let (commands, _) = set_commands(iface, &plan, &self.key_dir, arg_budget());
        for command in commands {
            let out = run(self.wg_command(), &self.wg, &command.args, None)?;
            if !out.status.success() {
                let stderr = String::from_utf8_lossy(&out.stderr);
                return Err(failed(
                    iface,
                    &self.wg,
                    &command.args,
                    out.status,
                    &stderr,
                    &[],
                ));
            }
        }
        Ok(())
    }

    /// A `wg` command in the C locale, so that its error texts are the ones matched above.
    fn wg_command(&self) -> Command {
        let mut command = Command::new(&self.wg);
        command.env("LC_ALL", "C");
        command
    }
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

/// One `wg set` invocation.
#[derive(Debug)]
struct SetCommand {
    /// Its arguments after the program name; paths only, never key material.
    args: Vec<OsString>,
    /// Whether it reads the private key from its standard input.
    private_key: bool,
}

/// Turns a plan into `wg set` invocations (in order) and the preshared keys to write, where
/// `psk_dir/<i>` is the file of the i-th key. Interface settings come first (wg requires
/// them before any `peer`), then the changes in plan order, so removals still precede
/// additions. A new invocation starts when `budget` bytes of arguments are reached.
fn set_commands<'a>(
    iface: &InterfaceName,
    plan: &'a Plan,
    psk_dir: &Path,
    budget: usize,
) -> (Vec<SetCommand>, Vec<&'a Secret>) {
    let mut psks: Vec<&'a Secret> = Vec::new();
    let mut psk_file = |psk: &'a Secret| -> OsString {
        psks.push(psk);
        psk_dir.join((psks.len() - 1).to_string()).into()
    };
    let mut interface: Vec<OsString> = Vec::new();
    let mut private_key = false;
    let mut groups: Vec<Vec<OsString>> = Vec::new();
    for change in &plan.changes {
        match change {
            Change::PrivateKey => {
                private_key = true;
                interface.extend(["private-key".into(), "/dev/stdin".into()]);
            }
            Change::ListenPort { to, .. } => {
                interface.extend(["listen-port".into(), to.to_string().into()]);
            }
            Change::Add(peer) => {
                let mut g = peer_args(peer);
                g.extend(["allowed-ips".into(), allowed_ips(peer)]);
                if let Some(psk) = &peer.preshared_key {
                    g.extend(["preshared-key".into(), psk_file(psk)]);
                }
                groups.push(g);
            }
            Change::Update {
                peer,
                allowed_ips: ips,
                preshared_key,
                keepalive,
            } => {
                let mut g = peer_args(peer);
                if *ips {
                    g.extend(["allowed-ips".into(), allowed_ips(peer)]);
                }
                if *preshared_key {
                    // An empty file (/dev/null) is the all-zero key: no preshared key.
                    let file = peer
                        .preshared_key
                        .as_ref()
                        .map_or_else(|| "/dev/null".into(), &mut psk_file);
                    g.extend(["preshared-key".into(), file]);
                }
                if *keepalive {
                    g.extend(["persistent-keepalive".into(), "off".into()]);
                }
                groups.push(g);
            }
            Change::Remove { public_key, .. } => {
                groups.push(vec![
                    "peer".into(),
                    public_key.to_string().into(),
                    "remove".into(),
                ]);
            }
        }
    }

    let size = |args: &[OsString]| -> usize {
        // Each argument costs its bytes, a NUL and a pointer in the new process's argv.
        args.iter().map(|a| a.len() + 1 + 8).sum()
    };
    let start = || -> Vec<OsString> { vec!["set".into(), iface.as_str().into()] };
    let mut commands = Vec::new();
    let mut current = start();
    current.extend(interface);
    let mut used = size(&current);
    for group in groups {
        let cost = size(&group);
        if used + cost > budget && current.len() > 2 {
            commands.push(SetCommand {
                args: std::mem::replace(&mut current, start()),
                private_key: std::mem::take(&mut private_key),
            });
            used = size(&current);
        }
        used += cost;
        current.extend(group);
    }
    if current.len() > 2 {
        commands.push(SetCommand {
            args: current,
            private_key,
        });
    }
    (commands, psks)
}

fn peer_args(peer: &DesiredPeer) -> Vec<OsString> {
    vec!["peer".into(), peer.public_key.to_string().into()]
}

fn allowed_ips(peer: &DesiredPeer) -> OsString {
    peer.allowed_ips
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
        .into()
}

/// A 0700 directory of 0600 preshared key files, removed on drop.
struct KeyFiles {
    dir: PathBuf,
}

impl KeyFiles {
    fn create(dir: &Path, psks: &[&Secret]) -> io::Result<Self> {
        // `create` (not `create_all`) fails if the name exists, so nobody can have prepared
        // it for us, even in a world-writable parent such as /dev/shm.
        fs::DirBuilder::new().mode(0o700).create(dir)?;
        let files = KeyFiles {
            dir: dir.to_path_buf(),
        };
        for (i, psk) in psks.iter().enumerate() {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(dir.join(i.to_string()))?;
            f.write_all(psk.expose().as_bytes())?;
        }
        Ok(files)
    }
}

impl Drop for KeyFiles {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// 128 random bits as hex, for a directory name nobody can guess.
fn random_hex() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // Unguessability is defence in depth only: `create` refuses an existing name anyway.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        bytes = (nanos ^ u128::from(std::process::id())).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Output of a finished tool.
struct Finished {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// Runs `command` with `args`, feeding `stdin` (a key) through a pipe when given.
fn run(
    mut command: Command,
    program: &Path,
    args: &[OsString],
    stdin: Option<&[u8]>,
) -> Result<Finished, DeviceError> {
    command
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let spawn_error = |source| DeviceError::Spawn {
        command: show_command(program, args),
        source,
    };
    let mut child = command.spawn().map_err(spawn_error)?;
    if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // 45 bytes fit in the pipe buffer, so this cannot block on a child that is still
        // starting. If the child died first the write fails (EPIPE): its status tells why.
        let _ = pipe.write_all(data);
    }
    let out = child.wait_with_output().map_err(spawn_error)?;
    Ok(Finished {
        status: out.status,
        stdout: out.stdout,
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

    fn strings(c: &SetCommand) -> Vec<String> {
        c.args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    fn k(byte: u8) -> String {
        Key::from([byte; 32]).to_string()
    }

    #[test]
    fn one_invocation_carries_the_whole_plan_in_order() {
        let plan = Plan {
            changes: vec![
                Change::PrivateKey,
                Change::ListenPort { from: 1, to: 51820 },
                Change::Remove {
                    name: None,
                    public_key: Key::from([9; 32]),
                },
                Change::Update {
                    peer: desired(2, "192.168.100.9/32", None),
                    allowed_ips: true,
                    preshared_key: true,
                    keepalive: true,
                },
                Change::Update {
                    peer: desired(3, "192.168.100.3/32", Some(33)),
                    allowed_ips: false,
                    preshared_key: true,
                    keepalive: false,
                },
                Change::Update {
                    peer: desired(4, "192.168.100.4/32", Some(44)),
                    allowed_ips: false,
                    preshared_key: false,
                    keepalive: true,
                },
                Change::Add(desired(5, "192.168.100.5/32", Some(55))),
                Change::Add(desired(6, "192.168.100.6/32", None)),
            ],
        };
        let (commands, psks) = set_commands(&iface(), &plan, Path::new("/d"), 1 << 20);
        assert_eq!(commands.len(), 1);
        assert!(commands[0].private_key);
        let expected: Vec<String> = [
            "set",
            "wg0",
            "private-key",
            "/dev/stdin",
            "listen-port",
            "51820",
            "peer",
            &k(9),
            "remove",
            "peer",
            &k(2),
            "allowed-ips",
            "192.168.100.9/32",
            "preshared-key",
            "/dev/null",
            "persistent-keepalive",
            "off",
            "peer",
            &k(3),
            "preshared-key",
            "/d/0",
            "peer",
            &k(4),
            "persistent-keepalive",
            "off",
            "peer",
            &k(5),
            "allowed-ips",
            "192.168.100.5/32",
            "preshared-key",
            "/d/1",
            "peer",
            &k(6),
            "allowed-ips",
            "192.168.100.6/32",
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        assert_eq!(strings(&commands[0]), expected);
        // The files hold the keys in the order their paths were handed out.
        assert_eq!(psks.len(), 2);
        assert_eq!(
            *psks[0].expose(),
            *Secret::preshared_from_random([33; 32]).expose()
        );
        assert_eq!(
            *psks[1].expose(),
            *Secret::preshared_from_random([55; 32]).expose()
        );
    }

    #[test]
    fn interface_settings_come_first_and_only_when_planned() {
        let plan = Plan {
            changes: vec![
                Change::Add(desired(5, "192.168.100.5/32", None)),
                Change::ListenPort { from: 1, to: 2 },
            ],
        };
        let (commands, _) = set_commands(&iface(), &plan, Path::new("/d"), 1 << 20);
        let args = strings(&commands[0]);
        assert_eq!(&args[..4], ["set", "wg0", "listen-port", "2"]);
        assert!(!commands[0].private_key);
        assert!(!args.iter().any(|a| a == "private-key"));
    }

    #[test]
    fn no_argument_is_key_material() {
        let psk = Secret::preshared_from_random([77; 32]);
        let mut peer = desired(5, "192.168.100.5/32", None);
        peer.preshared_key = Some(psk.clone());
        let plan = Plan {
            changes: vec![Change::PrivateKey, Change::Add(peer)],
        };
        let (commands, _) = set_commands(&iface(), &plan, Path::new("/d"), 1 << 20);
        let all = strings(&commands[0]).join(" ");
        assert!(!all.contains(psk.expose().as_str()), "{all}");
    }

    #[test]
    fn a_huge_plan_is_split_in_order_and_the_key_goes_to_the_first() {
        let changes: Vec<Change> = std::iter::once(Change::PrivateKey)
            .chain((0..200u8).map(|i| Change::Add(desired(i, "10.0.0.1/32", Some(i)))))
            .collect();
        let plan = Plan { changes };
        let (commands, psks) = set_commands(&iface(), &plan, Path::new("/d"), 4096);
        assert!(commands.len() > 3, "{}", commands.len());
        assert!(commands[0].private_key);
        assert!(commands[1..].iter().all(|c| !c.private_key));
        let mut peers = Vec::new();
        for c in &commands {
            let a = strings(c);
            assert_eq!(&a[..2], ["set", "wg0"]);
            assert!(c.args.iter().map(|x| x.len() + 9).sum::<usize>() <= 4096);
            peers.extend(
                a.windows(2)
                    .filter(|w| w[0] == "peer")
                    .map(|w| w[1].clone()),
            );
        }
        let expected: Vec<String> = (0..200u8).map(k).collect();
        assert_eq!(peers, expected);
        assert_eq!(psks.len(), 200);
    }

    #[test]
    fn five_thousand_new_peers_with_preshared_keys_are_one_process() {
        let budget = arg_budget();
        assert!((64 << 10..=6 << 20).contains(&budget), "{budget}");
        let changes = (0..5000u32)
            .map(|i| {
                let mut p = desired(1, "10.0.0.1/32", Some(1));
                p.public_key = Key::from([(i % 251) as u8; 32]);
                p.allowed_ips = vec![Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + i), 32).unwrap()];
                Change::Add(p)
            })
            .collect();
        let plan = Plan { changes };
        let dir = Path::new("/dev/shm/wgadm-keys-0123456789abcdef0123456789abcdef");
        let (commands, psks) = set_commands(&iface(), &plan, dir, 3 << 19);
        assert_eq!((commands.len(), psks.len()), (1, 5000));
    }

    #[test]
    fn an_empty_plan_builds_nothing() {
        let plan = Plan::default();
        let (commands, psks) = set_commands(&iface(), &plan, Path::new("/d"), 1 << 20);
        assert!(commands.is_empty() && psks.is_empty());
    }

    #[test]
    fn errors_redact_keys_and_say_what_to_do() {
        let psk = Secret::preshared_from_random([5; 32]);
        let stderr = format!(
            "Key is not the correct length or format: `{}'\n",
            *psk.expose()
        );
        let status = Command::new("false").status().unwrap();
        let e = failed(
            &iface(),
            Path::new("wg"),
            &["set".into(), "wg0".into()],
            status,
            &stderr,
            &[&psk],
        );
        let text = e.to_string();
        assert!(!text.contains(psk.expose().as_str()), "{text}");
        assert!(
            text.contains("<redacted>") && text.contains("wg0"),
            "{text}"
        );
        let e = failed(
            &iface(),
            Path::new("wg"),
            &["set".into(), "wg0".into()],
            status,
            "Unable to modify interface: No such device",
            &[],
        );
        assert!(e.to_string().contains("bring it up first"), "{e}");
        let long: Vec<OsString> = (0..40).map(|i| i.to_string().into()).collect();
        assert!(show_command(Path::new("wg"), &long).ends_with("(28 more arguments)"));
    }

    #[test]
    fn preflight_names_the_missing_tool_and_package() {
        let b = Backend::new("/nonexistent".into()).with_wg("/nonexistent/wg");
        let e = b.preflight().unwrap_err().to_string();
        assert!(
            e.contains("/nonexistent/wg") && e.contains("wireguard-tools"),
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

    /// A stand-in for `wg` that records what it was given: its arguments, its standard input,
    /// and the contents of the key files it was pointed at.
    fn fake_wg(dir: &Path) -> PathBuf {
        let script = dir.join("wg");
        fs::write(
            &script,
            format!(
                "#!/bin/sh\n\
                 log={log}\n\
                 case \"$1\" in\n\
                 probe) exit 0;;\n\
                 show) [ \"$2\" = gone ] && {{ echo 'Unable to access interface: No such device' >&2; exit 1; }}\n\
                       [ \"$2\" = bad ] && {{ echo 'Unable to access interface: Operation not supported' >&2; exit 1; }}\n\
                       printf 'SECRETPRIVATE\\t%s\\t51820\\toff\\n' {pk}; exit 0;;\n\
                 esac\n\
                 echo \"$@\" >> $log/args\n\
                 prev=\n\
                 for a in \"$@\"; do\n\
                   case \"$prev\" in\n\
                   private-key) cat \"$a\" >> $log/stdin;;\n\
                   preshared-key) cat \"$a\" >> $log/psks; echo >> $log/psks;;\n\
                   esac\n\
                   prev=$a\n\
                 done\n",
                log = dir.display(),
                pk = Key::from([1; 32])
            ),
        )
        .unwrap();
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
        // Another test thread forking while the file was open for writing makes exec fail with
        // ETXTBSY until that child has exec'd: wait for it.
        while let Err(e) = Command::new(&script).arg("probe").status() {
            assert_eq!(e.kind(), io::ErrorKind::ExecutableFileBusy, "{e}");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        script
    }

    #[test]
    fn apply_hands_keys_over_by_pipe_and_files_and_cleans_up() {
        let tmp = tempfile::tempdir().unwrap();
        let keys = tempfile::tempdir().unwrap();
        let b = Backend::new(tmp.path().into())
            .with_wg(fake_wg(tmp.path()))
            .with_key_dir(keys.path());
        let private = Secret::private_from_random([3; 32]);
        let plan = Plan {
            changes: vec![
                Change::PrivateKey,
                Change::Add(desired(5, "192.168.100.5/32", Some(55))),
                Change::Update {
                    peer: desired(6, "192.168.100.6/32", None),
                    allowed_ips: false,
                    preshared_key: true,
                    keepalive: false,
                },
            ],
        };
        b.apply(&iface(), &plan, &private).unwrap();
        let args = fs::read_to_string(tmp.path().join("args")).unwrap();
        assert_eq!(args.lines().count(), 1, "one process: {args}");
        assert!(args.contains("private-key /dev/stdin"), "{args}");
        assert!(!args.contains(private.expose().as_str()));
        let stdin = fs::read_to_string(tmp.path().join("stdin")).unwrap();
        assert_eq!(stdin, *private.expose());
        let psks = fs::read_to_string(tmp.path().join("psks")).unwrap();
        let psk = Secret::preshared_from_random([55; 32]);
        assert_eq!(
            psks,
            format!("{}\n\n", *psk.expose()),
            "then /dev/null: empty"
        );
        assert_eq!(
            fs::read_dir(keys.path()).unwrap().count(),
            0,
            "key dir removed"
        );

        // Nothing to do: nothing runs.
        b.apply(&iface(), &Plan::default(), &private).unwrap();
        let again = fs::read_to_string(tmp.path().join("args")).unwrap();
        assert_eq!(again.lines().count(), 1);
    }

    /// A stand-in for `systemctl` whose unit is "active" while `active` exists, and a `wg`
    /// that sees the interface only while `link` exists: `restart` makes the link.
    fn fake_systemd(dir: &Path) -> (PathBuf, PathBuf) {
        let systemctl = dir.join("systemctl");
        let wg = dir.join("wg");
        let d = dir.display();
        fs::write(
            &systemctl,
            format!(
                "#!/bin/sh\necho \"$@\" >> {d}/calls\n\
                 case \"$1\" in\n\
                 is-active) [ -e {d}/active ];;\n\
                 start) [ -e {d}/active ] || {{ touch {d}/active {d}/link; }};;\n\
                 restart) touch {d}/active {d}/link;;\n\
                 esac\n"
            ),
        )
        .unwrap();
        fs::write(
            &wg,
            format!(
                "#!/bin/sh\n[ \"$1\" = probe ] && exit 0\n\
                 [ -e {d}/link ] || {{ echo 'Unable to access interface: Protocol not supported' >&2; exit 1; }}\n\
                 printf 'PRIVATE\\t%s\\t51820\\toff\\n' {pk}\n",
                pk = Key::from([1; 32])
            ),
        )
        .unwrap();
        for p in [&systemctl, &wg] {
            fs::set_permissions(p, fs::Permissions::from_mode(0o755)).unwrap();
            while let Err(e) = Command::new(p).arg("probe").status() {
                assert_eq!(e.kind(), io::ErrorKind::ExecutableFileBusy, "{e}");
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
        (systemctl, wg)
    }

    #[test]
    fn an_active_unit_without_its_link_is_restarted_and_the_link_verified() {
        let tmp = tempfile::tempdir().unwrap();
        let (systemctl, wg) = fake_systemd(tmp.path());
        let b = Backend::new(tmp.path().into())
            .with_wg(&wg)
            .with_systemctl(&systemctl);
        // "active (exited)" with the link deleted: `start` would do nothing.
        fs::write(tmp.path().join("active"), "").unwrap();
        b.up(&iface()).unwrap();
        let calls = fs::read_to_string(tmp.path().join("calls")).unwrap();
        assert!(calls.contains("restart wg-quick@wg0.service"), "{calls}");
        assert!(!calls.contains("\nstart "), "{calls}");
        assert!(b.show(&iface()).unwrap().is_some());

        // Inactive: started; a start that leaves no link is an error naming the unit.
        fs::remove_file(tmp.path().join("calls")).unwrap();
        fs::remove_file(tmp.path().join("link")).unwrap();
        fs::remove_file(tmp.path().join("active")).unwrap();
        b.up(&iface()).unwrap();
        let calls = fs::read_to_string(tmp.path().join("calls")).unwrap();
        assert!(calls.contains("start wg-quick@wg0.service"), "{calls}");
        fs::remove_file(tmp.path().join("link")).unwrap();
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
    fn show_parses_and_tells_missing_from_broken() {
        let tmp = tempfile::tempdir().unwrap();
        let b = Backend::new(tmp.path().into()).with_wg(fake_wg(tmp.path()));
        let o = b.show(&iface()).unwrap().unwrap();
        assert_eq!(o.public_key, Some(Key::from([1; 32])));
        assert_eq!(o.listen_port, 51820);
        assert!(b.show(&"gone".parse().unwrap()).unwrap().is_none());
        let e = b.show(&"bad".parse().unwrap()).unwrap_err().to_string();
        assert!(
            e.contains("bad") && e.contains("Operation not supported"),
            "{e}"
        );
        assert!(!e.contains("SECRETPRIVATE"));
    }
}
