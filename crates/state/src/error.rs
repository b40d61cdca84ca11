//! The error of the state directory. Every message says what is wrong, where (file, peer,
//! field) and what to do; none contains key material.

use std::path::{Path, PathBuf};

use wgadm_core::Problem;

/// What can go wrong reading or changing the state directory.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file of the state, or a value for it, is unusable as it is.
    #[error("{0}")]
    Invalid(String),
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
        source: wgadm_vault::VaultError,
    },
}

/// The text of [`Error::State`]: how many problems, then one per line.
pub fn problems_text(problems: &[Problem]) -> String {
    let mut text = match problems.len() {
        1 => "the state has a problem:".to_owned(),
        n => format!("the state has {n} problems:"),
    };
    for p in problems {
        text.push_str("\n  ");
        text.push_str(&p.to_string());
    }
    text
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

/// The result of a state operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;
