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

/// Creates `tmp` exclusively and not through a link: an existing name of any kind (a file, a
/// symlink, dangling or not) is an error, never reused or followed.
fn create_exclusive(tmp: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .mode(MODE)
        .open(tmp)
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
        let file = create_exclusive(&tmp)?;
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn snap() -> Snapshot {
        snapshot_with_refused(0)
    }

    /// An idle daemon's snapshot of an empty wg0 with `refused_total` refused handshakes
    /// (shared with the metrics tests).
    pub(crate) fn snapshot_with_refused(refused_total: u64) -> Snapshot {
        let status = wgadm_core::status::Status {
            interface: "wg0".into(),
            up: true,
            listen_port: Some(51820),
            peers_total: 0,
            peers_connected: 0,
            peers: vec![],
        };
        wgadm_core::snapshot::snapshot(
            status,
            1,
            wgadm_core::snapshot::DaemonInfo {
                pid: 1,
                started_at: 1,
                interval: 5.0,
                version: "x".into(),
                polls: 1,
                poll_errors: 0,
                state_errors: 0,
                snapshot_errors: 0,
                last_poll_seconds: 0.0,
                poll_seconds_total: 0.0,
            },
            refused_total,
            vec![],
            180,
            Default::default(),
        )
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn temporary_names_are_fresh_and_nothing_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("status.json");
        let (a, b) = (temp_path(&path).unwrap(), temp_path(&path).unwrap());
        assert_ne!(a, b);
        let name = a.file_name().unwrap().to_string_lossy().into_owned();
        let prefix = format!(".status.json.{}.", std::process::id());
        assert!(
            name.starts_with(&prefix) && name.ends_with(".tmp"),
            "{name}"
        );
        assert_eq!(name.len(), prefix.len() + 32 + 4, "128 random bits: {name}");
        write(&path, &snap()).unwrap();
        write(&path, &snap()).unwrap();
        assert_eq!(names(dir.path()), ["status.json"]);
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, MODE);
        assert!(read(&path).is_ok());
    }

    #[test]
    fn a_prepared_name_is_never_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, "precious\n").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink(dir.path().join("nothing"), &dangling).unwrap();
        for p in [&victim, &link, &dangling] {
            let e = create_exclusive(p).unwrap_err();
            assert_eq!(
                e.kind(),
                std::io::ErrorKind::AlreadyExists,
                "{}",
                p.display()
            );
        }
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
        assert!(!dir.path().join("nothing").exists());
    }

    #[test]
    fn a_symlink_in_place_of_the_snapshot_is_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, "precious\n").unwrap();
        let path = dir.path().join("status.json");
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        write(&path, &snap()).unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
        assert!(fs::symlink_metadata(&path).unwrap().file_type().is_file());
    }

    #[test]
    fn stale_temporary_files_of_dead_daemons_go_and_others_stay() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("status.json");
        // A PID above the kernel's limit (4194304) is never running.
        let dead = 4_999_999;
        for n in [
            format!(".status.json.{dead}.0123456789abcdef0123456789abcdef.tmp"),
            format!(".status.json.{dead}.tmp"),
            format!(".status.json.{}.00.tmp", std::process::id()),
            // PID 1 runs: its file stays, as do names that are not ours.
            ".status.json.1.00.tmp".into(),
            ".status.json.x.tmp".into(),
            "other.tmp".into(),
        ] {
            fs::write(dir.path().join(n), "").unwrap();
        }
        remove_stale_temps(&path);
        assert_eq!(
            names(dir.path()),
            [".status.json.1.00.tmp", ".status.json.x.tmp", "other.tmp"]
        );
    }
}
