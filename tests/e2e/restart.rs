//! What survives a broker restart: the session records (the evidence), read
//! back with `mcpgate-broker sessions`.

use std::time::Duration;

use mcpgate_tests::broker::{Broker, EVERYTHING};
use mcpgate_tests::tunnel::{Api, open_tunnel, tool_text};
use serde_json::{Value, json};

use crate::fixtures::{ALICE, broker};

fn sessions(broker: &Broker) -> Vec<Value> {
    let out = broker.admin(&["sessions", "--output", "json"]);
    assert!(out.success(), "mcpgate-broker sessions failed: {out}");
    serde_json::from_str::<Vec<Value>>(&out.stdout)
        .unwrap_or_else(|e| panic!("sessions --output json is not a JSON list ({e}): {out}"))
}

fn find<'a>(list: &'a [Value], id: &str) -> &'a Value {
    list.iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("session {id} is not listed: {list:?}"))
}

#[tokio::test]
async fn session_records_survive_a_broker_restart() {
    let mut broker = broker();
    let api = Api::new(broker.api_url(), &broker.ca_pem());
    let token = api.token(ALICE).await;

    // One session that ended before the restart...
    let ended = api.new_session(&token, EVERYTHING).await;
    let ended_id = ended.response.session_id.to_string();
    let mut t = ended.open_ready().await;
    t.initialize().await;
    let mark = broker.log_mark();
    t.close().await;
    broker.wait_for_log_after(
        mark,
        Duration::from_secs(10),
        "the first session's end",
        |l| l.contains("session ended") && l.contains(&ended_id),
    );

    // ...and one still open when the broker goes down.
    let live = api.new_session(&token, EVERYTHING).await;
    let live_id = live.response.session_id.to_string();
    let mut open = live.open_ready().await;
    open.initialize().await;
    let echo = open
        .call_tool("echo", json!({"message": "before restart"}))
        .await;
    assert_eq!(tool_text(&echo), "Echo: before restart");

    let before = sessions(&broker);
    assert_eq!(find(&before, &ended_id)["state"], "ended");
    assert_eq!(find(&before, &live_id)["state"], "connected");

    broker.restart();
    // The open tunnel did not survive the restart...
    assert_eq!(open.recv().await, None, "a tunnel outlived the broker");

    // ...but both records did, with the live one closed out as aborted.
    let after = sessions(&broker);
    let e = find(&after, &ended_id);
    assert_eq!(e["state"], "ended", "{e}");
    assert_eq!(e["user"], ALICE);
    assert_eq!(e["server"], EVERYTHING);
    assert!(e["ended_at"].as_u64().is_some(), "{e}");
    let l = find(&after, &live_id);
    assert_eq!(l["state"], "aborted", "{l}");

    // A certificate from before the restart opens nothing now (the tunnel
    // listens on a new port).
    let retry = open_tunnel(
        broker.tunnel_addr(),
        &live.response.tunnel_server_name,
        &live.response.ca_pem,
        Some(live.identity()),
    )
    .await;
    assert!(retry.is_refused(), "{}", retry.describe());

    // And the restarted broker serves new sessions.
    let api = Api::new(broker.api_url(), &broker.ca_pem());
    let token = api.token(ALICE).await;
    let mut t = api.new_session(&token, EVERYTHING).await.open_ready().await;
    t.initialize().await;
    let echo = t
        .call_tool("echo", json!({"message": "after restart"}))
        .await;
    assert_eq!(tool_text(&echo), "Echo: after restart");
}
