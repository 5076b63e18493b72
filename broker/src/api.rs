//! The HTTPS API: login, who am I, servers, and session certificates.
//!
//! Bodies are the types in [`mcpgate_shared::api`]; every error is an
//! [`ApiError`] body with a matching status. A refusal is logged with the
//! reason and the caller's address, never with a password or token.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use mcpgate_shared::api::{
    ApiError, AuthMethods, ErrorCode, LoginRequest, OidcLogin, ServerInfo, ServersResponse,
    SessionRequest, SessionResponse, TokenResponse, WhoAmI,
};
use mcpgate_shared::identity::CertIdentity;
use mcpgate_shared::names::{RoleName, SessionId, UserName};
use serde::de::DeserializeOwned;
use tracing::{info, warn};

use crate::auth::{AuthError, Credentials, Identity, TOKEN_ISSUER, unix_now};
use crate::ca::CaError;
use crate::oidc::{self, Rejection};
use crate::serve::Broker;
use crate::session::{SessionRecord, SessionState};

/// The API caller's TCP peer, added per connection.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// An API failure: a status, a stable code and a message for the caller.
#[derive(Debug)]
pub struct Failure {
    status: StatusCode,
    code: ErrorCode,
    message: String,
}

impl Failure {
    fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, message)
    }

    fn internal(message: impl std::fmt::Display) -> Self {
        tracing::error!(error = %message, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            "internal error; see the broker log",
        )
    }
}

impl From<AuthError> for Failure {
    fn from(e: AuthError) -> Self {
        let (status, code) = match &e {
            AuthError::BadCredentials | AuthError::BadToken => {
                (StatusCode::UNAUTHORIZED, ErrorCode::Unauthenticated)
            }
            AuthError::Expired => (StatusCode::UNAUTHORIZED, ErrorCode::TokenExpired),
            AuthError::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, ErrorCode::RateLimited),
            AuthError::Internal(m) => return Failure::internal(m),
        };
        Failure::new(status, code, e.to_string())
    }
}

impl From<Rejection> for Failure {
    fn from(r: Rejection) -> Self {
        let (status, code) = match &r {
            Rejection::Expired | Rejection::TooOld(_) => {
                (StatusCode::UNAUTHORIZED, ErrorCode::TokenExpired)
            }
            Rejection::Invalid(_) => (StatusCode::UNAUTHORIZED, ErrorCode::Unauthenticated),
            Rejection::NoRole(_) => (StatusCode::FORBIDDEN, ErrorCode::Forbidden),
            Rejection::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Internal),
        };
        Failure::new(status, code, r.to_string())
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let body = ApiError {
            error: self.code,
            message: self.message,
        };
        let mut resp = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                "Bearer".parse().expect("static header"),
            );
        }
        resp
    }
}

type ApiResult<T> = Result<Json<T>, Failure>;

pub fn router(broker: Arc<Broker>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/v1/auth", get(auth_methods))
        .route("/v1/login", post(login))
        .route("/v1/whoami", get(whoami))
        .route("/v1/servers", get(servers))
        .route("/v1/sessions", post(create_session).get(list_sessions))
        .with_state(broker)
}

/// Parses a JSON body ourselves so that a bad body gets our error format.
fn parse_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, Failure> {
    serde_json::from_slice(body)
        .map_err(|e| Failure::bad_request(format!("invalid request body: {e}")))
}

/// How to sign in: needs no token, so the CLI can ask before a login.
async fn auth_methods(State(b): State<Arc<Broker>>) -> Json<AuthMethods> {
    let oidc = b
        .config
        .oidc
        .iter()
        .filter_map(|i| {
            i.client_id.as_ref().map(|client_id| OidcLogin {
                name: i.name.clone(),
                issuer: i.issuer.clone(),
                client_id: client_id.clone(),
                scopes: i.scopes.clone(),
                resource: i.resource.clone(),
            })
        })
        .collect();
    Json(AuthMethods {
        password: !b.config.users.is_empty(),
        oidc,
    })
}

async fn login(
    State(b): State<Arc<Broker>>,
    Extension(Peer(peer)): Extension<Peer>,
    body: Bytes,
) -> ApiResult<TokenResponse> {
    let req: LoginRequest = parse_body(&body)?;
    let user_key = format!("user:{}", req.user);
    let ip_key = format!("ip:{}", peer.ip());
    if let Err(wait) = b.limiter.check(&[&user_key, &ip_key]) {
        warn!(user = %req.user, client = %peer, "login refused: too many failed attempts");
        return Err(AuthError::RateLimited(wait).into());
    }
    let credentials = Credentials::Password {
        user: req.user.clone(),
        password: req.password,
    };
    match b.authn.authenticate(&credentials).await {
        Ok(identity) => {
            b.limiter.clear(&user_key);
            let (token, expires_at) = b.tokens.issue(&identity)?;
            info!(user = %identity.user, client = %peer, "login succeeded");
            Ok(Json(TokenResponse {
                token,
                expires_at,
                user: identity.user,
                roles: identity.roles,
            }))
        }
        Err(e @ AuthError::BadCredentials) => {
            b.limiter.record_failure(&[&user_key, &ip_key]);
            warn!(user = %req.user, client = %peer, "login failed: invalid user name or password");
            Err(e.into())
        }
        Err(e) => Err(e.into()),
    }
}

/// A verified API caller.
struct Caller {
    identity: Identity,
    /// When the presented token expires (unix seconds).
    expires_at: u64,
    /// A shorter certificate lifetime for this caller (CI workloads).
    cert_ttl: Option<std::time::Duration>,
}

/// The caller's verified identity. For the broker's own tokens the roles
/// are looked up now (not taken from the token, so removing a role takes
/// effect at once); for an OpenID Provider's token they come from its
/// groups or claim rules, read from this very token.
async fn caller(b: &Broker, headers: &HeaderMap, peer: SocketAddr) -> Result<Caller, Failure> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| {
            Failure::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::Unauthenticated,
                "missing bearer token; log in first",
            )
        })?;
    if oidc::unverified_issuer(token).as_deref() != Some(TOKEN_ISSUER) && !b.oidc.is_empty() {
        return match b.oidc.verify(token).await {
            Ok(v) => Ok(Caller {
                identity: v.identity,
                expires_at: v.expires_at,
                cert_ttl: v.cert_ttl,
            }),
            Err(e) => {
                warn!(client = %peer, reason = %e, "API call refused: identity provider token");
                Err(e.into())
            }
        };
    }
    let claims = b.tokens.verify(token).map_err(|e| {
        warn!(client = %peer, reason = %e, "API call refused: bad token");
        Failure::from(e)
    })?;
    let roles: Vec<RoleName> = b.authn.current_roles(&claims.sub).await.ok_or_else(|| {
        warn!(user = %claims.sub, client = %peer, "API call refused: the user no longer exists");
        Failure::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthenticated,
            "this user no longer exists at the broker",
        )
    })?;
    Ok(Caller {
        identity: Identity {
            user: claims.sub.clone(),
            roles,
            issuer: claims.idp.clone(),
        },
        expires_at: claims.exp,
        cert_ttl: None,
    })
}

async fn whoami(
    State(b): State<Arc<Broker>>,
    Extension(Peer(peer)): Extension<Peer>,
    headers: HeaderMap,
) -> ApiResult<WhoAmI> {
    let c = caller(&b, &headers, peer).await?;
    Ok(Json(WhoAmI {
        user: c.identity.user,
        roles: c.identity.roles,
        issuer: c.identity.issuer,
        expires_at: c.expires_at,
    }))
}

async fn servers(
    State(b): State<Arc<Broker>>,
    Extension(Peer(peer)): Extension<Peer>,
    headers: HeaderMap,
) -> ApiResult<ServersResponse> {
    let id = caller(&b, &headers, peer).await?.identity;
    let servers = b
        .config
        .servers_for(&id.roles)
        .into_iter()
        .filter_map(|name| {
            b.config.servers.get(name).map(|s| ServerInfo {
                name: name.clone(),
                description: s.description().map(str::to_owned),
                transport: s.transport().into(),
            })
        })
        .collect();
    Ok(Json(ServersResponse { servers }))
}

async fn create_session(
    State(b): State<Arc<Broker>>,
    Extension(Peer(peer)): Extension<Peer>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<SessionResponse> {
    let Caller {
        identity: id,
        cert_ttl,
        ..
    } = caller(&b, &headers, peer).await?;
    let req: SessionRequest = parse_body(&body)?;
    if !b.config.servers.contains_key(&req.server) {
        warn!(user = %id.user, client = %peer, server = %req.server, "session refused: unknown server");
        return Err(Failure::new(
            StatusCode::NOT_FOUND,
            ErrorCode::UnknownServer,
            format!("there is no server named {:?}", req.server.as_str()),
        ));
    }
    if !b.config.may_connect(&id.roles, &req.server) {
        warn!(user = %id.user, client = %peer, server = %req.server, "session refused: no role allows this server");
        return Err(Failure::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            format!("none of your roles allows server {:?}", req.server.as_str()),
        ));
    }
    let session: SessionId = uuid::Uuid::new_v4()
        .to_string()
        .parse()
        .map_err(Failure::internal)?;
    let cert_identity = CertIdentity {
        session: session.clone(),
        user: id.user.clone(),
        server: req.server.clone(),
    };
    let cert =
        b.ca.sign_session(
            &req.csr_pem,
            &cert_identity,
            cert_ttl.unwrap_or(b.config.broker.cert_ttl),
        )
        .map_err(|e| match e {
            CaError::WeakKey(_) => {
                warn!(user = %id.user, client = %peer, reason = %e, "session refused: weak key");
                Failure::new(StatusCode::BAD_REQUEST, ErrorCode::WeakKey, e.to_string())
            }
            CaError::BadCsr(_) => Failure::bad_request(e.to_string()),
            other => Failure::internal(other),
        })?;
    let now = unix_now();
    let connect_by = cert
        .not_after
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(now);
    let record = SessionRecord {
        id: session.clone(),
        user: id.user.clone(),
        issuer: id.issuer.clone(),
        roles: id.roles.clone(),
        server: req.server.clone(),
        client_addr: peer.to_string(),
        created_at: now,
        cert_serial: cert.serial.clone(),
        connect_by,
        max_duration_secs: b.config.broker.session_max_duration.as_secs(),
        state: SessionState::Issued,
        connected_at: None,
        tunnel_peer: None,
        ended_at: None,
        end_reason: None,
    };
    b.store
        .run(move |s| s.insert(&record))
        .await
        .map_err(Failure::internal)?
        .map_err(Failure::internal)?;
    info!(
        session = %session, user = %id.user, server = %req.server, client = %peer,
        serial = %cert.serial, connect_by, "session certificate issued"
    );
    Ok(Json(SessionResponse {
        session_id: session,
        server: req.server,
        certificate_pem: cert.pem,
        ca_pem: b.ca.ca_pem().to_owned(),
        tunnel_addr: b.tunnel_public_addr.clone(),
        tunnel_server_name: b.tunnel_server_name.clone(),
        connect_by,
        max_duration_secs: b.config.broker.session_max_duration.as_secs(),
    }))
}

/// The caller's own sessions, newest first.
async fn list_sessions(
    State(b): State<Arc<Broker>>,
    Extension(Peer(peer)): Extension<Peer>,
    headers: HeaderMap,
) -> ApiResult<Vec<SessionRecord>> {
    let user: UserName = caller(&b, &headers, peer).await?.identity.user;
    let all = b
        .store
        .run(|s| s.list(1000))
        .await
        .map_err(Failure::internal)?
        .map_err(Failure::internal)?;
    Ok(Json(all.into_iter().filter(|r| r.user == user).collect()))
}
