//! `wgadm render`: the server's wg-quick config on stdout.

use std::collections::BTreeMap;

use wgadm_core::{check, render, PeerName, Secret, State};

use super::Ctx;
use crate::error::{Error, Result};
use crate::output;

/// Loads the state, refuses one that fails `check`, and prints the server config.
pub fn run(ctx: &Ctx) -> Result<()> {
    let _lock = ctx.store.lock_shared()?;
    let state = load_checked(ctx)?;
    let text = server_config(ctx, &state)?;
    output::print(&text)
}

/// Prints the nftables ruleset `apply` would load (counters start at zero here).
pub fn firewall(ctx: &Ctx) -> Result<()> {
    let _lock = ctx.store.lock_shared()?;
    let state = load_checked(ctx)?;
    let options = super::apply::firewall_options();
    output::print(&wgadm_core::firewall::ruleset(&state, ctx.today, &options))
}

/// The state, if it passes `check`.
pub fn load_checked(ctx: &Ctx) -> Result<State> {
    let state = ctx.store.load()?;
    let problems = check(&state);
    if problems.is_empty() {
        Ok(state)
    } else {
        Err(Error::State(problems))
    }
}

/// The preshared keys of the peers that are on the device today.
pub fn preshared_keys(ctx: &Ctx, state: &State) -> Result<BTreeMap<PeerName, Secret>> {
    state
        .active_peers(ctx.today)
        .filter(|(_, p)| p.preshared_key)
        .map(|(name, _)| Ok((name.clone(), ctx.keys.read(&ctx.store.peer_psk(name))?)))
        .collect()
}

/// The server's wg-quick config for today, with its keys read from the key files.
pub fn server_config(ctx: &Ctx, state: &State) -> Result<zeroize::Zeroizing<String>> {
    let private = ctx.keys.read(&ctx.store.server_key())?;
    Ok(render::server_config(
        state,
        &private,
        &preshared_keys(ctx, state)?,
        ctx.today,
    ))
}
