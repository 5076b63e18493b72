//! `mcpgate sessions`: the recorded sessions you may see — your own, or
//! everyone's with the audit role — as a table (or the broker's JSON) on
//! stdout, newest first.

use mcpgate_shared::record::{RecordsQuery, SessionSummary};

use crate::args::{Output, SessionsArgs};
use crate::context::Context;
use crate::error::{Error, one_line};
use crate::ui::{self, Spinner};

pub async fn run(args: SessionsArgs, ctx: &Context) -> Result<(), Error> {
    let mut login = ctx.login().await?;
    let spinner = Spinner::start(format!(
        "asking {} for recorded sessions",
        login.state.broker
    ));
    let query = RecordsQuery {
        user: args.user,
        server: args.server,
        since: args.since.map(|t| t.0),
    };
    let list = login
        .call(ctx, |client| {
            let query = query.clone();
            async move { client.records(&query).await }
        })
        .await?;
    drop(spinner);
    match args.output.output {
        Output::Json => ui::print(&format!(
            "{}\n",
            ui::json_visible(&serde_json::to_string_pretty(&list).unwrap_or_default())
        )),
        Output::Text => {
            ui::print(&table(&list, now_ms()))?;
            if list.is_empty() {
                eprintln!(
                    "no recorded sessions match; you see your own sessions unless a role of yours has audit = true"
                );
            }
            Ok(())
        }
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `2026-05-01T18:00:00Z` from unix milliseconds.
pub fn timestamp_ms(ms: u64) -> String {
    ui::timestamp(ms / 1000)
}

/// A session's length: `88ms`, `4.2s`, `42s`, `3m 05s`, `2h 03m`, `3d 4h`.
pub fn duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0 => format!("{ms}ms"),
        1..10 => format!("{}.{}s", s, ms % 1000 / 100),
        10..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h {:02}m", s / 3600, s / 60 % 60),
        _ => format!("{}d {}h", s / 86_400, s / 3600 % 24),
    }
}

/// `SESSION USER SERVER STARTED DURATION STATE EVENTS CALLS DENIED`; a live
/// session's duration runs to `now_ms`.
pub fn table(list: &[SessionSummary], now_ms: u64) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|s| {
            let end = s.ended_ms.unwrap_or(now_ms.max(s.started_ms));
            vec![
                s.session.to_string(),
                s.user.to_string(),
                s.server.to_string(),
                timestamp_ms(s.started_ms),
                duration(end.saturating_sub(s.started_ms)),
                one_line(&s.state, 20),
                s.events.to_string(),
                s.calls.to_string(),
                s.denied.to_string(),
            ]
        })
        .collect();
    ui::table(
        &[
            "SESSION", "USER", "SERVER", "STARTED", "DURATION", "STATE", "EVENTS", "CALLS",
            "DENIED",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(88), "88ms");
        assert_eq!(duration(4_200), "4.2s");
        assert_eq!(duration(9_950), "9.9s");
        assert_eq!(duration(42_000), "42s");
        assert_eq!(duration(185_000), "3m 05s");
        assert_eq!(duration(7_380_000), "2h 03m");
        assert_eq!(duration(3 * 86_400_000 + 4 * 3_600_000), "3d 4h");
    }

    #[test]
    fn the_table_lists_each_session_on_one_line() {
        let list: Vec<SessionSummary> = serde_json::from_str(
            r#"[
              {"session":"5e550002-0000-4000-8000-000000000002","user":"bob","server":"crm",
               "started_ms":1800000060000,"state":"live","events":5,"calls":1,"denied":0},
              {"session":"5e550001-0000-4000-8000-000000000001","user":"alice","server":"db",
               "started_ms":1800000000000,"ended_ms":1800000185000,"state":"closed",
               "events":42,"calls":9,"denied":2}
            ]"#,
        )
        .unwrap();
        assert_eq!(
            table(&list, 1_800_000_102_000),
            "SESSION                               USER   SERVER  STARTED               DURATION  STATE   EVENTS  CALLS  DENIED\n\
             5e550002-0000-4000-8000-000000000002  bob    crm     2027-01-15T08:01:00Z  42s       live    5       1      0\n\
             5e550001-0000-4000-8000-000000000001  alice  db      2027-01-15T08:00:00Z  3m 05s    closed  42      9      2\n"
        );
    }
}
