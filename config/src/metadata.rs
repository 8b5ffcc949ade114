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
//! ```

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
        Metadata {
            tenant_header,
            flag_header,
            flag_cookie,
            tenant_classes,
            default_tenant_class: raw
                .default_tenant_class
                .unwrap_or_else(|| "standard".to_owned()),
        }
    }
}
