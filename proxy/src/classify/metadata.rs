//! Request metadata: which tenant sent a request, which feature flag it carries, and the tenant
//! class it is counted under. Compiled from the policy once; lookups borrow from the request.

use ahash::AHashMap;
use forecourt_config::Metadata;

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
        }
    }

    /// The header that names a request's tenant.
    pub fn tenant_header(&self) -> &http::HeaderName {
        &self.tenant_header
    }

    /// The tenant named by the request, if any (empty values count as none).
    pub fn tenant<'r>(&self, headers: &'r http::HeaderMap) -> Option<&'r str> {
        headers
            .get(&self.tenant_header)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|t| !t.is_empty())
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
        })
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
