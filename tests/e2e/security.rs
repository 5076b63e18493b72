//! Who may open a tunnel, and what never crosses it.
//!
//! Each refused tunnel presents a certificate that differs from the genuine
//! one in exactly the property under test (same key, same serial, same
//! identity URIs), and each test then opens the tunnel honestly to show the
//! session itself was fine: the refusal is due to that one property.

use std::time::Duration;

use mcpgate_shared::api::ErrorCode;
use mcpgate_tests::Cli;
use mcpgate_tests::broker::{Broker, DEMO, EVERYTHING};
use mcpgate_tests::certs::{facts, sign_with_broker_ca, sign_with_foreign_ca};
use mcpgate_tests::cli::exit;
use mcpgate_tests::python::through_gateway;
use mcpgate_tests::tunnel::{Api, ClientIdentity, Presented, Session, tool_text};
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::fixtures::{ALICE, BOB, broker, builder, unique};

const LOG_WAIT: Duration = Duration::from_secs(10);

async fn alice_session(broker: &Broker) -> Session {
    let api = Api::new(broker.api_url(), &broker.ca_pem());
    let token = api.token(ALICE).await;
    api.new_session(&token, EVERYTHING).await
}

/// Waits for the broker to log a tunnel refusal after `mark`.
fn assert_refusal_logged(broker: &Broker, mark: usize) -> String {
    broker.wait_for_log_after(mark, LOG_WAIT, "a tunnel refusal", |l| {
        l.contains("tunnel refused")
    })
}

/// The honest follow-up: the session's own certificate is admitted and the
/// relay works.
async fn assert_honest_tunnel_works(session: &Session) {
    let mut t = session.open_ready().await;
    t.initialize().await;
    let echo = t.call_tool("echo", json!({"message": "honest"})).await;
    assert_eq!(tool_text(&echo), "Echo: honest");
    t.close().await;
}

#[tokio::test]
async fn tunnel_without_client_certificate_is_refused_and_logged() {
    let broker = broker();
    let session = alice_session(&broker).await;
    let mark = broker.log_mark();
    let outcome = session.open(Presented::Nothing).await;
    assert!(outcome.is_refused(), "{}", outcome.describe());
    assert_refusal_logged(&broker, mark);
    assert_honest_tunnel_works(&session).await;
}

#[tokio::test]
async fn certificate_from_a_foreign_ca_is_refused_and_logged() {
    let broker = broker();
    let session = alice_session(&broker).await;
    let genuine = facts(&session.response.certificate_pem);
    let forged = sign_with_foreign_ca(&genuine, &session.key);
    let mark = broker.log_mark();
    let outcome = session
        .open(Presented::Other(ClientIdentity::new(&forged, &session.key)))
        .await;
    assert!(outcome.is_refused(), "{}", outcome.describe());
    assert_refusal_logged(&broker, mark);
    assert_honest_tunnel_works(&session).await;
}

#[tokio::test]
async fn expired_certificate_signed_by_the_broker_ca_is_refused_and_logged() {
    let broker = broker();
    let session = alice_session(&broker).await;
    let genuine = facts(&session.response.certificate_pem);
    let now = OffsetDateTime::now_utc();
    let expired = sign_with_broker_ca(
        &genuine,
        &session.key,
        &broker.ca_pem(),
        &broker.ca_key_pem(),
        now - time::Duration::hours(2),
        now - time::Duration::hours(1),
    );
    let mark = broker.log_mark();
    let outcome = session
        .open(Presented::Other(ClientIdentity::new(
            &expired,
            &session.key,
        )))
        .await;
    assert!(outcome.is_refused(), "{}", outcome.describe());
    assert_refusal_logged(&broker, mark);

    // Control: the same forgery with a current validity window is admitted,
    // so the window is all that was wrong with the expired one.
    let current = sign_with_broker_ca(
        &genuine,
        &session.key,
        &broker.ca_pem(),
        &broker.ca_key_pem(),
        now - time::Duration::minutes(1),
        now + time::Duration::minutes(5),
    );
    let outcome = session
        .open(Presented::Other(ClientIdentity::new(
            &current,
            &session.key,
        )))
        .await;
    assert!(!outcome.is_refused(), "{}", outcome.describe());
}

#[tokio::test]
async fn certificate_opens_one_tunnel_only() {
    let broker = broker();
    let session = alice_session(&broker).await;
    let mut first = session.open_ready().await;
    first.initialize().await;

    let mark = broker.log_mark();
    let second = session.open(Presented::Own).await;
    assert!(second.is_refused(), "{}", second.describe());
    assert_refusal_logged(&broker, mark);

    // The refusal did not disturb the tunnel that owns the certificate.
    let echo = first.call_tool("echo", json!({"message": "first"})).await;
    assert_eq!(tool_text(&echo), "Echo: first");
    first.close().await;
}

#[tokio::test]
async fn certificate_of_an_ended_session_opens_nothing() {
    let broker = broker();
    let session = alice_session(&broker).await;
    let id = session.response.session_id.to_string();
    let mut t = session.open_ready().await;
    t.initialize().await;
    let mark = broker.log_mark();
    t.close().await;
    broker.wait_for_log_after(mark, LOG_WAIT, "the session's end", |l| {
        l.contains("session ended") && l.contains(&id)
    });

    let mark = broker.log_mark();
    let again = session.open(Presented::Own).await;
    assert!(again.is_refused(), "{}", again.describe());
    assert_refusal_logged(&broker, mark);
}

#[tokio::test]
async fn user_without_the_role_gets_403_and_connect_exits_with_no_access() {
    let broker = broker();
    let api = Api::new(broker.api_url(), &broker.ca_pem());
    let token = api.token(BOB).await;
    let key = mcpgate_tests::certs::ClientKey::generate();
    let err = api
        .request_session(&token, EVERYTHING, &key.csr_pem())
        .await
        .expect_err("bob has no role for everything");
    assert_eq!(err.status, 403, "{err:?}");
    assert_eq!(
        err.error.as_ref().map(|e| e.error),
        Some(ErrorCode::Forbidden),
        "{err:?}"
    );
    let listed = api.servers(&token).await.expect("bob may list");
    assert!(listed.servers.is_empty(), "{listed:?}");

    let cli = Cli::new(&broker);
    cli.login_ok(BOB);
    let out = cli.run(&["connect", EVERYTHING]);
    assert_eq!(out.code(), exit::NO_ACCESS, "{out}");
    // Nothing on stdout (an MCP client would read it as protocol); a
    // message naming the server on stderr.
    assert!(out.stdout.is_empty(), "{out}");
    assert!(out.stderr.starts_with("error:"), "{out}");
    assert!(out.stderr.contains(EVERYTHING), "{out}");

    // The same CLI, as alice, is let in: the refusal was about the role.
    let alice = Cli::new(&broker);
    alice.login_ok(ALICE);
    let listed = alice.run(&["servers", "--output", "json"]);
    assert!(listed.success(), "{listed}");
    assert!(listed.stdout.contains(EVERYTHING), "{listed}");
}

#[test]
fn broker_environment_never_reaches_the_upstream() {
    let canary = unique("broker-env-canary");
    let broker = builder()
        .process_env("MCPGATE_E2E_CANARY", &canary)
        .server_env(EVERYTHING, "CONFIGURED_FOR_UPSTREAM", "visible-to-upstream")
        .start();
    let cli = Cli::new(&broker);
    cli.login_ok(ALICE);

    let run = through_gateway(&cli, EVERYTHING, "env", &[]);
    let r = run.expect_ok();
    let env = r["env"]
        .as_object()
        .unwrap_or_else(|| panic!("no env: {r}"));
    // The upstream's whole environment is what the config gives it: not the
    // broker's (the canary), not the client's (MCPGATE_HOME, PATH, ...).
    let keys: Vec<&String> = env.keys().collect();
    assert_eq!(keys, ["CONFIGURED_FOR_UPSTREAM"], "{r}");
    assert_eq!(env["CONFIGURED_FOR_UPSTREAM"], "visible-to-upstream");
    assert!(!run.output.stdout.contains(&canary));
}

#[tokio::test]
async fn configured_credential_never_reaches_the_client() {
    let credential = unique("demo-db-credential");
    let broker = builder()
        .server_env(DEMO, "DEMO_DB_PASSWORD", &credential)
        .start();

    // Everything the demo server offers, called through a raw tunnel; every
    // message that comes back is kept.
    let api = Api::new(broker.api_url(), &broker.ca_pem());
    let token = api.token(ALICE).await;
    let session = api.new_session(&token, DEMO).await;
    let mut t = session.open_ready().await;
    let mut received: Vec<Value> = vec![t.initialize().await];
    let tools = t.request("tools/list", json!({})).await;
    received.push(tools.clone());
    let tools = tools["result"]["tools"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(!tools.is_empty(), "the demo server lists no tools");
    for tool in &tools {
        let name = tool["name"].as_str().expect("a tool name");
        let resp = t.call_tool(name, json!({})).await;
        if name == "list_customers" {
            // The demo server answers only when it holds the credential:
            // it did reach the upstream.
            assert_eq!(resp["result"]["isError"], json!(false), "{resp}");
        }
        received.push(resp);
    }
    for method in ["resources/list", "prompts/list"] {
        received.push(t.request(method, json!({})).await);
    }
    t.close().await;
    let transcript = serde_json::to_string(&received).expect("JSON");
    assert!(
        !transcript.contains(&credential),
        "the credential reached the client"
    );

    // The same through `mcpgate connect`: every byte on its stdout and stderr.
    let cli = Cli::new(&broker);
    cli.login_ok(ALICE);
    let mut connect = cli.spawn_connect(DEMO);
    let mut lines = Vec::new();
    connect.send_json(&json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
        "protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"e2e","version":"0"}}}));
    let (init, _) = connect.recv_response(&json!(1), Duration::from_secs(30));
    lines.push(init);
    connect.send_json(&json!({"jsonrpc":"2.0","method":"notifications/initialized"}));
    connect.send_json(&json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"list_customers","arguments":{}}}));
    let (customers, before) = connect.recv_response(&json!(2), Duration::from_secs(30));
    assert_eq!(customers["result"]["isError"], json!(false), "{customers}");
    lines.extend(before);
    lines.push(customers);
    connect.close_stdin();
    connect.wait(Duration::from_secs(30));
    assert!(
        !serde_json::to_string(&lines)
            .expect("JSON")
            .contains(&credential)
    );
    assert!(!connect.stderr().contains(&credential));
    // Nor does the broker log it.
    assert!(!broker.log().contains(&credential));
}

/// Marks of a private key at rest: PEM of any kind, and the start of a
/// PKCS#8 P-256 key in DER and in bare base64.
fn looks_like_a_private_key(bytes: &[u8]) -> bool {
    const PKCS8_P256_DER: &[u8] = &[
        0x30, 0x81, 0x87, 0x02, 0x01, 0x00, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d,
        0x02, 0x01,
    ];
    let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    has(b"PRIVATE KEY") || has(PKCS8_P256_DER) || has(b"MIGHAgEAMBMGByqGSM49AgE")
}

#[test]
fn cli_keeps_no_private_key_on_disk() {
    let broker = broker();
    let cli = Cli::new(&broker);
    cli.login_ok(ALICE);

    let mut connect = cli.spawn_connect(EVERYTHING);
    connect.send_json(&json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
        "protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"e2e","version":"0"}}}));
    let (init, _) = connect.recv_response(&json!(1), Duration::from_secs(30));
    assert!(init.get("result").is_some(), "{init}");

    let check = |when: &str| {
        let files = cli.files();
        assert!(
            !files.is_empty(),
            "{when}: the CLI stored nothing, not even its login"
        );
        for (path, bytes) in &files {
            assert!(
                !looks_like_a_private_key(bytes),
                "{when}: {} holds a private key",
                path.display()
            );
        }
    };
    check("during the session");
    connect.close_stdin();
    connect.wait(Duration::from_secs(30));
    check("after the session");
}

#[test]
fn failed_logins_are_rate_limited_and_never_log_the_password() {
    let broker = builder()
        .edit(|doc| {
            doc["login"]["max_failures"] = toml_edit::value(3);
            doc["login"]["window"] = toml_edit::value("10m");
        })
        .start();
    let cli = Cli::new(&broker);
    let wrong = unique("wrong-password");
    for _ in 0..3 {
        let out = cli.login_with_password(ALICE, &wrong);
        assert_eq!(out.code(), 11, "a wrong password is exit 11: {out}");
    }
    // Locked now, even with the right password: the limit is per user.
    let out = cli.login(ALICE);
    assert_eq!(out.code(), 16, "over the limit is exit 16: {out}");
    assert!(
        out.stderr.contains("rate limited") || out.stderr.contains("too many"),
        "{out}"
    );
    // Bob logs in from the same address, which is over its limit too.
    let other = Cli::new(&broker);
    assert_eq!(other.login(BOB).code(), 16);
    let log = broker.log();
    assert!(log.contains("login failed"), "{log}");
    assert!(log.contains("too many failed attempts"), "{log}");
    assert!(!log.contains(&wrong), "the password reached the log");
}
