//! Approval requests and decision events.
//!
//! A call that policy holds, or a request for just-in-time access, becomes
//! an [`Approval`] row in the session store, bound to the requester, the
//! server, the session (calls) and a [`digest`] of exactly what will be
//! forwarded. People with an approver role for the server vote on it
//! ([`Approvals::decide`]): one denial decides, `required` approvals
//! approve, nobody votes on their own request, and a vote must carry the
//! digest the approver was shown. The state changes with one conditional
//! `UPDATE` each (`pending` → final), so a late vote, an expiry and a
//! cancellation cannot both win.
//!
//! Whoever waits (a held call, `GET /v1/approvals` long polls) watches one
//! version counter that moves whenever any request is opened or decided,
//! then reads the row again: the store is the truth.
//!
//! Every decision about a message or a request is a [`DecisionEvent`],
//! logged and kept in the `decisions` table for the session record.
//!
//! [`digest`]: mcpgate_shared::approval::digest

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mcpgate_shared::approval::{
    AccessRequest, Approval, ApprovalKind, ApprovalState, DecisionRequest, Grant, Vote,
};
use mcpgate_shared::event::{DecisionEvent, DecisionKind};
use mcpgate_shared::names::{ServerName, UserName};
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;
use tokio::sync::watch;

use crate::auth::unix_now;
use crate::store::{Store, StoreError};
use crate::webhook::{WebhookEvent, Webhooks};

/// Why a vote was not taken.
#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    #[error("no approval request {0}")]
    NotFound(String),
    #[error("you cannot approve or deny your own request")]
    OwnRequest,
    #[error("you are not an approver for server {0}")]
    NotApprover(ServerName),
    #[error("approval request {id} is already {state}")]
    AlreadyDecided { id: String, state: ApprovalState },
    #[error("you have already voted on approval request {0}")]
    AlreadyVoted(String),
    #[error("approval request {0} is not what you were shown (digest mismatch); look at it again")]
    DigestMismatch(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Which requests a listing shows.
#[derive(Debug, Clone)]
pub struct ListFilter {
    /// `None`: every state.
    pub state: Option<ApprovalState>,
    /// The caller: they see their own requests...
    pub user: UserName,
    /// ...and every request for these servers (they approve for them).
    pub approves: Vec<ServerName>,
}

/// A new call approval: what was held, where, and why.
#[derive(Debug, Clone)]
pub struct CallRequest {
    pub requester: UserName,
    pub server: ServerName,
    pub session: mcpgate_shared::names::SessionId,
    pub method: String,
    pub name: String,
    pub arguments: Value,
    pub rule: String,
    pub reason: String,
    pub required: u32,
}

/// The approval requests of this broker, and who is waiting on them.
#[derive(Clone)]
pub struct Approvals {
    store: Store,
    version: watch::Sender<u64>,
    webhooks: Webhooks,
    timeout: Duration,
    /// Decisions about a recorded session go into its record.
    recorder: Option<Arc<crate::record::Recorder>>,
}

impl std::fmt::Debug for Approvals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Approvals")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Approvals {
    /// `timeout`: how long a request stays open before it expires.
    pub fn new(store: Store, webhooks: Webhooks, timeout: Duration) -> Approvals {
        // Starts from the clock so that a client's `after_version` from
        // before a restart never matches by accident.
        let start = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_millis() as u64);
        Approvals {
            store,
            version: watch::Sender::new(start),
            webhooks,
            timeout,
            recorder: None,
        }
    }

    /// Decisions about sessions with an open record go into that record
    /// (group-committed with its messages) instead of the `decisions`
    /// table.
    pub fn recording(mut self, recorder: Arc<crate::record::Recorder>) -> Approvals {
        self.recorder = Some(recorder);
        self
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The current version of the set of requests.
    pub fn version(&self) -> u64 {
        *self.version.borrow()
    }

    /// Changes whenever a request is opened or decided.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    fn changed(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    /// At start-up: calls held by a previous run cannot be forwarded any
    /// more (their sessions are gone), so they are cancelled. Access
    /// requests stay open.
    pub async fn recover(&self) -> Result<usize, StoreError> {
        let n = self
            .store
            .run(|s| {
                s.conn().execute(
                    "UPDATE approvals SET state = 'cancelled', decided_at = ?1
                     WHERE state = 'pending' AND kind = 'call'",
                    [unix_now()],
                )
            })
            .await??;
        if n > 0 {
            self.changed();
        }
        Ok(n)
    }

    /// Opens a request for a held call.
    pub async fn open_call(&self, call: CallRequest) -> Result<Approval, StoreError> {
        let digest = mcpgate_shared::approval::digest(&call.method, &call.name, &call.arguments);
        let now = unix_now();
        let approval = Approval {
            id: new_id(),
            kind: ApprovalKind::Call,
            state: ApprovalState::Pending,
            requester: call.requester,
            server: call.server,
            session: Some(call.session),
            method: Some(call.method),
            name: Some(call.name),
            arguments: Some(call.arguments),
            digest,
            rule: Some(call.rule),
            reason: Some(call.reason),
            duration_secs: None,
            required: call.required.max(1),
            votes: Vec::new(),
            created_at: now,
            expires_at: now + self.timeout.as_secs().max(1),
            decided_at: None,
            grant_expires_at: None,
        };
        self.insert(approval).await
    }

    /// Opens a request for just-in-time access.
    pub async fn open_access(
        &self,
        requester: UserName,
        req: AccessRequest,
    ) -> Result<Approval, StoreError> {
        let now = unix_now();
        let digest = mcpgate_shared::approval::digest(
            "access",
            req.server.as_str(),
            &serde_json::json!({"duration_secs": req.duration_secs, "reason": req.reason}),
        );
        let approval = Approval {
            id: new_id(),
            kind: ApprovalKind::Access,
            state: ApprovalState::Pending,
            requester,
            server: req.server,
            session: None,
            method: None,
            name: None,
            arguments: None,
            digest,
            rule: None,
            reason: Some(req.reason),
            duration_secs: Some(req.duration_secs),
            required: 1,
            votes: Vec::new(),
            created_at: now,
            expires_at: now + self.timeout.as_secs().max(1),
            decided_at: None,
            grant_expires_at: None,
        };
        self.insert(approval).await
    }

    async fn insert(&self, approval: Approval) -> Result<Approval, StoreError> {
        let row = approval.clone();
        self.store.run(move |s| insert(&s.conn(), &row)).await??;
        self.changed();
        self.webhooks.notify(WebhookEvent::Opened, &approval);
        Ok(approval)
    }

    /// Marks every pending request past its expiry as expired, and tells
    /// waiters and webhooks, so that whoever looks next sees it final.
    async fn sweep(&self) -> Result<(), StoreError> {
        let expired = self
            .store
            .run(|s| expire_overdue(&s.conn(), unix_now()))
            .await??;
        if !expired.is_empty() {
            self.changed();
        }
        for approval in &expired {
            self.webhooks.notify(WebhookEvent::Decided, approval);
        }
        Ok(())
    }

    pub async fn get(&self, id: &str) -> Result<Option<Approval>, StoreError> {
        self.sweep().await?;
        let id = id.to_owned();
        self.store.run(move |s| get(&s.conn(), &id)).await?
    }

    /// Newest first, at most 500.
    pub async fn list(&self, filter: ListFilter) -> Result<Vec<Approval>, StoreError> {
        self.sweep().await?;
        self.store.run(move |s| list(&s.conn(), &filter)).await?
    }

    /// One approver's vote. `may_approve` says whether the approver holds
    /// an approver role for the request's server.
    pub async fn decide(
        &self,
        id: &str,
        approver: UserName,
        may_approve: impl Fn(&ServerName) -> bool + Send + 'static,
        decision: DecisionRequest,
    ) -> Result<Approval, DecideError> {
        self.sweep().await?;
        let id = id.to_owned();
        let approval = self
            .store
            .run(move |s| vote(&mut s.conn(), &id, &approver, may_approve, &decision))
            .await??;
        self.changed();
        if approval.state.is_final() {
            self.webhooks.notify(WebhookEvent::Decided, &approval);
        }
        Ok(approval)
    }

    /// Moves a pending request to a final state (expired, cancelled);
    /// returns the row as it is afterwards, which may be another final
    /// state if a decision came first.
    pub async fn close(&self, id: &str, state: ApprovalState) -> Result<Approval, StoreError> {
        let id2 = id.to_owned();
        let (changed, approval) = self
            .store
            .run(move |s| -> Result<(bool, Option<Approval>), StoreError> {
                let conn = s.conn();
                let n = conn.execute(
                    "UPDATE approvals SET state = ?1, decided_at = ?2 WHERE id = ?3 AND state = 'pending'",
                    params![state.as_str(), unix_now(), id2],
                )?;
                Ok((n == 1, get(&conn, &id2)?))
            })
            .await??;
        let approval =
            approval.ok_or_else(|| StoreError::new(format!("approval {id} vanished")))?;
        if changed {
            self.changed();
            self.webhooks.notify(WebhookEvent::Decided, &approval);
        }
        Ok(approval)
    }

    /// Waits until the request is decided or expires (then marks it
    /// expired). Dropping the future leaves the request pending; callers
    /// cancel it themselves.
    pub async fn wait(&self, id: &str) -> Result<Approval, StoreError> {
        let mut changes = self.subscribe();
        loop {
            changes.borrow_and_update();
            let Some(approval) = self.get(id).await? else {
                return Err(StoreError::new(format!("approval {id} vanished")));
            };
            if approval.state.is_final() {
                return Ok(approval);
            }
            let left = approval.expires_at.saturating_sub(unix_now());
            if left == 0 {
                return self.close(id, ApprovalState::Expired).await;
            }
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() {
                        return Err(StoreError::new("approvals closed".into()));
                    }
                }
                () = tokio::time::sleep(Duration::from_secs(left)) => {}
            }
        }
    }

    /// A live access grant for `user` on `server`, if any.
    pub async fn active_grant(
        &self,
        user: &UserName,
        server: &ServerName,
    ) -> Result<Option<Approval>, StoreError> {
        let (user, server) = (user.clone(), server.clone());
        self.store
            .run(move |s| {
                let conn = s.conn();
                let id: Option<String> = conn
                    .query_row(
                        "SELECT id FROM approvals WHERE kind = 'access' AND state = 'approved'
                         AND requester = ?1 AND server = ?2 AND grant_expires_at > ?3
                         ORDER BY grant_expires_at DESC LIMIT 1",
                        params![user.as_str(), server.as_str(), unix_now()],
                        |r| r.get(0),
                    )
                    .optional()?;
                match id {
                    Some(id) => get(&conn, &id),
                    None => Ok(None),
                }
            })
            .await?
    }

    /// Granted access requests the caller may see, newest first.
    pub async fn grants(&self, filter: ListFilter) -> Result<Vec<Grant>, StoreError> {
        let filter = ListFilter {
            state: Some(ApprovalState::Approved),
            ..filter
        };
        Ok(self
            .list(filter)
            .await?
            .into_iter()
            .filter(|a| a.kind == ApprovalKind::Access)
            .map(|a| Grant {
                granted_at: a.decided_at.unwrap_or(a.created_at),
                expires_at: a.grant_expires_at.unwrap_or(0),
                approvers: a.approvers(),
                reason: a.reason.unwrap_or_default(),
                id: a.id,
                user: a.requester,
                server: a.server,
            })
            .collect())
    }

    /// Logs a decision and keeps it: in the session's record when it has
    /// one open, else (access requests, unrecorded sessions) in the
    /// `decisions` table. A decision that cannot be kept is an error; the
    /// callers fail closed on it.
    pub async fn record(&self, event: DecisionEvent) -> Result<(), StoreError> {
        tracing::info!(
            decision = %event.decision,
            session = event.session.as_ref().map(|s| s.as_str()).unwrap_or(""),
            user = %event.user,
            server = %event.server,
            method = event.method.as_deref().unwrap_or(""),
            name = event.name.as_deref().unwrap_or(""),
            rule = event.rule.as_deref().unwrap_or(""),
            approval = event.approval.as_deref().unwrap_or(""),
            reason = %event.reason,
            "decision"
        );
        if let (Some(recorder), Some(session)) = (&self.recorder, &event.session)
            && recorder.is_open(session)
        {
            let session = session.clone();
            // An allowed call and a masked reply are recorded right after
            // their decision, and only once that is durable are they
            // forwarded: the decision need not be waited for on its own
            // (one sync instead of two on the hot path).
            if matches!(event.decision, DecisionKind::Allow | DecisionKind::Mask) {
                return recorder
                    .enqueue(
                        &session,
                        mcpgate_shared::record::Body::Decision { decision: event },
                    )
                    .map_err(|e| StoreError::new(e.to_string()));
            }
            return match recorder.decision(&session, event).await {
                Ok(_) => Ok(()),
                Err(e) if recorder.on_failure() == crate::record::OnFailure::FailOpenWithAlarm => {
                    tracing::error!(error = %e, "ALARM: a decision could not be recorded (on_failure = fail-open-with-alarm)");
                    Ok(())
                }
                Err(e) => Err(StoreError::new(e.to_string())),
            };
        }
        let text = serde_json::to_string(&event).map_err(|e| StoreError::new(e.to_string()))?;
        self.store
            .run(move |s| {
                s.conn().execute(
                    "INSERT INTO decisions (at_ms, session, event) VALUES (?1, ?2, ?3)",
                    params![
                        event.at_ms,
                        event.session.as_ref().map(|s| s.as_str().to_owned()),
                        text
                    ],
                )
            })
            .await??;
        Ok(())
    }

    /// The decisions kept in the `decisions` table for one session (one
    /// that was not recorded), oldest first.
    pub async fn decisions(
        &self,
        session: &mcpgate_shared::names::SessionId,
    ) -> Result<Vec<DecisionEvent>, StoreError> {
        let session = session.as_str().to_owned();
        self.store
            .run(move |s| -> Result<Vec<DecisionEvent>, StoreError> {
                let conn = s.conn();
                let mut stmt =
                    conn.prepare("SELECT event FROM decisions WHERE session = ?1 ORDER BY seq")?;
                let rows = stmt.query_map([session], |r| r.get::<_, String>(0))?;
                let mut out = Vec::new();
                for row in rows {
                    out.push(
                        serde_json::from_str(&row?).map_err(|e| StoreError::new(e.to_string()))?,
                    );
                }
                Ok(out)
            })
            .await?
    }
}

/// Unix milliseconds now, for events.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn new_id() -> String {
    format!("apr_{}", uuid::Uuid::new_v4().simple())
}

const COLUMNS: &str = "id, kind, state, requester, server, session, method, name, arguments, \
     digest, rule, reason, duration_secs, required, created_at, expires_at, decided_at, grant_expires_at";

fn text_err(e: impl std::fmt::Display) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(e.to_string().into())
}

fn insert(conn: &Connection, a: &Approval) -> Result<(), StoreError> {
    let kind = match a.kind {
        ApprovalKind::Call => "call",
        ApprovalKind::Access => "access",
    };
    let arguments = a
        .arguments
        .as_ref()
        .map(|v| serde_json::to_string(v).map_err(|e| StoreError::new(e.to_string())))
        .transpose()?;
    conn.execute(
        &format!(
            "INSERT INTO approvals ({COLUMNS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18)"
        ),
        params![
            a.id,
            kind,
            a.state.as_str(),
            a.requester.as_str(),
            a.server.as_str(),
            a.session.as_ref().map(|s| s.as_str()),
            a.method,
            a.name,
            arguments,
            a.digest,
            a.rule,
            a.reason,
            a.duration_secs,
            a.required,
            a.created_at,
            a.expires_at,
            a.decided_at,
            a.grant_expires_at,
        ],
    )?;
    Ok(())
}

fn row_to_approval(row: &rusqlite::Row<'_>) -> rusqlite::Result<Approval> {
    let kind = match row.get::<_, String>(1)?.as_str() {
        "call" => ApprovalKind::Call,
        "access" => ApprovalKind::Access,
        other => return Err(text_err(format!("unknown approval kind {other:?}"))),
    };
    let arguments: Option<String> = row.get(8)?;
    Ok(Approval {
        id: row.get(0)?,
        kind,
        state: row.get::<_, String>(2)?.parse().map_err(text_err)?,
        requester: row.get::<_, String>(3)?.parse().map_err(text_err)?,
        server: row.get::<_, String>(4)?.parse().map_err(text_err)?,
        session: row
            .get::<_, Option<String>>(5)?
            .map(|s| s.parse().map_err(text_err))
            .transpose()?,
        method: row.get(6)?,
        name: row.get(7)?,
        arguments: arguments
            .map(|a| serde_json::from_str(&a).map_err(text_err))
            .transpose()?,
        digest: row.get(9)?,
        rule: row.get(10)?,
        reason: row.get(11)?,
        duration_secs: row.get(12)?,
        required: row.get(13)?,
        votes: Vec::new(),
        created_at: row.get(14)?,
        expires_at: row.get(15)?,
        decided_at: row.get(16)?,
        grant_expires_at: row.get(17)?,
    })
}

fn votes(conn: &Connection, id: &str) -> Result<Vec<Vote>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT approver, approve, reason, at FROM approval_votes WHERE approval = ?1 ORDER BY at, rowid",
    )?;
    let rows = stmt.query_map([id], |r| {
        Ok(Vote {
            approver: r.get::<_, String>(0)?.parse().map_err(text_err)?,
            approve: r.get(1)?,
            reason: r.get(2)?,
            at: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn get(conn: &Connection, id: &str) -> Result<Option<Approval>, StoreError> {
    let approval = conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM approvals WHERE id = ?1"),
            [id],
            row_to_approval,
        )
        .optional()?;
    match approval {
        Some(mut a) => {
            a.votes = votes(conn, id)?;
            Ok(Some(a))
        }
        None => Ok(None),
    }
}

fn list(conn: &Connection, filter: &ListFilter) -> Result<Vec<Approval>, StoreError> {
    let servers: Vec<&str> = filter.approves.iter().map(|s| s.as_str()).collect();
    let servers = serde_json::to_string(&servers).map_err(|e| StoreError::new(e.to_string()))?;
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM approvals
         WHERE (?1 IS NULL OR state = ?1)
           AND (requester = ?2 OR server IN (SELECT value FROM json_each(?3)))
         ORDER BY created_at DESC, rowid DESC LIMIT 500"
    ))?;
    let rows = stmt.query_map(
        params![
            filter.state.map(|s| s.as_str()),
            filter.user.as_str(),
            servers
        ],
        row_to_approval,
    )?;
    let mut out: Vec<Approval> = rows.collect::<Result<_, _>>()?;
    for a in &mut out {
        a.votes = votes(conn, &a.id)?;
    }
    Ok(out)
}

/// Marks every pending request past its expiry as expired; returns them.
fn expire_overdue(conn: &Connection, now: u64) -> Result<Vec<Approval>, StoreError> {
    let ids: Vec<String> = {
        let mut stmt = conn.prepare(
            "UPDATE approvals SET state = 'expired', decided_at = ?1
             WHERE state = 'pending' AND expires_at <= ?1 RETURNING id",
        )?;
        let rows = stmt.query_map([now], |r| r.get(0))?;
        rows.collect::<Result<_, _>>()?
    };
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        out.extend(get(conn, &id)?);
    }
    Ok(out)
}

fn vote(
    conn: &mut Connection,
    id: &str,
    approver: &UserName,
    may_approve: impl Fn(&ServerName) -> bool,
    decision: &DecisionRequest,
) -> Result<Approval, DecideError> {
    let now = unix_now();
    let tx = conn.transaction().map_err(StoreError::from)?;
    let Some(approval) = get(&tx, id)? else {
        return Err(DecideError::NotFound(id.to_owned()));
    };
    // The order of checks matters for what a caller learns: someone who
    // may not approve for the server learns nothing more about it.
    if approval.requester == *approver {
        return Err(DecideError::OwnRequest);
    }
    if !may_approve(&approval.server) {
        return Err(DecideError::NotApprover(approval.server));
    }
    if approval.state.is_final() {
        return Err(DecideError::AlreadyDecided {
            id: id.to_owned(),
            state: approval.state,
        });
    }
    // Past its expiry but not swept yet: as good as expired.
    if approval.expires_at <= now {
        return Err(DecideError::AlreadyDecided {
            id: id.to_owned(),
            state: ApprovalState::Expired,
        });
    }
    if approval.digest != decision.digest {
        return Err(DecideError::DigestMismatch(id.to_owned()));
    }
    if approval.votes.iter().any(|v| v.approver == *approver) {
        return Err(DecideError::AlreadyVoted(id.to_owned()));
    }
    tx.execute(
        "INSERT INTO approval_votes (approval, approver, approve, reason, at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![id, approver.as_str(), decision.approve, decision.reason, now],
    )
    .map_err(StoreError::from)?;
    let approvals =
        approval.votes.iter().filter(|v| v.approve).count() as u32 + u32::from(decision.approve);
    let next = if !decision.approve {
        Some(ApprovalState::Denied)
    } else if approvals >= approval.required {
        Some(ApprovalState::Approved)
    } else {
        None
    };
    if let Some(state) = next {
        let grant = match (state, approval.duration_secs) {
            (ApprovalState::Approved, Some(d)) => Some(now + d),
            _ => None,
        };
        let n = tx
            .execute(
                "UPDATE approvals SET state = ?1, decided_at = ?2, grant_expires_at = ?3
                 WHERE id = ?4 AND state = 'pending'",
                params![state.as_str(), now, grant, id],
            )
            .map_err(StoreError::from)?;
        if n != 1 {
            return Err(DecideError::AlreadyDecided {
                id: id.to_owned(),
                state: approval.state,
            });
        }
    }
    let updated = get(&tx, id)?.ok_or_else(|| DecideError::NotFound(id.to_owned()))?;
    tx.commit().map_err(StoreError::from)?;
    Ok(updated)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn approvals() -> (tempfile::TempDir, Approvals) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (
            dir,
            Approvals::new(store, Webhooks::none(), Duration::from_secs(60)),
        )
    }

    fn call(required: u32) -> CallRequest {
        CallRequest {
            requester: "alice".parse().unwrap(),
            server: "demo".parse().unwrap(),
            session: "s1".parse().unwrap(),
            method: "tools/call".into(),
            name: "update_customer".into(),
            arguments: json!({"id": 7, "email": "x@example.com"}),
            rule: "writes (broker.toml:10)".into(),
            reason: "writes change customer data".into(),
            required,
        }
    }

    fn yes(digest: &str) -> DecisionRequest {
        DecisionRequest {
            approve: true,
            reason: Some("ok".into()),
            digest: digest.into(),
        }
    }

    fn user(name: &str) -> UserName {
        name.parse().unwrap()
    }

    #[tokio::test]
    async fn own_requests_foreign_servers_and_wrong_digests_are_refused() {
        let (_dir, a) = approvals();
        let req = a.open_call(call(1)).await.unwrap();
        let err = a
            .decide(&req.id, user("alice"), |_| true, yes(&req.digest))
            .await
            .unwrap_err();
        assert!(matches!(err, DecideError::OwnRequest), "{err}");
        let err = a
            .decide(&req.id, user("bob"), |_| false, yes(&req.digest))
            .await
            .unwrap_err();
        assert!(matches!(err, DecideError::NotApprover(_)), "{err}");
        let other = mcpgate_shared::approval::digest(
            "tools/call",
            "update_customer",
            &json!({"id": 8, "email": "x@example.com"}),
        );
        let err = a
            .decide(&req.id, user("bob"), |_| true, yes(&other))
            .await
            .unwrap_err();
        assert!(matches!(err, DecideError::DigestMismatch(_)), "{err}");
        assert_eq!(
            a.get(&req.id).await.unwrap().unwrap().state,
            ApprovalState::Pending
        );
        let done = a
            .decide(&req.id, user("bob"), |_| true, yes(&req.digest))
            .await
            .unwrap();
        assert_eq!(done.state, ApprovalState::Approved);
        assert_eq!(done.votes.len(), 1);
        let err = a
            .decide(&req.id, user("carol"), |_| true, yes(&req.digest))
            .await
            .unwrap_err();
        assert!(matches!(err, DecideError::AlreadyDecided { .. }), "{err}");
    }

    #[tokio::test]
    async fn n_approvals_are_needed_and_one_denial_decides() {
        let (_dir, a) = approvals();
        let req = a.open_call(call(2)).await.unwrap();
        let one = a
            .decide(&req.id, user("bob"), |_| true, yes(&req.digest))
            .await
            .unwrap();
        assert_eq!(one.state, ApprovalState::Pending);
        let err = a
            .decide(&req.id, user("bob"), |_| true, yes(&req.digest))
            .await
            .unwrap_err();
        assert!(matches!(err, DecideError::AlreadyVoted(_)), "{err}");
        let two = a
            .decide(&req.id, user("carol"), |_| true, yes(&req.digest))
            .await
            .unwrap();
        assert_eq!(two.state, ApprovalState::Approved);

        let req = a.open_call(call(2)).await.unwrap();
        let no = DecisionRequest {
            approve: false,
            reason: None,
            digest: req.digest.clone(),
        };
        let denied = a.decide(&req.id, user("bob"), |_| true, no).await.unwrap();
        assert_eq!(denied.state, ApprovalState::Denied);
    }

    #[tokio::test]
    async fn a_waiter_wakes_on_the_decision_and_a_late_close_does_not_override_it() {
        let (_dir, a) = approvals();
        let req = a.open_call(call(1)).await.unwrap();
        let waiter = {
            let a = a.clone();
            let id = req.id.clone();
            tokio::spawn(async move { a.wait(&id).await })
        };
        a.decide(&req.id, user("bob"), |_| true, yes(&req.digest))
            .await
            .unwrap();
        assert_eq!(
            waiter.await.unwrap().unwrap().state,
            ApprovalState::Approved
        );
        let after = a.close(&req.id, ApprovalState::Cancelled).await.unwrap();
        assert_eq!(after.state, ApprovalState::Approved);
    }

    #[tokio::test]
    async fn overdue_requests_expire_and_take_no_more_votes() {
        let (_dir, a) = approvals();
        let req = a.open_call(call(1)).await.unwrap();
        let before = a.version();
        // As if its expiry had passed.
        let id = req.id.clone();
        a.store
            .run(move |s| {
                s.conn()
                    .execute("UPDATE approvals SET expires_at = 1 WHERE id = ?1", [id])
            })
            .await
            .unwrap()
            .unwrap();
        let err = a
            .decide(&req.id, user("bob"), |_| true, yes(&req.digest))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                DecideError::AlreadyDecided {
                    state: ApprovalState::Expired,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(
            a.get(&req.id).await.unwrap().unwrap().state,
            ApprovalState::Expired
        );
        assert!(a.version() > before, "waiters were told");
    }

    #[tokio::test]
    async fn access_grants_last_their_duration() {
        let (_dir, a) = approvals();
        let req = a
            .open_access(
                user("alice"),
                AccessRequest {
                    server: "demo".parse().unwrap(),
                    duration_secs: 3600,
                    reason: "incident 42".into(),
                },
            )
            .await
            .unwrap();
        let server: ServerName = "demo".parse().unwrap();
        assert!(
            a.active_grant(&user("alice"), &server)
                .await
                .unwrap()
                .is_none()
        );
        let done = a
            .decide(&req.id, user("bob"), |_| true, yes(&req.digest))
            .await
            .unwrap();
        let until = done.grant_expires_at.unwrap();
        assert!(until >= unix_now() + 3590, "{until}");
        assert!(
            a.active_grant(&user("alice"), &server)
                .await
                .unwrap()
                .is_some()
        );
        let grants = a
            .grants(ListFilter {
                state: None,
                user: user("alice"),
                approves: vec![],
            })
            .await
            .unwrap();
        assert_eq!(grants.len(), 1);
        assert_eq!(grants[0].approvers, vec![user("bob")]);
    }
}
