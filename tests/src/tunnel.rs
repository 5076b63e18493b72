//! The broker's HTTPS API and its mTLS tunnel, spoken directly from Rust.
//!
//! The CLI is honest; these helpers need not be. They send a CSR to
//! `POST /v1/sessions` like the CLI does, and then open the tunnel with
//! whatever client certificate a test wants to present (none, a foreign
//! CA's, an expired one, a used one). Both TLS stacks trust only the broker
//! CA and use rustls' ring provider.
//!
//! A refusal may show up as a failed TLS handshake, an error or EOF on the
//! first read (TLS 1.3 reports a rejected client certificate after the
//! handshake), or a `{"status":"refused"}` line; all of them are
//! [`TunnelOutcome::Refused`].

use std::sync::Arc;
use std::time::Duration;

use mcpgate_shared::api::{
    ApiError, LoginRequest, ServersResponse, SessionResponse, TokenResponse, TunnelStatus, WhoAmI,
};
use mcpgate_shared::secret::Secret;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::certs::{ClientKey, certs_from_pem};

/// How long one tunnel read or connect may take.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca_pem: &str) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    for cert in certs_from_pem(ca_pem) {
        roots.add(cert).expect("add the broker CA");
    }
    roots
}

/// A failed API call: the HTTP status and the [`ApiError`] body, if any.
#[derive(Debug, Clone)]
pub struct ApiFailure {
    pub status: u16,
    pub error: Option<ApiError>,
    pub body: String,
}

/// The broker's HTTPS API.
pub struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    pub fn new(api_url: &str, ca_pem: &str) -> Api {
        let tls = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots(ca_pem))
            .with_no_client_auth();
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(IO_TIMEOUT)
            .build()
            .expect("an HTTPS client");
        Api {
            base: api_url.trim_end_matches('/').to_owned(),
            http,
        }
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<T, ApiFailure> {
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("API request failed: {e}"));
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        if (200..300).contains(&status) {
            Ok(serde_json::from_str(&body)
                .unwrap_or_else(|e| panic!("unexpected API answer ({e}): {body}")))
        } else {
            Err(ApiFailure {
                status,
                error: serde_json::from_str(&body).ok(),
                body,
            })
        }
    }

    pub async fn login(&self, user: &str, password: &str) -> Result<TokenResponse, ApiFailure> {
        let body = LoginRequest {
            user: user.parse().expect("a user name"),
            password: Secret::new(password.to_owned()),
        };
        self.send(
            self.http
                .post(format!("{}/v1/login", self.base))
                .json(&body),
        )
        .await
    }

    /// Logs in with the test password and returns the bearer token.
    pub async fn token(&self, user: &str) -> String {
        match self.login(user, crate::PASSWORD).await {
            Ok(t) => t.token.expose().clone(),
            Err(e) => panic!("login as {user} failed: {e:?}"),
        }
    }

    pub async fn whoami(&self, token: &str) -> Result<WhoAmI, ApiFailure> {
        self.send(
            self.http
                .get(format!("{}/v1/whoami", self.base))
                .bearer_auth(token),
        )
        .await
    }

    pub async fn servers(&self, token: &str) -> Result<ServersResponse, ApiFailure> {
        self.send(
            self.http
                .get(format!("{}/v1/servers", self.base))
                .bearer_auth(token),
        )
        .await
    }

    /// `POST /v1/sessions` with this server name (as a raw string, so tests
    /// can send names the API must refuse) and CSR.
    pub async fn request_session(
        &self,
        token: &str,
        server: &str,
        csr_pem: &str,
    ) -> Result<SessionResponse, ApiFailure> {
        let body = json!({ "server": server, "csr_pem": csr_pem });
        self.send(
            self.http
                .post(format!("{}/v1/sessions", self.base))
                .bearer_auth(token)
                .json(&body),
        )
        .await
    }

    /// `GET PATH` (e.g. `/v1/approvals/ID`) with the bearer token.
    pub async fn get_json(&self, token: &str, path: &str) -> Result<Value, ApiFailure> {
        self.send(
            self.http
                .get(format!("{}{path}", self.base))
                .bearer_auth(token),
        )
        .await
    }

    /// `POST PATH` with a JSON body and the bearer token.
    pub async fn post_json(
        &self,
        token: &str,
        path: &str,
        body: &Value,
    ) -> Result<Value, ApiFailure> {
        self.send(
            self.http
                .post(format!("{}{path}", self.base))
                .bearer_auth(token)
                .json(body),
        )
        .await
    }

    /// A fresh key, a CSR for it, and the session certificate the broker
    /// signs. Panics if the broker refuses.
    pub async fn new_session(&self, token: &str, server: &str) -> Session {
        let key = ClientKey::generate();
        match self.request_session(token, server, &key.csr_pem()).await {
            Ok(response) => Session { response, key },
            Err(e) => panic!("POST /v1/sessions for {server} refused: {e:?}"),
        }
    }
}

/// A session certificate and the key it was issued for.
pub struct Session {
    pub response: SessionResponse,
    pub key: ClientKey,
}

impl Session {
    /// The certificate and key as a client would present them.
    pub fn identity(&self) -> ClientIdentity {
        ClientIdentity {
            chain: certs_from_pem(&self.response.certificate_pem),
            key: self.key.private_key_der(),
        }
    }

    /// Opens the tunnel this session is for, presenting `who` (its own
    /// certificate when `who` is [`Presented::Own`]).
    pub async fn open(&self, who: Presented) -> TunnelOutcome {
        let identity = match who {
            Presented::Own => Some(self.identity()),
            Presented::Nothing => None,
            Presented::Other(id) => Some(id),
        };
        open_tunnel(
            &self.response.tunnel_addr,
            &self.response.tunnel_server_name,
            &self.response.ca_pem,
            identity,
        )
        .await
    }

    /// Opens the tunnel with the session's own certificate and expects it
    /// to be admitted.
    pub async fn open_ready(&self) -> Tunnel {
        match self.open(Presented::Own).await {
            TunnelOutcome::Ready(t) => t,
            TunnelOutcome::Refused(how) => panic!("the session's own tunnel was refused: {how}"),
        }
    }
}

/// A client certificate chain and its key.
pub struct ClientIdentity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl ClientIdentity {
    pub fn new(cert_pem: &str, key: &ClientKey) -> ClientIdentity {
        ClientIdentity {
            chain: certs_from_pem(cert_pem),
            key: key.private_key_der(),
        }
    }
}

/// Which client certificate to present on the tunnel.
pub enum Presented {
    /// The session's own certificate.
    Own,
    /// No client certificate at all.
    Nothing,
    /// Some other certificate and key.
    Other(ClientIdentity),
}

/// How a tunnel attempt ended.
pub enum TunnelOutcome {
    /// The broker wrote `{"status":"ready",...}`.
    Ready(Tunnel),
    /// The handshake failed, the first read failed or hit EOF, or the broker
    /// wrote `{"status":"refused",...}`; the text says which.
    Refused(String),
}

impl TunnelOutcome {
    pub fn is_refused(&self) -> bool {
        matches!(self, TunnelOutcome::Refused(_))
    }

    pub fn describe(&self) -> String {
        match self {
            TunnelOutcome::Ready(t) => format!("admitted: {:?}", t.status),
            TunnelOutcome::Refused(how) => format!("refused: {how}"),
        }
    }
}

/// Connects to `addr`, verifies the broker as `server_name` against
/// `ca_pem`, presents `identity`, and reads the status line.
pub async fn open_tunnel(
    addr: &str,
    server_name: &str,
    ca_pem: &str,
    identity: Option<ClientIdentity>,
) -> TunnelOutcome {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots(ca_pem));
    let config = match identity {
        Some(id) => builder
            .with_client_auth_cert(id.chain, id.key)
            .expect("a usable client certificate"),
        None => builder.with_no_client_auth(),
    };
    let name = ServerName::try_from(server_name.to_owned())
        .unwrap_or_else(|e| panic!("tunnel server name {server_name:?}: {e}"));
    let tcp = tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(addr))
        .await
        .unwrap_or_else(|_| panic!("connect to {addr} timed out"))
        .unwrap_or_else(|e| panic!("connect to the tunnel at {addr}: {e}"));
    tcp.set_nodelay(true).ok();
    let tls = match tokio::time::timeout(
        IO_TIMEOUT,
        TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    {
        Err(_) => panic!("TLS handshake with {addr} timed out"),
        Ok(Err(e)) => return TunnelOutcome::Refused(format!("TLS handshake failed: {e}")),
        Ok(Ok(tls)) => tls,
    };
    let (r, w) = tokio::io::split(tls);
    let mut reader = BufReader::new(r);
    let mut line = String::new();
    match tokio::time::timeout(IO_TIMEOUT, reader.read_line(&mut line)).await {
        Err(_) => panic!("the broker wrote no status line within {IO_TIMEOUT:?}"),
        Ok(Err(e)) => return TunnelOutcome::Refused(format!("first read failed: {e}")),
        Ok(Ok(0)) => return TunnelOutcome::Refused("closed before a status line".into()),
        Ok(Ok(_)) => {}
    }
    let status: TunnelStatus = serde_json::from_str(line.trim_end())
        .unwrap_or_else(|e| panic!("the first tunnel line is not a TunnelStatus ({e}): {line}"));
    match status {
        TunnelStatus::Refused { reason } => {
            TunnelOutcome::Refused(format!("status refused: {reason}"))
        }
        TunnelStatus::Ready { .. } => TunnelOutcome::Ready(Tunnel {
            status,
            reader,
            writer: w,
            next_id: 1,
        }),
    }
}

/// An admitted tunnel: newline-delimited MCP both ways.
pub struct Tunnel {
    pub status: TunnelStatus,
    reader: BufReader<ReadHalf<TlsStream<TcpStream>>>,
    writer: WriteHalf<TlsStream<TcpStream>>,
    next_id: i64,
}

impl Tunnel {
    /// Sends raw bytes plus a newline (tests send malformed lines too).
    pub async fn send_raw(&mut self, line: &[u8]) -> std::io::Result<()> {
        self.writer.write_all(line).await?;
        self.writer.write_all(b"\n").await?;
        self.writer.flush().await
    }

    pub async fn send(&mut self, msg: &Value) {
        self.send_raw(msg.to_string().as_bytes())
            .await
            .expect("write to the tunnel");
    }

    /// The next message, `None` on EOF or a connection error (the text of
    /// which is dropped: the broker ended the tunnel either way). Panics
    /// past [`IO_TIMEOUT`] or on a line that is not JSON.
    pub async fn recv(&mut self) -> Option<Value> {
        self.recv_within(IO_TIMEOUT).await
    }

    pub async fn recv_within(&mut self, timeout: Duration) -> Option<Value> {
        let mut line = String::new();
        match tokio::time::timeout(timeout, self.reader.read_line(&mut line)).await {
            Err(_) => panic!("nothing from the tunnel within {timeout:?}"),
            Ok(Err(_)) | Ok(Ok(0)) => None,
            Ok(Ok(_)) => Some(
                serde_json::from_str(line.trim_end())
                    .unwrap_or_else(|e| panic!("a tunnel line that is not JSON ({e}): {line}")),
            ),
        }
    }

    /// The next message that is not a notification (server-everything, for
    /// one, sends `notifications/tools/list_changed` at its own pace).
    /// `None` on EOF.
    pub async fn recv_reply(&mut self) -> Option<Value> {
        loop {
            let msg = self.recv().await?;
            if !(msg.get("method").is_some() && msg.get("id").is_none()) {
                return Some(msg);
            }
        }
    }

    /// Like [`Tunnel::recv_reply`], but gives up after `timeout`:
    /// `Err(())` then, where [`Tunnel::recv`] would panic.
    pub async fn try_recv_reply_within(&mut self, timeout: Duration) -> Result<Option<Value>, ()> {
        tokio::time::timeout(timeout, self.recv_reply())
            .await
            .map_err(|_| ())
    }

    /// Reads until the response to `id`, returning it and everything that
    /// came before it. Panics on EOF.
    pub async fn recv_response(&mut self, id: &Value) -> (Value, Vec<Value>) {
        let mut before = Vec::new();
        loop {
            let msg = self.recv().await.unwrap_or_else(|| {
                panic!("the tunnel closed before the response to {id}; before it: {before:?}")
            });
            if msg.get("method").is_none() && msg.get("id") == Some(id) {
                return (msg, before);
            }
            before.push(msg);
        }
    }

    /// A fresh numeric id for this tunnel.
    pub fn next_id(&mut self) -> i64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Sends a request and returns its response.
    pub async fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id();
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        self.recv_response(&json!(id)).await.0
    }

    /// The handshake-era opening: `initialize` then `notifications/initialized`.
    pub async fn initialize(&mut self) -> Value {
        let resp = self
            .request(
                "initialize",
                json!({
                    "protocolVersion": mcpgate_shared::mcp::LATEST_HANDSHAKE_VERSION,
                    "capabilities": {},
                    "clientInfo": {"name": "mcpgate-e2e-raw", "version": "0"}
                }),
            )
            .await;
        assert!(resp.get("result").is_some(), "initialize failed: {resp}");
        self.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        resp
    }

    /// `tools/call NAME ARGS`; the whole response.
    pub async fn call_tool(&mut self, name: &str, arguments: Value) -> Value {
        self.request("tools/call", json!({"name": name, "arguments": arguments}))
            .await
    }

    /// Closes our side of the tunnel (TLS close_notify, then FIN).
    pub async fn close(mut self) {
        let _ = self.writer.shutdown().await;
    }
}

/// Text of every `content[].text` of a `tools/call` response.
pub fn tool_text(resp: &Value) -> String {
    resp["result"]["content"]
        .as_array()
        .map(|c| {
            c.iter()
                .filter_map(|b| b["text"].as_str())
                .collect::<Vec<_>>()
                .join("")
        })
        .unwrap_or_default()
}
