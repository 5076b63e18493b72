//! `mcpgate replay SESSION`: a recorded session as a terminal timeline —
//! who opened it, from where, with which certificate; then every message,
//! decision, masked result, the end and the seal, each with its time since
//! the start — or, with `--output json`, the events as JSON lines exactly
//! as the broker recorded them.
//!
//! Events arrive as NDJSON from `GET /v1/records/{session}`; with
//! `--follow` the answer stays open until the session's seal, so a live
//! session prints as it happens. [`Timeline`] turns one event at a time
//! into text, remembering requests so that their answers can name the
//! tool and how long it took.
//!
//! Everything in a record past the header was chosen by the client, the
//! server or the requester: it is flattened to one line and shown through
//! [`ui::visible`] / [`ui::json_visible`], so nothing in it can move the
//! cursor, hide text or change its direction.

use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal;
use std::time::Duration;

use mcpgate_shared::event::{DecisionEvent, DecisionKind};
use mcpgate_shared::record::{Body, Event, MessageEvent, Peer, Start};
use serde_json::Value;

use crate::args::{Output, ReplayArgs};
use crate::context::Context;
use crate::env;
use crate::error::{self, Error, one_line};
use crate::ui::{self, Spinner};

pub async fn run(args: ReplayArgs, ctx: &Context) -> Result<(), Error> {
    let mut login = ctx.login().await?;
    let spinner = Spinner::start(format!("asking {} for the record", login.state.broker));
    let session = args.session.clone();
    let follow = args.follow;
    let mut response = login
        .call(ctx, |client| {
            let session = session.clone();
            async move { client.record_stream(&session, follow).await }
        })
        .await?;
    drop(spinner);
    let mut timeline = Timeline::new(Style::stdout(), ui::line_width());
    let mut lines = Lines::default();
    let mut last_at: Option<u64> = None;
    let mut sealed = false;
    let mut count = 0u64;
    loop {
        let chunk = response.chunk().await.map_err(|e| {
            Error::Broker(format!(
                "the record of {session} broke off after {count} events: {}",
                error::chain(&e.without_url())
            ))
        })?;
        let Some(chunk) = chunk else { break };
        for line in lines.push(&chunk) {
            let event: Event = serde_json::from_slice(&line).map_err(|e| {
                Error::Broker(format!(
                    "event {count} of {session} is not one this CLI reads ({:?} error at column {}); check that the CLI and broker versions match",
                    e.classify(),
                    e.column()
                ))
            })?;
            count += 1;
            if let (Some(speed), Some(prev)) = (args.speed, last_at) {
                let gap = event.at_ms.saturating_sub(prev) as f64 / 1000.0 / speed;
                tokio::time::sleep(Duration::from_secs_f64(gap)).await;
            }
            last_at = Some(event.at_ms);
            sealed |= matches!(event.body, Body::Seal { .. });
            match args.output.output {
                Output::Json => ui::print(&format!(
                    "{}\n",
                    ui::json_visible(&String::from_utf8_lossy(&line))
                ))?,
                Output::Text => ui::print(&timeline.event(&event))?,
            }
        }
    }
    if !lines.rest.is_empty() {
        return Err(Error::Broker(format!(
            "the record of {session} ended in the middle of event {count}"
        )));
    }
    if !sealed {
        eprintln!(
            "{}",
            if follow {
                "the broker stopped sending before the session's seal (is it shutting down?); run the same command again to go on"
            } else {
                "the session is still being recorded; mcpgate replay --follow shows it as it goes"
            }
        );
    }
    Ok(())
}

/// Cuts a byte stream into lines.
#[derive(Debug, Default)]
struct Lines {
    rest: Vec<u8>,
}

impl Lines {
    /// The complete lines in what has come so far (without newlines).
    fn push(&mut self, chunk: &[u8]) -> Vec<Vec<u8>> {
        self.rest.extend_from_slice(chunk);
        let Some(end) = self.rest.iter().rposition(|&b| b == b'\n') else {
            return Vec::new();
        };
        let tail = self.rest.split_off(end + 1);
        let done = std::mem::replace(&mut self.rest, tail);
        done.split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .collect()
    }
}

/// Colour on stdout: only to a terminal, and never with `NO_COLOR`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    pub color: bool,
}

impl Style {
    fn stdout() -> Style {
        Style {
            color: env::var(env::NO_COLOR).is_none() && std::io::stdout().is_terminal(),
        }
    }

    fn paint(self, sgr: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{sgr}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }
}

/// A request waiting for its answer.
#[derive(Debug, Clone)]
struct Asked {
    /// The tool, prompt or resource, or else the method.
    what: String,
    method: String,
    at_ms: u64,
}

/// Renders a session's events one at a time.
#[derive(Debug)]
pub struct Timeline {
    style: Style,
    width: usize,
    start_ms: Option<u64>,
    /// Requests by who sent them and their id (each direction has its own
    /// ids).
    asked: HashMap<(&'static str, String), Asked>,
}

/// The width of the `+12.345s` column.
const TIME: usize = 9;
/// Continuation lines start under the text after the marker.
const INDENT: usize = TIME + 4;

/// Someone else's text on one line, invisible characters shown.
fn clean(text: &str, max: usize) -> String {
    ui::visible(&one_line(text, max))
}

/// A JSON value as one compact line, invisible characters escaped, cut to
/// `max` characters.
fn compact(value: &Value, max: usize) -> String {
    let text = serde_json::to_string(value).unwrap_or_default();
    ui::truncate(&ui::json_visible(&text), max)
}

fn masked_counts(masked: &BTreeMap<String, u64>) -> String {
    masked
        .iter()
        .map(|(k, v)| format!("{}={v}", clean(k, 40)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn arrow(from: Peer, to: Peer) -> &'static str {
    match (from, to) {
        (Peer::Client, Peer::Upstream) => "→",
        (Peer::Upstream, Peer::Client) => "←",
        (Peer::Broker, Peer::Client) => "↩",
        (Peer::Broker, Peer::Upstream) => "↪",
        (Peer::Client, Peer::Broker) => "→ broker",
        (Peer::Upstream, Peer::Broker) => "← broker",
        _ => "·",
    }
}

/// What a tool call's result says, as text: its text content (or an
/// error's), else its structured content, else the whole result.
fn result_preview(method: Option<&str>, result: &Value, max: usize) -> String {
    let texts = |items: Option<&Value>, key: &str| -> Vec<String> {
        items
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|c| c.get(key).and_then(Value::as_str).map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let error = result.get("isError").and_then(Value::as_bool) == Some(true);
    let prefix = if error { "tool error: " } else { "" };
    let mut parts = texts(result.get("content"), "text");
    if parts.is_empty() {
        // resources/read
        parts = texts(result.get("contents"), "text");
    }
    if parts.is_empty()
        && let Some(messages) = result.get("messages").and_then(Value::as_array)
    {
        // prompts/get
        parts = messages
            .iter()
            .filter_map(|m| m.pointer("/content/text").and_then(Value::as_str))
            .map(str::to_owned)
            .collect();
    }
    if !parts.is_empty() {
        return format!("{prefix}{}", clean(&parts.join(" "), max));
    }
    if let Some(s) = result.get("structuredContent") {
        return format!("{prefix}{}", compact(s, max));
    }
    if method == Some("tools/list")
        && let Some(tools) = result.get("tools").and_then(Value::as_array)
    {
        let names: Vec<&str> = tools
            .iter()
            .filter_map(|t| t.get("name").and_then(Value::as_str))
            .collect();
        return clean(&format!("{} tools: {}", names.len(), names.join(", ")), max);
    }
    compact(result, max)
}

impl Timeline {
    pub fn new(style: Style, width: usize) -> Timeline {
        Timeline {
            style,
            width: width.max(60),
            start_ms: None,
            asked: HashMap::new(),
        }
    }

    /// Room for text after the time and marker.
    fn room(&self) -> usize {
        self.width.saturating_sub(INDENT).max(40)
    }

    fn line(&self, at_ms: u64, marker: &str, text: &str) -> String {
        let since = at_ms.saturating_sub(self.start_ms.unwrap_or(at_ms));
        let time = format!("+{}.{:03}s", since / 1000, since % 1000);
        format!("{time:>TIME$}  {marker} {text}\n")
    }

    fn more(&self, text: &str) -> String {
        format!("{:INDENT$}{text}\n", "")
    }

    /// The text for one event: some lines, each ending in a newline.
    pub fn event(&mut self, e: &Event) -> String {
        self.start_ms.get_or_insert(e.at_ms);
        match &e.body {
            Body::Start(s) => self.header(e, s),
            Body::Message(m) => self.message(e.at_ms, m),
            Body::Decision { decision } => self.decision(e.at_ms, decision),
            Body::Checkpoint { events } => self.line(
                e.at_ms,
                &self.style.paint("2", "·"),
                &self
                    .style
                    .paint("2", &format!("checkpoint: {events} events signed")),
            ),
            Body::End { state, reason } => self.line(
                e.at_ms,
                &self.style.paint("1", "END"),
                &format!("{}: {}", state.as_str(), clean(reason, self.room())),
            ),
            Body::Seal { events } => self.line(
                e.at_ms,
                &self.style.paint("1", "SEAL"),
                &format!("{events} events, signed"),
            ),
        }
    }

    fn header(&self, e: &Event, s: &Start) -> String {
        let roles: Vec<&str> = s.roles.iter().map(|r| r.as_str()).collect();
        let field = |name: &str, value: String| format!("{:<9}{value}\n", name);
        let mut out = String::new();
        out.push_str(&field("session", self.style.paint("1", e.session.as_str())));
        out.push_str(&field(
            "user",
            format!(
                "{} (roles {}; issuer {})",
                s.user,
                if roles.is_empty() {
                    "none".into()
                } else {
                    roles.join(", ")
                },
                clean(&s.issuer, 200)
            ),
        ));
        out.push_str(&field("server", s.server.to_string()));
        out.push_str(&field(
            "started",
            crate::sessions::timestamp_ms(e.at_ms).to_string(),
        ));
        out.push_str(&field(
            "from",
            format!(
                "{} (tunnel from {})",
                clean(&s.client_addr, 100),
                clean(&s.tunnel_peer, 100)
            ),
        ));
        out.push_str(&field(
            "cert",
            format!(
                "serial {}, issued {}",
                clean(&s.cert_serial, 100),
                ui::timestamp(s.created_at)
            ),
        ));
        out.push('\n');
        out
    }

    fn message(&mut self, at_ms: u64, m: &MessageEvent) -> String {
        let room = self.room();
        let id = m.id.as_deref().map(|id| format!(" #{}", clean(id, 40)));
        let id = id.as_deref().unwrap_or("");
        let marker = arrow(m.from, m.to);
        let method = m.method.as_deref().map(|x| clean(x, 80));
        let masked = if m.masked.is_empty() {
            String::new()
        } else {
            format!(
                " · {}",
                self.style
                    .paint("36", &format!("masked {}", masked_counts(&m.masked)))
            )
        };
        match m.kind.as_str() {
            "request" | "notification" => {
                let method = method.unwrap_or_else(|| "?".into());
                let name = m.name.as_deref().map(|n| clean(n, 120));
                let params = m.msg.get("params");
                let shown = match m.method.as_deref() {
                    Some("tools/call" | "prompts/get") => params.and_then(|p| p.get("arguments")),
                    Some("resources/read") => None,
                    _ => params.filter(|p| p.as_object().is_some_and(|o| !o.is_empty())),
                };
                let mut text = method.clone();
                if let Some(n) = &name {
                    text.push(' ');
                    text.push_str(n);
                }
                text.push_str(id);
                if let Some(v) = shown {
                    let left = room.saturating_sub(text.chars().count() + 1).max(20);
                    text.push(' ');
                    text.push_str(&compact(v, left));
                }
                if m.kind == "request"
                    && let Some(id) = &m.id
                {
                    self.asked.insert(
                        (m.from.as_str(), id.clone()),
                        Asked {
                            what: name.unwrap_or_else(|| method.clone()),
                            method,
                            at_ms,
                        },
                    );
                }
                self.line(at_ms, marker, &format!("{text}{masked}"))
            }
            kind => {
                // An answer goes back to whoever asked.
                let asked =
                    m.id.as_ref()
                        .and_then(|id| self.asked.remove(&(m.to.as_str(), id.clone())));
                let about = asked
                    .as_ref()
                    .map(|a| format!(" {} ({}ms)", a.what, at_ms.saturating_sub(a.at_ms)))
                    .unwrap_or_default();
                if kind == "error" {
                    let code = m
                        .msg
                        .pointer("/error/code")
                        .map(|c| c.to_string())
                        .unwrap_or_default();
                    let message = m
                        .msg
                        .pointer("/error/message")
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    let head = format!("error{id}{about}");
                    let left = room.saturating_sub(head.chars().count() + code.len() + 3);
                    let text = format!("{head}: {code} {}", clean(message, left.max(20)));
                    return self.line(
                        at_ms,
                        marker,
                        &format!("{}{masked}", self.style.paint("31", &text)),
                    );
                }
                let mut out = self.line(at_ms, marker, &format!("result{id}{about}{masked}"));
                if let Some(result) = m.msg.get("result") {
                    let method = asked.as_ref().map(|a| a.method.as_str());
                    let preview = result_preview(method, result, room);
                    if !preview.is_empty() && preview != "{}" {
                        out.push_str(&self.more(&preview));
                    }
                }
                out
            }
        }
    }

    fn decision(&self, at_ms: u64, d: &DecisionEvent) -> String {
        let label = d.decision.as_str().to_uppercase().replace('_', " ");
        let sgr = match d.decision {
            DecisionKind::Allow | DecisionKind::Approve | DecisionKind::Grant => "32",
            DecisionKind::Deny
            | DecisionKind::Refuse
            | DecisionKind::DenyByApprover
            | DecisionKind::Timeout => "31",
            DecisionKind::Hold | DecisionKind::Cancel => "33",
            DecisionKind::Mask => "36",
        };
        let mut what: Vec<String> = Vec::new();
        if d.decision != DecisionKind::Mask
            && let Some(m) = &d.method
        {
            what.push(clean(m, 80));
        }
        if let Some(n) = &d.name {
            what.push(clean(n, 120));
        }
        let mut text = what.join(" ");
        if let Some(id) = &d.request_id {
            text.push_str(&format!(" #{}", clean(id, 40)));
        }
        let text = text.trim_start().to_owned();
        let mut details: Vec<String> = Vec::new();
        if let Some(rule) = &d.rule {
            details.push(format!("rule {}", clean(rule, 120)));
        }
        if let Some(a) = &d.approval {
            let by: Vec<&str> = d.approvers.iter().map(|u| u.as_str()).collect();
            details.push(if by.is_empty() {
                format!("approval {}", clean(a, 60))
            } else {
                format!("approval {} by {}", clean(a, 60), by.join(", "))
            });
        } else if !d.approvers.is_empty() {
            let by: Vec<&str> = d.approvers.iter().map(|u| u.as_str()).collect();
            details.push(format!("by {}", by.join(", ")));
        }
        let body = match d.decision {
            DecisionKind::Mask => format!("{text}: {}", masked_counts(&d.masked)),
            // An allow's reason repeats its rule.
            DecisionKind::Allow if d.rule.is_some() => text,
            _ => format!("{text}: {}", clean(&d.reason, self.room())),
        };
        let body = if details.is_empty() {
            body
        } else {
            format!("{body} ({})", details.join("; "))
        };
        self.line(at_ms, &self.style.paint(sgr, &label), &body)
    }
}

#[cfg(test)]
mod tests {
    use mcpgate_shared::record::EndState;
    use serde_json::json;

    use super::*;

    const T0: u64 = 1_800_000_000_000;

    fn event(seq: u64, at: u64, body: Body) -> Event {
        Event {
            v: 1,
            session: "5e550001-0000-4000-8000-000000000001".parse().unwrap(),
            seq,
            at_ms: T0 + at,
            prev: "00".repeat(32),
            body,
        }
    }

    fn msg(from: Peer, to: Peer, kind: &str, m: Value) -> Body {
        Body::Message(MessageEvent {
            from,
            to,
            kind: kind.into(),
            id: m.get("id").map(|id| id.to_string()),
            method: m.get("method").and_then(Value::as_str).map(str::to_owned),
            name: m
                .pointer("/params/name")
                .and_then(Value::as_str)
                .map(str::to_owned),
            bytes: 100,
            masked: BTreeMap::new(),
            msg: m,
        })
    }

    fn decision(kind: DecisionKind, name: &str, id: u64, reason: &str) -> DecisionEvent {
        DecisionEvent {
            at_ms: 0,
            decision: kind,
            session: None,
            user: "alice".parse().unwrap(),
            server: "db".parse().unwrap(),
            method: Some("tools/call".into()),
            name: Some(name.into()),
            request_id: Some(id.to_string()),
            rule: Some("dba-only (policy.toml:12)".into()),
            reason: reason.into(),
            approval: None,
            approvers: vec![],
            masked: BTreeMap::new(),
        }
    }

    fn session() -> Vec<Event> {
        let (c, u, b) = (Peer::Client, Peer::Upstream, Peer::Broker);
        let mut approve = decision(DecisionKind::Approve, "alter_table", 3, "approved");
        approve.approval = Some("apr_0123".into());
        approve.approvers = vec!["bob".parse().unwrap()];
        let mut mask = decision(DecisionKind::Mask, "get_customer", 2, "masked 3 values");
        mask.masked = [("card".to_owned(), 1), ("email".to_owned(), 2)].into();
        let mut reply = msg(
            u,
            c,
            "response",
            json!({"jsonrpc":"2.0","id":2,"result":{"content":[{"type":"text","text":"Ada Lovelace <[email]> card [card ****4242]\nsecond line"}],"isError":false}}),
        );
        if let Body::Message(m) = &mut reply {
            m.masked = mask.masked.clone();
        }
        vec![
            event(
                0,
                0,
                Body::Start(Start {
                    user: "alice".parse().unwrap(),
                    issuer: "https://idp.example.com".into(),
                    roles: vec!["dev".parse().unwrap(), "oncall".parse().unwrap()],
                    server: "db".parse().unwrap(),
                    client_addr: "127.0.0.1:50412".into(),
                    tunnel_peer: "127.0.0.1:50414".into(),
                    cert_serial: "4f2a9c0e11d3b7a5".into(),
                    created_at: T0 / 1000,
                }),
            ),
            event(
                1,
                3,
                msg(
                    c,
                    u,
                    "request",
                    json!({"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}),
                ),
            ),
            event(
                2,
                7,
                msg(
                    u,
                    c,
                    "response",
                    json!({"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"get_customer"},{"name":"alter_table"}]}}),
                ),
            ),
            event(
                3,
                1_010,
                Body::Decision {
                    decision: decision(DecisionKind::Allow, "get_customer", 2, "allowed by rule"),
                },
            ),
            event(
                4,
                1_011,
                msg(
                    c,
                    u,
                    "request",
                    json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"get_customer","arguments":{"id":"c-1007","note":"hi\u{202e}there"}}}),
                ),
            ),
            event(5, 1_030, Body::Decision { decision: mask }),
            event(6, 1_031, reply),
            event(
                7,
                2_000,
                Body::Decision {
                    decision: decision(DecisionKind::Deny, "drop_table", 4, "DDL is not allowed"),
                },
            ),
            event(
                8,
                2_001,
                msg(
                    b,
                    c,
                    "error",
                    json!({"jsonrpc":"2.0","id":4,"error":{"code":-32010,"message":"denied by policy: DDL is not allowed"}}),
                ),
            ),
            event(
                9,
                3_000,
                Body::Decision {
                    decision: decision(
                        DecisionKind::Hold,
                        "alter_table",
                        3,
                        "schema changes need a DBA",
                    ),
                },
            ),
            event(10, 45_500, Body::Decision { decision: approve }),
            event(11, 46_000, Body::Checkpoint { events: 11 }),
            event(
                12,
                61_234,
                Body::End {
                    state: EndState::Closed,
                    reason: "client disconnected".into(),
                },
            ),
            event(13, 61_234, Body::Seal { events: 13 }),
        ]
    }

    fn render(style: Style, width: usize) -> String {
        let mut t = Timeline::new(style, width);
        session().iter().map(|e| t.event(e)).collect()
    }

    #[test]
    fn a_session_reads_as_a_timeline() {
        assert_eq!(
            render(Style { color: false }, 100),
            "\
session  5e550001-0000-4000-8000-000000000001
user     alice (roles dev, oncall; issuer https://idp.example.com)
server   db
started  2027-01-15T08:00:00Z
from     127.0.0.1:50412 (tunnel from 127.0.0.1:50414)
cert     serial 4f2a9c0e11d3b7a5, issued 2027-01-15T08:00:00Z

  +0.003s  → tools/list #1
  +0.007s  ← result #1 tools/list (4ms)
             2 tools: get_customer, alter_table
  +1.010s  ALLOW tools/call get_customer #2 (rule dba-only (policy.toml:12))
  +1.011s  → tools/call get_customer #2 {\"id\":\"c-1007\",\"note\":\"hi\\u202ethere\"}
  +1.030s  MASK get_customer #2: card=1 email=2 (rule dba-only (policy.toml:12))
  +1.031s  ← result #2 get_customer (20ms) · masked card=1 email=2
             Ada Lovelace <[email]> card [card ****4242] second line
  +2.000s  DENY tools/call drop_table #4: DDL is not allowed (rule dba-only (policy.toml:12))
  +2.001s  ↩ error #4: -32010 denied by policy: DDL is not allowed
  +3.000s  HOLD tools/call alter_table #3: schema changes need a DBA (rule dba-only (policy.toml:12))
 +45.500s  APPROVE tools/call alter_table #3: approved (rule dba-only (policy.toml:12); approval apr_0123 by bob)
 +46.000s  · checkpoint: 11 events signed
 +61.234s  END closed: client disconnected
 +61.234s  SEAL 13 events, signed
"
        );
    }

    #[test]
    fn colour_only_when_asked_and_long_text_is_cut() {
        let plain = render(Style { color: false }, 100);
        assert!(!plain.contains('\x1b'));
        let colour = render(Style { color: true }, 100);
        assert!(colour.contains("\x1b[31mDENY\x1b[0m"));
        assert!(colour.contains("\x1b[32mALLOW\x1b[0m"));
        // Every line fits a narrow terminal's width (the time column and
        // the marker aside).
        let narrow = render(Style { color: false }, 60);
        for line in narrow.lines().filter(|l| l.contains("→ tools/call")) {
            assert!(line.chars().count() <= 60 + 20, "{line}");
            assert!(line.ends_with("..."), "{line}");
        }
    }

    #[test]
    fn hostile_text_cannot_redraw_the_terminal() {
        let mut t = Timeline::new(Style { color: false }, 100);
        t.event(&session()[0]);
        let e = event(
            1,
            1,
            Body::End {
                state: EndState::Aborted,
                reason: "x\x1b[2J\ny\u{202e}z".into(),
            },
        );
        let text = t.event(&e);
        assert_eq!(text, "  +0.001s  END aborted: x [2J y\\u{202e}z\n");
    }

    #[test]
    fn lines_are_cut_across_chunks() {
        let mut l = Lines::default();
        assert!(l.push(b"{\"a\"").is_empty());
        assert_eq!(
            l.push(b":1}\n{\"b\":2}\n{"),
            vec![b"{\"a\":1}".to_vec(), b"{\"b\":2}".to_vec()]
        );
        assert_eq!(l.rest, b"{");
        assert_eq!(l.push(b"}\n"), vec![b"{}".to_vec()]);
        assert!(l.rest.is_empty());
    }
}
