//! The Prometheus endpoint: a minimal HTTP/1.1 server on a std `TcpListener` in a thread of its
//! own, serving `GET /metrics` from the latest snapshot ([`wgadm_core::metrics`]).
//!
//! Each connection gets a thread of its own (at most [`MAX_CONNECTIONS`] at once) and one
//! overall deadline ([`DEADLINE`]) for reading the bounded request and writing the answer, so a
//! slow, silent or hostile client holds up nobody but itself, for a few seconds at most, and
//! cannot make the daemon allocate. Past the cap, a new connection is told 503 at once and
//! closed. The default address is loopback: expose it further only on purpose.

use std::io::{BufWriter, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use wgadm_core::snapshot::Snapshot;

/// The latest snapshot, shared with the poll loop; `None` before the first poll.
pub type Latest = Arc<Mutex<Option<Arc<Snapshot>>>>;

/// Longest request head read.
const MAX_REQUEST: usize = 8 << 10;
/// One connection's whole life: reading the request and writing the answer. A scrape of
/// 5,000 peers (a few megabytes) takes well under a second on loopback.
pub const DEADLINE: Duration = Duration::from_secs(5);
/// Connections served at once; more are answered 503 at once. Prometheus scrapes one at a
/// time, so this only bounds what a flood of clients can cost.
pub const MAX_CONNECTIONS: usize = 16;

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
    let active = Arc::new(AtomicUsize::new(0));
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
        let Ok((stream, _)) = listener.accept() else {
            continue;
        };
        if active.load(Ordering::Acquire) >= MAX_CONNECTIONS {
            busy(stream);
            continue;
        }
        active.fetch_add(1, Ordering::AcqRel);
        let slot = Slot(active.clone());
        let latest = latest.clone();
        let spawned = std::thread::Builder::new()
            .name("wgadm-metrics-conn".into())
            .spawn(move || {
                let _slot = slot;
                // A client that goes away or runs out of time is its own problem.
                let _ = answer(stream, &latest, Instant::now() + DEADLINE);
            });
        // Without a thread the connection is dropped (closed) and its slot given back.
        drop(spawned);
    }
}

/// One of the [`MAX_CONNECTIONS`] slots, given back when the connection's thread ends.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Too many connections: 503 without waiting for the request. The answer fits in the
/// socket's empty send buffer, so nothing here blocks. What the client already sent is read
/// away without waiting, so that closing sends a FIN the client can read the answer before,
/// rather than a reset.
fn busy(mut stream: TcpStream) {
    if stream.set_nonblocking(true).is_err() {
        return;
    }
    let _ = simple(
        &mut stream,
        "503 Service Unavailable",
        "too many connections: try again in a moment\n",
    );
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut buf = [0u8; 1024];
    for _ in 0..MAX_REQUEST / buf.len() {
        if !matches!(stream.read(&mut buf), Ok(n) if n > 0) {
            break;
        }
    }
}

/// A stream that fails with `TimedOut` once `deadline` has passed: each read and write may
/// block only for the time left, so the deadline holds for the connection as a whole, however
/// the client trickles its bytes.
struct Deadlined {
    stream: TcpStream,
    deadline: Instant,
}

impl Deadlined {
    fn left(&self) -> std::io::Result<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the connection's deadline passed",
            ));
        }
        Ok(left)
    }
}

impl Read for Deadlined {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.left()?;
        self.stream.set_read_timeout(Some(left))?;
        self.stream.read(buf)
    }
}

impl Write for Deadlined {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let left = self.left()?;
        self.stream.set_write_timeout(Some(left))?;
        self.stream.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.stream.flush()
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

/// Reads the request head (up to the blank line, bounded) and writes the answer from the
/// latest snapshot, all before `deadline`. The snapshot is taken once the request is in, so a
/// client that dawdles holds no old snapshot in memory and gets the newest.
fn answer(stream: TcpStream, latest: &Latest, deadline: Instant) -> std::io::Result<()> {
    let mut stream = Deadlined { stream, deadline };
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
    let snapshot = latest
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone();
    match (route(&head), snapshot.as_deref()) {
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

fn simple<W: Write>(stream: &mut W, status: &str, body: &str) -> std::io::Result<()> {
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
        let snap = crate::snapshot::tests::snapshot_with_refused(4);
        *latest.lock().unwrap() = Some(Arc::new(snap));
        let text = get("/metrics");
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("\r\n\r\n# HELP wgadm_interface_up"), "{text}");
        assert!(text.contains("wgadm_refused_handshakes_total{interface=\"wg0\"} 4\n"));
        assert!(get("/nope").starts_with("HTTP/1.1 404"));
        stop.store(true, Ordering::Relaxed);
        handle.join().unwrap();
    }

    fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text
    }

    /// Whether the server still holds `s` open: a read would block rather than see the end.
    fn held_open(s: &TcpStream) -> bool {
        s.set_nonblocking(true).unwrap();
        let mut b = [0u8; 1];
        let open =
            matches!((&*s).read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
        s.set_nonblocking(false).unwrap();
        open
    }

    #[test]
    fn a_silent_client_blocks_nobody_and_is_cut_off_at_the_deadline() {
        let latest: Latest = Arc::new(Mutex::new(None));
        let stop = Arc::new(AtomicBool::new(false));
        let (addr, handle) = spawn("127.0.0.1:0".parse().unwrap(), latest, stop.clone()).unwrap();
        // One client that sends nothing, one that sends half a request, one that never reads.
        let silent = TcpStream::connect(addr).unwrap();
        let mut half = TcpStream::connect(addr).unwrap();
        half.write_all(b"GET /metr").unwrap();
        let mut deaf = TcpStream::connect(addr).unwrap();
        deaf.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        // Another client is answered while all three are still held open: nobody waited for
        // them (one connection at a time would have served it only after their timeouts).
        let started = Instant::now();
        assert!(get(addr, "/metrics").starts_with("HTTP/1.1 503"));
        assert!(get(addr, "/").starts_with("HTTP/1.1 200"));
        let answered = started.elapsed();
        assert!(
            held_open(&silent) && held_open(&half),
            "answered after {answered:?}"
        );
        // The deadline closes the silent ones, whatever they do.
        let mut b = [0u8; 64];
        silent.set_read_timeout(Some(DEADLINE * 3)).unwrap();
        let t = Instant::now();
        assert_eq!(
            (&silent).read(&mut b).unwrap_or(0),
            0,
            "closed at the deadline"
        );
        assert!(t.elapsed() < DEADLINE * 3);
        half.set_read_timeout(Some(DEADLINE * 3)).unwrap();
        assert_eq!(half.read(&mut b).unwrap_or(0), 0);
        println!("answered in {answered:?} while 3 slow clients were connected");
        stop.store(true, Ordering::Relaxed);
        handle.join().unwrap();
    }

    #[test]
    fn past_the_cap_a_client_is_told_503_at_once() {
        let latest: Latest = Arc::new(Mutex::new(None));
        let stop = Arc::new(AtomicBool::new(false));
        let (addr, handle) = spawn("127.0.0.1:0".parse().unwrap(), latest, stop.clone()).unwrap();
        let silent: Vec<TcpStream> = (0..MAX_CONNECTIONS)
            .map(|_| TcpStream::connect(addr).unwrap())
            .collect();
        // The server takes them in order; once all are taken the next is refused.
        let try_get = || -> std::io::Result<String> {
            let mut s = TcpStream::connect(addr)?;
            write!(s, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")?;
            let mut text = String::new();
            s.read_to_string(&mut text)?;
            Ok(text)
        };
        let mut text = String::new();
        for _ in 0..50 {
            text = try_get().unwrap_or_else(|e| e.to_string());
            if text.contains("too many connections") {
                break;
            }
        }
        assert!(text.starts_with("HTTP/1.1 503"), "{text}");
        assert!(silent.iter().all(held_open));
        drop(silent);
        stop.store(true, Ordering::Relaxed);
        handle.join().unwrap();
    }
}
