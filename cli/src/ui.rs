//! How the CLI talks to the person at the terminal, always on stderr:
//! spinners while they wait, times in a readable form, the error prefix.
//!
//! stdout is reserved for data (tables, JSON, MCP); nothing here writes to
//! it. Spinners draw only when stderr is a terminal, and colour is used only
//! then and without `NO_COLOR`.

use std::io::IsTerminal;
use std::time::{Duration, UNIX_EPOCH};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::env;

/// A spinner on stderr; hidden when stderr is not a terminal. Cleared when
/// dropped, so an error line never lands in the middle of it.
pub struct Spinner(ProgressBar);

impl Spinner {
    pub fn start(message: impl Into<String>) -> Self {
        let target = if std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(None, target);
        // No colour in the template: nothing to turn off for NO_COLOR.
        if let Ok(style) = ProgressStyle::with_template("{spinner} {msg}") {
            bar.set_style(style);
        }
        bar.set_message(message.into());
        bar.enable_steady_tick(Duration::from_millis(100));
        Self(bar)
    }

    pub fn set(&self, message: impl Into<String>) {
        self.0.set_message(message.into());
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

/// `error:`, in bold red when colour is allowed.
pub fn error_prefix() -> &'static str {
    if env::stderr_color() {
        "\x1b[1;31merror:\x1b[0m"
    } else {
        "error:"
    }
}

/// `2026-05-01T18:00:00Z (in 7h 59m)` or `... (expired 3m ago)`.
pub fn expiry(expires_at: u64, now: u64) -> String {
    let when = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(expires_at));
    if expires_at > now {
        format!("{when} (in {})", span(expires_at - now))
    } else {
        format!("{when} (expired {} ago)", span(now - expires_at))
    }
}

/// A rough span: `2d 3h`, `7h 59m`, `12m`, `40s`.
pub fn span(secs: u64) -> String {
    let (d, h, m) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{secs}s"),
        (0, 0, m) => format!("{m}m"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_reads_well_both_ways() {
        let now = 1_800_000_000;
        assert_eq!(
            expiry(now + 8 * 3600 - 60, now),
            "2027-01-15T15:59:00Z (in 7h 59m)"
        );
        assert!(expiry(now - 180, now).ends_with("(expired 3m ago)"));
        assert!(expiry(now + 40, now).ends_with("(in 40s)"));
        assert!(expiry(now + 2 * 86_400 + 3 * 3600, now).ends_with("(in 2d 3h)"));
    }
}
