//! Reading records through a [`RecordStore`]: listing sessions as
//! [`SessionSummary`]s, reading one session's events in order, and
//! following a live session as its events are written (`replay --follow`).
//!
//! Reading is not verifying: nothing here checks hashes, chains or
//! signatures (that is [`super::verify`]). But nothing here trusts the
//! bytes either: a line that does not parse is a [`ReadError::Damaged`]
//! naming the event, never a panic. Only complete lines are read: bytes
//! after the last newline are an event being written (or a torn write
//! that recovery cuts), never one that was acknowledged.
//!
//! Listing reads the index and every listed record once per call; a
//! record is parsed as [`Meta`] (the event without its message), so the
//! cost is one pass over the bytes without building the messages.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use mcpgate_shared::event::{DecisionEvent, DecisionKind};
use mcpgate_shared::names::{RoleName, ServerName, SessionId, UserName};
use mcpgate_shared::record::{Body, EndState, Event, IndexBody, IndexEntry, Peer, SessionSummary};
use serde::Deserialize;

use super::format::{self, Hash};
use super::store::RecordStore;
use super::writer::{Recorder, split_complete};

/// A follower re-reads the record at most this often: several batches
/// written in a burst become one read.
const FOLLOW_COALESCE: Duration = Duration::from_millis(50);

/// Why records could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("no recorded session {0}")]
    NotFound(SessionId),
    #[error("the record of session {session} was deleted ({reason})")]
    Deleted { session: SessionId, reason: String },
    #[error("session {session}: event {event} is damaged: {reason}")]
    Damaged {
        session: SessionId,
        event: u64,
        reason: String,
    },
    #[error("records at {place} cannot be read: {reason}")]
    Io { place: String, reason: String },
}

impl ReadError {
    fn io(store: &dyn RecordStore, e: impl std::fmt::Display) -> ReadError {
        ReadError::Io {
            place: store.describe(),
            reason: e.to_string(),
        }
    }
}

/// One event as stored: parsed, the exact body that was hashed (no
/// trailer), and the hash the line claims.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub event: Event,
    pub body: Vec<u8>,
    pub hash: Hash,
}

/// An event without its message (`msg` is skipped, not built): what
/// listing and export need. Fields that a type does not have are absent.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Meta {
    pub seq: u64,
    pub at_ms: u64,
    /// `start`, `message`, `decision`, `checkpoint`, `end` or `seal`.
    #[serde(rename = "type")]
    pub kind: String,
    // start
    #[serde(default)]
    pub user: Option<UserName>,
    #[serde(default)]
    pub issuer: Option<String>,
    #[serde(default)]
    pub roles: Vec<RoleName>,
    #[serde(default)]
    pub server: Option<ServerName>,
    #[serde(default)]
    pub client_addr: Option<String>,
    #[serde(default)]
    pub tunnel_peer: Option<String>,
    #[serde(default)]
    pub cert_serial: Option<String>,
    // message
    #[serde(default)]
    pub from: Option<Peer>,
    #[serde(default)]
    pub to: Option<Peer>,
    /// `request`, `notification`, `response` or `error`.
    #[serde(default, rename = "kind")]
    pub message_kind: Option<String>,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub bytes: Option<u64>,
    #[serde(default)]
    pub masked: BTreeMap<String, u64>,
    // decision
    #[serde(default)]
    pub decision: Option<DecisionEvent>,
    // checkpoint, seal
    #[serde(default)]
    pub events: Option<u64>,
    // end
    #[serde(default)]
    pub state: Option<EndState>,
    #[serde(default)]
    pub reason: Option<String>,
}

impl Meta {
    /// A `tools/call` request forwarded from the client to the upstream.
    pub fn is_forwarded_call(&self) -> bool {
        self.kind == "message"
            && self.from == Some(Peer::Client)
            && self.to == Some(Peer::Upstream)
            && self.message_kind.as_deref() == Some("request")
            && self.method.as_deref() == Some("tools/call")
    }

    /// A decision that kept a call from the upstream.
    pub fn is_denial(&self) -> bool {
        self.decision
            .as_ref()
            .is_some_and(|d| is_denial(d.decision))
    }
}

/// Decisions that count as denied: by a rule, by an approver, by nobody
/// deciding in time, or refused before any rule ran.
pub fn is_denial(kind: DecisionKind) -> bool {
    matches!(
        kind,
        DecisionKind::Deny
            | DecisionKind::DenyByApprover
            | DecisionKind::Timeout
            | DecisionKind::Refuse
    )
}

/// The complete lines of a log, without their newlines, numbered from 0.
fn lines(bytes: &[u8]) -> impl Iterator<Item = (u64, &[u8])> {
    let (complete, _) = split_complete(bytes);
    (0u64..).zip(
        complete
            .split(|&b| b == b'\n')
            .take(complete.iter().filter(|&&b| b == b'\n').count()),
    )
}

fn damaged(session: &SessionId, event: u64, reason: impl std::fmt::Display) -> ReadError {
    ReadError::Damaged {
        session: session.clone(),
        event,
        reason: reason.to_string(),
    }
}

/// Parses one line of `session`'s record (line number `n`).
pub fn parse_line(session: &SessionId, n: u64, raw: &[u8]) -> Result<Line, ReadError> {
    let split = format::split(raw).map_err(|e| damaged(session, n, format!("the line {e}")))?;
    let event: Event = serde_json::from_slice(&split.body)
        .map_err(|e| damaged(session, n, format!("not an event: {e}")))?;
    Ok(Line {
        event,
        body: split.body,
        hash: split.hash,
    })
}

/// Parses one line as [`Meta`], with its hash.
pub fn parse_meta(session: &SessionId, n: u64, raw: &[u8]) -> Result<(Meta, Hash), ReadError> {
    let split = format::split(raw).map_err(|e| damaged(session, n, format!("the line {e}")))?;
    let meta: Meta = serde_json::from_slice(&split.body)
        .map_err(|e| damaged(session, n, format!("not an event: {e}")))?;
    Ok((meta, split.hash))
}

/// Every complete line of a record as [`Meta`], in order.
pub fn metas<'a>(
    session: &'a SessionId,
    bytes: &'a [u8],
) -> impl Iterator<Item = Result<(Meta, Hash), ReadError>> + 'a {
    lines(bytes).map(move |(n, raw)| parse_meta(session, n, raw))
}

/// One session as the index lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Indexed {
    pub session: SessionId,
    pub user: UserName,
    pub server: ServerName,
    /// When its record was opened (unix ms).
    pub opened_ms: u64,
    /// When it was closed, how, with how many events.
    pub closed: Option<(u64, EndState, u64)>,
    /// When its record was deleted, why, and how many events it had.
    pub deleted: Option<(u64, String, u64)>,
}

impl Indexed {
    pub fn state(&self) -> &'static str {
        match (&self.deleted, &self.closed) {
            (Some(_), _) => "deleted",
            (None, Some((_, state, _))) => state.as_str(),
            (None, None) => "live",
        }
    }
}

/// The sessions in the index, in the order they were opened. A line
/// that does not parse is skipped with a warning (verification reports
/// it); the listing goes on.
pub fn index(store: &dyn RecordStore) -> Result<Vec<Indexed>, ReadError> {
    let bytes = store.read_index().map_err(|e| ReadError::io(store, e))?;
    let mut order: Vec<SessionId> = Vec::new();
    let mut by_id: HashMap<SessionId, Indexed> = HashMap::new();
    for (n, raw) in lines(&bytes) {
        let entry = format::split(raw)
            .map_err(|e| e.to_string())
            .and_then(|s| serde_json::from_slice::<IndexEntry>(&s.body).map_err(|e| e.to_string()));
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                tracing::warn!(store = %store.describe(), entry = n, error = %e, "a damaged index entry was skipped; run verify");
                continue;
            }
        };
        match entry.body {
            IndexBody::Open { user, server } => {
                if !by_id.contains_key(&entry.session) {
                    order.push(entry.session.clone());
                }
                by_id.insert(
                    entry.session.clone(),
                    Indexed {
                        session: entry.session,
                        user,
                        server,
                        opened_ms: entry.at_ms,
                        closed: None,
                        deleted: None,
                    },
                );
            }
            IndexBody::Close { state, events, .. } => {
                if let Some(s) = by_id.get_mut(&entry.session) {
                    s.closed = Some((entry.at_ms, state, events));
                }
            }
            IndexBody::Delete { reason, events, .. } => {
                if let Some(s) = by_id.get_mut(&entry.session) {
                    s.deleted = Some((entry.at_ms, reason, events));
                }
            }
        }
    }
    Ok(order
        .into_iter()
        .filter_map(|id| by_id.remove(&id))
        .collect())
}

/// What `GET /v1/records` filters on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    pub user: Option<UserName>,
    pub server: Option<ServerName>,
    /// Unix ms: sessions live, or that ended at or after it.
    pub since_ms: Option<u64>,
}

impl ListFilter {
    fn keeps(&self, user: &UserName, server: &ServerName) -> bool {
        self.user.as_ref().is_none_or(|u| u == user)
            && self.server.as_ref().is_none_or(|s| s == server)
    }

    fn keeps_summary(&self, s: &SessionSummary) -> bool {
        self.keeps(&s.user, &s.server)
            && self
                .since_ms
                .is_none_or(|since| s.ended_ms.is_none_or(|end| end >= since))
    }
}

/// What one pass over a record found.
#[derive(Debug, Default)]
struct Tally {
    events: u64,
    first_ms: Option<u64>,
    last_ms: u64,
    calls: u64,
    denied: u64,
    start: Option<(UserName, ServerName)>,
    end: Option<EndState>,
    damaged: bool,
}

fn tally(session: &SessionId, bytes: &[u8]) -> Tally {
    let mut t = Tally::default();
    for item in metas(session, bytes) {
        let (m, _) = match item {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "a damaged record was listed as far as it could be read; run verify");
                t.damaged = true;
                break;
            }
        };
        t.events += 1;
        t.first_ms.get_or_insert(m.at_ms);
        t.last_ms = m.at_ms;
        t.calls += u64::from(m.is_forwarded_call());
        t.denied += u64::from(m.is_denial());
        if m.kind == "start"
            && let (Some(u), Some(s)) = (m.user, m.server)
        {
            t.start = Some((u, s));
        }
        if m.kind == "end" {
            t.end = m.state;
        }
    }
    t
}

/// Lists recorded sessions, newest first: every session in the index
/// (deleted ones as `deleted`, from their tombstone) and any record that
/// is not in the index. `state` is `live`, `closed`, `aborted`,
/// `deleted`, or `damaged` (a line does not parse: counted up to it) or
/// `missing` (listed, but its record is gone without a tombstone).
pub fn list(
    store: &dyn RecordStore,
    filter: &ListFilter,
) -> Result<Vec<SessionSummary>, ReadError> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for s in index(store)? {
        seen.insert(s.session.clone());
        if !filter.keeps(&s.user, &s.server) {
            continue;
        }
        let ended = s.deleted.as_ref().map(|d| d.0).or(s.closed.map(|c| c.0));
        if let (Some(since), Some(end)) = (filter.since_ms, ended)
            && end < since
        {
            continue;
        }
        if let Some((_, _, events)) = &s.deleted {
            out.push(SessionSummary {
                session: s.session.clone(),
                user: s.user.clone(),
                server: s.server.clone(),
                started_ms: s.opened_ms,
                ended_ms: s.closed.map(|c| c.0),
                state: "deleted".into(),
                events: *events,
                calls: 0,
                denied: 0,
            });
            continue;
        }
        let state = s.state();
        let bytes = store
            .read(&s.session)
            .map_err(|e| ReadError::io(store, e))?;
        let summary = match bytes {
            None => SessionSummary {
                session: s.session.clone(),
                user: s.user.clone(),
                server: s.server.clone(),
                started_ms: s.opened_ms,
                ended_ms: s.closed.map(|c| c.0),
                state: "missing".into(),
                events: 0,
                calls: 0,
                denied: 0,
            },
            Some(bytes) => {
                let t = tally(&s.session, &bytes);
                let state = if t.damaged { "damaged" } else { state };
                summary(&s.session, s.user.clone(), s.server.clone(), state, &t)
            }
        };
        if filter.keeps_summary(&summary) {
            out.push(summary);
        }
    }
    let mut unlisted = store.sessions().map_err(|e| ReadError::io(store, e))?;
    unlisted.retain(|s| !seen.contains(s));
    for session in unlisted {
        let Some(bytes) = store.read(&session).map_err(|e| ReadError::io(store, e))? else {
            continue;
        };
        let t = tally(&session, &bytes);
        let Some((user, server)) = t.start.clone() else {
            tracing::warn!(%session, "a record without a start event is not listed; run verify");
            continue;
        };
        let state = match (t.damaged, t.end) {
            (true, _) => "damaged",
            (false, Some(end)) => end.as_str(),
            (false, None) => "live",
        };
        let summary = summary(&session, user, server, state, &t);
        if filter.keeps_summary(&summary) {
            out.push(summary);
        }
    }
    // Index order is opening order: reversed, a stable sort keeps the
    // later-opened of two sessions that started in the same millisecond
    // first.
    out.reverse();
    out.sort_by_key(|s| std::cmp::Reverse(s.started_ms));
    Ok(out)
}

fn summary(
    session: &SessionId,
    user: UserName,
    server: ServerName,
    state: &str,
    t: &Tally,
) -> SessionSummary {
    SessionSummary {
        session: session.clone(),
        user,
        server,
        started_ms: t.first_ms.unwrap_or(0),
        ended_ms: (state != "live").then_some(t.last_ms),
        state: state.into(),
        events: t.events,
        calls: t.calls,
        denied: t.denied,
    }
}

/// A session's owner and server from the index, without reading its
/// record: what access checks need. `None` for a session the index does
/// not list.
pub fn owner(
    store: &dyn RecordStore,
    session: &SessionId,
) -> Result<Option<(UserName, ServerName)>, ReadError> {
    if let Some(s) = index(store)?.into_iter().find(|s| &s.session == session) {
        return Ok(Some((s.user, s.server)));
    }
    // Not listed (a damaged index): the record's own start event.
    let Some(bytes) = store.read(session).map_err(|e| ReadError::io(store, e))? else {
        return Ok(None);
    };
    Ok(tally(session, &bytes).start)
}

/// Why a record that is not there is not there.
fn absent(store: &dyn RecordStore, session: &SessionId) -> ReadError {
    match index(store) {
        Ok(listed) => match listed.into_iter().find(|s| &s.session == session) {
            Some(Indexed {
                deleted: Some((_, reason, _)),
                ..
            }) => ReadError::Deleted {
                session: session.clone(),
                reason,
            },
            _ => ReadError::NotFound(session.clone()),
        },
        Err(e) => e,
    }
}

/// Every event of `session`'s record, in order. A line that does not
/// parse is an error naming it; so are bytes after the seal. An
/// incomplete last line of a live record is left out (it is being
/// written).
pub fn read(store: &dyn RecordStore, session: &SessionId) -> Result<Vec<Line>, ReadError> {
    let bytes = store
        .read(session)
        .map_err(|e| ReadError::io(store, e))?
        .ok_or_else(|| absent(store, session))?;
    let mut out = Vec::new();
    for (n, raw) in lines(&bytes) {
        let line = parse_line(session, n, raw)?;
        if let Some(last) = out.last().map(|l: &Line| &l.event.body)
            && matches!(last, Body::Seal { .. })
        {
            return Err(damaged(session, n, "an event follows the seal"));
        }
        out.push(line);
    }
    let (_, torn) = split_complete(&bytes);
    if torn > 0 && matches!(out.last().map(|l| &l.event.body), Some(Body::Seal { .. })) {
        return Err(damaged(
            session,
            out.len() as u64,
            format!("{torn} bytes follow the seal"),
        ));
    }
    Ok(out)
}

/// Follows one session's record as it is written: each [`Follower::next`]
/// gives the events written since the last one, waiting for the recorder
/// to write more when there are none yet; after the seal it gives `None`.
pub struct Follower {
    recorder: Arc<Recorder>,
    session: SessionId,
    /// Bytes of complete lines already given.
    offset: usize,
    /// Lines already given (the next line's number).
    given: u64,
    sealed: bool,
    written: tokio::sync::watch::Receiver<u64>,
}

impl std::fmt::Debug for Follower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Follower")
            .field("session", &self.session)
            .field("given", &self.given)
            .field("sealed", &self.sealed)
            .finish()
    }
}

impl Follower {
    pub fn new(recorder: Arc<Recorder>, session: SessionId) -> Follower {
        // Subscribed before the first read, so no batch written after it
        // can be missed.
        let written = recorder.subscribe();
        Follower {
            recorder,
            session,
            offset: 0,
            given: 0,
            sealed: false,
            written,
        }
    }

    async fn read_now(&self) -> Result<Option<Vec<u8>>, ReadError> {
        let store = self.recorder.store().clone();
        let session = self.session.clone();
        tokio::task::spawn_blocking(move || store.read(&session).map_err(|e| (store.describe(), e)))
            .await
            .map_err(|e| ReadError::Io {
                place: self.recorder.store().describe(),
                reason: e.to_string(),
            })?
            .map_err(|(place, e)| ReadError::Io {
                place,
                reason: e.to_string(),
            })
    }

    /// The next events; `None` once the seal was given, when the record
    /// is no longer written without one, or when the recorder stopped.
    pub async fn next(&mut self) -> Result<Option<Vec<Line>>, ReadError> {
        loop {
            if self.sealed {
                return Ok(None);
            }
            self.written.borrow_and_update();
            let open = self.recorder.is_open(&self.session);
            let Some(bytes) = self.read_now().await? else {
                if self.given == 0 {
                    return Err(absent(self.recorder.store().as_ref(), &self.session));
                }
                // Deleted while followed.
                return Ok(None);
            };
            let (complete, _) = split_complete(&bytes);
            let fresh = complete.get(self.offset..).unwrap_or_default();
            let mut out = Vec::new();
            for (n, raw) in lines(fresh) {
                if self.sealed {
                    return Err(damaged(
                        &self.session,
                        self.given + n,
                        "an event follows the seal",
                    ));
                }
                let line = parse_line(&self.session, self.given + n, raw)?;
                self.sealed = matches!(line.event.body, Body::Seal { .. });
                out.push(line);
            }
            self.offset = complete.len();
            self.given += out.len() as u64;
            if !out.is_empty() {
                return Ok(Some(out));
            }
            if !open {
                // Read after learning it is not being written: nothing
                // more will come.
                return Ok(None);
            }
            if self.written.changed().await.is_err() {
                return Ok(None);
            }
            tokio::time::sleep(FOLLOW_COALESCE).await;
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use mcpgate_shared::record::{MessageEvent, Start};
    use serde_json::json;

    use super::super::{AuditKey, FileStore, RecordingSection};
    use super::*;

    pub(crate) fn sid(n: u32) -> SessionId {
        format!("5e55{n:04x}-0000-4000-8000-00000000{n:04x}")
            .parse()
            .unwrap()
    }

    pub(crate) fn start(user: &str, server: &str) -> Start {
        Start {
            user: user.parse().unwrap(),
            issuer: "local".into(),
            roles: vec!["dev".parse().unwrap()],
            server: server.parse().unwrap(),
            client_addr: "127.0.0.1:50412".into(),
            tunnel_peer: "127.0.0.1:50414".into(),
            cert_serial: "4f2a9c0e11d3b7a5".into(),
            created_at: 1_767_225_600,
        }
    }

    pub(crate) fn call(id: u64, tool: &str) -> Body {
        Body::Message(MessageEvent {
            from: Peer::Client,
            to: Peer::Upstream,
            kind: "request".into(),
            id: Some(id.to_string()),
            method: Some("tools/call".into()),
            name: Some(tool.into()),
            bytes: 80,
            masked: BTreeMap::new(),
            msg: json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":tool,"arguments":{"q":"x"}}}),
        })
    }

    pub(crate) fn decision(session: &SessionId, user: &str, kind: DecisionKind) -> Body {
        Body::Decision {
            decision: DecisionEvent {
                at_ms: 1,
                decision: kind,
                session: Some(session.clone()),
                user: user.parse().unwrap(),
                server: "db".parse().unwrap(),
                method: Some("tools/call".into()),
                name: Some("drop_table".into()),
                request_id: Some("9".into()),
                rule: Some("no-ddl (policy.toml:3)".into()),
                reason: "DDL is not allowed".into(),
                approval: None,
                approvers: vec![],
                masked: BTreeMap::new(),
            },
        }
    }

    pub(crate) fn recorder(dir: &std::path::Path) -> Arc<Recorder> {
        let store = Arc::new(FileStore::create(dir).unwrap());
        let (r, _) = Recorder::start(
            store,
            AuditKey::from_bytes(&[7; 32]),
            &RecordingSection::default(),
        )
        .unwrap();
        Arc::new(r)
    }

    #[tokio::test]
    async fn lists_and_reads_what_the_recorder_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let r = recorder(dir.path());
        let (a, b) = (sid(1), sid(2));
        r.open(&a, start("alice", "db")).await.unwrap();
        r.append(&a, call(1, "query")).await.unwrap();
        r.append(&a, decision(&a, "alice", DecisionKind::Deny))
            .await
            .unwrap();
        r.append(&a, decision(&a, "alice", DecisionKind::Timeout))
            .await
            .unwrap();
        r.append(&a, decision(&a, "alice", DecisionKind::Allow))
            .await
            .unwrap();
        r.append(&a, call(2, "query")).await.unwrap();
        r.close(&a, EndState::Closed, "client disconnected")
            .await
            .unwrap();
        r.open(&b, start("bob", "crm")).await.unwrap();
        r.append(&b, call(1, "lookup")).await.unwrap();

        let store = r.store().as_ref();
        let all = list(store, &ListFilter::default()).unwrap();
        assert_eq!(all.len(), 2);
        // Newest first: bob's session is live.
        assert_eq!(all[0].session, b);
        assert_eq!(
            (
                all[0].state.as_str(),
                all[0].events,
                all[0].calls,
                all[0].ended_ms
            ),
            ("live", 2, 1, None)
        );
        let s = &all[1];
        assert_eq!(s.session, a);
        assert_eq!(s.user.as_str(), "alice");
        assert_eq!(s.server.as_str(), "db");
        // start, 2 calls, 3 decisions, end, seal.
        assert_eq!(
            (s.state.as_str(), s.events, s.calls, s.denied),
            ("closed", 8, 2, 2)
        );
        assert!(s.ended_ms.unwrap() >= s.started_ms);

        let only = |f: ListFilter| -> Vec<SessionId> {
            list(store, &f)
                .unwrap()
                .into_iter()
                .map(|s| s.session)
                .collect()
        };
        let user = |u: &str| Some(u.parse().unwrap());
        assert_eq!(
            only(ListFilter {
                user: user("bob"),
                ..Default::default()
            }),
            vec![b.clone()]
        );
        assert_eq!(
            only(ListFilter {
                server: Some("db".parse().unwrap()),
                ..Default::default()
            }),
            vec![a.clone()]
        );
        // Since after alice's session ended: only the live one.
        let after = s.ended_ms.unwrap() + 1;
        assert_eq!(
            only(ListFilter {
                since_ms: Some(after),
                ..Default::default()
            }),
            vec![b.clone()]
        );

        let events = read(store, &a).unwrap();
        assert_eq!(events.len(), 8);
        assert!(matches!(events[0].event.body, Body::Start(_)));
        assert!(matches!(events[7].event.body, Body::Seal { events: 7 }));
        for (i, l) in events.iter().enumerate() {
            assert_eq!(l.event.seq, i as u64);
            assert_eq!(serde_json::from_slice::<Event>(&l.body).unwrap(), l.event);
            assert_eq!(l.hash, format::hash_body(format::Chain::Session, &l.body));
        }
        assert_eq!(
            read(store, &sid(3)).unwrap_err(),
            ReadError::NotFound(sid(3))
        );
        assert_eq!(
            owner(store, &b).unwrap(),
            Some(("bob".parse().unwrap(), "crm".parse().unwrap()))
        );
        assert_eq!(owner(store, &sid(3)).unwrap(), None);
        r.stop();
    }

    #[tokio::test]
    async fn a_damaged_line_is_an_error_that_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let r = recorder(dir.path());
        let a = sid(1);
        r.open(&a, start("alice", "db")).await.unwrap();
        r.append(&a, call(1, "query")).await.unwrap();
        r.close(&a, EndState::Closed, "done").await.unwrap();
        r.stop();
        let store = FileStore::at(dir.path());
        let path = store.session_path(&a);
        let good = std::fs::read(&path).unwrap();

        let mut text = String::from_utf8(good.clone()).unwrap();
        text = text.replacen("\"seq\":1,", "\"seq\":\"one\",", 1);
        std::fs::write(&path, &text).unwrap();
        let err = read(&store, &a).unwrap_err();
        assert!(matches!(&err, ReadError::Damaged { event: 1, .. }), "{err}");
        assert!(
            err.to_string()
                .starts_with(&format!("session {a}: event 1 is damaged"))
        );
        // Listing goes on, and says so.
        let s = &list(&store, &ListFilter::default()).unwrap()[0];
        assert_eq!((s.state.as_str(), s.events), ("damaged", 1));

        for garbage in [&b"\xff\xfe\n"[..], b"{}\n", b"null\n", b"\n"] {
            let mut bytes = good.clone();
            bytes.extend_from_slice(garbage);
            std::fs::write(&path, &bytes).unwrap();
            assert!(read(&store, &a).is_err(), "{garbage:?}");
        }
        // Bytes after the seal, even without a newline.
        let mut bytes = good.clone();
        bytes.extend_from_slice(b"{\"v\":1");
        std::fs::write(&path, &bytes).unwrap();
        assert!(
            read(&store, &a)
                .unwrap_err()
                .to_string()
                .contains("follow the seal")
        );
    }

    #[tokio::test]
    async fn a_deleted_record_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let r = recorder(dir.path());
        let a = sid(1);
        r.open(&a, start("alice", "db")).await.unwrap();
        r.close(&a, EndState::Closed, "done").await.unwrap();
        // Retention of zero deletes every ended session.
        assert_eq!(r.sweep(Duration::ZERO).await.unwrap(), 1);
        let store = r.store().as_ref();
        assert!(matches!(read(store, &a), Err(ReadError::Deleted { .. })));
        let s = &list(store, &ListFilter::default()).unwrap()[0];
        assert_eq!((s.state.as_str(), s.events), ("deleted", 3));
        r.stop();
    }

    #[tokio::test]
    async fn a_follower_gets_every_event_until_the_seal() {
        let dir = tempfile::tempdir().unwrap();
        let r = recorder(dir.path());
        let a = sid(1);
        r.open(&a, start("alice", "db")).await.unwrap();
        let mut follower = Follower::new(r.clone(), a.clone());
        let first = follower.next().await.unwrap().unwrap();
        assert_eq!(first.len(), 1);
        // The writer appends the next call only once the follower has
        // read the last one: each arrives while the follower waits.
        let (got, mut read) = tokio::sync::mpsc::unbounded_channel::<()>();
        let writer = {
            let r = r.clone();
            let a = a.clone();
            tokio::spawn(async move {
                for i in 1..=5 {
                    r.append(&a, call(i, "query")).await.unwrap();
                    read.recv().await;
                }
                r.close(&a, EndState::Closed, "done").await.unwrap();
            })
        };
        let mut seqs: Vec<u64> = first.iter().map(|l| l.event.seq).collect();
        let follow = async {
            while let Some(batch) = follower.next().await.unwrap() {
                seqs.extend(batch.iter().map(|l| l.event.seq));
                let _ = got.send(());
            }
        };
        tokio::time::timeout(Duration::from_secs(10), follow)
            .await
            .expect("the follower ends after the seal");
        writer.await.unwrap();
        // start, 5 calls, end, seal: every one, once, in order.
        assert_eq!(seqs, (0..8).collect::<Vec<u64>>());
        // A finished record: everything at once, then the end.
        let mut again = Follower::new(r.clone(), a.clone());
        assert_eq!(again.next().await.unwrap().unwrap().len(), 8);
        assert!(again.next().await.unwrap().is_none());
        // An unknown session.
        let mut none = Follower::new(r.clone(), sid(9));
        assert_eq!(none.next().await.unwrap_err(), ReadError::NotFound(sid(9)));
        r.stop();
    }

    #[tokio::test]
    async fn a_follower_ends_when_the_recorder_stops() {
        let dir = tempfile::tempdir().unwrap();
        let r = recorder(dir.path());
        let a = sid(1);
        r.open(&a, start("alice", "db")).await.unwrap();
        let mut follower = Follower::new(r.clone(), a.clone());
        assert_eq!(follower.next().await.unwrap().unwrap().len(), 1);
        let stopper = {
            let r = r.clone();
            tokio::spawn(async move {
                tokio::task::spawn_blocking(move || r.stop()).await.unwrap();
            })
        };
        let end = tokio::time::timeout(Duration::from_secs(10), follower.next())
            .await
            .expect("the follower does not hang");
        assert!(end.unwrap().is_none());
        stopper.await.unwrap();
    }
}
