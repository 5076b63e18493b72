//! The broker's certificate authority.
//!
//! The CA signs two kinds of certificate: the broker's own TLS server
//! certificate (made at `init`) and session certificates, one per session,
//! from a CSR the client made with a key that never leaves it. A session
//! certificate names its user, session and server as URI SANs
//! ([`mcpgate_shared::identity`]); whatever the CSR asked for is ignored.
//!
//! Key files are written 0600 from creation (never chmodded after) and their
//! contents never reach a log or an error message.

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use mcpgate_shared::identity::CertIdentity;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::CertificateSigningRequestDer;
use rustls_pki_types::pem::PemObject;
use time::OffsetDateTime;
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey as ParsedKey;

/// File names under the data dir.
pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca.key";
pub const SERVER_CERT: &str = "server.pem";
pub const SERVER_KEY: &str = "server.key";
pub const AUDIT_KEY: &str = "audit.key";
pub const AUDIT_PUB: &str = "audit.pub";
pub const TOKEN_KEY: &str = "token.key";
pub const TOKEN_PUB: &str = "token.pub";

/// Smallest RSA modulus accepted in a CSR.
pub const MIN_RSA_BITS: usize = 2048;
/// Allowed clock skew: session certificates start this far in the past.
const BACKDATE: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("a CA already exists at {0}: refusing to overwrite it")]
    Exists(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a valid key or certificate")]
    BadPem { path: PathBuf },
    #[error("the CSR is not valid: {0}")]
    BadCsr(String),
    #[error("the CSR's key is too weak: {0}")]
    WeakKey(String),
    #[error("signing failed: {0}")]
    Sign(#[from] rcgen::Error),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CaError + '_ {
    move |source| CaError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes a file that only the owner can read, created that way.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), CaError> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err(path))?;
    f.write_all(contents).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))
}

pub fn write_public(path: &Path, contents: &[u8]) -> Result<(), CaError> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
        .map_err(io_err(path))?;
    f.write_all(contents).map_err(io_err(path))
}

fn read(path: &Path) -> Result<String, CaError> {
    fs::read_to_string(path).map_err(io_err(path))
}

fn offset(t: SystemTime) -> OffsetDateTime {
    OffsetDateTime::from(t)
}

fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    // getrandom only fails when the OS has no entropy source at all; a zero
    // serial would still be unique enough to detect, but we refuse instead.
    getrandom::fill(&mut bytes).expect("the OS random number generator is unavailable");
    bytes[0] &= 0x7f; // positive
    bytes[0] |= 0x01; // no leading zero byte
    SerialNumber::from_slice(&bytes)
}

/// Serial numbers are stored and logged as lowercase hex.
pub fn serial_hex(serial: &[u8]) -> String {
    mcpgate_shared::hex::encode(serial)
}

/// What `init` creates: the CA, the broker's TLS certificate, and the
/// Ed25519 keys for tokens and for signing session records.
pub fn create(dir: &Path, public_names: &[String]) -> Result<(), CaError> {
    let ca_key_path = dir.join(CA_KEY);
    if ca_key_path.exists() || dir.join(CA_CERT).exists() {
        return Err(CaError::Exists(ca_key_path));
    }
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "mcpgate broker CA");
    params
        .distinguished_name
        .push(DnType::OrganizationName, "mcpgate");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = SystemTime::now();
    params.not_before = offset(now - BACKDATE);
    params.not_after = offset(now + Duration::from_secs(10 * 365 * 86400));
    params.serial_number = Some(random_serial());
    let ca_cert = params.self_signed(&ca_key)?;
    write_private(&ca_key_path, ca_key.serialize_pem().as_bytes())?;
    write_public(&dir.join(CA_CERT), ca_cert.pem().as_bytes())?;

    let issuer = Issuer::new(params, &ca_key);
    let server_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut sp = CertificateParams::default();
    sp.distinguished_name = DistinguishedName::new();
    sp.distinguished_name
        .push(DnType::CommonName, "mcpgate broker");
    for name in public_names {
        sp.subject_alt_names.push(match name.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                name.clone()
                    .try_into()
                    .map_err(|_| CaError::BadCsr(format!("invalid DNS name {name:?}")))?,
            ),
        });
    }
    sp.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    sp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    sp.not_before = offset(now - BACKDATE);
    sp.not_after = offset(now + Duration::from_secs(825 * 86400));
    sp.serial_number = Some(random_serial());
    sp.use_authority_key_identifier_extension = true;
    let server_cert = sp.signed_by(&server_key, &issuer)?;
    write_private(&dir.join(SERVER_KEY), server_key.serialize_pem().as_bytes())?;
    write_public(&dir.join(SERVER_CERT), server_cert.pem().as_bytes())?;

    for (key, public) in [(AUDIT_KEY, AUDIT_PUB), (TOKEN_KEY, TOKEN_PUB)] {
        let k = KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
        write_private(&dir.join(key), k.serialize_pem().as_bytes())?;
        write_public(&dir.join(public), k.public_key_pem().as_bytes())?;
    }
    Ok(())
}

/// The loaded CA, ready to sign session certificates.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    ca_pem: String,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ca { key: [redacted] }")
    }
}

/// A signed session certificate.
#[derive(Debug, Clone)]
pub struct SessionCert {
    pub pem: String,
    pub serial: String,
    pub not_after: SystemTime,
}

impl Ca {
    pub fn load(dir: &Path) -> Result<Ca, CaError> {
        let key_path = dir.join(CA_KEY);
        let key =
            KeyPair::from_pem(&read(&key_path)?).map_err(|_| CaError::BadPem { path: key_path })?;
        let cert_path = dir.join(CA_CERT);
        let ca_pem = read(&cert_path)?;
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, key)
            .map_err(|_| CaError::BadPem { path: cert_path })?;
        Ok(Ca { issuer, ca_pem })
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Signs a session certificate for `identity` over the public key in
    /// `csr_pem`, valid from now (less a minute of skew) for `ttl`.
    pub fn sign_session(
        &self,
        csr_pem: &str,
        identity: &CertIdentity,
        ttl: Duration,
    ) -> Result<SessionCert, CaError> {
        let der = CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes())
            .map_err(|_| CaError::BadCsr("not a PEM certificate request".into()))?;
        check_key_strength(&der)?;
        let csr = CertificateSigningRequestParams::from_der(&der)
            .map_err(|e| CaError::BadCsr(e.to_string()))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, identity.user.as_str());
        for uri in identity.uris() {
            params
                .subject_alt_names
                .push(SanType::URI(uri.try_into().map_err(|_| {
                    CaError::BadCsr("identity is not a valid URI".into())
                })?));
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let now = SystemTime::now();
        let not_after = now + ttl;
        params.not_before = offset(now - BACKDATE);
        params.not_after = offset(not_after);
        let serial = random_serial();
        let serial_text = serial_hex(&serial.to_bytes());
        params.serial_number = Some(serial);
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&csr.public_key, &self.issuer)?;
        Ok(SessionCert {
            pem: cert.pem(),
            serial: serial_text,
            not_after,
        })
    }
}

/// Refuses keys an attacker could break: RSA under 2048 bits, EC curves
/// other than P-256/P-384, and anything unknown. Ed25519 is accepted.
fn check_key_strength(der: &CertificateSigningRequestDer<'_>) -> Result<(), CaError> {
    let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(der)
        .map_err(|_| CaError::BadCsr("cannot parse the certificate request".into()))?;
    let spki = &csr.certification_request_info.subject_pki;
    let parsed = spki
        .parsed()
        .map_err(|_| CaError::BadCsr("cannot parse the public key".into()))?;
    match parsed {
        ParsedKey::RSA(rsa) => {
            let bits = rsa.key_size();
            if bits < MIN_RSA_BITS {
                return Err(CaError::WeakKey(format!(
                    "RSA {bits} bits; at least {MIN_RSA_BITS} are required"
                )));
            }
            Ok(())
        }
        ParsedKey::EC(_) => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|oid| oid.to_id_string())
                .unwrap_or_default();
            match curve.as_str() {
                // P-256, P-384
                "1.2.840.10045.3.1.7" | "1.3.132.0.34" => Ok(()),
                other => Err(CaError::WeakKey(format!(
                    "elliptic curve {other:?} is not accepted; use P-256, P-384 or Ed25519"
                ))),
            }
        }
        _ if spki.algorithm.algorithm.to_id_string() == "1.3.101.112" => Ok(()), // Ed25519
        _ => Err(CaError::WeakKey(
            "unsupported key type; use ECDSA P-256/P-384, Ed25519 or RSA ≥ 2048".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn identity() -> CertIdentity {
        CertIdentity {
            session: "2f1c0e4e-7a51-4d55-9c1e-0a6f3c2b1d00".parse().unwrap(),
            user: "alice".parse().unwrap(),
            server: "demo".parse().unwrap(),
        }
    }

    fn csr_for(key: &KeyPair) -> String {
        let mut p = CertificateParams::new(vec!["evil.example".to_string()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, "root");
        p.serialize_request(key).unwrap().pem().unwrap()
    }

    #[test]
    fn init_writes_private_keys_0600_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        create(dir.path(), &["127.0.0.1".into(), "localhost".into()]).unwrap();
        for key in [CA_KEY, SERVER_KEY, AUDIT_KEY, TOKEN_KEY] {
            let mode = fs::metadata(dir.path().join(key))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{key}");
        }
        let err = create(dir.path(), &["127.0.0.1".into()]).unwrap_err();
        assert!(matches!(err, CaError::Exists(_)));
    }

    #[test]
    fn session_cert_names_identity_and_ignores_the_csr_subject() {
        let dir = tempfile::tempdir().unwrap();
        create(dir.path(), &["127.0.0.1".into()]).unwrap();
        let ca = Ca::load(dir.path()).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = ca
            .sign_session(&csr_for(&key), &identity(), Duration::from_secs(600))
            .unwrap();
        let der = rustls_pki_types::CertificateDer::from_pem_slice(cert.pem.as_bytes()).unwrap();
        let (_, x) = x509_parser::parse_x509_certificate(&der).unwrap();
        let sans = x.subject_alternative_name().unwrap().unwrap();
        let uris: Vec<&str> = sans
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                x509_parser::extensions::GeneralName::URI(u) => Some(*u),
                _ => None,
            })
            .collect();
        assert_eq!(CertIdentity::from_uris(uris.clone()).unwrap(), identity());
        assert!(!format!("{sans:?}").contains("evil.example"));
        assert_eq!(x.public_key().subject_public_key.data, key.public_key_raw());
        let lifetime = x.validity().not_after.timestamp() - x.validity().not_before.timestamp();
        assert_eq!(lifetime, 660);
        assert_eq!(serial_hex(x.raw_serial()), cert.serial);
    }

    #[test]
    fn weak_and_forged_csrs_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        create(dir.path(), &["127.0.0.1".into()]).unwrap();
        let ca = Ca::load(dir.path()).unwrap();
        let err = ca
            .sign_session("garbage", &identity(), Duration::from_secs(60))
            .unwrap_err();
        assert!(matches!(err, CaError::BadCsr(_)));
        // A CSR whose signature does not match its key (someone else's key).
        let good = csr_for(&KeyPair::generate().unwrap());
        let der = CertificateSigningRequestDer::from_pem_slice(good.as_bytes()).unwrap();
        let mut bytes = der.as_ref().to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        let tampered = pem_of("CERTIFICATE REQUEST", &bytes);
        assert!(
            ca.sign_session(&tampered, &identity(), Duration::from_secs(60))
                .is_err()
        );
    }

    fn pem_of(tag: &str, der: &[u8]) -> String {
        use std::fmt::Write as _;
        const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut b64 = String::new();
        for chunk in der.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
            for i in 0..4 {
                if i <= chunk.len() {
                    b64.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    b64.push('=');
                }
            }
        }
        let mut out = format!("-----BEGIN {tag}-----\n");
        for line in b64.as_bytes().chunks(64) {
            let _ = writeln!(out, "{}", std::str::from_utf8(line).unwrap());
        }
        let _ = writeln!(out, "-----END {tag}-----");
        out
    }
}

#[cfg(test)]
mod weak_key_tests {
    use super::*;

    /// rcgen cannot make RSA keys, so the weak CSR comes from the openssl
    /// command line tool, as an attacker's would.
    fn openssl_csr(newkey: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("openssl")
            .args([
                "req", "-new", "-newkey", newkey, "-nodes", "-subj", "/CN=x", "-keyout",
            ])
            .arg(dir.path().join("k"))
            .output()
            .expect("openssl is needed for this test");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn rsa_1024_csr_is_refused_as_weak() {
        let dir = tempfile::tempdir().unwrap();
        create(dir.path(), &["127.0.0.1".into()]).unwrap();
        let ca = Ca::load(dir.path()).unwrap();
        let identity = CertIdentity {
            session: "s1".parse().unwrap(),
            user: "alice".parse().unwrap(),
            server: "demo".parse().unwrap(),
        };
        let err = ca
            .sign_session(&openssl_csr("rsa:1024"), &identity, Duration::from_secs(60))
            .unwrap_err();
        assert!(matches!(err, CaError::WeakKey(_)), "{err}");
        assert!(err.to_string().contains("1024"));
        let ok = ca.sign_session(&openssl_csr("rsa:2048"), &identity, Duration::from_secs(60));
        assert!(ok.is_ok(), "{ok:?}");
    }
}
