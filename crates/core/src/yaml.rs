//! Reading a state file (`server.yml`, `peers/NAME.yml`) from its text, for files that may be
//! hostile: a key file copied over a peer file, a symlink to a secret, a file of nested brackets.
//!
//! - Errors never quote the file. The YAML library's messages carry the offending value (a
//!   private key, when a key file sits where a peer file belongs), so a message here is built
//!   from the position (line, column), the name of a known field and a fixed description of
//!   what that field holds. Only an unknown field's name is shown, and only when it is a short
//!   lowercase identifier (a key is never one).
//! - Files larger than [`MAX_BYTES`] or with more than [`MAX_BRACKETS`] `[` and `{` are refused
//!   before parsing: the parser takes time quadratic in the nesting of flow collections (a
//!   200 KB file of `[` took minutes). Counting every opening bracket, wherever it is, bounds
//!   the nesting without having to tokenize YAML, and wgadm's own files have none.
//! - A leading UTF-8 byte order mark (some editors write one) is skipped.

use serde::de::DeserializeOwned;

use crate::{Peer, Problem, Server};

/// The largest state file read. wgadm writes peer files of about 200 bytes and a server.yml of
/// under 1 KiB; a hand-edited one with long lists still fits many times over.
pub const MAX_BYTES: usize = 64 * 1024;

/// The most `[` and `{` a state file may hold: a bound on the nesting of flow collections.
pub const MAX_BRACKETS: usize = 32;

/// A state file type: its fields and what each holds, for messages that cannot quote the file.
pub trait Schema: DeserializeOwned {
    /// What the file is, e.g. "a peer file".
    const WHAT: &'static str;
    /// Every field (the names serde knows) with a description of its value.
    const FIELDS: &'static [(&'static str, &'static str)];
}

const NETWORKS: &str = "a list of IPv4 networks, like [192.168.1.0/24, 10.0.0.0/8]";
const KEY: &str = "a WireGuard public key: 44 characters of base64 ending in '='";
const KEEPALIVE: &str = "a number of seconds, 0 to 65535 (0 turns it off)";

impl Schema for Server {
    const WHAT: &'static str = "server.yml";
    const FIELDS: &'static [(&'static str, &'static str)] = &[
        (
            "interface",
            "a Linux interface name: 1-15 letters, digits or '-_.=+', like wg0",
        ),
        (
            "subnet",
            "an IPv4 network from /8 to /30, like 192.168.100.0/24",
        ),
        (
            "address",
            "the server's IPv4 address in the subnet, like 192.168.100.1",
        ),
        ("listen_port", "a UDP port, 1 to 65535"),
        (
            "endpoint",
            "HOST:PORT, HOST being a DNS name, an IPv4 address or an IPv6 address in brackets, \
             PORT 1 to 65535, like vpn.example.com:51820",
        ),
        ("public_key", KEY),
        ("access", NETWORKS),
        ("deny", NETWORKS),
        ("dns", "a list of IP addresses, like [192.168.1.1]"),
        ("keepalive", KEEPALIVE),
        ("nat", "masquerade or none"),
        ("allowed_sources", NETWORKS),
        (
            "inbound",
            "drop or allow (whether hosts outside the VPN may open connections to peers)",
        ),
    ];
}

impl Schema for Peer {
    const WHAT: &'static str = "a peer file";
    const FIELDS: &'static [(&'static str, &'static str)] = &[
        (
            "address",
            "the peer's IPv4 address in the VPN subnet, like 192.168.100.2",
        ),
        ("public_key", KEY),
        ("access", NETWORKS),
        ("keepalive", KEEPALIVE),
        ("enabled", "true or false"),
        (
            "expires",
            "a date YYYY-MM-DD from 1970-01-01 to 9999-12-31, like 2026-12-31",
        ),
        ("preshared_key", "true or false"),
    ];
}

/// Parses a state file; `place` is its path relative to the state directory. The error names
/// `place`, a line and a field when known, what is expected and what to do, and never quotes
/// the file.
pub fn parse<T: Schema>(place: &str, text: &str) -> Result<T, Problem> {
    let problem = |message: String| Problem {
        place: place.to_owned(),
        message: format!("{message}; fix the file or restore it from a backup"),
    };
    if text.len() > MAX_BYTES {
        return Err(problem(format!(
            "is {} bytes, more than the {MAX_BYTES} a state file may have (it is not {}, \
             which is a few hundred bytes)",
            text.len(),
            T::WHAT
        )));
    }
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if let Some((line, column)) = too_many_brackets(text) {
        return Err(problem(format!(
            "line {line}, column {column}: more than {MAX_BRACKETS} '[' or '{{' in one file; \
             nesting that deep is refused unread, as it would stall the YAML parser \
             (write lists as `- item` lines)"
        )));
    }
    serde_norway::from_str::<T>(text).map_err(|e| problem(describe::<T>(text, &e)))
}

/// The line and column of the opening bracket that is one too many.
fn too_many_brackets(text: &str) -> Option<(usize, usize)> {
    let mut seen = 0;
    for (l, line) in text.split('\n').enumerate() {
        for (c, ch) in line.chars().enumerate() {
            if ch == '[' || ch == '{' {
                seen += 1;
                if seen > MAX_BRACKETS {
                    return Some((l + 1, c + 1));
                }
            }
        }
    }
    None
}

/// A safe field name to show: a short lowercase identifier (never a key, never a line break).
fn presentable(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn at(location: Option<serde_norway::Location>) -> String {
    match location {
        Some(l) => format!("line {}, column {}: ", l.line(), l.column()),
        None => String::new(),
    }
}

/// What kind of YAML value a file holds at its top, in words.
fn kind(value: &serde_norway::Value) -> &'static str {
    use serde_norway::Value;
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a single true/false",
        Value::Number(_) => "a single number",
        Value::String(_) => "a single line of text (a key file copied over it, perhaps)",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// The messages of the YAML library that are fixed texts (none quotes the input).
const FIXED: &[&str] = &[
    "recursion limit exceeded",
    "repetition limit exceeded",
    "unknown anchor",
    "EOF while parsing a value",
    "deserializing from YAML containing more than one document is not supported",
    "expected a mapping or list of mappings for merging, but found scalar",
    "unexpected tagged value in merge",
    "expected a mapping for merging, but found scalar",
    "expected a mapping for merging, but found sequence",
    "empty YAML tag is not allowed",
    "failed to parse YAML number",
];

/// Why the text is not YAML at all, from an error of parsing it as any value.
fn syntax(e: &serde_norway::Error) -> String {
    // libyaml's own errors (Debug `Error { kind: ...`) are its fixed problem and context texts
    // with positions; everything else is only shown when it is one of the fixed texts.
    let debug = format!("{e:?}");
    if debug.starts_with("Error { kind:") {
        return format!("is not valid YAML: {e}");
    }
    let shown = e.to_string();
    let message = shown.split(" at line ").next().unwrap_or("");
    if message.starts_with("duplicate entry with key ") {
        // Its position is the mapping's start, not the repeated key: better none.
        return "is not valid YAML: a field appears twice; keep one".to_owned();
    }
    let reason = match FIXED.iter().find(|f| **f == message) {
        Some(&"recursion limit exceeded") => "it nests deeper than 128 levels".to_owned(),
        Some(fixed) => (*fixed).to_owned(),
        None => "the YAML is malformed".to_owned(),
    };
    format!("{}is not valid YAML: {reason}", at(e.location()))
}

/// A message for a file that did not deserialize as `T`, without any text of the file.
fn describe<T: Schema>(text: &str, e: &serde_norway::Error) -> String {
    let value = match serde_norway::from_str::<serde_norway::Value>(text) {
        Ok(v) => v,
        Err(e) => return syntax(&e),
    };
    let Some(map) = value.as_mapping() else {
        return format!(
            "holds {} where {} has `field: value` lines (fields {})",
            kind(&value),
            T::WHAT,
            field_list::<T>()
        );
    };
    let mut known: Vec<&str> = T::FIELDS.iter().map(|(f, _)| *f).collect();
    known.sort_by_key(|f| std::cmp::Reverse(f.len()));
    known_field::<T>(&e.to_string(), &known, e)
        .or_else(|| unknown_field::<T>(map, &known, e))
        .unwrap_or_else(|| {
            format!(
                "{}a value is not what {} holds there (its fields: {})",
                at(e.location()),
                T::WHAT,
                field_list::<T>()
            )
        })
}

/// What `field` of `T` holds, for messages.
fn expected<T: Schema>(field: &str) -> &'static str {
    T::FIELDS
        .iter()
        .find(|(f, _)| *f == field)
        .map_or("", |(_, d)| *d)
}

/// The message for an error serde_norway pins on a known field (`shown` is its text): a bad
/// value, a missing field, a field twice. `known` is longest first, so `access` is not taken
/// for a prefix of a longer name.
fn known_field<T: Schema>(shown: &str, known: &[&str], e: &serde_norway::Error) -> Option<String> {
    // A value error of a known field: serde_norway puts the field first (`access[1]: ...`).
    if let Some(field) = known.iter().find(|f| {
        shown
            .strip_prefix(**f)
            .is_some_and(|rest| rest.starts_with(": ") || rest.starts_with('['))
    }) {
        return Some(format!(
            "{}field `{field}`: expected {}",
            at(e.location()),
            expected::<T>(field)
        ));
    }
    let named = |prefix: &str| {
        shown
            .strip_prefix(prefix)
            .and_then(|rest| rest.split('`').next())
            .and_then(|f| known.iter().find(|k| **k == f).copied())
    };
    if let Some(field) = named("missing field `") {
        return Some(format!(
            "the field `{field}` is missing: add a line `{field}: ...` with {}",
            expected::<T>(field)
        ));
    }
    named("duplicate field `").map(|field| {
        format!(
            "{}the field `{field}` appears twice: keep one",
            at(e.location())
        )
    })
}

/// The message for a field `T` does not have, named only when it looks like a field name
/// (the file may be a key or anything else).
fn unknown_field<T: Schema>(
    map: &serde_norway::Mapping,
    known: &[&str],
    e: &serde_norway::Error,
) -> Option<String> {
    let key = map
        .keys()
        .find(|k| k.as_str().is_none_or(|k| !known.contains(&k)))?;
    let name = match key.as_str() {
        Some(k) if presentable(k) => format!("the unknown field `{k}`"),
        _ => "an unknown field".to_owned(),
    };
    Some(format!(
        "{}{name}: {} has only the fields {}",
        at(e.location()),
        T::WHAT,
        field_list::<T>()
    ))
}

fn field_list<T: Schema>() -> String {
    T::FIELDS
        .iter()
        .map(|(f, _)| *f)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECRET: &str = "cGxlYXNlIGRvIG5vdCBwcmludCBtZSBhbnl3aGVyZSE=";

    const PEER: &str = "address: 192.168.100.2\n\
                        public_key: HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=\n\
                        keepalive: 25\nenabled: true\n";

    fn err<T: Schema + std::fmt::Debug>(text: &str) -> String {
        let p = parse::<T>("peers/x.yml", text).expect_err(text);
        assert_eq!(p.place, "peers/x.yml");
        assert!(!p.message.contains(SECRET), "{}", p.message);
        p.message
    }

    /// The field names serde knows, collected by a deserializer that only asks.
    fn serde_fields<T: DeserializeOwned>() -> Vec<&'static str> {
        struct Ask(Vec<&'static str>);
        #[derive(Debug)]
        struct Stop;
        impl std::fmt::Display for Stop {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("stop")
            }
        }
        impl std::error::Error for Stop {}
        impl serde::de::Error for Stop {
            fn custom<M: std::fmt::Display>(_: M) -> Self {
                Stop
            }
        }
        impl<'de> serde::Deserializer<'de> for &mut Ask {
            type Error = Stop;
            fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
                Err(Stop)
            }
            fn deserialize_struct<V: serde::de::Visitor<'de>>(
                self,
                _: &'static str,
                fields: &'static [&'static str],
                _: V,
            ) -> Result<V::Value, Stop> {
                self.0 = fields.to_vec();
                Err(Stop)
            }
            serde::forward_to_deserialize_any! {
                bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
                byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map
                enum identifier ignored_any
            }
        }
        let mut ask = Ask(Vec::new());
        let _ = T::deserialize(&mut ask);
        ask.0
    }

    #[test]
    fn the_schemas_list_exactly_the_fields_serde_knows() {
        let names = |f: &[(&'static str, &'static str)]| -> Vec<&'static str> {
            f.iter().map(|(n, _)| *n).collect()
        };
        assert_eq!(serde_fields::<Server>(), names(Server::FIELDS));
        assert_eq!(serde_fields::<Peer>(), names(Peer::FIELDS));
    }

    #[test]
    fn a_valid_file_parses_with_or_without_a_byte_order_mark() {
        let a: Peer = parse("peers/x.yml", PEER).unwrap();
        let b: Peer = parse("peers/x.yml", &format!("\u{feff}{PEER}")).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn a_key_file_in_place_of_a_peer_file_is_not_quoted() {
        let m = err::<Peer>(&format!("{SECRET}\n"));
        assert!(m.contains("a single line of text"), "{m}");
        assert!(m.contains("address, public_key"), "{m}");
        let m = err::<Server>(&format!("{SECRET}\n"));
        assert!(m.contains("server.yml has `field: value` lines"), "{m}");
    }

    #[test]
    fn a_bad_value_names_line_field_and_what_is_expected() {
        let text = PEER.replace("keepalive: 25", &format!("keepalive: {SECRET}"));
        assert_eq!(
            err::<Peer>(&text),
            "line 3, column 12: field `keepalive`: expected a number of seconds, 0 to 65535 \
             (0 turns it off); fix the file or restore it from a backup"
        );
        let text = format!("{PEER}access: [10.0.0.0/8, {SECRET}]\n");
        let m = err::<Peer>(&text);
        assert!(
            m.starts_with("line 5, column 22: field `access`: expected a list"),
            "{m}"
        );
        let text = format!("{PEER}expires: 0999-01-01\n");
        let m = err::<Peer>(&text);
        assert!(
            m.contains("field `expires`: expected a date YYYY-MM-DD from 1970"),
            "{m}"
        );
        let text = PEER.replace("HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=", SECRET);
        let text = text.replace("public_key: ", "public_key: x");
        assert!(err::<Peer>(&text)
            .contains("line 2, column 13: field `public_key`: expected a WireGuard public key"));
    }

    #[test]
    fn unknown_fields_are_named_only_when_harmless() {
        let m = err::<Peer>(&format!("{PEER}colour: blue\n"));
        assert!(m.starts_with("line 5, column 1: the unknown field `colour`: a peer file has only the fields address"), "{m}");
        let m = err::<Peer>(&format!("{PEER}{SECRET}: 1\n"));
        assert!(m.starts_with("line 5, column 1: an unknown field: "), "{m}");
        let m = err::<Peer>(&format!("{PEER}\"a\\nPostUp = x\": 1\n"));
        assert!(
            m.contains("an unknown field:") && !m.contains("PostUp"),
            "{m}"
        );
        assert!(!presentable(&"a".repeat(33)) && !presentable("A") && !presentable("a-b"));
    }

    #[test]
    fn missing_and_duplicate_fields() {
        let m = err::<Peer>("address: 192.168.100.2\n");
        assert!(
            m.starts_with(
                "the field `public_key` is missing: add a line `public_key: ...` with a WireGuard"
            ),
            "{m}"
        );
        let m = err::<Peer>(&format!("{PEER}enabled: false\n"));
        assert!(
            m.starts_with("is not valid YAML: a field appears twice; keep one"),
            "{m}"
        );
    }

    #[test]
    fn syntax_errors_keep_libyaml_positions_and_nothing_else() {
        let m = err::<Peer>(&format!("{PEER}\tx: {SECRET}\n"));
        assert!(
            m.starts_with("is not valid YAML: found a tab character"),
            "{m}"
        );
        assert!(m.contains("line 5 column 1"), "{m}");
        let m = err::<Peer>(&format!("address: \"{SECRET}\n"));
        assert!(m.contains("not valid YAML"), "{m}");
        let m = err::<Peer>(&format!("{PEER}---\n{PEER}"));
        assert!(m.contains("more than one document"), "{m}");
    }

    #[test]
    fn oversized_and_deeply_nested_files_are_refused_unread() {
        let big = format!("{PEER}#{}\n", "x".repeat(MAX_BYTES));
        assert!(err::<Peer>(&big).contains("more than the 65536"));
        let start = std::time::Instant::now();
        for bomb in [
            "[".repeat(60_000),
            format!("address: {}", "{a: ".repeat(16_000)),
        ] {
            let m = err::<Peer>(&bomb);
            assert!(m.contains("more than 32 '[' or '{'"), "{m}");
        }
        println!("bracket bombs refused in {:?}", start.elapsed());
        // Deep block nesting is cheap for the parser, which stops at its recursion limit.
        let m = err::<Peer>(&"- ".repeat(30_000));
        assert!(m.contains("nests deeper than 128 levels"), "{m}");
        let indented: String = (0..300).map(|i| format!("{}k:\n", " ".repeat(i))).collect();
        let m = err::<Peer>(&indented);
        assert!(m.contains("nests deeper than 128 levels"), "{m}");
    }

    proptest! {
        /// Whatever a file holds, a message never carries a line of it longer than a field name.
        #[test]
        fn messages_never_quote_the_file(
            junk in "[A-Za-z0-9+/]{43}=",
            at in 0usize..4,
            shape in 0usize..6,
        ) {
            let mut lines: Vec<String> = PEER.lines().map(str::to_owned).collect();
            let bad = match shape {
                0 => junk.clone(),
                1 => format!("address: {junk}"),
                2 => format!("{junk}: 1"),
                3 => format!("access: [{junk}]"),
                4 => format!("expires: \"{junk}\""),
                _ => format!("keepalive: '{junk}"),
            };
            lines.insert(at.min(lines.len()), bad);
            let text = lines.join("\n");
            if let Err(p) = parse::<Peer>("peers/x.yml", &text) {
                prop_assert!(!p.message.contains(&junk), "{}", p.message);
            }
        }
    }
}
