//! What an OpenID Connect login keeps secret, and when its token must be
//! renewed.
//!
//! The credential store (`credentials.rs`) holds one secret per login. For a
//! password login that is the broker's token as is; for an OpenID Connect
//! login it is the JSON document [`OidcTokens`]:
//!
//! ```json
//! {"version":1,"token":"eyJ...","expires_at":1900000000,"issued_at":1899999700,"refresh_token":"..."}
//! ```
//!
//! `token` is what the broker gets (the JWT access token for the broker's
//! resource, or the ID token), `expires_at`/`issued_at` are its `exp` and
//! `iat` (unix seconds), and `refresh_token` is absent for a saved CI token.
//! One document, written whole, so a rotated refresh token and the token it
//! came with can never be stored half.
//!
//! **Invariant:** the tokens leave this module only as [`Secret`]s; `Debug`
//! shows none of them, and a document that does not parse is reported
//! without quoting it.

use mcpgate_shared::secret::Secret;
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Renew when the token has less than this left (seconds)...
pub const REFRESH_BEFORE_EXPIRY: u64 = 2 * 60;
/// ...or was issued longer ago than this: the broker refuses session
/// requests with tokens older than its maximum age (10 minutes by default).
pub const REFRESH_AFTER_AGE: u64 = 5 * 60;

const FORMAT_VERSION: u32 = 1;

/// The secret of an OpenID Connect login.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OidcTokens {
    pub version: u32,
    /// Presented to the broker as `Authorization: Bearer`.
    pub token: Secret<String>,
    /// The token's `exp`, unix seconds.
    pub expires_at: u64,
    /// The token's `iat`, unix seconds.
    pub issued_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<Secret<String>>,
}

impl OidcTokens {
    pub fn new(
        token: Secret<String>,
        expires_at: u64,
        issued_at: u64,
        refresh_token: Option<Secret<String>>,
    ) -> Self {
        Self {
            version: FORMAT_VERSION,
            token,
            expires_at,
            issued_at,
            refresh_token,
        }
    }

    /// The document as the one secret the credential store keeps.
    pub fn to_secret(&self) -> Secret<String> {
        // A struct of strings and numbers always serialises.
        Secret::new(serde_json::to_string(self).unwrap_or_default())
    }

    /// Reads the document back; `place` names the store for the error.
    pub fn from_secret(secret: &Secret<String>, place: &str) -> Result<Self, Error> {
        // Never show serde's message: it may quote the document.
        let tokens: Self =
            serde_json::from_str(secret.expose()).map_err(|_| Error::damaged_secret(place))?;
        if tokens.version != FORMAT_VERSION {
            return Err(Error::damaged_secret(place));
        }
        Ok(tokens)
    }

    /// See [`needs_refresh`].
    pub fn needs_refresh(&self, now: u64) -> bool {
        needs_refresh(self.expires_at, self.issued_at, now)
    }

    pub fn expired(&self, now: u64) -> bool {
        now >= self.expires_at
    }
}

/// The refresh rule: renew when the token has less than two minutes left or
/// was issued more than five minutes ago. A token "issued" in the future
/// (clock skew) counts as new.
pub fn needs_refresh(expires_at: u64, issued_at: u64, now: u64) -> bool {
    expires_at.saturating_sub(now) < REFRESH_BEFORE_EXPIRY
        || now.saturating_sub(issued_at) > REFRESH_AFTER_AGE
}

/// The claims of a JWT this CLI reads without verifying it: only to decide
/// when to renew and what to show. The broker verifies every token itself.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
pub struct Peeked {
    #[serde(default)]
    pub exp: Option<u64>,
    #[serde(default)]
    pub iat: Option<u64>,
    #[serde(default)]
    pub iss: Option<String>,
}

/// `exp`, `iat` and `iss` of a compact JWS, unverified; `None` when `token`
/// is not a JWT (an opaque token).
pub fn peek(token: &str) -> Option<Peeked> {
    let mut parts = token.split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let json = base64url_decode(payload)?;
    serde_json::from_slice(&json).ok()
}

/// Base64url without padding (RFC 7515 §2); `None` on anything else.
fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        } as u32)
    }
    let bytes = text.as_bytes();
    if bytes.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= value(c)? << (18 - 6 * i);
        }
        let n = chunk.len() - 1;
        out.extend_from_slice(&acc.to_be_bytes()[1..1 + n]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_900_000_000;

    #[test]
    fn refresh_rule_two_minutes_left_or_five_minutes_old() {
        // Fresh: just issued, an hour left.
        assert!(!needs_refresh(NOW + 3600, NOW, NOW));
        // Issued exactly five minutes ago: still fine; one second more: renew.
        assert!(!needs_refresh(NOW + 3600, NOW - 300, NOW));
        assert!(needs_refresh(NOW + 3600, NOW - 301, NOW));
        // Two minutes left: fine; less: renew.
        assert!(!needs_refresh(NOW + 120, NOW, NOW));
        assert!(needs_refresh(NOW + 119, NOW, NOW));
        // Expired, long ago or just now.
        assert!(needs_refresh(NOW - 1, NOW - 600, NOW));
        assert!(needs_refresh(NOW, NOW, NOW));
        // Issued "in the future" (the IdP's clock is ahead): counts as new.
        assert!(!needs_refresh(NOW + 3600, NOW + 30, NOW));
    }

    fn sample() -> OidcTokens {
        OidcTokens::new(
            Secret::new("eyJ.presented-token-8c1f.sig".into()),
            NOW + 600,
            NOW,
            Some(Secret::new("refresh-token-77aa".into())),
        )
    }

    #[test]
    fn stored_document_round_trips_and_debug_hides_the_tokens() {
        let tokens = sample();
        let secret = tokens.to_secret();
        let json: serde_json::Value = serde_json::from_str(secret.expose()).unwrap();
        assert_eq!(json["version"], 1);
        assert_eq!(json["token"], "eyJ.presented-token-8c1f.sig");
        assert_eq!(json["refresh_token"], "refresh-token-77aa");
        assert_eq!(json["expires_at"], NOW + 600);
        assert_eq!(json["issued_at"], NOW);
        assert_eq!(OidcTokens::from_secret(&secret, "x").unwrap(), tokens);

        let shown = format!("{tokens:?} {secret:?}");
        assert!(!shown.contains("presented-token"), "{shown}");
        assert!(!shown.contains("refresh-token-77aa"), "{shown}");

        // Without a refresh token (a saved CI token) the field is absent.
        let ci = OidcTokens::new(Secret::new("t".into()), NOW, NOW, None);
        assert!(!ci.to_secret().expose().contains("refresh_token"));
        assert_eq!(OidcTokens::from_secret(&ci.to_secret(), "x").unwrap(), ci);
    }

    #[test]
    fn a_damaged_document_is_reported_without_quoting_it() {
        for bad in [
            r#"{"version":1,"token":"secret-abc","expires_at":"soon"}"#,
            r#"{"version":2,"token":"secret-abc","expires_at":1,"issued_at":1}"#,
            "secret-abc",
        ] {
            let err =
                OidcTokens::from_secret(&Secret::new(bad.into()), "the OS keyring").unwrap_err();
            let shown = format!("{err} {err:?} {}", err.report());
            assert!(!shown.contains("secret-abc"), "{shown}");
            assert!(shown.contains("mcpgate logout"), "{shown}");
        }
    }

    #[test]
    fn peek_reads_exp_iat_iss_of_a_jwt_and_nothing_else() {
        // {"alg":"none"} . {"iss":"http://127.0.0.1:3000","exp":1900000600,"iat":1900000000,"sub":"a"}
        let header = "eyJhbGciOiJub25lIn0";
        let payload = "eyJpc3MiOiJodHRwOi8vMTI3LjAuMC4xOjMwMDAiLCJleHAiOjE5MDAwMDA2MDAsImlhdCI6MTkwMDAwMDAwMCwic3ViIjoiYSJ9";
        let jwt = format!("{header}.{payload}.c2ln");
        let p = peek(&jwt).unwrap();
        assert_eq!(p.exp, Some(1_900_000_600));
        assert_eq!(p.iat, Some(1_900_000_000));
        assert_eq!(p.iss.as_deref(), Some("http://127.0.0.1:3000"));
        assert_eq!(peek("opaque-token"), None);
        assert_eq!(peek("a.b"), None);
        assert_eq!(peek("a.b.c.d"), None);
        assert_eq!(peek(&format!("{header}.!!!.c2ln")), None);
    }

    #[test]
    fn base64url_known_answers() {
        assert_eq!(base64url_decode("").unwrap(), b"");
        assert_eq!(base64url_decode("Zg").unwrap(), b"f");
        assert_eq!(base64url_decode("Zm8").unwrap(), b"fo");
        assert_eq!(base64url_decode("Zm9v").unwrap(), b"foo");
        assert_eq!(base64url_decode("Zm9vYmE").unwrap(), b"fooba");
        assert_eq!(base64url_decode("-_8").unwrap(), [0xfb, 0xff]);
        assert_eq!(base64url_decode("Zm9v="), None);
        assert_eq!(base64url_decode("Z"), None);
        assert_eq!(base64url_decode("+/8"), None);
    }
}
