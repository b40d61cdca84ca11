//! `wgadm status`: who is connected, from where, and how much they moved.

use std::time::{SystemTime, UNIX_EPOCH};

use wgadm_core::status::{status, PeerState, Status};

use super::render::load_checked;
use super::Ctx;
use crate::cli::StatusArgs;
use crate::error::Result;
use crate::output;

/// Prints the interface's status as a table or `--json`. Never a key other than public ones.
pub fn run(ctx: &Ctx, args: StatusArgs) -> Result<()> {
    if let Some(path) = args.from_snapshot {
        return from_snapshot(ctx, &path);
    }
    let state = {
        let _lock = ctx.store.lock_shared()?;
        load_checked(ctx)?
    };
    ctx.device.preflight()?;
    let observed = ctx.device.show(&state.server.interface)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // Without nft (or its table) there are no drop counters to show, which is no reason to fail.
    let drops = ctx.firewall.drop_counters().unwrap_or_default();
    let st = status(&state, observed.as_ref(), &drops, now, ctx.today);
    // Which implementation serves the interface: the kernel module (netlink) or a userspace
    // one such as wireguard-go (its UAPI socket). Only known while the interface exists.
    let backend = observed
        .as_ref()
        .map(|_| ctx.device.backend_of(&state.server.interface));
    if ctx.json {
        let mut value = serde_json::to_value(&st)
            .map_err(|e| crate::error::Error::Invalid(format!("cannot encode the status: {e}")))?;
        if let Some(object) = value.as_object_mut() {
            object.insert("backend".into(), backend.as_ref().map(|b| b.name()).into());
        }
        return output::json(&value);
    }
    let mut text = table(&st);
    if let Some(b) = &backend {
        // After the header line, before the peer table.
        let at = text.find('\n').map_or(text.len(), |i| i + 1);
        text.insert_str(at, &format!("backend: {b}\n"));
    }
    output::print(&text)
}

/// `--from-snapshot`: the daemon's latest snapshot, as written (`--json`) or as the table, with
/// its age. Needs no state directory and no privilege.
fn from_snapshot(ctx: &Ctx, path: &std::path::Path) -> Result<()> {
    let (snap, text) = crate::daemon::snapshot::read(path)?;
    if ctx.json {
        // As written, so fields a newer daemon added pass through.
        return output::print(&text);
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut out = format!(
        "snapshot {} by wgadm daemon (pid {}), {} old\n",
        path.display(),
        snap.daemon.pid,
        ago(now.saturating_sub(snap.generated_at)).trim_end_matches(" ago")
    );
    out.push_str(&table(&snap.status));
    if snap.refused_handshakes_total > 0 {
        out.push_str(&format!(
            "refused handshakes: {} from {} sources\n",
            snap.refused_handshakes_total,
            snap.refused_sources.len()
        ));
        for s in &snap.refused_sources {
            out.push_str(&format!(
                "  {} ({} times, last {})\n",
                s.source,
                s.count,
                ago(now.saturating_sub(s.last_seen))
            ));
        }
    }
    output::print(&out)
}

/// The status as the header line and the peer table.
fn table(st: &Status) -> String {
    let mut text = match st.listen_port {
        Some(port) => format!(
            "interface {}: up, listening on {port}, {} of {} peers connected\n",
            st.interface, st.peers_connected, st.peers_total
        ),
        None => format!(
            "interface {}: down (`wgadm apply` brings it up)\n",
            st.interface
        ),
    };
    let rows: Vec<Vec<String>> = st
        .peers
        .iter()
        .map(|p| {
            vec![
                p.name.clone().unwrap_or_else(|| "(unknown)".into()),
                p.address.map_or_else(|| "-".into(), |a| a.to_string()),
                match p.state {
                    PeerState::Applied if p.connected => "connected".into(),
                    PeerState::Applied => "idle".into(),
                    PeerState::NotApplied => "not applied".into(),
                    PeerState::Disabled => "disabled".into(),
                    PeerState::Expired => "expired".into(),
                    PeerState::PendingRemoval => "pending removal".into(),
                    PeerState::Unknown => "unknown (drift)".into(),
                },
                p.endpoint.clone().unwrap_or_else(|| "-".into()),
                p.handshake_age_seconds.map_or_else(|| "never".into(), ago),
                bytes(p.rx_bytes),
                bytes(p.tx_bytes),
                p.denied_packets.to_string(),
                expires(p.expires, p.expires_in_days),
            ]
        })
        .collect();
    text.push_str(&output::table(
        &[
            "NAME",
            "ADDRESS",
            "STATE",
            "ENDPOINT",
            "HANDSHAKE",
            "RX",
            "TX",
            "DENIED",
            "EXPIRES",
        ],
        &rows,
    ));
    text
}

/// The EXPIRES column: `-` without an expiry, else the day and how far off it is. The peer
/// is off from that day on, so 0 days and less read as expired.
fn expires(day: Option<wgadm_core::Date>, days: Option<i64>) -> String {
    match (day, days) {
        (Some(d), Some(n)) if n > 1 => format!("{d} (in {n} days)"),
        (Some(d), Some(1)) => format!("{d} (at midnight UTC)"),
        (Some(d), Some(_)) => format!("{d} (expired)"),
        _ => "-".into(),
    }
}

fn ago(secs: u64) -> String {
    match secs {
        0..=119 => format!("{secs}s ago"),
        120..=7199 => format!("{}m ago", secs / 60),
        7200..=172_799 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn human_units() {
        assert_eq!(super::bytes(512), "512 B");
        assert_eq!(super::bytes(1536), "1.5 KiB");
        assert_eq!(super::ago(59), "59s ago");
        assert_eq!(super::ago(3600), "60m ago");
        let d = wgadm_core::Date::parse("2026-12-15").ok();
        assert_eq!(super::expires(d, Some(14)), "2026-12-15 (in 14 days)");
        assert_eq!(super::expires(d, Some(1)), "2026-12-15 (at midnight UTC)");
        assert_eq!(super::expires(d, Some(0)), "2026-12-15 (expired)");
        assert_eq!(super::expires(None, None), "-");
    }
}
