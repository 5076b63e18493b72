//! A real OpenID Provider on 127.0.0.1 — npm `oidc-provider`, run by
//! `tests/peers/oidc-provider.mjs` — and a headless browser that drives it.
//!
//! [`IdpBuilder::start`] writes the provider's `config.json` (accounts,
//! clients, the resource indicator, lifetimes; the format is documented at the
//! top of the script) into a temp dir, runs `node oidc-provider.mjs
//! config.json` and waits for its one ready line `{"issuer":...}`. Its stderr
//! goes to `idp.log` beside the config. The node process exits by itself when
//! its stdin closes, so a test killed outright leaves nothing running; a
//! dropped [`Idp`] kills it.
//!
//! The browser side ([`Idp::browser_login`], [`Idp::approve_device`]) follows
//! redirects by hand with a fresh cookie jar per call, logs in as the account
//! it is given and grants consent through the script's `/interaction/*`
//! routes; test-only `/test/*` routes change accounts, rotate the signing key
//! and hand out the current private key (to forge tokens the IdP's real key
//! signed).
//!
//! Every helper here is synchronous: it runs its HTTP on a thread of its own
//! with its own tokio runtime, so it works from a plain `#[test]` and from a
//! `#[tokio::test]` alike — blocking the calling thread meanwhile, so a test's
//! own tasks on a current-thread runtime wait for it.

use std::fs::File;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use regex::Regex;
use reqwest::redirect::Policy;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tempfile::TempDir;
use url::Url;

use crate::paths::{Peers, tests_dir};

/// How long node gets to print its ready line.
const STARTUP: Duration = Duration::from_secs(30);
/// How long one HTTP exchange with the IdP (or a loopback redirect) may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// How many redirects and interaction steps one browser run may take.
const MAX_HOPS: usize = 20;

/// The resource indicator access tokens are issued for unless the builder
/// names another.
pub const DEFAULT_RESOURCE: &str = "urn:mcpgate-broker";
/// The redirect URI registered for public (native) clients: oidc-provider
/// lets a native client's loopback redirect use any port.
pub const LOOPBACK_REDIRECT: &str = "http://127.0.0.1/callback";

/// The CONFIG.json key for a client's extra access-token claims (stripped
/// before the metadata reaches oidc-provider).
const TOKEN_CLAIMS_KEY: &str = "x_token_claims";

/// What the IdP under test is configured with.
#[must_use]
pub struct IdpBuilder {
    accounts: Map<String, Value>,
    clients: Vec<Value>,
    resource: String,
    resource_scope: Option<String>,
    ttl: Map<String, Value>,
    device_interval: Option<u64>,
}

impl Default for IdpBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl IdpBuilder {
    pub fn new() -> Self {
        Self {
            accounts: Map::new(),
            clients: Vec::new(),
            resource: DEFAULT_RESOURCE.into(),
            resource_scope: None,
            ttl: Map::new(),
            device_interval: None,
        }
    }

    /// An account that can log in; `id` is its `sub`.
    pub fn account(mut self, id: &str, email: &str, groups: &[&str]) -> Self {
        self.accounts.insert(id.into(), account_json(email, groups));
        self
    }

    /// A public native client, as `mcpgate login` is: no secret, PKCE,
    /// authorization code + refresh token + device code grants, redirect
    /// [`LOOPBACK_REDIRECT`] on any port.
    pub fn public_client(self, client_id: &str) -> Self {
        self.client(json!({
            "client_id": client_id,
            "token_endpoint_auth_method": "none",
            "application_type": "native",
            "grant_types": [
                "authorization_code",
                "refresh_token",
                "urn:ietf:params:oauth:grant-type:device_code",
            ],
            "response_types": ["code"],
            "redirect_uris": [LOOPBACK_REDIRECT],
        }))
    }

    /// A confidential client for the client-credentials grant
    /// (`client_secret_basic`, as [`Idp::client_credentials`] authenticates),
    /// whose access tokens carry `token_claims` (a JSON object, e.g.
    /// `{"repository": "acme/app", "ref": "refs/heads/main"}`), set over the
    /// standard claims: a `sub` replaces the default, the client id.
    pub fn confidential_client(self, client_id: &str, secret: &str, token_claims: Value) -> Self {
        assert!(
            token_claims.is_object(),
            "token claims must be a JSON object"
        );
        self.client(json!({
            "client_id": client_id,
            "client_secret": secret,
            "token_endpoint_auth_method": "client_secret_basic",
            "grant_types": ["client_credentials"],
            "response_types": [],
            "redirect_uris": [],
            TOKEN_CLAIMS_KEY: token_claims,
        }))
    }

    /// Any client: oidc-provider client metadata, plus `x_token_claims` for
    /// extra client-credentials token claims.
    pub fn client(mut self, metadata: Value) -> Self {
        self.clients.push(metadata);
        self
    }

    /// The resource indicator (an absolute URI): the `aud` of every access
    /// token, and the default when a request names none.
    pub fn resource(mut self, resource: &str) -> Self {
        self.resource = resource.into();
        self
    }

    /// The scopes the resource server knows, space-separated (default `mcp`);
    /// only these reach an access token's `scope`.
    pub fn resource_scope(mut self, scope: &str) -> Self {
        self.resource_scope = Some(scope.into());
        self
    }

    /// Access token lifetime (client credentials too), in seconds.
    pub fn access_token_ttl(self, secs: u64) -> Self {
        self.ttl("AccessToken", secs)
    }

    pub fn id_token_ttl(self, secs: u64) -> Self {
        self.ttl("IdToken", secs)
    }

    pub fn refresh_token_ttl(self, secs: u64) -> Self {
        self.ttl("RefreshToken", secs)
    }

    pub fn device_code_ttl(self, secs: u64) -> Self {
        self.ttl("DeviceCode", secs)
    }

    fn ttl(mut self, name: &str, secs: u64) -> Self {
        self.ttl.insert(name.into(), secs.into());
        self
    }

    /// The `interval` the device authorization response names (default 1 s).
    pub fn device_interval(mut self, secs: u64) -> Self {
        self.device_interval = Some(secs);
        self
    }

    fn config(&self) -> Value {
        let mut config = json!({
            "accounts": self.accounts,
            "clients": self.clients,
            "resource": self.resource,
            "ttl": self.ttl,
        });
        if let Some(scope) = &self.resource_scope {
            config["resource_scope"] = scope.as_str().into();
        }
        if let Some(secs) = self.device_interval {
            config["device_interval"] = secs.into();
        }
        config
    }

    /// Writes the config and starts the provider.
    pub fn start(self) -> Idp {
        let peers = Peers::get();
        let source = tests_dir().join("peers").join("oidc-provider.mjs");
        let copy = std::fs::read(&peers.oidc_provider).unwrap_or_default();
        assert!(
            std::fs::read(&source).is_ok_and(|s| s == copy),
            "{} differs from {}: run tests/setup-peers",
            peers.oidc_provider.display(),
            source.display()
        );

        let dir = tempfile::Builder::new()
            .prefix("mcpgate-idp-")
            .tempdir()
            .expect("temp dir");
        let config = dir.path().join("config.json");
        let text = serde_json::to_string_pretty(&self.config()).expect("config JSON");
        std::fs::write(&config, text).expect("write the IdP config");
        let log_path = dir.path().join("idp.log");
        let log = File::create(&log_path).expect("create idp.log");

        let mut child = Command::new(&peers.node)
            .arg(&peers.oidc_provider)
            .arg(&config)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", peers.oidc_provider.display()));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(first)) = lines.next() {
                let _ = tx.send(first);
            }
            for _ in lines {}
        });

        let mut idp = Idp {
            dir,
            log_path,
            child: Some(child),
            _stdin: stdin,
            issuer: String::new(),
        };
        let deadline = Instant::now() + STARTUP;
        let line = loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(line) => break line,
                Err(RecvTimeoutError::Disconnected | RecvTimeoutError::Timeout) => {
                    let child = idp.child.as_mut().expect("the child");
                    if let Some(status) = child.try_wait().expect("try_wait") {
                        panic!(
                            "the IdP exited ({status}) before it was ready\n--- log ---\n{}",
                            idp.log()
                        );
                    }
                    assert!(
                        Instant::now() < deadline,
                        "the IdP printed no ready line within {STARTUP:?}\n--- log ---\n{}",
                        idp.log()
                    );
                }
            }
        };
        #[derive(Deserialize)]
        struct Ready {
            issuer: String,
        }
        let ready: Ready = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("the IdP's ready line is not {{\"issuer\"}}: {e}: {line}"));
        idp.issuer = ready.issuer;
        idp
    }
}

fn account_json(email: &str, groups: &[&str]) -> Value {
    json!({ "email": email, "email_verified": true, "groups": groups })
}

/// The IdP's signing key of the moment, private half included (a test IdP
/// only: tests forge tokens with it).
#[derive(Debug, Clone, Deserialize)]
pub struct SigningKey {
    pub kid: String,
    /// Always `ES256`.
    pub alg: String,
    /// PKCS#8 PEM.
    pub private_pem: String,
    /// SPKI PEM.
    pub public_pem: String,
}

impl SigningKey {
    /// A JWT signed ES256 with this key. `header` is merged over
    /// `{"alg": "ES256", "typ": "at+jwt", "kid": <this kid>}`; a field set to
    /// `null` is left out (`json!({"kid": null})`), and any field may lie
    /// (`json!({"alg": "none"})` still gets an ES256 signature).
    pub fn sign(&self, header: &Value, claims: &Value) -> String {
        let mut full = json!({ "alg": "ES256", "typ": "at+jwt", "kid": self.kid });
        let fields = header
            .as_object()
            .expect("the header must be a JSON object");
        for (k, v) in fields {
            if v.is_null() {
                full.as_object_mut().expect("an object").remove(k);
            } else {
                full[k] = v.clone();
            }
        }
        let message = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(full.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let key = EncodingKey::from_ec_pem(self.private_pem.as_bytes()).expect("an EC PEM key");
        let signature =
            jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::ES256).expect("sign");
        format!("{message}.{signature}")
    }

    /// The public half, for `jsonwebtoken::decode`.
    pub fn decoding_key(&self) -> DecodingKey {
        DecodingKey::from_ec_pem(self.public_pem.as_bytes()).expect("an EC PEM key")
    }
}

/// What the browser saw when it delivered the authorization response to the
/// client's redirect URI.
#[derive(Debug, Clone)]
pub struct BrowserOutcome {
    /// The redirect it followed (`http://127.0.0.1:PORT/callback?code=...`).
    pub redirect: Url,
    pub status: u16,
    pub body: String,
}

/// A PKCE pair (RFC 7636, S256) for tests that talk to the IdP directly.
#[derive(Debug, Clone)]
pub struct Pkce {
    pub verifier: String,
    pub challenge: String,
}

impl Pkce {
    pub fn new() -> Pkce {
        let provider = rustls::crypto::ring::default_provider();
        let mut random = [0u8; 32];
        provider
            .secure_random
            .fill(&mut random)
            .expect("random bytes");
        let verifier = URL_SAFE_NO_PAD.encode(random);
        let challenge = URL_SAFE_NO_PAD.encode(sha256(verifier.as_bytes()));
        Pkce {
            verifier,
            challenge,
        }
    }
}

impl Default for Pkce {
    fn default() -> Self {
        Self::new()
    }
}

/// SHA-256 from the crypto the tests already link (rustls' ring provider).
fn sha256(data: &[u8]) -> Vec<u8> {
    let suite = rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256
        .tls13()
        .expect("a TLS 1.3 suite");
    suite.common.hash_provider.hash(data).as_ref().to_vec()
}

/// A JWT's header and claims, decoded without any check (to look at what
/// the IdP issued, not to trust it).
pub fn decode_jwt(token: &str) -> (Value, Value) {
    let part = |i: usize| -> Value {
        let b64 = token
            .split('.')
            .nth(i)
            .unwrap_or_else(|| panic!("not a JWT: {token}"));
        let bytes = URL_SAFE_NO_PAD
            .decode(b64)
            .unwrap_or_else(|e| panic!("JWT part {i} is not base64url: {e}: {token}"));
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("JWT part {i} is not JSON: {e}: {token}"))
    };
    (part(0), part(1))
}

/// A running OpenID Provider. Killed on drop; its temp dir goes with it.
pub struct Idp {
    dir: TempDir,
    log_path: PathBuf,
    child: Option<Child>,
    /// Held open: the provider exits when it closes.
    _stdin: Option<ChildStdin>,
    issuer: String,
}

impl Idp {
    pub fn builder() -> IdpBuilder {
        IdpBuilder::new()
    }

    /// `http://127.0.0.1:PORT`, exactly as in the tokens (no trailing slash).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// `ISSUER/.well-known/openid-configuration`.
    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.issuer)
    }

    /// The IdP's folder (`config.json`, `idp.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Everything the IdP logged so far (one line per request, errors,
    /// revoked grants).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Creates or replaces an account; the next token issued for it (a
    /// refreshed one too) carries the new claims.
    pub fn set_account(&self, id: &str, email: &str, groups: &[&str]) {
        let body = account_json(email, groups);
        self.admin(
            reqwest::Method::POST,
            &format!("/test/accounts/{id}"),
            Some(body),
        );
    }

    /// Removes an account: its refresh tokens stop working.
    pub fn remove_account(&self, id: &str) {
        self.admin(
            reqwest::Method::DELETE,
            &format!("/test/accounts/{id}"),
            None,
        );
    }

    /// Makes a new ES256 key the signing key; the old ones stay in the JWKS.
    /// Sessions, grants and tokens survive. Returns the new `kid`.
    pub fn rotate_keys(&self) -> String {
        let answer = self.admin(reqwest::Method::POST, "/test/rotate", None);
        answer["kid"]
            .as_str()
            .unwrap_or_else(|| panic!("rotate answered no kid: {answer}"))
            .to_owned()
    }

    /// The current signing key, private half included.
    pub fn signing_key(&self) -> SigningKey {
        let answer = self.admin(reqwest::Method::GET, "/test/keys", None);
        serde_json::from_value(answer.clone())
            .unwrap_or_else(|e| panic!("not a signing key ({e}): {answer}"))
    }

    /// A JWT signed with the IdP's current key; see [`SigningKey::sign`].
    pub fn sign(&self, header: &Value, claims: &Value) -> String {
        self.signing_key().sign(header, claims)
    }

    /// The published JWKS (`ISSUER/jwks`).
    pub fn jwks(&self) -> Value {
        let (status, body) = self.get_json("/jwks");
        assert_eq!(status, 200, "GET /jwks: {body}");
        body
    }

    /// The discovery document.
    pub fn metadata(&self) -> Value {
        let (status, body) = self.get_json("/.well-known/openid-configuration");
        assert_eq!(status, 200, "GET discovery: {body}");
        body
    }

    /// `ISSUER/auth?PARAMS`: an authorization request URL.
    pub fn authorize_url(&self, params: &[(&str, &str)]) -> Url {
        let mut url = self.url("/auth");
        url.query_pairs_mut().extend_pairs(params);
        url
    }

    /// POSTs a form to a provider endpoint without client authentication
    /// (public clients); returns the status and the JSON answer.
    pub fn post_form(&self, path: &str, form: &[(&str, &str)]) -> (u16, Value) {
        let url = self.url(path);
        let form: Vec<(String, String)> = form
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        block_on(async move {
            let req = plain_client().post(url.clone()).form(&form);
            json_answer(&url, req).await
        })
    }

    /// A token request (`POST /token`) for a public client.
    pub fn token_request(&self, form: &[(&str, &str)]) -> (u16, Value) {
        self.post_form("/token", form)
    }

    /// The client-credentials grant with `client_secret_basic`; returns the
    /// token endpoint's JSON answer as it is (an `error` member on failure).
    pub fn client_credentials(
        &self,
        client_id: &str,
        secret: &str,
        resource: Option<&str>,
    ) -> Value {
        let url = self.url("/token");
        let mut form = vec![("grant_type", "client_credentials".to_owned())];
        if let Some(resource) = resource {
            form.push(("resource", resource.to_owned()));
        }
        let (id, secret) = (client_id.to_owned(), secret.to_owned());
        block_on(async move {
            let req = plain_client()
                .post(url.clone())
                .basic_auth(id, Some(secret))
                .form(&form);
            json_answer(&url, req).await.1
        })
    }

    /// Plays the browser: follows `authorize_url` (as the CLI printed it),
    /// logs in as `account`, grants consent, and finally GETs the client's
    /// redirect (`http://127.0.0.1:PORT/callback?code=...&state=...&iss=...`)
    /// so the waiting CLI receives it. Returns what that redirect answered.
    pub fn browser_login(&self, authorize_url: &str, account: &str) -> BrowserOutcome {
        let redirect = self.authorize_until_redirect(authorize_url, account);
        let target = redirect.clone();
        block_on(async move {
            let resp = plain_client()
                .get(target.clone())
                .send()
                .await
                .unwrap_or_else(|e| panic!("delivering the redirect to {target}: {e}"));
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap_or_default();
            BrowserOutcome {
                redirect: target,
                status,
                body,
            }
        })
    }

    /// Like [`Idp::browser_login`] but stops before delivering the redirect
    /// and returns it, so a test can tamper with `state`, `code` or `iss`.
    /// An error response (`?error=...`) is returned the same way.
    pub fn authorize_until_redirect(&self, authorize_url: &str, account: &str) -> Url {
        let start = Url::parse(authorize_url)
            .unwrap_or_else(|e| panic!("not a URL ({e}): {authorize_url}"));
        let browser = Browser::new(self.issuer_url(), account);
        block_on(async move {
            match browser.drive(Step::Get(start)).await {
                Ok(redirect) => redirect,
                Err(page) => panic!("the authorization ended on a page, not a redirect: {page}"),
            }
        })
    }

    /// Approves a device code as its user would: opens `verification_uri`,
    /// submits `user_code`, confirms it, logs in as `account` and grants
    /// consent. The device's next poll gets its tokens.
    pub fn approve_device(&self, verification_uri: &str, user_code: &str, account: &str) {
        let uri = Url::parse(verification_uri)
            .unwrap_or_else(|e| panic!("not a URL ({e}): {verification_uri}"));
        let browser = Browser::new(self.issuer_url(), account);
        let user_code = user_code.to_owned();
        block_on(async move {
            let input = browser.page(Step::Get(uri.clone())).await;
            let mut form = hidden_inputs(&input.body);
            assert!(
                form.iter().any(|(k, _)| k == "xsrf"),
                "no user code form at {uri}: {input}"
            );
            form.retain(|(k, _)| k == "xsrf");
            form.push(("user_code".into(), user_code));
            let confirm = browser.page(Step::Post(uri.clone(), form)).await;
            let form = hidden_inputs(&confirm.body);
            assert!(
                form.iter().any(|(k, v)| k == "confirm" && v == "yes"),
                "the user code was not taken: {confirm}"
            );
            match browser.drive(Step::Post(uri, form)).await {
                Ok(redirect) => panic!("the device approval redirected away to {redirect}"),
                Err(done) => assert!(
                    done.status == 200 && done.body.contains("Sign-in Success"),
                    "the device approval did not succeed: {done}"
                ),
            }
        });
    }

    fn issuer_url(&self) -> Url {
        Url::parse(&self.issuer).expect("the issuer is a URL")
    }

    fn url(&self, path: &str) -> Url {
        Url::parse(&format!("{}{path}", self.issuer)).expect("an IdP URL")
    }

    fn get_json(&self, path: &str) -> (u16, Value) {
        let url = self.url(path);
        block_on(async move {
            let req = plain_client().get(url.clone());
            json_answer(&url, req).await
        })
    }

    fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = self.url(path);
        let (status, answer) = block_on(async move {
            let mut req = plain_client().request(method, url.clone());
            if let Some(body) = body {
                req = req.json(&body);
            }
            json_answer(&url, req).await
        });
        assert_eq!(status, 200, "{path}: {answer}\n--- log ---\n{}", self.log());
        answer
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if thread::panicking() {
            eprintln!(
                "--- IdP log ({}) ---\n{}",
                self.log_path.display(),
                self.log()
            );
        }
    }
}

/// Runs `fut` to completion on a thread of its own with its own runtime:
/// callable from sync code and from inside another runtime alike. A panic
/// in `fut` is the caller's panic.
fn block_on<F>(fut: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime")
                .block_on(fut)
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

fn plain_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .timeout(HTTP_TIMEOUT)
        .build()
        .expect("an HTTP client")
}

async fn json_answer(url: &Url, req: reqwest::RequestBuilder) -> (u16, Value) {
    let resp = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    let value = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("{url} answered {status}, not JSON ({e}): {body}"));
    (status, value)
}

/// The `<input type="hidden">` fields of oidc-provider's device forms.
fn hidden_inputs(html: &str) -> Vec<(String, String)> {
    let re = Regex::new(r#"<input type="hidden" name="([^"]*)" value="([^"]*)"\s*/?>"#)
        .expect("a regex");
    re.captures_iter(html)
        .map(|c| (unescape_html(&c[1]), unescape_html(&c[2])))
        .collect()
}

/// Undoes oidc-provider's `htmlSafe` escaping.
fn unescape_html(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

enum Step {
    Get(Url),
    Post(Url, Vec<(String, String)>),
}

/// A response that is neither a redirect nor an interaction step.
struct Page {
    url: Url,
    status: u16,
    body: String,
}

impl std::fmt::Display for Page {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} answered {}: {}", self.url, self.status, self.body)
    }
}

/// One user agent: a cookie jar, redirects followed by hand.
struct Browser {
    http: reqwest::Client,
    issuer: Url,
    account: String,
}

impl Browser {
    fn new(issuer: Url, account: &str) -> Browser {
        let http = reqwest::Client::builder()
            .cookie_store(true)
            .redirect(Policy::none())
            .timeout(HTTP_TIMEOUT)
            .build()
            .expect("an HTTP client");
        Browser {
            http,
            issuer,
            account: account.into(),
        }
    }

    async fn send(&self, step: &Step) -> (Url, reqwest::Response) {
        let (url, req) = match step {
            Step::Get(url) => (url, self.http.get(url.clone())),
            Step::Post(url, form) => (url, self.http.post(url.clone()).form(form)),
        };
        let resp = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
        (url.clone(), resp)
    }

    /// One request, expecting a page (200).
    async fn page(&self, step: Step) -> Page {
        let (url, resp) = self.send(&step).await;
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        let page = Page { url, status, body };
        assert_eq!(page.status, 200, "expected a page: {page}");
        page
    }

    /// Follows redirects within the issuer and answers its login and consent
    /// interactions, until a redirect leaves the issuer (`Ok`, not followed)
    /// or a response is neither (`Err`).
    async fn drive(&self, first: Step) -> Result<Url, Page> {
        let mut step = first;
        for _ in 0..MAX_HOPS {
            let (url, resp) = self.send(&step).await;
            let status = resp.status();
            if status.is_redirection() {
                let location = resp
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_else(|| panic!("{url} redirected ({status}) without a Location"));
                let next = url
                    .join(location)
                    .unwrap_or_else(|e| panic!("{url} redirected to a bad URL ({e}): {location}"));
                if next.origin() != self.issuer.origin() {
                    return Ok(next);
                }
                step = Step::Get(next);
                continue;
            }
            let is_interaction =
                matches!(step, Step::Get(_)) && url.path().starts_with("/interaction/");
            let body = resp.text().await.unwrap_or_default();
            if !(is_interaction && status.is_success()) {
                return Err(Page {
                    url,
                    status: status.as_u16(),
                    body,
                });
            }
            let details: Value = serde_json::from_str(&body)
                .unwrap_or_else(|e| panic!("{url}: interaction details not JSON ({e}): {body}"));
            // The script's routes are named after the prompt they answer.
            let (action, form) = match details["prompt"].as_str() {
                Some("login") => ("login", vec![("account".to_owned(), self.account.clone())]),
                Some("consent") => ("consent", Vec::new()),
                _ => panic!("{url}: an interaction this browser cannot do: {details}"),
            };
            let mut post = url.clone();
            post.path_segments_mut().expect("an http URL").push(action);
            step = Step::Post(post, form);
        }
        panic!("more than {MAX_HOPS} redirects and interaction steps");
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::mpsc::Receiver;

    use jsonwebtoken::Validation;

    use super::*;
    use crate::process::wait_until;

    const CLI: &str = "mcpgate-cli";
    const CI: &str = "ci-runner";
    const CI_SECRET: &str = "ci-secret";
    /// A CI platform's issuer, GitHub Actions style.
    const GHA: &str = "gha";
    const SCOPE: &str = "openid email groups offline_access";

    fn idp() -> Idp {
        Idp::builder()
            .account("alice", "alice@example.com", &["eng", "ops"])
            .public_client(CLI)
            .confidential_client(
                CI,
                CI_SECRET,
                json!({"repository": "acme/app", "ref": "refs/heads/main"}),
            )
            .confidential_client(
                GHA,
                CI_SECRET,
                json!({"sub": "repo:acme/app:ref:refs/heads/main", "repository": "acme/app"}),
            )
            .access_token_ttl(600)
            .start()
    }

    /// Stands in for the CLI's loopback listener: answers one request with
    /// 200 and hands over its request target.
    struct Loopback {
        port: u16,
        target: Receiver<String>,
    }

    impl Loopback {
        fn start() -> Loopback {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
            let port = listener.local_addr().expect("local addr").port();
            let (tx, target) = mpsc::channel();
            thread::spawn(move || {
                let Ok((mut stream, _)) = listener.accept() else {
                    return;
                };
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head);
                let target = head.split(' ').nth(1).unwrap_or_default().to_owned();
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\nconnection: close\r\n\r\nlogged in",
                );
                let _ = tx.send(target);
            });
            Loopback { port, target }
        }

        fn redirect_uri(&self) -> String {
            format!("http://127.0.0.1:{}/callback", self.port)
        }
    }

    /// `resource=urn:mcpgate-broker` when a request names it; none when the
    /// IdP's default must apply.
    fn resource_param(name_it: bool) -> Option<(&'static str, &'static str)> {
        name_it.then_some(("resource", DEFAULT_RESOURCE))
    }

    /// An authorization-code + PKCE login as alice through the harness's
    /// browser; returns the token response.
    fn login(idp: &Idp, name_resource: bool) -> Value {
        let loopback = Loopback::start();
        let redirect_uri = loopback.redirect_uri();
        let pkce = Pkce::new();
        let mut params = vec![
            ("client_id", CLI),
            ("response_type", "code"),
            ("redirect_uri", &redirect_uri),
            ("scope", SCOPE),
            ("state", "st4te"),
            ("code_challenge", &pkce.challenge),
            ("code_challenge_method", "S256"),
            ("prompt", "consent"),
        ];
        params.extend(resource_param(name_resource));
        let url = idp.authorize_url(&params);
        let outcome = idp.browser_login(url.as_str(), "alice");
        assert_eq!(outcome.status, 200, "{outcome:?}");
        assert_eq!(outcome.body, "logged in");
        let target = loopback
            .target
            .recv_timeout(HTTP_TIMEOUT)
            .expect("the loopback got the redirect");
        let got = Url::parse(&format!("http://127.0.0.1{target}")).expect("a request target");
        assert_eq!(got.path(), "/callback");
        let query = |name: &str| {
            got.query_pairs()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
                .unwrap_or_else(|| panic!("no {name} in {got}"))
        };
        assert_eq!(query("state"), "st4te");
        assert_eq!(query("iss"), idp.issuer(), "RFC 9207 iss");
        let code = query("code");
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("client_id", CLI),
            ("code", &code),
            ("redirect_uri", &redirect_uri),
            ("code_verifier", &pkce.verifier),
        ];
        form.extend(resource_param(name_resource));
        let (status, tokens) = idp.token_request(&form);
        assert_eq!(status, 200, "{tokens}");
        tokens
    }

    fn refresh(idp: &Idp, refresh_token: &str, name_resource: bool) -> (u16, Value) {
        let mut form = vec![
            ("grant_type", "refresh_token"),
            ("client_id", CLI),
            ("refresh_token", refresh_token),
        ];
        form.extend(resource_param(name_resource));
        idp.token_request(&form)
    }

    fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
        v[key]
            .as_str()
            .unwrap_or_else(|| panic!("no string {key} in {v}"))
    }

    /// Checks an access token's signature against `key` and its RFC 9068
    /// shape; returns its claims.
    fn verified_access_token(idp: &Idp, token: &str, key: &SigningKey) -> Value {
        let (header, _) = decode_jwt(token);
        assert_eq!(header["typ"], "at+jwt", "{header}");
        assert_eq!(header["alg"], "ES256", "{header}");
        assert_eq!(header["kid"], key.kid.as_str(), "{header}");
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_audience(&[DEFAULT_RESOURCE]);
        validation.set_issuer(&[idp.issuer()]);
        jsonwebtoken::decode::<Value>(token, &key.decoding_key(), &validation)
            .unwrap_or_else(|e| panic!("the access token does not verify: {e}"))
            .claims
    }

    #[test]
    fn authorization_code_login_gives_a_jwt_access_token_with_groups() {
        let idp = idp();
        let tokens = login(&idp, true);
        let key = idp.signing_key();

        let at = verified_access_token(&idp, str_of(&tokens, "access_token"), &key);
        assert_eq!(at["aud"], DEFAULT_RESOURCE);
        assert_eq!(at["sub"], "alice");
        assert_eq!(at["client_id"], CLI);
        assert_eq!(at["email"], "alice@example.com");
        assert_eq!(at["groups"], json!(["eng", "ops"]));

        let (_, id) = decode_jwt(str_of(&tokens, "id_token"));
        assert_eq!(id["iss"], idp.issuer());
        assert_eq!(id["aud"], CLI);
        assert_eq!(id["email"], "alice@example.com");
        assert_eq!(id["email_verified"], true);
        assert_eq!(id["groups"], json!(["eng", "ops"]));
        assert!(tokens["refresh_token"].is_string(), "{tokens}");
    }

    #[test]
    fn refresh_rotates_reads_current_groups_and_a_replay_revokes_the_grant() {
        let idp = idp();
        let first = login(&idp, true);
        let rt1 = str_of(&first, "refresh_token");

        idp.set_account("alice", "alice@example.com", &["eng"]);
        let (status, second) = refresh(&idp, rt1, true);
        assert_eq!(status, 200, "{second}");
        let rt2 = str_of(&second, "refresh_token");
        assert_ne!(rt1, rt2, "the refresh token was not rotated");
        let (_, at) = decode_jwt(str_of(&second, "access_token"));
        assert_eq!(at["groups"], json!(["eng"]), "{at}");
        assert_eq!(at["aud"], DEFAULT_RESOURCE);
        let (_, id) = decode_jwt(str_of(&second, "id_token"));
        assert_eq!(id["groups"], json!(["eng"]), "{id}");

        let (status, replay) = refresh(&idp, rt1, true);
        assert_eq!(status, 400, "{replay}");
        assert_eq!(replay["error"], "invalid_grant", "{replay}");
        // The replay revoked the whole grant: the rotated token is dead too.
        let (status, after) = refresh(&idp, rt2, true);
        assert_eq!(status, 400, "{after}");
        assert_eq!(after["error"], "invalid_grant", "{after}");
    }

    #[test]
    fn rotated_keys_sign_new_tokens_and_the_old_key_stays_published() {
        let idp = idp();
        // No `resource` anywhere: the IdP's default resource applies.
        let tokens = login(&idp, false);
        let old = idp.signing_key();

        let new_kid = idp.rotate_keys();
        assert_ne!(new_kid, old.kid);
        let new = idp.signing_key();
        assert_eq!(new.kid, new_kid);
        let jwks = idp.jwks();
        let listed: Vec<&str> = jwks["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .map(|k| k["kid"].as_str().expect("kid"))
            .collect();
        assert_eq!(listed, [new_kid.as_str(), old.kid.as_str()]);

        // The grant made before the rotation still refreshes, under the new key.
        let (status, refreshed) = refresh(&idp, str_of(&tokens, "refresh_token"), false);
        assert_eq!(status, 200, "{refreshed}");
        verified_access_token(&idp, str_of(&refreshed, "access_token"), &new);
        let (header, _) = decode_jwt(str_of(&refreshed, "id_token"));
        assert_eq!(header["kid"], new_kid.as_str());
        let cc = idp.client_credentials(CI, CI_SECRET, Some(DEFAULT_RESOURCE));
        verified_access_token(&idp, str_of(&cc, "access_token"), &new);

        // Forgeries: signed with the real key, headers as the test says.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs();
        let claims = json!({
            "iss": idp.issuer(),
            "aud": DEFAULT_RESOURCE,
            "sub": "mallory",
            "iat": now,
            "exp": now + 300,
        });
        let forged = idp.sign(&json!({}), &claims);
        assert_eq!(verified_access_token(&idp, &forged, &new)["sub"], "mallory");
        let (header, _) = decode_jwt(&idp.sign(&json!({"typ": "JWT", "kid": null}), &claims));
        assert_eq!(header, json!({"alg": "ES256", "typ": "JWT"}));
    }

    #[test]
    fn client_credentials_tokens_carry_the_clients_claims() {
        let idp = idp();
        let key = idp.signing_key();
        for resource in [Some(DEFAULT_RESOURCE), None] {
            let answer = idp.client_credentials(CI, CI_SECRET, resource);
            let at = verified_access_token(&idp, str_of(&answer, "access_token"), &key);
            assert_eq!(at["sub"], CI);
            assert_eq!(at["client_id"], CI);
            assert_eq!(at["repository"], "acme/app");
            assert_eq!(at["ref"], "refs/heads/main");
            assert_eq!(answer["expires_in"], 600);
        }
        let gha = idp.client_credentials(GHA, CI_SECRET, None);
        let at = verified_access_token(&idp, str_of(&gha, "access_token"), &key);
        assert_eq!(at["sub"], "repo:acme/app:ref:refs/heads/main");
        assert_eq!(at["client_id"], GHA);
        let wrong = idp.client_credentials(CI, "not the secret", None);
        assert_eq!(wrong["error"], "invalid_client", "{wrong}");
    }

    #[test]
    fn device_flow_completes_when_the_harness_approves_it() {
        let idp = idp();
        let (status, auth) = idp.post_form("/device/auth", &[("client_id", CLI), ("scope", SCOPE)]);
        assert_eq!(status, 200, "{auth}");
        assert_eq!(auth["interval"], 1, "{auth}");
        let interval = Duration::from_secs(auth["interval"].as_u64().expect("interval"));
        let device_code = str_of(&auth, "device_code").to_owned();

        // The device polls while its user approves.
        let tokens = thread::scope(|s| {
            let poller = s.spawn(|| {
                let mut polls = 0;
                wait_until(Duration::from_secs(15), "the device tokens", || {
                    if polls > 0 {
                        thread::sleep(interval);
                    }
                    polls += 1;
                    let (status, answer) = idp.token_request(&[
                        ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                        ("client_id", CLI),
                        ("device_code", &device_code),
                    ]);
                    if status == 200 {
                        return Some(answer);
                    }
                    assert_eq!(answer["error"], "authorization_pending", "{answer}");
                    None
                })
            });
            idp.approve_device(
                str_of(&auth, "verification_uri"),
                str_of(&auth, "user_code"),
                "alice",
            );
            poller.join().expect("the poller")
        });
        let at = verified_access_token(&idp, str_of(&tokens, "access_token"), &idp.signing_key());
        assert_eq!(at["sub"], "alice");
        assert_eq!(at["groups"], json!(["eng", "ops"]));
        assert!(tokens["refresh_token"].is_string(), "{tokens}");
    }
}
