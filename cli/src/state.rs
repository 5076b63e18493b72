//! The CLI's state dir and the non-secret login state kept in it.
//!
//! Layout of the state dir (`$MCPGATE_HOME`, else
//! `$XDG_CONFIG_HOME/mcpgate`, else `~/.config/mcpgate`; created 0700):
//!
//! | file | mode | content |
//! | --- | --- | --- |
//! | `state.json` | 0600 | broker URL, broker CA (PEM), user, roles, expiry, which store holds the token, how the login was made (password, or which OpenID Provider) |
//! | `credentials` | 0600 | the token (for OpenID Connect: the tokens document of `token.rs`), only when it is not in the OS keyring |
//! | `refresh.lock` | 0600 | empty; locked while a process renews an OpenID Connect login (`refresh.rs`) |
//!
//! Files are written whole: a temporary file created with mode 0600 from
//! the start (never chmodded after), then renamed over the old one.
//!
//! **Invariant:** [`State`] holds nothing secret; the token lives in
//! `credentials.rs`.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use mcpgate_shared::names::{RoleName, UserName};
use serde::{Deserialize, Serialize};

use crate::client::BrokerUrl;
use crate::env;
use crate::error::Error;

pub const STATE_FILE: &str = "state.json";
pub const CREDENTIALS_FILE: &str = "credentials";
pub const REFRESH_LOCK_FILE: &str = "refresh.lock";

/// Where the CLI keeps its files.
#[derive(Debug, Clone)]
pub struct StateDir {
    path: PathBuf,
}

impl StateDir {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// `$MCPGATE_HOME`, else `$XDG_CONFIG_HOME/mcpgate`, else
    /// `~/.config/mcpgate`.
    pub fn from_env() -> Result<Self, Error> {
        if let Some(home) = env::var(env::MCPGATE_HOME) {
            return Ok(Self::new(home));
        }
        // The XDG spec says to ignore a relative XDG_CONFIG_HOME.
        if let Some(xdg) = env::var(env::XDG_CONFIG_HOME).filter(|p| Path::new(p).is_absolute()) {
            return Ok(Self::new(Path::new(&xdg).join("mcpgate")));
        }
        match std::env::home_dir() {
            Some(home) if home.is_absolute() => Ok(Self::new(home.join(".config").join("mcpgate"))),
            _ => Err(Error::Usage(format!(
                "cannot find a home directory for the state dir; set {}",
                env::MCPGATE_HOME
            ))),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn state_file(&self) -> PathBuf {
        self.path.join(STATE_FILE)
    }

    pub fn credentials_file(&self) -> PathBuf {
        self.path.join(CREDENTIALS_FILE)
    }

    pub fn refresh_lock_file(&self) -> PathBuf {
        self.path.join(REFRESH_LOCK_FILE)
    }

    /// Creates the dir (and missing parents) with mode 0700.
    pub fn create(&self) -> Result<(), Error> {
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder
            .create(&self.path)
            .map_err(|e| Error::local(format!("cannot create {}", self.path.display()), e))
    }
}

/// Which store holds the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenStore {
    /// The OS keyring (Secret Service, Keychain, Credential Manager).
    Keyring,
    /// `credentials` in the state dir, mode 0600.
    File,
}

impl TokenStore {
    pub fn describe(self, dir: &StateDir) -> String {
        match self {
            TokenStore::Keyring => "the OS keyring".into(),
            TokenStore::File => dir.credentials_file().display().to_string(),
        }
    }
}

/// How the login was made. State files from before OpenID Connect have no
/// `login` field: they are password logins.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LoginKind {
    /// `POST /v1/login` with a local user's password; the token is the
    /// broker's own.
    #[default]
    Password,
    /// A token from an OpenID Provider the broker trusts.
    Oidc(OidcState),
}

/// An OpenID Connect login, as far as it is not secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OidcState {
    /// The broker's name for the provider (the issuer URL when the broker
    /// did not name it, as for a CI token).
    pub name: String,
    /// The issuer URL, exactly as the provider spells it.
    pub issuer: String,
    /// The client the tokens were issued to (unknown for a CI token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The resource indicator the tokens are for; `None`: the ID token is
    /// what the broker gets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    pub flow: OidcFlow,
    /// Whether a refresh token is kept with the token (so `status` can say
    /// so without opening the keyring).
    #[serde(default)]
    pub refresh_token: bool,
}

/// How an OpenID Connect login got its tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OidcFlow {
    /// Authorization code + PKCE through the browser.
    Browser,
    /// The device authorization grant (RFC 8628).
    Device,
    /// `mcpgate login --ci --save`: a CI token, no refresh token.
    Ci,
}

/// The login state that is not secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub broker: BrokerUrl,
    /// The CA to trust for the broker's HTTPS API (from `--ca-cert`); `None`
    /// means the system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    pub user: UserName,
    pub roles: Vec<RoleName>,
    /// Unix seconds: when the token presented to the broker expires (for
    /// an OpenID Connect login with a refresh token, it is renewed before).
    pub expires_at: u64,
    pub token_store: TokenStore,
    #[serde(default)]
    pub login: LoginKind,
}

impl State {
    /// The keyring account name: one entry per user and broker.
    pub fn account(&self) -> String {
        account(&self.user, &self.broker)
    }

    /// The command that logs this user in again, the same way.
    pub fn relogin(&self) -> String {
        let mut cmd = format!("mcpgate login --broker {}", self.broker);
        match &self.login {
            LoginKind::Password => cmd.push_str(&format!(" --user {}", self.user)),
            LoginKind::Oidc(oidc) => {
                if oidc.flow == OidcFlow::Ci {
                    cmd.push_str(" --ci --save");
                }
                // A name with spaces or quotes would not survive the shell;
                // the issuer URL always does.
                let issuer = if oidc
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.:/".contains(c))
                {
                    &oidc.name
                } else {
                    &oidc.issuer
                };
                cmd.push_str(&format!(" --issuer {issuer}"));
                if oidc.flow == OidcFlow::Device {
                    cmd.push_str(" --device");
                }
            }
        }
        if self.ca_pem.is_some() {
            cmd.push_str(" --ca-cert FILE");
        }
        cmd
    }

    pub fn expired(&self, now: u64) -> bool {
        now >= self.expires_at
    }

    /// The OpenID Connect part, for such a login.
    pub fn oidc(&self) -> Option<&OidcState> {
        match &self.login {
            LoginKind::Oidc(oidc) => Some(oidc),
            LoginKind::Password => None,
        }
    }

    /// Whether an expired token can be renewed without the person.
    pub fn renewable(&self) -> bool {
        self.oidc().is_some_and(|o| o.refresh_token)
    }

    /// The saved state, or `None` when there is none.
    pub fn load(dir: &StateDir) -> Result<Option<State>, Error> {
        let path = dir.state_file();
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::local(format!("cannot read {}", path.display()), e)),
        };
        serde_json::from_str(&text).map(Some).map_err(|e| {
            tracing::debug!(error = %e, path = %path.display(), "unreadable state file");
            Error::damaged(&path)
        })
    }

    pub fn save(&self, dir: &StateDir) -> Result<(), Error> {
        let mut json = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::internal("cannot encode the login state", e))?;
        json.push(b'\n');
        write_private(dir, STATE_FILE, &json)
    }

    /// Removes the state file; `Ok(false)` when there was none.
    pub fn remove(dir: &StateDir) -> Result<bool, Error> {
        remove_file(&dir.state_file())
    }
}

pub fn account(user: &UserName, broker: &BrokerUrl) -> String {
    format!("{user}@{broker}")
}

/// Writes `name` in the state dir atomically, readable by the owner only.
pub fn write_private(dir: &StateDir, name: &str, bytes: &[u8]) -> Result<(), Error> {
    dir.create()?;
    let target = dir.path().join(name);
    let tmp = dir
        .path()
        .join(format!(".{name}.tmp-{}", std::process::id()));
    let fail = |e: io::Error| Error::local(format!("cannot write {}", target.display()), e);
    // A leftover from a crashed run with the same pid: its mode is unknown,
    // so it goes rather than being reused.
    let _ = fs::remove_file(&tmp);
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let result = options.open(&tmp).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_all()
    });
    if let Err(e) = result.and_then(|()| fs::rename(&tmp, &target)) {
        let _ = fs::remove_file(&tmp);
        return Err(fail(e));
    }
    Ok(())
}

/// Removes a file; `Ok(false)` when it was not there.
pub fn remove_file(path: &Path) -> Result<bool, Error> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::local(format!("cannot remove {}", path.display()), e)),
    }
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> State {
        State {
            broker: "https://127.0.0.1:8443".parse().unwrap(),
            ca_pem: Some("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into()),
            user: "alice".parse().unwrap(),
            roles: vec!["dev".parse().unwrap(), "ops.readonly".parse().unwrap()],
            expires_at: 1_900_000_000,
            token_store: TokenStore::File,
            login: LoginKind::Password,
        }
    }

    pub(crate) fn sample_oidc() -> State {
        State {
            user: "alice@example.com".parse().unwrap(),
            login: LoginKind::Oidc(OidcState {
                name: "corp".into(),
                issuer: "http://127.0.0.1:3000".into(),
                client_id: Some("mcpgate-cli".into()),
                resource: Some("urn:mcpgate-broker".into()),
                scopes: vec!["openid".into(), "offline_access".into()],
                flow: OidcFlow::Browser,
                refresh_token: true,
            }),
            ..sample()
        }
    }

    #[test]
    fn state_round_trips_through_the_state_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::new(tmp.path().join("nested").join("mcpgate"));
        assert_eq!(State::load(&dir).unwrap(), None);
        let state = sample();
        state.save(&dir).unwrap();
        assert_eq!(State::load(&dir).unwrap(), Some(state.clone()));
        let mut other = state.clone();
        other.ca_pem = None;
        other.token_store = TokenStore::Keyring;
        other.save(&dir).unwrap();
        let back = State::load(&dir).unwrap().unwrap();
        assert_eq!(back, other);
        let text = fs::read_to_string(dir.state_file()).unwrap();
        assert!(text.contains(r#""token_store": "keyring""#), "{text}");
        assert!(!text.contains("ca_pem"), "{text}");
        assert!(State::remove(&dir).unwrap());
        assert!(!State::remove(&dir).unwrap());
        assert_eq!(State::load(&dir).unwrap(), None);
    }

    #[cfg(unix)]
    #[test]
    fn state_dir_is_0700_and_files_are_0600() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::new(tmp.path().join("mcpgate"));
        sample().save(&dir).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(dir.path()), 0o700);
        assert_eq!(mode(&dir.state_file()), 0o600);
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().contains(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn damaged_state_is_reported_with_the_way_out() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::new(tmp.path());
        fs::write(dir.state_file(), "{not json").unwrap();
        let err = State::load(&dir).unwrap_err().report();
        assert!(err.contains("mcpgate logout"), "{err}");
    }

    /// A state file written before OpenID Connect logins existed: no
    /// `login` field. It must keep loading, as a password login.
    #[test]
    fn state_files_from_before_oidc_load_as_password_logins() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::new(tmp.path());
        fs::write(
            dir.state_file(),
            r#"{
  "broker": "https://127.0.0.1:8443",
  "user": "alice",
  "roles": ["dev"],
  "expires_at": 1900000000,
  "token_store": "file"
}
"#,
        )
        .unwrap();
        let state = State::load(&dir).unwrap().unwrap();
        assert_eq!(state.login, LoginKind::Password);
        assert_eq!(state.user.as_str(), "alice");
        assert!(!state.renewable());
        // Saved again, it says what it is.
        state.save(&dir).unwrap();
        let text = fs::read_to_string(dir.state_file()).unwrap();
        assert!(text.contains(r#""kind": "password""#), "{text}");
    }

    #[test]
    fn oidc_state_round_trips_and_holds_nothing_secret() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::new(tmp.path());
        let state = sample_oidc();
        state.save(&dir).unwrap();
        assert_eq!(State::load(&dir).unwrap(), Some(state.clone()));
        let text = fs::read_to_string(dir.state_file()).unwrap();
        assert!(text.contains(r#""kind": "oidc""#), "{text}");
        assert!(
            text.contains(r#""issuer": "http://127.0.0.1:3000""#),
            "{text}"
        );
        assert!(text.contains(r#""refresh_token": true"#), "{text}");
        assert!(state.renewable());
        assert_eq!(
            state.relogin(),
            "mcpgate login --broker https://127.0.0.1:8443 --issuer corp --ca-cert FILE"
        );
        let mut device = state.clone();
        let LoginKind::Oidc(o) = &mut device.login else {
            unreachable!()
        };
        o.flow = OidcFlow::Device;
        o.name = "Corp SSO".into();
        device.ca_pem = None;
        assert_eq!(
            device.relogin(),
            "mcpgate login --broker https://127.0.0.1:8443 --issuer http://127.0.0.1:3000 --device"
        );
    }

    #[test]
    fn relogin_names_broker_user_and_ca() {
        let s = sample();
        assert_eq!(
            s.relogin(),
            "mcpgate login --broker https://127.0.0.1:8443 --user alice --ca-cert FILE"
        );
        assert_eq!(s.account(), "alice@https://127.0.0.1:8443");
        assert!(s.expired(1_900_000_000));
        assert!(!s.expired(1_899_999_999));
    }
}
