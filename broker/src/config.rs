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
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalUser {
    /// An argon2id PHC string (`$argon2id$v=19$...`).
    pub password_hash: Secret<String>,
    #[serde(default)]
    pub roles: Vec<RoleName>,
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
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: self.path.clone(),
            message,
        };
        for (name, role) in &self.roles {
            for server in &role.servers {
                if !self.servers.contains_key(server) {
                    return Err(invalid(format!(
                        "role {name:?} lists server {server:?}, which is not under [servers]"
                    )));
                }
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
