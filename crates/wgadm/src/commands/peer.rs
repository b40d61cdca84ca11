//! `wgadm peer ...`: the life of a peer, from `add` to `remove`.

use std::io::IsTerminal;

use serde::Serialize;
use wgadm_core::check::refusals;
use wgadm_core::{ipam, render, Date, Peer, PeerName, Secret, State};
use zeroize::Zeroizing;

use super::Ctx;
use crate::cli::{IpamArg, PeerAddArgs, PeerCommand, PeerQrArgs, PeerRotateArgs, PeerSetArgs};
use crate::error::{Error, Result};
use crate::netbox;
use crate::outfile::{self, Out, Staged};
use crate::output;
use crate::qr::{self, QrFormat};
use crate::secrets;
use crate::store::{to_yaml, Txn, PUBLIC_MODE, SECRET_MODE};

/// Runs a peer subcommand.
pub fn run(ctx: &Ctx, cmd: PeerCommand) -> Result<()> {
    match cmd {
        PeerCommand::Add(args) => add(ctx, args),
        PeerCommand::List => list(ctx),
        PeerCommand::Show(p) => show(ctx, &p.name),
        PeerCommand::Config(p) => match p.name {
            Some(name) if !p.all && p.out_dir.is_none() && !p.force => config(ctx, &name),
            _ => super::reissue::configs(ctx, p),
        },
        PeerCommand::Qr(args) if args.all => super::reissue::qrs(ctx, args),
        PeerCommand::Qr(args) => qr(ctx, args),
        PeerCommand::Set(args) => set(ctx, args),
        PeerCommand::Disable(p) => set_enabled(ctx, &p.name, false, p.apply),
        PeerCommand::Enable(p) => set_enabled(ctx, &p.name, true, p.apply),
        PeerCommand::Remove(p) => remove(ctx, &p.name, p.apply),
        PeerCommand::Rotate(args) => rotate(ctx, args),
    }
}

/// A peer as `list`, `show` and `--json` present it. Never a private or preshared key.
#[derive(Debug, Serialize)]
struct PeerView<'a> {
    name: &'a PeerName,
    address: std::net::Ipv4Addr,
    public_key: String,
    enabled: bool,
    /// Enabled and not expired: on the device after the next apply.
    active: bool,
    expires: Option<Date>,
    access: Vec<String>,
    access_is_default: bool,
    keepalive: u16,
    preshared_key: bool,
    /// Whether the private key is kept here (false when the peer brought its own public key).
    private_key_here: bool,
}

fn view<'a>(
    ctx: &Ctx,
    state: &State,
    name: &'a PeerName,
    peer: &Peer,
    key_here: bool,
) -> PeerView<'a> {
    PeerView {
        name,
        address: peer.address,
        public_key: peer.public_key.to_string(),
        enabled: peer.enabled,
        active: State::is_active(peer, ctx.today),
        expires: peer.expires,
        access: state
            .access_of(peer)
            .iter()
            .map(ToString::to_string)
            .collect(),
        access_is_default: peer.access.is_none(),
        keepalive: peer.keepalive,
        preshared_key: peer.preshared_key,
        private_key_here: key_here,
    }
}

fn find<'a>(ctx: &Ctx, state: &'a State, name: &PeerName) -> Result<&'a Peer> {
    state.peers.get(name).ok_or_else(|| {
        Error::Invalid(format!(
            "there is no peer {name} in {}; `wgadm peer list` shows the peers",
            ctx.store.dir().display()
        ))
    })
}

/// Refuses a change to peer `name` that would break a rule the state keeps now.
fn validate(before: &State, after: &State, name: &PeerName) -> Result<()> {
    let problems = refusals(before, after, name);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::State(problems))
    }
}

fn add(ctx: &Ctx, args: PeerAddArgs) -> Result<()> {
    if ctx.json && args.qr {
        return Err(Error::Invalid(
            "--qr draws in the terminal and --json prints data; use one, then `wgadm peer qr NAME`"
                .into(),
        ));
    }
    if ctx.json && args.config_out.as_deref() == Some(std::path::Path::new("-")) {
        return Err(Error::Invalid(
            "--config-out - prints the config and --json prints data; use one, or write the \
             config to a file"
                .into(),
        ));
    }
    let store = &ctx.store;
    let _lock = store.lock_exclusive()?;
    // The output path is checked before anything changes (here or in NetBox).
    let out = args
        .config_out
        .as_deref()
        .map(|path| out_check(ctx, path, args.force, "--config-out"))
        .transpose()?;
    let state = store.load()?;
    let name = args.name.clone();
    if state.peers.contains_key(&name) {
        return Err(Error::Invalid(format!(
            "peer {name} already exists ({}); choose another name, or `wgadm peer remove {name}` first",
            store.peer_yml(&name).display()
        )));
    }
    if args.qr && args.public_key.is_some() {
        return Err(no_private_key_for_qr(&name));
    }
    let private = match args.public_key {
        Some(_) => None,
        None => Some(secrets::generate_private()?),
    };
    let psk = args
        .preshared_key
        .then(secrets::generate_preshared)
        .transpose()?;
    let mut peer = Peer {
        // Set below, once the address is chosen (NetBox needs the rest of the peer for that).
        address: state.server.address,
        public_key: args.public_key.unwrap_or_else(|| {
            private
                .as_ref()
                .map(|k| k.public_key())
                .unwrap_or(state.server.public_key)
        }),
        access: args.access.clone(),
        keepalive: args.keepalive.unwrap_or(state.server.keepalive),
        enabled: true,
        expires: args.expires,
        preshared_key: psk.is_some(),
    };
    let mut from_netbox = None;
    peer.address = match (args.address, args.ipam) {
        (Some(a), _) => a,
        (None, IpamArg::Local) => ipam::lowest_free(&state).map_err(wgadm_core::Error::from)?,
        (None, IpamArg::Netbox) => {
            let (client, _) = netbox::Client::connect(&(&args.netbox).into())?;
            let taken = netbox::allocate(&client, &state, &name, &peer, ctx.today)?;
            let address = taken.address;
            from_netbox = Some((client, taken));
            address
        }
    };
    let stored = store_new_peer(
        ctx,
        &args,
        out,
        &state,
        &name,
        &peer,
        private.as_ref(),
        psk.as_ref(),
    );
    let (after, client, out) = match (stored, &from_netbox) {
        (Ok(done), _) => done,
        (Err(e), None) => return Err(e),
        // The peer is not in the state, so its address must not stay taken in NetBox.
        (Err(e), Some((nb, taken))) => {
            return Err(match taken.release(nb) {
                Ok(()) => e,
                Err(release) => Error::Invalid(format!(
                    "{e}\nand the address {} that NetBox handed out (IP address #{}) could not \
                     be given back: {release}; delete it in NetBox by hand",
                    taken.address, taken.id
                )),
            });
        }
    };
    let address = peer.address;
    // The state is committed: a file output takes its name now (stdout follows the report).
    let out = match out {
        Some(staged) if !staged.is_stdout() => {
            staged.place().map_err(|e| {
                Error::Invalid(format!(
                    "peer {name} was added, but its client config was not written: {e}; \
                     get it with `wgadm peer config {name}`"
                ))
            })?;
            None
        }
        other => other,
    };

    let v = view(ctx, &after, &name, &peer, private.is_some());
    let netbox_id = from_netbox.as_ref().map(|(_, taken)| taken.id);
    if ctx.json {
        let json_err = |e: serde_json::Error| Error::Invalid(format!("cannot write JSON: {e}"));
        let mut j = serde_json::to_value(&v).map_err(json_err)?;
        if let Some(id) = netbox_id {
            j["netbox_ip_id"] = id.into();
        }
        // With --apply the outcome goes into the same document: one JSON value on stdout.
        if args.apply {
            let outcome = super::apply::apply_locked(ctx, false)?;
            j["apply"] = serde_json::to_value(&outcome).map_err(json_err)?;
        }
        return output::json(&j);
    }
    let mut text = format!(
        "added peer {name}: {address}, public key {}\n",
        peer.public_key
    );
    if let Some(id) = netbox_id {
        text.push_str(&format!(
            "the address came from NetBox: IP address #{id}, the peer's record there\n"
        ));
    }
    match &args.config_out {
        Some(out) if out.as_os_str() != "-" => {
            text.push_str(&format!("client config written to {}\n", out.display()))
        }
        Some(_) => {}
        None => text.push_str(&format!("client config: wgadm peer config {name}\n")),
    }
    if private.is_none() {
        text.push_str("the peer brought its own key: its config needs its owner's private key\n");
    }
    output::print(&text)?;
    if let Some(out) = out {
        out.place()?;
    }
    if args.qr {
        output::write_stdout(&qr::render(&client, QrFormat::Ansi)?)?;
    }
    then_apply(ctx, args.apply)
}

/// Checks an output path (see [`outfile::check`]) against the state and config directories.
fn out_check(ctx: &Ctx, path: &std::path::Path, force: bool, flag: &str) -> Result<Out> {
    outfile::check(
        path,
        force,
        flag,
        &[ctx.store.dir(), ctx.device.config_dir()],
    )
}

/// Validates a new peer and writes its files; `--config-out` is staged beside its target
/// before the state changes, and returned to be put in place. On an error nothing is left.
#[allow(clippy::too_many_arguments)]
fn store_new_peer(
    ctx: &Ctx,
    args: &PeerAddArgs,
    out: Option<Out>,
    state: &State,
    name: &PeerName,
    peer: &Peer,
    private: Option<&Secret>,
    psk: Option<&Secret>,
) -> Result<(State, Zeroizing<String>, Option<Staged>)> {
    let store = &ctx.store;
    let mut after = state.clone();
    after.peers.insert(name.clone(), peer.clone());
    validate(state, &after, name)?;
    if args.expires.is_some_and(|e| e <= ctx.today) {
        eprintln!("wgadm: warning: peer {name} expires {} (today or earlier): it will not be put on the server", peer.expires.map(|e| e.to_string()).unwrap_or_default());
    }

    let client = render::client_config(&after, name, peer, private, psk);
    let mut txn = Txn::default();
    txn.mkdir(store.peers_dir());
    if let Some(k) = private {
        txn.write(
            store.peer_key(name),
            ctx.keys.encode(k, &store.peer_key(name))?.to_vec(),
            SECRET_MODE,
        );
    }
    if let Some(k) = psk {
        txn.write(
            store.peer_psk(name),
            ctx.keys.encode(k, &store.peer_psk(name))?.to_vec(),
            SECRET_MODE,
        );
    }
    txn.write(store.peer_yml(name), to_yaml(peer)?, PUBLIC_MODE);
    // The client config is written (beside its target, under a temporary name) first, so that
    // a failure to write it leaves the state as it was; a failed commit removes only that.
    let out = out.map(|o| o.stage(client.as_bytes())).transpose()?;
    txn.commit()?;
    Ok((after, client, out))
}

fn list(ctx: &Ctx) -> Result<()> {
    let _lock = ctx.store.lock_shared()?;
    let state = ctx.store.load()?;
    let listing: std::collections::HashSet<String> =
        ctx.store.peer_dir_listing()?.into_iter().collect();
    let views: Vec<PeerView> = state
        .peers
        .iter()
        .map(|(n, p)| view(ctx, &state, n, p, listing.contains(&format!("{n}.key"))))
        .collect();
    if ctx.json {
        return output::json(&views);
    }
    let rows: Vec<Vec<String>> = views
        .iter()
        .map(|v| {
            vec![
                v.name.to_string(),
                v.address.to_string(),
                match (v.enabled, v.active) {
                    (false, _) => "disabled".into(),
                    (true, false) => "expired".into(),
                    (true, true) => "enabled".into(),
                },
                v.expires.map_or_else(|| "-".into(), |e| e.to_string()),
                v.access.join(","),
                v.public_key.clone(),
            ]
        })
        .collect();
    output::print(&output::table(
        &[
            "NAME",
            "ADDRESS",
            "STATE",
            "EXPIRES",
            "ACCESS",
            "PUBLIC KEY",
        ],
        &rows,
    ))
}

fn show(ctx: &Ctx, name: &PeerName) -> Result<()> {
    let _lock = ctx.store.lock_shared()?;
    let state = ctx.store.load()?;
    let peer = find(ctx, &state, name)?;
    let v = view(ctx, &state, name, peer, ctx.store.peer_key(name).exists());
    if ctx.json {
        return output::json(&v);
    }
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    output::print(&format!(
        "name:            {}\naddress:         {}\npublic key:      {}\nenabled:         {}\n\
         active:          {}\nexpires:         {}\naccess:          {}{}\nkeepalive:       {}\n\
         preshared key:   {}\nprivate key:     {}\n",
        v.name,
        v.address,
        v.public_key,
        yes_no(v.enabled),
        yes_no(v.active),
        v.expires.map_or_else(|| "never".into(), |e| e.to_string()),
        v.access.join(", "),
        if v.access_is_default {
            " (server default)"
        } else {
            ""
        },
        if v.keepalive == 0 {
            "off".into()
        } else {
            format!("{} s", v.keepalive)
        },
        yes_no(v.preshared_key),
        if v.private_key_here {
            "kept here"
        } else {
            "kept by its owner"
        },
    ))
}

/// A peer's client config and whether it holds a real private key.
fn client_config(ctx: &Ctx, state: &State, name: &PeerName) -> Result<(Zeroizing<String>, bool)> {
    let peer = find(ctx, state, name)?;
    let private = ctx.keys.read_if_present(&ctx.store.peer_key(name))?;
    let psk = if peer.preshared_key {
        Some(ctx.keys.read(&ctx.store.peer_psk(name))?)
    } else {
        None
    };
    let text = render::client_config(state, name, peer, private.as_ref(), psk.as_ref());
    Ok((text, private.is_some()))
}

fn config(ctx: &Ctx, name: &PeerName) -> Result<()> {
    let _lock = ctx.store.lock_shared()?;
    let state = ctx.store.load()?;
    let (text, has_key) = client_config(ctx, &state, name)?;
    if !has_key {
        eprintln!(
            "wgadm: peer {name} brought its own public key: its owner puts their private key on the PrivateKey line"
        );
    }
    output::print(&text)
}

fn no_private_key_for_qr(name: &PeerName) -> Error {
    Error::Invalid(format!(
        "peer {name} brought its own public key, so its private key is not here and a QR code \
         could not hold a working config; give its owner `wgadm peer config {name}` to complete instead"
    ))
}

fn qr(ctx: &Ctx, args: PeerQrArgs) -> Result<()> {
    let Some(name) = &args.name else {
        return Err(Error::Invalid(
            "name a peer, or pass --all --out-dir DIR".into(),
        ));
    };
    let _lock = ctx.store.lock_shared()?;
    let out = match &args.output {
        Some(path) => out_check(ctx, path, args.force, "--output")?,
        None => Out::Stdout,
    };
    let state = ctx.store.load()?;
    let (text, has_key) = client_config(ctx, &state, name)?;
    if !has_key {
        return Err(no_private_key_for_qr(name));
    }
    if matches!(out, Out::Stdout)
        && args.format != QrFormat::Ansi
        && std::io::stdout().is_terminal()
    {
        return Err(Error::Invalid(format!(
            "a {:?} image would garble the terminal; write it to a file with -o FILE",
            args.format
        )));
    }
    let image = qr::render(&text, args.format)?;
    out.stage(&image)?.place()
}

/// Loads the state, changes one peer's file and commits it if no rule breaks.
fn change_peer(
    ctx: &Ctx,
    name: &PeerName,
    change: impl FnOnce(&mut Peer),
) -> Result<(State, Peer)> {
    let state = ctx.store.load()?;
    let mut peer = find(ctx, &state, name)?.clone();
    change(&mut peer);
    let mut after = state.clone();
    after.peers.insert(name.clone(), peer.clone());
    validate(&state, &after, name)?;
    Ok((after, peer))
}

fn set_enabled(ctx: &Ctx, name: &PeerName, enabled: bool, apply: bool) -> Result<()> {
    let _lock = ctx.store.lock_exclusive()?;
    let (_, peer) = change_peer(ctx, name, |p| p.enabled = enabled)?;
    let mut txn = Txn::default();
    txn.write(ctx.store.peer_yml(name), to_yaml(&peer)?, PUBLIC_MODE);
    txn.commit()?;
    report(ctx, name, if enabled { "enabled" } else { "disabled" })?;
    then_apply(ctx, apply)
}

fn set(ctx: &Ctx, args: PeerSetArgs) -> Result<()> {
    let _lock = ctx.store.lock_exclusive()?;
    let (_, peer) = change_peer(ctx, &args.name, |p| {
        if let Some(a) = args.address {
            p.address = a;
        }
        if args.default_access {
            p.access = None;
        }
        if let Some(access) = args.access {
            p.access = Some(access);
        }
        if let Some(k) = args.keepalive {
            p.keepalive = k;
        }
        if args.no_expiry {
            p.expires = None;
        }
        if let Some(e) = args.expires {
            p.expires = Some(e);
        }
    })?;
    let mut txn = Txn::default();
    txn.write(ctx.store.peer_yml(&args.name), to_yaml(&peer)?, PUBLIC_MODE);
    txn.commit()?;
    report(ctx, &args.name, "changed")?;
    then_apply(ctx, args.apply)
}

fn remove(ctx: &Ctx, name: &PeerName, apply: bool) -> Result<()> {
    let store = &ctx.store;
    let _lock = store.lock_exclusive()?;
    let state = store.load()?;
    find(ctx, &state, name)?;
    let mut txn = Txn::default();
    txn.remove(store.peer_yml(name))
        .remove(store.peer_key(name))
        .remove(store.peer_psk(name));
    txn.commit()?;
    report(ctx, name, "removed")?;
    then_apply(ctx, apply)
}

fn rotate(ctx: &Ctx, args: PeerRotateArgs) -> Result<()> {
    let store = &ctx.store;
    let name = &args.name;
    let _lock = store.lock_exclusive()?;
    let private = match args.public_key {
        Some(_) => None,
        None => Some(secrets::generate_private()?),
    };
    let had_psk = ctx
        .store
        .load()?
        .peers
        .get(name)
        .is_some_and(|p| p.preshared_key);
    let psk = had_psk.then(secrets::generate_preshared).transpose()?;
    let public = args.public_key.or(private.as_ref().map(|k| k.public_key()));
    let (_, peer) = change_peer(ctx, name, |p| {
        if let Some(k) = public {
            p.public_key = k;
        }
    })?;
    let mut txn = Txn::default();
    match &private {
        Some(k) => txn.write(
            store.peer_key(name),
            ctx.keys.encode(k, &store.peer_key(name))?.to_vec(),
            SECRET_MODE,
        ),
        // The owner holds the new private key: an old one here would be stale.
        None => txn.remove(store.peer_key(name)),
    };
    if let Some(k) = &psk {
        txn.write(
            store.peer_psk(name),
            ctx.keys.encode(k, &store.peer_psk(name))?.to_vec(),
            SECRET_MODE,
        );
    }
    txn.write(store.peer_yml(name), to_yaml(&peer)?, PUBLIC_MODE);
    txn.commit()?;
    report(ctx, name, "rotated")?;
    then_apply(ctx, args.apply)
}

/// `--apply`: the state change is committed; now the device follows (the lock is still held).
fn then_apply(ctx: &Ctx, apply: bool) -> Result<()> {
    if !apply {
        return Ok(());
    }
    let outcome = super::apply::apply_locked(ctx, false)?;
    if ctx.json {
        Ok(())
    } else {
        super::apply::report(ctx, &outcome)
    }
}

/// Prints the outcome of a one-peer change.
fn report(ctx: &Ctx, name: &PeerName, what: &str) -> Result<()> {
    if ctx.json {
        output::json(&serde_json::json!({ "name": name, "result": what }))
    } else {
        let hint = match what {
            "changed" => format!("; its client config changes too: hand it out again (`wgadm peer config {name}`)"),
            "rotated" => format!("; hand out the new config (`wgadm peer config {name}`); the old key works until the next apply"),
            _ => String::new(),
        };
        output::print(&format!("{what} peer {name}{hint}\n"))
    }
}
