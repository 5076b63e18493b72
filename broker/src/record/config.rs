//! `[recording]`: durability, checkpoints, failure policy and retention.
//! Every default is the safe one: each event is on disk before the message
//! goes on, and a session whose recording fails stops.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// `[recording]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingSection {
    /// Where records are kept; relative to the config file. Default: the
    /// data dir's `records/`. Keep it off the MCP hosts.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// When events reach the disk, see [`Fsync`].
    #[serde(default)]
    pub fsync: Fsync,
    /// With `fsync = "interval"`: at most this long between syncs.
    #[serde(default = "default_fsync_interval", with = "humantime_serde")]
    pub fsync_interval: Duration,
    /// A signed checkpoint after this many events...
    #[serde(default = "default_checkpoint_events")]
    pub checkpoint_events: u64,
    /// ...or after this long with unsigned events, whichever comes first.
    #[serde(default = "default_checkpoint_interval", with = "humantime_serde")]
    pub checkpoint_interval: Duration,
    /// What a session does when its events cannot be written.
    #[serde(default)]
    pub on_failure: OnFailure,
    /// Records of ended sessions older than this are deleted, each
    /// leaving a signed tombstone in the index. Unset: kept forever.
    #[serde(default, with = "humantime_serde")]
    pub retention: Option<Duration>,
}

impl Default for RecordingSection {
    fn default() -> Self {
        RecordingSection {
            dir: None,
            fsync: Fsync::default(),
            fsync_interval: default_fsync_interval(),
            checkpoint_events: default_checkpoint_events(),
            checkpoint_interval: default_checkpoint_interval(),
            on_failure: OnFailure::default(),
            retention: None,
        }
    }
}

/// When written events are made durable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fsync {
    /// Group commit: each batch of events (whatever queued while the last
    /// sync ran) is synced before any of them is acknowledged. Survives a
    /// power cut.
    #[default]
    Batch,
    /// Acknowledged once written to the OS (survives a broker crash);
    /// synced every `fsync_interval`.
    Interval,
    /// Acknowledged once written to the OS; syncing is left to it.
    Never,
}

/// What happens to a session whose events cannot be recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnFailure {
    /// The message is not forwarded: the sender gets an error (fail
    /// closed).
    #[default]
    Refuse,
    /// The message goes on unrecorded and the broker logs an alarm at
    /// ERROR for each one. Only by this explicit setting.
    FailOpenWithAlarm,
}

fn default_fsync_interval() -> Duration {
    Duration::from_millis(100)
}
fn default_checkpoint_events() -> u64 {
    256
}
fn default_checkpoint_interval() -> Duration {
    Duration::from_secs(10)
}

impl RecordingSection {
    pub fn check(&self) -> Result<(), String> {
        if self.checkpoint_events == 0 {
            return Err("recording.checkpoint_events must be at least 1".into());
        }
        if self.checkpoint_interval < Duration::from_millis(100) {
            return Err("recording.checkpoint_interval must be at least 100ms".into());
        }
        if self.fsync == Fsync::Interval && self.fsync_interval.is_zero() {
            return Err(
                "recording.fsync_interval must be more than 0 with fsync = \"interval\"".into(),
            );
        }
        if let Some(r) = self.retention
            && r < Duration::from_secs(3600)
        {
            return Err("recording.retention must be at least 1h (or unset: keep forever)".into());
        }
        Ok(())
    }
}
