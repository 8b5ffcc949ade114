//! Names and label values Forecourt writes: the DNS label rules they must follow and the stable
//! hash that keeps shortened names distinct.
//!
//! ```text
//!  "<stable>-<version>" fits (DNS-1035, ≤ 63) ─► used as is
//!  otherwise ─► sanitized, shortened ─► "<stable…>-<version>-<8 hex of fnv1a(full name)>"
//! ```
//!
//! The hash is FNV-1a, written here: the same input gives the same name on every replica, build
//! and platform (std's `DefaultHasher` is randomized per process and may change between releases).

/// Longest DNS label (a Service name, a label value).
pub(crate) const MAX_LABEL: usize = 63;

/// FNV-1a, 64 bits folded to 32: stable across builds and platforms, unlike std's hasher.
pub(crate) fn fnv1a32(bytes: &[u8]) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    // Truncation intended: fold the high half into the low half.
    ((hash >> 32) ^ (hash & 0xffff_ffff)) as u32
}

/// Eight lowercase hex digits of [`fnv1a32`] of `raw`.
pub(crate) fn hash_suffix(raw: &str) -> String {
    format!("{:08x}", fnv1a32(raw.as_bytes()))
}

/// Whether `name` is an RFC 1035 label as Kubernetes checks Service names: 1–63 lowercase
/// letters, digits and `-`, starting with a letter and ending with a letter or digit.
pub(crate) fn is_dns_1035_label(name: &str) -> bool {
    (1..=MAX_LABEL).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
}

/// Whether `value` is a valid label value: at most 63 letters, digits, `-`, `_` or `.`, starting
/// and ending with a letter or digit (empty allowed).
#[cfg(test)]
pub(crate) fn is_label_value(value: &str) -> bool {
    let edge = |c: Option<char>| c.is_none_or(|c| c.is_ascii_alphanumeric());
    value.len() <= MAX_LABEL
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && edge(value.chars().next())
        && edge(value.chars().last())
}

/// `raw` lowercased with every character but letters and digits turned into `-`, trimmed of
/// `-` at both ends.
pub(crate) fn sanitize(raw: &str) -> String {
    let mapped: String = raw
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect();
    mapped.trim_matches('-').to_owned()
}

/// The first `max` bytes of an ASCII `name` (as [`sanitize`] returns), without a trailing `-`.
pub(crate) fn cut(name: &str, max: usize) -> &str {
    name.get(..name.len().min(max))
        .unwrap_or(name)
        .trim_end_matches('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_stable_and_spreads() {
        // Fixed values: a change here renames every shortened object in every cluster.
        assert_eq!(hash_suffix(""), "4fd0bfc1");
        assert_eq!(hash_suffix("shop-beta"), "61ec1208");
        assert_eq!(hash_suffix("a"), hash_suffix("a"));
        assert_ne!(hash_suffix("a"), hash_suffix("b"));
    }

    #[test]
    fn dns_1035_labels_start_with_a_letter() {
        assert!(is_dns_1035_label("shop-beta"));
        assert!(is_dns_1035_label(&"a".repeat(63)));
        for bad in [
            "",
            "1shop",
            "-shop",
            "shop-",
            "Shop",
            "shop.beta",
            &"a".repeat(64),
        ] {
            assert!(!is_dns_1035_label(bad), "{bad:?}");
        }
    }

    #[test]
    fn label_values_follow_the_api_rule() {
        assert!(is_label_value(""));
        assert!(is_label_value("shop_1.beta-2"));
        assert!(!is_label_value("-shop"));
        assert!(!is_label_value(&"a".repeat(64)));
    }

    #[test]
    fn sanitize_and_cut_leave_no_dash_at_the_edges() {
        assert_eq!(sanitize("-Shop.Web_1-"), "shop-web-1");
        assert_eq!(cut("abc-def", 4), "abc");
        assert_eq!(cut("abc", 10), "abc");
    }
}
