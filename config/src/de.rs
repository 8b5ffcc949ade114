//! serde helpers for values written as text in a policy file: durations (`30s`, `1m 30s`) and
//! byte sizes (`64MiB`).
//!
//! A value that does not parse is a serde error, so it is reported with its line and column like
//! any type error.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Parses `"1s"`, `"250ms"`, `"1m 30s"` into a [`Duration`].
pub(crate) fn duration<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(deserializer)?;
    humantime::parse_duration(&text)
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!("invalid duration {text:?}: {e}")))
}

/// Parses a list of durations such as `[5s, 10s]`.
pub(crate) fn durations<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Vec<Duration>>, D::Error> {
    let texts = Vec::<String>::deserialize(deserializer)?;
    texts
        .iter()
        .map(|text| {
            humantime::parse_duration(text)
                .map_err(|e| serde::de::Error::custom(format!("invalid duration {text:?}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// Reads a byte size: a number of bytes, or a string like `512KiB`, `64MiB`, `1GiB`, `10MB`.
pub(crate) fn byte_size<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Number(u64),
        Text(String),
    }
    match Size::deserialize(deserializer)? {
        Size::Number(n) => Ok(Some(n)),
        Size::Text(text) => parse_byte_size(&text).map(Some).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "invalid size {text:?}: use e.g. 65536, 512KiB, 64MiB, 1GiB"
            ))
        }),
    }
}

/// Parses `64MiB`, `512 KiB`, `10MB`, `4096` or `4096B` into bytes.
pub fn parse_byte_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => return None,
    };
    number.checked_mul(factor)
}
