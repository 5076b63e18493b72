//! Decision events: every allow, deny, hold and approval outcome the broker
//! reaches about a message, in the shape the session record stores.
//!
//! Field names are stable: exports and the recording depend on them.

use serde::{Deserialize, Serialize};

use crate::names::{ServerName, SessionId, UserName};

/// What was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionKind {
    /// A rule allowed the call; it was forwarded.
    Allow,
    /// A rule denied it (or no rule allowed it, or a rule failed to
    /// evaluate); it was not forwarded.
    Deny,
    /// The message was malformed or ambiguous (case-varied keys, a request
    /// sent as a notification, ...) and refused before any rule ran.
    Refuse,
    /// A rule held it for approval.
    Hold,
    /// The approvers said yes; the held call was forwarded.
    Approve,
    /// An approver said no; the held call was answered with an error.
    DenyByApprover,
    /// Nobody decided in time; the held call was answered with an error.
    Timeout,
    /// The client cancelled the held call or the session ended first.
    Cancel,
    /// Just-in-time access was granted (access requests).
    Grant,
    /// Values in the upstream's message were masked before it went on;
    /// `masked` counts them per type (never the values).
    Mask,
}

impl DecisionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionKind::Allow => "allow",
            DecisionKind::Deny => "deny",
            DecisionKind::Refuse => "refuse",
            DecisionKind::Hold => "hold",
            DecisionKind::Approve => "approve",
            DecisionKind::DenyByApprover => "deny_by_approver",
            DecisionKind::Timeout => "timeout",
            DecisionKind::Cancel => "cancel",
            DecisionKind::Grant => "grant",
            DecisionKind::Mask => "mask",
        }
    }
}

impl std::fmt::Display for DecisionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One decision: who, what, when and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionEvent {
    /// Unix milliseconds.
    pub at_ms: u64,
    pub decision: DecisionKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionId>,
    /// Whose call (or access request) it was.
    pub user: UserName,
    pub server: ServerName,
    /// The JSON-RPC method, e.g. `tools/call`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Tool or prompt name, or resource URI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The JSON-RPC request id, as JSON text (`1` and `"1"` differ).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The policy rule that decided, as `name (file:line)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Why, in words.
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<String>,
    /// Who approved or denied (approval outcomes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvers: Vec<UserName>,
    /// Masked values per type (mask events).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub masked: std::collections::BTreeMap<String, u64>,
}
