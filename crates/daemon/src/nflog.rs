//! The handshake log reader: the NFLOG groups of [`HANDSHAKE_LOG`] read over netlink in pure
//! Rust (`netlink-sys` for the socket, `netlink-packet-netfilter` for the messages), each
//! WireGuard handshake message handed to the [`Tracker`].
//!
//! One socket binds both groups, in the daemon's network namespace (a group has one reader per
//! namespace: a second daemon, or ulogd on the same group, gets EBUSY). The kernel batches
//! messages per group (here at most 64 or 10 ms), so a response may be read before its
//! initiation; the tracker allows for that. A receive buffer that overflows (ENOBUFS) loses
//! messages: the tracker is told, and judges none of the initiations waiting then, so a lost
//! response never turns into a false refusal.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_netfilter::nflog::{
    config_request, ConfigCmd, ConfigMode, ConfigNla, PacketNla, Timeout, ULogMessage,
};
use netlink_packet_netfilter::{NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily};
use netlink_sys::{constants::NETLINK_NETFILTER, Socket};
use wgadm_core::firewall::HandshakeLog;
use wgadm_core::refused::{parse_packet, Tracker};

use super::Clock;

/// Bytes of each packet copied: IPv6 (40) + UDP (8) + the first 12 bytes of the WireGuard
/// message, with room to spare. The rest of a handshake is of no use here.
const COPY_RANGE: u32 = 96;
/// The receive buffer asked for; a burst of handshakes fits.
const RECV_BUFFER: usize = 4 << 20;
/// How long a receive waits before the reader checks whether to stop.
const RECV_TIMEOUT: Duration = Duration::from_millis(250);

/// A socket bound to the handshake groups.
pub struct Reader {
    socket: Socket,
}

impl Reader {
    /// Opens a netfilter netlink socket and binds both groups of `log`. Fails with EPERM
    /// without CAP_NET_ADMIN and EBUSY when another process reads a group.
    pub fn bind(log: HandshakeLog) -> io::Result<Reader> {
        let mut socket = Socket::new(NETLINK_NETFILTER)?;
        socket.bind_auto()?;
        set_recv_buffer(&socket, RECV_BUFFER);
        set_timeout(&socket, RECV_TIMEOUT)?;
        let mut reader = Reader { socket };
        let mut seq = 0;
        // Kernels before 3.17 need the protocol family bound to nfnetlink_log first; later
        // ones accept the command and ignore it.
        for family in [NetfilterProtoFamily::IPv4, NetfilterProtoFamily::IPv6] {
            seq += 1;
            let _ = reader.request(family, 0, vec![ConfigCmd::PfBind.into()], seq);
        }
        for group in [log.initiation_group, log.response_group] {
            seq += 1;
            reader
                .request(
                    NetfilterProtoFamily::Unspec,
                    group,
                    vec![
                        ConfigCmd::Bind.into(),
                        ConfigMode::new_packet(COPY_RANGE).into(),
                        ConfigNla::QThresh(64),
                        Timeout::from(Duration::from_millis(10)).into(),
                    ],
                    seq,
                )
                .map_err(|e| {
                    io::Error::new(e.kind(), format!("binding NFLOG group {group}: {e}"))
                })?;
        }
        Ok(reader)
    }

    /// Sends one config request and waits for its acknowledgement.
    fn request(
        &mut self,
        family: NetfilterProtoFamily,
        group: u16,
        nlas: Vec<ConfigNla>,
        seq: u32,
    ) -> io::Result<()> {
        let mut message = config_request(family, group, nlas);
        message.header.sequence_number = seq;
        let mut buf = vec![0; message.buffer_len()];
        message.serialize(&mut buf);
        self.socket.send(&buf, 0)?;
        let mut rx = vec![0u8; 64 << 10];
        // Packets of a group bound a moment ago may arrive before the acknowledgement.
        for _ in 0..64 {
            let n = match self.socket.recv(&mut &mut rx[..], 0) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "nfnetlink_log did not answer (is the kernel built with NFLOG?)",
                    ))
                }
                Err(e) => return Err(e),
            };
            for (header_seq, payload) in messages(&rx[..n]) {
                if let NetlinkPayload::Error(e) = payload {
                    if header_seq == seq {
                        return match e.code {
                            None => Ok(()),
                            Some(_) => Err(e.to_io()),
                        };
                    }
                }
            }
        }
        Err(io::Error::other("no acknowledgement from nfnetlink_log"))
    }

    /// Reads until `stop` is set, feeding the tracker. Returns the error that ended it, if any.
    pub fn run(
        self,
        tracker: Arc<Mutex<Tracker>>,
        clock: Clock,
        stop: Arc<AtomicBool>,
    ) -> io::Result<()> {
        let mut rx = vec![0u8; 256 << 10];
        while !stop.load(Ordering::Relaxed) {
            let n = match self.socket.recv(&mut &mut rx[..], 0) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    lock(&tracker).lost();
                    continue;
                }
                Err(e) => return Err(e),
            };
            let now = clock.now();
            let mut seen = Vec::new();
            for (_, payload) in messages(&rx[..n]) {
                if let NetlinkPayload::InnerMessage(NetfilterMessage {
                    inner: NetfilterMessageInner::ULog(ULogMessage::Packet(nlas)),
                    ..
                }) = payload
                {
                    for nla in nlas {
                        if let PacketNla::Payload(bytes) = nla {
                            seen.extend(parse_packet(&bytes));
                        }
                    }
                }
            }
            if !seen.is_empty() {
                let mut t = lock(&tracker);
                for h in seen {
                    t.observe(h, now);
                }
            }
        }
        Ok(())
    }
}

/// The netlink messages of one datagram, with their sequence numbers. A message that does not
/// parse ends the datagram (the kernel never sends one; a bug here should not kill the reader).
fn messages(mut buf: &[u8]) -> Vec<(u32, NetlinkPayload<NetfilterMessage>)> {
    let mut out = Vec::new();
    while buf.len() >= 16 {
        let Ok(m) = NetlinkMessage::<NetfilterMessage>::deserialize(buf) else {
            break;
        };
        let len = m.header.length as usize;
        out.push((m.header.sequence_number, m.payload));
        // Messages are 4-byte aligned.
        let next = (len + 3) & !3;
        if len < 16 || next > buf.len() {
            break;
        }
        buf = &buf[next..];
    }
    out
}

fn lock(t: &Mutex<Tracker>) -> std::sync::MutexGuard<'_, Tracker> {
    t.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Asks for a large receive buffer: SO_RCVBUFFORCE (CAP_NET_ADMIN, which the daemon has) goes
/// past net.core.rmem_max; plain SO_RCVBUF is the fallback. Neither failing is fatal.
fn set_recv_buffer(socket: &Socket, bytes: usize) {
    let size = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: a valid socket and a c_int option value of the size passed.
        let r = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r == 0 {
            return;
        }
    }
}

fn set_timeout(socket: &Socket, timeout: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: libc::suseconds_t::from(timeout.subsec_micros() as i32),
    };
    // SAFETY: a valid socket and a timeval of the size passed.
    let r = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
