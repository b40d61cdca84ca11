//! Calendar dates (UTC) for peer expiry. A peer that `expires: 2026-12-01` works through
//! 2026-11-30 and is left out of the server config from 2026-12-01 on.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a date was refused. Every variant reads the same to a user, who needs the rule, not
/// the kind; the message does not repeat the text (it may come from a hand-edited file).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DateError {
    /// Not four, two and two digits joined by `-`.
    #[error("{RULE}")]
    Shape,
    /// A part that is not a number.
    #[error("{RULE}")]
    Number(#[source] std::num::ParseIntError),
    /// A year out of range, or a month or day that does not exist (2026-02-30).
    #[error("{RULE}")]
    NoSuchDay,
}

/// What [`DateError`] says: the rule and an example to copy.
const RULE: &str = "is not a valid YYYY-MM-DD date from 1970-01-01 to 9999-12-31 (like 2026-12-31)";

/// A proleptic Gregorian date, ordered by time.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    year: i32,
    month: u8,
    day: u8,
}

fn days_in_month(year: i32, month: u8) -> u8 {
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

impl Date {
    /// The earliest date accepted: the Unix epoch (nothing in a VPN's life is older).
    pub const MIN_YEAR: i32 = 1970;
    /// The latest year accepted: the last with four digits.
    pub const MAX_YEAR: i32 = 9999;

    /// Parses `YYYY-MM-DD` from 1970-01-01 to 9999-12-31. The error does not repeat the text
    /// (it may come from a hand-edited file); callers name the field.
    pub fn parse(s: &str) -> Result<Self, DateError> {
        let mut parts = s.split('-');
        let (Some(y), Some(m), Some(d), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(DateError::Shape);
        };
        let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
        if y.len() != 4 || m.len() != 2 || d.len() != 2 || !digits(y) || !digits(m) || !digits(d) {
            return Err(DateError::Shape);
        }
        let year: i32 = y.parse().map_err(DateError::Number)?;
        let month: u8 = m.parse().map_err(DateError::Number)?;
        let day: u8 = d.parse().map_err(DateError::Number)?;
        if !(Self::MIN_YEAR..=Self::MAX_YEAR).contains(&year)
            || !(1..=12).contains(&month)
            || day == 0
            || day > days_in_month(year, month)
        {
            return Err(DateError::NoSuchDay);
        }
        Ok(Date { year, month, day })
    }

    /// The date of a Unix timestamp, in UTC.
    pub fn from_unix_seconds(secs: i64) -> Self {
        // Howard Hinnant's civil_from_days.
        let z = secs.div_euclid(86_400) + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
        let year = (yoe + era * 400 + i64::from(month <= 2)) as i32;
        Date { year, month, day }
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

impl fmt::Debug for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::str::FromStr for Date {
    type Err = DateError;
    fn from_str(s: &str) -> Result<Self, DateError> {
        Date::parse(s)
    }
}

impl Serialize for Date {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Date {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::de::parsed(d, "the date", Date::parse)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_dates_only() {
        assert_eq!(Date::parse("2024-02-29").unwrap().to_string(), "2024-02-29");
        for bad in [
            "2023-02-29",
            "2024-13-01",
            "2024-1-01",
            "24-01-01",
            "2024-01-01x",
            "",
            "0999-01-01",
            "1969-12-31",
            "+999-01-01",
            "2024-+1-01",
            "2024-01-+1",
        ] {
            let err = Date::parse(bad).expect_err(bad).to_string();
            assert!(err.contains("from 1970-01-01 to 9999-12-31"), "{err}");
            assert!(bad.is_empty() || !err.contains(bad), "{err}");
        }
        assert!(Date::parse("1970-01-01").is_ok() && Date::parse("9999-12-31").is_ok());
        // The message states the limits the code enforces.
        let limits = format!("{}-01-01 to {}-12-31", Date::MIN_YEAR, Date::MAX_YEAR);
        assert!(RULE.contains(&limits), "{RULE}");
    }

    #[test]
    fn converts_unix_time() {
        assert_eq!(Date::from_unix_seconds(0).to_string(), "1970-01-01");
        assert_eq!(
            Date::from_unix_seconds(951_782_400).to_string(),
            "2000-02-29"
        );
        assert_eq!(
            Date::from_unix_seconds(1_796_083_199).to_string(),
            "2026-11-30"
        );
        assert!(Date::parse("2026-11-30").unwrap() < Date::parse("2026-12-01").unwrap());
    }
}
