//! Webhook notifications for approval requests: when a request is opened
//! and when it is decided, every `[[approvals.webhooks]]` receiver is told,
//! either with a generic JSON body or with a Slack-compatible message.
//!
//! [`Webhooks::notify`] never blocks and never fails: it puts the event on a
//! bounded queue per hook (dropping it, with a warning, when the queue is
//! full) so a slow or dead receiver can never hold up a decision. One task
//! per hook delivers its events in order, retrying connection errors, 5xx
//! and 429 with exponential backoff up to the hook's `max_attempts`.
//!
//! A hook's URL and header values are secrets (Slack's URLs embed their
//! token): logs, errors and `Debug` name a hook only by scheme and host.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mcpgate_shared::approval::{Approval, ApprovalKind, ApprovalState};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

use crate::auth::unix_now;
use crate::config::{Webhook, WebhookFormat};
use crate::oidc::error_chain;

/// Events waiting per hook; past this, new events are dropped.
const QUEUE_LEN: usize = 256;
/// How long one POST may take, connection included.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// The wait after the first failure; it doubles after each further one.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Slack messages show the arguments (compact JSON) and free text cut to
/// about this many characters: a section holds at most 3000.
const MAX_SHOWN_CHARS: usize = 500;

/// What happened to an approval request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookEvent {
    /// `approval.opened`: a request is waiting for approvers.
    Opened,
    /// `approval.decided`: it reached a final state (approved, denied,
    /// expired or cancelled).
    Decided,
}

impl WebhookEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookEvent::Opened => "approval.opened",
            WebhookEvent::Decided => "approval.decided",
        }
    }
}

impl fmt::Display for WebhookEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the webhooks could not be set up. Never shows a URL or header value.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("approvals.webhooks[{index}].url is not a URL: {source}")]
    Url {
        index: usize,
        source: url::ParseError,
    },
    #[error("approvals.webhooks[{index}]: {name:?} is not a valid header name")]
    HeaderName { index: usize, name: String },
    #[error("approvals.webhooks[{index}]: the value of header {name:?} is not valid in a header")]
    HeaderValue { index: usize, name: String },
    #[error("approvals.webhooks[{index}]: cannot read ca_file {}: {source}", path.display())]
    ReadCaFile {
        index: usize,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("approvals.webhooks[{index}]: ca_file {}: {source}", path.display())]
    CaFile {
        index: usize,
        path: PathBuf,
        source: reqwest::Error,
    },
    #[error("approvals.webhooks[{index}]: cannot build the HTTP client: {source}")]
    Client {
        index: usize,
        source: reqwest::Error,
    },
    #[error("webhooks need a running tokio runtime")]
    NoRuntime,
}

/// The webhook senders: cheap to clone, all clones share the queues.
/// Delivery stops when the broker shuts down, or once every clone is
/// dropped and the queues are drained.
#[derive(Clone)]
pub struct Webhooks {
    hooks: Arc<[Queue]>,
}

/// One hook as [`Webhooks`] sees it: where its events go.
struct Queue {
    label: Arc<str>,
    format: WebhookFormat,
    tx: mpsc::Sender<Arc<Queued>>,
}

impl fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hooks: Vec<String> = self
            .hooks
            .iter()
            .map(|q| format!("{} ({:?})", q.label, q.format))
            .collect();
        f.debug_tuple("Webhooks").field(&hooks).finish()
    }
}

/// One event, shared by every hook's queue.
struct Queued {
    event: WebhookEvent,
    approval: Approval,
    /// Unix seconds when it was queued; the same on every retry.
    at: u64,
}

/// Delivery timings; tests shorten them.
#[derive(Debug, Clone)]
struct Timing {
    attempt_timeout: Duration,
    first_backoff: Duration,
    max_backoff: Duration,
    /// Tests learn here how each event ended.
    outcomes: Option<mpsc::UnboundedSender<Outcome>>,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            attempt_timeout: ATTEMPT_TIMEOUT,
            first_backoff: FIRST_BACKOFF,
            max_backoff: MAX_BACKOFF,
            outcomes: None,
        }
    }
}

/// How one event's delivery to one hook ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Delivered {
        attempts: u32,
    },
    /// `error` is what the log said about the last attempt.
    GaveUp {
        attempts: u32,
        error: String,
    },
}

impl Webhooks {
    /// Builds one HTTP client per hook (the system's roots plus the hook's
    /// `ca_file`, relative to `config_dir`) and starts its delivery task.
    /// The tasks end when `shutdown` turns true (or its sender is dropped),
    /// abandoning what is queued, or once every handle is dropped and the
    /// queues are drained. Must run inside a tokio runtime.
    pub fn start(
        hooks: &[Webhook],
        config_dir: &Path,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Webhooks, WebhookError> {
        Self::start_with(hooks, config_dir, shutdown, Timing::default())
    }

    /// Webhooks that notify nobody.
    pub fn none() -> Webhooks {
        Webhooks {
            hooks: Arc::new([]),
        }
    }

    fn start_with(
        hooks: &[Webhook],
        config_dir: &Path,
        shutdown: watch::Receiver<bool>,
        timing: Timing,
    ) -> Result<Webhooks, WebhookError> {
        if hooks.is_empty() {
            return Ok(Self::none());
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| WebhookError::NoRuntime)?;
        let native: Vec<reqwest::Certificate> = rustls_native_certs::load_native_certs()
            .certs
            .iter()
            .filter_map(|der| reqwest::Certificate::from_der(der.as_ref()).ok())
            .collect();
        // Build every client before starting any task: a bad hook starts
        // nothing.
        let senders = hooks
            .iter()
            .enumerate()
            .map(|(index, hook)| Hook::new(index, hook, config_dir, &native, &timing))
            .collect::<Result<Vec<_>, _>>()?;
        let queues = senders
            .into_iter()
            .map(|sender| {
                let (tx, rx) = mpsc::channel(QUEUE_LEN);
                let queue = Queue {
                    label: sender.label.clone(),
                    format: sender.format,
                    tx,
                };
                runtime.spawn(sender.run(rx, shutdown.clone(), timing.clone()));
                queue
            })
            .collect::<Vec<_>>();
        Ok(Webhooks {
            hooks: queues.into(),
        })
    }

    /// Queues `event` for every hook; never waits. A hook whose queue is
    /// full loses the event (logged at warn).
    pub fn notify(&self, event: WebhookEvent, approval: &Approval) {
        if self.hooks.is_empty() {
            return;
        }
        let queued = Arc::new(Queued {
            event,
            approval: approval.clone(),
            at: unix_now(),
        });
        for queue in self.hooks.iter() {
            match queue.tx.try_send(queued.clone()) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => warn!(
                    hook = %queue.label,
                    event = event.as_str(),
                    approval = %approval.id,
                    "webhook queue is full; event dropped"
                ),
                Err(mpsc::error::TrySendError::Closed(_)) => debug!(
                    hook = %queue.label,
                    event = event.as_str(),
                    approval = %approval.id,
                    "webhook delivery has stopped; event dropped"
                ),
            }
        }
    }

    /// Resolves once every delivery task has ended.
    #[cfg(test)]
    async fn stopped(&self) {
        for queue in self.hooks.iter() {
            queue.tx.closed().await;
        }
    }
}

/// One hook's delivery side, owned by its task.
struct Hook {
    /// `scheme://host[:port]`: all that logs may show of the URL.
    label: Arc<str>,
    url: url::Url,
    headers: HeaderMap,
    format: WebhookFormat,
    max_attempts: u32,
    http: reqwest::Client,
}

impl Hook {
    fn new(
        index: usize,
        hook: &Webhook,
        config_dir: &Path,
        native: &[reqwest::Certificate],
        timing: &Timing,
    ) -> Result<Self, WebhookError> {
        let url = url::Url::parse(hook.url.expose())
            .map_err(|source| WebhookError::Url { index, source })?;
        let mut label = format!("{}://{}", url.scheme(), url.host_str().unwrap_or(""));
        if let Some(port) = url.port() {
            label.push_str(&format!(":{port}"));
        }

        let mut headers = HeaderMap::new();
        for (name, value) in &hook.headers {
            let header_name =
                HeaderName::from_bytes(name.as_bytes()).map_err(|_| WebhookError::HeaderName {
                    index,
                    name: name.clone(),
                })?;
            let mut header_value =
                HeaderValue::from_str(value.expose()).map_err(|_| WebhookError::HeaderValue {
                    index,
                    name: name.clone(),
                })?;
            // Keeps the value out of hyper's and reqwest's own `Debug`.
            header_value.set_sensitive(true);
            headers.insert(header_name, header_value);
        }

        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timing.attempt_timeout)
            .user_agent(concat!("mcpgate-broker/", env!("CARGO_PKG_VERSION")));
        if url.scheme() == "https" {
            builder = builder.https_only(true);
        } else {
            // `http` is only allowed on loopback (config check): never
            // through a proxy.
            builder = builder.no_proxy();
        }
        for cert in native {
            builder = builder.add_root_certificate(cert.clone());
        }
        if let Some(file) = &hook.ca_file {
            let path = config_dir.join(file);
            let pem = std::fs::read(&path).map_err(|source| WebhookError::ReadCaFile {
                index,
                path: path.clone(),
                source,
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|source| {
                WebhookError::CaFile {
                    index,
                    path: path.clone(),
                    source,
                }
            })?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder
            .build()
            .map_err(|source| WebhookError::Client { index, source })?;
        Ok(Self {
            label: label.into(),
            url,
            headers,
            format: hook.format,
            // The config check keeps it at 1..=20; never fewer than one.
            max_attempts: hook.max_attempts.max(1),
            http,
        })
    }

    /// Delivers queued events one at a time, in order, until shutdown or
    /// until every [`Webhooks`] handle is gone and the queue is empty.
    async fn run(
        self,
        mut rx: mpsc::Receiver<Arc<Queued>>,
        shutdown: watch::Receiver<bool>,
        timing: Timing,
    ) {
        let stop = shut_down(shutdown);
        tokio::pin!(stop);
        loop {
            let queued = tokio::select! {
                biased;
                () = &mut stop => return,
                queued = rx.recv() => match queued {
                    Some(queued) => queued,
                    None => return,
                },
            };
            let body = match render(self.format, &queued) {
                Ok(body) => body,
                Err(e) => {
                    warn!(hook = %self.label, approval = %queued.approval.id, error = %e, "cannot write the webhook body");
                    continue;
                }
            };
            let outcome = tokio::select! {
                biased;
                () = &mut stop => return,
                outcome = self.deliver(&queued, body, &timing) => outcome,
            };
            if let Some(tx) = &timing.outcomes {
                let _ = tx.send(outcome);
            }
        }
    }

    /// POSTs `body` until it is accepted, refused (a 4xx other than 429, a
    /// redirect) or `max_attempts` is spent.
    async fn deliver(&self, queued: &Queued, body: Vec<u8>, timing: &Timing) -> Outcome {
        let mut backoff = timing.first_backoff;
        for attempt in 1..=self.max_attempts {
            let sent = self
                .http
                .post(self.url.clone())
                .headers(self.headers.clone())
                .header(CONTENT_TYPE, "application/json")
                .body(body.clone())
                .send()
                .await;
            let (error, retry, retry_after) = match sent {
                Ok(response) if response.status().is_success() => {
                    return Outcome::Delivered { attempts: attempt };
                }
                Ok(response) => {
                    let status = response.status();
                    (
                        format!("HTTP {status}"),
                        status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS,
                        retry_after(response.headers()),
                    )
                }
                // `without_url`: reqwest's message would show the secret URL.
                Err(e) => (error_chain(&e.without_url()), true, None),
            };
            if !retry || attempt == self.max_attempts {
                warn!(
                    hook = %self.label,
                    event = queued.event.as_str(),
                    approval = %queued.approval.id,
                    attempt,
                    error = %error,
                    "webhook delivery failed; giving up on this event"
                );
                return Outcome::GaveUp {
                    attempts: attempt,
                    error,
                };
            }
            // A receiver asking for a longer pause (429) gets it, within the cap.
            let delay = retry_after.map_or(backoff, |asked| asked.max(backoff));
            let delay = delay.min(timing.max_backoff);
            warn!(
                hook = %self.label,
                event = queued.event.as_str(),
                approval = %queued.approval.id,
                attempt,
                max_attempts = self.max_attempts,
                error = %error,
                retry_in = ?delay,
                "webhook delivery failed; retrying"
            );
            tokio::time::sleep(delay).await;
            backoff = backoff.saturating_mul(2).min(timing.max_backoff);
        }
        // Not reached: the last attempt returns above.
        Outcome::GaveUp {
            attempts: self.max_attempts,
            error: String::new(),
        }
    }
}

/// Resolves when the broker starts shutting down (the flag turns true or
/// its sender is gone).
async fn shut_down(mut shutdown: watch::Receiver<bool>) {
    while !*shutdown.borrow_and_update() {
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}

/// `Retry-After` in seconds (the HTTP-date form is ignored).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let secs = headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs))
}

fn render(format: WebhookFormat, queued: &Queued) -> serde_json::Result<Vec<u8>> {
    match format {
        WebhookFormat::Json => serde_json::to_vec(&JsonBody {
            event: queued.event.as_str(),
            approval: &queued.approval,
            sent_at: queued.at,
        }),
        WebhookFormat::Slack => serde_json::to_vec(&slack_body(queued.event, &queued.approval)),
    }
}

/// The generic body: `{"event": ..., "approval": {...}, "sent_at": ...}`.
#[derive(Serialize)]
struct JsonBody<'a> {
    event: &'static str,
    approval: &'a Approval,
    sent_at: u64,
}

/// A Slack message (incoming-webhook shape): a one-line `text` for
/// notifications and mrkdwn sections with the details. Everything taken
/// from the request is escaped, and cannot close the code spans it is
/// shown in, so a requester cannot make the message say something else.
fn slack_body(event: WebhookEvent, a: &Approval) -> Value {
    let id = &a.id;
    let request = match a.kind {
        ApprovalKind::Call => format!(
            "call {} ({}) on server *{}*",
            code(a.name.as_deref().unwrap_or("?")),
            code(a.method.as_deref().unwrap_or("?")),
            escape(a.server.as_str()),
        ),
        ApprovalKind::Access => format!(
            "access server *{}*{}",
            escape(a.server.as_str()),
            a.duration_secs
                .map(|s| format!(
                    " for {}",
                    humantime::format_duration(Duration::from_secs(s))
                ))
                .unwrap_or_default(),
        ),
    };
    let headline = match event {
        WebhookEvent::Opened => "Approval needed",
        WebhookEvent::Decided => match a.state {
            ApprovalState::Pending => "Pending",
            ApprovalState::Approved => "Approved",
            ApprovalState::Denied => "Denied",
            ApprovalState::Expired => "Expired",
            ApprovalState::Cancelled => "Cancelled",
        },
    };
    let summary = format!("request by *{}* to {request}", escape(a.requester.as_str()));
    let text = format!("{headline}: {summary} ({})", escape(id));

    let mut blocks = vec![section(format!("*{headline}:* {summary}"))];

    let mut details = Vec::new();
    if let Some(rule) = &a.rule {
        details.push(format!("*Rule:* {}", code(rule)));
    }
    if let Some(reason) = &a.reason {
        details.push(format!(
            "*Reason:* {}",
            escape(&truncate(reason, MAX_SHOWN_CHARS))
        ));
    }
    details.push(format!("*ID:* {}", code(id)));
    if let Some(session) = &a.session {
        details.push(format!("*Session:* {}", code(session.as_ref())));
    }
    match event {
        WebhookEvent::Opened => {
            details.push(format!("*Approvals needed:* {}", a.required));
            details.push(format!("*Expires:* {}", slack_date(a.expires_at)));
        }
        WebhookEvent::Decided => {
            details.push(format!("*State:* {}", a.state));
            if let Some(until) = a.grant_expires_at {
                details.push(format!("*Access until:* {}", slack_date(until)));
            }
        }
    }
    blocks.push(section(details.join("\n")));

    if let Some(arguments) = &a.arguments {
        let compact = truncate(&arguments.to_string(), MAX_SHOWN_CHARS);
        blocks.push(section(format!(
            "*Arguments:*\n```{}```",
            fence_safe(&escape(&compact))
        )));
    }

    match event {
        WebhookEvent::Opened => blocks.push(section(format!(
            "Decide with {} or {}",
            code(&format!("mcpgate approve {id}")),
            code(&format!("mcpgate deny {id}")),
        ))),
        WebhookEvent::Decided => {
            let votes = if a.votes.is_empty() {
                "*Votes:* none".to_owned()
            } else {
                let mut lines = vec!["*Votes:*".to_owned()];
                for vote in &a.votes {
                    let mut line = format!(
                        "• *{}* {}",
                        escape(vote.approver.as_str()),
                        if vote.approve { "approved" } else { "denied" }
                    );
                    if let Some(reason) = &vote.reason {
                        line.push_str(": ");
                        line.push_str(&escape(&truncate(reason, MAX_SHOWN_CHARS)));
                    }
                    lines.push(line);
                }
                lines.join("\n")
            };
            blocks.push(section(votes));
        }
    }

    json!({ "text": text, "blocks": blocks })
}

fn section(mrkdwn: String) -> Value {
    json!({ "type": "section", "text": { "type": "mrkdwn", "text": mrkdwn } })
}

/// Slack's own date formatting, in each reader's time zone.
fn slack_date(unix: u64) -> String {
    format!("<!date^{unix}^{{date_short_pretty}} {{time}}|unix time {unix}>")
}

/// The three characters Slack's mrkdwn reserves (links, mentions).
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// `s` as inline code: a backtick or line break inside would end the span,
/// so they are shown as look-alikes.
fn code(s: &str) -> String {
    let inner: String = escape(s)
        .chars()
        .map(|c| match c {
            '`' => 'ˋ',
            '\n' | '\r' => ' ',
            c => c,
        })
        .collect();
    format!("`{inner}`")
}

/// Breaks up backtick runs (with a zero-width space) so the text cannot
/// close the code block it is shown in.
fn fence_safe(s: &str) -> String {
    s.replace('`', "`\u{200B}")
}

/// At most `max` characters, with `…` when cut.
fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &s[..end]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use axum::Router;
    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::{HeaderMap as AxumHeaders, StatusCode as AxumStatus, Uri};
    use mcpgate_shared::approval::Vote;
    use mcpgate_shared::secret::Secret;

    use super::*;

    /// What the test receiver saw of one request.
    #[derive(Debug)]
    struct Received {
        uri: Uri,
        headers: AxumHeaders,
        body: Value,
    }

    /// How the receiver answers, request by request.
    #[derive(Clone)]
    struct Script {
        /// Answers for the first requests; 200 after them.
        statuses: Arc<Mutex<Vec<u16>>>,
        /// Never answer (the first request is still reported).
        hang: bool,
        seen: mpsc::UnboundedSender<Received>,
    }

    async fn receive(
        State(script): State<Script>,
        uri: Uri,
        headers: AxumHeaders,
        body: Bytes,
    ) -> AxumStatus {
        let body = serde_json::from_slice(&body).expect("the body is JSON");
        let _ = script.seen.send(Received { uri, headers, body });
        if script.hang {
            std::future::pending::<()>().await;
        }
        let status = {
            let mut statuses = script.statuses.lock().unwrap();
            if statuses.is_empty() {
                200
            } else {
                statuses.remove(0)
            }
        };
        AxumStatus::from_u16(status).unwrap()
    }

    /// A receiver on 127.0.0.1: its base URL and the requests it gets.
    async fn receiver(statuses: &[u16], hang: bool) -> (String, mpsc::UnboundedReceiver<Received>) {
        let (seen, rx) = mpsc::unbounded_channel();
        let script = Script {
            statuses: Arc::new(Mutex::new(statuses.to_vec())),
            hang,
            seen,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = Router::new().fallback(receive).with_state(script);
        tokio::spawn(async move { axum::serve(listener, app).await });
        (base, rx)
    }

    fn hook(url: &str, format: WebhookFormat, max_attempts: u32) -> Webhook {
        Webhook {
            url: Secret::new(url.to_owned()),
            format,
            headers: BTreeMap::from([
                (
                    "Authorization".to_owned(),
                    Secret::new("Bearer header-secret".to_owned()),
                ),
                ("X-Team".to_owned(), Secret::new("team-secret".to_owned())),
            ]),
            ca_file: None,
            max_attempts,
        }
    }

    fn fast() -> (Timing, mpsc::UnboundedReceiver<Outcome>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Timing {
                attempt_timeout: Duration::from_secs(10),
                first_backoff: Duration::from_millis(1),
                max_backoff: Duration::from_millis(4),
                outcomes: Some(tx),
            },
            rx,
        )
    }

    fn start(hooks: &[Webhook], timing: Timing) -> (Webhooks, watch::Sender<bool>) {
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let webhooks =
            Webhooks::start_with(hooks, Path::new("/nonexistent"), shutdown_rx, timing).unwrap();
        (webhooks, shutdown_tx)
    }

    fn call_approval() -> Approval {
        Approval {
            id: "apr_0123456789abcdef0123456789abcdef".into(),
            kind: ApprovalKind::Call,
            state: ApprovalState::Pending,
            requester: "alice".parse().unwrap(),
            server: "db".parse().unwrap(),
            session: None,
            method: Some("tools/call".into()),
            name: Some("query".into()),
            arguments: Some(json!({"sql": "drop table <users> & `x```", "db": "prod"})),
            digest: "d".repeat(64),
            rule: Some("hold-writes".into()),
            reason: Some("writes need a second pair of eyes <!channel>".into()),
            duration_secs: None,
            required: 1,
            votes: vec![],
            created_at: 1_700_000_000,
            expires_at: 1_700_000_600,
            decided_at: None,
            grant_expires_at: None,
        }
    }

    #[tokio::test]
    async fn server_errors_are_retried_until_accepted_with_headers_and_json_body() {
        let (base, mut seen) = receiver(&[500, 500], false).await;
        let (timing, mut outcomes) = fast();
        let url = format!("{base}/hook/path-secret?token=query-secret");
        let (webhooks, _shutdown) = start(&[hook(&url, WebhookFormat::Json, 5)], timing);

        let approval = call_approval();
        webhooks.notify(WebhookEvent::Opened, &approval);
        assert_eq!(
            outcomes.recv().await,
            Some(Outcome::Delivered { attempts: 3 })
        );
        let mut requests = Vec::new();
        for _ in 0..3 {
            requests.push(seen.recv().await.unwrap());
        }
        assert!(seen.try_recv().is_err(), "no fourth attempt");
        let last = requests.pop().unwrap();
        assert_eq!(last.uri, "/hook/path-secret?token=query-secret");
        assert_eq!(last.headers["content-type"], "application/json");
        assert_eq!(last.headers["authorization"], "Bearer header-secret");
        assert_eq!(last.headers["x-team"], "team-secret");
        assert_eq!(last.body["event"], "approval.opened");
        assert_eq!(
            last.body["approval"],
            serde_json::to_value(&approval).unwrap()
        );
        assert!(last.body["sent_at"].as_u64().unwrap() > 1_700_000_000);
        // Retries resend the very same body.
        for earlier in requests {
            assert_eq!(earlier.body, last.body);
        }
    }

    #[tokio::test]
    async fn too_many_requests_is_retried_and_events_stay_in_order() {
        let (base, mut seen) = receiver(&[429], false).await;
        let (timing, mut outcomes) = fast();
        let (webhooks, _shutdown) = start(&[hook(&base, WebhookFormat::Json, 3)], timing);

        let mut approval = call_approval();
        webhooks.notify(WebhookEvent::Opened, &approval);
        approval.state = ApprovalState::Approved;
        webhooks.notify(WebhookEvent::Decided, &approval);
        assert_eq!(
            outcomes.recv().await,
            Some(Outcome::Delivered { attempts: 2 })
        );
        assert_eq!(
            outcomes.recv().await,
            Some(Outcome::Delivered { attempts: 1 })
        );
        let events: Vec<Value> = [
            seen.recv().await.unwrap(),
            seen.recv().await.unwrap(),
            seen.recv().await.unwrap(),
        ]
        .into_iter()
        .map(|r| r.body["event"].clone())
        .collect();
        assert_eq!(
            events,
            ["approval.opened", "approval.opened", "approval.decided"]
        );
    }

    #[tokio::test]
    async fn client_errors_are_not_retried() {
        let (base, mut seen) = receiver(&[400], false).await;
        let (timing, mut outcomes) = fast();
        let (webhooks, _shutdown) = start(&[hook(&base, WebhookFormat::Json, 5)], timing);

        let mut approval = call_approval();
        webhooks.notify(WebhookEvent::Opened, &approval);
        approval.state = ApprovalState::Denied;
        webhooks.notify(WebhookEvent::Decided, &approval);
        assert!(matches!(
            outcomes.recv().await,
            Some(Outcome::GaveUp { attempts: 1, error }) if error == "HTTP 400 Bad Request"
        ));
        assert_eq!(
            outcomes.recv().await,
            Some(Outcome::Delivered { attempts: 1 })
        );
        assert_eq!(seen.recv().await.unwrap().body["event"], "approval.opened");
        assert_eq!(seen.recv().await.unwrap().body["event"], "approval.decided");
        assert!(seen.try_recv().is_err());
    }

    #[tokio::test]
    async fn slack_body_has_text_blocks_the_id_and_escapes_the_request() {
        let (base, mut seen) = receiver(&[], false).await;
        let (timing, mut outcomes) = fast();
        let (webhooks, _shutdown) = start(&[hook(&base, WebhookFormat::Slack, 1)], timing);

        let mut approval = call_approval();
        webhooks.notify(WebhookEvent::Opened, &approval);
        approval.state = ApprovalState::Approved;
        approval.decided_at = Some(1_700_000_100);
        approval.votes = vec![Vote {
            approver: "bob".parse().unwrap(),
            approve: true,
            reason: Some("looks fine".into()),
            at: 1_700_000_100,
        }];
        webhooks.notify(WebhookEvent::Decided, &approval);
        for _ in 0..2 {
            assert_eq!(
                outcomes.recv().await,
                Some(Outcome::Delivered { attempts: 1 })
            );
        }

        let opened = seen.recv().await.unwrap().body;
        let text = opened["text"].as_str().unwrap();
        assert!(
            text.starts_with("Approval needed: request by *alice* to call `query`"),
            "{text}"
        );
        assert!(text.contains(&approval.id), "{text}");
        let blocks = opened["blocks"].as_array().unwrap();
        assert!(
            blocks
                .iter()
                .all(|b| b["type"] == "section" && b["text"]["type"] == "mrkdwn")
        );
        let all: String = blocks
            .iter()
            .map(|b| b["text"]["text"].as_str().unwrap())
            .collect::<Vec<_>>()
            .join("\n");
        assert!(all.contains(&approval.id));
        assert!(all.contains(&format!("`mcpgate approve {}`", approval.id)));
        assert!(all.contains(&format!("`mcpgate deny {}`", approval.id)));
        assert!(all.contains("`hold-writes`"));
        assert!(all.contains("`query` (`tools/call`) on server *db*"));
        // Reserved characters are escaped; the arguments cannot close
        // their code block.
        assert!(all.contains("&lt;!channel&gt;"), "{all}");
        assert!(all.contains("drop table &lt;users&gt; &amp;"), "{all}");
        assert!(!all.contains("<!channel>") && !all.contains("<users>"));
        assert!(!all.contains("x```"), "{all}");

        let decided = seen.recv().await.unwrap().body;
        let all: String = decided["blocks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["text"]["text"].as_str().unwrap())
            .collect::<Vec<_>>()
            .join("\n");
        assert!(decided["text"].as_str().unwrap().starts_with("Approved:"));
        assert!(all.contains("*State:* approved"), "{all}");
        assert!(all.contains("• *bob* approved: looks fine"), "{all}");
        assert!(!all.contains("mcpgate approve"));
    }

    #[test]
    fn slack_arguments_are_truncated() {
        let mut approval = call_approval();
        approval.arguments = Some(json!({ "blob": "é".repeat(2000) }));
        let body = slack_body(WebhookEvent::Opened, &approval);
        let arguments = body["blocks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["text"]["text"].as_str().unwrap())
            .find(|t| t.starts_with("*Arguments:*"))
            .unwrap();
        assert!(arguments.contains("…```"), "{arguments}");
        assert!(arguments.chars().count() < MAX_SHOWN_CHARS + 30);
    }

    #[test]
    fn slack_access_request_names_the_duration() {
        let mut approval = call_approval();
        approval.kind = ApprovalKind::Access;
        approval.method = None;
        approval.name = None;
        approval.arguments = None;
        approval.duration_secs = Some(3600);
        let body = slack_body(WebhookEvent::Opened, &approval);
        assert!(
            body["text"]
                .as_str()
                .unwrap()
                .contains("request by *alice* to access server *db* for 1h"),
            "{body}"
        );
    }

    #[tokio::test]
    async fn notify_never_waits_for_a_hanging_receiver() {
        let (base, mut seen) = receiver(&[], true).await;
        let (timing, _outcomes) = fast();
        let (webhooks, shutdown) = start(&[hook(&base, WebhookFormat::Json, 5)], timing);

        let approval = call_approval();
        webhooks.notify(WebhookEvent::Opened, &approval);
        // The delivery task is now stuck in a request that never ends.
        seen.recv().await.unwrap();
        // More than the queue holds: the extra events are dropped, and
        // `notify` returns every time.
        for _ in 0..(QUEUE_LEN + 100) {
            webhooks.notify(WebhookEvent::Opened, &approval);
        }

        // Shutdown abandons the stuck request and ends the task.
        shutdown.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), webhooks.stopped())
            .await
            .expect("the delivery task ends at shutdown");
    }

    #[tokio::test]
    async fn debug_and_log_fields_show_only_scheme_and_host() {
        // A receiver that hangs up on every connection: every attempt is a
        // transport error, whose message must not carry the URL. (Not a
        // closed port: another test could bind it meanwhile.)
        let rude = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = rude.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((stream, _)) = rude.accept().await {
                drop(stream);
            }
        });
        let url = format!("http://127.0.0.1:{port}/services/path-secret?token=query-secret");

        let (timing, mut outcomes) = fast();
        let (webhooks, _shutdown) = start(&[hook(&url, WebhookFormat::Slack, 2)], timing);
        // The hook's log name: what `Debug` and every log line show.
        let debug = format!("{webhooks:?}");
        assert!(
            debug.contains(&format!("http://127.0.0.1:{port} (Slack)")),
            "{debug}"
        );

        webhooks.notify(WebhookEvent::Opened, &call_approval());
        // The error text is the log line's `error` field.
        let Some(Outcome::GaveUp { attempts: 2, error }) = outcomes.recv().await else {
            panic!("two failed attempts expected");
        };
        assert!(error.contains("connection closed"), "{error}");

        for shown in [&debug, &error] {
            for secret in [
                "path-secret",
                "query-secret",
                "header-secret",
                "team-secret",
            ] {
                assert!(!shown.contains(secret), "{secret} shown in {shown}");
            }
        }
    }

    #[tokio::test]
    async fn an_unreadable_ca_file_or_bad_header_fails_start() {
        let (_tx, rx) = watch::channel(false);
        let mut bad_ca = hook("https://hooks.example.com/x", WebhookFormat::Json, 1);
        bad_ca.ca_file = Some("missing-ca.pem".into());
        let e = Webhooks::start(&[bad_ca], Path::new("/nonexistent"), rx.clone()).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/missing-ca.pem"), "{e}");

        let mut bad_header = hook("https://hooks.example.com/x", WebhookFormat::Json, 1);
        bad_header
            .headers
            .insert("X-Bad".into(), Secret::new("line\nbreak-secret".into()));
        let e = Webhooks::start(&[bad_header], Path::new("/"), rx).unwrap_err();
        assert!(e.to_string().contains("X-Bad"), "{e}");
        assert!(!e.to_string().contains("break-secret"), "{e}");
    }

    #[test]
    fn no_hooks_need_no_runtime() {
        let webhooks = Webhooks::none();
        webhooks.notify(WebhookEvent::Decided, &call_approval());
        let (_tx, rx) = watch::channel(false);
        assert!(Webhooks::start(&[], Path::new("/"), rx).is_ok());
    }
}
