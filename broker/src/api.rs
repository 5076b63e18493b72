//! The HTTPS API: login, who am I, servers, and session certificates.
//!
//! Bodies are the types in [`mcpgate_shared::api`]; every error is an
//! [`ApiError`] body with a matching status. A refusal is logged with the
//! reason and the caller's address, never with a password or token.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use mcpgate_shared::api::{
    ApiError, AuthMethods, ErrorCode, LoginRequest, OidcLogin, ServerInfo, ServersResponse,
    SessionRequest, SessionResponse, TokenResponse, WhoAmI,
};
use mcpgate_shared::approval::{
    AccessRequest, Approval, ApprovalList, ApprovalQuery, ApprovalState, DecisionRequest, GrantList,
};
use mcpgate_shared::event::{DecisionEvent, DecisionKind};
use mcpgate_shared::identity::CertIdentity;
use mcpgate_shared::names::{RoleName, ServerName, SessionId, UserName};
use serde::de::DeserializeOwned;
use tracing::{info, warn};

use crate::approval::{DecideError, ListFilter, now_ms};
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
pub(crate) struct Failure {
    status: StatusCode,
    code: ErrorCode,
    message: String,
}

impl Failure {
    pub(crate) fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, message)
    }

    pub(crate) fn internal(message: impl std::fmt::Display) -> Self {
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

pub(crate) type ApiResult<T> = Result<Json<T>, Failure>;

pub fn router(broker: Arc<Broker>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/v1/auth", get(auth_methods))
        .route("/v1/login", post(login))
        .route("/v1/whoami", get(whoami))
        .route("/v1/servers", get(servers))
        .route("/v1/sessions", post(create_session).get(list_sessions))
        .route("/v1/approvals", get(list_approvals))
        .route("/v1/approvals/{id}", get(get_approval))
        .route("/v1/approvals/{id}/decision", post(decide_approval))
        .route("/v1/access-requests", post(request_access))
        .route("/v1/access-grants", get(list_grants))
        .merge(crate::records_api::routes())
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
pub(crate) struct Caller {
    pub(crate) identity: Identity,
    /// When the presented token expires (unix seconds).
    expires_at: u64,
    /// A shorter certificate lifetime for this caller (CI workloads).
    cert_ttl: Option<std::time::Duration>,
}

/// The caller's verified identity. For the broker's own tokens the roles
/// are looked up now (not taken from the token, so removing a role takes
/// effect at once); for an OpenID Provider's token they come from its
/// groups or claim rules, read from this very token.
pub(crate) async fn caller(
    b: &Broker,
    headers: &HeaderMap,
    peer: SocketAddr,
) -> Result<Caller, Failure> {
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
    // A role that lists the server, or a live just-in-time grant, which
    // then bounds the session: it ends when the grant does.
    let mut grant_ends: Option<u64> = None;
    if !b.config.may_connect(&id.roles, &req.server) {
        let grant = b
            .approvals
            .active_grant(&id.user, &req.server)
            .await
            .map_err(Failure::internal)?;
        match grant.and_then(|g| g.grant_expires_at.map(|t| (g.id, t))) {
            Some((grant, until)) => {
                info!(user = %id.user, server = %req.server, %grant, until, "session allowed by an access grant");
                grant_ends = Some(until);
            }
            None => {
                warn!(user = %id.user, client = %peer, server = %req.server, "session refused: no role allows this server");
                let hint = if may_request_access(&b, &id.roles, &req.server).is_some() {
                    "; ask for access with `mcpgate request-access`"
                } else {
                    ""
                };
                return Err(Failure::new(
                    StatusCode::FORBIDDEN,
                    ErrorCode::Forbidden,
                    format!(
                        "none of your roles allows server {:?}{hint}",
                        req.server.as_str()
                    ),
                ));
            }
        }
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
    let now = unix_now();
    let mut cert_ttl = cert_ttl.unwrap_or(b.config.broker.cert_ttl);
    let mut max_duration_secs = b.config.broker.session_max_duration.as_secs();
    if let Some(until) = grant_ends {
        let left = until.saturating_sub(now).max(1);
        cert_ttl = cert_ttl.min(std::time::Duration::from_secs(left));
        max_duration_secs = max_duration_secs.min(left);
    }
    let cert = b
        .ca
        .sign_session(&req.csr_pem, &cert_identity, cert_ttl)
        .map_err(|e| match e {
            CaError::WeakKey(_) => {
                warn!(user = %id.user, client = %peer, reason = %e, "session refused: weak key");
                Failure::new(StatusCode::BAD_REQUEST, ErrorCode::WeakKey, e.to_string())
            }
            CaError::BadCsr(_) => Failure::bad_request(e.to_string()),
            other => Failure::internal(other),
        })?;
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
        max_duration_secs,
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
        max_duration_secs,
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

/// Servers whose requests these roles may decide.
fn approver_servers(b: &Broker, roles: &[RoleName]) -> Vec<ServerName> {
    let mut out: Vec<ServerName> = roles
        .iter()
        .filter_map(|r| b.config.roles.get(r))
        .flat_map(|r| r.approves.iter().cloned())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The longest access these roles may ask for on `server`, if any may.
fn may_request_access(
    b: &Broker,
    roles: &[RoleName],
    server: &ServerName,
) -> Option<std::time::Duration> {
    roles
        .iter()
        .filter_map(|r| b.config.roles.get(r))
        .filter(|r| r.request_access.contains(server))
        .map(|r| r.max_access_duration)
        .max()
}

impl From<DecideError> for Failure {
    fn from(e: DecideError) -> Self {
        let (status, code) = match &e {
            DecideError::NotFound(_) => (StatusCode::NOT_FOUND, ErrorCode::NotFound),
            DecideError::OwnRequest | DecideError::NotApprover(_) => {
                (StatusCode::FORBIDDEN, ErrorCode::Forbidden)
            }
            DecideError::AlreadyDecided { .. }
            | DecideError::AlreadyVoted(_)
            | DecideError::DigestMismatch(_) => (StatusCode::CONFLICT, ErrorCode::Conflict),
            DecideError::Store(e) => return Failure::internal(e),
        };
        Failure::new(status, code, e.to_string())
    }
}

fn not_found(id: &str) -> Failure {
    Failure::new(
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
        format!("no approval request {id}"),
    )
}

/// Long polls wait at most this long.
const MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Requests the caller may see: their own, and those of servers they
/// approve for. With `after_version`, waits for a change first.
async fn list_approvals(
    State(b): State<Arc<Broker>>,
    Extension(Peer(peer)): Extension<Peer>,
    headers: HeaderMap,
    Query(q): Query<ApprovalQuery>,
) -> ApiResult<ApprovalList> {
    let id = caller(&b, &headers, peer).await?.identity;
    let state = match q.state.as_deref() {
        None => Some(ApprovalState::Pending),
        Some("all") => None,
        Some(s) => Some(s.parse::<ApprovalState>().map_err(Failure::bad_request)?),
    };
    if let Some(after) = q.after_version {
        let wait = std::time::Duration::from_secs(q.wait_secs.unwrap_or(30)).min(MAX_WAIT);
        let mut changes = b.approvals.subscribe();
        let changed = async {
            while *changes.borrow_and_update() == after {
                if changes.changed().await.is_err() {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(wait, changed).await;
    }
    let version = b.approvals.version();
    let approvals = b
        .approvals
        .list(ListFilter {
            state,
            user: id.user.clone(),
            approves: approver_servers(&b, &id.roles),
        })
        .await
        .map_err(Failure::internal)?;
    Ok(Json(ApprovalList { approvals, version }))
}

async fn get_approval(
    State(b): State<Arc<Broker>>,
    Extension(Peer(peer)): Extension<Peer>,
    headers: HeaderMap,
    Path(approval): Path<String>,
) -> ApiResult<Approval> {
    let id = caller(&b, &headers, peer).await?.identity;
    let a = b
        .approvals
        .get(&approval)
        .await
        .map_err(Failure::internal)?
        .ok_or_else(|| not_found(&approval))?;
    // Someone who may neither decide it nor made it does not learn that
    // it exists.
    if a.requester != id.user && !approver_servers(&b, &id.roles).contains(&a.server) {
        return Err(not_found(&approval));
    }
    Ok(Json(a))
}

async fn decide_approval(
    State(b): State<Arc<Broker>>,
    Extension(Peer(peer)): Extension<Peer>,
    headers: HeaderMap,
    Path(approval): Path<String>,
    body: Bytes,
) -> ApiResult<Approval> {
    let id = caller(&b, &headers, peer).await?.identity;
    let req: DecisionRequest = parse_body(&body)?;
    let approves = approver_servers(&b, &id.roles);
    let approve = req.approve;
    let result = b
        .approvals
        .decide(
            &approval,
            id.user.clone(),
            move |server| approves.contains(server),
            req,
        )
        .await;
    match result {
        Ok(a) => {
            info!(
                approval = %a.id, approver = %id.user, approve, state = %a.state,
                client = %peer, "approval vote taken"
            );
            if a.kind == mcpgate_shared::approval::ApprovalKind::Access
                && a.state == ApprovalState::Approved
            {
                let event = DecisionEvent {
                    at_ms: now_ms(),
                    decision: DecisionKind::Grant,
                    session: None,
                    user: a.requester.clone(),
                    server: a.server.clone(),
                    method: None,
                    name: None,
                    request_id: None,
                    rule: None,
                    reason: a.reason.clone().unwrap_or_default(),
                    approval: Some(a.id.clone()),
                    approvers: a.approvers(),
                    masked: Default::default(),
                };
                b.approvals.record(event).await.map_err(Failure::internal)?;
            }
            Ok(Json(a))
        }
        Err(e) => {
            warn!(approval = %approval, approver = %id.user, client = %peer, reason = %e, "approval vote refused");
            // Someone with no say over the server learns nothing about it.
            if matches!(e, DecideError::NotApprover(_)) {
                return Err(Failure::new(
                    StatusCode::FORBIDDEN,
                    ErrorCode::Forbidden,
                    format!("you are not an approver for approval request {approval}"),
                ));
            }
            Err(e.into())
        }
    }
}

async fn request_access(
    State(b): State<Arc<Broker>>,
    Extension(Peer(peer)): Extension<Peer>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Approval> {
    let id = caller(&b, &headers, peer).await?.identity;
    let req: AccessRequest = parse_body(&body)?;
    if !b.config.servers.contains_key(&req.server) {
        return Err(Failure::new(
            StatusCode::NOT_FOUND,
            ErrorCode::UnknownServer,
            format!("there is no server named {:?}", req.server.as_str()),
        ));
    }
    let Some(max) = may_request_access(&b, &id.roles, &req.server) else {
        warn!(user = %id.user, client = %peer, server = %req.server, "access request refused: no role may ask");
        return Err(Failure::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            format!(
                "none of your roles may request access to server {:?}",
                req.server.as_str()
            ),
        ));
    };
    if req.duration_secs == 0 || req.duration_secs > max.as_secs() {
        return Err(Failure::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            format!(
                "access to {:?} may be asked for at most {}",
                req.server.as_str(),
                humantime::format_duration(max)
            ),
        ));
    }
    if req.reason.trim().is_empty() {
        return Err(Failure::bad_request("say why you need access (--reason)"));
    }
    let a = b
        .approvals
        .open_access(id.user.clone(), req)
        .await
        .map_err(Failure::internal)?;
    info!(approval = %a.id, user = %id.user, server = %a.server, duration_secs = a.duration_secs, "access requested");
    Ok(Json(a))
}

async fn list_grants(
    State(b): State<Arc<Broker>>,
    Extension(Peer(peer)): Extension<Peer>,
    headers: HeaderMap,
) -> ApiResult<GrantList> {
    let id = caller(&b, &headers, peer).await?.identity;
    let grants = b
        .approvals
        .grants(ListFilter {
            state: None,
            user: id.user.clone(),
            approves: approver_servers(&b, &id.roles),
        })
        .await
        .map_err(Failure::internal)?;
    Ok(Json(GrantList { grants }))
}
