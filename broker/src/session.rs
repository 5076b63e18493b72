//! Session records and their life cycle.
//!
//! ```text
//! issued ──(tunnel opens with its certificate)──▶ connected ──▶ ended
//!    │                                                 │
//!    └──(connect_by passes)──▶ expired                  └──(broker restart)──▶ aborted
//! ```
//!
//! **Invariant:** a session moves from `issued` to `connected` at most once,
//! in one atomic store update that also checks the certificate serial and
//! the connect deadline — one certificate, one tunnel. Every later state is
//! final, so a certificate whose session has ended opens nothing.

use std::fmt;
use std::str::FromStr;

use mcpgate_shared::names::{RoleName, ServerName, SessionId, UserName};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    Issued,
    Connected,
    Ended,
    Expired,
    Aborted,
}

impl SessionState {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Issued => "issued",
            SessionState::Connected => "connected",
            SessionState::Ended => "ended",
            SessionState::Expired => "expired",
            SessionState::Aborted => "aborted",
        }
    }
}

impl fmt::Display for SessionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SessionState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "issued" => SessionState::Issued,
            "connected" => SessionState::Connected,
            "ended" => SessionState::Ended,
            "expired" => SessionState::Expired,
            "aborted" => SessionState::Aborted,
            other => return Err(format!("unknown session state {other:?}")),
        })
    }
}

/// One session, as stored. Times are unix seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionRecord {
    pub id: SessionId,
    pub user: UserName,
    pub issuer: String,
    pub roles: Vec<RoleName>,
    pub server: ServerName,
    /// Address the session was requested from (API peer).
    pub client_addr: String,
    pub created_at: u64,
    /// Hex serial of the session certificate.
    pub cert_serial: String,
    /// The certificate opens a tunnel only until then.
    pub connect_by: u64,
    pub max_duration_secs: u64,
    pub state: SessionState,
    pub connected_at: Option<u64>,
    /// Address the tunnel came from.
    pub tunnel_peer: Option<String>,
    pub ended_at: Option<u64>,
    pub end_reason: Option<String>,
}

/// Why a tunnel was refused for a session certificate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    #[error("no such session")]
    Unknown,
    #[error("the certificate does not belong to this session")]
    WrongCertificate,
    #[error("the session's certificate was already used to open a tunnel")]
    AlreadyUsed,
    #[error("the session has ended ({0})")]
    Ended(SessionState),
    #[error("the session was not opened in time")]
    TooLate,
    #[error("the certificate names a different user or server than the session")]
    IdentityMismatch,
    #[error("the session store failed: {0}")]
    Store(String),
}
