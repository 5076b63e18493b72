//! The session record's events and the cross-session index, as stored and
//! as served: the schema the broker writes, `verify` checks, `replay`
//! renders and exports flatten.
//!
//! Field names are stable (the README documents them for auditors and
//! SIEMs). How lines are hashed, chained and signed is the broker's
//! `record::format`; this module only says what a line contains.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::event::DecisionEvent;
use crate::names::{RoleName, ServerName, SessionId, UserName};

/// The record format version every line carries as `v`.
pub const FORMAT_VERSION: u32 = 1;

/// One line of a session's record, without its `hash` and `sig` trailer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub v: u32,
    pub session: SessionId,
    /// 0 for the first event, then one more per line: a gap is a missing
    /// event, a step back a reordering.
    pub seq: u64,
    /// Unix milliseconds, when the broker wrote the event.
    pub at_ms: u64,
    /// Hex SHA-256 chain value of the line before (see `record::format`).
    pub prev: String,
    #[serde(flatten)]
    pub body: Body,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Body {
    /// The tunnel was admitted; always event 0.
    Start(Start),
    /// One message as it was forwarded (after policy, after masking).
    Message(MessageEvent),
    /// A policy, approval or masking decision.
    Decision { decision: DecisionEvent },
    /// A signed checkpoint over every event before it.
    Checkpoint { events: u64 },
    /// Why and how the session ended.
    End { state: EndState, reason: String },
    /// The last line: signed, nothing may follow.
    Seal { events: u64 },
}

impl Body {
    pub fn type_name(&self) -> &'static str {
        match self {
            Body::Start(_) => "start",
            Body::Message(_) => "message",
            Body::Decision { .. } => "decision",
            Body::Checkpoint { .. } => "checkpoint",
            Body::End { .. } => "end",
            Body::Seal { .. } => "seal",
        }
    }

    /// Checkpoints and seals carry the broker's signature.
    pub fn is_signed(&self) -> bool {
        matches!(self, Body::Checkpoint { .. } | Body::Seal { .. })
    }
}

/// Who opened the session, from where, to what, with which certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Start {
    pub user: UserName,
    /// Who vouched for the user (an issuer URL, or `local`).
    pub issuer: String,
    pub roles: Vec<RoleName>,
    pub server: ServerName,
    /// Where the session was asked for (the API peer).
    pub client_addr: String,
    /// Where the tunnel came from.
    pub tunnel_peer: String,
    /// Hex serial of the session certificate.
    pub cert_serial: String,
    /// Unix seconds the certificate was issued.
    pub created_at: u64,
}

/// Who sent a message and who received it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Peer {
    Client,
    Upstream,
    /// The broker itself (an error answering a refused or denied request,
    /// progress while a call is held).
    Broker,
}

impl Peer {
    pub fn as_str(self) -> &'static str {
        match self {
            Peer::Client => "client",
            Peer::Upstream => "upstream",
            Peer::Broker => "broker",
        }
    }
}

/// One forwarded message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageEvent {
    pub from: Peer,
    pub to: Peer,
    /// `request`, `notification`, `response` or `error`.
    pub kind: String,
    /// The JSON-RPC id as JSON text (`1` and `"1"` differ).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Tool or prompt name, or resource URI, for calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Size of the forwarded line in bytes.
    pub bytes: u64,
    /// Values masked in this message, per type (never the values).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub masked: BTreeMap<String, u64>,
    /// The message exactly as forwarded (masked).
    pub msg: Value,
}

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndState {
    /// The relay ended (client left, upstream exited, deadline, shutdown).
    Closed,
    /// The broker stopped without ending it (a crash); written at the next
    /// start.
    Aborted,
}

impl EndState {
    pub fn as_str(self) -> &'static str {
        match self {
            EndState::Closed => "closed",
            EndState::Aborted => "aborted",
        }
    }
}

/// One line of the cross-session index, without its trailer. Every index
/// line is signed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexEntry {
    pub v: u32,
    pub seq: u64,
    pub at_ms: u64,
    pub prev: String,
    pub session: SessionId,
    #[serde(flatten)]
    pub body: IndexBody,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum IndexBody {
    /// A session's record was started.
    Open { user: UserName, server: ServerName },
    /// A session's record was sealed: `events` lines, the last (the seal)
    /// hashing to `head`.
    Close {
        state: EndState,
        events: u64,
        head: String,
    },
    /// A session's record was deleted (retention); a signed tombstone.
    Delete {
        reason: String,
        events: u64,
        head: String,
    },
}

/// What `GET /v1/sessions` lists: one recorded session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSummary {
    pub session: SessionId,
    pub user: UserName,
    pub server: ServerName,
    /// Unix milliseconds of the first and last event.
    pub started_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_ms: Option<u64>,
    /// `live`, `closed`, `aborted` or `deleted`; `damaged` when the
    /// record cannot be read, `missing` when the index lists it but its
    /// file is gone.
    pub state: String,
    pub events: u64,
    /// Tool calls forwarded, and calls denied.
    pub calls: u64,
    pub denied: u64,
}

/// The outcome of verifying records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// `true` when nothing is wrong.
    pub ok: bool,
    /// Sessions checked.
    pub sessions: u64,
    /// Events checked, over all sessions.
    pub events: u64,
    /// Each problem in words, naming the session and the place
    /// (`session S: event 12 was modified`).
    pub problems: Vec<String>,
    /// Things that are not wrong but an auditor should know (a live
    /// session with no seal yet).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

// ---------------------------------------------------------------------------
// The records API: listing, replay, verification, export and the evidence
// report.
//
// | method | path | query | answer |
// | --- | --- | --- | --- |
// | GET | `/v1/records` | [`RecordsQuery`] | `Vec<SessionSummary>`, newest first |
// | GET | `/v1/records/{session}` | [`ReplayQuery`] | NDJSON: one [`Event`] a line |
// | GET | `/v1/records/{session}/verify` | — | [`VerifyReport`] |
// | GET | `/v1/audit/export` | [`ExportQuery`] | JSON lines or CSV, [`EXPORT_EVENTS_HEADER`] first |
// | GET | `/v1/audit/report` | [`ReportQuery`] | Markdown or HTML |
//
// All need the Bearer token. A caller sees the records of their own
// sessions; a role with `audit = true` sees everyone's and may export and
// report. Someone else's session answers 404, like an unknown one.

/// The response header of `GET /v1/audit/export` that says how many event
/// lines follow (the CSV header line not counted), before the first one.
pub const EXPORT_EVENTS_HEADER: &str = "x-mcpgate-export-events";

/// `GET /v1/records` query; every filter is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordsQuery {
    /// Only this user's sessions (others' need the audit role).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<UserName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerName>,
    /// Unix milliseconds: only sessions active at or after this time (live,
    /// or ended then or later).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<u64>,
}

/// `GET /v1/records/{session}` query.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayQuery {
    /// Keep the answer open and send events as they are written, until the
    /// seal (or the broker shuts down).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub follow: bool,
}

/// How `GET /v1/audit/export` writes events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    /// One JSON object a line, every field in every line (`null` when it
    /// does not apply).
    #[default]
    Jsonl,
    /// RFC 4180 CSV with a header line of the field names.
    Csv,
}

impl ExportFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            ExportFormat::Jsonl => "jsonl",
            ExportFormat::Csv => "csv",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            ExportFormat::Jsonl => "application/x-ndjson",
            ExportFormat::Csv => "text/csv; charset=utf-8",
        }
    }
}

/// `GET /v1/audit/export` query: events with `since <= at_ms < until`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportQuery {
    /// Unix milliseconds; default: the beginning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<u64>,
    /// Unix milliseconds; default (and at most): now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<ExportFormat>,
}

/// How `GET /v1/audit/report` writes the evidence report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReportFormat {
    /// Markdown.
    #[default]
    Md,
    /// One self-contained HTML page.
    Html,
}

impl ReportFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            ReportFormat::Md => "md",
            ReportFormat::Html => "html",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            ReportFormat::Md => "text/markdown; charset=utf-8",
            ReportFormat::Html => "text/html; charset=utf-8",
        }
    }
}

/// `GET /v1/audit/report` query: what the broker recorded with
/// `since <= time < until`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportQuery {
    /// Unix milliseconds; default: the beginning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<u64>,
    /// Unix milliseconds; default (and at most): now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<ReportFormat>,
}
