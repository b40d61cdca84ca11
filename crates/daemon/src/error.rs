//! The daemon's error. It stops the daemon only at start (bad options, no state to watch);
//! while it runs, every error is logged and counted instead.

use std::path::{Path, PathBuf};

use wgadm_device::host::DeviceError;
use wgadm_firewall::FirewallError;

/// What can go wrong in the daemon.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An option or a file the daemon reads is unusable.
    #[error("{0}")]
    Invalid(String),
    /// A file could not be read or written.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The state directory could not be read.
    #[error(transparent)]
    State(#[from] wgadm_state::Error),
    /// The live device could not be read or changed.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// The firewall could not be read or changed.
    #[error(transparent)]
    Firewall(#[from] FirewallError),
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// The result of a daemon operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;
