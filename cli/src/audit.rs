//! `mcpgate audit verify|export|report`: what an auditor asks the broker
//! for. `verify` checks one session's record (exit 1 when it has
//! problems); `export` streams every event of a period to a file or stdout
//! with a progress bar; `report` writes the SOC 2 evidence report.
//!
//! Files are written as `FILE.part` and renamed when complete, so a
//! broken-off export never looks like a whole one. Text the broker sends
//! carries names and reasons others chose; when it goes to a terminal it
//! is shown through [`ui::visible`], line by line.

use std::fs::File;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use mcpgate_shared::names::SessionId;
use mcpgate_shared::record::{
    EXPORT_EVENTS_HEADER, ExportFormat, ExportQuery, ReportFormat, ReportQuery, VerifyReport,
};

use crate::args::{
    AuditCommand, AuditVerifyArgs, ExportArgs, ExportFormatArg, Output, ReportArgs,
    ReportFormatArg, TimeArg,
};
use crate::context::Context;
use crate::error::{self, Error, one_line};
use crate::ui::{self, Spinner};

/// Without a terminal for a bar, exports of at least this many events
/// print a line at each tenth.
const PLAIN_PROGRESS_FROM: u64 = 100_000;

pub async fn run(command: AuditCommand, ctx: &Context) -> Result<(), Error> {
    match command {
        AuditCommand::Verify(args) => verify(args, ctx).await,
        AuditCommand::Export(args) => export(args, ctx).await,
        AuditCommand::Report(args) => report(args, ctx).await,
    }
}

async fn verify(args: AuditVerifyArgs, ctx: &Context) -> Result<(), Error> {
    let mut login = ctx.login().await?;
    let spinner = Spinner::start(format!(
        "asking {} to verify the record of {}",
        login.state.broker, args.session
    ));
    let session = args.session.clone();
    let report = login
        .call(ctx, |client| {
            let session = session.clone();
            async move { client.verify_record(&session).await }
        })
        .await?;
    drop(spinner);
    match args.output.output {
        Output::Json => ui::print(&format!(
            "{}\n",
            ui::json_visible(&serde_json::to_string_pretty(&report).unwrap_or_default())
        ))?,
        Output::Text => ui::print(&verify_text(&args.session, &report))?,
    }
    if report.ok {
        Ok(())
    } else {
        Err(Error::VerifyFailed {
            session: args.session.to_string(),
            problems: report.problems.len(),
        })
    }
}

/// `OK: ...` or `FAILED: ...` and each problem; notes last.
pub fn verify_text(session: &SessionId, r: &VerifyReport) -> String {
    let clean = |t: &str| ui::visible(&one_line(t, 1000));
    let mut out = if r.ok {
        format!(
            "OK: the record of session {session} verifies: {} events, hash chain, checkpoints and seal signed by the broker's audit key\n",
            r.events
        )
    } else {
        let n = r.problems.len();
        let mut out = format!(
            "FAILED: the record of session {session} does not verify ({n} problem{}):\n",
            if n == 1 { "" } else { "s" }
        );
        for p in &r.problems {
            out.push_str(&format!("  - {}\n", clean(p)));
        }
        out
    };
    for n in &r.notes {
        out.push_str(&format!("note: {}\n", clean(n)));
    }
    out
}

/// `--since`/`--until` as a window the broker accepts.
fn period(since: TimeArg, until: Option<TimeArg>) -> Result<(u64, Option<u64>), Error> {
    if let Some(until) = until
        && until.0 <= since.0
    {
        return Err(Error::Usage(format!(
            "--since ({}) must be before --until ({})",
            crate::sessions::timestamp_ms(since.0),
            crate::sessions::timestamp_ms(until.0)
        )));
    }
    Ok((since.0, until.map(|t| t.0)))
}

/// Where output goes: a file (as `FILE.part` until [`Sink::finish`]), or
/// stdout — made safe line by line when it is a terminal.
enum Sink {
    File {
        file: File,
        part: PathBuf,
        path: PathBuf,
    },
    Stdout {
        terminal: bool,
        rest: Vec<u8>,
    },
}

impl Sink {
    fn open(path: Option<&Path>) -> Result<Sink, Error> {
        let Some(path) = path else {
            return Ok(Sink::Stdout {
                terminal: std::io::stdout().is_terminal(),
                rest: Vec::new(),
            });
        };
        let mut part = path.as_os_str().to_owned();
        part.push(".part");
        let part = PathBuf::from(part);
        let file = File::create(&part).map_err(|e| file_error(&part, e))?;
        Ok(Sink::File {
            file,
            part,
            path: path.to_owned(),
        })
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
        match self {
            Sink::File { file, part, .. } => file.write_all(bytes).map_err(|e| file_error(part, e)),
            Sink::Stdout {
                terminal: false, ..
            } => {
                let mut out = std::io::stdout().lock();
                out.write_all(bytes)
                    .map_err(|e| Error::stdio("cannot write to stdout", e))
            }
            Sink::Stdout {
                terminal: true,
                rest,
            } => {
                rest.extend_from_slice(bytes);
                let Some(end) = rest.iter().rposition(|&b| b == b'\n') else {
                    return Ok(());
                };
                let tail = rest.split_off(end + 1);
                let done = std::mem::replace(rest, tail);
                ui::print(&safe_lines(&done))
            }
        }
    }

    /// Completes the output: the file renamed into place, stdout flushed.
    fn finish(self) -> Result<Option<PathBuf>, Error> {
        match self {
            Sink::File { file, part, path } => {
                file.sync_all().map_err(|e| file_error(&part, e))?;
                drop(file);
                std::fs::rename(&part, &path).map_err(|e| file_error(&path, e))?;
                Ok(Some(path))
            }
            Sink::Stdout { terminal, rest } => {
                if terminal && !rest.is_empty() {
                    ui::print(&format!("{}\n", safe_lines(&rest)))?;
                }
                std::io::stdout()
                    .flush()
                    .map_err(|e| Error::stdio("cannot write to stdout", e))?;
                Ok(None)
            }
        }
    }

    /// Removes a partial file after a failure.
    fn abandon(self) {
        if let Sink::File { part, .. } = self {
            let _ = std::fs::remove_file(part);
        }
    }
}

/// Lines with every invisible character shown (newlines kept).
fn safe_lines(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .split_inclusive('\n')
        .map(|l| match l.strip_suffix('\n') {
            Some(l) => format!("{}\n", ui::visible(l)),
            None => ui::visible(l),
        })
        .collect()
}

fn file_error(path: &Path, e: std::io::Error) -> Error {
    Error::Local {
        what: format!("cannot write {}", path.display()),
        cause: one_line(&e.to_string(), 300),
        hint: "check the path and that its folder is writable, or leave out -o to write to stdout",
    }
}

/// The progress of an export on stderr: a bar when stderr is a terminal
/// (and the data is not going to that same terminal), else, for a large
/// export, a plain line at each tenth.
struct Progress {
    bar: ProgressBar,
    total: Option<u64>,
    plain: bool,
    shown_tenth: u64,
}

impl Progress {
    fn new(total: Option<u64>, to_terminal_stdout: bool) -> Progress {
        let terminal = std::io::stderr().is_terminal() && !to_terminal_stdout;
        let target = if terminal {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(total, target);
        // No colour in the template: nothing to turn off for NO_COLOR.
        let template = if total.is_some() {
            "{bar:40} {human_pos}/{human_len} events, {eta} left"
        } else {
            "{spinner} {human_pos} events"
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style);
        }
        Progress {
            bar,
            total,
            plain: !terminal
                && !to_terminal_stdout
                && total.is_some_and(|t| t >= PLAIN_PROGRESS_FROM),
            shown_tenth: 0,
        }
    }

    fn set(&mut self, done: u64) {
        let done = self.total.map_or(done, |t| done.min(t));
        self.bar.set_position(done);
        if self.plain
            && let Some(total) = self.total
        {
            let tenth = done * 10 / total.max(1);
            if tenth > self.shown_tenth && tenth < 10 {
                self.shown_tenth = tenth;
                eprintln!("exported {done} of {total} events");
            }
        }
    }
}

async fn export(args: ExportArgs, ctx: &Context) -> Result<(), Error> {
    let (since, until) = period(args.since, args.until)?;
    let format = match args.format {
        ExportFormatArg::Jsonl => ExportFormat::Jsonl,
        ExportFormatArg::Csv => ExportFormat::Csv,
    };
    let mut login = ctx.login().await?;
    let spinner = Spinner::start(format!("asking {} for the export", login.state.broker));
    let query = ExportQuery {
        since: Some(since),
        until,
        format: Some(format),
    };
    let mut response = login
        .call(ctx, |client| {
            let query = query.clone();
            async move { client.audit_export(&query).await }
        })
        .await?;
    drop(spinner);
    let total: Option<u64> = response
        .headers()
        .get(EXPORT_EVENTS_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let mut sink = Sink::open(args.out.as_deref())?;
    let to_terminal = matches!(sink, Sink::Stdout { terminal: true, .. });
    let mut progress = Progress::new(total, to_terminal);
    let mut newlines: u64 = 0;
    // CSV starts with its header line, which is no event.
    let header_lines = u64::from(format == ExportFormat::Csv);
    let result: Result<(), Error> = async {
        while let Some(chunk) = response.chunk().await.map_err(|e| {
            Error::Broker(format!(
                "the export broke off after about {} events: {}",
                newlines.saturating_sub(header_lines),
                error::chain(&e.without_url())
            ))
        })? {
            sink.write(&chunk)?;
            newlines += chunk.iter().filter(|&&b| b == b'\n').count() as u64;
            progress.set(newlines.saturating_sub(header_lines));
        }
        Ok(())
    }
    .await;
    progress.bar.finish_and_clear();
    if let Err(e) = result {
        sink.abandon();
        return Err(e);
    }
    let written = sink.finish()?;
    let events = total.unwrap_or(newlines.saturating_sub(header_lines));
    match written {
        Some(path) => eprintln!("exported {events} events to {}", path.display()),
        None => eprintln!("exported {events} events"),
    }
    Ok(())
}

async fn report(args: ReportArgs, ctx: &Context) -> Result<(), Error> {
    let (since, until) = period(args.since, args.until)?;
    let format = match args.format {
        ReportFormatArg::Md => ReportFormat::Md,
        ReportFormatArg::Html => ReportFormat::Html,
    };
    let mut login = ctx.login().await?;
    let spinner = Spinner::start(format!(
        "asking {} for the evidence report (it verifies every record)",
        login.state.broker
    ));
    let query = ReportQuery {
        since: Some(since),
        until,
        format: Some(format),
    };
    let text = login
        .call(ctx, |client| {
            let query = query.clone();
            async move { client.audit_report(&query).await }
        })
        .await?;
    drop(spinner);
    let mut sink = Sink::open(args.out.as_deref())?;
    if let Err(e) = sink.write(text.as_bytes()) {
        sink.abandon();
        return Err(e);
    }
    if let Some(path) = sink.finish()? {
        eprintln!("wrote the evidence report to {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> SessionId {
        "5e550001-0000-4000-8000-000000000001".parse().unwrap()
    }

    #[test]
    fn verification_says_ok_or_lists_each_problem() {
        let ok = VerifyReport {
            ok: true,
            sessions: 1,
            events: 30,
            problems: vec![],
            notes: vec![],
        };
        assert_eq!(
            verify_text(&id(), &ok),
            "OK: the record of session 5e550001-0000-4000-8000-000000000001 verifies: 30 events, hash chain, checkpoints and seal signed by the broker's audit key\n"
        );
        let bad = VerifyReport {
            ok: false,
            sessions: 1,
            events: 30,
            problems: vec![
                "session 5e550001-0000-4000-8000-000000000001: event 12 was modified".into(),
                "evil\x1b[2Jtext".into(),
            ],
            notes: vec!["a live session has no seal yet".into()],
        };
        assert_eq!(
            verify_text(&id(), &bad),
            "FAILED: the record of session 5e550001-0000-4000-8000-000000000001 does not verify (2 problems):\n  \
             - session 5e550001-0000-4000-8000-000000000001: event 12 was modified\n  \
             - evil [2Jtext\n\
             note: a live session has no seal yet\n"
        );
    }

    #[test]
    fn a_period_must_not_be_empty() {
        assert_eq!(period(TimeArg(5), None).unwrap(), (5, None));
        assert_eq!(period(TimeArg(5), Some(TimeArg(9))).unwrap(), (5, Some(9)));
        let err = period(TimeArg(9), Some(TimeArg(9))).unwrap_err();
        assert_eq!(err.exit_code(), crate::error::exit::USAGE);
        assert!(
            err.to_string()
                .starts_with("--since (1970-01-01T00:00:00Z) must be before --until")
        );
    }

    #[test]
    fn a_file_appears_only_when_complete() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("export.jsonl");
        let mut sink = Sink::open(Some(&path)).unwrap();
        sink.write(b"{\"a\":1}\n").unwrap();
        assert!(!path.exists());
        assert!(dir.path().join("export.jsonl.part").exists());
        assert_eq!(sink.finish().unwrap(), Some(path.clone()));
        assert_eq!(std::fs::read(&path).unwrap(), b"{\"a\":1}\n");
        assert!(!dir.path().join("export.jsonl.part").exists());

        let other = dir.path().join("broken.csv");
        let mut sink = Sink::open(Some(&other)).unwrap();
        sink.write(b"time,session\n").unwrap();
        sink.abandon();
        assert!(!other.exists() && !dir.path().join("broken.csv.part").exists());

        let err = Sink::open(Some(&dir.path().join("no/such/dir/x")))
            .err()
            .unwrap();
        assert!(err.report().contains("leave out -o"), "{}", err.report());
    }

    #[test]
    fn terminal_output_shows_what_would_hide() {
        assert_eq!(
            safe_lines(b"a\x1b[2J\nb\xe2\x80\xae\n"),
            "a\\u{1b}[2J\nb\\u{202e}\n"
        );
    }
}
