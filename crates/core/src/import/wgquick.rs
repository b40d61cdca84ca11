//! wg-quick configs as written by hand or by PiVPN: the server's config, with comments as peer
//! names and PiVPN's `### begin NAME ###` blocks, and client configs that bring private keys.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::{port, Issue, Source, SourcePeer};
use crate::{Key, Secret};

/// Interface keys wgadm does not keep; importing them needs `--drop-unsupported`.
const INTERFACE_EXTRAS: [&str; 9] = [
    "PostUp",
    "PostDown",
    "PreUp",
    "PreDown",
    "DNS",
    "MTU",
    "Table",
    "FwMark",
    "SaveConfig",
];

fn split_list(v: &str) -> impl Iterator<Item = String> + '_ {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

fn comment_text(line: &str) -> &str {
    line.trim_start_matches('#').trim()
}

/// Reads a server config. `file` names it in messages. PiVPN's blocks name their peers and
/// its `#[disabled] ` lines make disabled peers.
pub fn parse_server(text: &str, file: &str) -> Source {
    let mut src = Source {
        kind: "wg-quick",
        file: file.to_owned(),
        ..Source::default()
    };
    let mut section = In::Nothing;
    let mut last_comment: Option<String> = None;
    let mut block: Option<String> = None;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let here = format!("{file} line {n}");
        let mut line = raw.trim();
        let mut disabled = false;
        if let Some(rest) = line.strip_prefix("#[disabled] ") {
            line = rest.trim();
            disabled = true;
        }
        if let Some(rest) = line.strip_prefix("### begin ") {
            block = Some(rest.trim_end_matches('#').trim().to_owned());
            continue;
        }
        if line.starts_with("### end ") {
            block = None;
            continue;
        }
        if line.starts_with('#') {
            last_comment = Some(comment_text(line).to_owned());
            continue;
        }
        // wg-quick drops everything from a '#' on.
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let comment = last_comment.take();
            section = open_section(&mut src, name, &here, block.as_deref(), comment, disabled);
            continue;
        }
        last_comment = None;
        key_value(&mut src, &section, line, &here);
    }
    src
}

/// The section a server config's line is in.
#[derive(PartialEq)]
enum In {
    Nothing,
    Interface,
    Peer,
}

/// A `[Section]` line: the interface, or a new peer named by its PiVPN block or else the
/// comment line above it.
fn open_section(
    src: &mut Source,
    name: &str,
    here: &str,
    block: Option<&str>,
    comment: Option<String>,
    disabled: bool,
) -> In {
    match name.trim().to_ascii_lowercase().as_str() {
        "interface" => In::Interface,
        "peer" => {
            src.peers.push(SourcePeer {
                place: match block {
                    Some(b) => format!("{here} (peer {b})"),
                    None => here.to_owned(),
                },
                name: block
                    .map(str::to_owned)
                    .or(comment.filter(|c| !c.is_empty())),
                enabled: !disabled,
                ..SourcePeer::default()
            });
            In::Peer
        }
        other => {
            src.issues.push(Issue::conflict(
                here,
                format!("[{other}] is no wg-quick section; only [Interface] and [Peer]"),
            ));
            In::Nothing
        }
    }
}

/// A `Key = Value` line of the section it is in.
fn key_value(src: &mut Source, section: &In, line: &str, here: &str) {
    let Some((key, value)) = line.split_once('=') else {
        src.issues.push(Issue::conflict(
            here,
            "expected `Key = Value` or a [Section]",
        ));
        return;
    };
    let (key, value) = (key.trim(), value.trim());
    match section {
        In::Nothing => src
            .issues
            .push(Issue::conflict(here, format!("{key} before any [Section]"))),
        In::Interface => interface_key(src, key, value, here),
        In::Peer => {
            if let Some(peer) = src.peers.last_mut() {
                peer_key(peer, &mut src.issues, key, value, here);
            }
        }
    }
}

fn interface_key(src: &mut Source, key: &str, value: &str, here: &str) {
    match key.to_ascii_lowercase().as_str() {
        "privatekey" => match Secret::parse(value) {
            Ok(k) => src.private_key = Some(k),
            Err(e) => src.issues.push(Issue::conflict(
                here,
                format!("the server's PrivateKey {e}"),
            )),
        },
        "listenport" => match port(value) {
            Some(p) => src.listen_port = Some(p),
            None => src.issues.push(Issue::conflict(
                here,
                format!("ListenPort {value:?} is no port (1 to 65535)"),
            )),
        },
        "address" => src.addresses.extend(split_list(value)),
        // SaveConfig = false is what wgadm does anyway.
        "saveconfig" if value.eq_ignore_ascii_case("false") => {}
        k => match INTERFACE_EXTRAS.iter().find(|e| e.eq_ignore_ascii_case(k)) {
            Some(e) => src
                .interface_extras
                .push(((*e).to_owned(), here.to_owned())),
            None => src.issues.push(Issue::conflict(
                here,
                format!("{key} is no wg-quick [Interface] setting"),
            )),
        },
    }
}

fn peer_key(peer: &mut SourcePeer, issues: &mut Vec<Issue>, key: &str, value: &str, here: &str) {
    match key.to_ascii_lowercase().as_str() {
        "publickey" => peer.public_key = value.to_owned(),
        "presharedkey" => match Secret::parse(value) {
            Ok(k) => peer.preshared_key = Some(k),
            Err(e) => issues.push(Issue::conflict(here, format!("the PresharedKey {e}"))),
        },
        "allowedips" => peer.allowed_ips.extend(split_list(value)),
        "endpoint" => peer.extras.push("Endpoint".into()),
        "persistentkeepalive" if value == "0" || value.eq_ignore_ascii_case("off") => {}
        "persistentkeepalive" => peer.extras.push("PersistentKeepalive".into()),
        _ => issues.push(Issue::conflict(
            here,
            format!("{key} is no wg-quick [Peer] setting"),
        )),
    }
}

/// What a client config tells: its private key, DNS, the endpoint and its keepalive.
#[derive(Debug, Default)]
pub struct ClientConfig {
    /// `[Interface] PrivateKey`.
    pub private_key: Option<Secret>,
    /// `[Interface] DNS` (IP addresses only; search domains are left out).
    pub dns: Vec<IpAddr>,
    /// `[Peer] Endpoint`.
    pub endpoint: Option<String>,
    /// `[Peer] PersistentKeepalive`.
    pub keepalive: Option<u16>,
    /// `[Peer] PublicKey`: the server it belongs to.
    pub server_key: Option<Key>,
}

/// Reads a client config; it need not be complete.
pub fn parse_client(text: &str) -> ClientConfig {
    let mut c = ClientConfig::default();
    let mut in_peer = false;
    for raw in text.lines() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.eq_ignore_ascii_case("[peer]") {
            in_peer = true;
        } else if line.eq_ignore_ascii_case("[interface]") {
            in_peer = false;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
        match (in_peer, k.as_str()) {
            (false, "privatekey") => c.private_key = Secret::parse(v).ok(),
            (false, "dns") => c
                .dns
                .extend(split_list(v).filter_map(|d| d.parse::<IpAddr>().ok())),
            (true, "endpoint") => c.endpoint = Some(v.to_owned()),
            (true, "persistentkeepalive") => {
                c.keepalive = if v.eq_ignore_ascii_case("off") {
                    Some(0)
                } else {
                    v.parse().ok()
                }
            }
            (true, "publickey") => c.server_key = Key::parse(v).ok(),
            _ => {}
        }
    }
    c
}

/// Matches client configs (`(file name, text)`) to peers by public key: each brings its
/// private key, keepalive, and the endpoint and DNS servers clients use now. A peer the source
/// left unnamed takes the config's file name. Configs of another server are ignored.
pub fn add_client_configs(src: &mut Source, configs: &[(String, String)]) {
    let server = src.private_key.as_ref().map(Secret::public_key);
    for (file, text) in configs {
        let c = parse_client(text);
        if server.is_some() && c.server_key.is_some() && c.server_key != server {
            continue;
        }
        let Some(private) = c.private_key else {
            continue;
        };
        let public = private.public_key().to_string();
        let Some(peer) = src.peers.iter_mut().find(|p| p.public_key == public) else {
            continue;
        };
        peer.private_key = Some(private);
        if c.keepalive.is_some() {
            peer.keepalive = c.keepalive;
        }
        if peer.name.is_none() {
            peer.name = Some(file.trim_end_matches(".conf").to_owned());
        }
        if src.endpoint.is_none() {
            src.endpoint = c.endpoint;
        }
        if src.dns.is_empty() {
            src.dns = c.dns;
        }
    }
}

/// A PiVPN installation: `wg0.conf` (its blocks name the clients), the private keys from
/// `keys/NAME_priv` (`(NAME, text)`), and `configs/clients.txt` (`NAME PUBKEY CREATED IP`)
/// to name a peer outside any block.
pub fn add_pivpn(src: &mut Source, private_keys: &BTreeMap<String, String>, clients_txt: &str) {
    src.kind = "PiVPN";
    let by_key: BTreeMap<&str, &str> = clients_txt
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let name = f.next()?;
            Some((f.next()?, name))
        })
        .collect();
    for peer in &mut src.peers {
        if peer.name.is_none() {
            peer.name = by_key
                .get(peer.public_key.as_str())
                .map(|n| (*n).to_owned());
        }
        let Some(text) = peer.name.as_ref().and_then(|n| private_keys.get(n)) else {
            continue;
        };
        match Secret::parse(text) {
            Ok(k) => peer.private_key = Some(k),
            Err(e) => src.issues.push(Issue::conflict(
                &peer.place,
                format!("its private key file (keys/NAME_priv) {e}"),
            )),
        }
    }
}
