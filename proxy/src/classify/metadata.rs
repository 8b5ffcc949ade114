//! Request metadata: which tenant sent a request, which feature flag it carries, and the tenant
//! class it is counted under. Compiled from the policy once; lookups borrow from the request.
//!
//! The tenant header is identity, so it is checked before anything keys on it: two header lines
//! or a value that is not visible ASCII (or that holds a comma, a list) is refused, never read
//! one way here and another way by the service; and with `metadata.tenant_trust` it is believed
//! only from listed peers or with a valid HMAC-SHA256 signature.

use std::net::IpAddr;

use ahash::AHashMap;
use forecourt_config::{Metadata, TenantTrust};

/// Index of a tenant class in [`MetadataRules::classes`].
pub type TenantClass = usize;

/// Class of requests that name no tenant.
pub const ANONYMOUS_CLASS: TenantClass = 0;

/// Compiled metadata extraction rules.
#[derive(Debug)]
pub struct MetadataRules {
    tenant_header: http::HeaderName,
    flag_header: Option<http::HeaderName>,
    flag_cookie: Option<Box<str>>,
    tenant_class: AHashMap<Box<str>, TenantClass>,
    default_class: TenantClass,
    classes: Vec<Box<str>>,
    trust: Option<CompiledTrust>,
}

/// `metadata.tenant_trust`, ready for the request path.
#[derive(Debug)]
struct CompiledTrust {
    peers: Vec<forecourt_config::PeerNetwork>,
    signature: Option<(http::HeaderName, ring::hmac::Key)>,
}

/// Longest tenant value accepted, in bytes.
pub const MAX_TENANT_BYTES: usize = 256;

/// Why a request's tenant header was refused (answered 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantError {
    /// The header was sent more than once.
    Duplicate,
    /// The value is not visible ASCII, holds a comma, or is too long.
    Invalid,
    /// A signature was sent and does not verify.
    BadSignature,
}

/// Whether the tenant header of a request is believed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantTrusted {
    /// Believed: the request is keyed, limited and forwarded under it.
    Yes,
    /// Not believed (an untrusted peer without a signature): the request is anonymous and the
    /// header is not forwarded.
    No,
}

// === impl TenantError ===

impl TenantError {
    /// The JSON body of the 400 answer.
    pub fn body(self) -> &'static [u8] {
        match self {
            Self::Duplicate => br#"{"error":"the tenant header was sent more than once"}"#,
            Self::Invalid => br#"{"error":"the tenant header's value is not a valid tenant"}"#,
            Self::BadSignature => br#"{"error":"the tenant signature does not verify"}"#,
        }
    }

    /// The reason as a short label, for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Duplicate => "duplicate",
            Self::Invalid => "invalid",
            Self::BadSignature => "bad_signature",
        }
    }
}

/// Whether `value` (already trimmed) is a tenant Forecourt accepts: visible ASCII without commas,
/// at most [`MAX_TENANT_BYTES`].
fn valid_tenant(value: &[u8]) -> bool {
    value.len() <= MAX_TENANT_BYTES && value.iter().all(|&b| b.is_ascii_graphic() && b != b',')
}

/// Decodes lowercase or uppercase hex into `out`; `None` unless `hex` is exactly its length.
fn decode_hex<'o>(hex: &[u8], out: &'o mut [u8; 32]) -> Option<&'o [u8]> {
    if hex.len() != 64 {
        return None;
    }
    let digit = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    };
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(&out[..])
}

// === impl MetadataRules ===

impl MetadataRules {
    /// Compiles the rules; header names were validated with the policy.
    pub fn new(metadata: &Metadata) -> Self {
        let header = |name: &str| {
            http::HeaderName::from_bytes(name.as_bytes())
                .unwrap_or_else(|_| http::HeaderName::from_static("x-tenant-id"))
        };
        let mut classes: Vec<Box<str>> = vec!["anonymous".into()];
        let mut tenant_class = AHashMap::new();
        for (class, tenants) in &metadata.tenant_classes {
            classes.push(class.as_str().into());
            for tenant in tenants {
                tenant_class.insert(tenant.as_str().into(), classes.len() - 1);
            }
        }
        let default_class = match classes
            .iter()
            .position(|c| **c == *metadata.default_tenant_class)
        {
            Some(i) => i,
            None => {
                classes.push(metadata.default_tenant_class.as_str().into());
                classes.len() - 1
            }
        };
        Self {
            tenant_header: header(&metadata.tenant_header),
            flag_header: metadata.flag_header.as_deref().map(header),
            flag_cookie: metadata.flag_cookie.as_deref().map(Into::into),
            tenant_class,
            default_class,
            classes,
            trust: metadata.tenant_trust.as_ref().map(compile_trust),
        }
    }

    /// Checks the tenant header of a request from `peer`: refused when sent twice, invalid, or
    /// with a signature that does not verify; otherwise whether it is believed. Call it before
    /// [`Self::tenant`], whose answer holds only for requests that passed. No allocation.
    pub fn check_tenant(
        &self,
        headers: &http::HeaderMap,
        peer: Option<IpAddr>,
    ) -> Result<TenantTrusted, TenantError> {
        let mut values = headers.get_all(&self.tenant_header).iter();
        let Some(value) = values.next() else {
            return Ok(TenantTrusted::Yes);
        };
        if values.next().is_some() {
            return Err(TenantError::Duplicate);
        }
        let tenant = value.as_bytes().trim_ascii();
        if !valid_tenant(tenant) {
            return Err(TenantError::Invalid);
        }
        let Some(trust) = &self.trust else {
            return Ok(TenantTrusted::Yes);
        };
        if tenant.is_empty() || peer.is_some_and(|ip| trust.peers.iter().any(|n| n.contains(ip))) {
            return Ok(TenantTrusted::Yes);
        }
        let Some((header, key)) = &trust.signature else {
            return Ok(TenantTrusted::No);
        };
        let mut signatures = headers.get_all(header).iter();
        let Some(signature) = signatures.next() else {
            return Ok(TenantTrusted::No);
        };
        let mut tag = [0u8; 32];
        let verified = signatures.next().is_none()
            && decode_hex(signature.as_bytes().trim_ascii(), &mut tag)
                .is_some_and(|tag| ring::hmac::verify(key, tenant, tag).is_ok());
        if verified {
            Ok(TenantTrusted::Yes)
        } else {
            Err(TenantError::BadSignature)
        }
    }

    /// The header that names a request's tenant.
    pub fn tenant_header(&self) -> &http::HeaderName {
        &self.tenant_header
    }

    /// The tenant named by the request, if any (empty values count as none). Only for a request
    /// whose header [`Self::check_tenant`] accepted and believed.
    pub fn tenant<'r>(&self, headers: &'r http::HeaderMap) -> Option<&'r str> {
        headers
            .get(&self.tenant_header)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|t| !t.is_empty())
    }

    /// The tenant a request is keyed, limited and forwarded under: [`Self::tenant`] when its
    /// header is believed (`trusted`, from [`Self::check_tenant`]), else none (anonymous).
    pub fn believed_tenant<'r>(
        &self,
        headers: &'r http::HeaderMap,
        trusted: bool,
    ) -> Option<&'r str> {
        trusted.then(|| self.tenant(headers)).flatten()
    }

    /// The class a tenant is counted under.
    pub fn class_of(&self, tenant: Option<&str>) -> TenantClass {
        match tenant {
            None => ANONYMOUS_CLASS,
            Some(t) => self
                .tenant_class
                .get(t)
                .copied()
                .unwrap_or(self.default_class),
        }
    }

    /// The class whose limits apply to tenants no class lists, and to requests naming no tenant.
    pub fn default_class(&self) -> TenantClass {
        self.default_class
    }

    /// Every class name, indexed by [`TenantClass`].
    pub fn classes(&self) -> &[Box<str>] {
        &self.classes
    }

    /// The feature flag: the header if present, else the cookie.
    pub fn flag<'r>(&self, headers: &'r http::HeaderMap) -> Option<&'r [u8]> {
        if let Some(v) = self.flag_header.as_ref().and_then(|h| headers.get(h)) {
            return Some(v.as_bytes()).filter(|v| !v.is_empty());
        }
        let name = self.flag_cookie.as_deref()?;
        headers
            .get_all(http::header::COOKIE)
            .iter()
            .find_map(|v| cookie_value(v.as_bytes(), name.as_bytes()))
    }
}

/// The request path's form of `metadata.tenant_trust`.
fn compile_trust(trust: &TenantTrust) -> CompiledTrust {
    CompiledTrust {
        peers: trust.peers.clone(),
        signature: trust.signature.as_ref().and_then(|(header, key)| {
            let header = http::HeaderName::from_bytes(header.as_bytes()).ok()?;
            Some((header, ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key)))
        }),
    }
}

/// The value of cookie `name` in one `Cookie` header value.
fn cookie_value<'v>(header: &'v [u8], name: &[u8]) -> Option<&'v [u8]> {
    header.split(|&b| b == b';').find_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|&b| b == b'=')?;
        (pair[..eq].trim_ascii() == name)
            .then(|| pair[eq + 1..].trim_ascii())
            .filter(|v| !v.is_empty())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> MetadataRules {
        MetadataRules::new(&Metadata {
            tenant_header: "x-tenant-id".into(),
            flag_header: Some("x-feature-flag".into()),
            flag_cookie: Some("ff".into()),
            tenant_classes: vec![("premium".into(), vec!["acme".into()])],
            default_tenant_class: "standard".into(),
            tenant_trust: None,
        })
    }

    fn trusting(peers: &[&str], key: Option<&[u8]>) -> MetadataRules {
        MetadataRules::new(&Metadata {
            tenant_header: "x-tenant-id".into(),
            flag_header: None,
            flag_cookie: None,
            tenant_classes: Vec::new(),
            default_tenant_class: "standard".into(),
            tenant_trust: Some(TenantTrust {
                peers: peers
                    .iter()
                    .filter_map(|p| forecourt_config::PeerNetwork::parse(p))
                    .collect(),
                signature: key.map(|k| ("x-tenant-signature".into(), k.to_vec())),
            }),
        })
    }

    fn raw(pairs: &[(&'static str, &[u8])]) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, http::HeaderValue::from_bytes(v).expect("value"));
        }
        map
    }

    #[test]
    fn duplicate_or_invalid_tenants_are_refused() {
        let r = rules();
        let ok = |h: &http::HeaderMap| r.check_tenant(h, None);
        assert_eq!(
            ok(&headers(&[("x-tenant-id", "acme")])),
            Ok(TenantTrusted::Yes)
        );
        assert_eq!(ok(&headers(&[])), Ok(TenantTrusted::Yes));
        assert_eq!(
            ok(&headers(&[
                ("x-tenant-id", "acme"),
                ("x-tenant-id", "globex")
            ])),
            Err(TenantError::Duplicate)
        );
        // Even the same value twice: a second line is a second opinion.
        assert_eq!(
            ok(&headers(&[
                ("x-tenant-id", "acme"),
                ("x-tenant-id", "acme")
            ])),
            Err(TenantError::Duplicate)
        );
        for bad in [&b"caf\xe9"[..], b"acme, globex", b"a b", b"a\tb"] {
            assert_eq!(
                ok(&raw(&[("x-tenant-id", bad)])),
                Err(TenantError::Invalid),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = vec![b'a'; MAX_TENANT_BYTES + 1];
        assert_eq!(
            ok(&raw(&[("x-tenant-id", &long)])),
            Err(TenantError::Invalid)
        );
        assert_eq!(
            ok(&headers(&[("x-tenant-id", " acme ")])),
            Ok(TenantTrusted::Yes)
        );
    }

    #[test]
    fn tenants_are_believed_from_listed_peers_or_when_signed() {
        let key = b"0123456789abcdef-secret";
        let r = trusting(&["10.0.0.0/8", "::1"], Some(key));
        let acme = headers(&[("x-tenant-id", "acme")]);
        let ip = |s: &str| Some(s.parse::<IpAddr>().expect("ip"));
        assert_eq!(
            r.check_tenant(&acme, ip("10.1.2.3")),
            Ok(TenantTrusted::Yes)
        );
        assert_eq!(r.check_tenant(&acme, ip("::1")), Ok(TenantTrusted::Yes));
        assert_eq!(
            r.check_tenant(&acme, ip("::ffff:10.9.9.9")),
            Ok(TenantTrusted::Yes)
        );
        assert_eq!(
            r.check_tenant(&acme, ip("192.0.2.1")),
            Ok(TenantTrusted::No)
        );
        assert_eq!(r.check_tenant(&acme, None), Ok(TenantTrusted::No));
        // Signed: believed from anywhere.
        let tag = ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key), b"acme");
        let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        let mut signed = acme.clone();
        signed.insert("x-tenant-signature", hex.parse().expect("hex"));
        assert_eq!(
            r.check_tenant(&signed, ip("192.0.2.1")),
            Ok(TenantTrusted::Yes)
        );
        // A signature for another tenant, a truncated one or junk: refused.
        let mut other = headers(&[("x-tenant-id", "globex")]);
        other.insert("x-tenant-signature", hex.parse().expect("hex"));
        assert_eq!(
            r.check_tenant(&other, ip("192.0.2.1")),
            Err(TenantError::BadSignature)
        );
        let mut junk = acme.clone();
        junk.insert("x-tenant-signature", hex[..10].parse().expect("hex"));
        assert_eq!(
            r.check_tenant(&junk, ip("192.0.2.1")),
            Err(TenantError::BadSignature)
        );
        // Peers only: an unsigned request from elsewhere is anonymous, not refused.
        let peers_only = trusting(&["127.0.0.1"], None);
        assert_eq!(
            peers_only.check_tenant(&acme, ip("127.0.0.2")),
            Ok(TenantTrusted::No)
        );
        assert_eq!(
            peers_only.check_tenant(&acme, ip("127.0.0.1")),
            Ok(TenantTrusted::Yes)
        );
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, http::HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn tenants_are_classified() {
        let r = rules();
        let h = headers(&[("x-tenant-id", " acme ")]);
        assert_eq!(r.tenant(&h), Some("acme"));
        assert_eq!(r.classes()[r.class_of(r.tenant(&h))].as_ref(), "premium");
        assert_eq!(r.classes()[r.class_of(Some("zed"))].as_ref(), "standard");
        assert_eq!(
            r.class_of(r.tenant(&headers(&[("x-tenant-id", "")]))),
            ANONYMOUS_CLASS
        );
    }

    #[test]
    fn flag_from_header_then_cookie() {
        let r = rules();
        assert_eq!(
            r.flag(&headers(&[
                ("x-feature-flag", "beta"),
                ("cookie", "ff=gamma")
            ])),
            Some(&b"beta"[..])
        );
        assert_eq!(
            r.flag(&headers(&[("cookie", "a=1; ff=gamma; b=2")])),
            Some(&b"gamma"[..])
        );
        assert_eq!(
            r.flag(&headers(&[("cookie", "a=1"), ("cookie", "ff=x")])),
            Some(&b"x"[..])
        );
        assert_eq!(r.flag(&headers(&[("cookie", "ffx=1; ff=")])), None);
    }
}
