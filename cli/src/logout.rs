//! `mcpgate logout`: forget the token (keyring and file) and the state.
//! Idempotent: logging out twice, or without a login, succeeds.
//!
//! The broker has no revocation endpoint yet, so the token stays valid at
//! the broker until it expires; logout only makes this machine forget it.

use crate::context::Context;
use crate::error::Error;
use crate::state::State;

pub fn run(ctx: &Context) -> Result<(), Error> {
    // A damaged state file must not stop a logout: delete what can be found.
    let state = State::load(&ctx.dir).unwrap_or_else(|e| {
        tracing::debug!(error = %e, "ignoring an unreadable state file");
        None
    });
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

#[cfg(test)]
mod tests {
    use mcpgate_shared::secret::Secret;

    use super::*;
    use crate::credentials::tests::MemoryKeyring;
    use crate::credentials::{Credentials, StoreMode};
    use crate::state::{StateDir, TokenStore};

    #[test]
    fn logout_removes_token_and_state_and_is_idempotent() {
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
        };
        ctx.credentials
            .save(&state.account(), &Secret::new("t".into()))
            .unwrap();
        state.save(&dir).unwrap();
        // A stray file from an earlier fallback login goes too.
        std::fs::write(dir.credentials_file(), "{}").unwrap();

        run(&ctx).unwrap();
        assert!(keyring.0.lock().unwrap().is_empty());
        assert!(!dir.state_file().exists());
        assert!(!dir.credentials_file().exists());
        run(&ctx).unwrap();
    }
}
