//! Deserializing a type from a string through a visitor, so that a YAML error keeps the line,
//! column and field it is at (serde_norway marks only errors raised inside its own calls).

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, Visitor};

struct Parse<T, E> {
    parse: fn(&str) -> Result<T, E>,
    what: &'static str,
    _t: PhantomData<T>,
}

impl<'de, T, E: fmt::Display> Visitor<'de> for Parse<T, E> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.what)
    }

    fn visit_str<Er: de::Error>(self, v: &str) -> Result<T, Er> {
        (self.parse)(v).map_err(|e| match self.what {
            "" => Er::custom(e),
            what => Er::custom(format!("{what} {e}")),
        })
    }
}

/// Deserializes a string and parses it; the error is "`what` `parse's error`", marked where
/// the value is.
pub(crate) fn parsed<'de, D, T, E>(
    d: D,
    what: &'static str,
    parse: fn(&str) -> Result<T, E>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    E: fmt::Display,
{
    d.deserialize_str(Parse {
        parse,
        what,
        _t: PhantomData,
    })
}
