//! How a detected value is replaced: redacted with its type, partly kept,
//! or turned into a keyed hash token.
//!
//! Hash tokens let an analyst see that two masked values are the same
//! without seeing either: HMAC-SHA-256 under the deployment's `mask.key`
//! over the type and a normalised value (separators dropped, case folded
//! where case carries no meaning), cut to 48 bits. Without the key nobody
//! can test a guess against a token, which a plain hash would allow for
//! values as guessable as card numbers or SSNs.

use std::path::Path;

use hmac::{Hmac, Mac};
use mcpgate_shared::secret::Secret;
use serde::Deserialize;
use sha2::Sha256;

/// The file under the broker's data dir holding the hash-token key.
pub const MASK_KEY_FILE: &str = "mask.key";

/// How a value is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Style {
    /// `[MASKED:card]`.
    #[default]
    Redact,
    /// Every letter and digit but the last four becomes `*`, separators
    /// stay (`****-****-****-1111`); values with eight or fewer letters and
    /// digits are redacted instead, as four would give most of them away.
    Partial,
    /// `[MASKED:card:3f2a9c1b4d5e]`: the same value gives the same token
    /// within a deployment.
    Hash,
}

/// The deployment's key for hash tokens.
#[derive(Clone)]
pub struct MaskKey(Secret<[u8; 32]>);

impl std::fmt::Debug for MaskKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MaskKey(..)")
    }
}

impl MaskKey {
    pub fn new(bytes: [u8; 32]) -> MaskKey {
        MaskKey(Secret::new(bytes))
    }

    /// Reads `dir/mask.key`, creating it (0600, 32 random bytes) when it is
    /// missing: data dirs made before masking existed get one on first use.
    pub fn load_or_create(dir: &Path) -> anyhow::Result<MaskKey> {
        let path = dir.join(MASK_KEY_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let bytes: [u8; 32] = bytes.try_into().map_err(|_| {
                    anyhow::anyhow!("{}: not a mask key (expected 32 bytes)", path.display())
                })?;
                Ok(MaskKey::new(bytes))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = [0u8; 32];
                getrandom::fill(&mut bytes)
                    .map_err(|e| anyhow::anyhow!("no randomness for the mask key: {e}"))?;
                crate::ca::write_private(&path, &bytes)?;
                Ok(MaskKey::new(bytes))
            }
            Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
        }
    }

    /// The token for `value` of type `kind`: 12 hex digits.
    fn token(&self, kind: &str, value: &str) -> String {
        // `new_from_slice` accepts any key length for HMAC.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.0.expose())
            .expect("HMAC takes keys of any length");
        mac.update(kind.as_bytes());
        mac.update(&[0]);
        mac.update(value.as_bytes());
        let digest = mac.finalize().into_bytes();
        digest[..6].iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// How a value is normalised before hashing, so that `4111 1111 …` and
/// `4111-1111-…` give one token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Normalise {
    /// Letters and digits only, upper-cased (numbers, IBANs, phones).
    Alphanumeric,
    /// Lower-cased (emails).
    Lowercase,
    /// As it is (keys, tokens, passwords, custom rules).
    Exact,
}

/// Writes the replacement for `value` (of type `kind`) to `out`.
pub fn replace(
    style: Style,
    kind: &str,
    value: &str,
    normalise: Normalise,
    key: &MaskKey,
    out: &mut String,
) {
    match style {
        Style::Redact => redact(kind, out),
        Style::Partial => {
            let alnum = value.chars().filter(|c| c.is_alphanumeric()).count();
            if alnum <= 8 {
                return redact(kind, out);
            }
            let mut left = alnum - 4;
            for c in value.chars() {
                if c.is_alphanumeric() && left > 0 {
                    left -= 1;
                    out.push('*');
                } else if c.is_alphanumeric() || c.is_ascii_punctuation() || c == ' ' {
                    out.push(c);
                }
                // Anything else (zero-width characters, say) is dropped:
                // the kept part must not smuggle anything out.
            }
        }
        Style::Hash => {
            let normalised: String = match normalise {
                Normalise::Alphanumeric => value
                    .chars()
                    .filter(|c| c.is_alphanumeric())
                    .flat_map(char::to_uppercase)
                    .collect(),
                Normalise::Lowercase => value.to_lowercase(),
                Normalise::Exact => value.to_owned(),
            };
            out.push_str("[MASKED:");
            out.push_str(kind);
            out.push(':');
            out.push_str(&key.token(kind, &normalised));
            out.push(']');
        }
    }
}

fn redact(kind: &str, out: &mut String) {
    out.push_str("[MASKED:");
    out.push_str(kind);
    out.push(']');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> MaskKey {
        MaskKey::new([7; 32])
    }

    fn apply(style: Style, kind: &str, value: &str, n: Normalise) -> String {
        let mut out = String::new();
        replace(style, kind, value, n, &key(), &mut out);
        out
    }

    #[test]
    fn redact_names_the_type() {
        assert_eq!(
            apply(Style::Redact, "card", "4111111111111111", Normalise::Exact),
            "[MASKED:card]"
        );
    }

    #[test]
    fn partial_keeps_the_last_four_and_the_separators() {
        assert_eq!(
            apply(
                Style::Partial,
                "card",
                "4111-1111-1111-1111",
                Normalise::Alphanumeric
            ),
            "****-****-****-1111"
        );
        // Short values are redacted: four of eight would say too much.
        assert_eq!(
            apply(Style::Partial, "secret", "hunter22", Normalise::Exact),
            "[MASKED:secret]"
        );
        // Zero-width characters between groups do not survive.
        assert_eq!(
            apply(
                Style::Partial,
                "card",
                "4111\u{200b}1111\u{200b}1111\u{200b}1111",
                Normalise::Alphanumeric
            ),
            "************1111"
        );
    }

    #[test]
    fn hash_tokens_are_stable_keyed_and_separator_blind() {
        let a = apply(
            Style::Hash,
            "card",
            "4111 1111 1111 1111",
            Normalise::Alphanumeric,
        );
        let b = apply(
            Style::Hash,
            "card",
            "4111-1111-1111-1111",
            Normalise::Alphanumeric,
        );
        assert_eq!(a, b);
        assert!(a.starts_with("[MASKED:card:") && a.len() == "[MASKED:card:]".len() + 12);
        let other = apply(
            Style::Hash,
            "card",
            "5555555555554444",
            Normalise::Alphanumeric,
        );
        assert_ne!(a, other);
        let mut with_other_key = String::new();
        replace(
            Style::Hash,
            "card",
            "4111111111111111",
            Normalise::Alphanumeric,
            &MaskKey::new([8; 32]),
            &mut with_other_key,
        );
        assert_ne!(a, with_other_key);
        // Known answer: HMAC-SHA-256(key = 32 × 0x07, "card" 0x00
        // "4111111111111111"), first 6 bytes.
        assert_eq!(a, KAT_CARD);
    }

    const KAT_CARD: &str = "[MASKED:card:b752395ecf17]";

    #[test]
    fn emails_hash_case_blind() {
        assert_eq!(
            apply(
                Style::Hash,
                "email",
                "Jane@Example.com",
                Normalise::Lowercase
            ),
            apply(
                Style::Hash,
                "email",
                "jane@example.com",
                Normalise::Lowercase
            )
        );
    }

    #[test]
    fn the_key_never_prints() {
        assert_eq!(format!("{:?}", key()), "MaskKey(..)");
    }
}
