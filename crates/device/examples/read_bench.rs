//! Benchmark (prints numbers, asserts nothing): reading an interface of 5,000 peers through this
//! crate against spawning `wg show IF dump`, on wireguard-go in a network namespace, and on the
//! kernel module where it exists. Root only:
//!
//! ```text
//! cargo run --release -p wgadm-device --example read_bench [-- PEERS [ROUNDS]]
//! ```

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use support::{Kind, Rig};
use wgadm_device::{ChangeSet, Device, PeerChange, PeerUpdate, PresharedKey, Secret, WireGuard};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn bench(kind: Kind, peers: u32, rounds: usize) -> Result<(), String> {
    let rig = Rig::new(kind)?;
    rig.enter();
    let device = Device::open(&rig.iface).map_err(|e| e.to_string())?;
    let mut changes = ChangeSet {
        private_key: Some(Secret::private_from_random([0x31; 32])),
        listen_port: Some(40000 + (std::process::id() % 20000) as u16),
        ..ChangeSet::default()
    };
    for i in 0..peers {
        let mut seed = [0u8; 32];
        seed[1..5].copy_from_slice(&i.to_le_bytes());
        let ip = IpNet::new(std::net::Ipv4Addr::from(0x0a00_0000 + i).into(), 32)
            .map_err(|e| e.to_string())?;
        changes.peers.push(PeerChange::Set(PeerUpdate {
            preshared_key: PresharedKey::Set(Secret::preshared_from_random([7; 32])),
            allowed_ips: Some(vec![ip]),
            ..PeerUpdate::new(Secret::private_from_random(seed).public_key())
        }));
    }
    let start = Instant::now();
    device.apply(&changes).map_err(|e| e.to_string())?;
    let add = start.elapsed();

    let mut ours = Vec::new();
    let mut wg = Vec::new();
    let mut raw = Vec::new();
    for _ in 0..rounds {
        if kind == Kind::Userspace {
            // The implementation's own share: the answer's bytes, not parsed.
            let t = Instant::now();
            raw_get(&rig.socket())?;
            raw.push(t.elapsed());
        }
        let t = Instant::now();
        let dev = device.read().map_err(|e| e.to_string())?;
        ours.push(t.elapsed());
        if dev.peers.len() != peers as usize {
            return Err(format!("read {} peers, want {peers}", dev.peers.len()));
        }
        // `wg show dump` the way a caller would: one process (this thread is already in the
        // namespace, so the child is too).
        let t = Instant::now();
        let out = Command::new("wg")
            .args(["show", &rig.iface, "dump"])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        wg.push(t.elapsed());
        if !out.status.success() {
            return Err("wg show dump failed".into());
        }
    }
    if !raw.is_empty() {
        println!(
            "{kind:?}: {peers} peers: the raw UAPI answer alone (wireguard-go's share): {:.2} ms",
            median(raw).as_secs_f64() * 1e3
        );
    }
    let (ours, wg) = (median(ours), median(wg));
    println!(
        "{kind:?}: {peers} peers: add all in one change set {:.1} ms; read median of {rounds}: \
         wgadm-device {:.2} ms, `wg show dump` {:.2} ms ({:.1}x)",
        add.as_secs_f64() * 1e3,
        ours.as_secs_f64() * 1e3,
        wg.as_secs_f64() * 1e3,
        wg.as_secs_f64() / ours.as_secs_f64()
    );
    Ok(())
}

fn raw_get(socket: &std::path::Path) -> Result<usize, String> {
    use std::io::{Read, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(socket).map_err(|e| e.to_string())?;
    stream.write_all(b"get=1\n\n").map_err(|e| e.to_string())?;
    let mut answer = Vec::with_capacity(4 << 20);
    let mut buf = [0u8; 64 << 10];
    loop {
        let n = stream.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed".into());
        }
        answer.extend_from_slice(&buf[..n]);
        if answer.ends_with(b"\n\n") {
            return Ok(answer.len());
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let peers = args.next().and_then(|a| a.parse().ok()).unwrap_or(5000);
    let rounds = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
    for kind in [Kind::Userspace, Kind::Kernel] {
        // Each kind in its own thread: `enter` moves the calling thread into the namespace.
        let result = std::thread::spawn(move || bench(kind, peers, rounds)).join();
        match result {
            Ok(Ok(())) => {}
            Ok(Err(why)) => println!("{kind:?}: not measured: {why}"),
            Err(_) => println!("{kind:?}: panicked"),
        }
    }
}
