//! WireGuard in the lab: wireguard-go through a wrapper that records its PID (or the kernel's
//! module), wg-quick, handshakes and per-peer traffic; scripts that run a tool in a namespace.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{kernel, poll, Lab, KERNEL_ENV};

impl Lab {
    /// The wrapper to pass as `WG_QUICK_USERSPACE_IMPLEMENTATION`: it starts `wireguard-go -f`
    /// in the background, records its PID for the cleanup, and returns once its socket exists.
    pub fn userspace_wrapper(&self) -> PathBuf {
        self.dir().join("wireguard-go-lab")
    }

    pub(crate) fn write_userspace_wrapper(&self) {
        write_userspace_wrapper(self.dir(), &self.userspace_wrapper());
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
}

/// Writes the wireguard-go wrapper to `path`: each wireguard-go it starts logs to
/// `dir/wireguard-go-IFNAME.log` and records its PID in `dir/pids/IFNAME.pid` (the directory
/// must exist), which whoever made `dir` uses to end it. Under [`KERNEL_ENV`] the wrapper fails
/// instead. Shared by the lab and `wgadm-lab wrapper` (scripts whose namespaces are not the lab's).
pub fn write_userspace_wrapper(dir: &Path, path: &Path) {
    if kernel() {
        // The kernel lab must never measure wireguard-go by accident.
        write_script(
            path,
            &format!(
                "echo \"lab: {KERNEL_ENV}=1, but wg-quick fell back to userspace for $1 \\
                 (no wireguard module?)\" >&2\nexit 1\n"
            ),
        );
        return;
    }
    let dir = dir.display().to_string();
    write_script(
        path,
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

/// Writes an executable shell script. A probe run follows: a thread of this test binary that
/// forked while the file was open for writing makes exec fail (ETXTBSY) until its child has
/// exec'd, so the script is used only once it can run.
pub(crate) fn write_script(path: &Path, body: &str) {
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
