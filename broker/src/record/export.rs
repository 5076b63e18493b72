//! The audit export: every event of every session in a time window as one
//! flat row — JSON lines or CSV — for SIEMs and spreadsheets.
//!
//! The field names ([`FIELDS`]) are stable and documented in the README;
//! every row has every field (`null` in JSON, empty in CSV when it does
//! not apply). Message contents are not exported (replay shows them);
//! the row's `hash` is the record line's, so a row can be matched to the
//! signed record it came from.
//!
//! Exports are made in two passes over the records: [`plan`] counts the
//! rows (the count goes out as a header before the first row, for a real
//! progress bar), [`export`] writes them in chunks as it reads, one record
//! in memory at a time. It writes no more rows per session than the plan
//! counted, so the count is exact even while live sessions go on.

use std::time::{Duration, UNIX_EPOCH};

use mcpgate_shared::names::{ServerName, SessionId, UserName};
use mcpgate_shared::record::ExportFormat;
use serde::Serialize;

use super::format::Hash;
use super::reader::{self, Meta, ReadError};
use super::store::RecordStore;

/// The export's columns, in order.
pub const FIELDS: [&str; 27] = [
    "time",
    "session",
    "seq",
    "type",
    "user",
    "server",
    "from",
    "to",
    "kind",
    "method",
    "name",
    "id",
    "bytes",
    "decision",
    "rule",
    "reason",
    "approval",
    "approvers",
    "masked",
    "state",
    "events",
    "issuer",
    "roles",
    "client_addr",
    "tunnel_peer",
    "cert_serial",
    "hash",
];

/// Rows are sent on in chunks of about this many bytes.
const CHUNK: usize = 64 * 1024;

/// Events with `since_ms <= at_ms < until_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub since_ms: u64,
    pub until_ms: u64,
}

impl Window {
    pub fn contains(&self, at_ms: u64) -> bool {
        self.since_ms <= at_ms && at_ms < self.until_ms
    }
}

/// One exported event. Serialises with exactly [`FIELDS`], in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    /// RFC 3339, UTC, milliseconds.
    pub time: String,
    pub session: String,
    pub seq: u64,
    /// `start`, `message`, `decision`, `checkpoint`, `end` or `seal`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The session's user and server, on every row.
    pub user: String,
    pub server: String,
    /// Messages: `client`, `upstream` or `broker`.
    pub from: Option<&'static str>,
    pub to: Option<&'static str>,
    /// Messages: `request`, `notification`, `response` or `error`.
    #[serde(rename = "kind")]
    pub message_kind: Option<String>,
    pub method: Option<String>,
    /// Tool or prompt name, or resource URI.
    pub name: Option<String>,
    /// The JSON-RPC id as JSON text (`1` and `"1"` differ).
    pub id: Option<String>,
    pub bytes: Option<u64>,
    pub decision: Option<&'static str>,
    pub rule: Option<String>,
    /// Decisions: why; ends: why the session ended.
    pub reason: Option<String>,
    pub approval: Option<String>,
    /// `;`-separated.
    pub approvers: Option<String>,
    /// Masked values per type, `card=2;email=1`.
    pub masked: Option<String>,
    /// Ends: `closed` or `aborted`.
    pub state: Option<&'static str>,
    /// Checkpoints and seals: events covered.
    pub events: Option<u64>,
    /// Starts: who vouched for the user, their roles (`;`-separated),
    /// where the session was asked for and where the tunnel came from,
    /// the certificate's serial.
    pub issuer: Option<String>,
    pub roles: Option<String>,
    pub client_addr: Option<String>,
    pub tunnel_peer: Option<String>,
    pub cert_serial: Option<String>,
    /// The record line's hash (hex SHA-256).
    pub hash: String,
}

/// `card=2;email=1`, or `None` when nothing was masked.
pub fn masked_text(masked: &std::collections::BTreeMap<String, u64>) -> Option<String> {
    (!masked.is_empty()).then(|| {
        masked
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(";")
    })
}

fn joined<T: AsRef<str>>(items: &[T]) -> Option<String> {
    (!items.is_empty()).then(|| {
        items
            .iter()
            .map(AsRef::as_ref)
            .collect::<Vec<_>>()
            .join(";")
    })
}

/// RFC 3339 with milliseconds, UTC.
pub fn time(at_ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(at_ms)).to_string()
}

/// The flat row of one event of `session`.
pub fn row(session: &SessionId, user: &UserName, server: &ServerName, m: Meta, hash: &Hash) -> Row {
    let d = m.decision;
    let message = m.kind == "message";
    Row {
        time: time(m.at_ms),
        session: session.to_string(),
        seq: m.seq,
        user: user.to_string(),
        server: server.to_string(),
        from: m.from.map(|p| p.as_str()),
        to: m.to.map(|p| p.as_str()),
        message_kind: m.message_kind,
        method: m
            .method
            .or_else(|| d.as_ref().and_then(|d| d.method.clone())),
        name: m.name.or_else(|| d.as_ref().and_then(|d| d.name.clone())),
        id: m
            .id
            .or_else(|| d.as_ref().and_then(|d| d.request_id.clone())),
        bytes: m.bytes.filter(|_| message),
        decision: d.as_ref().map(|d| d.decision.as_str()),
        rule: d.as_ref().and_then(|d| d.rule.clone()),
        reason: m.reason.or_else(|| d.as_ref().map(|d| d.reason.clone())),
        approval: d.as_ref().and_then(|d| d.approval.clone()),
        approvers: d.as_ref().and_then(|d| joined(&d.approvers)),
        masked: masked_text(&m.masked).or_else(|| d.as_ref().and_then(|d| masked_text(&d.masked))),
        state: m.state.map(|s| s.as_str()),
        events: m.events,
        issuer: m.issuer,
        roles: joined(&m.roles),
        client_addr: m.client_addr,
        tunnel_peer: m.tunnel_peer,
        cert_serial: m.cert_serial,
        hash: hash.hex(),
        kind: m.kind,
    }
}

/// One session in an export, and how many of its events fall in the
/// window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub session: SessionId,
    pub user: UserName,
    pub server: ServerName,
    pub events: u64,
}

/// What an export will hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Oldest session first.
    pub sessions: Vec<Planned>,
    /// Rows over all sessions.
    pub events: u64,
}

/// Counts the events in `window`, per session. A record that cannot be
/// read whole is an error: an export that silently leaves events out is
/// worse than none.
pub fn plan(store: &dyn RecordStore, window: Window) -> Result<Plan, ReadError> {
    let mut candidates: Vec<(u64, SessionId, UserName, ServerName)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for s in reader::index(store)? {
        seen.insert(s.session.clone());
        let ended = s.closed.map(|c| c.0);
        if s.deleted.is_some()
            || s.opened_ms >= window.until_ms
            || ended.is_some_and(|e| e < window.since_ms)
        {
            continue;
        }
        candidates.push((s.opened_ms, s.session, s.user, s.server));
    }
    // Records the index does not list (verification reports them) are
    // exported too: the export is about what happened.
    for session in store
        .sessions()
        .map_err(|e| io(store, e))?
        .into_iter()
        .filter(|s| !seen.contains(s))
    {
        if let Some((user, server)) = reader::owner(store, &session)? {
            candidates.push((0, session, user, server));
        }
    }
    candidates.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
    let mut plan = Plan::default();
    for (_, session, user, server) in candidates {
        let Some(bytes) = store.read(&session).map_err(|e| io(store, e))? else {
            continue;
        };
        let mut events = 0;
        for item in reader::metas(&session, &bytes) {
            let (m, _) = item?;
            events += u64::from(window.contains(m.at_ms));
        }
        if events > 0 {
            plan.events += events;
            plan.sessions.push(Planned {
                session,
                user,
                server,
                events,
            });
        }
    }
    Ok(plan)
}

fn io(store: &dyn RecordStore, e: std::io::Error) -> ReadError {
    ReadError::Io {
        place: store.describe(),
        reason: e.to_string(),
    }
}

/// Where rows go, a chunk at a time: `false` when nobody takes them any
/// more (the client went away), which ends the export.
pub trait Sink {
    fn send(&mut self, chunk: Vec<u8>) -> bool;
}

impl<F: FnMut(Vec<u8>) -> bool> Sink for F {
    fn send(&mut self, chunk: Vec<u8>) -> bool {
        self(chunk)
    }
}

/// Rows into bytes.
enum Encoder {
    Jsonl(Vec<u8>),
    // Boxed: the writer carries its own buffer and state.
    Csv(Box<csv::Writer<Vec<u8>>>),
}

impl Encoder {
    fn new(format: ExportFormat) -> Encoder {
        match format {
            ExportFormat::Jsonl => Encoder::Jsonl(Vec::with_capacity(CHUNK + 4096)),
            ExportFormat::Csv => Encoder::Csv(Box::new(csv_writer())),
        }
    }

    fn header(&mut self) {
        if let Encoder::Csv(w) = self {
            // Writing to a Vec cannot fail.
            let _ = w.write_record(FIELDS);
        }
    }

    fn row(&mut self, row: &Row) {
        match self {
            Encoder::Jsonl(buf) => {
                // A struct of strings and numbers always serialises.
                let _ = serde_json::to_writer(&mut *buf, row);
                buf.push(b'\n');
            }
            Encoder::Csv(w) => {
                let _ = w.serialize(row);
            }
        }
    }

    /// The bytes so far, when there are at least `min`.
    fn take(&mut self, min: usize) -> Option<Vec<u8>> {
        match self {
            Encoder::Jsonl(buf) => (buf.len() >= min.max(1))
                .then(|| std::mem::replace(buf, Vec::with_capacity(CHUNK + 4096))),
            Encoder::Csv(w) => {
                // The writer buffers; its bytes are reachable only by
                // flushing it into its Vec and taking that.
                let _ = w.flush();
                if w.get_ref().len() < min.max(1) {
                    return None;
                }
                let full = std::mem::replace(w, Box::new(csv_writer()));
                full.into_inner().ok()
            }
        }
    }
}

fn csv_writer() -> csv::Writer<Vec<u8>> {
    csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(Vec::with_capacity(CHUNK + 4096))
}

/// Writes the planned rows to `sink` (CSV: the header line first);
/// returns how many rows went out.
pub fn export(
    store: &dyn RecordStore,
    plan: &Plan,
    window: Window,
    format: ExportFormat,
    sink: &mut dyn Sink,
) -> Result<u64, ReadError> {
    let mut enc = Encoder::new(format);
    enc.header();
    let mut rows = 0;
    for p in &plan.sessions {
        let Some(bytes) = store.read(&p.session).map_err(|e| io(store, e))? else {
            // Deleted since the plan: fewer rows than announced.
            continue;
        };
        let mut left = p.events;
        for item in reader::metas(&p.session, &bytes) {
            if left == 0 {
                break;
            }
            let (m, hash) = item?;
            if !window.contains(m.at_ms) {
                continue;
            }
            enc.row(&row(&p.session, &p.user, &p.server, m, &hash));
            left -= 1;
            rows += 1;
            if let Some(chunk) = enc.take(CHUNK)
                && !sink.send(chunk)
            {
                return Ok(rows);
            }
        }
    }
    if let Some(chunk) = enc.take(1) {
        sink.send(chunk);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use mcpgate_shared::event::DecisionKind;
    use mcpgate_shared::record::{Body, EndState};

    use super::super::reader::tests::{call, decision, recorder, sid, start};
    use super::*;

    async fn fixture(dir: &std::path::Path) -> (std::sync::Arc<super::super::Recorder>, SessionId) {
        let r = recorder(dir);
        let a = sid(1);
        r.open(&a, start("alice", "db")).await.unwrap();
        r.append(&a, call(1, "query")).await.unwrap();
        r.append(&a, decision(&a, "alice", DecisionKind::Deny))
            .await
            .unwrap();
        let mut approved = decision(&a, "alice", DecisionKind::Approve);
        if let Body::Decision { decision } = &mut approved {
            decision.approval = Some("apr_00".into());
            decision.approvers = vec!["bob".parse().unwrap(), "carol".parse().unwrap()];
            decision.reason = "ok, \"reviewed\"\nline two".into();
        }
        r.append(&a, approved).await.unwrap();
        let mut masked = decision(&a, "alice", DecisionKind::Mask);
        if let Body::Decision { decision } = &mut masked {
            decision.masked.insert("email".into(), 1);
            decision.masked.insert("card".into(), 2);
        }
        r.append(&a, masked).await.unwrap();
        r.close(&a, EndState::Closed, "client disconnected")
            .await
            .unwrap();
        (r, a)
    }

    fn collect(
        store: &dyn RecordStore,
        plan: &Plan,
        window: Window,
        format: ExportFormat,
    ) -> (u64, Vec<u8>) {
        let mut out = Vec::new();
        let mut sink = |chunk: Vec<u8>| {
            out.extend(chunk);
            true
        };
        let n = export(store, plan, window, format, &mut sink).unwrap();
        (n, out)
    }

    const ALL: Window = Window {
        since_ms: 0,
        until_ms: u64::MAX,
    };

    #[test]
    fn rows_serialise_with_exactly_the_documented_fields() {
        let row = Row {
            time: time(0),
            session: "s".into(),
            seq: 0,
            kind: "start".into(),
            user: "u".into(),
            server: "s".into(),
            from: None,
            to: None,
            message_kind: None,
            method: None,
            name: None,
            id: None,
            bytes: None,
            decision: None,
            rule: None,
            reason: None,
            approval: None,
            approvers: None,
            masked: None,
            state: None,
            events: None,
            issuer: None,
            roles: None,
            client_addr: None,
            tunnel_peer: None,
            cert_serial: None,
            hash: "h".into(),
        };
        let json = serde_json::to_value(&row).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, FIELDS);
        assert_eq!(json["time"], "1970-01-01T00:00:00.000Z");
    }

    #[tokio::test]
    async fn jsonl_has_every_field_on_every_line() {
        let dir = tempfile::tempdir().unwrap();
        let (r, a) = fixture(dir.path()).await;
        let store = r.store().as_ref();
        let plan = plan(store, ALL).unwrap();
        // start, call, 3 decisions, end, seal.
        assert_eq!(plan.events, 7);
        let (n, out) = collect(store, &plan, ALL, ExportFormat::Jsonl);
        assert_eq!(n, 7);
        let lines: Vec<serde_json::Value> = out
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 7);
        for (i, l) in lines.iter().enumerate() {
            let keys: Vec<&str> = l.as_object().unwrap().keys().map(String::as_str).collect();
            assert_eq!(keys, FIELDS);
            assert_eq!(l["seq"], i);
            assert_eq!(l["session"], a.as_str());
            assert_eq!(
                (l["user"].as_str(), l["server"].as_str()),
                (Some("alice"), Some("db"))
            );
            assert_eq!(l["hash"].as_str().unwrap().len(), 64);
            assert!(l["time"].as_str().unwrap().ends_with('Z'));
        }
        let types: Vec<&str> = lines.iter().map(|l| l["type"].as_str().unwrap()).collect();
        assert_eq!(
            types,
            [
                "start", "message", "decision", "decision", "decision", "end", "seal"
            ]
        );
        assert_eq!(lines[0]["cert_serial"], "4f2a9c0e11d3b7a5");
        assert_eq!(lines[0]["roles"], "dev");
        assert_eq!(lines[0]["from"], serde_json::Value::Null);
        let m = &lines[1];
        assert_eq!(
            (
                &m["from"],
                &m["to"],
                &m["kind"],
                &m["method"],
                &m["name"],
                &m["id"]
            ),
            (
                &"client".into(),
                &"upstream".into(),
                &"request".into(),
                &"tools/call".into(),
                &"query".into(),
                &"1".into()
            )
        );
        assert_eq!(lines[2]["decision"], "deny");
        assert_eq!(lines[2]["rule"], "no-ddl (policy.toml:3)");
        assert_eq!(lines[3]["approvers"], "bob;carol");
        assert_eq!(lines[3]["approval"], "apr_00");
        assert_eq!(lines[4]["masked"], "card=2;email=1");
        assert_eq!(lines[5]["state"], "closed");
        assert_eq!(lines[5]["reason"], "client disconnected");
        assert_eq!(lines[6]["events"], 6);
        r.stop();
    }

    #[tokio::test]
    async fn csv_has_a_header_and_quotes_what_needs_it() {
        let dir = tempfile::tempdir().unwrap();
        let (r, _) = fixture(dir.path()).await;
        let store = r.store().as_ref();
        let plan = plan(store, ALL).unwrap();
        let (n, out) = collect(store, &plan, ALL, ExportFormat::Csv);
        assert_eq!(n, 7);
        let mut rd = csv::Reader::from_reader(&out[..]);
        let header: Vec<String> = rd.headers().unwrap().iter().map(str::to_owned).collect();
        assert_eq!(header, FIELDS);
        let rows: Vec<csv::StringRecord> = rd.records().map(Result::unwrap).collect();
        assert_eq!(rows.len(), 7);
        assert!(rows.iter().all(|r| r.len() == FIELDS.len()));
        let col = |name: &str| FIELDS.iter().position(|f| *f == name).unwrap();
        // A reason with a quote, a comma and a newline survives.
        assert_eq!(&rows[3][col("reason")], "ok, \"reviewed\"\nline two");
        assert_eq!(&rows[4][col("masked")], "card=2;email=1");
        assert_eq!(&rows[0][col("from")], "");
        r.stop();
    }

    #[tokio::test]
    async fn the_window_selects_events_and_the_plan_counts_them() {
        let dir = tempfile::tempdir().unwrap();
        let (r, a) = fixture(dir.path()).await;
        let store = r.store().as_ref();
        let lines = reader::read(store, &a).unwrap();
        let t = |i: usize| lines[i].event.at_ms;
        // Nothing before the first event.
        let before = Window {
            since_ms: 0,
            until_ms: t(0),
        };
        assert_eq!(plan(store, before).unwrap(), Plan::default());
        // From the seal's time on: at least the seal.
        let tail = Window {
            since_ms: t(6),
            until_ms: u64::MAX,
        };
        let p = plan(store, tail).unwrap();
        assert!(p.events >= 1 && p.events <= 7);
        let (n, _) = collect(store, &p, tail, ExportFormat::Jsonl);
        assert_eq!(n, p.events);
        // A sink that stops taking ends the export.
        let mut sink = |_chunk: Vec<u8>| false;
        let n = export(
            store,
            &plan(store, ALL).unwrap(),
            ALL,
            ExportFormat::Jsonl,
            &mut sink,
        )
        .unwrap();
        assert_eq!(n, 7);
        r.stop();
    }

    #[tokio::test]
    async fn a_damaged_record_fails_the_export() {
        let dir = tempfile::tempdir().unwrap();
        let (r, a) = fixture(dir.path()).await;
        r.stop();
        let store = super::super::FileStore::at(dir.path());
        let path = store.session_path(&a);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replacen("\"type\":\"end\"", "\"type\":7", 1)).unwrap();
        let err = plan(&store, ALL).unwrap_err();
        assert!(matches!(err, ReadError::Damaged { event: 5, .. }), "{err}");
    }
}
