//! Offline verification of records with only the broker's public audit
//! key: what `mcpgate-broker verify` runs, and what an auditor relies on.
//!
//! Checked, in this order (the construction itself is [`super::format`]'s):
//! 1. each line on its own: it takes apart into body and trailer, and its
//!    body hashes to the hash it claims; then it parses as an event (or an
//!    index entry) of this session;
//! 2. the chain: seq 0, 1, 2, …, each line's `prev` the hash of the line
//!    before, the first line's the genesis of its session (or of the
//!    index);
//! 3. the signatures on checkpoints, seals and every index line;
//! 4. a record's shape: `start` first, `end` then `seal` last, nothing
//!    after the seal, the counts checkpoints and seals carry;
//! 5. the index against the records: every record listed, every listed
//!    record present unless a signed tombstone deleted it, each `close`
//!    naming the record's seal (event count and hash), a closed record
//!    not cut short.
//!
//! Each problem names its place (`session S: event 12 was modified`). A
//! line that fails step 1 is pinned to its position: the chain around it
//! still holds, so one changed byte is one problem about one event. After
//! a problem the scan resyncs on `seq`: a deleted line is "missing", a
//! moved one "out of order", a copied one "appears twice", rather than
//! every later line being wrong. Nothing that deviates from the chain the
//! broker wrote passes: any line that is not intact, or not exactly where
//! the chain puts it, is a problem.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use mcpgate_shared::names::{ServerName, SessionId, UserName};
use mcpgate_shared::record::{
    Body, EndState, Event, FORMAT_VERSION, IndexBody, IndexEntry, VerifyReport,
};

use super::format::{self, Chain, Hash};
use super::key::{AUDIT_PUB_FILE, AuditPub};
use super::store::{FileStore, INDEX_FILE, RecordStore, SESSIONS_DIR};
use super::writer::split_complete;
use crate::cli::{Output, VerifyArgs};

/// Problems shown per session (and for the index); the rest are counted.
const SHOWN_PROBLEMS: usize = 20;
/// A scan stops after this many problems: the verdict is settled and a
/// file of garbage should not cost more than that.
const SCAN_PROBLEMS: usize = 200;
/// The widest gap examined line by line for lines that come later.
const LOOKAHEAD: u64 = 1024;

/// Which records to verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Which {
    /// The whole index and every record.
    All,
    /// One session's record, its index entries, and the index chain.
    Session(SessionId),
}

/// Verifies records in `store` against `public`. Never fails: what cannot
/// be read is a problem in the report.
///
/// The store may be in use: a broker appends to records and the index
/// while this reads them (`mcpgate audit verify`, the evidence report).
/// The index is read first and each record after it, and the writer puts
/// a record's lines on disk before the index line that names them, so a
/// record can only be ahead of the index read earlier: sealed, or new,
/// where the index does not say so yet. For those (and for an index read
/// in the middle of a write) the index is read again, once it has grown,
/// and used if it extends what was read: it is verified in full like the
/// first. A changed or cut index never grows into a match.
pub fn verify(store: &dyn RecordStore, public: &AuditPub, which: &Which) -> VerifyReport {
    let mut index = IndexView::read(store, public);
    let mut extra = Vec::new();
    let sessions: Vec<SessionId> = match which {
        Which::Session(id) => vec![id.clone()],
        Which::All => {
            let mut all = index.outcome.order.clone();
            match store.sessions() {
                Ok(mut stored) => {
                    stored.sort();
                    for id in stored {
                        if !index.outcome.listings.contains_key(&id) {
                            all.push(id);
                        }
                    }
                }
                Err(e) => extra.push(format!(
                    "index: the records beside it cannot be listed in {}: {e}",
                    store.describe()
                )),
            }
            all
        }
    };
    let mut rereads = 0;
    let mut checked = Vec::with_capacity(sessions.len());
    for id in sessions {
        let mut outcome = check_listed(store, &id, &index, public);
        while outcome.racy && rereads < INDEX_REREADS {
            rereads += 1;
            let Some(newer) = index.newer(store, public) else {
                break;
            };
            index = newer;
            outcome = check_listed(store, &id, &index, public);
        }
        checked.push((id, outcome));
    }
    // A partial last line read mid-write has had the records' time to
    // complete.
    if index.outcome.torn
        && rereads < INDEX_REREADS
        && let Some(newer) = index.newer(store, public)
    {
        index = newer;
    }

    let mut report = VerifyReport {
        ok: true,
        sessions: 0,
        events: 0,
        problems: Vec::new(),
        notes: Vec::new(),
    };
    push_capped(&mut report.problems, "index", index.outcome.problems);
    report.problems.extend(extra);
    for (id, outcome) in checked {
        report.sessions += 1;
        report.events += outcome.events;
        let label = format!("session {id}");
        push_capped(&mut report.problems, &label, outcome.problems);
        report
            .notes
            .extend(outcome.notes.into_iter().map(|n| format!("{label}: {n}")));
    }
    report.ok = report.problems.is_empty();
    report
}

/// How many times one verification reads a grown index again.
const INDEX_REREADS: usize = 8;

/// The index as read once, and what checking it found.
struct IndexView {
    bytes: Vec<u8>,
    outcome: IndexOutcome,
}

impl IndexView {
    /// Reads and checks the index.
    fn read(store: &dyn RecordStore, public: &AuditPub) -> IndexView {
        match store.read_index() {
            Ok(bytes) => IndexView {
                outcome: check_index(&bytes, public),
                bytes,
            },
            Err(e) => {
                let mut outcome = check_index(&[], public);
                outcome
                    .problems
                    .push(format!("cannot be read from {}: {e}", store.describe()));
                IndexView {
                    bytes: Vec::new(),
                    outcome,
                }
            }
        }
    }

    /// The index read again, if it has grown from this one.
    fn newer(&self, store: &dyn RecordStore, public: &AuditPub) -> Option<IndexView> {
        let fresh = IndexView::read(store, public);
        (fresh.bytes.len() > self.bytes.len() && fresh.bytes.starts_with(&self.bytes))
            .then_some(fresh)
    }
}

/// Checks one session against what `index` lists for it.
fn check_listed(
    store: &dyn RecordStore,
    id: &SessionId,
    index: &IndexView,
    public: &AuditPub,
) -> Outcome {
    let mut outcome = Outcome::default();
    let listing = index.outcome.listings.get(id);
    if let Some(l) = listing {
        outcome.problems.extend(l.problems.iter().cloned());
    }
    check_session(store, id, listing, public, &mut outcome);
    outcome
}

/// Adds `problems` under `label`, the first [`SHOWN_PROBLEMS`] of them.
fn push_capped(out: &mut Vec<String>, label: &str, problems: Vec<String>) {
    let more = problems.len().saturating_sub(SHOWN_PROBLEMS);
    out.extend(
        problems
            .into_iter()
            .take(SHOWN_PROBLEMS)
            .map(|p| format!("{label}: {p}")),
    );
    if more > 0 {
        out.push(format!("{label}: and {more} more problems"));
    }
}

#[derive(Debug, Default)]
struct Outcome {
    problems: Vec<String>,
    notes: Vec<String>,
    events: u64,
    /// A problem that a newer index may resolve (the record is ahead of
    /// the index read before it).
    racy: bool,
}

// ---------------------------------------------------------------------------
// Lines and the chain scan, shared by records and the index.

/// What a line is called in messages.
#[derive(Debug, Clone, Copy)]
struct Noun {
    one: &'static str,
    many: &'static str,
}

const EVENT: Noun = Noun {
    one: "event",
    many: "events",
};
const ENTRY: Noun = Noun {
    one: "entry",
    many: "entries",
};

impl Noun {
    fn at(self, seq: u64) -> String {
        format!("{} {seq}", self.one)
    }

    /// `event 4` or `events 4..9`.
    fn span(self, first: u64, last: u64) -> String {
        if first == last {
            self.at(first)
        } else {
            format!("{} {first}..{last}", self.many)
        }
    }

    /// `event 4 is` or `events 4..9 are`.
    fn span_is(self, first: u64, last: u64) -> String {
        let verb = if first == last { "is" } else { "are" };
        format!("{} {verb}", self.span(first, last))
    }
}

/// One line, read on its own.
#[derive(Debug)]
enum Read<T> {
    /// Cannot be taken apart or parsed.
    Damaged(String),
    /// Its body does not hash to the hash it claims.
    Modified,
    /// Intact, but another session's.
    Foreign {
        session: SessionId,
        seq: u64,
    },
    Intact(Link<T>),
}

/// An intact line.
#[derive(Debug)]
struct Link<T> {
    seq: u64,
    prev: Hash,
    hash: Hash,
    sig: Option<[u8; 64]>,
    item: T,
}

/// A line that failed on its own, waiting for the next intact line to
/// tell which event it was.
#[derive(Debug)]
enum Pending {
    Damaged(String),
    Modified,
}

impl Pending {
    fn why(&self) -> &str {
        match self {
            Pending::Damaged(why) => why,
            Pending::Modified => "its content does not match its hash",
        }
    }

    /// The problem, about the line called `name`.
    fn about(&self, name: &str) -> String {
        match self {
            Pending::Damaged(why) => format!("{name} is damaged: {why}"),
            Pending::Modified => {
                format!("{name} was modified: its content does not match its hash")
            }
        }
    }
}

/// The chain a scan rebuilt.
#[derive(Debug)]
struct Scan<T> {
    /// Intact lines placed in the chain, by seq.
    chain: BTreeMap<u64, Link<T>>,
    problems: Vec<String>,
    /// The seq the next line would have had.
    next: u64,
    /// The final line (a seal), if one was placed.
    sealed: Option<u64>,
    /// Lines after the final one.
    after_final: usize,
}

#[derive(Debug, Clone, Copy)]
struct Info {
    seq: u64,
    prev: Hash,
    hash: Hash,
}

struct Scanner<T> {
    noun: Noun,
    /// For messages about the genesis: `session S` or `the index`.
    label: String,
    genesis: Hash,
    is_final: fn(&T) -> bool,
    /// Per position: the intact line there.
    info: Vec<Option<Info>>,
    /// Per position: the next position with an intact line.
    next_intact: Vec<Option<usize>>,
    by_seq: HashMap<u64, Vec<usize>>,
    by_hash: HashMap<Hash, Vec<usize>>,
    next: u64,
    /// The `prev` the next line must have; unknown after a gap.
    prev: Option<Hash>,
    chain: BTreeMap<u64, Link<T>>,
    /// Lines met before their turn (already reported), placed when it
    /// comes.
    stash: Vec<Link<T>>,
    /// Seqs reported as coming later, with the hash found there.
    late: HashMap<u64, Hash>,
    pending: Vec<Pending>,
    problems: Vec<String>,
    sealed: Option<u64>,
    after_final: usize,
}

fn scan<T>(
    reads: Vec<Read<T>>,
    genesis: Hash,
    label: String,
    noun: Noun,
    is_final: fn(&T) -> bool,
) -> Scan<T> {
    let info: Vec<Option<Info>> = reads
        .iter()
        .map(|r| match r {
            Read::Intact(l) => Some(Info {
                seq: l.seq,
                prev: l.prev,
                hash: l.hash,
            }),
            _ => None,
        })
        .collect();
    let mut next_intact = vec![None; info.len()];
    let mut after = None;
    for pos in (0..info.len()).rev() {
        next_intact[pos] = after;
        if info[pos].is_some() {
            after = Some(pos);
        }
    }
    let mut by_seq: HashMap<u64, Vec<usize>> = HashMap::new();
    let mut by_hash: HashMap<Hash, Vec<usize>> = HashMap::new();
    for (pos, i) in info.iter().enumerate() {
        if let Some(i) = i {
            by_seq.entry(i.seq).or_default().push(pos);
            by_hash.entry(i.hash).or_default().push(pos);
        }
    }
    let mut s = Scanner {
        noun,
        label,
        genesis,
        is_final,
        info,
        next_intact,
        by_seq,
        by_hash,
        next: 0,
        prev: Some(genesis),
        chain: BTreeMap::new(),
        stash: Vec::new(),
        late: HashMap::new(),
        pending: Vec::new(),
        problems: Vec::new(),
        sealed: None,
        after_final: 0,
    };
    for (pos, read) in reads.into_iter().enumerate() {
        if s.sealed.is_some() {
            s.after_final += 1;
            continue;
        }
        if s.problems.len() >= SCAN_PROBLEMS {
            s.problems
                .push("the rest was not examined (too many problems)".into());
            break;
        }
        match read {
            Read::Damaged(why) => s.pending.push(Pending::Damaged(why)),
            Read::Modified => s.pending.push(Pending::Modified),
            Read::Foreign { session, seq } => {
                let place = s.place();
                s.problem(format!(
                    "a line of session {session} (its {}) is inserted {place}",
                    noun.at(seq)
                ));
            }
            Read::Intact(link) => s.intact(pos, link),
        }
    }
    if s.sealed.is_none() {
        if !s.pending.is_empty() {
            s.resolve_pending(None);
        }
        s.drain_stash();
    }
    Scan {
        chain: s.chain,
        problems: s.problems,
        next: s.next,
        sealed: s.sealed,
        after_final: s.after_final,
    }
}

impl<T> Scanner<T> {
    fn problem(&mut self, p: String) {
        self.problems.push(p);
    }

    /// Where the scan is, for an inserted line.
    fn place(&self) -> String {
        match self.next.checked_sub(1) {
            Some(last) => format!("after {}", self.noun.at(last)),
            None => format!("before {} 0", self.noun.one),
        }
    }

    /// The first position after `pos` with an intact line of this seq.
    fn later(&self, seq: u64, pos: usize) -> Option<usize> {
        first_after(self.by_seq.get(&seq)?, pos)
    }

    fn later_hash(&self, hash: &Hash, pos: usize) -> bool {
        self.by_hash
            .get(hash)
            .is_some_and(|v| first_after(v, pos).is_some())
    }

    fn accept(&mut self, link: Link<T>) {
        self.next = link.seq.saturating_add(1);
        self.prev = Some(link.hash);
        if (self.is_final)(&link.item) {
            self.sealed = Some(link.seq);
        }
        self.chain.insert(link.seq, link);
    }

    /// Places stashed lines whose turn has come.
    fn drain_stash(&mut self) {
        while self.sealed.is_none() {
            let next = self.next;
            let prev = self.prev;
            let Some(i) = self
                .stash
                .iter()
                .position(|l| l.seq == next && prev.is_none_or(|p| p == l.prev))
            else {
                break;
            };
            let link = self.stash.swap_remove(i);
            self.accept(link);
        }
    }

    /// Says which events the pending unreadable lines were, now that the
    /// next intact line has seq `upto` (`None`: the file ended).
    fn resolve_pending(&mut self, upto: Option<u64>) {
        let pending = std::mem::take(&mut self.pending);
        let n = pending.len() as u64;
        let e = self.next;
        match upto {
            Some(s) if s > e => {
                let gap = s - e;
                if gap == n {
                    for (i, p) in (0..).zip(&pending) {
                        let name = self.noun.at(e + i);
                        self.problem(p.about(&name));
                    }
                } else {
                    let what = self.noun.span_is(e, s - 1);
                    self.problem(format!(
                        "{what} damaged ({n} unreadable lines): {}",
                        pending[0].why()
                    ));
                }
                self.next = s;
                self.prev = None;
            }
            Some(_) => {
                let place = self.place();
                let lines = if n == 1 {
                    "an unreadable line is".to_owned()
                } else {
                    format!("{n} unreadable lines are")
                };
                self.problem(format!("{lines} inserted {place}: {}", pending[0].why()));
            }
            None => {
                let mut p = pending[0].about(&self.noun.at(e));
                if n > 1 {
                    p.push_str(&format!(" ({} more unreadable lines follow)", n - 1));
                }
                self.problem(p);
            }
        }
    }

    fn intact(&mut self, pos: usize, link: Link<T>) {
        let s = link.seq;
        if s > self.next {
            self.drain_stash();
            if self.sealed.is_some() {
                self.after_final += 1;
                return;
            }
        }
        if !self.pending.is_empty() {
            self.resolve_pending(Some(s));
        }
        match s.cmp(&self.next) {
            std::cmp::Ordering::Equal => {
                self.check_prev(&link);
                self.accept(link);
            }
            std::cmp::Ordering::Greater => self.ahead(pos, link),
            std::cmp::Ordering::Less => self.behind(link),
        }
    }

    fn check_prev(&mut self, link: &Link<T>) {
        let Some(p) = self.prev else { return };
        if link.prev == p {
            return;
        }
        let this = self.noun.at(link.seq);
        let p = match link.seq.checked_sub(1) {
            Some(before) => format!(
                "{this} does not follow {}: its prev is not that line's hash (one of them was changed)",
                self.noun.at(before)
            ),
            None => format!(
                "{this} does not begin the chain of {}: its prev is not the genesis value (a record of another session?)",
                self.label
            ),
        };
        self.problem(p);
    }

    /// A line whose seq is beyond the next one expected.
    fn ahead(&mut self, pos: usize, link: Link<T>) {
        let (e, s) = (self.next, link.seq);
        let Some(first_later) = self.later(e, pos) else {
            let what = self.noun.span_is(e, s - 1);
            self.problem(format!("{what} missing"));
            self.prev = None;
            self.accept(link);
            return;
        };
        if self.later_hash(&link.hash, pos) {
            let p = format!(
                "{} appears twice: a copy comes before {}",
                self.noun.at(s),
                self.noun.at(e)
            );
            self.problem(p);
            return;
        }
        let chains = self.next_intact[pos]
            .and_then(|q| self.info[q])
            .is_some_and(|i| i.seq == s.saturating_add(1) && i.prev == link.hash);
        if !chains {
            // This line alone came early.
            let p = format!(
                "{} is out of order: it comes before {}",
                self.noun.at(s),
                self.noun.at(e)
            );
            self.problem(p);
            self.stash.push(link);
            return;
        }
        // This line is in a run that holds together: the lines before it
        // come later in the file, or are missing.
        let found: Option<Vec<Hash>> = (s - e <= LOOKAHEAD)
            .then(|| {
                (e..s)
                    .map(|x| {
                        self.later(x, pos)
                            .and_then(|q| self.info[q])
                            .map(|i| i.hash)
                    })
                    .collect()
            })
            .flatten();
        match found {
            Some(hashes) => {
                let what = self.noun.span_is(e, s - 1);
                let they = if s - e == 1 { "it comes" } else { "they come" };
                let after = first_later
                    .checked_sub(1)
                    .and_then(|q| self.info[q])
                    .map(|i| format!(", after {}", self.noun.at(i.seq)))
                    .unwrap_or_default();
                self.problem(format!("{what} out of order: {they} later{after}"));
                for (x, h) in (e..s).zip(&hashes) {
                    self.late.insert(x, *h);
                }
                self.prev = hashes.last().copied();
            }
            None => {
                let what = self.noun.span_is(e, s - 1);
                self.problem(format!("{what} missing or out of order"));
                self.prev = None;
            }
        }
        self.check_prev(&link);
        self.accept(link);
    }

    /// A line whose seq the chain has passed.
    fn behind(&mut self, link: Link<T>) {
        let s = link.seq;
        let in_chain = self.chain.get(&s).map(|l| l.hash);
        if in_chain == Some(link.hash) || self.stash.iter().any(|l| l.hash == link.hash) {
            let p = format!("{} appears twice: again {}", self.noun.at(s), self.place());
            self.problem(p);
            return;
        }
        if self.late.get(&s) == Some(&link.hash) {
            // Reported when the chain went past it; place it now.
            self.late.remove(&s);
            match s.checked_sub(1) {
                Some(before) if self.chain.get(&before).is_some_and(|l| l.hash != link.prev) => {
                    let p = format!(
                        "{} does not follow {}: its prev is not that line's hash",
                        self.noun.at(s),
                        self.noun.at(before)
                    );
                    self.problem(p);
                }
                None if link.prev != self.genesis => {
                    let p = format!(
                        "{} does not begin the chain of {}: its prev is not the genesis value",
                        self.noun.at(s),
                        self.label
                    );
                    self.problem(p);
                }
                _ => {}
            }
            self.chain.insert(s, link);
            return;
        }
        let p = match in_chain {
            Some(_) => format!(
                "a second {}, not the one in the chain, is inserted {}",
                self.noun.at(s),
                self.place()
            ),
            None => format!(
                "{} is out of place: it comes {}",
                self.noun.at(s),
                self.place()
            ),
        };
        self.problem(p);
    }
}

/// The first of `positions` (ascending) after `pos`.
fn first_after(positions: &[usize], pos: usize) -> Option<usize> {
    positions
        .get(positions.partition_point(|&p| p <= pos))
        .copied()
}

/// Splits a log into its complete lines and the bytes after the last
/// newline.
fn lines(bytes: &[u8]) -> (Vec<&[u8]>, usize) {
    let (complete, torn) = split_complete(bytes);
    let mut out: Vec<&[u8]> = complete.split(|&b| b == b'\n').collect();
    // `split` yields an empty piece after the final newline.
    out.pop();
    (out, torn)
}

fn take_apart(raw: &[u8], chain: Chain) -> Result<format::Split, Pending> {
    if raw.is_empty() {
        return Err(Pending::Damaged("the line is empty".into()));
    }
    let split = format::split(raw).map_err(|e| Pending::Damaged(format!("it {e}")))?;
    if format::hash_body(chain, &split.body) != split.hash {
        return Err(Pending::Modified);
    }
    Ok(split)
}

fn read_event(raw: &[u8], session: &SessionId) -> Read<Event> {
    let split = match take_apart(raw, Chain::Session) {
        Ok(s) => s,
        Err(Pending::Damaged(why)) => return Read::Damaged(why),
        Err(Pending::Modified) => return Read::Modified,
    };
    let event: Event = match serde_json::from_slice(&split.body) {
        Ok(e) => e,
        Err(e) => return Read::Damaged(format!("not a record event ({e})")),
    };
    let Some(prev) = Hash::from_hex(&event.prev) else {
        return Read::Damaged("its prev is not a hash".into());
    };
    if event.session != *session {
        return Read::Foreign {
            session: event.session,
            seq: event.seq,
        };
    }
    Read::Intact(Link {
        seq: event.seq,
        prev,
        hash: split.hash,
        sig: split.sig,
        item: event,
    })
}

fn read_entry(raw: &[u8]) -> Read<IndexEntry> {
    let split = match take_apart(raw, Chain::Index) {
        Ok(s) => s,
        Err(Pending::Damaged(why)) => return Read::Damaged(why),
        Err(Pending::Modified) => return Read::Modified,
    };
    let entry: IndexEntry = match serde_json::from_slice(&split.body) {
        Ok(e) => e,
        Err(e) => return Read::Damaged(format!("not an index entry ({e})")),
    };
    let Some(prev) = Hash::from_hex(&entry.prev) else {
        return Read::Damaged("its prev is not a hash".into());
    };
    Read::Intact(Link {
        seq: entry.seq,
        prev,
        hash: split.hash,
        sig: split.sig,
        item: entry,
    })
}

/// The first hex digits of a hash, for messages.
fn short(hex: &str) -> &str {
    hex.get(..16).unwrap_or(hex)
}

// ---------------------------------------------------------------------------
// The index.

/// What the index says about one session.
#[derive(Debug, Default)]
struct Listing {
    /// (entry, user, server)
    open: Option<(u64, UserName, ServerName)>,
    /// (entry, state, events, head)
    close: Option<(u64, EndState, u64, String)>,
    /// (entry, reason, events, head)
    delete: Option<(u64, String, u64, String)>,
    /// Problems with the index's entries about this session.
    problems: Vec<String>,
}

#[derive(Debug, Default)]
struct IndexOutcome {
    problems: Vec<String>,
    /// It ends in a partial line.
    torn: bool,
    listings: HashMap<SessionId, Listing>,
    /// Sessions in the order the index first names them.
    order: Vec<SessionId>,
}

fn check_index(bytes: &[u8], public: &AuditPub) -> IndexOutcome {
    let mut out = IndexOutcome::default();
    let (raw, torn) = lines(bytes);
    let reads = raw.iter().map(|l| read_entry(l)).collect();
    let genesis = format::genesis(format::INDEX_CHAIN);
    let scan = scan(reads, genesis, "the index".into(), ENTRY, |_| false);
    out.problems = scan.problems;
    out.torn = torn > 0;
    if torn > 0 {
        out.problems.push(format!(
            "{} is damaged: the index ends in a partial line ({torn} bytes)",
            ENTRY.at(scan.next)
        ));
    }
    for (&seq, link) in &scan.chain {
        let entry = &link.item;
        if entry.v != FORMAT_VERSION {
            out.problems.push(format!(
                "entry {seq} has format version {} (this verifier reads version {FORMAT_VERSION})",
                entry.v
            ));
        }
        match link.sig {
            None => out.problems.push(format!("entry {seq} is not signed")),
            Some(sig) if !public.verify(&link.hash, &sig) => {
                out.problems.push(format!("bad signature on entry {seq}"));
            }
            Some(_) => {}
        }
        let listing = match out.listings.get_mut(&entry.session) {
            Some(l) => l,
            None => {
                out.order.push(entry.session.clone());
                out.listings.entry(entry.session.clone()).or_default()
            }
        };
        listing.note(seq, &entry.body);
    }
    out
}

impl Listing {
    /// Takes in index entry `seq` about this session.
    fn note(&mut self, seq: u64, body: &IndexBody) {
        if let Some(d) = self.delete.as_ref().map(|d| d.0) {
            self.problems.push(format!(
                "the index names it again (entry {seq}) after its tombstone (entry {d})"
            ));
            return;
        }
        match body {
            IndexBody::Open { user, server } => {
                if let Some((first, ..)) = &self.open {
                    self.problems.push(format!(
                        "the index opens it twice (entries {first} and {seq})"
                    ));
                } else if let Some((c, ..)) = &self.close {
                    self.problems.push(format!(
                        "the index opens it (entry {seq}) after closing it (entry {c})"
                    ));
                } else {
                    self.open = Some((seq, user.clone(), server.clone()));
                }
            }
            IndexBody::Close {
                state,
                events,
                head,
            } => {
                if let Some((first, ..)) = &self.close {
                    self.problems.push(format!(
                        "the index closes it twice (entries {first} and {seq})"
                    ));
                    return;
                }
                if self.open.is_none() {
                    self.problems.push(format!(
                        "the index closes it (entry {seq}) without opening it"
                    ));
                }
                self.close = Some((seq, *state, *events, head.clone()));
            }
            IndexBody::Delete {
                reason,
                events,
                head,
            } => {
                match &self.close {
                    None => self.problems.push(format!(
                        "the index deletes it (entry {seq}) without closing it"
                    )),
                    Some((c, _, ce, ch)) if (ce, ch) != (events, head) => {
                        self.problems.push(format!(
                            "its tombstone (entry {seq}) says {events} events ending in {}, its close (entry {c}) says {ce} ending in {}",
                            short(head),
                            short(ch)
                        ));
                    }
                    Some(_) => {}
                }
                self.delete = Some((seq, reason.clone(), *events, head.clone()));
            }
        }
    }
}

// ---------------------------------------------------------------------------
// One session.

fn check_session(
    store: &dyn RecordStore,
    id: &SessionId,
    listing: Option<&Listing>,
    public: &AuditPub,
    out: &mut Outcome,
) {
    let bytes = match store.read(id) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => {
            let p = match listing {
                None => "it has no record and is not in the index".to_owned(),
                Some(Listing {
                    delete: Some((d, reason, events, head)),
                    ..
                }) => {
                    out.notes.push(format!(
                        "deleted (index entry {d}: {reason}); it had {events} events ending in {}",
                        short(head)
                    ));
                    return;
                }
                Some(Listing {
                    close: Some((c, _, events, _)),
                    ..
                }) => format!(
                    "its record is missing (the index closed it at entry {c} with {events} events)"
                ),
                Some(Listing {
                    open: Some((o, ..)),
                    ..
                }) => format!(
                    "its record is missing (the index opened it at entry {o} and lists it as live)"
                ),
                Some(_) => "its record is missing".to_owned(),
            };
            out.problems.push(p);
            return;
        }
        Err(e) => {
            out.problems.push(format!(
                "its record cannot be read from {}: {e}",
                store.describe()
            ));
            return;
        }
    };
    check_record(id, &bytes, listing, public, out);
}

/// Where the index says a record stands.
enum Status<'a> {
    Unlisted,
    Live,
    /// (entry, state, events, head), from the close (or the tombstone).
    Closed(u64, Option<EndState>, u64, &'a str),
}

fn status(listing: Option<&Listing>) -> Status<'_> {
    match listing {
        Some(Listing {
            close: Some((c, state, events, head)),
            ..
        }) => Status::Closed(*c, Some(*state), *events, head),
        Some(Listing {
            delete: Some((d, _, events, head)),
            ..
        }) => Status::Closed(*d, None, *events, head),
        Some(Listing { open: Some(_), .. }) => Status::Live,
        _ => Status::Unlisted,
    }
}

fn check_record(
    id: &SessionId,
    bytes: &[u8],
    listing: Option<&Listing>,
    public: &AuditPub,
    out: &mut Outcome,
) {
    let status = status(listing);
    if matches!(status, Status::Unlisted) {
        out.problems
            .push("it has a record but is not in the index".into());
        out.racy = true;
    }
    if let Some(Listing {
        delete: Some((d, ..)),
        ..
    }) = listing
    {
        out.notes.push(format!(
            "the index deleted it (entry {d}) but its record is still present"
        ));
    }
    if bytes.is_empty() {
        out.problems.push("its record is empty".into());
        return;
    }
    let (raw, torn) = lines(bytes);
    let reads: Vec<Read<Event>> = raw.iter().map(|l| read_event(l, id)).collect();

    // A whole record of another session (files swapped or copied): one
    // problem, not one per line.
    let intact = reads
        .iter()
        .filter(|r| matches!(r, Read::Intact(_)))
        .count();
    if intact == 0
        && let Some(other) = reads.iter().find_map(|r| match r {
            Read::Foreign { session, .. } => Some(session),
            _ => None,
        })
    {
        out.problems.push(format!(
            "its record holds session {other}'s events, not its own (a record of another session)"
        ));
        return;
    }

    let label = format!("session {id}");
    let scan = scan(
        reads,
        format::genesis(id.as_str()),
        label,
        EVENT,
        |e: &Event| matches!(e.body, Body::Seal { .. }),
    );
    out.events = scan.chain.len() as u64;
    out.problems.extend(scan.problems.iter().cloned());
    check_shape(&scan.chain, public, &mut out.problems);

    if let Some(sealed) = scan.sealed
        && (scan.after_final > 0 || torn > 0)
    {
        let what = match (scan.after_final, torn) {
            (0, t) => format!("{t} bytes follow"),
            (1, _) => "a line follows".to_owned(),
            (n, _) => format!("{n} lines follow"),
        };
        out.problems
            .push(format!("{what} the seal at event {sealed}"));
    } else if torn > 0 {
        let what = EVENT.at(scan.next);
        let p = format!("{what} is damaged: the record ends in a partial line ({torn} bytes)");
        if matches!(status, Status::Live) {
            out.notes.push(format!(
                "{p}: a write in progress, or cut short by a crash (recovery removes it)"
            ));
        } else {
            out.problems.push(p);
        }
    }

    if let (Some((_, user, server)), Some(Link { item: first, .. })) =
        (listing.and_then(|l| l.open.as_ref()), scan.chain.get(&0))
        && let Body::Start(start) = &first.body
        && (&start.user, &start.server) != (user, server)
    {
        out.problems.push(format!(
            "the index opens it for user {user} on server {server}, its start event says user {} on server {}",
            start.user, start.server
        ));
    }

    let last = scan.chain.keys().next_back().copied();
    let checkpoint = scan
        .chain
        .values()
        .filter(|l| matches!(l.item.body, Body::Checkpoint { .. }))
        .map(|l| l.seq)
        .next_back();
    let since = match checkpoint {
        Some(k) => format!("after checkpoint at event {k}"),
        None => "before its first checkpoint".to_owned(),
    };
    match (scan.sealed, status) {
        (None, Status::Live) => {
            let unsigned = match (last, checkpoint) {
                (Some(l), Some(k)) => l - k,
                (Some(l), None) => l.saturating_add(1),
                (None, _) => 0,
            };
            out.notes.push(format!(
                "live: {} events so far, the last {unsigned} ({since}) not signed yet",
                scan.chain.len()
            ));
        }
        (None, Status::Closed(entry, _, events, _)) => {
            let ends = match last {
                Some(l) => format!("ends at event {l} without a seal"),
                None => "has no readable event".to_owned(),
            };
            let have = last.map_or(0, |l| l.saturating_add(1));
            let missing = if events > have {
                format!(" ({} missing)", EVENT.span_is(have, events - 1))
            } else {
                String::new()
            };
            out.problems.push(format!(
                "truncated {since}: the record {ends}, the index closed it (entry {entry}) with {events} events{missing}"
            ));
        }
        (None, Status::Unlisted) => {
            if let Some(l) = last {
                out.problems
                    .push(format!("its record ends at event {l} without a seal"));
            }
        }
        (Some(k), Status::Live) => {
            out.problems.push(format!(
                "the record is sealed (seal at event {k}) but the index does not close it"
            ));
            out.racy = true;
        }
        (Some(k), Status::Closed(entry, state, events, head)) => {
            let ours = scan.chain.get(&k).map(|l| l.hash.hex()).unwrap_or_default();
            let ours_events = k.saturating_add(1);
            if events != ours_events || head != ours {
                out.problems.push(format!(
                    "the index (entry {entry}) says {events} events ending in {}, the record has {ours_events} events ending in {}",
                    short(head),
                    short(&ours)
                ));
            }
            let end = k.checked_sub(1).and_then(|e| scan.chain.get(&e));
            if let (Some(state), Some(end)) = (state, end)
                && let Body::End { state: ended, .. } = &end.item.body
                && *ended != state
            {
                out.problems.push(format!(
                    "the index (entry {entry}) says it ended {}, its end (event {}) says {}",
                    state.as_str(),
                    end.seq,
                    ended.as_str()
                ));
            }
        }
        (Some(_), Status::Unlisted) => {}
    }
    if let Some(Link {
        seq,
        item:
            Event {
                body:
                    Body::End {
                        state: EndState::Aborted,
                        reason,
                    },
                ..
            },
        ..
    }) = scan.sealed.and_then(|k| scan.chain.get(&k.checked_sub(1)?))
    {
        out.notes.push(format!("aborted (event {seq}): {reason}"));
    }
}

/// What each intact event must be, where it is.
fn check_shape(chain: &BTreeMap<u64, Link<Event>>, public: &AuditPub, problems: &mut Vec<String>) {
    for (&seq, link) in chain {
        let body = &link.item.body;
        let kind = body.type_name();
        if link.item.v != FORMAT_VERSION {
            problems.push(format!(
                "event {seq} has format version {} (this verifier reads version {FORMAT_VERSION})",
                link.item.v
            ));
        }
        match (body.is_signed(), link.sig) {
            (true, None) => problems.push(format!("the {kind} at event {seq} is not signed")),
            (true, Some(sig)) if !public.verify(&link.hash, &sig) => {
                problems.push(format!("bad signature on {kind} at event {seq}"));
            }
            (false, Some(_)) => problems.push(format!(
                "event {seq} carries a signature, but a {kind} is never signed"
            )),
            _ => {}
        }
        match body {
            Body::Start(_) if seq != 0 => {
                problems.push(format!("event {seq} is a second start"));
            }
            Body::Checkpoint { events } if *events != seq => problems.push(format!(
                "the checkpoint at event {seq} counts {events} events before it"
            )),
            Body::Seal { events } if *events != seq => problems.push(format!(
                "seal count does not match: the seal at event {seq} counts {events} events before it"
            )),
            Body::End { .. } => {
                if let Some(after) = chain.get(&(seq.saturating_add(1)))
                    && !matches!(after.item.body, Body::Seal { .. })
                {
                    problems.push(format!(
                        "event {} (a {}) follows the end at event {seq}, where the seal belongs",
                        after.seq,
                        after.item.body.type_name()
                    ));
                }
            }
            _ => {}
        }
        if let Body::Seal { .. } = body {
            match seq.checked_sub(1).and_then(|b| chain.get(&b)) {
                Some(before) if !matches!(before.item.body, Body::End { .. }) => {
                    problems.push(format!(
                        "the seal at event {seq} does not follow an end (event {} is a {})",
                        before.seq,
                        before.item.body.type_name()
                    ));
                }
                None if seq == 0 => problems.push("event 0 is a seal".into()),
                _ => {}
            }
        }
    }
    if let Some(first) = chain.get(&0) {
        match &first.item.body {
            Body::Start(_)
            | Body::End {
                state: EndState::Aborted,
                ..
            } => {}
            other => problems.push(format!("event 0 is a {}, not the start", other.type_name())),
        }
    }
}

// ---------------------------------------------------------------------------
// `mcpgate-broker verify`.

/// `verify` could not start (no records there, no public key): a usage
/// error, exit status 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Runs `mcpgate-broker verify`: prints the report to `out` and returns
/// whether nothing is wrong. Errors before verifying are [`UsageError`]s.
pub fn run(args: &VerifyArgs, out: &mut dyn Write) -> anyhow::Result<bool> {
    let dir = records_dir(&args.dir)?;
    let pubkey = match &args.pubkey {
        Some(p) => p.clone(),
        None => {
            let p = dir.join("..").join(AUDIT_PUB_FILE);
            if !p.is_file() {
                return Err(UsageError(format!(
                    "no public key at {}: pass the broker's audit.pub with --pubkey FILE",
                    p.display()
                ))
                .into());
            }
            p
        }
    };
    let public = AuditPub::load(&pubkey).map_err(|e| UsageError(format!("{e:#}")))?;
    let which = match &args.session {
        Some(id) => Which::Session(id.clone()),
        None => Which::All,
    };
    let report = verify(&FileStore::at(&dir), &public, &which);
    match args.output {
        Output::Json => writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?,
        Output::Table => write_text(&report, &public, out)?,
    }
    out.flush()?;
    Ok(report.ok)
}

/// The records directory `dir` names: itself, or a data dir's `records/`.
fn records_dir(dir: &Path) -> Result<PathBuf, UsageError> {
    let nested = dir.join(super::RECORDS_DIR);
    if nested.join(INDEX_FILE).is_file() {
        return Ok(nested);
    }
    if dir.join(INDEX_FILE).is_file() || dir.join(SESSIONS_DIR).is_dir() {
        return Ok(dir.to_owned());
    }
    if nested.join(SESSIONS_DIR).is_dir() {
        return Ok(nested);
    }
    Err(UsageError(format!(
        "{}: not a records directory (no {INDEX_FILE}, no {SESSIONS_DIR}/); pass the broker's records directory or its data dir",
        dir.display()
    )))
}

fn plural(n: u64, one: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {one}s")
    }
}

/// The report as lines: each problem, each note, then the verdict.
pub fn write_text(
    report: &VerifyReport,
    public: &AuditPub,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    for p in &report.problems {
        writeln!(out, "{p}")?;
    }
    for n in &report.notes {
        writeln!(out, "note: {n}")?;
    }
    let counts = format!(
        "{}, {}",
        plural(report.sessions, "session"),
        plural(report.events, "event")
    );
    if report.ok {
        writeln!(
            out,
            "OK: {counts} verified with key {}",
            public.fingerprint()
        )
    } else {
        writeln!(
            out,
            "FAILED: {} found in {counts}, checked with key {}",
            plural(report.problems.len() as u64, "problem"),
            public.fingerprint()
        )
    }
}
