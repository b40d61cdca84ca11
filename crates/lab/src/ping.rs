//! Ping loops through the tunnel and what they saw.

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::kernel;

/// A running `ping -i 0.01`.
pub struct PingLoop {
    pub(crate) child: Option<Child>,
    pub(crate) out: PathBuf,
    pub(crate) backlog_drops: u64,
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
pub(crate) fn backlog_drops() -> u64 {
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
