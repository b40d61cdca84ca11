//! The daemon's log lines on stderr (journald keeps them under systemd): one line per event,
//! logfmt or JSON lines, with a fixed field order so they can be grepped and parsed:
//!
//! ```text
//! ts=2026-11-24T10:00:00Z level=info event=peer_connected interface=wg0 peer=alice address=192.168.100.2 endpoint=198.51.100.10:40000
//! {"ts":"2026-11-24T10:00:00Z","level":"info","event":"peer_connected","interface":"wg0","peer":"alice",...}
//! ```
//!
//! Under systemd, when stderr is the journal (`JOURNAL_STREAM` names it), each line starts with
//! its syslog priority in sd-daemon's form (`<3>` error, `<4>` warning, `<6>` info), which
//! journald strips and stores as the entry's priority (`SyslogLevelPrefix=yes`, the default):
//! `journalctl -p warning -u wgadm` then shows the refused handshakes and errors alone. A
//! terminal or a file gets the lines without the prefix.

use std::io::Write;

use wgadm_core::events::{Event, Level, Value};
use wgadm_core::Date;

/// The line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `key=value` pairs, values quoted when they need it.
    Logfmt,
    /// One JSON object a line.
    Json,
}

/// Writes lines to stderr.
#[derive(Debug, Clone)]
pub struct Logger {
    format: LogFormat,
    interface: String,
    /// Lines start with their sd-daemon priority: stderr is the journal.
    journal: bool,
}

impl Logger {
    /// A logger whose lines name `interface`.
    pub fn new(format: LogFormat, interface: &str) -> Self {
        Logger {
            format,
            interface: interface.to_owned(),
            journal: stderr_is_journal(),
        }
    }

    /// Names another interface from now on (server.yml changed).
    pub fn set_interface(&mut self, interface: &str) {
        self.interface = interface.to_owned();
    }

    /// Logs an event.
    pub fn event(&self, e: &Event) {
        self.line(e.level(), e.name(), &e.fields());
    }

    /// Logs a line. A failed write to stderr is ignored: there is nowhere else to say it.
    pub fn line(&self, level: Level, event: &str, fields: &[(&str, Value)]) {
        let mut text = format_line(
            self.format,
            super::unix_now(),
            level,
            event,
            &self.interface,
            fields,
        );
        if self.journal {
            text.insert_str(0, priority_prefix(level));
        }
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(text.as_bytes());
    }
}

/// The sd-daemon prefix of a line at `level` (syslog priorities: err, warning, info).
pub fn priority_prefix(level: Level) -> &'static str {
    match level {
        Level::Error => "<3>",
        Level::Warn => "<4>",
        Level::Info => "<6>",
    }
}

/// Whether stderr is the journal: systemd sets `JOURNAL_STREAM=DEV:INODE` to the stream it
/// connects stdout/stderr to. Compared with stderr itself (as sd_journal_stream_fd's users
/// do), because the variable is inherited by children whose stderr is something else.
fn stderr_is_journal() -> bool {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(stderr) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    let Ok(meta) = std::fs::File::from(stderr).metadata() else {
        return false;
    };
    journal_stream_is(&value.to_string_lossy(), meta.dev(), meta.ino())
}

/// Whether a `JOURNAL_STREAM` value (`DEV:INODE`, decimal) names the file `dev`, `ino`.
pub fn journal_stream_is(value: &str, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = value.split_once(':') else {
        return false;
    };
    d.parse() == Ok(dev) && i.parse() == Ok(ino)
}

/// RFC 3339 UTC, seconds.
pub fn timestamp(unix: u64) -> String {
    let secs = i64::try_from(unix).unwrap_or(i64::MAX);
    let d = Date::from_unix_seconds(secs);
    let t = unix % 86_400;
    format!("{d}T{:02}:{:02}:{:02}Z", t / 3600, t / 60 % 60, t % 60)
}

/// One line, ending in a newline.
pub fn format_line(
    format: LogFormat,
    unix: u64,
    level: Level,
    event: &str,
    interface: &str,
    fields: &[(&str, Value)],
) -> String {
    let head = [
        ("ts", Value::Str(timestamp(unix))),
        ("level", Value::Str(level.as_str().into())),
        ("event", Value::Str(event.into())),
        ("interface", Value::Str(interface.into())),
    ];
    let all = head
        .iter()
        .map(|(k, v)| (*k, v))
        .chain(fields.iter().map(|(k, v)| (*k, v)));
    let mut out = String::with_capacity(160);
    match format {
        LogFormat::Logfmt => {
            for (i, (k, v)) in all.enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                out.push_str(k);
                out.push('=');
                match v {
                    Value::Int(n) => out.push_str(&n.to_string()),
                    Value::Str(s) => out.push_str(&logfmt_value(s)),
                    Value::List(l) => out.push_str(&logfmt_value(&l.join(","))),
                }
            }
        }
        LogFormat::Json => {
            // Written by hand to keep the field order (serde_json's map sorts its keys).
            out.push('{');
            for (i, (k, v)) in all.enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&json_string(k));
                out.push(':');
                match v {
                    Value::Int(n) => out.push_str(&n.to_string()),
                    Value::Str(s) => out.push_str(&json_string(s)),
                    Value::List(l) => {
                        out.push('[');
                        out.push_str(
                            &l.iter()
                                .map(|s| json_string(s))
                                .collect::<Vec<_>>()
                                .join(","),
                        );
                        out.push(']');
                    }
                }
            }
            out.push('}');
        }
    }
    out.push('\n');
    out
}

/// A JSON string literal.
fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// A logfmt value: bare when it is plain, else quoted with `\` escapes.
fn logfmt_value(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_graphic() && c != '"' && c != '=' && c != '\\');
    if plain {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(timestamp(1_732_480_000), "2024-11-24T20:26:40Z");
    }

    #[test]
    fn logfmt_lines() {
        let line = format_line(
            LogFormat::Logfmt,
            0,
            Level::Info,
            "peer_connected",
            "wg0",
            &[
                ("peer", "alice".into()),
                ("endpoint", "198.51.100.10:40000".into()),
                ("count", 3u64.into()),
                ("error", "it said \"no\" = bad\nreally".into()),
                ("added", Value::List(vec!["a".into(), "b".into()])),
                ("empty", "".into()),
            ],
        );
        assert_eq!(
            line,
            "ts=1970-01-01T00:00:00Z level=info event=peer_connected interface=wg0 peer=alice \
             endpoint=198.51.100.10:40000 count=3 error=\"it said \\\"no\\\" = bad\\nreally\" \
             added=a,b empty=\"\"\n"
        );
    }

    #[test]
    fn journal_priorities() {
        assert_eq!(priority_prefix(Level::Error), "<3>");
        assert_eq!(priority_prefix(Level::Warn), "<4>");
        assert_eq!(priority_prefix(Level::Info), "<6>");
        assert!(journal_stream_is("8:12345", 8, 12345));
        assert!(!journal_stream_is("8:12345", 8, 12346));
        assert!(!journal_stream_is("8:12345", 9, 12345));
        assert!(!journal_stream_is("", 0, 0));
        assert!(!journal_stream_is("x:1", 0, 1));
    }

    #[test]
    fn json_lines() {
        let line = format_line(
            LogFormat::Json,
            0,
            Level::Warn,
            "handshake_refused",
            "wg0",
            &[("source", "198.51.100.66".into()), ("count", 2u64.into())],
        );
        assert!(line.ends_with("}\n") && line.lines().count() == 1);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["level"], "warn");
        assert_eq!(v["event"], "handshake_refused");
        assert_eq!(v["source"], "198.51.100.66");
        assert_eq!(v["count"], 2);
        assert!(
            line.starts_with("{\"ts\":\"1970-01-01T00:00:00Z\",\"level\":"),
            "{line}"
        );
    }
}
