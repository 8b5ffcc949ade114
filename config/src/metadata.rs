//! The `metadata:` section: which request headers (or cookie) name the tenant and carry the
//! feature flag, and the tenant classes that bound metric label cardinality.
//!
//! ```yaml
//! metadata:
//!   tenant_header: x-tenant-id
//!   feature_flag: { header: x-feature-flag, cookie: ff }   # the cookie when the header is absent
//!   tenant_classes:
//!     - { name: premium, tenants: [acme, globex] }
//!   default_tenant_class: standard
//!   tenant_trust:                     # absent: the tenant header is believed from every client
//!     peers: [10.0.0.0/8, "::1/128"]  # believed from these peers (e.g. an authenticating edge)
//!     signature: { header: x-tenant-signature, key_file: tenant.key }   # or when signed
//! ```
//!
//! A request with two tenant header lines, or a value that is not visible ASCII (or holds a
//! comma), is refused with 400 whatever the trust. From an untrusted peer without a valid
//! signature the header is ignored (the request is anonymous) and not forwarded; a signature that
//! does not verify is refused with 400.

use std::collections::HashSet;

use serde::Deserialize;

use crate::check::{is_label, Checker};

/// Default tenant header.
pub const DEFAULT_TENANT_HEADER: &str = "x-tenant-id";
/// Default feature flag header.
pub const DEFAULT_FLAG_HEADER: &str = "x-feature-flag";

/// Request metadata extraction.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataSpec {
    /// The header that names the tenant (default `x-tenant-id`).
    pub tenant_header: Option<String>,
    /// Where the feature flag is read from.
    pub feature_flag: Option<FeatureFlagSpec>,
    /// Named tenant classes, each a list of tenant ids (bounds metric label cardinality).
    #[serde(default)]
    pub tenant_classes: Vec<TenantClassSpec>,
    /// The class of a tenant that no class lists (default `standard`).
    pub default_tenant_class: Option<String>,
    /// Whom the tenant header is believed from (default: everyone).
    pub tenant_trust: Option<TenantTrustSpec>,
}

/// `metadata.tenant_trust` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantTrustSpec {
    /// Peer networks (`10.0.0.0/8`, `::1/128`, or a bare address) whose tenant header is believed.
    #[serde(default)]
    pub peers: Vec<String>,
    /// A header carrying the hex HMAC-SHA256 of the tenant value, which makes it believed.
    pub signature: Option<TenantSignatureSpec>,
}

/// `metadata.tenant_trust.signature` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSignatureSpec {
    /// The header holding the signature (default `x-tenant-signature`).
    pub header: Option<String>,
    /// A file holding the HMAC key (relative to the policy file; surrounding whitespace ignored).
    pub key_file: Option<String>,
    /// An environment variable holding the HMAC key.
    pub key_env: Option<String>,
}

/// A network of peers: an address and how many leading bits must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerNetwork {
    /// The network's address.
    pub address: std::net::IpAddr,
    /// Leading bits that must match (32 or 128 for one address).
    pub prefix: u8,
}

/// Whom the tenant header is believed from.
#[derive(Clone, PartialEq, Eq)]
pub struct TenantTrust {
    /// Peers whose tenant header is believed.
    pub peers: Vec<PeerNetwork>,
    /// The signature header and its HMAC-SHA256 key, when signed values are believed.
    pub signature: Option<(String, Vec<u8>)>,
}

impl std::fmt::Debug for TenantTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("TenantTrust")
            .field("peers", &self.peers)
            .field("signature", &self.signature.as_ref().map(|(h, _)| h))
            .finish()
    }
}

// === impl PeerNetwork ===

impl PeerNetwork {
    /// Parses `10.0.0.0/8`, `::1/128` or a bare address.
    pub fn parse(text: &str) -> Option<Self> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let address: std::net::IpAddr = address.trim().parse().ok()?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.trim().parse::<u8>().ok().filter(|p| *p <= max)?,
            None => max,
        };
        Some(Self { address, prefix })
    }

    /// Whether `ip` is in the network (an IPv4-mapped IPv6 address counts as its IPv4 one).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.address, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// The header and/or cookie carrying the feature flag.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureFlagSpec {
    /// Header name (default `x-feature-flag`).
    pub header: Option<String>,
    /// Cookie name, checked when the header is absent.
    pub cookie: Option<String>,
}

/// One tenant class.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantClassSpec {
    /// Class name, used as a metric label.
    pub name: String,
    /// Tenant ids in this class.
    #[serde(default)]
    pub tenants: Vec<String>,
}

/// Which headers carry request metadata (names are lowercase).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// Header naming the tenant.
    pub tenant_header: String,
    /// Header carrying the feature flag.
    pub flag_header: Option<String>,
    /// Cookie carrying the feature flag, read when the header is absent.
    pub flag_cookie: Option<String>,
    /// Tenant classes: class name and its tenant ids.
    pub tenant_classes: Vec<(String, Vec<String>)>,
    /// Class of a tenant no class lists.
    pub default_tenant_class: String,
    /// Whom the tenant header is believed from; `None`: everyone.
    pub tenant_trust: Option<TenantTrust>,
}

// === impl Metadata ===

impl Metadata {
    /// Whether `class` is a tenant class: listed, or the default class.
    pub(crate) fn has_class(&self, class: &str) -> bool {
        self.default_tenant_class == class || self.tenant_classes.iter().any(|(c, _)| c == class)
    }
}

// === impl Checker ===

impl Checker<'_> {
    /// Resolves the `metadata:` section.
    pub(crate) fn metadata(&mut self, raw: MetadataSpec) -> Metadata {
        let tenant_header = self.header_name(
            "metadata.tenant_header",
            raw.tenant_header
                .as_deref()
                .unwrap_or(DEFAULT_TENANT_HEADER),
        );
        let (flag_header, flag_cookie) = match raw.feature_flag {
            None => (Some(DEFAULT_FLAG_HEADER.to_owned()), None),
            Some(flag) => {
                let header = flag
                    .header
                    .map(|h| self.header_name("metadata.feature_flag.header", &h));
                if let Some(cookie) = &flag.cookie {
                    if cookie.is_empty() || cookie.contains([';', '=', ' ']) {
                        self.problem(
                            "metadata.feature_flag.cookie",
                            format!("{cookie:?} is not a valid cookie name"),
                        );
                    }
                }
                if header.is_none() && flag.cookie.is_none() {
                    self.problem(
                        "metadata.feature_flag",
                        "feature_flag needs a header, a cookie or both",
                    );
                }
                (header, flag.cookie)
            }
        };
        let mut seen = HashSet::new();
        let mut tenant_classes = Vec::new();
        for (i, class) in raw.tenant_classes.into_iter().enumerate() {
            if !is_label(&class.name) {
                self.problem(
                    &format!("metadata.tenant_classes[{i}].name"),
                    format!("{:?} must be lowercase letters, digits and '-'", class.name),
                );
            }
            for (j, tenant) in class.tenants.iter().enumerate() {
                if !seen.insert(tenant.clone()) {
                    self.problem(
                        &format!("metadata.tenant_classes[{i}].tenants[{j}]"),
                        format!("tenant {tenant:?} is in more than one class"),
                    );
                }
            }
            tenant_classes.push((class.name, class.tenants));
        }
        let tenant_trust = raw.tenant_trust.map(|trust| self.tenant_trust(trust));
        Metadata {
            tenant_header,
            flag_header,
            flag_cookie,
            tenant_classes,
            default_tenant_class: raw
                .default_tenant_class
                .unwrap_or_else(|| "standard".to_owned()),
            tenant_trust,
        }
    }

    /// Resolves `metadata.tenant_trust`: parses the peer networks and reads the signature key.
    fn tenant_trust(&mut self, raw: TenantTrustSpec) -> TenantTrust {
        let at = "metadata.tenant_trust";
        let mut peers = Vec::new();
        for (i, text) in raw.peers.iter().enumerate() {
            match PeerNetwork::parse(text) {
                Some(network) => peers.push(network),
                None => self.problem(
                    &format!("{at}.peers[{i}]"),
                    format!("{text:?} is not an address or network (10.0.0.0/8, ::1/128)"),
                ),
            }
        }
        let signature = raw.signature.map(|spec| {
            let header = self.header_name(
                &format!("{at}.signature.header"),
                spec.header.as_deref().unwrap_or("x-tenant-signature"),
            );
            (
                header,
                self.signature_key(&format!("{at}.signature"), &spec),
            )
        });
        if peers.is_empty() && signature.is_none() {
            self.problem(at, "tenant_trust needs peers, a signature or both");
        }
        TenantTrust { peers, signature }
    }

    /// Reads the tenant signature's key from its file or environment variable.
    fn signature_key(&mut self, at: &str, spec: &TenantSignatureSpec) -> Vec<u8> {
        let key = match (&spec.key_file, &spec.key_env) {
            (Some(file), None) => {
                let path = self.relative_path(file);
                match std::fs::read(&path) {
                    Ok(bytes) => bytes,
                    Err(error) => {
                        let shown = path.display();
                        self.problem(&format!("{at}.key_file"), format!("{shown}: {error}"));
                        return Vec::new();
                    }
                }
            }
            (None, Some(var)) => match std::env::var_os(var) {
                Some(value) => value.into_encoded_bytes(),
                None => {
                    let message = format!("environment variable {var} is not set");
                    self.problem(&format!("{at}.key_env"), message);
                    return Vec::new();
                }
            },
            _ => {
                self.problem(at, "give exactly one of key_file and key_env");
                return Vec::new();
            }
        };
        let key = key.trim_ascii().to_vec();
        if key.len() < 16 {
            self.problem(at, "the key must be at least 16 bytes");
        }
        key
    }
}
