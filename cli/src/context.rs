//! What every subcommand starts from: the state dir, the token store, and
//! — for the commands that talk to the broker — the current login.

use mcpgate_shared::secret::Secret;

use crate::client::ApiClient;
use crate::credentials::{Credentials, OsKeyring, StoreMode};
use crate::error::Error;
use crate::state::{self, State, StateDir};

pub struct Context {
    pub dir: StateDir,
    pub credentials: Credentials,
}

/// A usable login: its state and its token.
pub struct Login {
    pub state: State,
    pub token: Secret<String>,
}

impl Context {
    /// The state dir and credential store chosen by the environment.
    pub fn from_env() -> Result<Self, Error> {
        let dir = StateDir::from_env()?;
        let mode = StoreMode::from_env()?;
        Ok(Self::new(
            dir.clone(),
            Credentials::new(dir, mode, Box::new(OsKeyring)),
        ))
    }

    pub fn new(dir: StateDir, credentials: Credentials) -> Self {
        Self { dir, credentials }
    }

    /// The current login, checked locally — no network: not logged in and
    /// expired are reported before anything is sent.
    pub fn require_login(&self) -> Result<Login, Error> {
        let Some(state) = State::load(&self.dir)? else {
            return Err(Error::NotLoggedIn { reason: None });
        };
        if state.expired(state::now()) {
            return Err(Error::expired_locally(Some(state.relogin())));
        }
        match self.credentials.load(&state.account(), state.token_store)? {
            Some(token) => Ok(Login { state, token }),
            None => Err(Error::NotLoggedIn {
                reason: Some(format!(
                    "no token in {}",
                    state.token_store.describe(&self.dir)
                )),
            }),
        }
    }
}

impl Login {
    /// An API client for this login's broker, carrying its token.
    pub fn client(&self) -> Result<ApiClient, Error> {
        Ok(
            ApiClient::new(&self.state.broker, self.state.ca_pem.as_deref())?
                .with_token(self.token.clone(), self.state.relogin()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::tests::NoKeyring;
    use crate::error::exit;
    use crate::state::TokenStore;

    fn context(tmp: &tempfile::TempDir) -> Context {
        let dir = StateDir::new(tmp.path());
        Context::new(
            dir.clone(),
            Credentials::new(dir, StoreMode::File, Box::new(NoKeyring)),
        )
    }

    fn state(expires_at: u64) -> State {
        State {
            broker: "https://127.0.0.1:8443".parse().unwrap(),
            ca_pem: None,
            user: "alice".parse().unwrap(),
            roles: vec![],
            expires_at,
            token_store: TokenStore::File,
        }
    }

    #[test]
    fn not_logged_in_expired_and_missing_token_are_told_apart() {
        let tmp = tempfile::tempdir().unwrap();
        let ctx = context(&tmp);
        let code = |ctx: &Context| ctx.require_login().err().map(|e| e.exit_code());
        assert_eq!(code(&ctx), Some(exit::NOT_LOGGED_IN));

        let expired = state(state::now() - 1);
        expired.save(&ctx.dir).unwrap();
        let err = ctx.require_login().err().unwrap();
        assert_eq!(err.exit_code(), exit::TOKEN_REJECTED);
        assert!(err.report().contains("--user alice"), "{}", err.report());

        let live = state(state::now() + 3600);
        live.save(&ctx.dir).unwrap();
        assert_eq!(code(&ctx), Some(exit::NOT_LOGGED_IN));

        ctx.credentials
            .save(&live.account(), &Secret::new("t".into()))
            .unwrap();
        let login = ctx.require_login().unwrap();
        assert_eq!(login.token.expose(), "t");
    }
}
