//! What survives a broker restart: the session records (the evidence), read
//! back with `mcpgate-broker sessions`, and the rule that an old certificate
//! opens nothing.

use std::time::Duration;

use mcpgate_tests::broker::{Broker, EVERYTHING};
use mcpgate_tests::tunnel::{Api, Session, Tunnel, open_tunnel, tool_text};
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

/// Before a restart: one session that has ended, one still open.
struct Before {
    ended_id: String,
    live: Session,
    live_id: String,
    open: Tunnel,
}

async fn two_sessions(broker: &Broker) -> Before {
    let api = Api::new(broker.api_url(), &broker.ca_pem());
    let token = api.token(ALICE).await;

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

    let live = api.new_session(&token, EVERYTHING).await;
    let live_id = live.response.session_id.to_string();
    let mut open = live.open_ready().await;
    open.initialize().await;
    let echo = open
        .call_tool("echo", json!({"message": "before restart"}))
        .await;
    assert_eq!(tool_text(&echo), "Echo: before restart");

    let list = sessions(broker);
    assert_eq!(find(&list, &ended_id)["state"], "ended");
    assert_eq!(find(&list, &live_id)["state"], "connected");
    Before {
        ended_id,
        live,
        live_id,
        open,
    }
}

/// After the restart: the open tunnel is gone, the ended record is intact,
/// the old certificate opens nothing, new sessions work. Returns the live
/// session's record for the caller to check how it was closed out.
async fn after_restart(broker: &Broker, mut before: Before) -> Value {
    assert_eq!(
        before.open.recv_reply().await,
        None,
        "a tunnel outlived the broker"
    );

    let list = sessions(broker);
    let e = find(&list, &before.ended_id);
    assert_eq!(e["state"], "ended", "{e}");
    assert_eq!(e["user"], ALICE);
    assert_eq!(e["server"], EVERYTHING);
    assert!(e["ended_at"].as_u64().is_some(), "{e}");

    // The tunnel listens on a new port now; the old certificate is refused.
    let retry = open_tunnel(
        broker.tunnel_addr(),
        &before.live.response.tunnel_server_name,
        &before.live.response.ca_pem,
        Some(before.live.identity()),
    )
    .await;
    assert!(retry.is_refused(), "{}", retry.describe());

    let api = Api::new(broker.api_url(), &broker.ca_pem());
    let token = api.token(ALICE).await;
    let mut t = api.new_session(&token, EVERYTHING).await.open_ready().await;
    t.initialize().await;
    let echo = t
        .call_tool("echo", json!({"message": "after restart"}))
        .await;
    assert_eq!(tool_text(&echo), "Echo: after restart");

    find(&list, &before.live_id).clone()
}

#[tokio::test]
async fn session_records_survive_a_graceful_restart() {
    let mut broker = broker();
    let before = two_sessions(&broker).await;
    assert!(
        broker.stop_and_start(),
        "the broker did not exit on SIGTERM"
    );
    let live = after_restart(&broker, before).await;
    // A graceful shutdown closes the live session out itself.
    assert_eq!(live["state"], "ended", "{live}");
    assert!(live["ended_at"].as_u64().is_some(), "{live}");
    assert!(
        live["end_reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{live}"
    );
}

#[tokio::test]
async fn session_records_survive_a_crash_and_live_ones_are_aborted() {
    let mut broker = broker();
    let before = two_sessions(&broker).await;
    broker.crash_and_restart();
    let live = after_restart(&broker, before).await;
    // Nobody closed it out before the crash; the restarted broker must.
    assert_eq!(live["state"], "aborted", "{live}");
}
