//! OpenID Connect: tokens from the company's IdP and from CI platforms,
//! verified by the broker itself.
//!
//! For each `[[oidc]]` issuer the broker fetches the discovery document
//! (`{issuer}/.well-known/openid-configuration`, whose `issuer` must match
//! the configured one exactly) and the key set it points to, and caches
//! both. A token signed with a `kid` the cache does not know triggers one
//! refetch, at most once per `jwks_min_refresh_interval`, so the provider
//! can rotate keys without a broker restart and a flood of made-up `kid`s
//! cannot turn the broker into a load generator against it.
//!
//! What a token must be (RFC 7519, RFC 9068, OpenID Connect Core §3.1.3.7):
//! - signed with an asymmetric algorithm (RS*, PS*, ES256, ES384, EdDSA) by
//!   a key of the issuer's key set that fits the algorithm: `alg: none` and
//!   HMAC are refused before any key is looked at, so a public key can
//!   never be used as an HMAC secret;
//! - `iss` one of the configured issuers, exactly;
//! - `typ: at+jwt` (an access token) with an `aud` in `audiences`, or any
//!   other `typ` (an ID token) with an `aud` that is `client_id` or in
//!   `id_token_audiences`: an ID token is never taken for an access token
//!   and the other way round;
//! - `exp` in the future and `nbf` in the past (with `clock_skew`), `iat`
//!   not in the future and not older than `max_token_age`.
//!
//! Then the identity: a token matching a `[[oidc.workloads]]` rule's claims
//! is that workload (CI jobs); otherwise it is a person, named by a
//! verified `email` in an allowed domain, with roles from the groups claim.
//! Groups are read from the token at every call: nothing is cached, so a
//! person removed from a group loses the role with their next token.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use mcpgate_shared::names::{RoleName, UserName};
use serde_json::{Map, Value};
use tokio::sync::{Mutex, RwLock};
use tracing::{debug, info, warn};

use crate::auth::{Identity, unix_now};
use crate::config::{Config, OidcIssuer};

/// How long a request to the provider may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Discovery documents and key sets larger than this are refused.
const MAX_DOCUMENT_BYTES: usize = 1 << 20;

/// Why a token was refused. The text is safe to log and to show the
/// caller: it never contains the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("the token has expired")]
    Expired,
    /// Past `max_token_age`: like expired, the holder should renew it.
    #[error("{0}")]
    TooOld(String),
    #[error("{0}")]
    Invalid(String),
    /// A valid token whose holder has no role here.
    #[error("{0}")]
    NoRole(String),
    /// The provider's keys could not be fetched: fail closed.
    #[error("{0}")]
    Unavailable(String),
}

fn invalid(reason: impl Into<String>) -> Rejection {
    Rejection::Invalid(reason.into())
}

/// A verified token's holder.
#[derive(Debug, Clone)]
pub struct Verified {
    pub identity: Identity,
    /// The token's `exp` (unix seconds).
    pub expires_at: u64,
    /// Set for workloads: their session certificates' lifetime.
    pub cert_ttl: Option<Duration>,
}

/// Every configured issuer.
pub struct Oidc {
    issuers: Vec<Arc<Issuer>>,
}

impl std::fmt::Debug for Oidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self
            .issuers
            .iter()
            .map(|i| i.config.name.as_str())
            .collect();
        f.debug_struct("Oidc").field("issuers", &names).finish()
    }
}

impl Oidc {
    /// Sets up an HTTP client per issuer; fetches nothing yet.
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        let base = config.path.parent().unwrap_or(std::path::Path::new("."));
        let issuers = config
            .oidc
            .iter()
            .map(|c| Issuer::new(c.clone(), base).map(Arc::new))
            .collect::<anyhow::Result<_>>()?;
        Ok(Self { issuers })
    }

    pub fn is_empty(&self) -> bool {
        self.issuers.is_empty()
    }

    /// Fetches every issuer's keys once, logging failures: the broker
    /// starts even when a provider is down, and retries on first use.
    pub async fn prefetch(&self) {
        for issuer in &self.issuers {
            if let Err(e) = issuer.refresh().await {
                warn!(issuer = %issuer.config.issuer, error = %e, "cannot fetch the provider's keys yet; will retry on first use");
            }
        }
    }

    /// Verifies `token` from any configured issuer and maps it to an
    /// identity with roles.
    pub async fn verify(&self, token: &str) -> Result<Verified, Rejection> {
        let (header, claims) = peek(token)?;
        let alg = accepted_algorithm(&header)?;
        let iss = claims.get("iss").and_then(Value::as_str).unwrap_or("");
        let Some(issuer) = self.issuers.iter().find(|i| i.config.issuer == iss) else {
            let shown: String = iss.chars().take(100).collect();
            return Err(invalid(format!("issuer {shown:?} is not trusted")));
        };
        issuer.verify(token, &header, alg).await
    }
}

/// The issuer named in a token's payload, unverified: only for choosing
/// which verifier to run.
pub fn unverified_issuer(token: &str) -> Option<String> {
    let (_, claims) = peek(token).ok()?;
    claims.get("iss").and_then(Value::as_str).map(str::to_owned)
}

/// A JSON object from a token: its header or its claims.
type Object = Map<String, Value>;

/// Decodes header and payload without verifying anything.
fn peek(token: &str) -> Result<(Object, Object), Rejection> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid("the token is not a signed JWT"));
    };
    let decode = |part: &str, what: &str| -> Result<Map<String, Value>, Rejection> {
        let bytes = URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|_| invalid(format!("the token's {what} is not base64url")))?;
        serde_json::from_slice(&bytes)
            .map_err(|_| invalid(format!("the token's {what} is not a JSON object")))
    };
    Ok((decode(h, "header")?, decode(p, "payload")?))
}

/// The header's `alg`, if it is one the broker accepts.
fn accepted_algorithm(header: &Map<String, Value>) -> Result<Algorithm, Rejection> {
    let alg = header.get("alg").and_then(Value::as_str).unwrap_or("");
    if let Some(a) = asymmetric(alg) {
        return Ok(a);
    }
    match alg {
        a if a.eq_ignore_ascii_case("none") => {
            Err(invalid("unsigned tokens (alg none) are not accepted"))
        }
        a if a.to_ascii_uppercase().starts_with("HS") => {
            Err(invalid("HMAC-signed tokens are not accepted"))
        }
        other => {
            let shown: String = other.chars().take(20).collect();
            Err(invalid(format!("algorithm {shown:?} is not accepted")))
        }
    }
}

/// The asymmetric JWS algorithms the broker verifies.
fn asymmetric(name: &str) -> Option<Algorithm> {
    Some(match name {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}

/// The kind of public key, as far as choosing an algorithm goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl KeyKind {
    fn fits(self, alg: Algorithm) -> bool {
        use Algorithm::*;
        matches!(
            (self, alg),
            (KeyKind::Rsa, RS256 | RS384 | RS512 | PS256 | PS384 | PS512)
                | (KeyKind::P256, ES256)
                | (KeyKind::P384, ES384)
                | (KeyKind::Ed25519, EdDSA)
        )
    }
}

struct Key {
    kid: Option<String>,
    alg: Option<Algorithm>,
    kind: KeyKind,
    decoding: DecodingKey,
}

/// Reads a JWKS document, keeping the signature keys the broker can use and
/// skipping (not failing on) the rest.
fn parse_jwks(body: &Value) -> Result<Vec<Key>, String> {
    let keys = body
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("the key set has no \"keys\" array")?;
    let mut out = Vec::new();
    for raw in keys {
        let Ok(jwk) = serde_json::from_value::<Jwk>(raw.clone()) else {
            debug!("skipping a key the broker cannot read");
            continue;
        };
        if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
            continue;
        }
        let kind = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => KeyKind::Rsa,
            AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
                EllipticCurve::P256 => KeyKind::P256,
                EllipticCurve::P384 => KeyKind::P384,
                _ => continue,
            },
            AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
                KeyKind::Ed25519
            }
            // Symmetric (`oct`) keys are never used: no HMAC.
            _ => continue,
        };
        // A key announced for an algorithm the broker does not verify
        // (e.g. HS256, RSA-OAEP) is not used at all.
        let alg = match raw.get("alg").and_then(Value::as_str) {
            Some(name) => match asymmetric(name) {
                Some(a) => Some(a),
                None => continue,
            },
            None => None,
        };
        let Ok(decoding) = DecodingKey::from_jwk(&jwk) else {
            continue;
        };
        out.push(Key {
            kid: jwk.common.key_id.clone(),
            alg,
            kind,
            decoding,
        });
    }
    Ok(out)
}

#[derive(Default)]
struct KeySet {
    keys: Vec<Arc<Key>>,
    fetched_at: Option<Instant>,
}

impl KeySet {
    fn find(&self, kid: Option<&str>, alg: Algorithm) -> Option<Arc<Key>> {
        let fits = |k: &&Arc<Key>| k.kind.fits(alg) && k.alg.is_none_or(|a| a == alg);
        match kid {
            Some(kid) => self
                .keys
                .iter()
                .filter(fits)
                .find(|k| k.kid.as_deref() == Some(kid))
                .cloned(),
            // Without a `kid` the key must be unambiguous.
            None => {
                let mut candidates = self.keys.iter().filter(fits);
                match (candidates.next(), candidates.next()) {
                    (Some(k), None) => Some(k.clone()),
                    _ => None,
                }
            }
        }
    }

    fn stale(&self, max_age: Duration) -> bool {
        self.fetched_at.is_none_or(|t| t.elapsed() >= max_age)
    }
}

/// One issuer: its settings, HTTP client and cached keys.
struct Issuer {
    config: OidcIssuer,
    http: reqwest::Client,
    keys: RwLock<KeySet>,
    /// Serialises fetches; holds when the last unknown-`kid` refetch ran.
    refetch: Mutex<Option<Instant>>,
}

impl Issuer {
    fn new(config: OidcIssuer, base: &std::path::Path) -> anyhow::Result<Self> {
        let url = url::Url::parse(&config.issuer)?;
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(FETCH_TIMEOUT)
            .user_agent(concat!("mcpgate-broker/", env!("CARGO_PKG_VERSION")));
        if url.scheme() == "https" {
            builder = builder.https_only(true);
        } else {
            // `http` is only allowed on loopback (config check): never
            // through a proxy.
            builder = builder.no_proxy();
        }
        let native = rustls_native_certs::load_native_certs();
        for der in native.certs {
            if let Ok(cert) = reqwest::Certificate::from_der(der.as_ref()) {
                builder = builder.add_root_certificate(cert);
            }
        }
        if let Some(file) = &config.ca_file {
            let path = base.join(file);
            let pem = std::fs::read(&path).map_err(|e| {
                anyhow::anyhow!(
                    "oidc {:?}: cannot read ca_file {}: {e}",
                    config.name,
                    path.display()
                )
            })?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                anyhow::anyhow!("oidc {:?}: ca_file {}: {e}", config.name, path.display())
            })? {
                builder = builder.add_root_certificate(cert);
            }
        }
        Ok(Self {
            config,
            http: builder.build()?,
            keys: RwLock::new(KeySet::default()),
            refetch: Mutex::new(None),
        })
    }

    async fn get_json(&self, url: &str) -> Result<Value, String> {
        let resp = self
            .http
            .get(url)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| format!("GET {url}: {}", error_chain(&e)))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(format!("GET {url}: HTTP {status}"));
        }
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_DOCUMENT_BYTES as u64)
        {
            return Err(format!("GET {url}: the document is too large"));
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| format!("GET {url}: {}", error_chain(&e)))?;
        if body.len() > MAX_DOCUMENT_BYTES {
            return Err(format!("GET {url}: the document is too large"));
        }
        serde_json::from_slice(&body).map_err(|e| format!("GET {url}: not JSON: {e}"))
    }

    /// Fetches discovery and keys and replaces the cached key set.
    async fn refresh(&self) -> Result<(), String> {
        let discovery_url = format!(
            "{}/.well-known/openid-configuration",
            self.config.issuer.trim_end_matches('/')
        );
        let discovery = self.get_json(&discovery_url).await?;
        let announced = discovery
            .get("issuer")
            .and_then(Value::as_str)
            .unwrap_or("");
        if announced != self.config.issuer {
            return Err(format!(
                "the discovery document names issuer {announced:?}, not {:?}",
                self.config.issuer
            ));
        }
        let jwks_uri = discovery
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or("the discovery document has no jwks_uri")?;
        let jwks = self.get_json(jwks_uri).await?;
        let keys = parse_jwks(&jwks)?;
        info!(issuer = %self.config.issuer, keys = keys.len(), "fetched the provider's signing keys");
        let mut set = self.keys.write().await;
        set.keys = keys.into_iter().map(Arc::new).collect();
        set.fetched_at = Some(Instant::now());
        Ok(())
    }

    /// The key for `kid`/`alg`, refetching the key set when it is old or
    /// (rate-limited) when the `kid` is unknown.
    async fn key(&self, kid: Option<&str>, alg: Algorithm) -> Result<Arc<Key>, Rejection> {
        let unavailable = |e: String| {
            warn!(issuer = %self.config.issuer, error = %e, "cannot fetch the provider's keys");
            Rejection::Unavailable(format!(
                "the identity provider {} cannot be reached to check the token; try again later",
                self.config.name
            ))
        };
        if self.keys.read().await.stale(self.config.jwks_max_age) {
            let _guard = self.refetch.lock().await;
            if self.keys.read().await.stale(self.config.jwks_max_age)
                && let Err(e) = self.refresh().await
            {
                // Old keys, if any, stay usable until a fetch succeeds.
                if self.keys.read().await.fetched_at.is_none() {
                    return Err(unavailable(e));
                }
                warn!(issuer = %self.config.issuer, error = %e, "cannot refresh the provider's keys; using the cached ones");
            }
        }
        if let Some(key) = self.keys.read().await.find(kid, alg) {
            return Ok(key);
        }
        let not_found =
            || invalid("the token is signed by a key that is not in the issuer's key set");
        let mut last = self.refetch.lock().await;
        // Another caller may have refetched while this one waited.
        if let Some(key) = self.keys.read().await.find(kid, alg) {
            return Ok(key);
        }
        if last.is_some_and(|t| t.elapsed() < self.config.jwks_min_refresh_interval) {
            debug!(issuer = %self.config.issuer, "unknown key id; refetch rate-limited");
            return Err(not_found());
        }
        *last = Some(Instant::now());
        info!(issuer = %self.config.issuer, "unknown key id: refetching the provider's keys");
        self.refresh().await.map_err(unavailable)?;
        self.keys.read().await.find(kid, alg).ok_or_else(not_found)
    }

    async fn verify(
        &self,
        token: &str,
        header: &Map<String, Value>,
        alg: Algorithm,
    ) -> Result<Verified, Rejection> {
        let c = &self.config;
        let kid = header.get("kid").and_then(Value::as_str);
        let key = self.key(kid, alg).await?;

        let mut validation = Validation::new(alg);
        validation.set_issuer(&[c.issuer.as_str()]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        validation.validate_aud = false; // checked below, per token type
        validation.validate_nbf = true;
        validation.leeway = c.clock_skew.as_secs();
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &key.decoding, &validation)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind as K;
                match e.kind() {
                    K::ExpiredSignature => Rejection::Expired,
                    K::ImmatureSignature => invalid("the token is not valid yet (nbf)"),
                    K::InvalidSignature => invalid("the token's signature does not verify"),
                    K::InvalidIssuer => invalid("the token's issuer does not match"),
                    K::MissingRequiredClaim(claim) => {
                        invalid(format!("the token has no {claim:?} claim"))
                    }
                    _ => invalid(format!("the token is not valid: {e}")),
                }
            })?
            .claims;

        let now = unix_now();
        let skew = c.clock_skew.as_secs();
        let iat = claims
            .get("iat")
            .and_then(Value::as_u64)
            .ok_or_else(|| invalid("the token has no \"iat\" claim"))?;
        if iat > now + skew {
            return Err(invalid("the token was issued in the future (iat)"));
        }
        if now.saturating_sub(iat) > c.max_token_age.as_secs() + skew {
            return Err(Rejection::TooOld(format!(
                "the token was issued more than {} ago; get a fresh one",
                humantime::format_duration(c.max_token_age)
            )));
        }
        self.check_audience(header, &claims)?;
        let expires_at = claims.get("exp").and_then(Value::as_u64).unwrap_or(now);
        let (identity, cert_ttl) = self.identity(&claims)?;
        Ok(Verified {
            identity,
            expires_at,
            cert_ttl,
        })
    }

    /// Access tokens (`typ: at+jwt`) must be for one of `audiences`; any
    /// other token is an ID token and must be for `client_id` or one of
    /// `id_token_audiences`.
    fn check_audience(
        &self,
        header: &Map<String, Value>,
        claims: &Map<String, Value>,
    ) -> Result<(), Rejection> {
        let c = &self.config;
        let typ = header
            .get("typ")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_ascii_lowercase();
        let access = matches!(typ.as_str(), "at+jwt" | "application/at+jwt");
        let accepted: BTreeSet<&str> = if access {
            c.access_token_audiences().into_iter().collect()
        } else {
            c.client_id
                .iter()
                .chain(&c.id_token_audiences)
                .map(String::as_str)
                .collect()
        };
        let aud: Vec<&str> = match claims.get("aud") {
            Some(Value::String(a)) => vec![a.as_str()],
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !aud.iter().any(|a| accepted.contains(a)) {
            let kind = if access { "access token" } else { "ID token" };
            return Err(invalid(format!(
                "the {kind}'s audience is not accepted by this broker"
            )));
        }
        Ok(())
    }

    /// Workload (by claim rules) or person (by email and groups).
    fn identity(
        &self,
        claims: &Map<String, Value>,
    ) -> Result<(Identity, Option<Duration>), Rejection> {
        let c = &self.config;
        let claim_str = |name: &str| claims.get(name).and_then(Value::as_str);
        if let Some(rule) = c.workloads.iter().find(|w| {
            w.claims
                .iter()
                .all(|(name, want)| claim_str(name).is_some_and(|v| want.accepts(v)))
        }) {
            let sub: String = claim_str("sub").unwrap_or("").chars().take(200).collect();
            info!(issuer = %c.issuer, workload = %rule.name, sub = %sub, "workload token accepted");
            return Ok((
                Identity {
                    user: rule.name.clone(),
                    roles: rule.roles.clone(),
                    issuer: c.issuer.clone(),
                },
                Some(rule.cert_ttl),
            ));
        }
        let email = claim_str("email")
            .ok_or_else(|| invalid("the token has no email claim and matches no workload rule"))?;
        if claims.get("email_verified") == Some(&Value::Bool(false)) {
            return Err(invalid("the token's email is not verified"));
        }
        let email = email.to_ascii_lowercase();
        if !c.email_domains.is_empty() {
            let domain = email.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
            if !c
                .email_domains
                .iter()
                .any(|d| d.eq_ignore_ascii_case(domain))
            {
                return Err(invalid(format!(
                    "email domain {domain:?} is not allowed at this broker"
                )));
            }
        }
        let user: UserName = email
            .parse()
            .map_err(|_| invalid("the token's email cannot be used as a user name"))?;
        let groups: Vec<&str> = match claims.get(&c.groups_claim) {
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            Some(Value::String(g)) => vec![g.as_str()],
            _ => Vec::new(),
        };
        let mut roles: Vec<RoleName> = c
            .groups
            .iter()
            .filter(|rule| groups.contains(&rule.group.as_str()))
            .flat_map(|rule| rule.roles.iter().cloned())
            .collect();
        roles.sort();
        roles.dedup();
        if roles.is_empty() {
            let why = if groups.is_empty() {
                format!("the token has no {:?} claim, so it maps", c.groups_claim)
            } else {
                "none of your groups maps".into()
            };
            return Err(Rejection::NoRole(format!(
                "{why} to no role at this broker (provider {})",
                c.name
            )));
        }
        Ok((
            Identity {
                user,
                roles,
                issuer: c.issuer.clone(),
            },
            None,
        ))
    }
}

/// An error and its sources, one line (`outer: inner: innermost`).
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::Router;
    use axum::routing::get;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    use super::*;

    /// An EC P-256 key: its private PEM and its public JWK.
    struct TestKey {
        kid: String,
        encoding: EncodingKey,
        pem: String,
        jwk: Value,
    }

    impl TestKey {
        fn new(kid: &str) -> Self {
            let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
            let raw = pair.public_key_raw(); // 0x04 || x || y
            let pem = pair.serialize_pem();
            Self {
                kid: kid.into(),
                encoding: EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
                jwk: json!({
                    "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
                    "x": URL_SAFE_NO_PAD.encode(&raw[1..33]),
                    "y": URL_SAFE_NO_PAD.encode(&raw[33..65]),
                }),
                pem,
            }
        }

        fn sign(&self, typ: Option<&str>, claims: &Value) -> String {
            let mut h = Header::new(Algorithm::ES256);
            h.kid = Some(self.kid.clone());
            h.typ = typ.map(str::to_owned);
            jsonwebtoken::encode(&h, claims, &self.encoding).unwrap()
        }
    }

    /// A provider on 127.0.0.1 serving discovery and a key set that tests
    /// can swap, counting key-set fetches.
    struct Provider {
        issuer: String,
        jwks: Arc<std::sync::Mutex<Value>>,
        fetches: Arc<AtomicUsize>,
    }

    async fn provider(keys: &[&TestKey]) -> Provider {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let jwks = Arc::new(std::sync::Mutex::new(
            json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()}),
        ));
        let fetches = Arc::new(AtomicUsize::new(0));
        let discovery = json!({"issuer": issuer, "jwks_uri": format!("{issuer}/jwks")});
        let (j, f) = (jwks.clone(), fetches.clone());
        let app = Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(move || async move { axum::Json(discovery) }),
            )
            .route(
                "/jwks",
                get(move || async move {
                    f.fetch_add(1, Ordering::SeqCst);
                    let body = j.lock().unwrap().clone();
                    axum::Json(body)
                }),
            );
        tokio::spawn(async move { axum::serve(listener, app).await });
        Provider {
            issuer,
            jwks,
            fetches,
        }
    }

    const RESOURCE: &str = "urn:mcpgate-broker";

    fn oidc(issuer: &str) -> Oidc {
        let text = format!(
            r#"
[broker]
[roles.analyst]
[roles.deployer]

[[oidc]]
name = "corp"
issuer = "{issuer}"
client_id = "mcpgate-cli"
resource = "{RESOURCE}"
email_domains = ["example.com"]
jwks_min_refresh_interval = "1h"

[[oidc.groups]]
group = "eng"
roles = ["analyst"]

[[oidc.workloads]]
name = "ci-acme-app"
claims = {{ repository = "acme/app", ref = ["refs/heads/main", "refs/heads/release"] }}
roles = ["deployer"]
cert_ttl = "2m"
"#
        );
        let config = Config::parse(&text, Path::new("/tmp/broker.toml")).unwrap();
        Oidc::new(&config).unwrap()
    }

    fn person(issuer: &str, aud: &str) -> Value {
        let now = unix_now();
        json!({
            "iss": issuer, "sub": "u-1", "aud": aud, "iat": now, "exp": now + 600,
            "email": "Alice@Example.com", "email_verified": true, "groups": ["eng", "other"],
        })
    }

    fn with(mut claims: Value, key: &str, value: Value) -> Value {
        claims[key] = value;
        claims
    }

    fn refused(r: Result<Verified, Rejection>, contains: &str) {
        match r {
            Err(Rejection::Invalid(m)) | Err(Rejection::NoRole(m)) | Err(Rejection::TooOld(m)) => {
                assert!(m.contains(contains), "{m:?} does not contain {contains:?}")
            }
            Err(e) => panic!("expected a refusal containing {contains:?}, got {e:?}"),
            Ok(v) => panic!("accepted: {v:?}"),
        }
    }

    #[tokio::test]
    async fn access_and_id_tokens_are_accepted_for_their_own_audiences() {
        let key = TestKey::new("k1");
        let p = provider(&[&key]).await;
        let o = oidc(&p.issuer);
        let at = key.sign(Some("at+jwt"), &person(&p.issuer, RESOURCE));
        let v = o.verify(&at).await.unwrap();
        assert_eq!(v.identity.user.as_str(), "alice@example.com");
        assert_eq!(
            v.identity.roles,
            vec!["analyst".parse::<RoleName>().unwrap()]
        );
        assert_eq!(v.identity.issuer, p.issuer);
        assert!(v.cert_ttl.is_none());
        let id = key.sign(Some("JWT"), &person(&p.issuer, "mcpgate-cli"));
        assert!(o.verify(&id).await.is_ok());
        // Each kind with the other's audience is refused.
        refused(
            o.verify(&key.sign(Some("at+jwt"), &person(&p.issuer, "mcpgate-cli")))
                .await,
            "access token's audience",
        );
        refused(
            o.verify(&key.sign(None, &person(&p.issuer, RESOURCE)))
                .await,
            "ID token's audience",
        );
        assert_eq!(p.fetches.load(Ordering::SeqCst), 1, "keys are cached");
    }

    #[tokio::test]
    async fn forged_and_out_of_date_tokens_are_refused() {
        let key = TestKey::new("k1");
        let p = provider(&[&key]).await;
        let o = oidc(&p.issuer);
        let good = person(&p.issuer, RESOURCE);
        let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());

        let none = format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "typ": "at+jwt"})),
            b64(&good)
        );
        refused(o.verify(&none).await, "alg none");

        // HS256 with the provider's public key as the secret (key confusion).
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some("k1".into());
        h.typ = Some("at+jwt".into());
        let hs =
            jsonwebtoken::encode(&h, &good, &EncodingKey::from_secret(key.pem.as_bytes())).unwrap();
        refused(o.verify(&hs).await, "HMAC");

        // The right kid, the wrong key.
        let impostor = TestKey {
            kid: "k1".into(),
            ..TestKey::new("k1")
        };
        refused(
            o.verify(&impostor.sign(Some("at+jwt"), &good)).await,
            "signature",
        );

        let other = oidc("http://127.0.0.1:1");
        refused(
            other.verify(&key.sign(Some("at+jwt"), &good)).await,
            "not trusted",
        );
        refused(
            o.verify(&key.sign(
                Some("at+jwt"),
                &with(good.clone(), "iss", json!("http://evil")),
            ))
            .await,
            "not trusted",
        );
        let now = unix_now();
        let expired = with(
            with(good.clone(), "exp", json!(now - 120)),
            "iat",
            json!(now - 300),
        );
        assert_eq!(
            o.verify(&key.sign(Some("at+jwt"), &expired))
                .await
                .unwrap_err(),
            Rejection::Expired
        );
        refused(
            o.verify(&key.sign(Some("at+jwt"), &with(good.clone(), "nbf", json!(now + 600))))
                .await,
            "not valid yet",
        );
        refused(
            o.verify(&key.sign(Some("at+jwt"), &with(good.clone(), "iat", json!(now + 600))))
                .await,
            "future",
        );
        let old = with(
            with(good.clone(), "iat", json!(now - 3600)),
            "exp",
            json!(now + 600),
        );
        refused(o.verify(&key.sign(Some("at+jwt"), &old)).await, "fresh");
        refused(
            o.verify(&key.sign(
                Some("at+jwt"),
                &with(good.clone(), "groups", json!(["sales"])),
            ))
            .await,
            "none of your groups",
        );
        let mut no_groups = good.clone();
        no_groups.as_object_mut().unwrap().remove("groups");
        refused(
            o.verify(&key.sign(Some("at+jwt"), &no_groups)).await,
            "no \"groups\" claim",
        );
        refused(
            o.verify(&key.sign(
                Some("at+jwt"),
                &with(good.clone(), "email", json!("a@evil.com")),
            ))
            .await,
            "domain",
        );
        refused(
            o.verify(&key.sign(
                Some("at+jwt"),
                &with(good.clone(), "email_verified", json!(false)),
            ))
            .await,
            "not verified",
        );
        refused(o.verify("not.a-token").await, "not a signed JWT");
    }

    #[tokio::test]
    async fn unknown_key_ids_refetch_once_and_rotation_is_picked_up() {
        let old = TestKey::new("old");
        let p = provider(&[&old]).await;
        let o = oidc(&p.issuer);
        let claims = person(&p.issuer, RESOURCE);
        assert!(o.verify(&old.sign(Some("at+jwt"), &claims)).await.is_ok());
        assert_eq!(p.fetches.load(Ordering::SeqCst), 1);

        // The provider rotates: the new key signs, the old one stays listed.
        let new = TestKey::new("new");
        *p.jwks.lock().unwrap() = json!({"keys": [new.jwk, old.jwk]});
        assert!(o.verify(&new.sign(Some("at+jwt"), &claims)).await.is_ok());
        assert_eq!(
            p.fetches.load(Ordering::SeqCst),
            2,
            "one refetch for the new kid"
        );
        assert!(o.verify(&old.sign(Some("at+jwt"), &claims)).await.is_ok());

        // A flood of made-up key ids within the interval costs no fetch:
        // the rotation's refetch was this interval's one.
        for i in 0..20 {
            let stranger = TestKey::new(&format!("x{i}"));
            refused(
                o.verify(&stranger.sign(Some("at+jwt"), &claims)).await,
                "not in the issuer's key set",
            );
        }
        assert_eq!(p.fetches.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn workloads_match_on_every_claim_and_get_short_certificates() {
        let key = TestKey::new("k1");
        let p = provider(&[&key]).await;
        let o = oidc(&p.issuer);
        let now = unix_now();
        let ci = json!({
            "iss": p.issuer, "sub": "repo:acme/app:ref:refs/heads/main", "aud": RESOURCE,
            "iat": now, "exp": now + 300, "repository": "acme/app", "ref": "refs/heads/release",
        });
        let v = o.verify(&key.sign(Some("at+jwt"), &ci)).await.unwrap();
        assert_eq!(v.identity.user.as_str(), "ci-acme-app");
        assert_eq!(
            v.identity.roles,
            vec!["deployer".parse::<RoleName>().unwrap()]
        );
        assert_eq!(v.cert_ttl, Some(Duration::from_secs(120)));
        for (claim, value) in [("repository", "evil/app"), ("ref", "refs/heads/feature")] {
            refused(
                o.verify(&key.sign(Some("at+jwt"), &with(ci.clone(), claim, json!(value))))
                    .await,
                "no email claim and matches no workload rule",
            );
        }
    }

    #[tokio::test]
    async fn an_unreachable_provider_fails_closed() {
        let key = TestKey::new("k1");
        let o = oidc("http://127.0.0.1:1");
        let t = key.sign(Some("at+jwt"), &person("http://127.0.0.1:1", RESOURCE));
        assert!(matches!(o.verify(&t).await, Err(Rejection::Unavailable(_))));
    }
}
