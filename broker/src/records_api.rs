//! The records part of the HTTPS API: list recorded sessions, replay one
//! (NDJSON, optionally following it live), verify one, and — for the
//! audit role — export every event of a period and the evidence report.
//!
//! Routes and bodies are listed in `mcpgate_shared::record`.
//!
//! **Access.** A caller sees the records of their own sessions; a caller
//! with a role that has `audit = true` sees everyone's, and only they may
//! export or report. Someone else's session answers 404, exactly like an
//! unknown one (as approval requests do): session ids are not secrets,
//! and whether a colleague had a session at all is not the caller's to
//! learn. Every export and report is logged with who asked for it.
//!
//! Reading records is blocking file I/O; it runs on the blocking pool.
//! Long answers (a follow, an export) are streamed through a small
//! bounded channel, so a slow client holds back the reader instead of
//! the broker's memory.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use mcpgate_shared::api::ErrorCode;
use mcpgate_shared::approval::{Approval, ApprovalKind, Vote};
use mcpgate_shared::names::{RoleName, SessionId, UserName};
use mcpgate_shared::record::{
    EXPORT_EVENTS_HEADER, ExportQuery, RecordsQuery, ReplayQuery, ReportQuery, SessionSummary,
    VerifyReport,
};
use tokio::sync::mpsc;
use tracing::info;

use crate::api::{ApiResult, Caller, Failure, Peer, caller};
use crate::config::Config;
use crate::record::export::{self, Window};
use crate::record::reader::{self, Follower, ListFilter, ReadError};
use crate::record::report::{self, ConfigFacts, Evidence};
use crate::record::verify::{self, Which};
use crate::serve::Broker;

/// Chunks a streamed answer may have in flight.
const STREAM_DEPTH: usize = 8;

/// Session store rows a report reads at most (certificates, approvals).
const REPORT_ROWS: usize = 1_000_000;

pub fn routes() -> Router<Arc<Broker>> {
    Router::new()
        .route("/v1/records", get(list))
        .route("/v1/records/{session}", get(replay))
        .route("/v1/records/{session}/verify", get(verify_one))
        .route("/v1/audit/export", get(export))
        .route("/v1/audit/report", get(report))
}

// ---------------------------------------------------------------------------
// Access.

/// Whether any of these roles may see every session's record.
pub fn is_auditor(config: &Config, roles: &[RoleName]) -> bool {
    roles
        .iter()
        .filter_map(|r| config.roles.get(r))
        .any(|r| r.audit)
}

/// Whether `caller` may see the record of a session `owner` opened.
pub fn may_see(caller: &UserName, auditor: bool, owner: &UserName) -> bool {
    auditor || caller == owner
}

/// Which user's sessions a listing shows: the one asked for, if the
/// caller may; without a filter, an auditor's shows everyone's and
/// anyone else's their own.
pub(crate) fn list_user(
    caller: &UserName,
    auditor: bool,
    asked: Option<UserName>,
) -> Result<Option<UserName>, Failure> {
    match asked {
        Some(u) if !may_see(caller, auditor, &u) => Err(Failure::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            "you may list only your own sessions; other users' need a role with audit = true",
        )),
        Some(u) => Ok(Some(u)),
        None if auditor => Ok(None),
        None => Ok(Some(caller.clone())),
    }
}

fn not_found(session: &str) -> Failure {
    Failure::new(
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
        format!("no recorded session {session} that you may see"),
    )
}

fn audit_only(b: &Broker, c: &Caller, what: &str) -> Result<(), Failure> {
    if is_auditor(&b.config, &c.identity.roles) {
        return Ok(());
    }
    tracing::warn!(user = %c.identity.user, what, "records API refused: not an auditor");
    Err(Failure::new(
        StatusCode::FORBIDDEN,
        ErrorCode::Forbidden,
        format!("{what} needs a role with audit = true"),
    ))
}

/// The session, if the caller may see it; 404 otherwise.
async fn authorize(b: &Broker, c: &Caller, session: &str) -> Result<SessionId, Failure> {
    let id: SessionId = session.parse().map_err(|e| {
        Failure::bad_request(format!(
            "{e}; use a session id as mcpgate sessions lists it"
        ))
    })?;
    let store = b.recorder.store().clone();
    let s = id.clone();
    let owner = blocking(move || reader::owner(store.as_ref(), &s)).await?;
    let auditor = is_auditor(&b.config, &c.identity.roles);
    match owner {
        Some((user, _)) if may_see(&c.identity.user, auditor, &user) => Ok(id),
        _ => Err(not_found(id.as_str())),
    }
}

// ---------------------------------------------------------------------------
// Errors and plumbing.

impl From<ReadError> for Failure {
    fn from(e: ReadError) -> Self {
        match &e {
            ReadError::NotFound(s) => not_found(s.as_str()),
            ReadError::Deleted { .. } => {
                Failure::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, e.to_string())
            }
            // The record itself is damaged: say where, so the auditor can
            // verify it; nothing in it is secret.
            ReadError::Damaged { session, .. } => Failure::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::Internal,
                format!("{e}; run mcpgate audit verify {session}"),
            ),
            ReadError::Io { .. } => Failure::internal(e),
        }
    }
}

/// Runs blocking record reads off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ReadError> + Send + 'static,
) -> Result<T, Failure> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Failure::internal(format!("records task failed: {e}")))?
        .map_err(Failure::from)
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, Failure> {
    q.map(|Query(q)| q)
        .map_err(|e| Failure::bad_request(e.body_text()))
}

/// `since` and `until` (unix ms) as a window: `until` defaults to now and
/// is at most now, so an export's count cannot grow while it is sent.
fn window(since: Option<u64>, until: Option<u64>) -> Result<Window, Failure> {
    let now = crate::approval::now_ms();
    let until = until.unwrap_or(now).min(now);
    let since = since.unwrap_or(0);
    if since >= until {
        return Err(Failure::bad_request(format!(
            "the period is empty: since ({since}) must be before until ({until}, at most now)"
        )));
    }
    Ok(Window {
        since_ms: since,
        until_ms: until,
    })
}

/// A response body fed by a channel: each message a chunk, an error ends
/// the body abruptly (the client sees a broken stream, not a short one
/// that looks complete).
struct ChannelBody(mpsc::Receiver<Result<Bytes, io::Error>>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, io::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|item| item.map(|r| r.map(hyper::body::Frame::data)))
    }
}

fn streamed(content_type: &'static str, rx: mpsc::Receiver<Result<Bytes, io::Error>>) -> Response {
    let mut resp = Body::new(ChannelBody(rx)).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Proxies must pass each chunk on as it comes.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

const NDJSON: &str = "application/x-ndjson";

// ---------------------------------------------------------------------------
// Handlers.

/// `GET /v1/records`: recorded sessions, newest first.
async fn list(
    State(b): State<Arc<Broker>>,
    Extension(Peer(peer)): Extension<Peer>,
    headers: HeaderMap,
    q: Result<Query<RecordsQuery>, QueryRejection>,
) -> ApiResult<Vec<SessionSummary>> {
    let c = caller(&b, &headers, peer).await?;
    let q = query(q)?;
    let auditor = is_auditor(&b.config, &c.identity.roles);
    let filter = ListFilter {
        user: list_user(&c.identity.user, auditor, q.user)?,
        server: q.server,
        since_ms: q.since,
    };
    let store = b.recorder.store().clone();
    let sessions = blocking(move || reader::list(store.as_ref(), &filter)).await?;
    Ok(Json(sessions))
}

/// `GET /v1/records/{session}`: its events as NDJSON, each line the
/// event exactly as it was hashed (the record line without its trailer);
/// with `follow=true`, then each new event until the seal.
async fn replay(
    State(b): State<Arc<Broker>>,
    Extension(Peer(peer)): Extension<Peer>,
    headers: HeaderMap,
    Path(session): Path<String>,
    q: Result<Query<ReplayQuery>, QueryRejection>,
) -> Result<Response, Failure> {
    let c = caller(&b, &headers, peer).await?;
    let q = query(q)?;
    let session = authorize(&b, &c, &session).await?;
    info!(user = %c.identity.user, %session, follow = q.follow, "record replayed");
    if !q.follow {
        let store = b.recorder.store().clone();
        let lines = blocking(move || reader::read(store.as_ref(), &session)).await?;
        let mut out = Vec::with_capacity(lines.iter().map(|l| l.body.len() + 1).sum());
        for l in lines {
            out.extend_from_slice(&l.body);
            out.push(b'\n');
        }
        let mut resp = out.into_response();
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(NDJSON));
        return Ok(resp);
    }
    let mut follower = Follower::new(b.recorder.clone(), session);
    // The first read decides the status: an unknown or damaged record is
    // an error answer, not a broken stream.
    let first = follower.next().await?.unwrap_or_default();
    let (tx, rx) = mpsc::channel(STREAM_DEPTH);
    let mut shutdown = b.shutdown.clone();
    tokio::spawn(async move {
        // Bounded: the broker is stopping (its sessions end and are
        // sealed, but this answer need not wait for that).
        let stopping = async move {
            let _ = shutdown.wait_for(|stopping| *stopping).await.map(|_| ());
        };
        tokio::pin!(stopping);
        let mut batch = first;
        loop {
            if !batch.is_empty() {
                let mut chunk = Vec::new();
                for l in batch {
                    chunk.extend_from_slice(&l.body);
                    chunk.push(b'\n');
                }
                if tx.send(Ok(Bytes::from(chunk))).await.is_err() {
                    return; // the client left
                }
            }
            tokio::select! {
                next = follower.next() => match next {
                    Ok(Some(more)) => batch = more,
                    Ok(None) => return,
                    Err(e) => {
                        let _ = tx.send(Err(io::Error::other(e.to_string()))).await;
                        return;
                    }
                },
                () = &mut stopping => return,
                _ = tx.closed() => return,
            }
        }
    });
    Ok(streamed(NDJSON, rx))
}

/// `GET /v1/records/{session}/verify`.
async fn verify_one(
    State(b): State<Arc<Broker>>,
    Extension(Peer(peer)): Extension<Peer>,
    headers: HeaderMap,
    Path(session): Path<String>,
) -> ApiResult<VerifyReport> {
    let c = caller(&b, &headers, peer).await?;
    let session = authorize(&b, &c, &session).await?;
    info!(user = %c.identity.user, %session, "record verification asked for");
    Ok(Json(run_verify(&b, Which::Session(session)).await?))
}

async fn run_verify(b: &Broker, which: Which) -> Result<VerifyReport, Failure> {
    let store = b.recorder.store().clone();
    let public = b.recorder.public().clone();
    tokio::task::spawn_blocking(move || verify::verify(store.as_ref(), &public, &which))
        .await
        .map_err(|e| Failure::internal(format!("verification failed to run: {e}")))
}

/// `GET /v1/audit/export` (audit role): every event in the period, JSON
/// lines or CSV, with the row count in a header first.
async fn export(
    State(b): State<Arc<Broker>>,
    Extension(Peer(peer)): Extension<Peer>,
    headers: HeaderMap,
    q: Result<Query<ExportQuery>, QueryRejection>,
) -> Result<Response, Failure> {
    let c = caller(&b, &headers, peer).await?;
    audit_only(&b, &c, "exporting records")?;
    let q = query(q)?;
    let window = window(q.since, q.until)?;
    let format = q.format.unwrap_or_default();
    let store = b.recorder.store().clone();
    let plan = {
        let store = store.clone();
        blocking(move || export::plan(store.as_ref(), window)).await?
    };
    info!(
        user = %c.identity.user, client = %peer, since = window.since_ms, until = window.until_ms,
        format = format.as_str(), sessions = plan.sessions.len(), events = plan.events,
        "audit export"
    );
    let events = plan.events;
    let (tx, rx) = mpsc::channel(STREAM_DEPTH);
    tokio::task::spawn_blocking(move || {
        let mut sink = |chunk: Vec<u8>| tx.blocking_send(Ok(Bytes::from(chunk))).is_ok();
        if let Err(e) = export::export(store.as_ref(), &plan, window, format, &mut sink) {
            tracing::error!(error = %e, "audit export broke off");
            let _ = tx.blocking_send(Err(io::Error::other(e.to_string())));
        }
    });
    let mut resp = streamed(format.content_type(), rx);
    let h = resp.headers_mut();
    h.insert(EXPORT_EVENTS_HEADER, HeaderValue::from(events));
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"mcpgate-export-{}-{}.{}\"",
        window.since_ms,
        window.until_ms,
        format.as_str()
    )) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

/// `GET /v1/audit/report` (audit role): the evidence report.
async fn report(
    State(b): State<Arc<Broker>>,
    Extension(Peer(peer)): Extension<Peer>,
    headers: HeaderMap,
    q: Result<Query<ReportQuery>, QueryRejection>,
) -> Result<Response, Failure> {
    let c = caller(&b, &headers, peer).await?;
    audit_only(&b, &c, "the evidence report")?;
    let q = query(q)?;
    let window = window(q.since, q.until)?;
    let format = q.format.unwrap_or_default();
    let store = b.recorder.store().clone();
    let (sessions, records) = blocking(move || {
        let sessions = report::sessions_in(store.as_ref(), window)?;
        let facts = report::collect(store.as_ref(), window, &sessions)?;
        Ok((sessions, facts))
    })
    .await?;
    let (since_s, until_s) = (window.since_ms / 1000, window.until_ms.div_ceil(1000));
    let certificates = b
        .store
        .run(move |s| s.list(REPORT_ROWS))
        .await
        .map_err(Failure::internal)?
        .map_err(Failure::internal)?
        .into_iter()
        .filter(|r| since_s <= r.created_at && r.created_at < until_s)
        .collect();
    let approvals = b
        .store
        .run(move |s| approvals_between(&s.conn(), since_s, until_s))
        .await
        .map_err(Failure::internal)?
        .map_err(Failure::internal)?;
    let verify = match run_verify(&b, Which::All).await {
        Ok(v) => v,
        Err(_) => VerifyReport {
            ok: false,
            sessions: 0,
            events: 0,
            problems: vec!["verification could not run; see the broker log".into()],
            notes: vec![],
        },
    };
    let evidence = Evidence {
        generated_ms: crate::approval::now_ms(),
        window,
        audit_key: b.recorder.public().fingerprint(),
        config: ConfigFacts::from_config(&b.config, b.policy.len()),
        sessions,
        records,
        certificates,
        approvals,
        verify,
    };
    info!(
        user = %c.identity.user, client = %peer, since = window.since_ms, until = window.until_ms,
        format = format.as_str(), verified = evidence.verify.ok, "audit report"
    );
    let text = report::render(&evidence, format);
    let mut resp = text.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    Ok(resp)
}

/// Approval requests opened with `since <= created_at < until` (unix
/// seconds), oldest first, with their votes; arguments are left out (the
/// records hold the calls as forwarded).
fn approvals_between(
    conn: &rusqlite::Connection,
    since: u64,
    until: u64,
) -> Result<Vec<Approval>, rusqlite::Error> {
    let bad = |e: String| rusqlite::Error::ToSqlConversionFailure(e.into());
    let mut stmt = conn.prepare(
        "SELECT id, kind, state, requester, server, session, method, name, digest, rule, reason,
                duration_secs, required, created_at, expires_at, decided_at, grant_expires_at
         FROM approvals WHERE created_at >= ?1 AND created_at < ?2
         ORDER BY created_at, rowid LIMIT ?3",
    )?;
    let rows = stmt.query_map(rusqlite::params![since, until, REPORT_ROWS as i64], |r| {
        let text = |i: usize| r.get::<_, String>(i);
        let kind = match text(1)?.as_str() {
            "access" => ApprovalKind::Access,
            _ => ApprovalKind::Call,
        };
        Ok(Approval {
            id: text(0)?,
            kind,
            state: text(2)?.parse().map_err(bad)?,
            requester: text(3)?
                .parse()
                .map_err(|e: mcpgate_shared::names::NameError| bad(e.to_string()))?,
            server: text(4)?
                .parse()
                .map_err(|e: mcpgate_shared::names::NameError| bad(e.to_string()))?,
            session: r.get::<_, Option<String>>(5)?.and_then(|s| s.parse().ok()),
            method: r.get(6)?,
            name: r.get(7)?,
            arguments: None,
            digest: text(8)?,
            rule: r.get(9)?,
            reason: r.get(10)?,
            duration_secs: r.get(11)?,
            required: r.get(12)?,
            votes: Vec::new(),
            created_at: r.get(13)?,
            expires_at: r.get(14)?,
            decided_at: r.get(15)?,
            grant_expires_at: r.get(16)?,
        })
    })?;
    let mut out: Vec<Approval> = rows.collect::<Result<_, _>>()?;
    let mut votes = conn.prepare(
        "SELECT approver, approve, reason, at FROM approval_votes
         WHERE approval = ?1 ORDER BY at, rowid",
    )?;
    for a in &mut out {
        a.votes = votes
            .query_map([&a.id], |r| {
                Ok(Vote {
                    approver: r
                        .get::<_, String>(0)?
                        .parse()
                        .map_err(|e: mcpgate_shared::names::NameError| bad(e.to_string()))?,
                    approve: r.get(1)?,
                    reason: r.get(2)?,
                    at: r.get(3)?,
                })
            })?
            .collect::<Result<_, _>>()?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(u: &str) -> UserName {
        u.parse().unwrap()
    }

    fn config(toml_roles: &str) -> Config {
        let text = format!(
            "[broker]\napi_listen = \"127.0.0.1:0\"\ntunnel_listen = \"127.0.0.1:0\"\npublic_names = [\"localhost\"]\ndata_dir = \"/tmp/x\"\n{toml_roles}"
        );
        toml::from_str(&text).unwrap()
    }

    #[test]
    fn only_roles_with_audit_see_everyone() {
        let c = config(
            "[roles.dev]\nservers = []\n[roles.auditor]\naudit = true\n[roles.ops]\naudit = false\n",
        );
        let role = |r: &str| -> RoleName { r.parse().unwrap() };
        assert!(!is_auditor(&c, &[]));
        assert!(!is_auditor(&c, &[role("dev"), role("ops")]));
        assert!(is_auditor(&c, &[role("dev"), role("auditor")]));
        // A role the config does not know grants nothing.
        assert!(!is_auditor(&c, &[role("ghost")]));
    }

    #[test]
    fn a_user_sees_their_own_sessions_and_an_auditor_everyones() {
        let (alice, bob) = (user("alice"), user("bob"));
        assert!(may_see(&alice, false, &alice));
        assert!(!may_see(&alice, false, &bob));
        assert!(may_see(&alice, true, &bob));

        // Listing without a filter: your own, or everyone's for auditors.
        assert_eq!(list_user(&alice, false, None).unwrap(), Some(alice.clone()));
        assert_eq!(list_user(&alice, true, None).unwrap(), None);
        assert_eq!(
            list_user(&alice, false, Some(alice.clone())).unwrap(),
            Some(alice.clone())
        );
        assert_eq!(
            list_user(&alice, true, Some(bob.clone())).unwrap(),
            Some(bob.clone())
        );
        let refused = list_user(&alice, false, Some(bob)).unwrap_err();
        let resp = refused.into_response();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    }

    #[test]
    fn someone_elses_session_looks_like_no_session() {
        let resp = not_found("5e550001-0000-4000-8000-000000000001").into_response();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        let unknown: Failure =
            ReadError::NotFound("5e550001-0000-4000-8000-000000000001".parse().unwrap()).into();
        assert_eq!(unknown.into_response().status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn windows_default_to_everything_until_now_and_refuse_empty_ones() {
        let now = crate::approval::now_ms();
        let w = window(None, None).unwrap();
        assert_eq!(w.since_ms, 0);
        assert!(w.until_ms >= now);
        // Never past now.
        let w = window(Some(5), Some(u64::MAX)).unwrap();
        assert!(w.until_ms < u64::MAX && w.since_ms == 5);
        assert!(window(Some(10), Some(10)).is_err());
        assert!(window(Some(u64::MAX), None).is_err());
    }

    #[tokio::test]
    async fn a_channel_body_streams_chunks_and_ends() {
        let collect = |rx| axum::body::to_bytes(Body::new(ChannelBody(rx)), usize::MAX);
        let (tx, rx) = mpsc::channel(2);
        tx.send(Ok(Bytes::from_static(b"a\n"))).await.unwrap();
        tx.send(Ok(Bytes::from_static(b"b\n"))).await.unwrap();
        drop(tx);
        assert_eq!(collect(rx).await.unwrap(), &b"a\nb\n"[..]);
        // An error breaks the body off: it never looks complete.
        let (tx, rx) = mpsc::channel(2);
        tx.send(Ok(Bytes::from_static(b"a\n"))).await.unwrap();
        tx.send(Err(io::Error::other("broke"))).await.unwrap();
        drop(tx);
        assert!(collect(rx).await.is_err());
    }

    #[test]
    fn approvals_are_read_by_period_with_their_votes() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(dir.path()).unwrap();
        let conn = store.conn();
        for (id, kind, created, requester) in [
            ("apr_1", "call", 100, "alice"),
            ("apr_2", "access", 200, "bob"),
            ("apr_3", "call", 300, "carol"),
        ] {
            conn.execute(
                "INSERT INTO approvals (id, kind, state, requester, server, digest, required, created_at, expires_at)
                 VALUES (?1, ?2, 'approved', ?3, 'db', 'dd', 1, ?4, ?5)",
                rusqlite::params![id, kind, requester, created, created + 300],
            )
            .unwrap();
        }
        conn.execute(
            "INSERT INTO approval_votes (approval, approver, approve, at) VALUES ('apr_2', 'dave', 1, 210)",
            [],
        )
        .unwrap();
        let got = approvals_between(&conn, 150, 300).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].id, "apr_2");
        assert_eq!(got[0].kind, ApprovalKind::Access);
        assert_eq!(got[0].approvers(), vec![user("dave")]);
        assert_eq!(approvals_between(&conn, 0, 1000).unwrap().len(), 3);
    }
}
