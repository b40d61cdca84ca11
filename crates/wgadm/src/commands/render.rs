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
    let options = crate::firewall::options();
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

/// The server's private key from server.key, refused unless it belongs to server.yml's
/// `public_key`: a device with the wrong key cuts off every client, and apply could never
/// bring the device to the state.
pub fn server_private(ctx: &Ctx, state: &State) -> Result<Secret> {
    let path = ctx.store.server_key();
    let private = ctx.keys.read(&path)?;
    let public = private.public_key();
    if public != state.server.public_key {
        return Err(Error::Invalid(format!(
            "{}: its key (public key {public}) does not belong to {} (public_key {}); \
             nothing was changed. Restore the server.key of this server.yml from a backup, \
             or make a new pair with `wgadm init --force` (every client config must then be \
             reissued)",
            path.display(),
            ctx.store.server_yml().display(),
            state.server.public_key
        )));
    }
    Ok(private)
}

/// The server's wg-quick config for today, with its keys read from the key files.
pub fn server_config(ctx: &Ctx, state: &State) -> Result<zeroize::Zeroizing<String>> {
    let private = server_private(ctx, state)?;
    Ok(render::server_config(
        state,
        &private,
        &preshared_keys(ctx, state)?,
        ctx.today,
    ))
}
