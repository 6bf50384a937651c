//! Secret values: a newtype whose `Debug`/`Display` never show the value, and a process-wide
//! registry of every secret seen so far, so any text can be redacted before it is printed.
//!
//! Every secret is registered (and `::add-mask::`ed by the caller through `gha`) the moment it is
//! read or derived; `redact` is applied to error chains and provider response bodies.

use std::fmt;
use std::sync::{Mutex, OnceLock};

/// A secret string. Cloning is allowed; printing is not.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

fn registry() -> &'static Mutex<Vec<String>> {
    static REG: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    REG.get_or_init(|| Mutex::new(Vec::new()))
}

impl Secret {
    /// Wraps and registers a secret value. Values shorter than 4 characters are not registered
    /// for redaction (masking "a" would shred every message), but they are still never printed
    /// through this type.
    pub fn new(value: impl Into<String>) -> Self {
        let value = value.into();
        register(&value);
        Secret(value)
    }

    /// The value, for the one place that must send it (an HTTP header, a child's environment).
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Registers a value (and its URL-encoded form) for redaction without wrapping it.
pub fn register(value: &str) {
    if value.len() < 4 {
        return;
    }
    let mut reg = registry().lock().unwrap_or_else(|p| p.into_inner());
    for form in forms(value) {
        if !reg.contains(&form) {
            reg.push(form);
        }
    }
    // Longest first, so a secret that contains another is replaced whole.
    reg.sort_by_key(|s| std::cmp::Reverse(s.len()));
}

/// The forms in which a secret can leak: verbatim, percent-encoded (passwords in URIs),
/// JSON-escaped (inside a serialised body) and base64 (Basic auth, encoded records).
fn forms(value: &str) -> Vec<String> {
    use base64::Engine as _;
    let mut out = vec![value.to_string()];
    let mut push = |f: String| {
        if !f.is_empty() && !out.contains(&f) {
            out.push(f);
        }
    };
    let enc: String = url::form_urlencoded::byte_serialize(value.as_bytes()).collect();
    if enc != value {
        push(enc.clone());
        // form encoding writes ' ' as '+'; URIs use %20.
        push(enc.replace('+', "%20"));
    }
    if let Ok(json) = serde_json::to_string(value) {
        push(json[1..json.len() - 1].to_string());
    }
    let engines = [
        &base64::engine::general_purpose::STANDARD,
        &base64::engine::general_purpose::STANDARD_NO_PAD,
        &base64::engine::general_purpose::URL_SAFE,
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    for e in engines {
        push(e.encode(value.as_bytes()));
    }
    out
}

/// Every registered secret value, for `::add-mask::` of values registered outside `gha`.
pub fn registered() -> Vec<String> {
    registry().lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Replaces every registered secret in `text` with `***`.
pub fn redact(text: &str) -> String {
    let reg = registry().lock().unwrap_or_else(|p| p.into_inner());
    let mut out = text.to_string();
    for s in reg.iter() {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), "***");
        }
    }
    out
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_are_redacted() {
        let s = Secret::new("hunter2-very-secret");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"***\"");
    }

    #[test]
    fn redact_replaces_plain_and_url_encoded_forms() {
        let _s = Secret::new("p@ss word/xyz");
        let text = "postgres://u:p%40ss%20word%2Fxyz@h/db and p@ss word/xyz";
        let r = redact(text);
        assert!(!r.contains("p@ss word/xyz"), "{r}");
        assert!(!r.contains("p%40ss%20word%2Fxyz"), "{r}");
    }

    #[test]
    fn redact_replaces_base64_and_json_escaped_forms() {
        use base64::Engine as _;
        let v = "tok\"en\\with/quote+slash";
        let _s = Secret::new(v);
        let b64 = base64::engine::general_purpose::STANDARD.encode(v);
        let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        let json = serde_json::to_string(v).unwrap();
        let text = format!("basic {b64} url {b64url} body {{\"k\":{json}}}");
        let r = redact(&text);
        assert!(!r.contains(&b64), "{r}");
        assert!(!r.contains(&b64url), "{r}");
        assert!(!r.contains(&json[1..json.len() - 1]), "{r}");
        // Redaction comes before any cut: the truncating helpers never see the raw value.
        let long = format!("{}{v}", "x".repeat(1990));
        let cut = crate::http::redact_body(&long);
        assert!(!cut.contains(&v[..4]), "{cut}");
    }
}
