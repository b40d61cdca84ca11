//! `wgadm check`: every problem of the state at once, including its key files.

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::json;
use wgadm_core::{check, Key, Problem, State};

use super::Ctx;
use crate::cli::CheckArgs;
use crate::error::{Error, Result};
use crate::output;
use crate::vault;

/// Prints "ok" or the problems (and exits 1 with them).
pub fn run(ctx: &Ctx, args: CheckArgs) -> Result<()> {
    let _lock = ctx.store.lock_shared()?;
    let state = match ctx.store.load().map_err(Error::from) {
        Ok(state) => state,
        Err(Error::State(mut problems)) => {
            problems.extend(crate::store::strays(&ctx.store)?);
            return Err(Error::State(problems));
        }
        Err(e) => return Err(e),
    };
    let mut problems = check(&state);
    problems.extend(key_file_problems(ctx, &state, args.keys)?);
    problems.extend(crate::store::strays(&ctx.store)?);
    if ctx.json {
        output::json(&json!({
            "ok": problems.is_empty(),
            "peers": state.peers.len(),
            "problems": problems.iter().map(|p| json!({"place": p.place, "message": p.message})).collect::<Vec<_>>(),
        }))?;
    } else if problems.is_empty() {
        output::print(&format!("ok: {} peers, no problems\n", state.peers.len()))?;
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::State(problems))
    }
}

fn key_file_problems(ctx: &Ctx, state: &State, open_keys: bool) -> Result<Vec<Problem>> {
    let store = &ctx.store;
    // The server key is always opened: a server that cannot start is worth the cost.
    let mut problems = key_file(
        "server.key",
        &store.server_key(),
        true,
        Some(state.server.public_key),
        ctx,
    );
    let listing: HashSet<String> = store.peer_dir_listing()?.into_iter().collect();
    for (name, peer) in &state.peers {
        if listing.contains(&format!("{name}.key")) {
            let public = open_keys.then_some(peer.public_key);
            problems.extend(key_file(
                &format!("peers/{name}.key"),
                &store.peer_key(name),
                open_keys,
                public,
                ctx,
            ));
        }
        if peer.preshared_key {
            problems.extend(key_file(
                &format!("peers/{name}.psk"),
                &store.peer_psk(name),
                open_keys,
                None,
                ctx,
            ));
        }
    }
    for file in &listing {
        let Some(stem) = file
            .strip_suffix(".key")
            .or_else(|| file.strip_suffix(".psk"))
        else {
            continue;
        };
        if !listing.contains(&format!("{stem}.yml")) {
            problems.push(Problem {
                place: format!("peers/{file}"),
                message: format!("belongs to no peer (there is no peers/{stem}.yml); remove it"),
            });
        }
    }
    Ok(problems)
}

/// A key file's problems: missing, readable by others, and (when `open`) in another mode than
/// the state's (server.key's: vault or plaintext), not opened by the state's password,
/// unreadable, or (when `public` is given) not the private key of `public`.
fn key_file(place: &str, path: &Path, open: bool, public: Option<Key>, ctx: &Ctx) -> Vec<Problem> {
    let problem = |message: String| {
        vec![Problem {
            place: place.to_owned(),
            message,
        }]
    };
    let mode = match std::fs::symlink_metadata(path) {
        Err(_) => return problem("is missing; restore it from a backup".into()),
        // Reported with the other entries that are not regular files (store::strays).
        Ok(m) if !m.file_type().is_file() => return vec![],
        Ok(m) => m.permissions().mode() & 0o777,
    };
    if mode & 0o077 != 0 {
        return problem(format!(
            "has mode {mode:o}; key files must be 0600 (chmod 600 it)"
        ));
    }
    if !open {
        return vec![];
    }
    let is_vault = std::fs::read(path).is_ok_and(|d| vault::is_vault(&d));
    let state_vault = ctx.keys.reference_is_vault();
    if is_vault != state_vault {
        return problem(if is_vault {
            "is encrypted with Ansible Vault, but server.key is plaintext: one state has one \
             mode; make them one with `wgadm vault decrypt` (with the password that opens \
             it) or `wgadm vault encrypt`"
                .into()
        } else {
            "is plaintext, but server.key is encrypted with Ansible Vault: one state has one \
             mode; encrypt every key with `wgadm vault encrypt` (with the state's password)"
                .into()
        });
    }
    match (ctx.keys.read(path), public) {
        (Ok(k), Some(p)) if k.public_key() != p => problem(
            "does not belong to the public key in its YAML file; restore the matching key".into(),
        ),
        (Err(e), _) if is_vault => problem(format!(
            "cannot be opened with the state's vault password: {e}; every key of a state is \
             under server.key's password (`wgadm vault rekey` changes it for all of them)"
        )),
        (Err(e), _) => problem(format!("cannot be read: {e}")),
        _ => vec![],
    }
}
