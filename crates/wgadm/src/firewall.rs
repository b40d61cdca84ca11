//! The firewall shell: loads the ruleset `wgadm_core::firewall` renders into the kernel with
//! `nft`, reads the per-peer drop counters back, and switches IPv4 forwarding on.
//!
//! Everything goes through the `nft` program (package nftables) rather than netlink from Rust:
//! nft parses, validates and batches the script into one transaction, and its error messages
//! point at the line that is wrong. Only wgadm's table (`inet wgadm`) is ever named, so rules of
//! others are never touched.

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
    digest, element_diff, element_lines, element_update, gate_rule, lines_text, replacing, ruleset,
    ruleset_digest, shape, Counter, Options, DENY_DROPS_SET, DIGEST_SET, GATE_MARK,
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

/// The per-namespace switch for IPv4 forwarding.
pub const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// The directory of the per-interface IPv4 switches, `IF/forwarding` in it.
pub const CONF_DIR: &str = "/proc/sys/net/ipv4/conf";

/// The oldest nft whose features the ruleset uses (see `wgadm_core::firewall`).
pub const MIN_NFT: (u32, u32, u32) = (0, 9, 7);

/// Longest nft message kept in an error; a refused 5,000-peer script can produce pages.
const MAX_MESSAGE: usize = 4000;

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

/// How wgadm runs nft: `nft` from PATH, or another command (a path, or a wrapper such as
/// `ip netns exec NS nft` for tests in a network namespace).
#[derive(Debug, Clone)]
pub struct Nft {
    program: PathBuf,
    prefix: Vec<OsString>,
    elements_dir: PathBuf,
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
            elements_dir: ELEMENTS_DIR.into(),
        }
    }

    /// `program` instead of `nft`.
    pub fn with_program(program: impl Into<PathBuf>) -> Self {
        Nft {
            program: program.into(),
            prefix: Vec::new(),
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
            elements_dir: ELEMENTS_DIR.into(),
        }
    }

    /// Keeps the loaded elements under `dir` instead of [`ELEMENTS_DIR`].
    pub fn with_elements_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.elements_dir = dir.into();
        self
    }

    fn name(&self) -> String {
        let mut parts = vec![self.program.display().to_string()];
        parts.extend(self.prefix.iter().map(|a| a.to_string_lossy().into_owned()));
        parts.join(" ")
    }

    /// Runs nft with `args`, feeding `stdin` when given. Messages come in English whatever
    /// the locale, so they can be recognized.
    fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<Output, FirewallError> {
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
        let run_err = |source| FirewallError::Run {
            program: self.name(),
            source,
        };
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
        let wanted = ruleset_digest(state, today, options);
        if loaded == Some(wanted.as_str()) {
            return Ok(Put::Unchanged);
        }
        let new = element_lines(state, today);
        if let Some(old) = loaded
            .filter(|l| shape(l) == shape(&wanted))
            .and_then(|l| self.recall(l))
        {
            let diff = element_diff(&old, &new);
            if self.load(&element_update(&diff, &wanted)).is_ok() {
                self.remember(&wanted, &new);
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
        self.remember(&wanted, &new);
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

    /// The element lines loaded under `digest`, when they were kept and still match it.
    fn recall(&self, digest: &str) -> Option<std::collections::BTreeSet<String>> {
        let text = std::fs::read_to_string(self.elements_file(digest)?).ok()?;
        let lines: std::collections::BTreeSet<String> = text.lines().map(str::to_owned).collect();
        // The file is named by the digest of its content: a torn or altered file is not used.
        let (_, elements) = digest.split_once('-')?;
        let check = wgadm_core::firewall::elements_digest(&lines);
        (check == elements).then_some(lines)
    }

    /// Keeps the element lines of the ruleset just put in force. Best effort: without the
    /// file the next change replaces the table, which is correct, only slower.
    fn remember(&self, digest: &str, lines: &std::collections::BTreeSet<String>) {
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
            .and_then(|mut f| f.write_all(lines_text(lines).as_bytes()));
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
    let shown = run(&["-4", "rule", "show", "priority", &prio])?;
    let text = String::from_utf8_lossy(&shown.stdout);
    if text.lines().any(|l| is_gate_rule(l, iface)) {
        return Ok(false);
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
