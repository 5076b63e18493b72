//! Records written by the real [`Recorder`] through the real [`FileStore`],
//! verified, then damaged and verified again: recovery after a kill,
//! retention tombstones, the wording of each kind of problem, garbage, and
//! the tamper campaign the issue asks for (thousands of random changes,
//! each one found and placed).

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use mcpgate_shared::event::{DecisionEvent, DecisionKind};
use mcpgate_shared::names::SessionId;
use mcpgate_shared::record::{Body, EndState, Event, MessageEvent, Peer, Start, VerifyReport};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use regex::Regex;
use serde_json::json;

use super::format::{self, Chain};
use super::store::{INDEX_FILE, SESSIONS_DIR};
use super::verify::{Which, verify};
use super::{AuditKey, AuditPub, FileStore, RecordStore, Recorder, RecordingSection};
use crate::approval::now_ms;

// ---------------------------------------------------------------------------
// Fixtures: realistic sessions through the real writer.

fn key() -> AuditKey {
    AuditKey::from_bytes(&[7u8; 32])
}

fn config(checkpoint_events: u64) -> RecordingSection {
    RecordingSection {
        checkpoint_events,
        ..RecordingSection::default()
    }
}

fn sid(n: u32) -> SessionId {
    format!("5e55{n:04x}-0000-4000-8000-00000000{n:04x}")
        .parse()
        .expect("a valid session id")
}

fn start_of(user: &str) -> Start {
    Start {
        user: user.parse().expect("user"),
        issuer: "local".into(),
        roles: vec!["support".parse().expect("role")],
        server: "crm".parse().expect("server"),
        client_addr: "127.0.0.1:50412".into(),
        tunnel_peer: "127.0.0.1:50414".into(),
        cert_serial: "4f2a9c0e11d3b7a5".into(),
        created_at: 1_767_225_600,
    }
}

fn message(from: Peer, to: Peer, kind: &str, msg: serde_json::Value) -> MessageEvent {
    let bytes = serde_json::to_vec(&msg).expect("json").len() as u64;
    MessageEvent {
        from,
        to,
        kind: kind.into(),
        id: msg.get("id").map(|id| id.to_string()),
        method: msg
            .get("method")
            .and_then(|m| m.as_str())
            .map(str::to_owned),
        name: msg
            .pointer("/params/name")
            .and_then(|m| m.as_str())
            .map(str::to_owned),
        bytes,
        masked: BTreeMap::new(),
        msg,
    }
}

fn decision(session: &SessionId, user: &str, kind: DecisionKind, tool: &str, id: u64) -> Body {
    let mut masked = BTreeMap::new();
    if kind == DecisionKind::Mask {
        masked.insert("email".to_owned(), 1);
        masked.insert("card".to_owned(), 1);
    }
    Body::Decision {
        decision: DecisionEvent {
            at_ms: now_ms(),
            decision: kind,
            session: Some(session.clone()),
            user: user.parse().expect("user"),
            server: "crm".parse().expect("server"),
            method: Some("tools/call".into()),
            name: Some(tool.into()),
            request_id: Some(id.to_string()),
            rule: Some("support-read (policy.toml:12)".into()),
            reason: match kind {
                DecisionKind::Deny => "delete_customer is not allowed for role support".into(),
                DecisionKind::Mask => "masked 2 values".into(),
                _ => "allowed by rule support-read".into(),
            },
            approval: None,
            approvers: Vec::new(),
            masked,
        },
    }
}

/// The events of one realistic session after its start: the MCP
/// handshake, then `calls` tool calls with their decisions and (masked)
/// results; every fifth call is denied. About four events per call.
fn session_events(session: &SessionId, user: &str, calls: u64) -> Vec<Body> {
    let m = |from, to, kind, msg| Body::Message(message(from, to, kind, msg));
    let mut out = vec![
        m(
            Peer::Client,
            Peer::Upstream,
            "request",
            json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"claude-code","version":"1.0.0"}}}),
        ),
        m(
            Peer::Upstream,
            Peer::Client,
            "response",
            json!({"jsonrpc":"2.0","id":0,"result":{"protocolVersion":"2025-06-18","capabilities":{"tools":{"listChanged":false}},"serverInfo":{"name":"crm","version":"0.3.1"}}}),
        ),
        m(
            Peer::Client,
            Peer::Upstream,
            "notification",
            json!({"jsonrpc":"2.0","method":"notifications/initialized"}),
        ),
    ];
    for id in 1..=calls {
        let customer = format!("c-{}", 1000 + id * 7);
        if id % 5 == 0 {
            out.push(decision(
                session,
                user,
                DecisionKind::Deny,
                "delete_customer",
                id,
            ));
            out.push(m(
                Peer::Broker,
                Peer::Client,
                "error",
                json!({"jsonrpc":"2.0","id":id,"error":{"code":-32010,"message":"denied by policy: delete_customer is not allowed for role support"}}),
            ));
            continue;
        }
        out.push(decision(
            session,
            user,
            DecisionKind::Allow,
            "get_customer",
            id,
        ));
        // Arguments with a nested "hash" member and escapes: the trailer
        // is found as the last one, never these.
        out.push(m(
            Peer::Client,
            Peer::Upstream,
            "request",
            json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":"get_customer","arguments":{"id":customer,"fields":["name","email","card"],"hash":"\",\"hash\":\"","note":"Zoë said \"hi\"\n"}}}),
        ));
        out.push(decision(
            session,
            user,
            DecisionKind::Mask,
            "get_customer",
            id,
        ));
        let record = json!({"id":customer,"name":"Ada Lovelace","email":"[email]","card":"[card ****4242]","orders":id * 3});
        out.push(m(
            Peer::Upstream,
            Peer::Client,
            "response",
            json!({"jsonrpc":"2.0","id":id,"result":{"content":[{"type":"text","text":record.to_string()}],"structuredContent":record,"isError":false}}),
        ));
    }
    out
}

/// Records `users.len()` sessions and closes them: one after the other
/// (so index entries come in a known order), or concurrently (so group
/// commit mixes them in batches).
async fn record_sessions(
    dir: &Path,
    checkpoint_events: u64,
    users: &[&str],
    calls: u64,
    concurrent: bool,
) -> (Vec<SessionId>, AuditPub) {
    let store = Arc::new(FileStore::create(dir).expect("store"));
    let (recorder, recovered) =
        Recorder::start(store, key(), &config(checkpoint_events)).expect("recorder");
    assert_eq!(recovered, super::Recovered::default());
    let recorder = Arc::new(recorder);
    let ids: Vec<SessionId> = (0u32..).zip(users).map(|(n, _)| sid(n)).collect();
    for (id, user) in ids.iter().zip(users) {
        recorder.open(id, start_of(user)).await.expect("open");
    }
    let mut runs = tokio::task::JoinSet::new();
    for (id, user) in ids.iter().zip(users) {
        let (recorder, id, user) = (recorder.clone(), id.clone(), user.to_string());
        let run = async move {
            for body in session_events(&id, &user, calls) {
                recorder.append(&id, body).await.expect("append");
            }
            recorder
                .close(&id, EndState::Closed, "client disconnected")
                .await
                .expect("close");
        };
        if concurrent {
            runs.spawn(run);
        } else {
            run.await;
        }
    }
    while let Some(run) = runs.join_next().await {
        run.expect("a session run");
    }
    recorder.stop();
    (ids, recorder.public().clone())
}

// ---------------------------------------------------------------------------
// Records in memory, to damage copies cheaply.

/// A records directory's contents.
#[derive(Debug, Clone, PartialEq)]
struct Snapshot {
    index: Vec<u8>,
    sessions: BTreeMap<SessionId, Vec<u8>>,
}

impl Snapshot {
    fn read(dir: &Path) -> Snapshot {
        let store = FileStore::at(dir);
        let mut sessions = BTreeMap::new();
        for id in store.sessions().expect("sessions") {
            let bytes = store.read(&id).expect("read").expect("record");
            sessions.insert(id, bytes);
        }
        Snapshot {
            index: store.read_index().expect("index"),
            sessions,
        }
    }

    fn verify(self, public: &AuditPub, which: &Which) -> VerifyReport {
        verify(&MemStore::new(self), public, which)
    }

    fn file(&mut self, f: &Target) -> &mut Vec<u8> {
        match f {
            Target::Index => &mut self.index,
            Target::Session(id) => self.sessions.get_mut(id).expect("a session of the fixture"),
        }
    }
}

/// A read-only store over a [`Snapshot`]. With `first_index`, the first
/// read of the index gives that instead, as when the broker closed or
/// opened a session while verification was reading.
struct MemStore {
    now: Snapshot,
    first_index: Option<Vec<u8>>,
    reads: AtomicUsize,
}

impl MemStore {
    fn new(now: Snapshot) -> MemStore {
        MemStore {
            now,
            first_index: None,
            reads: AtomicUsize::new(0),
        }
    }

    fn racing(now: Snapshot, first_index: Vec<u8>) -> MemStore {
        MemStore {
            first_index: Some(first_index),
            ..MemStore::new(now)
        }
    }
}

impl RecordStore for MemStore {
    fn append(&self, _: &SessionId, _: &[u8]) -> io::Result<()> {
        Err(io::Error::other("read-only"))
    }
    fn append_index(&self, _: &[u8]) -> io::Result<()> {
        Err(io::Error::other("read-only"))
    }
    fn sync(&self, _: &[SessionId], _: bool) -> io::Result<()> {
        Ok(())
    }
    fn close(&self, _: &SessionId) {}
    fn read(&self, session: &SessionId) -> io::Result<Option<Vec<u8>>> {
        Ok(self.now.sessions.get(session).cloned())
    }
    fn read_index(&self) -> io::Result<Vec<u8>> {
        let first = self.reads.fetch_add(1, Ordering::Relaxed) == 0;
        Ok(match &self.first_index {
            Some(index) if first => index.clone(),
            _ => self.now.index.clone(),
        })
    }
    fn sessions(&self) -> io::Result<Vec<SessionId>> {
        Ok(self.now.sessions.keys().cloned().collect())
    }
    fn truncate(&self, _: &SessionId, _: u64) -> io::Result<()> {
        Err(io::Error::other("read-only"))
    }
    fn truncate_index(&self, _: u64) -> io::Result<()> {
        Err(io::Error::other("read-only"))
    }
    fn delete(&self, _: &SessionId) -> io::Result<()> {
        Err(io::Error::other("read-only"))
    }
    fn describe(&self) -> String {
        "memory".into()
    }
}

/// One file of a records directory.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Index,
    Session(SessionId),
}

impl Target {
    /// How problems about this file begin.
    fn prefix(&self) -> String {
        match self {
            Target::Index => "index:".into(),
            Target::Session(id) => format!("session {id}:"),
        }
    }

    /// What its lines are called in problems.
    fn noun(&self) -> &'static str {
        match self {
            Target::Index => "entry",
            Target::Session(_) => "event",
        }
    }
}

/// Each line of a log with its newline.
fn split_lines(bytes: &[u8]) -> Vec<Vec<u8>> {
    bytes
        .split_inclusive(|&b| b == b'\n')
        .map(<[u8]>::to_vec)
        .collect()
}

static EVENT_NAMES: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b(event|entry) (\d+)\b|\b(events|entries) (\d+)\.\.(\d+)\b").expect("regex")
});

/// Whether `problem` names line `seq` of this kind (`event 12`, or a span
/// `events 10..14` holding it).
fn names(problem: &str, one: &str, seq: u64) -> bool {
    EVENT_NAMES.captures_iter(problem).any(|c| {
        if let (Some(noun), Some(n)) = (c.get(1), c.get(2)) {
            noun.as_str() == one && n.as_str().parse() == Ok(seq)
        } else if let (Some(noun), Some(a), Some(b)) = (c.get(3), c.get(4), c.get(5)) {
            let singular = if noun.as_str() == "events" {
                "event"
            } else {
                "entry"
            };
            let (a, b): (u64, u64) = (
                a.as_str().parse().unwrap_or(u64::MAX),
                b.as_str().parse().unwrap_or(0),
            );
            singular == one && (a..=b).contains(&seq)
        } else {
            false
        }
    })
}

// ---------------------------------------------------------------------------
// The recorder.

#[tokio::test]
async fn a_closed_record_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let (ids, public) = record_sessions(dir.path(), 16, &["alice"], 6, false).await;
    let report = verify(&FileStore::at(dir.path()), &public, &Which::All);
    assert!(report.ok, "{report:#?}");
    assert_eq!(report.sessions, 1);
    // start, 3 handshake messages, 5 allowed calls × 4, 1 denied × 2,
    // end, seal, and a checkpoint after 16 unsigned events.
    assert_eq!(report.events, 1 + 3 + 20 + 2 + 2 + 1);
    assert!(report.notes.is_empty(), "{:?}", report.notes);
    let one = verify(
        &FileStore::at(dir.path()),
        &public,
        &Which::Session(ids[0].clone()),
    );
    assert!(one.ok, "{one:#?}");
    assert_eq!((one.sessions, one.events), (1, report.events));
    // Another key does not verify it.
    let other = AuditKey::from_bytes(&[8u8; 32]).public();
    let report = verify(&FileStore::at(dir.path()), &other, &Which::All);
    assert!(!report.ok);
    assert!(
        report
            .problems
            .contains(&"index: bad signature on entry 0".to_owned()),
        "{:?}",
        report.problems
    );
}

#[tokio::test]
async fn checkpoints_come_every_checkpoint_events() {
    let dir = tempfile::tempdir().unwrap();
    let (ids, public) = record_sessions(dir.path(), 4, &["alice"], 5, false).await;
    let bytes = FileStore::at(dir.path()).read(&ids[0]).unwrap().unwrap();
    let events: Vec<(Event, Option<[u8; 64]>, format::Hash)> = split_lines(&bytes)
        .iter()
        .map(|l| {
            let split = format::split(&l[..l.len() - 1]).unwrap();
            (
                serde_json::from_slice(&split.body).unwrap(),
                split.sig,
                split.hash,
            )
        })
        .collect();
    let checkpoints: Vec<u64> = events
        .iter()
        .filter(|(e, ..)| matches!(e.body, Body::Checkpoint { .. }))
        .map(|(e, ..)| e.seq)
        .collect();
    // Four unsigned events, then a checkpoint: seqs 4, 9, 14, ...
    let expected: Vec<u64> = (0..checkpoints.len() as u64).map(|k| 4 + 5 * k).collect();
    assert_eq!(checkpoints, expected);
    assert!(checkpoints.len() >= 4, "{checkpoints:?}");
    for (e, sig, hash) in &events {
        match e.body {
            Body::Checkpoint { events } | Body::Seal { events } => {
                assert_eq!(events, e.seq);
                assert!(public.verify(hash, sig.as_ref().unwrap()));
            }
            _ => assert!(sig.is_none()),
        }
    }
    let last = &events[events.len() - 1].0;
    assert!(matches!(last.body, Body::Seal { .. }));
}

#[tokio::test]
async fn a_killed_broker_recovers_the_session_as_aborted_and_it_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let id = sid(9);
    let store = Arc::new(FileStore::create(dir.path()).unwrap());
    let (recorder, _) = Recorder::start(store, key(), &config(4)).unwrap();
    recorder.open(&id, start_of("alice")).await.unwrap();
    for body in session_events(&id, "alice", 2) {
        recorder.append(&id, body).await.unwrap();
    }
    let public = recorder.public().clone();
    // The broker dies: no close, and the last write was cut short.
    recorder.stop();
    drop(recorder);
    let path = FileStore::at(dir.path()).session_path(&id);
    let torn = br#"{"v":1,"session":"5e550009-0000-4000-8000-000000000009","seq":1"#;
    let mut bytes = std::fs::read(&path).unwrap();
    let acknowledged = bytes.len();
    bytes.extend_from_slice(torn);
    std::fs::write(&path, &bytes).unwrap();

    // Before the restart: a live session, nothing wrong, two notes.
    let report = verify(&FileStore::at(dir.path()), &public, &Which::All);
    assert!(report.ok, "{report:#?}");
    let notes = report.notes.join("\n");
    assert!(notes.contains("ends in a partial line"), "{notes}");
    assert!(notes.contains("live: "), "{notes}");

    let store = Arc::new(FileStore::create(dir.path()).unwrap());
    let (recorder, recovered) = Recorder::start(store, key(), &config(4)).unwrap();
    recorder.stop();
    assert_eq!(recovered.aborted, vec![id.clone()]);
    assert_eq!(recovered.torn_bytes, torn.len() as u64);
    let bytes = std::fs::read(&path).unwrap();
    let lines = split_lines(&bytes[acknowledged..]);
    assert_eq!(lines.len(), 2, "an aborted end and a seal");
    assert!(lines[0].windows(9).any(|w| w == b"\"aborted\""));

    let report = verify(&FileStore::at(dir.path()), &public, &Which::All);
    assert!(report.ok, "{report:#?}");
    assert_eq!(report.notes.len(), 1, "{:?}", report.notes);
    assert!(report.notes[0].contains("aborted"), "{:?}", report.notes);
}

#[tokio::test]
async fn an_open_record_too_damaged_to_seal_is_left_as_evidence_and_the_broker_starts() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (sid(11), sid(12));
    let store = Arc::new(FileStore::create(dir.path()).unwrap());
    let (recorder, _) = Recorder::start(store, key(), &config(4)).unwrap();
    for id in [&a, &b] {
        recorder.open(id, start_of("alice")).await.unwrap();
        for body in session_events(id, "alice", 1) {
            recorder.append(id, body).await.unwrap();
        }
    }
    let public = recorder.public().clone();
    recorder.stop();
    drop(recorder);
    // Someone overwrote the last line of one open record with garbage.
    let path = FileStore::at(dir.path()).session_path(&a);
    let mut lines = split_lines(&std::fs::read(&path).unwrap());
    *lines.last_mut().unwrap() = b"not a record line\n".to_vec();
    std::fs::write(&path, lines.concat()).unwrap();
    let damaged = std::fs::read(&path).unwrap();

    let store = Arc::new(FileStore::create(dir.path()).unwrap());
    let (recorder, recovered) = Recorder::start(store, key(), &config(4)).unwrap();
    assert_eq!(recovered.aborted, vec![b.clone()]);
    assert_eq!(recovered.damaged, vec![a.clone()]);
    // It still records new sessions, and the damaged record is untouched.
    let c = sid(13);
    recorder.open(&c, start_of("bob")).await.unwrap();
    recorder
        .close(&c, EndState::Closed, "client closed")
        .await
        .unwrap();
    recorder.stop();
    assert_eq!(std::fs::read(&path).unwrap(), damaged);
    let report = verify(&FileStore::at(dir.path()), &public, &Which::All);
    assert!(!report.ok);
    assert!(
        report.problems.iter().all(|p| p.contains(a.as_str())),
        "{:?}",
        report.problems
    );
}

#[tokio::test]
async fn unsigned_events_are_signed_after_checkpoint_interval_without_more_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let id = sid(14);
    let config = RecordingSection {
        checkpoint_events: 1_000_000,
        checkpoint_interval: Duration::from_millis(100),
        ..RecordingSection::default()
    };
    let store = Arc::new(FileStore::create(dir.path()).unwrap());
    let (recorder, _) = Recorder::start(store, key(), &config).unwrap();
    let mut batches = recorder.subscribe();
    recorder.open(&id, start_of("alice")).await.unwrap();
    let path = FileStore::at(dir.path()).session_path(&id);
    let checkpointed = || {
        split_lines(&std::fs::read(&path).unwrap())
            .iter()
            .any(|l| l.windows(22).any(|w| w == br#""type":"checkpoint","e"#))
    };
    assert!(!checkpointed());
    // The writer wakes by itself when the interval is up: each batch it
    // writes bumps the watch, so this waits for writes, not for time.
    tokio::time::timeout(Duration::from_secs(10), async {
        while !checkpointed() {
            batches.changed().await.unwrap();
        }
    })
    .await
    .expect("a checkpoint within the interval");
    recorder.stop();
    let report = verify(&FileStore::at(dir.path()), recorder.public(), &Which::All);
    assert!(report.ok, "{report:#?}");
}

#[tokio::test]
async fn a_session_killed_before_its_start_was_written_verifies_as_aborted() {
    let dir = tempfile::tempdir().unwrap();
    let id = sid(3);
    let store = Arc::new(FileStore::create(dir.path()).unwrap());
    let (recorder, _) = Recorder::start(store, key(), &config(4)).unwrap();
    recorder.open(&id, start_of("bob")).await.unwrap();
    let public = recorder.public().clone();
    recorder.stop();
    drop(recorder);
    // Only part of the start line reached the disk.
    let path = FileStore::at(dir.path()).session_path(&id);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();

    let store = Arc::new(FileStore::create(dir.path()).unwrap());
    let (recorder, recovered) = Recorder::start(store, key(), &config(4)).unwrap();
    recorder.stop();
    assert_eq!(recovered.aborted, vec![id.clone()]);
    let report = verify(&FileStore::at(dir.path()), &public, &Which::Session(id));
    assert!(report.ok, "{report:#?}");
    assert_eq!(
        report.events, 2,
        "event 0 is the aborted end, event 1 the seal"
    );
}

/// A crash after a record's seal reached the disk but before the index
/// closed it: the restart closes it in the index from the seal that is
/// there, and appends nothing after the seal (which no verifier could
/// accept).
#[tokio::test]
async fn a_seal_the_index_never_listed_is_closed_from_the_seal_at_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (_ids, public) = record_sessions(dir.path(), 16, &["alice"], 2, false).await;
    // The index close never reached the disk.
    let path = dir.path().join(INDEX_FILE);
    let mut lines = split_lines(&std::fs::read(&path).unwrap());
    lines.pop();
    std::fs::write(&path, lines.concat()).unwrap();
    let report = verify(&FileStore::at(dir.path()), &public, &Which::All);
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert!(
        report.problems[0]
            .ends_with("is sealed (seal at event 13) but the index does not close it")
    );

    let store = Arc::new(FileStore::create(dir.path()).unwrap());
    let (recorder, _) = Recorder::start(store, key(), &config(16)).unwrap();
    recorder.stop();
    let report = verify(&FileStore::at(dir.path()), &public, &Which::All);
    assert!(report.ok, "{:#?}", report.problems);
}

#[tokio::test]
async fn retention_leaves_a_signed_tombstone_that_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let (ids, public) = record_sessions(dir.path(), 8, &["alice", "bob"], 2, false).await;
    let store = Arc::new(FileStore::create(dir.path()).unwrap());
    let (recorder, _) = Recorder::start(store, key(), &config(8)).unwrap();
    // Retention of zero: every ended session is due.
    assert_eq!(recorder.sweep(Duration::ZERO).await.unwrap(), 2);
    recorder.stop();
    drop(recorder);
    assert!(FileStore::at(dir.path()).read(&ids[0]).unwrap().is_none());

    let report = verify(&FileStore::at(dir.path()), &public, &Which::All);
    assert!(report.ok, "{report:#?}");
    assert_eq!(report.sessions, 2);
    assert_eq!(report.notes.len(), 2, "{:?}", report.notes);
    assert!(
        report.notes[0].contains("deleted (index entry"),
        "{:?}",
        report.notes
    );
    assert!(report.notes[0].contains("retention"), "{:?}", report.notes);

    // Without its tombstone, the deleted record is missing.
    let mut snap = Snapshot::read(dir.path());
    let mut lines = split_lines(&snap.index);
    let tombstone = lines.pop().unwrap();
    let swept = index_session(&tombstone);
    assert!(ids.contains(&swept));
    snap.index = lines.concat();
    let report = snap.verify(&public, &Which::All);
    assert!(!report.ok);
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.starts_with(&format!("session {swept}: its record is missing"))),
        "{:?}",
        report.problems
    );
}

#[tokio::test]
async fn a_live_session_verifies_with_a_note_on_its_unsigned_tail() {
    let dir = tempfile::tempdir().unwrap();
    let id = sid(1);
    let store = Arc::new(FileStore::create(dir.path()).unwrap());
    let (recorder, _) = Recorder::start(store, key(), &config(16)).unwrap();
    recorder.open(&id, start_of("alice")).await.unwrap();
    for body in session_events(&id, "alice", 5).into_iter().take(20) {
        recorder.append(&id, body).await.unwrap();
    }
    let report = verify(&FileStore::at(dir.path()), recorder.public(), &Which::All);
    recorder.stop();
    assert!(report.ok, "{report:#?}");
    assert_eq!(report.events, 22);
    assert_eq!(
        report.notes,
        vec![format!(
            "session {id}: live: 22 events so far, the last 5 (after checkpoint at event 16) not signed yet"
        )]
    );
}

#[tokio::test]
async fn records_ahead_of_an_index_read_earlier_are_checked_against_a_newer_one() {
    let dir = tempfile::tempdir().unwrap();
    let (ids, public) = record_sessions(dir.path(), 8, &["alice", "bob"], 2, false).await;
    let now = Snapshot::read(dir.path());
    let lines = split_lines(&now.index);
    // Index entries: open a, open b, close a, close b.
    for (behind, which) in [
        (3, Which::All),                     // b closed meanwhile
        (2, Which::All),                     // a and b closed meanwhile
        (1, Which::All),                     // b opened and both closed
        (3, Which::Session(ids[1].clone())), // as `mcpgate audit verify` sees it
        (2, Which::Session(ids[0].clone())),
    ] {
        let store = MemStore::racing(now.clone(), lines[..behind].concat());
        let report = verify(&store, &public, &which);
        assert!(report.ok, "{behind} {which:?}: {report:#?}");
    }
    // A torn last line read mid-write is read again.
    let mut torn = lines[..3].concat();
    torn.extend_from_slice(&lines[3][..40]);
    let store = MemStore::racing(now.clone(), torn);
    assert!(verify(&store, &public, &Which::All).ok);

    // An index that was cut stays cut: reading it again changes nothing.
    let mut cut = now.clone();
    cut.index = lines[..3].concat();
    let report = cut.verify(&public, &Which::All);
    assert_eq!(
        report.problems,
        vec![format!(
            "session {}: the record is sealed (seal at event 14) but the index does not close it",
            ids[1]
        )]
    );
    // A newer index that does not extend the first is not taken.
    let mut other = lines.clone();
    other.swap(2, 3);
    let store = MemStore::racing(
        Snapshot {
            index: other.concat(),
            ..now.clone()
        },
        lines[..3].concat(),
    );
    assert!(!verify(&store, &public, &Which::All).ok);
}

// ---------------------------------------------------------------------------
// What each kind of change is called.

/// One closed session with checkpoints at events 4, 9, 14, … and a few
/// calls: 27 events, the seal at event 26.
async fn small_fixture() -> (tempfile::TempDir, SessionId, SessionId, AuditPub, Snapshot) {
    let dir = tempfile::tempdir().unwrap();
    let (ids, public) = record_sessions(dir.path(), 4, &["alice", "bob"], 4, false).await;
    let snap = Snapshot::read(dir.path());
    (dir, ids[0].clone(), ids[1].clone(), public, snap)
}

fn edit_lines(snap: &mut Snapshot, t: &Target, f: impl FnOnce(&mut Vec<Vec<u8>>)) {
    let file = snap.file(t);
    let mut lines = split_lines(file);
    f(&mut lines);
    *file = lines.concat();
}

#[tokio::test]
async fn each_kind_of_change_is_named_where_it_is() {
    let (_dir, a, b, public, base) = small_fixture().await;
    let ta = Target::Session(a.clone());
    let lines_a = split_lines(&base.sessions[&a]).len();
    assert_eq!(lines_a, 27);
    let check = |snap: Snapshot, expected: &[&str]| {
        let report = snap.verify(&public, &Which::All);
        let expected: Vec<String> = expected
            .iter()
            .map(|e| e.replace("{a}", a.as_str()).replace("{b}", b.as_str()))
            .collect();
        assert!(!report.ok);
        assert_eq!(report.problems, expected);
    };

    // One changed byte in the body of event 5.
    let mut s = base.clone();
    edit_lines(&mut s, &ta, |l| l[5][40] ^= 0x01);
    check(
        s,
        &["session {a}: event 5 was modified: its content does not match its hash"],
    );

    // A byte of event 7's hash made uppercase-looking garbage.
    let mut s = base.clone();
    edit_lines(&mut s, &ta, |l| {
        let n = l[7].len();
        l[7][n - 5] = b'X';
    });
    check(
        s,
        &["session {a}: event 7 is damaged: it has a malformed hash trailer"],
    );

    // Event 8 deleted; events 10..12 deleted.
    let mut s = base.clone();
    edit_lines(&mut s, &ta, |l| {
        l.remove(8);
    });
    check(s, &["session {a}: event 8 is missing"]);
    let mut s = base.clone();
    edit_lines(&mut s, &ta, |l| {
        l.drain(10..13);
    });
    check(s, &["session {a}: events 10..12 are missing"]);

    // Events 3 and 4 swapped; events 2 and 11 swapped.
    let mut s = base.clone();
    edit_lines(&mut s, &ta, |l| l.swap(3, 4));
    check(
        s,
        &["session {a}: event 4 is out of order: it comes before event 3"],
    );
    let mut s = base.clone();
    edit_lines(&mut s, &ta, |l| l.swap(2, 11));
    check(
        s,
        &[
            "session {a}: event 11 is out of order: it comes before event 2",
            "session {a}: event 2 is out of order: it comes later, after event 10",
        ],
    );

    // Event 2 copied after event 6.
    let mut s = base.clone();
    edit_lines(&mut s, &ta, |l| {
        let copy = l[2].clone();
        l.insert(7, copy);
    });
    check(
        s,
        &["session {a}: event 2 appears twice: again after event 6"],
    );

    // A line of session b slipped in after event 3.
    let mut s = base.clone();
    let line = split_lines(&base.sessions[&b])[5].clone();
    edit_lines(&mut s, &ta, |l| l.insert(4, line));
    check(
        s,
        &["session {a}: a line of session {b} (its event 5) is inserted after event 3"],
    );

    // A bad signature on the checkpoint at event 9.
    let mut s = base.clone();
    edit_lines(&mut s, &ta, |l| {
        let n = l[9].len();
        let c = &mut l[9][n - 10];
        *c = if *c == b'0' { b'1' } else { b'0' };
    });
    check(s, &["session {a}: bad signature on checkpoint at event 9"]);

    // Cut after the checkpoint at event 14 (plus two more events).
    let mut s = base.clone();
    edit_lines(&mut s, &ta, |l| l.truncate(17));
    check(
        s,
        &[
            "session {a}: truncated after checkpoint at event 14: the record ends at event 16 without a seal, the index closed it (entry 2) with 27 events (events 17..26 are missing)",
        ],
    );

    // Something after the seal.
    let mut s = base.clone();
    edit_lines(&mut s, &ta, |l| {
        let copy = l[3].clone();
        l.push(copy);
    });
    check(s, &["session {a}: a line follows the seal at event 26"]);

    // The two records swapped.
    let mut s = base.clone();
    let (ra, rb) = (s.sessions[&a].clone(), s.sessions[&b].clone());
    s.sessions.insert(a.clone(), rb);
    s.sessions.insert(b.clone(), ra);
    check(
        s,
        &[
            "session {a}: its record holds session {b}'s events, not its own (a record of another session)",
            "session {b}: its record holds session {a}'s events, not its own (a record of another session)",
        ],
    );

    // A record deleted; a record not in the index.
    let mut s = base.clone();
    s.sessions.remove(&a);
    check(
        s,
        &["session {a}: its record is missing (the index closed it at entry 2 with 27 events)"],
    );
    let mut s = base.clone();
    let stray = sid(77);
    let record = s.sessions[&a].clone();
    s.sessions.insert(stray.clone(), record);
    let report = s.verify(&public, &Which::All);
    assert_eq!(
        report.problems,
        vec![
            format!("session {stray}: it has a record but is not in the index"),
            format!(
                "session {stray}: its record holds session {a}'s events, not its own (a record of another session)"
            )
        ]
    );

    // Index entry 1 deleted, and entries 0 and 1 swapped.
    let mut s = base.clone();
    edit_lines(&mut s, &Target::Index, |l| {
        l.remove(1);
    });
    check(
        s,
        &[
            "index: entry 1 is missing",
            "session {b}: the index closes it (entry 3) without opening it",
        ],
    );
    let mut s = base.clone();
    edit_lines(&mut s, &Target::Index, |l| l.swap(0, 1));
    check(
        s,
        &["index: entry 1 is out of order: it comes before entry 0"],
    );
}

#[tokio::test]
async fn a_closed_record_cut_on_a_line_boundary_is_truncated_not_live() {
    let (_dir, a, _b, public, base) = small_fixture().await;
    for keep in 0..27 {
        let mut s = base.clone();
        edit_lines(&mut s, &Target::Session(a.clone()), |l| l.truncate(keep));
        let report = s.verify(&public, &Which::Session(a.clone()));
        assert!(!report.ok, "kept {keep}: {report:#?}");
        let p = report.problems.join("\n");
        if keep == 0 {
            assert!(p.contains("its record is empty"), "{p}");
        } else {
            assert!(p.contains("truncated "), "{p}");
        }
    }
}

// ---------------------------------------------------------------------------
// Garbage: a problem, never a panic.

#[tokio::test]
async fn garbage_gives_problems_never_a_panic() {
    let (_dir, a, _b, public, base) = small_fixture().await;
    let mut rng = StdRng::seed_from_u64(7);
    let key = key();
    // Lines an attacker can make self-consistent (a right hash) with
    // hostile values: seqs at the ends of u64, huge gaps, bad prevs.
    let forged = |seq: u64, prev: &str, body: &str| {
        let raw =
            format!(r#"{{"v":1,"session":"{a}","seq":{seq},"at_ms":1,"prev":"{prev}",{body}}}"#);
        let hash = format::hash_body(Chain::Session, raw.as_bytes());
        let sig = key.sign(&hash);
        format::line(raw.as_bytes(), &hash, Some(&sig))
    };
    let zero = "0".repeat(64);
    let genesis = format::genesis(a.as_str()).hex();
    let mut garbage: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"\n\n\n".to_vec(),
        b"{}\n".to_vec(),
        b"null\n".to_vec(),
        b"{\"hash\":\"\"}\n".to_vec(),
        vec![0xff; 300],
        forged(
            u64::MAX,
            &zero,
            r#""type":"checkpoint","events":18446744073709551615"#,
        ),
        [
            forged(0, &genesis, r#""type":"seal","events":0"#),
            forged(u64::MAX, &zero, r#""type":"seal","events":1"#),
        ]
        .concat(),
        [
            forged(u64::MAX - 1, &zero, r#""type":"checkpoint","events":0"#),
            forged(u64::MAX, &zero, r#""type":"checkpoint","events":0"#),
            forged(3, &zero, r#""type":"end","state":"closed","reason":"x""#),
            forged(1, &zero, r#""type":"checkpoint","events":7"#),
        ]
        .concat(),
        forged(0, "zz", r#""type":"checkpoint","events":0"#),
        forged(0, &genesis, r#""type":"nope""#),
    ];
    for _ in 0..200 {
        let n = rng.random_range(0..400);
        let mut g: Vec<u8> = (0..n).map(|_| rng.random::<u8>()).collect();
        if rng.random_bool(0.5) {
            // Mostly JSON-looking bytes.
            for b in &mut g {
                *b = b"{}\":,0123456789abcdef\n hashsigseqprev"[usize::from(*b) % 37];
            }
        }
        garbage.push(g);
    }
    for g in &garbage {
        for target in [Target::Session(a.clone()), Target::Index] {
            let mut s = base.clone();
            *s.file(&target) = g.clone();
            let report = s.verify(&public, &Which::All);
            assert!(
                !report.ok,
                "{:?} as {target:?} verified",
                String::from_utf8_lossy(g)
            );
            // Appended to a good record, too.
            let mut s = base.clone();
            s.file(&target).extend_from_slice(g);
            if !g.is_empty() {
                assert!(!s.verify(&public, &Which::All).ok);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The tamper campaign.

/// How many of each change the campaign made (all found, all placed).
#[derive(Debug, Default)]
struct Tally {
    byte_flips: usize,
    hex_digits: usize,
    deletions: usize,
    insertions: usize,
    swaps: usize,
    truncations: usize,
    whole_files: usize,
}

impl Tally {
    fn total(&self) -> usize {
        self.byte_flips
            + self.hex_digits
            + self.deletions
            + self.insertions
            + self.swaps
            + self.truncations
            + self.whole_files
    }
}

/// What a report's problems must show about a change.
type Placed = Box<dyn Fn(&[String]) -> bool + Send>;

/// One changed copy to verify, and what its report must name.
struct Case {
    n: usize,
    what: String,
    snap: Snapshot,
    which: Which,
    placed: Placed,
}

/// Makes the changes on the test's thread and hands them to workers.
struct Campaign<'a> {
    base: &'a Snapshot,
    targets: Vec<Target>,
    ids: &'a [SessionId],
    cases: std::sync::mpsc::SyncSender<Case>,
    made: std::cell::Cell<usize>,
}

/// Verifies changed copies; shared by the workers.
struct Checker<'a> {
    public: &'a AuditPub,
    seed: u64,
    checked: AtomicUsize,
    checked_all: AtomicUsize,
    failed: AtomicUsize,
    skipped: AtomicUsize,
}

impl Checker<'_> {
    /// Verifies a changed copy and checks it fails with a problem that
    /// names the place. Every sixteenth is verified with `Which::All` too,
    /// which must report all that `Which::Session` did.
    fn check(&self, case: Case) {
        let Case {
            n,
            what,
            snap,
            which,
            placed,
        } = case;
        let all = (which != Which::All && n % 16 == 0).then(|| snap.clone());
        let report = snap.verify(self.public, &which);
        assert!(
            !report.ok && !report.problems.is_empty(),
            "seed {}: {what}: verification passed: {report:#?}",
            self.seed
        );
        assert!(
            placed(&report.problems),
            "seed {}: {what}: no problem names the place: {:#?}",
            self.seed,
            report.problems
        );
        if let Some(all) = all {
            let everything = all.verify(self.public, &Which::All);
            assert!(!everything.ok);
            for p in &report.problems {
                assert!(
                    everything.problems.contains(p),
                    "seed {}: {what}: --all does not report {p:?}: {:#?}",
                    self.seed,
                    everything.problems
                );
            }
            self.checked_all.fetch_add(1, Ordering::Relaxed);
        }
        self.checked.fetch_add(1, Ordering::Relaxed);
    }
}

impl Campaign<'_> {
    /// What to verify after changing `t`: its session (its record, its
    /// index entries and the whole index chain), a third of the cost of
    /// verifying everything in a debug build. `Which::All` runs the same
    /// checks on the same store for every session, so it reports all of
    /// that and more; the checker confirms it on a sample.
    fn scope(&self, t: &Target) -> Which {
        match t {
            Target::Session(id) => Which::Session(id.clone()),
            Target::Index => Which::Session(self.ids[0].clone()),
        }
    }

    /// Queues a changed copy: verification must fail with a problem that
    /// `placed` accepts.
    fn expect(
        &self,
        what: String,
        snap: Snapshot,
        which: Which,
        placed: impl Fn(&[String]) -> bool + Send + 'static,
    ) {
        assert_ne!(&snap, self.base, "{what}: the change changed nothing");
        let n = self.made.get();
        self.made.set(n + 1);
        let case = Case {
            n,
            what,
            snap,
            which,
            placed: Box::new(placed),
        };
        // A worker that panicked has dropped nothing: the others go on,
        // and the scope reports the panic when it ends.
        let _ = self.cases.send(case);
    }

    fn lines(&self, t: &Target) -> Vec<Vec<u8>> {
        let mut s = self.base.clone();
        split_lines(s.file(t))
    }

    fn pick<'t>(&'t self, rng: &mut StdRng) -> &'t Target {
        &self.targets[rng.random_range(0..self.targets.len())]
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tamper_campaign_every_change_is_found_and_named() {
    let seed: u64 = std::env::var("MCPGATE_TAMPER_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_260_601);
    let dir = tempfile::tempdir().unwrap();
    let (ids, public) = record_sessions(dir.path(), 16, &["alice", "bob", "carol"], 15, true).await;
    let base = Snapshot::read(dir.path());
    assert!(dir.path().join(INDEX_FILE).is_file());
    assert!(dir.path().join(SESSIONS_DIR).is_dir());

    // The untouched record passes.
    let report = base.clone().verify(&public, &Which::All);
    assert!(report.ok, "{report:#?}");
    assert_eq!(report.sessions, 3);
    let events = report.events;
    for id in &ids {
        assert!(base.clone().verify(&public, &Which::Session(id.clone())).ok);
    }

    let mut targets: Vec<Target> = ids.iter().cloned().map(Target::Session).collect();
    targets.push(Target::Index);
    let checker = Checker {
        public: &public,
        seed,
        checked: AtomicUsize::new(0),
        checked_all: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        skipped: AtomicUsize::new(0),
    };
    let started = std::time::Instant::now();
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 4));
    let (tx, rx) = std::sync::mpsc::sync_channel::<Case>(4 * workers);
    let rx = std::sync::Mutex::new(rx);
    let mut tally = Tally::default();
    let index_lines = split_lines(&base.index);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                // A failed case is reported (the panic hook prints it) and
                // counted; the worker goes on draining so the queue never
                // blocks the thread making changes. After a few failures
                // the rest are only counted.
                while let Ok(case) = {
                    let rx = rx.lock().unwrap_or_else(|p| p.into_inner());
                    rx.recv()
                } {
                    if checker.failed.load(Ordering::Relaxed) >= 5 {
                        checker.skipped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    let check = std::panic::AssertUnwindSafe(|| checker.check(case));
                    if std::panic::catch_unwind(check).is_err() {
                        checker.failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        let c = Campaign {
            base: &base,
            targets,
            ids: &ids,
            cases: tx,
            made: Default::default(),
        };
        make_changes(&c, seed, &mut tally);
    });

    let failed = checker.failed.load(Ordering::Relaxed);
    assert_eq!(
        failed,
        0,
        "seed {seed}: {failed} of {} changes were not found or not placed (each printed above)",
        tally.total()
    );
    assert_eq!(checker.checked.load(Ordering::Relaxed), tally.total());
    eprintln!(
        "tamper campaign (seed {seed}, {} sessions, {events} events, index of {} entries): \
         {} changes, every one failed verification and was named where it was \
         ({} of them also checked with --all): \
         {} single-byte changes, {} hex digits changed in hashes and signatures, {} line deletions, {} insertions, {} swaps, \
         {} truncations, {} whole-file deletions/swaps/replacements; {:.1?}",
        ids.len(),
        index_lines.len(),
        tally.total(),
        checker.checked_all.load(Ordering::Relaxed),
        tally.byte_flips,
        tally.hex_digits,
        tally.deletions,
        tally.insertions,
        tally.swaps,
        tally.truncations,
        tally.whole_files,
        started.elapsed()
    );
    assert!(tally.total() >= 3000);
}

/// Every change of the campaign, queued on `c`.
fn make_changes(c: &Campaign<'_>, seed: u64, tally: &mut Tally) {
    let (base, ids) = (c.base, c.ids);
    let mut rng = StdRng::seed_from_u64(seed);

    // Single changed bytes at random offsets of random files.
    for round in 0..2000 {
        let t = c.pick(&mut rng).clone();
        let mut s = base.clone();
        let file = s.file(&t);
        let at = rng.random_range(0..file.len());
        let x: u8 = rng.random_range(1..=255);
        file[at] ^= x;
        let line = file[..at].iter().filter(|&&b| b == b'\n').count() as u64;
        let (one, prefix) = (t.noun(), t.prefix());
        let what = format!("flip #{round}: byte {at} of {t:?} ^ {x:#04x} (line {line})");
        c.expect(
            what,
            s,
            c.scope(&t),
            any(move |p| p.starts_with(&prefix) && names(p, one, line)),
        );
        tally.byte_flips += 1;
    }

    // One hex digit of a hash, a prev or a signature changed into another
    // lowercase hex digit, so the line still parses: half of them in
    // signed lines (checkpoints, seals, index entries).
    for round in 0..300 {
        let t = c.pick(&mut rng).clone();
        let lines = c.lines(&t);
        let signed: Vec<usize> = (0..lines.len())
            .filter(|&j| memchr::memmem::find(&lines[j], SIG_MEMBER).is_some())
            .collect();
        let j = if round % 2 == 0 {
            signed[rng.random_range(0..signed.len())]
        } else {
            rng.random_range(0..lines.len())
        };
        let fields = hex_fields(&lines[j]);
        let (start, len) = fields[rng.random_range(0..fields.len())];
        let at = start + rng.random_range(0..len);
        let old = lines[j][at];
        let digit = loop {
            let d = b"0123456789abcdef"[rng.random_range(0..16)];
            if d != old {
                break d;
            }
        };
        let mut s = base.clone();
        edit_lines(&mut s, &t, |l| l[j][at] = digit);
        let (one, prefix) = (t.noun(), t.prefix());
        let what = format!(
            "hex digit #{round}: byte {at} of line {j} of {t:?}: {} -> {}",
            old as char, digit as char
        );
        c.expect(
            what,
            s,
            c.scope(&t),
            any(move |p| p.starts_with(&prefix) && names(p, one, j as u64)),
        );
        tally.hex_digits += 1;
    }

    // Deleted lines: 200 at random in the records, and every index line.
    let index_lines = c.lines(&Target::Index);
    for round in 0..200 + index_lines.len() {
        let t = if round < 200 {
            Target::Session(ids[rng.random_range(0..ids.len())].clone())
        } else {
            Target::Index
        };
        let lines = c.lines(&t);
        let j = if round < 200 {
            rng.random_range(0..lines.len())
        } else {
            round - 200
        };
        let mut s = base.clone();
        edit_lines(&mut s, &t, |l| {
            l.remove(j);
        });
        let (one, prefix) = (t.noun(), t.prefix());
        let what = format!("deletion #{round}: line {j} of {t:?}");
        // The index's last entry is only missed by its session.
        let (which, about) = match t {
            Target::Index => (
                Which::All,
                Some(format!("session {}:", index_session(&lines[j]))),
            ),
            _ => (c.scope(&t), None),
        };
        c.expect(
            what,
            s,
            which,
            any(move |p| {
                (p.starts_with(&prefix) && names(p, one, j as u64))
                    || about.as_ref().is_some_and(|a| p.starts_with(a))
            }),
        );
        tally.deletions += 1;
    }

    // Inserted lines: a copy of a line of the same file (a duplicate) or
    // of another file (another session's event, an index entry).
    for round in 0..200 {
        let from = c.pick(&mut rng).clone();
        let to = if rng.random_bool(0.5) {
            from.clone()
        } else {
            c.pick(&mut rng).clone()
        };
        let source = c.lines(&from);
        let i = rng.random_range(0..source.len());
        let at = rng.random_range(0..=c.lines(&to).len());
        let mut s = base.clone();
        let line = source[i].clone();
        edit_lines(&mut s, &to, |l| l.insert(at, line));
        let (one, prefix) = (to.noun(), to.prefix());
        let what = format!("insertion #{round}: line {i} of {from:?} before line {at} of {to:?}");
        // Named by the lines around it, or (a copy) by the line copied.
        let mut places = vec![at as u64];
        places.extend((at as u64).checked_sub(1));
        if from == to {
            places.push(i as u64);
        }
        c.expect(
            what,
            s,
            c.scope(&to),
            any(move |p| p.starts_with(&prefix) && places.iter().any(|&k| names(p, one, k))),
        );
        tally.insertions += 1;
    }

    // Swapped lines, adjacent or distant.
    for round in 0..200 {
        let t = c.pick(&mut rng).clone();
        let n = c.lines(&t).len();
        let a = rng.random_range(0..n - 1);
        let b = if rng.random_bool(0.5) {
            a + 1
        } else {
            rng.random_range(a + 1..n)
        };
        let mut s = base.clone();
        edit_lines(&mut s, &t, |l| l.swap(a, b));
        let (one, prefix) = (t.noun(), t.prefix());
        let what = format!("swap #{round}: lines {a} and {b} of {t:?}");
        c.expect(
            what,
            s,
            c.scope(&t),
            any(move |p| {
                p.starts_with(&prefix) && (names(p, one, a as u64) || names(p, one, b as u64))
            }),
        );
        tally.swaps += 1;
    }

    // Truncations at random offsets, half of them on line boundaries.
    for round in 0..100 {
        let t = c.pick(&mut rng).clone();
        let mut s = base.clone();
        let file = s.file(&t);
        let len = if rng.random_bool(0.5) {
            let starts: Vec<usize> = std::iter::once(0)
                .chain(
                    file.iter()
                        .enumerate()
                        .filter(|&(_, &b)| b == b'\n')
                        .map(|(i, _)| i + 1),
                )
                .filter(|&i| i < file.len())
                .collect();
            starts[rng.random_range(0..starts.len())]
        } else {
            rng.random_range(0..file.len())
        };
        file.truncate(len);
        let prefix = t.prefix();
        // Cutting the index's tail is named by the index, or by the
        // sessions whose entries were cut.
        let (which, cut) = match t {
            Target::Index => {
                let mut kept = 0;
                let cut: Vec<String> = c
                    .lines(&Target::Index)
                    .iter()
                    .filter(|l| {
                        kept += l.len();
                        kept > len
                    })
                    .map(|l| format!("session {}:", index_session(l)))
                    .collect();
                (Which::All, cut)
            }
            _ => (c.scope(&t), Vec::new()),
        };
        let what = format!("truncation #{round}: {t:?} cut to {len} bytes");
        c.expect(
            what,
            s,
            which,
            any(move |p| p.starts_with(&prefix) || cut.iter().any(|a| p.starts_with(a))),
        );
        tally.truncations += 1;
    }

    // Whole files: each record deleted, the index emptied, each pair of
    // records swapped, a record replaced by a copy of another.
    for id in ids {
        let mut s = base.clone();
        s.sessions.remove(id);
        let prefix = format!("session {id}: its record is missing");
        c.expect(
            format!("record {id} deleted"),
            s,
            Which::All,
            any(move |p| p.starts_with(&prefix)),
        );
        tally.whole_files += 1;
    }
    let mut s = base.clone();
    s.index.clear();
    let unlisted = ids.len();
    c.expect("index emptied".into(), s, Which::All, move |ps| {
        ps.iter()
            .filter(|p| p.ends_with("is not in the index"))
            .count()
            == unlisted
    });
    tally.whole_files += 1;
    for (i, x) in ids.iter().enumerate() {
        for y in &ids[i + 1..] {
            let mut s = base.clone();
            let (rx, ry) = (s.sessions[x].clone(), s.sessions[y].clone());
            s.sessions.insert(x.clone(), ry);
            s.sessions.insert(y.clone(), rx.clone());
            let both = [format!("session {x}:"), format!("session {y}:")];
            c.expect(
                format!("records {x} and {y} swapped"),
                s,
                Which::All,
                move |ps| both.iter().all(|b| ps.iter().any(|p| p.starts_with(b))),
            );
            let mut s = base.clone();
            s.sessions.insert(y.clone(), rx);
            let prefix = format!("session {y}:");
            c.expect(
                format!("record {y} replaced by {x}'s"),
                s,
                Which::All,
                any(move |p| p.starts_with(&prefix)),
            );
            tally.whole_files += 2;
        }
    }
}

const SIG_MEMBER: &[u8] = br#","sig":""#;

/// Where a line's hex values are, as (start, length): its `prev`, its
/// hash and, on signed lines, its signature.
fn hex_fields(line: &[u8]) -> Vec<(usize, usize)> {
    let prev = memchr::memmem::find(line, br#""prev":""#).expect("a prev") + 8;
    let hash = memchr::memmem::rfind(line, br#","hash":""#).expect("a hash") + 9;
    let mut out = vec![(prev, 64), (hash, 64)];
    if let Some(sig) = memchr::memmem::rfind(line, SIG_MEMBER) {
        out.push((sig + SIG_MEMBER.len(), 128));
    }
    out
}

/// A check that some problem satisfies `f`.
fn any(f: impl Fn(&str) -> bool + Send + 'static) -> impl Fn(&[String]) -> bool + Send + 'static {
    move |problems| problems.iter().any(|p| f(p))
}

/// The session an index line is about.
fn index_session(line: &[u8]) -> SessionId {
    let split = format::split(&line[..line.len() - 1]).expect("a good index line");
    let entry: mcpgate_shared::record::IndexEntry =
        serde_json::from_slice(&split.body).expect("an index entry");
    entry.session
}
