//! `wgadm init`: a new state directory with the server's key pair.

use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use serde_json::json;
use wgadm_core::model::DEFAULT_KEEPALIVE;
use wgadm_core::{check, Endpoint, Server, State};

use super::Ctx;
use crate::cli::InitArgs;
use crate::error::{Error, Result};
use crate::output;
use crate::secrets;
use crate::store::{to_yaml, Store, Txn, PUBLIC_MODE, SECRET_MODE};

/// Creates `server.yml` and `server.key`; an existing state is only replaced with `--force`,
/// and its peers are kept.
///
/// Of any number of concurrent `init`s on a missing or empty directory exactly one succeeds:
/// the directory is created (or found), locked, and only then checked for a state.
pub fn run(ctx: &Ctx, args: InitArgs) -> Result<()> {
    let store = &ctx.store;
    if store.dir().exists() {
        let _lock = store.lock_exclusive()?;
        return init(ctx, args);
    }
    // Refuse bad arguments before creating anything: a failed init leaves no directory behind.
    validate_args(&args)?;
    in_new_dir(store, || init(ctx, args))
}

/// Runs `create` under the exclusive lock of a state directory that is missing: the directory
/// is created (or found, when another wgadm made it meanwhile), locked, and only then does
/// `create` look for a state. When `create` fails, the directories it created are removed again
/// while the lock is held, so a failed command leaves nothing behind. `init` and `import` use it.
pub(super) fn in_new_dir(store: &Store, create: impl FnOnce() -> Result<()>) -> Result<()> {
    let mut tries = 0;
    let (created, lock) = loop {
        let created = create_dir(store.dir())?;
        match store.lock_exclusive() {
            Ok(lock) => break (created, lock),
            // A failed init removed the directory while this one waited: make it again.
            Err(_) if !store.dir().exists() && tries < 5 => tries += 1,
            Err(e) => return Err(e.into()),
        }
    };
    let result = create();
    // Another init may have won the race after this one made the directory: its state (an
    // empty peers/ included) is not this one's to clean up.
    if result.is_err() && created && !store.exists() {
        // Still under the lock; only empty directories go.
        let _ = std::fs::remove_dir(store.peers_dir());
        let _ = std::fs::remove_dir(store.dir());
    }
    drop(lock);
    result
}

/// Creates the state directory (and its parents) 0700; whether this process created it.
fn create_dir(dir: &Path) -> Result<bool> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .map_err(|e| Error::io(parent, e))?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(Error::io(dir, e)),
    }
}

/// The checks of the arguments alone, before anything is created.
fn validate_args(args: &InitArgs) -> Result<()> {
    endpoint(args).map(drop)
}

/// `--endpoint` with `--listen-port` as its default port.
fn endpoint(args: &InitArgs) -> Result<Endpoint> {
    if args.listen_port == 0 {
        return Err(Error::Invalid(
            "--listen-port 0 is no port; give one from 1 to 65535".into(),
        ));
    }
    Endpoint::with_default_port(&args.endpoint, args.listen_port).map_err(|e| {
        Error::Invalid(format!(
            "--endpoint {e}; give HOST or HOST:PORT, HOST being a DNS name, an IPv4 address \
             or an IPv6 address in brackets (the port defaults to --listen-port)"
        ))
    })
}

fn init(ctx: &Ctx, args: InitArgs) -> Result<()> {
    let store = &ctx.store;
    let peers = if store.exists() {
        if !args.force {
            return Err(Error::Invalid(format!(
                "{} is already initialised: {} already exists; pass --force to replace the \
                 server config and key (every client config must then be reissued)",
                store.dir().display(),
                store.server_yml().display()
            )));
        }
        store.load()?.peers
    } else {
        if !args.force && std::fs::symlink_metadata(store.server_key()).is_ok() {
            return Err(Error::Invalid(format!(
                "{} is already initialised: {} exists (without server.yml); pass --force to \
                 replace it",
                store.dir().display(),
                store.server_key().display()
            )));
        }
        Default::default()
    };
    let address = match args.address {
        Some(a) => a,
        None => args.subnet.hosts().next().ok_or_else(|| {
            Error::Invalid(format!("--subnet {} has no host addresses", args.subnet))
        })?,
    };
    let endpoint = endpoint(&args)?;
    let private = secrets::generate_private()?;
    let state = State {
        server: Server {
            interface: args.interface,
            subnet: args.subnet,
            address,
            listen_port: args.listen_port,
            endpoint,
            public_key: private.public_key(),
            access: args.access,
            deny: args.deny,
            dns: args.dns,
            keepalive: DEFAULT_KEEPALIVE,
            nat: args.nat.into(),
            allowed_sources: args.allowed_sources,
            inbound: Default::default(),
        },
        peers,
    };
    let problems = check(&state);
    if !problems.is_empty() {
        return Err(Error::State(problems));
    }
    let mut txn = Txn::default();
    txn.mkdir(store.dir().to_owned())
        .mkdir(store.peers_dir())
        .write(
            store.server_key(),
            ctx.keys.encode(&private, &store.server_key())?.to_vec(),
            SECRET_MODE,
        )
        .write(store.server_yml(), to_yaml(&state.server)?, PUBLIC_MODE);
    txn.commit()?;

    let s = &state.server;
    if ctx.json {
        output::json(&json!({
            "state": store.dir(),
            "interface": s.interface,
            "public_key": s.public_key,
            "endpoint": s.endpoint,
            "address": s.address,
            "subnet": s.subnet,
            "vault": ctx.keys.encrypts(),
        }))
    } else {
        output::print(&format!(
            "initialized {}: {} {}/{} listening on {}, endpoint {}\nserver public key {}\n{}",
            store.dir().display(),
            s.interface,
            s.address,
            s.subnet.prefix_len(),
            s.listen_port,
            s.endpoint,
            s.public_key,
            if ctx.keys.encrypts() {
                "server.key is encrypted with Ansible Vault\n"
            } else {
                "server.key is plaintext (mode 0600); use --vault-password-file to encrypt it\n"
            }
        ))
    }
}
