//! `wgadm vault encrypt|decrypt|rekey`: the way to change a state's vault mode or password.
//! Every key file is opened first and all are rewritten in one [`Txn`], under the exclusive
//! lock: a key that cannot be opened refuses the whole command, and nothing is left half done.

use std::path::{Path, PathBuf};

use serde_json::json;
use wgadm_core::Problem;

use super::Ctx;
use crate::cli::VaultCommand;
use crate::error::{Error, Result};
use crate::output;
use crate::secrets::encode_as;
use crate::store::{Txn, SECRET_MODE};
use crate::vault::VaultPassword;

/// Runs a vault subcommand.
pub fn run(ctx: &Ctx, cmd: VaultCommand) -> Result<()> {
    let store = &ctx.store;
    let _lock = store.lock_exclusive()?;
    // A state that does not load is refused: its key files are not known for sure.
    store.load()?;
    let (action, dry_run) = match &cmd {
        VaultCommand::Encrypt(a) => ("encrypt", a.dry_run),
        VaultCommand::Decrypt(a) => ("decrypt", a.dry_run),
        VaultCommand::Rekey(a) => ("rekey", a.dry_run),
    };
    let files = key_files(ctx)?;
    // The new password is read (and checked) before anything else happens.
    let new_password = match &cmd {
        VaultCommand::Encrypt(_) if ctx.keys.password_file().is_none() => {
            return Err(Error::Invalid(
                "wgadm vault encrypt needs the password to encrypt with: pass \
                 --vault-password-file FILE or set ANSIBLE_VAULT_PASSWORD_FILE"
                    .into(),
            ))
        }
        VaultCommand::Rekey(_) if !ctx.keys.reference_is_vault() => {
            return Err(Error::Invalid(format!(
                "{} is plaintext: the state does not use Ansible Vault, so there is no \
                 password to change; encrypt it with `wgadm vault encrypt`",
                ctx.keys.reference().display()
            )))
        }
        VaultCommand::Rekey(a) => Some(read_password(&a.new_vault_password_file)?),
        _ => None,
    };
    let mut opened = Vec::new();
    let mut problems = Vec::new();
    for (place, path) in &files {
        match ctx.keys.read(path) {
            Ok(key) => opened.push((path, key)),
            Err(e) => problems.push(Problem {
                place: place.clone(),
                message: format!(
                    "cannot be opened ({e}); nothing was changed: restore the file or remove \
                     the peer, then run `wgadm vault {action}` again"
                ),
            }),
        }
    }
    if !problems.is_empty() {
        return Err(Error::State(problems));
    }
    let places: Vec<&str> = files.iter().map(|(place, _)| place.as_str()).collect();
    if !dry_run {
        let password: Option<&VaultPassword> = match &cmd {
            VaultCommand::Encrypt(_) => Some(ctx.keys.vault_password(ctx.keys.reference())?),
            VaultCommand::Decrypt(_) => None,
            VaultCommand::Rekey(_) => new_password.as_ref(),
        };
        let mut txn = Txn::default();
        for (path, key) in &opened {
            txn.write(
                path.to_path_buf(),
                encode_as(key, password)?.to_vec(),
                SECRET_MODE,
            );
        }
        txn.commit()?;
    }
    if ctx.json {
        return output::json(&json!({
            "action": action,
            "dry_run": dry_run,
            "changed": !dry_run,
            "files": places,
        }));
    }
    let verb = match (action, dry_run) {
        ("encrypt", true) => "would encrypt",
        ("encrypt", false) => "encrypted",
        ("decrypt", true) => "would decrypt",
        ("decrypt", false) => "decrypted",
        (_, true) => "would re-encrypt under the new password",
        (_, false) => "re-encrypted under the new password",
    };
    let mut text = format!(
        "{verb} {} key files of {}:\n",
        places.len(),
        ctx.store.dir().display()
    );
    for place in &places {
        text.push_str(&format!("  {place}\n"));
    }
    if !dry_run && action != "decrypt" {
        text.push_str(
            "pass the new password (--vault-password-file) to every command from now on\n",
        );
    }
    if !dry_run && action == "decrypt" {
        text.push_str(
            "the keys are plaintext (mode 0600): run without --vault-password-file from now on\n",
        );
    }
    output::print(&text)
}

fn read_password(file: &Path) -> Result<VaultPassword> {
    VaultPassword::from_file(file).map_err(|source| Error::Vault {
        path: file.to_owned(),
        source,
    })
}

/// Every key file of the state, as (place in messages, path): server.key and the `*.key` and
/// `*.psk` files of peers/ (stray ones too, so that no key stays in the old mode).
fn key_files(ctx: &Ctx) -> Result<Vec<(String, PathBuf)>> {
    let store = &ctx.store;
    let mut files = vec![("server.key".to_owned(), store.server_key())];
    let mut listing = store.peer_dir_listing()?;
    listing.sort();
    for file in listing {
        if !file.starts_with('.') && (file.ends_with(".key") || file.ends_with(".psk")) {
            files.push((format!("peers/{file}"), store.peers_dir().join(&file)));
        }
    }
    Ok(files)
}
