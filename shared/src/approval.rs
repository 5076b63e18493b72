//! Approval requests: a held call, or a request for just-in-time access to
//! a server, waiting for people with an approver role to decide.
//!
//! | method | path | body | answer |
//! | --- | --- | --- | --- |
//! | GET | `/v1/approvals` | query [`ApprovalQuery`] | [`ApprovalList`] |
//! | GET | `/v1/approvals/{id}` | — | [`Approval`] |
//! | POST | `/v1/approvals/{id}/decision` | [`DecisionRequest`] | [`Approval`] |
//! | POST | `/v1/access-requests` | [`AccessRequest`] | [`Approval`] |
//! | GET | `/v1/access-grants` | — | [`GrantList`] |
//!
//! All need the Bearer token. A caller sees the requests they may decide
//! (they hold an approver role for the server) and their own.
//!
//! A call approval is bound to one held call: the session, the requester,
//! the method and name, and the [`digest`] of the canonical arguments. The
//! approver's decision carries the digest they were shown, so a decision
//! can never apply to other arguments than the ones displayed.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::names::{ServerName, SessionId, UserName};

/// What is waiting for approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalKind {
    /// A held `tools/call`, `resources/read` or `prompts/get`.
    Call,
    /// Just-in-time access to a server for a while.
    Access,
}

/// Where an approval request stands. Every state but `Pending` is final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalState {
    Pending,
    Approved,
    Denied,
    /// Nobody decided before `expires_at`.
    Expired,
    /// The session ended (or the client cancelled the call) first.
    Cancelled,
}

impl ApprovalState {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalState::Pending => "pending",
            ApprovalState::Approved => "approved",
            ApprovalState::Denied => "denied",
            ApprovalState::Expired => "expired",
            ApprovalState::Cancelled => "cancelled",
        }
    }

    pub fn is_final(self) -> bool {
        self != ApprovalState::Pending
    }
}

impl std::fmt::Display for ApprovalState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ApprovalState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "pending" => ApprovalState::Pending,
            "approved" => ApprovalState::Approved,
            "denied" => ApprovalState::Denied,
            "expired" => ApprovalState::Expired,
            "cancelled" => ApprovalState::Cancelled,
            other => return Err(format!("unknown approval state {other:?}")),
        })
    }
}

/// One approver's say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    pub approver: UserName,
    pub approve: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Unix seconds.
    pub at: u64,
}

/// An approval request as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Approval {
    /// `apr_` followed by 32 hex digits.
    pub id: String,
    pub kind: ApprovalKind,
    pub state: ApprovalState,
    pub requester: UserName,
    pub server: ServerName,
    /// The session the held call belongs to (calls only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionId>,
    /// `tools/call`, `resources/read` or `prompts/get` (calls only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// The tool or prompt name, or the resource URI (calls only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The call's arguments exactly as they will be forwarded (calls only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<Value>,
    /// [`digest`] of method, name and arguments; for access requests, of
    /// server, duration and reason.
    pub digest: String,
    /// The policy rule that held the call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Why it needs approval: the rule's reason, or the requester's words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// How long access is asked for (access requests only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_secs: Option<u64>,
    /// Approvals needed; one denial decides.
    pub required: u32,
    #[serde(default)]
    pub votes: Vec<Vote>,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds: undecided by then, it expires.
    pub expires_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<u64>,
    /// Access requests that were approved: access lasts until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_expires_at: Option<u64>,
}

impl Approval {
    /// Who voted yes, in voting order.
    pub fn approvers(&self) -> Vec<UserName> {
        self.votes
            .iter()
            .filter(|v| v.approve)
            .map(|v| v.approver.clone())
            .collect()
    }
}

/// `GET /v1/approvals` query.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalQuery {
    /// Only requests in this state (`pending` if absent); `all` for every state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Long poll: answer as soon as the list's `version` differs from this
    /// one, or after `wait_secs` (at most 60) with the list as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_version: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_secs: Option<u64>,
}

/// `GET /v1/approvals`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalList {
    pub approvals: Vec<Approval>,
    /// Changes whenever any approval request is opened or decided.
    pub version: u64,
}

/// `POST /v1/approvals/{id}/decision`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    pub approve: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The digest of the request the approver was shown; a mismatch is
    /// refused.
    pub digest: String,
}

/// `POST /v1/access-requests`: ask for access to a server for a while.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessRequest {
    pub server: ServerName,
    pub duration_secs: u64,
    pub reason: String,
}

/// An approved access request, live or past.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The access request's id.
    pub id: String,
    pub user: UserName,
    pub server: ServerName,
    /// Unix seconds.
    pub granted_at: u64,
    pub expires_at: u64,
    pub approvers: Vec<UserName>,
    pub reason: String,
}

/// `GET /v1/access-grants`: the caller's grants (all of them for an
/// approver of the server), newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantList {
    pub grants: Vec<Grant>,
}

/// The canonical form of a JSON value: object members sorted by key (byte
/// order), no insignificant whitespace, strings and numbers as serde_json
/// writes them. Two values that mean the same JSON get the same bytes,
/// whatever order their keys arrived in.
pub fn canonical_json(value: &Value) -> String {
    fn write(value: &Value, out: &mut String) {
        match value {
            Value::Object(map) => {
                let mut members: Vec<_> = map.iter().collect();
                members.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
                out.push('{');
                for (k, (key, v)) in members.into_iter().enumerate() {
                    if k > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(key.clone()).to_string());
                    out.push(':');
                    write(v, out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (k, v) in items.iter().enumerate() {
                    if k > 0 {
                        out.push(',');
                    }
                    write(v, out);
                }
                out.push(']');
            }
            scalar => out.push_str(&scalar.to_string()),
        }
    }
    let mut out = String::new();
    write(value, &mut out);
    out
}

/// What a call approval is bound to: SHA-256 over a domain-separated
/// encoding of method, name and the canonical arguments, as lowercase hex.
/// Each part is length-prefixed so no two different triples collide.
pub fn digest(method: &str, name: &str, arguments: &Value) -> String {
    let args = canonical_json(arguments);
    let mut h = Sha256::new();
    h.update(b"mcpgate/approval/v1\0");
    for part in [method.as_bytes(), name.as_bytes(), args.as_bytes()] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    crate::hex::encode(&h.finalize())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn canonical_json_sorts_keys_at_every_depth() {
        let a = json!({"b": 1, "a": {"y": [1, {"d": 2, "c": 3}], "x": "é"}});
        assert_eq!(
            canonical_json(&a),
            r#"{"a":{"x":"é","y":[1,{"c":3,"d":2}]},"b":1}"#
        );
    }

    #[test]
    fn digest_ignores_key_order_but_not_values() {
        let one = digest(
            "tools/call",
            "query",
            &json!({"sql": "select 1", "db": "x"}),
        );
        let same = digest(
            "tools/call",
            "query",
            &json!({"db": "x", "sql": "select 1"}),
        );
        let other = digest(
            "tools/call",
            "query",
            &json!({"db": "x", "sql": "select 2"}),
        );
        let renamed = digest(
            "tools/call",
            "query2",
            &json!({"db": "x", "sql": "select 1"}),
        );
        assert_eq!(one, same);
        assert_ne!(one, other);
        assert_ne!(one, renamed);
        assert_eq!(one.len(), 64);
    }

    #[test]
    fn digest_parts_cannot_be_shifted() {
        // "ab" + "c" and "a" + "bc" must differ: parts are length-prefixed.
        assert_ne!(digest("ab", "c", &json!({})), digest("a", "bc", &json!({})));
    }

    #[test]
    fn digest_known_answer() {
        // Pins the construction (computed independently with Python's
        // hashlib): changing it invalidates every approval an approver was
        // shown.
        assert_eq!(
            digest("tools/call", "echo", &json!({"message": "hi"})),
            "8738d585a66fb091b448228e68dfc0db198d7cafb2df2e33cfcaabf849a746de"
        );
    }
}
