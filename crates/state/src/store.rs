//! The state directory on disk (DESIGN.md): `server.yml`, `server.key`, `peers/NAME.yml`,
//! `peers/NAME.key` (only for generated keys) and `peers/NAME.psk` (only with a preshared key).
//!
//! Reads collect every problem; writes go through a [`Txn`], a journaled change that leaves the
//! state as before or as after whatever instant wgadm is killed at. A lock on the directory
//! itself serializes wgadm processes without adding a file to it; whoever takes it first
//! finishes or discards what an interrupted command left (see [`Store::lock_exclusive`]).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wgadm_core::{NameError, Peer, PeerName, Problem, Server, State};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// Mode of files holding secrets.
pub const SECRET_MODE: u32 = 0o600;
/// Mode of the public YAML files.
pub const PUBLIC_MODE: u32 = 0o644;

/// The paths of a state directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
    parse_cache: Option<PathBuf>,
    parse_cache_settle: std::time::Duration,
}

/// A peer file read: its name and the peer, or the problem with the file.
type ParsedPeer = std::result::Result<(PeerName, Peer), Problem>;

/// A held lock on the state directory; released on drop.
#[derive(Debug)]
pub struct Lock {
    _dir: File,
    exclusive: bool,
}

impl Drop for Lock {
    fn drop(&mut self) {
        if self.exclusive {
            LOCKED.with(|l| l.borrow_mut().take());
        }
    }
}

impl Store {
    /// The state directory at `dir` (which may not exist yet).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Store {
            dir: dir.into(),
            parse_cache: Some(PARSE_CACHE_DIR.into()),
            parse_cache_settle: PARSE_CACHE_SETTLE,
        }
    }

    /// Keeps parsed peer files under `dir` instead of [`PARSE_CACHE_DIR`], or nowhere (`None`:
    /// every load parses every file).
    pub fn with_parse_cache(mut self, dir: Option<PathBuf>) -> Self {
        self.parse_cache = dir;
        self
    }

    /// Caches files changed up to `settle` before a load (tests; see [`PARSE_CACHE_SETTLE`]).
    pub fn with_parse_cache_settle(mut self, settle: std::time::Duration) -> Self {
        self.parse_cache_settle = settle;
        self
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

    /// Opens the directory and locks it (waiting, or not when `wait` is false: `None` then
    /// means another wgadm holds it). Retries when the directory was replaced while waiting,
    /// so that the lock is always on the directory the path names.
    fn flock(&self, exclusive: bool, wait: bool) -> Result<Option<File>> {
        loop {
            let dir = File::open(&self.dir).map_err(|e| self.missing_or(e))?;
            let locked = match (exclusive, wait) {
                (true, true) => dir.lock().map(|()| true),
                (false, true) => dir.lock_shared().map(|()| true),
                (true, false) => try_lock(dir.try_lock()),
                (false, false) => try_lock(dir.try_lock_shared()),
            };
            if !locked.map_err(|e| Error::io(&self.dir, e))? {
                return Ok(None);
            }
            let held = dir.metadata().map_err(|e| Error::io(&self.dir, e))?;
            match fs::metadata(&self.dir) {
                Ok(now) if (held.dev(), held.ino()) == (now.dev(), now.ino()) => {
                    return Ok(Some(dir))
                }
                // Removed or replaced while this process waited: lock what is there now.
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&self.dir, e)),
            }
        }
    }

    fn lock(&self, exclusive: bool, wait: bool) -> Result<Option<Lock>> {
        if exclusive {
            let Some(dir) = self.flock(true, wait)? else {
                return Ok(None);
            };
            recover(&self.dir)?;
            LOCKED.with(|l| *l.borrow_mut() = Some(self.dir.clone()));
            return Ok(Some(Lock {
                _dir: dir,
                exclusive: true,
            }));
        }
        loop {
            let Some(dir) = self.flock(false, wait)? else {
                return Ok(None);
            };
            if !needs_recovery(&self.dir)? {
                return Ok(Some(Lock {
                    _dir: dir,
                    exclusive: false,
                }));
            }
            // An interrupted change: finish or discard it under the exclusive lock, then read.
            drop(dir);
            let Some(ex) = self.flock(true, wait)? else {
                return Ok(None);
            };
            recover(&self.dir)?;
            drop(ex);
        }
    }

    /// Takes the lock for a command that changes the state; waits for another wgadm to finish.
    /// A change an interrupted wgadm committed is completed first, and temporary files of one
    /// it did not commit are removed, so the state is whole. Only while this lock is held can a
    /// [`Txn`] be committed.
    pub fn lock_exclusive(&self) -> Result<Lock> {
        self.lock(true, true).and_then(taken)
    }

    /// Takes the lock for a command that only reads the state (after completing or discarding
    /// an interrupted change, as [`Store::lock_exclusive`] does).
    pub fn lock_shared(&self) -> Result<Lock> {
        self.lock(false, true).and_then(taken)
    }

    /// [`Store::lock_shared`] without waiting: `None` while another wgadm holds the lock.
    pub fn try_lock_shared(&self) -> Result<Option<Lock>> {
        self.lock(false, false)
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
        let journal = self.dir.join(JOURNAL);
        if fs::symlink_metadata(&journal).is_ok() {
            // Only a reader that took no lock can get here (the locks recover first).
            return Err(Error::Invalid(format!(
                "{}: an interrupted wgadm change is not finished yet; any wgadm command that takes the lock finishes it",
                journal.display()
            )));
        }
        let server_yml = self.server_yml();
        let server_bytes = match read_regular(&server_yml, YAML_LIMIT) {
            Err(Refusal::Io(e)) if e.kind() == ErrorKind::NotFound => {
                return Err(self.missing_or(e))
            }
            r => r.map_err(|r| match r {
                Refusal::Refused(why) => Error::Invalid(format!("{}: {why}", server_yml.display())),
                Refusal::Io(e) => Error::io(&server_yml, e),
            })?,
        };
        let server_text = String::from_utf8(server_bytes.to_vec()).map_err(|_| {
            Error::Invalid(format!(
                "{}: is not UTF-8 text; fix the file or restore it",
                server_yml.display()
            ))
        })?;
        let server: Option<Server> = parse_yaml("server.yml", &server_text, &mut problems);
        let mut peers = BTreeMap::new();
        let files = self.peer_files()?;
        // Taken before any file is read: what is cached must be older than this (see
        // `ParseCache`).
        let started = std::time::SystemTime::now();
        let cache = self.parse_cache_for(files.len());
        let cache = cache.as_ref();
        // Reading and parsing thousands of small files is most of a command's time: spread it
        // over the cores, keeping the order so problems are reported by file name.
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(8);
        let chunk = files.len().div_ceil(threads).max(256);
        let parsed: Vec<Result<Vec<(ParsedPeer, Seen)>>> = std::thread::scope(|scope| {
            let handles: Vec<_> = files
                .chunks(chunk)
                .map(|part| {
                    scope.spawn(|| {
                        part.iter()
                            .map(|f| self.read_peer_cached(f, cache))
                            .collect()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(Error::Invalid("a reader thread failed".into())))
                })
                .collect()
        });
        let mut seen = Vec::new();
        for part in parsed {
            for (result, how) in part? {
                match result {
                    Ok((name, peer)) => {
                        if let Some(stamp) = how.stamp() {
                            seen.push((name.clone(), stamp, how.hit()));
                        }
                        peers.insert(name, peer);
                    }
                    Err(problem) => problems.push(problem),
                }
            }
        }
        if let Some(cache) = cache {
            if problems.is_empty() {
                cache.keep(&seen, &peers, started, self.parse_cache_settle);
            }
        }
        match server {
            Some(server) if problems.is_empty() => Ok(State { server, peers }),
            _ => Err(Error::State(problems)),
        }
    }

    /// The parse cache for a directory of `files` peer files, when it is worth keeping.
    fn parse_cache_for(&self, files: usize) -> Option<ParseCache> {
        if files < PARSE_CACHE_MIN_PEERS {
            return None;
        }
        ParseCache::open(self.parse_cache.as_deref()?, &self.dir)
    }

    /// Reads one peer file, or takes it from `cache` when the file is the one parsed then.
    fn read_peer_cached(
        &self,
        f: &(Result<PeerName, NameError>, String),
        cache: Option<&ParseCache>,
    ) -> Result<(ParsedPeer, Seen)> {
        let Some(cache) = cache else {
            return Ok((self.read_peer(f)?, Seen::Unstamped));
        };
        let (name, file) = f;
        // Stamped before reading: a change while it is read shows as another stamp next time.
        let stamp = cache.stamp(file);
        if let (Ok(name), Some(stamp)) = (name, stamp) {
            if let Some(peer) = cache.get(file, &stamp) {
                return Ok((Ok((name.clone(), peer.clone())), Seen::Hit(stamp)));
            }
        }
        let parsed = self.read_peer(f)?;
        Ok((parsed, stamp.map_or(Seen::Unstamped, Seen::Miss)))
    }

    /// Reads and parses one peer file.
    fn read_peer(
        &self,
        (name, file): &(Result<PeerName, NameError>, String),
    ) -> Result<ParsedPeer> {
        let place = format!("peers/{}", wgadm_core::check::shown_file_name(file));
        let name = match name {
            Ok(name) => name.clone(),
            Err(why) => {
                let message = format!("{why}; rename the file");
                return Ok(Err(Problem { place, message }));
            }
        };
        let path = self.peers_dir().join(file);
        let text = match read_regular(&path, YAML_LIMIT) {
            Ok(bytes) => match String::from_utf8(bytes.to_vec()) {
                Ok(text) => text,
                Err(_) => {
                    let message = "is not UTF-8 text; fix the file or restore it".into();
                    return Ok(Err(Problem { place, message }));
                }
            },
            Err(Refusal::Refused(message)) => return Ok(Err(Problem { place, message })),
            Err(Refusal::Io(e)) => return Err(Error::io(&path, e)),
        };
        let mut problems = Vec::new();
        Ok(match parse_yaml::<Peer>(&place, &text, &mut problems) {
            Some(peer) => Ok((name, peer)),
            None => Err(problems.remove(0)),
        })
    }

    /// The `*.yml` files of `peers/` with the peer name their stem gives (or why it is no name).
    fn peer_files(&self) -> Result<Vec<(Result<PeerName, NameError>, String)>> {
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

/// Where parsed peer files are kept between commands, one file per state directory (tmpfs,
/// root's alone): with it a command at thousands of peers stats each peer file instead of
/// opening and parsing it (at 5,000 peers parsing is most of an apply's time).
pub const PARSE_CACHE_DIR: &str = "/run/wgadm/state-cache";

/// Below this many peer files every load parses them all: the cache would not pay.
pub const PARSE_CACHE_MIN_PEERS: usize = 64;

/// Files changed this recently are not cached: a file rewritten twice within the
/// filesystem's timestamp granularity (a clock tick) could keep its stamp.
pub const PARSE_CACHE_SETTLE: std::time::Duration = std::time::Duration::from_secs(2);

/// What identifies a peer file's content without reading it: a rewrite (wgadm's always makes a
/// new file and renames it) or an edit in place changes the inode, size or change time
/// (which no one can set back; `touch -d` sets only the modification time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    /// The stamp of `name` in the directory `dir` when it is a regular file (a symlink is not
    /// followed). Relative to the directory: no path walk per file.
    fn at(dir: &File, name: &str) -> Option<Stamp> {
        use std::os::fd::AsRawFd;
        let name = std::ffi::CString::new(name).ok()?;
        // SAFETY: fstatat fills the zeroed stat buffer we own; the name is NUL-terminated and
        // the directory fd stays open for the call.
        let st = unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            let r = libc::fstatat(
                dir.as_raw_fd(),
                name.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            );
            (r == 0).then_some(st)?
        };
        (st.st_mode & libc::S_IFMT == libc::S_IFREG).then(|| Stamp {
            dev: st.st_dev,
            ino: st.st_ino,
            size: u64::try_from(st.st_size).unwrap_or(0),
            mtime: (st.st_mtime, st.st_mtime_nsec),
            ctime: (st.st_ctime, st.st_ctime_nsec),
        })
    }

    /// Whether the file last changed before `t` minus `settle`.
    fn settled_before(&self, t: std::time::SystemTime, settle: std::time::Duration) -> bool {
        let Some(limit) = t
            .checked_sub(settle)
            .and_then(|l| l.duration_since(std::time::UNIX_EPOCH).ok())
        else {
            return false;
        };
        let limit = (
            i64::try_from(limit.as_secs()).unwrap_or(i64::MAX),
            i64::from(limit.subsec_nanos()),
        );
        self.ctime < limit && self.mtime < limit
    }
}

/// How a peer file was read.
#[derive(Debug, Clone, Copy)]
enum Seen {
    /// Not stamped (no cache in use, or not a regular file).
    Unstamped,
    /// Parsed from the file, stamped before reading.
    Miss(Stamp),
    /// Taken from the cache.
    Hit(Stamp),
}

impl Seen {
    fn stamp(self) -> Option<Stamp> {
        match self {
            Seen::Unstamped => None,
            Seen::Miss(s) | Seen::Hit(s) => Some(s),
        }
    }

    fn hit(self) -> bool {
        matches!(self, Seen::Hit(_))
    }
}

/// The cache file's content.
#[derive(serde::Serialize, serde::Deserialize)]
struct CacheFile {
    /// [`PARSE_CACHE_FORMAT`]: another wgadm's cache is not used.
    format: String,
    /// The state directory it is for.
    dir: PathBuf,
    /// File name in `peers/`, its stamp, the peer parsed from it.
    peers: Vec<(String, Stamp, Peer)>,
}

/// Changes with every wgadm version: what a version parses may differ.
const PARSE_CACHE_FORMAT: &str = concat!("wgadm-parse-cache 1 ", env!("CARGO_PKG_VERSION"));

/// The parsed peer files of one state directory (see [`PARSE_CACHE_DIR`]). Only a speed-up:
/// a file missing, unreadable, torn or from another version is no cache, and an entry is used
/// only while its file's [`Stamp`] is unchanged, so a load returns what parsing every file
/// would.
struct ParseCache {
    path: PathBuf,
    dir: PathBuf,
    peers: File,
    entries: std::collections::HashMap<String, (Stamp, Peer)>,
}

impl ParseCache {
    /// The cache of the state directory `state` under `cache_dir` (empty when there is none
    /// yet); `None` when the state directory cannot be resolved.
    fn open(cache_dir: &Path, state: &Path) -> Option<ParseCache> {
        let dir = fs::canonicalize(state).ok()?;
        let peers = File::open(dir.join("peers")).ok()?;
        let name = hex(&Sha256::digest(dir.as_os_str().as_encoded_bytes())[..12]);
        let path = cache_dir.join(name);
        let entries = fs::read(&path)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<CacheFile>(&bytes).ok())
            .filter(|c| c.format == PARSE_CACHE_FORMAT && c.dir == dir)
            .map(|c| {
                c.peers
                    .into_iter()
                    .map(|(file, stamp, peer)| (file, (stamp, peer)))
                    .collect()
            })
            .unwrap_or_default();
        Some(ParseCache {
            path,
            dir,
            peers,
            entries,
        })
    }

    /// The stamp of `peers/FILE`, when it is a regular file.
    fn stamp(&self, file: &str) -> Option<Stamp> {
        Stamp::at(&self.peers, file)
    }

    fn get(&self, file: &str, stamp: &Stamp) -> Option<&Peer> {
        self.entries
            .get(file)
            .filter(|(s, _)| s == stamp)
            .map(|(_, p)| p)
    }

    /// Rewrites the cache with what this load read (`seen`: name, stamp, whether from the
    /// cache), unless it holds exactly that already. Best effort: a failure leaves no cache,
    /// which only costs time.
    fn keep(
        &self,
        seen: &[(PeerName, Stamp, bool)],
        peers: &BTreeMap<PeerName, Peer>,
        started: std::time::SystemTime,
        settle: std::time::Duration,
    ) {
        let settled: Vec<_> = seen
            .iter()
            .filter(|(_, stamp, _)| stamp.settled_before(started, settle))
            .collect();
        let all_hits = settled.iter().all(|(_, _, hit)| *hit);
        if all_hits && settled.len() == self.entries.len() {
            return;
        }
        let file = CacheFile {
            format: PARSE_CACHE_FORMAT.into(),
            dir: self.dir.clone(),
            peers: settled
                .iter()
                .filter_map(|(name, stamp, _)| {
                    Some((format!("{name}.yml"), *stamp, peers.get(name)?.clone()))
                })
                .collect(),
        };
        let Ok(bytes) = serde_json::to_vec(&file) else {
            return;
        };
        let Some(parent) = self.path.parent() else {
            return;
        };
        if fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .is_err()
        {
            return;
        }
        let tmp = self.path.with_extension(format!(
            "tmp{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let written = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(SECRET_MODE)
            .open(&tmp)
            .and_then(|mut f| f.write_all(&bytes));
        if written.is_err() || fs::rename(&tmp, &self.path).is_err() {
            let _ = fs::remove_file(&tmp);
            return;
        }
        // Caches of directories not loaded for a day go (tests make many throwaway states).
        if let Ok(entries) = fs::read_dir(parent) {
            for e in entries.flatten() {
                let old = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age.as_secs() > 86_400);
                if old && e.path() != self.path {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
    }
}

/// The journal of a committed change (see [`Txn::commit`]); its rename into place is the
/// commit point.
pub const JOURNAL: &str = ".wgadm-journal";
/// The prefix of every temporary file wgadm creates in the state directory.
pub const TEMP_PREFIX: &str = ".wgadm-tmp-";
/// Largest YAML file of the state wgadm reads.
pub const YAML_LIMIT: u64 = 64 * 1024;
/// Largest key file of the state wgadm reads (a vault-encrypted key is under 1 KiB).
pub const KEY_LIMIT: u64 = 16 * 1024;
/// Largest journal: one line per file of a change that rewrites a whole state.
const JOURNAL_LIMIT: u64 = 64 * 1024 * 1024;
const JOURNAL_HEADER: &str = "wgadm-journal 1";

/// Why a state file was not read.
enum Refusal {
    /// Not a regular file, or too large: a sentence without the path.
    Refused(String),
    Io(std::io::Error),
}

/// Opens a file of the state without following a symlink and without blocking on a fifo, and
/// reads it if it is a regular file of at most `limit` bytes.
fn read_regular(path: &Path, limit: u64) -> std::result::Result<Zeroizing<Vec<u8>>, Refusal> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path);
    let file = match file {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(Refusal::Refused(
                "is a symbolic link; the state directory holds regular files only, so wgadm \
                 does not follow it: replace it with the file itself"
                    .into(),
            ))
        }
        Err(e) => return Err(Refusal::Io(e)),
    };
    let meta = file.metadata().map_err(Refusal::Io)?;
    if !meta.file_type().is_file() {
        return Err(Refusal::Refused(format!(
            "is {}, not a regular file; the state directory holds regular files only: \
             remove it or replace it with the file itself",
            kind_of(&meta.file_type())
        )));
    }
    if meta.len() > limit {
        return Err(too_large(limit));
    }
    let mut data = Zeroizing::new(Vec::with_capacity(meta.len() as usize));
    // The file may grow after the fstat: never read more than the limit.
    (&file)
        .take(limit + 1)
        .read_to_end(&mut data)
        .map_err(Refusal::Io)?;
    if data.len() as u64 > limit {
        return Err(too_large(limit));
    }
    Ok(data)
}

fn too_large(limit: u64) -> Refusal {
    Refusal::Refused(format!(
        "is larger than {} KiB, far more than any file of a wgadm state; restore it from a backup",
        limit / 1024
    ))
}

/// What a non-regular file is, for messages.
fn kind_of(t: &fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_symlink() {
        "a symbolic link"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a fifo"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device node"
    } else {
        "a special file"
    }
}

/// Reads a file of the state directory (`server.yml`, `server.key`, `peers/*`): refused when it
/// is a symlink (never followed), a fifo, a device or anything else but a regular file, or
/// larger than `limit` bytes. Messages name the file, never its content.
pub fn read_state_file(path: &Path, limit: u64) -> Result<Zeroizing<Vec<u8>>> {
    read_regular(path, limit).map_err(|r| match r {
        Refusal::Refused(why) => Error::Invalid(format!("{}: {why}", path.display())),
        Refusal::Io(e) => Error::io(path, e),
    })
}

/// What is in a state directory besides the state: one line per stray entry, each naming it
/// relative to the directory (for `wgadm check`).
pub fn strays(store: &Store) -> Result<Vec<Problem>> {
    let mut out = Vec::new();
    let stray = |place: String, message: String| Problem { place, message };
    for (name, kind) in listing(store.dir())? {
        let place = name.clone();
        match (name.as_str(), kind) {
            ("server.yml" | "server.key", Some(t)) if t.is_file() => {}
            ("peers", Some(t)) if t.is_dir() => {}
            ("server.yml" | "server.key" | "peers", t) => out.push(stray(
                place,
                format!(
                    "is {}; wgadm keeps only regular files (and the directory peers/) here",
                    t.as_ref().map_or("unreadable", kind_of)
                ),
            )),
            (n, _) if is_temp(n) || n == JOURNAL => out.push(stray(
                place,
                "is left over from an interrupted wgadm command; the next command that \
                 changes the state removes it"
                    .into(),
            )),
            (_, t) => out.push(stray(
                place,
                format!(
                    "is not part of the state ({}); move it out of the state directory",
                    t.as_ref().map_or("unreadable", kind_of_or_file)
                ),
            )),
        }
    }
    let peers = store.peers_dir();
    if !peers.is_dir() {
        return Ok(out);
    }
    for (name, kind) in listing(&peers)? {
        let place = format!("peers/{name}");
        // Badly named peer files are reported by `load` and the key file checks.
        let peer_file = !name.starts_with('.')
            && [".yml", ".key", ".psk"]
                .iter()
                .any(|ext| name.ends_with(ext));
        match kind {
            Some(t) if t.is_file() && peer_file => {}
            // `load` reports a peer file that is not a regular file.
            Some(t) if !t.is_file() && peer_file && name.ends_with(".yml") => {}
            Some(t) if !t.is_file() && peer_file => out.push(stray(
                place,
                format!(
                    "is {}; the state directory holds regular files only: remove it or \
                     replace it with the file itself",
                    kind_of(&t)
                ),
            )),
            _ if is_temp(&name) => out.push(stray(
                place,
                "is left over from an interrupted wgadm command; the next command that \
                 changes the state removes it"
                    .into(),
            )),
            t => out.push(stray(
                place,
                format!(
                    "is not part of the state ({}); move it out of the state directory",
                    t.as_ref().map_or("unreadable", kind_of_or_file)
                ),
            )),
        }
    }
    Ok(out)
}

fn kind_of_or_file(t: &fs::FileType) -> &'static str {
    if t.is_file() {
        "a file"
    } else {
        kind_of(t)
    }
}

/// The entries of a directory with their types (not following symlinks), sorted by name.
fn listing(dir: &Path) -> Result<Vec<(String, Option<fs::FileType>)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        out.push((name, entry.file_type().ok()));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// A temporary file of wgadm: this version's (`.wgadm-tmp-RANDOM`) or an older version's
/// (`.NAME.wgadm-PID`).
fn is_temp(name: &str) -> bool {
    if name.starts_with(TEMP_PREFIX) {
        return true;
    }
    name.starts_with('.')
        && name
            .rsplit_once(".wgadm-")
            .is_some_and(|(_, pid)| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
}

thread_local! {
    /// The state directory this thread holds the exclusive lock on: the only one a [`Txn`] may
    /// change, and where its journal goes.
    static LOCKED: RefCell<Option<PathBuf>> = const { RefCell::new(None) };
}

/// Whether `dir` needs recovery: a journal or a temporary file is there.
fn needs_recovery(dir: &Path) -> Result<bool> {
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let name = entry.map_err(|e| Error::io(dir, e))?.file_name();
        let name = name.to_string_lossy();
        if name == JOURNAL || is_temp(&name) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Brings an interrupted change to an end; the caller holds the exclusive lock. A valid
/// journal is rolled forward (the change is completed); without one, the temporary files of
/// the change that never reached its commit point are removed (the state stays as before).
fn recover(dir: &Path) -> Result<()> {
    let result = recover_inner(dir);
    result.map_err(|e| match &e {
        Error::Io { source, .. }
            if matches!(
                source.raw_os_error(),
                Some(libc::EACCES | libc::EPERM | libc::EROFS)
            ) =>
        {
            Error::Invalid(format!(
                "{}: an interrupted wgadm command left an unfinished change here that only a \
                 wgadm allowed to write the directory can finish ({e}); run any wgadm command \
                 as root (e.g. `sudo wgadm check`)",
                dir.display()
            ))
        }
        _ => e,
    })
}

fn recover_inner(dir: &Path) -> Result<()> {
    let journal_path = dir.join(JOURNAL);
    let mut completed = false;
    match read_regular(&journal_path, JOURNAL_LIMIT) {
        Ok(data) => {
            if let Some(journal) = Journal::parse(&data) {
                journal.apply(dir)?;
                completed = true;
            }
            remove_file(&journal_path)?;
            sync_dir(dir)?;
        }
        Err(Refusal::Io(e)) if e.kind() == ErrorKind::NotFound => {}
        Err(Refusal::Io(e)) => return Err(Error::io(&journal_path, e)),
        // Not a file wgadm made: not a journal, so nothing was committed.
        Err(Refusal::Refused(_)) => {
            remove_file(&journal_path)?;
            sync_dir(dir)?;
        }
    }
    let mut removed = 0;
    for d in [dir.to_owned(), dir.join("peers")] {
        let entries = match fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(&d, e)),
        };
        let mut here = 0;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&d, e))?;
            let name = entry.file_name();
            if is_temp(&name.to_string_lossy()) && entry.file_type().is_ok_and(|t| t.is_file()) {
                remove_file(&d.join(&name))?;
                here += 1;
            }
        }
        if here > 0 {
            sync_dir(&d)?;
        }
        removed += here;
    }
    if completed {
        eprintln!(
            "wgadm: {}: completed the change an interrupted wgadm command had committed \
             (from {JOURNAL})",
            dir.display()
        );
    }
    if removed > 0 {
        eprintln!(
            "wgadm: {}: removed {removed} temporary file(s) an interrupted wgadm command left \
             (its change had not been committed)",
            dir.display()
        );
    }
    Ok(())
}

fn remove_file(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(Error::io(path, e)),
        _ => Ok(()),
    }
}

/// Makes a directory's entries durable; a failure is an error (the change may not survive).
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// The renames and removals of a committed change, relative to the state directory.
#[derive(Debug, PartialEq)]
struct Journal {
    /// (temporary file in the state directory, final path)
    renames: Vec<(String, String)>,
    removals: Vec<String>,
}

impl Journal {
    fn text(&self) -> String {
        let mut body = format!("{JOURNAL_HEADER}\n");
        for (tmp, to) in &self.renames {
            body.push_str(&format!("rename {tmp} {to}\n"));
        }
        for path in &self.removals {
            body.push_str(&format!("remove {path}\n"));
        }
        let sum = hex(&Sha256::digest(body.as_bytes()));
        body.push_str(&format!("sha256 {sum}\n"));
        body
    }

    /// The journal, or `None` when it is torn, altered or names a path outside the state.
    fn parse(data: &[u8]) -> Option<Journal> {
        let text = std::str::from_utf8(data).ok()?;
        let body_end = text.trim_end_matches('\n').rfind('\n')? + 1;
        let (body, last) = text.split_at(body_end);
        let sum = last.strip_prefix("sha256 ")?.strip_suffix('\n')?;
        if hex(&Sha256::digest(body.as_bytes())) != sum {
            return None;
        }
        let mut lines = body.lines();
        if lines.next()? != JOURNAL_HEADER {
            return None;
        }
        let mut journal = Journal {
            renames: Vec::new(),
            removals: Vec::new(),
        };
        for line in lines {
            let mut words = line.split(' ');
            match (words.next()?, words.next()?, words.next(), words.next()) {
                ("rename", tmp, Some(to), None)
                    if tmp.starts_with(TEMP_PREFIX) && !tmp.contains('/') && state_path(to) =>
                {
                    journal.renames.push((tmp.to_owned(), to.to_owned()));
                }
                ("remove", path, None, None) if state_path(path) => {
                    journal.removals.push(path.to_owned())
                }
                _ => return None,
            }
        }
        Some(journal)
    }

    /// Does the renames and removals that are not done yet, then makes them durable. Running
    /// it again after a crash anywhere inside is harmless: a rename whose temporary file is
    /// gone was done.
    fn apply(&self, dir: &Path) -> Result<()> {
        let mut touched = vec![dir.to_owned()];
        for (tmp, to) in &self.renames {
            let from = dir.join(tmp);
            let to = dir.join(to);
            let parent = to.parent().unwrap_or(dir).to_owned();
            match fs::symlink_metadata(&from) {
                Ok(_) => {
                    if !parent.exists() {
                        fs::DirBuilder::new()
                            .mode(0o700)
                            .create(&parent)
                            .map_err(|e| Error::io(&parent, e))?;
                    }
                    fs::rename(&from, &to).map_err(|e| Error::io(&to, e))?;
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&from, e)),
            }
            touched.push(parent);
        }
        for path in &self.removals {
            let path = dir.join(path);
            remove_file(&path)?;
            touched.push(path.parent().unwrap_or(dir).to_owned());
        }
        touched.sort();
        touched.dedup();
        // Children first: the state directory last.
        for d in touched.iter().rev() {
            if d.exists() {
                sync_dir(d)?;
            }
        }
        Ok(())
    }
}

/// A path of the state relative to its directory: `server.*` or `peers/NAME.*`, nothing that
/// could leave the directory.
fn state_path(p: &str) -> bool {
    let file = p.strip_prefix("peers/").unwrap_or(p);
    !file.is_empty()
        && !file.starts_with('.')
        && file
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

enum Op {
    Write {
        path: PathBuf,
        bytes: Zeroizing<Vec<u8>>,
        mode: u32,
    },
    Remove {
        path: PathBuf,
    },
}

/// A set of file changes of the state applied together: the state is left either as before
/// or as after, whatever instant the process is killed at and whatever write, rename or fsync
/// fails. Must be committed while holding [`Store::lock_exclusive`].
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
            bytes: Zeroizing::new(bytes.into()),
            mode,
        });
        self
    }

    /// Removes a file (a missing file is fine).
    pub fn remove(&mut self, path: PathBuf) -> &mut Self {
        self.ops.push(Op::Remove { path });
        self
    }

    /// Applies the changes through a journal:
    ///
    /// 1. every new file is written to an exclusively created temporary file with an
    ///    unpredictable name in the state directory, with its exact mode, and synced;
    /// 2. the journal (the renames and removals, with a checksum) is written and synced under a
    ///    temporary name and renamed to `.wgadm-journal`, and the directory synced: the commit
    ///    point;
    /// 3. the renames and removals are done, every touched directory synced, the journal
    ///    removed and the directory synced.
    ///
    /// A failure before the commit point leaves the state as before (the temporary files are
    /// removed, now or by the next command); after it, the next wgadm command completes the
    /// change under the lock (see [`Store::lock_exclusive`]).
    pub fn commit(self) -> Result<()> {
        let Some(dir) = LOCKED.with(|l| l.borrow().clone()) else {
            return Err(Error::Invalid(
                "internal error: a state change without the state's exclusive lock".into(),
            ));
        };
        let mut created = Vec::new();
        let mut staged = Vec::new();
        let result = self.prepare(&dir, &mut created, &mut staged);
        let journal = match result {
            Ok(journal) => journal,
            Err(e) => {
                for tmp in &staged {
                    let _ = fs::remove_file(dir.join(tmp));
                }
                for d in created.iter().rev() {
                    let _ = fs::remove_dir(d);
                }
                return Err(e);
            }
        };
        // Committed: from here on an error leaves the journal for the next command.
        let finish = || -> Result<()> {
            journal.apply(&dir)?;
            fs::remove_file(dir.join(JOURNAL)).map_err(|e| Error::io(&dir.join(JOURNAL), e))?;
            sync_dir(&dir)
        };
        finish().map_err(|e| {
            Error::Invalid(format!(
                "{e}; the change was committed but not finished: the next wgadm command \
                 finishes it ({})",
                dir.join(JOURNAL).display()
            ))
        })
    }

    /// Steps 1 and 2 of [`Txn::commit`]; returns the journal once it is in place.
    fn prepare(
        &self,
        dir: &Path,
        created: &mut Vec<PathBuf>,
        staged: &mut Vec<String>,
    ) -> Result<Journal> {
        let rel = |path: &Path| -> Result<String> {
            path.strip_prefix(dir)
                .ok()
                .and_then(|p| p.to_str())
                .filter(|p| state_path(p))
                .map(str::to_owned)
                .ok_or_else(|| {
                    Error::Invalid(format!(
                        "internal error: {} is not a file of the state {}",
                        path.display(),
                        dir.display()
                    ))
                })
        };
        for d in &self.dirs {
            if !d.exists() {
                fs::DirBuilder::new()
                    .mode(0o700)
                    .recursive(true)
                    .create(d)
                    .map_err(|e| Error::io(d, e))?;
                created.push(d.clone());
                sync_dir(d.parent().unwrap_or(dir))?;
            }
        }
        let mut journal = Journal {
            renames: Vec::new(),
            removals: Vec::new(),
        };
        for op in &self.ops {
            match op {
                Op::Write { path, bytes, mode } => {
                    let to = rel(path)?;
                    let tmp = create_temp(dir, bytes, *mode, staged).map_err(|e| match e {
                        Error::Io { source, .. } => Error::io(path, source),
                        e => e,
                    })?;
                    journal.renames.push((tmp, to));
                }
                Op::Remove { path } => journal.removals.push(rel(path)?),
            }
        }
        let tmp = create_temp(dir, journal.text().as_bytes(), SECRET_MODE, staged)?;
        // The temporary files' names must be on disk before the journal that names them.
        sync_dir(dir)?;
        fs::rename(dir.join(&tmp), dir.join(JOURNAL))
            .map_err(|e| Error::io(&dir.join(JOURNAL), e))?;
        staged.pop();
        // The commit point is durable only with the directory synced; if that fails, the
        // change may be lost or kept by a crash, so it must not be reported done: roll it back.
        if let Err(e) = sync_dir(dir) {
            let _ = fs::remove_file(dir.join(JOURNAL));
            return Err(e);
        }
        Ok(journal)
    }
}

/// Creates a temporary file in `dir` under an unpredictable name (exclusively, never through a
/// symlink), with exactly `mode`, holding `bytes`, synced; records its name in `staged`.
fn create_temp(dir: &Path, bytes: &[u8], mode: u32, staged: &mut Vec<String>) -> Result<String> {
    let mut random = [0u8; 8];
    getrandom::fill(&mut random)
        .map_err(|e| Error::Invalid(format!("the OS gave no randomness for a file name: {e}")))?;
    let name = format!("{TEMP_PREFIX}{}", hex(&random));
    let path = dir.join(&name);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    staged.push(name.clone());
    // The umask may have narrowed the mode; secrets must be exactly 0600, public files 0644.
    f.set_permissions(fs::Permissions::from_mode(mode))
        .and_then(|()| f.write_all(bytes))
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io(&path, e))?;
    Ok(name)
}

/// Writes one file atomically (outside the state directory, e.g. `--config-out`) through an
/// exclusively created temporary file with an unpredictable name beside it.
pub fn write_file_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut staged = Vec::new();
    let result = create_temp(dir, bytes, mode, &mut staged)
        .map_err(|e| match e {
            Error::Io { source, .. } => Error::io(path, source),
            e => e,
        })
        .and_then(|tmp| fs::rename(dir.join(tmp), path).map_err(|e| Error::io(path, e)));
    if result.is_err() {
        for tmp in staged {
            let _ = fs::remove_file(dir.join(tmp));
        }
    }
    result
}

fn try_lock(r: std::result::Result<(), fs::TryLockError>) -> std::io::Result<bool> {
    match r {
        Ok(()) => Ok(true),
        Err(fs::TryLockError::WouldBlock) => Ok(false),
        Err(fs::TryLockError::Error(e)) => Err(e),
    }
}

/// A waiting lock is always taken.
fn taken(lock: Option<Lock>) -> Result<Lock> {
    lock.ok_or_else(|| Error::Invalid("internal error: the state's lock was not taken".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journal() -> Journal {
        Journal {
            renames: vec![
                (
                    format!("{TEMP_PREFIX}0011223344556677"),
                    "peers/alice.key".into(),
                ),
                (
                    format!("{TEMP_PREFIX}8899aabbccddeeff"),
                    "server.yml".into(),
                ),
            ],
            removals: vec!["peers/alice.psk".into()],
        }
    }

    /// A state of `n` peers `p0000`.. in a new directory, and a store on it whose parse cache
    /// is in a directory of its own and takes files at once.
    fn cached_state(n: usize) -> (tempfile::TempDir, tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let cache = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path())
            .with_parse_cache(Some(cache.path().to_owned()))
            .with_parse_cache_settle(std::time::Duration::ZERO);
        let key = "YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXphYmNkZWY=";
        fs::write(
            store.server_yml(),
            format!(
                "interface: wg0\nlisten_port: 51820\nendpoint: vpn.example.com:51820\n\
                 subnet: 10.8.0.0/16\naddress: 10.8.0.1\npublic_key: {key}\naccess: []\n"
            ),
        )
        .unwrap();
        fs::create_dir(store.peers_dir()).unwrap();
        for i in 0..n {
            fs::write(
                store.peers_dir().join(format!("p{i:04}.yml")),
                format!(
                    "address: 10.8.{}.{}\npublic_key: {key}\nkeepalive: 25\nenabled: true\n",
                    1 + i / 250,
                    1 + i % 250
                ),
            )
            .unwrap();
        }
        (dir, cache, store)
    }

    fn cache_file(cache: &Path) -> PathBuf {
        let files: Vec<_> = fs::read_dir(cache).unwrap().flatten().collect();
        assert_eq!(files.len(), 1, "{files:?}");
        files[0].path()
    }

    #[test]
    fn the_parse_cache_is_used_only_while_each_file_is_unchanged() {
        let n = PARSE_CACHE_MIN_PEERS;
        let (_dir, cache, store) = cached_state(n);
        let parsed = store.load().unwrap();
        assert_eq!(parsed.peers.len(), n);
        let path = cache_file(cache.path());
        assert_eq!(store.load().unwrap(), parsed, "loaded from the cache");

        // The cache is what a load takes for an unchanged file: an entry altered in it (its
        // stamp kept) shows. (Nothing but wgadm writes there; this proves it is used.)
        let text = fs::read_to_string(&path).unwrap();
        let altered = text.replacen("\"keepalive\":25", "\"keepalive\":26", 1);
        assert_ne!(altered, text);
        fs::write(&path, altered).unwrap();
        let name: PeerName = "p0000".parse().unwrap();
        assert_eq!(store.load().unwrap().peers[&name].keepalive, 26);

        // A file replaced (a new file renamed over it, as wgadm writes), one edited in place,
        // one removed, one added: each is read anew, and the result is what parsing gives.
        let file = |i: usize| store.peers_dir().join(format!("p{i:04}.yml"));
        let p0 = fs::read_to_string(file(0)).unwrap();
        let tmp = store.peers_dir().join(".new");
        fs::write(&tmp, p0.replace("keepalive: 25", "keepalive: 24")).unwrap();
        fs::rename(&tmp, file(0)).unwrap();
        let p1 = fs::read_to_string(file(1)).unwrap();
        fs::write(file(1), p1.replace("keepalive: 25", "keepalive: 0")).unwrap();
        fs::remove_file(file(2)).unwrap();
        fs::write(file(n), p1.replace("10.8.1.2", "10.8.9.9")).unwrap();
        let uncached = Store::new(store.dir())
            .with_parse_cache(None)
            .load()
            .unwrap();
        let cached = store.load().unwrap();
        assert_eq!(cached, uncached);
        assert_eq!(cached.peers[&name].keepalive, 24);
        assert_eq!(store.load().unwrap(), uncached, "the rewritten cache");

        // A file turned into a symlink is refused as without a cache.
        fs::remove_file(file(3)).unwrap();
        std::os::unix::fs::symlink(file(4), file(3)).unwrap();
        let err = store.load().unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");
        fs::remove_file(file(3)).unwrap();

        // A torn cache is no cache.
        fs::write(&path, &fs::read(&path).unwrap()[..100]).unwrap();
        let uncached = Store::new(store.dir())
            .with_parse_cache(None)
            .load()
            .unwrap();
        assert_eq!(store.load().unwrap(), uncached);
    }

    #[test]
    fn small_states_and_fresh_files_are_not_cached() {
        let (_dir, cache, store) = cached_state(PARSE_CACHE_MIN_PEERS - 1);
        store.load().unwrap();
        assert_eq!(fs::read_dir(cache.path()).unwrap().count(), 0);
        // Files changed within the settle time are parsed every time until they are older.
        let (_dir, cache, store) = cached_state(PARSE_CACHE_MIN_PEERS);
        let store = store.with_parse_cache_settle(std::time::Duration::from_secs(3600));
        store.load().unwrap();
        assert_eq!(fs::read_dir(cache.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_journal_reads_back_as_written() {
        assert_eq!(Journal::parse(journal().text().as_bytes()), Some(journal()));
    }

    #[test]
    fn a_torn_altered_or_escaping_journal_is_no_journal() {
        let text = journal().text();
        for cut in [1, text.len() / 2, text.len() - 1] {
            assert_eq!(
                Journal::parse(&text.as_bytes()[..cut]),
                None,
                "cut at {cut}"
            );
        }
        let altered = text.replace("alice.psk", "alice.yml");
        assert_eq!(Journal::parse(altered.as_bytes()), None);
        for bad in [
            "../etc/passwd",
            "/etc/passwd",
            "peers/../../x",
            "peers/.hidden",
            "",
        ] {
            let j = Journal {
                renames: vec![],
                removals: vec![bad.into()],
            };
            assert_eq!(Journal::parse(j.text().as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn temporary_files_are_recognised_old_and_new() {
        assert!(is_temp(".wgadm-tmp-0123456789abcdef"));
        assert!(is_temp(".alice.key.wgadm-4242"));
        assert!(!is_temp("alice.key"));
        assert!(!is_temp(".wgadm-journal"));
        assert!(!is_temp(".alice.key.wgadm-x"));
    }
}
