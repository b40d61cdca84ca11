//! wgadm: the shell around `wgadm-core`. Everything that touches the outside world lives here:
//! the state directory, Ansible Vault files, QR images, the live WireGuard device, the firewall.

pub mod cli;
pub mod commands;
pub mod daemon;
pub mod device;
pub mod error;
pub mod firewall;
pub mod netbox;
pub mod outfile;
pub mod output;
pub mod qr;
pub mod secrets;
pub mod store;
pub mod vault;
