//! The Prometheus endpoint: a minimal HTTP/1.1 server on a std `TcpListener` in a thread of its
//! own, serving `GET /metrics` from the latest snapshot ([`wgadm_core::metrics`]).
//!
//! One connection at a time, each with short read and write timeouts and a bounded request, so
//! a slow or hostile client holds a scrape up for a few seconds at most and cannot make the
//! daemon allocate. The default address is loopback: expose it further only on purpose.

use std::io::{BufWriter, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use wgadm_core::snapshot::Snapshot;

/// The latest snapshot, shared with the poll loop; `None` before the first poll.
pub type Latest = Arc<Mutex<Option<Arc<Snapshot>>>>;

/// Longest request head read.
const MAX_REQUEST: usize = 8 << 10;
const READ_TIMEOUT: Duration = Duration::from_secs(2);
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds `addr` and serves until `stop` is set. Binding happens here, so a port in use is an
/// error at start, not a silent thread failure.
pub fn spawn(
    addr: SocketAddr,
    latest: Latest,
    stop: Arc<AtomicBool>,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    let handle = std::thread::Builder::new()
        .name("wgadm-metrics".into())
        .spawn(move || serve(listener, latest, stop))?;
    Ok((bound, handle))
}

fn serve(listener: TcpListener, latest: Latest, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        // poll(2) with a timeout, so the thread notices `stop` without a connection.
        let mut fds = libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, for the duration of the call.
        let ready = unsafe { libc::poll(&mut fds, 1, 250) };
        if ready <= 0 {
            continue;
        }
        if let Ok((stream, _)) = listener.accept() {
            let snapshot = latest
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clone();
            // A client that goes away mid-answer is its own problem.
            let _ = answer(stream, snapshot.as_deref());
        }
    }
}

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Metrics,
    Index,
    NotFound,
    MethodNotAllowed,
    Bad,
}

/// The route of a request head (`GET /metrics HTTP/1.1`...).
fn route(head: &str) -> Route {
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Route::Bad;
    };
    if method != "GET" {
        return Route::MethodNotAllowed;
    }
    match target.split('?').next().unwrap_or("") {
        "/metrics" => Route::Metrics,
        "/" => Route::Index,
        _ => Route::NotFound,
    }
}

/// Reads the request head (up to the blank line, bounded) and writes the answer.
fn answer(mut stream: TcpStream, snapshot: Option<&Snapshot>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_REQUEST {
            return simple(&mut stream, "431 Request Header Fields Too Large", "");
        }
    }
    let head = String::from_utf8_lossy(&head);
    match (route(&head), snapshot) {
        (Route::Metrics, Some(s)) => {
            let mut out = BufWriter::with_capacity(64 << 10, &mut stream);
            write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nConnection: close\r\n\r\n",
                wgadm_core::metrics::CONTENT_TYPE
            )?;
            // Streamed: at 5,000 peers the text is megabytes, never held whole.
            let mut adapter = FmtToIo {
                out: &mut out,
                error: None,
            };
            if wgadm_core::metrics::render(s, &mut adapter).is_err() {
                return Err(adapter
                    .error
                    .unwrap_or_else(|| std::io::Error::other("rendering failed")));
            }
            out.flush()
        }
        (Route::Metrics, None) => simple(
            &mut stream,
            "503 Service Unavailable",
            "no poll yet: try again in a moment\n",
        ),
        (Route::Index, _) => simple(
            &mut stream,
            "200 OK",
            "wgadm daemon: Prometheus metrics at /metrics\n",
        ),
        (Route::NotFound, _) => simple(&mut stream, "404 Not Found", "not found: try /metrics\n"),
        (Route::MethodNotAllowed, _) => simple(&mut stream, "405 Method Not Allowed", ""),
        (Route::Bad, _) => simple(&mut stream, "400 Bad Request", ""),
    }
}

fn simple(stream: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
}

/// `fmt::Write` onto an `io::Write`, keeping the first I/O error.
struct FmtToIo<'a, W: Write> {
    out: &'a mut W,
    error: Option<std::io::Error>,
}

impl<W: Write> std::fmt::Write for FmtToIo<'_, W> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.out.write_all(s.as_bytes()).map_err(|e| {
            self.error = Some(e);
            std::fmt::Error
        })
    }
}

/// Parses `--metrics-listen`: `off`, or `HOST:PORT` with an IP address (IPv6 in brackets).
pub fn parse_listen(text: &str) -> Result<Option<SocketAddr>, String> {
    if text.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| {
        format!(
            "{text:?} is not an address: write IP:PORT (e.g. 127.0.0.1:9586, [::1]:9586) or off"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(
            route("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Route::Metrics
        );
        assert_eq!(route("GET /metrics?x=1 HTTP/1.1\r\n\r\n"), Route::Metrics);
        assert_eq!(route("GET / HTTP/1.0\r\n\r\n"), Route::Index);
        assert_eq!(route("GET /other HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(
            route("POST /metrics HTTP/1.1\r\n\r\n"),
            Route::MethodNotAllowed
        );
        assert_eq!(route(""), Route::Bad);
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(parse_listen("off").unwrap(), None);
        assert_eq!(
            parse_listen("127.0.0.1:9586").unwrap(),
            Some("127.0.0.1:9586".parse().unwrap())
        );
        assert!(parse_listen("[::1]:9586").unwrap().is_some());
        assert!(parse_listen("localhost:9586")
            .unwrap_err()
            .contains("IP:PORT"));
    }

    #[test]
    fn serves_metrics_over_tcp() {
        let latest: Latest = Arc::new(Mutex::new(None));
        let stop = Arc::new(AtomicBool::new(false));
        let (addr, handle) =
            spawn("127.0.0.1:0".parse().unwrap(), latest.clone(), stop.clone()).unwrap();
        let get = |path: &str| {
            let mut s = TcpStream::connect(addr).unwrap();
            write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let mut text = String::new();
            s.read_to_string(&mut text).unwrap();
            text
        };
        assert!(get("/metrics").starts_with("HTTP/1.1 503"));
        let status = wgadm_core::status::Status {
            interface: "wg0".into(),
            up: true,
            listen_port: Some(51820),
            peers_total: 0,
            peers_connected: 0,
            peers: vec![],
        };
        let snap = wgadm_core::snapshot::snapshot(
            status,
            1,
            wgadm_core::snapshot::DaemonInfo {
                pid: 1,
                started_at: 1,
                interval: 5.0,
                version: "x".into(),
                polls: 1,
                poll_errors: 0,
                state_errors: 0,
                snapshot_errors: 0,
                last_poll_seconds: 0.0,
                poll_seconds_total: 0.0,
            },
            4,
            vec![],
            180,
            Default::default(),
        );
        *latest.lock().unwrap() = Some(Arc::new(snap));
        let text = get("/metrics");
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("\r\n\r\n# HELP wgadm_interface_up"), "{text}");
        assert!(text.contains("wgadm_refused_handshakes_total{interface=\"wg0\"} 4\n"));
        assert!(get("/nope").starts_with("HTTP/1.1 404"));
        stop.store(true, Ordering::Relaxed);
        handle.join().unwrap();
    }
}
