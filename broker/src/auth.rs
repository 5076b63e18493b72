//! Who is calling.
//!
//! - [`Authenticator`]: turns credentials into an [`Identity`]. Local users
//!   ([`LocalUsers`], argon2id hashes in the config) are the first
//!   implementation; OIDC issuers plug in behind the same trait.
//! - [`TokenIssuer`]: the short-lived bearer token the API hands out after a
//!   login, an EdDSA-signed JWT under the broker's own `token.key` (separate
//!   from the CA and from the audit key).
//! - [`FailureLimiter`]: failed logins per user name and per client address.
//!
//! Roles are looked up again at every session request, so removing a user
//! or a role from the config takes effect without waiting for tokens to
//! expire.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use async_trait::async_trait;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use mcpgate_shared::names::{RoleName, UserName};
use mcpgate_shared::secret::Secret;
use serde::{Deserialize, Serialize};

use crate::ca::{TOKEN_KEY, TOKEN_PUB};
use crate::config::LocalUser;

/// Issuer name of the broker's own tokens and of local users.
pub const LOCAL_ISSUER: &str = "local";
/// `iss` of the broker's own tokens.
pub const TOKEN_ISSUER: &str = "mcpgate-broker";
const TOKEN_AUDIENCE: &str = "mcpgate-api";

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Wrong user or password; deliberately the same for both.
    #[error("invalid user name or password")]
    BadCredentials,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid")]
    BadToken,
    #[error("too many failed logins; try again in {0} seconds")]
    RateLimited(u64),
    #[error("{0}")]
    Internal(String),
}

/// A verified caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: UserName,
    pub roles: Vec<RoleName>,
    /// Who vouched for the identity (`local`, or an OIDC issuer URL).
    pub issuer: String,
}

/// What a caller presents to sign in.
#[derive(Debug)]
pub enum Credentials {
    Password {
        user: UserName,
        password: Secret<String>,
    },
}

/// Turns credentials into an identity. Implementations must take the same
/// time for an unknown user as for a wrong password.
#[async_trait]
pub trait Authenticator: Send + Sync {
    /// The issuer this authenticator speaks for.
    fn issuer(&self) -> &str;
    async fn authenticate(&self, credentials: &Credentials) -> Result<Identity, AuthError>;
    /// The user's current roles, looked up again (not taken from a token).
    /// `None` when the user no longer exists.
    async fn current_roles(&self, user: &UserName) -> Option<Vec<RoleName>>;
}

/// Hashes a password with argon2id and a random salt (the PHC string).
pub fn hash_password(password: &Secret<String>) -> Result<String, AuthError> {
    Argon2::default()
        .hash_password(password.expose().as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Internal(format!("hashing failed: {e}")))
}

/// Local users from the config file.
pub struct LocalUsers {
    users: std::collections::BTreeMap<UserName, LocalUser>,
    /// Verified against when the user does not exist, so that a wrong user
    /// name costs as much time as a wrong password.
    decoy_hash: String,
}

impl LocalUsers {
    pub fn new(users: std::collections::BTreeMap<UserName, LocalUser>) -> Result<Self, AuthError> {
        let mut random = [0u8; 16];
        getrandom::fill(&mut random).map_err(|e| AuthError::Internal(e.to_string()))?;
        let decoy = Secret::new(format!("{random:?}"));
        Ok(Self {
            users,
            decoy_hash: hash_password(&decoy)?,
        })
    }
}

#[async_trait]
impl Authenticator for LocalUsers {
    fn issuer(&self) -> &str {
        LOCAL_ISSUER
    }

    async fn authenticate(&self, credentials: &Credentials) -> Result<Identity, AuthError> {
        let Credentials::Password { user, password } = credentials;
        let found = self.users.get(user);
        let hash = found
            .map(|u| u.password_hash.expose().clone())
            .unwrap_or_else(|| self.decoy_hash.clone());
        let password = password.clone();
        // argon2 is deliberately slow: keep it off the async workers.
        let ok = tokio::task::spawn_blocking(move || {
            Argon2::default()
                .verify_password(password.expose().as_bytes(), hash.as_str())
                .is_ok()
        })
        .await
        .map_err(|e| AuthError::Internal(e.to_string()))?;
        match (ok, found) {
            (true, Some(u)) => Ok(Identity {
                user: user.clone(),
                roles: u.roles.clone(),
                issuer: LOCAL_ISSUER.into(),
            }),
            _ => Err(AuthError::BadCredentials),
        }
    }

    async fn current_roles(&self, user: &UserName) -> Option<Vec<RoleName>> {
        self.users.get(user).map(|u| u.roles.clone())
    }
}

/// The claims in a broker token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    pub sub: UserName,
    /// Who vouched for `sub`.
    pub idp: String,
    pub roles: Vec<RoleName>,
    pub iat: u64,
    pub exp: u64,
}

/// Signs and checks the broker's bearer tokens.
pub struct TokenIssuer {
    encoding: EncodingKey,
    decoding: DecodingKey,
    ttl: Duration,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl TokenIssuer {
    pub fn load(dir: &Path, ttl: Duration) -> Result<Self, AuthError> {
        let read = |name: &str| {
            std::fs::read(dir.join(name))
                .map_err(|e| AuthError::Internal(format!("{}: {e}", dir.join(name).display())))
        };
        let encoding = EncodingKey::from_ed_pem(&read(TOKEN_KEY)?)
            .map_err(|_| AuthError::Internal(format!("{TOKEN_KEY}: not an Ed25519 key")))?;
        let decoding = DecodingKey::from_ed_pem(&read(TOKEN_PUB)?)
            .map_err(|_| AuthError::Internal(format!("{TOKEN_PUB}: not an Ed25519 key")))?;
        Ok(Self {
            encoding,
            decoding,
            ttl,
        })
    }

    /// A token for `identity`, and when it expires (unix seconds).
    pub fn issue(&self, identity: &Identity) -> Result<(Secret<String>, u64), AuthError> {
        let iat = unix_now();
        let exp = iat + self.ttl.as_secs();
        let claims = Claims {
            iss: TOKEN_ISSUER.into(),
            aud: TOKEN_AUDIENCE.into(),
            sub: identity.user.clone(),
            idp: identity.issuer.clone(),
            roles: identity.roles.clone(),
            iat,
            exp,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims, &self.encoding)
            .map_err(|e| AuthError::Internal(format!("signing a token failed: {e}")))?;
        Ok((Secret::new(token), exp))
    }

    /// Checks signature, issuer, audience and expiry (no leeway: the broker
    /// is both issuer and verifier, so there is no clock skew to allow for).
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let mut v = Validation::new(Algorithm::EdDSA);
        v.set_issuer(&[TOKEN_ISSUER]);
        v.set_audience(&[TOKEN_AUDIENCE]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        v.leeway = 0;
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &v)
            .map(|d| d.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                _ => AuthError::BadToken,
            })
    }
}

/// Counts failed logins per key (a user name, a client address) in a
/// sliding window and refuses further attempts once `max` is reached.
pub struct FailureLimiter {
    max: u32,
    window: Duration,
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl FailureLimiter {
    pub fn new(max: u32, window: Duration) -> Self {
        Self {
            max,
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(seconds to wait)` when any key is over its limit.
    pub fn check(&self, keys: &[&str]) -> Result<(), u64> {
        self.check_at(keys, Instant::now())
    }

    fn check_at(&self, keys: &[&str], now: Instant) -> Result<(), u64> {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let mut wait = 0;
        for key in keys {
            if let Some(q) = map.get_mut(*key) {
                while q
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= self.window)
                {
                    q.pop_front();
                }
                if let Some(oldest) = q.front().filter(|_| q.len() >= self.max as usize) {
                    let left = self.window.saturating_sub(now.duration_since(*oldest));
                    wait = wait.max(left.as_secs().max(1));
                }
            }
        }
        // Forget keys with no recent failures so the map cannot grow without bound.
        map.retain(|_, q| !q.is_empty());
        if wait > 0 { Err(wait) } else { Ok(()) }
    }

    pub fn record_failure(&self, keys: &[&str]) {
        self.record_failure_at(keys, Instant::now())
    }

    fn record_failure_at(&self, keys: &[&str], now: Instant) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        for key in keys {
            map.entry((*key).to_owned()).or_default().push_back(now);
        }
    }

    pub fn clear(&self, key: &str) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users() -> LocalUsers {
        let mut m = std::collections::BTreeMap::new();
        m.insert(
            "alice".parse().unwrap(),
            LocalUser {
                password_hash: Secret::new(hash_password(&Secret::new("pw-alice".into())).unwrap()),
                roles: vec!["admin".parse().unwrap()],
            },
        );
        LocalUsers::new(m).unwrap()
    }

    fn creds(user: &str, pw: &str) -> Credentials {
        Credentials::Password {
            user: user.parse().unwrap(),
            password: Secret::new(pw.into()),
        }
    }

    #[tokio::test]
    async fn local_users_check_argon2id_hashes() {
        let u = users();
        let id = u.authenticate(&creds("alice", "pw-alice")).await.unwrap();
        assert_eq!(id.roles, vec!["admin".parse::<RoleName>().unwrap()]);
        assert!(matches!(
            u.authenticate(&creds("alice", "wrong")).await,
            Err(AuthError::BadCredentials)
        ));
        assert!(matches!(
            u.authenticate(&creds("bob", "pw-alice")).await,
            Err(AuthError::BadCredentials)
        ));
        assert!(
            hash_password(&Secret::new("x".into()))
                .unwrap()
                .starts_with("$argon2id$")
        );
    }

    #[test]
    fn tokens_verify_and_tampering_fails() {
        let dir = tempfile::tempdir().unwrap();
        crate::ca::create(dir.path(), &["127.0.0.1".into()]).unwrap();
        let issuer = TokenIssuer::load(dir.path(), Duration::from_secs(60)).unwrap();
        let id = Identity {
            user: "alice".parse().unwrap(),
            roles: vec![],
            issuer: LOCAL_ISSUER.into(),
        };
        let (token, exp) = issuer.issue(&id).unwrap();
        assert!(exp > unix_now());
        let claims = issuer.verify(token.expose()).unwrap();
        assert_eq!(claims.sub.as_str(), "alice");
        let mut parts: Vec<String> = token.expose().split('.').map(str::to_owned).collect();
        parts[1] = parts[1].replace('A', "B");
        parts[1].push('A');
        assert!(issuer.verify(&parts.join(".")).is_err());
        // A token from another broker's key is refused.
        let other = tempfile::tempdir().unwrap();
        crate::ca::create(other.path(), &["127.0.0.1".into()]).unwrap();
        let foreign = TokenIssuer::load(other.path(), Duration::from_secs(60)).unwrap();
        let (t2, _) = foreign.issue(&id).unwrap();
        assert!(matches!(
            issuer.verify(t2.expose()),
            Err(AuthError::BadToken)
        ));
    }

    #[test]
    fn limiter_locks_out_after_max_failures_per_key() {
        let l = FailureLimiter::new(3, Duration::from_secs(60));
        for _ in 0..3 {
            assert!(l.check(&["user:a", "ip:1"]).is_ok());
            l.record_failure(&["user:a", "ip:1"]);
        }
        let wait = l.check(&["user:a"]).unwrap_err();
        assert!((1..=60).contains(&wait));
        assert!(l.check(&["ip:1"]).is_err());
        assert!(l.check(&["user:b", "ip:2"]).is_ok());
        l.clear("user:a");
        assert!(l.check(&["user:a"]).is_ok());
    }

    #[test]
    fn limiter_window_slides() {
        let l = FailureLimiter::new(1, Duration::from_secs(5));
        let t0 = Instant::now();
        l.record_failure_at(&["k"], t0);
        assert_eq!(l.check_at(&["k"], t0 + Duration::from_secs(1)), Err(4));
        assert!(l.check_at(&["k"], t0 + Duration::from_secs(5)).is_ok());
    }
}
