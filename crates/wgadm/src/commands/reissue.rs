//! Every client config at once: `peer config --all --out-dir DIR` and `peer qr --all
//! --out-dir DIR`, after a server key rotation or an import. Files are 0600, created
//! exclusively; one that exists is replaced only with `--force`, and nothing is written
//! unless every file can be.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use wgadm_core::{render, PeerName, State};
use zeroize::Zeroizing;

use super::Ctx;
use crate::cli::{PeerConfigArgs, PeerQrArgs};
use crate::error::{Error, Result};
use crate::output;
use crate::qr::{self, QrFormat};
use crate::store::{write_file_atomic, SECRET_MODE};

/// Whether `inner` is `outer` or below it (both made absolute as far as they exist).
fn is_within(inner: &Path, outer: &Path) -> bool {
    let abs = |p: &Path| {
        fs::canonicalize(p).unwrap_or_else(|_| {
            std::env::current_dir()
                .map(|d| d.join(p))
                .unwrap_or_else(|_| p.to_owned())
        })
    };
    abs(inner).starts_with(abs(outer))
}

/// Checks the directory and every file before anything is written.
fn prepare(ctx: &Ctx, dir: &Path, files: &[PathBuf], force: bool) -> Result<()> {
    for (what, other) in [
        ("the state directory", ctx.store.dir()),
        ("the wg-quick config directory", ctx.device.config_dir()),
    ] {
        if is_within(dir, other) {
            return Err(Error::Invalid(format!(
                "--out-dir {} is inside {what} {}; client configs hold private keys and belong elsewhere",
                dir.display(),
                other.display()
            )));
        }
    }
    let mut exist = Vec::new();
    for f in files {
        match fs::symlink_metadata(f) {
            Ok(m) if !m.file_type().is_file() => {
                return Err(Error::Invalid(format!(
                    "{} exists and is not a regular file; remove it or choose another --out-dir",
                    f.display()
                )))
            }
            Ok(_) => exist.push(f.display().to_string()),
            Err(_) => {}
        }
    }
    if !exist.is_empty() && !force {
        return Err(Error::Invalid(format!(
            "{} already exist{} (nothing was written); pass --force to replace, or choose another --out-dir: {}",
            exist.len(),
            if exist.len() == 1 { "s" } else { "" },
            exist.join(", ")
        )));
    }
    fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(dir)
        .map_err(|e| Error::io(dir, e))
}

fn write_new_or_replace(path: &Path, bytes: &[u8]) -> Result<()> {
    if path.exists() {
        return Ok(write_file_atomic(path, bytes, SECRET_MODE)?);
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(SECRET_MODE)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io(path, e))
}

/// Every peer's client config (`None` for a peer that brought its own key and `skip_byo`).
fn all_configs(
    ctx: &Ctx,
    state: &State,
    skip_byo: bool,
) -> Result<Vec<(PeerName, Option<Zeroizing<String>>)>> {
    let mut out = Vec::new();
    for (name, peer) in &state.peers {
        let private = ctx.keys.read_if_present(&ctx.store.peer_key(name))?;
        if private.is_none() && skip_byo {
            out.push((name.clone(), None));
            continue;
        }
        let psk = match peer.preshared_key {
            true => Some(ctx.keys.read(&ctx.store.peer_psk(name))?),
            false => None,
        };
        let text = render::client_config(state, name, peer, private.as_ref(), psk.as_ref());
        out.push((name.clone(), Some(text)));
    }
    Ok(out)
}

fn summary(ctx: &Ctx, dir: &Path, written: &[String], skipped: &[String]) -> Result<()> {
    if ctx.json {
        return output::json(&serde_json::json!({
            "out_dir": dir, "written": written, "skipped": skipped,
        }));
    }
    let mut text = format!(
        "wrote {} files (mode 0600) to {}\n",
        written.len(),
        dir.display()
    );
    for s in skipped {
        text.push_str(&format!(
            "skipped {s}: it brought its own key, so no working config is here; `wgadm peer config {s}` gives its owner the rest\n"
        ));
    }
    output::print(&text)
}

/// `wgadm peer config --all --out-dir DIR`.
pub fn configs(ctx: &Ctx, args: PeerConfigArgs) -> Result<()> {
    if !args.all {
        return Err(Error::Invalid(
            "--out-dir and --force go with --all (every peer's config); for one peer, \
             redirect `wgadm peer config NAME` or use `peer add --config-out`"
                .into(),
        ));
    }
    let Some(dir) = args.out_dir else {
        return Err(Error::Invalid("--all needs --out-dir DIR".into()));
    };
    let _lock = ctx.store.lock_shared()?;
    let state = ctx.store.load()?;
    let configs = all_configs(ctx, &state, false)?;
    let files: Vec<PathBuf> = configs
        .iter()
        .map(|(n, _)| dir.join(format!("{n}.conf")))
        .collect();
    prepare(ctx, &dir, &files, args.force)?;
    let mut written = Vec::new();
    for ((name, text), path) in configs.iter().zip(&files) {
        if let Some(text) = text {
            write_new_or_replace(path, text.as_bytes())?;
            written.push(name.to_string());
        }
    }
    summary(ctx, &dir, &written, &[])
}

/// `wgadm peer qr --all --out-dir DIR`.
pub fn qrs(ctx: &Ctx, args: PeerQrArgs) -> Result<()> {
    let Some(dir) = args.out_dir else {
        return Err(Error::Invalid("--all needs --out-dir DIR".into()));
    };
    let ext = match args.format {
        QrFormat::Ansi => "txt",
        QrFormat::Png => "png",
        QrFormat::Svg => "svg",
    };
    let _lock = ctx.store.lock_shared()?;
    let state = ctx.store.load()?;
    let configs = all_configs(ctx, &state, true)?;
    let files: Vec<PathBuf> = configs
        .iter()
        .filter(|(_, t)| t.is_some())
        .map(|(n, _)| dir.join(format!("{n}.{ext}")))
        .collect();
    prepare(ctx, &dir, &files, args.force)?;
    let mut written = Vec::new();
    let mut skipped = Vec::new();
    let mut files = files.iter();
    for (name, text) in &configs {
        let Some(text) = text else {
            skipped.push(name.to_string());
            continue;
        };
        if let Some(path) = files.next() {
            write_new_or_replace(path, &qr::render(text, args.format)?)?;
            written.push(name.to_string());
        }
    }
    summary(ctx, &dir, &written, &skipped)
}
