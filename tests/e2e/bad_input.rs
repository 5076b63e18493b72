//! Bad input through a real tunnel, and bad upstreams: each gets a proper
//! JSON-RPC error or a clear exit, and what else is running keeps working.

use std::time::Duration;

use mcpgate_shared::api::ErrorCode;
use mcpgate_shared::jsonrpc::{INVALID_REQUEST, PARSE_ERROR, UPSTREAM_UNAVAILABLE};
use mcpgate_tests::Cli;
use mcpgate_tests::broker::{Broker, EVERYTHING};
use mcpgate_tests::certs::ClientKey;
use mcpgate_tests::cli::exit;
use mcpgate_tests::tunnel::{Api, Tunnel, tool_text};
use serde_json::{Value, json};

use crate::fixtures::{ALICE, builder};

const LIMIT: usize = 4096;
const CRASHY: &str = "crashy";

/// Answers `initialize`, reads one more line, and exits: an upstream that
/// dies in the middle of a session.
const CRASHY_SCRIPT: &str = r#"read -r line
printf '%s\n' '{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-11-25","capabilities":{"tools":{}},"serverInfo":{"name":"crashy","version":"0"}}}'
read -r line
read -r line
echo "crashy: exiting mid-session" >&2
exit 3
"#;

fn broker() -> Broker {
    builder()
        .max_message_bytes(LIMIT)
        .server(CRASHY, "/bin/sh", &["-c", CRASHY_SCRIPT])
        .role("dev", &[EVERYTHING, mcpgate_tests::broker::DEMO, CRASHY])
        .start()
}

async fn everything_tunnel(broker: &Broker) -> Tunnel {
    let api = Api::new(broker.api_url(), &broker.ca_pem());
    let token = api.token(ALICE).await;
    let mut t = api.new_session(&token, EVERYTHING).await.open_ready().await;
    t.initialize().await;
    t
}

async fn assert_echo_works(t: &mut Tunnel, message: &str) {
    let echo = t.call_tool("echo", json!({"message": message})).await;
    assert_eq!(tool_text(&echo), format!("Echo: {message}"), "{echo}");
}

/// The next reply, which must be a JSON-RPC error with `code`.
async fn expect_error(t: &mut Tunnel, code: i64) -> Value {
    let msg = t
        .recv_reply()
        .await
        .expect("an error response, not the end of the tunnel");
    assert_eq!(msg["error"]["code"], json!(code), "{msg}");
    assert_eq!(msg["jsonrpc"], "2.0", "{msg}");
    msg
}

#[tokio::test]
async fn malformed_json_lines_get_parse_errors_and_the_session_continues() {
    let broker = broker();
    let mut t = everything_tunnel(&broker).await;
    t.send_raw(b"{this is not json").await.expect("write");
    let err = expect_error(&mut t, PARSE_ERROR).await;
    assert_eq!(err["id"], Value::Null, "no id can be read from it: {err}");
    // A truncated request: answering with its id (when the broker can read
    // one) or with null are both proper JSON-RPC.
    t.send_raw(br#"{"jsonrpc":"2.0","id":41,"method":"tools/call","params":{"#)
        .await
        .expect("write");
    let err = expect_error(&mut t, PARSE_ERROR).await;
    assert!(err["id"] == json!(41) || err["id"].is_null(), "{err}");
    assert_echo_works(&mut t, "after malformed").await;
}

#[tokio::test]
async fn batch_array_is_refused_and_never_forwarded() {
    let broker = broker();
    let mut t = everything_tunnel(&broker).await;
    let batch = json!([
        {"jsonrpc":"2.0","id":51,"method":"tools/call","params":{"name":"echo","arguments":{"message":"in a batch"}}},
        {"jsonrpc":"2.0","id":52,"method":"ping"}
    ]);
    t.send(&batch).await;
    let err = expect_error(&mut t, INVALID_REQUEST).await;
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("batch"),
        "{err}"
    );
    // Had any part of the batch reached the upstream, its answer would come
    // before the answer to this later request.
    t.send(&json!({"jsonrpc":"2.0","id":53,"method":"tools/call","params":{"name":"echo","arguments":{"message":"after batch"}}}))
        .await;
    let (echo, before) = t.recv_response(&json!(53)).await;
    assert_eq!(tool_text(&echo), "Echo: after batch");
    assert!(
        before
            .iter()
            .all(|m| m.get("id") != Some(&json!(51)) && m.get("id") != Some(&json!(52))),
        "part of the batch was forwarded: {before:?}"
    );
}

#[tokio::test]
async fn oversized_request_is_refused_and_the_session_continues() {
    let broker = broker();
    let mut t = everything_tunnel(&broker).await;
    let big = "x".repeat(2 * LIMIT);
    t.send(&json!({"jsonrpc":"2.0","id":61,"method":"tools/call","params":{"name":"echo","arguments":{"message":big}}}))
        .await;
    let err = expect_error(&mut t, INVALID_REQUEST).await;
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("too large"),
        "{err}"
    );
    assert!(err["id"] == json!(61) || err["id"].is_null(), "{err}");
    // A message just under the limit still passes.
    let fits = "y".repeat(LIMIT - 200);
    assert_echo_works(&mut t, &fits).await;
}

#[tokio::test]
async fn oversized_upstream_response_becomes_an_error_for_that_request() {
    let broker = broker();
    let mut t = everything_tunnel(&broker).await;
    // get-tiny-image answers with a ~5.5 KB base64 PNG: over the limit.
    t.send(&json!({"jsonrpc":"2.0","id":71,"method":"tools/call","params":{"name":"get-tiny-image","arguments":{}}}))
        .await;
    let reply = t
        .try_recv_reply_within(Duration::from_secs(10))
        .await
        .unwrap_or_else(|()| {
            panic!("request 71 got no answer: the oversized response was dropped and the client left waiting")
        })
        .expect("an answer, not the end of the tunnel");
    assert_eq!(reply["id"], json!(71), "{reply}");
    assert!(
        reply.get("error").is_some(),
        "an oversized response was relayed ({} bytes)",
        reply.to_string().len()
    );
    assert_echo_works(&mut t, "after the big answer").await;
}

#[tokio::test]
async fn unknown_server_is_404_and_connect_exits_with_unknown_server() {
    let broker = broker();
    let api = Api::new(broker.api_url(), &broker.ca_pem());
    let token = api.token(ALICE).await;
    let err = api
        .request_session(&token, "nosuch", &ClientKey::generate().csr_pem())
        .await
        .expect_err("no such server");
    assert_eq!(err.status, 404, "{err:?}");
    assert_eq!(
        err.error.as_ref().map(|e| e.error),
        Some(ErrorCode::UnknownServer),
        "{err:?}"
    );

    let cli = Cli::new(&broker);
    cli.login_ok(ALICE);
    let out = cli.run(&["connect", "nosuch"]);
    assert_eq!(out.code(), exit::UNKNOWN_SERVER, "{out}");
    assert!(out.stdout.is_empty(), "{out}");
    assert!(out.stderr.contains("nosuch"), "{out}");
}

#[tokio::test]
async fn crashed_upstream_gives_a_clear_error_and_other_sessions_continue() {
    let broker = broker();
    let mut bystander = everything_tunnel(&broker).await;

    let api = Api::new(broker.api_url(), &broker.ca_pem());
    let token = api.token(ALICE).await;
    let mut t = api.new_session(&token, CRASHY).await.open_ready().await;
    let init = t.initialize().await;
    assert_eq!(init["result"]["serverInfo"]["name"], "crashy");
    // The upstream reads this request and exits without answering it.
    let id = t.next_id();
    t.send(&json!({"jsonrpc":"2.0","id":id,"method":"tools/list"}))
        .await;
    let mut seen = Vec::new();
    let answer = loop {
        match t.recv().await {
            Some(m) if m.get("id") == Some(&json!(id)) => break Some(m),
            Some(m) => seen.push(m),
            None => break None,
        }
    };
    let answer = answer.unwrap_or_else(|| {
        panic!("the tunnel closed without answering the pending request; got {seen:?}")
    });
    assert_eq!(
        answer["error"]["code"],
        json!(UPSTREAM_UNAVAILABLE),
        "{answer}"
    );
    // Then the session is over.
    assert_eq!(
        t.recv().await,
        None,
        "the tunnel stayed open after its upstream died"
    );

    assert_echo_works(&mut bystander, "unaffected").await;
}

#[test]
fn crashed_upstream_ends_mcpgate_connect_with_session_ended() {
    let broker = broker();
    let cli = Cli::new(&broker);
    cli.login_ok(ALICE);
    let mut connect = cli.spawn_connect(CRASHY);
    connect.send_json(&json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
        "protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"e2e","version":"0"}}}));
    let (init, _) = connect.recv_response(&json!(1), Duration::from_secs(30));
    assert_eq!(init["result"]["serverInfo"]["name"], "crashy", "{init}");
    connect.send_json(&json!({"jsonrpc":"2.0","method":"notifications/initialized"}));
    connect.send_json(&json!({"jsonrpc":"2.0","id":2,"method":"tools/list"}));
    let (answer, _) = connect.recv_response(&json!(2), Duration::from_secs(30));
    assert_eq!(
        answer["error"]["code"],
        json!(UPSTREAM_UNAVAILABLE),
        "{answer}"
    );
    let status = connect.wait(Duration::from_secs(30));
    assert_eq!(
        status.code(),
        Some(exit::SESSION_ENDED),
        "stderr: {}",
        connect.stderr()
    );
    assert!(!connect.stderr().is_empty());
}

#[test]
fn malformed_and_batched_lines_through_mcpgate_connect_get_errors() {
    let broker = broker();
    let cli = Cli::new(&broker);
    cli.login_ok(ALICE);
    let mut connect = cli.spawn_connect(EVERYTHING);
    connect.send_json(&json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
        "protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"e2e","version":"0"}}}));
    let (init, _) = connect.recv_response(&json!(1), Duration::from_secs(30));
    assert!(init.get("result").is_some(), "{init}");
    connect.send_json(&json!({"jsonrpc":"2.0","method":"notifications/initialized"}));

    connect.send_line("{this is not json");
    let err = connect.recv_reply(Duration::from_secs(30));
    assert_eq!(err["error"]["code"], json!(PARSE_ERROR), "{err}");
    connect.send_line(r#"[{"jsonrpc":"2.0","id":2,"method":"ping"}]"#);
    let err = connect.recv_reply(Duration::from_secs(30));
    assert_eq!(err["error"]["code"], json!(INVALID_REQUEST), "{err}");

    connect.send_json(&json!({"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":{"message":"still fine"}}}));
    let (echo, before) = connect.recv_response(&json!(3), Duration::from_secs(30));
    assert_eq!(tool_text(&echo), "Echo: still fine");
    assert!(
        before.iter().all(|m| m.get("id") != Some(&json!(2))),
        "{before:?}"
    );
}
