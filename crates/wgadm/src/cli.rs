//! The command line: every flag is defined once here, with its help text, which also feeds the
//! shell completions.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use ipnet::Ipv4Net;
use wgadm_core::{Date, InterfaceName, Key, PeerName};

use crate::qr::QrFormat;

/// Manage a WireGuard VPN server: peers, keys (in Ansible Vault if you like), client configs
/// and QR codes, and the live interface.
#[derive(Debug, Parser)]
#[command(name = "wgadm", version, about, max_term_width = 100)]
pub struct Cli {
    /// The state directory (server.yml, server.key, peers/).
    #[arg(long, global = true, env = "WGADM_STATE", default_value = "/etc/wgadm")]
    pub state: PathBuf,

    /// Encrypt key files with Ansible Vault using the password in this file (an executable
    /// file is run and its output used, as Ansible does). Without it, key files are plaintext, mode 0600.
    /// A state keeps the mode and password its server.key has (`wgadm vault` changes them).
    #[arg(
        long,
        global = true,
        env = "ANSIBLE_VAULT_PASSWORD_FILE",
        value_name = "FILE"
    )]
    pub vault_password_file: Option<PathBuf>,

    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,

    /// Where the wg-quick configs live (`<dir>/<interface>.conf`).
    #[arg(
        long,
        global = true,
        env = "WGADM_CONFIG_DIR",
        default_value = "/etc/wireguard",
        value_name = "DIR"
    )]
    pub config_dir: PathBuf,

    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the state directory and the server's key pair.
    Init(InitArgs),
    /// Add, list, show, disable, enable, remove and rotate peers.
    #[command(subcommand)]
    Peer(PeerCommand),
    /// Print the server's wg-quick config (what becomes /etc/wireguard/<interface>.conf).
    Render,
    /// Bring the live interface to the state: only what differs changes, nobody else is cut off.
    Apply(ApplyArgs),
    /// Show the live interface: who is connected, from where, and how much they moved.
    Status(StatusArgs),
    /// Watch the live interface: log who connects, roams, leaves and is refused, write a status
    /// snapshot for monitoring, serve Prometheus metrics (run by systemd as wgadm.service).
    Daemon(crate::daemon::DaemonArgs),
    /// The nftables ruleset wgadm enforces (table inet wgadm).
    #[command(subcommand)]
    Firewall(FirewallCommand),
    /// Validate the state and report every problem at once.
    Check(CheckArgs),
    /// Keep NetBox in step with the state: the VPN prefix, the server VM, its tunnel, every peer.
    #[command(subcommand)]
    Netbox(NetboxCommand),
    /// Encrypt, decrypt or re-key every key file of the state in one atomic step.
    #[command(subcommand)]
    Vault(VaultCommand),
    /// Import an existing WireGuard server (a wg-quick config, PiVPN, wg-easy) into a new
    /// state directory; `apply` then takes over its interface without disturbing its clients.
    Import(ImportArgs),
    /// The server's own key.
    #[command(subcommand)]
    Server(ServerCommand),
    /// Print shell completions.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// `wgadm init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Where clients connect to: HOST or HOST:PORT (the port defaults to --listen-port).
    #[arg(long, value_name = "HOST[:PORT]")]
    pub endpoint: String,
    /// The VPN subnet peers get addresses from.
    #[arg(long, default_value = "192.168.100.0/24")]
    pub subnet: Ipv4Net,
    /// The server's VPN address [default: the first host of the subnet].
    #[arg(long)]
    pub address: Option<Ipv4Addr>,
    /// The UDP port WireGuard listens on.
    #[arg(long, default_value_t = 51820)]
    pub listen_port: u16,
    /// The WireGuard interface.
    #[arg(long, default_value = "wg0")]
    pub interface: InterfaceName,
    /// What peers may reach unless told otherwise.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "192.168.0.0/16",
        value_name = "CIDR,..."
    )]
    pub access: Vec<Ipv4Net>,
    /// Never reachable from the VPN, whatever an access list says.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "172.16.10.0/24",
        value_name = "CIDR,..."
    )]
    pub deny: Vec<Ipv4Net>,
    /// DNS servers for client configs.
    #[arg(long, value_delimiter = ',', value_name = "IP,...")]
    pub dns: Vec<IpAddr>,
    /// Source NAT toward the access networks: masquerade, or none where the router has a
    /// route back to the VPN subnet.
    #[arg(long, value_enum, default_value = "masquerade")]
    pub nat: NatArg,
    /// Only these sources may reach the listen port [default: anyone].
    #[arg(long, value_delimiter = ',', value_name = "CIDR,...")]
    pub allowed_sources: Vec<Ipv4Net>,
    /// Replace an existing server.yml and server.key (every client config must then be reissued).
    #[arg(long)]
    pub force: bool,
}

/// `wgadm import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The source's format.
    #[arg(value_enum)]
    pub format: ImportFormat,
    /// wg-quick: the server config (wg0.conf); pivpn: the directory holding wg0.conf, keys/
    /// and configs/ (/etc/wireguard); wg-easy: wg0.json (version 14) or wg-easy.db (15).
    pub source: PathBuf,
    /// wg-quick: a directory of client configs (*.conf) whose private keys are kept for the
    /// peers they belong to (matched by public key); peers without one bring their own key.
    #[arg(long, value_name = "DIR")]
    pub clients: Option<PathBuf>,
    /// Where clients connect to [default: the Endpoint of the client configs found].
    #[arg(long, value_name = "HOST[:PORT]")]
    pub endpoint: Option<String>,
    /// The interface [default: the config's file name, else wg0].
    #[arg(long)]
    pub interface: Option<InterfaceName>,
    /// The listen port, where the source does not say (wg-easy 14 keeps it outside wg0.json:
    /// 51820 unless WG_PORT was set).
    #[arg(long)]
    pub listen_port: Option<u16>,
    /// What peers may reach (clients' own configs may route more into the tunnel; the firewall
    /// forwards only this).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "192.168.0.0/16",
        value_name = "CIDR,..."
    )]
    pub access: Vec<Ipv4Net>,
    /// Never reachable from the VPN, whatever an access list says.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "172.16.10.0/24",
        value_name = "CIDR,..."
    )]
    pub deny: Vec<Ipv4Net>,
    /// DNS servers for client configs [default: those of the client configs found].
    #[arg(long, value_delimiter = ',', value_name = "IP,...")]
    pub dns: Vec<IpAddr>,
    /// Source NAT toward the access networks.
    #[arg(long, value_enum, default_value = "masquerade")]
    pub nat: NatArg,
    /// Leave out what wgadm cannot hold (IPv6, routed subnets, PostUp scripts, a second
    /// address) instead of refusing; each is listed.
    #[arg(long)]
    pub drop_unsupported: bool,
    /// Print what would be imported and write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `wgadm import FORMAT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ImportFormat {
    /// A wg-quick server config, written by hand or by another tool.
    WgQuick,
    /// A PiVPN installation (/etc/wireguard).
    Pivpn,
    /// wg-easy: wg0.json (14) or the SQLite database (15).
    WgEasy,
}

/// `wgadm server ...`.
#[derive(Debug, Subcommand)]
pub enum ServerCommand {
    /// Give the server a new key pair (after a compromise). Every client needs its config
    /// again: until a client has it, it cannot connect. Re-issue them all at once with
    /// `wgadm peer config --all --out-dir DIR` (and `peer qr --all --out-dir DIR`).
    RotateKey(ServerRotateArgs),
}

/// `wgadm server rotate-key`.
#[derive(Debug, Args)]
pub struct ServerRotateArgs {
    /// Put the new key on the live interface right away (as `wgadm apply`).
    #[arg(long)]
    pub apply: bool,
}

/// `wgadm peer config`.
#[derive(Debug, Args)]
pub struct PeerConfigArgs {
    /// The peer's name.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub name: Option<PeerName>,
    /// Every peer's config, one file each (NAME.conf, mode 0600) in --out-dir.
    #[arg(long, requires = "out_dir")]
    pub all: bool,
    /// With --all: the directory to write to (created 0700; never the state or config dir).
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
    /// With --all: replace files that exist.
    #[arg(long)]
    pub force: bool,
}

/// `wgadm firewall ...`.
#[derive(Debug, Subcommand)]
pub enum FirewallCommand {
    /// Print the ruleset `apply` loads, as an `nft -f` script.
    Show,
    /// Load the ruleset and switch on IPv4 forwarding, without touching the interface (for
    /// boot, before the interface comes up: wgadm-firewall.service).
    Apply,
}

/// `wgadm apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Print the exact plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `wgadm status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Read the snapshot `wgadm daemon` writes instead of the device (no root needed).
    #[arg(
        long,
        value_name = "PATH",
        num_args = 0..=1,
        default_missing_value = crate::daemon::snapshot::DEFAULT_PATH
    )]
    pub from_snapshot: Option<PathBuf>,
}

/// `--nat`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum NatArg {
    /// Rewrite VPN sources to the server's address.
    Masquerade,
    /// Leave VPN addresses as they are.
    None,
}

impl From<NatArg> for wgadm_core::model::Nat {
    fn from(n: NatArg) -> Self {
        match n {
            NatArg::Masquerade => Self::Masquerade,
            NatArg::None => Self::None,
        }
    }
}

/// `wgadm check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Also open every key file and check it matches its public key (slow with a vault).
    #[arg(long)]
    pub keys: bool,
}

/// `wgadm peer ...`.
#[derive(Debug, Subcommand)]
pub enum PeerCommand {
    /// Add a peer: a key pair is generated unless the client brings its own public key.
    Add(PeerAddArgs),
    /// List the peers.
    List,
    /// Show one peer.
    Show(PeerArg),
    /// Print a peer's client config (wg-quick format), or write every peer's with --all.
    Config(PeerConfigArgs),
    /// Print a peer's client config as a QR code for a phone.
    Qr(PeerQrArgs),
    /// Change a peer's address, access list, keepalive or expiry (its keys stay).
    Set(PeerSetArgs),
    /// Keep a peer in the state but take it off the server.
    Disable(PeerChangeArgs),
    /// Put a disabled peer back.
    Enable(PeerChangeArgs),
    /// Delete a peer and its keys; its address becomes free.
    Remove(PeerChangeArgs),
    /// Give a peer a new key pair (and preshared key, if it has one); the address stays.
    Rotate(PeerRotateArgs),
}

/// A peer name argument.
#[derive(Debug, Args)]
pub struct PeerArg {
    /// The peer's name.
    pub name: PeerName,
}

/// A peer name and whether to apply the change to the live interface right away.
#[derive(Debug, Args)]
pub struct PeerChangeArgs {
    /// The peer's name.
    pub name: PeerName,
    /// Apply the change to the live interface right away (as `wgadm apply`).
    #[arg(long)]
    pub apply: bool,
}

/// `wgadm peer add`.
#[derive(Debug, Args)]
pub struct PeerAddArgs {
    /// The peer's name: letters, digits, '-', '_', '.'; 1-64 characters.
    pub name: PeerName,
    /// The client's own public key; then no private key is kept here.
    #[arg(long, value_name = "KEY", value_parser = parse_key)]
    pub public_key: Option<Key>,
    /// The peer's VPN address [default: the lowest free one].
    #[arg(long)]
    pub address: Option<Ipv4Addr>,
    /// What the peer may reach [default: the server's access list].
    #[arg(long, value_delimiter = ',', value_name = "CIDR,...")]
    pub access: Option<Vec<Ipv4Net>>,
    /// PersistentKeepalive for the client, seconds (0: off) [default: server.yml keepalive].
    #[arg(long, value_name = "SECS")]
    pub keepalive: Option<u16>,
    /// Generate a preshared key for this peer.
    #[arg(long)]
    pub preshared_key: bool,
    /// Leave the peer off the server from this date on (UTC, YYYY-MM-DD).
    #[arg(long, value_name = "DATE")]
    pub expires: Option<Date>,
    /// Print the client config as a QR code right away.
    #[arg(long)]
    pub qr: bool,
    /// Write the client config to this file (mode 0600; `-`: stdout). It must be outside the
    /// state and WireGuard config directories, and a regular file if it exists.
    #[arg(long, value_name = "FILE")]
    pub config_out: Option<PathBuf>,
    /// Replace the existing file of --config-out.
    #[arg(long, requires = "config_out")]
    pub force: bool,
    /// Where the address comes from: the lowest free one in the state, or the next free one
    /// of the VPN prefix in NetBox (taken atomically there, so two administrators never get
    /// the same address; the new IP address is then the peer's record in NetBox).
    #[arg(long, value_enum, default_value = "local", conflicts_with = "address")]
    pub ipam: IpamArg,
    /// NetBox, for --ipam netbox.
    #[command(flatten)]
    pub netbox: NetboxArgs,
    /// Apply the change to the live interface right away (as `wgadm apply`).
    #[arg(long)]
    pub apply: bool,
}

/// `wgadm peer set`.
#[derive(Debug, Args)]
pub struct PeerSetArgs {
    /// The peer's name.
    pub name: PeerName,
    /// A new VPN address.
    #[arg(long)]
    pub address: Option<Ipv4Addr>,
    /// A new access list.
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "CIDR,...",
        conflicts_with = "default_access"
    )]
    pub access: Option<Vec<Ipv4Net>>,
    /// Follow the server's default access list again.
    #[arg(long)]
    pub default_access: bool,
    /// A new PersistentKeepalive for the client, seconds (0: off).
    #[arg(long, value_name = "SECS")]
    pub keepalive: Option<u16>,
    /// A new expiry date (UTC, YYYY-MM-DD).
    #[arg(long, value_name = "DATE", conflicts_with = "no_expiry")]
    pub expires: Option<Date>,
    /// Never expire.
    #[arg(long)]
    pub no_expiry: bool,
    /// Apply the change to the live interface right away (as `wgadm apply`).
    #[arg(long)]
    pub apply: bool,
}

/// `wgadm peer qr`.
#[derive(Debug, Args)]
pub struct PeerQrArgs {
    /// The peer's name.
    #[arg(required_unless_present = "all", conflicts_with_all = ["all", "out_dir"])]
    pub name: Option<PeerName>,
    /// Every peer's QR code, one file each (NAME.png or .svg, mode 0600) in --out-dir;
    /// peers that brought their own key are skipped (their private key is not here).
    #[arg(long, requires = "out_dir", conflicts_with = "output")]
    pub all: bool,
    /// With --all: the directory to write to.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
    /// The image format.
    #[arg(long, value_enum, default_value = "ansi")]
    pub format: QrFormat,
    /// Write to this file (mode 0600) instead of stdout (`-`: stdout). It must be outside the
    /// state and WireGuard config directories, and a regular file if it exists.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Replace the existing file of --output, or with --all the files that exist in --out-dir.
    #[arg(long)]
    pub force: bool,
}

/// `wgadm peer rotate`.
#[derive(Debug, Args)]
pub struct PeerRotateArgs {
    /// The peer's name.
    pub name: PeerName,
    /// The client's new public key; without it a new key pair is generated here.
    #[arg(long, value_name = "KEY", value_parser = parse_key)]
    pub public_key: Option<Key>,
    /// Apply the change to the live interface right away (as `wgadm apply`).
    #[arg(long)]
    pub apply: bool,
}

fn parse_key(s: &str) -> Result<Key, String> {
    match Key::parse(s) {
        Ok(k) if k.is_low_order() => Err(
            "the public key is a low-order X25519 point (all zeros, for instance) that every \
             private key shares the same secret with, so it authenticates nobody; give the real \
             public key of the client's key pair (`wg genkey | wg pubkey`)"
                .into(),
        ),
        Ok(k) => Ok(k),
        Err(e) => Err(format!("the public key {e}")),
    }
}

/// `--ipam`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IpamArg {
    /// The lowest free address of the subnet in the state.
    Local,
    /// The next free address of the VPN prefix in NetBox.
    Netbox,
}

/// `wgadm vault ...`: one state has one vault mode (server.key's) and one password; these
/// change it for every key file at once, all or nothing.
#[derive(Debug, Subcommand)]
pub enum VaultCommand {
    /// Encrypt every key file with the password of --vault-password-file (a plaintext state,
    /// or one with keys in both modes, becomes a vault state).
    Encrypt(VaultArgs),
    /// Decrypt every key file (plaintext, mode 0600), opening them with --vault-password-file.
    Decrypt(VaultArgs),
    /// Re-encrypt every key file under the password of --new-vault-password-file.
    Rekey(VaultRekeyArgs),
}

/// `wgadm vault encrypt|decrypt`.
#[derive(Debug, Args)]
pub struct VaultArgs {
    /// List the key files that would be rewritten and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `wgadm vault rekey`.
#[derive(Debug, Args)]
pub struct VaultRekeyArgs {
    /// The file holding the new password (the old one comes from --vault-password-file).
    #[arg(long, value_name = "FILE")]
    pub new_vault_password_file: PathBuf,
    /// List the key files that would be rewritten and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `wgadm netbox ...`.
#[derive(Debug, Subcommand)]
pub enum NetboxCommand {
    /// Make NetBox match the state: the VPN prefix, the server as a virtual machine (in a
    /// cluster of type LXC) with interfaces eth0 and wg0 and its VPN address, a WireGuard
    /// tunnel with the server as hub, and one IP address per peer (active, or deprecated when
    /// disabled or expired). Only objects tagged wgadm are changed or deleted.
    Sync(NetboxSyncArgs),
}

/// Where NetBox is and its API token. The token itself is never an argument: it comes from a
/// 0600 file or, for interactive use, from WGADM_NETBOX_TOKEN (or NETBOX_TOKEN).
#[derive(Debug, Clone, Args)]
pub struct NetboxArgs {
    /// NetBox's URL, e.g. https://netbox.example.com.
    #[arg(
        long = "netbox-url",
        visible_alias = "url",
        env = "WGADM_NETBOX_URL",
        value_name = "URL"
    )]
    pub url: Option<String>,
    /// A file holding the NetBox API token, readable by its owner only (0600) [default, for
    /// interactive use: the token in WGADM_NETBOX_TOKEN or NETBOX_TOKEN].
    #[arg(
        long = "netbox-token-file",
        visible_alias = "token-file",
        env = "WGADM_NETBOX_TOKEN_FILE",
        value_name = "FILE"
    )]
    pub token_file: Option<PathBuf>,
}

/// `wgadm netbox sync`.
#[derive(Debug, Args)]
pub struct NetboxSyncArgs {
    /// NetBox.
    #[command(flatten)]
    pub netbox: NetboxArgs,
    /// Print the exact plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The virtual machine that is the server (the LXC container).
    #[arg(long, default_value = "wireguard", value_name = "NAME")]
    pub vm_name: String,
    /// The cluster the virtual machine is in (created when missing).
    #[arg(long, default_value = "proxmox", value_name = "NAME")]
    pub cluster: String,
    /// The type of a cluster wgadm creates.
    #[arg(long, default_value = "LXC", value_name = "NAME")]
    pub cluster_type: String,
    /// The site of the cluster and the prefix (created when missing; NetBox 4.2 or later).
    #[arg(long, value_name = "NAME")]
    pub site: Option<String>,
    /// The Proxmox container id (e.g. 90 for CT 90), kept in the VM's custom field wgadm_vmid.
    #[arg(long, value_name = "ID")]
    pub vmid: Option<u32>,
    /// The tunnel's name [default: VM-NAME-INTERFACE, e.g. wireguard-wg0].
    #[arg(long, value_name = "NAME")]
    pub tunnel: Option<String>,
}
