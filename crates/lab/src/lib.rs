//! A network-namespace lab for end-to-end tests: a server, clients on a "wan" segment, and a
//! management and a DMZ network behind the server, all in network namespaces this process
//! creates and removes. The one lab of the project: the Rust tests use it as a dev-dependency
//! (crates/wgadm/tests/lab adds the wgadm server driver), and the shell scripts (scripts/demo.sh,
//! scripts/bench-lab.sh, tests/zabbix/test.sh) through the `wgadm-lab run` binary of this crate
//! (src/main.rs); tests/ansible/test.sh, on the LXC rig's namespaces, takes only its wireguard-go
//! wrapper (`wgadm-lab wrapper DIR`).
//!
//! ```text
//!   client i (198.51.100.10+i) --+
//!                                 +-- bridge in "wan" -- server (198.51.100.1)
//!   client j (198.51.100.10+j) --+                        | 192.168.1.1     | 172.16.10.1
//!                                                  mgmt 192.168.1.10, .11    dmz 172.16.10.5
//! ```
//!
//! Rules it keeps, so that tests can run next to anything else on the machine:
//! - Every name is unique to this process and lab (PID and a counter): namespaces, veths,
//!   WireGuard interfaces (wireguard-go's socket /var/run/wireguard/NAME.sock is not namespaced,
//!   so their names must be unique machine-wide and at most 15 characters).
//! - Everything is removed in `Drop`, also when the test panics: processes are killed by PID
//!   (never by name), then the namespaces are deleted. [`Lab::footprint`] lists what the lab
//!   made, so a test can check that nothing is left.
//! - wireguard-go daemonizes itself; the lab runs it in the foreground (`-f`) from a wrapper
//!   named in `WG_QUICK_USERSPACE_IMPLEMENTATION` that records its PID in the lab's directory.
//! - No traffic leaves the namespaces: nothing is connected to the host's own network.
//! - Labs run one at a time (a global lock): the machine has 2 cores and the timing tests would
//!   disturb each other.
//!
//! - With `WGADM_LAB_KERNEL=1` (the VM lab, tests/vm) the interfaces are the kernel's: wg-quick
//!   makes `wireguard` links, wireguard-go is neither needed nor allowed (the wrapper fails
//!   loudly if wg-quick falls back to it), and every client brought up is checked to be one.
//!
//! Here: the topology, names, the environment for scripts and the cleanup; `wireguard`:
//! wireguard-go's wrapper, wg-quick, handshakes; `traffic`: pings, ping loops, TCP; `ping`:
//! what a ping loop saw; `process`: processes by PID and start time; `host`: `ip` in the host's
//! namespace, the root and tools check, reaping labs whose owner is gone; `namespace`: a bare
//! namespace for tests that need no topology.
//!
//! Without root or the tools, [`Lab::new`] panics and says to run scripts/setup.sh. The tests
//! that use it need root, so they carry the `root-tests` feature's mark (README, "Tests").

use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// What to do when the lab cannot run.
pub const SETUP_HINT: &str = "the network-namespace lab needs root and the tools installed by \
     scripts/setup.sh (wireguard-go, wireguard-tools, iproute2, iputils-ping, procps): run \
     `bash scripts/setup.sh` as root, then `make test` (or, as root, `cargo test --features \
     root-tests`)";

/// The server's address on the wan segment.
pub const SERVER_WAN: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// The server's address on the management network.
pub const SERVER_MGMT: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 1);
/// The management hosts (both in the management namespace).
pub const MGMT_HOSTS: [Ipv4Addr; 2] = [
    Ipv4Addr::new(192, 168, 1, 10),
    Ipv4Addr::new(192, 168, 1, 11),
];
/// The server's address on the DMZ.
pub const SERVER_DMZ: Ipv4Addr = Ipv4Addr::new(172, 16, 10, 1);
/// The DMZ host.
pub const DMZ_HOST: Ipv4Addr = Ipv4Addr::new(172, 16, 10, 5);

/// Client `i`'s address on the wan segment.
pub fn client_wan(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(
        198,
        51,
        100,
        10 + u8::try_from(i).expect("at most 200 clients"),
    )
}

/// The environment variable that makes the lab use the kernel's WireGuard (tests/vm sets it).
pub const KERNEL_ENV: &str = "WGADM_LAB_KERNEL";

/// Whether this lab runs on the kernel's WireGuard module instead of wireguard-go.
pub fn kernel() -> bool {
    std::env::var_os(KERNEL_ENV).is_some_and(|v| v == "1")
}

static LOCK: Mutex<()> = Mutex::new(());
static COUNTER: AtomicU32 = AtomicU32::new(0);

mod host;
mod namespace;
mod ping;
mod process;
mod traffic;
mod wireguard;

pub use host::reap_stale_labs;
pub use namespace::Namespace;
pub use ping::{parse_ping, PingLoop, PingStats, STALL};
pub use process::Proc;
pub use wireguard::write_userspace_wrapper;

use host::{check, ip, require_root_and_tools};
use process::{signal, wait_gone};

/// The lab: namespaces, links and addresses, plus the processes tests start in it.
pub struct Lab {
    /// The server's namespace.
    pub server: String,
    /// The namespace holding the wan bridge.
    pub wan: String,
    /// The management network's namespace (192.168.1.10 and .11).
    pub mgmt: String,
    /// The DMZ's namespace (172.16.10.5).
    pub dmz: String,
    /// The clients' namespaces, client `i` at [`client_wan`]`(i)`.
    pub clients: Vec<String>,
    tag: String,
    /// `wgadm-lab-PID-N`: every namespace's name starts with it.
    prefix: String,
    extras: Vec<(String, String)>,
    dir: tempfile::TempDir,
    namespaces: Vec<String>,
    links: Vec<String>,
    ifaces: Mutex<Vec<String>>,
    procs: Mutex<Vec<Proc>>,
    children: Mutex<Vec<Child>>,
    // Last, so it is released after `Drop::drop` has cleaned up.
    _turn: MutexGuard<'static, ()>,
}

impl Lab {
    /// Builds the lab with `clients` client namespaces. Waits for any other lab in this test
    /// binary to finish. Panics with [`SETUP_HINT`] without root or the tools.
    pub fn new(clients: usize) -> Lab {
        let turn = LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        require_root_and_tools();
        reap_stale_labs();
        let pid = std::process::id();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let ns = |role: &str| format!("wgadm-lab-{pid}-{n}-{role}");
        let dir = tempfile::Builder::new()
            .prefix(&format!("wgadm-lab-{pid}-{n}-"))
            .tempdir()
            .expect("create the lab's temp dir");
        // Configs with private keys go in here: nobody else may look.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700))
            .expect("chmod the lab dir");
        fs::create_dir(dir.path().join("pids")).expect("create the pid dir");
        let mut lab = Lab {
            server: ns("server"),
            wan: ns("wan"),
            mgmt: ns("mgmt"),
            dmz: ns("dmz"),
            clients: (0..clients).map(|i| ns(&format!("client{i}"))).collect(),
            // 'x' is no hex digit, so PID and counter cannot run into each other.
            tag: format!("{pid:x}x{n}"),
            prefix: format!("wgadm-lab-{pid}-{n}"),
            extras: Vec::new(),
            dir,
            namespaces: Vec::new(),
            links: Vec::new(),
            ifaces: Mutex::new(Vec::new()),
            procs: Mutex::new(Vec::new()),
            children: Mutex::new(Vec::new()),
            _turn: turn,
        };
        lab.write_userspace_wrapper();
        lab.build();
        lab
    }

    /// The topology. Every veth is created with its ends directly in their namespaces, so
    /// nothing ever appears in the host's own namespace.
    fn build(&mut self) {
        let all: Vec<String> = [&self.wan, &self.server, &self.mgmt, &self.dmz]
            .into_iter()
            .chain(&self.clients)
            .cloned()
            .collect();
        for ns in &all {
            ip(&["netns", "add", ns]);
            self.namespaces.push(ns.clone());
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        let bridge = self.link_name("br");
        ip(&["-n", &self.wan, "link", "add", &bridge, "type", "bridge"]);
        ip(&["-n", &self.wan, "link", "set", &bridge, "up"]);

        let (wan, server) = (self.wan.clone(), self.server.clone());
        // Roles start with a letter, so the counter ending the tag cannot run into them.
        let to_wan = |lab: &mut Lab, ns: &str, role: &str, addr: Ipv4Addr| {
            let outer = lab.link_name(&format!("w{role}"));
            let inner = lab.link_name(role);
            lab.veth(&wan, &outer, ns, &inner);
            ip(&["-n", &wan, "link", "set", &outer, "master", &bridge, "up"]);
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                &inner,
            ]);
            ip(&["-n", ns, "link", "set", &inner, "up"]);
        };
        to_wan(self, &server, "s", SERVER_WAN);
        for (i, client) in self.clients.clone().iter().enumerate() {
            to_wan(self, client, &format!("c{i}"), client_wan(i));
        }

        let behind = |lab: &mut Lab, ns: &str, role: &str, gw: Ipv4Addr, hosts: &[Ipv4Addr]| {
            let outer = lab.link_name(&format!("s{role}"));
            let inner = lab.link_name(role);
            lab.veth(&server, &outer, ns, &inner);
            ip(&[
                "-n",
                &server,
                "addr",
                "add",
                &format!("{gw}/24"),
                "dev",
                &outer,
            ]);
            ip(&["-n", &server, "link", "set", &outer, "up"]);
            for h in hosts {
                ip(&["-n", ns, "addr", "add", &format!("{h}/24"), "dev", &inner]);
            }
            ip(&["-n", ns, "link", "set", &inner, "up"]);
            ip(&["-n", ns, "route", "add", "default", "via", &gw.to_string()]);
        };
        let (mgmt, dmz) = (self.mgmt.clone(), self.dmz.clone());
        behind(self, &mgmt, "m", SERVER_MGMT, &MGMT_HOSTS);
        behind(self, &dmz, "d", SERVER_DMZ, &[DMZ_HOST]);
        self.run(&server, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    }

    /// A unique link name (at most 15 bytes): `v`, the lab's tag, and a short role.
    fn link_name(&mut self, role: &str) -> String {
        let name = format!("v{}{role}", self.tag);
        assert!(name.len() <= 15, "link name {name} is too long");
        self.links.push(name.clone());
        name
    }

    fn veth(&self, ns_a: &str, a: &str, ns_b: &str, b: &str) {
        ip(&[
            "-n", ns_a, "link", "add", a, "type", "veth", "peer", "name", b, "netns", ns_b,
        ]);
    }

    /// A WireGuard interface name unique on this machine (at most 15 bytes): `wl`, the lab's
    /// tag and `role`, a letter and at most two more characters, e.g. `wg_name("s")` for the
    /// server and `wg_name(&format!("c{i}"))` for client i. Its wireguard-go
    /// socket is removed on drop if it is left over.
    pub fn wg_name(&self, role: &str) -> String {
        assert!(
            role.starts_with(|c: char| c.is_ascii_alphabetic()),
            "start the role {role:?} with a letter: the tag before it ends in digits"
        );
        let name = format!("wl{}{role}", self.tag);
        assert!(
            name.len() <= 15,
            "interface name {name} is too long: use a shorter role"
        );
        let mut ifaces = lock(&self.ifaces);
        if !ifaces.contains(&name) {
            ifaces.push(name.clone());
        }
        name
    }

    /// The lab's private temp directory (0700), removed on drop.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Adds a namespace with nothing but `lo` (e.g. for the twin interface a benchmark compares
    /// with) and returns its name; removed on drop like the others. `role` is a short word of
    /// lowercase letters and digits.
    pub fn add_namespace(&mut self, role: &str) -> String {
        assert!(
            !role.is_empty()
                && role
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
            "a namespace role is lowercase letters and digits, not {role:?}"
        );
        let ns = format!("{}-{role}", self.prefix);
        assert!(
            !self.namespaces.contains(&ns),
            "the lab already has a namespace {ns}"
        );
        ip(&["netns", "add", &ns]);
        self.namespaces.push(ns.clone());
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        self.extras.push((role.to_owned(), ns.clone()));
        ns
    }

    /// What every WireGuard interface name of this lab starts with: [`Lab::wg_name`] appends a
    /// role; a script appends a letter and at most two more characters. On drop, wireguard-go
    /// sockets of such names are removed.
    pub fn wg_prefix(&self) -> String {
        format!("wl{}", self.tag)
    }

    /// The lab's names as environment variables, for a command run in it (`wgadm-lab run`):
    /// `LAB_DIR`; the namespaces `LAB_NS_SERVER`, `LAB_NS_WAN`, `LAB_NS_MGMT`, `LAB_NS_DMZ`,
    /// `LAB_NS_CLIENTS` (space-separated, client i is word i) and `LAB_NS_<ROLE>` for each
    /// [`Lab::add_namespace`]; `LAB_WG_PREFIX` ([`Lab::wg_prefix`]); the addresses
    /// `LAB_SERVER_WAN`, `LAB_SERVER_MGMT`, `LAB_SERVER_DMZ`, `LAB_MGMT_HOSTS`, `LAB_DMZ_HOST`,
    /// `LAB_CLIENTS_WAN`; and `WG_QUICK_USERSPACE_IMPLEMENTATION`, the lab's wireguard-go
    /// wrapper, so that wg-quick's wireguard-go is tracked and ended by the lab.
    pub fn shell_env(&self) -> Vec<(String, String)> {
        let words = |v: Vec<String>| v.join(" ");
        let mut env = vec![
            ("LAB_DIR".to_owned(), self.dir().display().to_string()),
            ("LAB_NS_SERVER".to_owned(), self.server.clone()),
            ("LAB_NS_WAN".to_owned(), self.wan.clone()),
            ("LAB_NS_MGMT".to_owned(), self.mgmt.clone()),
            ("LAB_NS_DMZ".to_owned(), self.dmz.clone()),
            ("LAB_NS_CLIENTS".to_owned(), words(self.clients.clone())),
            ("LAB_WG_PREFIX".to_owned(), self.wg_prefix()),
            ("LAB_SERVER_WAN".to_owned(), SERVER_WAN.to_string()),
            ("LAB_SERVER_MGMT".to_owned(), SERVER_MGMT.to_string()),
            ("LAB_SERVER_DMZ".to_owned(), SERVER_DMZ.to_string()),
            (
                "LAB_MGMT_HOSTS".to_owned(),
                words(MGMT_HOSTS.iter().map(Ipv4Addr::to_string).collect()),
            ),
            ("LAB_DMZ_HOST".to_owned(), DMZ_HOST.to_string()),
            (
                "LAB_CLIENTS_WAN".to_owned(),
                words(
                    (0..self.clients.len())
                        .map(|i| client_wan(i).to_string())
                        .collect(),
                ),
            ),
            (
                "WG_QUICK_USERSPACE_IMPLEMENTATION".to_owned(),
                self.userspace_wrapper().display().to_string(),
            ),
        ];
        for (role, ns) in &self.extras {
            env.push((format!("LAB_NS_{}", role.to_ascii_uppercase()), ns.clone()));
        }
        env
    }

    /// Runs a command in namespace `ns` and returns its output, whatever its status.
    pub fn try_run(&self, ns: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run ip netns exec {ns} {args:?}: {e}"))
    }

    /// Runs a command in namespace `ns` and returns its stdout; panics with its stderr when it
    /// fails.
    pub fn run(&self, ns: &str, args: &[&str]) -> String {
        let out = self.try_run(ns, args);
        check(&format!("ip netns exec {ns} {}", args.join(" ")), &out);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts a background command in `ns` (e.g. `iperf3 -s`), its output to
    /// `<lab dir>/<log>`; it is killed by PID on drop, or earlier with [`Lab::kill`].
    pub fn spawn(&self, ns: &str, args: &[&str], log: &str) -> u32 {
        let file = fs::File::create(self.dir().join(log)).expect("create the log");
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("dup the log"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {args:?} in {ns}: {e}"));
        let pid = child.id();
        self.remember(pid, &format!("{} in {ns}", args.join(" ")));
        lock(&self.children).push(child);
        pid
    }

    /// Kills (SIGKILL) and reaps a process started by [`Lab::spawn`] or [`Lab::tcp_listen`].
    pub fn kill(&self, pid: u32) {
        let mut children = lock(&self.children);
        if let Some(i) = children.iter().position(|c| c.id() == pid) {
            let mut child = children.remove(i);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn remember(&self, pid: u32, what: &str) {
        if let Some(p) = Proc::of(pid, what) {
            lock(&self.procs).push(p);
        }
    }

    /// The wireguard-go processes started through the wrapper: PID files the wrapper wrote,
    /// checked against /proc so that only that interface's wireguard-go counts.
    fn wireguard_go_procs(&self) -> Vec<Proc> {
        let mut procs = Vec::new();
        let Ok(entries) = fs::read_dir(self.dir().join("pids")) else {
            return procs;
        };
        for e in entries.flatten() {
            let iface = e
                .file_name()
                .to_string_lossy()
                .trim_end_matches(".pid")
                .to_owned();
            let Some(pid) = fs::read_to_string(e.path())
                .ok()
                .and_then(|t| t.trim().parse().ok())
            else {
                continue;
            };
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
            if args.iter().any(|a| a.ends_with(b"wireguard-go")) && args.contains(&iface.as_bytes())
            {
                procs.extend(Proc::of(pid, &format!("wireguard-go {iface}")));
            }
        }
        procs
    }

    /// Everything the lab made, to check after it is dropped that nothing remains.
    pub fn footprint(&self) -> Footprint {
        let mut procs = lock(&self.procs).clone();
        procs.extend(self.wireguard_go_procs());
        let ifaces = lock(&self.ifaces).clone();
        Footprint {
            namespaces: self.namespaces.clone(),
            links: self.links.iter().chain(&ifaces).cloned().collect(),
            sockets: ifaces
                .iter()
                .map(|i| PathBuf::from(format!("/var/run/wireguard/{i}.sock")))
                .collect(),
            procs,
            dir: self.dir().to_path_buf(),
        }
    }
}

impl Drop for Lab {
    /// Kills the lab's processes by PID, deletes its namespaces and leftover sockets. Never
    /// panics (it runs while a failed test unwinds); problems are printed.
    fn drop(&mut self) {
        for mut child in lock(&self.children).drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
        let wg = self.wireguard_go_procs();
        signal(&wg, "TERM");
        if !wait_gone(&wg, Duration::from_secs(3)) {
            signal(&wg, "KILL");
            wait_gone(&wg, Duration::from_secs(2));
        }
        // Anything else still inside our namespaces (e.g. a wireguard-go daemonized by a tool
        // under test) is ours too: kill it by PID.
        for ns in &self.namespaces {
            let out = Command::new("ip").args(["netns", "pids", ns]).output();
            let pids: Vec<Proc> = out
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .filter_map(|pid| Proc::of(pid, "process in the lab"))
                .collect();
            signal(&pids, "KILL");
            wait_gone(&pids, Duration::from_secs(2));
        }
        for ns in self.namespaces.iter().rev() {
            let ok = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                eprintln!("lab: could not delete namespace {ns}");
            }
        }
        for iface in lock(&self.ifaces).iter() {
            let _ = fs::remove_file(format!("/var/run/wireguard/{iface}.sock"));
        }
        // Interfaces a script named with the prefix: a letter follows it, so lab 1's prefix
        // never matches lab 12's names.
        let prefix = self.wg_prefix();
        for e in fs::read_dir("/var/run/wireguard")
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            let ours = name
                .strip_prefix(&prefix)
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_alphabetic()));
            if ours && name.ends_with(".sock") {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

/// What a lab made. [`Footprint::remains`] lists whatever is still there.
#[derive(Debug, Clone)]
pub struct Footprint {
    /// Network namespaces.
    pub namespaces: Vec<String>,
    /// Link and WireGuard interface names (created inside the namespaces only).
    pub links: Vec<String>,
    /// wireguard-go sockets.
    pub sockets: Vec<PathBuf>,
    /// Processes.
    pub procs: Vec<Proc>,
    /// The temp dir.
    pub dir: PathBuf,
}

impl Footprint {
    /// What is left: namespaces, links visible in the host's namespace, sockets, running
    /// processes, the temp dir.
    pub fn remains(&self) -> Vec<String> {
        let mut left = Vec::new();
        for ns in &self.namespaces {
            if Path::new("/run/netns").join(ns).exists() {
                left.push(format!("namespace {ns}"));
            }
        }
        for l in &self.links {
            if Path::new("/sys/class/net").join(l).exists() {
                left.push(format!("link {l}"));
            }
        }
        for s in &self.sockets {
            if s.exists() {
                left.push(format!("socket {}", s.display()));
            }
        }
        for p in &self.procs {
            if p.alive() {
                left.push(format!("process {} ({})", p.pid, p.what));
            }
        }
        if self.dir.exists() {
            left.push(format!("directory {}", self.dir.display()));
        }
        left
    }
}

/// Calls `f` every 20 ms until it returns `Some`, or panics naming `what` after `timeout`.
pub fn poll<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "waited {timeout:?} for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
