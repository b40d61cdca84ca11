//! The daemon's Prometheus metrics (issue 5), rendered from a [`Snapshot`] in the text
//! exposition format 0.0.4: `# HELP` and `# TYPE` before each family, counters ending in
//! `_total`, timestamps in `_timestamp_seconds` (DESIGN.md "Monitoring").
//!
//! Per peer: received and sent bytes, latest handshake, connected, enabled, denied packets,
//! labelled `interface`, `peer` (empty for a peer the state does not know), `public_key` and
//! `address`. Per interface: up, peers, connected peers, refused handshakes. The daemon's own:
//! polls and their errors, poll duration, start time.

use std::fmt::{self, Write};

use crate::snapshot::Snapshot;

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Escapes a label value: backslash, double quote and newline.
fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn family<W: Write>(out: &mut W, name: &str, kind: &str, help: &str) -> fmt::Result {
    writeln!(out, "# HELP {name} {help}")?;
    writeln!(out, "# TYPE {name} {kind}")
}

/// A float the way Prometheus reads it (integers without a fraction).
fn num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 9.0e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Writes every metric of `s` to `out`.
pub fn render<W: Write>(s: &Snapshot, out: &mut W) -> fmt::Result {
    let mut m = Families {
        out,
        iface: format!("interface=\"{}\"", escape(&s.status.interface)),
    };
    m.interface(s)?;
    m.peers(s)?;
    m.handshakes(s)?;
    m.firewall(s)?;
    m.daemon(s)
}

/// The writer and the interface label every family carries.
struct Families<'a, W> {
    out: &'a mut W,
    /// `interface="wg0"`, escaped.
    iface: String,
}

impl<W: Write> Families<'_, W> {
    /// A gauge family with one sample for the interface.
    fn gauge(&mut self, name: &str, help: &str, v: f64) -> fmt::Result {
        family(self.out, name, "gauge", help)?;
        writeln!(self.out, "{name}{{{}}} {}", self.iface, num(v))
    }

    /// A counter family with one sample for the interface.
    fn counter(&mut self, name: &str, help: &str, v: u64) -> fmt::Result {
        family(self.out, name, "counter", help)?;
        writeln!(self.out, "{name}{{{}}} {v}", self.iface)
    }

    /// Up, listen port, peers, connected peers.
    fn interface(&mut self, s: &Snapshot) -> fmt::Result {
        self.gauge(
            "wgadm_interface_up",
            "Whether the WireGuard interface exists (1) or not (0).",
            f64::from(u8::from(s.status.up)),
        )?;
        if let Some(port) = s.status.listen_port {
            self.gauge(
                "wgadm_interface_listen_port",
                "The UDP port the interface listens on.",
                f64::from(port),
            )?;
        }
        self.gauge(
            "wgadm_peers",
            "Peers in the state plus unknown peers on the device.",
            s.status.peers_total as f64,
        )?;
        self.gauge(
            "wgadm_peers_connected",
            "Peers with a handshake younger than the connected window.",
            s.status.peers_connected as f64,
        )
    }

    /// One family per peer value, each with a sample per peer, then the expiry timestamps.
    fn peers(&mut self, s: &Snapshot) -> fmt::Result {
        let labels: Vec<String> = s
            .status
            .peers
            .iter()
            .map(|p| {
                format!(
                    "{},peer=\"{}\",public_key=\"{}\",address=\"{}\"",
                    self.iface,
                    escape(p.name.as_deref().unwrap_or("")),
                    p.public_key,
                    p.address.map(|a| a.to_string()).unwrap_or_default()
                )
            })
            .collect();
        for (name, kind, help, value) in PER_PEER {
            family(self.out, name, kind, help)?;
            for (p, l) in s.status.peers.iter().zip(&labels) {
                writeln!(self.out, "{name}{{{l}}} {}", value(p))?;
            }
        }
        // Only peers with an expiry: an alert is `wgadm_peer_expiry_timestamp_seconds - time()
        // < 14 * 86400`, and a peer without one has nothing to compare.
        let name = "wgadm_peer_expiry_timestamp_seconds";
        family(
            self.out,
            name,
            "gauge",
            "Unix time the peer goes off (00:00 UTC of its expires day); only peers with an expiry.",
        )?;
        for (p, l) in s.status.peers.iter().zip(&labels) {
            if let Some(e) = p.expires {
                writeln!(
                    self.out,
                    "{name}{{{l}}} {}",
                    crate::expiry::expiry_timestamp(e)
                )?;
            }
        }
        Ok(())
    }

    /// Refused handshakes and the handshake log that counts them.
    fn handshakes(&mut self, s: &Snapshot) -> fmt::Result {
        self.counter(
            "wgadm_refused_handshakes_total",
            "Handshake initiations that got no response (unknown or wrong key).",
            s.refused_handshakes_total,
        )?;
        self.gauge(
            "wgadm_refused_handshake_sources",
            "Source addresses with refused handshakes listed in the snapshot.",
            s.refused_sources.len() as f64,
        )?;
        let h = &s.handshake_log;
        self.gauge(
            "wgadm_handshake_log_up",
            "Whether the daemon reads the handshake log (NFLOG); refused handshakes are counted only then.",
            f64::from(u8::from(h.up)),
        )?;
        self.counter(
            "wgadm_handshake_initiations_total",
            "Handshake initiations seen at the listen port.",
            h.initiations,
        )?;
        self.counter(
            "wgadm_handshake_responses_total",
            "Handshake responses and cookie replies sent from the listen port.",
            h.responses,
        )?;
        self.counter(
            "wgadm_handshake_log_lost_total",
            "Times handshake log messages were lost (socket buffer overflow).",
            h.lost,
        )
    }

    /// The firewall guard.
    fn firewall(&mut self, s: &Snapshot) -> fmt::Result {
        let f = &s.firewall;
        self.gauge(
            "wgadm_firewall_guarded",
            "Whether the daemon guards the firewall (table inet wgadm).",
            f64::from(u8::from(f.guarded)),
        )?;
        self.gauge(
            "wgadm_firewall_in_force",
            "Whether table inet wgadm with the state's ruleset is in force; while 0 nothing is forwarded from the VPN.",
            f64::from(u8::from(f.in_force)),
        )?;
        self.counter(
            "wgadm_firewall_restores_total",
            "Times the daemon found table inet wgadm missing or changed and loaded it again.",
            f.restored,
        )?;
        self.counter(
            "wgadm_firewall_restore_errors_total",
            "Firewall checks or restores that failed.",
            f.restore_errors,
        )
    }

    /// The daemon's own: polls, errors, timing, start time, version.
    fn daemon(&mut self, s: &Snapshot) -> fmt::Result {
        let d = &s.daemon;
        self.counter("wgadm_polls_total", "Polls of the device.", d.polls)?;
        self.counter(
            "wgadm_poll_errors_total",
            "Polls that failed to read the device.",
            d.poll_errors,
        )?;
        self.counter(
            "wgadm_state_errors_total",
            "Failed reloads of the state directory (the daemon keeps the previous state).",
            d.state_errors,
        )?;
        self.counter(
            "wgadm_snapshot_errors_total",
            "Status snapshots that could not be written.",
            d.snapshot_errors,
        )?;
        self.gauge(
            "wgadm_poll_duration_seconds",
            "How long the latest poll took.",
            d.last_poll_seconds,
        )?;
        family(
            self.out,
            "wgadm_poll_seconds_total",
            "counter",
            "Time spent polling, all polls together.",
        )?;
        writeln!(
            self.out,
            "wgadm_poll_seconds_total{{{}}} {}",
            self.iface, d.poll_seconds_total
        )?;
        self.gauge(
            "wgadm_last_poll_timestamp_seconds",
            "Unix time of the latest poll.",
            s.generated_at as f64,
        )?;
        self.gauge(
            "wgadm_daemon_start_time_seconds",
            "Unix time the daemon started.",
            d.started_at as f64,
        )?;
        family(
            self.out,
            "wgadm_build_info",
            "gauge",
            "The wgadm version, as a label; always 1.",
        )?;
        writeln!(
            self.out,
            "wgadm_build_info{{version=\"{}\"}} 1",
            escape(&d.version)
        )
    }
}

/// A value of one peer.
type PeerValue = fn(&crate::status::PeerStatus) -> u64;

/// The per-peer families: name, type, help, value.
const PER_PEER: [(&str, &str, &str, PeerValue); 6] = [
    (
        "wgadm_peer_receive_bytes_total",
        "counter",
        "Bytes received from the peer.",
        |p| p.rx_bytes,
    ),
    (
        "wgadm_peer_transmit_bytes_total",
        "counter",
        "Bytes sent to the peer.",
        |p| p.tx_bytes,
    ),
    (
        "wgadm_peer_latest_handshake_timestamp_seconds",
        "gauge",
        "Unix time of the peer's latest handshake; 0 when there was none.",
        |p| p.latest_handshake.unwrap_or(0),
    ),
    (
        "wgadm_peer_connected",
        "gauge",
        "Whether the peer's latest handshake is younger than the connected window.",
        |p| u64::from(p.connected),
    ),
    (
        "wgadm_peer_enabled",
        "gauge",
        "Whether the state has the peer enabled.",
        |p| u64::from(p.enabled),
    ),
    (
        "wgadm_peer_denied_packets_total",
        "counter",
        "Packets from the peer toward denied networks, dropped by the firewall.",
        |p| p.denied_packets,
    ),
];

/// [`render`] into a string.
pub fn text(s: &Snapshot) -> String {
    let mut out = String::with_capacity(4096 + s.status.peers.len() * 900);
    // Writing to a String cannot fail.
    let _ = render(s, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::tests::example;

    #[test]
    fn every_family_has_help_and_type_and_counters_end_in_total() {
        let t = text(&example());
        let mut families = Vec::new();
        for line in t.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                families.push(name.to_owned());
                if kind == "counter" {
                    assert!(name.ends_with("_total"), "{name}");
                }
                assert!(t.contains(&format!("# HELP {name} ")), "{name}");
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert!(families.iter().any(|f| f == name), "{line} before its TYPE");
                let value = line.rsplit(' ').next().unwrap();
                assert!(value.parse::<f64>().is_ok(), "{line}");
            }
        }
        let mut unique = families.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), families.len(), "a family twice");
    }

    #[test]
    fn peers_carry_their_labels_and_values() {
        let t = text(&example());
        let k = crate::Key::from([1; 32]);
        let l = format!(
            "{{interface=\"wg0\",peer=\"alice\",public_key=\"{k}\",address=\"192.168.100.2\"}}"
        );
        for line in [
            format!("wgadm_peer_receive_bytes_total{l} 1234"),
            format!("wgadm_peer_transmit_bytes_total{l} 5678"),
            format!("wgadm_peer_latest_handshake_timestamp_seconds{l} 1732479990"),
            format!("wgadm_peer_connected{l} 1"),
            format!("wgadm_peer_enabled{l} 1"),
            "wgadm_peers{interface=\"wg0\"} 2".into(),
            "wgadm_peers_connected{interface=\"wg0\"} 1".into(),
            "wgadm_refused_handshakes_total{interface=\"wg0\"} 7".into(),
            "wgadm_poll_errors_total{interface=\"wg0\"} 1".into(),
            "wgadm_poll_duration_seconds{interface=\"wg0\"} 0.002".into(),
        ] {
            assert!(t.lines().any(|x| x == line), "no {line} in\n{t}");
        }
        // An unknown peer: empty name and address, never handshaked.
        let u = crate::Key::from([9; 32]);
        let unknown = format!(
            "wgadm_peer_latest_handshake_timestamp_seconds{{interface=\"wg0\",peer=\"\",public_key=\"{u}\",address=\"\"}} 0"
        );
        assert!(t.lines().any(|x| x == unknown), "{t}");
    }

    #[test]
    fn only_peers_with_an_expiry_have_an_expiry_timestamp() {
        let t = text(&example());
        let k = crate::Key::from([1; 32]);
        // alice expires 2026-12-15: off from its 00:00 UTC.
        let line = format!(
            "wgadm_peer_expiry_timestamp_seconds{{interface=\"wg0\",peer=\"alice\",public_key=\"{k}\",address=\"192.168.100.2\"}} 1797292800"
        );
        assert!(t.lines().any(|x| x == line), "{t}");
        assert_eq!(
            t.lines()
                .filter(|x| x.starts_with("wgadm_peer_expiry_timestamp_seconds{"))
                .count(),
            1
        );
    }

    /// The whole text for two snapshots, byte for byte, against `testdata/metrics/`
    /// (`WGADM_BLESS=1 cargo test -p wgadm-core golden` rewrites them after an intended change).
    #[test]
    fn golden_texts_are_unchanged() {
        let mut other = example();
        other.status.listen_port = match other.status.listen_port {
            Some(_) => None,
            None => Some(443),
        };
        other.status.up = !other.status.up;
        other.firewall.guarded = !other.firewall.guarded;
        other.firewall.restored = 3;
        other.daemon.version = "0.0.0-\"test\"".into();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/metrics");
        for (name, snapshot) in [("example", example()), ("other", other)] {
            let got = text(&snapshot);
            let path = dir.join(format!("{name}.prom"));
            if std::env::var_os("WGADM_BLESS").is_some() {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &got).unwrap();
            }
            let want = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e} (WGADM_BLESS=1 writes it)", path.display()));
            assert!(
                got == want,
                "{name} differs from {}:\n{got}",
                path.display()
            );
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        let mut s = example();
        s.status.interface = "w\"g".into();
        assert!(text(&s).contains("interface=\"w\\\"g\""));
    }
}
