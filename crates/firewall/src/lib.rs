//! The firewall shell: loads the ruleset `wgadm_core::firewall` renders into the kernel with
//! `nft`, reads the per-peer drop counters back, and switches IPv4 forwarding on.
//!
//! Everything goes through nftables' own parser (package nftables) rather than netlink from
//! Rust: nft parses, validates and batches the script into one transaction, and its error
//! messages point at the line that is wrong. It is called in-process through libnftables when
//! that library loads (see `libnft`: no program started per step), else by running `nft`. Only
//! wgadm's table (`inet wgadm`) is ever named, so rules of others are never touched.

#![warn(missing_docs)]

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::{ErrorKind, Read, Write};
use std::net::Ipv4Addr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use wgadm_core::firewall::{
    digest, element_text, element_update, gate_rule, replacing, ruleset, ruleset_digest_with,
    shape, text_diff, text_digest, Counter, Options, DENY_DROPS_SET, DIGEST_SET, GATE_MARK,
    GATE_RULE_PRIORITY, TABLE_FAMILY, TABLE_NAME,
};
use wgadm_core::{Date, State};

/// Where the peers' elements of each loaded ruleset are kept, one file per elements digest
/// (tmpfs: gone at reboot, like the table). With it a peer change is diffed against what is in
/// force without listing thousands of elements from the kernel.
pub const ELEMENTS_DIR: &str = "/run/wgadm/nft-elements";

/// How a ruleset was put in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    /// The table in force already was the wanted one.
    Unchanged,
    /// Only the peers' elements differed: changed in place, in one transaction.
    Elements {
        /// Elements added.
        added: usize,
        /// Elements deleted.
        removed: usize,
    },
    /// The table was replaced (loaded anew) in one transaction.
    Table,
}

/// The environment variable that makes wgadm run an nft program (its value: a name looked up
/// on PATH, or a path) instead of calling libnftables in-process.
pub const NFT_ENV: &str = "WGADM_NFT";

/// The per-namespace switch for IPv4 forwarding.
pub const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// The directory of the per-interface IPv4 switches, `IF/forwarding` in it.
pub const CONF_DIR: &str = "/proc/sys/net/ipv4/conf";

/// The oldest nft whose features the ruleset uses (see `wgadm_core::firewall`).
pub const MIN_NFT: (u32, u32, u32) = (0, 9, 7);

/// Longest nft message kept in an error; a refused 5,000-peer script can produce pages.
const MAX_MESSAGE: usize = 4000;

/// The options wgadm renders table inet wgadm with: handshake initiations and responses are
/// copied to the NFLOG groups of `HANDSHAKE_LOG` (51820 and 51821), which `wgadm daemon` reads
/// to count refused handshakes. Without a reader the copies cost next to nothing: the kernel
/// drops them at once. `apply`, `firewall show` and the daemon's guard all take them from here,
/// so they render and compare the same table.
pub fn options() -> Options {
    Options {
        handshake_log: Some(wgadm_core::firewall::HANDSHAKE_LOG),
        ..Options::default()
    }
}

/// What can go wrong with the firewall. Every message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    /// The nft program is not installed.
    #[error(
        "{program} not found: wgadm's firewall needs nft from the package nftables \
         (apt-get install nftables)"
    )]
    NftMissing {
        /// The program looked for.
        program: String,
    },
    /// nft is older than the ruleset needs.
    #[error(
        "{program} is nftables {found}; wgadm's firewall needs {}.{}.{} or later \
         (Debian 11 or later): upgrade the package nftables",
        MIN_NFT.0, MIN_NFT.1, MIN_NFT.2
    )]
    TooOld {
        /// The program asked.
        program: String,
        /// The version it reported.
        found: String,
    },
    /// nft may not talk to the kernel's netfilter.
    #[error(
        "nft was not allowed to {action}: it needs root (CAP_NET_ADMIN in this network \
         namespace); run wgadm as root. nft said: {message}"
    )]
    NotPermitted {
        /// What wgadm tried.
        action: &'static str,
        /// nft's message.
        message: String,
    },
    /// nft refused the ruleset: nothing of it was loaded.
    #[error(
        "nft refused the ruleset, so the firewall in force is unchanged: {message}{hint}\n\
         `wgadm firewall show > FILE && nft -c -f FILE` shows the same error"
    )]
    Refused {
        /// nft's message, naming the line it refused.
        message: String,
        /// What the message likely means, when we can tell.
        hint: &'static str,
    },
    /// Another nft command failed.
    #[error("nft failed to {action}: {message}")]
    Nft {
        /// What wgadm tried.
        action: &'static str,
        /// nft's message.
        message: String,
    },
    /// nft could not be started or talked to.
    #[error("could not run {program}: {source}")]
    Run {
        /// The program.
        program: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// nft printed something wgadm does not understand.
    #[error(
        "could not read nft's listing of {what}: {why}; is this nftables {}.{}.{} or later \
         built with JSON support?",
        MIN_NFT.0, MIN_NFT.1, MIN_NFT.2
    )]
    Listing {
        /// What was listed.
        what: &'static str,
        /// What was wrong with it.
        why: String,
    },
    /// The interface's own forwarding switch could not be set.
    #[error("cannot set forwarding from {iface}: writing {value} to {}: {source}", .path.display())]
    IfaceForward {
        /// The interface.
        iface: String,
        /// The sysctl file.
        path: PathBuf,
        /// What was written.
        value: u8,
        /// The OS error.
        source: std::io::Error,
    },
    /// After loading, the table in force is not the one loaded.
    #[error(
        "nft took the ruleset, but table inet wgadm is not in force afterwards ({found}): \
         something removed or replaced it at the same moment; forwarding from {iface} stays \
         off; run `wgadm apply` again"
    )]
    NotInForce {
        /// The interface kept from forwarding.
        iface: String,
        /// What was found instead.
        found: String,
    },
    /// IPv4 forwarding could not be switched on.
    #[error("cannot switch IPv4 forwarding on: writing 1 to {}: {source}; {hint}", .path.display())]
    IpForward {
        /// The sysctl file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
        /// What to do about it.
        hint: &'static str,
    },
}

/// How wgadm reaches nftables: libnftables in this process when it loads, else `nft` from
/// PATH; or another command (a path, or a wrapper such as `ip netns exec NS nft` for tests in
/// a network namespace); or the library in another network namespace (tests).
#[derive(Debug, Clone)]
pub struct Nft {
    program: PathBuf,
    prefix: Vec<OsString>,
    library: Library,
    elements_dir: PathBuf,
}

/// Whether [`Nft`] calls libnftables in-process.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Library {
    /// When it loads (else the program).
    Auto,
    /// Never: the program (or wrapper) given.
    Off,
    /// Always, in the network namespace at this path (a `/run/netns/NAME`).
    In(PathBuf),
}

impl Default for Nft {
    fn default() -> Self {
        Nft::new()
    }
}

impl Nft {
    /// `nft` from PATH.
    pub fn new() -> Self {
        Nft {
            program: PathBuf::from("nft"),
            prefix: Vec::new(),
            library: Library::Auto,
            elements_dir: ELEMENTS_DIR.into(),
        }
    }

    /// What wgadm uses: the program named by the environment variable [`NFT_ENV`] when it is
    /// set (e.g. `nft`, a path or a wrapper on PATH), else [`Nft::new`].
    pub fn from_env() -> Self {
        match std::env::var_os(NFT_ENV) {
            Some(program) if !program.is_empty() => Nft::with_program(program),
            _ => Nft::new(),
        }
    }

    /// libnftables in-process, talking to the network namespace at `netns` (e.g.
    /// `/run/netns/NAME`), for tests of the in-process path; fails when the library does not
    /// load.
    pub fn library_in_netns(netns: impl Into<PathBuf>) -> Self {
        Nft {
            library: Library::In(netns.into()),
            ..Nft::new()
        }
    }

    /// Whether nftables is called in-process (libnftables) rather than by running a program.
    pub fn in_process(&self) -> bool {
        self.lib().is_some()
    }

    fn lib(&self) -> Option<&'static libnft::Lib> {
        match self.library {
            Library::Off => None,
            Library::Auto | Library::In(_) => libnft::get(),
        }
    }

    /// `program` instead of `nft`.
    pub fn with_program(program: impl Into<PathBuf>) -> Self {
        Nft {
            program: program.into(),
            prefix: Vec::new(),
            library: Library::Off,
            elements_dir: ELEMENTS_DIR.into(),
        }
    }

    /// `program ARGS... <nft arguments>`, e.g. `ip netns exec NS nft`.
    pub fn with_command<I, S>(program: impl Into<PathBuf>, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        Nft {
            program: program.into(),
            prefix: args.into_iter().map(Into::into).collect(),
            library: Library::Off,
            elements_dir: ELEMENTS_DIR.into(),
        }
    }

    /// Keeps the loaded elements under `dir` instead of [`ELEMENTS_DIR`].
    pub fn with_elements_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.elements_dir = dir.into();
        self
    }

    fn name(&self) -> String {
        if let Library::In(netns) = &self.library {
            return format!("libnftables.so.1 in {}", netns.display());
        }
        let mut parts = vec![self.program.display().to_string()];
        parts.extend(self.prefix.iter().map(|a| a.to_string_lossy().into_owned()));
        parts.join(" ")
    }

    /// Runs nft with `args`, feeding `stdin` when given. Messages come in English whatever
    /// the locale, so they can be recognized.
    fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<Output, FirewallError> {
        let run_err = |source| FirewallError::Run {
            program: self.name(),
            source,
        };
        match (&self.library, self.lib()) {
            (Library::In(netns), Some(lib)) => {
                return libnft::run(lib, args, stdin, Some(netns)).map_err(run_err)
            }
            (Library::In(_), None) => {
                return Err(FirewallError::NftMissing {
                    program: self.name(),
                })
            }
            (Library::Auto, Some(lib)) => {
                return libnft::run(lib, args, stdin, None).map_err(run_err)
            }
            _ => {}
        }
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.prefix)
            .args(args)
            .env("LC_ALL", "C")
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|source| match source.kind() {
            ErrorKind::NotFound => FirewallError::NftMissing {
                program: self.name(),
            },
            _ => FirewallError::Run {
                program: self.name(),
                source,
            },
        })?;
        match (stdin, child.stdin.take()) {
            (Some(text), Some(mut pipe)) => {
                // Written from a thread: nft could answer on stderr before it has read all of
                // a large script, and a full pipe both ways would hang us both.
                std::thread::scope(|scope| {
                    let writer = scope.spawn(move || pipe.write_all(text.as_bytes()));
                    let output = child.wait_with_output().map_err(run_err)?;
                    match writer.join() {
                        // nft quitting early (a broken pipe) shows in its exit status.
                        Ok(Ok(())) | Ok(Err(_)) => Ok(output),
                        Err(_) => Err(run_err(std::io::Error::other(
                            "the thread feeding nft failed",
                        ))),
                    }
                })
            }
            _ => child.wait_with_output().map_err(run_err),
        }
    }

    /// Checks that nft is installed, new enough, and allowed to talk to netfilter. Returns
    /// the version it reported.
    pub fn preflight(&self) -> Result<String, FirewallError> {
        // The library in use is new enough by construction (see `libnft`).
        if self.in_process() {
            return Ok("libnftables.so.1".into());
        }
        let out = self.run(&["--version"], None)?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            // A wrapper (ip netns exec) exits non-zero when nft itself is missing.
            let err = String::from_utf8_lossy(&out.stderr);
            if err.contains("No such file") || err.contains("not found") {
                return Err(FirewallError::NftMissing {
                    program: self.name(),
                });
            }
            return Err(self.failed("report its version", &out));
        }
        let found = parse_version(&text).ok_or_else(|| FirewallError::Listing {
            what: "nft --version",
            why: format!("no version in {:?}", text.trim()),
        })?;
        if found < MIN_NFT {
            return Err(FirewallError::TooOld {
                program: self.name(),
                found: format!("{}.{}.{}", found.0, found.1, found.2),
            });
        }
        // No listing here to check permissions: at thousands of peers any listing costs tens of
        // milliseconds (nft fetches every set element), and the next call reports a refusal.
        Ok(format!("{}.{}.{}", found.0, found.1, found.2))
    }

    /// The error for a failed nft command other than loading a ruleset.
    fn failed(&self, action: &'static str, out: &Output) -> FirewallError {
        let message = message_of(out);
        if is_not_permitted(&message) {
            FirewallError::NotPermitted { action, message }
        } else {
            FirewallError::Nft { action, message }
        }
    }

    /// `nft [-t] list table inet wgadm`, or `None` when the table is not there.
    fn list_table(&self, terse: bool) -> Result<Option<String>, FirewallError> {
        let table = [TABLE_FAMILY, TABLE_NAME];
        let mut args = Vec::new();
        if terse {
            args.push("-t");
        }
        args.extend(["list", "table"]);
        args.extend(table);
        let out = self.run(&args, None)?;
        if out.status.success() {
            return Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned()));
        }
        if is_absent(&out) {
            return Ok(None);
        }
        Err(self.failed("list wgadm's table", &out))
    }

    /// wgadm's table without set elements and without counter values (`nft -t -s list table
    /// inet wgadm`), or `None` when there is none: it changes only when a rule, chain or set
    /// definition does, so a change made by hand shows.
    pub fn rules_listing(&self) -> Result<Option<String>, FirewallError> {
        let out = self.run(
            &["-t", "-s", "list", "table", TABLE_FAMILY, TABLE_NAME],
            None,
        )?;
        if out.status.success() {
            return Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned()));
        }
        if is_absent(&out) {
            return Ok(None);
        }
        Err(self.failed("list wgadm's table", &out))
    }

    /// wgadm's table as the kernel has it (`nft list table inet wgadm`), or `None` when
    /// there is none.
    pub fn listing(&self) -> Result<Option<String>, FirewallError> {
        self.list_table(false)
    }

    /// The digest of the ruleset in force (the comment of the one element of
    /// [`DIGEST_SET`]), or `None` without a table or without that set (a table of an older
    /// wgadm). Lists that one set only: nft fetches no other set's elements for it, so it costs
    /// the same at any number of peers.
    pub fn loaded_digest(&self) -> Result<Option<String>, FirewallError> {
        let out = self.run(&["list", "set", TABLE_FAMILY, TABLE_NAME, DIGEST_SET], None)?;
        if out.status.success() {
            return Ok(digest(&String::from_utf8_lossy(&out.stdout)).map(str::to_owned));
        }
        if is_absent(&out) {
            return Ok(None);
        }
        Err(self.failed("list wgadm's ruleset digest", &out))
    }

    /// Puts `ruleset` (from `wgadm_core::firewall::ruleset`) in force. Returns `false` and
    /// loads nothing when the table in force already carries the same digest, so counters
    /// survive an apply that changes nothing; otherwise loads it in one transaction and
    /// returns `true`. When nft refuses it, nothing of it is loaded: the previous ruleset
    /// stays in force, and the error carries nft's message.
    ///
    /// The digest only reflects what wgadm loaded: rules someone added to wgadm's table by
    /// hand are not noticed until the state changes (or [`Nft::remove`] then apply).
    pub fn apply(&self, ruleset: &str) -> Result<bool, FirewallError> {
        let loaded = self.loaded_digest()?;
        if let Some(wanted) = digest(ruleset) {
            if loaded.as_deref() == Some(wanted) {
                return Ok(false);
            }
        }
        self.replace(ruleset, loaded.is_some()).map(|()| true)
    }

    /// Puts the ruleset of `state` for `today` in force, given the digest of the table in
    /// force (`loaded`, from [`Nft::loaded_digest`]): nothing when it is the wanted one; when
    /// only the peers' elements differ and the elements in force are known, those elements
    /// are changed in one transaction (counters of the others keep counting); otherwise the
    /// table is replaced in one transaction, per-peer drop counters carried over (those in
    /// `options`, else the table's). A refused
    /// element change (the table was changed by hand) falls back to replacing the table.
    pub fn put(
        &self,
        state: &State,
        today: Date,
        options: &Options,
        loaded: Option<&str>,
    ) -> Result<Put, FirewallError> {
        let new = element_text(state, today);
        let wanted = ruleset_digest_with(state, today, options, &new);
        self.put_text(state, today, options, loaded, &wanted, &new)
    }

    /// [`Nft::put`] for a caller that has the digest of the wanted ruleset already (`wanted`,
    /// from `ruleset_digest` of the same state, day and options): it is not worked out again.
    pub fn put_digest(
        &self,
        state: &State,
        today: Date,
        options: &Options,
        loaded: Option<&str>,
        wanted: &str,
    ) -> Result<Put, FirewallError> {
        if loaded == Some(wanted) {
            return Ok(Put::Unchanged);
        }
        let new = element_text(state, today);
        self.put_text(state, today, options, loaded, wanted, &new)
    }

    /// [`Nft::put_digest`] for a caller that has the element text of the same state and day
    /// too (`new`, from `element_text`, whose digest `wanted` carries): the peers' elements
    /// are worked out once per apply, and diffed as text against the kept copy of those in
    /// force.
    pub fn put_text(
        &self,
        state: &State,
        today: Date,
        options: &Options,
        loaded: Option<&str>,
        wanted: &str,
        new: &str,
    ) -> Result<Put, FirewallError> {
        let wanted = wanted.to_owned();
        if loaded == Some(wanted.as_str()) {
            return Ok(Put::Unchanged);
        }
        if let Some(diff) = loaded
            .filter(|l| shape(l) == shape(&wanted))
            .and_then(|l| self.recall(l))
            .and_then(|old| text_diff(&old, new))
        {
            if self.load(&element_update(&diff, &wanted)).is_ok() {
                self.remember(&wanted, new);
                return Ok(Put::Elements {
                    added: diff.added.len(),
                    removed: diff.removed.len(),
                });
            }
        }
        // Counters to carry: the caller's, else those of the table in force.
        let carried_drops = match options.carried_drops.is_empty() {
            true => self.drop_counters()?,
            false => options.carried_drops.clone(),
        };
        let options = Options {
            carried_drops,
            ..options.clone()
        };
        self.replace(&ruleset(state, today, &options), loaded.is_some())?;
        self.remember(&wanted, new);
        Ok(Put::Table)
    }

    /// Loads the whole `ruleset`: in place when the table in force is one wgadm loaded
    /// (`ours`: its digest was read), so its base chains and sets stay (a table deleted and
    /// made anew drops packets on the kernel, docs/kernel.md); otherwise, or when nft refuses
    /// the change in place (a set's type or a hook differs: an older layout), the table is
    /// deleted and built anew, still in one transaction. Both forms are all or nothing.
    fn replace(&self, ruleset: &str, ours: bool) -> Result<(), FirewallError> {
        if ours {
            match self.load(ruleset) {
                Err(FirewallError::Refused { .. }) => {}
                done => return done,
            }
        }
        self.load(&replacing(ruleset))
    }

    /// Whether [`Nft::put`] would change the elements in place: the table in force (`loaded`)
    /// has the shape of `wanted` and its elements are known. (nft may still refuse the change,
    /// and then the table is replaced.)
    pub fn can_update_in_place(&self, loaded: Option<&str>, wanted: &str) -> bool {
        loaded.is_some_and(|l| shape(l) == shape(wanted) && self.recall(l).is_some())
    }

    fn elements_file(&self, digest: &str) -> Option<PathBuf> {
        let (_, elements) = digest.split_once('-')?;
        elements
            .bytes()
            .all(|b| b.is_ascii_hexdigit())
            .then(|| self.elements_dir.join(elements))
    }

    /// The element text loaded under `digest`, when it was kept and still matches it.
    fn recall(&self, digest: &str) -> Option<String> {
        let text = std::fs::read_to_string(self.elements_file(digest)?).ok()?;
        // The file is named by the digest of its content: a torn or altered file is not used.
        // Hashed as read, without splitting it into lines first (thousands of them).
        let (_, elements) = digest.split_once('-')?;
        (text_digest(&text) == elements).then_some(text)
    }

    /// Keeps the element text of the ruleset just put in force. Best effort: without the
    /// file the next change replaces the table, which is correct, only slower.
    fn remember(&self, digest: &str, text: &str) {
        let Some(path) = self.elements_file(digest) else {
            return;
        };
        if path.exists() {
            return;
        }
        // Root's alone (0700/0600): the lines name every peer's address and access list.
        if std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.elements_dir)
            .is_err()
        {
            return;
        }
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| f.write_all(text.as_bytes()));
        if written.is_ok() && std::fs::rename(&tmp, &path).is_ok() {
            // Older files are no longer wanted: drop those unused for ten minutes (another
            // table in another network namespace may still use a recent one).
            if let Ok(entries) = std::fs::read_dir(&self.elements_dir) {
                for e in entries.flatten() {
                    let old = e
                        .metadata()
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.elapsed().ok())
                        .is_some_and(|age| age.as_secs() > 600);
                    if old && e.path() != path {
                        let _ = std::fs::remove_file(e.path());
                    }
                }
            }
        } else {
            let _ = std::fs::remove_file(&tmp);
        }
    }

    /// Loads `ruleset` in one transaction, without first comparing digests (for a caller
    /// that already did). When nft refuses it, the previous ruleset stays in force.
    pub fn load(&self, ruleset: &str) -> Result<(), FirewallError> {
        // No separate `nft -c` first: `nft -f` is one transaction, all or nothing, and a
        // check would double the time of a large ruleset.
        let out = self.run(&["-f", "-"], Some(ruleset))?;
        if out.status.success() {
            return Ok(());
        }
        let message = message_of(&out);
        if is_not_permitted(&message) {
            return Err(FirewallError::NotPermitted {
                action: "load the ruleset",
                message,
            });
        }
        let hint = if message.contains("No such file or directory")
            || message.contains("Operation not supported")
            || message.contains("Protocol not supported")
        {
            "\n(on a line wgadm wrote, nft says this when the kernel lacks a feature the \
             line uses, e.g. the module nft_nat, nft_masq or nft_ct is not loaded: load it \
             on the host, a container cannot)"
        } else {
            ""
        };
        Err(FirewallError::Refused { message, hint })
    }

    /// Deletes wgadm's table. Returns whether there was one. Other tables stay as they are.
    pub fn remove(&self) -> Result<bool, FirewallError> {
        let out = self.run(&["delete", "table", TABLE_FAMILY, TABLE_NAME], None)?;
        if out.status.success() {
            Ok(true)
        } else if is_absent(&out) {
            Ok(false)
        } else {
            Err(self.failed("delete wgadm's table", &out))
        }
    }

    /// Per active peer address, the packets and bytes dropped toward `deny` since the table
    /// was loaded (or carried over from before, see `Options::carried_drops`). Empty when
    /// the table is not loaded.
    pub fn drop_counters(&self) -> Result<BTreeMap<Ipv4Addr, Counter>, FirewallError> {
        let out = self.run(
            &[
                "-j",
                "list",
                "set",
                TABLE_FAMILY,
                TABLE_NAME,
                DENY_DROPS_SET,
            ],
            None,
        )?;
        if !out.status.success() {
            if is_absent(&out) {
                return Ok(BTreeMap::new());
            }
            return Err(self.failed("list the drop counters", &out));
        }
        parse_counters(&out.stdout)
    }
}

/// `nftables v1.0.6 (Lester Gooch #5)` -> (1, 0, 6).
fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    let v = text.split_whitespace().find_map(|w| w.strip_prefix('v'))?;
    let mut parts = v.split('.').map(|p| {
        p.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse::<u32>()
    });
    let major = parts.next()?.ok()?;
    let minor = parts.next()?.ok()?;
    let patch = parts.next().and_then(Result::ok).unwrap_or(0);
    Some((major, minor, patch))
}

/// nft's stderr (or stdout when stderr is empty), trimmed and cut to a readable length.
fn message_of(out: &Output) -> String {
    let text = if out.stderr.is_empty() {
        &out.stdout
    } else {
        &out.stderr
    };
    let text = String::from_utf8_lossy(text);
    let text = text.trim();
    if text.len() <= MAX_MESSAGE {
        return text.to_owned();
    }
    let mut cut = MAX_MESSAGE;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let rest = text[cut..].lines().count();
    format!("{}\n... ({rest} more lines)", &text[..cut])
}

fn is_not_permitted(message: &str) -> bool {
    message.contains("Operation not permitted") || message.contains("Permission denied")
}

/// Whether nft failed because wgadm's table (or its set) does not exist.
fn is_absent(out: &Output) -> bool {
    String::from_utf8_lossy(&out.stderr).contains("No such file or directory")
}

/// The elements of `nft -j list set ...` with their counters.
fn parse_counters(json: &[u8]) -> Result<BTreeMap<Ipv4Addr, Counter>, FirewallError> {
    let bad = |why: String| FirewallError::Listing {
        what: "the drop counters",
        why,
    };
    let value: Value = serde_json::from_slice(json).map_err(|e| bad(e.to_string()))?;
    let items = value
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no \"nftables\" array".into()))?;
    let set = items
        .iter()
        .find_map(|i| i.get("set"))
        .ok_or_else(|| bad("no set in the listing".into()))?;
    let mut counters = BTreeMap::new();
    // An empty set has no "elem" at all.
    let Some(elements) = set.get("elem") else {
        return Ok(counters);
    };
    let elements = elements
        .as_array()
        .ok_or_else(|| bad("\"elem\" is not an array".into()))?;
    for element in elements {
        // With counters an element is {"elem": {"val": ADDR, "counter": {...}}}; a bare
        // address (no counter yet) counts as zero.
        let (addr, counter) = match element {
            Value::String(a) => (a.as_str(), None),
            _ => {
                let inner = element
                    .get("elem")
                    .ok_or_else(|| bad(format!("unexpected element {element}")))?;
                let addr = inner
                    .get("val")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad(format!("element without an address: {element}")))?;
                (addr, inner.get("counter"))
            }
        };
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| bad(format!("{addr:?} is not an IPv4 address")))?;
        let field = |name: &str| {
            counter
                .and_then(|c| c.get(name))
                .map_or(Some(0), Value::as_u64)
                .ok_or_else(|| bad(format!("the counter of {addr} has no number of {name}")))
        };
        counters.insert(
            addr,
            Counter {
                packets: field("packets")?,
                bytes: field("bytes")?,
            },
        );
    }
    Ok(counters)
}

/// Switches IPv4 forwarding on in this process's network namespace (the setting is per
/// namespace, so this works in an unprivileged container whose /proc/sys/net is writable).
/// Returns whether it was off.
pub fn enable_ip_forward() -> Result<bool, FirewallError> {
    enable_ip_forward_at(Path::new(IP_FORWARD))
}

/// [`enable_ip_forward`] on another file, for tests.
pub fn enable_ip_forward_at(path: &Path) -> Result<bool, FirewallError> {
    let fail = |source: std::io::Error| {
        let hint = match source.raw_os_error() {
            // EROFS
            Some(30) => {
                "/proc/sys is mounted read-only here (a container?): give the container \
                 net.ipv4.ip_forward=1 (LXC: lxc.mount.auto = proc:mixed leaves \
                 /proc/sys/net writable; docker: --sysctl net.ipv4.ip_forward=1)"
            }
            _ if matches!(source.kind(), ErrorKind::PermissionDenied) => {
                "run wgadm as root (it needs CAP_NET_ADMIN in this network namespace)"
            }
            _ if matches!(source.kind(), ErrorKind::NotFound) => {
                "is /proc mounted? set net.ipv4.ip_forward=1 another way (sysctl -w)"
            }
            _ => "set net.ipv4.ip_forward=1 another way (sysctl -w) and run apply again",
        };
        FirewallError::IpForward {
            path: path.to_owned(),
            source,
            hint,
        }
    };
    let mut now = String::new();
    OpenOptions::new()
        .read(true)
        .open(path)
        .and_then(|mut f| f.read_to_string(&mut now))
        .map_err(fail)?;
    if now.trim() == "1" {
        return Ok(false);
    }
    // Open for writing only: no create, no truncate, which a procfs file does not need.
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut f| f.write_all(b"1\n"))
        .map_err(fail)?;
    Ok(true)
}

/// Whether a line of `ip rule show` is the gate rule of `iface`, e.g.
/// `100:\tfrom all fwmark 0/0x20000000 iif wg0 [detached] blackhole`.
fn is_gate_rule(line: &str, iface: &str) -> bool {
    let words: Vec<&str> = line.split_whitespace().collect();
    let after = |key: &str| {
        words
            .iter()
            .position(|w| *w == key)
            .and_then(|i| words.get(i + 1))
            .copied()
    };
    let mark = after("fwmark").and_then(|m| m.split_once('/'));
    after("iif") == Some(iface)
        && words.last() == Some(&"blackhole")
        && mark.is_some_and(|(v, m)| {
            let num = |t: &str| u32::from_str_radix(t.trim_start_matches("0x"), 16).ok();
            num(v) == Some(0) && num(m) == Some(GATE_MARK)
        })
}

/// Installs the policy-routing rule that drops whatever arrives on `iface` without the mark
/// of wgadm's table (`wgadm_core::firewall::gate_rule`), unless it is there. It lives outside
/// nftables, so `nft flush ruleset` leaves it; it does not need the interface to exist.
/// Returns whether it was added.
pub fn ensure_gate_rule(iface: &str) -> Result<bool, FirewallError> {
    let rule = gate_rule(iface);
    let run = |args: &[&str]| {
        Command::new("ip")
            .args(args)
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .output()
            .map_err(|source| FirewallError::Run {
                program: "ip".into(),
                source,
            })
    };
    let prio = GATE_RULE_PRIORITY.to_string();
    // Read over rtnetlink in-process (every apply does this); `ip rule show` when that fails.
    match rules::has_gate_rule(iface) {
        Ok(true) => return Ok(false),
        Ok(false) => {}
        Err(_) => {
            let shown = run(&["-4", "rule", "show", "priority", &prio])?;
            let text = String::from_utf8_lossy(&shown.stdout);
            if text.lines().any(|l| is_gate_rule(l, iface)) {
                return Ok(false);
            }
        }
    }
    let mut args = vec!["-4", "rule", "add"];
    args.extend(rule.iter().map(String::as_str));
    let out = run(&args)?;
    if !out.status.success() {
        return Err(FirewallError::Nft {
            action: "add the policy-routing rule that keeps the VPN from being routed without \
                     wgadm's table (ip rule)",
            message: message_of(&out),
        });
    }
    Ok(true)
}

/// The fail-closed gate: whether packets arriving on `iface` may be forwarded at all.
///
/// The kernel decides IPv4 forwarding by the INPUT device's `conf/IF/forwarding`
/// (`ip_route_input_slow` refuses to route when it is 0), and that switch lives outside
/// nftables, so `nft flush ruleset` cannot open it. wgadm keeps it at 0 while `table inet
/// wgadm` is not in force and sets it to 1 only after verifying the table. Writing
/// `ip_forward` (or `conf/all/forwarding`) sets every interface's switch, so the global switch
/// goes on first and this one after it. Returns `Ok(None)` when the interface does not exist
/// (a new one inherits `conf/default/forwarding`), else whether the value changed.
pub fn set_iface_forwarding(iface: &str, on: bool) -> Result<Option<bool>, FirewallError> {
    set_iface_forwarding_at(
        &Path::new(CONF_DIR).join(iface).join("forwarding"),
        iface,
        on,
    )
}

/// [`set_iface_forwarding`] on another file, for tests.
pub fn set_iface_forwarding_at(
    path: &Path,
    iface: &str,
    on: bool,
) -> Result<Option<bool>, FirewallError> {
    let value = u8::from(on);
    let fail = |source| FirewallError::IfaceForward {
        iface: iface.to_owned(),
        path: path.to_owned(),
        value,
        source,
    };
    let mut now = String::new();
    match OpenOptions::new()
        .read(true)
        .open(path)
        .and_then(|mut f| f.read_to_string(&mut now))
    {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(fail(e)),
    }
    if now.trim() == value.to_string() {
        return Ok(Some(false));
    }
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut f| f.write_all(format!("{value}\n").as_bytes()))
        .map_err(fail)?;
    Ok(Some(true))
}

/// Whether packets arriving on `iface` are forwarded: `None` when it does not exist.
pub fn iface_forwarding(iface: &str) -> Option<bool> {
    std::fs::read_to_string(Path::new(CONF_DIR).join(iface).join("forwarding"))
        .ok()
        .map(|v| v.trim() != "0")
}

/// What [`open_gate`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    /// `ip_forward` was 0 and is now 1.
    pub ip_forward: bool,
    /// The interface's own switch was 0 and is now 1.
    pub iface: bool,
}

/// Verifies that the table in force carries `wanted` (the digest of the ruleset just put in
/// force), then switches forwarding on: globally first, then for `iface`. When the table is
/// not the wanted one, `iface` is kept from forwarding and the error says so.
pub fn open_gate(nft: &Nft, wanted: Option<&str>, iface: &str) -> Result<Opened, FirewallError> {
    let found = nft.loaded_digest()?;
    if found.is_none() || found.as_deref() != wanted {
        let _ = set_iface_forwarding(iface, false);
        return Err(FirewallError::NotInForce {
            iface: iface.to_owned(),
            found: found.map_or_else(
                || "no table".to_owned(),
                |d| format!("a table with digest {d}"),
            ),
        });
    }
    switch_on(iface)
}

/// Switches forwarding on, globally first and then for `iface`, for a caller that has just
/// verified the table in force (see [`open_gate`]).
pub fn switch_on(iface: &str) -> Result<Opened, FirewallError> {
    ensure_gate_rule(iface)?;
    let ip_forward = enable_ip_forward()?;
    let iface_on = set_iface_forwarding(iface, true)?.unwrap_or(false);
    Ok(Opened {
        ip_forward,
        iface: iface_on,
    })
}

/// After nft refused a ruleset: when no wgadm table is in force at all, keeps `iface` from
/// forwarding (a previous wgadm table, still in force, keeps filtering). Returns whether the
/// gate was closed.
pub fn close_gate_if_absent(nft: &Nft, iface: &str) -> bool {
    let _ = ensure_gate_rule(iface);
    match nft.loaded_digest() {
        Ok(Some(_)) => false,
        // No table, or nft cannot even list: fail closed.
        Ok(None) | Err(_) => set_iface_forwarding(iface, false).is_ok(),
    }
}

/// The IPv4 policy-routing rules read over rtnetlink (`RTM_GETRULE`), to find the gate rule
/// without starting `ip`.
mod rules {
    use netlink_sys::{protocols::NETLINK_ROUTE, Socket};
    use wgadm_core::firewall::{GATE_MARK, GATE_RULE_PRIORITY};

    const RTM_NEWRULE: u16 = 32;
    const RTM_GETRULE: u16 = 34;
    const NLMSG_ERROR: u16 = 2;
    const NLMSG_DONE: u16 = 3;
    const NLM_F_REQUEST: u16 = 1;
    const NLM_F_DUMP: u16 = 0x300;
    const AF_INET: u8 = 2;
    /// `struct fib_rule_hdr`: family, dst_len, src_len, tos, table, res1, res2, action, flags.
    const FIB_RULE_HDR: usize = 12;
    const FR_ACT_BLACKHOLE: u8 = 6;
    const FRA_IIFNAME: u16 = 3;
    const FRA_PRIORITY: u16 = 6;
    const FRA_FWMARK: u16 = 10;
    const FRA_FWMASK: u16 = 16;

    /// Whether this network namespace has the gate rule of `iface` (see `gate_rule`): priority
    /// [`GATE_RULE_PRIORITY`], `iif IFACE`, fwmark 0 under mask [`GATE_MARK`], blackhole.
    pub fn has_gate_rule(iface: &str) -> std::io::Result<bool> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        let mut req = Vec::with_capacity(16 + FIB_RULE_HDR);
        req.extend_from_slice(&((16 + FIB_RULE_HDR) as u32).to_ne_bytes());
        req.extend_from_slice(&RTM_GETRULE.to_ne_bytes());
        req.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
        req.extend_from_slice(&1u32.to_ne_bytes());
        req.extend_from_slice(&0u32.to_ne_bytes());
        req.push(AF_INET);
        req.extend_from_slice(&[0; FIB_RULE_HDR - 1]);
        socket.send(&req, 0)?;
        let mut found = false;
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let n = socket.recv(&mut &mut buf[..], 0)?;
            let mut msgs = &buf[..n];
            while msgs.len() >= 16 {
                let len = u32::from_ne_bytes([msgs[0], msgs[1], msgs[2], msgs[3]]) as usize;
                let kind = u16::from_ne_bytes([msgs[4], msgs[5]]);
                if len < 16 || len > msgs.len() {
                    return Err(std::io::Error::other("a torn rtnetlink message"));
                }
                match kind {
                    NLMSG_DONE => return Ok(found),
                    NLMSG_ERROR => {
                        let code = msgs
                            .get(16..20)
                            .map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                        return Err(std::io::Error::from_raw_os_error(-code));
                    }
                    RTM_NEWRULE => found |= is_gate(&msgs[16..len], iface),
                    _ => {}
                }
                msgs = &msgs[len.next_multiple_of(4).min(msgs.len())..];
            }
        }
    }

    /// Whether one `RTM_NEWRULE` payload is the gate rule of `iface`.
    pub(super) fn is_gate(payload: &[u8], iface: &str) -> bool {
        let Some(hdr) = payload.get(..FIB_RULE_HDR) else {
            return false;
        };
        if hdr[0] != AF_INET || hdr[7] != FR_ACT_BLACKHOLE {
            return false;
        }
        let (mut name, mut prio, mut mark, mut mask) = (None, 0, 0, 0);
        let mut attrs = &payload[FIB_RULE_HDR..];
        while attrs.len() >= 4 {
            let len = usize::from(u16::from_ne_bytes([attrs[0], attrs[1]]));
            let kind = u16::from_ne_bytes([attrs[2], attrs[3]]) & 0x3fff;
            if len < 4 || len > attrs.len() {
                return false;
            }
            let value = &attrs[4..len];
            let u32_of = |v: &[u8]| {
                v.get(..4)
                    .map_or(0, |b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
            };
            match kind {
                FRA_IIFNAME => name = Some(value.split(|b| *b == 0).next().unwrap_or(value)),
                FRA_PRIORITY => prio = u32_of(value),
                FRA_FWMARK => mark = u32_of(value),
                FRA_FWMASK => mask = u32_of(value),
                _ => {}
            }
            attrs = &attrs[len.next_multiple_of(4).min(attrs.len())..];
        }
        name == Some(iface.as_bytes())
            && prio == GATE_RULE_PRIORITY
            && mark == 0
            && mask == GATE_MARK
    }
}

/// libnftables (the library the `nft` program is a thin front of), loaded at run time and
/// called in this process: the same parser, the same messages and the same one-transaction
/// `-f`, without starting a program (5-20 ms each time, several per apply).
///
/// Loaded with dlopen rather than linked, so wgadm starts without it (the package nftables
/// brings it; without it wgadm runs the `nft` program, which then says what is missing). Only a
/// library that has the `LIBNFTABLES_3` symbols (nftables 1.0.1 or later, newer than
/// [`MIN_NFT`]) is used, so no version check is needed for it.
mod libnft {
    use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
    use std::io::Write;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::process::ExitStatusExt;
    use std::path::Path;
    use std::process::{ExitStatus, Output};
    use std::sync::{Mutex, OnceLock};

    type CtxNew = unsafe extern "C" fn(c_uint) -> *mut c_void;
    type CtxFn = unsafe extern "C" fn(*mut c_void);
    type CtxInt = unsafe extern "C" fn(*mut c_void) -> c_int;
    type CtxBuf = unsafe extern "C" fn(*mut c_void) -> *const c_char;
    type CtxFlags = unsafe extern "C" fn(*mut c_void, c_uint);
    type CtxRun = unsafe extern "C" fn(*mut c_void, *const c_char) -> c_int;

    /// `NFT_CTX_OUTPUT_*` of libnftables(3).
    const STATELESS: c_uint = 1 << 2;
    const JSON: c_uint = 1 << 4;
    const TERSE: c_uint = 1 << 11;

    /// The functions of libnftables.so.1 wgadm calls.
    pub struct Lib {
        ctx_new: CtxNew,
        ctx_free: CtxFn,
        buffer_output: CtxInt,
        buffer_error: CtxInt,
        get_output: CtxBuf,
        get_error: CtxBuf,
        set_flags: CtxFlags,
        run_buffer: CtxRun,
        run_filename: CtxRun,
    }

    /// libnftables keeps some state outside its contexts (symbol tables read at start), so
    /// one call at a time per process.
    static CALLS: Mutex<()> = Mutex::new(());

    /// The library, when it loads and is new enough; looked for once per process.
    pub fn get() -> Option<&'static Lib> {
        static LIB: OnceLock<Option<Lib>> = OnceLock::new();
        LIB.get_or_init(load).as_ref()
    }

    fn load() -> Option<Lib> {
        // SAFETY: dlopen/dlsym with NUL-terminated names; the handle is never closed, so the
        // function pointers stay valid for the life of the process. Each pointer is cast to
        // the signature libnftables(3) documents for that name.
        unsafe {
            let handle = libc::dlopen(
                c"libnftables.so.1".as_ptr(),
                libc::RTLD_NOW | libc::RTLD_LOCAL,
            );
            if handle.is_null() {
                return None;
            }
            let sym = |name: &CStr| {
                let p = libc::dlsym(handle, name.as_ptr());
                (!p.is_null()).then_some(p)
            };
            // Present from nftables 1.0.1 on: the marker of a new enough library.
            sym(c"nft_ctx_get_optimize")?;
            Some(Lib {
                ctx_new: std::mem::transmute::<*mut c_void, CtxNew>(sym(c"nft_ctx_new")?),
                ctx_free: std::mem::transmute::<*mut c_void, CtxFn>(sym(c"nft_ctx_free")?),
                buffer_output: std::mem::transmute::<*mut c_void, CtxInt>(sym(
                    c"nft_ctx_buffer_output",
                )?),
                buffer_error: std::mem::transmute::<*mut c_void, CtxInt>(sym(
                    c"nft_ctx_buffer_error",
                )?),
                get_output: std::mem::transmute::<*mut c_void, CtxBuf>(sym(
                    c"nft_ctx_get_output_buffer",
                )?),
                get_error: std::mem::transmute::<*mut c_void, CtxBuf>(sym(
                    c"nft_ctx_get_error_buffer",
                )?),
                set_flags: std::mem::transmute::<*mut c_void, CtxFlags>(sym(
                    c"nft_ctx_output_set_flags",
                )?),
                run_buffer: std::mem::transmute::<*mut c_void, CtxRun>(sym(
                    c"nft_run_cmd_from_buffer",
                )?),
                run_filename: std::mem::transmute::<*mut c_void, CtxRun>(sym(
                    c"nft_run_cmd_from_filename",
                )?),
            })
        }
    }

    /// A script handed over as a file of this process's own (nft reads `-f` input by name): a
    /// memfd, so nothing lands on disk, and nft's messages keep their line numbers (a buffer
    /// of several lines loses them in nft 1.0.6).
    struct Script {
        // Held open for as long as nft may read it by `path`.
        _fd: OwnedFd,
        path: CString,
    }

    impl Script {
        fn new(text: &str) -> std::io::Result<Script> {
            // SAFETY: memfd_create with a NUL-terminated name; the fd returned is ours.
            let raw = unsafe { libc::memfd_create(c"wgadm-ruleset".as_ptr(), libc::MFD_CLOEXEC) };
            if raw < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // SAFETY: a fresh fd owned by nobody else.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            std::fs::File::from(fd.try_clone()?).write_all(text.as_bytes())?;
            let path = CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd()))
                .map_err(std::io::Error::other)?;
            Ok(Script { _fd: fd, path })
        }
    }

    /// Runs what `nft ARGS` would run (`-t`, `-s`, `-j` and `-f -` with `stdin` understood;
    /// the other words form the command) and returns what nft would have printed, with exit
    /// status 0 or 1. In the network namespace `netns` when given (a thread enters it: nft's
    /// netlink socket belongs to the namespace it was made in), else in this thread's.
    pub fn run(
        lib: &Lib,
        args: &[&str],
        stdin: Option<&str>,
        netns: Option<&Path>,
    ) -> std::io::Result<Output> {
        let mut flags = 0;
        let mut words = Vec::new();
        let mut file = false;
        for arg in args {
            match *arg {
                "-t" => flags |= TERSE,
                "-s" => flags |= STATELESS,
                "-j" => flags |= JSON,
                "-f" => file = true,
                "-" if file => {}
                word => words.push(word),
            }
        }
        let script = match (file, stdin) {
            (true, Some(text)) => Some(Script::new(text)?),
            (true, None) => return Err(std::io::Error::other("nft -f without a script")),
            (false, _) => None,
        };
        let command = CString::new(words.join(" ")).map_err(std::io::Error::other)?;
        let call = || -> std::io::Result<Output> {
            let _one = CALLS.lock().unwrap_or_else(|p| p.into_inner());
            // SAFETY: a context made here, used on this thread only and freed before return;
            // the buffers it returns are copied before it is freed.
            unsafe {
                let ctx = (lib.ctx_new)(0);
                if ctx.is_null() {
                    return Err(std::io::Error::other(
                        "libnftables could not make a context",
                    ));
                }
                let rc = if (lib.buffer_output)(ctx) != 0 || (lib.buffer_error)(ctx) != 0 {
                    None
                } else {
                    (lib.set_flags)(ctx, flags);
                    Some(match &script {
                        Some(s) => (lib.run_filename)(ctx, s.path.as_ptr()),
                        None => (lib.run_buffer)(ctx, command.as_ptr()),
                    })
                };
                let text = |p: *const c_char| match p.is_null() {
                    true => Vec::new(),
                    false => CStr::from_ptr(p).to_bytes().to_vec(),
                };
                let stdout = text((lib.get_output)(ctx));
                let stderr = text((lib.get_error)(ctx));
                (lib.ctx_free)(ctx);
                let rc = rc.ok_or_else(|| {
                    std::io::Error::other("libnftables could not buffer its output")
                })?;
                Ok(Output {
                    status: ExitStatus::from_raw(if rc == 0 { 0 } else { 1 << 8 }),
                    stdout,
                    stderr,
                })
            }
        };
        let mut out = match netns {
            None => call()?,
            Some(netns) => {
                let ns = std::fs::File::open(netns)?;
                std::thread::scope(|scope| {
                    scope
                        .spawn(|| {
                            // SAFETY: setns on this short-lived thread only, with a namespace
                            // fd we hold open.
                            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                                return Err(std::io::Error::last_os_error());
                            }
                            call()
                        })
                        .join()
                        .unwrap_or_else(|_| Err(std::io::Error::other("the nft thread panicked")))
                })?
            }
        };
        // Messages name the script as `nft -f -` does.
        if let Some(s) = &script {
            let name = s.path.to_string_lossy().into_owned();
            let text = String::from_utf8_lossy(&out.stderr).replace(&name, "/dev/stdin");
            out.stderr = text.into_bytes();
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse() {
        assert_eq!(
            parse_version("nftables v1.0.6 (Lester Gooch #5)\n"),
            Some((1, 0, 6))
        );
        assert_eq!(parse_version("nftables v0.9.8 (E.D.S.)"), Some((0, 9, 8)));
        assert_eq!(parse_version("nftables v1.1 (x)"), Some((1, 1, 0)));
        assert_eq!(parse_version("something else"), None);
        assert!(parse_version("nftables v0.9.6 (x)").unwrap() < MIN_NFT);
    }

    #[test]
    fn counters_parse_from_nft_json() {
        let json = br#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, {"set": {"family": "inet", "name": "deny_drops", "table": "wgadm", "type": "ipv4_addr", "handle": 5, "elem": [{"elem": {"val": "192.168.100.2", "counter": {"packets": 2, "bytes": 168}}}, {"elem": {"val": "192.168.100.3", "counter": {"packets": 0, "bytes": 0}}}, "192.168.100.4"], "stmt": [{"counter": null}]}}]}"#;
        let c = parse_counters(json).unwrap();
        assert_eq!(
            c[&"192.168.100.2".parse::<Ipv4Addr>().unwrap()],
            Counter {
                packets: 2,
                bytes: 168
            }
        );
        assert_eq!(c.len(), 3);
        assert_eq!(
            c[&"192.168.100.4".parse::<Ipv4Addr>().unwrap()],
            Counter::default()
        );
        let empty = br#"{"nftables": [{"metainfo": {}}, {"set": {"name": "deny_drops", "stmt": [{"counter": null}]}}]}"#;
        assert!(parse_counters(empty).unwrap().is_empty());
        let err = parse_counters(b"[]").unwrap_err().to_string();
        assert!(err.contains("drop counters"), "{err}");
    }

    #[test]
    fn the_interface_gate_reads_writes_and_tolerates_a_missing_interface() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("forwarding");
        std::fs::write(&path, "1\n").unwrap();
        assert_eq!(
            set_iface_forwarding_at(&path, "wg0", false).unwrap(),
            Some(true)
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "0\n");
        assert_eq!(
            set_iface_forwarding_at(&path, "wg0", false).unwrap(),
            Some(false)
        );
        assert_eq!(
            set_iface_forwarding_at(&path, "wg0", true).unwrap(),
            Some(true)
        );
        let gone = dir.path().join("nope/forwarding");
        assert_eq!(set_iface_forwarding_at(&gone, "wg0", false).unwrap(), None);
    }

    #[test]
    fn the_gate_rule_is_recognized_as_ip_prints_it() {
        let line = "100:\tfrom all fwmark 0/0x20000000 iif wg0 [detached] blackhole";
        assert!(is_gate_rule(line, "wg0"));
        assert!(is_gate_rule(
            "100: from all fwmark 0x0/0x20000000 iif wg0 blackhole",
            "wg0"
        ));
        assert!(!is_gate_rule(line, "wg1"));
        assert!(!is_gate_rule(&line.replace("0x2", "0x3"), "wg0"));
        assert!(!is_gate_rule(
            &line.replace("blackhole", "lookup main"),
            "wg0"
        ));
    }

    #[test]
    fn the_gate_rule_is_recognized_in_an_rtnetlink_message() {
        // An RTM_NEWRULE payload as the kernel sends it for the gate rule of wg0: fib_rule_hdr
        // (AF_INET, action blackhole), then FRA_IIFNAME, FRA_PRIORITY, FRA_FWMASK (a mark of
        // 0 comes without FRA_FWMARK).
        let attr = |kind: u16, value: &[u8]| {
            let mut a = ((4 + value.len()) as u16).to_ne_bytes().to_vec();
            a.extend_from_slice(&kind.to_ne_bytes());
            a.extend_from_slice(value);
            a.resize(a.len().next_multiple_of(4), 0);
            a
        };
        let rule = |iface: &[u8], prio: u32, mask: u32, action: u8| {
            let mut p = vec![2, 0, 0, 0, 0, 0, 0, action, 0, 0, 0, 0];
            p.extend(attr(3, iface));
            p.extend(attr(6, &prio.to_ne_bytes()));
            p.extend(attr(16, &mask.to_ne_bytes()));
            p
        };
        assert!(rules::is_gate(&rule(b"wg0\0", 100, GATE_MARK, 6), "wg0"));
        assert!(!rules::is_gate(&rule(b"wg0\0", 100, GATE_MARK, 6), "wg1"));
        assert!(!rules::is_gate(&rule(b"wg0\0", 101, GATE_MARK, 6), "wg0"));
        assert!(!rules::is_gate(&rule(b"wg0\0", 100, 1, 6), "wg0"));
        assert!(!rules::is_gate(&rule(b"wg0\0", 100, GATE_MARK, 1), "wg0"));
        // Torn: refused, not read past its end.
        let whole = rule(b"wg0\0", 100, GATE_MARK, 6);
        assert!(!rules::is_gate(&whole[..whole.len() - 2], "wg0"));
        assert!(!rules::is_gate(&whole[..5], "wg0"));
    }

    #[test]
    fn ip_forward_switches_on_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ip_forward");
        std::fs::write(&path, "0\n").unwrap();
        assert!(enable_ip_forward_at(&path).unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "1\n");
        assert!(!enable_ip_forward_at(&path).unwrap());
        let err = enable_ip_forward_at(&dir.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cannot switch IPv4 forwarding on") && err.contains("/proc"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_nft_names_the_package() {
        let err = Nft::with_program("/nonexistent/nft")
            .preflight()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("nftables") && err.contains("apt-get install"),
            "{err}"
        );
        let err = Nft::with_program("/nonexistent/nft")
            .apply("table inet wgadm {}\n")
            .unwrap_err();
        assert!(matches!(err, FirewallError::NftMissing { .. }), "{err}");
    }

    #[test]
    fn long_messages_are_cut() {
        use std::os::unix::process::ExitStatusExt;
        let out = Output {
            status: std::process::ExitStatus::from_raw(256),
            stdout: Vec::new(),
            stderr: "Error: x\n".repeat(2000).into_bytes(),
        };
        let m = message_of(&out);
        assert!(
            m.len() < MAX_MESSAGE + 100 && m.ends_with("more lines)"),
            "{m}"
        );
    }
}
