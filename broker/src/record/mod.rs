//! Session recording: an append-only, hash-chained, signed record of every
//! session, kept apart from the MCP hosts, that anyone with the broker's
//! public audit key can verify offline.
//!
//! - [`format`]: how a line is hashed, chained and signed (the
//!   construction, cited, with known-answer tests).
//! - [`key`]: the Ed25519 audit key (`audit.key`, `audit.pub`).
//! - [`store`]: the [`RecordStore`] trait and the embedded [`FileStore`]
//!   (one file per session plus the cross-session index).
//! - [`writer`]: the [`Recorder`]: one writer thread, group commit, signed
//!   checkpoints and seals, crash recovery, retention with tombstones.
//! - [`config`]: `[recording]`.
//!
//! The schema of each line is `mcpgate_shared::record`.

pub mod config;
pub mod format;
pub mod key;
pub mod store;
pub mod writer;

pub use config::{Fsync, OnFailure, RecordingSection};
pub use key::{AUDIT_KEY_FILE, AUDIT_PUB_FILE, AuditKey, AuditPub};
pub use store::{FileStore, RecordStore};
pub use writer::{RecordError, Recorder, Recovered};

/// The records' directory under the data dir, by default.
pub const RECORDS_DIR: &str = "records";
