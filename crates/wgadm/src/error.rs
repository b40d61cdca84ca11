//! The one error type of the shell. Every message says what is wrong, where (file, peer,
//! field) and what to do; none contains key material.

use std::path::{Path, PathBuf};

use wgadm_core::Problem;
use wgadm_state::error::problems_text;

/// What can go wrong in a wgadm command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input on the command line or in a file that is not part of the state.
    #[error("{0}")]
    Invalid(String),
    /// A value the core refused (a name, a key, a date...), kept whole as the source.
    #[error(transparent)]
    Core(#[from] wgadm_core::Error),
    /// The state (as it is, or as a command would leave it) breaks a rule.
    #[error("{}", problems_text(.0))]
    State(Vec<Problem>),
    /// A file could not be read or written.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A key file that is Ansible Vault encrypted could not be opened.
    #[error("{}: {source}", .path.display())]
    Vault {
        /// The file.
        path: PathBuf,
        /// Why.
        source: crate::vault::VaultError,
    },
    /// The live device could not be read or changed.
    #[error(transparent)]
    Device(#[from] crate::device::DeviceError),
    /// The firewall could not be read or changed.
    #[error(transparent)]
    Firewall(#[from] crate::firewall::FirewallError),
    /// A QR code could not be made.
    #[error(transparent)]
    Qr(#[from] crate::qr::QrError),
    /// NetBox could not be reached or refused a change.
    #[error(transparent)]
    Netbox(#[from] crate::netbox::NetboxError),
    /// The daemon could not start.
    #[error(transparent)]
    Daemon(#[from] crate::daemon::Error),
}

/// The state crate's errors are this crate's own variants, so that commands match
/// [`Error::State`] whatever part found the problems, and the messages stay the same.
impl From<wgadm_state::Error> for Error {
    fn from(e: wgadm_state::Error) -> Self {
        match e {
            wgadm_state::Error::Invalid(why) => Error::Invalid(why),
            wgadm_state::Error::State(problems) => Error::State(problems),
            wgadm_state::Error::Io { path, source } => Error::Io { path, source },
            wgadm_state::Error::Vault { path, source } => Error::Vault { path, source },
        }
    }
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_owned(),
            source,
        }
    }

    /// The process exit code: 1 for every failure; 2 (usage) comes from clap.
    pub fn exit_code(&self) -> i32 {
        1
    }
}

/// The result of a shell operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;
