//! The stage interface: one step of the relay's pipeline.
//!
//! Every valid message passes through the session's stages before it is
//! forwarded: client messages in order ([`Stage::from_client`]), upstream
//! messages in reverse order ([`Stage::from_upstream`]), so the stage that
//! sees a request first sees its response last, like layers of middleware.
//! Policy, masking and recording are each meant to be one stage in their own
//! module; the relay knows none of them.

use std::sync::Arc;

use async_trait::async_trait;
use mcpgate_shared::jsonrpc::Message;

use super::SessionContext;

/// What a stage decided about one message.
pub enum Flow {
    /// Pass it (possibly changed) to the next stage, then to the peer.
    Forward(Message),
    /// Answer the sender with this full, newline-terminated line (a
    /// JSON-RPC error for a denied request, say); nothing is forwarded and
    /// later stages do not see the message.
    Reply(Vec<u8>),
    /// Swallow it: nothing is forwarded and nobody is answered.
    Drop,
    /// Decide later (a call held for approval): the relay keeps the
    /// request open, goes on with other messages, and runs the [`Hold`]
    /// in its own task. What it resolves to continues through the stages
    /// after this one. Only for requests from the client.
    Hold(Hold),
}

impl std::fmt::Debug for Flow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Flow::Forward(m) => f.debug_tuple("Forward").field(m).finish(),
            Flow::Reply(line) => f
                .debug_tuple("Reply")
                .field(&String::from_utf8_lossy(line))
                .finish(),
            Flow::Drop => f.write_str("Drop"),
            Flow::Hold(_) => f.write_str("Hold(..)"),
        }
    }
}

impl PartialEq for Flow {
    /// Holds are never equal: each is one waiting call.
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Flow::Forward(a), Flow::Forward(b)) => a == b,
            (Flow::Reply(a), Flow::Reply(b)) => a == b,
            (Flow::Drop, Flow::Drop) => true,
            _ => false,
        }
    }
}

/// A decision still to come. The relay gives it a [`Notifier`] to the
/// client (for progress notifications while it waits) and drops it,
/// unfinished, when the client cancels the request or the session ends.
pub struct Hold(Box<dyn FnOnce(Notifier) -> BoxFuture<Flow> + Send>);

/// A boxed future the relay can run in a task of its own.
pub type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl Hold {
    pub fn new<F, Fut>(f: F) -> Hold
    where
        F: FnOnce(Notifier) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Flow> + Send + 'static,
    {
        Hold(Box::new(move |n| Box::pin(f(n))))
    }

    /// Starts waiting.
    pub fn start(self, notifier: Notifier) -> BoxFuture<Flow> {
        (self.0)(notifier)
    }
}

/// Sends unsolicited messages (notifications) to the client while a
/// request is held; each is recorded on the session's tape first.
#[derive(Clone)]
pub struct Notifier {
    tx: tokio::sync::mpsc::WeakSender<Vec<u8>>,
    tape: Option<Arc<super::record::Tape>>,
}

impl Notifier {
    pub fn new(
        tx: tokio::sync::mpsc::WeakSender<Vec<u8>>,
        tape: Option<Arc<super::record::Tape>>,
    ) -> Self {
        Notifier { tx, tape }
    }

    /// `false` when the client is gone.
    pub async fn send(&self, msg: &Message) -> bool {
        let Some(tx) = self.tx.upgrade() else {
            return false;
        };
        let line = msg.to_line();
        if let Some(tape) = &self.tape {
            tape.line(mcpgate_shared::record::Peer::Client, &line).await;
        }
        tx.send(line).await.is_ok()
    }
}

/// One step of the relay pipeline. A stage is shared by both directions of
/// a session (and may be shared by sessions), so it takes `&self`.
///
/// A stage that awaits (an approval, say) holds up later messages in its
/// direction, never the other direction nor the session's deadline.
// `from_client`/`from_upstream` read as "the message came from", not as
// conversions; the names are the interface other modules implement.
#[allow(clippy::wrong_self_convention)]
#[async_trait]
pub trait Stage: Send + Sync {
    /// A short name for logs.
    fn name(&self) -> &'static str;

    /// A message from the client, on its way to the upstream.
    async fn from_client(&self, ctx: &SessionContext, msg: Message) -> Flow {
        let _ = ctx;
        Flow::Forward(msg)
    }

    /// A message from the upstream, on its way to the client.
    async fn from_upstream(&self, ctx: &SessionContext, msg: Message) -> Flow {
        let _ = ctx;
        Flow::Forward(msg)
    }
}

/// Which way a message travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    FromClient,
    FromUpstream,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::FromClient => "client->upstream",
            Direction::FromUpstream => "upstream->client",
        }
    }
}

impl std::fmt::Display for Direction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Runs `msg` through `stages` for one direction: in order from the client,
/// in reverse from the upstream. Stops at the first stage that does not
/// forward. A stage that holds the message gets the rest of the pipeline
/// chained after its hold.
pub async fn run(
    stages: &Arc<[Arc<dyn Stage>]>,
    ctx: &SessionContext,
    direction: Direction,
    msg: Message,
) -> Flow {
    run_from(stages, 0, ctx, direction, msg).await
}

/// The stages after a hold. Boxed with a named type: the pipeline's
/// future contains itself, which would otherwise leave its type (and
/// whether it is `Send`) undecidable.
fn rest(
    stages: Arc<[Arc<dyn Stage>]>,
    start: usize,
    ctx: SessionContext,
    direction: Direction,
    msg: Message,
) -> BoxFuture<Flow> {
    Box::pin(async move { run_from(&stages, start, &ctx, direction, msg).await })
}

async fn run_from(
    stages: &Arc<[Arc<dyn Stage>]>,
    start: usize,
    ctx: &SessionContext,
    direction: Direction,
    mut msg: Message,
) -> Flow {
    let n = stages.len();
    for k in start..n {
        let stage = match direction {
            Direction::FromClient => &stages[k],
            Direction::FromUpstream => &stages[n - 1 - k],
        };
        let flow = match direction {
            Direction::FromClient => stage.from_client(ctx, msg).await,
            Direction::FromUpstream => stage.from_upstream(ctx, msg).await,
        };
        match flow {
            Flow::Forward(next) => msg = next,
            Flow::Hold(hold) => {
                tracing::debug!(stage = stage.name(), %direction, "stage held the message");
                let stages = stages.clone();
                let ctx = ctx.clone();
                return Flow::Hold(Hold::new(move |notifier| async move {
                    match hold.start(notifier).await {
                        Flow::Forward(msg) => rest(stages, k + 1, ctx, direction, msg).await,
                        other => other,
                    }
                }));
            }
            other => {
                tracing::debug!(stage = stage.name(), %direction, "stage stopped the message");
                return other;
            }
        }
    }
    Flow::Forward(msg)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Notes when it ran; stops client messages when `stop` is set.
    struct Trace {
        name: &'static str,
        seen: Arc<Mutex<Vec<String>>>,
        stop: bool,
    }

    #[async_trait]
    impl Stage for Trace {
        fn name(&self) -> &'static str {
            self.name
        }
        async fn from_client(&self, _: &SessionContext, msg: Message) -> Flow {
            self.seen.lock().unwrap().push(format!("c:{}", self.name));
            if self.stop {
                Flow::Drop
            } else {
                Flow::Forward(msg)
            }
        }
        async fn from_upstream(&self, _: &SessionContext, msg: Message) -> Flow {
            self.seen.lock().unwrap().push(format!("u:{}", self.name));
            Flow::Forward(msg)
        }
    }

    fn ctx() -> SessionContext {
        SessionContext {
            session: "s".parse().unwrap(),
            user: "u".parse().unwrap(),
            server: "x".parse().unwrap(),
            roles: vec!["engineer".parse().unwrap()],
        }
    }

    #[tokio::test]
    async fn client_messages_run_in_order_upstream_messages_in_reverse() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stage = |name, stop| -> Arc<dyn Stage> {
            Arc::new(Trace {
                name,
                seen: seen.clone(),
                stop,
            })
        };
        let stages: Arc<[Arc<dyn Stage>]> = vec![stage("a", false), stage("b", false)].into();
        let msg = Message::parse(br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#).unwrap();
        let flow = run(&stages, &ctx(), Direction::FromClient, msg.clone()).await;
        assert_eq!(flow, Flow::Forward(msg.clone()));
        run(&stages, &ctx(), Direction::FromUpstream, msg.clone()).await;
        assert_eq!(*seen.lock().unwrap(), ["c:a", "c:b", "u:b", "u:a"]);

        // A stage that stops a message hides it from the stages after it.
        seen.lock().unwrap().clear();
        let stages: Arc<[Arc<dyn Stage>]> = vec![stage("a", true), stage("b", false)].into();
        assert_eq!(
            run(&stages, &ctx(), Direction::FromClient, msg).await,
            Flow::Drop
        );
        assert_eq!(*seen.lock().unwrap(), ["c:a"]);
    }
}
