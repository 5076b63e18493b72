//! `mcpgate request-access SERVER` and `mcpgate grants`: just-in-time
//! access. A request is an approval request of kind `access`; an approver
//! grants it with `mcpgate approve`, and the grant lets the requester open
//! sessions to the server until it ends.
//!
//! `--wait` long-polls the caller's pending requests (`after_version`)
//! until this one leaves the list (or its time is up), then asks for it by
//! id to learn how it ended: granted (exit 0), denied (20), expired or
//! cancelled (21).

use mcpgate_shared::approval::{AccessRequest, Approval, ApprovalState, Grant};

use crate::approvals::{self, ApprovalId};
use crate::args::{GrantsArgs, Output, RequestAccessArgs, StateFilter};
use crate::context::{Context, Login};
use crate::error::{Error, one_line};
use crate::state;
use crate::ui::{self, Spinner};

/// How long past its expiry a request may still show as pending before
/// `--wait` stops waiting for the broker to say so.
const EXPIRY_GRACE_SECS: u64 = 60;

pub async fn request(args: RequestAccessArgs, ctx: &Context) -> Result<(), Error> {
    let mut login = ctx.login().await?;
    let request = AccessRequest {
        server: args.server.clone(),
        duration_secs: args.duration.as_secs(),
        reason: args.reason.clone(),
    };
    let spinner = Spinner::start(format!(
        "asking {} for access to {}",
        login.state.broker, args.server
    ));
    let opened = login
        .call(ctx, |client| {
            let request = request.clone();
            async move { client.request_access(&request).await }
        })
        .await?;
    drop(spinner);
    let id: ApprovalId = opened.id.parse().map_err(|_| {
        Error::Broker(
            "the broker answered the access request with an id this CLI cannot read; check that the CLI and broker versions match"
                .into(),
        )
    })?;
    ui::print(&format!("{id}\n"))?;
    if opened.state.is_final() {
        return ended(&id, &opened);
    }
    let now = state::now();
    eprintln!(
        "access request {id} for {} ({}) is waiting for an approver; it expires {}",
        args.server,
        approvals::duration(request.duration_secs),
        ui::relative(opened.expires_at, now)
    );
    if !args.wait {
        eprintln!("mcpgate grants lists the grant once it is approved");
        return Ok(());
    }
    let decided = wait(&mut login, ctx, &id, opened).await?;
    ended(&id, &decided)
}

/// Long-polls until the request is no longer pending.
async fn wait(
    login: &mut Login,
    ctx: &Context,
    id: &ApprovalId,
    mut current: Approval,
) -> Result<Approval, Error> {
    let spinner = Spinner::start(waiting(&current, state::now()));
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprintln!("waiting for the decision (Ctrl-C stops waiting; the request stays open)");
    }
    let tell = |line: &str| spinner.println(&format!("warning: {line}"));
    let mut version = None;
    loop {
        let query = approvals::query(StateFilter::Pending, version);
        let list = approvals::poll(login, ctx, &query, tell).await?;
        version = Some(list.version);
        let now = state::now();
        let listed = list.approvals.into_iter().find(|a| a.id == id.as_str());
        let mut latest = match listed {
            Some(a) if now < a.expires_at => a,
            // Gone from the pending list, or its time is up: ask for it.
            _ => {
                login
                    .call(ctx, |client| {
                        let id = id.clone();
                        async move { client.approval(&id).await }
                    })
                    .await?
            }
        };
        if latest.state.is_final() {
            return Ok(latest);
        }
        if latest.votes != current.votes {
            spinner.println(&format!("approval recorded: {}", approvals::tally(&latest)));
        }
        if now > latest.expires_at + EXPIRY_GRACE_SECS {
            // The broker has not expired it yet; by its own deadline it is.
            latest.state = ApprovalState::Expired;
            return Ok(latest);
        }
        spinner.set(waiting(&latest, now));
        current = latest;
    }
}

fn waiting(a: &Approval, now: u64) -> String {
    format!(
        "waiting for an approver: {} approvals, expires {}",
        approvals::tally(a),
        ui::relative(a.expires_at, now)
    )
}

/// The end of a request: a grant is success, anything else an error with
/// its own exit code.
fn ended(id: &ApprovalId, a: &Approval) -> Result<(), Error> {
    match a.state {
        ApprovalState::Approved => {
            let until = a
                .grant_expires_at
                .map(|t| ui::expiry(t, state::now()))
                .unwrap_or_else(|| "the broker did not say when".into());
            eprintln!("access to {} granted until {until}", a.server);
            Ok(())
        }
        ApprovalState::Denied => Err(Error::AccessDenied {
            id: id.to_string(),
            server: a.server.clone(),
            what: approvals::outcome(a),
        }),
        ApprovalState::Expired | ApprovalState::Cancelled => Err(Error::AccessNotGranted {
            id: id.to_string(),
            server: a.server.clone(),
            what: approvals::already(a),
        }),
        ApprovalState::Pending => Ok(()),
    }
}

pub async fn grants(args: GrantsArgs, ctx: &Context) -> Result<(), Error> {
    let mut login = ctx.login().await?;
    let spinner = Spinner::start(format!("asking {} for access grants", login.state.broker));
    let mut list = login
        .call(ctx, |client| async move { client.grants().await })
        .await?;
    drop(spinner);
    // Newest first, whatever order the broker used.
    list.grants.sort_by_key(|g| std::cmp::Reverse(g.granted_at));
    match args.output.output {
        Output::Json => ui::print(&approvals::pretty_json(&list)),
        Output::Text => {
            ui::print(&table(&list.grants, state::now()))?;
            if list.grants.is_empty() {
                eprintln!(
                    "no access grants; mcpgate request-access SERVER --duration 1h --reason TEXT asks for one"
                );
            }
            Ok(())
        }
    }
}

/// `SERVER  USER  UNTIL  APPROVERS  ID  REASON`, one grant a line.
fn table(grants: &[Grant], now: u64) -> String {
    let rows: Vec<Vec<String>> = grants
        .iter()
        .map(|g| {
            vec![
                g.server.to_string(),
                g.user.to_string(),
                ui::expiry(g.expires_at, now),
                g.approvers
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
                ui::visible(&one_line(&g.id, 80)),
                ui::visible(&one_line(&g.reason, 200)),
            ]
        })
        .collect();
    ui::table(
        &["SERVER", "USER", "UNTIL", "APPROVERS", "ID", "REASON"],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::approvals::tests::{ID, NOW, access_request, vote};
    use crate::error::exit;
    use crate::testing::FakeBroker;

    #[tokio::test]
    async fn an_access_request_sends_server_seconds_and_reason() {
        let opened = serde_json::to_string(&access_request()).unwrap();
        let broker = FakeBroker::start(move |method, path, _| match (method, path) {
            ("POST", "/v1/access-requests") => (200, opened.clone()),
            _ => (404, String::new()),
        })
        .await;
        let request = AccessRequest {
            server: "db".parse().unwrap(),
            duration_secs: 5400,
            reason: "incident 4411".into(),
        };
        let answer = broker
            .login()
            .client()
            .unwrap()
            .request_access(&request)
            .await
            .unwrap();
        assert_eq!(answer.id, ID);
        let sent = broker.requests_to("/v1/access-requests");
        assert_eq!(sent[0].method, "POST");
        assert_eq!(sent[0].auth.as_deref(), Some("Bearer tok"));
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&sent[0].body).unwrap(),
            json!({"server": "db", "duration_secs": 5400, "reason": "incident 4411"})
        );
    }

    #[tokio::test]
    async fn a_refused_access_request_says_why_with_exit_12() {
        let broker = FakeBroker::start(|_, _, _| {
            (
                403,
                r#"{"error":"forbidden","message":"role dev may ask for at most 4h"}"#.into(),
            )
        })
        .await;
        let request = AccessRequest {
            server: "db".parse().unwrap(),
            duration_secs: 86_400,
            reason: "r".into(),
        };
        let err = broker
            .login()
            .client()
            .unwrap()
            .request_access(&request)
            .await
            .unwrap_err();
        assert_eq!(err.exit_code(), exit::NO_ACCESS);
        let line = err.report();
        assert!(
            line.starts_with("cannot request access to db: role dev may ask for at most 4h; "),
            "{line}"
        );
        assert!(line.contains("shorter --duration"), "{line}");
    }

    #[tokio::test]
    async fn wait_long_polls_until_the_request_leaves_the_pending_list() {
        let tmp = tempfile::tempdir().unwrap();
        let ctx = crate::context::tests::context(&tmp);
        let now = state::now();
        let mut pending = access_request();
        pending.created_at = now;
        pending.expires_at = now + 600;
        let mut voted = pending.clone();
        voted.required = 2;
        voted.votes = vec![vote("bob", true, None)];
        let mut granted = voted.clone();
        granted.state = ApprovalState::Approved;
        granted.votes.push(vote("carol", true, None));
        granted.grant_expires_at = Some(now + 3600);
        let list = |items: &[&Approval], version: u64| {
            json!({"approvals": items, "version": version}).to_string()
        };
        let (first, second, third) = (list(&[&pending], 1), list(&[&voted], 2), list(&[], 3));
        let by_id = serde_json::to_string(&granted).unwrap();
        let broker = FakeBroker::start(move |_, path, _| match path {
            "/v1/approvals?state=pending" => (200, first.clone()),
            "/v1/approvals?state=pending&after_version=1&wait_secs=30" => (200, second.clone()),
            "/v1/approvals?state=pending&after_version=2&wait_secs=30" => (200, third.clone()),
            "/v1/approvals/apr_0123456789abcdef0123456789abcdef" => (200, by_id.clone()),
            _ => (500, r#"{"error":"internal","message":"unexpected"}"#.into()),
        })
        .await;
        let mut login = broker.login();
        let id: ApprovalId = ID.parse().unwrap();
        let end = wait(&mut login, &ctx, &id, pending).await.unwrap();
        assert_eq!(end.state, ApprovalState::Approved);
        assert_eq!(end.grant_expires_at, Some(now + 3600));
        assert_eq!(broker.requests_to("/v1/approvals").len(), 3);
        assert!(ended(&id, &end).is_ok());
    }

    #[test]
    fn grants_table_shows_live_and_expired() {
        let grants: Vec<Grant> = serde_json::from_value(json!([
            {"id": ID, "user": "alice", "server": "db", "granted_at": NOW - 600,
             "expires_at": NOW + 3000, "approvers": ["bob", "carol"], "reason": "incident 4411"},
            {"id": "apr_ffffffffffffffffffffffffffffffff", "user": "alice", "server": "postgres-prod",
             "granted_at": NOW - 90_000, "expires_at": NOW - 86_400, "approvers": ["bob"],
             "reason": "line\nbreak \u{202e}"}
        ]))
        .unwrap();
        assert_eq!(
            table(&grants, NOW),
            format!(
                "SERVER         USER   UNTIL                                     APPROVERS  ID                                    REASON\n\
                 db             alice  2027-01-15T08:50:00Z (in 50m)             bob,carol  {ID}  incident 4411\n\
                 postgres-prod  alice  2027-01-14T08:00:00Z (expired 1d 0h ago)  bob        apr_ffffffffffffffffffffffffffffffff  line break \\u{{202e}}\n"
            )
        );
    }

    #[test]
    fn each_end_has_its_exit_code() {
        let id: ApprovalId = ID.parse().unwrap();
        let mut a = access_request();
        a.state = ApprovalState::Approved;
        a.votes = vec![vote("bob", true, None)];
        a.grant_expires_at = Some(NOW + 3600);
        assert!(ended(&id, &a).is_ok());

        a.state = ApprovalState::Denied;
        a.votes = vec![vote("carol", false, Some("not during the freeze"))];
        let err = ended(&id, &a).unwrap_err();
        assert_eq!(err.exit_code(), exit::ACCESS_DENIED);
        assert_eq!(
            err.to_string(),
            format!("access request {ID} for db was denied by carol: \"not during the freeze\"")
        );

        a.state = ApprovalState::Expired;
        a.votes = vec![];
        let err = ended(&id, &a).unwrap_err();
        assert_eq!(err.exit_code(), exit::ACCESS_EXPIRED);
        assert_eq!(
            err.to_string(),
            format!("access request {ID} for db has expired: nobody decided in time")
        );

        a.state = ApprovalState::Cancelled;
        assert_eq!(
            ended(&id, &a).unwrap_err().exit_code(),
            exit::ACCESS_EXPIRED
        );
    }
}
