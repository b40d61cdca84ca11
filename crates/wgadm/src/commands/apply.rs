//! `wgadm apply`: the live interface brought to the state, touching only what differs.

use std::collections::HashMap;
use std::os::unix::fs::DirBuilderExt;

use serde::Serialize;
use wgadm_core::firewall::{digest, element_text, ruleset, ruleset_digest_with};
use wgadm_core::plan::{plan, Desired, Plan, Summary};

use super::render::{load_checked, preshared_keys};
use super::Ctx;
use crate::cli::ApplyArgs;
use crate::device;
use crate::error::{Error, Result};
use crate::firewall;
use crate::firewall::options as firewall_options;
use crate::output;
use crate::store::{write_file_atomic, SECRET_MODE};

/// What an apply did (or, with `--dry-run`, would do).
#[derive(Debug, Serialize)]
pub struct Outcome {
    /// The plan by peer name; `changed` also counts the config file and bringing the interface up.
    #[serde(flatten)]
    pub summary: Summary,
    /// The wg-quick config was (re)written.
    pub config_written: bool,
    /// The interface was missing and brought up with wg-quick.
    pub brought_up: bool,
    /// The nftables table `inet wgadm` was (re)loaded.
    pub firewall_changed: bool,
    /// The ruleset to load, with `--dry-run` when it differs from the one in force.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ruleset: Option<String>,
    /// Nothing was changed: this is what would happen.
    pub dry_run: bool,
    /// The exact steps, one per line.
    pub steps: Vec<String>,
}

/// When the environment variable `WGADM_TIMINGS` is set, `apply` prints the time of each of
/// its steps to stderr (a benchmark's breakdown; the steps' names only, nothing of the state).
pub const TIMINGS_ENV: &str = "WGADM_TIMINGS";

/// The steps' times of one apply, kept only when asked for ([`TIMINGS_ENV`]).
struct Timings(Option<(std::time::Instant, Vec<(&'static str, std::time::Instant)>)>);

impl Timings {
    fn start() -> Timings {
        let now = std::time::Instant::now();
        Timings(std::env::var_os(TIMINGS_ENV).map(|_| (now, Vec::new())))
    }

    fn mark(&mut self, step: &'static str) {
        if let Some((_, marks)) = &mut self.0 {
            marks.push((step, std::time::Instant::now()));
        }
    }
}

impl Drop for Timings {
    fn drop(&mut self) {
        let Some((start, marks)) = &self.0 else {
            return;
        };
        let mut last = *start;
        let mut line = String::from("wgadm apply timings (ms):");
        for (step, at) in marks {
            line.push_str(&format!(" {step}={:.2}", (*at - last).as_secs_f64() * 1e3));
            last = *at;
        }
        line.push_str(&format!(
            " total={:.2}",
            (last - *start).as_secs_f64() * 1e3
        ));
        eprintln!("{line}");
    }
}

/// Runs `wgadm firewall apply`: the firewall part of `apply` alone.
pub fn firewall(ctx: &Ctx) -> Result<()> {
    let _lock = ctx.store.lock_exclusive()?;
    let state = load_checked(ctx)?;
    let nft = &ctx.firewall;
    nft.preflight()?;
    let iface = state.server.interface.as_str();
    let rules = ruleset(&state, ctx.today, &firewall_options());
    // The table first, verified, and only then forwarding: a refused ruleset leaves the
    // interface unable to forward rather than forwarding unfiltered.
    let put = nft
        .loaded_digest()
        .and_then(|loaded| nft.put(&state, ctx.today, &firewall_options(), loaded.as_deref()))
        .inspect_err(|_| {
            firewall::close_gate_if_absent(nft, iface);
        })?;
    let loaded = put != firewall::Put::Unchanged;
    let forward = firewall::open_gate(nft, digest(&rules), iface)?.ip_forward;
    if ctx.json {
        output::json(
            &serde_json::json!({ "changed": forward || loaded, "ip_forward_enabled": forward, "ruleset_loaded": loaded }),
        )
    } else {
        output::print(&match put {
            firewall::Put::Table => "loaded nftables table inet wgadm\n".to_owned(),
            firewall::Put::Elements { added, removed } => format!(
                "updated nftables table inet wgadm in place: {added} elements added, {removed} \
                 deleted\n"
            ),
            firewall::Put::Unchanged => "nftables table inet wgadm already in force\n".to_owned(),
        })
    }
}

/// Runs `wgadm apply`.
pub fn run(ctx: &Ctx, args: ApplyArgs) -> Result<()> {
    let _lock = ctx.store.lock_exclusive()?;
    let outcome = apply_locked(ctx, args.dry_run)?;
    report(ctx, &outcome)
}

/// Prints an outcome as JSON or as the list of steps.
pub fn report(ctx: &Ctx, outcome: &Outcome) -> Result<()> {
    if ctx.json {
        return output::json(outcome);
    }
    let mut text = String::new();
    let verb = if outcome.dry_run { "would" } else { "did" };
    if outcome.steps.is_empty() {
        text.push_str("in sync: nothing to do\n");
    }
    for step in &outcome.steps {
        text.push_str(&format!("{verb}: {step}\n"));
    }
    if let Some(rules) = &outcome.ruleset {
        text.push_str("the ruleset:\n");
        text.push_str(rules);
    }
    output::print(&text)
}

/// Applies the state to the device; the caller holds the state lock. Everything that can be
/// refused (a state that fails check, missing tools, a busy port) is checked before the first
/// change, so a refusal leaves the config file and the device as they were.
pub fn apply_locked(ctx: &Ctx, dry_run: bool) -> Result<Outcome> {
    let mut t = Timings::start();
    let state = load_checked(ctx)?;
    t.mark("load");
    let iface = &state.server.interface;
    let private = super::render::server_private(ctx, &state)?;
    let psks = preshared_keys(ctx, &state)?;
    let text = wgadm_core::render::server_config(&state, &private, &psks, ctx.today);
    t.mark("keys_render");
    let backend = &ctx.device;
    backend.preflight()?;
    let nft = &ctx.firewall;
    nft.preflight()?;
    t.mark("preflight");
    // Only the digest of the wanted ruleset: the whole script (thousands of elements) is
    // rendered only when it is loaded as a table or shown (--dry-run).
    // The peers' elements are worked out once: for the digest here, and to diff against those
    // in force when they change in place.
    let elements = element_text(&state, ctx.today);
    let wanted = ruleset_digest_with(&state, ctx.today, &firewall_options(), &elements);
    t.mark("digest");
    let path = backend.config_path(iface);
    let config_written = std::fs::read(&path).map_or(true, |old| old != text.as_bytes());
    t.mark("config_read");
    // The device and the firewall are read at the same time: at thousands of peers each read
    // takes tens of milliseconds, and neither depends on the other.
    let (observed, loaded) = std::thread::scope(|scope| {
        let loaded = scope.spawn(|| nft.loaded_digest());
        let observed = backend.show(iface);
        let loaded = loaded.join().unwrap_or_else(|_| {
            Err(crate::firewall::FirewallError::Listing {
                what: "nft -t list table inet wgadm",
                why: "the thread reading it failed".into(),
            })
        });
        (observed, loaded)
    });
    let (observed, loaded) = (observed?, loaded?);
    t.mark("device_and_digest_read");
    let firewall_changed = loaded.as_deref() != Some(wanted.as_str());
    let mut steps = Vec::new();
    if firewall_changed {
        let peers = state.active_peers(ctx.today).count();
        steps.push(match nft.can_update_in_place(loaded.as_deref(), &wanted) {
            true => format!(
                "update nftables table inet wgadm in place: the peers' elements ({peers} \
                 active peers)"
            ),
            false => format!("load nftables table inet wgadm ({peers} active peers)"),
        });
    }
    if config_written {
        steps.push(format!("write {} (mode 0600)", path.display()));
    }
    let plan = match &observed {
        None => {
            device::check_port_free(state.server.listen_port)?;
            steps.push(format!(
                "bring up {iface} with wg-quick from {}",
                path.display()
            ));
            Plan::default()
        }
        Some(observed) => {
            let desired = Desired::from_state(&state, &psks, ctx.today);
            let names: HashMap<_, _> = state
                .peers
                .iter()
                .map(|(n, p)| (p.public_key, n.clone()))
                .collect();
            let plan = plan(&desired, observed, &names);
            for change in &plan.changes {
                if let wgadm_core::plan::Change::ListenPort { to, .. } = change {
                    device::check_port_free(*to)?;
                }
                steps.push(format!("{iface}: {change}"));
            }
            plan
        }
    };
    t.mark("plan");
    let mut summary = plan.summary();
    if observed.is_none() {
        summary.added = state
            .active_peers(ctx.today)
            .map(|(n, _)| n.to_string())
            .collect();
    }
    summary.changed = !steps.is_empty();
    let outcome = Outcome {
        summary,
        config_written,
        brought_up: observed.is_none(),
        firewall_changed,
        ruleset: (dry_run && firewall_changed)
            .then(|| ruleset(&state, ctx.today, &firewall_options())),
        dry_run,
        steps,
    };
    if dry_run {
        return Ok(outcome);
    }

    // The firewall goes first, and forwarding only after it is verified in force: a new
    // interface never runs a moment without it, and a refused ruleset never leaves the
    // interface forwarding unfiltered (DESIGN.md "Firewall": the per-interface gate).
    let mut outcome = outcome;
    let opened = if firewall_changed {
        // Only the peers' elements changed: they change in place (one transaction); else the
        // table is replaced, per-peer drop counters carried over.
        let put = nft
            .put_text(
                &state,
                ctx.today,
                &firewall_options(),
                loaded.as_deref(),
                &wanted,
                &elements,
            )
            .inspect_err(|_| {
                firewall::close_gate_if_absent(nft, iface.as_str());
            })?;
        // Say what was done: the plan's guess may have met a table changed by hand.
        let done = match put {
            firewall::Put::Elements { added, removed } => Some(format!(
                "update nftables table inet wgadm in place ({added} elements added, {removed} \
                 deleted)"
            )),
            firewall::Put::Table => Some(format!(
                "load nftables table inet wgadm ({} active peers)",
                state.active_peers(ctx.today).count()
            )),
            firewall::Put::Unchanged => None,
        };
        if let (Some(done), Some(step)) = (
            done,
            outcome
                .steps
                .iter_mut()
                .find(|s| s.contains("nftables table inet wgadm")),
        ) {
            *step = done;
        }
        t.mark("nft_put");
        firewall::open_gate(nft, Some(&wanted), iface.as_str())?
    } else {
        // Read and compared above, at the same time as the device.
        firewall::switch_on(iface.as_str())?
    };
    t.mark("gate");
    if opened.ip_forward {
        outcome.steps.push("switch on IPv4 forwarding".into());
        outcome.summary.changed = true;
    }
    if opened.iface {
        outcome.steps.push(format!(
            "switch on forwarding from {iface} (table inet wgadm in force)"
        ));
        outcome.summary.changed = true;
    }

    if config_written {
        if let Some(dir) = path.parent().filter(|d| !d.exists()) {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .recursive(true)
                .create(dir)
                .map_err(|e| Error::io(dir, e))?;
        }
        write_file_atomic(&path, text.as_bytes(), SECRET_MODE)?;
    }
    t.mark("config_write");
    match observed {
        None => backend.up(iface)?,
        Some(_) => backend.apply(iface, &plan, &private)?,
    }
    t.mark("device_apply");
    Ok(outcome)
}
