//! The state directory on disk (DESIGN.md): `server.yml`, `server.key`, `peers/NAME.yml`,
//! `peers/NAME.key` (only for generated keys) and `peers/NAME.psk` (only with a preshared key).
//!
//! Reads collect every problem; writes go through a [`Txn`] that stages all files first and then
//! renames them into place, so a failing command leaves the directory as it was. A lock on the
//! directory itself serializes wgadm processes without adding a file to it.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use wgadm_core::{Peer, PeerName, Problem, Server, State};

use crate::error::{Error, Result};

/// Mode of files holding secrets.
pub const SECRET_MODE: u32 = 0o600;
/// Mode of the public YAML files.
pub const PUBLIC_MODE: u32 = 0o644;

/// The paths of a state directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

/// A peer file read: its name and the peer, or the problem with the file.
type ParsedPeer = std::result::Result<(PeerName, Peer), Problem>;

/// A held lock on the state directory; released on drop.
#[derive(Debug)]
pub struct Lock(#[allow(dead_code)] File);

impl Store {
    /// The state directory at `dir` (which may not exist yet).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Store { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `server.yml`.
    pub fn server_yml(&self) -> PathBuf {
        self.dir.join("server.yml")
    }

    /// `server.key`.
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
    }

    /// `peers/`.
    pub fn peers_dir(&self) -> PathBuf {
        self.dir.join("peers")
    }

    /// `peers/NAME.yml`.
    pub fn peer_yml(&self, name: &PeerName) -> PathBuf {
        self.peers_dir().join(format!("{name}.yml"))
    }

    /// `peers/NAME.key`.
    pub fn peer_key(&self, name: &PeerName) -> PathBuf {
        self.peers_dir().join(format!("{name}.key"))
    }

    /// `peers/NAME.psk`.
    pub fn peer_psk(&self, name: &PeerName) -> PathBuf {
        self.peers_dir().join(format!("{name}.psk"))
    }

    /// Whether the directory holds a state (a `server.yml`).
    pub fn exists(&self) -> bool {
        self.server_yml().exists()
    }

    fn lock(&self, exclusive: bool) -> Result<Lock> {
        let dir = File::open(&self.dir).map_err(|e| self.missing_or(e))?;
        let locked = if exclusive {
            dir.lock()
        } else {
            dir.lock_shared()
        };
        locked.map_err(|e| Error::io(&self.dir, e))?;
        Ok(Lock(dir))
    }

    /// Takes the lock for a command that changes the state; waits for another wgadm to finish.
    pub fn lock_exclusive(&self) -> Result<Lock> {
        self.lock(true)
    }

    /// Takes the lock for a command that only reads the state.
    pub fn lock_shared(&self) -> Result<Lock> {
        self.lock(false)
    }

    fn missing_or(&self, e: std::io::Error) -> Error {
        if e.kind() == ErrorKind::NotFound {
            Error::Invalid(format!(
                "{}: no wgadm state here; create one with `wgadm init --endpoint HOST` \
                 or point --state (WGADM_STATE) at it",
                self.dir.display()
            ))
        } else {
            Error::io(&self.dir, e)
        }
    }

    /// Reads `server.yml` and every `peers/*.yml`; all parse problems are reported together.
    pub fn load(&self) -> Result<State> {
        let mut problems = Vec::new();
        let server_text = fs::read_to_string(self.server_yml()).map_err(|e| {
            if e.kind() == ErrorKind::NotFound {
                self.missing_or(e)
            } else {
                Error::io(&self.server_yml(), e)
            }
        })?;
        let server: Option<Server> = parse_yaml("server.yml", &server_text, &mut problems);
        let mut peers = BTreeMap::new();
        let files = self.peer_files()?;
        // Reading and parsing thousands of small files is most of a command's time: spread it
        // over the cores, keeping the order so problems are reported by file name.
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(8);
        let chunk = files.len().div_ceil(threads).max(256);
        let parsed: Vec<Result<Vec<ParsedPeer>>> = std::thread::scope(|scope| {
            let handles: Vec<_> = files
                .chunks(chunk)
                .map(|part| scope.spawn(|| part.iter().map(|f| self.read_peer(f)).collect()))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(Error::Invalid("a reader thread failed".into())))
                })
                .collect()
        });
        for part in parsed {
            for result in part? {
                match result {
                    Ok((name, peer)) => {
                        peers.insert(name, peer);
                    }
                    Err(problem) => problems.push(problem),
                }
            }
        }
        match server {
            Some(server) if problems.is_empty() => Ok(State { server, peers }),
            _ => Err(Error::State(problems)),
        }
    }

    /// Reads and parses one peer file.
    fn read_peer(&self, (name, file): &(Result<PeerName, String>, String)) -> Result<ParsedPeer> {
        let place = format!("peers/{}", wgadm_core::check::shown_file_name(file));
        let name = match name {
            Ok(name) => name.clone(),
            Err(why) => {
                let message = format!("{why}; rename the file");
                return Ok(Err(Problem { place, message }));
            }
        };
        let path = self.peers_dir().join(file);
        let text = fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let mut problems = Vec::new();
        Ok(match parse_yaml::<Peer>(&place, &text, &mut problems) {
            Some(peer) => Ok((name, peer)),
            None => Err(problems.remove(0)),
        })
    }

    /// The `*.yml` files of `peers/` with the peer name their stem gives (or why it is no name).
    fn peer_files(&self) -> Result<Vec<(Result<PeerName, String>, String)>> {
        let dir = self.peers_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(&dir, e)),
        };
        let mut files = Vec::new();
        for entry in entries {
            let file = entry.map_err(|e| Error::io(&dir, e))?.file_name();
            let Some(file) = file.to_str() else { continue };
            if let Some(stem) = file.strip_suffix(".yml") {
                if !file.starts_with('.') {
                    files.push((PeerName::parse(stem), file.to_owned()));
                }
            }
        }
        files.sort_by(|a, b| a.1.cmp(&b.1));
        Ok(files)
    }

    /// Every file name in `peers/` (to find stray key files).
    pub fn peer_dir_listing(&self) -> Result<Vec<String>> {
        let dir = self.peers_dir();
        match fs::read_dir(&dir) {
            Ok(entries) => entries
                .map(|e| {
                    e.map(|e| e.file_name().to_string_lossy().into_owned())
                        .map_err(|err| Error::io(&dir, err))
                })
                .collect(),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(Error::io(&dir, e)),
        }
    }
}

/// Parses a state file; the problem (never quoting the file: it may hold a key) goes to
/// `problems`. Size, nesting and wording rules: `wgadm_core::yaml`.
fn parse_yaml<T: wgadm_core::yaml::Schema>(
    place: &str,
    text: &str,
    problems: &mut Vec<Problem>,
) -> Option<T> {
    match wgadm_core::yaml::parse(place, text) {
        Ok(v) => Some(v),
        Err(problem) => {
            problems.push(problem);
            None
        }
    }
}

/// Serializes a state file.
pub fn to_yaml<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_norway::to_string(value).map_err(|e| Error::Invalid(format!("cannot write YAML: {e}")))
}

enum Op {
    Write {
        path: PathBuf,
        bytes: zeroize::Zeroizing<Vec<u8>>,
        mode: u32,
    },
    Remove {
        path: PathBuf,
    },
}

/// A set of file changes applied together: every new file is written and synced to a temporary
/// name first, and only when all of them are on disk are they renamed into place.
#[derive(Default)]
pub struct Txn {
    dirs: Vec<PathBuf>,
    ops: Vec<Op>,
}

impl Txn {
    /// Makes sure a directory exists (created 0700 if missing) before files go in.
    pub fn mkdir(&mut self, path: PathBuf) -> &mut Self {
        self.dirs.push(path);
        self
    }

    /// Writes a file with the given mode.
    pub fn write(&mut self, path: PathBuf, bytes: impl Into<Vec<u8>>, mode: u32) -> &mut Self {
        self.ops.push(Op::Write {
            path,
            bytes: zeroize::Zeroizing::new(bytes.into()),
            mode,
        });
        self
    }

    /// Removes a file (a missing file is fine).
    pub fn remove(&mut self, path: PathBuf) -> &mut Self {
        self.ops.push(Op::Remove { path });
        self
    }

    /// Applies the changes. On an error before the renames, nothing has changed.
    pub fn commit(self) -> Result<()> {
        let mut created = Vec::new();
        let result = self.stage_and_rename(&mut created);
        if result.is_err() {
            for dir in created.iter().rev() {
                let _ = fs::remove_dir(dir);
            }
        }
        result
    }

    fn stage_and_rename(&self, created: &mut Vec<PathBuf>) -> Result<()> {
        for dir in &self.dirs {
            if !dir.exists() {
                fs::DirBuilder::new()
                    .mode(0o700)
                    .recursive(true)
                    .create(dir)
                    .map_err(|e| Error::io(dir, e))?;
                created.push(dir.clone());
            }
        }
        let mut staged: Vec<(PathBuf, &Path)> = Vec::new();
        for op in &self.ops {
            if let Op::Write { path, bytes, mode } = op {
                match write_temp(path, bytes, *mode) {
                    Ok(tmp) => staged.push((tmp, path)),
                    Err(e) => {
                        for (tmp, _) in &staged {
                            let _ = fs::remove_file(tmp);
                        }
                        return Err(e);
                    }
                }
            }
        }
        for (tmp, path) in &staged {
            fs::rename(tmp, path).map_err(|e| Error::io(path, e))?;
        }
        for op in &self.ops {
            if let Op::Remove { path } = op {
                match fs::remove_file(path) {
                    Err(e) if e.kind() != ErrorKind::NotFound => return Err(Error::io(path, e)),
                    _ => {}
                }
            }
        }
        let mut dirs: Vec<&Path> = self
            .ops
            .iter()
            .filter_map(|op| match op {
                Op::Write { path, .. } | Op::Remove { path } => path.parent(),
            })
            .collect();
        dirs.sort();
        dirs.dedup();
        for dir in dirs {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

/// Writes `bytes` to a new temporary file beside `path` with `mode` and syncs it.
fn write_temp(path: &Path, bytes: &[u8], mode: u32) -> Result<PathBuf> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.wgadm-{}", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        // The umask may have narrowed the mode; secrets must be exactly 0600, public files 0644.
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    match result {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(Error::io(path, e))
        }
    }
}

/// Writes one file atomically (outside the state directory, e.g. `--config-out`).
pub fn write_file_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let tmp = write_temp(path, bytes, mode)?;
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io(path, e)
    })
}
