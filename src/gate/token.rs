//! The gate's signed values: links, session cookies, OAuth state and run-scoped bypass tokens.
//!
//! One repository secret never leaves the runner. Each preview gets its own key, derived from the
//! secret, the preview's name and a nonce drawn when the preview was created:
//! `K = HMAC-SHA256(secret, "atlas-gate-v1" 0 preview 0 nonce)`. The gate holds only `K`, so a
//! preview cannot mint for another one; destroying a preview loses its nonce, so every link to it
//! dies with it, even if a preview of the same name is created again later.
//!
//! A token is `kind.preview.expiry.extra.mac`: every field is `[A-Za-z0-9_-]` (so a token needs
//! no escaping in a URL or a cookie), the expiry is Unix seconds, and the MAC (base64url) covers
//! everything before it. The preview is in clear so a link to another preview can be told apart
//! from a tampered one on the 403 page.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;

use crate::secret::Secret;

/// What a token grants; a token of one kind is never accepted as another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A shareable link (`?atlas_token=`), exchanged for a session cookie.
    Link,
    /// A session cookie; `extra` is who (`link` or a GitHub login).
    Session,
    /// The OAuth `state` round trip; `extra` is a nonce also kept in a cookie.
    OauthState,
    /// Atlas's own smoke and load traffic; `extra` is the run it belongs to.
    Bypass,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Link => "link",
            Kind::Session => "sess",
            Kind::OauthState => "oauth",
            Kind::Bypass => "bypass",
        }
    }
}

/// Why a token was refused; the gate words its 403/401 page from this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not a token, a wrong kind, or a MAC that does not verify (edited or forged).
    Invalid,
    /// Verifies, but its expiry passed.
    Expired { at: u64 },
    /// A well-formed token naming another preview.
    OtherPreview { preview: String },
}

/// A verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub expires: u64,
    pub extra: String,
}

/// A preview's signing key. Its `Debug` never shows the key.
#[derive(Clone)]
pub struct PreviewKey {
    preview: String,
    key: hmac::Key,
}

impl std::fmt::Debug for PreviewKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PreviewKey({}, ***)", self.preview)
    }
}

/// Draws a fresh preview nonce (128 bits, hex).
pub fn new_nonce() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `[A-Za-z0-9_-]` only: the token's field alphabet.
pub fn is_field(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 1024
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn derive_tag(secret: &Secret, preview: &str, nonce: &str) -> hmac::Tag {
    let root = hmac::Key::new(hmac::HMAC_SHA256, secret.expose().as_bytes());
    let mut msg = Vec::with_capacity(64);
    msg.extend_from_slice(b"atlas-gate-v1\0");
    msg.extend_from_slice(preview.as_bytes());
    msg.push(0);
    msg.extend_from_slice(nonce.as_bytes());
    hmac::sign(&root, &msg)
}

impl PreviewKey {
    /// Derives the key of `preview` (created with `nonce`) from the repository secret.
    pub fn derive(secret: &Secret, preview: &str, nonce: &str) -> PreviewKey {
        PreviewKey {
            preview: preview.to_string(),
            key: hmac::Key::new(
                hmac::HMAC_SHA256,
                derive_tag(secret, preview, nonce).as_ref(),
            ),
        }
    }

    /// The derived key as hex, for the one place that hands it to the gate process.
    pub fn derived_hex(secret: &Secret, preview: &str, nonce: &str) -> Secret {
        let tag = derive_tag(secret, preview, nonce);
        Secret::new(
            tag.as_ref()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>(),
        )
    }

    /// The gate's side: the key it was given (hex of the derived key).
    pub fn from_hex(preview: &str, hex: &str) -> Result<PreviewKey, String> {
        let hex = hex.trim();
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("the gate key must be 64 hex characters (a derived preview key)".into());
        }
        let bytes: Vec<u8> = (0..32)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap_or(0))
            .collect();
        Ok(PreviewKey {
            preview: preview.to_string(),
            key: hmac::Key::new(hmac::HMAC_SHA256, &bytes),
        })
    }

    pub fn preview(&self) -> &str {
        &self.preview
    }

    /// Signs a token. `extra` must be in the field alphabet (callers pass logins, run ids, nonces).
    pub fn mint(&self, kind: Kind, expires: u64, extra: &str) -> String {
        debug_assert!(is_field(extra), "token field {extra:?}");
        let body = format!("{}.{}.{}.{}", kind.as_str(), self.preview, expires, extra);
        let tag = hmac::sign(&self.key, body.as_bytes());
        format!("{body}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// Verifies a token of `kind` at time `now` (Unix seconds).
    pub fn verify(&self, kind: Kind, token: &str, now: u64) -> Result<Claims, Refusal> {
        if token.len() > 2048 {
            return Err(Refusal::Invalid);
        }
        let (body, mac) = token.rsplit_once('.').ok_or(Refusal::Invalid)?;
        let mut parts = body.split('.');
        let (Some(k), Some(preview), Some(exp), Some(extra), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(Refusal::Invalid);
        };
        if k != kind.as_str() {
            return Err(Refusal::Invalid);
        }
        let mac = URL_SAFE_NO_PAD.decode(mac).map_err(|_| Refusal::Invalid)?;
        if hmac::verify(&self.key, body.as_bytes(), &mac).is_err() {
            // A well-formed token for another preview fails here too (another key); say so.
            if preview != self.preview && is_field(preview) {
                return Err(Refusal::OtherPreview {
                    preview: preview.to_string(),
                });
            }
            return Err(Refusal::Invalid);
        }
        let expires: u64 = exp.parse().map_err(|_| Refusal::Invalid)?;
        if expires <= now {
            return Err(Refusal::Expired { at: expires });
        }
        Ok(Claims {
            expires,
            extra: extra.to_string(),
        })
    }
}

/// Unix seconds now.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(preview: &str, nonce: &str) -> PreviewKey {
        PreviewKey::derive(&Secret::new("repo-secret-for-tests"), preview, nonce)
    }

    #[test]
    fn a_token_verifies_only_as_minted() {
        let k = key("app-pr-1", "n1");
        let t = k.mint(Kind::Link, 2000, "x");
        assert_eq!(
            k.verify(Kind::Link, &t, 1000),
            Ok(Claims {
                expires: 2000,
                extra: "x".into()
            })
        );
        assert_eq!(k.verify(Kind::Session, &t, 1000), Err(Refusal::Invalid));
        assert_eq!(
            k.verify(Kind::Link, &t, 2000),
            Err(Refusal::Expired { at: 2000 })
        );
        // A later expiry written over the original is a forgery.
        let forged = t.replace(".2000.", ".9999.");
        assert_eq!(k.verify(Kind::Link, &forged, 1000), Err(Refusal::Invalid));
        assert_eq!(k.verify(Kind::Link, "", 1000), Err(Refusal::Invalid));
        assert_eq!(k.verify(Kind::Link, "a.b", 1000), Err(Refusal::Invalid));
    }

    #[test]
    fn a_new_nonce_or_another_preview_kills_links() {
        let old = key("app-pr-1", "n1").mint(Kind::Link, 2000, "x");
        assert_eq!(
            key("app-pr-1", "n2").verify(Kind::Link, &old, 1000),
            Err(Refusal::Invalid)
        );
        assert_eq!(
            key("app-pr-2", "n1").verify(Kind::Link, &old, 1000),
            Err(Refusal::OtherPreview {
                preview: "app-pr-1".into()
            })
        );
    }

    #[test]
    fn the_gate_key_round_trips_through_hex() {
        let s = Secret::new("repo-secret-for-tests");
        let hex = PreviewKey::derived_hex(&s, "app-pr-1", "n1");
        let gate = PreviewKey::from_hex("app-pr-1", hex.expose()).expect("hex");
        let t = PreviewKey::derive(&s, "app-pr-1", "n1").mint(Kind::Bypass, 2000, "run-7");
        assert!(gate.verify(Kind::Bypass, &t, 1000).is_ok());
        assert!(PreviewKey::from_hex("p", "zz").is_err());
    }
}
