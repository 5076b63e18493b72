//! The broker's HTTPS API (JSON bodies under `/v1`) and the tunnel's status
//! line.
//!
//! | method | path | body | answer |
//! | --- | --- | --- | --- |
//! | GET | `/v1/auth` | — | [`AuthMethods`] |
//! | POST | `/v1/login` | [`LoginRequest`] | [`TokenResponse`] |
//! | GET | `/v1/whoami` | — (Bearer token) | [`WhoAmI`] |
//! | GET | `/v1/servers` | — (Bearer token) | [`ServersResponse`] |
//! | POST | `/v1/sessions` | [`SessionRequest`] (Bearer token) | [`SessionResponse`] |
//! | GET | `/healthz` | — | `ok` |
//!
//! Approvals and access requests are in [`crate::approval`].
//!
//! The Bearer token is either one `/v1/login` returned (local users) or a
//! token from an OpenID Provider the broker trusts: a JWT access token for
//! the broker's resource (`typ: at+jwt`) or an ID token for the CLI's client
//! id. The broker verifies it at every call.
//!
//! Errors are [`ApiError`] bodies with a matching HTTP status.
//!
//! The tunnel (a separate mTLS port) starts with one line from the broker, a
//! [`TunnelStatus`], then carries newline-delimited MCP messages both ways.

use serde::{Deserialize, Serialize};

use crate::names::{RoleName, ServerName, SessionId, UserName};
use crate::secret::Secret;

/// `GET /v1/auth`: how people sign in to this broker. Needs no token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthMethods {
    /// Local users with passwords (`POST /v1/login`) are configured.
    pub password: bool,
    /// OpenID Providers people log in with, in config order; the first is
    /// the default.
    #[serde(default)]
    pub oidc: Vec<OidcLogin>,
}

/// One OpenID Provider, as the CLI needs it to run a login.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OidcLogin {
    /// The config's short name for it, e.g. `corp`.
    pub name: String,
    /// The issuer URL, exactly as the provider spells it.
    pub issuer: String,
    /// The public (PKCE) client the CLI logs in as.
    pub client_id: String,
    /// Scopes to ask for (`openid` and `offline_access` included).
    pub scopes: Vec<String>,
    /// The resource indicator (RFC 8707) to ask tokens for. When set, the
    /// CLI presents the JWT access token for it; otherwise the ID token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
}

/// `POST /v1/login`: a local user's name and password.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub user: UserName,
    pub password: Secret<String>,
}

/// A broker-signed bearer token and what it stands for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenResponse {
    pub token: Secret<String>,
    /// Unix seconds.
    pub expires_at: u64,
    pub user: UserName,
    pub roles: Vec<RoleName>,
}

/// `GET /v1/whoami`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WhoAmI {
    pub user: UserName,
    pub roles: Vec<RoleName>,
    /// Who vouched for the identity (`local` for the broker's own users).
    pub issuer: String,
    /// Unix seconds.
    pub expires_at: u64,
}

/// One upstream server the caller may connect to.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerInfo {
    pub name: ServerName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub transport: String,
}

/// `GET /v1/servers`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServersResponse {
    pub servers: Vec<ServerInfo>,
}

/// `POST /v1/sessions`: a certificate signing request for one session.
/// There is deliberately no field that could carry a private key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionRequest {
    pub server: ServerName,
    /// PKCS#10 CSR, PEM. Its subject and extensions are ignored: the broker
    /// writes the identity itself.
    pub csr_pem: String,
}

/// The session certificate and where to use it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionResponse {
    pub session_id: SessionId,
    pub server: ServerName,
    pub certificate_pem: String,
    /// The CA that signed the broker's tunnel certificate.
    pub ca_pem: String,
    /// `host:port` of the mTLS tunnel listener.
    pub tunnel_addr: String,
    /// The TLS server name to expect on the tunnel.
    pub tunnel_server_name: String,
    /// Unix seconds: the certificate opens a tunnel only before this.
    pub connect_by: u64,
    /// The broker closes the tunnel after this many seconds.
    pub max_duration_secs: u64,
}

/// Stable error codes; the CLI maps them to messages and exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    Unauthenticated,
    TokenExpired,
    Forbidden,
    UnknownServer,
    WeakKey,
    RateLimited,
    /// No such approval request (or not one the caller may see).
    NotFound,
    /// The request changed under the caller: already decided, or the
    /// digest does not match what the approver was shown.
    Conflict,
    Internal,
}

/// The body of every API error.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiError {
    pub error: ErrorCode,
    pub message: String,
}

/// The first line the broker writes on a tunnel, before any MCP message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum TunnelStatus {
    Ready {
        session_id: SessionId,
        server: ServerName,
    },
    Refused {
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_request_has_no_room_for_a_private_key() {
        let body = r#"{"server":"demo","csr_pem":"x","private_key":"-----BEGIN PRIVATE KEY-----"}"#;
        assert!(serde_json::from_str::<SessionRequest>(body).is_err());
    }

    #[test]
    fn login_request_debug_hides_the_password() {
        let req = LoginRequest {
            user: "alice".parse().unwrap(),
            password: Secret::new("correct horse".into()),
        };
        assert!(!format!("{req:?}").contains("horse"));
        assert!(serde_json::to_string(&req).unwrap().contains("horse"));
    }

    #[test]
    fn tunnel_status_is_tagged() {
        let s = TunnelStatus::Refused {
            reason: "session already used".into(),
        };
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"{"status":"refused","reason":"session already used"}"#
        );
    }
}
