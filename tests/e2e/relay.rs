//! MCP through the gateway, driven by the official Python SDK client with
//! `mcpgate connect SERVER` as its stdio server: the client cannot tell the
//! gateway from the server, in either protocol generation.

use mcpgate_tests::Cli;
use mcpgate_tests::broker::{DEMO, EVERYTHING};
use mcpgate_tests::python::{direct_everything, through_gateway};
use mcpgate_tests::tunnel::{Api, tool_text};
use serde_json::{Value, json};

use crate::fixtures::{ALICE, broker};

fn names(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn python_sdk_falls_back_from_discover_to_initialize_through_the_gateway() {
    let broker = broker();
    let cli = Cli::new(&broker);
    cli.login_ok(ALICE);

    let run = through_gateway(&cli, EVERYTHING, "basic", &[]);
    let r = run.expect_ok();
    let hs = &r["handshake"];
    // The SDK probes the 2026 generation first; server-everything does not
    // know `server/discover`, and its "method not found" must come back
    // through the gateway unchanged so that the SDK falls back.
    assert_eq!(
        names(&hs["sent_before_ready"])[..2],
        ["server/discover", "initialize"],
        "{hs}"
    );
    assert_eq!(hs["discover_reply"]["error"]["code"], json!(-32601), "{hs}");
    assert_eq!(hs["mode"], "initialize", "{hs}");
    assert_eq!(hs["protocol_version"], "2025-11-25", "{hs}");
    assert_eq!(hs["server_info"]["name"], "mcp-servers/everything", "{hs}");
}

#[test]
fn tools_list_and_calls_pass_through_unchanged() {
    let broker = broker();
    let cli = Cli::new(&broker);
    cli.login_ok(ALICE);

    let gated = through_gateway(&cli, EVERYTHING, "basic", &[]);
    let gated = gated.expect_ok();
    let direct = direct_everything("basic", &[]);
    let direct = direct.expect_ok();

    assert_eq!(
        gated["tools"], direct["tools"],
        "the gateway changed the tool list"
    );
    assert!(names(&gated["tools"]).contains(&"get-sum".to_owned()));
    assert_eq!(
        gated["echo"]["text"],
        json!(["Echo: hello through the gate"])
    );
    assert_eq!(gated["sum"]["text"], json!(["The sum of 2 and 40 is 42."]));
    assert_eq!(gated["echo"], direct["echo"]);
    assert_eq!(gated["sum"], direct["sum"]);
}

#[test]
fn sampling_request_from_the_upstream_round_trips_to_the_client() {
    let broker = broker();
    let cli = Cli::new(&broker);
    cli.login_ok(ALICE);

    let run = through_gateway(&cli, EVERYTHING, "sampling", &[]);
    let r = run.expect_ok();
    // The server asked the client (a server-to-client request crossed the
    // gateway one way)...
    let seen = r["sampling_requests_seen"].as_array().expect("list");
    assert_eq!(seen.len(), 1, "{r}");
    assert_eq!(
        seen[0]["messages"][0]["content"]["text"],
        "Resource trigger-sampling-request context: say something"
    );
    // ...and the client's answer reached the server (the other way), which
    // put it in its tool result.
    let text = r["result"]["text"][0].as_str().unwrap_or_default();
    assert!(text.contains("sampled by the mcpgate test client"), "{r}");
    assert!(text.contains("mcpgate-test-model"), "{r}");
}

#[test]
fn progress_notifications_reach_the_client_in_order() {
    let broker = broker();
    let cli = Cli::new(&broker);
    cli.login_ok(ALICE);

    let run = through_gateway(&cli, EVERYTHING, "progress", &["4"]);
    let r = run.expect_ok();
    let progress: Vec<f64> = r["progress"]
        .as_array()
        .expect("list")
        .iter()
        .map(|p| p["progress"].as_f64().unwrap_or(-1.0))
        .collect();
    assert_eq!(progress, [1.0, 2.0, 3.0, 4.0], "{r}");
    assert!(
        r["progress"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["total"] == json!(4.0))
    );
    assert_eq!(
        r["result"]["text"],
        json!(["Long running operation completed. Duration: 0.4 seconds, Steps: 4."])
    );
}

#[test]
fn cancelled_call_gets_no_result_and_the_session_stays_usable() {
    let broker = broker();
    let cli = Cli::new(&broker);
    cli.login_ok(ALICE);

    let run = through_gateway(&cli, EVERYTHING, "cancel", &["2"]);
    let r = run.expect_ok();
    assert_eq!(r["completed"], false, "{r}");
    let long_id = &r["long_call_id"];
    assert_eq!(r["cancel_notifications"][0]["requestId"], *long_id, "{r}");
    // The upstream ran the operation to its end (its last progress came
    // through) but, having received the cancel, never answered the call.
    // Had the gateway dropped `notifications/cancelled`, the result would
    // have arrived before the echo below.
    assert_eq!(r["final_progress_seen"], true, "{r}");
    assert_eq!(r["late_responses_for_cancelled_call"], json!([]), "{r}");
    assert_eq!(
        r["echo_after_cancel"]["text"],
        json!(["Echo: still here after cancel"])
    );
}

#[test]
fn python_sdk_speaks_the_2026_generation_with_the_demo_server() {
    let broker = broker();
    let cli = Cli::new(&broker);
    cli.login_ok(ALICE);

    let run = through_gateway(&cli, DEMO, "demo", &[]);
    let r = run.expect_ok();
    let hs = &r["handshake"];
    // `server/discover` is answered (relayed, not invented by the gateway:
    // server-everything's shows it does not answer discover itself), so the
    // SDK never sends `initialize`.
    assert_eq!(hs["mode"], "discover", "{hs}");
    assert_eq!(hs["protocol_version"], "2026-07-28", "{hs}");
    assert_eq!(names(&hs["sent_before_ready"]), ["server/discover"], "{hs}");
    assert!(
        names(&r["tools"]).contains(&"list_customers".to_owned()),
        "{r}"
    );
    assert_eq!(r["list_customers"]["is_error"], false, "{r}");
    assert!(
        !r["list_customers"]["text"]
            .as_array()
            .expect("list")
            .is_empty()
            || r["list_customers"].get("structured").is_some(),
        "{r}"
    );
}

#[tokio::test]
async fn raw_tunnel_relays_a_handshake_era_session() {
    // The same relay without the CLI in between: what the broker itself does.
    let broker = broker();
    let api = Api::new(broker.api_url(), &broker.ca_pem());
    let token = api.token(ALICE).await;
    let session = api.new_session(&token, EVERYTHING).await;
    let mut t = session.open_ready().await;
    let init = t.initialize().await;
    assert_eq!(
        init["result"]["serverInfo"]["name"],
        "mcp-servers/everything"
    );
    // Ids are the client's own, of either type, `0` included.
    t.send(&json!({"jsonrpc":"2.0","id":0,"method":"tools/call","params":{"name":"echo","arguments":{"message":"zero"}}}))
        .await;
    let (zero, _) = t.recv_response(&json!(0)).await;
    assert_eq!(tool_text(&zero), "Echo: zero");
    t.send(&json!({"jsonrpc":"2.0","id":"0","method":"tools/call","params":{"name":"echo","arguments":{"message":"string zero"}}}))
        .await;
    let (szero, _) = t.recv_response(&json!("0")).await;
    assert_eq!(tool_text(&szero), "Echo: string zero");
    t.close().await;
}
