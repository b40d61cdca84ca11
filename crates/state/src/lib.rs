//! wgadm's state directory: [`store`] loads and checks it and changes it through journaled
//! transactions under a lock; [`secrets`] reads and writes its key files, plaintext (mode 0600)
//! or Ansible Vault ([`wgadm_vault`]).
//!
//! This crate owns the directory's on-disk contract (DESIGN.md, "The state directory"); the
//! rules a state must follow are in [`wgadm_core::check()`].

#![warn(missing_docs)]

pub mod error;
pub mod secrets;
pub mod store;

pub use error::{Error, Result};
pub use secrets::KeyFiles;
pub use store::{Store, Txn};
