//! The policy stage: what a session may call, read and see.
//!
//! From the client, every request is checked before anything else runs:
//! - only known MCP methods pass; anything else is refused (deny by
//!   default extends to methods the gateway does not understand);
//! - `tools/call`, `resources/read` (and subscribe), `prompts/get` and
//!   `completion/complete` must carry exactly the protocol's parameter
//!   names: a case variant (`Name`, `Arguments`) or an unknown parameter is
//!   refused, so the broker and the server cannot read different calls
//!   out of one message. Names were unescaped by the one canonical parse,
//!   and what is forwarded is that parse re-serialised;
//! - a request-only method sent as a notification is dropped (it has no id
//!   to answer);
//! - then [`Policy::decide`] allows it, denies it (a JSON-RPC error, never
//!   forwarded) or holds it for approval ([`Flow::Hold`]).
//!
//! From the upstream, list results (`tools/list`, `resources/list`,
//! `resources/templates/list`, `prompts/list`) are filtered to what the
//! session's roles may see, page by page: `nextCursor` is kept, so paging
//! goes on through the server's own pages.
//!
//! Every decision is a [`DecisionEvent`]; if it cannot be kept, the call
//! does not go through (fail closed).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use mcpgate_shared::approval::{Approval, ApprovalState};
use mcpgate_shared::event::{DecisionEvent, DecisionKind};
use mcpgate_shared::jsonrpc::{
    APPROVAL_DENIED, APPROVAL_EXPIRED, APPROVAL_FAILED, INVALID_PARAMS, Id, Kind, METHOD_NOT_FOUND,
    Message, POLICY_DENIED, error_line,
};
use mcpgate_shared::mcp;
use serde_json::{Map, Value, json};

use super::SessionContext;
use super::stage::{Flow, Hold, Notifier, Stage};
use crate::approval::{Approvals, CallRequest, now_ms};
use crate::policy::{Effect, ItemKind, Policy, Request};

/// Requests a client may send that touch no tool, resource or prompt.
const PASS_METHODS: &[&str] = &[
    mcp::INITIALIZE,
    mcp::PING,
    mcp::SERVER_DISCOVER,
    "logging/setLevel",
    "subscriptions/listen",
    "tasks/get",
    "tasks/result",
    "tasks/list",
    "tasks/cancel",
];

const RESOURCE_TEMPLATES_LIST: &str = "resources/templates/list";
const RESOURCES_SUBSCRIBE: &str = "resources/subscribe";
const RESOURCES_UNSUBSCRIBE: &str = "resources/unsubscribe";
const COMPLETION_COMPLETE: &str = "completion/complete";
const RESOURCE_UPDATED: &str = "notifications/resources/updated";

/// Which listing a client request asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listing {
    Tools,
    Resources,
    Templates,
    Prompts,
}

impl Listing {
    fn of(method: &str) -> Option<Listing> {
        Some(match method {
            mcp::TOOLS_LIST => Listing::Tools,
            mcp::RESOURCES_LIST => Listing::Resources,
            RESOURCE_TEMPLATES_LIST => Listing::Templates,
            mcp::PROMPTS_LIST => Listing::Prompts,
            _ => return None,
        })
    }

    /// The result's array, the member naming each item, and its kind.
    fn shape(self) -> (&'static str, &'static str, ItemKind) {
        match self {
            Listing::Tools => ("tools", "name", ItemKind::Tool),
            Listing::Resources => ("resources", "uri", ItemKind::Resource),
            Listing::Templates => ("resourceTemplates", "uriTemplate", ItemKind::Resource),
            Listing::Prompts => ("prompts", "name", ItemKind::Prompt),
        }
    }
}

/// One call the policy decides on, read from the message's parameters.
#[derive(Debug, Clone, PartialEq)]
struct Call {
    kind: ItemKind,
    name: String,
    arguments: Value,
}

/// The policy stage of one session.
pub struct PolicyStage {
    policy: Arc<Policy>,
    approvals: Approvals,
    progress_interval: Duration,
    /// Open list requests of the client, by id.
    listings: Mutex<HashMap<Id, Listing>>,
}

impl PolicyStage {
    pub fn new(policy: Arc<Policy>, approvals: Approvals, progress_interval: Duration) -> Self {
        Self {
            policy,
            approvals,
            progress_interval,
            listings: Mutex::default(),
        }
    }

    fn listings(&self) -> std::sync::MutexGuard<'_, HashMap<Id, Listing>> {
        self.listings.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn visible(&self, ctx: &SessionContext, kind: ItemKind, name: &str) -> bool {
        self.policy.visible(&ctx.roles, &ctx.server, kind, name)
    }

    /// Keeps a decision; `false` if it could not be kept.
    async fn record(&self, event: DecisionEvent) -> bool {
        match self.approvals.record(event).await {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, "a decision could not be kept; the call is refused");
                false
            }
        }
    }

    async fn request(&self, ctx: &SessionContext, msg: Message, id: Id, method: &str) -> Flow {
        if let Some(listing) = Listing::of(method) {
            self.listings().insert(id, listing);
            return Flow::Forward(msg);
        }
        if PASS_METHODS.contains(&method) {
            return Flow::Forward(msg);
        }
        let call = match read_call(method, msg.params()) {
            Ok(Some(call)) => call,
            Ok(None) => {
                let reason = format!("method {method} is not allowed through the gateway");
                return self
                    .refuse(ctx, &msg, &id, method, None, METHOD_NOT_FOUND, reason)
                    .await;
            }
            Err(reason) => {
                return self
                    .refuse(ctx, &msg, &id, method, None, INVALID_PARAMS, reason)
                    .await;
            }
        };
        if method == COMPLETION_COMPLETE {
            // Completion only reveals argument values of a prompt or
            // resource template: allowed when the item is visible.
            if self.visible(ctx, call.kind, &call.name) {
                return Flow::Forward(msg);
            }
            let reason = format!("{} {} is not available to you", call.kind, call.name);
            return self
                .refuse(
                    ctx,
                    &msg,
                    &id,
                    method,
                    Some(&call.name),
                    POLICY_DENIED,
                    reason,
                )
                .await;
        }
        let decision = self.policy.decide(&Request {
            user: ctx.user.as_str(),
            roles: &ctx.roles,
            server: &ctx.server,
            kind: call.kind,
            name: &call.name,
            arguments: &call.arguments,
        });
        let rule = decision.rule.as_ref().map(|r| r.to_string());
        let event = |decision: DecisionKind, reason: &str| DecisionEvent {
            at_ms: now_ms(),
            decision,
            session: Some(ctx.session.clone()),
            user: ctx.user.clone(),
            server: ctx.server.clone(),
            method: Some(method.to_owned()),
            name: Some(call.name.clone()),
            request_id: Some(id.to_string()),
            rule: rule.clone(),
            reason: reason.to_owned(),
            approval: None,
            approvers: Vec::new(),
            masked: Default::default(),
        };
        match decision.effect {
            Effect::Allow => {
                if self
                    .record(event(DecisionKind::Allow, &decision.reason))
                    .await
                {
                    Flow::Forward(msg)
                } else {
                    Flow::Reply(unrecorded(&id))
                }
            }
            Effect::Deny => {
                self.record(event(DecisionKind::Deny, &decision.reason))
                    .await;
                let message = format!(
                    "{method} {} denied by policy: {}",
                    call.name, decision.reason
                );
                Flow::Reply(error_line(
                    Some(&id),
                    POLICY_DENIED,
                    &message,
                    Some(json!({ "rule": rule })),
                ))
            }
            Effect::Approve => {
                let opened = self
                    .approvals
                    .open_call(CallRequest {
                        requester: ctx.user.clone(),
                        server: ctx.server.clone(),
                        session: ctx.session.clone(),
                        method: method.to_owned(),
                        name: call.name.clone(),
                        arguments: call.arguments.clone(),
                        rule: rule.clone().unwrap_or_default(),
                        reason: decision.reason.clone(),
                        required: decision.approvals,
                    })
                    .await;
                let approval = match opened {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::error!(error = %e, "an approval request could not be opened; the call is refused");
                        return Flow::Reply(unrecorded(&id));
                    }
                };
                let mut held = event(DecisionKind::Hold, &decision.reason);
                held.approval = Some(approval.id.clone());
                if !self.record(held.clone()).await {
                    let _ = self
                        .approvals
                        .close(&approval.id, ApprovalState::Cancelled)
                        .await;
                    return Flow::Reply(unrecorded(&id));
                }
                let waiting = Waiting {
                    approvals: self.approvals.clone(),
                    approval,
                    event: held,
                    progress_token: progress_token(&msg),
                    interval: self.progress_interval,
                    finished: false,
                };
                Flow::Hold(Hold::new(move |notifier| waiting.run(notifier, msg, id)))
            }
        }
    }

    /// Refuses a request before any rule ran, with the reason recorded.
    #[allow(clippy::too_many_arguments)]
    async fn refuse(
        &self,
        ctx: &SessionContext,
        msg: &Message,
        id: &Id,
        method: &str,
        name: Option<&str>,
        code: i64,
        reason: String,
    ) -> Flow {
        tracing::warn!(%id, method, reason = %reason, "request refused");
        let kind = if code == POLICY_DENIED {
            DecisionKind::Deny
        } else {
            DecisionKind::Refuse
        };
        self.record(DecisionEvent {
            at_ms: now_ms(),
            decision: kind,
            session: Some(ctx.session.clone()),
            user: ctx.user.clone(),
            server: ctx.server.clone(),
            method: Some(method.to_owned()),
            name: name.map(str::to_owned),
            request_id: Some(id.to_string()),
            rule: None,
            reason: reason.clone(),
            approval: None,
            approvers: Vec::new(),
            masked: Default::default(),
        })
        .await;
        msg.error_reply(code, &reason)
            .map_or(Flow::Drop, Flow::Reply)
    }

    fn filter_listing(&self, ctx: &SessionContext, listing: Listing, mut msg: Message) -> Message {
        let (field, key, kind) = listing.shape();
        if let Some(items) = msg
            .result_mut()
            .and_then(|r| r.get_mut(field))
            .and_then(Value::as_array_mut)
        {
            let before = items.len();
            items.retain(|item| {
                item.get(key)
                    .and_then(Value::as_str)
                    .is_some_and(|name| self.visible(ctx, kind, name))
            });
            if items.len() != before {
                tracing::debug!(
                    listing = field,
                    shown = items.len(),
                    hidden = before - items.len(),
                    "listing filtered"
                );
            }
        }
        msg
    }
}

/// The answer when a decision could not be kept: fail closed.
fn unrecorded(id: &Id) -> Vec<u8> {
    error_line(
        Some(id),
        APPROVAL_FAILED,
        "the gateway could not record its decision, so the call was not made; try again later",
        None,
    )
}

fn progress_token(msg: &Message) -> Option<Value> {
    msg.params()?
        .get("_meta")?
        .get("progressToken")
        .filter(|t| t.is_string() || t.is_i64())
        .cloned()
}

/// Reads the call a request makes, with its parameter names checked
/// exactly. `Ok(None)`: the method is not one the gateway lets through.
fn read_call(method: &str, params: Option<&Map<String, Value>>) -> Result<Option<Call>, String> {
    let (kind, allowed, name_key): (ItemKind, &[&str], &str) = match method {
        mcp::TOOLS_CALL => (
            ItemKind::Tool,
            &["name", "arguments", "_meta", "task"],
            "name",
        ),
        mcp::PROMPTS_GET => (ItemKind::Prompt, &["name", "arguments", "_meta"], "name"),
        mcp::RESOURCES_READ | RESOURCES_SUBSCRIBE | RESOURCES_UNSUBSCRIBE => {
            (ItemKind::Resource, &["uri", "_meta"], "uri")
        }
        COMPLETION_COMPLETE => return read_completion(params).map(Some),
        _ => return Ok(None),
    };
    let params = params.ok_or_else(|| format!("{method} needs params"))?;
    check_keys(method, params, allowed)?;
    let name = match params.get(name_key) {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(format!("{method} needs a non-empty string {name_key:?}")),
    };
    let arguments = match params.get("arguments") {
        None => Value::Object(Map::new()),
        Some(v @ Value::Object(_)) => v.clone(),
        Some(_) => return Err(format!("{method}: \"arguments\" must be an object")),
    };
    Ok(Some(Call {
        kind,
        name,
        arguments,
    }))
}

/// `completion/complete` names a prompt or a resource template in `ref`.
fn read_completion(params: Option<&Map<String, Value>>) -> Result<Call, String> {
    let m = COMPLETION_COMPLETE;
    let params = params.ok_or_else(|| format!("{m} needs params"))?;
    check_keys(m, params, &["ref", "argument", "context", "_meta"])?;
    let Some(Value::Object(r)) = params.get("ref") else {
        return Err(format!("{m} needs an object \"ref\""));
    };
    check_keys(m, r, &["type", "name", "uri", "title"])?;
    let text = |k: &str| match r.get(k) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        _ => Err(format!("{m}: ref needs a non-empty string {k:?}")),
    };
    let (kind, name) = match r.get("type").and_then(Value::as_str) {
        Some("ref/prompt") => (ItemKind::Prompt, text("name")?),
        Some("ref/resource") => (ItemKind::Resource, text("uri")?),
        _ => return Err(format!("{m}: unknown ref type")),
    };
    Ok(Call {
        kind,
        name,
        arguments: Value::Object(Map::new()),
    })
}

/// Every key must be one of `allowed`, spelled exactly: a case variant of
/// a protocol key is the classic way to make two parsers disagree.
fn check_keys(method: &str, params: &Map<String, Value>, allowed: &[&str]) -> Result<(), String> {
    for key in params.keys() {
        if allowed.contains(&key.as_str()) {
            continue;
        }
        let folded = key.to_lowercase();
        return Err(match allowed.iter().find(|a| a.to_lowercase() == folded) {
            Some(proper) => {
                format!("{method}: parameter {key:?} is a case variant of {proper:?}; refused")
            }
            None => format!("{method}: unknown parameter {key:?}; refused"),
        });
    }
    Ok(())
}

/// A held call waiting for its approvers.
struct Waiting {
    approvals: Approvals,
    approval: Approval,
    /// The hold event, as a template for the outcome's event.
    event: DecisionEvent,
    progress_token: Option<Value>,
    interval: Duration,
    finished: bool,
}

impl Waiting {
    async fn run(mut self, notifier: Notifier, msg: Message, id: Id) -> Flow {
        let id_text = self.approval.id.clone();
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sent = 0u64;
        let outcome = {
            let wait = self.approvals.wait(&id_text);
            tokio::pin!(wait);
            loop {
                tokio::select! {
                    outcome = &mut wait => break outcome,
                    _ = ticks.tick(), if self.progress_token.is_some() => {
                        sent += 1;
                        let note = progress(self.progress_token.as_ref(), sent, &self.approval);
                        if let Some(note) = note {
                            notifier.send(&note).await;
                        }
                    }
                }
            }
        };
        self.finished = true;
        let approval = match outcome {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(approval = %id_text, error = %e, "waiting for an approval failed; the call is refused");
                return Flow::Reply(unrecorded(&id));
            }
        };
        let approvers: Vec<_> = approval.votes.iter().map(|v| v.approver.clone()).collect();
        let said = approval
            .votes
            .iter()
            .filter_map(|v| v.reason.as_deref().map(|r| format!("{}: {r}", v.approver)))
            .collect::<Vec<_>>()
            .join("; ");
        let (kind, reply) = match approval.state {
            ApprovalState::Approved => {
                // Exactly the call that was held, and only if it still is
                // what the approvers were shown.
                let call = read_call(
                    self.approval.method.as_deref().unwrap_or_default(),
                    msg.params(),
                );
                let digest = call.ok().flatten().map(|c| {
                    mcpgate_shared::approval::digest(
                        self.approval.method.as_deref().unwrap_or_default(),
                        &c.name,
                        &c.arguments,
                    )
                });
                if digest.as_deref() != Some(approval.digest.as_str()) {
                    tracing::error!(approval = %id_text, "approved call does not match its digest; refused");
                    (
                        DecisionKind::Deny,
                        Some((
                            APPROVAL_FAILED,
                            "the approved call does not match the held one".to_owned(),
                        )),
                    )
                } else {
                    (DecisionKind::Approve, None)
                }
            }
            ApprovalState::Denied => (
                DecisionKind::DenyByApprover,
                Some((
                    APPROVAL_DENIED,
                    format!(
                        "approval {id_text} was denied{}",
                        if said.is_empty() {
                            String::new()
                        } else {
                            format!(" ({said})")
                        }
                    ),
                )),
            ),
            ApprovalState::Expired => (
                DecisionKind::Timeout,
                Some((
                    APPROVAL_EXPIRED,
                    format!("approval {id_text} expired: nobody decided in time"),
                )),
            ),
            ApprovalState::Cancelled | ApprovalState::Pending => (
                DecisionKind::Cancel,
                Some((APPROVAL_FAILED, format!("approval {id_text} was cancelled"))),
            ),
        };
        let mut event = self.event.clone();
        event.at_ms = now_ms();
        event.decision = kind;
        event.approvers = approvers;
        event.reason = match &reply {
            Some((_, message)) => message.clone(),
            None if said.is_empty() => "approved".into(),
            None => format!("approved ({said})"),
        };
        let kept = self.approvals.record(event).await.is_ok();
        match reply {
            None if kept => Flow::Forward(msg),
            None => Flow::Reply(unrecorded(&id)),
            Some((code, message)) => Flow::Reply(error_line(
                Some(&id),
                code,
                &message,
                Some(json!({ "approval": id_text })),
            )),
        }
    }
}

impl Drop for Waiting {
    /// Dropped before an outcome: the client cancelled the call or the
    /// session ended. The request is closed so nobody approves a call that
    /// can no longer be made.
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let approvals = self.approvals.clone();
        let id = self.approval.id.clone();
        let mut event = self.event.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                match approvals.close(&id, ApprovalState::Cancelled).await {
                    Ok(a) if a.state == ApprovalState::Cancelled => {
                        event.at_ms = now_ms();
                        event.decision = DecisionKind::Cancel;
                        event.reason = "the client cancelled the call or the session ended".into();
                        let _ = approvals.record(event).await;
                    }
                    Ok(_) => {}
                    Err(e) => tracing::error!(approval = %id, error = %e, "could not cancel an approval request"),
                }
            });
        }
    }
}

/// A progress notification for a held call.
fn progress(token: Option<&Value>, n: u64, approval: &Approval) -> Option<Message> {
    let token = token?;
    let note = json!({
        "jsonrpc": "2.0",
        "method": mcp::PROGRESS,
        "params": {
            "progressToken": token,
            "progress": n,
            "message": format!(
                "waiting for approval {} (run `mcpgate approve {}`)",
                approval.id, approval.id
            ),
        }
    });
    Message::parse(note.to_string().as_bytes()).ok()
}

#[async_trait]
impl Stage for PolicyStage {
    fn name(&self) -> &'static str {
        "policy"
    }

    async fn from_client(&self, ctx: &SessionContext, msg: Message) -> Flow {
        match msg.kind().clone() {
            Kind::Request { id, method } => self.request(ctx, msg, id, &method).await,
            Kind::Notification { method } => {
                if method.starts_with("notifications/") {
                    Flow::Forward(msg)
                } else {
                    // A request without an id (a `tools/call` sent as a
                    // notification, say) cannot be answered: it is dropped,
                    // and never forwarded.
                    tracing::warn!(method = %method, "notification refused: only notifications/* may be sent without an id");
                    self.record(DecisionEvent {
                        at_ms: now_ms(),
                        decision: DecisionKind::Refuse,
                        session: Some(ctx.session.clone()),
                        user: ctx.user.clone(),
                        server: ctx.server.clone(),
                        method: Some(method.clone()),
                        name: None,
                        request_id: None,
                        rule: None,
                        reason: format!("{method} sent as a notification"),
                        approval: None,
                        approvers: Vec::new(),
                        masked: Default::default(),
                    })
                    .await;
                    Flow::Drop
                }
            }
            // Answers to the server's own requests (sampling, roots...).
            Kind::Result { .. } | Kind::Error { .. } => Flow::Forward(msg),
        }
    }

    async fn from_upstream(&self, ctx: &SessionContext, msg: Message) -> Flow {
        match msg.kind() {
            Kind::Result { id } => {
                let listing = self.listings().remove(id);
                match listing {
                    Some(listing) => Flow::Forward(self.filter_listing(ctx, listing, msg)),
                    None => Flow::Forward(msg),
                }
            }
            Kind::Error { id: Some(id) } => {
                self.listings().remove(id);
                Flow::Forward(msg)
            }
            Kind::Notification { method } if method == RESOURCE_UPDATED => {
                let uri = msg
                    .params()
                    .and_then(|p| p.get("uri"))
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if self.visible(ctx, ItemKind::Resource, uri) {
                    Flow::Forward(msg)
                } else {
                    Flow::Drop
                }
            }
            _ => Flow::Forward(msg),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn case_variants_and_unknown_parameters_are_refused() {
        let ok = read_call(
            mcp::TOOLS_CALL,
            Some(&params(json!({"name": "echo", "arguments": {"m": 1}}))),
        )
        .unwrap()
        .unwrap();
        assert_eq!(ok.name, "echo");
        for bad in [
            json!({"Name": "echo"}),
            json!({"name": "echo", "Arguments": {}}),
            json!({"name": "echo", "ARGUMENTS": {}}),
            json!({"name": "echo", "extra": 1}),
            json!({"name": ""}),
            json!({"name": 5}),
            json!({"name": "echo", "arguments": [1]}),
        ] {
            let err = read_call(mcp::TOOLS_CALL, Some(&params(bad.clone()))).unwrap_err();
            assert!(
                err.contains("refused") || err.contains("needs") || err.contains("must"),
                "{bad}: {err}"
            );
        }
        let err = read_call(mcp::RESOURCES_READ, Some(&params(json!({"URI": "x"})))).unwrap_err();
        assert!(err.contains("case variant of \"uri\""), "{err}");
        assert!(read_call("tools/delete", None).unwrap().is_none());
    }

    fn stage(rules: &str) -> (tempfile::TempDir, PolicyStage) {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[broker]\n[servers.demo]\ntransport = \"stdio\"\ncommand = \"x\"\n[roles.engineer]\nservers = [\"demo\"]\n{rules}"
        );
        let config = crate::config::Config::parse(&text, &dir.path().join("broker.toml")).unwrap();
        let policy = Arc::new(Policy::compile(&config).unwrap());
        let store = crate::store::Store::open(dir.path()).unwrap();
        let approvals = Approvals::new(
            store,
            crate::webhook::Webhooks::none(),
            Duration::from_secs(60),
        );
        (
            dir,
            PolicyStage::new(policy, approvals, Duration::from_secs(1)),
        )
    }

    fn ctx() -> SessionContext {
        SessionContext {
            session: "s1".parse().unwrap(),
            user: "erin".parse().unwrap(),
            server: "demo".parse().unwrap(),
            roles: vec!["engineer".parse().unwrap()],
        }
    }

    fn msg(v: Value) -> Message {
        Message::parse(v.to_string().as_bytes()).unwrap()
    }

    #[tokio::test]
    async fn list_pages_are_filtered_and_keep_their_cursor() {
        let (_dir, stage) = stage(
            r#"
[[policy]]
name = "reads"
roles = ["engineer"]
servers = ["demo"]
tools = ["get_*"]
resources = ["demo://public/**"]
effect = "allow"
"#,
        );
        let ctx = ctx();
        let list =
            msg(json!({"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"cursor":"p2"}}));
        assert!(matches!(
            stage.from_client(&ctx, list).await,
            Flow::Forward(_)
        ));
        let page = msg(json!({"jsonrpc":"2.0","id":1,"result":{
            "tools":[{"name":"get_a"},{"name":"drop_b"},{"name":"get_c"},{"nameless":true}],
            "nextCursor":"p3"}}));
        let Flow::Forward(out) = stage.from_upstream(&ctx, page).await else {
            panic!()
        };
        let result = out.result().unwrap();
        let names: Vec<_> = result["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].clone())
            .collect();
        assert_eq!(names, [json!("get_a"), json!("get_c")]);
        assert_eq!(result["nextCursor"], "p3");
        // A page with nothing visible stays a page: the client goes on.
        let list = msg(json!({"jsonrpc":"2.0","id":"r","method":"resources/list"}));
        stage.from_client(&ctx, list).await;
        let page = msg(json!({"jsonrpc":"2.0","id":"r","result":{
            "resources":[{"uri":"demo://private/x"}],"nextCursor":"n"}}));
        let Flow::Forward(out) = stage.from_upstream(&ctx, page).await else {
            panic!()
        };
        assert_eq!(out.result().unwrap()["resources"], json!([]));
        assert_eq!(out.result().unwrap()["nextCursor"], "n");
        // A result for an id that was no list request is left alone.
        let other = msg(json!({"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"drop_b"}]}}));
        let Flow::Forward(out) = stage.from_upstream(&ctx, other).await else {
            panic!()
        };
        assert_eq!(out.result().unwrap()["tools"][0]["name"], "drop_b");
    }

    #[tokio::test]
    async fn a_denied_call_is_answered_and_recorded_never_forwarded() {
        let (_dir, stage) = stage("");
        let ctx = ctx();
        let call =
            msg(json!({"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"get_a"}}));
        let Flow::Reply(line) = stage.from_client(&ctx, call).await else {
            panic!("not denied")
        };
        let reply: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(reply["error"]["code"], POLICY_DENIED);
        assert_eq!(reply["id"], 7);
        let kept = stage.approvals.decisions(&ctx.session).await.unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].decision, DecisionKind::Deny);
        assert_eq!(kept[0].name.as_deref(), Some("get_a"));
    }

    #[test]
    fn completion_names_its_prompt_or_resource() {
        let c = read_call(
            COMPLETION_COMPLETE,
            Some(&params(json!({"ref": {"type": "ref/prompt", "name": "p"}, "argument": {"name": "a", "value": "x"}}))),
        )
        .unwrap()
        .unwrap();
        assert_eq!((c.kind, c.name.as_str()), (ItemKind::Prompt, "p"));
        assert!(
            read_call(
                COMPLETION_COMPLETE,
                Some(&params(json!({"ref": {"type": "ref/x", "name": "p"}})))
            )
            .is_err()
        );
    }
}
