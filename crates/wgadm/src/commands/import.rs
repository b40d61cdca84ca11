//! `wgadm import`: an existing WireGuard server (wg-quick, PiVPN, wg-easy) into a new state
//! directory. The parsing and every rule are in `wgadm_core::import`; this reads the files,
//! writes the state through a [`Txn`] and reports.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::json;
use wgadm_core::import::{self, wgeasy, wgquick, Imported, Issue, Options, Source};
use wgadm_core::InterfaceName;
use zeroize::Zeroizing;

use super::Ctx;
use crate::cli::{ImportArgs, ImportFormat};
use crate::error::{Error, Result};
use crate::output;
use crate::store::{to_yaml, Txn, PUBLIC_MODE, SECRET_MODE};

/// The largest source file read: a config of thousands of peers is far below it.
const MAX_SOURCE: u64 = 64 << 20;

fn read_text(path: &Path) -> Result<Zeroizing<String>> {
    let file = fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if len > MAX_SOURCE {
        return Err(Error::Invalid(format!(
            "{}: {len} bytes is more than any WireGuard config or wg-easy file holds (at most {MAX_SOURCE}); is it the right file?",
            path.display()
        )));
    }
    let mut text = Zeroizing::new(String::new());
    file.take(MAX_SOURCE)
        .read_to_string(&mut text)
        .map_err(|e| Error::io(path, e))?;
    Ok(text)
}

fn read_if_present(path: &Path) -> Result<Option<Zeroizing<String>>> {
    match fs::symlink_metadata(path) {
        Ok(_) => read_text(path).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Every `*.conf` in a directory, by file name, sorted.
fn client_configs(dir: &Path) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".conf") && entry.file_type().is_ok_and(|t| t.is_file()) {
            out.push((name, read_text(&entry.path())?.to_string()));
        }
    }
    out.sort();
    Ok(out)
}

fn shown(path: &Path) -> String {
    path.display().to_string()
}

/// Reads the source in its format.
fn read_source(args: &ImportArgs) -> Result<(Source, &'static str)> {
    let path = &args.source;
    Ok(match args.format {
        ImportFormat::WgQuick => {
            let text = read_text(path)?;
            let mut src = wgquick::parse_server(&text, &shown(path));
            if let Some(dir) = &args.clients {
                wgquick::add_client_configs(&mut src, &client_configs(dir)?);
            }
            (src, "wg-quick")
        }
        ImportFormat::Pivpn => {
            let conf = path.join("wg0.conf");
            let text = read_text(&conf)?;
            let mut src = wgquick::parse_server(&text, &shown(&conf));
            let mut keys = BTreeMap::new();
            for peer in &src.peers {
                if let Some(name) = &peer.name {
                    // A name from the file must not lead out of keys/.
                    if name.contains('/') || name.starts_with('.') {
                        continue;
                    }
                    let key = path.join("keys").join(format!("{name}_priv"));
                    if let Some(text) = read_if_present(&key)? {
                        keys.insert(name.clone(), text.to_string());
                    }
                }
            }
            let clients = read_if_present(&path.join("configs/clients.txt"))?.unwrap_or_default();
            wgquick::add_pivpn(&mut src, &keys, &clients);
            let configs = path.join("configs");
            if configs.is_dir() {
                wgquick::add_client_configs(&mut src, &client_configs(&configs)?);
            }
            (src, "PiVPN")
        }
        ImportFormat::WgEasy => {
            let mut head = [0u8; 16];
            let n = fs::File::open(path)
                .and_then(|mut f| f.read(&mut head))
                .map_err(|e| Error::io(path, e))?;
            if head[..n].starts_with(b"SQLite format 3\0") {
                (read_wg_easy_sqlite(path)?, "wg-easy 15")
            } else {
                (
                    wgeasy::parse_v14(&read_text(path)?, &shown(path)),
                    "wg-easy 14",
                )
            }
        }
    })
}

fn read_wg_easy_sqlite(path: &Path) -> Result<Source> {
    let open_err = |e: rusqlite::Error| {
        Error::Invalid(format!(
            "{}: cannot read it as wg-easy's SQLite database: {e}",
            path.display()
        ))
    };
    let db = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(open_err)?;
    let rows = |sql: &str| -> Result<Vec<wgeasy::Row>> {
        let mut stmt = db.prepare(sql).map_err(open_err)?;
        let names: Vec<String> = stmt.column_names().iter().map(|s| s.to_string()).collect();
        let mut out = Vec::new();
        let mut q = stmt.query([]).map_err(open_err)?;
        while let Some(r) = q.next().map_err(open_err)? {
            let mut row = wgeasy::Row::new();
            for (i, n) in names.iter().enumerate() {
                use rusqlite::types::ValueRef;
                let cell = match r.get_ref(i).map_err(open_err)? {
                    ValueRef::Integer(v) => wgeasy::Cell::Int(v),
                    ValueRef::Text(t) => {
                        wgeasy::Cell::Text(String::from_utf8_lossy(t).into_owned())
                    }
                    ValueRef::Real(f) => wgeasy::Cell::Int(f as i64),
                    ValueRef::Null | ValueRef::Blob(_) => wgeasy::Cell::Null,
                };
                row.insert(n.clone(), cell);
            }
            out.push(row);
        }
        Ok(out)
    };
    let interfaces = rows("SELECT * FROM interfaces_table")?;
    let Some(interface) = interfaces
        .iter()
        .find(|r| r.get("name") == Some(&wgeasy::Cell::Text("wg0".into())))
        .or(interfaces.first())
    else {
        return Err(Error::Invalid(format!(
            "{}: interfaces_table is empty: wg-easy has not been set up here",
            path.display()
        )));
    };
    let clients = rows("SELECT * FROM clients_table ORDER BY id")?;
    Ok(wgeasy::parse_v15(interface, &clients, &shown(path)))
}

fn refusal(what: &str, issues: &[Issue]) -> Error {
    let mut text = format!(
        "cannot import {what}: {} problem{} (nothing was written):",
        issues.len(),
        if issues.len() == 1 { "" } else { "s" }
    );
    for i in issues {
        text.push_str(&format!("\n  {}: {}", i.place, i.message));
    }
    if issues
        .iter()
        .any(|i| i.kind == import::IssueKind::Unsupported)
    {
        text.push_str(
            "\nwhat wgadm cannot hold can be left out with --drop-unsupported (the conflicts must be fixed in the source)",
        );
    }
    Error::Invalid(text)
}

/// Runs `wgadm import`.
pub fn run(ctx: &Ctx, args: ImportArgs) -> Result<()> {
    if args.listen_port == Some(0) {
        return Err(Error::Invalid(
            "--listen-port 0 is no port; give one from 1 to 65535".into(),
        ));
    }
    if ctx.store.dir().exists() {
        let _lock = ctx.store.lock_exclusive()?;
        import(ctx, args)
    } else if args.dry_run {
        // Nothing is written, so nothing is created either.
        import(ctx, args)
    } else {
        // As `init`: created, locked, then checked, and removed again if the import fails.
        super::init::in_new_dir(&ctx.store, || import(ctx, args))
    }
}

fn import(ctx: &Ctx, args: ImportArgs) -> Result<()> {
    let store = &ctx.store;
    if store.exists() || store.server_key().exists() {
        return Err(Error::Invalid(format!(
            "{} already holds a wgadm state; import into a new directory (--state DIR)",
            store.dir().display()
        )));
    }
    let (source, what) = read_source(&args)?;
    let default_iface = match args.format {
        ImportFormat::WgQuick => args
            .source
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| InterfaceName::parse(s).ok()),
        _ => None,
    };
    let interface = match (args.interface.clone(), default_iface) {
        (Some(i), _) | (None, Some(i)) => i,
        (None, None) => InterfaceName::parse("wg0").map_err(wgadm_core::Error::from)?,
    };
    let mut source = source;
    if let Some(p) = args.listen_port {
        source.listen_port = Some(p);
    }
    let opts = Options {
        interface,
        endpoint: args.endpoint.clone(),
        access: args.access.clone(),
        deny: args.deny.clone(),
        dns: args.dns.clone(),
        nat: args.nat.into(),
        drop_unsupported: args.drop_unsupported,
    };
    let file = source.file.clone();
    let imported = import::build(source, &opts).map_err(|issues| refusal(&file, &issues))?;
    if !args.dry_run {
        write_state(ctx, &imported)?;
    }
    report(ctx, &imported, what, &file, args.dry_run)
}

fn write_state(ctx: &Ctx, imp: &Imported) -> Result<()> {
    let store = &ctx.store;
    let keys = &ctx.keys;
    let mut txn = Txn::default();
    txn.mkdir(store.dir().to_owned())
        .mkdir(store.peers_dir())
        .write(
            store.server_key(),
            keys.encode(&imp.server_key, &store.server_key())?.to_vec(),
            SECRET_MODE,
        )
        .write(store.server_yml(), to_yaml(&imp.state.server)?, PUBLIC_MODE);
    for (name, peer) in &imp.state.peers {
        if let Some(k) = imp.peer_keys.get(name) {
            let p = store.peer_key(name);
            txn.write(p.clone(), keys.encode(k, &p)?.to_vec(), SECRET_MODE);
        }
        if let Some(k) = imp.preshared_keys.get(name) {
            let p = store.peer_psk(name);
            txn.write(p.clone(), keys.encode(k, &p)?.to_vec(), SECRET_MODE);
        }
        txn.write(store.peer_yml(name), to_yaml(peer)?, PUBLIC_MODE);
    }
    Ok(txn.commit()?)
}

fn report(ctx: &Ctx, imp: &Imported, what: &str, file: &str, dry_run: bool) -> Result<()> {
    let s = &imp.state.server;
    let dir: PathBuf = ctx.store.dir().to_owned();
    if ctx.json {
        let peers: Vec<_> = imp
            .state
            .peers
            .iter()
            .map(|(n, p)| {
                json!({
                    "name": n, "address": p.address, "public_key": p.public_key,
                    "enabled": p.enabled, "expires": p.expires,
                    "preshared_key": p.preshared_key,
                    "private_key_here": imp.peer_keys.contains_key(n),
                })
            })
            .collect();
        return output::json(&json!({
            "dry_run": dry_run,
            "source": file,
            "format": what,
            "state": dir,
            "interface": s.interface,
            "address": s.address,
            "subnet": s.subnet,
            "listen_port": s.listen_port,
            "endpoint": s.endpoint,
            "public_key": s.public_key,
            "peers": peers,
            "dropped": imp.dropped.iter().map(|i| format!("{}: {}", i.place, i.message)).collect::<Vec<_>>(),
            "renamed": imp.renamed.iter().map(|(place, name, why)| json!({"place": place, "name": name, "why": why})).collect::<Vec<_>>(),
            "vault": ctx.keys.encrypts(),
        }));
    }
    let mut text = format!(
        "{} {} peer{} from {what} {file}{}\nserver: {} {}/{} listening on {}, endpoint {}, public key {}\n",
        if dry_run { "would import" } else { "imported" },
        imp.state.peers.len(),
        if imp.state.peers.len() == 1 { "" } else { "s" },
        if dry_run {
            String::new()
        } else {
            format!(" into {}", dir.display())
        },
        s.interface,
        s.address,
        s.subnet.prefix_len(),
        s.listen_port,
        s.endpoint,
        s.public_key
    );
    let rows: Vec<Vec<String>> = imp
        .state
        .peers
        .iter()
        .map(|(n, p)| {
            vec![
                n.to_string(),
                p.address.to_string(),
                if p.enabled { "enabled" } else { "disabled" }.into(),
                if imp.peer_keys.contains_key(n) {
                    "kept here"
                } else {
                    "kept by its owner"
                }
                .into(),
                if p.preshared_key { "yes" } else { "no" }.into(),
                p.public_key.to_string(),
            ]
        })
        .collect();
    text.push_str(&output::table(
        &[
            "NAME",
            "ADDRESS",
            "STATE",
            "PRIVATE KEY",
            "PSK",
            "PUBLIC KEY",
        ],
        &rows,
    ));
    for (place, name, why) in &imp.renamed {
        text.push_str(&format!("named {name}: {place}: {why}\n"));
    }
    for i in &imp.dropped {
        text.push_str(&format!("left out: {}: {}\n", i.place, i.message));
    }
    if !dry_run {
        text.push_str(&format!(
            "{}\nnext: compare `wgadm render` with the old config, then `wgadm apply`: on an \
             interface that is up it changes no peer, so connected clients stay connected\n",
            if ctx.keys.encrypts() {
                "key files are encrypted with Ansible Vault"
            } else {
                "key files are plaintext (mode 0600)"
            }
        ));
    }
    output::print(&text)
}
