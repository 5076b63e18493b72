//! Key pairs, CSRs and certificates made by code (never copied in): the
//! honest CSR a client sends, and the dishonest certificates security tests
//! present — one from a foreign CA, one signed by the broker CA but expired —
//! each carrying the very identity (URI SANs) of a real live session, so the
//! only difference from the genuine certificate is the one under test.

use rcgen::{
    CertificateParams, CertifiedIssuer, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// A client key pair (ECDSA P-256) that never leaves the test.
pub struct ClientKey {
    key: KeyPair,
}

impl Default for ClientKey {
    fn default() -> Self {
        Self::generate()
    }
}

impl ClientKey {
    pub fn generate() -> ClientKey {
        ClientKey {
            key: KeyPair::generate().expect("generate a key pair"),
        }
    }

    /// A PKCS#10 CSR for this key; the broker ignores its subject.
    pub fn csr_pem(&self) -> String {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "mcpgate e2e client");
        params
            .serialize_request(&self.key)
            .and_then(|csr| csr.pem())
            .expect("serialise a CSR")
    }

    pub fn private_key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.serialize_der()))
    }

    pub fn key_pair(&self) -> &KeyPair {
        &self.key
    }
}

/// The DER certificates in a PEM bundle.
pub fn certs_from_pem(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("PEM certificates")
}

/// What a certificate says, as far as the tests care.
#[derive(Debug, Clone)]
pub struct CertFacts {
    pub uris: Vec<String>,
    /// The serial number's bytes (the broker binds a session to it).
    pub serial: Vec<u8>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub client_auth_eku: bool,
    pub has_eku: bool,
    pub digital_signature: bool,
    pub is_ca: bool,
}

/// Reads the first certificate of a PEM bundle.
pub fn facts(pem: &str) -> CertFacts {
    let der = certs_from_pem(pem)
        .into_iter()
        .next()
        .expect("one certificate");
    let (_, cert) = X509Certificate::from_der(der.as_ref()).expect("an X.509 certificate");
    let uris = cert
        .subject_alternative_name()
        .expect("a readable SAN extension")
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::URI(u) => Some(u.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let eku = cert.extended_key_usage().expect("a readable EKU extension");
    let ku = cert.key_usage().expect("a readable key usage extension");
    CertFacts {
        uris,
        serial: cert.raw_serial().to_vec(),
        not_before: cert.validity().not_before.to_datetime(),
        not_after: cert.validity().not_after.to_datetime(),
        client_auth_eku: eku.as_ref().is_some_and(|e| e.value.client_auth),
        has_eku: eku.is_some(),
        digital_signature: ku.as_ref().is_none_or(|k| k.value.digital_signature()),
        is_ca: cert.is_ca(),
    }
}

/// Leaf parameters that copy `like`'s identity, serial and usages, with the
/// given validity window.
fn leaf_like(
    like: &CertFacts,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "mcpgate session");
    params.subject_alt_names = like
        .uris
        .iter()
        .map(|u| SanType::URI(u.as_str().try_into().expect("an IA5 URI")))
        .collect();
    params.serial_number = Some(SerialNumber::from_slice(&like.serial));
    params.not_before = not_before;
    params.not_after = not_after;
    params.is_ca = IsCa::ExplicitNoCa;
    if like.digital_signature {
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    }
    if like.client_auth_eku || !like.has_eku {
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    }
    params.use_authority_key_identifier_extension = true;
    params
}

/// A certificate for `key` with `like`'s identity and serial, signed by the broker CA
/// (`ca_pem` + `ca_key_pem`), valid only in the given window.
pub fn sign_with_broker_ca(
    like: &CertFacts,
    key: &ClientKey,
    ca_pem: &str,
    ca_key_pem: &str,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> String {
    let ca_key = KeyPair::from_pem(ca_key_pem).expect("the broker CA key (PEM)");
    let issuer = Issuer::from_ca_cert_pem(ca_pem, ca_key).expect("the broker CA certificate");
    leaf_like(like, not_before, not_after)
        .signed_by(key.key_pair(), &issuer)
        .expect("sign a leaf")
        .pem()
}

/// A CA nobody trusts, and a certificate for `key` with `like`'s identity
/// and serial signed by it (currently valid).
pub fn sign_with_foreign_ca(like: &CertFacts, key: &ClientKey) -> String {
    let mut ca = CertificateParams::default();
    ca.distinguished_name = DistinguishedName::new();
    ca.distinguished_name.push(DnType::CommonName, "mcpgate CA");
    ca.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let issuer = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("CA key"))
        .expect("self-sign a foreign CA");
    let now = OffsetDateTime::now_utc();
    leaf_like(
        like,
        now - time::Duration::minutes(5),
        now + time::Duration::minutes(10),
    )
    .signed_by(key.key_pair(), &issuer)
    .expect("sign a leaf")
    .pem()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in for a broker-issued session certificate, from a CA made
    /// here.
    fn issued() -> (String, String, CertFacts, ClientKey) {
        let mut ca = CertificateParams::default();
        ca.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let like = CertFacts {
            uris: vec![
                "urn:mcpgate:session:abc".into(),
                "urn:mcpgate:user:alice".into(),
                "urn:mcpgate:server:demo".into(),
            ],
            serial: vec![0x01, 0x23, 0x45],
            not_before: OffsetDateTime::now_utc(),
            not_after: OffsetDateTime::now_utc(),
            client_auth_eku: true,
            has_eku: true,
            digital_signature: true,
            is_ca: false,
        };
        (
            ca_cert.pem(),
            ca_key.serialize_pem(),
            like,
            ClientKey::generate(),
        )
    }

    #[test]
    fn expired_forgery_differs_only_in_its_validity() {
        let (ca_pem, ca_key, like, key) = issued();
        let now = OffsetDateTime::now_utc();
        let pem = sign_with_broker_ca(
            &like,
            &key,
            &ca_pem,
            &ca_key,
            now - time::Duration::hours(2),
            now - time::Duration::hours(1),
        );
        let got = facts(&pem);
        assert_eq!(got.uris, like.uris);
        assert_eq!(got.serial, like.serial);
        assert!(got.client_auth_eku && got.digital_signature && !got.is_ca);
        assert!(got.not_after < now);
    }

    #[test]
    fn foreign_forgery_is_current_and_keeps_the_identity() {
        let (_, _, like, key) = issued();
        let got = facts(&sign_with_foreign_ca(&like, &key));
        let now = OffsetDateTime::now_utc();
        assert_eq!(got.uris, like.uris);
        assert_eq!(got.serial, like.serial);
        assert!(got.not_before < now && now < got.not_after);
    }

    #[test]
    fn csr_is_pem() {
        let csr = ClientKey::generate().csr_pem();
        assert!(
            csr.starts_with("-----BEGIN CERTIFICATE REQUEST-----"),
            "{csr}"
        );
    }
}
