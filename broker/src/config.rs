//! The broker's one configuration file (TOML).
//!
//! Every default is the safe one: nobody has a role until the file gives
//! one, a role reaches no server until it lists it, and unknown keys are an
//! error (a typo in a security setting must not be ignored silently).
//! [`EXAMPLE`] is the commented example `init` writes; a test parses it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mcpgate_shared::jsonrpc::DEFAULT_MAX_MESSAGE_BYTES;
use mcpgate_shared::names::{RoleName, ServerName, UserName};
use mcpgate_shared::secret::Secret;
use serde::Deserialize;

use crate::policy::{Policy, PolicySection};

/// The commented example configuration `mcpgate-broker init` writes.
/// `@BROKER_EXE@` is replaced with the path of the running binary.
pub const EXAMPLE: &str = include_str!("../example-config.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub broker: BrokerSection,
    #[serde(default)]
    pub login: LoginSection,
    #[serde(default)]
    pub roles: BTreeMap<RoleName, Role>,
    #[serde(default)]
    pub users: BTreeMap<UserName, LocalUser>,
    #[serde(default)]
    pub servers: BTreeMap<ServerName, Server>,
    /// OpenID Providers whose tokens the broker accepts: the company IdP
    /// people log in with, and CI platforms' token issuers.
    #[serde(default)]
    pub oidc: Vec<OidcIssuer>,
    /// Held calls and access requests: how long they wait, who hears.
    #[serde(default)]
    pub approvals: ApprovalsSection,
    /// `[[policy]]` rules: which tools, resources and prompts each role
    /// may use on each server (see [`crate::policy`]). None: nothing is
    /// allowed.
    #[serde(default)]
    pub policy: PolicySection,
    /// What is masked in what servers return, for whom (see
    /// [`crate::mask`]). None: every default detector, for everyone.
    #[serde(default)]
    pub masking: crate::mask::MaskingSection,
    /// How sessions are recorded (see [`crate::record`]). None: every
    /// event synced before its message goes on, fail closed, kept forever.
    #[serde(default)]
    pub recording: crate::record::RecordingSection,
    /// Where the file was read from; relative paths in it are relative to
    /// its folder.
    #[serde(skip)]
    pub path: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerSection {
    /// The HTTPS API (login, servers, session requests).
    #[serde(default = "default_api_listen")]
    pub api_listen: SocketAddr,
    /// The mTLS tunnel listener.
    #[serde(default = "default_tunnel_listen")]
    pub tunnel_listen: SocketAddr,
    /// `host:port` the tunnel is announced as; defaults to `tunnel_listen`
    /// (with the port actually bound).
    #[serde(default)]
    pub tunnel_public_addr: Option<String>,
    /// DNS names and IP addresses in the broker's TLS certificate (set at
    /// `init`); the first one is the name clients verify on the tunnel.
    #[serde(default = "default_public_names")]
    pub public_names: Vec<String>,
    /// Keys, certificates and the session store; relative to this file.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Lifetime of the bearer token a login returns.
    #[serde(default = "default_token_ttl", with = "humantime_serde")]
    pub token_ttl: Duration,
    /// How long a session certificate may be used to open its tunnel.
    #[serde(default = "default_cert_ttl", with = "humantime_serde")]
    pub cert_ttl: Duration,
    /// The broker closes a tunnel after this long, whatever the client does.
    #[serde(default = "default_session_max", with = "humantime_serde")]
    pub session_max_duration: Duration,
    /// Larger MCP messages are refused (both directions).
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// At most this many tunnels at once.
    #[serde(default = "default_max_sessions")]
    pub max_sessions: usize,
    /// More `[[policy]]` rules, one file each, relative to this file;
    /// read after the rules in this file.
    #[serde(default)]
    pub policy_files: Vec<toml::Spanned<PathBuf>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginSection {
    /// Failed logins allowed per user name and per client address within
    /// `window` before further attempts are refused.
    #[serde(default = "default_max_failures")]
    pub max_failures: u32,
    #[serde(default = "default_window", with = "humantime_serde")]
    pub window: Duration,
}

impl Default for LoginSection {
    fn default() -> Self {
        Self {
            max_failures: default_max_failures(),
            window: default_window(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Role {
    /// Servers this role may open sessions to. Nothing else is allowed.
    #[serde(default)]
    pub servers: Vec<ServerName>,
    /// Servers whose held calls and access requests this role's members
    /// may approve or deny (never their own).
    #[serde(default)]
    pub approves: Vec<ServerName>,
    /// Servers this role's members may ask just-in-time access to
    /// (`mcpgate request-access`); an approver must grant it.
    #[serde(default)]
    pub request_access: Vec<ServerName>,
    /// The longest access grant this role may ask for.
    #[serde(default = "default_max_access", with = "humantime_serde")]
    pub max_access_duration: Duration,
    /// Members may list, replay, verify and export every session's
    /// record, not only their own (auditors, admins).
    #[serde(default)]
    pub audit: bool,
}

/// `[approvals]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalsSection {
    /// A held call waits this long for a decision, then the client gets a
    /// timeout error. Access requests wait as long.
    #[serde(default = "default_approval_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// While a call is held, a client that gave a progress token gets a
    /// progress notification this often.
    #[serde(default = "default_progress_interval", with = "humantime_serde")]
    pub progress_interval: Duration,
    /// Told when a request is opened and when it is decided.
    #[serde(default)]
    pub webhooks: Vec<Webhook>,
}

impl Default for ApprovalsSection {
    fn default() -> Self {
        Self {
            timeout: default_approval_timeout(),
            progress_interval: default_progress_interval(),
            webhooks: Vec::new(),
        }
    }
}

/// `[[approvals.webhooks]]`: where approval events are posted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// `https`, or `http` on a loopback address only. May hold a secret
    /// (Slack's URLs do): it never prints.
    pub url: Secret<String>,
    /// The body's shape.
    #[serde(default)]
    pub format: WebhookFormat,
    /// Extra request headers, e.g. `Authorization`; values never print.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret<String>>,
    /// Extra CA certificates (PEM) for the receiver, relative to this file.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Attempts per event before giving up (with exponential backoff).
    #[serde(default = "default_webhook_attempts")]
    pub max_attempts: u32,
}

/// What a webhook body looks like.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    /// `{"event": "approval.opened", "approval": {...}}`.
    #[default]
    Json,
    /// A Slack-compatible `{"text": ..., "blocks": [...]}` message.
    Slack,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalUser {
    /// An argon2id PHC string (`$argon2id$v=19$...`).
    pub password_hash: Secret<String>,
    #[serde(default)]
    pub roles: Vec<RoleName>,
}

/// One OpenID Provider the broker trusts (`[[oidc]]`).
///
/// The broker verifies its tokens itself, against the keys its discovery
/// document points to: JWT access tokens (`typ: at+jwt`, RFC 9068) whose
/// `aud` is in `audiences`, and ID tokens (any other `typ`) whose `aud` is
/// `client_id` or in `id_token_audiences`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcIssuer {
    /// A short name for messages and `mcpgate login --issuer NAME`.
    pub name: String,
    /// The issuer URL, compared exactly with the discovery document and
    /// every token's `iss` (no trailing slash added or removed). `https`,
    /// or `http` on a loopback address only.
    pub issuer: String,
    /// The public (PKCE) client `mcpgate login` uses at this provider; ID
    /// tokens issued to it are accepted. Providers without one are not
    /// offered for interactive login (CI token issuers).
    #[serde(default)]
    pub client_id: Option<String>,
    /// The resource indicator (RFC 8707) the CLI asks access tokens for.
    #[serde(default)]
    pub resource: Option<String>,
    /// Accepted `aud` values of JWT access tokens; defaults to `resource`.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Accepted `aud` values of ID-type tokens besides `client_id`, e.g.
    /// the audience a CI job requests its platform's OIDC token for.
    #[serde(default)]
    pub id_token_audiences: Vec<String>,
    /// Scopes the CLI asks for.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// The claim that lists a person's groups.
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// People's `email` must be in one of these domains (and not marked
    /// unverified). Empty: any domain.
    #[serde(default)]
    pub email_domains: Vec<String>,
    /// Allowed clock difference for `exp`, `nbf` and `iat`.
    #[serde(default = "default_clock_skew", with = "humantime_serde")]
    pub clock_skew: Duration,
    /// Tokens issued longer ago than this are refused, whatever their
    /// `exp`, so that group changes at the provider take effect quickly.
    #[serde(default = "default_max_token_age", with = "humantime_serde")]
    pub max_token_age: Duration,
    /// An unknown `kid` refetches the keys at most this often.
    #[serde(default = "default_jwks_refresh", with = "humantime_serde")]
    pub jwks_min_refresh_interval: Duration,
    /// Keys are refetched after this long even when every `kid` is known.
    #[serde(default = "default_jwks_max_age", with = "humantime_serde")]
    pub jwks_max_age: Duration,
    /// Extra CA certificates (PEM) for the provider's HTTPS, relative to
    /// this file; the system roots are always trusted.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Groups to roles, for people.
    #[serde(default)]
    pub groups: Vec<GroupRule>,
    /// Claim rules to roles, for CI jobs and other workloads.
    #[serde(default)]
    pub workloads: Vec<WorkloadRule>,
}

/// `[[oidc.groups]]`: members of `group` get `roles`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupRule {
    pub group: String,
    pub roles: Vec<RoleName>,
}

/// `[[oidc.workloads]]`: a token whose claims match every entry of
/// `claims` is the workload `name` with `roles`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadRule {
    /// The identity sessions are recorded under.
    pub name: UserName,
    /// Claim name to the required value, or to a list of accepted values.
    /// Values are compared exactly.
    pub claims: BTreeMap<String, ClaimMatch>,
    pub roles: Vec<RoleName>,
    /// Session certificates for this workload live this long (at most
    /// `broker.cert_ttl`).
    #[serde(default = "default_workload_cert_ttl", with = "humantime_serde")]
    pub cert_ttl: Duration,
}

/// One accepted value or a list of them.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ClaimMatch {
    One(String),
    Any(Vec<String>),
}

impl ClaimMatch {
    pub fn accepts(&self, value: &str) -> bool {
        match self {
            ClaimMatch::One(v) => v == value,
            ClaimMatch::Any(vs) => vs.iter().any(|v| v == value),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "transport", rename_all = "snake_case", deny_unknown_fields)]
pub enum Server {
    Stdio(StdioServer),
}

impl Server {
    pub fn description(&self) -> Option<&str> {
        match self {
            Server::Stdio(s) => s.description.as_deref(),
        }
    }

    pub fn transport(&self) -> &'static str {
        match self {
            Server::Stdio(_) => "stdio",
        }
    }
}

/// An upstream the broker spawns, one process per session.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdioServer {
    #[serde(default)]
    pub description: Option<String>,
    pub command: String,
    #[serde(default)]
    pub args: Vec<String>,
    /// Working directory; defaults to the data dir.
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// The child's whole environment: nothing of the broker's own
    /// environment is passed on. Values may be credentials; they never
    /// print.
    #[serde(default)]
    pub env: BTreeMap<String, Secret<String>>,
    /// After closing the child's stdin, wait this long before SIGTERM, and
    /// as long again before SIGKILL.
    #[serde(default = "default_grace", with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

fn default_api_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8443))
}
fn default_tunnel_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8444))
}
fn default_public_names() -> Vec<String> {
    vec!["127.0.0.1".into(), "localhost".into(), "::1".into()]
}
fn default_data_dir() -> PathBuf {
    PathBuf::from(".")
}
fn default_token_ttl() -> Duration {
    Duration::from_secs(8 * 3600)
}
fn default_cert_ttl() -> Duration {
    Duration::from_secs(10 * 60)
}
fn default_session_max() -> Duration {
    Duration::from_secs(8 * 3600)
}
fn default_max_message_bytes() -> usize {
    DEFAULT_MAX_MESSAGE_BYTES
}
fn default_max_sessions() -> usize {
    256
}
fn default_max_failures() -> u32 {
    5
}
fn default_window() -> Duration {
    Duration::from_secs(300)
}
fn default_grace() -> Duration {
    Duration::from_secs(2)
}
fn default_scopes() -> Vec<String> {
    ["openid", "email", "profile", "groups", "offline_access"]
        .map(String::from)
        .to_vec()
}
fn default_groups_claim() -> String {
    "groups".into()
}
fn default_clock_skew() -> Duration {
    Duration::from_secs(60)
}
fn default_max_token_age() -> Duration {
    Duration::from_secs(10 * 60)
}
fn default_jwks_refresh() -> Duration {
    Duration::from_secs(30)
}
fn default_jwks_max_age() -> Duration {
    Duration::from_secs(3600)
}
fn default_max_access() -> Duration {
    Duration::from_secs(4 * 3600)
}
fn default_approval_timeout() -> Duration {
    Duration::from_secs(10 * 60)
}
fn default_progress_interval() -> Duration {
    Duration::from_secs(10)
}
fn default_webhook_attempts() -> u32 {
    5
}
fn default_workload_cert_ttl() -> Duration {
    Duration::from_secs(5 * 60)
}

impl Config {
    /// Reads, parses and checks a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and checks config text; `path` is used for messages and to
    /// resolve relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        config.path = path.to_owned();
        config.policy.locate(path, text);
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: self.path.clone(),
            message,
        };
        self.recording.check().map_err(invalid)?;
        for (name, role) in &self.roles {
            let lists = [
                ("servers", &role.servers),
                ("approves", &role.approves),
                ("request_access", &role.request_access),
            ];
            for (field, servers) in lists {
                for server in servers {
                    if !self.servers.contains_key(server) {
                        return Err(invalid(format!(
                            "role {name:?} lists server {server:?} in {field}, which is not under [servers]"
                        )));
                    }
                }
            }
            if role.max_access_duration < Duration::from_secs(60) {
                return Err(invalid(format!(
                    "role {name:?}: max_access_duration must be at least 1m"
                )));
            }
        }
        let a = &self.approvals;
        if a.timeout < Duration::from_secs(1) || a.timeout > Duration::from_secs(24 * 3600) {
            return Err(invalid(
                "approvals.timeout must be between 1s and 24h".into(),
            ));
        }
        if a.progress_interval < Duration::from_millis(100) {
            return Err(invalid(
                "approvals.progress_interval must be at least 100ms".into(),
            ));
        }
        for (k, hook) in a.webhooks.iter().enumerate() {
            let url = url::Url::parse(hook.url.expose())
                .map_err(|e| invalid(format!("approvals.webhooks[{k}].url is not a URL: {e}")))?;
            let loopback = match url.host() {
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                Some(url::Host::Domain(d)) => d == "localhost",
                None => false,
            };
            if !(url.scheme() == "https" || url.scheme() == "http" && loopback) {
                return Err(invalid(format!(
                    "approvals.webhooks[{k}].url must be https (http only on a loopback address)"
                )));
            }
            if hook.max_attempts == 0 || hook.max_attempts > 20 {
                return Err(invalid(format!(
                    "approvals.webhooks[{k}].max_attempts must be between 1 and 20"
                )));
            }
        }
        for (name, user) in &self.users {
            for role in &user.roles {
                if !self.roles.contains_key(role) {
                    return Err(invalid(format!(
                        "user {name:?} has role {role:?}, which is not under [roles]"
                    )));
                }
            }
            if !user.password_hash.expose().starts_with("$argon2id$") {
                return Err(invalid(format!(
                    "user {name:?}: password_hash must be an argon2id hash (use `mcpgate-broker user add`)"
                )));
            }
        }
        let b = &self.broker;
        if b.public_names.is_empty() {
            return Err(invalid(
                "broker.public_names must name at least one host".into(),
            ));
        }
        if b.cert_ttl < Duration::from_secs(10) || b.cert_ttl > Duration::from_secs(24 * 3600) {
            return Err(invalid(
                "broker.cert_ttl must be between 10s and 24h".into(),
            ));
        }
        if b.token_ttl < Duration::from_secs(60) {
            return Err(invalid("broker.token_ttl must be at least 1m".into()));
        }
        if b.session_max_duration < Duration::from_secs(1) {
            return Err(invalid(
                "broker.session_max_duration must be at least 1s".into(),
            ));
        }
        if b.max_message_bytes < 1024 {
            return Err(invalid(
                "broker.max_message_bytes must be at least 1024".into(),
            ));
        }
        if b.max_sessions == 0 {
            return Err(invalid("broker.max_sessions must be at least 1".into()));
        }
        for (name, Server::Stdio(s)) in &self.servers {
            if s.command.trim().is_empty() {
                return Err(invalid(format!("server {name:?}: command is empty")));
            }
        }
        self.check_oidc().map_err(invalid)?;
        // A throwaway key: this only checks that every profile compiles.
        self.masking(crate::mask::MaskKey::new([0; 32]))
            .map_err(invalid)?;
        // Last: rules name roles and servers checked above.
        Policy::compile(self).map_err(|e| ConfigError::Invalid {
            path: e.file,
            message: format!("line {}: {}", e.line, e.message),
        })?;
        Ok(())
    }

    /// Compiles `[masking]` under the deployment's hash-token key.
    pub fn masking(&self, key: crate::mask::MaskKey) -> Result<crate::mask::Masking, String> {
        let servers = self.servers.keys().map(|s| s.as_str().to_owned()).collect();
        let roles = self.roles.keys().map(|r| r.as_str().to_owned()).collect();
        crate::mask::Masking::compile(&self.masking, &servers, &roles, key)
    }

    fn check_oidc(&self) -> Result<(), String> {
        let mut names = std::collections::BTreeSet::new();
        let mut issuers = std::collections::BTreeSet::new();
        for idp in &self.oidc {
            let at = format!("oidc {:?}", idp.name);
            if idp.name.is_empty() || !names.insert(idp.name.as_str()) {
                return Err(format!("{at}: every [[oidc]] needs a unique name"));
            }
            if !issuers.insert(idp.issuer.as_str()) {
                return Err(format!("{at}: issuer {:?} is listed twice", idp.issuer));
            }
            check_issuer_url(&idp.issuer).map_err(|e| format!("{at}: issuer {e}"))?;
            if idp.client_id.is_none()
                && idp.access_token_audiences().is_empty()
                && idp.id_token_audiences.is_empty()
            {
                return Err(format!(
                    "{at}: no token could be accepted: set client_id, resource, audiences or id_token_audiences"
                ));
            }
            if idp.groups.is_empty() && idp.workloads.is_empty() {
                return Err(format!(
                    "{at}: no [[oidc.groups]] or [[oidc.workloads]] rule gives anyone a role"
                ));
            }
            if idp.clock_skew > Duration::from_secs(600) {
                return Err(format!("{at}: clock_skew must be at most 10m"));
            }
            if idp.max_token_age < Duration::from_secs(60) {
                return Err(format!("{at}: max_token_age must be at least 1m"));
            }
            let roles = idp
                .groups
                .iter()
                .flat_map(|g| &g.roles)
                .chain(idp.workloads.iter().flat_map(|w| &w.roles));
            for role in roles {
                if !self.roles.contains_key(role) {
                    return Err(format!(
                        "{at} maps to role {role:?}, which is not under [roles]"
                    ));
                }
            }
            for w in &idp.workloads {
                if w.claims.is_empty() {
                    return Err(format!(
                        "{at}: workload {:?} has no claims to match (it would match any token)",
                        w.name.as_str()
                    ));
                }
                if self.users.contains_key(&w.name) {
                    return Err(format!(
                        "{at}: workload {:?} has the name of a local user",
                        w.name.as_str()
                    ));
                }
                if w.cert_ttl < Duration::from_secs(10) || w.cert_ttl > self.broker.cert_ttl {
                    return Err(format!(
                        "{at}: workload {:?}: cert_ttl must be between 10s and broker.cert_ttl",
                        w.name.as_str()
                    ));
                }
            }
        }
        Ok(())
    }

    /// The data dir, resolved against the config file's folder.
    pub fn data_dir(&self) -> PathBuf {
        let base = self.path.parent().unwrap_or(Path::new("."));
        base.join(&self.broker.data_dir)
    }

    /// The servers a set of roles may connect to (deny by default).
    pub fn servers_for(&self, roles: &[RoleName]) -> Vec<&ServerName> {
        let mut out: Vec<&ServerName> = roles
            .iter()
            .filter_map(|r| self.roles.get(r))
            .flat_map(|r| r.servers.iter())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    pub fn may_connect(&self, roles: &[RoleName], server: &ServerName) -> bool {
        roles
            .iter()
            .filter_map(|r| self.roles.get(r))
            .any(|r| r.servers.contains(server))
    }
}

impl OidcIssuer {
    /// Accepted `aud` values of access tokens (`audiences`, else `resource`).
    pub fn access_token_audiences(&self) -> Vec<&str> {
        if self.audiences.is_empty() {
            self.resource.iter().map(String::as_str).collect()
        } else {
            self.audiences.iter().map(String::as_str).collect()
        }
    }
}

/// An issuer must be an absolute `https` URL, or `http` on loopback (a
/// provider on the same machine, as in tests).
fn check_issuer_url(issuer: &str) -> Result<(), String> {
    let url = url::Url::parse(issuer).map_err(|e| format!("{issuer:?} is not a URL: {e}"))?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("{issuer:?} must not have a query or fragment"));
    }
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => return Err(format!("{issuer:?} has no host")),
    };
    match url.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(format!(
            "{issuer:?} must use https (http only on a loopback address)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> String {
        EXAMPLE.replace("@BROKER_EXE@", "/usr/local/bin/mcpgate-broker")
    }

    #[test]
    fn example_config_parses() {
        let c = Config::parse(&example(), Path::new("/etc/mcpgate/broker.toml")).unwrap();
        assert!(c.servers.contains_key(&"demo".parse().unwrap()));
        assert_eq!(c.broker.cert_ttl, Duration::from_secs(600));
        assert_eq!(c.data_dir(), Path::new("/etc/mcpgate/."));
    }

    #[test]
    fn deny_by_default() {
        let c = Config::parse(&example(), Path::new("x.toml")).unwrap();
        let demo: ServerName = "demo".parse().unwrap();
        assert!(!c.may_connect(&[], &demo));
        assert!(!c.may_connect(&["nobody".parse().unwrap()], &demo));
        assert!(c.may_connect(&["admin".parse().unwrap()], &demo));
    }

    #[test]
    fn typos_and_dangling_names_are_errors() {
        let bad = example().replace("cert_ttl", "cert_tll");
        let e = Config::parse(&bad, Path::new("b.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("b.toml") && e.contains("cert_tll"), "{e}");
        assert!(e.contains("line"), "{e}");
        let bad = format!("{}\n[roles.ops]\nservers = [\"nope\"]\n", example());
        let e = Config::parse(&bad, Path::new("b.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope"), "{e}");
    }

    /// The example's commented `[[oidc]]` blocks, uncommented.
    fn example_with_oidc() -> String {
        let mut out = String::new();
        let mut in_oidc = false;
        for line in example().lines() {
            if line.starts_with("# [[oidc]]") {
                in_oidc = true;
            }
            if in_oidc && line.starts_with("# Upstream") {
                in_oidc = false;
            }
            match line.strip_prefix("# ") {
                Some(rest)
                    if in_oidc && !rest.starts_with("A CI") && !rest.starts_with("a job") =>
                {
                    out.push_str(rest)
                }
                _ if in_oidc && line == "#" => {}
                _ => out.push_str(line),
            }
            out.push('\n');
        }
        out
    }

    #[test]
    fn example_oidc_section_parses_when_uncommented() {
        let c = Config::parse(&example_with_oidc(), Path::new("x.toml")).unwrap();
        assert_eq!(c.oidc.len(), 2);
        assert_eq!(
            c.oidc[0].access_token_audiences(),
            vec!["urn:mcpgate-broker"]
        );
        assert_eq!(c.oidc[1].workloads[0].name.as_str(), "ci-acme-app");
        assert!(c.oidc[1].client_id.is_none());
    }

    #[test]
    fn oidc_mistakes_are_errors() {
        let base = example_with_oidc();
        for (from, to, expect) in [
            (
                "https://login.example.com",
                "http://login.example.com",
                "https",
            ),
            (
                "group = \"mcp-admins\"\nroles = [\"admin\"]",
                "group = \"mcp-admins\"\nroles = [\"nope\"]",
                "nope",
            ),
            (
                "repository = \"acme/app\", ref = \"refs/heads/main\"",
                "",
                "no claims",
            ),
            ("cert_ttl = \"5m\"", "cert_ttl = \"1h\"", "cert_ttl"),
            ("name = \"github\"", "name = \"corp\"", "unique name"),
        ] {
            let bad = base.replacen(from, to, 1);
            assert_ne!(bad, base, "{from:?} not in the example");
            let e = Config::parse(&bad, Path::new("b.toml"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(expect), "{e}");
        }
        let http_loopback = base.replacen("https://login.example.com", "http://127.0.0.1:9000", 1);
        assert!(Config::parse(&http_loopback, Path::new("b.toml")).is_ok());
    }

    #[test]
    fn credentials_in_env_never_print() {
        let text = format!(
            "{}\n[servers.db]\ntransport = \"stdio\"\ncommand = \"x\"\nenv = {{ DB_PASSWORD = \"s3cr3t-value\" }}\n",
            example()
        );
        let c = Config::parse(&text, Path::new("x.toml")).unwrap();
        assert!(!format!("{c:?}").contains("s3cr3t-value"));
    }
}
