//! Files wgadm writes for the user (`peer add --config-out`, `peer qr -o`): they hold private
//! keys, so they are written with care for what is already there. A path is checked before
//! the command changes anything; the bytes go to a temporary file created exclusively beside
//! the target, which takes the target's name only at the end. A file wgadm did not create is
//! never opened for writing, truncated or deleted: only replaced whole, and only with
//! `--force`. Paths inside the state directory or the WireGuard config directory are refused,
//! as is anything that is not a regular file (a symlink, a device, a fifo, a directory).

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::output;
use crate::secrets::random32;

/// Where an output goes, checked: stdout (`-`) or a file.
#[derive(Debug)]
pub enum Out {
    /// `-`.
    Stdout,
    /// A file: the path as given (for messages) and its real path.
    File {
        /// As the user gave it.
        shown: PathBuf,
        /// The real directory it is in joined with its file name.
        real: PathBuf,
        /// `--force`: an existing regular file may be replaced.
        force: bool,
    },
}

/// The bytes of an [`Out`], written and synced but not yet in place.
pub struct Staged {
    out: Out,
    /// The temporary file (for a file target), removed on drop unless placed.
    tmp: Option<PathBuf>,
    /// The bytes (for stdout).
    bytes: Zeroizing<Vec<u8>>,
}

/// Checks an output path: `-` is stdout; otherwise its directory must exist, it must not be
/// inside one of `forbidden` (compared as real paths), and it must be missing or (with
/// `force`) a regular file. `flag` names the option in messages.
pub fn check(path: &Path, force: bool, flag: &str, forbidden: &[&Path]) -> Result<Out> {
    if path.as_os_str() == "-" {
        return Ok(Out::Stdout);
    }
    let bad = |why: String| Error::Invalid(format!("{flag} {}: {why}", path.display()));
    let Some(name) = path.file_name() else {
        return Err(bad("is not a file name; give a path to a file".into()));
    };
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dir = fs::canonicalize(parent).map_err(|e| {
        bad(format!(
            "its directory {} cannot be used ({e}); create it first",
            parent.display()
        ))
    })?;
    let real = dir.join(name);
    for place in forbidden {
        // A directory that does not exist holds nothing to protect.
        let Ok(place_real) = fs::canonicalize(place) else {
            continue;
        };
        if real.starts_with(&place_real) {
            return Err(bad(format!(
                "is inside {} (as {}); wgadm keeps its own files there and writes client \
                 configs only elsewhere: give a path outside it",
                place.display(),
                real.display()
            )));
        }
    }
    check_existing(&real, force).map_err(bad)?;
    Ok(Out::File {
        shown: path.to_owned(),
        real,
        force,
    })
}

/// What is at `real` now: nothing, or a regular file when `force` allows replacing it.
fn check_existing(real: &Path, force: bool) -> std::result::Result<(), String> {
    let meta = match fs::symlink_metadata(real) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("cannot be examined: {e}")),
    };
    let kind = meta.file_type();
    let what = if kind.is_symlink() {
        "a symbolic link"
    } else if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a fifo"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_block_device() || kind.is_char_device() {
        "a device"
    } else if force {
        return Ok(());
    } else {
        return Err(
            "exists; pass --force to replace it (wgadm replaces it whole, never writes into it)"
                .into(),
        );
    };
    Err(format!(
        "is {what}; wgadm writes private keys only to regular files and never through a link: \
         give another path"
    ))
}

impl Out {
    /// Writes `bytes` to a new temporary file (mode 0600, created exclusively, never through a
    /// link) beside the target and syncs it; nothing visible changes yet.
    pub fn stage(self, bytes: &[u8]) -> Result<Staged> {
        let Out::File { real, .. } = &self else {
            return Ok(Staged {
                out: self,
                tmp: None,
                bytes: Zeroizing::new(bytes.to_vec()),
            });
        };
        let name = real
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let random = random32()?;
        let suffix: String = random[..8].iter().map(|b| format!("{b:02x}")).collect();
        let tmp = real.with_file_name(format!(".{name}.wgadm-{suffix}"));
        let written = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&tmp)?;
            f.set_permissions(fs::Permissions::from_mode(0o600))?;
            f.write_all(bytes)?;
            f.sync_all()
        })();
        let staged = Staged {
            tmp: Some(tmp.clone()),
            out: self,
            bytes: Zeroizing::new(Vec::new()),
        };
        written.map_err(|e| Error::io(&tmp, e))?;
        Ok(staged)
    }
}

impl Staged {
    /// Whether the bytes go to stdout.
    pub fn is_stdout(&self) -> bool {
        matches!(self.out, Out::Stdout)
    }

    /// Puts the bytes in place: prints them for stdout, or gives the temporary file the
    /// target's name (a rename with `--force`, otherwise a link that fails if a file appeared
    /// there meanwhile).
    pub fn place(mut self) -> Result<()> {
        let (tmp, real, shown, force) = match (&self.out, self.tmp.take()) {
            (Out::File { real, shown, force }, Some(tmp)) => (tmp, real, shown, *force),
            _ => return output::write_stdout(&self.bytes),
        };
        let result = (|| {
            check_existing(real, force)
                .map_err(|why| Error::Invalid(format!("{}: {why}", shown.display())))?;
            if force {
                fs::rename(&tmp, real).map_err(|e| Error::io(shown, e))?;
            } else {
                match fs::hard_link(&tmp, real) {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                        return Err(Error::Invalid(format!(
                            "{}: a file appeared there meanwhile; it was left alone (pass \
                             --force to replace it)",
                            shown.display()
                        )))
                    }
                    // A file system without hard links: the check above is all there is.
                    Err(_) => fs::rename(&tmp, real).map_err(|e| Error::io(shown, e))?,
                }
            }
            if let Some(dir) = real.parent() {
                File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| Error::io(dir, e))?;
            }
            Ok(())
        })();
        // After a rename the temporary name is gone; after a link it is a second name.
        let _ = fs::remove_file(&tmp);
        result
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(tmp) = self.tmp.take() {
            let _ = fs::remove_file(tmp);
        }
    }
}
