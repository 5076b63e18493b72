//! The broker's HTTPS API (`mcpgate_shared::api`), as typed calls.
//!
//! The client trusts exactly one set of roots: the CA given at login (kept
//! in the state file) or, without one, the system's roots (via
//! `rustls-native-certs`). It never follows redirects, so the bearer token
//! is only ever sent to the broker URL the user typed.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use mcpgate_shared::api::{
    AuthMethods, LoginRequest, ServersResponse, SessionRequest, SessionResponse, TokenResponse,
    WhoAmI,
};
use mcpgate_shared::approval::{
    AccessRequest, Approval, ApprovalList, ApprovalQuery, DecisionRequest, GrantList,
};
use mcpgate_shared::names::SessionId;
use mcpgate_shared::record::{
    ExportQuery, RecordsQuery, ReplayQuery, ReportQuery, SessionSummary, VerifyReport,
};
use mcpgate_shared::secret::Secret;
use reqwest::{Method, Url};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::approvals::ApprovalId;
use crate::error::{self, ApiCall, Error};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Session set-up may wait for the broker to sign a certificate; still, a
/// person is watching a spinner, so give up eventually.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// A long poll is answered after at most its `wait_secs`; this much more
/// covers the broker's work and the network before giving up on it.
const LONG_POLL_SLACK: Duration = Duration::from_secs(15);
/// Reading a whole record, verifying all records for a report: bigger
/// work than a usual call.
const RECORD_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// A followed session or an export streams for as long as it takes; this
/// only stops a stream that never ends.
const STREAM_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

/// The broker's base URL: `https`, a host, no credentials, query or
/// fragment. Displayed without a trailing slash.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BrokerUrl(Url);

impl FromStr for BrokerUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut url = Url::parse(s.trim()).map_err(|e| format!("invalid broker URL {s:?}: {e}"))?;
        if url.scheme() != "https" {
            return Err(format!(
                "invalid broker URL {s:?}: it must start with https:// (the token must not travel in clear)"
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(format!("invalid broker URL {s:?}: no host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!(
                "invalid broker URL {s:?}: it must not carry a user name or password"
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(format!(
                "invalid broker URL {s:?}: it must not have a query or fragment"
            ));
        }
        // API paths are joined relative to the base, which needs a trailing
        // slash to keep a path prefix (`https://host/gate/` + `v1/login`).
        if !url.path().ends_with('/') {
            let path = format!("{}/", url.path());
            url.set_path(&path);
        }
        Ok(Self(url))
    }
}

impl TryFrom<String> for BrokerUrl {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<BrokerUrl> for String {
    fn from(url: BrokerUrl) -> String {
        url.to_string()
    }
}

impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str().trim_end_matches('/'))
    }
}

impl fmt::Debug for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl BrokerUrl {
    fn endpoint(&self, path: &str) -> Url {
        // Invariant: `self.0` is an absolute https URL ending in '/', and
        // `path` is one of this module's relative constants, possibly with
        // a validated name (`ApprovalId`: `apr_` and hex digits;
        // `SessionId`: letters, digits and `-`) appended.
        self.0
            .join(path)
            .expect("relative API path joins onto the base URL")
    }

    /// Whether the broker is on this machine; such a broker is never reached
    /// through an HTTP(S)_PROXY.
    fn is_loopback(&self) -> bool {
        crate::oidc::is_loopback(&self.0)
    }
}

/// A client for one broker, with or without the caller's token.
pub struct ApiClient {
    http: reqwest::Client,
    broker: BrokerUrl,
    token: Option<Secret<String>>,
    /// The `mcpgate login ...` line to suggest when the token is refused.
    relogin: Option<String>,
}

impl ApiClient {
    /// A client that trusts `ca_pem` (PEM, one or more CA certificates) or,
    /// without it, the system's root certificates.
    pub fn new(broker: &BrokerUrl, ca_pem: Option<&str>) -> Result<Self, Error> {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .https_only(true)
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("mcpgate/", env!("CARGO_PKG_VERSION")));
        if broker.is_loopback() {
            builder = builder.no_proxy();
        }
        for der in trust_anchors(ca_pem)? {
            let cert = reqwest::Certificate::from_der(der.as_ref())
                .map_err(|e| Error::internal("cannot load a CA certificate", error::chain(&e)))?;
            builder = builder.add_root_certificate(cert);
        }
        let http = builder
            .build()
            .map_err(|e| Error::internal("cannot set up the HTTPS client", error::chain(&e)))?;
        Ok(Self {
            http,
            broker: broker.clone(),
            token: None,
            relogin: None,
        })
    }

    /// Sends `token` with every call; `relogin` is the command suggested when
    /// the broker refuses it.
    pub fn with_token(mut self, token: Secret<String>, relogin: String) -> Self {
        self.token = Some(token);
        self.relogin = Some(relogin);
        self
    }

    /// A copy of this client that sends `token` (the HTTP client and its
    /// connection pool are shared).
    pub fn clone_with_token(&self, token: Secret<String>, relogin: String) -> Self {
        Self {
            http: self.http.clone(),
            broker: self.broker.clone(),
            token: None,
            relogin: None,
        }
        .with_token(token, relogin)
    }

    /// `GET /v1/auth`: how to log in here. A broker from before OpenID
    /// Connect has no such endpoint (404): it takes passwords only.
    pub async fn auth_methods(&self) -> Result<AuthMethods, Error> {
        match self
            .call(Method::GET, "v1/auth", None::<&()>, ApiCall::Login)
            .await
        {
            Err(Error::Broker(message)) if message.contains("HTTP 404") => {
                tracing::debug!("the broker has no /v1/auth; assuming passwords only");
                Ok(AuthMethods {
                    password: true,
                    oidc: Vec::new(),
                })
            }
            other => other,
        }
    }

    /// `POST /v1/login`.
    pub async fn login(&self, request: &LoginRequest) -> Result<TokenResponse, Error> {
        self.call(Method::POST, "v1/login", Some(request), ApiCall::Login)
            .await
    }

    /// `GET /v1/whoami`.
    pub async fn whoami(&self) -> Result<WhoAmI, Error> {
        self.call(
            Method::GET,
            "v1/whoami",
            None::<&()>,
            ApiCall::Authenticated,
        )
        .await
    }

    /// `GET /v1/servers`.
    pub async fn servers(&self) -> Result<ServersResponse, Error> {
        self.call(
            Method::GET,
            "v1/servers",
            None::<&()>,
            ApiCall::Authenticated,
        )
        .await
    }

    /// `POST /v1/sessions`.
    pub async fn create_session(&self, request: &SessionRequest) -> Result<SessionResponse, Error> {
        self.call(
            Method::POST,
            "v1/sessions",
            Some(request),
            ApiCall::Session(&request.server),
        )
        .await
    }

    /// `GET /v1/approvals`. With `after_version`, a long poll: the broker
    /// answers when the list changes or after `wait_secs`.
    pub async fn approvals(&self, query: &ApprovalQuery) -> Result<ApprovalList, Error> {
        let wait = query
            .after_version
            .and(query.wait_secs)
            .map(|secs| Duration::from_secs(secs) + LONG_POLL_SLACK);
        self.request(
            Method::GET,
            "v1/approvals",
            Some(query),
            None::<&()>,
            ApiCall::Approvals,
            wait,
        )
        .await
    }

    /// `GET /v1/approvals/{id}`.
    pub async fn approval(&self, id: &ApprovalId) -> Result<Approval, Error> {
        self.request(
            Method::GET,
            &format!("v1/approvals/{id}"),
            None::<&()>,
            None::<&()>,
            ApiCall::Approval(id.as_str()),
            None,
        )
        .await
    }

    /// `POST /v1/approvals/{id}/decision`.
    pub async fn decide(
        &self,
        id: &ApprovalId,
        decision: &DecisionRequest,
    ) -> Result<Approval, Error> {
        self.request(
            Method::POST,
            &format!("v1/approvals/{id}/decision"),
            None::<&()>,
            Some(decision),
            ApiCall::Approval(id.as_str()),
            None,
        )
        .await
    }

    /// `POST /v1/access-requests`.
    pub async fn request_access(&self, request: &AccessRequest) -> Result<Approval, Error> {
        self.call(
            Method::POST,
            "v1/access-requests",
            Some(request),
            ApiCall::AccessRequest(&request.server),
        )
        .await
    }

    /// `GET /v1/access-grants`.
    pub async fn grants(&self) -> Result<GrantList, Error> {
        self.call(
            Method::GET,
            "v1/access-grants",
            None::<&()>,
            ApiCall::Approvals,
        )
        .await
    }

    /// `GET /v1/records`: recorded sessions, newest first.
    pub async fn records(&self, query: &RecordsQuery) -> Result<Vec<SessionSummary>, Error> {
        self.request(
            Method::GET,
            "v1/records",
            Some(query),
            None::<&()>,
            ApiCall::Records,
            Some(RECORD_TIMEOUT),
        )
        .await
    }

    /// `GET /v1/records/{session}`: the answer, whose body is NDJSON
    /// events (read it with [`reqwest::Response::chunk`]). With `follow`,
    /// it lasts until the session's seal.
    pub async fn record_stream(
        &self,
        session: &SessionId,
        follow: bool,
    ) -> Result<reqwest::Response, Error> {
        self.send(
            Method::GET,
            &format!("v1/records/{session}"),
            Some(&ReplayQuery { follow }),
            None::<&()>,
            ApiCall::Record(session.as_str()),
            Some(if follow {
                STREAM_TIMEOUT
            } else {
                RECORD_TIMEOUT
            }),
        )
        .await
    }

    /// `GET /v1/records/{session}/verify`.
    pub async fn verify_record(&self, session: &SessionId) -> Result<VerifyReport, Error> {
        self.request(
            Method::GET,
            &format!("v1/records/{session}/verify"),
            None::<&()>,
            None::<&()>,
            ApiCall::Record(session.as_str()),
            Some(RECORD_TIMEOUT),
        )
        .await
    }

    /// `GET /v1/audit/export`: the answer, with the event count in its
    /// `x-mcpgate-export-events` header and the rows as its body.
    pub async fn audit_export(&self, query: &ExportQuery) -> Result<reqwest::Response, Error> {
        self.send(
            Method::GET,
            "v1/audit/export",
            Some(query),
            None::<&()>,
            ApiCall::Audit,
            Some(STREAM_TIMEOUT),
        )
        .await
    }

    /// `GET /v1/audit/report`: the report's text.
    pub async fn audit_report(&self, query: &ReportQuery) -> Result<String, Error> {
        let response = self
            .send(
                Method::GET,
                "v1/audit/report",
                Some(query),
                None::<&()>,
                ApiCall::Audit,
                Some(RECORD_TIMEOUT),
            )
            .await?;
        response.text().await.map_err(|e| self.unreachable(e))
    }

    fn unreachable(&self, e: reqwest::Error) -> Error {
        Error::Unreachable {
            url: self.broker.to_string(),
            cause: error::chain(&e.without_url()),
        }
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &'static str,
        body: Option<&B>,
        call: ApiCall<'_>,
    ) -> Result<T, Error> {
        self.request(method, path, None::<&()>, body, call, None)
            .await
    }

    /// One API call with a JSON answer; see [`ApiClient::send`].
    async fn request<Q: Serialize, B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: Option<&Q>,
        body: Option<&B>,
        call: ApiCall<'_>,
        timeout: Option<Duration>,
    ) -> Result<T, Error> {
        let response = self.send(method, path, query, body, call, timeout).await?;
        let bytes = response.bytes().await.map_err(|e| self.unreachable(e))?;
        serde_json::from_slice(&bytes).map_err(|e| {
            // The serde message may quote the body, and some bodies carry a
            // token: say where it broke, never what was there.
            Error::Broker(format!(
                "the broker's answer to /{path} is not what this CLI expects ({:?} error at line {} column {}); check that the CLI and broker versions match",
                e.classify(),
                e.line(),
                e.column()
            ))
        })
    }

    /// One API call, up to a successful answer whose body is not read
    /// yet; an error answer is read and mapped. `path` is relative to the
    /// broker URL and made of this module's constants and validated names
    /// only; `timeout` replaces the usual one (long polls, streams).
    #[tracing::instrument(level = "debug", skip_all, fields(path))]
    async fn send<Q: Serialize, B: Serialize>(
        &self,
        method: Method,
        path: &str,
        query: Option<&Q>,
        body: Option<&B>,
        call: ApiCall<'_>,
        timeout: Option<Duration>,
    ) -> Result<reqwest::Response, Error> {
        let url = self.broker.endpoint(path);
        let mut request = self.http.request(method, url);
        if let Some(query) = query {
            request = request.query(query);
        }
        if let Some(timeout) = timeout {
            request = request.timeout(timeout);
        }
        if let Some(token) = &self.token {
            // reqwest marks the Authorization header sensitive, so even its
            // own debug output will not show the token.
            request = request.bearer_auth(token.expose());
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| self.unreachable(e))?;
        let status = response.status();
        tracing::debug!(path, status = status.as_u16(), "broker answered");
        if !status.is_success() {
            let bytes = response.bytes().await.map_err(|e| self.unreachable(e))?;
            return Err(error::from_api(
                status.as_u16(),
                &bytes,
                call,
                self.relogin.clone(),
            ));
        }
        Ok(response)
    }
}

/// The DER certificates to trust: the given CA, or the system's roots.
fn trust_anchors(
    ca_pem: Option<&str>,
) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, Error> {
    if let Some(pem) = ca_pem {
        return crate::tls::certificates(pem).map_err(|e| Error::Local {
            what: "the stored broker CA certificate is unusable".into(),
            cause: e,
            hint: "log in again with --ca-cert FILE",
        });
    }
    let usable = system_roots();
    if usable.is_empty() {
        return Err(Error::Usage(
            "no CA certificates found on this system to check the broker with; pass --ca-cert FILE to mcpgate login".into(),
        ));
    }
    Ok(usable)
}

/// The system's root certificates that rustls accepts as trust anchors
/// (one odd certificate in the system store must not make every request
/// fail); empty when there are none.
pub fn system_roots() -> Vec<rustls_pki_types::CertificateDer<'static>> {
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::debug!(error = %e, "skipping part of the system trust store");
    }
    found
        .certs
        .into_iter()
        .filter(|c| rustls::RootCertStore::empty().add(c.clone()).is_ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls_are_https_and_normalised() {
        let u: BrokerUrl = "https://127.0.0.1:8443".parse().unwrap();
        assert_eq!(u.to_string(), "https://127.0.0.1:8443");
        assert_eq!(
            u.endpoint("v1/login").as_str(),
            "https://127.0.0.1:8443/v1/login"
        );
        assert!(u.is_loopback());
        let u: BrokerUrl = "https://gate.example.com/mcp/".parse().unwrap();
        assert_eq!(u.to_string(), "https://gate.example.com/mcp");
        assert_eq!(
            u.endpoint("v1/servers").as_str(),
            "https://gate.example.com/mcp/v1/servers"
        );
        assert!(!u.is_loopback());
        let u: BrokerUrl = "https://gate.example.com/mcp".parse().unwrap();
        assert_eq!(
            u.endpoint("v1/servers").as_str(),
            "https://gate.example.com/mcp/v1/servers"
        );
        for bad in [
            "http://127.0.0.1:8443",
            "127.0.0.1:8443",
            "https://user:pw@host",
            "https://host/?x=1",
            "https://host/#f",
            "not a url",
        ] {
            assert!(bad.parse::<BrokerUrl>().is_err(), "{bad}");
        }
    }

    #[test]
    fn broker_url_round_trips_through_json() {
        let u: BrokerUrl = "https://[::1]:8443".parse().unwrap();
        assert!(u.is_loopback());
        let json = serde_json::to_string(&u).unwrap();
        assert_eq!(json, r#""https://[::1]:8443""#);
        assert_eq!(serde_json::from_str::<BrokerUrl>(&json).unwrap(), u);
    }

    mod over_https {
        use mcpgate_shared::api::LoginRequest;
        use mcpgate_shared::secret::Secret;

        use super::super::*;
        use crate::error::exit;
        use crate::testing::TestPki;

        fn url(addr: std::net::SocketAddr) -> BrokerUrl {
            format!("https://{addr}").parse().unwrap()
        }

        #[tokio::test]
        async fn login_whoami_and_servers_with_the_given_ca() {
            let pki = TestPki::new();
            let addr = pki
                .listen_api(|method, path, auth, body| match (method, path) {
                    ("POST", "/v1/login") => {
                        let req: serde_json::Value = serde_json::from_slice(body).unwrap();
                        assert_eq!(req["user"], "alice");
                        assert_eq!(req["password"], "pw");
                        assert_eq!(auth, None);
                        (200, r#"{"token":"tok-1","expires_at":4102444800,"user":"alice","roles":["dev"]}"#.into())
                    }
                    ("GET", "/v1/whoami") if auth == Some("Bearer tok-1") => (
                        200,
                        r#"{"user":"alice","roles":["dev"],"issuer":"local","expires_at":4102444800}"#.into(),
                    ),
                    ("GET", "/v1/servers") if auth == Some("Bearer tok-1") => (
                        200,
                        r#"{"servers":[{"name":"demo","transport":"stdio","description":"Demo"}]}"#.into(),
                    ),
                    _ => (401, r#"{"error":"unauthenticated","message":"no token"}"#.into()),
                })
                .await;
            let client = ApiClient::new(&url(addr), Some(&pki.ca_pem())).unwrap();
            let token = client
                .login(&LoginRequest {
                    user: "alice".parse().unwrap(),
                    password: Secret::new("pw".into()),
                })
                .await
                .unwrap();
            assert_eq!(token.expires_at, 4102444800);
            // Without the token the broker says no.
            assert_eq!(
                client.whoami().await.unwrap_err().exit_code(),
                exit::TOKEN_REJECTED
            );
            let client = client.with_token(token.token, "mcpgate login ...".into());
            assert_eq!(client.whoami().await.unwrap().issuer, "local");
            let servers = client.servers().await.unwrap();
            assert_eq!(servers.servers[0].name.as_str(), "demo");
        }

        #[tokio::test]
        async fn auth_methods_and_a_broker_from_before_oidc() {
            let pki = TestPki::new();
            let addr = pki
                .listen_api(|_, _, auth, _| {
                    assert_eq!(auth, None);
                    (
                        200,
                        r#"{"password":true,"oidc":[{"name":"corp","issuer":"https://idp","client_id":"cli","scopes":["openid"]}]}"#
                            .into(),
                    )
                })
                .await;
            let client = ApiClient::new(&url(addr), Some(&pki.ca_pem())).unwrap();
            let methods = client.auth_methods().await.unwrap();
            assert_eq!(methods.oidc[0].name, "corp");
            assert_eq!(methods.oidc[0].resource, None);

            // No /v1/auth at all (an older broker): passwords only.
            let addr = pki.listen_api(|_, _, _, _| (404, String::new())).await;
            let client = ApiClient::new(&url(addr), Some(&pki.ca_pem())).unwrap();
            let methods = client.auth_methods().await.unwrap();
            assert!(methods.password && methods.oidc.is_empty());
        }

        #[tokio::test]
        async fn a_broker_signed_by_another_ca_is_unreachable_with_the_cause() {
            let pki = TestPki::new();
            let addr = pki.listen_api(|_, _, _, _| (200, "{}".into())).await;
            let client = ApiClient::new(&url(addr), Some(&TestPki::new().ca_pem())).unwrap();
            let err = client.servers().await.unwrap_err();
            assert_eq!(err.exit_code(), exit::UNREACHABLE);
            let line = err.report();
            assert!(line.contains(&addr.to_string()), "{line}");
            assert!(line.to_lowercase().contains("certificate"), "{line}");
            assert!(line.contains("--ca-cert FILE"), "{line}");
        }

        #[tokio::test]
        async fn a_closed_port_is_unreachable() {
            let port = {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                l.local_addr().unwrap()
            };
            let client = ApiClient::new(&url(port), Some(&TestPki::new().ca_pem())).unwrap();
            let err = client.servers().await.unwrap_err();
            assert_eq!(err.exit_code(), exit::UNREACHABLE);
            assert!(
                err.report().contains(&format!("https://{port}")),
                "{}",
                err.report()
            );
        }

        #[tokio::test]
        async fn rate_limits_and_garbage_answers_are_told_apart() {
            let pki = TestPki::new();
            let addr = pki
                .listen_api(|_, path, _, _| match path {
                    "/v1/login" => (
                        429,
                        r#"{"error":"rate_limited","message":"retry in 60s"}"#.into(),
                    ),
                    _ => (
                        200,
                        r#"{"token":"tok-secret-value","expires_at":"soon"}"#.into(),
                    ),
                })
                .await;
            let client = ApiClient::new(&url(addr), Some(&pki.ca_pem())).unwrap();
            let login = LoginRequest {
                user: "alice".parse().unwrap(),
                password: Secret::new("pw".into()),
            };
            let err = client.login(&login).await.unwrap_err();
            assert_eq!(err.exit_code(), exit::RATE_LIMITED);
            assert!(err.report().contains("retry in 60s"));
            // A malformed success body: reported without quoting it.
            let err = client.servers().await.unwrap_err();
            assert_eq!(err.exit_code(), exit::OTHER);
            assert!(!format!("{err} {err:?}").contains("tok-secret-value"));
        }
    }
}
