//! Who may write through the admin API: a bearer token, compared in constant time.

/// Why an admin write was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No token is configured, so admin writes are off (403).
    Disabled,
    /// The request's bearer token is missing or wrong (401).
    WrongToken,
}

// === impl Denied ===

impl Denied {
    /// The HTTP status of the refusal.
    pub fn status(self) -> http::StatusCode {
        match self {
            Denied::Disabled => http::StatusCode::FORBIDDEN,
            Denied::WrongToken => http::StatusCode::UNAUTHORIZED,
        }
    }

    /// What the refusal says.
    pub fn message(self) -> &'static str {
        match self {
            Denied::Disabled => "admin writes are disabled: start forecourt with FORECOURT_ADMIN_TOKEN or FORECOURT_ADMIN_TOKEN_FILE set",
            Denied::WrongToken => "missing or wrong bearer token",
        }
    }
}

/// Whether a write with `headers` may pass when the admin token is `token`.
pub fn check(token: Option<&str>, headers: &http::HeaderMap) -> Result<(), Denied> {
    let Some(token) = token else {
        return Err(Denied::Disabled);
    };
    let presented = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if constant_time_eq(presented.as_bytes(), token.as_bytes()) {
        Ok(())
    } else {
        Err(Denied::WrongToken)
    }
}

/// Compares two byte strings without an early exit on the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for (i, x) in a.iter().enumerate() {
        diff |= x ^ b.get(i).copied().unwrap_or(!x);
    }
    diff == 0
}
