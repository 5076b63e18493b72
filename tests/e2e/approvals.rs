//! Held calls and just-in-time access, end to end: a client's call held by
//! policy, other `mcpgate` processes deciding it, and the upstream (the
//! real server-everything behind `tee`) receiving it only after approval.

use std::time::Duration;

use mcpgate_shared::approval::digest;
use mcpgate_shared::jsonrpc::{APPROVAL_DENIED, APPROVAL_EXPIRED, GATEWAY_REFUSED};
use mcpgate_tests::Cli;
use mcpgate_tests::broker::BrokerBuilder;
use mcpgate_tests::certs::ClientKey;
use mcpgate_tests::hook::HookReceiver;
use mcpgate_tests::process::{LineChild, wait_until};
use mcpgate_tests::tunnel::{Api, Tunnel, tool_text};
use serde_json::{Value, json};

use crate::policy::{ENGINEER, RECORDED, calls_received, received, recorded_broker, tunnel};

/// Approves for `recorded`; makes no calls.
const CAROL: &str = "carol";
/// May ask for access to `recorded`, has none by default.
const JIT: &str = "jay";

const RULES: &str = r#"
[[policy]]
name = "everyday tools"
roles = ["engineer", "contractor"]
servers = ["recorded"]
tools = ["echo", "get-sum"]
effect = "allow"

[[policy]]
name = "held echo"
roles = ["engineer"]
servers = ["recorded"]
tools = ["echo"]
when = 'has(args.message) && args.message.startsWith("hold")'
effect = "approve"
reason = "messages starting with hold need a second pair of eyes"
"#;

fn with_people(b: BrokerBuilder) -> BrokerBuilder {
    b.role_toml("approver", r#"approves = ["recorded"]"#)
        .role_toml(
            "contractor",
            r#"request_access = ["recorded"]
max_access_duration = "1h""#,
        )
        .user(CAROL, &["approver"])
        // Erin approves for the server too: only so that refusing her own
        // request proves the rule, not a missing role.
        .user(ENGINEER, &["engineer", "approver"])
        .user(JIT, &["contractor"])
        .toml("[approvals]\nprogress_interval = \"200ms\"\n")
}

/// Sends a held `echo` with a progress token and returns the approval id
/// the first progress notification names.
async fn hold(t: &mut Tunnel, id: i64, message: &str) -> String {
    t.send(&json!({
        "jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"message": message}, "_meta": {"progressToken": format!("p{id}")}}
    }))
    .await;
    // Bounded: the first progress notification comes within one interval.
    for _ in 0..50 {
        let msg = t.recv().await.expect("the tunnel stays open while held");
        if msg["method"] == "notifications/progress"
            && msg["params"]["progressToken"] == format!("p{id}")
        {
            let text = msg["params"]["message"].as_str().unwrap();
            let start = text
                .find("apr_")
                .expect("the approval id in the progress message");
            return text[start..start + 36].to_owned();
        }
        assert!(
            msg.get("id") != Some(&json!(id)),
            "answered without approval: {msg}"
        );
    }
    panic!("no progress notification for held call {id}")
}

fn logged_in(broker: &mcpgate_tests::Broker, user: &str) -> Cli {
    let cli = Cli::new(broker);
    cli.login_ok(user);
    cli
}

#[tokio::test]
async fn held_call_reaches_upstream_only_after_another_person_approves() {
    let mut hook = HookReceiver::start().await;
    let hook_toml = format!(
        "[approvals]\nprogress_interval = \"200ms\"\n[[approvals.webhooks]]\nurl = \"{}\"\n",
        hook.url
    );
    let (broker, received_at) = recorded_broker(RULES, move |b| with_people(b).toml(&hook_toml));
    let erin = logged_in(&broker, ENGINEER);
    let carol = logged_in(&broker, CAROL);
    let mut t = tunnel(&broker, ENGINEER, RECORDED).await;
    // An approver watching live.
    let mut watch = LineChild::spawn(carol.command(&["approvals", "--watch", "--output", "json"]));

    let first = hold(&mut t, 1, "hold: first").await;
    // The watcher shows it: as it opens, or in its first snapshot of the
    // list if the request was quicker than the watcher's start.
    let seen = (0..20)
        .map(|_| watch.recv_json(Duration::from_secs(10)))
        .find(|e| e["event"] == "opened" || e["event"] == "current")
        .expect("the watcher saw the request");
    assert_eq!(seen["approval"]["id"], first.as_str(), "{seen}");
    assert_eq!(
        seen["approval"]["arguments"],
        json!({"message": "hold: first"})
    );
    // The webhook hears of it, with the exact call.
    let opened = hook.next(Duration::from_secs(10)).await;
    assert_eq!(opened["event"], "approval.opened", "{opened}");
    assert_eq!(opened["approval"]["id"], first.as_str());
    assert_eq!(
        opened["approval"]["arguments"],
        json!({"message": "hold: first"})
    );
    // Held: the upstream has not seen it, and its id stays taken.
    assert!(calls_received(&received_at).is_empty());
    t.send(&json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get-sum","arguments":{"a":1,"b":2}}}))
        .await;
    let dup = t.recv_reply().await.unwrap();
    assert_eq!(dup["error"]["code"], json!(GATEWAY_REFUSED), "{dup}");

    // Nobody approves their own request.
    let own = erin.run(&["approve", &first, "--yes"]);
    assert_eq!(own.code(), 12, "{own}");
    assert!(own.stderr.contains("own request"), "{own}");

    // The approver sees exactly the call: requester, tool, arguments.
    let list = carol.run(&["approvals", "--output", "json"]);
    list.assert_success();
    let list: Value = serde_json::from_str(&list.stdout).unwrap();
    let pending = list["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == first.as_str())
        .unwrap_or_else(|| panic!("{first} not listed: {list}"))
        .clone();
    assert_eq!(pending["requester"], ENGINEER);
    assert_eq!(pending["name"], "echo");
    assert_eq!(pending["arguments"], json!({"message": "hold: first"}));
    assert!(
        pending["reason"]
            .as_str()
            .unwrap()
            .contains("second pair of eyes")
    );

    // A decision for other arguments than the held ones is refused.
    let api = Api::new(broker.api_url(), &broker.ca_pem());
    let carol_token = api.token(CAROL).await;
    let other = digest(
        "tools/call",
        "echo",
        &json!({"message": "hold: something else"}),
    );
    let refused = api
        .post_json(
            &carol_token,
            &format!("/v1/approvals/{first}/decision"),
            &json!({"approve": true, "digest": other}),
        )
        .await
        .unwrap_err();
    assert_eq!(refused.status, 409, "{refused:?}");
    assert!(calls_received(&received_at).is_empty());

    // Approved by another process: forwarded, exactly as held.
    let approve = carol.run(&["approve", &first, "--reason", "looks fine"]);
    approve.assert_success();
    let (resp, _) = t.recv_response(&json!(1)).await;
    assert_eq!(tool_text(&resp), "Echo: hold: first", "{resp}");
    let decided = hook.next(Duration::from_secs(10)).await;
    assert_eq!(decided["event"], "approval.decided", "{decided}");
    assert_eq!(decided["approval"]["state"], "approved");
    assert_eq!(decided["approval"]["votes"][0]["approver"], CAROL);
    let approved = (0..20)
        .map(|_| watch.recv_json(Duration::from_secs(10)))
        .find(|e| e["event"] == "approved")
        .expect("the watcher saw the approval");
    assert_eq!(approved["approval"]["id"], first.as_str(), "{approved}");
    drop(watch);
    assert_eq!(calls_received(&received_at), ["echo"]);
    let forwarded = received(&received_at)
        .into_iter()
        .find(|m| m["method"] == "tools/call")
        .unwrap();
    assert_eq!(
        forwarded["params"]["arguments"],
        json!({"message": "hold: first"})
    );

    // The same arguments again are a new request: an approval is used once.
    let again = hold(&mut t, 2, "hold: first").await;
    assert_ne!(again, first);
    // Denied, with the approver's reason, and never forwarded.
    let deny = carol.run(&["deny", &again, "--reason", "not today"]);
    deny.assert_success();
    let (resp, _) = t.recv_response(&json!(2)).await;
    assert_eq!(resp["error"]["code"], json!(APPROVAL_DENIED), "{resp}");
    assert!(
        resp["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not today"),
        "{resp}"
    );
    assert_eq!(calls_received(&received_at), ["echo"]);

    // A held call the client cancels is closed: nobody can approve it.
    let cancelled = hold(&mut t, 3, "hold: third").await;
    t.send(&json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":3}}))
        .await;
    let state = wait_until(Duration::from_secs(10), "the cancelled approval", || {
        let out = carol.run(&["approvals", "--state", "cancelled", "--output", "json"]);
        out.stdout.contains(&cancelled).then_some(out)
    });
    assert!(state.success(), "{state}");
    let late = carol.run(&["approve", &cancelled, "--yes"]);
    assert_eq!(late.code(), 19, "{late}");
    // The session goes on; nothing else reached the upstream.
    let sum = t.call_tool("get-sum", json!({"a": 2, "b": 3})).await;
    assert!(tool_text(&sum).contains('5'), "{sum}");
    assert_eq!(calls_received(&received_at), ["echo", "get-sum"]);
    t.close().await;

    // Every decision is logged with who, what and why.
    let log = broker.log();
    for decision in [
        "decision=hold",
        "decision=approve",
        "decision=deny_by_approver",
        "decision=cancel",
    ] {
        assert!(log.contains(decision), "{decision} not logged");
    }
}

#[tokio::test]
async fn held_call_times_out_when_nobody_decides() {
    let (broker, received_at) = recorded_broker(RULES, |b| {
        with_people(b).toml("[approvals]\ntimeout = \"1s\"\nprogress_interval = \"200ms\"\n")
    });
    let mut t = tunnel(&broker, ENGINEER, RECORDED).await;
    let id = hold(&mut t, 1, "hold: nobody looks").await;
    let (resp, _) = t.recv_response(&json!(1)).await;
    assert_eq!(resp["error"]["code"], json!(APPROVAL_EXPIRED), "{resp}");
    assert!(
        resp["error"]["message"].as_str().unwrap().contains(&id),
        "{resp}"
    );
    assert!(calls_received(&received_at).is_empty());
    // Too late to approve.
    let carol = logged_in(&broker, CAROL);
    let late = carol.run(&["approve", &id, "--yes"]);
    assert_eq!(late.code(), 19, "{late}");
    assert!(broker.log().contains("decision=timeout"));
}

#[tokio::test]
async fn just_in_time_access_is_granted_used_and_expires() {
    let (broker, _) = recorded_broker(RULES, with_people);
    let api = Api::new(broker.api_url(), &broker.ca_pem());
    let token = api.token(JIT).await;
    let key = ClientKey::generate();
    let refused = api
        .request_session(&token, RECORDED, &key.csr_pem())
        .await
        .unwrap_err();
    assert_eq!(refused.status, 403, "{refused:?}");
    assert!(
        refused.body.contains("request-access"),
        "the hint: {refused:?}"
    );

    let jay = logged_in(&broker, JIT);
    // More than the role may ask for is refused.
    let greedy = jay.run(&[
        "request-access",
        RECORDED,
        "--duration",
        "2h",
        "--reason",
        "x",
    ]);
    assert_eq!(greedy.code(), 12, "{greedy}");
    let asked = jay.run(&[
        "request-access",
        RECORDED,
        "--duration",
        "4s",
        "--reason",
        "incident 7",
    ]);
    asked.assert_success();
    let id = asked.stdout.trim().to_owned();
    assert!(id.starts_with("apr_"), "{asked}");

    let carol = logged_in(&broker, CAROL);
    carol.run(&["approve", &id, "--yes"]).assert_success();

    // Granted: a session works, and it ends no later than the grant.
    let session = api.new_session(&token, RECORDED).await;
    assert!(
        session.response.max_duration_secs <= 4,
        "{:?}",
        session.response.max_duration_secs
    );
    let mut t = session.open_ready().await;
    t.initialize().await;
    let echo = t.call_tool("echo", json!({"message": "jit"})).await;
    assert_eq!(tool_text(&echo), "Echo: jit");
    t.close().await;

    let grants = jay.run(&["grants", "--output", "json"]);
    grants.assert_success();
    let grants: Value = serde_json::from_str(&grants.stdout).unwrap();
    let grant = &grants["grants"][0];
    assert_eq!(grant["id"], id.as_str());
    assert_eq!(grant["approvers"], json!([CAROL]));
    assert_eq!(grant["reason"], "incident 7");

    // Expired: sessions are refused again. Bounded: the grant lasts 4 s.
    let mut tries = 0;
    loop {
        let key = ClientKey::generate();
        match api.request_session(&token, RECORDED, &key.csr_pem()).await {
            Err(e) if e.status == 403 => break,
            other => {
                tries += 1;
                assert!(
                    tries < 60,
                    "the grant never expired: {:?}",
                    other.map(|r| r.session_id)
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
    // The history is kept.
    let history = jay.run(&["grants", "--output", "json"]);
    assert!(history.stdout.contains(&id), "{history}");
}
