//! What every subcommand starts from: the state dir, the token store, and
//! — for the commands that talk to the broker — the current login, with a
//! token fresh enough to present.
//!
//! Three kinds of login end up here: a password login (the broker's token,
//! used until it expires), an OpenID Connect login (renewed with its
//! refresh token under the rules of `token.rs`, under the lock of
//! `refresh.rs`), and CI mode (`MCPGATE_CI=1`: a token from the CI sources
//! of `ci.rs`, fetched for this one command and never stored).

use std::future::Future;

use mcpgate_shared::api::WhoAmI;
use mcpgate_shared::secret::Secret;

use crate::client::ApiClient;
use crate::credentials::{Credentials, OsKeyring, StoreMode};
use crate::error::Error;
use crate::oidc::{Grant, Idp};
use crate::refresh::{self, Reason};
use crate::state::{self, LoginKind, State, StateDir};
use crate::token::OidcTokens;
use crate::{ci, env};

pub struct Context {
    pub dir: StateDir,
    pub credentials: Credentials,
}

/// A usable login: its state and its token.
pub struct Login {
    pub state: State,
    pub token: Secret<String>,
    /// Set in CI mode, where logging in already asked the broker.
    pub whoami: Option<WhoAmI>,
    /// The stored tokens of an OpenID Connect login (for a renewal).
    oidc: Option<OidcTokens>,
    /// What to suggest when the broker refuses the token.
    relogin: String,
    /// Unix seconds: when this process got the token (CI tokens have no
    /// other record of their age).
    obtained_at: u64,
}

impl Context {
    /// The state dir and credential store chosen by the environment. In CI
    /// mode a missing home directory is no error: nothing is written there.
    pub fn from_env() -> Result<Self, Error> {
        let dir = match StateDir::from_env() {
            Ok(dir) => dir,
            Err(_) if env::ci_mode().unwrap_or(false) => {
                StateDir::new(std::env::temp_dir().join("mcpgate-ci-no-state"))
            }
            Err(e) => return Err(e),
        };
        let mode = StoreMode::from_env()?;
        Ok(Self::new(
            dir.clone(),
            Credentials::new(dir, mode, Box::new(OsKeyring)),
        ))
    }

    pub fn new(dir: StateDir, credentials: Credentials) -> Self {
        Self { dir, credentials }
    }

    /// The login to call the broker with: from the CI sources in CI mode,
    /// else the stored one — renewed first when it is an OpenID Connect
    /// login that is due (this may ask the identity provider).
    pub async fn login(&self) -> Result<Login, Error> {
        self.login_renewing(Reason::Due).await
    }

    /// The login for a session request: an OpenID Connect login is renewed
    /// now (see [`Reason::NewSession`]), because the broker takes the roles
    /// from the groups in the token it is shown.
    pub async fn login_for_session(&self) -> Result<Login, Error> {
        self.login_renewing(Reason::NewSession).await
    }

    async fn login_renewing(&self, reason: Reason) -> Result<Login, Error> {
        if env::ci_mode()? {
            return ci::login_from_env().await;
        }
        let mut login = self.stored_login()?;
        if let Some(tokens) = login.oidc.take() {
            let tokens = renew(self, &mut login.state, tokens, reason).await?;
            login.token = tokens.token.clone();
            login.oidc = Some(tokens);
        }
        Ok(login)
    }

    /// The stored login, checked locally — no network: not logged in and
    /// expired are reported before anything is sent. An OpenID Connect
    /// token that expired but can be renewed is not an error here.
    pub fn stored_login(&self) -> Result<Login, Error> {
        let Some(state) = State::load(&self.dir)? else {
            return Err(Error::NotLoggedIn { reason: None });
        };
        if state.expired(state::now()) && !state.renewable() {
            return Err(Error::expired_locally(Some(state.relogin())));
        }
        let Some(secret) = self.credentials.load(&state.account(), state.token_store)? else {
            return Err(Error::NotLoggedIn {
                reason: Some(format!(
                    "no token in {}",
                    state.token_store.describe(&self.dir)
                )),
            });
        };
        match state.login {
            LoginKind::Password => Ok(Login::new(state, secret)),
            LoginKind::Oidc(_) => {
                let tokens =
                    OidcTokens::from_secret(&secret, &state.token_store.describe(&self.dir))?;
                Ok(Login {
                    token: tokens.token.clone(),
                    relogin: state.relogin(),
                    state,
                    whoami: None,
                    oidc: Some(tokens),
                    obtained_at: state::now(),
                })
            }
        }
    }
}

/// Renews `tokens` when `reason` says so, asking the provider named in
/// `state`.
async fn renew(
    ctx: &Context,
    state: &mut State,
    tokens: OidcTokens,
    reason: Reason,
) -> Result<OidcTokens, Error> {
    let Some(oidc) = state.oidc().cloned() else {
        return Ok(tokens);
    };
    let ca_pem = state.ca_pem.clone();
    let relogin = state.relogin();
    refresh::fresh_tokens(
        ctx,
        state,
        tokens,
        reason,
        move |stored: OidcTokens| async move {
            let Some(client_id) = oidc.client_id.as_deref() else {
                return Err(Error::expired_locally(Some(relogin)));
            };
            let idp = Idp::discover(&oidc.issuer, ca_pem.as_deref()).await?;
            let grant = Grant {
                client_id,
                resource: oidc.resource.as_deref(),
                scopes: &oidc.scopes,
            };
            idp.refresh(&grant, &stored, &relogin).await
        },
    )
    .await
}

impl Login {
    /// A login with the broker's own token (password logins, tests).
    pub fn new(state: State, token: Secret<String>) -> Self {
        Self {
            relogin: state.relogin(),
            state,
            token,
            whoami: None,
            oidc: None,
            obtained_at: state::now(),
        }
    }

    /// A CI mode login: nothing stored, nothing to renew.
    pub fn ci(state: State, token: Secret<String>, whoami: WhoAmI) -> Self {
        Self {
            state,
            token,
            whoami: Some(whoami),
            oidc: None,
            relogin: ci::RELOGIN.into(),
            obtained_at: state::now(),
        }
    }

    /// Between the calls of a long-running command (`approvals --watch`,
    /// `request-access --wait`): renews an OpenID Connect login that is
    /// due by the rule of `token.rs`, and in CI mode logs in again from the
    /// CI sources by the same rule (a token file may have rotated). A
    /// password login is kept as it is: it cannot be renewed, and the
    /// broker says when it expires.
    pub async fn keep_fresh(&mut self, ctx: &Context) -> Result<(), Error> {
        if let Some(tokens) = self.oidc.take() {
            let tokens = renew(ctx, &mut self.state, tokens, Reason::Due).await?;
            self.token = tokens.token.clone();
            self.oidc = Some(tokens);
        } else if self.whoami.is_some()
            && crate::token::needs_refresh(self.state.expires_at, self.obtained_at, state::now())
        {
            tracing::debug!("logging in again from the CI sources");
            *self = ci::login_from_env().await?;
        }
        Ok(())
    }

    /// An API client for this login's broker, carrying its token.
    pub fn client(&self) -> Result<ApiClient, Error> {
        Ok(
            ApiClient::new(&self.state.broker, self.state.ca_pem.as_deref())?
                .with_token(self.token.clone(), self.relogin.clone()),
        )
    }

    /// Runs `call` against the broker. When the broker answers
    /// `token_expired` to a stored OpenID Connect login, the login is
    /// renewed once (unless another process already did) and `call` runs
    /// again.
    pub async fn call<T, F, Fut>(&mut self, ctx: &Context, call: F) -> Result<T, Error>
    where
        F: Fn(ApiClient) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        match call(self.client()?).await {
            Err(e) if e.is_token_expired() && self.oidc.is_some() => {
                tracing::debug!("the broker says the token expired; renewing once");
                let tokens = self.oidc.take().unwrap_or_else(|| unreachable!());
                let refused = Reason::Refused(self.token.clone());
                let tokens = renew(ctx, &mut self.state, tokens, refused).await?;
                self.token = tokens.token.clone();
                self.oidc = Some(tokens);
                call(self.client()?).await
            }
            other => other,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::credentials::tests::NoKeyring;
    use crate::error::exit;
    use crate::state::TokenStore;

    pub(crate) fn context(tmp: &tempfile::TempDir) -> Context {
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
            login: LoginKind::Password,
        }
    }

    #[test]
    fn not_logged_in_expired_and_missing_token_are_told_apart() {
        let tmp = tempfile::tempdir().unwrap();
        let ctx = context(&tmp);
        let code = |ctx: &Context| ctx.stored_login().err().map(|e| e.exit_code());
        assert_eq!(code(&ctx), Some(exit::NOT_LOGGED_IN));

        let expired = state(state::now() - 1);
        expired.save(&ctx.dir).unwrap();
        let err = ctx.stored_login().err().unwrap();
        assert_eq!(err.exit_code(), exit::TOKEN_REJECTED);
        assert!(err.report().contains("--user alice"), "{}", err.report());

        let live = state(state::now() + 3600);
        live.save(&ctx.dir).unwrap();
        assert_eq!(code(&ctx), Some(exit::NOT_LOGGED_IN));

        ctx.credentials
            .save(&live.account(), &Secret::new("t".into()))
            .unwrap();
        let login = ctx.stored_login().unwrap();
        assert_eq!(login.token.expose(), "t");
    }

    #[test]
    fn an_expired_oidc_token_with_a_refresh_token_is_still_a_login() {
        let tmp = tempfile::tempdir().unwrap();
        let ctx = context(&tmp);
        let mut state = crate::state::tests::sample_oidc();
        let expired = OidcTokens::new(
            Secret::new("t-old".into()),
            state::now() - 10,
            state::now() - 610,
            Some(Secret::new("rt".into())),
        );
        refresh::save(&ctx, &mut state, &expired).unwrap();
        let login = ctx.stored_login().unwrap();
        assert_eq!(login.token.expose(), "t-old");
        assert!(login.oidc.is_some());

        // Without a refresh token it is expired, with the way back in.
        let no_refresh = OidcTokens {
            refresh_token: None,
            ..expired
        };
        refresh::save(&ctx, &mut state, &no_refresh).unwrap();
        let err = ctx.stored_login().err().unwrap();
        assert_eq!(err.exit_code(), exit::TOKEN_REJECTED);
        assert!(err.report().contains("--issuer corp"), "{}", err.report());
    }

    #[tokio::test]
    async fn a_password_login_is_not_retried_on_token_expired() {
        let tmp = tempfile::tempdir().unwrap();
        let ctx = context(&tmp);
        let mut login = Login::new(state(u64::MAX), Secret::new("t".into()));
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let err = login
            .call(&ctx, |_| {
                calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async {
                    Err::<(), _>(Error::TokenRejected {
                        why: "token expired".into(),
                        relogin: None,
                        expired: true,
                    })
                }
            })
            .await
            .unwrap_err();
        assert!(err.is_token_expired());
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    /// A stored OpenID Connect login at a stand-in broker (which refuses
    /// `at-1` as expired and accepts `at-2`) and a stand-in provider
    /// (which renews `rt-1` into `at-2`/`rt-2`).
    async fn oidc_setup(
        tmp: &tempfile::TempDir,
        stored: OidcTokens,
    ) -> (Context, crate::testing::FakeIdp, crate::testing::TestPki) {
        use crate::testing::{FakeIdp, TestPki};
        let fake = FakeIdp::start(|r, _| {
            assert_eq!(r.form["refresh_token"], "rt-1", "a spent refresh token was replayed");
            (
                200,
                r#"{"access_token":"at-2","token_type":"Bearer","expires_in":600,"refresh_token":"rt-2"}"#
                    .into(),
            )
        })
        .await;
        let pki = TestPki::new();
        let api = pki
            .listen_api(|_, path, auth, _| match (path, auth) {
                ("/v1/whoami", Some("Bearer at-2")) => (
                    200,
                    r#"{"user":"alice@example.com","roles":["dev"],"issuer":"x","expires_at":4102444800}"#
                        .into(),
                ),
                _ => (
                    401,
                    r#"{"error":"token_expired","message":"token too old"}"#.into(),
                ),
            })
            .await;
        let ctx = context(tmp);
        let mut state = crate::state::tests::sample_oidc();
        state.broker = format!("https://{api}").parse().unwrap();
        state.ca_pem = Some(pki.ca_pem());
        if let LoginKind::Oidc(o) = &mut state.login {
            o.issuer = fake.issuer.clone();
        }
        refresh::save(&ctx, &mut state, &stored).unwrap();
        (ctx, fake, pki)
    }

    #[tokio::test]
    async fn token_expired_from_the_broker_renews_once_and_retries() {
        let tmp = tempfile::tempdir().unwrap();
        let fresh = OidcTokens::new(
            Secret::new("at-1".into()),
            state::now() + 600,
            state::now(),
            Some(Secret::new("rt-1".into())),
        );
        let (ctx, fake, _pki) = oidc_setup(&tmp, fresh).await;
        // Fresh by the rule: no renewal before the call.
        let mut login = ctx.login().await.unwrap();
        assert_eq!(login.token.expose(), "at-1");
        assert!(fake.requests_to("/token").is_empty());

        let who = login
            .call(&ctx, |c| async move { c.whoami().await })
            .await
            .unwrap();
        assert_eq!(who.user.as_str(), "alice@example.com");
        assert_eq!(login.token.expose(), "at-2");
        assert_eq!(fake.requests_to("/token").len(), 1);
        let sent = &fake.requests_to("/token")[0];
        assert_eq!(sent.form["resource"], "urn:mcpgate-broker");

        // The rotated refresh token was stored.
        let state = State::load(&ctx.dir).unwrap().unwrap();
        let stored = refresh::load(&ctx, &state).unwrap().unwrap();
        assert_eq!(stored.refresh_token.unwrap().expose(), "rt-2");
        assert_eq!(stored.token.expose(), "at-2");
    }

    #[tokio::test]
    async fn a_due_login_is_renewed_before_the_call() {
        let tmp = tempfile::tempdir().unwrap();
        let stale = OidcTokens::new(
            Secret::new("at-1".into()),
            state::now() + 300,
            state::now() - 400,
            Some(Secret::new("rt-1".into())),
        );
        let (ctx, fake, _pki) = oidc_setup(&tmp, stale).await;
        let mut login = ctx.login().await.unwrap();
        assert_eq!(login.token.expose(), "at-2");
        login
            .call(&ctx, |c| async move { c.whoami().await })
            .await
            .unwrap();
        assert_eq!(fake.requests_to("/token").len(), 1);
        // The next command finds it fresh and asks nobody.
        let login = ctx.login().await.unwrap();
        assert_eq!(login.token.expose(), "at-2");
        assert_eq!(fake.requests_to("/token").len(), 1);
    }
}
