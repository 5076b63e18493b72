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
//! - [`verify`]: offline verification of records with only the public key.
//! - [`reader`]: listing sessions and reading their events (replay, export).
//! - [`config`]: the `[recording]` section.
//!
//! The schema of each line is `mcpgate_shared::record`.

pub mod config;
pub mod export;
pub mod format;
pub mod key;
pub mod reader;
pub mod report;
pub mod store;
#[cfg(test)]
mod tests;
pub mod verify;
pub mod writer;

pub use config::{Fsync, OnFailure, RecordingSection};
pub use key::{AUDIT_KEY_FILE, AUDIT_PUB_FILE, AuditKey, AuditPub};
pub use store::{FileStore, RecordStore};
pub use writer::{RecordError, Recorder, Recovered};

/// The records' directory under the data dir, by default.
pub const RECORDS_DIR: &str = "records";

/// Where this config keeps records: `[recording] dir` (relative to the
/// config file), else the data dir's `records/`.
pub fn records_dir(config: &crate::config::Config) -> std::path::PathBuf {
    match &config.recording.dir {
        Some(dir) => config
            .path
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .join(dir),
        None => config.data_dir().join(RECORDS_DIR),
    }
}
