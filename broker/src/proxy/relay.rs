//! The session loop: two pumps, two writers, and one supervisor.
//!
//! Each direction is a *pump* task (read a line, parse, run the stages,
//! forward) so a stage that waits (an approval, later) never holds up the
//! other direction or the session's deadline. Each peer has one *writer*
//! task fed by a channel, so forwarded messages and the relay's own error
//! answers are written whole, one line at a time, never interleaved. The
//! supervisor waits for the first reason to end (client EOF, upstream exit,
//! deadline, shutdown, an I/O error), then winds everything down in an
//! order that loses no answer the upstream already gave.
//!
//! Both pumps keep track of the requests their sender made that the other
//! side has not answered yet ([`Pending`]). That is what lets the relay
//! answer every open client request when the session ends, refuse a
//! duplicate id, and drop a response to a request nobody made.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mcpgate_shared::jsonrpc::{
    GATEWAY_REFUSED, Id, Kind, Message, RECORD_FAILED, Rejection, UPSTREAM_INVALID,
    UPSTREAM_UNAVAILABLE, error_line, too_large,
};
use mcpgate_shared::mcp;
use mcpgate_shared::record::Peer;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::frame::{Frame, Head, LineReader, sniff};
use super::record::Tape;
use super::stage::{self, Direction, Flow, Notifier, Stage};
use super::{EndReason, Limits, SessionContext};
use crate::upstream::Upstream;

/// Lines queued per writer before a pump waits: backpressure, not a buffer.
const QUEUE: usize = 32;
/// Requests one side may have open at once; more are refused, so a peer
/// cannot grow the bookkeeping without bound.
const MAX_PENDING: usize = 4096;
/// How long the wind-down waits for a writer to flush or for the upstream's
/// last output, each; a peer that stops reading cannot stall the end.
const DRAIN: Duration = Duration::from_secs(1);
/// After the upstream closed its output, how long to wait for its exit
/// status so the end reason can say how it ended.
const STATUS_WAIT: Duration = Duration::from_millis(500);

/// Relays one session between `client` (the tunnel) and `upstream` until
/// the client leaves, the upstream exits, `deadline` passes or `shutdown`
/// resolves. Always shuts the upstream down (stdin EOF, SIGTERM, SIGKILL)
/// before returning, and answers every client request still open with a
/// JSON-RPC error saying why.
///
/// With a `tape`, every line either peer receives is recorded first: what
/// one peer sent, only once its event is durable (see [`Tape`]).
#[allow(clippy::too_many_arguments)]
#[tracing::instrument(
    name = "relay",
    skip_all,
    fields(session = %ctx.session, user = %ctx.user, server = %ctx.server)
)]
pub async fn relay<C>(
    client: C,
    mut upstream: Upstream,
    ctx: SessionContext,
    limits: Limits,
    stages: Vec<Arc<dyn Stage>>,
    tape: Option<Arc<Tape>>,
    deadline: tokio::time::Instant,
    shutdown: impl Future<Output = ()> + Send,
) -> EndReason
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Some((up_stdin, up_stdout)) = upstream.take_stdio() else {
        let ending = upstream.shutdown().await;
        tracing::warn!(upstream = %ending, "relay started without the upstream's stdio");
        return EndReason::Error("the upstream's stdio was already taken".into());
    };
    let span = tracing::Span::current();
    let stages: Arc<[Arc<dyn Stage>]> = stages.into();
    let (client_r, client_w) = tokio::io::split(client);
    let (client_tx, client_rx) = mpsc::channel::<Vec<u8>>(QUEUE);
    let (up_tx, up_rx) = mpsc::channel::<Vec<u8>>(QUEUE);
    // Each task reports at most one event; the supervisor keeps a sender so
    // the channel never reads as closed.
    let (events_tx, mut events) = mpsc::channel::<Event>(8);
    let client_pending = Arc::new(Pending::default());
    let upstream_pending = Arc::new(Pending::default());

    let client_writer = tokio::spawn(
        write_lines(
            client_w,
            client_rx,
            events_tx.clone(),
            Event::ClientWriteFailed,
        )
        .instrument(span.clone()),
    );
    let upstream_writer = tokio::spawn(
        write_lines(
            up_stdin,
            up_rx,
            events_tx.clone(),
            Event::UpstreamWriteFailed,
        )
        .instrument(span.clone()),
    );
    let from_upstream = Pump {
        direction: Direction::FromUpstream,
        ctx: ctx.clone(),
        stages: stages.clone(),
        limit: limits.max_message_bytes,
        // Weak: the upstream's stdin must close as soon as the client side
        // is done, even though this pump may still answer the upstream.
        to_sender: Outbox::new(Tx::Weak(up_tx.downgrade()), Peer::Upstream, &tape),
        to_receiver: Outbox::new(Tx::Strong(client_tx.clone()), Peer::Client, &tape),
        sent: upstream_pending.clone(),
        received: client_pending.clone(),
        holds: None,
    };
    let holds = Holds {
        to_upstream: Outbox::new(Tx::Weak(up_tx.downgrade()), Peer::Upstream, &tape),
        to_client: Outbox::new(Tx::Weak(client_tx.downgrade()), Peer::Client, &tape),
        tasks: Mutex::default(),
    };
    let from_client = Pump {
        direction: Direction::FromClient,
        ctx: ctx.clone(),
        stages,
        limit: limits.max_message_bytes,
        to_sender: Outbox::new(Tx::Strong(client_tx.clone()), Peer::Client, &tape),
        // The only strong sender to the upstream: when this pump ends, the
        // upstream writer flushes and closes the child's stdin.
        to_receiver: Outbox::new(Tx::Strong(up_tx), Peer::Upstream, &tape),
        sent: client_pending.clone(),
        received: upstream_pending,
        holds: Some(Arc::new(holds)),
    };
    let c2u = tokio::spawn(
        from_client
            .run(
                LineReader::new(client_r, limits.max_message_bytes),
                events_tx.clone(),
            )
            .instrument(span.clone()),
    );
    let u2c = tokio::spawn(
        from_upstream
            .run(
                LineReader::new(up_stdout, limits.max_message_bytes),
                events_tx.clone(),
            )
            .instrument(span.clone()),
    );
    tracing::info!("relay started");

    tokio::pin!(shutdown);
    let reason = tokio::select! {
        biased;
        () = &mut shutdown => EndReason::Shutdown,
        () = tokio::time::sleep_until(deadline) => EndReason::MaxDuration,
        status = upstream.exited() => EndReason::UpstreamExited(describe_status(status)),
        Some(event) = events.recv() => event.into_reason(&mut upstream).await,
    };
    drop(events_tx);
    tracing::debug!(%reason, "relay ending");

    // 1. Nothing more from the client reaches the upstream. On ClientClosed
    //    the pump has already forwarded everything it read and ended.
    c2u.abort();
    let _ = c2u.await;
    // What the upstream writes while it winds down is still the client's
    // when the client left (it may be half-closed and reading) or when the
    // upstream ended by itself (answers written just before it exited).
    // After the deadline or at shutdown, the session is over: cut it.
    let keep_output = matches!(
        reason,
        EndReason::ClientClosed | EndReason::UpstreamExited(_)
    );
    let u2c = if keep_output {
        Some(u2c)
    } else {
        u2c.abort();
        let _ = u2c.await;
        None
    };
    // 2. The upstream writer ends once its queue is written (the client
    //    pump held its only strong sender): the child's stdin closes.
    finish(upstream_writer, DRAIN).await;
    // 3. EOF, wait, SIGTERM, wait, SIGKILL.
    let ending = upstream.shutdown().await;
    // 4. The upstream is gone; what it wrote before is delivered.
    if let Some(u2c) = u2c {
        finish(u2c, DRAIN).await;
    }
    // 5. Every client request still open gets an answer.
    let open = client_pending.drain();
    let (code, message) = open_request_error(&reason, &ctx);
    let answered = open.len();
    let answer = async {
        for id in &open {
            let line = error_line(Some(id), code, &message, None);
            if let Some(tape) = &tape {
                tape.line(Peer::Client, &line).await;
            }
            if client_tx.send(line).await.is_err() {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN, answer).await;
    drop(client_tx);
    finish(client_writer, DRAIN).await;
    tracing::info!(%reason, upstream = %ending, answered, "relay ended");
    reason
}

/// The error an open client request gets when the session ends under it.
fn open_request_error(reason: &EndReason, ctx: &SessionContext) -> (i64, String) {
    let server = &ctx.server;
    match reason {
        EndReason::UpstreamExited(how) => (
            UPSTREAM_UNAVAILABLE,
            format!("upstream server {server} exited: {how}"),
        ),
        EndReason::MaxDuration => (
            GATEWAY_REFUSED,
            "the session reached its maximum duration".to_owned(),
        ),
        EndReason::Shutdown => (
            UPSTREAM_UNAVAILABLE,
            "the gateway is shutting down".to_owned(),
        ),
        EndReason::ClientClosed => (
            UPSTREAM_UNAVAILABLE,
            format!("the session ended before upstream server {server} answered"),
        ),
        EndReason::Error(e) => (UPSTREAM_UNAVAILABLE, format!("the session ended: {e}")),
    }
}

fn describe_status(status: io::Result<std::process::ExitStatus>) -> String {
    match status {
        Ok(status) => status.to_string(),
        Err(e) => format!("exit status unknown: {e}"),
    }
}

/// The first thing that happened to a task; the supervisor turns it into
/// the session's end reason.
#[derive(Debug)]
enum Event {
    ClientEof,
    ClientReadFailed(io::Error),
    ClientWriteFailed(io::Error),
    UpstreamEof,
    UpstreamReadFailed(io::Error),
    UpstreamWriteFailed(io::Error),
}

impl Event {
    async fn into_reason(self, upstream: &mut Upstream) -> EndReason {
        match self {
            Event::ClientEof => EndReason::ClientClosed,
            Event::ClientReadFailed(e) => client_io_reason("reading from", e),
            Event::ClientWriteFailed(e) => client_io_reason("writing to", e),
            // A closed stdout or a refused write almost always means the
            // child is exiting; wait a moment so the reason can say how.
            Event::UpstreamEof => upstream_gone(upstream, "it closed its output").await,
            Event::UpstreamWriteFailed(e) => {
                upstream_gone(upstream, &format!("it stopped reading its input ({e})")).await
            }
            Event::UpstreamReadFailed(e) => {
                EndReason::Error(format!("reading from the upstream: {e}"))
            }
        }
    }
}

/// A client connection that breaks (reset, TLS without close_notify) is the
/// client leaving, not a broker error.
fn client_io_reason(what: &str, e: io::Error) -> EndReason {
    match e.kind() {
        io::ErrorKind::UnexpectedEof
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => EndReason::ClientClosed,
        _ => EndReason::Error(format!("{what} the client: {e}")),
    }
}

async fn upstream_gone(upstream: &mut Upstream, otherwise: &str) -> EndReason {
    match tokio::time::timeout(STATUS_WAIT, upstream.exited()).await {
        Ok(status) => EndReason::UpstreamExited(describe_status(status)),
        Err(_) => EndReason::UpstreamExited(otherwise.to_owned()),
    }
}

/// Waits for a task to end by itself for up to `limit`, then aborts it.
async fn finish<T>(mut task: JoinHandle<T>, limit: Duration) {
    if tokio::time::timeout(limit, &mut task).await.is_err() {
        task.abort();
        let _ = task.await;
    }
}

/// Writes queued lines to one peer, flushing whenever the queue runs dry;
/// at the end (all senders gone) flushes and shuts the stream down, which
/// for the client is a clean TLS close and for the child the end of stdin.
async fn write_lines<W: AsyncWrite + Unpin>(
    mut out: W,
    mut queue: mpsc::Receiver<Vec<u8>>,
    events: mpsc::Sender<Event>,
    failed: fn(io::Error) -> Event,
) {
    let written = async {
        while let Some(line) = queue.recv().await {
            out.write_all(&line).await?;
            if queue.is_empty() {
                out.flush().await?;
            }
        }
        out.flush().await?;
        out.shutdown().await
    };
    if let Err(e) = written.await {
        let _ = events.try_send(failed(e));
    }
}

/// A peer's writer queue. The upstream pump holds the upstream's queue
/// weakly, see [`relay`].
#[derive(Clone)]
enum Tx {
    Strong(mpsc::Sender<Vec<u8>>),
    Weak(mpsc::WeakSender<Vec<u8>>),
}

/// Where a pump sends lines to one peer, recording each on the way.
#[derive(Clone)]
struct Outbox {
    tx: Tx,
    to: Peer,
    tape: Option<Arc<Tape>>,
}

/// How a forwarded message fared.
enum Sent {
    Delivered,
    /// Its event could not be recorded, so it was not forwarded; what it
    /// was, so the one waiting for it can be answered.
    Unrecorded(Kind),
    /// The peer's writer is gone.
    Gone,
}

impl Outbox {
    fn new(tx: Tx, to: Peer, tape: &Option<Arc<Tape>>) -> Outbox {
        Outbox {
            tx,
            to,
            tape: tape.clone(),
        }
    }

    /// The peer's queue, weakly (for a [`Notifier`]).
    fn weak(&self) -> mpsc::WeakSender<Vec<u8>> {
        match &self.tx {
            Tx::Strong(tx) => tx.downgrade(),
            Tx::Weak(tx) => tx.clone(),
        }
    }

    async fn write(&self, line: Vec<u8>) -> bool {
        match &self.tx {
            Tx::Strong(tx) => tx.send(line).await.is_ok(),
            Tx::Weak(tx) => match tx.upgrade() {
                Some(tx) => tx.send(line).await.is_ok(),
                None => false,
            },
        }
    }

    /// Sends a line the broker made (an error, a notification), recorded
    /// first as best it can be. `false` when the peer's writer is gone.
    async fn send(&self, line: Vec<u8>) -> bool {
        if let Some(tape) = &self.tape {
            tape.line(self.to, &line).await;
        }
        self.write(line).await
    }

    /// Forwards `msg` from `from`: recorded first, write-ahead; not sent
    /// when that fails (unless the tape fails open).
    async fn forward(&self, from: Peer, msg: Message) -> Sent {
        let line = msg.to_line();
        if let Some(tape) = &self.tape {
            let kind = msg.kind().clone();
            if tape.message(from, self.to, msg, line.len()).await.is_err() && !tape.fails_open() {
                return Sent::Unrecorded(kind);
            }
        }
        if self.write(line).await {
            Sent::Delivered
        } else {
            Sent::Gone
        }
    }
}

/// Ids of requests one side sent that the other has not answered yet.
#[derive(Debug, Default)]
struct Pending(Mutex<HashSet<Id>>);

impl Pending {
    fn set(&self) -> std::sync::MutexGuard<'_, HashSet<Id>> {
        // Nothing panics while holding the lock; if something ever did, the
        // set is still a valid set.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
    fn contains(&self, id: &Id) -> bool {
        self.set().contains(id)
    }
    fn len(&self) -> usize {
        self.set().len()
    }
    fn insert(&self, id: Id) {
        self.set().insert(id);
    }
    fn remove(&self, id: &Id) -> bool {
        self.set().remove(id)
    }
    fn drain(&self) -> Vec<Id> {
        self.set().drain().collect()
    }
}

/// What a refused line looked like, as far as could be told: decides who,
/// if anyone, is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Request,
    Notification,
    Response,
    /// Not an object, a batch, or nothing recognisable.
    Unknown,
}

fn shape(head: &Head) -> Shape {
    match (head.method, head.has_id, head.outcome) {
        (true, true, _) => Shape::Request,
        (true, false, _) => Shape::Notification,
        (false, _, true) => Shape::Response,
        _ => Shape::Unknown,
    }
}

/// How a pump ended.
enum PumpEnd {
    Eof,
    ReadFailed(io::Error),
    /// The peer it forwards to is gone; that peer's writer reports why.
    ReceiverGone,
}

/// One direction of the relay.
struct Pump {
    direction: Direction,
    ctx: SessionContext,
    stages: Arc<[Arc<dyn Stage>]>,
    limit: usize,
    /// Answers to the side this pump reads from.
    to_sender: Outbox,
    /// Messages for the other side.
    to_receiver: Outbox,
    /// Requests the sender made that the receiver has not answered.
    sent: Arc<Pending>,
    /// Requests the receiver made that the sender has not answered.
    received: Arc<Pending>,
    /// Client requests a stage is holding (approvals); `None` upstream.
    holds: Option<Arc<Holds>>,
}

/// The client requests being held, each waiting in a task of its own so
/// the pump goes on. Senders are weak: a held call never keeps a peer's
/// writer open. When the pump goes (the session ends), every hold is
/// aborted, which drops its future: the stage that made it sees that as
/// a cancellation.
struct Holds {
    to_upstream: Outbox,
    to_client: Outbox,
    tasks: Mutex<HashMap<Id, JoinHandle<()>>>,
}

impl Holds {
    fn tasks(&self) -> std::sync::MutexGuard<'_, HashMap<Id, JoinHandle<()>>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops waiting for `id`; `true` if it was held.
    fn cancel(&self, id: &Id) -> bool {
        match self.tasks().remove(id) {
            Some(task) => {
                task.abort();
                true
            }
            None => false,
        }
    }
}

impl Drop for Holds {
    fn drop(&mut self) {
        for (_, task) in self.tasks().drain() {
            task.abort();
        }
    }
}

impl Drop for Pump {
    fn drop(&mut self) {
        if let Some(holds) = &self.holds {
            for (_, task) in holds.tasks().drain() {
                task.abort();
            }
        }
    }
}

impl Pump {
    async fn run<R: AsyncRead + Unpin>(
        self,
        mut reader: LineReader<R>,
        events: mpsc::Sender<Event>,
    ) {
        let end = loop {
            let frame = match reader.next().await {
                Ok(Some(frame)) => frame,
                Ok(None) => break PumpEnd::Eof,
                Err(e) => break PumpEnd::ReadFailed(e),
            };
            let delivered = match frame {
                Frame::Line(line) => match Message::parse(&line) {
                    Ok(msg) => self.message(msg).await,
                    Err(rejection) => {
                        let head = sniff(&line);
                        self.refused(&head, rejection).await
                    }
                },
                Frame::Oversized { bytes, head } => {
                    tracing::warn!(direction = %self.direction, bytes, limit = self.limit, "message too large");
                    let mut rejection = too_large(self.limit);
                    rejection.id = head.id.clone();
                    self.refused(&head, rejection).await
                }
            };
            if !delivered {
                break PumpEnd::ReceiverGone;
            }
        };
        let event = match (self.direction, end) {
            (_, PumpEnd::ReceiverGone) => return,
            (Direction::FromClient, PumpEnd::Eof) => Event::ClientEof,
            (Direction::FromClient, PumpEnd::ReadFailed(e)) => Event::ClientReadFailed(e),
            (Direction::FromUpstream, PumpEnd::Eof) => Event::UpstreamEof,
            (Direction::FromUpstream, PumpEnd::ReadFailed(e)) => Event::UpstreamReadFailed(e),
        };
        let _ = events.try_send(event);
    }

    /// A valid message: bookkeeping, stages, forward. `false` when the
    /// receiver is gone.
    async fn message(&self, msg: Message) -> bool {
        match msg.kind() {
            Kind::Request { id, .. } => {
                let refusal = if self.sent.contains(id) {
                    Some(format!("request id {id} is already awaiting a response"))
                } else if self.sent.len() >= MAX_PENDING {
                    Some(format!(
                        "too many requests awaiting a response (at most {MAX_PENDING})"
                    ))
                } else {
                    None
                };
                if let Some(refusal) = refusal {
                    tracing::warn!(direction = %self.direction, %id, "request refused: {refusal}");
                    self.to_sender
                        .send(error_line(Some(id), GATEWAY_REFUSED, &refusal, None))
                        .await;
                    return true;
                }
            }
            Kind::Notification { method } if method == mcp::CANCELLED => {
                // A held call the client gives up on never reaches the
                // upstream, so neither does its cancellation.
                if let (Some(holds), Some(id)) = (&self.holds, cancelled_request(&msg))
                    && holds.cancel(&id)
                {
                    self.sent.remove(&id);
                    tracing::info!(%id, "held request cancelled by the client");
                    return true;
                }
            }
            Kind::Result { id } | Kind::Error { id: Some(id) } if !self.received.contains(id) => {
                // Answers nothing the receiver asked (or a request it has
                // cancelled): passing it on could only confuse the receiver.
                tracing::warn!(direction = %self.direction, %id, "response to no open request dropped");
                return true;
            }
            _ => {}
        }

        let request_id = match msg.kind() {
            Kind::Request { id, .. } => Some(id.clone()),
            _ => None,
        };
        match stage::run(&self.stages, &self.ctx, self.direction, msg).await {
            Flow::Forward(msg) => {
                match msg.kind() {
                    // Noted before it can reach the receiver, so its
                    // answer always finds it.
                    Kind::Request { id, .. } => self.sent.insert(id.clone()),
                    Kind::Result { id } | Kind::Error { id: Some(id) } => {
                        self.received.remove(id);
                    }
                    Kind::Notification { method } if method == mcp::CANCELLED => {
                        // The receiver need not answer a cancelled request.
                        if let Some(id) = cancelled_request(&msg) {
                            self.sent.remove(&id);
                        }
                    }
                    _ => {}
                }
                match self.to_receiver.forward(self.from(), msg).await {
                    Sent::Delivered => true,
                    Sent::Gone => false,
                    Sent::Unrecorded(kind) => self.unrecorded(&kind).await,
                }
            }
            Flow::Reply(mut line) => {
                if !line.ends_with(b"\n") {
                    line.push(b'\n');
                }
                self.to_sender.send(line).await;
                true
            }
            Flow::Drop => true,
            Flow::Hold(hold) => {
                let (Some(holds), Some(id)) = (&self.holds, request_id) else {
                    tracing::error!(direction = %self.direction, "a stage held a message that cannot be held; dropped");
                    return true;
                };
                self.hold(holds, id, hold);
                true
            }
        }
    }

    /// Who sent what this pump reads.
    fn from(&self) -> Peer {
        match self.direction {
            Direction::FromClient => Peer::Client,
            Direction::FromUpstream => Peer::Upstream,
        }
    }

    /// A message whose event could not be recorded was not forwarded
    /// (fail closed): whoever waits for an answer gets an error instead.
    /// `false` when that peer is gone.
    async fn unrecorded(&self, kind: &Kind) -> bool {
        match kind {
            Kind::Request { id, .. } => {
                self.sent.remove(id);
                self.to_sender.send(unrecorded_answer(id)).await;
                true
            }
            Kind::Result { id } | Kind::Error { id: Some(id) } => {
                // The receiver asked; it gets an error, never the
                // unrecorded answer.
                let line = error_line(
                    Some(id),
                    RECORD_FAILED,
                    "the session record cannot be written, so the answer was withheld",
                    None,
                );
                self.to_receiver.send(line).await
            }
            _ => true,
        }
    }

    /// Runs a held request in its own task: the id stays open (so it cannot
    /// be reused, and it is answered if the session ends), and what the
    /// hold resolves to is forwarded or answered like any other flow.
    fn hold(&self, holds: &Arc<Holds>, id: Id, hold: stage::Hold) {
        self.sent.insert(id.clone());
        let notifier = Notifier::new(holds.to_client.weak(), holds.to_client.tape.clone());
        let sent = self.sent.clone();
        let task_holds = Arc::downgrade(holds);
        let task_id = id.clone();
        let to_upstream = holds.to_upstream.clone();
        let to_client = holds.to_client.clone();
        // Locked across the spawn: the task removes itself from the map
        // when it ends, which must come after it was put there.
        let mut tasks = holds.tasks();
        let task = tokio::spawn(
            async move {
                let flow = hold.start(notifier).await;
                if let Some(holds) = task_holds.upgrade() {
                    holds.tasks().remove(&task_id);
                }
                let (line, to) = match flow {
                    Flow::Forward(msg) => match to_upstream.forward(Peer::Client, msg).await {
                        Sent::Delivered | Sent::Gone => return,
                        Sent::Unrecorded(_) => {
                            sent.remove(&task_id);
                            (unrecorded_answer(&task_id), to_client)
                        }
                    },
                    Flow::Reply(mut line) => {
                        sent.remove(&task_id);
                        if !line.ends_with(b"\n") {
                            line.push(b'\n');
                        }
                        (line, to_client)
                    }
                    Flow::Drop | Flow::Hold(_) => {
                        sent.remove(&task_id);
                        tracing::error!(id = %task_id, "a held request resolved to nothing; answered with an error");
                        let line = error_line(
                            Some(&task_id),
                            GATEWAY_REFUSED,
                            "the gateway could not decide on this request",
                            None,
                        );
                        (line, to_client)
                    }
                };
                to.send(line).await;
            }
            .in_current_span(),
        );
        tasks.insert(id, task);
    }

    /// A line that was refused (invalid or too large): it never reaches the
    /// receiver. A request (or, from the client, anything unrecognisable) is
    /// answered with the refusal; a broken response that answers an open
    /// request of the receiver is turned into an error for that request, so
    /// the receiver does not wait forever. `false` when the receiver is gone.
    async fn refused(&self, head: &Head, mut rejection: Rejection) -> bool {
        let shape = shape(head);
        if rejection.id.is_none() {
            rejection.id = head.id.clone();
        }
        tracing::warn!(
            direction = %self.direction,
            code = rejection.code,
            shape = ?shape,
            id = ?rejection.id,
            "message refused"
        );
        // The reason can quote key names from the message: debug only.
        tracing::debug!(direction = %self.direction, reason = %rejection.message, "refusal reason");
        match shape {
            Shape::Request => {
                if rejection.answerable {
                    self.to_sender.send(rejection.to_line()).await;
                }
            }
            // An upstream's garbage is its own problem; a client's is
            // answered, as JSON-RPC asks for parse errors and batches.
            Shape::Unknown if self.direction == Direction::FromClient => {
                if rejection.answerable {
                    self.to_sender.send(rejection.to_line()).await;
                }
            }
            Shape::Unknown | Shape::Notification => {}
            Shape::Response => {
                if let Some(id) = &rejection.id
                    && self.received.remove(id)
                {
                    let (code, message) = match self.direction {
                        Direction::FromUpstream => (
                            UPSTREAM_INVALID,
                            format!(
                                "upstream server {} sent an invalid response: {}",
                                self.ctx.server, rejection.message
                            ),
                        ),
                        Direction::FromClient => (
                            GATEWAY_REFUSED,
                            format!("the client's response was refused: {}", rejection.message),
                        ),
                    };
                    return self
                        .to_receiver
                        .send(error_line(Some(id), code, &message, None))
                        .await;
                }
            }
        }
        true
    }
}

/// The answer to a request that was not forwarded because its event could
/// not be recorded.
fn unrecorded_answer(id: &Id) -> Vec<u8> {
    error_line(
        Some(id),
        RECORD_FAILED,
        "the session record cannot be written, so the call was not forwarded",
        None,
    )
}

/// The `requestId` a `notifications/cancelled` names.
fn cancelled_request(msg: &Message) -> Option<Id> {
    match msg.params()?.get("requestId")? {
        Value::String(s) => Some(Id::String(s.clone())),
        Value::Number(n) => n.as_i64().map(Id::Number),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use async_trait::async_trait;
    use mcpgate_shared::jsonrpc::{INVALID_REQUEST, PARSE_ERROR};
    use tokio::io::{AsyncBufReadExt, BufReader, DuplexStream, Lines, ReadHalf, WriteHalf};
    use tokio::sync::oneshot;
    use tokio::time::{Instant, timeout};

    use super::*;
    use crate::config::StdioServer;
    use crate::proxy::Log;
    use crate::record::Recorder;
    use mcpgate_shared::names::SessionId;

    const TEST_LIMIT: Duration = Duration::from_secs(20);

    fn ctx() -> SessionContext {
        SessionContext {
            session: "s-relay".parse().unwrap(),
            user: "alice".parse().unwrap(),
            server: "demo".parse().unwrap(),
            roles: vec!["engineer".parse().unwrap()],
        }
    }

    /// A real child process as the upstream: a tiny shell script.
    fn sh(script: &str) -> Upstream {
        let spec = StdioServer {
            description: None,
            command: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            cwd: None,
            env: BTreeMap::new(),
            shutdown_grace: Duration::from_millis(300),
        };
        Upstream::spawn(
            &"demo".parse().unwrap(),
            &spec,
            Path::new("/"),
            &"s-relay".parse().unwrap(),
        )
        .unwrap()
    }

    /// Echoes every line it receives, and when its input ends reports how
    /// many lines reached it: the proof of what the relay forwarded.
    const COUNTING_ECHO: &str = r#"n=0; while IFS= read -r l; do n=$((n+1)); printf '%s\n' "$l"; done; printf '{"jsonrpc":"2.0","method":"notifications/count","params":{"lines":%d}}\n' "$n""#;

    /// The client end of a relayed session.
    struct Session {
        lines: Lines<BufReader<ReadHalf<DuplexStream>>>,
        out: WriteHalf<DuplexStream>,
        relay: JoinHandle<EndReason>,
        stop: Option<oneshot::Sender<()>>,
    }

    fn start(
        upstream: Upstream,
        max_message_bytes: usize,
        stages: Vec<Arc<dyn Stage>>,
        max_duration: Duration,
    ) -> Session {
        start_taped(upstream, max_message_bytes, stages, max_duration, None)
    }

    fn start_taped(
        upstream: Upstream,
        max_message_bytes: usize,
        stages: Vec<Arc<dyn Stage>>,
        max_duration: Duration,
        tape: Option<Arc<Tape>>,
    ) -> Session {
        let (ours, theirs) = tokio::io::duplex(1 << 20);
        let (stop, stopped) = oneshot::channel::<()>();
        let relay = tokio::spawn(relay(
            theirs,
            upstream,
            ctx(),
            Limits { max_message_bytes },
            stages,
            tape,
            Instant::now() + max_duration,
            async move {
                let _ = stopped.await;
            },
        ));
        let (read, out) = tokio::io::split(ours);
        Session {
            lines: BufReader::new(read).lines(),
            out,
            relay,
            stop: Some(stop),
        }
    }

    impl Session {
        async fn send(&mut self, line: &str) {
            self.out.write_all(line.as_bytes()).await.unwrap();
            self.out.write_all(b"\n").await.unwrap();
        }
        async fn recv(&mut self) -> Option<String> {
            self.lines.next_line().await.unwrap()
        }
        async fn recv_json(&mut self) -> Value {
            let line = self.recv().await.expect("a line from the relay");
            serde_json::from_str(&line).unwrap()
        }
        async fn close(&mut self) {
            self.out.shutdown().await.unwrap();
        }
        async fn rest(&mut self) -> Vec<Value> {
            let mut out = Vec::new();
            while let Some(line) = self.recv().await {
                out.push(serde_json::from_str(&line).unwrap());
            }
            out
        }
        async fn end(self) -> EndReason {
            drop(self.stop);
            self.relay.await.unwrap()
        }
    }

    fn error_of(v: &Value) -> (Value, i64, String) {
        let e = &v["error"];
        (
            v["id"].clone(),
            e["code"].as_i64().unwrap(),
            e["message"].as_str().unwrap().to_owned(),
        )
    }

    #[tokio::test]
    async fn malformed_batch_and_oversized_lines_are_answered_and_never_reach_the_upstream() {
        timeout(TEST_LIMIT, async {
            let mut s = start(sh(COUNTING_ECHO), 1024, vec![], Duration::from_secs(60));
            let oversized = format!(
                r#"{{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{{"x":"{}"}}}}"#,
                "y".repeat(5000)
            );
            for line in [
                r#"{"jsonrpc":"2.0","id":1,"method":"#,
                "{not json",
                r#"[{"jsonrpc":"2.0","id":2,"method":"ping"}]"#,
                &oversized,
                r#"{"jsonrpc":"2.0","id":4,"method":"ping","extra":1}"#,
                r#"{"jsonrpc":"2.0","id":5,"method":"a","method":"b"}"#,
                // An invalid notification is dropped without an answer.
                r#"{"jsonrpc":"2.0","method":"notifications/x","Extra":1}"#,
                r#"{"jsonrpc":"2.0","method":"notifications/marker"}"#,
            ] {
                s.send(line).await;
            }
            s.close().await;
            let got = s.rest().await;
            let errors: Vec<_> = got.iter().take(6).map(error_of).collect();
            assert_eq!(errors[0].0, Value::from(1));
            assert_eq!(errors[0].1, PARSE_ERROR);
            assert_eq!(
                (errors[1].0.clone(), errors[1].1),
                (Value::Null, PARSE_ERROR)
            );
            assert_eq!(
                (errors[2].0.clone(), errors[2].1),
                (Value::Null, INVALID_REQUEST)
            );
            assert!(errors[2].2.contains("batch"), "{}", errors[2].2);
            assert_eq!(
                (errors[3].0.clone(), errors[3].1),
                (Value::from(3), INVALID_REQUEST)
            );
            assert!(errors[3].2.contains("too large"), "{}", errors[3].2);
            assert_eq!(
                (errors[4].0.clone(), errors[4].1),
                (Value::from(4), INVALID_REQUEST)
            );
            assert_eq!(
                (errors[5].0.clone(), errors[5].1),
                (Value::from(5), PARSE_ERROR)
            );
            assert_eq!(got[6]["method"], "notifications/marker");
            // Only the marker reached the upstream.
            assert_eq!(got[7]["params"]["lines"], 1, "{got:?}");
            assert_eq!(got.len(), 8, "{got:?}");
            assert_eq!(s.end().await, EndReason::ClientClosed);
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn messages_are_forwarded_in_canonical_form_both_ways() {
        timeout(TEST_LIMIT, async {
            // Echoes what reached it, then sends a sloppy line of its own.
            let script = r#"IFS= read -r l; printf '%s\n' "$l"; printf '%s\n' ' {"jsonrpc" : "2.0","method":"notifications/message", "params":{"level":"\u0069nfo"}}  '; cat >/dev/null"#;
            let mut s = start(sh(script), 4096, vec![], Duration::from_secs(60));
            s.send(r#"  {"jsonrpc":"2.0", "method":"notifications/progress","params":{"progressToken":"\u0074ok", "progress":1}}  "#)
                .await;
            assert_eq!(
                s.recv().await.unwrap(),
                r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"tok","progress":1}}"#
            );
            assert_eq!(
                s.recv().await.unwrap(),
                r#"{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info"}}"#
            );
            s.close().await;
            assert!(s.rest().await.is_empty());
            assert_eq!(s.end().await, EndReason::ClientClosed);
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn a_crashed_upstream_fails_open_requests_after_delivering_its_last_answer() {
        timeout(TEST_LIMIT, async {
            let script = r#"read a; printf '%s\n' '{"jsonrpc":"2.0","id":7,"result":{"ok":true}}'; read b; exit 3"#;
            let mut s = start(sh(script), 4096, vec![], Duration::from_secs(60));
            s.send(r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"a"}}"#).await;
            s.send(r#"{"jsonrpc":"2.0","id":"8","method":"tools/call","params":{"name":"b"}}"#).await;
            let got = s.rest().await;
            assert_eq!(got.len(), 2, "{got:?}");
            assert_eq!(got[0]["id"], 7);
            assert_eq!(got[0]["result"]["ok"], true);
            let (id, code, message) = error_of(&got[1]);
            assert_eq!((id, code), (Value::from("8"), UPSTREAM_UNAVAILABLE));
            assert!(message.contains("upstream server demo exited"), "{message}");
            assert!(message.contains('3'), "{message}");
            match s.end().await {
                EndReason::UpstreamExited(how) => assert!(how.contains('3'), "{how}"),
                other => panic!("{other:?}"),
            }
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn the_deadline_ends_the_session_and_fails_open_requests() {
        timeout(TEST_LIMIT, async {
            let started = Instant::now();
            // Never reads, never answers, ignores the end of its input.
            let mut s = start(
                sh("exec sleep 1000"),
                4096,
                vec![],
                Duration::from_millis(300),
            );
            s.send(r#"{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"x"}}"#)
                .await;
            let got = s.rest().await;
            assert_eq!(got.len(), 1, "{got:?}");
            let (id, code, message) = error_of(&got[0]);
            assert_eq!((id, code), (Value::from("a"), GATEWAY_REFUSED));
            assert!(message.contains("maximum duration"), "{message}");
            assert_eq!(s.end().await, EndReason::MaxDuration);
            assert!(started.elapsed() >= Duration::from_millis(300));
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn shutdown_ends_the_session_and_fails_open_requests() {
        timeout(TEST_LIMIT, async {
            let mut s = start(sh("exec cat"), 4096, vec![], Duration::from_secs(60));
            s.send(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#).await;
            // cat sends it back as a request of its own (its own id space):
            // proof that ours is on its way and open.
            assert_eq!(s.recv_json().await["method"], "ping");
            if let Some(stop) = s.stop.take() {
                let _ = stop.send(());
            }
            let got = s.rest().await;
            assert_eq!(got.len(), 1, "{got:?}");
            let (id, code, message) = error_of(&got[0]);
            assert_eq!((id, code), (Value::from(1), UPSTREAM_UNAVAILABLE));
            assert!(message.contains("shutting down"), "{message}");
            assert_eq!(s.end().await, EndReason::Shutdown);
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn server_requests_flow_and_unsolicited_responses_are_dropped() {
        timeout(TEST_LIMIT, async {
            let script = r#"printf '%s\n' '{"jsonrpc":"2.0","id":99,"result":{}}' '{"jsonrpc":"2.0","id":1,"method":"roots/list"}'; IFS= read -r l; printf '{"jsonrpc":"2.0","method":"notifications/got","params":{"line":%s}}\n' "$l"; cat >/dev/null"#;
            let mut s = start(sh(script), 4096, vec![], Duration::from_secs(60));
            // The response to nothing (id 99) never arrives; the server's
            // request does, with its id untouched.
            let request = s.recv_json().await;
            assert_eq!(request["method"], "roots/list");
            assert_eq!(request["id"], 1);
            // A response to nothing from the client is dropped too; the
            // answer to the server's request goes through.
            s.send(r#"{"jsonrpc":"2.0","id":42,"result":{}}"#).await;
            s.send(r#"{"jsonrpc":"2.0","id":1,"result":{"roots":[]}}"#).await;
            let got = s.recv_json().await;
            assert_eq!(got["method"], "notifications/got");
            assert_eq!(got["params"]["line"]["id"], 1);
            assert_eq!(got["params"]["line"]["result"]["roots"], serde_json::json!([]));
            s.close().await;
            assert!(s.rest().await.is_empty());
            assert_eq!(s.end().await, EndReason::ClientClosed);
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn broken_or_oversized_upstream_responses_become_upstream_invalid_errors() {
        timeout(TEST_LIMIT, async {
            let script = r#"read a; printf '%s\n' '{"jsonrpc":"2.0","id":5,"result":{},"extra":1}'; read b; printf '{"jsonrpc":"2.0","id":6,"result":{"x":"%s"}}\n' "$(head -c 3000 /dev/zero | tr '\0' y)"; cat >/dev/null"#;
            let mut s = start(sh(script), 1024, vec![], Duration::from_secs(60));
            s.send(r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"a"}}"#).await;
            let (id, code, message) = error_of(&s.recv_json().await);
            assert_eq!((id, code), (Value::from(5), UPSTREAM_INVALID));
            assert!(message.contains("invalid response"), "{message}");
            s.send(r#"{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"b"}}"#).await;
            let (id, code, message) = error_of(&s.recv_json().await);
            assert_eq!((id, code), (Value::from(6), UPSTREAM_INVALID));
            assert!(message.contains("too large"), "{message}");
            s.close().await;
            // Both were answered: nothing is left open at the end.
            assert!(s.rest().await.is_empty());
            assert_eq!(s.end().await, EndReason::ClientClosed);
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn a_duplicate_open_request_id_is_refused() {
        timeout(TEST_LIMIT, async {
            let mut s = start(sh(COUNTING_ECHO), 4096, vec![], Duration::from_secs(60));
            s.send(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"}}"#)
                .await;
            s.send(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"b"}}"#)
                .await;
            // "1" is another id than 1.
            s.send(r#"{"jsonrpc":"2.0","id":"1","method":"ping"}"#)
                .await;
            s.close().await;
            let got = s.rest().await;
            let refused: Vec<_> = got
                .iter()
                .filter(|v| v["error"]["code"] == GATEWAY_REFUSED)
                .collect();
            assert_eq!(refused.len(), 1, "{got:?}");
            assert!(got.iter().any(|v| v["params"]["lines"] == 2), "{got:?}");
            s.end().await;
        })
        .await
        .unwrap();
    }

    /// Denies every `tools/call`, the way a policy stage will.
    struct DenyCalls;

    #[async_trait]
    impl Stage for DenyCalls {
        fn name(&self) -> &'static str {
            "deny-calls"
        }
        async fn from_client(&self, _: &SessionContext, msg: Message) -> Flow {
            match msg.method() {
                Some(mcp::TOOLS_CALL) => msg
                    .error_reply(GATEWAY_REFUSED, "denied by policy")
                    .map_or(Flow::Drop, Flow::Reply),
                _ => Flow::Forward(msg),
            }
        }
    }

    #[tokio::test]
    async fn a_stage_reply_answers_the_client_and_never_reaches_the_upstream() {
        timeout(TEST_LIMIT, async {
            let log = Arc::new(Log::new());
            let stages: Vec<Arc<dyn Stage>> = vec![Arc::new(DenyCalls), log.clone()];
            let mut s = start(sh(COUNTING_ECHO), 4096, stages, Duration::from_secs(60));
            s.send(
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"drop_table"}}"#,
            )
            .await;
            let (id, code, message) = error_of(&s.recv_json().await);
            assert_eq!(
                (id, code, message.as_str()),
                (Value::from(1), GATEWAY_REFUSED, "denied by policy")
            );
            s.send(r#"{"jsonrpc":"2.0","method":"notifications/marker"}"#)
                .await;
            s.close().await;
            let got = s.rest().await;
            assert_eq!(got[0]["method"], "notifications/marker");
            assert_eq!(got[1]["params"]["lines"], 1);
            assert_eq!(s.end().await, EndReason::ClientClosed);
            // The log stage runs after the deny stage: it never saw the call.
            let counts = log.counts();
            assert_eq!((counts.from_client, counts.from_upstream), (1, 2));
        })
        .await
        .unwrap();
    }
    /// Holds every `tools/call` until the test releases it through a
    /// channel: `true` forwards it, `false` denies it. Reports when a hold
    /// is dropped unfinished (a cancellation).
    struct HoldCalls {
        release: tokio::sync::Mutex<mpsc::Receiver<bool>>,
        dropped: mpsc::Sender<()>,
    }

    struct OnDrop(Option<mpsc::Sender<()>>);
    impl Drop for OnDrop {
        fn drop(&mut self) {
            if let Some(tx) = self.0.take() {
                let _ = tx.try_send(());
            }
        }
    }

    #[async_trait]
    impl Stage for Arc<HoldCalls> {
        fn name(&self) -> &'static str {
            "hold-calls"
        }
        async fn from_client(&self, _: &SessionContext, msg: Message) -> Flow {
            if msg.method() != Some(mcp::TOOLS_CALL) {
                return Flow::Forward(msg);
            }
            let me = self.clone();
            Flow::Hold(crate::proxy::Hold::new(move |notifier| async move {
                let mut guard = OnDrop(Some(me.dropped.clone()));
                let note = Message::parse(br#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"p","progress":1}}"#).unwrap();
                notifier.send(&note).await;
                let go = me.release.lock().await.recv().await.unwrap_or(false);
                guard.0 = None;
                if go {
                    Flow::Forward(msg)
                } else {
                    msg.error_reply(GATEWAY_REFUSED, "denied by approver")
                        .map_or(Flow::Drop, Flow::Reply)
                }
            }))
        }
    }

    #[tokio::test]
    async fn a_held_call_waits_without_holding_up_the_session_and_runs_later_stages_after() {
        timeout(TEST_LIMIT, async {
            let (release, rx) = mpsc::channel(4);
            let (dropped, mut was_dropped) = mpsc::channel(4);
            let hold = Arc::new(HoldCalls {
                release: tokio::sync::Mutex::new(rx),
                dropped,
            });
            let log = Arc::new(Log::new());
            let stages: Vec<Arc<dyn Stage>> = vec![log.clone(), Arc::new(hold), log.clone()];
            let mut s = start(sh(COUNTING_ECHO), 4096, stages, Duration::from_secs(60));
            s.send(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"}}"#)
                .await;
            // The hold speaks to the client while it waits...
            assert_eq!(s.recv_json().await["method"], "notifications/progress");
            // ...and other messages pass meanwhile.
            s.send(r#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#).await;
            assert_eq!(s.recv_json().await["id"], 2);
            // The held id stays open: it cannot be reused.
            s.send(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#).await;
            assert_eq!(error_of(&s.recv_json().await).1, GATEWAY_REFUSED);
            // Released: forwarded, and the stage after the hold saw it.
            let before = log.counts().from_client;
            release.send(true).await.unwrap();
            let echoed = s.recv_json().await;
            assert_eq!(
                (echoed["id"].clone(), echoed["method"].clone()),
                (Value::from(1), Value::from("tools/call"))
            );
            assert_eq!(log.counts().from_client, before + 1);
            // A denied hold answers the client and forwards nothing.
            s.send(r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"b"}}"#)
                .await;
            assert_eq!(s.recv_json().await["method"], "notifications/progress");
            release.send(false).await.unwrap();
            assert_eq!(error_of(&s.recv_json().await).0, Value::from(3));
            // A cancelled hold is dropped; neither it nor the cancellation
            // reaches the upstream.
            s.send(r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"c"}}"#)
                .await;
            assert_eq!(s.recv_json().await["method"], "notifications/progress");
            s.send(
                r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":4}}"#,
            )
            .await;
            was_dropped.recv().await.unwrap();
            // One held at the end of the session is answered with an error.
            s.send(r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"d"}}"#)
                .await;
            assert_eq!(s.recv_json().await["method"], "notifications/progress");
            s.close().await;
            let rest = s.rest().await;
            assert!(
                rest.iter().any(|v| v["id"] == 5 && v["error"].is_object()),
                "{rest:?}"
            );
            // ping 2 and tools/call 1: nothing else reached the upstream.
            assert!(rest.iter().any(|v| v["params"]["lines"] == 2), "{rest:?}");
            was_dropped.recv().await.unwrap();
            s.end().await;
        })
        .await
        .unwrap();
    }

    /// A real file store whose writes start failing on demand, as a full
    /// or broken disk would make them.
    struct Flaky {
        files: crate::record::FileStore,
        broken: std::sync::atomic::AtomicBool,
    }

    impl Flaky {
        fn check(&self) -> io::Result<()> {
            if self.broken.load(std::sync::atomic::Ordering::SeqCst) {
                Err(io::Error::other("No space left on device"))
            } else {
                Ok(())
            }
        }
    }

    impl crate::record::RecordStore for Flaky {
        fn append(&self, s: &SessionId, lines: &[u8]) -> io::Result<()> {
            self.check()?;
            self.files.append(s, lines)
        }
        fn append_index(&self, lines: &[u8]) -> io::Result<()> {
            self.check()?;
            self.files.append_index(lines)
        }
        fn sync(&self, s: &[SessionId], index: bool) -> io::Result<()> {
            self.files.sync(s, index)
        }
        fn close(&self, s: &SessionId) {
            self.files.close(s)
        }
        fn read(&self, s: &SessionId) -> io::Result<Option<Vec<u8>>> {
            self.files.read(s)
        }
        fn read_index(&self) -> io::Result<Vec<u8>> {
            self.files.read_index()
        }
        fn sessions(&self) -> io::Result<Vec<SessionId>> {
            self.files.sessions()
        }
        fn truncate(&self, s: &SessionId, len: u64) -> io::Result<()> {
            self.files.truncate(s, len)
        }
        fn truncate_index(&self, len: u64) -> io::Result<()> {
            self.files.truncate_index(len)
        }
        fn delete(&self, s: &SessionId) -> io::Result<()> {
            self.files.delete(s)
        }
        fn describe(&self) -> String {
            "flaky".into()
        }
    }

    /// A relayed session to `upstream` whose record is written to `dir`
    /// through a [`Flaky`] store.
    async fn recorded(
        dir: &Path,
        on_failure: crate::record::OnFailure,
        upstream: Upstream,
    ) -> (Session, Arc<Flaky>) {
        let store = Arc::new(Flaky {
            files: crate::record::FileStore::create(dir).unwrap(),
            broken: Default::default(),
        });
        let config = crate::record::RecordingSection {
            on_failure,
            ..Default::default()
        };
        let (rec, _) = Recorder::start(
            store.clone(),
            crate::record::AuditKey::from_bytes(&[7; 32]),
            &config,
        )
        .unwrap();
        let start = mcpgate_shared::record::Start {
            user: "alice".parse().unwrap(),
            issuer: "local".into(),
            roles: vec![],
            server: "demo".parse().unwrap(),
            client_addr: "127.0.0.1:1".into(),
            tunnel_peer: "127.0.0.1:2".into(),
            cert_serial: "01".into(),
            created_at: 0,
        };
        rec.open(&ctx().session, start).await.unwrap();
        let tape = Arc::new(Tape::new(Arc::new(rec), ctx().session));
        let session = start_taped(upstream, 1024, vec![], Duration::from_secs(60), Some(tape));
        (session, store)
    }

    fn events(dir: &Path) -> Vec<Value> {
        let text = std::fs::read_to_string(dir.join("sessions/s-relay.jsonl")).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn every_line_a_peer_receives_is_in_the_record() {
        timeout(TEST_LIMIT, async {
            let dir = tempfile::tempdir().unwrap();
            let (mut s, _) =
                recorded(dir.path(), crate::record::OnFailure::Refuse, sh(COUNTING_ECHO)).await;
            s.send(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hi"}}}"#).await;
            s.send("{not json").await;
            s.close().await;
            let got = s.rest().await;
            // The parse error, the echoed call, the count, and the error
            // the still-open call gets when the session ends.
            assert_eq!(got.len(), 4, "{got:?}");
            s.end().await;
            let ev = events(dir.path());
            let messages: Vec<(&str, &str, &str)> = ev
                .iter()
                .filter(|e| e["type"] == "message")
                .map(|e| {
                    (
                        e["from"].as_str().unwrap(),
                        e["to"].as_str().unwrap(),
                        e["kind"].as_str().unwrap(),
                    )
                })
                .collect();
            // The call, the parse error the broker answered, the echo coming
            // back (a request from the upstream's side), the count.
            assert!(messages.contains(&("client", "upstream", "request")), "{messages:?}");
            assert!(messages.contains(&("broker", "client", "error")), "{messages:?}");
            assert!(messages.contains(&("upstream", "client", "request")), "{messages:?}");
            assert!(messages.contains(&("upstream", "client", "notification")), "{messages:?}");
            let errors = messages.iter().filter(|m| *m == &("broker", "client", "error")).count();
            assert_eq!(errors, 2, "{messages:?}");
            let call = ev
                .iter()
                .find(|e| e["from"] == "client")
                .unwrap();
            assert_eq!(call["name"], "echo");
            assert_eq!(call["method"], "tools/call");
            assert_eq!(call["msg"]["params"]["arguments"]["message"], "hi");
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn a_message_that_cannot_be_recorded_is_not_forwarded() {
        timeout(TEST_LIMIT, async {
            let dir = tempfile::tempdir().unwrap();
            // The upstream writes how many lines reached it to a file when
            // its input ends: its own output cannot be recorded either.
            let count = dir.path().join("lines-seen");
            let script = format!(
                r#"n=0; while IFS= read -r l; do n=$((n+1)); done; echo "$n" > '{}'"#,
                count.display()
            );
            let (mut s, store) =
                recorded(dir.path(), crate::record::OnFailure::Refuse, sh(&script)).await;
            store
                .broken
                .store(true, std::sync::atomic::Ordering::SeqCst);
            s.send(
                r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"drop_table"}}"#,
            )
            .await;
            let answer = s.recv_json().await;
            let (id, code, message) = error_of(&answer);
            assert_eq!((id, code), (Value::from(7), RECORD_FAILED));
            assert!(message.contains("not forwarded"), "{message}");
            s.close().await;
            let rest = s.rest().await;
            assert!(rest.is_empty(), "{rest:?}");
            // The relay has shut the upstream down: it never saw the call.
            assert_eq!(s.end().await, EndReason::ClientClosed);
            assert_eq!(std::fs::read_to_string(&count).unwrap().trim(), "0");
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn failing_open_is_only_by_explicit_setting_and_forwards() {
        timeout(TEST_LIMIT, async {
            let dir = tempfile::tempdir().unwrap();
            let (mut s, store) = recorded(
                dir.path(),
                crate::record::OnFailure::FailOpenWithAlarm,
                sh(COUNTING_ECHO),
            )
            .await;
            store
                .broken
                .store(true, std::sync::atomic::Ordering::SeqCst);
            s.send(r#"{"jsonrpc":"2.0","method":"notifications/marker"}"#)
                .await;
            s.close().await;
            let rest = s.rest().await;
            assert_eq!(rest.last().unwrap()["params"]["lines"], 1, "{rest:?}");
            s.end().await;
        })
        .await
        .unwrap();
    }
}
