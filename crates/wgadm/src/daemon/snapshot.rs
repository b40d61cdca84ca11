//! Writing and reading the status snapshot ([`wgadm_core::snapshot`]).
//!
//! Every write is atomic: the JSON goes to a temporary file beside the snapshot
//! (`.status.json.PID.RANDOM.tmp`), is synced, and is renamed over the snapshot. A reader sees
//! the old file or the new one, whole, never a mix, even when the daemon is killed mid-write; a
//! killed daemon leaves at most its temporary file, which the next start removes.
//!
//! The temporary file is created exclusively (`O_CREAT|O_EXCL|O_NOFOLLOW`) under a name with
//! 128 random bits: whoever else can write the directory cannot have prepared that name, as a
//! symlink or as a file, so the daemon never writes through a link or into someone's file.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use wgadm_core::snapshot::Snapshot;

use crate::error::{Error, Result};

/// Where `wgadm daemon` writes by default and `wgadm status --from-snapshot` reads.
pub const DEFAULT_PATH: &str = "/run/wgadm/status.json";

/// The snapshot is for everyone to read: it holds no secret, and monitoring agents run
/// unprivileged.
pub const MODE: u32 = 0o644;

fn temp_prefix(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!(".{name}.")
}

/// A fresh, unguessable temporary name beside `path`; the PID in it lets the next start tell
/// a dead daemon's leftovers from a running one's.
fn temp_path(path: &Path) -> std::io::Result<PathBuf> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|e| std::io::Error::other(format!("no randomness: {e}")))?;
    let random: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(path.with_file_name(format!(
        "{}{}.{random}.tmp",
        temp_prefix(path),
        std::process::id()
    )))
}

/// Writes `snapshot` to `path` atomically (temp file, fsync, rename, fsync of the directory).
/// The directory is created (0755) when missing.
pub fn write(path: &Path, snapshot: &Snapshot) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            fs::DirBuilder::new()
                .mode(0o755)
                .recursive(true)
                .create(dir)
                .map_err(|e| Error::io(dir, e))?;
        }
    }
    let tmp = temp_path(path).map_err(|e| Error::io(path, e))?;
    let mut created = false;
    let result = (|| -> std::io::Result<()> {
        // Exclusive and not through a link: an existing name (of any kind) is an error, never
        // reused.
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .mode(MODE)
            .open(&tmp)?;
        created = true;
        // The umask may have narrowed the mode.
        file.set_permissions(fs::Permissions::from_mode(MODE))?;
        let mut out = BufWriter::with_capacity(64 << 10, file);
        serde_json::to_writer(&mut out, snapshot)?;
        out.write_all(b"\n")?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        // Only a file this call created is removed: never someone else's under that name.
        if created {
            let _ = fs::remove_file(&tmp);
        }
        return Err(Error::io(path, e));
    }
    // The rename is durable only once the directory is synced; /run is tmpfs, where this is
    // free, and elsewhere it is one more fsync per poll.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Removes temporary files a killed daemon left beside `path` (their PID is not running).
pub fn remove_stale_temps(path: &Path) {
    let Some(dir) = path.parent() else { return };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = temp_prefix(path);
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        // `.NAME.PID.RANDOM.tmp`, or `.NAME.PID.tmp` from versions before the random part.
        let Some(pid) = name
            .strip_prefix(&prefix)
            .and_then(|r| r.strip_suffix(".tmp"))
            .map(|r| r.split('.').next().unwrap_or(r))
        else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if pid == std::process::id() || !Path::new("/proc").join(pid.to_string()).exists() {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// Reads a snapshot. The error says whether the daemon seems not to run.
pub fn read(path: &Path) -> Result<(Snapshot, String)> {
    let text = fs::read_to_string(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::Invalid(format!(
                "{}: no status snapshot here; `wgadm daemon` writes it (is wgadm.service \
                 running? `systemctl status wgadm`), or pass the path it writes to \
                 (--from-snapshot PATH)",
                path.display()
            ))
        } else {
            Error::io(path, e)
        }
    })?;
    let snapshot = serde_json::from_str(&text).map_err(|e| {
        Error::Invalid(format!(
            "{}: not a wgadm status snapshot ({e}); it is written by `wgadm daemon`",
            path.display()
        ))
    })?;
    Ok((snapshot, text))
}
