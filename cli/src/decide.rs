//! `mcpgate approve ID` and `mcpgate deny ID`: one decision on one
//! approval request, bound to exactly what the approver was shown.
//!
//! 1. `GET /v1/approvals/{id}`. A request that is not pending any more is
//!    reported (exit 19) and nothing is sent.
//! 2. For a held call the digest is computed here, from the method, name
//!    and arguments about to be shown (`mcpgate_shared::approval::digest`),
//!    and must equal the broker's; otherwise what the broker shows and what
//!    it would bind the decision to disagree, and nothing is decided. An
//!    access request's digest is taken as the broker gives it.
//! 3. The request goes to stderr, in full: the person deciding reads it
//!    next to the prompt even when stdout is redirected.
//! 4. `Approve this call? [y/N]` when stdin is a terminal and `--yes` is not
//!    given. Without a terminal (scripts) there is no prompt.
//! 5. `POST /v1/approvals/{id}/decision` with that digest, so the decision
//!    cannot apply to anything but what was shown. When the broker answers
//!    with a conflict, the request is looked up again to say what happened
//!    (decided by someone else, expired) while it was on screen.
//! 6. The resulting state on stdout: one line, or the approval as JSON.

use std::io::{IsTerminal, Write};

use mcpgate_shared::approval::{self, Approval, ApprovalKind, ApprovalState, DecisionRequest};
use serde_json::Value;

use crate::approvals::{self, ApprovalId, Arguments};
use crate::args::{DecideArgs, Output};
use crate::context::{Context, Login};
use crate::error::Error;
use crate::state;
use crate::ui::{self, Spinner};

pub async fn run(args: DecideArgs, approve: bool, ctx: &Context) -> Result<(), Error> {
    let mut login = ctx.login().await?;
    let ask = !args.yes && std::io::stdin().is_terminal();
    let decided = decide(
        &mut login,
        ctx,
        &args,
        approve,
        &mut std::io::stderr(),
        |question| if ask { confirm(question) } else { Ok(true) },
    )
    .await?;
    match args.output.output {
        Output::Json => ui::print(&approvals::pretty_json(&decided)),
        Output::Text => ui::print(&format!("{}\n", result_line(&decided))),
    }
}

/// Steps 1 to 5: shows the request on `shown`, asks `confirm` the
/// question, and returns the request as the broker has it after the
/// decision.
pub async fn decide(
    login: &mut Login,
    ctx: &Context,
    args: &DecideArgs,
    approve: bool,
    shown: &mut dyn Write,
    confirm: impl FnOnce(&str) -> Result<bool, Error>,
) -> Result<Approval, Error> {
    let id = &args.id;
    let spinner = Spinner::start(format!("fetching {id} from {}", login.state.broker));
    let request = get(login, ctx, id).await?;
    drop(spinner);
    if request.state.is_final() {
        return Err(Error::AlreadyDecided {
            id: id.to_string(),
            what: approvals::already(&request),
        });
    }
    let digest = bound_digest(&request, id)?;

    let view = approvals::block(&request, state::now(), Arguments::Full);
    shown
        .write_all(view.as_bytes())
        .and_then(|()| shown.flush())
        .map_err(|e| Error::stdio("cannot show the request on stderr", e))?;
    if !confirm(question(request.kind, approve))? {
        return Err(Error::NotConfirmed(format!(
            "nothing decided: {id} was not confirmed"
        )));
    }

    let decision = DecisionRequest {
        approve,
        reason: args.reason.clone(),
        digest,
    };
    let spinner = Spinner::start(format!("sending the decision on {id}"));
    let result = login
        .call(ctx, |client| {
            let (id, decision) = (id.clone(), decision.clone());
            async move { client.decide(&id, &decision).await }
        })
        .await;
    drop(spinner);
    match result {
        Err(conflict @ Error::Conflict { .. }) => match get(login, ctx, id).await {
            Ok(now) if now.state.is_final() => Err(Error::AlreadyDecided {
                id: id.to_string(),
                what: approvals::already(&now),
            }),
            _ => Err(conflict),
        },
        other => other,
    }
}

async fn get(login: &mut Login, ctx: &Context, id: &ApprovalId) -> Result<Approval, Error> {
    let request = login
        .call(ctx, |client| {
            let id = id.clone();
            async move { client.approval(&id).await }
        })
        .await?;
    if request.id != id.as_str() {
        return Err(Error::Broker(format!(
            "asked the broker for {id}, it answered with another request"
        )));
    }
    Ok(request)
}

/// The digest the decision is bound to (step 2).
fn bound_digest(request: &Approval, id: &ApprovalId) -> Result<String, Error> {
    if request.kind == ApprovalKind::Access {
        return Ok(request.digest.clone());
    }
    let (Some(method), Some(name)) = (&request.method, &request.name) else {
        return Err(Error::Broker(format!(
            "the broker shows the held call {id} without its method and name; refusing to decide on it"
        )));
    };
    // A call without arguments may have been bound to `{}` or to `null`.
    let empty = Value::Object(serde_json::Map::new());
    let candidates = match &request.arguments {
        Some(arguments) => vec![arguments],
        None => vec![&empty, &Value::Null],
    };
    candidates
        .into_iter()
        .map(|arguments| approval::digest(method, name, arguments))
        .find(|digest| *digest == request.digest)
        .ok_or_else(|| {
            Error::Broker(format!(
                "the broker's digest for {id} does not match the call it shows; refusing to decide on it (check that the CLI and broker versions match)"
            ))
        })
}

fn question(kind: ApprovalKind, approve: bool) -> &'static str {
    match (kind, approve) {
        (ApprovalKind::Call, true) => "Approve this call?",
        (ApprovalKind::Access, true) => "Grant this access?",
        (ApprovalKind::Call, false) => "Deny this call?",
        (ApprovalKind::Access, false) => "Deny this access request?",
    }
}

/// Asks on stderr, reads one line from stdin; only `y` or `yes` agree.
fn confirm(question: &str) -> Result<bool, Error> {
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| Error::stdio("cannot read the answer from stdin", e))?;
    Ok(is_yes(&line))
}

fn is_yes(answer: &str) -> bool {
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

/// `approved apr_… (1 of 1 approvals)`, `approval recorded for apr_…: 1 of
/// 2 approvals`, `denied apr_…`.
fn result_line(a: &Approval) -> String {
    let id = ui::visible(&a.id);
    let yes = a.votes.iter().filter(|v| v.approve).count();
    let required = a.required;
    match a.state {
        ApprovalState::Approved => {
            let mut line = format!("approved {id} ({yes} of {required} approvals)");
            if let Some(until) = a.grant_expires_at {
                line.push_str(&format!(
                    "; {} may use {} until {}",
                    a.requester,
                    a.server,
                    ui::timestamp(until)
                ));
            }
            line
        }
        ApprovalState::Pending => {
            format!("approval recorded for {id}: {yes} of {required} approvals")
        }
        ApprovalState::Denied => format!("denied {id}"),
        ApprovalState::Expired | ApprovalState::Cancelled => {
            format!("{id} {}", approvals::outcome(a))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use serde_json::json;

    use super::*;
    use crate::approvals::tests::{ID, access_request, held_call, vote};
    use crate::args::OutputArg;
    use crate::error::exit;
    use crate::testing::FakeBroker;

    fn args(reason: Option<&str>) -> DecideArgs {
        DecideArgs {
            id: ID.parse().unwrap(),
            reason: reason.map(str::to_owned),
            yes: false,
            output: OutputArg {
                output: Output::Text,
            },
        }
    }

    fn json_of(a: &Approval) -> String {
        serde_json::to_string(a).unwrap()
    }

    const GET: &str = "/v1/approvals/apr_0123456789abcdef0123456789abcdef";
    const POST: &str = "/v1/approvals/apr_0123456789abcdef0123456789abcdef/decision";

    #[tokio::test]
    async fn approve_posts_the_digest_of_what_it_showed() {
        let tmp = tempfile::tempdir().unwrap();
        let ctx = crate::context::tests::context(&tmp);
        let pending = held_call();
        let mut approved = held_call();
        approved.votes = vec![vote("bob", true, Some("ok"))];
        let (get_body, post_body) = (json_of(&pending), json_of(&approved));
        let broker = FakeBroker::start(move |method, path, _| match (method, path) {
            ("GET", GET) => (200, get_body.clone()),
            ("POST", POST) => (200, post_body.clone()),
            _ => (404, String::new()),
        })
        .await;
        let mut login = broker.login();
        let mut shown = Vec::new();
        let asked = Mutex::new(None);
        let after = decide(&mut login, &ctx, &args(Some("ok")), true, &mut shown, |q| {
            *asked.lock().unwrap() = Some(q.to_owned());
            Ok(true)
        })
        .await
        .unwrap();

        // What was shown: everything, with the digest it is bound to.
        let shown = String::from_utf8(shown).unwrap();
        let digest = approval::digest(
            "tools/call",
            "query",
            &json!({"sql": "delete from users where id = 4", "db": "prod"}),
        );
        assert!(
            shown.contains("\"sql\": \"delete from users where id = 4\""),
            "{shown}"
        );
        assert!(shown.contains("requester:    alice"), "{shown}");
        assert!(shown.contains(&digest[..16]), "{shown}");
        assert_eq!(asked.lock().unwrap().as_deref(), Some("Approve this call?"));

        // What was sent: that digest, with the bearer token.
        let posts = broker.requests_to(POST);
        assert_eq!(posts.len(), 1);
        assert_eq!(posts[0].auth.as_deref(), Some("Bearer tok"));
        let body: serde_json::Value = serde_json::from_slice(&posts[0].body).unwrap();
        assert_eq!(
            body,
            json!({"approve": true, "reason": "ok", "digest": digest})
        );
        assert_eq!(
            result_line(&after),
            format!("approval recorded for {ID}: 1 of 2 approvals")
        );
    }

    #[tokio::test]
    async fn a_digest_that_does_not_match_the_shown_call_decides_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let ctx = crate::context::tests::context(&tmp);
        let mut tampered = held_call();
        // The broker shows other arguments than the ones it bound.
        tampered.arguments = Some(json!({"sql": "select 1"}));
        let body = json_of(&tampered);
        let broker = FakeBroker::start(move |_, _, _| (200, body.clone())).await;
        let mut login = broker.login();
        let err = decide(&mut login, &ctx, &args(None), true, &mut Vec::new(), |_| {
            panic!("asked to confirm a request that cannot be decided")
        })
        .await
        .unwrap_err();
        assert!(err.report().contains("does not match"), "{}", err.report());
        assert!(broker.requests_to(POST).is_empty());
    }

    #[tokio::test]
    async fn a_request_decided_meanwhile_is_reported_as_such() {
        let tmp = tempfile::tempdir().unwrap();
        let ctx = crate::context::tests::context(&tmp);
        let pending = json_of(&held_call());
        let mut decided = held_call();
        decided.state = ApprovalState::Approved;
        decided.votes = vec![vote("carol", true, None), vote("dave", true, None)];
        let decided = json_of(&decided);
        let posted = std::sync::atomic::AtomicBool::new(false);
        let broker = FakeBroker::start(move |method, _, _| {
            use std::sync::atomic::Ordering::SeqCst;
            match method {
                "POST" => {
                    posted.store(true, SeqCst);
                    (
                        409,
                        r#"{"error":"conflict","message":"already decided"}"#.into(),
                    )
                }
                _ if posted.load(SeqCst) => (200, decided.clone()),
                _ => (200, pending.clone()),
            }
        })
        .await;
        let mut login = broker.login();
        let err = decide(&mut login, &ctx, &args(None), false, &mut Vec::new(), |q| {
            assert_eq!(q, "Deny this call?");
            Ok(true)
        })
        .await
        .unwrap_err();
        assert_eq!(err.exit_code(), exit::CONFLICT);
        assert_eq!(
            err.to_string(),
            format!("approval request {ID} was already decided (approved by carol, dave)")
        );
    }

    #[tokio::test]
    async fn a_final_request_is_not_shown_asked_or_posted() {
        let tmp = tempfile::tempdir().unwrap();
        let ctx = crate::context::tests::context(&tmp);
        let mut expired = held_call();
        expired.state = ApprovalState::Expired;
        let body = json_of(&expired);
        let broker = FakeBroker::start(move |_, _, _| (200, body.clone())).await;
        let mut login = broker.login();
        let mut shown = Vec::new();
        let err = decide(&mut login, &ctx, &args(None), true, &mut shown, |_| {
            panic!("asked to confirm a final request")
        })
        .await
        .unwrap_err();
        assert_eq!(err.exit_code(), exit::CONFLICT);
        assert!(err.report().contains("has expired"), "{}", err.report());
        assert!(shown.is_empty());
        assert!(broker.requests_to(POST).is_empty());
    }

    #[tokio::test]
    async fn no_at_the_prompt_sends_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let ctx = crate::context::tests::context(&tmp);
        let body = json_of(&access_request());
        let broker = FakeBroker::start(move |_, _, _| (200, body.clone())).await;
        let mut login = broker.login();
        let err = decide(&mut login, &ctx, &args(None), true, &mut Vec::new(), |q| {
            assert_eq!(q, "Grant this access?");
            Ok(false)
        })
        .await
        .unwrap_err();
        assert_eq!(err.exit_code(), exit::OTHER);
        assert!(err.report().contains("--yes"), "{}", err.report());
        assert!(broker.requests_to(POST).is_empty());
    }

    #[tokio::test]
    async fn forbidden_and_not_found_name_the_request() {
        let tmp = tempfile::tempdir().unwrap();
        let ctx = crate::context::tests::context(&tmp);
        let broker = FakeBroker::start(|_, _, _| {
            (
                403,
                r#"{"error":"forbidden","message":"you cannot decide your own request"}"#.into(),
            )
        })
        .await;
        let err = decide(
            &mut broker.login(),
            &ctx,
            &args(None),
            true,
            &mut Vec::new(),
            |_| Ok(true),
        )
        .await
        .unwrap_err();
        assert_eq!(err.exit_code(), exit::NO_ACCESS);
        assert_eq!(
            err.report(),
            format!(
                "you may not decide {ID}: you cannot decide your own request; only an approver for the server may decide, and never on their own request; ask another approver"
            )
        );

        let broker = FakeBroker::start(|_, _, _| {
            (
                404,
                r#"{"error":"not_found","message":"no such approval request"}"#.into(),
            )
        })
        .await;
        let err = decide(
            &mut broker.login(),
            &ctx,
            &args(None),
            true,
            &mut Vec::new(),
            |_| Ok(true),
        )
        .await
        .unwrap_err();
        assert_eq!(err.exit_code(), exit::NOT_FOUND);
        assert!(
            err.report().contains("mcpgate approvals --all"),
            "{}",
            err.report()
        );

        // A broker without the approvals API at all.
        let broker = FakeBroker::start(|_, _, _| (404, String::new())).await;
        let err = decide(
            &mut broker.login(),
            &ctx,
            &args(None),
            true,
            &mut Vec::new(),
            |_| Ok(true),
        )
        .await
        .unwrap_err();
        assert_eq!(err.exit_code(), exit::OTHER);
        assert!(
            err.report().contains("no approvals API"),
            "{}",
            err.report()
        );
    }

    #[test]
    fn a_call_without_arguments_binds_to_an_empty_object_or_null() {
        let id: ApprovalId = ID.parse().unwrap();
        let mut a = held_call();
        a.method = Some("resources/read".into());
        a.name = Some("file:///etc/motd".into());
        a.arguments = None;
        for bound in [json!({}), Value::Null] {
            a.digest = approval::digest("resources/read", "file:///etc/motd", &bound);
            assert_eq!(bound_digest(&a, &id).unwrap(), a.digest);
        }
        a.digest = approval::digest("resources/read", "file:///etc/passwd", &json!({}));
        assert!(bound_digest(&a, &id).is_err());
        a.name = None;
        assert!(bound_digest(&a, &id).is_err());
    }

    #[test]
    fn only_y_or_yes_agrees() {
        for yes in ["y", "Y", "yes", " YES\n"] {
            assert!(is_yes(yes), "{yes:?}");
        }
        for no in ["", "\n", "n", "no", "yep", "y y"] {
            assert!(!is_yes(no), "{no:?}");
        }
    }

    #[test]
    fn result_lines_say_where_the_request_stands() {
        let mut a = held_call();
        a.required = 1;
        a.state = ApprovalState::Approved;
        a.votes = vec![vote("bob", true, None)];
        assert_eq!(result_line(&a), format!("approved {ID} (1 of 1 approvals)"));
        a.state = ApprovalState::Denied;
        a.votes = vec![vote("bob", false, None)];
        assert_eq!(result_line(&a), format!("denied {ID}"));
        let mut g = access_request();
        g.state = ApprovalState::Approved;
        g.votes = vec![vote("bob", true, None)];
        g.grant_expires_at = Some(crate::approvals::tests::NOW + 3600);
        assert_eq!(
            result_line(&g),
            format!(
                "approved {ID} (1 of 1 approvals); alice may use db until 2027-01-15T09:00:00Z"
            )
        );
    }
}
