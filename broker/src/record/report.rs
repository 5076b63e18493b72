//! The evidence report: for each SOC 2 criterion in the product brief's
//! table, what the broker recorded in a period — sessions, certificates,
//! access requests, decisions, approvals, masking, retention — and
//! whether the records verify.
//!
//! [`collect`] gathers what the records say (one pass over the records of
//! the sessions active in the period); the API adds what the session store
//! keeps (certificates issued, approval requests) and the verification
//! result into an [`Evidence`]. Rendering is pure: [`document`] turns the
//! evidence into sections of paragraphs, facts and tables once, and
//! [`markdown`] and [`html`] only write them out, each escaping every
//! piece of text (user names, tool names and reasons are chosen by
//! others).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use mcpgate_shared::approval::{Approval, ApprovalKind};
use mcpgate_shared::event::{DecisionEvent, DecisionKind};
use mcpgate_shared::html::escape as esc;
use mcpgate_shared::names::{RoleName, ServerName, SessionId, UserName};
use mcpgate_shared::record::{ReportFormat, SessionSummary, VerifyReport};

use super::export::{Window, masked_text};
use super::reader::{self, ListFilter, ReadError};
use super::store::RecordStore;
use crate::session::SessionRecord;

/// Rows a table shows at most; the rest are counted ("and N more") and
/// are all in the export.
pub const MAX_ROWS: usize = 100;

/// One role as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleFacts {
    pub name: RoleName,
    pub servers: Vec<ServerName>,
    pub approves: Vec<ServerName>,
    pub request_access: Vec<ServerName>,
    pub audit: bool,
}

/// The settings an auditor asks about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigFacts {
    pub roles: Vec<RoleFacts>,
    pub policy_rules: usize,
    pub cert_ttl: Duration,
    pub session_max_duration: Duration,
    pub fsync: String,
    pub on_failure: String,
    pub checkpoint_events: u64,
    pub checkpoint_interval: Duration,
    pub retention: Option<Duration>,
}

impl ConfigFacts {
    pub fn from_config(c: &crate::config::Config, policy_rules: usize) -> ConfigFacts {
        ConfigFacts {
            roles: c
                .roles
                .iter()
                .map(|(name, r)| RoleFacts {
                    name: name.clone(),
                    servers: r.servers.clone(),
                    approves: r.approves.clone(),
                    request_access: r.request_access.clone(),
                    audit: r.audit,
                })
                .collect(),
            policy_rules,
            cert_ttl: c.broker.cert_ttl,
            session_max_duration: c.broker.session_max_duration,
            fsync: format!("{:?}", c.recording.fsync).to_lowercase(),
            on_failure: match c.recording.on_failure {
                super::OnFailure::Refuse => "refuse".into(),
                super::OnFailure::FailOpenWithAlarm => "fail-open-with-alarm".into(),
            },
            checkpoint_events: c.recording.checkpoint_events,
            checkpoint_interval: c.recording.checkpoint_interval,
            retention: c.recording.retention,
        }
    }
}

/// A session's start as recorded: the tunnel the broker admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartFact {
    pub at_ms: u64,
    pub session: SessionId,
    pub user: UserName,
    pub server: ServerName,
    pub roles: Vec<RoleName>,
    pub issuer: String,
    pub cert_serial: String,
    pub tunnel_peer: String,
}

/// What the records say about the period.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordFacts {
    /// Events in the period, over all sessions.
    pub events: u64,
    /// Tool calls forwarded to upstreams.
    pub calls: u64,
    /// Decisions per kind (`allow`, `deny`, ...).
    pub decisions: BTreeMap<String, u64>,
    /// Decisions per rule, then per kind.
    pub rules: BTreeMap<String, BTreeMap<String, u64>>,
    /// Denied calls (deny, refuse, deny_by_approver, timeout): the first
    /// [`MAX_ROWS`], and how many in all.
    pub denials: Vec<DecisionEvent>,
    pub denials_total: usize,
    /// Held calls and their outcomes (hold, approve, deny_by_approver,
    /// timeout, cancel): the first [`MAX_ROWS`], and how many in all.
    pub holds: Vec<DecisionEvent>,
    pub holds_total: usize,
    /// Values masked per type.
    pub masked: BTreeMap<String, u64>,
    /// Sessions in which anything was masked.
    pub masked_sessions: u64,
    /// Sessions started in the period: the first [`MAX_ROWS`], and how
    /// many in all.
    pub starts: Vec<StartFact>,
    pub starts_total: usize,
    /// Records deleted in the period (retention): session, when, why.
    pub tombstones: Vec<(SessionId, u64, String)>,
}

/// Everything the report shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Evidence {
    pub generated_ms: u64,
    pub window: Window,
    /// Hex of the broker's public audit key (what records verify against).
    pub audit_key: String,
    pub config: ConfigFacts,
    /// Sessions active in the period, newest first.
    pub sessions: Vec<SessionSummary>,
    pub records: RecordFacts,
    /// Session certificates issued in the period, newest first.
    pub certificates: Vec<SessionRecord>,
    /// Approval requests (held calls, access requests) opened in the
    /// period, oldest first.
    pub approvals: Vec<Approval>,
    /// Verification of every record.
    pub verify: VerifyReport,
}

/// The sessions active in `window`, newest first.
pub fn sessions_in(
    store: &dyn RecordStore,
    window: Window,
) -> Result<Vec<SessionSummary>, ReadError> {
    let mut sessions = reader::list(
        store,
        &ListFilter {
            since_ms: Some(window.since_ms),
            ..ListFilter::default()
        },
    )?;
    sessions.retain(|s| s.started_ms < window.until_ms);
    Ok(sessions)
}

/// One pass over the records of `sessions`, counting what happened in
/// `window`.
pub fn collect(
    store: &dyn RecordStore,
    window: Window,
    sessions: &[SessionSummary],
) -> Result<RecordFacts, ReadError> {
    let mut f = RecordFacts::default();
    for s in sessions {
        let Some(bytes) = store.read(&s.session).map_err(|e| ReadError::Io {
            place: store.describe(),
            reason: e.to_string(),
        })?
        else {
            continue;
        };
        // Masking shows both on the message and as a `mask` decision;
        // per type, the larger of the two, so nothing counts twice.
        let mut by_message: BTreeMap<String, u64> = BTreeMap::new();
        let mut by_decision: BTreeMap<String, u64> = BTreeMap::new();
        for item in reader::metas(&s.session, &bytes) {
            let (m, _) = item?;
            if !window.contains(m.at_ms) {
                continue;
            }
            f.events += 1;
            f.calls += u64::from(m.is_forwarded_call());
            for (k, v) in &m.masked {
                *by_message.entry(k.clone()).or_default() += v;
            }
            if m.kind == "start" {
                f.starts_total += 1;
                if f.starts.len() < MAX_ROWS
                    && let (Some(user), Some(server)) = (m.user.clone(), m.server.clone())
                {
                    f.starts.push(StartFact {
                        at_ms: m.at_ms,
                        session: s.session.clone(),
                        user,
                        server,
                        roles: m.roles.clone(),
                        issuer: m.issuer.clone().unwrap_or_default(),
                        cert_serial: m.cert_serial.clone().unwrap_or_default(),
                        tunnel_peer: m.tunnel_peer.clone().unwrap_or_default(),
                    });
                }
            }
            let Some(d) = m.decision else { continue };
            let kind = d.decision.as_str().to_owned();
            *f.decisions.entry(kind.clone()).or_default() += 1;
            if let Some(rule) = &d.rule {
                *f.rules
                    .entry(rule.clone())
                    .or_default()
                    .entry(kind)
                    .or_default() += 1;
            }
            for (k, v) in &d.masked {
                *by_decision.entry(k.clone()).or_default() += v;
            }
            if reader::is_denial(d.decision) {
                f.denials_total += 1;
                if f.denials.len() < MAX_ROWS {
                    f.denials.push(d.clone());
                }
            }
            if matches!(
                d.decision,
                DecisionKind::Hold
                    | DecisionKind::Approve
                    | DecisionKind::DenyByApprover
                    | DecisionKind::Timeout
                    | DecisionKind::Cancel
            ) {
                f.holds_total += 1;
                if f.holds.len() < MAX_ROWS {
                    f.holds.push(d);
                }
            }
        }
        let mut any = false;
        let types: BTreeSet<&String> = by_message.keys().chain(by_decision.keys()).collect();
        for k in types {
            let n = by_message
                .get(k)
                .copied()
                .unwrap_or(0)
                .max(by_decision.get(k).copied().unwrap_or(0));
            if n > 0 {
                any = true;
                *f.masked.entry(k.clone()).or_default() += n;
            }
        }
        f.masked_sessions += u64::from(any);
    }
    for s in reader::index(store)? {
        if let Some((at, reason, _)) = s.deleted
            && window.contains(at)
        {
            f.tombstones.push((s.session, at, reason));
        }
    }
    Ok(f)
}

// ---------------------------------------------------------------------------
// The document.

/// A piece of a section. All text is plain; the writers escape it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Block {
    Text(String),
    /// `name: value` lines.
    Facts(Vec<(String, String)>),
    Table {
        head: Vec<&'static str>,
        rows: Vec<Vec<String>>,
        /// Rows there are in all (more than shown: "and N more").
        total: usize,
    },
    /// A bulleted list.
    List(Vec<String>),
}

/// One criterion (or the summary).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub id: &'static str,
    pub title: &'static str,
    /// One line for the summary table.
    pub summary: String,
    pub blocks: Vec<Block>,
}

fn when_s(secs: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

fn when_ms(ms: u64) -> String {
    when_s(ms / 1000)
}

/// `90d`, `8h`, `1h 30m`, `10s`: whole units, largest first.
fn span(d: Duration) -> String {
    let secs = d.as_secs();
    let parts = [
        (secs / 86_400, "d"),
        (secs / 3600 % 24, "h"),
        (secs / 60 % 60, "m"),
        (secs % 60, "s"),
    ];
    let text: Vec<String> = parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect();
    if text.is_empty() {
        "0s".into()
    } else {
        text.join(" ")
    }
}

fn names<T: AsRef<str>>(items: &[T]) -> String {
    if items.is_empty() {
        "—".into()
    } else {
        items
            .iter()
            .map(AsRef::as_ref)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn opt(s: &Option<String>) -> String {
    s.clone().unwrap_or_else(|| "—".into())
}

fn table(head: Vec<&'static str>, rows: Vec<Vec<String>>, total: usize) -> Block {
    Block::Table { head, rows, total }
}

fn count_table<K: AsRef<str>>(head: &'static str, counts: &BTreeMap<K, u64>) -> Block {
    let rows: Vec<Vec<String>> = counts
        .iter()
        .map(|(k, v)| vec![k.as_ref().to_owned(), v.to_string()])
        .collect();
    let total = rows.len();
    table(vec![head, "count"], rows, total)
}

fn decision_row(d: &DecisionEvent) -> Vec<String> {
    vec![
        when_ms(d.at_ms),
        d.session
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_else(|| "—".into()),
        d.user.to_string(),
        d.server.to_string(),
        d.name.clone().unwrap_or_else(|| opt(&d.method)),
        d.decision.as_str().into(),
        opt(&d.rule),
        d.reason.clone(),
        if d.approvers.is_empty() {
            opt(&d.approval)
        } else {
            format!(
                "{} ({})",
                d.approval.as_deref().unwrap_or("—"),
                names(&d.approvers)
            )
        },
    ]
}

const DECISION_HEAD: [&str; 9] = [
    "time", "session", "user", "server", "call", "decision", "rule", "reason", "approval",
];

/// The report's sections, in the brief's order.
pub fn document(e: &Evidence) -> Vec<Section> {
    let r = &e.records;
    let c = &e.config;
    let mut by_user: BTreeMap<String, u64> = BTreeMap::new();
    let mut by_server: BTreeMap<String, u64> = BTreeMap::new();
    let mut by_state: BTreeMap<String, u64> = BTreeMap::new();
    for s in &e.sessions {
        *by_user.entry(s.user.to_string()).or_default() += 1;
        *by_server.entry(s.server.to_string()).or_default() += 1;
        *by_state.entry(s.state.clone()).or_default() += 1;
    }
    let denied: u64 = e.sessions.iter().map(|s| s.denied).sum();
    let access: Vec<&Approval> = e
        .approvals
        .iter()
        .filter(|a| a.kind == ApprovalKind::Access)
        .collect();
    let calls: Vec<&Approval> = e
        .approvals
        .iter()
        .filter(|a| a.kind == ApprovalKind::Call)
        .collect();
    let self_approved = e
        .approvals
        .iter()
        .filter(|a| a.approvers().contains(&a.requester))
        .count();
    let mut cert_states: BTreeMap<String, u64> = BTreeMap::new();
    for s in &e.certificates {
        *cert_states.entry(s.state.to_string()).or_default() += 1;
    }
    let masked_total: u64 = r.masked.values().sum();
    let decided = |k: &str| r.decisions.get(k).copied().unwrap_or(0);

    let mut out = Vec::new();

    // CC6.1
    let roles: Vec<Vec<String>> = c
        .roles
        .iter()
        .map(|r| {
            vec![
                r.name.to_string(),
                names(&r.servers),
                names(&r.approves),
                names(&r.request_access),
                if r.audit { "yes" } else { "no" }.into(),
            ]
        })
        .collect();
    let n_roles = roles.len();
    let rules: Vec<Vec<String>> = r
        .rules
        .iter()
        .map(|(rule, kinds)| {
            let k = |name: &str| kinds.get(name).copied().unwrap_or(0).to_string();
            let other: u64 = kinds
                .iter()
                .filter(|(n, _)| !["allow", "deny", "hold"].contains(&n.as_str()))
                .map(|(_, v)| v)
                .sum();
            vec![
                rule.clone(),
                k("allow"),
                k("deny"),
                k("hold"),
                other.to_string(),
            ]
        })
        .collect();
    let n_rules = rules.len();
    out.push(Section {
        id: "cc6-1",
        title: "CC6.1 Logical access, least privilege",
        summary: format!(
            "{} decisions: {} allowed, {} denied, {} held; {} policy rules, deny by default",
            r.decisions.values().sum::<u64>(),
            decided("allow"),
            r.denials_total,
            decided("hold"),
            c.policy_rules
        ),
        blocks: vec![
            Block::Text(format!(
                "Identity comes from the broker's own users or an OpenID Provider; roles come from the identity provider's groups at each session. \
                 A role reaches only the servers it lists, and on them only what the {} policy rules allow: anything no rule allows is denied. \
                 Every decision is a signed event in the session's record.",
                c.policy_rules
            )),
            Block::Text("Roles as configured now:".into()),
            table(
                vec!["role", "servers", "approves for", "may request access to", "audit"],
                roles,
                n_roles,
            ),
            Block::Text("Decisions recorded in the period, per kind:".into()),
            count_table("decision", &r.decisions),
            Block::Text("Per policy rule:".into()),
            table(vec!["rule", "allow", "deny", "hold", "other"], rules, n_rules),
        ],
    });

    // CC6.2 / CC6.3
    let access_rows: Vec<Vec<String>> = access
        .iter()
        .take(MAX_ROWS)
        .map(|a| {
            vec![
                when_s(a.created_at),
                a.id.clone(),
                a.requester.to_string(),
                a.server.to_string(),
                a.duration_secs
                    .map(|s| span(Duration::from_secs(s)))
                    .unwrap_or_else(|| "—".into()),
                a.reason.clone().unwrap_or_default(),
                a.state.to_string(),
                names(&a.approvers()),
                a.grant_expires_at.map(when_s).unwrap_or_else(|| "—".into()),
            ]
        })
        .collect();
    let mut seen_roles: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for s in &r.starts {
        seen_roles
            .entry(s.user.to_string())
            .or_default()
            .insert(names(&s.roles));
    }
    let role_rows: Vec<Vec<String>> = seen_roles
        .iter()
        .map(|(u, sets)| {
            vec![
                u.clone(),
                sets.iter().cloned().collect::<Vec<_>>().join(" | "),
            ]
        })
        .collect();
    let n_role_rows = role_rows.len();
    let granted = access
        .iter()
        .filter(|a| a.state == mcpgate_shared::approval::ApprovalState::Approved)
        .count();
    out.push(Section {
        id: "cc6-2",
        title: "CC6.2 / CC6.3 Provisioning, removal, role changes",
        summary: format!(
            "{} access requests, {} granted; roles taken from the identity provider at each of {} session starts",
            access.len(),
            granted,
            r.starts_total
        ),
        blocks: vec![
            Block::Text(
                "Access follows the identity provider's groups at each session: removing a user from a group removes the role at their next session. \
                 Just-in-time access is asked for with a reason, granted by an approver (never the requester) and expires on its own."
                    .into(),
            ),
            Block::Text("Access requests opened in the period:".into()),
            table(
                vec![
                    "asked", "request", "requester", "server", "for", "reason", "state", "approvers",
                    "access until",
                ],
                access_rows,
                access.len(),
            ),
            Block::Text("Roles each user held at their session starts (changes show as several sets):".into()),
            table(vec!["user", "roles"], role_rows, n_role_rows),
        ],
    });

    // CC6.6
    let cert_rows: Vec<Vec<String>> = e
        .certificates
        .iter()
        .take(MAX_ROWS)
        .map(|s| {
            vec![
                when_s(s.created_at),
                s.id.to_string(),
                s.user.to_string(),
                s.server.to_string(),
                s.cert_serial.clone(),
                s.client_addr.clone(),
                s.tunnel_peer.clone().unwrap_or_else(|| "—".into()),
                s.state.to_string(),
            ]
        })
        .collect();
    out.push(Section {
        id: "cc6-6",
        title: "CC6.6 Boundary protection",
        summary: format!(
            "{} session certificates issued ({}); {} tunnels admitted and recorded",
            e.certificates.len(),
            cert_states
                .iter()
                .map(|(k, v)| format!("{v} {k}"))
                .collect::<Vec<_>>()
                .join(", "),
            r.starts_total
        ),
        blocks: vec![
            Block::Text(format!(
                "The broker is the only path to the MCP servers. Each session gets its own client certificate, valid for {}, naming the user, the session and the server; \
                 it opens one mTLS tunnel once, and nothing after the session ends (at most {} per session). \
                 Refused tunnel connections are logged by the broker; they are not kept in the session store.",
                span(c.cert_ttl),
                span(c.session_max_duration)
            )),
            Block::Text("Session certificates issued in the period:".into()),
            table(
                vec![
                    "issued", "session", "user", "server", "serial", "asked from", "tunnel from",
                    "state",
                ],
                cert_rows,
                e.certificates.len(),
            ),
        ],
    });

    // CC6.7
    out.push(Section {
        id: "cc6-7",
        title: "CC6.7 Data in transmission, restricted disclosure",
        summary: format!(
            "{masked_total} values masked in {} of {} sessions",
            r.masked_sessions,
            e.sessions.len()
        ),
        blocks: vec![
            Block::Text(
                "The API is served over TLS and every tunnel is TLS 1.3 with a client certificate. \
                 Sensitive values in what servers return are masked before they leave the broker; records hold only the masked messages and the counts, never the values."
                    .into(),
            ),
            Block::Text("Values masked in the period, per type:".into()),
            count_table("type", &r.masked),
        ],
    });

    // CC6.8
    let deny_rows: Vec<Vec<String>> = r.denials.iter().map(decision_row).collect();
    out.push(Section {
        id: "cc6-8",
        title: "CC6.8 Unauthorized or malicious software",
        summary: format!(
            "{} calls denied, {} held for approval",
            r.denials_total,
            decided("hold")
        ),
        blocks: vec![
            Block::Text(
                "Risky tools are denied or held by policy before they reach the server; a denied call never reaches it. \
                 Upstream servers are started by the broker only, with an explicit environment, one per session."
                    .into(),
            ),
            Block::Text("Denied calls in the period:".into()),
            table(DECISION_HEAD.to_vec(), deny_rows, r.denials_total),
            Block::Text("Sessions per server:".into()),
            count_table("server", &by_server),
        ],
    });

    // CC7.2 / CC7.3
    let session_rows: Vec<Vec<String>> = e
        .sessions
        .iter()
        .take(MAX_ROWS)
        .map(|s| {
            vec![
                when_ms(s.started_ms),
                s.session.to_string(),
                s.user.to_string(),
                s.server.to_string(),
                s.state.clone(),
                s.events.to_string(),
                s.calls.to_string(),
                s.denied.to_string(),
            ]
        })
        .collect();
    out.push(Section {
        id: "cc7-2",
        title: "CC7.2 / CC7.3 Monitoring, incident evaluation",
        summary: format!(
            "{} sessions recorded ({}), {} events, {} tool calls, {} denied",
            e.sessions.len(),
            by_state
                .iter()
                .map(|(k, v)| format!("{v} {k}"))
                .collect::<Vec<_>>()
                .join(", "),
            r.events,
            r.calls,
            denied
        ),
        blocks: vec![
            Block::Text(
                "Every session is recorded in full: its start, every message in both directions after masking, every decision, and its end. \
                 `mcpgate replay SESSION` shows one as a timeline; `mcpgate audit export` writes every event for a SIEM. \
                 An `aborted` session is one the broker did not end itself (it stopped); its record was sealed at the next start."
                    .into(),
            ),
            Block::Facts(vec![
                ("sessions".into(), e.sessions.len().to_string()),
                ("events in the period".into(), r.events.to_string()),
                ("tool calls forwarded".into(), r.calls.to_string()),
            ]),
            Block::Text("Sessions per state:".into()),
            count_table("state", &by_state),
            Block::Text("Sessions per user:".into()),
            count_table("user", &by_user),
            Block::Text("Sessions active in the period, newest first:".into()),
            table(
                vec![
                    "started", "session", "user", "server", "state", "events", "calls", "denied",
                ],
                session_rows,
                e.sessions.len(),
            ),
        ],
    });

    // CC8.1
    let approval_rows: Vec<Vec<String>> = calls
        .iter()
        .take(MAX_ROWS)
        .map(|a| {
            vec![
                when_s(a.created_at),
                a.id.clone(),
                a.requester.to_string(),
                a.server.to_string(),
                a.name.clone().unwrap_or_else(|| opt(&a.method)),
                opt(&a.rule),
                a.state.to_string(),
                names(&a.approvers()),
                a.digest.chars().take(16).collect(),
            ]
        })
        .collect();
    let hold_rows: Vec<Vec<String>> = r.holds.iter().map(decision_row).collect();
    out.push(Section {
        id: "cc8-1",
        title: "CC8.1 Change management",
        summary: format!(
            "{} held calls, {} approved; {} approved by their own requester",
            calls.len(),
            calls
                .iter()
                .filter(|a| a.state == mcpgate_shared::approval::ApprovalState::Approved)
                .count(),
            self_approved
        ),
        blocks: vec![
            Block::Text(
                "Calls that change things are held until approvers decide. An approval is bound to the exact call: the digest of its method, name and arguments, \
                 which the approver's decision must carry. Nobody may approve their own request."
                    .into(),
            ),
            Block::Facts(vec![(
                "approvals by the requester themselves".into(),
                format!(
                    "{self_approved}{}",
                    if self_approved == 0 { " (separation of duties held)" } else { " — investigate" }
                ),
            )]),
            Block::Text("Held calls opened in the period:".into()),
            table(
                vec![
                    "asked", "request", "requester", "server", "call", "rule", "state", "approvers",
                    "digest",
                ],
                approval_rows,
                calls.len(),
            ),
            Block::Text("Hold and approval events in the session records:".into()),
            table(DECISION_HEAD.to_vec(), hold_rows, r.holds_total),
        ],
    });

    // C1.1 / C1.2
    let tomb_rows: Vec<Vec<String>> = r
        .tombstones
        .iter()
        .take(MAX_ROWS)
        .map(|(s, at, why)| vec![when_ms(*at), s.to_string(), why.clone()])
        .collect();
    out.push(Section {
        id: "c1-1",
        title: "C1.1 / C1.2 Confidentiality",
        summary: format!(
            "credentials held by the broker only; {masked_total} values masked; retention {}; {} records deleted with a tombstone",
            c.retention.map(span).unwrap_or_else(|| "forever".into()),
            r.tombstones.len()
        ),
        blocks: vec![
            Block::Text(
                "Upstream credentials are held by the broker only and injected into the upstream's environment or requests; they never travel to clients and never enter a record. \
                 Records are deleted only by the retention rule, each deletion leaving a signed tombstone in the index."
                    .into(),
            ),
            Block::Facts(vec![
                (
                    "retention".into(),
                    c.retention.map(span).unwrap_or_else(|| "records are kept forever".into()),
                ),
                (
                    "masked values".into(),
                    masked_text(&r.masked).unwrap_or_else(|| "none".into()),
                ),
            ]),
            Block::Text("Records deleted in the period:".into()),
            table(vec!["deleted", "session", "why"], tomb_rows, r.tombstones.len()),
        ],
    });

    // Integrity
    let v = &e.verify;
    let mut blocks = vec![
        Block::Text(format!(
            "Each event carries the SHA-256 hash of the one before it; the broker signs a checkpoint every {} events or {}, and the seal at the end, with its Ed25519 audit key. \
             A signed index lists every session, so deleting or swapping a whole record shows. Anyone with the public key can check the records offline: \
             `mcpgate-broker verify --all --pubkey audit.pub DIR`.",
            c.checkpoint_events,
            span(c.checkpoint_interval)
        )),
        Block::Facts(vec![
            ("audit public key".into(), e.audit_key.clone()),
            (
                "result".into(),
                if v.ok {
                    "OK: nothing is wrong".into()
                } else {
                    format!("{} problems", v.problems.len())
                },
            ),
            ("sessions checked".into(), v.sessions.to_string()),
            ("events checked".into(), v.events.to_string()),
            (
                "durability".into(),
                format!(
                    "fsync = {}, on failure = {} (a message is forwarded only after its event is written)",
                    c.fsync, c.on_failure
                ),
            ),
        ]),
    ];
    if !v.problems.is_empty() {
        blocks.push(Block::Text("Problems:".into()));
        blocks.push(Block::List(v.problems.clone()));
    }
    if !v.notes.is_empty() {
        blocks.push(Block::Text("Notes:".into()));
        blocks.push(Block::List(v.notes.clone()));
    }
    out.push(Section {
        id: "integrity",
        title: "Integrity of the evidence itself",
        summary: if v.ok {
            format!(
                "all records verify ({} sessions, {} events)",
                v.sessions, v.events
            )
        } else {
            format!(
                "VERIFICATION FAILED: {} problems in {} sessions checked",
                v.problems.len(),
                v.sessions
            )
        },
        blocks,
    });
    out
}

fn heading_facts(e: &Evidence) -> Vec<(String, String)> {
    vec![
        (
            "period".into(),
            format!(
                "{} to {} (UTC)",
                when_ms(e.window.since_ms),
                when_ms(e.window.until_ms)
            ),
        ),
        ("generated".into(), when_ms(e.generated_ms)),
        ("audit public key".into(), e.audit_key.clone()),
    ]
}

const TITLE: &str = "mcpgate evidence report";

/// The report in `format`.
pub fn render(e: &Evidence, format: ReportFormat) -> String {
    match format {
        ReportFormat::Md => markdown(e),
        ReportFormat::Html => html(e),
    }
}

/// Text made inert in Markdown: one line, and every character that could
/// start a link, an inline HTML tag, an entity, emphasis, code or a table
/// cell backslash-escaped, as is a leading character that could start a
/// block (a heading, a list item) — so text chosen by others cannot
/// become a link or break a table.
pub fn md(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for (i, c) in text.chars().enumerate() {
        match c {
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '|' | '~' | '&' => {
                out.push('\\');
                out.push(c);
            }
            '#' | '-' | '+' | '=' if i == 0 => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

fn more(total: usize, shown: usize) -> Option<String> {
    (total > shown).then(|| {
        format!(
            "and {} more not shown; mcpgate audit export has every event",
            total - shown
        )
    })
}

/// The report as Markdown.
pub fn markdown(e: &Evidence) -> String {
    let sections = document(e);
    let mut o = String::new();
    let _ = writeln!(o, "# {TITLE}\n");
    for (k, v) in heading_facts(e) {
        let _ = writeln!(o, "- **{}**: {}", md(&k), md(&v));
    }
    let _ = writeln!(o, "\n## Summary\n");
    let _ = writeln!(o, "| criterion | recorded in the period |");
    let _ = writeln!(o, "| --- | --- |");
    for s in &sections {
        let _ = writeln!(o, "| {} | {} |", md(s.title), md(&s.summary));
    }
    for s in &sections {
        while o.ends_with("\n\n") {
            o.pop();
        }
        let _ = writeln!(o, "\n## {}\n", md(s.title));
        for b in &s.blocks {
            match b {
                Block::Text(t) => {
                    let _ = writeln!(o, "{}\n", md(t));
                }
                Block::Facts(facts) => {
                    for (k, v) in facts {
                        let _ = writeln!(o, "- **{}**: {}", md(k), md(v));
                    }
                    o.push('\n');
                }
                Block::List(items) => {
                    for i in items {
                        let _ = writeln!(o, "- {}", md(i));
                    }
                    o.push('\n');
                }
                Block::Table { head, rows, total } => {
                    if rows.is_empty() {
                        let _ = writeln!(o, "_none_\n");
                        continue;
                    }
                    let _ = writeln!(
                        o,
                        "| {} |",
                        head.iter().map(|h| md(h)).collect::<Vec<_>>().join(" | ")
                    );
                    let _ = writeln!(o, "|{}", " --- |".repeat(head.len()));
                    for r in rows {
                        let _ = writeln!(
                            o,
                            "| {} |",
                            r.iter().map(|c| md(c)).collect::<Vec<_>>().join(" | ")
                        );
                    }
                    if let Some(m) = more(*total, rows.len()) {
                        let _ = writeln!(o, "\n_{}_", md(&m));
                    }
                    o.push('\n');
                }
            }
        }
    }
    while o.ends_with("\n\n") {
        o.pop();
    }
    o
}

/// The report as one self-contained HTML page (no scripts, no external
/// resources).
pub fn html(e: &Evidence) -> String {
    let sections = document(e);
    let mut o = String::new();
    let _ = writeln!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n<style>\n\
         body{{font-family:system-ui,sans-serif;margin:2em;max-width:80em}}\n\
         table{{border-collapse:collapse;margin:.5em 0 1em}}\n\
         th,td{{border:1px solid #bbb;padding:.2em .5em;text-align:left;vertical-align:top}}\n\
         th{{background:#eee}}\n.bad{{color:#a00;font-weight:bold}}\n\
         </style>\n</head>\n<body>",
        esc(TITLE)
    );
    let _ = writeln!(o, "<h1>{}</h1>\n<ul>", esc(TITLE));
    for (k, v) in heading_facts(e) {
        let _ = writeln!(o, "<li><b>{}</b>: {}</li>", esc(&k), esc(&v));
    }
    let _ = writeln!(
        o,
        "</ul>\n<h2>Summary</h2>\n<table>\n<tr><th>criterion</th><th>recorded in the period</th></tr>"
    );
    for s in &sections {
        let bad = s.id == "integrity" && !e.verify.ok;
        let _ = writeln!(
            o,
            "<tr><td><a href=\"#{}\">{}</a></td><td{}>{}</td></tr>",
            esc(s.id),
            esc(s.title),
            if bad { " class=\"bad\"" } else { "" },
            esc(&s.summary)
        );
    }
    let _ = writeln!(o, "</table>");
    for s in &sections {
        let _ = writeln!(o, "<h2 id=\"{}\">{}</h2>", esc(s.id), esc(s.title));
        for b in &s.blocks {
            match b {
                Block::Text(t) => {
                    let _ = writeln!(o, "<p>{}</p>", esc(t));
                }
                Block::Facts(facts) => {
                    let _ = writeln!(o, "<ul>");
                    for (k, v) in facts {
                        let _ = writeln!(o, "<li><b>{}</b>: {}</li>", esc(k), esc(v));
                    }
                    let _ = writeln!(o, "</ul>");
                }
                Block::List(items) => {
                    let _ = writeln!(o, "<ul>");
                    for i in items {
                        let _ = writeln!(o, "<li>{}</li>", esc(i));
                    }
                    let _ = writeln!(o, "</ul>");
                }
                Block::Table { head, rows, total } => {
                    if rows.is_empty() {
                        let _ = writeln!(o, "<p><i>none</i></p>");
                        continue;
                    }
                    let _ = write!(o, "<table>\n<tr>");
                    for h in head {
                        let _ = write!(o, "<th>{}</th>", esc(h));
                    }
                    let _ = writeln!(o, "</tr>");
                    for r in rows {
                        let _ = write!(o, "<tr>");
                        for c in r {
                            let _ = write!(o, "<td>{}</td>", esc(c));
                        }
                        let _ = writeln!(o, "</tr>");
                    }
                    let _ = writeln!(o, "</table>");
                    if let Some(m) = more(*total, rows.len()) {
                        let _ = writeln!(o, "<p><i>{}</i></p>", esc(&m));
                    }
                }
            }
        }
    }
    let _ = writeln!(o, "</body>\n</html>");
    o
}

#[cfg(test)]
mod tests {
    use mcpgate_shared::approval::{ApprovalState, Vote};
    use mcpgate_shared::record::{Body, EndState};

    use super::super::reader::tests::{call, decision, recorder, sid, start};
    use super::*;
    use crate::session::SessionState;

    fn user(u: &str) -> UserName {
        u.parse().unwrap()
    }

    fn d(at_ms: u64, kind: DecisionKind, name: &str, reason: &str) -> DecisionEvent {
        DecisionEvent {
            at_ms,
            decision: kind,
            session: Some(sid(1)),
            user: user("alice"),
            server: "db".parse().unwrap(),
            method: Some("tools/call".into()),
            name: Some(name.into()),
            request_id: Some("7".into()),
            rule: Some("no-ddl (policy.toml:3)".into()),
            reason: reason.into(),
            approval: None,
            approvers: vec![],
            masked: BTreeMap::new(),
        }
    }

    /// A fixed period's evidence with hostile text in the places others
    /// choose (tool names, reasons, user-given reasons).
    fn evidence(ok: bool) -> Evidence {
        let t0: u64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
        let mut approve = d(
            t0 + 9_000,
            DecisionKind::Approve,
            "alter_table",
            "schema change",
        );
        approve.approval = Some("apr_0123".into());
        approve.approvers = vec![user("bob")];
        Evidence {
            generated_ms: t0 + 86_400_000,
            window: Window {
                since_ms: t0,
                until_ms: t0 + 86_400_000,
            },
            audit_key: "ab".repeat(32),
            config: ConfigFacts {
                roles: vec![
                    RoleFacts {
                        name: "auditor".parse().unwrap(),
                        servers: vec![],
                        approves: vec![],
                        request_access: vec![],
                        audit: true,
                    },
                    RoleFacts {
                        name: "dev".parse().unwrap(),
                        servers: vec!["db".parse().unwrap()],
                        approves: vec![],
                        request_access: vec!["prod".parse().unwrap()],
                        audit: false,
                    },
                ],
                policy_rules: 4,
                cert_ttl: Duration::from_secs(300),
                session_max_duration: Duration::from_secs(8 * 3600),
                fsync: "batch".into(),
                on_failure: "refuse".into(),
                checkpoint_events: 256,
                checkpoint_interval: Duration::from_secs(10),
                retention: Some(Duration::from_secs(90 * 86_400)),
            },
            sessions: vec![SessionSummary {
                session: sid(1),
                user: user("alice"),
                server: "db".parse().unwrap(),
                started_ms: t0 + 1_000,
                ended_ms: Some(t0 + 60_000),
                state: "closed".into(),
                events: 42,
                calls: 9,
                denied: 1,
            }],
            records: RecordFacts {
                events: 42,
                calls: 9,
                decisions: [
                    ("allow", 9),
                    ("deny", 1),
                    ("hold", 1),
                    ("approve", 1),
                    ("mask", 3),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
                rules: [(
                    "no-ddl (policy.toml:3)".to_owned(),
                    [
                        ("deny".to_owned(), 1),
                        ("hold".to_owned(), 1),
                        ("approve".to_owned(), 1),
                    ]
                    .into_iter()
                    .collect(),
                )]
                .into_iter()
                .collect(),
                denials: vec![d(
                    t0 + 5_000,
                    DecisionKind::Deny,
                    "drop_table<script>alert(1)</script>",
                    "DDL | is *not* allowed & <b>never</b>",
                )],
                denials_total: 1,
                holds: vec![
                    d(t0 + 8_000, DecisionKind::Hold, "alter_table", "needs a DBA"),
                    approve,
                ],
                holds_total: 2,
                masked: [("card".to_owned(), 2), ("email".to_owned(), 5)]
                    .into_iter()
                    .collect(),
                masked_sessions: 1,
                starts: vec![StartFact {
                    at_ms: t0 + 1_000,
                    session: sid(1),
                    user: user("alice"),
                    server: "db".parse().unwrap(),
                    roles: vec!["dev".parse().unwrap()],
                    issuer: "https://idp.example.com".into(),
                    cert_serial: "4f2a".into(),
                    tunnel_peer: "127.0.0.1:50414".into(),
                }],
                starts_total: 1,
                tombstones: vec![(
                    sid(2),
                    t0 + 3_600_000,
                    "retention: ended more than 90days ago".into(),
                )],
            },
            certificates: vec![SessionRecord {
                id: sid(1),
                user: user("alice"),
                issuer: "https://idp.example.com".into(),
                roles: vec!["dev".parse().unwrap()],
                server: "db".parse().unwrap(),
                client_addr: "127.0.0.1:50412".into(),
                created_at: t0 / 1000 + 1,
                cert_serial: "4f2a".into(),
                connect_by: t0 / 1000 + 60,
                max_duration_secs: 28_800,
                state: SessionState::Ended,
                connected_at: Some(t0 / 1000 + 1),
                tunnel_peer: Some("127.0.0.1:50414".into()),
                ended_at: Some(t0 / 1000 + 60),
                end_reason: Some("client disconnected".into()),
            }],
            approvals: vec![
                Approval {
                    id: "apr_0123".into(),
                    kind: ApprovalKind::Call,
                    state: ApprovalState::Approved,
                    requester: user("alice"),
                    server: "db".parse().unwrap(),
                    session: Some(sid(1)),
                    method: Some("tools/call".into()),
                    name: Some("alter_table".into()),
                    arguments: None,
                    digest: "d1".repeat(32),
                    rule: Some("no-ddl (policy.toml:3)".into()),
                    reason: Some("needs a DBA".into()),
                    duration_secs: None,
                    required: 1,
                    votes: vec![Vote {
                        approver: user("bob"),
                        approve: true,
                        reason: None,
                        at: t0 / 1000 + 9,
                    }],
                    created_at: t0 / 1000 + 8,
                    expires_at: t0 / 1000 + 308,
                    decided_at: Some(t0 / 1000 + 9),
                    grant_expires_at: None,
                },
                Approval {
                    id: "apr_4567".into(),
                    kind: ApprovalKind::Access,
                    state: ApprovalState::Approved,
                    requester: user("alice"),
                    server: "prod".parse().unwrap(),
                    session: None,
                    method: None,
                    name: None,
                    arguments: None,
                    digest: "e2".repeat(32),
                    rule: None,
                    reason: Some("incident 4411 [link](http://x)".into()),
                    duration_secs: Some(3600),
                    required: 1,
                    votes: vec![Vote {
                        approver: user("carol"),
                        approve: true,
                        reason: None,
                        at: t0 / 1000 + 100,
                    }],
                    created_at: t0 / 1000 + 90,
                    expires_at: t0 / 1000 + 390,
                    decided_at: Some(t0 / 1000 + 100),
                    grant_expires_at: Some(t0 / 1000 + 3700),
                },
            ],
            verify: VerifyReport {
                ok,
                sessions: 2,
                events: 45,
                problems: if ok {
                    vec![]
                } else {
                    vec![
                        "session 5e550001-0000-4000-8000-000000000001: event 12 was modified"
                            .into(),
                    ]
                },
                notes: vec![],
            },
        }
    }

    #[test]
    fn the_markdown_report_maps_every_criterion() {
        let text = markdown(&evidence(true));
        for id in [
            "CC6.1",
            "CC6.2 / CC6.3",
            "CC6.6",
            "CC6.7",
            "CC6.8",
            "CC7.2 / CC7.3",
            "CC8.1",
            "C1.1 / C1.2",
            "Integrity",
        ] {
            assert!(text.contains(&format!("## {}", md(id))), "{id}");
        }
        insta::assert_snapshot!("markdown", text);
    }

    #[test]
    fn the_html_report_escapes_everything() {
        let page = html(&evidence(false));
        assert!(!page.contains("<script>"), "unescaped script");
        assert!(!page.contains("<b>never</b>"));
        assert!(page.contains("drop_table&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains("class=\"bad\">VERIFICATION FAILED: 1 problems"));
        assert!(page.contains("event 12 was modified"));
        insta::assert_snapshot!("html", page);
    }

    #[test]
    fn markdown_text_cannot_break_out() {
        assert_eq!(md("a|b"), "a\\|b");
        assert_eq!(md("[x](http://y)"), "\\[x\\](http://y)");
        assert_eq!(md("# not-a-heading"), "\\# not-a-heading");
        assert_eq!(md("<b>\nx"), "\\<b\\> x");
        assert_eq!(
            esc("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
    }

    #[tokio::test]
    async fn collect_counts_what_the_records_say() {
        let dir = tempfile::tempdir().unwrap();
        let r = recorder(dir.path());
        let a = sid(1);
        r.open(&a, start("alice", "db")).await.unwrap();
        r.append(&a, call(1, "query")).await.unwrap();
        r.append(&a, decision(&a, "alice", DecisionKind::Deny))
            .await
            .unwrap();
        r.append(&a, decision(&a, "alice", DecisionKind::Hold))
            .await
            .unwrap();
        // Masked both on the message and as a decision: counted once.
        let mut m = decision(&a, "alice", DecisionKind::Mask);
        if let Body::Decision { decision } = &mut m {
            decision.masked.insert("email".into(), 2);
        }
        r.append(&a, m).await.unwrap();
        let mut reply = call(1, "query");
        if let Body::Message(msg) = &mut reply {
            msg.from = mcpgate_shared::record::Peer::Upstream;
            msg.to = mcpgate_shared::record::Peer::Client;
            msg.kind = "response".into();
            msg.masked.insert("email".into(), 2);
            msg.masked.insert("card".into(), 1);
        }
        r.append(&a, reply).await.unwrap();
        r.close(&a, EndState::Closed, "done").await.unwrap();
        let store = r.store().as_ref();
        let window = Window {
            since_ms: 0,
            until_ms: u64::MAX,
        };
        let sessions = sessions_in(store, window).unwrap();
        assert_eq!(sessions.len(), 1);
        let f = collect(store, window, &sessions).unwrap();
        assert_eq!(f.events, 8);
        assert_eq!(f.calls, 1);
        assert_eq!((f.denials_total, f.holds_total, f.starts_total), (1, 1, 1));
        assert_eq!(f.decisions.get("deny"), Some(&1));
        assert_eq!(f.rules["no-ddl (policy.toml:3)"]["hold"], 1);
        assert_eq!(masked_text(&f.masked).as_deref(), Some("card=1;email=2"));
        assert_eq!(f.masked_sessions, 1);
        assert_eq!(f.starts[0].cert_serial, "4f2a9c0e11d3b7a5");
        // A window before anything: nothing.
        let empty = Window {
            since_ms: 0,
            until_ms: 1,
        };
        assert!(sessions_in(store, empty).unwrap().is_empty());
        r.stop();
    }
}
