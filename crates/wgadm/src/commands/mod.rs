//! One module per command group; each takes parsed arguments and the context and does its I/O
//! through the store, the key files and the output helpers.

pub mod apply;
mod check;
mod import;
mod init;
mod netbox;
mod peer;
mod reissue;
mod render;
mod server;
mod status;
mod vault;

use std::time::{SystemTime, UNIX_EPOCH};

use clap::CommandFactory;
use wgadm_core::Date;

use crate::cli::{Cli, Command, FirewallCommand};
use crate::device::Backend;
use crate::error::Result;
use crate::firewall::Nft;
use crate::secrets::KeyFiles;
use crate::store::Store;

/// What every command gets: the state directory, the key files, the output mode and today.
pub struct Ctx {
    /// The state directory.
    pub store: Store,
    /// Key files, with the vault password if one is configured.
    pub keys: KeyFiles,
    /// `--json`.
    pub json: bool,
    /// Today (UTC), for expiry.
    pub today: Date,
    /// The live WireGuard device.
    pub device: Backend,
    /// The nftables firewall.
    pub firewall: Nft,
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let store = Store::new(cli.state);
    let ctx = Ctx {
        keys: KeyFiles::new(cli.vault_password_file, store.server_key()),
        store,
        json: cli.json,
        today: Date::from_unix_seconds(now),
        device: Backend::new(cli.config_dir),
        firewall: Nft::from_env(),
    };
    match cli.command {
        Command::Init(args) => init::run(&ctx, args),
        Command::Peer(cmd) => peer::run(&ctx, cmd),
        Command::Render => render::run(&ctx),
        Command::Apply(args) => apply::run(&ctx, args),
        Command::Status(args) => status::run(&ctx, args),
        Command::Daemon(args) => {
            let parts = crate::daemon::Ctx {
                store: &ctx.store,
                device: &ctx.device,
                firewall: &ctx.firewall,
            };
            Ok(crate::daemon::run(&parts, args)?)
        }
        Command::Firewall(FirewallCommand::Show) => render::firewall(&ctx),
        Command::Firewall(FirewallCommand::Apply) => apply::firewall(&ctx),
        Command::Check(args) => check::run(&ctx, args),
        Command::Netbox(cmd) => netbox::run(&ctx, cmd),
        Command::Vault(cmd) => vault::run(&ctx, cmd),
        Command::Import(args) => import::run(&ctx, args),
        Command::Server(cmd) => server::run(&ctx, cmd),
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "wgadm", &mut out);
            crate::output::write_stdout(&out)
        }
    }
}
