//! A network-namespace lab for end-to-end tests: a server, clients on a "wan" segment, and a
//! management and a DMZ network behind the server, all in network namespaces this process
//! creates and removes. The one lab of the project: the Rust tests use it as a dev-dependency
//! (crates/wgadm/tests/lab adds the wgadm server driver), and the shell scripts (scripts/demo.sh,
//! scripts/bench-lab.sh) through the `wgadm-lab run` binary of this crate (src/main.rs).
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
//! Without root or the tools, [`Lab::new`] panics and says to run scripts/setup.sh. The tests
//! that use it need root, so they carry the `root-tests` feature's mark (README, "Tests").

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader};
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
    fn of(pid: u32, what: &str) -> Option<Proc> {
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
fn stat(pid: u32) -> Option<(char, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces: the fields after it follow the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some((f.first()?.chars().next()?, f.get(19)?.parse().ok()?))
}

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

    /// The wrapper to pass as `WG_QUICK_USERSPACE_IMPLEMENTATION`: it starts `wireguard-go -f`
    /// in the background, records its PID for the cleanup, and returns once its socket exists.
    pub fn userspace_wrapper(&self) -> PathBuf {
        self.dir().join("wireguard-go-lab")
    }

    fn write_userspace_wrapper(&self) {
        if kernel() {
            // The kernel lab must never measure wireguard-go by accident.
            write_script(
                &self.userspace_wrapper(),
                &format!(
                    "echo \"lab: {KERNEL_ENV}=1, but wg-quick fell back to userspace for $1 \\
                     (no wireguard module?)\" >&2\nexit 1\n"
                ),
            );
            return;
        }
        let dir = self.dir().display().to_string();
        write_script(
            &self.userspace_wrapper(),
            &format!(
                r#"# Called by wg-quick as `$WG_QUICK_USERSPACE_IMPLEMENTATION IFNAME`.
iface="$1"
log="{dir}/wireguard-go-$iface.log"
# Foreground mode keeps the PID we record; stdio to a file so wg-quick's pipes close.
wireguard-go -f "$iface" </dev/null >>"$log" 2>&1 &
pid=$!
echo $pid >"{dir}/pids/$iface.pid"
# wg-quick configures the interface as soon as this returns: wait for the UAPI socket.
i=0
while [ ! -S "/var/run/wireguard/$iface.sock" ]; do
  if ! kill -0 $pid 2>/dev/null; then echo "wireguard-go exited:" >&2; cat "$log" >&2; exit 1; fi
  i=$((i + 1))
  if [ $i -gt 1000 ]; then echo "wireguard-go made no socket in 10 s" >&2; exit 1; fi
  sleep 0.01
done
"#
            ),
        );
    }

    /// A script that runs `tool` inside namespace `ns`, for programs that take a path to a
    /// tool (e.g. `Backend::with_wg`). It logs each call's first argument, for
    /// [`Lab::tool_calls`].
    pub fn ns_tool(&self, ns: &str, tool: &str) -> PathBuf {
        let path = self
            .dir()
            .join(format!("{ns}-{}", Path::new(tool).display()).replace('/', "_"));
        write_script(
            &path,
            &format!(
                "echo \"$1\" >>\"{}.calls\"\nexec ip netns exec {ns} {tool} \"$@\"\n",
                path.display()
            ),
        );
        path
    }

    /// The first argument of every call of a script made by [`Lab::ns_tool`], in order: how
    /// many processes a tool under test started, and which (`show`, `set`, `up`...).
    pub fn tool_calls(&self, script: &Path) -> Vec<String> {
        let log = format!("{}.calls", script.display());
        fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
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

    /// Writes a wg-quick config as `<lab dir>/conf/<iface>.conf` (0600: wg-quick warns about
    /// readable ones) and returns its path.
    pub fn write_conf(&self, iface: &str, text: &str) -> PathBuf {
        let dir = self.dir().join("conf");
        fs::create_dir_all(&dir).expect("create the conf dir");
        let path = dir.join(format!("{iface}.conf"));
        fs::write(&path, text).expect("write the config");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod the config");
        path
    }

    /// `wg-quick up CONF` in namespace `ns`, with wireguard-go started through the lab's
    /// wrapper. Panics with wg-quick's and wireguard-go's output when it fails.
    pub fn wg_quick_up(&self, ns: &str, conf: &Path) {
        self.wg_quick(ns, "up", conf);
    }

    /// `wg-quick down CONF` in namespace `ns`.
    pub fn wg_quick_down(&self, ns: &str, conf: &Path) {
        self.wg_quick(ns, "down", conf);
    }

    fn wg_quick(&self, ns: &str, verb: &str, conf: &Path) {
        let out = Command::new("ip")
            .args(["netns", "exec", ns, "wg-quick", verb])
            .arg(conf)
            .env(
                "WG_QUICK_USERSPACE_IMPLEMENTATION",
                self.userspace_wrapper(),
            )
            .stdin(Stdio::null())
            .output()
            .expect("run wg-quick");
        if !out.status.success() {
            panic!(
                "wg-quick {verb} {} in {ns} failed ({}):\n{}\nwireguard-go logs:\n{}",
                conf.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr),
                self.wireguard_go_logs()
            );
        }
        if verb == "up" && kernel() {
            let iface = conf.file_stem().and_then(|s| s.to_str()).unwrap_or("");
            let link = self.run(ns, &["ip", "-d", "link", "show", "dev", iface]);
            assert!(
                link.contains("wireguard"),
                "the kernel lab brought up {iface} in {ns}, but it is no kernel wireguard link:\n{link}"
            );
        }
    }

    /// Everything the lab's wireguard-go processes printed.
    pub fn wireguard_go_logs(&self) -> String {
        let mut text = String::new();
        if let Ok(entries) = fs::read_dir(self.dir()) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with("wireguard-go-") && name.ends_with(".log") {
                    text += &format!(
                        "--- {name}\n{}",
                        fs::read_to_string(e.path()).unwrap_or_default()
                    );
                }
            }
        }
        text
    }

    /// The latest handshake with `peer` (base64 public key) on `iface` in `ns`, Unix seconds;
    /// 0 when there was none. With `peer` `None`, the latest of all peers.
    pub fn latest_handshake(&self, ns: &str, iface: &str, peer: Option<&str>) -> u64 {
        let text = self.run(ns, &["wg", "show", iface, "latest-handshakes"]);
        text.lines()
            .filter_map(|l| l.split_once('\t'))
            .filter(|(k, _)| peer.is_none_or(|p| p == *k))
            .filter_map(|(_, t)| t.trim().parse::<u64>().ok())
            .max()
            .unwrap_or(0)
    }

    /// Polls until `iface` in `ns` has had a handshake with `peer` (or any peer), and returns
    /// how long that took. Panics at the deadline.
    pub fn wait_for_handshake(
        &self,
        ns: &str,
        iface: &str,
        peer: Option<&str>,
        timeout: Duration,
    ) -> Duration {
        let start = Instant::now();
        poll(&format!("a handshake on {iface} in {ns}"), timeout, || {
            (self.latest_handshake(ns, iface, peer) != 0).then_some(())
        });
        start.elapsed()
    }

    /// One ping from `ns` to `addr`; true when it was answered within `timeout`.
    pub fn ping_once(&self, ns: &str, addr: Ipv4Addr, timeout: Duration) -> bool {
        let wait = format!("{:.3}", timeout.as_secs_f64().max(0.001));
        self.try_run(
            ns,
            &[
                "ping",
                "-n",
                "-q",
                "-c",
                "1",
                "-W",
                &wait,
                &addr.to_string(),
            ],
        )
        .status
        .success()
    }

    /// Bytes the server's `iface` has received from `peer` (base64 public key), 0 when the
    /// peer is not there.
    pub fn received_from(&self, iface: &str, peer: &str) -> u64 {
        self.run(&self.server, &["wg", "show", iface, "transfer"])
            .lines()
            .find(|l| l.starts_with(peer))
            .and_then(|l| l.split('\t').nth(1))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    /// Polls until the server's `iface` has received `bytes` more from `peer`: a running ping
    /// loop has then really met the configuration in force, which a sleep could only hope for
    /// on a loaded machine. (One ping through the tunnel is about 128 bytes.)
    pub fn wait_for_traffic(&self, iface: &str, peer: &str, bytes: u64, timeout: Duration) {
        let start = self.received_from(iface, peer);
        poll(
            &format!("{bytes} bytes from {peer} on {iface}"),
            timeout,
            || (self.received_from(iface, peer) >= start + bytes).then_some(()),
        );
    }

    /// Polls with single pings until `addr` answers; returns how long that took.
    pub fn wait_for_ping(&self, ns: &str, addr: Ipv4Addr, timeout: Duration) -> Duration {
        let start = Instant::now();
        poll(
            &format!("an answer from {addr} to a ping from {ns}"),
            timeout,
            || {
                self.ping_once(ns, addr, Duration::from_millis(200))
                    .then_some(())
            },
        );
        start.elapsed()
    }

    /// Starts pinging `addr` from `ns` every 10 ms until [`PingLoop::stop`].
    pub fn ping_loop(&self, ns: &str, addr: Ipv4Addr) -> PingLoop {
        let n = lock(&self.procs).len();
        let out = self.dir().join(format!("ping-{n}.out"));
        let file = fs::File::create(&out).expect("create the ping log");
        // To a file, not a pipe: nobody reads while it runs, and a full pipe would stall ping.
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                "ping",
                "-n",
                "-D",
                "-i",
                "0.01",
                &addr.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(Stdio::null())
            .spawn()
            .expect("start ping");
        self.remember(child.id(), &format!("ping {addr} from {ns}"));
        PingLoop {
            child: Some(child),
            out,
            backlog_drops: backlog_drops(),
        }
    }

    /// Starts a TCP listener on `addr:port` in `ns` that accepts and closes connections, and
    /// returns its PID once it listens. It is killed on drop.
    pub fn tcp_listen(&self, ns: &str, addr: Ipv4Addr, port: u16) -> u32 {
        let script = "import socket,sys\n\
            s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
            s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(64); print('ready', flush=True)\n\
            while True:\n    c,_=s.accept(); c.close()\n";
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                "python3",
                "-c",
                script,
                &addr.to_string(),
                &port.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the TCP listener (python3)");
        let pid = child.id();
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        self.remember(pid, &format!("tcp listener {addr}:{port} in {ns}"));
        lock(&self.children).push(child);
        assert_eq!(
            line.trim(),
            "ready",
            "the TCP listener on {addr}:{port} in {ns} did not start"
        );
        pid
    }

    /// Whether a TCP connection from `ns` to `addr:port` is accepted within `timeout`.
    pub fn tcp_connect(&self, ns: &str, addr: Ipv4Addr, port: u16, timeout: Duration) -> bool {
        let secs = format!("{:.3}", timeout.as_secs_f64());
        self.try_run(
            ns,
            &[
                "timeout",
                &secs,
                "bash",
                "-c",
                &format!("exec 3<>/dev/tcp/{addr}/{port}"),
            ],
        )
        .status
        .success()
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

/// A running `ping -i 0.01`.
pub struct PingLoop {
    child: Option<Child>,
    out: PathBuf,
    backlog_drops: u64,
}

/// How much longer than the sequence numbers imply the replies around a lost one may be apart
/// before the gap counts as a stall of the emulator (the VM lab), not as a loss in the tunnel.
/// On TCG single round trips reach 140 ms; a stall that loses a packet is far longer.
pub const STALL: Duration = Duration::from_millis(500);

/// What a ping loop saw.
#[derive(Debug, Clone)]
pub struct PingStats {
    /// Echo requests sent.
    pub transmitted: u64,
    /// Replies received.
    pub received: u64,
    /// Sequence numbers that got no reply although a later one did: packets lost while the
    /// tunnel was in use (the last requests, still in flight when ping stopped, do not count).
    /// In the kernel lab, losses inside an emulator stall are in `stalled` instead.
    pub lost: Vec<u64>,
    /// Kernel lab (VM) only: lost sequence numbers whose neighbouring replies are more than
    /// [`STALL`] further apart than their sequence numbers imply, with that gap in ms: the VM
    /// stood still, so the loss says nothing about the tunnel. [`PingLoop::stop`] prints them.
    pub stalled: Vec<(u64, u64)>,
    /// Packets the kernel dropped from a CPU's input backlog while the loop ran (the
    /// `dropped` column of /proc/net/softnet_stat: a CPU that did not get to process them).
    pub backlog_drops: u64,
    /// For every lost sequence number: how far apart (ms) the replies around it came.
    pub gaps: Vec<(u64, u64)>,
    /// For every lost sequence number: when the reply before it came (Unix seconds, `ping -D`),
    /// to set it against what a test did at that moment.
    pub lost_after: Vec<(u64, f64)>,
}

impl PingLoop {
    /// Stops ping (SIGINT, so it prints its summary) and returns what it saw.
    pub fn stop(mut self) -> PingStats {
        let mut child = self.child.take().expect("the ping runs");
        let _ = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let text = fs::read_to_string(&self.out).unwrap_or_default();
        let mut stats = parse_ping(&text);
        stats.backlog_drops = backlog_drops().saturating_sub(self.backlog_drops);
        if kernel() {
            let stalled: Vec<(u64, u64)> = stats
                .gaps
                .iter()
                .copied()
                .filter(|(_, gap)| u128::from(*gap) >= STALL.as_millis())
                .collect();
            stats.lost.retain(|l| !stalled.iter().any(|(s, _)| s == l));
            if !stalled.is_empty() {
                println!(
                    "ping loop: lost during an emulator stall (seq, ms beyond the expected gap): \
                     {stalled:?}; backlog drops {}",
                    stats.backlog_drops
                );
            }
            stats.stalled = stalled;
        }
        stats
    }
}

impl Drop for PingLoop {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The sum of the `dropped` column of /proc/net/softnet_stat (all CPUs).
fn backlog_drops() -> u64 {
    fs::read_to_string("/proc/net/softnet_stat")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter_map(|h| u64::from_str_radix(h, 16).ok())
        .sum()
}

/// Reads ping's per-reply lines (`icmp_seq=N`, with `-D` its `[seconds]` receive time) and its
/// summary line.
pub fn parse_ping(text: &str) -> PingStats {
    let mut replies = BTreeSet::new();
    let mut at = std::collections::BTreeMap::new();
    let (mut transmitted, mut received) = (0, 0);
    for line in text.lines() {
        if let Some(rest) = line.split("icmp_seq=").nth(1) {
            if line.contains(" bytes from ") {
                if let Ok(seq) = rest.split_whitespace().next().unwrap_or("").parse::<u64>() {
                    replies.insert(seq);
                    let stamp = line
                        .strip_prefix('[')
                        .and_then(|l| l.split(']').next())
                        .and_then(|t| t.parse::<f64>().ok());
                    if let Some(t) = stamp {
                        at.insert(seq, t);
                    }
                }
            }
        }
        if line.contains("packets transmitted") {
            let nums: Vec<u64> = line
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|n| n.parse().ok())
                .collect();
            transmitted = nums.first().copied().unwrap_or(0);
            received = nums.get(1).copied().unwrap_or(0);
        }
    }
    let last = replies.last().copied().unwrap_or(0);
    let lost: Vec<u64> = (1..last).filter(|s| !replies.contains(s)).collect();
    // The gap around a lost one, beyond what the sequence numbers imply (10 ms apart).
    let gaps = lost
        .iter()
        .map(|&s| {
            let before = at.range(..s).next_back();
            let after = at.range(s + 1..).next();
            let gap = match (before, after) {
                (Some((p, tp)), Some((n, tn))) => {
                    let seen = ((tn - tp) * 1000.0).max(0.0) as u64;
                    seen.saturating_sub((n - p) * 10)
                }
                _ => 0,
            };
            (s, gap)
        })
        .collect();
    let lost_after = lost
        .iter()
        .filter_map(|&s| at.range(..s).next_back().map(|(_, &t)| (s, t)))
        .collect();
    PingStats {
        transmitted,
        received,
        lost,
        stalled: Vec::new(),
        backlog_drops: 0,
        gaps,
        lost_after,
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

/// `ip ARGS` in the host's namespace (only ever `netns add` or `-n OURS ...`).
fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run ip: {e}; {SETUP_HINT}"));
    check(&format!("ip {}", args.join(" ")), &out);
}

fn check(command: &str, out: &Output) {
    assert!(
        out.status.success(),
        "`{command}` failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
}

fn signal(procs: &[Proc], sig: &str) {
    for p in procs.iter().filter(|p| p.alive()) {
        let _ = Command::new("kill")
            .args([&format!("-{sig}"), &p.pid.to_string()])
            .stderr(Stdio::null())
            .status();
    }
}

fn wait_gone(procs: &[Proc], timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while procs.iter().any(Proc::alive) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// Writes an executable shell script. A probe run follows: a thread of this test binary that
/// forked while the file was open for writing makes exec fail (ETXTBSY) until its child has
/// exec'd, so the script is used only once it can run.
fn write_script(path: &Path, body: &str) {
    fs::write(
        path,
        format!("#!/bin/sh\n[ \"$1\" = --lab-probe ] && exit 0\n{body}"),
    )
    .expect("write a lab script");
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).expect("chmod a lab script");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match Command::new(path).arg("--lab-probe").status() {
            Ok(s) if s.success() => return,
            Ok(s) => panic!("lab script {} failed its probe: {s}", path.display()),
            Err(e)
                if e.kind() == std::io::ErrorKind::ExecutableFileBusy
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("cannot run lab script {}: {e}", path.display()),
        }
    }
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
fn require_root_and_tools() {
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
