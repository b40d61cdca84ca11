//! Expiry on time (issue 10): on the day a peer expires the daemon takes it off the live
//! device and reloads the firewall without it, within one poll, without anyone running
//! `apply`; the decisions are [`wgadm_core::expiry`]'s.
//!
//! Why not the whole `apply`: it reads the server's private key and rewrites the wg-quick
//! config, and the daemon runs read-only (wgadm.service: `ProtectSystem=strict`) and never
//! opens a key file. Taking a peer off the device (a removal through the device layer) and loading
//! the ruleset (`nft -f -`) need neither: CAP_NET_ADMIN is enough. The wg-quick config keeps
//! the peer until the next `apply` (which leaves it out from its expiry day on); should the
//! interface come up from that config meanwhile (a reboot, `systemctl restart wg-quick@wg0`),
//! the firewall loaded at boot already has no element for the peer, and the daemon's first
//! poll takes it off the device again ([`wgadm_core::expiry::Watch::pending`]).
//!
//! It works under the state's lock, shared like the daemon's other reads and taken without
//! waiting (the next poll tries again), on the state read afresh under that lock: every
//! command that writes the state or changes the device or firewall (`apply`, `peer ... --apply`,
//! `firewall apply`) holds the lock exclusively, so none runs meanwhile and the daemon never
//! loads a ruleset older than what such a command loaded. Only a table in force is replaced: a
//! server without wgadm's table gets none from the daemon.

use wgadm_core::device::Observed;
use wgadm_core::events::{Level, Value};
use wgadm_core::expiry::{self, Watch};
use wgadm_core::{Date, State};

use super::log::Logger;
use super::Quiet;
use crate::error::{Error, Result};
use crate::Ctx;
use wgadm_firewall::options as firewall_options;

/// The daemon's expiry enforcement, kept across polls.
#[derive(Default)]
pub struct Enforcer {
    watch: Watch,
    quiet: Quiet,
    /// Peers taken off the device by attempts that could not finish (the state did not load),
    /// so the `peer_expired` line of the attempt that does finish says they were.
    removed: Vec<wgadm_core::Key>,
}

impl Enforcer {
    /// Enforces expiries due `today` when there is anything to do (cheap otherwise: no lock,
    /// no tool is run). Returns whether it changed the device, so the caller reads it again.
    pub fn poll(
        &mut self,
        ctx: &Ctx,
        state: &State,
        observed: Option<&Observed>,
        today: Date,
        logger: &Logger,
    ) -> bool {
        if !self.watch.pending(state, observed, today) {
            return false;
        }
        match self.enforce(ctx, state, today, logger) {
            Ok(changed) => {
                self.quiet.clear(logger, "expiry_ok");
                changed
            }
            Err(e) => {
                // Tried again next poll, logged again at most once a minute.
                self.quiet.log(logger, "expiry_error", &e.to_string());
                false
            }
        }
    }

    /// `cached` is the daemon's last good state: when the state on disk does not load (a
    /// hand edit gone wrong), its expired peers still go off the device, and the firewall
    /// waits for a state that loads (the error is logged, and tried again every poll).
    fn enforce(&mut self, ctx: &Ctx, cached: &State, today: Date, logger: &Logger) -> Result<bool> {
        // The store's lock, which also finishes an interrupted change first; busy: next poll.
        let Some(lock) = ctx.store.try_lock_shared()? else {
            return Ok(false);
        };
        let (fresh, unloadable) = match ctx.store.load() {
            Ok(s) => (Some(s), None),
            Err(e) => (None, Some(e)),
        };
        let state = fresh.as_ref().unwrap_or(cached);
        let iface = &state.server.interface;
        let observed = super::observe(ctx, state)?;
        let expired = expiry::expired(state, today);
        let remove = expiry::on_device(&expired, observed.as_ref());
        // The device first: that ends the tunnel at once, whatever the firewall does.
        if !remove.is_empty() {
            ctx.device.remove_peers(iface, &remove)?;
        }
        self.removed.extend_from_slice(&remove);
        if let Some(e) = unloadable {
            return Err(Error::Invalid(format!(
                "expired peers cannot go out of the firewall while the state does not load \
                 ({} taken off the device from the last good state): {e}",
                remove.len()
            )));
        }
        let reloaded = !expired.is_empty() && reload_firewall(ctx, state, today)?;
        let removed_now = std::mem::take(&mut self.removed);
        for e in self.watch.settle(state, today, &removed_now, reloaded) {
            let removed = removed_now.contains(&e.public_key);
            logger.line(
                Level::Info,
                "peer_expired",
                &[
                    ("peer", e.name.to_string().into()),
                    ("address", e.address.to_string().into()),
                    ("expires", e.expires.to_string().into()),
                    ("removed_from_device", Value::Str(removed.to_string())),
                    ("firewall_reloaded", Value::Str(reloaded.to_string())),
                ],
            );
        }
        drop(lock);
        Ok(!remove.is_empty())
    }
}

/// Loads the state's ruleset for `today` when wgadm's table is in force and differs from it.
/// Returns whether it loaded.
fn reload_firewall(ctx: &Ctx, state: &State, today: Date) -> Result<bool> {
    let nft = &ctx.firewall;
    match nft.loaded_digest()? {
        None => Ok(false),
        // The expired peer's elements go in place (one transaction) when only they differ;
        // drop counters survive either way, as with `apply`.
        Some(d) => {
            Ok(nft.put(state, today, &firewall_options(), Some(&d))?
                != wgadm_firewall::Put::Unchanged)
        }
    }
}
