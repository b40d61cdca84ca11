//! wg-easy: version 14's `wg0.json` and the rows of version 15's SQLite database.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{Issue, Source, SourcePeer};
use crate::{Date, Secret};

/// wg-easy 14 writes the server address without a prefix and always uses a /24.
const V14_PREFIX: u8 = 24;
/// wg-easy 14's port unless WG_PORT said otherwise (it is not in wg0.json).
pub const V14_DEFAULT_PORT: u16 = 51820;

fn text<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn secret(issues: &mut Vec<Issue>, place: &str, what: &str, value: Option<&str>) -> Option<Secret> {
    let v = value.filter(|v| !v.is_empty())?;
    match Secret::parse(v) {
        Ok(k) => Some(k),
        Err(e) => {
            issues.push(Issue::conflict(place, format!("{what} {e}")));
            None
        }
    }
}

/// Reads wg-easy 14's `wg0.json`. `file` names it in messages.
pub fn parse_v14(json: &str, file: &str) -> Source {
    let mut src = Source {
        kind: "wg-easy",
        file: file.to_owned(),
        listen_port: Some(V14_DEFAULT_PORT),
        server_place: Some(format!("{file}: server")),
        ..Source::default()
    };
    let root: Value = match serde_json::from_str(json) {
        Ok(v) => v,
        Err(e) => {
            // serde_json's message names line and column, never the text.
            src.issues
                .push(Issue::conflict(file, format!("is not JSON: {e}")));
            return src;
        }
    };
    let here = format!("{file}: server");
    let server = root.get("server").cloned().unwrap_or(Value::Null);
    src.private_key = secret(
        &mut src.issues,
        &here,
        "privateKey",
        text(&server, "privateKey"),
    );
    src.public_key = text(&server, "publicKey").map(str::to_owned);
    match text(&server, "address") {
        Some(a) => src.addresses.push(format!("{a}/{V14_PREFIX}")),
        None => src.issues.push(Issue::conflict(
            &here,
            "has no address; is this wg-easy's wg0.json?",
        )),
    }
    let clients = root.get("clients").and_then(Value::as_object);
    for (id, c) in clients.into_iter().flatten() {
        let name = text(c, "name").map(str::to_owned);
        let place = format!(
            "{file}: clients.{id}{}",
            name.as_deref()
                .map(|n| format!(" ({n:?})"))
                .unwrap_or_default()
        );
        let private_key = secret(&mut src.issues, &place, "privateKey", text(c, "privateKey"));
        let preshared_key = secret(
            &mut src.issues,
            &place,
            "preSharedKey",
            text(c, "preSharedKey"),
        );
        src.peers.push(SourcePeer {
            name,
            public_key: text(c, "publicKey").unwrap_or_default().to_owned(),
            preshared_key,
            allowed_ips: text(c, "address")
                .map(|a| vec![format!("{a}/32")])
                .unwrap_or_default(),
            private_key,
            enabled: c.get("enabled").and_then(Value::as_bool).unwrap_or(true),
            keepalive: None,
            expires: text(c, "expiredAt").and_then(date_prefix),
            extras: Vec::new(),
            place,
        });
    }
    src
}

/// The date of an ISO timestamp (`2027-01-31T00:00:00.000Z` or `2027-01-31 ...`).
fn date_prefix(s: &str) -> Option<Date> {
    Date::parse(s.get(..10)?).ok()
}

/// A SQLite value, as the shell reads it.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// NULL.
    Null,
    /// An INTEGER.
    Int(i64),
    /// TEXT.
    Text(String),
}

/// A row: column name to value (columns read by name, so later versions may add some).
pub type Row = BTreeMap<String, Cell>;

fn cell_text<'a>(row: &'a Row, col: &str) -> Option<&'a str> {
    match row.get(col) {
        Some(Cell::Text(t)) => Some(t.as_str()),
        _ => None,
    }
}

fn cell_int(row: &Row, col: &str) -> Option<i64> {
    match row.get(col) {
        Some(Cell::Int(i)) => Some(*i),
        Some(Cell::Text(t)) => t.trim().parse().ok(),
        _ => None,
    }
}

/// Reads wg-easy 15's `interfaces_table` row of the interface and its `clients_table` rows.
pub fn parse_v15(interface: &Row, clients: &[Row], file: &str) -> Source {
    let here = format!("{file}: interfaces_table");
    let mut src = Source {
        kind: "wg-easy",
        file: file.to_owned(),
        server_place: Some(here.clone()),
        ..Source::default()
    };
    src.private_key = secret(
        &mut src.issues,
        &here,
        "private_key",
        cell_text(interface, "private_key"),
    );
    src.public_key = cell_text(interface, "public_key").map(str::to_owned);
    src.listen_port = cell_int(interface, "port")
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0);
    v15_addresses(interface, &here, &mut src);
    for row in clients {
        let peer = v15_client(row, file, &mut src.issues);
        src.peers.push(peer);
    }
    src
}

/// The server's addresses from wg-easy 15's `ipv4_cidr` and `ipv6_cidr`.
fn v15_addresses(interface: &Row, here: &str, src: &mut Source) {
    // The server takes the first host of ipv4_cidr, as wg-easy does.
    if let Some(cidr) = cell_text(interface, "ipv4_cidr") {
        match cidr.parse::<ipnet::Ipv4Net>() {
            Ok(net) => match net.hosts().next() {
                Some(first) => src.addresses.push(format!("{first}/{}", net.prefix_len())),
                None => src.issues.push(Issue::conflict(
                    here,
                    format!("ipv4_cidr {cidr} has no hosts"),
                )),
            },
            Err(_) => src.issues.push(Issue::conflict(
                here,
                format!("ipv4_cidr {cidr:?} is no IPv4 network"),
            )),
        }
    }
    if let Some(cidr) = cell_text(interface, "ipv6_cidr").filter(|c| !c.is_empty()) {
        match cidr.parse::<ipnet::Ipv6Net>() {
            Ok(net) => {
                // The first address after the network's, as for IPv4.
                let first = std::net::Ipv6Addr::from(u128::from(net.network()).saturating_add(1));
                src.addresses.push(format!("{first}/{}", net.prefix_len()))
            }
            Err(_) => src.issues.push(Issue::conflict(
                here,
                format!("ipv6_cidr {cidr:?} is no IPv6 network"),
            )),
        }
    }
}

/// One row of wg-easy 15's `clients_table`.
fn v15_client(row: &Row, file: &str, issues: &mut Vec<Issue>) -> SourcePeer {
    let id = cell_int(row, "id")
        .map(|i| i.to_string())
        .unwrap_or_else(|| "?".into());
    let name = cell_text(row, "name").map(str::to_owned);
    let place = format!(
        "{file}: clients_table id {id}{}",
        name.as_deref()
            .map(|n| format!(" ({n:?})"))
            .unwrap_or_default()
    );
    let private_key = secret(issues, &place, "private_key", cell_text(row, "private_key"));
    let preshared_key = secret(
        issues,
        &place,
        "pre_shared_key",
        cell_text(row, "pre_shared_key"),
    );
    let mut allowed_ips: Vec<String> = cell_text(row, "ipv4_address")
        .map(|a| vec![format!("{a}/32")])
        .unwrap_or_default();
    if let Some(v6) = cell_text(row, "ipv6_address").filter(|a| !a.is_empty()) {
        allowed_ips.push(format!("{v6}/128"));
    }
    if let Some(Cell::Text(extra)) = row.get("server_allowed_ips") {
        // A JSON list of extra networks routed through this client.
        if let Ok(list) = serde_json::from_str::<Vec<String>>(extra) {
            allowed_ips.extend(list);
        }
    }
    SourcePeer {
        name,
        public_key: cell_text(row, "public_key").unwrap_or_default().to_owned(),
        preshared_key,
        allowed_ips,
        private_key,
        enabled: cell_int(row, "enabled").is_none_or(|e| e != 0),
        keepalive: cell_int(row, "persistent_keepalive").and_then(|k| u16::try_from(k).ok()),
        expires: cell_text(row, "expires_at").and_then(date_prefix),
        extras: Vec::new(),
        place,
    }
}
