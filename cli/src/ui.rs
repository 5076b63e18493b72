//! How the CLI talks to the person at the terminal, always on stderr:
//! spinners while they wait, times in a readable form, the error prefix;
//! and how text someone else chose is made safe to show ([`visible`],
//! [`json_visible`]).
//!
//! stdout is reserved for data (tables, JSON, MCP); only [`print`] writes
//! to it. Spinners draw only when stderr is a terminal, and colour is used
//! only then and without `NO_COLOR`.

use std::io::{IsTerminal, Write};
use std::time::{Duration, UNIX_EPOCH};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::env;
use crate::error::Error;

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

    /// A line on stderr above the spinner, without tearing it.
    pub fn println(&self, line: &str) {
        self.0.suspend(|| eprintln!("{line}"));
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

/// `text` on stdout. A closed stdout (`| head`) is an error, not a panic.
pub fn print(text: &str) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Error::stdio("cannot write to stdout", e))
}

/// `2026-05-01T18:00:00Z`.
pub fn timestamp(secs: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

/// `3m ago`, or `in 3m` for a time still ahead.
pub fn relative(at: u64, now: u64) -> String {
    if at > now {
        format!("in {}", span(at - now))
    } else {
        format!("{} ago", span(now - at))
    }
}

/// How wide a line on stdout may be: `COLUMNS` when the shell exports it,
/// else 120 (also when stdout is not a terminal, so output is stable).
pub fn line_width() -> usize {
    const DEFAULT: usize = 120;
    if !std::io::stdout().is_terminal() {
        return DEFAULT;
    }
    env::var(env::COLUMNS)
        .and_then(|c| c.trim().parse::<usize>().ok())
        .filter(|&c| c >= 40)
        .unwrap_or(DEFAULT)
}

/// Characters that draw nothing, or change how the text around them
/// reads: control characters (C0, DEL, C1 — which holds the 8-bit escape
/// introducer), soft hyphens, zero-width and joiner characters, direction
/// overrides and isolates, line and paragraph separators, the byte order
/// mark, and the tag and variation selector supplements (used to hide text
/// from people while a model still reads it).
fn hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{034F}'
                | '\u{061C}'
                | '\u{115F}'
                | '\u{1160}'
                | '\u{17B4}'
                | '\u{17B5}'
                | '\u{180B}'..='\u{180F}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{206F}'
                | '\u{3164}'
                | '\u{FEFF}'
                | '\u{FFA0}'
                | '\u{FFF0}'..='\u{FFFB}'
                | '\u{E0000}'..='\u{E0FFF}'
        )
}

/// `text` with every [`hidden`] character written as `\u{..}`, so what a
/// person reads is every character there is.
pub fn visible(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if hidden(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// JSON text (as serde_json writes it, compact or pretty) with every
/// [`hidden`] character written as a JSON `\uXXXX` escape: still valid
/// JSON for the same value, but nothing in it is invisible. serde_json
/// escapes U+0000 to U+001F inside strings itself, so a newline is the
/// pretty layout's and stays; the other hidden characters can only occur
/// inside strings, where the escape is valid.
pub fn json_visible(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if hidden(c) && c != '\n' {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Cuts `text` to at most `max` characters, ending in `...` when cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let keep = max.saturating_sub(3);
    let mut out: String = text.chars().take(keep).collect();
    out.push_str("...");
    out
}

/// Rows as aligned columns (two spaces apart), the header first; the last
/// column is not padded. Cells must already be one line.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let columns = header.len();
    let width = |i: usize| {
        rows.iter()
            .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
            .chain([header[i].len()])
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..columns).map(width).collect();
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate().take(columns) {
            if i + 1 == columns {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visible_shows_what_would_hide() {
        assert_eq!(visible("plain é ✓"), "plain é ✓");
        assert_eq!(
            visible("a\u{202e}b\u{1b}[2Jc\u{9b}d\u{200b}e\u{e0041}"),
            "a\\u{202e}b\\u{1b}[2Jc\\u{9b}d\\u{200b}e\\u{e0041}"
        );
    }

    #[test]
    fn json_visible_stays_the_same_json() {
        let value = serde_json::json!({
            "sql": "select 1 -- \u{202e}drop\u{9b}\u{7f}\u{e0041}\u{2028}",
            "n": [1, "\u{1b}"],
        });
        let text = json_visible(&serde_json::to_string(&value).unwrap());
        assert_eq!(
            text,
            r#"{"sql":"select 1 -- \u202edrop\u009b\u007f\udb40\udc41\u2028","n":[1,"\u001b"]}"#
        );
        assert!(text.chars().all(|c| !hidden(c)));
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, value);
        // Pretty-printed: the layout stays, the content is escaped.
        let pretty = json_visible(&serde_json::to_string_pretty(&value).unwrap());
        assert!(
            pretty.starts_with("{\n  \"sql\": \"select 1 -- \\u202edrop"),
            "{pretty}"
        );
        assert!(pretty.chars().all(|c| c == '\n' || !hidden(c)));
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&pretty).unwrap(),
            value
        );
    }

    #[test]
    fn truncate_and_relative_times() {
        assert_eq!(truncate("abcdef", 6), "abcdef");
        assert_eq!(truncate("abcdefg", 6), "abc...");
        assert_eq!(truncate("ééééééé", 5), "éé...");
        assert_eq!(relative(100, 40), "in 1m");
        assert_eq!(relative(40, 100), "1m ago");
        assert_eq!(timestamp(1_800_000_000), "2027-01-15T08:00:00Z");
    }

    #[test]
    fn tables_align_all_but_the_last_column() {
        let rows = vec![
            vec!["a".to_owned(), "long cell".to_owned(), "x".to_owned()],
            vec!["bbb".to_owned(), "c".to_owned(), String::new()],
        ];
        assert_eq!(
            table(&["ONE", "TWO", "THREE"], &rows),
            "ONE  TWO        THREE\n\
             a    long cell  x\n\
             bbb  c\n"
        );
    }

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
