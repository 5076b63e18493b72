//! `mcpgate approvals`: the approval requests you may decide, and your
//! own — held calls and just-in-time access requests — as blocks of text
//! (or the broker's JSON) on stdout; `--watch` follows them live with long
//! polls (`after_version`).
//!
//! Also what `decide` and `access` share: [`ApprovalId`], one request
//! shown as a [`block`], and how a request ended ([`outcome`]).
//!
//! Everything in a request was chosen by someone else — the requester
//! picked the tool name, the arguments and the reason — so it is shown
//! through [`ui::visible`] and [`ui::json_visible`]: no control characters,
//! nothing invisible or direction-changing, so the screen cannot say
//! something other than what would be approved.

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::str::FromStr;
use std::time::Duration;

use mcpgate_shared::approval::{
    Approval, ApprovalKind, ApprovalList, ApprovalQuery, ApprovalState,
};
use serde::Serialize;

use crate::args::{ApprovalsArgs, Output, StateFilter};
use crate::context::{Context, Login};
use crate::error::{Error, one_line};
use crate::state;
use crate::ui::{self, Spinner};

/// How long one long poll may wait at the broker (it allows up to 60s;
/// less stays clear of proxies' idle timeouts).
pub const POLL_WAIT_SECS: u64 = 30;
const _: () = assert!(POLL_WAIT_SECS <= 60, "the broker waits at most 60s");

/// Pauses before trying an unreachable broker again during a long-running
/// command (a broker restart takes a moment); then the error stands.
const RETRY_PAUSES: [Duration; 3] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
];

/// An approval request's id: `apr_` and 32 hex digits (kept lowercase).
/// Validated before it becomes part of a URL path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ApprovalId(String);

impl ApprovalId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ApprovalId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let hex = s.strip_prefix("apr_").unwrap_or("");
        if hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Self(format!("apr_{}", hex.to_ascii_lowercase())))
        } else {
            Err(format!(
                "invalid approval request id {:?}: expected apr_ and 32 hex digits, as mcpgate approvals lists them",
                one_line(s, 80)
            ))
        }
    }
}

impl fmt::Display for ApprovalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub async fn run(args: ApprovalsArgs, ctx: &Context) -> Result<(), Error> {
    let filter = args.filter();
    let mut login = ctx.login().await?;
    if args.watch {
        return watch(&mut login, ctx, filter, args.output.output).await;
    }
    let spinner = Spinner::start(format!(
        "asking {} for approval requests",
        login.state.broker
    ));
    let asked = query(filter, None);
    let list = login
        .call(ctx, |client| {
            let asked = asked.clone();
            async move { client.approvals(&asked).await }
        })
        .await?;
    drop(spinner);
    match args.output.output {
        Output::Json => ui::print(&pretty_json(&list)),
        Output::Text => {
            let now = state::now();
            let width = ui::line_width();
            let text: Vec<String> = list
                .approvals
                .iter()
                .map(|a| block(a, now, Arguments::OneLine(width)))
                .collect();
            ui::print(&text.join("\n"))?;
            if list.approvals.is_empty() {
                eprintln!("{}", nothing_listed(filter));
            }
            Ok(())
        }
    }
}

fn nothing_listed(filter: StateFilter) -> String {
    let which = match filter {
        StateFilter::All => String::new(),
        other => format!("{} ", other.as_str()),
    };
    format!(
        "no {which}approval requests that you may see (you see your own and those for servers you approve)"
    )
}

/// The list query for `filter`; a long poll when `after_version` is given.
pub fn query(filter: StateFilter, after_version: Option<u64>) -> ApprovalQuery {
    ApprovalQuery {
        state: Some(filter.as_str().into()),
        after_version,
        wait_secs: after_version.map(|_| POLL_WAIT_SECS),
    }
}

/// `GET /v1/approvals`, keeping the login fresh first, and trying again
/// (after telling `retrying`) when the broker cannot be reached for a
/// moment.
pub async fn poll(
    login: &mut Login,
    ctx: &Context,
    query: &ApprovalQuery,
    retrying: impl Fn(&str),
) -> Result<ApprovalList, Error> {
    let mut pauses = RETRY_PAUSES.iter();
    loop {
        login.keep_fresh(ctx).await?;
        let result = login
            .call(ctx, |client| {
                let query = query.clone();
                async move { client.approvals(&query).await }
            })
            .await;
        match result {
            Err(e @ Error::Unreachable { .. }) => {
                let Some(pause) = pauses.next() else {
                    return Err(e);
                };
                retrying(&format!(
                    "lost the broker ({e}); trying again in {}s",
                    pause.as_secs()
                ));
                tokio::time::sleep(*pause).await;
            }
            other => return other,
        }
    }
}

/// `GET /v1/approvals/{id}` for an id the broker gave; `None` when it is
/// gone (or the id is not one this CLI can ask about).
async fn fetch(login: &mut Login, ctx: &Context, id: &str) -> Result<Option<Approval>, Error> {
    let Ok(id) = id.parse::<ApprovalId>() else {
        return Ok(None);
    };
    let result = login
        .call(ctx, |client| {
            let id = id.clone();
            async move { client.approval(&id).await }
        })
        .await;
    match result {
        Ok(a) => Ok(Some(a)),
        Err(Error::ApprovalNotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// How the arguments of a held call are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arguments {
    /// Compact JSON on one line, cut so the line fits this width.
    OneLine(usize),
    /// Pretty-printed, in full: what an approver decides on.
    Full,
}

/// The width of a field's label column in a [`block`].
const LABEL: usize = 14;

/// One request, a header line and indented fields:
///
/// ```text
/// apr_0123…  call  pending
///   requester:    alice
///   server:       db
///   call:         tools/call query
///   arguments:    {"sql":"delete from users"}
///   ...
/// ```
pub fn block(a: &Approval, now: u64, arguments: Arguments) -> String {
    let mut out = format!("{}  {}  {}\n", text(&a.id, 80), kind(a.kind), a.state);
    let mut field = |label: &str, value: &str| {
        let label = format!("{label}:");
        let _ = writeln!(out, "  {label:<LABEL$}{value}");
    };
    field("requester", a.requester.as_str());
    field("server", a.server.as_str());
    if let Some(session) = &a.session {
        field("session", session.as_ref());
    }
    if a.kind == ApprovalKind::Call || a.method.is_some() {
        let method = a.method.as_deref().map_or("?".into(), |m| text(m, 100));
        let name = a.name.as_deref().map_or(String::new(), |n| text(n, 300));
        field("call", format!("{method} {name}").trim_end());
        match (&a.arguments, arguments) {
            (None, _) => field("arguments", "(none)"),
            (Some(args), Arguments::OneLine(width)) => {
                let compact = ui::json_visible(&serde_json::to_string(args).unwrap_or_default());
                let room = width.saturating_sub(2 + LABEL).max(20);
                field("arguments", &ui::truncate(&compact, room));
            }
            (Some(args), Arguments::Full) => {
                let pretty =
                    ui::json_visible(&serde_json::to_string_pretty(args).unwrap_or_default());
                let indent = format!("\n{:width$}", "", width = 2 + LABEL);
                field("arguments", &pretty.replace('\n', &indent));
            }
        }
    }
    if let Some(secs) = a.duration_secs {
        field("duration", &duration(secs));
    }
    if let Some(rule) = &a.rule {
        field("rule", &text(rule, 300));
    }
    if let Some(reason) = &a.reason {
        field("reason", &text(reason, 500));
    }
    field("approvals", &tally(a));
    let denials = voters(a, false);
    if !denials.is_empty() {
        field("denied by", &denials);
    }
    field(
        "opened",
        &format!(
            "{} ({})",
            ui::relative(a.created_at, now),
            ui::timestamp(a.created_at)
        ),
    );
    match a.state {
        ApprovalState::Pending if a.expires_at > now => field(
            "time left",
            &format!(
                "{} (expires {})",
                ui::span(a.expires_at - now),
                ui::timestamp(a.expires_at)
            ),
        ),
        ApprovalState::Pending => field(
            "time left",
            &format!("none (expired {})", ui::relative(a.expires_at, now)),
        ),
        state => {
            let at = a.decided_at.unwrap_or(a.expires_at);
            field(
                "decided",
                &format!("{state} {} ({})", ui::relative(at, now), ui::timestamp(at)),
            );
        }
    }
    if let Some(until) = a.grant_expires_at {
        field("access until", &ui::expiry(until, now));
    }
    if arguments == Arguments::Full {
        field("digest", &text(&a.digest, 16));
    }
    out
}

/// Broker- or requester-chosen text, on one line and with nothing hidden.
fn text(s: &str, max: usize) -> String {
    ui::visible(&one_line(s, max))
}

fn kind(kind: ApprovalKind) -> &'static str {
    match kind {
        ApprovalKind::Call => "call",
        ApprovalKind::Access => "access",
    }
}

/// `1h`, `2h 30m`: the same form `--duration` takes.
pub fn duration(secs: u64) -> String {
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

/// Approvals so far and required: `1 of 2 (bob)`.
pub fn tally(a: &Approval) -> String {
    let yes = a.votes.iter().filter(|v| v.approve).count();
    let names = voters(a, true);
    if names.is_empty() {
        format!("{yes} of {}", a.required)
    } else {
        format!("{yes} of {} ({names})", a.required)
    }
}

/// Who voted this way, with their reasons: `bob, carol: "too broad"`.
fn voters(a: &Approval, approve: bool) -> String {
    a.votes
        .iter()
        .filter(|v| v.approve == approve)
        .map(|v| match &v.reason {
            Some(r) => format!("{}: \"{}\"", v.approver, text(r, 200)),
            None => v.approver.to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Where a request stands, after its id: `approved by bob`, `denied by
/// carol ("no")`, `expired: nobody decided in time`, ...
pub fn outcome(a: &Approval) -> String {
    match a.state {
        ApprovalState::Pending => format!("pending: {} approvals", tally(a)),
        ApprovalState::Approved => {
            let mut s = format!("approved by {}", voters(a, true));
            if let Some(until) = a.grant_expires_at {
                let _ = write!(
                    s,
                    "; {} may use {} until {}",
                    a.requester,
                    a.server,
                    ui::timestamp(until)
                );
            }
            s
        }
        ApprovalState::Denied => format!("denied by {}", voters(a, false)),
        ApprovalState::Expired => {
            let yes = a.votes.iter().filter(|v| v.approve).count();
            if yes == 0 {
                "expired: nobody decided in time".into()
            } else {
                format!("expired with {} approvals", tally(a))
            }
        }
        ApprovalState::Cancelled => match a.kind {
            ApprovalKind::Call => {
                "cancelled: the session ended or the client cancelled the call".into()
            }
            ApprovalKind::Access => "cancelled".into(),
        },
    }
}

/// For a request that is not pending any more: `was already decided
/// (approved by bob)`, `has expired: ...`, `was cancelled: ...`.
pub fn already(a: &Approval) -> String {
    match a.state {
        ApprovalState::Approved | ApprovalState::Denied => {
            format!("was already decided ({})", outcome(a))
        }
        ApprovalState::Expired => format!("has {}", outcome(a)),
        ApprovalState::Cancelled => format!("was {}", outcome(a)),
        ApprovalState::Pending => "is still pending".into(),
    }
}

/// `value` as pretty JSON for stdout, a line end included; through
/// [`ui::json_visible`], so it is the same JSON with nothing invisible.
pub fn pretty_json<T: Serialize>(value: &T) -> String {
    // Plain data always serialises.
    let mut s = ui::json_visible(&serde_json::to_string_pretty(value).unwrap_or_default());
    s.push('\n');
    s
}

/// What `--watch` reports.
#[derive(Debug, Clone, PartialEq)]
enum Change {
    /// In the list when watching started.
    Current(Approval),
    /// Newly in the list.
    New(Approval),
    /// A vote was recorded, or the state changed.
    Changed(Approval),
    /// No longer in the list, and the broker no longer shows it.
    Gone(String),
}

impl Change {
    /// The `event` of `--output json`: `current`, `opened`, `vote`, a
    /// final state's name, or `gone`.
    fn event(&self, before: Option<&Approval>) -> &'static str {
        match self {
            Change::Current(_) => "current",
            Change::New(a) if a.state == ApprovalState::Pending => "opened",
            Change::New(a) => a.state.as_str(),
            Change::Changed(a) if before.is_some_and(|b| b.state == a.state) => "vote",
            Change::Changed(a) => a.state.as_str(),
            Change::Gone(_) => "gone",
        }
    }
}

/// What changed from `seen` to `list`, in list order; and the ids that
/// left the list (their fate needs a look at each).
fn diff(seen: &HashMap<String, Approval>, list: &[Approval]) -> (Vec<Change>, Vec<String>) {
    let mut changes = Vec::new();
    for a in list {
        match seen.get(&a.id) {
            None => changes.push(Change::New(a.clone())),
            Some(before) if before.state != a.state || before.votes != a.votes => {
                changes.push(Change::Changed(a.clone()));
            }
            Some(_) => {}
        }
    }
    let mut left: Vec<String> = seen
        .keys()
        .filter(|id| !list.iter().any(|a| &a.id == *id))
        .cloned()
        .collect();
    left.sort();
    (changes, left)
}

/// One `--output json` line of `--watch`.
#[derive(Serialize)]
struct WatchEvent<'a> {
    /// Unix seconds.
    at: u64,
    event: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    approval: Option<&'a Approval>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
}

/// How one change is printed.
fn render(change: &Change, before: Option<&Approval>, now: u64, output: Output) -> String {
    if output == Output::Json {
        let (approval, id) = match change {
            Change::Current(a) | Change::New(a) | Change::Changed(a) => (Some(a), None),
            Change::Gone(id) => (None, Some(id.as_str())),
        };
        let event = WatchEvent {
            at: now,
            event: change.event(before),
            approval,
            id,
        };
        let line = serde_json::to_string(&event).unwrap_or_default();
        return format!("{}\n", ui::json_visible(&line));
    }
    let at = ui::timestamp(now);
    match change {
        Change::Current(a) | Change::New(a) => {
            format!(
                "{at}  {}\n",
                block(a, now, Arguments::OneLine(ui::line_width()))
            )
        }
        Change::Changed(a) if before.is_some_and(|b| b.state == a.state) => {
            format!(
                "{at}  {}  approval recorded: {}\n",
                text(&a.id, 80),
                tally(a)
            )
        }
        Change::Changed(a) => format!("{at}  {}  {}\n", text(&a.id, 80), outcome(a)),
        Change::Gone(id) => format!("{at}  {}  no longer listed\n", text(id, 80)),
    }
}

/// `--watch`: the list now, then every change, until Ctrl-C (exit 0) or
/// an error (the broker gone for good, the login refused).
async fn watch(
    login: &mut Login,
    ctx: &Context,
    filter: StateFilter,
    output: Output,
) -> Result<(), Error> {
    let warn = |line: &str| eprintln!("warning: {line}");
    let first = poll(login, ctx, &query(filter, None), warn).await?;
    let now = state::now();
    let mut seen: HashMap<String, Approval> = HashMap::new();
    for a in &first.approvals {
        ui::print(&render(&Change::Current(a.clone()), None, now, output))?;
        seen.insert(a.id.clone(), a.clone());
    }
    let mut version = first.version;
    eprintln!(
        "watching {} approval requests at {}; Ctrl-C stops",
        filter.as_str(),
        login.state.broker
    );

    // Ctrl-C ends the watch normally. Should no handler be possible, the
    // default (the process ends) still applies.
    let mut interrupted = std::pin::pin!(async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    });
    loop {
        let next = query(filter, Some(version));
        let list = tokio::select! {
            () = &mut interrupted => {
                eprintln!("stopped watching");
                return Ok(());
            }
            list = poll(login, ctx, &next, warn) => list?,
        };
        version = list.version;
        let (mut changes, left) = diff(&seen, &list.approvals);
        for id in left {
            match fetch(login, ctx, &id).await? {
                Some(a) if Some(&a) != seen.get(&id) => changes.push(Change::Changed(a)),
                Some(_) => {}
                None => changes.push(Change::Gone(id.clone())),
            }
        }
        let now = state::now();
        for change in &changes {
            let id = match change {
                Change::Current(a) | Change::New(a) | Change::Changed(a) => &a.id,
                Change::Gone(id) => id,
            };
            ui::print(&render(change, seen.get(id), now, output))?;
        }
        seen = list
            .approvals
            .into_iter()
            .map(|a| (a.id.clone(), a))
            .collect();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use mcpgate_shared::approval::Vote;
    use serde_json::json;

    use super::*;

    pub(crate) const ID: &str = "apr_0123456789abcdef0123456789abcdef";
    pub(crate) const NOW: u64 = 1_800_000_000;

    /// A pending held call: alice's `tools/call query` on `db`, opened 3
    /// minutes ago, 7 minutes left, 2 approvals required.
    pub(crate) fn held_call() -> Approval {
        let arguments = json!({"sql": "delete from users where id = 4", "db": "prod"});
        Approval {
            id: ID.into(),
            kind: ApprovalKind::Call,
            state: ApprovalState::Pending,
            requester: "alice".parse().unwrap(),
            server: "db".parse().unwrap(),
            session: Some(crate::testing::SESSION_ID.parse().unwrap()),
            method: Some("tools/call".into()),
            name: Some("query".into()),
            digest: mcpgate_shared::approval::digest("tools/call", "query", &arguments),
            arguments: Some(arguments),
            rule: Some("prod-writes (policy.toml:12)".into()),
            reason: Some("writes to production need a second pair of eyes".into()),
            duration_secs: None,
            required: 2,
            votes: vec![],
            created_at: NOW - 180,
            expires_at: NOW + 420,
            decided_at: None,
            grant_expires_at: None,
        }
    }

    pub(crate) fn access_request() -> Approval {
        Approval {
            kind: ApprovalKind::Access,
            session: None,
            method: None,
            name: None,
            arguments: None,
            rule: None,
            reason: Some("incident 4411".into()),
            duration_secs: Some(3600),
            digest: "ab".repeat(32),
            required: 1,
            ..held_call()
        }
    }

    pub(crate) fn vote(who: &str, approve: bool, reason: Option<&str>) -> Vote {
        Vote {
            approver: who.parse().unwrap(),
            approve,
            reason: reason.map(str::to_owned),
            at: NOW - 10,
        }
    }

    #[test]
    fn approval_ids_are_apr_and_32_hex_digits() {
        let id: ApprovalId = ID.parse().unwrap();
        assert_eq!(id.as_str(), ID);
        assert_eq!(id.to_string(), ID);
        let upper: ApprovalId = "apr_0123456789ABCDEF0123456789ABCDEF".parse().unwrap();
        assert_eq!(upper.as_str(), ID);
        for bad in [
            "",
            "apr_",
            "APR_0123456789abcdef0123456789abcdef",
            "apr_0123",
            "0123456789abcdef0123456789abcdef",
            "apr_0123456789abcdef0123456789abcdeg",
            "apr_0123456789abcdef0123456789abcdef0",
            "apr_../../v1/servers/0123456789abcdef",
        ] {
            let err = bad.parse::<ApprovalId>().unwrap_err();
            assert!(err.contains("apr_ and 32 hex digits"), "{err}");
        }
    }

    #[test]
    fn a_pending_call_block_shows_everything_an_approver_needs() {
        let mut a = held_call();
        a.votes = vec![vote("bob", true, None)];
        assert_eq!(
            block(&a, NOW, Arguments::OneLine(120)),
            format!(
                "{ID}  call  pending\n\
                 \x20 requester:    alice\n\
                 \x20 server:       db\n\
                 \x20 session:      0b6c9a58-5f7e-4c53-9d0e-3f0c1b2a4d5e\n\
                 \x20 call:         tools/call query\n\
                 \x20 arguments:    {{\"sql\":\"delete from users where id = 4\",\"db\":\"prod\"}}\n\
                 \x20 rule:         prod-writes (policy.toml:12)\n\
                 \x20 reason:       writes to production need a second pair of eyes\n\
                 \x20 approvals:    1 of 2 (bob)\n\
                 \x20 opened:       3m ago (2027-01-15T07:57:00Z)\n\
                 \x20 time left:    7m (expires 2027-01-15T08:07:00Z)\n"
            )
        );
    }

    #[test]
    fn one_line_arguments_are_cut_to_the_width() {
        let mut a = held_call();
        a.arguments = Some(json!({"sql": "x".repeat(500)}));
        let text = block(&a, NOW, Arguments::OneLine(60));
        let line = text.lines().find(|l| l.contains("arguments:")).unwrap();
        assert_eq!(line.chars().count(), 60, "{line}");
        assert!(line.ends_with("xxx..."), "{line}");
        // Never narrower than 20 characters of arguments.
        let text = block(&a, NOW, Arguments::OneLine(10));
        let line = text.lines().find(|l| l.contains("arguments:")).unwrap();
        assert_eq!(line.chars().count(), 2 + LABEL + 20, "{line}");
    }

    #[test]
    fn full_arguments_are_pretty_complete_and_show_the_digest() {
        let mut a = held_call();
        a.arguments = Some(json!({"sql": "x".repeat(500), "n": 1}));
        let text = block(&a, NOW, Arguments::Full);
        assert!(text.contains(&"x".repeat(500)), "{text}");
        assert!(
            text.contains("  arguments:    {\n                  \"sql\": \"xxx"),
            "{text}"
        );
        assert!(
            text.contains("\n                  \"n\": 1\n                }\n"),
            "{text}"
        );
        assert!(
            text.contains(&format!("  digest:       {}...\n", &a.digest[..16])),
            "{text}"
        );
    }

    #[test]
    fn requester_chosen_text_cannot_hide_or_redraw() {
        let mut a = held_call();
        a.name = Some("query\u{202e}txt.exe".into());
        a.arguments = Some(json!({"sql": "select 1\u{1b}[2J\u{e0041}"}));
        a.reason = Some("line one\nline two".into());
        for mode in [Arguments::OneLine(200), Arguments::Full] {
            let text = block(&a, NOW, mode);
            assert!(
                !text.contains('\u{202e}')
                    && !text.contains('\u{1b}')
                    && !text.contains('\u{e0041}'),
                "{text:?}"
            );
            assert!(text.contains("query\\u{202e}txt.exe"), "{text}");
            assert!(
                text.contains(r#""select 1\u001b[2J\udb40\udc41""#),
                "{text}"
            );
            assert!(text.contains("reason:       line one line two\n"), "{text}");
        }
    }

    #[test]
    fn an_access_request_block_and_its_grant() {
        let mut a = access_request();
        a.state = ApprovalState::Approved;
        a.votes = vec![vote("bob", true, Some("ok for the incident"))];
        a.decided_at = Some(NOW - 60);
        a.grant_expires_at = Some(NOW + 3540);
        let text = block(&a, NOW, Arguments::OneLine(120));
        assert!(
            text.starts_with(&format!("{ID}  access  approved\n")),
            "{text}"
        );
        assert!(
            !text.contains("call:") && !text.contains("arguments:"),
            "{text}"
        );
        assert!(text.contains("  duration:     1h\n"), "{text}");
        assert!(text.contains("  reason:       incident 4411\n"), "{text}");
        assert!(
            text.contains("  approvals:    1 of 1 (bob: \"ok for the incident\")\n"),
            "{text}"
        );
        assert!(
            text.contains("  decided:      approved 1m ago (2027-01-15T07:59:00Z)\n"),
            "{text}"
        );
        assert!(
            text.contains("  access until: 2027-01-15T08:59:00Z (in 59m)\n"),
            "{text}"
        );
        assert_eq!(
            outcome(&a),
            "approved by bob: \"ok for the incident\"; alice may use db until 2027-01-15T08:59:00Z"
        );
    }

    #[test]
    fn outcomes_say_how_it_ended() {
        let mut a = held_call();
        a.state = ApprovalState::Denied;
        a.votes = vec![vote("bob", true, None), vote("carol", false, Some("no"))];
        assert_eq!(outcome(&a), "denied by carol: \"no\"");
        assert_eq!(already(&a), "was already decided (denied by carol: \"no\")");
        let text = block(&a, NOW, Arguments::OneLine(120));
        assert!(text.contains("  denied by:    carol: \"no\"\n"), "{text}");

        a.state = ApprovalState::Approved;
        a.votes = vec![vote("bob", true, None), vote("dave", true, None)];
        assert_eq!(already(&a), "was already decided (approved by bob, dave)");

        a.state = ApprovalState::Expired;
        a.votes = vec![];
        assert_eq!(already(&a), "has expired: nobody decided in time");
        a.votes = vec![vote("bob", true, None)];
        assert_eq!(outcome(&a), "expired with 1 of 2 (bob) approvals");

        a.state = ApprovalState::Cancelled;
        assert_eq!(
            already(&a),
            "was cancelled: the session ended or the client cancelled the call"
        );
    }

    #[test]
    fn the_list_query_long_polls_only_with_a_version() {
        let q = query(StateFilter::Pending, None);
        assert_eq!(
            serde_json::to_value(&q).unwrap(),
            json!({"state": "pending"})
        );
        let q = query(StateFilter::All, Some(7));
        assert_eq!(
            serde_json::to_value(&q).unwrap(),
            json!({"state": "all", "after_version": 7, "wait_secs": POLL_WAIT_SECS})
        );
    }

    #[test]
    fn watch_reports_new_requests_votes_and_departures() {
        let a = held_call();
        let mut b = access_request();
        b.id = "apr_ffffffffffffffffffffffffffffffff".into();
        let seen: HashMap<String, Approval> = [(a.id.clone(), a.clone())].into();

        // Nothing changed.
        let (changes, left) = diff(&seen, std::slice::from_ref(&a));
        assert!(changes.is_empty() && left.is_empty());

        // A vote on a, and b is new.
        let mut voted = a.clone();
        voted.votes = vec![vote("bob", true, None)];
        let (changes, left) = diff(&seen, &[voted.clone(), b.clone()]);
        assert_eq!(
            changes,
            vec![Change::Changed(voted.clone()), Change::New(b.clone())]
        );
        assert!(left.is_empty());
        assert_eq!(changes[0].event(Some(&a)), "vote");
        assert_eq!(changes[1].event(None), "opened");
        let line = render(&changes[0], Some(&a), NOW, Output::Text);
        assert_eq!(
            line,
            format!("2027-01-15T08:00:00Z  {ID}  approval recorded: 1 of 2 (bob)\n")
        );
        let new = render(&changes[1], None, NOW, Output::Text);
        assert!(
            new.starts_with(
                "2027-01-15T08:00:00Z  apr_ffffffffffffffffffffffffffffffff  access  pending\n"
            ),
            "{new}"
        );

        // a left the pending list: the caller looks it up.
        let (changes, left) = diff(&seen, &[]);
        assert!(changes.is_empty());
        assert_eq!(left, vec![ID.to_owned()]);
        let mut approved = voted;
        approved.state = ApprovalState::Approved;
        let change = Change::Changed(approved.clone());
        assert_eq!(change.event(Some(&a)), "approved");
        assert_eq!(
            render(&change, Some(&a), NOW, Output::Text),
            format!("2027-01-15T08:00:00Z  {ID}  approved by bob\n")
        );
        let json: serde_json::Value =
            serde_json::from_str(&render(&change, Some(&a), NOW, Output::Json)).unwrap();
        assert_eq!(json["at"], NOW);
        assert_eq!(json["event"], "approved");
        assert_eq!(json["approval"]["id"], ID);
        let gone: serde_json::Value = serde_json::from_str(&render(
            &Change::Gone(ID.into()),
            Some(&a),
            NOW,
            Output::Json,
        ))
        .unwrap();
        assert_eq!(gone, json!({"at": NOW, "event": "gone", "id": ID}));
    }
}
