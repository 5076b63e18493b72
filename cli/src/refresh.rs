//! Renewing an OpenID Connect login without racing other `mcpgate`
//! processes.
//!
//! MCP clients start several `mcpgate connect` at once, and the identity
//! provider rotates refresh tokens: a refresh token used twice revokes the
//! whole grant. So a renewal runs under an exclusive lock on `refresh.lock`
//! in the state dir, and under that lock the stored tokens are read again:
//! when another process has renewed them in the meantime, those are used
//! and the provider is not asked. Otherwise the provider is asked, and the
//! answer (with the rotated refresh token) is **stored before the new
//! token is used**, so a crash after the renewal cannot lose the only
//! valid refresh token.
//!
//! The provider itself is a closure here ([`Refresher`]), so the locking
//! is tested without one.

use std::fs::{File, OpenOptions, TryLockError};
use std::future::Future;
use std::time::{Duration, Instant};

use mcpgate_shared::secret::Secret;

use crate::context::Context;
use crate::error::Error;
use crate::state::{self, State, StateDir};
use crate::token::OidcTokens;

/// How long to wait for another process's renewal before giving up.
const LOCK_TIMEOUT: Duration = Duration::from_secs(90);
const LOCK_POLL: Duration = Duration::from_millis(50);

/// Why a renewal is being considered.
#[derive(Debug, Clone)]
pub enum Reason {
    /// Before a call: renew if the refresh rule says so.
    Due,
    /// Before a session request: always renew, so that the broker sees the
    /// person's groups as the provider has them now — unless another
    /// process renewed the tokens while this one waited for the lock
    /// (several `mcpgate connect` started together renew once).
    NewSession,
    /// The broker refused this token as expired: renew unless another
    /// process already replaced it.
    Refused(Secret<String>),
}

/// Asks the identity provider for new tokens, given the stored ones (which
/// hold a refresh token).
pub trait Refresher {
    fn refresh(self, stored: OidcTokens) -> impl Future<Output = Result<OidcTokens, Error>>;
}

impl<F, Fut> Refresher for F
where
    F: FnOnce(OidcTokens) -> Fut,
    Fut: Future<Output = Result<OidcTokens, Error>>,
{
    fn refresh(self, stored: OidcTokens) -> impl Future<Output = Result<OidcTokens, Error>> {
        self(stored)
    }
}

/// An exclusive lock on `refresh.lock`, released when dropped (the file is
/// closed).
pub struct RefreshLock {
    _file: File,
}

impl RefreshLock {
    /// Waits (without blocking the runtime) until this process holds the
    /// lock, or gives up after `timeout`.
    pub async fn acquire(dir: &StateDir, timeout: Duration) -> Result<Self, Error> {
        dir.create()?;
        let path = dir.refresh_lock_file();
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options
            .open(&path)
            .map_err(|e| Error::local(format!("cannot open {}", path.display()), e))?;
        let started = Instant::now();
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(Self { _file: file }),
                Err(TryLockError::WouldBlock) if started.elapsed() < timeout => {
                    tokio::time::sleep(LOCK_POLL).await;
                }
                Err(TryLockError::WouldBlock) => {
                    return Err(Error::Local {
                        what: format!(
                            "another mcpgate held {} for more than {}s while renewing the login",
                            path.display(),
                            timeout.as_secs()
                        ),
                        cause: "gave up waiting".into(),
                        hint: "try again; if it keeps happening, stop the other mcpgate processes",
                    });
                }
                Err(TryLockError::Error(e)) => {
                    return Err(Error::local(format!("cannot lock {}", path.display()), e));
                }
            }
        }
    }
}

/// The tokens to present now: `current` when it is good, else renewed ones
/// (by this process or, found under the lock, by another). Updates `state`
/// (expiry, store) and saves it when it renews.
pub async fn fresh_tokens(
    ctx: &Context,
    state: &mut State,
    current: OidcTokens,
    reason: Reason,
    refresher: impl Refresher,
) -> Result<OidcTokens, Error> {
    if matches!(reason, Reason::Due) && !current.needs_refresh(state::now()) {
        return Ok(current);
    }
    let _lock = RefreshLock::acquire(&ctx.dir, LOCK_TIMEOUT).await?;

    // Read again under the lock: another process may have renewed them
    // (or logged out: then there is nothing to renew).
    let Some(stored) = load(ctx, state)? else {
        return Err(Error::NotLoggedIn {
            reason: Some("the login was removed while it was being renewed".into()),
        });
    };
    let now = state::now();
    let replaced_by_another = match &reason {
        Reason::Due => true,
        Reason::NewSession => stored.token != current.token,
        Reason::Refused(refused) => stored.token != *refused,
    };
    drop(current);
    if replaced_by_another && !stored.needs_refresh(now) {
        tracing::debug!("using tokens another process renewed");
        sync_state(ctx, state, &stored)?;
        return Ok(stored);
    }
    if stored.refresh_token.is_none() {
        // A saved CI token: nothing to renew with. Use it while it lasts.
        if stored.expired(now) || matches!(reason, Reason::Refused(_)) {
            return Err(Error::expired_locally(Some(state.relogin())));
        }
        return Ok(stored);
    }

    tracing::debug!("renewing the login at the identity provider");
    let mut renewed = match refresher.refresh(stored.clone()).await {
        Ok(renewed) => renewed,
        // A provider that is down must not stop a token that still works:
        // the broker decides whether it is fresh enough.
        Err(e @ Error::IdpUnreachable { .. })
            if matches!(reason, Reason::Due | Reason::NewSession) && !stored.expired(now) =>
        {
            eprintln!(
                "warning: could not renew the login ({}); using the current token until it expires",
                crate::error::one_line(&e.to_string(), 300)
            );
            return Ok(stored);
        }
        Err(e) => return Err(e),
    };
    if renewed.refresh_token.is_none() {
        // The provider does not rotate: the old refresh token stays good.
        renewed.refresh_token = stored.refresh_token;
    }
    // Stored before it is used: the old refresh token is now spent.
    save(ctx, state, &renewed)?;
    Ok(renewed)
}

/// The stored tokens for `state`'s login, if any.
pub fn load(ctx: &Context, state: &State) -> Result<Option<OidcTokens>, Error> {
    let place = state.token_store.describe(&ctx.dir);
    ctx.credentials
        .load(&state.account(), state.token_store)?
        .map(|secret| OidcTokens::from_secret(&secret, &place))
        .transpose()
}

/// Stores `tokens` for `state`'s login, then the state that points at them.
pub fn save(ctx: &Context, state: &mut State, tokens: &OidcTokens) -> Result<(), Error> {
    let store = ctx
        .credentials
        .save(&state.account(), &tokens.to_secret())?;
    state.token_store = store;
    state.expires_at = tokens.expires_at;
    if let crate::state::LoginKind::Oidc(oidc) = &mut state.login {
        oidc.refresh_token = tokens.refresh_token.is_some();
    }
    state.save(&ctx.dir)
}

/// Brings this process's copy of the state in line with tokens another
/// process stored (it saved the state file too; only memory is behind).
fn sync_state(ctx: &Context, state: &mut State, tokens: &OidcTokens) -> Result<(), Error> {
    if let Some(saved) = State::load(&ctx.dir)? {
        *state = saved;
    }
    state.expires_at = tokens.expires_at;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::credentials::tests::NoKeyring;
    use crate::credentials::{Credentials, StoreMode};

    fn context(dir: &std::path::Path) -> Context {
        let dir = StateDir::new(dir);
        Context::new(
            dir.clone(),
            Credentials::new(dir, StoreMode::File, Box::new(NoKeyring)),
        )
    }

    fn tokens(name: &str, issued_at: u64, refresh: Option<&str>) -> OidcTokens {
        OidcTokens::new(
            Secret::new(name.into()),
            issued_at + 600,
            issued_at,
            refresh.map(|r| Secret::new(r.into())),
        )
    }

    /// A logged-in state whose stored token is `stale` (issued ten minutes
    /// ago) with refresh token `rt-1`.
    fn logged_in(ctx: &Context) -> (State, OidcTokens) {
        let mut state = crate::state::tests::sample_oidc();
        let stale = tokens("t-old", state::now() - 600, Some("rt-1"));
        save(ctx, &mut state, &stale).unwrap();
        (state, stale)
    }

    async fn never(_: OidcTokens) -> Result<OidcTokens, Error> {
        panic!("asked the identity provider")
    }

    /// A refresher that counts its calls, takes a while (so the callers
    /// overlap), rotates the refresh token, and refuses a spent one — as
    /// oidc-provider does.
    #[derive(Clone, Default)]
    struct FakeIdp {
        calls: Arc<AtomicUsize>,
    }

    impl FakeIdp {
        async fn refresh(self, stored: OidcTokens) -> Result<OidcTokens, Error> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            let presented = stored.refresh_token.as_ref().unwrap().expose().clone();
            tokio::time::sleep(Duration::from_millis(150)).await;
            if presented != format!("rt-{n}") {
                return Err(Error::TokenRejected {
                    why: "invalid_grant: refresh token replayed".into(),
                    relogin: None,
                    expired: false,
                });
            }
            Ok(tokens(
                &format!("t-{}", n + 1),
                state::now(),
                Some(&format!("rt-{}", n + 1)),
            ))
        }
    }

    #[tokio::test]
    async fn fresh_tokens_are_used_without_asking_the_provider() {
        let tmp = tempfile::tempdir().unwrap();
        let ctx = context(tmp.path());
        let mut state = crate::state::tests::sample_oidc();
        let fresh = tokens("t-1", state::now(), Some("rt-1"));
        let got = fresh_tokens(&ctx, &mut state, fresh.clone(), Reason::Due, never)
            .await
            .unwrap();
        assert_eq!(got, fresh);
        // No lock file either: nothing was even considered.
        assert!(!ctx.dir.refresh_lock_file().exists());
    }

    #[tokio::test]
    async fn concurrent_renewals_ask_the_provider_once_and_store_the_rotated_token() {
        let tmp = tempfile::tempdir().unwrap();
        let idp = FakeIdp::default();
        let (state, stale) = logged_in(&context(tmp.path()));

        // Four "processes": each with its own context and its own copy of
        // what it read before the race.
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let dir = tmp.path().to_owned();
            let (mut state, stale, idp) = (state.clone(), stale.clone(), idp.clone());
            tasks.push(tokio::spawn(async move {
                let ctx = context(&dir);
                let got = fresh_tokens(&ctx, &mut state, stale, Reason::Due, |t| idp.refresh(t))
                    .await
                    .unwrap();
                (got, state)
            }));
        }
        for task in tasks {
            let (got, state) = task.await.unwrap();
            assert_eq!(got.token.expose(), "t-2");
            assert_eq!(got.refresh_token.unwrap().expose(), "rt-2");
            assert_eq!(state.expires_at, got.expires_at);
        }
        assert_eq!(idp.calls.load(Ordering::SeqCst), 1);

        // What is stored is the rotated pair, and the state agrees.
        let ctx = context(tmp.path());
        let saved = State::load(&ctx.dir).unwrap().unwrap();
        let stored = load(&ctx, &saved).unwrap().unwrap();
        assert_eq!(stored.refresh_token.unwrap().expose(), "rt-2");
        assert_eq!(saved.expires_at, stored.expires_at);
        assert!(saved.renewable());
    }

    #[tokio::test]
    async fn a_new_session_renews_even_a_fresh_token_but_concurrent_ones_renew_once() {
        let tmp = tempfile::tempdir().unwrap();
        let idp = FakeIdp::default();
        let (state, stale) = logged_in(&context(tmp.path()));
        let mut tasks = Vec::new();
        for _ in 0..3 {
            let dir = tmp.path().to_owned();
            let (mut state, stale, idp) = (state.clone(), stale.clone(), idp.clone());
            tasks.push(tokio::spawn(async move {
                let ctx = context(&dir);
                fresh_tokens(&ctx, &mut state, stale, Reason::NewSession, |t| {
                    idp.refresh(t)
                })
                .await
                .unwrap()
            }));
        }
        for task in tasks {
            assert_eq!(task.await.unwrap().token.expose(), "t-2");
        }
        assert_eq!(idp.calls.load(Ordering::SeqCst), 1);

        // The next session renews again although t-2 is brand new: the
        // broker must see the groups the provider has now.
        let ctx = context(tmp.path());
        let mut state = State::load(&ctx.dir).unwrap().unwrap();
        let current = load(&ctx, &state).unwrap().unwrap();
        assert!(!current.needs_refresh(state::now()));
        let second = idp.clone();
        let got = fresh_tokens(&ctx, &mut state, current, Reason::NewSession, |t| {
            second.refresh(t)
        })
        .await
        .unwrap();
        assert_eq!(got.token.expose(), "t-3");
        assert_eq!(idp.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_token_the_broker_refused_is_renewed_even_when_it_looks_fresh() {
        let tmp = tempfile::tempdir().unwrap();
        let ctx = context(tmp.path());
        let idp = FakeIdp::default();
        let mut state = crate::state::tests::sample_oidc();
        let fresh = tokens("t-1", state::now(), Some("rt-1"));
        save(&ctx, &mut state, &fresh).unwrap();

        let refused = Reason::Refused(fresh.token.clone());
        let got = fresh_tokens(&ctx, &mut state, fresh.clone(), refused.clone(), |t| {
            idp.clone().refresh(t)
        })
        .await
        .unwrap();
        assert_eq!(got.token.expose(), "t-2");
        assert_eq!(idp.calls.load(Ordering::SeqCst), 1);

        // A second process that was refused the same old token finds the
        // renewed one under the lock and does not spend rt-2.
        let mut other = crate::state::tests::sample_oidc();
        let got = fresh_tokens(&ctx, &mut other, fresh, refused, |t| idp.clone().refresh(t))
            .await
            .unwrap();
        assert_eq!(got.token.expose(), "t-2");
        assert_eq!(idp.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_failed_renewal_keeps_the_stored_tokens_and_says_log_in_again() {
        let tmp = tempfile::tempdir().unwrap();
        let ctx = context(tmp.path());
        let (mut state, stale) = logged_in(&ctx);
        let err = fresh_tokens(&ctx, &mut state, stale, Reason::Due, |_| async {
            Err::<OidcTokens, _>(Error::TokenRejected {
                why: "the identity provider will not renew the login (invalid_grant)".into(),
                relogin: Some("mcpgate login --broker https://b --issuer corp".into()),
                expired: false,
            })
        })
        .await
        .unwrap_err();
        assert_eq!(err.exit_code(), crate::error::exit::TOKEN_REJECTED);
        assert!(
            err.report().contains("mcpgate login --broker"),
            "{}",
            err.report()
        );
        let stored = load(&ctx, &state).unwrap().unwrap();
        assert_eq!(stored.token.expose(), "t-old");
    }

    #[tokio::test]
    async fn without_a_refresh_token_a_live_token_is_used_and_an_expired_one_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let ctx = context(tmp.path());
        let mut state = crate::state::tests::sample_oidc();
        // Issued six minutes ago, four minutes left: due, but nothing to
        // renew with.
        let old = tokens("t-ci", state::now() - 360, None);
        save(&ctx, &mut state, &old).unwrap();
        let got = fresh_tokens(&ctx, &mut state, old, Reason::Due, never)
            .await
            .unwrap();
        assert_eq!(got.token.expose(), "t-ci");

        let expired = tokens("t-ci", state::now() - 700, None);
        save(&ctx, &mut state, &expired).unwrap();
        let err = fresh_tokens(&ctx, &mut state, expired, Reason::Due, never)
            .await
            .unwrap_err();
        assert_eq!(err.exit_code(), crate::error::exit::TOKEN_REJECTED);
        assert!(err.report().contains("--issuer corp"), "{}", err.report());
    }

    #[tokio::test]
    async fn an_unreachable_provider_leaves_a_live_token_in_use() {
        let tmp = tempfile::tempdir().unwrap();
        let ctx = context(tmp.path());
        let (mut state, stale) = logged_in(&ctx);
        let unreachable = |_| async {
            Err::<OidcTokens, _>(Error::IdpUnreachable {
                url: "https://idp".into(),
                cause: "connection refused".into(),
            })
        };
        // Issued ten minutes ago, not yet expired: used as it is.
        let live = OidcTokens {
            expires_at: state::now() + 60,
            ..stale.clone()
        };
        save(&ctx, &mut state, &live).unwrap();
        let got = fresh_tokens(&ctx, &mut state, live, Reason::Due, unreachable)
            .await
            .unwrap();
        assert_eq!(got.token.expose(), "t-old");
        // Expired: the failure is the answer.
        let expired = OidcTokens {
            expires_at: state::now() - 1,
            ..stale
        };
        save(&ctx, &mut state, &expired).unwrap();
        let err = fresh_tokens(&ctx, &mut state, expired, Reason::Due, unreachable)
            .await
            .unwrap_err();
        assert_eq!(err.exit_code(), crate::error::exit::UNREACHABLE);
    }

    #[tokio::test]
    async fn the_lock_gives_up_after_its_timeout() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::new(tmp.path());
        let held = RefreshLock::acquire(&dir, LOCK_TIMEOUT).await.unwrap();
        let err = RefreshLock::acquire(&dir, Duration::from_millis(120))
            .await
            .err()
            .unwrap();
        assert!(err.report().contains("another mcpgate"), "{}", err.report());
        drop(held);
        RefreshLock::acquire(&dir, Duration::from_millis(120))
            .await
            .unwrap();
    }
}
