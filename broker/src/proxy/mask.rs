//! The masking stage: everything the upstream sends is masked before any
//! other stage (or the client) sees it.
//!
//! Results, errors (message and data), server-to-client requests (sampling,
//! elicitation) and notifications (log messages, progress) all go through
//! the session's [`Masker`]; what was replaced is counted per type on the
//! message's annotations and kept as a `mask` decision event (counts only,
//! never values). Fail closed: a message that cannot be masked, or whose
//! masking cannot be recorded, is withheld — a response becomes a
//! `MASK_FAILED` error for the client, a request from the upstream is
//! answered with that error, a notification is dropped.

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use mcpgate_shared::event::{DecisionEvent, DecisionKind};
use mcpgate_shared::jsonrpc::{Kind, MASK_FAILED, Message, error_line};

use super::SessionContext;
use super::stage::{Flow, Stage};
use crate::approval::{Approvals, now_ms};
use crate::mask::{Masker, Masking, Report};

/// One per session: the profile is chosen on the first message.
pub struct MaskStage {
    masking: Arc<Masking>,
    approvals: Approvals,
    masker: OnceLock<Arc<Masker>>,
}

impl MaskStage {
    pub fn new(masking: Arc<Masking>, approvals: Approvals) -> Self {
        MaskStage {
            masking,
            approvals,
            masker: OnceLock::new(),
        }
    }

    fn masker(&self, ctx: &SessionContext) -> &Masker {
        self.masker
            .get_or_init(|| self.masking.for_session(&ctx.server, &ctx.roles))
    }

    /// The message that goes on instead of one that could not be masked.
    fn withheld(&self, msg: &Message, why: &str) -> Flow {
        let message = format!("the server's reply was withheld: it could not be masked ({why})");
        match msg.kind() {
            Kind::Result { id } => answer(error_line(Some(id), MASK_FAILED, &message, None)),
            Kind::Error { id } => answer(error_line(id.as_ref(), MASK_FAILED, &message, None)),
            // The upstream asked the client something: it hears why not.
            Kind::Request { .. } => msg
                .error_reply(MASK_FAILED, &message)
                .map_or(Flow::Drop, Flow::Reply),
            Kind::Notification { .. } => Flow::Drop,
        }
    }
}

/// An error line turned into the message forwarded to the client.
fn answer(line: Vec<u8>) -> Flow {
    match Message::parse(line.trim_ascii_end()) {
        Ok(m) => Flow::Forward(m),
        // Our own error line always parses; if it ever did not, say
        // nothing rather than something unmasked.
        Err(_) => Flow::Drop,
    }
}

#[async_trait]
impl Stage for MaskStage {
    fn name(&self) -> &'static str {
        "mask"
    }

    async fn from_upstream(&self, ctx: &SessionContext, mut msg: Message) -> Flow {
        let masker = self.masker(ctx);
        let mut report = Report::default();
        let outcome = match msg.body_mut() {
            Some(body) => masker.mask_value(body, &mut report, false),
            None => Ok(false),
        };
        if let Err(e) = outcome {
            tracing::warn!(session = %ctx.session, error = %e, "an upstream message could not be masked; withheld");
            return self.withheld(&msg, &e.to_string());
        }
        if report.counts.is_empty() {
            return Flow::Forward(msg);
        }
        let summary = report
            .counts
            .iter()
            .map(|(kind, n)| format!("{n} {kind}"))
            .collect::<Vec<_>>()
            .join(", ");
        let event = DecisionEvent {
            at_ms: now_ms(),
            decision: DecisionKind::Mask,
            session: Some(ctx.session.clone()),
            user: ctx.user.clone(),
            server: ctx.server.clone(),
            method: msg.method().map(str::to_owned),
            name: None,
            request_id: msg.id().map(|id| id.to_string()),
            rule: Some(format!("profile {}", masker.profile())),
            reason: format!("masked {summary}"),
            approval: None,
            approvers: Vec::new(),
            masked: report.counts.clone(),
        };
        if let Err(e) = self.approvals.record(event).await {
            tracing::error!(session = %ctx.session, error = %e, "masking could not be recorded; the message is withheld");
            return self.withheld(&msg, "the broker could not keep its record");
        }
        msg.annotations_mut().masked = report.counts;
        Flow::Forward(msg)
    }
}
