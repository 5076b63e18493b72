//! How a record line is hashed, chained and signed.
//!
//! A record is a file of lines. Each line is one compact JSON object: the
//! event's members (`mcpgate_shared::record::Event` or `IndexEntry`),
//! then a trailer the broker appends:
//!
//! ```text
//! {"v":1,"session":"…","seq":7,"at_ms":…,"prev":"<hex>","type":"message",…,"hash":"<64 hex>"}
//! {"v":1,…,"type":"checkpoint","events":8,"hash":"<64 hex>","sig":"<128 hex>"}
//! ```
//!
//! - **body**: the line with its trailer cut off and `}` put back: the
//!   exact bytes the broker serialised, never a re-serialisation, so no
//!   JSON canonicalisation is involved. The trailer is found as the last
//!   `,"hash":"` in the line; inside a JSON string `"` is always escaped,
//!   so a nested member can only come before it.
//! - **hash**: `SHA-256(domain ‖ body)`, with the domain
//!   `mcpgate/record/v1/event\0` for session records and
//!   `mcpgate/record/v1/index\0` for the cross-session index, so a line of
//!   one can never stand in for a line of the other (the domain-separation
//!   idea of RFC 6962 §2.1, which prefixes leaves and nodes differently).
//! - **chain**: every body's `prev` is the hash of the line before it. The
//!   first line's `prev` is the genesis value
//!   `SHA-256("mcpgate/record/v1/genesis\0" ‖ name)`, where the name is the
//!   session id (or `index`): a record cannot be passed off as another
//!   session's.
//! - **signature**: checkpoints, seals and every index line carry
//!   `sig = Ed25519(audit key, "mcpgate/record/v1/signature\0" ‖ hash)`
//!   (RFC 8032, pure Ed25519), over the line's own hash — so it vouches for
//!   the line and, through `prev`, for every line before it.
//!
//! Changing any byte of a line changes its hash (or breaks its JSON), which
//! no longer matches the next line's `prev` nor its own `hash`; rebuilding
//! the hashes needs the audit key to re-sign the next checkpoint.

use std::fmt;

use sha2::{Digest as _, Sha256};

const EVENT_DOMAIN: &[u8] = b"mcpgate/record/v1/event\0";
const INDEX_DOMAIN: &[u8] = b"mcpgate/record/v1/index\0";
const GENESIS_DOMAIN: &[u8] = b"mcpgate/record/v1/genesis\0";
const SIGNATURE_DOMAIN: &[u8] = b"mcpgate/record/v1/signature\0";
const HASH_MEMBER: &[u8] = b",\"hash\":\"";
const SIG_MEMBER: &[u8] = b"\",\"sig\":\"";

/// The name of the index chain's genesis.
pub const INDEX_CHAIN: &str = "index";

/// Which log a line belongs to: its hash domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chain {
    Session,
    Index,
}

impl Chain {
    fn domain(self) -> &'static [u8] {
        match self {
            Chain::Session => EVENT_DOMAIN,
            Chain::Index => INDEX_DOMAIN,
        }
    }
}

/// A SHA-256 value; shown and stored as lowercase hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    pub fn hex(&self) -> String {
        hex(&self.0)
    }

    pub fn from_hex(s: &str) -> Option<Hash> {
        let mut out = [0u8; 32];
        from_hex(s.as_bytes(), &mut out).then_some(Hash(out))
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", self.hex())
    }
}

/// The `prev` of a chain's first line.
pub fn genesis(name: &str) -> Hash {
    let mut h = Sha256::new();
    h.update(GENESIS_DOMAIN);
    h.update(name.as_bytes());
    Hash(h.finalize().into())
}

/// The hash of one body (the line without its trailer).
pub fn hash_body(chain: Chain, body: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update(chain.domain());
    h.update(body);
    Hash(h.finalize().into())
}

/// The bytes the audit key signs for a line with this hash.
pub fn signed_message(hash: &Hash) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIGNATURE_DOMAIN.len() + 32);
    m.extend_from_slice(SIGNATURE_DOMAIN);
    m.extend_from_slice(&hash.0);
    m
}

/// Builds a full line (with its newline) from a serialised body, its hash
/// and, for signed lines, the signature.
pub fn line(body: &[u8], hash: &Hash, sig: Option<&[u8; 64]>) -> Vec<u8> {
    debug_assert_eq!(body.last(), Some(&b'}'));
    let mut out = Vec::with_capacity(body.len() + 80 + if sig.is_some() { 140 } else { 0 });
    out.extend_from_slice(&body[..body.len() - 1]);
    out.extend_from_slice(HASH_MEMBER);
    out.extend_from_slice(hash.hex().as_bytes());
    if let Some(sig) = sig {
        out.extend_from_slice(SIG_MEMBER);
        out.extend_from_slice(hex(sig).as_bytes());
    }
    out.extend_from_slice(b"\"}\n");
    out
}

/// A line taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// The body, `}` restored: what was hashed.
    pub body: Vec<u8>,
    /// The hash the line claims.
    pub hash: Hash,
    pub sig: Option<[u8; 64]>,
}

/// Why a line could not be taken apart.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    #[error("has no hash trailer")]
    NoTrailer,
    #[error("has a malformed hash trailer")]
    BadTrailer,
}

/// Takes one line (without its newline) apart into body, hash and
/// signature. Strict: exactly the shape [`line`] writes.
pub fn split(line: &[u8]) -> Result<Split, SplitError> {
    let at = memchr::memmem::rfind(line, HASH_MEMBER).ok_or(SplitError::NoTrailer)?;
    if at == 0 || line.first() != Some(&b'{') {
        return Err(SplitError::NoTrailer);
    }
    let rest = &line[at + HASH_MEMBER.len()..];
    let mut hash = [0u8; 32];
    if rest.len() < 64 || !from_hex(&rest[..64], &mut hash) {
        return Err(SplitError::BadTrailer);
    }
    let rest = &rest[64..];
    let sig = if rest == b"\"}" {
        None
    } else if rest.len() == SIG_MEMBER.len() + 128 + 2
        && rest.starts_with(SIG_MEMBER)
        && rest.ends_with(b"\"}")
    {
        let mut sig = [0u8; 64];
        if !from_hex(&rest[SIG_MEMBER.len()..SIG_MEMBER.len() + 128], &mut sig) {
            return Err(SplitError::BadTrailer);
        }
        Some(sig)
    } else {
        return Err(SplitError::BadTrailer);
    };
    let mut body = Vec::with_capacity(at + 1);
    body.extend_from_slice(&line[..at]);
    body.push(b'}');
    Ok(Split {
        body,
        hash: Hash(hash),
        sig,
    })
}

pub use mcpgate_shared::hex::encode as hex;

/// Lowercase hex only: one spelling per value, so a changed letter case is
/// a changed line, not an equal one.
fn from_hex(s: &[u8], out: &mut [u8]) -> bool {
    if s.len() != out.len() * 2 {
        return false;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    for (i, pair) in s.chunks_exact(2).enumerate() {
        match (digit(pair[0]), digit(pair[1])) {
            (Some(h), Some(l)) => out[i] = h << 4 | l,
            _ => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    // Known answers, computed independently with coreutils:
    //   printf 'mcpgate/record/v1/genesis\0s-1' | sha256sum
    //   printf 'mcpgate/record/v1/event\0{"a":1}' | sha256sum
    //   printf 'mcpgate/record/v1/index\0{"a":1}' | sha256sum
    #[test]
    fn hashes_match_known_answers() {
        assert_eq!(
            genesis("s-1").hex(),
            "81ef601776a5eb6ef9914919e874d9fbe708bd7e1724989bcc7b3fee28dcb71b",
            "genesis of session s-1"
        );
        assert_eq!(
            hash_body(Chain::Session, br#"{"a":1}"#).hex(),
            "7e4a99f03d1a05223dd4a4b1e8fb9a4dcf453a4988585dc576356e21ea3499f9"
        );
        assert_eq!(
            hash_body(Chain::Index, br#"{"a":1}"#).hex(),
            "e7126e10b36184291301d0f35f6fdb25ad1d7bf5320780c03e8c90d43ebaf5a9"
        );
    }

    #[test]
    fn a_line_splits_back_into_what_was_hashed() {
        let body = br#"{"v":1,"x":{"hash":"nested"},"s":"a,\"hash\":\"b"}"#;
        let hash = hash_body(Chain::Session, body);
        let l = line(body, &hash, None);
        assert_eq!(*l.last().unwrap(), b'\n');
        let s = split(&l[..l.len() - 1]).unwrap();
        assert_eq!(s.body, body);
        assert_eq!(s.hash, hash);
        assert_eq!(s.sig, None);
        let sig = [0xabu8; 64];
        let l = line(body, &hash, Some(&sig));
        let s = split(&l[..l.len() - 1]).unwrap();
        assert_eq!((s.body.as_slice(), s.sig), (&body[..], Some(sig)));
        // The line is still one JSON object with the trailer as members.
        let v: serde_json::Value = serde_json::from_slice(&l).unwrap();
        assert_eq!(v["hash"], hash.hex());
        assert_eq!(v["x"]["hash"], "nested");
    }

    #[test]
    fn malformed_trailers_are_refused() {
        let body = br#"{"v":1}"#;
        let good = line(body, &hash_body(Chain::Session, body), None);
        let good = &good[..good.len() - 1];
        assert_eq!(split(br#"{"v":1}"#), Err(SplitError::NoTrailer));
        let upper = String::from_utf8(good.to_vec()).unwrap().to_uppercase();
        assert_eq!(split(upper.as_bytes()), Err(SplitError::NoTrailer));
        let mut short = good.to_vec();
        short.remove(short.len() - 3);
        assert_eq!(split(&short), Err(SplitError::BadTrailer));
        let mut extra = good.to_vec();
        extra.insert(extra.len() - 1, b' ');
        assert_eq!(split(&extra), Err(SplitError::BadTrailer));
        let mut caps = good.to_vec();
        let n = caps.len();
        caps[n - 4] = b'A';
        assert_eq!(split(&caps), Err(SplitError::BadTrailer));
    }
}
