//! The recorder: one writer thread that chains, signs, writes and syncs
//! every session's events, with group commit.
//!
//! Async callers ([`Recorder::append`] and friends) send an operation and
//! wait for its acknowledgement; the thread takes whatever has queued,
//! turns each operation into lines (hash, `prev`, signatures), writes each
//! touched record once, syncs them (per `[recording] fsync`) and only then
//! acknowledges the whole batch. So one sync covers every event that
//! arrived while the previous one ran: the cost of durability is shared,
//! not paid per event. Chain state (next `seq`, `prev`) lives only on this
//! thread, so events are chained in exactly the order they are written.
//!
//! A record that fails to write is broken for good: its chain in memory no
//! longer matches the disk, so later appends to it fail too (the relay
//! then fails closed), and its end is written by recovery instead, which
//! re-reads what is on disk.

use std::collections::{HashMap, HashSet};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mcpgate_shared::event::DecisionEvent;
use mcpgate_shared::names::SessionId;
use mcpgate_shared::record::{
    Body, EndState, Event, FORMAT_VERSION, IndexBody, IndexEntry, MessageEvent, Start,
};
use tokio::sync::oneshot;

use super::config::{Fsync, OnFailure, RecordingSection};
use super::format::{self, Chain, Hash};
use super::key::{AuditKey, AuditPub};
use super::store::RecordStore;
use crate::approval::now_ms;

/// Operations a batch takes at most, so acknowledgements are not held
/// back behind an unbounded queue.
const MAX_BATCH: usize = 1024;

/// Why an event was not recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("session {0} has no open record")]
    NotOpen(SessionId),
    #[error("session {0} already has a record")]
    Exists(SessionId),
    #[error("the record of session {session} cannot be written: {reason}")]
    Write { session: String, reason: String },
    #[error("the record index cannot be written: {0}")]
    Index(String),
    #[error("the recorder has stopped")]
    Stopped,
}

type Ack<T> = oneshot::Sender<Result<T, RecordError>>;

enum Op {
    Open {
        session: SessionId,
        start: Box<Start>,
        ack: Ack<()>,
    },
    Append {
        session: SessionId,
        body: Box<Body>,
        ack: Ack<u64>,
    },
    Close {
        session: SessionId,
        state: EndState,
        reason: String,
        ack: Ack<()>,
    },
    Sweep {
        retention: Duration,
        ack: Ack<usize>,
    },
}

/// The handle the broker holds; cheap to share.
pub struct Recorder {
    tx: Mutex<Option<std_mpsc::Sender<Op>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    live: Arc<Mutex<HashSet<SessionId>>>,
    on_failure: OnFailure,
    public: AuditPub,
    store: Arc<dyn RecordStore>,
    written: tokio::sync::watch::Receiver<u64>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("store", &self.store.describe())
            .finish_non_exhaustive()
    }
}

/// What recovery found at start-up.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// Sessions whose record was open and is now sealed as aborted.
    pub aborted: Vec<SessionId>,
    /// Bytes of torn last lines cut off (never acknowledged).
    pub torn_bytes: u64,
    /// Open records too damaged to seal; left for `verify` to describe.
    pub damaged: Vec<SessionId>,
}

impl Recorder {
    /// Recovers what a crash left open, then starts the writer thread.
    pub fn start(
        store: Arc<dyn RecordStore>,
        key: AuditKey,
        config: &RecordingSection,
    ) -> Result<(Recorder, Recovered), RecordError> {
        let public = key.public();
        let mut writer = Writer::new(store.clone(), key, config.clone());
        let recovered = writer.recover()?;
        let (tx, rx) = std_mpsc::channel();
        let live = Arc::new(Mutex::new(HashSet::new()));
        writer.live = live.clone();
        let (written_tx, written) = tokio::sync::watch::channel(0u64);
        writer.written = written_tx;
        let thread = std::thread::Builder::new()
            .name("mcpgate-recorder".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| RecordError::Write {
                session: "-".into(),
                reason: format!("cannot start the recorder thread: {e}"),
            })?;
        Ok((
            Recorder {
                tx: Mutex::new(Some(tx)),
                thread: Mutex::new(Some(thread)),
                live,
                on_failure: config.on_failure,
                public,
                store,
                written,
            },
            recovered,
        ))
    }

    pub fn on_failure(&self) -> OnFailure {
        self.on_failure
    }

    pub fn public(&self) -> &AuditPub {
        &self.public
    }

    pub fn store(&self) -> &Arc<dyn RecordStore> {
        &self.store
    }

    /// Changes after every batch is durable (the value counts batches):
    /// how `replay --follow` learns there is more to read.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.written.clone()
    }

    /// Whether `session` has a record being written.
    pub fn is_open(&self, session: &SessionId) -> bool {
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(session)
    }

    async fn call<T>(&self, make: impl FnOnce(Ack<T>) -> Op) -> Result<T, RecordError> {
        let (ack, done) = oneshot::channel();
        {
            let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
            let tx = tx.as_ref().ok_or(RecordError::Stopped)?;
            tx.send(make(ack)).map_err(|_| RecordError::Stopped)?;
        }
        done.await.map_err(|_| RecordError::Stopped)?
    }

    /// Starts a session's record with its start event (event 0) and
    /// lists it in the index; returns once both are durable.
    pub async fn open(&self, session: &SessionId, start: Start) -> Result<(), RecordError> {
        let session = session.clone();
        self.call(|ack| Op::Open {
            session,
            start: Box::new(start),
            ack,
        })
        .await
    }

    /// Appends one event; returns its `seq` once it is durable.
    pub async fn append(&self, session: &SessionId, body: Body) -> Result<u64, RecordError> {
        let session = session.clone();
        self.call(|ack| Op::Append {
            session,
            body: Box::new(body),
            ack,
        })
        .await
    }

    /// Queues one event without waiting for it to be durable. For events
    /// that always precede one the caller does wait for (an `allow`
    /// decision before its call is forwarded): the writer keeps order, and
    /// a failed write breaks the record, so that later event fails too.
    pub fn enqueue(&self, session: &SessionId, body: Body) -> Result<(), RecordError> {
        let (ack, _) = oneshot::channel();
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        let tx = tx.as_ref().ok_or(RecordError::Stopped)?;
        tx.send(Op::Append {
            session: session.clone(),
            body: Box::new(body),
            ack,
        })
        .map_err(|_| RecordError::Stopped)
    }

    pub async fn message(&self, session: &SessionId, m: MessageEvent) -> Result<u64, RecordError> {
        self.append(session, Body::Message(m)).await
    }

    pub async fn decision(
        &self,
        session: &SessionId,
        d: DecisionEvent,
    ) -> Result<u64, RecordError> {
        self.append(session, Body::Decision { decision: d }).await
    }

    /// Ends a session's record: its end event, the signed seal, and the
    /// index line that closes it.
    pub async fn close(
        &self,
        session: &SessionId,
        state: EndState,
        reason: &str,
    ) -> Result<(), RecordError> {
        let session = session.clone();
        let reason = reason.to_owned();
        self.call(|ack| Op::Close {
            session,
            state,
            reason,
            ack,
        })
        .await
    }

    /// Deletes records of sessions that ended more than `retention` ago,
    /// leaving a signed tombstone for each; returns how many.
    pub async fn sweep(&self, retention: Duration) -> Result<usize, RecordError> {
        self.call(|ack| Op::Sweep { retention, ack }).await
    }

    /// Stops the writer after everything queued is written.
    pub fn stop(&self) {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The chain state of one log.
#[derive(Debug, Clone)]
struct ChainState {
    /// The next line's `seq`.
    seq: u64,
    prev: Hash,
    /// Events since the last signature.
    unsigned: u64,
    /// When the oldest unsigned event was written.
    unsigned_since: Option<Instant>,
    broken: Option<String>,
}

impl ChainState {
    fn new(name: &str) -> ChainState {
        ChainState {
            seq: 0,
            prev: format::genesis(name),
            unsigned: 0,
            unsigned_since: None,
            broken: None,
        }
    }
}

/// What the index says about one session.
#[derive(Debug, Clone)]
struct Listed {
    closed: Option<(u64, u64, String)>, // (at_ms, events, head)
    deleted: bool,
}

struct Writer {
    store: Arc<dyn RecordStore>,
    key: AuditKey,
    config: RecordingSection,
    sessions: HashMap<SessionId, ChainState>,
    index: ChainState,
    listed: HashMap<SessionId, Listed>,
    live: Arc<Mutex<HashSet<SessionId>>>,
    written: tokio::sync::watch::Sender<u64>,
    last_sync: Instant,
    unsynced: HashSet<SessionId>,
    index_unsynced: bool,
}

/// Lines built in one batch, before they are written.
#[derive(Default)]
struct Batch {
    sessions: HashMap<SessionId, Vec<u8>>,
    order: Vec<SessionId>,
    index: Vec<u8>,
    closing: Vec<SessionId>,
    deleting: Vec<SessionId>,
}

impl Batch {
    fn push(&mut self, session: &SessionId, line: Vec<u8>) {
        match self.sessions.get_mut(session) {
            Some(buf) => buf.extend_from_slice(&line),
            None => {
                self.order.push(session.clone());
                self.sessions.insert(session.clone(), line);
            }
        }
    }
}

/// What one batch's writes came to.
#[derive(Default)]
struct Written {
    failed: HashMap<SessionId, String>,
    index_failed: Option<String>,
    touched: Vec<SessionId>,
    index: bool,
}

/// An acknowledgement waiting for its batch to be durable.
enum Pending {
    Open(SessionId, Ack<()>),
    Append(SessionId, u64, Ack<u64>),
    Close(SessionId, Ack<()>),
    Sweep(usize, Ack<usize>),
    Failed(Box<dyn FnOnce() + Send>),
}

fn write_err(session: &SessionId, reason: impl std::fmt::Display) -> RecordError {
    RecordError::Write {
        session: session.to_string(),
        reason: reason.to_string(),
    }
}

impl Writer {
    fn new(store: Arc<dyn RecordStore>, key: AuditKey, config: RecordingSection) -> Writer {
        Writer {
            store,
            key,
            config,
            sessions: HashMap::new(),
            index: ChainState::new(format::INDEX_CHAIN),
            listed: HashMap::new(),
            live: Arc::default(),
            written: tokio::sync::watch::channel(0).0,
            last_sync: Instant::now(),
            unsynced: HashSet::new(),
            index_unsynced: false,
        }
    }

    /// Serialises `event`, chains it to `state` and returns the full line.
    fn session_line(&self, state: &mut ChainState, session: &SessionId, body: Body) -> Vec<u8> {
        let signed = body.is_signed();
        let event = Event {
            v: FORMAT_VERSION,
            session: session.clone(),
            seq: state.seq,
            at_ms: now_ms(),
            prev: state.prev.hex(),
            body,
        };
        let bytes = serde_json::to_vec(&event).expect("record events always serialise");
        let hash = format::hash_body(Chain::Session, &bytes);
        let sig = signed.then(|| self.key.sign(&hash));
        state.seq += 1;
        state.prev = hash;
        if signed {
            state.unsigned = 0;
            state.unsigned_since = None;
        } else {
            state.unsigned += 1;
            state.unsigned_since.get_or_insert_with(Instant::now);
        }
        format::line(&bytes, &hash, sig.as_ref())
    }

    /// An index line (always signed); updates `listed`.
    fn index_line(&mut self, session: &SessionId, body: IndexBody) -> (Vec<u8>, Hash) {
        let entry = IndexEntry {
            v: FORMAT_VERSION,
            seq: self.index.seq,
            at_ms: now_ms(),
            prev: self.index.prev.hex(),
            session: session.clone(),
            body,
        };
        let bytes = serde_json::to_vec(&entry).expect("index entries always serialise");
        let hash = format::hash_body(Chain::Index, &bytes);
        let sig = self.key.sign(&hash);
        self.index.seq += 1;
        self.index.prev = hash;
        self.note_listed(&entry);
        (format::line(&bytes, &hash, Some(&sig)), hash)
    }

    fn note_listed(&mut self, entry: &IndexEntry) {
        let listed = self.listed.entry(entry.session.clone()).or_insert(Listed {
            closed: None,
            deleted: false,
        });
        match &entry.body {
            IndexBody::Open { .. } => {}
            IndexBody::Close { events, head, .. } => {
                listed.closed = Some((entry.at_ms, *events, head.clone()));
            }
            IndexBody::Delete { .. } => listed.deleted = true,
        }
    }

    fn run(mut self, rx: std_mpsc::Receiver<Op>) {
        loop {
            let wait = self.next_wakeup();
            let first = match rx.recv_timeout(wait) {
                Ok(op) => Some(op),
                Err(std_mpsc::RecvTimeoutError::Timeout) => None,
                Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
            };
            let mut ops: Vec<Op> = first.into_iter().collect();
            while ops.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(op) => ops.push(op),
                    Err(_) => break,
                }
            }
            self.batch(ops);
        }
        // Everything queued was written; sync what is left.
        if let Err(e) = self.sync_all() {
            tracing::error!(error = %e, "ALARM: the last session records could not be synced");
        }
    }

    /// Until the next time-based checkpoint or interval sync is due.
    fn next_wakeup(&self) -> Duration {
        let mut wait = Duration::from_secs(60);
        let interval = self.config.checkpoint_interval;
        for state in self.sessions.values() {
            if let Some(since) = state.unsigned_since {
                wait = wait.min(interval.saturating_sub(since.elapsed()));
            }
        }
        if self.config.fsync == Fsync::Interval
            && (!self.unsynced.is_empty() || self.index_unsynced)
        {
            wait = wait.min(
                self.config
                    .fsync_interval
                    .saturating_sub(self.last_sync.elapsed()),
            );
        }
        wait
    }

    fn batch(&mut self, ops: Vec<Op>) {
        let mut batch = Batch::default();
        let mut written = Written::default();
        let mut pending = Vec::with_capacity(ops.len());
        for op in ops {
            let open = matches!(op, Op::Open { .. });
            if open {
                // An index `open` reaches the disk before its record's
                // first line (recovery never adopts a record the index does
                // not list): what came before goes first, in order.
                self.write(&mut batch, &mut written);
            }
            pending.push(self.apply(op, &mut batch));
            if open {
                self.write_index(&mut batch, &mut written);
            }
        }
        self.due_checkpoints(&mut batch);
        self.write(&mut batch, &mut written);
        let Written {
            mut failed,
            mut index_failed,
            touched,
            index,
        } = written;
        if let Err(e) = self.sync_policy(&batch) {
            for session in &touched {
                failed.entry(session.clone()).or_insert_with(|| e.clone());
            }
            if index {
                index_failed.get_or_insert(e);
            }
        }
        if let Some(e) = &index_failed {
            // The index chain in memory is ahead of the disk: nothing more
            // can be listed. Sessions stay recordable; new ones are refused.
            tracing::error!(error = %e, store = %self.store.describe(), "ALARM: the record index cannot be written");
            self.index.broken = Some(e.clone());
        }
        for (session, e) in &failed {
            tracing::error!(%session, error = %e, "ALARM: a session record cannot be written");
            if let Some(state) = self.sessions.get_mut(session) {
                state.broken = Some(e.clone());
            }
        }
        for session in &batch.closing {
            self.store.close(session);
        }
        // Retention: a record goes only once its tombstone is durable, so a
        // crash in between leaves a record with a tombstone, never a
        // record missing without one.
        if index_failed.is_none() {
            for session in &batch.deleting {
                if let Err(e) = self.store.delete(session) {
                    tracing::error!(%session, error = %e, "retention: cannot delete a record after its tombstone");
                }
            }
        }
        for p in pending {
            self.acknowledge(p, &failed, index_failed.as_deref());
        }
        self.written.send_modify(|n| *n += 1);
    }

    /// Writes what `batch` holds so far: records first, then the index,
    /// so an index `close` never names a seal that is not on disk.
    fn write(&mut self, batch: &mut Batch, written: &mut Written) {
        for session in std::mem::take(&mut batch.order) {
            let lines = batch.sessions.remove(&session).unwrap_or_default();
            if let Err(e) = self.store.append(&session, &lines) {
                written.failed.insert(session.clone(), e.to_string());
            } else {
                self.unsynced.insert(session.clone());
            }
            written.touched.push(session);
        }
        self.write_index(batch, written);
    }

    fn write_index(&mut self, batch: &mut Batch, written: &mut Written) {
        if batch.index.is_empty() {
            return;
        }
        written.index = true;
        if written.index_failed.is_some() {
            // Later index lines chain to ones that never reached the disk.
            batch.index.clear();
            return;
        }
        match self.store.append_index(&batch.index) {
            Ok(()) => self.index_unsynced = true,
            Err(e) => written.index_failed = Some(e.to_string()),
        }
        batch.index.clear();
    }

    fn acknowledge(
        &mut self,
        p: Pending,
        failed: &HashMap<SessionId, String>,
        index_failed: Option<&str>,
    ) {
        let fail = |s: &SessionId| -> Option<RecordError> {
            failed
                .get(s)
                .map(|e| write_err(s, e))
                .or_else(|| index_failed.map(|e| write_err(s, format!("index: {e}"))))
        };
        match p {
            Pending::Open(s, ack) => {
                let r = match fail(&s) {
                    Some(e) => Err(e),
                    None => {
                        self.live
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(s);
                        Ok(())
                    }
                };
                let _ = ack.send(r);
            }
            Pending::Append(s, seq, ack) => {
                let r = match failed.get(&s) {
                    Some(e) => Err(write_err(&s, e)),
                    None => Ok(seq),
                };
                let _ = ack.send(r);
            }
            Pending::Close(s, ack) => {
                self.live
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&s);
                let _ = ack.send(fail(&s).map_or(Ok(()), Err));
            }
            Pending::Sweep(n, ack) => {
                let _ = ack.send(match index_failed {
                    Some(e) => Err(RecordError::Index(e.to_owned())),
                    None => Ok(n),
                });
            }
            Pending::Failed(f) => f(),
        }
    }

    fn apply(&mut self, op: Op, batch: &mut Batch) -> Pending {
        match op {
            Op::Open {
                session,
                start,
                ack,
            } => {
                if self.sessions.contains_key(&session) || self.listed.contains_key(&session) {
                    return failed(ack, RecordError::Exists(session));
                }
                if let Some(e) = &self.index.broken {
                    let e = write_err(&session, format!("index: {e}"));
                    return failed(ack, e);
                }
                let (line, _) = self.index_line(
                    &session,
                    IndexBody::Open {
                        user: start.user.clone(),
                        server: start.server.clone(),
                    },
                );
                batch.index.extend_from_slice(&line);
                let mut state = ChainState::new(session.as_str());
                let line = self.session_line(&mut state, &session, Body::Start(*start));
                batch.push(&session, line);
                self.sessions.insert(session.clone(), state);
                Pending::Open(session, ack)
            }
            Op::Append { session, body, ack } => {
                let Some(mut state) = self.sessions.remove(&session) else {
                    return failed(ack, RecordError::NotOpen(session));
                };
                if let Some(e) = &state.broken {
                    let e = write_err(&session, e);
                    self.sessions.insert(session, state);
                    return failed(ack, e);
                }
                let seq = state.seq;
                let line = self.session_line(&mut state, &session, *body);
                batch.push(&session, line);
                if state.unsigned >= self.config.checkpoint_events {
                    let events = state.seq;
                    let line = self.session_line(&mut state, &session, Body::Checkpoint { events });
                    batch.push(&session, line);
                }
                self.sessions.insert(session.clone(), state);
                Pending::Append(session, seq, ack)
            }
            Op::Close {
                session,
                state: end,
                reason,
                ack,
            } => {
                let Some(mut state) = self.sessions.remove(&session) else {
                    return failed(ack, RecordError::NotOpen(session));
                };
                if let Some(e) = state.broken.clone() {
                    // What is on disk is not what the chain in memory says:
                    // end it from the disk, as recovery would.
                    let r = self.recover_session(&session, &format!("recording failed: {e}"));
                    self.live
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&session);
                    if let Err(r) = r {
                        tracing::error!(%session, error = %r, "ALARM: a broken record could not be sealed");
                    }
                    return failed(ack, write_err(&session, e));
                }
                let line =
                    self.session_line(&mut state, &session, Body::End { state: end, reason });
                batch.push(&session, line);
                let events = state.seq;
                let line = self.session_line(&mut state, &session, Body::Seal { events });
                batch.push(&session, line);
                let head = state.prev;
                let (line, _) = self.index_line(
                    &session,
                    IndexBody::Close {
                        state: end,
                        events: state.seq,
                        head: head.hex(),
                    },
                );
                batch.index.extend_from_slice(&line);
                batch.closing.push(session.clone());
                Pending::Close(session, ack)
            }
            Op::Sweep { retention, ack } => {
                let cutoff = now_ms().saturating_sub(retention.as_millis() as u64);
                let due: Vec<(SessionId, u64, String)> = self
                    .listed
                    .iter()
                    .filter(|(_, l)| !l.deleted)
                    .filter_map(|(s, l)| {
                        let (at, events, head) = l.closed.clone()?;
                        (at <= cutoff).then(|| (s.clone(), events, head))
                    })
                    .collect();
                let reason = format!(
                    "retention: ended more than {} ago",
                    humantime::format_duration(retention)
                );
                let mut n = 0;
                for (session, events, head) in due {
                    let (line, _) = self.index_line(
                        &session,
                        IndexBody::Delete {
                            reason: reason.clone(),
                            events,
                            head,
                        },
                    );
                    batch.index.extend_from_slice(&line);
                    batch.deleting.push(session);
                    n += 1;
                }
                Pending::Sweep(n, ack)
            }
        }
    }

    /// Signs open records whose oldest unsigned event is older than
    /// `checkpoint_interval`.
    fn due_checkpoints(&mut self, batch: &mut Batch) {
        let interval = self.config.checkpoint_interval;
        let due: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.broken.is_none())
            .filter(|(_, s)| s.unsigned_since.is_some_and(|t| t.elapsed() >= interval))
            .map(|(id, _)| id.clone())
            .collect();
        for session in due {
            let mut state = self.sessions.remove(&session).expect("listed just above");
            let events = state.seq;
            let line = self.session_line(&mut state, &session, Body::Checkpoint { events });
            batch.push(&session, line);
            self.sessions.insert(session, state);
        }
        // Closed sessions leave the chain table once their seal is built.
        for s in &batch.closing {
            self.sessions.remove(s);
        }
    }

    fn sync_policy(&mut self, batch: &Batch) -> Result<(), String> {
        match self.config.fsync {
            Fsync::Batch => self.sync_all(),
            Fsync::Interval if self.last_sync.elapsed() >= self.config.fsync_interval => {
                self.sync_all()
            }
            Fsync::Interval | Fsync::Never => {
                // Closing a record still syncs it: a seal is rare and is
                // what verification starts from.
                if batch.closing.is_empty() && batch.deleting.is_empty() {
                    Ok(())
                } else {
                    self.sync_all()
                }
            }
        }
    }

    fn sync_all(&mut self) -> Result<(), String> {
        let sessions: Vec<SessionId> = self.unsynced.drain().collect();
        let index = std::mem::take(&mut self.index_unsynced);
        self.last_sync = Instant::now();
        self.store
            .sync(&sessions, index)
            .map_err(|e| format!("sync: {e}"))
    }

    /// Reads the index and seals every record a crash left open as
    /// aborted. Torn last lines (a write cut short, never acknowledged)
    /// are cut off first.
    fn recover(&mut self) -> Result<Recovered, RecordError> {
        let mut out = Recovered::default();
        let index_err = |e: std::io::Error| RecordError::Index(e.to_string());
        let bytes = self.store.read_index().map_err(index_err)?;
        let (complete, torn) = split_complete(&bytes);
        if torn > 0 {
            self.store
                .truncate_index(complete.len() as u64)
                .map_err(index_err)?;
            out.torn_bytes += torn as u64;
        }
        let mut open: Vec<SessionId> = Vec::new();
        for raw in complete.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let line_err = |e: &dyn std::fmt::Display| {
                RecordError::Index(format!("line {} is damaged: {e}", self.index.seq))
            };
            let split = format::split(raw).map_err(|e| line_err(&e))?;
            let entry: IndexEntry =
                serde_json::from_slice(&split.body).map_err(|e| line_err(&e))?;
            self.index.seq = entry.seq + 1;
            self.index.prev = format::hash_body(Chain::Index, &split.body);
            match &entry.body {
                IndexBody::Open { .. } => open.push(entry.session.clone()),
                _ => open.retain(|s| s != &entry.session),
            }
            self.note_listed(&entry);
        }
        for session in open {
            match self.recover_session(
                &session,
                "the broker stopped before the session ended (recovered at the next start)",
            ) {
                Ok(torn) => {
                    out.torn_bytes += torn;
                    out.aborted.push(session);
                }
                // The index cannot be written: nothing can be recorded.
                Err(RecordError::Index(e)) => return Err(RecordError::Index(e)),
                // A record damaged past its torn tail is evidence: left as
                // it is for `verify` to describe, and the broker starts.
                Err(e) => {
                    tracing::error!(%session, error = %e, "ALARM: a record left open could not be sealed; it stays as it is");
                    out.damaged.push(session);
                }
            }
        }
        Ok(out)
    }

    /// Ends one open record from what is on disk: cuts a torn last line,
    /// appends an `aborted` end and a seal, and closes it in the index.
    /// Returns the bytes cut.
    fn recover_session(&mut self, session: &SessionId, reason: &str) -> Result<u64, RecordError> {
        let bytes = self
            .store
            .read(session)
            .map_err(|e| write_err(session, e))?
            .unwrap_or_default();
        let (complete, torn) = split_complete(&bytes);
        if torn > 0 {
            self.store
                .truncate(session, complete.len() as u64)
                .map_err(|e| write_err(session, e))?;
        }
        let mut state = ChainState::new(session.as_str());
        let mut lines_back = complete.split(|&b| b == b'\n').filter(|l| !l.is_empty());
        let parse = |line: &[u8]| -> Result<(Event, Hash), RecordError> {
            let split = format::split(line).map_err(|e| write_err(session, e))?;
            let event: Event =
                serde_json::from_slice(&split.body).map_err(|e| write_err(session, e))?;
            Ok((event, format::hash_body(Chain::Session, &split.body)))
        };
        if let Some(last) = lines_back.next_back() {
            let (event, hash) = parse(last)?;
            if let Body::Seal { .. } = event.body {
                // Sealed, and the crash came before the index heard of it
                // (records are written before the index): close it in the
                // index as it was sealed, adding nothing to the record.
                let end = match lines_back.next_back().map(parse).transpose()? {
                    Some((
                        Event {
                            body: Body::End { state, .. },
                            ..
                        },
                        _,
                    )) => state,
                    _ => EndState::Aborted,
                };
                self.close_in_index(session, end, event.seq + 1, hash)?;
                return Ok(torn as u64);
            }
            state.seq = event.seq + 1;
            state.prev = hash;
        }
        let mut lines = self.session_line(
            &mut state,
            session,
            Body::End {
                state: EndState::Aborted,
                reason: reason.to_owned(),
            },
        );
        let events = state.seq;
        lines.extend(self.session_line(&mut state, session, Body::Seal { events }));
        self.store
            .append(session, &lines)
            .and_then(|()| self.store.sync(std::slice::from_ref(session), false))
            .map_err(|e| write_err(session, e))?;
        self.store.close(session);
        self.close_in_index(session, EndState::Aborted, state.seq, state.prev)?;
        tracing::warn!(%session, "session record sealed as aborted");
        Ok(torn as u64)
    }

    /// Writes and syncs the index line that closes a sealed record.
    fn close_in_index(
        &mut self,
        session: &SessionId,
        state: EndState,
        events: u64,
        head: Hash,
    ) -> Result<(), RecordError> {
        let (line, _) = self.index_line(
            session,
            IndexBody::Close {
                state,
                events,
                head: head.hex(),
            },
        );
        self.store
            .append_index(&line)
            .and_then(|()| self.store.sync(&[], true))
            .map_err(|e| RecordError::Index(e.to_string()))
    }
}

fn failed<T: Send + 'static>(ack: Ack<T>, e: RecordError) -> Pending {
    Pending::Failed(Box::new(move || {
        let _ = ack.send(Err(e));
    }))
}

/// The complete lines of a log (up to its last newline) and how many
/// bytes follow them (a torn write).
pub fn split_complete(bytes: &[u8]) -> (&[u8], usize) {
    match bytes.iter().rposition(|&b| b == b'\n') {
        Some(i) => (&bytes[..=i], bytes.len() - i - 1),
        None => (&[], bytes.len()),
    }
}
