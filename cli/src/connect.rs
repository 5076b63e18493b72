//! `mcpgate connect SERVER`: one MCP session through the broker.
//!
//! 1. Check the login locally: not logged in or expired fails before any
//!    network traffic (an OpenID Connect login that is due is renewed
//!    first; in CI mode the token comes from the CI sources).
//! 2. Make a fresh ECDSA P-256 key pair in memory and a CSR for it. The
//!    private key is never written, logged or sent; it lives until the
//!    tunnel's TLS configuration is built and then only inside rustls.
//! 3. `POST /v1/sessions` with the CSR; the broker answers with a
//!    short-lived certificate, its CA and where the tunnel is.
//! 4. Open the mTLS tunnel, read the broker's status line.
//! 5. Relay stdin/stdout until the session is over (`relay.rs`).

use mcpgate_shared::api::SessionRequest;
use mcpgate_shared::names::{ServerName, UserName};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{BufReader, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::args::ConnectArgs;
use crate::context::{Context, Login};
use crate::error::Error;
use crate::ui::{self, Spinner};
use crate::{relay, tunnel};

pub async fn run(args: ConnectArgs, ctx: &Context) -> Result<(), Error> {
    let mut login = ctx.login_for_session().await?;
    let (rd, wr) = open_session(&mut login, ctx, &args.server).await?;
    relay::run(rd, wr, tokio::io::stdin(), tokio::io::stdout()).await
}

/// The tunnel's two halves, reading after the status line.
pub type Tunnel = (
    BufReader<ReadHalf<TlsStream<TcpStream>>>,
    WriteHalf<TlsStream<TcpStream>>,
);

/// Steps 2 to 4: a session certificate, the tunnel, and the broker's
/// "ready". Says on stderr that the session is open. A token the broker
/// calls expired is renewed once (`Login::call`).
pub async fn open_session(
    login: &mut Login,
    ctx: &Context,
    server: &ServerName,
) -> Result<Tunnel, Error> {
    let spinner = Spinner::start(format!("requesting a session for {server}"));
    let (key, csr_pem) = session_key(&login.state.user)?;
    let request = SessionRequest {
        server: server.clone(),
        csr_pem,
    };
    let session = login
        .call(ctx, |client| {
            let request = request.clone();
            async move { client.create_session(&request).await }
        })
        .await?;
    if &session.server != server {
        return Err(Error::Broker(format!(
            "asked for a session with {server}, the broker opened one with {}",
            session.server
        )));
    }
    tracing::debug!(session = %session.session_id, tunnel = %session.tunnel_addr, "session granted");

    spinner.set(format!("opening the tunnel to {}", session.tunnel_addr));
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    drop(key);
    let stream = tunnel::open(&session, key_der).await?;

    spinner.set(format!("waiting for the broker to start {server}"));
    let (rd, wr) = tokio::io::split(stream);
    let mut rd = BufReader::new(rd);
    tunnel::read_status(&mut rd, &session).await?;
    drop(spinner);

    eprintln!(
        "connected to {server} through {} (session {}, ends in at most {})",
        login.state.broker,
        session.session_id,
        ui::span(session.max_duration_secs)
    );
    Ok((rd, wr))
}

/// A fresh P-256 key pair and a PEM CSR for it. The CSR's subject is only a
/// label (the broker writes the identity itself); the key pair stays with
/// the caller.
pub fn session_key(user: &UserName) -> Result<(KeyPair, String), Error> {
    let key =
        KeyPair::generate().map_err(|e| Error::internal("cannot generate a session key", e))?;
    let mut params = CertificateParams::default();
    let mut subject = DistinguishedName::new();
    subject.push(DnType::CommonName, user.as_str());
    params.distinguished_name = subject;
    let csr = params
        .serialize_request(&key)
        .and_then(|csr| csr.pem())
        .map_err(|e| Error::internal("cannot build the certificate signing request", e))?;
    Ok((key, csr))
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateSigningRequestParams, PublicKeyData};

    use super::*;

    /// The 32-byte private scalar inside ring's PKCS#8 for P-256: the
    /// OCTET STRING after `version 1` in the ECPrivateKey.
    fn private_scalar(pkcs8: &[u8]) -> &[u8] {
        let marker = [0x02, 0x01, 0x01, 0x04, 0x20];
        let at = pkcs8
            .windows(marker.len())
            .position(|w| w == marker)
            .expect("ECPrivateKey in PKCS#8");
        &pkcs8[at + marker.len()..at + marker.len() + 32]
    }

    #[test]
    fn csr_carries_the_public_key_and_no_private_key_material() {
        let (key, csr_pem) = session_key(&"alice".parse().unwrap()).unwrap();
        assert!(csr_pem.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
        assert!(!csr_pem.contains("PRIVATE KEY"));

        // The CSR parses, its signature verifies, and it names our key.
        let parsed = CertificateSigningRequestParams::from_pem(&csr_pem).unwrap();
        assert_eq!(parsed.public_key.der_bytes(), key.public_key_raw());
        assert_eq!(key.algorithm(), &rcgen::PKCS_ECDSA_P256_SHA256);

        // The private scalar appears nowhere in the CSR.
        let pkcs8 = key.serialize_der();
        let scalar = private_scalar(&pkcs8);
        let der = parsed_der(&csr_pem);
        assert!(!der.windows(scalar.len()).any(|w| w == scalar));
        for window in scalar.windows(8) {
            assert!(!der.windows(8).any(|w| w == window));
        }
    }

    #[test]
    fn every_session_gets_a_new_key() {
        let user = "alice".parse().unwrap();
        let (a, _) = session_key(&user).unwrap();
        let (b, _) = session_key(&user).unwrap();
        assert_ne!(a.public_key_raw(), b.public_key_raw());
    }

    #[test]
    fn the_session_key_does_not_print() {
        let (key, _) = session_key(&"alice".parse().unwrap()).unwrap();
        let pkcs8 = key.serialize_der();
        let shown = format!("{key:?}");
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8.clone()));
        let shown_der = format!("{der:?}");
        let scalar_hex: String = private_scalar(&pkcs8)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        for text in [shown, shown_der] {
            assert!(!text.contains(&scalar_hex[..16]), "{text}");
            assert!(
                !text.contains(&format!("{:?}", private_scalar(&pkcs8))),
                "{text}"
            );
        }
    }

    /// The whole client path against a stand-in broker on 127.0.0.1: the
    /// HTTPS API signs the CSR, the tunnel checks the certificate, says
    /// ready and echoes; stdin EOF ends the session cleanly.
    /// A logged-in alice at the test broker.
    fn test_login(pki: &crate::testing::TestPki, api_addr: std::net::SocketAddr) -> Login {
        use crate::state::{LoginKind, State, TokenStore};
        Login::new(
            State {
                broker: format!("https://{api_addr}").parse().unwrap(),
                ca_pem: Some(pki.ca_pem()),
                user: "alice".parse().unwrap(),
                roles: vec![],
                expires_at: u64::MAX,
                token_store: TokenStore::File,
                login: LoginKind::Password,
            },
            mcpgate_shared::secret::Secret::new("tok-1".into()),
        )
    }

    #[tokio::test]
    async fn connect_opens_a_session_and_relays_through_the_tunnel() {
        use std::sync::Arc;

        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

        use crate::testing::{SESSION_ID, TestPki};

        let pki = Arc::new(TestPki::new());
        let tunnel_addr = pki
            .listen_tunnel(&pki.ca_pem(), |tls| async move {
                let (rd, mut wr) = tokio::io::split(tls);
                let status = format!(
                    "{{\"status\":\"ready\",\"session_id\":\"{SESSION_ID}\",\"server\":\"demo\"}}\n"
                );
                wr.write_all(status.as_bytes()).await.unwrap();
                let mut lines = tokio::io::BufReader::new(rd).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    wr.write_all(format!("{line}\n").as_bytes()).await.unwrap();
                }
                let _ = wr.shutdown().await;
            })
            .await;
        let signer = pki.clone();
        let api_addr = pki
            .listen_api(move |method, path, auth, body| {
                assert_eq!((method, path), ("POST", "/v1/sessions"));
                assert_eq!(auth, Some("Bearer tok-1"));
                let req: SessionRequest = serde_json::from_slice(body).unwrap();
                assert_eq!(req.server.as_str(), "demo");
                let session = signer.session(&req.csr_pem, tunnel_addr);
                (200, serde_json::to_string(&session).unwrap())
            })
            .await;

        let tmp = tempfile::tempdir().unwrap();
        let ctx = crate::context::tests::context(&tmp);
        let mut login = test_login(&pki, api_addr);
        let (rd, wr) = open_session(&mut login, &ctx, &"demo".parse().unwrap())
            .await
            .unwrap();
        let input = &b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\"}\n"[..];
        let (mut shown, out) = tokio::io::duplex(4096);
        relay::run(rd, wr, input, out).await.unwrap();
        let mut text = String::new();
        shown.read_to_string(&mut text).await.unwrap();
        assert_eq!(
            text,
            "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\"}\n"
        );
    }

    #[tokio::test]
    async fn a_forbidden_server_fails_before_any_tunnel() {
        use crate::testing::TestPki;

        let pki = TestPki::new();
        let api_addr = pki
            .listen_api(|_, _, _, _| {
                (
                    403,
                    r#"{"error":"forbidden","message":"role dev does not list db"}"#.into(),
                )
            })
            .await;
        let tmp = tempfile::tempdir().unwrap();
        let ctx = crate::context::tests::context(&tmp);
        let mut login = test_login(&pki, api_addr);
        let err = open_session(&mut login, &ctx, &"db".parse().unwrap())
            .await
            .err()
            .unwrap();
        assert_eq!(err.exit_code(), crate::error::exit::NO_ACCESS);
        assert!(
            err.report().contains("no access to server db"),
            "{}",
            err.report()
        );
    }

    fn parsed_der(pem: &str) -> Vec<u8> {
        use rustls_pki_types::CertificateSigningRequestDer;
        use rustls_pki_types::pem::PemObject;
        CertificateSigningRequestDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .as_ref()
            .to_vec()
    }
}
