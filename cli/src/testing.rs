//! Test support: a broker-like PKI made by code (nothing copied in), a
//! tunnel listener with client-certificate checks, and a minimal HTTPS API
//! server, so the CLI's TLS and HTTP paths are tested for real on
//! 127.0.0.1.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use mcpgate_shared::api::SessionResponse;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, CertifiedIssuer, IsCa,
    KeyPair,
};
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

pub const SESSION_ID: &str = "0b6c9a58-5f7e-4c53-9d0e-3f0c1b2a4d5e";

/// A CA, and a certificate for 127.0.0.1 that it signed.
pub struct TestPki {
    ca: CertifiedIssuer<'static, KeyPair>,
    server_cert: CertificateDer<'static>,
    server_key: Vec<u8>,
}

impl TestPki {
    pub fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let server_key = KeyPair::generate().unwrap();
        let server_cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&server_key, &ca)
            .unwrap();
        Self {
            ca,
            server_cert: server_cert.der().clone(),
            server_key: server_key.serialize_der(),
        }
    }

    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    /// Signs a client CSR, as the broker does for a session.
    pub fn sign_csr(&self, csr_pem: &str) -> String {
        CertificateSigningRequestParams::from_pem(csr_pem)
            .unwrap()
            .signed_by(&self.ca)
            .unwrap()
            .pem()
    }

    /// What `POST /v1/sessions` would answer for `csr_pem`, with the tunnel
    /// at `addr`.
    pub fn session(&self, csr_pem: &str, addr: SocketAddr) -> SessionResponse {
        SessionResponse {
            session_id: SESSION_ID.parse().unwrap(),
            server: "demo".parse().unwrap(),
            certificate_pem: self.sign_csr(csr_pem),
            ca_pem: self.ca_pem(),
            tunnel_addr: addr.to_string(),
            tunnel_server_name: "127.0.0.1".into(),
            connect_by: u64::MAX,
            max_duration_secs: 600,
        }
    }

    fn server_config(&self, client_ca_pem: Option<&str>) -> ServerConfig {
        let provider = crate::tls::provider();
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match client_ca_pem {
            Some(pem) => builder.with_client_cert_verifier(
                WebPkiClientVerifier::builder_with_provider(
                    Arc::new(crate::tls::roots(pem).unwrap()),
                    provider,
                )
                .build()
                .unwrap(),
            ),
            None => builder.with_no_client_auth(),
        };
        builder
            .with_single_cert(
                vec![self.server_cert.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key.clone())),
            )
            .unwrap()
    }

    /// A tunnel listener that checks client certificates against
    /// `client_ca_pem`, then runs `serve` on each accepted stream.
    pub async fn listen_tunnel<F, Fut>(&self, client_ca_pem: &str, serve: F) -> SocketAddr
    where
        F: Fn(TlsStream<TcpStream>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let acceptor = TlsAcceptor::from(Arc::new(self.server_config(Some(client_ca_pem))));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                // A refused client certificate fails here, as in the broker.
                if let Ok(tls) = acceptor.accept(tcp).await {
                    serve(tls).await;
                }
            }
        });
        addr
    }

    /// A minimal HTTPS/1.1 API: `handle(method, path, authorization, body)`
    /// returns the status and JSON body. One request per connection.
    pub async fn listen_api<H>(&self, handle: H) -> SocketAddr
    where
        H: Fn(&str, &str, Option<&str>, &[u8]) -> (u16, String) + Send + Sync + 'static,
    {
        let acceptor = TlsAcceptor::from(Arc::new(self.server_config(None)));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = Arc::new(handle);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    continue;
                };
                let handle = handle.clone();
                tokio::spawn(async move {
                    let Some((method, path, auth, body)) = read_request(&mut tls).await else {
                        return;
                    };
                    let (status, json) = handle(&method, &path, auth.as_deref(), &body);
                    let head = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        json.len()
                    );
                    let _ = tls.write_all(head.as_bytes()).await;
                    let _ = tls.write_all(json.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        addr
    }
}

/// One request a [`FakeBroker`] received.
#[derive(Debug, Clone)]
pub struct ApiRequest {
    pub method: String,
    /// With the query string, e.g. `/v1/approvals?state=pending`.
    pub path: String,
    pub auth: Option<String>,
    pub body: Vec<u8>,
}

/// A stand-in broker API on `https://127.0.0.1:PORT` (its own CA): every
/// request is recorded, then answered by `handle(method, path, body)`.
/// [`FakeBroker::login`] is a password login there with the token `tok`.
pub struct FakeBroker {
    pub pki: TestPki,
    pub addr: SocketAddr,
    requests: Arc<std::sync::Mutex<Vec<ApiRequest>>>,
}

impl FakeBroker {
    pub async fn start<H>(handle: H) -> Self
    where
        H: Fn(&str, &str, &[u8]) -> (u16, String) + Send + Sync + 'static,
    {
        let pki = TestPki::new();
        let requests = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = requests.clone();
        let addr = pki
            .listen_api(move |method, path, auth, body| {
                seen.lock().unwrap().push(ApiRequest {
                    method: method.to_owned(),
                    path: path.to_owned(),
                    auth: auth.map(str::to_owned),
                    body: body.to_vec(),
                });
                handle(method, path, body)
            })
            .await;
        Self {
            pki,
            addr,
            requests,
        }
    }

    /// A password login at this broker, with the token `tok`.
    pub fn login(&self) -> crate::context::Login {
        let state = crate::state::State {
            broker: format!("https://{}", self.addr).parse().unwrap(),
            ca_pem: Some(self.pki.ca_pem()),
            user: "bob".parse().unwrap(),
            roles: vec![],
            expires_at: u64::MAX,
            token_store: crate::state::TokenStore::File,
            login: crate::state::LoginKind::Password,
        };
        crate::context::Login::new(state, mcpgate_shared::secret::Secret::new("tok".into()))
    }

    /// The requests whose path (without the query) is `path`, in order.
    pub fn requests_to(&self, path: &str) -> Vec<ApiRequest> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path.split('?').next() == Some(path))
            .cloned()
            .collect()
    }
}

/// A plain-HTTP server on 127.0.0.1 (a stand-in OpenID Provider):
/// `handle(method, path, authorization, body)` returns the status and JSON
/// body. One request per connection.
pub fn listen_http<H>(listener: TcpListener, handle: H)
where
    H: Fn(&str, &str, Option<&str>, &[u8]) -> (u16, String) + Send + Sync + 'static,
{
    let handle = Arc::new(handle);
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let handle = handle.clone();
            tokio::spawn(async move {
                let Some((method, path, auth, body)) = read_request(&mut tcp).await else {
                    return;
                };
                let (status, json) = handle(&method, &path, auth.as_deref(), &body);
                let head = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    json.len()
                );
                let _ = tcp.write_all(head.as_bytes()).await;
                let _ = tcp.write_all(json.as_bytes()).await;
                let _ = tcp.shutdown().await;
            });
        }
    });
}

/// One request a [`FakeIdp`] received: its path, form fields and
/// Authorization header.
#[derive(Debug, Clone)]
pub struct IdpRequest {
    pub path: String,
    pub form: std::collections::HashMap<String, String>,
    pub auth: Option<String>,
}

/// Signs ID tokens as a provider would (Ed25519, made by code).
pub struct IdTokenSigner {
    key: openidconnect::core::CoreEdDsaPrivateSigningKey,
}

impl IdTokenSigner {
    pub fn new() -> Self {
        let pem = KeyPair::generate_for(&rcgen::PKCS_ED25519)
            .unwrap()
            .serialize_pem();
        let key = openidconnect::core::CoreEdDsaPrivateSigningKey::from_ed25519_pem(
            &pem,
            Some(openidconnect::JsonWebKeyId::new("k1".into())),
        )
        .unwrap();
        Self { key }
    }

    /// The key set to publish.
    pub fn jwks(&self) -> String {
        use openidconnect::PrivateSigningKey;
        serde_json::to_string(&openidconnect::core::CoreJsonWebKeySet::new(vec![
            self.key.as_verification_key(),
        ]))
        .unwrap()
    }

    /// An ID token for `aud` from `issuer`, issued now, with `nonce` and
    /// the `at_hash` of `access_token` when given.
    pub fn id_token(
        &self,
        issuer: &str,
        aud: &str,
        nonce: Option<&str>,
        access_token: Option<&str>,
    ) -> String {
        let now = crate::state::now();
        let mut claims = serde_json::json!({
            "iss": issuer, "aud": aud, "sub": "alice", "exp": now + 600, "iat": now,
        });
        if let Some(nonce) = nonce {
            claims["nonce"] = nonce.into();
        }
        let claims: openidconnect::core::CoreIdTokenClaims =
            serde_json::from_value(claims).unwrap();
        let at = access_token.map(|a| openidconnect::AccessToken::new(a.into()));
        openidconnect::core::CoreIdToken::new(
            claims,
            &self.key,
            openidconnect::core::CoreJwsSigningAlgorithm::EdDsa,
            at.as_ref(),
            None,
        )
        .unwrap()
        .to_string()
    }
}

/// What a [`FakeIdp`]'s handler may use: its issuer and its signer.
pub struct IdpSide {
    pub issuer: String,
    pub signer: IdTokenSigner,
}

/// A stand-in OpenID Provider on `http://127.0.0.1:PORT`: it serves its
/// discovery document (token, device and revocation endpoints) and its
/// key set, and hands every other request to `handle(request, side)`. It
/// records all requests.
pub struct FakeIdp {
    pub issuer: String,
    pub requests: Arc<std::sync::Mutex<Vec<IdpRequest>>>,
}

impl FakeIdp {
    pub async fn start<H>(handle: H) -> Self
    where
        H: Fn(&IdpRequest, &IdpSide) -> (u16, String) + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(std::sync::Mutex::new(Vec::new()));
        let side = IdpSide {
            issuer: issuer.clone(),
            signer: IdTokenSigner::new(),
        };
        let jwks = side.signer.jwks();
        let (seen, base) = (requests.clone(), issuer.clone());
        listen_http(listener, move |_method, path, auth, body| {
            let request = IdpRequest {
                path: path.to_owned(),
                form: url::form_urlencoded::parse(body).into_owned().collect(),
                auth: auth.map(str::to_owned),
            };
            seen.lock().unwrap().push(request.clone());
            match path {
                "/.well-known/openid-configuration" => (
                    200,
                    serde_json::json!({
                        "issuer": base,
                        "authorization_endpoint": format!("{base}/auth"),
                        "token_endpoint": format!("{base}/token"),
                        "device_authorization_endpoint": format!("{base}/device/auth"),
                        "revocation_endpoint": format!("{base}/token/revocation"),
                        "jwks_uri": format!("{base}/jwks"),
                        "response_types_supported": ["code"],
                        "subject_types_supported": ["public"],
                        "id_token_signing_alg_values_supported": ["RS256", "EdDSA"],
                        "authorization_response_iss_parameter_supported": true
                    })
                    .to_string(),
                ),
                "/jwks" => (200, jwks.clone()),
                _ => handle(&request, &side),
            }
        });
        Self { issuer, requests }
    }

    /// The requests to `path`, in order.
    pub fn requests_to(&self, path: &str) -> Vec<IdpRequest> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }
}

/// Method, path, Authorization header and body of one HTTP/1.1 request.
async fn read_request<S: tokio::io::AsyncRead + Unpin>(
    tls: &mut S,
) -> Option<(String, String, Option<String>, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = tls.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, path) = (first.next()?.to_owned(), first.next()?.to_owned());
    let mut auth = None;
    let mut length = 0;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        match name.trim().to_ascii_lowercase().as_str() {
            "authorization" => auth = Some(value.trim().to_owned()),
            "content-length" => length = value.trim().parse().ok()?,
            _ => {}
        }
    }
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = tls.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some((method, path, auth, body))
}
