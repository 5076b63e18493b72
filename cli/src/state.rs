//! The CLI's state dir and the non-secret login state kept in it.
//!
//! Layout of the state dir (`$MCPGATE_HOME`, else
//! `$XDG_CONFIG_HOME/mcpgate`, else `~/.config/mcpgate`; created 0700):
//!
//! | file | mode | content |
//! | --- | --- | --- |
//! | `state.json` | 0600 | broker URL, broker CA (PEM), user, roles, expiry, which store holds the token |
//! | `credentials` | 0600 | the token, only when it is not in the OS keyring |
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
    /// Unix seconds.
    pub expires_at: u64,
    pub token_store: TokenStore,
}

impl State {
    /// The keyring account name: one entry per user and broker.
    pub fn account(&self) -> String {
        account(&self.user, &self.broker)
    }

    /// The command that logs this user in again.
    pub fn relogin(&self) -> String {
        let mut cmd = format!(
            "mcpgate login --broker {} --user {}",
            self.broker, self.user
        );
        if self.ca_pem.is_some() {
            cmd.push_str(" --ca-cert FILE");
        }
        cmd
    }

    pub fn expired(&self, now: u64) -> bool {
        now >= self.expires_at
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
mod tests {
    use super::*;

    pub(crate) fn sample() -> State {
        State {
            broker: "https://127.0.0.1:8443".parse().unwrap(),
            ca_pem: Some("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into()),
            user: "alice".parse().unwrap(),
            roles: vec!["dev".parse().unwrap(), "ops.readonly".parse().unwrap()],
            expires_at: 1_900_000_000,
            token_store: TokenStore::File,
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
