//! `mcpgate logout`: forget the token (keyring and file) and the state.
//! Idempotent: logging out twice, or without a login, succeeds.
//!
//! For an OpenID Connect login the refresh token is first revoked at the
//! identity provider (RFC 7009), when it has a revocation endpoint: best
//! effort, a failure is a warning and the local state goes anyway. The
//! token presented to the broker is not revocable there; it stays valid
//! until it expires (minutes). The broker's own tokens likewise stay valid
//! at the broker until they expire; logout makes this machine forget them.

use crate::context::Context;
use crate::error::{Error, one_line};
use crate::oidc::Idp;
use crate::refresh;
use crate::state::State;

pub async fn run(ctx: &Context) -> Result<(), Error> {
    // A damaged state file must not stop a logout: delete what can be found.
    let state = State::load(&ctx.dir).unwrap_or_else(|e| {
        tracing::debug!(error = %e, "ignoring an unreadable state file");
        None
    });
    if let Some(state) = &state
        && state.renewable()
        && let Err(e) = revoke(ctx, state).await
    {
        eprintln!(
            "warning: could not revoke the refresh token at the identity provider: {}; it stays valid there until it expires",
            one_line(&e.to_string(), 500)
        );
    }
    ctx.credentials
        .delete(state.as_ref().map(State::account).as_deref())?;
    let had_state = State::remove(&ctx.dir)?;
    match state {
        Some(state) => eprintln!("logged out of {} (user {})", state.broker, state.user),
        None if had_state => eprintln!("logged out"),
        None => eprintln!("not logged in; nothing to do"),
    }
    Ok(())
}

/// Revokes the stored refresh token of an OpenID Connect login.
async fn revoke(ctx: &Context, state: &State) -> Result<(), Error> {
    let Some(oidc) = state.oidc() else {
        return Ok(());
    };
    let Some(client_id) = &oidc.client_id else {
        return Ok(());
    };
    let Some(refresh_token) = refresh::load(ctx, state)?.and_then(|t| t.refresh_token) else {
        return Ok(());
    };
    let idp = Idp::discover(&oidc.issuer, state.ca_pem.as_deref()).await?;
    if idp.revoke(client_id, &refresh_token).await? {
        tracing::debug!(issuer = %oidc.issuer, "refresh token revoked");
    } else {
        tracing::debug!(issuer = %oidc.issuer, "no revocation endpoint; nothing revoked");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use mcpgate_shared::secret::Secret;

    use super::*;
    use crate::credentials::tests::MemoryKeyring;
    use crate::credentials::{Credentials, StoreMode};
    use crate::state::{LoginKind, StateDir, TokenStore};

    #[tokio::test]
    async fn logout_removes_token_and_state_and_is_idempotent() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::new(tmp.path());
        let keyring = std::sync::Arc::new(MemoryKeyring::default());
        struct Shared(std::sync::Arc<MemoryKeyring>);
        impl crate::credentials::Keyring for Shared {
            fn set(&self, a: &str, s: &Secret<String>) -> Result<(), String> {
                self.0.set(a, s)
            }
            fn get(&self, a: &str) -> Result<Option<Secret<String>>, String> {
                self.0.get(a)
            }
            fn delete(&self, a: &str) -> Result<bool, String> {
                self.0.delete(a)
            }
        }
        let ctx = Context::new(
            dir.clone(),
            Credentials::new(
                dir.clone(),
                StoreMode::Auto,
                Box::new(Shared(keyring.clone())),
            ),
        );
        let state = State {
            broker: "https://127.0.0.1:8443".parse().unwrap(),
            ca_pem: None,
            user: "alice".parse().unwrap(),
            roles: vec![],
            expires_at: u64::MAX,
            token_store: TokenStore::Keyring,
            login: LoginKind::Password,
        };
        ctx.credentials
            .save(&state.account(), &Secret::new("t".into()))
            .unwrap();
        state.save(&dir).unwrap();
        // A stray file from an earlier fallback login goes too.
        std::fs::write(dir.credentials_file(), "{}").unwrap();

        run(&ctx).await.unwrap();
        assert!(keyring.0.lock().unwrap().is_empty());
        assert!(!dir.state_file().exists());
        assert!(!dir.credentials_file().exists());
        run(&ctx).await.unwrap();
    }
}
