//! The `Log` stage: a debug trace of every message and per-session counts.
//!
//! It records what a message *is* (direction, kind, method, id, size) and
//! never what it says: arguments and results may hold customer data, which
//! only the (masked) session record may keep.

use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use mcpgate_shared::jsonrpc::{Kind, Message};

use super::SessionContext;
use super::stage::{Direction, Flow, Stage};

/// Logs each message at debug level and counts messages per direction.
/// Use one per session: the counts are the session's.
#[derive(Debug, Default)]
pub struct Log {
    from_client: AtomicU64,
    from_upstream: AtomicU64,
}

/// Messages seen so far, per direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub from_client: u64,
    pub from_upstream: u64,
}

impl Log {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn counts(&self) -> Counts {
        Counts {
            from_client: self.from_client.load(Ordering::Relaxed),
            from_upstream: self.from_upstream.load(Ordering::Relaxed),
        }
    }

    fn record(&self, ctx: &SessionContext, direction: Direction, msg: &Message) {
        let counter = match direction {
            Direction::FromClient => &self.from_client,
            Direction::FromUpstream => &self.from_upstream,
        };
        let seq = counter.fetch_add(1, Ordering::Relaxed) + 1;
        // Re-serialising only to measure is not free: do it only when the
        // line will actually be written.
        if !tracing::enabled!(tracing::Level::DEBUG) {
            return;
        }
        let kind = match msg.kind() {
            Kind::Request { .. } => "request",
            Kind::Notification { .. } => "notification",
            Kind::Result { .. } => "result",
            Kind::Error { .. } => "error",
        };
        tracing::debug!(
            session = %ctx.session,
            server = %ctx.server,
            %direction,
            seq,
            kind,
            method = msg.method().unwrap_or(""),
            id = msg.id().map(|id| id.to_string()).unwrap_or_default(),
            bytes = msg.to_line().len(),
            "message"
        );
    }
}

#[async_trait]
impl Stage for Log {
    fn name(&self) -> &'static str {
        "log"
    }

    async fn from_client(&self, ctx: &SessionContext, msg: Message) -> Flow {
        self.record(ctx, Direction::FromClient, &msg);
        Flow::Forward(msg)
    }

    async fn from_upstream(&self, ctx: &SessionContext, msg: Message) -> Flow {
        self.record(ctx, Direction::FromUpstream, &msg);
        Flow::Forward(msg)
    }
}
