//! The firewall: one nftables table of wgadm's own, `inet wgadm`, rendered as an `nft -f` script
//! that replaces it in one transaction (FR-004, SR-005, SR-006; DESIGN.md "Firewall").
//!
//! AllowedIPs in a client config is routing, not access control: the server decides who reaches
//! what. The script never names another table, so rules of others stay as they are.
//!
//! # Layout
//!
//! Sets (one element per active peer or per network, never a rule per peer, so 5,000 peers load
//! in one transaction in well under a second):
//!
//! | set | type | holds |
//! | --- | --- | --- |
//! | `deny` | `ipv4_addr`, interval | server.yml `deny`: never reachable from the VPN |
//! | `deny_drops` | `ipv4_addr`, per-element `counter` | every active peer's address; its counter counts that peer's packets dropped toward `deny` |
//! | `access` | `ipv4_addr . ipv4_addr`, interval | peer address . each network of its access list |
//! | `peer_access` | `ipv4_addr . ipv4_addr`, interval | peer address . each network of its access list that lies inside the VPN subnet |
//! | `allowed_sources` | `ipv4_addr`, interval | server.yml `allowed_sources` (only when not empty) |
//! | `masquerade_to` | `ipv4_addr`, interval | the union of the active peers' access lists (only with `nat: masquerade`) |
//!
//! Chains:
//!
//! - `input` (hook input, policy accept): traffic from the VPN interface goes to `vpn_to_server`;
//!   handshake logging for the daemon (when asked for); the listen port is open to
//!   `allowed_sources` and dropped for everyone else (when the list is not empty).
//! - `forward` (hook forward, policy accept): traffic from the VPN interface goes to
//!   `vpn_forward`; traffic toward it from outside the VPN passes when it belongs to a flow a
//!   peer started, and as a new connection only with `server.yml: inbound: allow` (default
//!   `drop`). Other forwarded traffic is not ours to judge.
//! - `vpn_forward`: `deny` first (to `denied`), then replies, then peer-to-peer only through
//!   `peer_access`, then `access`, then drop.
//! - `vpn_to_server`: `deny` first, then replies, then `access` (so the default 192.168.0.0/16
//!   reaches the server's VPN address, a peer limited to one host does not), then drop.
//! - `denied`: optional rate-limited log, then drop, counted per peer in `deny_drops`.
//! - `output` (only with handshake logging): copies handshake responses and cookie replies to
//!   NFLOG.
//! - `postrouting` (nat, only with `nat: masquerade`): masquerades VPN traffic toward the
//!   access networks.
//!
//! # Decisions
//!
//! - Replies pass by `ct direction reply`: packets answering a flow that was started toward the
//!   VPN. A peer's own flows are checked packet by packet against its access list instead of
//!   waved through as `established`, so narrowing an access list or adding to `deny` cuts flows
//!   that are already open at once (conntrack would keep an established TCP flow for days).
//! - Peer-to-peer is opt-in: a peer reaches another peer's address only when its access list
//!   names a network inside the VPN subnet (the subnet itself, or single peers). The default
//!   192.168.0.0/16 contains the VPN subnet but does not open it.
//! - Each access list is aggregated first (`Ipv4Net::aggregate`): nft refuses overlapping
//!   intervals in one set, and the aggregate reaches exactly the same addresses.
//! - The set `ruleset_digest` holds one element whose comment is the digest of the script,
//!   `SHAPE-ELEMENTS`, so the shell can tell whether the ruleset in force is the one wanted by
//!   listing that one set (nft fetches every element of every set for a table or chain
//!   listing). When only ELEMENTS differs (peers added, removed, changed), the shell changes the
//!   elements in one transaction ([`element_update`]); any other change replaces the table.
//!
//! # Needs
//!
//! nft 0.9.7 and Linux 5.10 at least: concatenated interval sets (nft 0.9.4, Linux 5.6),
//! per-element counters updated on lookup (Linux 5.7), table comments (nft 0.9.7, Linux 5.10),
//! NAT in an `inet` table (Linux 5.2). Debian 11 (nft 0.9.8, Linux 5.10) is the oldest release
//! that has all of them; Debian 12 and 13 and Proxmox VE 8 have them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::model::{Inbound, Nat, Server};
use crate::{Date, State};

/// The family of wgadm's table.
pub const TABLE_FAMILY: &str = "inet";
/// The name of wgadm's table.
pub const TABLE_NAME: &str = "wgadm";
/// The set whose per-element counters count drops toward `deny`, per peer address.
pub const DENY_DROPS_SET: &str = "deny_drops";
/// What the comment of the marker element in [`DIGEST_SET`] starts with; the digest follows.
pub const DIGEST_PREFIX: &str = "wgadm ruleset ";

/// Packets and bytes of an nftables counter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counter {
    /// Packets counted.
    pub packets: u64,
    /// Bytes counted.
    pub bytes: u64,
}

/// NFLOG groups for the WireGuard handshakes (issue 5, SR-007): initiations arriving at the
/// listen port and responses leaving it. The daemon pairs them (a response's receiver index is
/// the initiation's sender index); an initiation without a response is a refused handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeLog {
    /// The group that gets handshake initiations (type 1, 148 bytes).
    pub initiation_group: u16,
    /// The group that gets handshake responses (type 2, 92 bytes) and cookie replies (type 3,
    /// 64 bytes: "under load, retry with this cookie", which is an answer, not a refusal).
    pub response_group: u16,
}

/// The groups `wgadm apply` loads and `wgadm daemon` reads: 51820 for initiations, 51821 for
/// responses. Fixed numbers (the WireGuard port as a mnemonic; they do not follow
/// `listen_port`), far from the low groups other NFLOG users such as ulogd take by default.
/// Each group has one reader per network namespace: another program must not bind them.
pub const HANDSHAKE_LOG: HandshakeLog = HandshakeLog {
    initiation_group: 51820,
    response_group: 51821,
};

/// The packet mark bit wgadm's table sets on everything arriving on the WireGuard interface.
/// A policy-routing rule outside nftables (`ip rule ... iif IF fwmark 0/MARK blackhole`, see
/// [`gate_rule`]) drops every packet from the interface that lacks it: the moment the table
/// is flushed, nothing from the VPN is routed anywhere, with no window at all, because the
/// mark disappears in the same transaction as the table.
pub const GATE_MARK: u32 = 0x2000_0000;
/// The priority of that rule: before the main table (32766) and wg-quick's own rules.
pub const GATE_RULE_PRIORITY: u32 = 100;

/// The `ip rule` arguments (after `ip -4 rule add`) of the gate for `iface`.
pub fn gate_rule(iface: &str) -> Vec<String> {
    [
        "priority",
        &GATE_RULE_PRIORITY.to_string(),
        "iif",
        iface,
        "fwmark",
        &format!("0x0/{GATE_MARK:#x}"),
        "blackhole",
    ]
    .iter()
    .map(|a| (*a).to_owned())
    .collect()
}

/// Where dropped packets toward `deny` are logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTarget {
    /// The kernel log. Inside a network namespace other than the host's (a container) the
    /// kernel logs nothing unless the host sets `net.netfilter.nf_log_all_netns = 1`.
    Kernel,
    /// An NFLOG group, read by a daemon.
    Group(u16),
}

/// What the ruleset needs beyond the state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// Copy handshakes to NFLOG for the daemon; `None`: no handshake rules.
    pub handshake_log: Option<HandshakeLog>,
    /// Log drops toward `deny`, at most [`DENIED_LOG_RATE`]; `None`: count only.
    pub log_denied: Option<LogTarget>,
    /// Per-peer drop counters to start from, read from the table in force before it is
    /// replaced, so a reload does not reset them. Peers that are no longer active are left
    /// out. They do not change the digest: the same state gives the same digest.
    pub carried_drops: BTreeMap<Ipv4Addr, Counter>,
}

/// The rate limit of logged drops: enough to see who, not enough to fill a disk.
pub const DENIED_LOG_RATE: &str = "limit rate 10/minute burst 5 packets";

/// The set holding one element whose comment names the ruleset in force: [`DIGEST_PREFIX`]
/// then `SHAPE-ELEMENTS`, two digests. Listing this one set is cheap at any number of peers
/// (nft fetches only its elements), where listing the table or a chain fetches every element
/// of every set (DESIGN.md: 30 ms per listing at 5,000 peers).
pub const DIGEST_SET: &str = "ruleset_digest";

/// The complete `nft -f` script that puts the ruleset for `state` today in force as `inet
/// wgadm`: disabled and expired peers have no element left. Loading it is one transaction: nft
/// either takes all of it or none, so a refused script leaves the previous ruleset in force.
/// It changes the table in place (see [`in_place_prologue`] for why); [`replacing`] makes the
/// same script delete the table first, for a table it cannot change in place.
///
/// Its digest ([`digest`]) is `SHAPE-ELEMENTS`: SHAPE covers the script without the peers'
/// elements (rules, chains, set definitions, `deny`, `allowed_sources`), ELEMENTS the peers'
/// elements ([`element_lines`]). When only ELEMENTS differs from the table in force, the shell
/// changes the elements in place ([`element_update`]) instead of replacing the table.
pub fn ruleset(state: &State, today: Date, options: &Options) -> String {
    let digest = ruleset_digest(state, today, options);
    let counters = !options.carried_drops.is_empty();
    let (mut body, at) = render(state, today, options, counters, true);
    body.replace_range(at..at + digest.len(), &digest);
    let mut text = in_place_prologue(&body);
    text.push_str(&body);
    text
}

/// The sets and chains a ruleset of this layout may hold, with their declarations. A set or
/// chain that is renamed or retired stays here, so a table loaded by an older wgadm loses it.
const OBJECTS: &[(&str, &str, &str)] = &[
    (
        "chain",
        "input",
        "type filter hook input priority filter; policy accept;",
    ),
    (
        "chain",
        "output",
        "type filter hook output priority filter; policy accept;",
    ),
    (
        "chain",
        "prerouting",
        "type filter hook prerouting priority mangle; policy accept;",
    ),
    (
        "chain",
        "forward",
        "type filter hook forward priority filter; policy accept;",
    ),
    (
        "chain",
        "postrouting",
        "type nat hook postrouting priority srcnat; policy accept;",
    ),
    ("chain", "vpn_forward", ""),
    ("chain", "vpn_to_server", ""),
    ("chain", "denied", ""),
    ("set", DIGEST_SET, "type mark;"),
    ("set", "deny", "type ipv4_addr; flags interval;"),
    ("set", DENY_DROPS_SET, "type ipv4_addr; counter;"),
    (
        "set",
        "access",
        "type ipv4_addr . ipv4_addr; flags interval;",
    ),
    (
        "set",
        "peer_access",
        "type ipv4_addr . ipv4_addr; flags interval;",
    ),
    ("set", "allowed_sources", "type ipv4_addr; flags interval;"),
    ("set", "masquerade_to", "type ipv4_addr; flags interval;"),
];

/// The start of the script that loads `body` (a `table inet wgadm { ... }` block) in place, in
/// one transaction: the table is created if missing, every rule flushed, the wanted sets
/// declared and flushed, the sets and chains `body` does not have declared and deleted (nft
/// before 1.0.8 cannot delete what may not exist), then `body` fills it all again.
///
/// Why not delete the table and build it anew: on the kernel, a set created in a transaction
/// is empty for lookups until the very end of the commit, after the new rules that use it are
/// already in force; a packet in between misses `access` and is dropped (docs/kernel.md, seen
/// in the VM lab on Linux 6.12). Sets that stay answer from their old elements until their
/// new ones are in (Linux 6.12.48 and later), and base chains that stay stay registered.
fn in_place_prologue(body: &str) -> String {
    let table = format!("{TABLE_FAMILY} {TABLE_NAME}");
    let mut out = format!(
        "#!/usr/sbin/nft -f\n\
         # Managed by wgadm: change the state with `wgadm`, not this table. Loaded as one\n\
         # transaction, in place: the table is created if missing, then emptied and filled anew.\n\
         table {table}\n\
         flush table {table}\n"
    );
    let has = |kind: &str, name: &str| body.contains(&format!("\n\t{kind} {name} {{\n"));
    for (kind, name, decl) in OBJECTS {
        if !has(kind, name) {
            let _ = write!(
                out,
                "add {kind} {table} {name} {{ {decl} }}\ndelete {kind} {table} {name}\n"
            );
        }
    }
    for (kind, name, decl) in OBJECTS {
        if *kind == "set" && has(kind, name) {
            let _ = write!(
                out,
                "add set {table} {name} {{ {decl} }}\nflush set {table} {name}\n"
            );
        }
    }
    out
}

/// `script` (from [`ruleset`]) with the table deleted and built anew instead of changed in
/// place: for a table wgadm did not load or cannot change in place (a hook or a set's type
/// changed, an older layout), which nft refuses in place. Nothing is left of the old table;
/// the price is the lookup gap [`in_place_prologue`] describes.
pub fn replacing(script: &str) -> String {
    let start = format!("\ntable {TABLE_FAMILY} {TABLE_NAME} {{\n");
    let body = script.find(&start).map_or(script, |at| &script[at + 1..]);
    format!(
        "#!/usr/sbin/nft -f\n\
         # Managed by wgadm: change the state with `wgadm`, not this table. Loaded as one\n\
         # transaction: the table is created if missing, deleted, and built anew.\n\
         table {TABLE_FAMILY} {TABLE_NAME}\n\
         delete table {TABLE_FAMILY} {TABLE_NAME}\n\
         {body}"
    )
}

/// The digest [`ruleset`] gives its script, without rendering the peers' elements into it:
/// what the shell compares with the table in force.
pub fn ruleset_digest(state: &State, today: Date, options: &Options) -> String {
    // The digest depends on the state alone: rendered without carried counters, with a
    // placeholder where the digest goes.
    ruleset_digest_with(state, today, options, &element_text(state, today))
}

/// [`ruleset_digest`] given the element text of the same state and day ([`element_text`]): a
/// caller that needs both (to diff the elements in force) works the elements out once.
pub fn ruleset_digest_with(
    state: &State,
    today: Date,
    options: &Options,
    element_text: &str,
) -> String {
    let (shape_text, _) = render(state, today, options, false, false);
    let shape = fnv1a64(shape_text.as_bytes());
    format!("{shape:016x}-{}", text_digest(element_text))
}

/// The digest in a script made by [`ruleset`] or [`element_update`], or in nft's listing of
/// [`DIGEST_SET`]: the text after [`DIGEST_PREFIX`] in the marker element's comment.
pub fn digest(text: &str) -> Option<&str> {
    let marker = format!("comment \"{DIGEST_PREFIX}");
    let start = text.find(&marker)? + marker.len();
    let len = text[start..].find('"')?;
    Some(&text[start..start + len])
}

/// The SHAPE half of a digest: equal shapes mean the two rulesets differ at most in the peers'
/// elements.
pub fn shape(digest: &str) -> &str {
    digest.split_once('-').map_or(digest, |(s, _)| s)
}

/// The peers' elements of the ruleset, one `SET ELEMENT` line each, in nft's syntax
/// (`deny_drops 192.168.100.2`, `access 192.168.100.2 . 192.168.0.0/16`, `masquerade_to
/// 192.168.0.0/16`): what [`element_update`] diffs.
pub fn element_lines(state: &State, today: Date) -> BTreeSet<String> {
    let e = elements(state, today);
    let mut out = BTreeSet::new();
    out.extend(e.peers.iter().map(|a| format!("{DENY_DROPS_SET} {a}")));
    out.extend(e.access.iter().map(|(a, n)| format!("access {a} . {n}")));
    out.extend(
        e.peer_access
            .iter()
            .map(|(a, n)| format!("peer_access {a} . {n}")),
    );
    if state.server.nat == Nat::Masquerade {
        out.extend(e.masquerade_to.iter().map(|n| format!("masquerade_to {n}")));
    }
    out
}

/// The ELEMENTS half of a digest for these element lines (16 hex digits).
pub fn elements_digest(lines: &BTreeSet<String>) -> String {
    format!("{:016x}", fnv1a64(lines_text(lines).as_bytes()))
}

/// The lines as one text, one a line (what the ELEMENTS digest covers, and what the shell keeps
/// to diff against next time).
pub fn lines_text(lines: &BTreeSet<String>) -> String {
    let mut text = String::with_capacity(lines.len() * 40);
    for l in lines {
        text.push_str(l);
        text.push('\n');
    }
    text
}

/// The peers' element lines as one text ([`lines_text`] of [`element_lines`]): sorted, one a
/// line; what the ELEMENTS digest covers and what the shell keeps to diff against next time.
pub fn element_text(state: &State, today: Date) -> String {
    lines_text(&element_lines(state, today))
}

/// The ELEMENTS half of a digest for an element text ([`element_text`], or a kept copy of one):
/// equal to [`elements_digest`] of its lines, without splitting them first.
pub fn text_digest(text: &str) -> String {
    format!("{:016x}", fnv1a64(text.as_bytes()))
}

/// [`element_diff`] of two element texts as [`lines_text`] writes them (sorted, one a line),
/// by one merge of the two instead of two sets built from thousands of lines. `None` when
/// either text is not strictly sorted, one a line: it was not written by [`lines_text`], and
/// a merge of it would miss lines (the caller then replaces the table).
pub fn text_diff(old: &str, new: &str) -> Option<ElementDiff> {
    let sorted = |text: &str| {
        let mut lines = text.lines();
        let mut last = lines.next();
        let ok = lines.all(|l| {
            let up = last.is_some_and(|p| p < l);
            last = Some(l);
            up
        });
        ok && (text.is_empty() || text.ends_with('\n'))
    };
    if !sorted(old) || !sorted(new) {
        return None;
    }
    let mut diff = ElementDiff::default();
    let (mut a, mut b) = (old.lines().peekable(), new.lines().peekable());
    loop {
        match (a.peek(), b.peek()) {
            (None, None) => break,
            (Some(o), None) => {
                diff.removed.push((*o).to_owned());
                a.next();
            }
            (None, Some(n)) => {
                diff.added.push((*n).to_owned());
                b.next();
            }
            (Some(o), Some(n)) => match o.cmp(n) {
                std::cmp::Ordering::Less => {
                    diff.removed.push((*o).to_owned());
                    a.next();
                }
                std::cmp::Ordering::Greater => {
                    diff.added.push((*n).to_owned());
                    b.next();
                }
                std::cmp::Ordering::Equal => {
                    a.next();
                    b.next();
                }
            },
        }
    }
    Some(diff)
}

/// What [`element_update`] changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ElementDiff {
    /// Elements to delete, as `SET ELEMENT` lines.
    pub removed: Vec<String>,
    /// Elements to add, as `SET ELEMENT` lines.
    pub added: Vec<String>,
}

/// The elements in `new` and not in `old`, and the other way round.
pub fn element_diff(old: &BTreeSet<String>, new: &BTreeSet<String>) -> ElementDiff {
    ElementDiff {
        removed: old.difference(new).cloned().collect(),
        added: new.difference(old).cloned().collect(),
    }
}

/// The `nft -f` script that turns the elements `old` (of the table in force) into `new` and
/// names the result `digest`, in one transaction: the marker element is replaced, every
/// removed element deleted before any is added (an interval that grows is deleted and added
/// anew, and two intervals never overlap), then the new ones added. Elements in both stay, so
/// their counters keep counting. Should the table in force not hold an element to delete
/// (changed by hand), nft refuses the whole script and nothing changes.
pub fn element_update(diff: &ElementDiff, digest: &str) -> String {
    let mut out = format!(
        "# Managed by wgadm: the peers' elements of table {TABLE_FAMILY} {TABLE_NAME}, changed \
         in one transaction.\n\
         delete element {TABLE_FAMILY} {TABLE_NAME} {DIGEST_SET} {{ 0 }}\n\
         add element {TABLE_FAMILY} {TABLE_NAME} {DIGEST_SET} {{ 0 comment \"{DIGEST_PREFIX}{digest}\" }}\n"
    );
    for (verb, lines) in [("delete", &diff.removed), ("add", &diff.added)] {
        let mut by_set: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for l in lines {
            if let Some((set, element)) = l.split_once(' ') {
                by_set.entry(set).or_default().push(element);
            }
        }
        for (set, elements) in by_set {
            let _ = writeln!(out, "{verb} element {TABLE_FAMILY} {TABLE_NAME} {set} {{");
            for e in elements {
                let _ = writeln!(out, "\t{e},");
            }
            out.push_str("}\n");
        }
    }
    out
}

/// FNV-1a, 64 bits: a change detector for our own scripts, not a defence against anyone.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// What the sets hold, computed once from the state.
struct Elements {
    peers: BTreeSet<Ipv4Addr>,
    access: Vec<(Ipv4Addr, Ipv4Net)>,
    peer_access: Vec<(Ipv4Addr, Ipv4Net)>,
    masquerade_to: Vec<Ipv4Net>,
}

impl Elements {
    /// No elements: what the SHAPE half of the digest is rendered with.
    fn none() -> Self {
        Elements {
            peers: BTreeSet::new(),
            access: Vec::new(),
            peer_access: Vec::new(),
            masquerade_to: Vec::new(),
        }
    }
}

fn elements(state: &State, today: Date) -> Elements {
    let subnet = state.server.subnet.trunc();
    let mut e = Elements::none();
    let mut reached = Vec::new();
    for (_, peer) in state.active_peers(today) {
        // `check` refuses two peers with one address; should it slip through, the first
        // keeps it so nft does not refuse a duplicate element.
        if !e.peers.insert(peer.address) {
            continue;
        }
        let list = state.access_of(peer).to_vec();
        let inside: Vec<Ipv4Net> = list
            .iter()
            .filter(|n| subnet.contains(&n.trunc()))
            .copied()
            .collect();
        e.peer_access.extend(
            Ipv4Net::aggregate(&inside)
                .into_iter()
                .map(|n| (peer.address, n)),
        );
        let list = Ipv4Net::aggregate(&list);
        reached.extend_from_slice(&list);
        e.access.extend(list.into_iter().map(|n| (peer.address, n)));
    }
    e.masquerade_to = Ipv4Net::aggregate(&reached);
    e
}

/// Writes a set; elements one a line so a refused element is easy to find by line number.
fn set(out: &mut String, name: &str, kind: &str, elements: &[String]) {
    let _ = write!(out, "\n\tset {name} {{\n\t\t{kind}\n");
    if !elements.is_empty() {
        out.push_str("\t\telements = {\n");
        for e in elements {
            let _ = writeln!(out, "\t\t\t{e},");
        }
        out.push_str("\t\t}\n");
    }
    out.push_str("\t}\n");
}

/// The type line of a set of IPv4 networks.
const INTERVAL: &str = "type ipv4_addr\n\t\tflags interval";
/// The type line of a set of peer address . network pairs.
const PAIR_INTERVAL: &str = "type ipv4_addr . ipv4_addr\n\t\tflags interval";

/// Writes a set of networks, after its comment line.
fn net_set(out: &mut String, comment: &str, name: &str, nets: &[Ipv4Net]) {
    out.push_str(comment);
    let elements: Vec<String> = nets.iter().map(ToString::to_string).collect();
    set(out, name, INTERVAL, &elements);
}

/// Writes a set of peer address . network pairs, after its comment lines.
fn pair_set(out: &mut String, comment: &str, name: &str, pairs: &[(Ipv4Addr, Ipv4Net)]) {
    out.push_str(comment);
    let elements: Vec<String> = pairs.iter().map(|(a, n)| format!("{a} . {n}")).collect();
    set(out, name, PAIR_INTERVAL, &elements);
}

/// The script, and the byte offset of the digest placeholder in it. Without `with_elements`
/// the peers' sets are rendered empty (the SHAPE the digest's first half covers).
fn render(
    state: &State,
    today: Date,
    options: &Options,
    counters: bool,
    with_elements: bool,
) -> (String, usize) {
    let s = &state.server;
    let e = if with_elements {
        elements(state, today)
    } else {
        Elements::none()
    };
    let allowed = Ipv4Net::aggregate(&s.allowed_sources.iter().map(Ipv4Net::trunc).collect());
    let mut out = String::with_capacity(
        2048 + 64 * (e.access.len() + e.peer_access.len()) + 48 * e.peers.len(),
    );

    let at = digest_set(&mut out);
    deny_set(&mut out, s);
    peer_sets(&mut out, s, &e, options, counters);
    if !allowed.is_empty() {
        net_set(
            &mut out,
            "\n\t# Who may reach the listen port (SR-005).",
            "allowed_sources",
            &allowed,
        );
    }
    if s.nat == Nat::Masquerade {
        net_set(
            &mut out,
            "\n\t# The access networks of the active peers, masqueraded toward.",
            "masquerade_to",
            &e.masquerade_to,
        );
    }
    input_chain(&mut out, s, options, allowed.is_empty());
    if let Some(h) = options.handshake_log {
        output_chain(&mut out, s, h);
    }
    prerouting_chain(&mut out, s);
    forward_chain(&mut out, s);
    vpn_chains(&mut out, s);
    denied_chain(&mut out, options);
    if s.nat == Nat::Masquerade {
        postrouting_chain(&mut out, s);
    }
    out.push_str("}\n");
    (out, at)
}

/// The table's opening, its comment and the [`DIGEST_SET`] with a zero placeholder for the
/// digest; returns the byte offset of the placeholder.
fn digest_set(out: &mut String) -> usize {
    let _ = write!(
        out,
        "table {TABLE_FAMILY} {TABLE_NAME} {{\n\
         \tcomment \"wgadm: see set {DIGEST_SET} for the ruleset in force\"\n\
         \n\t# Which ruleset this is (SHAPE-ELEMENTS), readable without listing the other sets.\n\
         \tset {DIGEST_SET} {{\n\t\ttype mark\n\t\telements = {{ 0 comment \"{DIGEST_PREFIX}"
    );
    let at = out.len();
    out.push_str("0000000000000000-0000000000000000\" }\n\t}\n");
    at
}

/// `deny`, aggregated: nft refuses overlapping intervals in one set.
fn deny_set(out: &mut String, s: &Server) {
    let deny = Ipv4Net::aggregate(&s.deny.iter().map(Ipv4Net::trunc).collect());
    net_set(
        out,
        "\n\t# Never reachable from the VPN, whatever an access list says.",
        "deny",
        &deny,
    );
}

/// The peers' sets: `deny_drops` (with the carried counters when `counters`), `access` and
/// `peer_access`.
fn peer_sets(out: &mut String, s: &Server, e: &Elements, options: &Options, counters: bool) {
    out.push_str("\n\t# Drops toward `deny`, counted per peer.");
    let peers: Vec<String> = e
        .peers
        .iter()
        .map(|a| match options.carried_drops.get(a) {
            Some(c) if counters => format!("{a} counter packets {} bytes {}", c.packets, c.bytes),
            _ => a.to_string(),
        })
        .collect();
    set(out, DENY_DROPS_SET, "type ipv4_addr\n\t\tcounter", &peers);

    pair_set(
        out,
        "\n\t# Peer address . a network of its access list.",
        "access",
        &e.access,
    );
    let comment = format!(
        "\n\t# Peer address . a network of its access list inside the VPN subnet {}:\n\
         \t# peer-to-peer is open only where it is named there.",
        s.subnet.trunc()
    );
    pair_set(out, &comment, "peer_access", &e.peer_access);
}

/// `input`: the VPN first, so the listen-port rules below never see tunnelled traffic.
fn input_chain(out: &mut String, s: &Server, options: &Options, open_to_anyone: bool) {
    let (iface, port) = (s.interface.as_str(), s.listen_port);
    let _ = write!(
        out,
        "\n\tchain input {{\n\
         \t\ttype filter hook input priority filter; policy accept;\n\
         \t\tiifname \"{iface}\" jump vpn_to_server\n"
    );
    if let Some(h) = options.handshake_log {
        // Before the allowed_sources drop: a handshake from a refused source is a refused
        // attempt too, and the daemon should see it.
        let _ = writeln!(
            out,
            "\t\tudp dport {port} udp length 156 @th,64,32 0x01000000 log group {} \
             comment \"handshake initiations\"",
            h.initiation_group
        );
    }
    if open_to_anyone {
        let _ = writeln!(
            out,
            "\t\tudp dport {port} accept comment \"WireGuard: open to anyone\""
        );
    } else {
        let _ = write!(
            out,
            "\t\tudp dport {port} ip saddr @allowed_sources accept\n\
             \t\tudp dport {port} counter drop comment \"WireGuard: not in allowed_sources\"\n"
        );
    }
    out.push_str("\t}\n");
}

/// `output`: copies handshake responses and cookie replies to NFLOG for the daemon.
fn output_chain(out: &mut String, s: &Server, h: HandshakeLog) {
    let port = s.listen_port;
    let _ = write!(
        out,
        "\n\tchain output {{\n\
         \t\ttype filter hook output priority filter; policy accept;\n\
         \t\tudp sport {port} udp length 100 @th,64,32 0x02000000 log group {g} \
         comment \"handshake responses\"\n\
         \t\tudp sport {port} udp length 72 @th,64,32 0x03000000 log group {g} \
         comment \"cookie replies\"\n\
         \t}}\n",
        g = h.response_group
    );
}

/// `prerouting`: the mark the gate rule looks for, set before the routing decision in the
/// same table, so it exists exactly as long as the table does.
fn prerouting_chain(out: &mut String, s: &Server) {
    let iface = s.interface.as_str();
    let _ = write!(
        out,
        "\n\tchain prerouting {{\n\
         \t\ttype filter hook prerouting priority mangle; policy accept;\n\
         \t\tiifname \"{iface}\" meta mark set meta mark | {GATE_MARK:#x} comment \"routed only while this table is in force\"\n\
         \t}}\n"
    );
}

/// `forward`: from the VPN to `vpn_forward`. Toward the VPN from outside it (`vpn_forward`
/// ends in a verdict, so peer-to-peer never gets here): replies to the peers' own flows pass;
/// a new connection only with `inbound: allow`. Anything else (invalid, untracked) is dropped
/// too: fail closed.
fn forward_chain(out: &mut String, s: &Server) {
    let iface = s.interface.as_str();
    let _ = write!(
        out,
        "\n\tchain forward {{\n\
         \t\ttype filter hook forward priority filter; policy accept;\n\
         \t\tiifname \"{iface}\" jump vpn_forward\n"
    );
    let _ = writeln!(
        out,
        "\t\toifname \"{iface}\" ct state established,related accept comment \"replies to the peers' flows\""
    );
    if s.inbound == Inbound::Allow {
        let _ = writeln!(
            out,
            "\t\toifname \"{iface}\" ct state new accept comment \"inbound: allow\""
        );
    }
    let _ = write!(
        out,
        "\t\toifname \"{iface}\" counter drop comment \"new connections toward peers (inbound: drop)\"\n\
         \t}}\n"
    );
}

/// `vpn_forward` and `vpn_to_server`: deny before everything, replies included ("never"
/// means never), then replies, then the access lists (peer-to-peer only through
/// `peer_access`), then drop.
fn vpn_chains(out: &mut String, s: &Server) {
    let subnet = s.subnet.trunc();
    let _ = write!(
        out,
        "\n\tchain vpn_forward {{\n\
         \t\tip daddr @deny goto denied\n\
         \t\tct direction reply accept comment \"replies to flows started toward the VPN\"\n\
         \t\tip daddr {subnet} ip saddr . ip daddr @peer_access accept\n\
         \t\tip daddr {subnet} counter drop comment \"peer-to-peer not allowed\"\n\
         \t\tip saddr . ip daddr @access accept\n\
         \t\tcounter drop comment \"not in the peer's access list\"\n\
         \t}}\n"
    );
    let _ = write!(
        out,
        "\n\tchain vpn_to_server {{\n\
         \t\tip daddr @deny goto denied\n\
         \t\tct direction reply accept comment \"replies to flows the server started\"\n\
         \t\tip saddr . ip daddr @access accept\n\
         \t\tcounter drop comment \"not in the peer's access list\"\n\
         \t}}\n"
    );
}

/// `denied`: an optional rate-limited log, then drop, counted per peer in `deny_drops`.
fn denied_chain(out: &mut String, options: &Options) {
    out.push_str("\n\tchain denied {\n");
    match options.log_denied {
        Some(LogTarget::Kernel) => {
            let _ = writeln!(
                out,
                "\t\t{DENIED_LOG_RATE} log prefix \"wgadm denied: \" level info"
            );
        }
        Some(LogTarget::Group(g)) => {
            let _ = writeln!(
                out,
                "\t\t{DENIED_LOG_RATE} log prefix \"wgadm denied\" group {g}"
            );
        }
        None => {}
    }
    let _ = write!(
        out,
        "\t\tip saddr @{DENY_DROPS_SET} drop\n\
         \t\tcounter drop comment \"not from a peer address\"\n\
         \t}}\n"
    );
}

/// `postrouting` (nat): masquerades VPN traffic toward the access networks. No iifname: the
/// input interface is unknown in postrouting; the source subnet and the output interface say
/// the same.
fn postrouting_chain(out: &mut String, s: &Server) {
    let (iface, subnet) = (s.interface.as_str(), s.subnet.trunc());
    let _ = write!(
        out,
        "\n\tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\tip saddr {subnet} oifname != \"{iface}\" ip daddr @masquerade_to masquerade\n\
         \t}}\n"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{peer, state};
    use proptest::prelude::*;

    fn today() -> Date {
        Date::parse("2026-11-24").unwrap()
    }

    fn small() -> State {
        let mut s = state("192.168.100.0/24", "192.168.100.1");
        s.peers
            .insert("alice".parse().unwrap(), peer("192.168.100.2", 1));
        let mut bob = peer("192.168.100.3", 2);
        bob.access = Some(vec![
            "192.168.1.10/32".parse().unwrap(),
            "192.168.100.5/32".parse().unwrap(),
        ]);
        s.peers.insert("bob".parse().unwrap(), bob);
        let mut off = peer("192.168.100.4", 3);
        off.enabled = false;
        s.peers.insert("carol".parse().unwrap(), off);
        let mut old = peer("192.168.100.6", 4);
        old.expires = Some(today());
        s.peers.insert("dave".parse().unwrap(), old);
        s
    }

    fn lines(text: &str) -> Vec<&str> {
        text.lines().map(str::trim).collect()
    }

    fn position(text: &str, line: &str) -> usize {
        lines(text)
            .iter()
            .position(|l| *l == line)
            .unwrap_or_else(|| panic!("no line {line:?} in\n{text}"))
    }

    #[test]
    fn small_state_renders_the_important_lines() {
        let text = ruleset(&small(), today(), &Options::default());
        // One transaction that touches only our table.
        assert!(text.starts_with("#!/usr/sbin/nft -f\n"), "{text}");
        // In place: the table is never deleted, only emptied and filled again; what this
        // ruleset does not have (handshake logging, allowed_sources) is declared and deleted.
        let tables: Vec<&str> = lines(&text)
            .into_iter()
            .filter(|l| {
                l.starts_with("table ")
                    || l.starts_with("delete ")
                    || l.starts_with("flush")
                    || l.starts_with("add ")
            })
            .collect();
        assert_eq!(
            tables,
            [
                "table inet wgadm",
                "flush table inet wgadm",
                "add chain inet wgadm output { type filter hook output priority filter; policy accept; }",
                "delete chain inet wgadm output",
                "add set inet wgadm allowed_sources { type ipv4_addr; flags interval; }",
                "delete set inet wgadm allowed_sources",
                "add set inet wgadm ruleset_digest { type mark; }",
                "flush set inet wgadm ruleset_digest",
                "add set inet wgadm deny { type ipv4_addr; flags interval; }",
                "flush set inet wgadm deny",
                "add set inet wgadm deny_drops { type ipv4_addr; counter; }",
                "flush set inet wgadm deny_drops",
                "add set inet wgadm access { type ipv4_addr . ipv4_addr; flags interval; }",
                "flush set inet wgadm access",
                "add set inet wgadm peer_access { type ipv4_addr . ipv4_addr; flags interval; }",
                "flush set inet wgadm peer_access",
                "add set inet wgadm masquerade_to { type ipv4_addr; flags interval; }",
                "flush set inet wgadm masquerade_to",
                "table inet wgadm {"
            ]
        );
        assert!(!text.contains("delete table"), "{text}");
        let text = body(&text);
        for line in [
            "172.16.10.0/24,",
            "192.168.100.2 . 192.168.0.0/16,",
            "192.168.100.3 . 192.168.1.10/32,",
            "192.168.100.3 . 192.168.100.5/32,",
            "iifname \"wg0\" jump vpn_forward",
            "iifname \"wg0\" jump vpn_to_server",
            "ip daddr 192.168.100.0/24 ip saddr . ip daddr @peer_access accept",
            "ip saddr . ip daddr @access accept",
            "ip saddr @deny_drops drop",
            "udp dport 51820 accept comment \"WireGuard: open to anyone\"",
            "ip saddr 192.168.100.0/24 oifname != \"wg0\" ip daddr @masquerade_to masquerade",
        ] {
            position(text, line);
        }
        // peer_access holds only bob's explicit peer entry: the default /16 opens no peer.
        let peer_access = &text[text.find("set peer_access").unwrap()..];
        let peer_access = &peer_access[..peer_access.find("\t}\n").unwrap()];
        assert!(
            peer_access.contains("192.168.100.3 . 192.168.100.5/32"),
            "{peer_access}"
        );
        assert!(!peer_access.contains("192.168.100.2 ."), "{peer_access}");
        // The masquerade set is the union of the access lists, aggregated.
        let masq = &text[text.find("set masquerade_to").unwrap()..];
        let masq = &masq[..masq.find("\t}\n").unwrap()];
        assert!(
            masq.contains("192.168.0.0/16,") && !masq.contains("192.168.1.10"),
            "{masq}"
        );
        // Every line of every chain ends in a verdict or is a header: no stray text.
        assert!(text.ends_with("}\n"));
        assert!(!text.contains("allowed_sources"), "{text}");
        assert!(!text.contains("log "), "{text}");
    }

    /// Varied states rendered in full, compared byte for byte with the scripts in
    /// `testdata/firewall/` (the renderer's shape is free to change, its output is not).
    /// `WGADM_BLESS=1 cargo test -p wgadm-core golden` rewrites them after an intended change.
    fn golden_cases() -> Vec<(&'static str, State, Options)> {
        let mut full = small();
        full.server.allowed_sources = vec![
            "203.0.113.0/25".parse().unwrap(),
            "203.0.113.128/25".parse().unwrap(),
            "198.51.100.7/32".parse().unwrap(),
        ];
        full.server.deny = vec![
            "172.16.10.0/24".parse().unwrap(),
            "172.16.10.5/32".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ];
        full.server.inbound = Inbound::Allow;
        let mut erin = peer("192.168.100.7", 5);
        erin.access = Some(vec![
            "192.168.100.0/24".parse().unwrap(),
            "192.168.100.8/30".parse().unwrap(),
            "10.20.0.0/16".parse().unwrap(),
            "10.21.0.0/16".parse().unwrap(),
        ]);
        full.peers.insert("erin".parse().unwrap(), erin);
        let full_options = Options {
            handshake_log: Some(HANDSHAKE_LOG),
            log_denied: Some(LogTarget::Kernel),
            carried_drops: [
                (
                    "192.168.100.2".parse().unwrap(),
                    Counter {
                        packets: 3,
                        bytes: 180,
                    },
                ),
                (
                    "192.168.100.4".parse().unwrap(),
                    Counter {
                        packets: 9,
                        bytes: 900,
                    },
                ),
            ]
            .into_iter()
            .collect(),
        };
        let mut empty = state("10.8.0.0/24", "10.8.0.1");
        empty.server.nat = Nat::None;
        empty.server.interface = "wgvpn".parse().unwrap();
        empty.server.listen_port = 443;
        empty.server.access = vec!["10.8.0.0/24".parse().unwrap()];
        let group = Options {
            log_denied: Some(LogTarget::Group(9)),
            ..Options::default()
        };
        let mut lone = empty.clone();
        lone.peers
            .insert("frank".parse().unwrap(), peer("10.8.0.2", 6));
        vec![
            ("small", small(), Options::default()),
            ("everything", full, full_options),
            ("empty-no-nat", empty, group.clone()),
            ("peer-to-peer-only", lone, group),
        ]
    }

    #[test]
    fn golden_scripts_are_unchanged() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/firewall");
        let bless = std::env::var_os("WGADM_BLESS").is_some();
        for (name, state, options) in golden_cases() {
            let text = ruleset(&state, today(), &options);
            assert_eq!(
                digest(&text),
                Some(ruleset_digest(&state, today(), &options).as_str())
            );
            let path = dir.join(format!("{name}.nft"));
            if bless {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &text).unwrap();
            }
            let want = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e} (WGADM_BLESS=1 writes it)", path.display()));
            assert!(
                text == want,
                "{name}: the script differs from {}:\n{text}",
                path.display()
            );
        }
    }

    #[test]
    fn disabled_and_expired_peers_have_no_element() {
        let text = ruleset(&small(), today(), &Options::default());
        assert!(!text.contains("192.168.100.4"), "{text}");
        assert!(!text.contains("192.168.100.6"), "{text}");
        // On the day before dave expires, he is there.
        let before = ruleset(
            &small(),
            Date::parse("2026-11-23").unwrap(),
            &Options::default(),
        );
        assert!(
            before.contains("192.168.100.6 . 192.168.0.0/16"),
            "{before}"
        );
    }

    #[test]
    fn deny_precedes_replies_and_access_in_both_chains() {
        let text = ruleset(&small(), today(), &Options::default());
        for chain in ["chain vpn_forward {", "chain vpn_to_server {"] {
            let body = &text[text.find(chain).unwrap()..];
            let body = &body[..body.find("\t}\n").unwrap()];
            let order: Vec<&str> = lines(body)[1..].to_vec();
            assert_eq!(order[0], "ip daddr @deny goto denied", "{body}");
            assert!(order[1].starts_with("ct direction reply accept"), "{body}");
            assert!(order.last().unwrap().starts_with("counter drop"), "{body}");
        }
    }

    #[test]
    fn inbound_connections_toward_peers_are_dropped_unless_allowed() {
        let text = ruleset(&small(), today(), &Options::default());
        let reply = position(
            &text,
            "oifname \"wg0\" ct state established,related accept comment \"replies to the peers' flows\"",
        );
        let drop = position(
            &text,
            "oifname \"wg0\" counter drop comment \"new connections toward peers (inbound: drop)\"",
        );
        // After the VPN's own traffic, so peer-to-peer is judged by vpn_forward alone.
        assert!(position(&text, "iifname \"wg0\" jump vpn_forward") < reply && reply < drop);
        assert!(!text.contains("inbound: allow"), "{text}");
        let mut s = small();
        s.server.inbound = Inbound::Allow;
        let open = ruleset(&s, today(), &Options::default());
        let accept = position(
            &open,
            "oifname \"wg0\" ct state new accept comment \"inbound: allow\"",
        );
        assert!(accept < position(&open, "oifname \"wg0\" counter drop comment \"new connections toward peers (inbound: drop)\""));
        assert_ne!(digest(&text), digest(&open));
    }

    #[test]
    fn the_table_marks_what_the_gate_rule_lets_through() {
        let text = ruleset(&small(), today(), &Options::default());
        position(
            &text,
            "iifname \"wg0\" meta mark set meta mark | 0x20000000 comment \"routed only while this table is in force\"",
        );
        assert_eq!(
            gate_rule("wg0").join(" "),
            "priority 100 iif wg0 fwmark 0x0/0x20000000 blackhole"
        );
    }

    #[test]
    fn nat_none_has_no_masquerade() {
        let mut s = small();
        s.server.nat = Nat::None;
        let text = ruleset(&s, today(), &Options::default());
        // A table loaded with NAT loses its chain and set; the body has neither.
        for line in [
            "delete chain inet wgadm postrouting",
            "delete set inet wgadm masquerade_to",
        ] {
            position(&text, line);
        }
        let text = body(&text);
        assert!(!text.contains("masquerade"), "{text}");
        assert!(!text.contains("type nat"), "{text}");
    }

    /// The `table inet wgadm { ... }` block of a script, without what comes before it.
    fn body(text: &str) -> &str {
        let at = text.find("\ntable inet wgadm {\n").expect("a table block");
        &text[at + 1..]
    }

    #[test]
    fn every_set_and_chain_is_declared_in_place_as_the_body_declares_it() {
        // Everything on: handshake logging, allowed_sources, masquerade.
        let mut s = small();
        s.server.allowed_sources = vec!["203.0.113.0/24".parse().unwrap()];
        let opts = Options {
            handshake_log: Some(HANDSHAKE_LOG),
            ..Options::default()
        };
        let text = ruleset(&s, today(), &opts);
        let b = body(&text);
        let mut seen = 0;
        for (kind, name, decl) in OBJECTS {
            let head = format!("\n\t{kind} {name} {{\n");
            let at = b
                .find(&head)
                .unwrap_or_else(|| panic!("no {kind} {name} in\n{b}"));
            let rest = &b[at + head.len()..];
            if *kind == "set" {
                // The set's declaration in the body, up to its elements, on one line.
                let end = rest
                    .find("\t\telements")
                    .unwrap_or_else(|| rest.find("\t}").unwrap());
                let kind_lines: Vec<String> = rest[..end]
                    .lines()
                    .map(|l| format!("{};", l.trim()))
                    .collect();
                assert_eq!(kind_lines.join(" "), *decl, "set {name}");
                position(&text, &format!("flush set inet wgadm {name}"));
            } else if !decl.is_empty() {
                assert_eq!(
                    rest.lines().next().map(str::trim),
                    Some(*decl),
                    "chain {name}"
                );
            }
            seen += 1;
        }
        // Nothing in the body that the list does not know (it could not be deleted later).
        let declared = b
            .lines()
            .filter(|l| l.starts_with("\tset ") || l.starts_with("\tchain "))
            .count();
        assert_eq!(declared, seen, "{b}");
        assert!(!text.contains("delete "), "{text}");
    }

    #[test]
    fn replacing_deletes_the_table_and_keeps_the_body() {
        let text = ruleset(&small(), today(), &Options::default());
        let fresh = replacing(&text);
        assert!(
            fresh.contains("\ntable inet wgadm\ndelete table inet wgadm\ntable inet wgadm {\n"),
            "{fresh}"
        );
        assert!(fresh.ends_with(body(&text)), "{fresh}");
        assert!(!fresh.contains("flush"), "{fresh}");
        assert_eq!(digest(&fresh), digest(&text));
    }

    #[test]
    fn allowed_sources_close_the_port_to_everyone_else() {
        let mut s = small();
        s.server.allowed_sources = vec![
            "203.0.113.0/24".parse().unwrap(),
            "203.0.113.7/32".parse().unwrap(),
            "198.51.100.7/32".parse().unwrap(),
        ];
        let text = ruleset(&s, today(), &Options::default());
        let accept = position(&text, "udp dport 51820 ip saddr @allowed_sources accept");
        let drop = position(
            &text,
            "udp dport 51820 counter drop comment \"WireGuard: not in allowed_sources\"",
        );
        assert!(accept < drop);
        // Aggregated: the /32 inside the /24 is gone, nft would refuse the overlap.
        assert!(
            text.contains("\t\t\t198.51.100.7/32,\n\t\t\t203.0.113.0/24,\n"),
            "{text}"
        );
        assert!(!text.contains("203.0.113.7"), "{text}");
    }

    #[test]
    fn overlapping_access_lists_are_aggregated() {
        let mut s = small();
        s.server.deny = vec![
            "172.16.10.0/24".parse().unwrap(),
            "172.16.10.128/25".parse().unwrap(),
        ];
        let mut p = peer("192.168.100.9", 9);
        p.access = Some(vec![
            "10.0.0.0/8".parse().unwrap(),
            "10.1.0.0/16".parse().unwrap(),
            "10.1.2.3/32".parse().unwrap(),
        ]);
        s.peers.insert("erin".parse().unwrap(), p);
        let text = ruleset(&s, today(), &Options::default());
        assert!(text.contains("192.168.100.9 . 10.0.0.0/8,"), "{text}");
        assert!(!text.contains("10.1."), "{text}");
        assert!(!text.contains("172.16.10.128"), "{text}");
    }

    #[test]
    fn logging_is_optional_and_rate_limited() {
        let opts = Options {
            handshake_log: Some(HandshakeLog {
                initiation_group: 7,
                response_group: 8,
            }),
            log_denied: Some(LogTarget::Group(9)),
            ..Options::default()
        };
        let text = ruleset(&small(), today(), &opts);
        let init = position(
            &text,
            "udp dport 51820 udp length 156 @th,64,32 0x01000000 log group 7 comment \"handshake initiations\"",
        );
        let open = position(
            &text,
            "udp dport 51820 accept comment \"WireGuard: open to anyone\"",
        );
        assert!(
            init < open,
            "the log rule must come before any verdict on the port"
        );
        position(
            &text,
            "udp sport 51820 udp length 100 @th,64,32 0x02000000 log group 8 comment \"handshake responses\"",
        );
        position(
            &text,
            "udp sport 51820 udp length 72 @th,64,32 0x03000000 log group 8 comment \"cookie replies\"",
        );
        position(
            &text,
            "limit rate 10/minute burst 5 packets log prefix \"wgadm denied\" group 9",
        );
        let kernel = ruleset(
            &small(),
            today(),
            &Options {
                log_denied: Some(LogTarget::Kernel),
                ..Options::default()
            },
        );
        position(
            &kernel,
            "limit rate 10/minute burst 5 packets log prefix \"wgadm denied: \" level info",
        );
    }

    #[test]
    fn digest_depends_on_the_state_only() {
        let plain = ruleset(&small(), today(), &Options::default());
        let d = digest(&plain).unwrap().to_owned();
        assert_eq!(ruleset_digest(&small(), today(), &Options::default()), d);
        assert_eq!(d.len(), 33);
        assert!(!shape(&d).contains('-') && shape(&d).len() == 16, "{d}");
        assert!(!d.contains("0000000000000000"), "{d}");
        // Carried counters appear in the script but leave the digest alone.
        let carried = Options {
            carried_drops: [
                (
                    "192.168.100.2".parse().unwrap(),
                    Counter {
                        packets: 5,
                        bytes: 300,
                    },
                ),
                // A peer that is gone keeps no element.
                (
                    "192.168.100.4".parse().unwrap(),
                    Counter {
                        packets: 1,
                        bytes: 1,
                    },
                ),
            ]
            .into_iter()
            .collect(),
            ..Options::default()
        };
        let with = ruleset(&small(), today(), &carried);
        assert_eq!(digest(&with), Some(d.as_str()));
        assert!(
            with.contains("\t\t\t192.168.100.2 counter packets 5 bytes 300,\n"),
            "{with}"
        );
        assert!(!with.contains("192.168.100.4"), "{with}");
        // Any change to the state changes it.
        let mut s = small();
        s.server.listen_port = 51821;
        assert_ne!(
            digest(&ruleset(&s, today(), &Options::default())),
            Some(d.as_str())
        );
        // The port is shape: the first half changes.
        let moved = ruleset(&s, today(), &Options::default());
        assert_ne!(shape(digest(&moved).unwrap()), shape(&d));
        // It is read back from nft's listing of the marker set the same way.
        let listing = format!(
            "table inet wgadm {{\n\tset {DIGEST_SET} {{\n\t\ttype mark\n\t\telements = {{ 0x00000000 comment \"{DIGEST_PREFIX}{d}\" }}\n\t}}\n}}\n"
        );
        assert_eq!(digest(&listing), Some(d.as_str()));
        assert_eq!(digest("table inet wgadm {\n}"), None);
    }

    #[test]
    fn a_peer_change_changes_only_the_elements_half_and_diffs_to_its_elements() {
        let before = small();
        let old_d = digest(&ruleset(&before, today(), &Options::default()))
            .unwrap()
            .to_owned();
        let old = element_lines(&before, today());
        assert!(old.contains("deny_drops 192.168.100.2"), "{old:?}");
        assert!(
            old.contains("access 192.168.100.3 . 192.168.1.10/32"),
            "{old:?}"
        );
        assert!(
            old.contains("peer_access 192.168.100.3 . 192.168.100.5/32"),
            "{old:?}"
        );
        // Disabled and expired peers have no element.
        assert!(!old
            .iter()
            .any(|l| l.contains("192.168.100.4") || l.contains("192.168.100.6")));

        // Add erin, take bob off, re-enable carol: the shape stays.
        let mut after = small();
        after
            .peers
            .insert("erin".parse().unwrap(), peer("192.168.100.9", 9));
        after
            .peers
            .remove(&"bob".parse::<crate::PeerName>().unwrap());
        after
            .peers
            .get_mut(&"carol".parse::<crate::PeerName>().unwrap())
            .unwrap()
            .enabled = true;
        let new_d = digest(&ruleset(&after, today(), &Options::default()))
            .unwrap()
            .to_owned();
        assert_eq!(shape(&new_d), shape(&old_d));
        assert_ne!(new_d, old_d);
        let new = element_lines(&after, today());
        let diff = element_diff(&old, &new);
        assert!(
            diff.added.contains(&"deny_drops 192.168.100.9".to_owned()),
            "{diff:?}"
        );
        assert!(
            diff.added.contains(&"deny_drops 192.168.100.4".to_owned()),
            "{diff:?}"
        );
        assert!(
            diff.removed
                .contains(&"deny_drops 192.168.100.3".to_owned()),
            "{diff:?}"
        );
        assert!(
            diff.removed
                .contains(&"peer_access 192.168.100.3 . 192.168.100.5/32".to_owned()),
            "{diff:?}"
        );
        // alice is untouched: her counter keeps counting.
        assert!(!diff
            .added
            .iter()
            .chain(&diff.removed)
            .any(|l| l.contains("192.168.100.2 ") || l.ends_with("192.168.100.2")));
        // Applying the diff to the old lines gives the new ones.
        let mut applied = old.clone();
        for r in &diff.removed {
            assert!(applied.remove(r));
        }
        applied.extend(diff.added.iter().cloned());
        assert_eq!(applied, new);

        let script = element_update(&diff, &new_d);
        assert_eq!(digest(&script), Some(new_d.as_str()));
        let delete = script
            .find("delete element inet wgadm deny_drops {")
            .unwrap();
        let add = script.find("add element inet wgadm deny_drops {").unwrap();
        assert!(delete < add, "removals before additions:\n{script}");
        assert!(script.contains("\t192.168.100.9,\n"), "{script}");
        assert!(
            !script.contains("table inet wgadm {"),
            "no table replaced:\n{script}"
        );
        // Nothing changed: only the marker (never sent: the digests are equal).
        assert_eq!(element_diff(&new, &new), ElementDiff::default());
    }

    #[test]
    fn the_element_text_diffs_and_digests_like_the_lines_and_a_foreign_text_is_refused() {
        let before = small();
        let mut after = small();
        after
            .peers
            .insert("erin".parse().unwrap(), peer("192.168.100.9", 9));
        after
            .peers
            .remove(&"bob".parse::<crate::PeerName>().unwrap());
        let (old, new) = (
            element_lines(&before, today()),
            element_lines(&after, today()),
        );
        let (old_t, new_t) = (
            element_text(&before, today()),
            element_text(&after, today()),
        );
        assert_eq!(old_t, lines_text(&old));
        assert_eq!(text_digest(&old_t), elements_digest(&old));
        assert_eq!(
            ruleset_digest_with(&after, today(), &Options::default(), &new_t),
            ruleset_digest(&after, today(), &Options::default())
        );
        for (o, n) in [(&old, &new), (&new, &old), (&old, &old)] {
            assert_eq!(
                text_diff(&lines_text(o), &lines_text(n)),
                Some(element_diff(o, n))
            );
        }
        let empty = BTreeSet::new();
        assert_eq!(text_diff("", &new_t), Some(element_diff(&empty, &new)));
        assert_eq!(text_diff(&new_t, ""), Some(element_diff(&new, &empty)));
        // Not as lines_text writes it: out of order, a line twice, cut short (no final newline).
        let swapped: String = new_t.lines().rev().map(|l| format!("{l}\n")).collect();
        let twice = format!("{new_t}{}\n", new_t.lines().last().unwrap());
        let cut = &new_t[..new_t.len() - 3];
        for bad in [swapped.as_str(), twice.as_str(), cut] {
            assert_eq!(text_diff(bad, &new_t), None, "{bad}");
            assert_eq!(text_diff(&new_t, bad), None, "{bad}");
        }
    }

    #[test]
    fn the_elements_digest_covers_exactly_the_element_lines() {
        // Same elements from two states that differ only in a disabled peer: same digest.
        let a = small();
        let mut b = small();
        b.peers.remove(&"carol".parse::<crate::PeerName>().unwrap());
        assert_eq!(
            digest(&ruleset(&a, today(), &Options::default())),
            digest(&ruleset(&b, today(), &Options::default()))
        );
        // Every element line is in the full script, inside its set.
        let text = ruleset(&a, today(), &Options::default());
        for l in element_lines(&a, today()) {
            let (set, element) = l.split_once(' ').unwrap();
            let body = &text[text.find(&format!("set {set} {{")).unwrap()..];
            let body = &body[..body.find("\n\t}\n").unwrap()];
            assert!(
                body.contains(&format!("\t\t\t{element},\n")),
                "{l} in\n{body}"
            );
        }
    }

    #[test]
    fn no_peers_still_renders_a_closed_vpn() {
        let s = state("192.168.100.0/24", "192.168.100.1");
        let text = ruleset(&s, today(), &Options::default());
        position(&text, "ip saddr . ip daddr @access accept");
        assert!(!text.contains("elements = {\n\t\t}"), "{text}");
        let access = &text[text.find("set access {").unwrap()..];
        let access = &access[..access.find("\t}\n").unwrap()];
        assert!(!access.contains("elements"), "{access}");
    }

    #[test]
    fn five_thousand_peers_render() {
        let mut s = state("10.100.0.0/16", "10.100.0.1");
        for i in 0..5000u32 {
            let addr = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 100, 0, 2)) + i);
            let mut p = peer(&addr.to_string(), 0);
            p.public_key = crate::Key::from({
                let mut k = [0u8; 32];
                k[..4].copy_from_slice(&i.to_be_bytes());
                k
            });
            if i % 10 == 0 {
                p.access = Some(vec![format!("192.168.{}.0/24", i % 250).parse().unwrap()]);
            }
            s.peers.insert(format!("peer{i:04}").parse().unwrap(), p);
        }
        let started = std::time::Instant::now();
        let text = ruleset(&s, today(), &Options::default());
        let took = started.elapsed();
        let access = text
            .lines()
            .filter(|l| l.starts_with("\t\t\t") && l.contains(" . "))
            .count();
        assert_eq!(
            access, 5000,
            "one access element per peer, none in peer_access"
        );
        assert_eq!(text.matches("\t\t\t10.100.").count(), 10000);
        // A loose bound only to catch an accidental quadratic renderer, not a benchmark.
        assert!(took.as_secs() < 5, "rendering 5,000 peers took {took:?}");
    }

    proptest! {
        /// Whatever the peers, every active peer has exactly its elements, inactive peers have
        /// none, and the digest is stable.
        #[test]
        fn every_active_peer_and_no_other(
            peers in proptest::collection::btree_map(2u8..250, (any::<bool>(), proptest::option::of(proptest::collection::vec((any::<[u8; 4]>(), 8u8..=32), 1..4))), 0..40),
        ) {
            let mut s = state("192.168.100.0/24", "192.168.100.1");
            for (host, (enabled, access)) in &peers {
                let mut p = peer(&format!("192.168.100.{host}"), *host);
                p.enabled = *enabled;
                p.access = access.as_ref().map(|l| {
                    l.iter().map(|(a, len)| Ipv4Net::new(Ipv4Addr::from(*a), *len).unwrap().trunc()).collect()
                });
                s.peers.insert(format!("p{host}").parse().unwrap(), p);
            }
            let text = ruleset(&s, today(), &Options::default());
            let again = ruleset(&s, today(), &Options::default());
            prop_assert_eq!(digest(&text), digest(&again));
            for (host, (enabled, _)) in &peers {
                let element = format!("\t\t\t192.168.100.{host},\n");
                prop_assert_eq!(text.contains(&element), *enabled);
                let pair = format!("\t\t\t192.168.100.{host} . ");
                prop_assert_eq!(text.contains(&pair), *enabled);
            }
        }
    }
}
