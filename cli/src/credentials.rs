//! Where the broker token is kept: the OS keyring, or a 0600 file.
//!
//! `MCPGATE_CREDENTIAL_STORE` chooses: `auto` (the default) tries the OS
//! keyring (Secret Service on Linux, through the `keyring` crate) and falls
//! back to `credentials` in the state dir when there is no keyring service
//! (CI, containers, SSH sessions); `keyring` and `file` force one.
//!
//! The file is created with mode 0600 from the start (see
//! [`state::write_private`]); reading it warns when someone widened it.
//!
//! **Invariant:** the token only ever leaves this module as a
//! [`Secret`], and no error built here contains it.

use std::io;
use std::sync::mpsc;
use std::time::Duration;

use mcpgate_shared::secret::Secret;
use serde::{Deserialize, Serialize};

use crate::env;
use crate::error::Error;
use crate::state::{self, CREDENTIALS_FILE, StateDir, TokenStore};

/// The keyring service name every entry is filed under.
pub const KEYRING_SERVICE: &str = "mcpgate";

/// A keyring that does not answer in this time (a locked collection waiting
/// for an unlock prompt nobody sees) counts as unavailable.
const KEYRING_TIMEOUT: Duration = Duration::from_secs(20);

/// The value of `MCPGATE_CREDENTIAL_STORE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreMode {
    Auto,
    Keyring,
    File,
}

impl StoreMode {
    pub fn from_env() -> Result<Self, Error> {
        Self::parse(env::var(env::MCPGATE_CREDENTIAL_STORE).as_deref())
    }

    fn parse(value: Option<&str>) -> Result<Self, Error> {
        match value {
            None | Some("auto") => Ok(StoreMode::Auto),
            Some("keyring") => Ok(StoreMode::Keyring),
            Some("file") => Ok(StoreMode::File),
            Some(other) => Err(Error::Usage(format!(
                "{}={other:?} is not one of auto, keyring, file",
                env::MCPGATE_CREDENTIAL_STORE
            ))),
        }
    }
}

/// A place that holds one secret per account. The real one is the OS
/// keyring; tests use their own.
pub trait Keyring: Send + Sync {
    fn set(&self, account: &str, secret: &Secret<String>) -> Result<(), String>;
    /// `Ok(None)` when there is no entry.
    fn get(&self, account: &str) -> Result<Option<Secret<String>>, String>;
    /// `Ok(false)` when there was no entry.
    fn delete(&self, account: &str) -> Result<bool, String>;
}

/// The OS keyring through `keyring::Entry` (service `mcpgate`).
pub struct OsKeyring;

impl Keyring for OsKeyring {
    fn set(&self, account: &str, secret: &Secret<String>) -> Result<(), String> {
        let account = account.to_owned();
        let secret = secret.clone();
        with_timeout(move || {
            entry(&account)?
                .set_password(secret.expose())
                .map_err(|e| describe(&e))
        })
    }

    fn get(&self, account: &str) -> Result<Option<Secret<String>>, String> {
        let account = account.to_owned();
        with_timeout(move || match entry(&account)?.get_password() {
            Ok(token) => Ok(Some(Secret::new(token))),
            Err(keyring::Error::NoEntry) => Ok(None),
            Err(e) => Err(describe(&e)),
        })
    }

    fn delete(&self, account: &str) -> Result<bool, String> {
        let account = account.to_owned();
        with_timeout(move || match entry(&account)?.delete_credential() {
            Ok(()) => Ok(true),
            Err(keyring::Error::NoEntry) => Ok(false),
            Err(e) => Err(describe(&e)),
        })
    }
}

fn entry(account: &str) -> Result<keyring::Entry, String> {
    keyring::Entry::new(KEYRING_SERVICE, account).map_err(|e| {
        match (&e, keyring::Entry::store_status()) {
            // "No default store": say why the keyring could not be opened.
            (keyring::Error::NoDefaultStore, Err(why)) => {
                format!("no OS keyring service is available ({})", describe(why))
            }
            _ => describe(&e),
        }
    })
}

/// A keyring error as text. The variants that carry the stored bytes are
/// named, never printed (their `Debug` would show the secret).
fn describe(e: &keyring::Error) -> String {
    match e {
        keyring::Error::BadEncoding(_) => "the stored token is not UTF-8".into(),
        keyring::Error::BadDataFormat(..) => "the stored token is malformed".into(),
        keyring::Error::Ambiguous(_) => "more than one keyring entry matches".into(),
        other => crate::error::one_line(&other.to_string(), 300),
    }
}

/// Runs a keyring call on its own thread so a hung D-Bus call cannot hang
/// the CLI. On timeout the thread is left behind; the process exits soon.
fn with_timeout<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("keyring".into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(|e| format!("cannot start the keyring thread: {e}"))?;
    rx.recv_timeout(KEYRING_TIMEOUT).unwrap_or_else(|_| {
        Err(format!(
            "the OS keyring did not answer within {}s",
            KEYRING_TIMEOUT.as_secs()
        ))
    })
}

/// What the `credentials` file holds.
#[derive(Serialize, Deserialize)]
struct CredentialsFile {
    account: String,
    token: Secret<String>,
}

/// The token store for one state dir.
pub struct Credentials {
    dir: StateDir,
    mode: StoreMode,
    keyring: Box<dyn Keyring>,
}

impl Credentials {
    pub fn new(dir: StateDir, mode: StoreMode, keyring: Box<dyn Keyring>) -> Self {
        Self { dir, mode, keyring }
    }

    /// Stores `token` for `account`; says where it went.
    pub fn save(&self, account: &str, token: &Secret<String>) -> Result<TokenStore, Error> {
        match self.mode {
            StoreMode::File => self.save_file(account, token),
            StoreMode::Keyring => {
                self.keyring.set(account, token).map_err(|cause| {
                    Error::keyring("cannot store the token in the OS keyring", cause)
                })?;
                self.remove_file()?;
                Ok(TokenStore::Keyring)
            }
            StoreMode::Auto => match self.keyring.set(account, token) {
                Ok(()) => {
                    self.remove_file()?;
                    Ok(TokenStore::Keyring)
                }
                Err(cause) => {
                    tracing::debug!(%cause, "no usable OS keyring; keeping the token in a file");
                    self.save_file(account, token)
                }
            },
        }
    }

    /// The token for `account` from `store`; `Ok(None)` when it is not
    /// there (deleted behind our back, or saved for another account).
    pub fn load(&self, account: &str, store: TokenStore) -> Result<Option<Secret<String>>, Error> {
        match store {
            TokenStore::Keyring => self.keyring.get(account).map_err(|cause| {
                Error::keyring("cannot read the token from the OS keyring", cause)
            }),
            TokenStore::File => self.load_file(account),
        }
    }

    /// Deletes the token for `account` from the keyring (unless the mode is
    /// `file`) and the credentials file. Missing entries are not errors.
    pub fn delete(&self, account: Option<&str>) -> Result<(), Error> {
        if let (Some(account), StoreMode::Auto | StoreMode::Keyring) = (account, self.mode)
            && let Err(cause) = self.keyring.delete(account)
        {
            if self.mode == StoreMode::Keyring {
                return Err(Error::keyring(
                    "cannot delete the token from the OS keyring",
                    cause,
                ));
            }
            // In auto mode a missing keyring service is the usual reason the
            // token went to the file in the first place.
            tracing::debug!(%cause, "could not reach the OS keyring to delete the token");
        }
        self.remove_file()?;
        Ok(())
    }

    /// Deletes only the keyring entry for `account` (nothing in `file`
    /// mode).
    pub fn delete_keyring(&self, account: &str) -> Result<(), Error> {
        if self.mode == StoreMode::File {
            return Ok(());
        }
        self.keyring
            .delete(account)
            .map(|_| ())
            .map_err(|cause| Error::keyring("cannot delete the token from the OS keyring", cause))
    }

    fn save_file(&self, account: &str, token: &Secret<String>) -> Result<TokenStore, Error> {
        let body = CredentialsFile {
            account: account.to_owned(),
            token: token.clone(),
        };
        // Serialising a struct of strings cannot fail.
        let mut json = serde_json::to_vec(&body).unwrap_or_default();
        json.push(b'\n');
        state::write_private(&self.dir, CREDENTIALS_FILE, &json)?;
        Ok(TokenStore::File)
    }

    fn load_file(&self, account: &str) -> Result<Option<Secret<String>>, Error> {
        let path = self.dir.credentials_file();
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::local(format!("cannot read {}", path.display()), e)),
        };
        warn_if_readable_by_others(&path);
        // Never show serde's message: it may quote the file, i.e. the token.
        let file: CredentialsFile =
            serde_json::from_slice(&bytes).map_err(|_| Error::damaged(&path))?;
        Ok((file.account == account).then_some(file.token))
    }

    fn remove_file(&self) -> Result<(), Error> {
        state::remove_file(&self.dir.credentials_file()).map(|_| ())
    }
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            eprintln!(
                "warning: {} is readable by others (mode {mode:o}); run chmod 600 on it, or log in again",
                path.display()
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &std::path::Path) {}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use super::*;

    /// A keyring in memory.
    #[derive(Default)]
    pub(crate) struct MemoryKeyring(pub(crate) Mutex<HashMap<String, String>>);

    impl Keyring for MemoryKeyring {
        fn set(&self, account: &str, secret: &Secret<String>) -> Result<(), String> {
            self.0
                .lock()
                .unwrap()
                .insert(account.into(), secret.expose().clone());
            Ok(())
        }
        fn get(&self, account: &str) -> Result<Option<Secret<String>>, String> {
            Ok(self
                .0
                .lock()
                .unwrap()
                .get(account)
                .cloned()
                .map(Secret::new))
        }
        fn delete(&self, account: &str) -> Result<bool, String> {
            Ok(self.0.lock().unwrap().remove(account).is_some())
        }
    }

    /// No keyring service at all, as on CI.
    pub(crate) struct NoKeyring;

    impl Keyring for NoKeyring {
        fn set(&self, _: &str, _: &Secret<String>) -> Result<(), String> {
            Err("no Secret Service on the session bus".into())
        }
        fn get(&self, _: &str) -> Result<Option<Secret<String>>, String> {
            Err("no Secret Service on the session bus".into())
        }
        fn delete(&self, _: &str) -> Result<bool, String> {
            Err("no Secret Service on the session bus".into())
        }
    }

    const ACCOUNT: &str = "alice@https://127.0.0.1:8443";

    fn token() -> Secret<String> {
        Secret::new("tok-3f9a-very-secret".into())
    }

    #[cfg(unix)]
    fn mode(path: &std::path::Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn auto_falls_back_to_a_0600_file_without_a_keyring() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::new(tmp.path().join("state"));
        let creds = Credentials::new(dir.clone(), StoreMode::Auto, Box::new(NoKeyring));
        assert_eq!(creds.save(ACCOUNT, &token()).unwrap(), TokenStore::File);
        #[cfg(unix)]
        assert_eq!(mode(&dir.credentials_file()), 0o600);
        let back = creds.load(ACCOUNT, TokenStore::File).unwrap().unwrap();
        assert_eq!(back.expose(), token().expose());
        // Another account's token is not handed out.
        assert!(
            creds
                .load("bob@https://x", TokenStore::File)
                .unwrap()
                .is_none()
        );
        creds.delete(Some(ACCOUNT)).unwrap();
        assert!(!dir.credentials_file().exists());
        assert!(creds.load(ACCOUNT, TokenStore::File).unwrap().is_none());
    }

    #[test]
    fn auto_prefers_the_keyring_and_leaves_no_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::new(tmp.path());
        // A file from an earlier fallback login must not linger.
        Credentials::new(dir.clone(), StoreMode::File, Box::new(NoKeyring))
            .save(ACCOUNT, &token())
            .unwrap();
        let creds = Credentials::new(
            dir.clone(),
            StoreMode::Auto,
            Box::new(MemoryKeyring::default()),
        );
        assert_eq!(creds.save(ACCOUNT, &token()).unwrap(), TokenStore::Keyring);
        assert!(!dir.credentials_file().exists());
        let back = creds.load(ACCOUNT, TokenStore::Keyring).unwrap().unwrap();
        assert_eq!(back.expose(), token().expose());
        creds.delete(Some(ACCOUNT)).unwrap();
        assert!(creds.load(ACCOUNT, TokenStore::Keyring).unwrap().is_none());
        // Idempotent.
        creds.delete(Some(ACCOUNT)).unwrap();
    }

    #[test]
    fn forced_keyring_fails_loudly_and_forced_file_never_asks_the_keyring() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::new(tmp.path());
        let creds = Credentials::new(dir.clone(), StoreMode::Keyring, Box::new(NoKeyring));
        let err = creds.save(ACCOUNT, &token()).unwrap_err().report();
        assert!(err.contains("MCPGATE_CREDENTIAL_STORE=file"), "{err}");
        assert!(!err.contains("very-secret"));
        assert!(!dir.credentials_file().exists());

        struct PanicKeyring;
        impl Keyring for PanicKeyring {
            fn set(&self, _: &str, _: &Secret<String>) -> Result<(), String> {
                panic!("file mode asked the keyring")
            }
            fn get(&self, _: &str) -> Result<Option<Secret<String>>, String> {
                panic!("file mode asked the keyring")
            }
            fn delete(&self, _: &str) -> Result<bool, String> {
                panic!("file mode asked the keyring")
            }
        }
        let creds = Credentials::new(dir.clone(), StoreMode::File, Box::new(PanicKeyring));
        assert_eq!(creds.save(ACCOUNT, &token()).unwrap(), TokenStore::File);
        creds.delete(Some(ACCOUNT)).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn credentials_file_is_0600_even_when_replacing_a_wider_one() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::new(tmp.path());
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::write(dir.credentials_file(), "old").unwrap();
            std::fs::set_permissions(
                dir.credentials_file(),
                std::fs::Permissions::from_mode(0o644),
            )
            .unwrap();
        }
        let creds = Credentials::new(dir.clone(), StoreMode::File, Box::new(NoKeyring));
        creds.save(ACCOUNT, &token()).unwrap();
        assert_eq!(mode(&dir.credentials_file()), 0o600);
    }

    #[test]
    fn a_damaged_file_error_does_not_quote_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::new(tmp.path());
        std::fs::write(
            dir.credentials_file(),
            r#"{"account":"a","token":42, "x": "tok-3f9a-very-secret"}"#,
        )
        .unwrap();
        let creds = Credentials::new(dir, StoreMode::File, Box::new(NoKeyring));
        let err = creds.load(ACCOUNT, TokenStore::File).unwrap_err();
        assert!(!format!("{err} {err:?}").contains("very-secret"));
    }

    #[test]
    fn store_mode_values() {
        assert_eq!(StoreMode::parse(None).unwrap(), StoreMode::Auto);
        assert_eq!(StoreMode::parse(Some("auto")).unwrap(), StoreMode::Auto);
        assert_eq!(
            StoreMode::parse(Some("keyring")).unwrap(),
            StoreMode::Keyring
        );
        assert_eq!(StoreMode::parse(Some("file")).unwrap(), StoreMode::File);
        let err = StoreMode::parse(Some("vault")).unwrap_err();
        assert_eq!(err.exit_code(), crate::error::exit::USAGE);
    }
}
