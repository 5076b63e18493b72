//! The broker's Ed25519 audit key: it signs record checkpoints, seals and
//! index lines. `audit.key` (PKCS#8 PEM, 0600) never leaves the data dir;
//! `audit.pub` (SPKI PEM) is what an auditor verifies with, and can be
//! checked with OpenSSL as well as with `mcpgate-broker verify`.

use std::path::Path;

use anyhow::Context;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};

use super::format::{Hash, signed_message};

pub const AUDIT_KEY_FILE: &str = crate::ca::AUDIT_KEY;
pub const AUDIT_PUB_FILE: &str = crate::ca::AUDIT_PUB;

/// Signs with the audit key. `Debug` shows only the public half.
pub struct AuditKey(SigningKey);

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("AuditKey")
            .field(&super::format::hex(self.0.verifying_key().as_bytes()))
            .finish()
    }
}

impl AuditKey {
    pub fn from_bytes(secret: &[u8; 32]) -> AuditKey {
        AuditKey(SigningKey::from_bytes(secret))
    }

    /// Reads `dir/audit.key`, creating the pair (key 0600, public key
    /// 0644) when it is missing: data dirs made before recording get one on
    /// first use.
    pub fn load_or_create(dir: &Path) -> anyhow::Result<AuditKey> {
        let path = dir.join(AUDIT_KEY_FILE);
        match std::fs::read_to_string(&path) {
            Ok(pem) => {
                let key = SigningKey::from_pkcs8_pem(&pem)
                    .map_err(|_| anyhow::anyhow!("{}: not an Ed25519 key", path.display()))?;
                let key = AuditKey(key);
                let pub_path = dir.join(AUDIT_PUB_FILE);
                if !pub_path.exists() {
                    crate::ca::write_public(&pub_path, key.public().to_pem()?.as_bytes())?;
                }
                Ok(key)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut secret = [0u8; 32];
                getrandom::fill(&mut secret)
                    .map_err(|e| anyhow::anyhow!("no randomness for the audit key: {e}"))?;
                let key = AuditKey::from_bytes(&secret);
                let pem = key
                    .0
                    .to_pkcs8_pem(LineEnding::LF)
                    .map_err(|e| anyhow::anyhow!("encoding the audit key: {e}"))?;
                crate::ca::write_private(&path, pem.as_bytes())?;
                let pub_path = dir.join(AUDIT_PUB_FILE);
                let _ = std::fs::remove_file(&pub_path);
                crate::ca::write_public(&pub_path, key.public().to_pem()?.as_bytes())?;
                Ok(key)
            }
            Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
        }
    }

    pub fn sign(&self, hash: &Hash) -> [u8; 64] {
        self.0.sign(&signed_message(hash)).to_bytes()
    }

    pub fn public(&self) -> AuditPub {
        AuditPub(self.0.verifying_key())
    }
}

/// The audit key's public half: all a verifier needs.
#[derive(Clone, PartialEq, Eq)]
pub struct AuditPub(VerifyingKey);

impl std::fmt::Debug for AuditPub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("AuditPub")
            .field(&super::format::hex(self.0.as_bytes()))
            .finish()
    }
}

impl AuditPub {
    /// Reads an SPKI PEM public key (`audit.pub`).
    pub fn load(path: &Path) -> anyhow::Result<AuditPub> {
        let pem = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the public key {}", path.display()))?;
        AuditPub::from_pem(&pem)
            .with_context(|| format!("{}: not an Ed25519 public key", path.display()))
    }

    pub fn from_pem(pem: &str) -> anyhow::Result<AuditPub> {
        VerifyingKey::from_public_key_pem(pem)
            .map(AuditPub)
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    pub fn to_pem(&self) -> anyhow::Result<String> {
        self.0
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| anyhow::anyhow!("encoding the audit public key: {e}"))
    }

    /// Strict verification (RFC 8032 §5.1.7 with canonical `S` and no
    /// small-order keys), so one signature has one valid encoding.
    pub fn verify(&self, hash: &Hash, sig: &[u8; 64]) -> bool {
        let sig = ed25519_dalek::Signature::from_bytes(sig);
        self.0.verify_strict(&signed_message(hash), &sig).is_ok()
    }

    /// Hex of the raw 32-byte key, for messages and reports.
    pub fn fingerprint(&self) -> String {
        super::format::hex(self.0.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::format::{Chain, hash_body};

    /// RFC 8032 §7.1 TEST 1's secret key. The signature below was computed
    /// independently with OpenSSL:
    ///   printf 'mcpgate/record/v1/signature\0' > m; <hash bytes> >> m
    ///   openssl pkeyutl -sign -rawin -inkey rfc8032-test1.pem -in m | xxd -p
    #[test]
    fn signatures_match_a_known_answer() {
        let secret: [u8; 32] = [
            0x9d, 0x61, 0xb1, 0x9d, 0xef, 0xfd, 0x5a, 0x60, 0xba, 0x84, 0x4a, 0xf4, 0x92, 0xec,
            0x2c, 0xc4, 0x44, 0x49, 0xc5, 0x69, 0x7b, 0x32, 0x69, 0x19, 0x70, 0x3b, 0xac, 0x03,
            0x1c, 0xae, 0x7f, 0x60,
        ];
        let key = AuditKey::from_bytes(&secret);
        assert_eq!(
            key.public().fingerprint(),
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
        );
        let hash = hash_body(Chain::Session, br#"{"a":1}"#);
        let sig = key.sign(&hash);
        assert_eq!(
            super::super::format::hex(&sig),
            "d81e8bf78efd1ec1e5532db1bcc16757bbfecf7fc13ef49a4e4ceb7005e00c382eb715f04fbb1f69875adea526708583fa4f89bbf7d4081bf27fdbb37754fe0c"
        );
        assert!(key.public().verify(&hash, &sig));
        let mut bad = sig;
        bad[10] ^= 1;
        assert!(!key.public().verify(&hash, &bad));
        let other = hash_body(Chain::Index, br#"{"a":1}"#);
        assert!(!key.public().verify(&other, &sig));
    }

    #[test]
    fn the_key_pair_is_created_once_with_a_private_key_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let a = AuditKey::load_or_create(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(AUDIT_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = AuditKey::load_or_create(dir.path()).unwrap();
        assert_eq!(a.public(), b.public());
        let public = AuditPub::load(&dir.path().join(AUDIT_PUB_FILE)).unwrap();
        assert_eq!(public, a.public());
        let hash = hash_body(Chain::Session, b"{}");
        assert!(public.verify(&hash, &b.sign(&hash)));
        assert!(!format!("{a:?}").contains("PRIVATE"));
    }
}
