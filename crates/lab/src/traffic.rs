//! Traffic between namespaces: single pings, ping loops, TCP listeners and connections.

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::ping::{backlog_drops, PingLoop};
use crate::{lock, poll, Lab};

impl Lab {
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
}
