//! `wgadm init`: a new state directory with the server's key pair.

use serde_json::json;
use wgadm_core::model::DEFAULT_KEEPALIVE;
use wgadm_core::{check, Endpoint, Server, State};

use super::Ctx;
use crate::cli::InitArgs;
use crate::error::{Error, Result};
use crate::output;
use crate::secrets;
use crate::store::{to_yaml, Txn, PUBLIC_MODE, SECRET_MODE};

/// Creates `server.yml` and `server.key`; an existing state is only replaced with `--force`,
/// and its peers are kept.
pub fn run(ctx: &Ctx, args: InitArgs) -> Result<()> {
    let store = &ctx.store;
    if store.dir().exists() {
        // Lock only a directory that exists: init must not leave one behind when it fails.
        let _lock = store.lock_exclusive()?;
        init(ctx, args)
    } else {
        init(ctx, args)
    }
}

fn init(ctx: &Ctx, args: InitArgs) -> Result<()> {
    let store = &ctx.store;
    let peers = if store.exists() {
        if !args.force {
            return Err(Error::Invalid(format!(
                "{} already exists; pass --force to replace the server config and key \
                 (every client config must then be reissued)",
                store.server_yml().display()
            )));
        }
        store.load()?.peers
    } else {
        Default::default()
    };
    let address = match args.address {
        Some(a) => a,
        None => args.subnet.hosts().next().ok_or_else(|| {
            Error::Invalid(format!("--subnet {} has no host addresses", args.subnet))
        })?,
    };
    if args.listen_port == 0 {
        return Err(Error::Invalid(
            "--listen-port 0 is no port; give one from 1 to 65535".into(),
        ));
    }
    let endpoint = Endpoint::with_default_port(&args.endpoint, args.listen_port).map_err(|e| {
        Error::Invalid(format!(
            "--endpoint {e}; give HOST or HOST:PORT, HOST being a DNS name, an IPv4 address \
             or an IPv6 address in brackets (the port defaults to --listen-port)"
        ))
    })?;
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
