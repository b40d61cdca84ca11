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

/// Prints "ok" or the problems (and exits 1 with them).
pub fn run(ctx: &Ctx, args: CheckArgs) -> Result<()> {
    let _lock = ctx.store.lock_shared()?;
    let state = match ctx.store.load() {
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
                public,
                ctx,
            ));
        }
        if peer.preshared_key {
            problems.extend(key_file(
                &format!("peers/{name}.psk"),
                &store.peer_psk(name),
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

/// A key file's problems: missing, readable by others, or (when `public` is given) unreadable
/// or not the private key of `public`.
fn key_file(place: &str, path: &Path, public: Option<Key>, ctx: &Ctx) -> Vec<Problem> {
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
    match public.map(|p| (p, ctx.keys.read(path))) {
        Some((p, Ok(k))) if k.public_key() != p => problem(
            "does not belong to the public key in its YAML file; restore the matching key".into(),
        ),
        Some((_, Err(e))) => problem(format!("cannot be read: {e}")),
        _ => vec![],
    }
}
