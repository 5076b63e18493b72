//! TLS pieces shared by the HTTPS API client and the tunnel: the crypto
//! provider and reading PEM certificates into trust anchors.

use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// The one crypto provider the CLI uses (ring), passed explicitly so no
/// process-wide default has to be installed.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// All `CERTIFICATE` blocks in `pem`, in order. Other blocks are refused:
/// a CA file with a private key in it is a mistake worth stopping for.
pub fn certificates(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    if pem.contains("PRIVATE KEY-----") {
        return Err("it contains a private key; pass only the CA certificate".into());
    }
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not valid PEM: {e}"))?;
    if certs.is_empty() {
        return Err("no PEM CERTIFICATE block found".into());
    }
    Ok(certs)
}

/// A root store holding exactly the certificates in `pem`; each one must be
/// usable as a trust anchor.
pub fn roots(pem: &str) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    for cert in certificates(pem)? {
        store
            .add(cert)
            .map_err(|e| format!("not a usable CA certificate: {e}"))?;
    }
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_generated_ca_and_refuses_junk_and_keys() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).unwrap();
        assert_eq!(roots(&ca.pem()).unwrap().len(), 1);
        assert!(roots("hello").is_err());
        let with_key = format!("{}{}", ca.pem(), key.serialize_pem());
        let err = roots(&with_key).unwrap_err();
        assert!(err.contains("private key"), "{err}");
    }
}
