//! `wgadm server rotate-key`: a new server key pair, for when the old private key may be
//! known to someone else. Every client config names the server's public key, so every client
//! needs its config again; until it has it, it cannot connect (the old key is gone from the
//! interface with `--apply`).

use serde_json::json;

use super::Ctx;
use crate::cli::{ServerCommand, ServerRotateArgs};
use crate::error::Result;
use crate::output;
use crate::secrets;
use crate::store::{to_yaml, Txn, PUBLIC_MODE, SECRET_MODE};

/// Runs a server subcommand.
pub fn run(ctx: &Ctx, cmd: ServerCommand) -> Result<()> {
    match cmd {
        ServerCommand::RotateKey(args) => rotate_key(ctx, args),
    }
}

fn rotate_key(ctx: &Ctx, args: ServerRotateArgs) -> Result<()> {
    let store = &ctx.store;
    let _lock = store.lock_exclusive()?;
    let mut state = super::render::load_checked(ctx)?;
    // The key files stay under the password they have: reading the old key proves it.
    ctx.keys.read(&store.server_key())?;
    let private = secrets::generate_private()?;
    let old = state.server.public_key;
    state.server.public_key = private.public_key();
    let mut txn = Txn::default();
    txn.write(
        store.server_key(),
        ctx.keys.encode(&private, &store.server_key())?.to_vec(),
        SECRET_MODE,
    )
    .write(store.server_yml(), to_yaml(&state.server)?, PUBLIC_MODE);
    txn.commit()?;
    let outcome = match args.apply {
        true => Some(super::apply::apply_locked(ctx, false)?),
        false => None,
    };
    let peers = state.peers.len();
    if ctx.json {
        return output::json(&json!({
            "old_public_key": old,
            "public_key": state.server.public_key,
            "applied": outcome.is_some(),
            "apply": outcome,
            "peers_to_reissue": peers,
        }));
    }
    output::print(&format!(
        "new server key pair: public key {} (was {old})\n{}\
         every client ({peers}) needs its config again and cannot connect until it has it:\n  \
         wgadm peer config --all --out-dir DIR    (one NAME.conf each, mode 0600)\n  \
         wgadm peer qr --all --format png --out-dir DIR\n",
        state.server.public_key,
        match outcome {
            Some(_) =>
                "the interface has the new key: clients with an old config are cut off now\n",
            None => "the interface keeps the old key until `wgadm apply`\n",
        }
    ))
}
