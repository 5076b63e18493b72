//! Policy on the data path: what a role may call, list and read, through a
//! real tunnel to the real server-everything, whose input is recorded by
//! `tee` on its way in — the proof of what reached the upstream.

use std::path::{Path, PathBuf};

use mcpgate_shared::jsonrpc::{
    INVALID_PARAMS, INVALID_REQUEST, METHOD_NOT_FOUND, PARSE_ERROR, POLICY_DENIED,
};
use mcpgate_tests::Broker;
use mcpgate_tests::broker::BrokerBuilder;
use mcpgate_tests::paths::Peers;
use mcpgate_tests::tunnel::{Api, Tunnel, tool_text};
use serde_json::{Value, json};

use crate::fixtures::unique;

/// server-everything behind `tee`: every line the broker forwards is
/// appended to the file in `$RECEIVED` before the server reads it.
pub const RECORDED: &str = "recorded";

pub const ENGINEER: &str = "erin";

/// The rules the policy tests run under.
pub const RULES: &str = r#"
[[policy]]
name = "everyday tools"
roles = ["engineer"]
servers = ["recorded"]
tools = ["echo", "get-*"]
effect = "allow"

[[policy]]
name = "no environment dumps"
roles = ["*"]
servers = ["recorded"]
tools = ["re:get-e[a-z]+"]
effect = "deny"
reason = "the server's environment holds credentials"

[[policy]]
name = "no secrets in echo"
roles = ["engineer"]
servers = ["recorded"]
tools = ["echo"]
when = 'has(args.message) && args.message.matches("(?i)\\bpassword\\b")'
effect = "deny"
"#;

/// A broker whose `recorded` server writes what it receives to `received`.
pub fn recorded_broker(
    rules: &str,
    extra: impl FnOnce(BrokerBuilder) -> BrokerBuilder,
) -> (Broker, PathBuf) {
    let received = std::env::temp_dir().join(format!("{}.jsonl", unique("received")));
    let everything = Peers::get().everything_command().join(" ");
    let script = format!("/usr/bin/tee -a \"$RECEIVED\" | exec {everything}");
    let builder = Broker::builder()
        .server(RECORDED, "/bin/sh", &["-c", &script])
        .server_env(
            RECORDED,
            "RECEIVED",
            received.to_str().expect("utf-8 temp path"),
        )
        .role("engineer", &[RECORDED])
        .policy(rules);
    (extra(builder).start(), received)
}

/// Adds [`ENGINEER`] with the `engineer` role.
pub fn engineer(b: BrokerBuilder) -> BrokerBuilder {
    b.user(ENGINEER, &["engineer"])
}

/// Every line the upstream received, parsed.
pub fn received(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Names of the `tools/call`s the upstream received.
pub fn calls_received(path: &Path) -> Vec<String> {
    received(path)
        .iter()
        .filter(|m| m["method"] == "tools/call")
        .map(|m| m["params"]["name"].as_str().unwrap_or_default().to_owned())
        .collect()
}

pub async fn tunnel(broker: &Broker, user: &str, server: &str) -> Tunnel {
    let api = Api::new(broker.api_url(), &broker.ca_pem());
    let token = api.token(user).await;
    let mut t = api.new_session(&token, server).await.open_ready().await;
    t.initialize().await;
    t
}

fn error_code(resp: &Value) -> i64 {
    resp["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("expected an error: {resp}"))
}

async fn list_names(t: &mut Tunnel) -> Vec<String> {
    let mut names = Vec::new();
    let mut params = json!({});
    // Bounded: server-everything has a handful of pages at most.
    for _ in 0..20 {
        let page = t.request("tools/list", params).await;
        for tool in page["result"]["tools"].as_array().expect("tools") {
            names.push(tool["name"].as_str().unwrap().to_owned());
        }
        match page["result"]["nextCursor"].as_str() {
            Some(c) => params = json!({"cursor": c}),
            None => return names,
        }
    }
    panic!("tools/list never ended")
}

#[tokio::test]
async fn denied_tool_never_reaches_upstream_and_listing_hides_it() {
    let (broker, received_at) = recorded_broker(RULES, engineer);
    let mut t = tunnel(&broker, ENGINEER, RECORDED).await;

    let names = list_names(&mut t).await;
    assert!(names.contains(&"echo".to_owned()), "{names:?}");
    assert!(names.contains(&"get-sum".to_owned()), "{names:?}");
    // Denied by an unconditional rule, or allowed by none: not listed.
    assert!(!names.contains(&"get-env".to_owned()), "{names:?}");
    assert!(
        !names.iter().any(|n| n.starts_with("trigger-")),
        "{names:?}"
    );

    let denied = t.call_tool("get-env", json!({})).await;
    assert_eq!(error_code(&denied), POLICY_DENIED, "{denied}");
    let message = denied["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("credentials"),
        "the rule's reason: {message}"
    );
    assert!(
        denied["error"]["data"]["rule"]
            .as_str()
            .unwrap()
            .starts_with("no environment dumps (")
    );

    let unlisted = t
        .call_tool(
            "trigger-long-running-operation",
            json!({"duration": 1, "steps": 1}),
        )
        .await;
    assert_eq!(error_code(&unlisted), POLICY_DENIED, "{unlisted}");
    assert!(
        unlisted["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no rule allows"),
        "{unlisted}"
    );

    // A condition on the arguments: same tool, other arguments.
    let secret = t
        .call_tool("echo", json!({"message": "my PASSWORD is hunter2"}))
        .await;
    assert_eq!(error_code(&secret), POLICY_DENIED, "{secret}");
    let echo = t.call_tool("echo", json!({"message": "hello"})).await;
    assert_eq!(tool_text(&echo), "Echo: hello", "{echo}");
    let sum = t.call_tool("get-sum", json!({"a": 2, "b": 3})).await;
    assert!(tool_text(&sum).contains('5'), "{sum}");
    t.close().await;

    // What reached the server: only the allowed calls.
    let calls = calls_received(&received_at);
    assert_eq!(calls, ["echo", "get-sum"], "{calls:?}");
    let text = std::fs::read_to_string(&received_at).unwrap();
    assert!(
        !text.contains("hunter2"),
        "a denied call's arguments reached the upstream"
    );

    // The denial is in the broker log with the rule, never the arguments.
    let log = broker.log();
    assert!(log.contains("no environment dumps"), "{log}");
    assert!(!log.contains("hunter2"), "arguments in the log");
}

#[tokio::test]
async fn policy_check_explains_the_decision_and_names_the_rule() {
    let (broker, _) = recorded_broker(RULES, engineer);
    let explain = |tool: &str, args: &str| {
        broker.admin(&[
            "policy", "check", "--user", ENGINEER, "--server", RECORDED, "--tool", tool, "--args",
            args,
        ])
    };
    let out = explain("get-env", "{}");
    let text = &out.stdout;
    assert!(text.contains("deny"), "{out}");
    assert!(text.contains("no environment dumps"), "{out}");
    assert!(
        text.contains("broker.toml:"),
        "names the file and line: {out}"
    );

    let out = explain("echo", r#"{"message":"reset the password"}"#);
    assert!(out.stdout.contains("no secrets in echo"), "{out}");

    let out = explain("echo", r#"{"message":"hi"}"#);
    let text = &out.stdout;
    assert!(
        text.contains("allow") && text.contains("everyday tools"),
        "{out}"
    );
}

#[tokio::test]
async fn evasion_attempts_are_refused_and_never_forwarded() {
    let (broker, received_at) = recorded_broker(RULES, engineer);
    let mut t = tunnel(&broker, ENGINEER, RECORDED).await;

    // Case variants of protocol keys: the broker and the server could
    // read different calls out of them.
    for (id, params) in [
        (101, r#"{"Name":"get-env","arguments":{}}"#),
        (
            102,
            r#"{"name":"echo","Arguments":{"message":"x"},"arguments":{"message":"y"}}"#,
        ),
        (103, r#"{"name":"echo","NAME":"get-env"}"#),
    ] {
        let line =
            format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{params}}}"#);
        t.send_raw(line.as_bytes()).await.unwrap();
        let (resp, _) = t.recv_response(&json!(id)).await;
        assert_eq!(error_code(&resp), INVALID_PARAMS, "{params}: {resp}");
    }
    // Duplicate keys, at the top and inside params.
    t.send_raw(br#"{"jsonrpc":"2.0","id":104,"method":"tools/call","params":{"name":"echo","name":"get-env"}}"#)
        .await
        .unwrap();
    let (resp, _) = t.recv_response(&json!(104)).await;
    assert_eq!(error_code(&resp), PARSE_ERROR, "{resp}");
    // A case variant of the method member itself.
    t.send_raw(br#"{"jsonrpc":"2.0","id":105,"Method":"tools/call","params":{"name":"get-env"}}"#)
        .await
        .unwrap();
    let (resp, _) = t.recv_response(&json!(105)).await;
    assert!(resp["error"].is_object(), "{resp}");
    // A method in another case is no method the gateway lets through.
    t.send_raw(br#"{"jsonrpc":"2.0","id":106,"method":"Tools/Call","params":{"name":"get-env"}}"#)
        .await
        .unwrap();
    let (resp, _) = t.recv_response(&json!(106)).await;
    assert_eq!(error_code(&resp), METHOD_NOT_FOUND, "{resp}");
    // Unicode escapes are decided on after unescaping: `get\u002denv` is
    // get-env, and `\u0065cho` is echo.
    t.send_raw(
        br#"{"jsonrpc":"2.0","id":107,"method":"tools/call","params":{"name":"get\u002denv"}}"#,
    )
    .await
    .unwrap();
    let (resp, _) = t.recv_response(&json!(107)).await;
    assert_eq!(error_code(&resp), POLICY_DENIED, "{resp}");
    t.send_raw(br#"{"jsonrpc":"2.0","id":108,"method":"tools/call","params":{"name":"\u0065cho","arguments":{"message":"escaped"}}}"#)
        .await
        .unwrap();
    let (resp, _) = t.recv_response(&json!(108)).await;
    assert_eq!(tool_text(&resp), "Echo: escaped", "{resp}");
    // A batch.
    t.send_raw(
        br#"[{"jsonrpc":"2.0","id":109,"method":"tools/call","params":{"name":"get-env"}}]"#,
    )
    .await
    .unwrap();
    let resp = t.recv_reply().await.unwrap();
    assert_eq!(error_code(&resp), INVALID_REQUEST, "{resp}");
    // A tools/call sent as a notification: nothing to answer, nothing
    // forwarded. The ping after it proves the session went on.
    t.send_raw(br#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"get-env"}}"#)
        .await
        .unwrap();
    let ping = t.request("ping", json!({})).await;
    assert!(ping["result"].is_object(), "{ping}");
    t.close().await;

    let calls = calls_received(&received_at);
    assert!(
        !calls.iter().any(|c| c == "get-env"),
        "get-env reached the upstream: {calls:?}"
    );
    let lines = received(&received_at);
    assert!(
        !lines.iter().any(|m| m.get("Name").is_some()
            || m["params"].get("Name").is_some()
            || m["params"].get("Arguments").is_some()),
        "a case variant reached the upstream"
    );
}
