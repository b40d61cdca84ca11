//! wgadm: the binary crate. It parses the command line ([`cli`]) and runs each command
//! ([`commands`]) by wiring the crates that do the work:
//!
//! - [`wgadm_core`]: the pure model, checks, plans and renderers;
//! - [`wgadm_state`]: the state directory ([`store`]) and its key files ([`secrets`]);
//! - [`wgadm_vault`]: the Ansible Vault format ([`vault`]);
//! - [`wgadm_device`]: the live WireGuard interface ([`device`]: wg-quick and the device layer);
//! - [`wgadm_firewall`]: table inet wgadm, the gate and the forwarding switches ([`firewall`]);
//! - [`wgadm_netbox`]: the NetBox model and client ([`netbox`]);
//! - [`wgadm_daemon`]: `wgadm daemon` ([`daemon`]).
//!
//! The re-exports below keep one short name per part, for the commands and the integration
//! tests alike.

pub mod cli;
pub mod commands;
pub mod error;
pub mod outfile;
pub mod output;
pub mod qr;

pub use wgadm_daemon as daemon;
pub use wgadm_device::host as device;
pub use wgadm_firewall as firewall;
pub use wgadm_netbox::client as netbox;
pub use wgadm_state::{secrets, store};
pub use wgadm_vault as vault;
