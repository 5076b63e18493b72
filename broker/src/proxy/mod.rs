//! The relay between a tunnel connection and an upstream, as a pipeline of
//! stages.
//!
//! [`relay`] reads newline-delimited messages from both peers with a hard
//! size bound ([`frame`]), parses each with the one canonical parse
//! (`Message::parse`), runs the valid ones through the session's
//! [`Stage`]s and forwards what comes out re-serialised (`Message::to_line`),
//! never the bytes that came in. Nothing malformed reaches either peer: the
//! sender of a refused request is answered with a JSON-RPC error instead.
//! Ids are never remapped (one client, one upstream per session), so
//! cancellation `requestId`s and progress tokens stay valid as they are.
//!
//! - [`frame`]: the bounded line reader.
//! - [`stage`]: the [`Stage`] trait and the order stages run in.
//! - `log`: the [`Log`] stage (debug trace and message counts).
//! - `policy`: the [`PolicyStage`] (method and parameter checks, allow /
//!   deny / hold per call, list filtering).
//! - `mask`: the [`MaskStage`] (every upstream message masked, counts
//!   kept, withheld when it cannot be).
//! - `record`: the [`Tape`]: each line a peer receives is recorded before
//!   it is sent (write-ahead for what the other peer said).
//! - `relay`: the session loop, its pending-request bookkeeping and its end.

use std::fmt;

use mcpgate_shared::names::{RoleName, ServerName, SessionId, UserName};

pub mod frame;
mod log;
mod mask;
mod policy;
mod record;
mod relay;
pub mod stage;

pub use log::{Counts, Log};
pub use mask::MaskStage;
pub use policy::PolicyStage;
pub use record::Tape;
pub use relay::relay;
pub use stage::{Direction, Flow, Hold, Notifier, Stage};

/// Who and what a session is about; every stage gets it with each message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionContext {
    pub session: SessionId,
    pub user: UserName,
    pub server: ServerName,
    /// The user's roles when the session was granted; policy decides on
    /// these for the whole session.
    pub roles: Vec<RoleName>,
}

/// Bounds the relay enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A longer line (either direction) is refused without being buffered.
    pub max_message_bytes: usize,
}

/// Why a session's relay ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// The client closed its side of the tunnel.
    ClientClosed,
    /// The upstream exited or closed its output; how, e.g. `exit status: 1`.
    UpstreamExited(String),
    /// The session reached its maximum duration.
    MaxDuration,
    /// The broker is shutting down.
    Shutdown,
    /// An I/O or internal error ended it.
    Error(String),
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndReason::ClientClosed => f.write_str("client closed"),
            EndReason::UpstreamExited(how) => write!(f, "upstream exited: {how}"),
            EndReason::MaxDuration => f.write_str("maximum duration reached"),
            EndReason::Shutdown => f.write_str("broker shutting down"),
            EndReason::Error(e) => write!(f, "error: {e}"),
        }
    }
}
