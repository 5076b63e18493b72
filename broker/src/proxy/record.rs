//! The session's tape: how the relay records each message before it
//! forwards it.
//!
//! Recording is not a stage: a stage sees a message before later stages
//! and the relay's own bookkeeping have had their say, but the record must
//! hold exactly what each peer received — after policy, after masking,
//! including the errors the broker itself answers with. So the relay calls
//! the tape at the moment it hands a line to a peer's writer:
//!
//! - [`Tape::message`] for a message passed on from the other peer. It is
//!   write-ahead: the line goes on only once its event is durable; if it
//!   cannot be recorded the relay does not forward it (unless
//!   `[recording] on_failure = "fail-open-with-alarm"`).
//! - [`Tape::line`] for a line the broker made (an error, a progress
//!   notification). Those carry no upstream data, so they are still sent
//!   when the record cannot take them; the failure is an alarm.

use std::sync::Arc;

use mcpgate_shared::jsonrpc::{Kind, Message};
use mcpgate_shared::names::SessionId;
use mcpgate_shared::record::{MessageEvent, Peer};
use serde_json::Value;

use crate::record::{OnFailure, RecordError, Recorder};

/// Records one session's messages.
pub struct Tape {
    recorder: Arc<Recorder>,
    session: SessionId,
}

impl std::fmt::Debug for Tape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tape")
            .field("session", &self.session)
            .finish()
    }
}

impl Tape {
    pub fn new(recorder: Arc<Recorder>, session: SessionId) -> Tape {
        Tape { recorder, session }
    }

    /// Whether a message that could not be recorded may go on anyway.
    pub fn fails_open(&self) -> bool {
        self.recorder.on_failure() == OnFailure::FailOpenWithAlarm
    }

    /// Records a message about to be forwarded (`bytes`: its line's
    /// length; the line is already built, so the message itself moves
    /// into the event rather than being copied). `Err` means it must not
    /// be forwarded, unless [`Tape::fails_open`].
    pub async fn message(
        &self,
        from: Peer,
        to: Peer,
        mut msg: Message,
        bytes: usize,
    ) -> Result<(), RecordError> {
        let masked = std::mem::take(&mut msg.annotations_mut().masked);
        let event = MessageEvent {
            from,
            to,
            kind: kind_name(msg.kind()).to_owned(),
            id: msg.id().map(|id| id.to_string()),
            method: msg.method().map(str::to_owned),
            name: call_name(&msg),
            bytes: bytes as u64,
            masked,
            msg: Value::Object(msg.into_object()),
        };
        let r = self.recorder.message(&self.session, event).await;
        if let Err(e) = &r {
            tracing::error!(session = %self.session, error = %e, fails_open = self.fails_open(), "ALARM: a message could not be recorded");
        }
        r.map(|_| ())
    }

    /// Records a line the broker itself sends; best effort.
    pub async fn line(&self, to: Peer, line: &[u8]) {
        let parsed = match Message::parse(line.strip_suffix(b"\n").unwrap_or(line)) {
            Ok(msg) => msg,
            Err(e) => {
                // The broker only writes lines it built from a parse or as
                // JSON-RPC errors; this would be a bug, not an attack.
                tracing::error!(session = %self.session, error = %e, "a line the broker sent does not parse; not recorded");
                return;
            }
        };
        let _ = self.message(Peer::Broker, to, parsed, line.len()).await;
    }
}

fn kind_name(kind: &Kind) -> &'static str {
    match kind {
        Kind::Request { .. } => "request",
        Kind::Notification { .. } => "notification",
        Kind::Result { .. } => "response",
        Kind::Error { .. } => "error",
    }
}

/// The tool or prompt name, or the resource URI, of a call.
fn call_name(msg: &Message) -> Option<String> {
    if !msg.is_request() {
        return None;
    }
    let params = msg.params()?;
    params
        .get("name")
        .or_else(|| params.get("uri"))
        .and_then(Value::as_str)
        .map(str::to_owned)
}
