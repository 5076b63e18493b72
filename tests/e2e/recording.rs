//! The session record on the real path: what a busy session leaves when
//! the broker is killed mid-call, and what `mcpgate-broker verify` says of
//! it afterwards.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use mcpgate_tests::broker::{Broker, EVERYTHING};
use mcpgate_tests::paths::broker_bin;
use mcpgate_tests::tunnel::{Api, tool_text};
use serde_json::{Value, json};

use crate::fixtures::{ALICE, broker};

/// Every event of one session's record, in file order.
pub fn record_of(dir: &Path, session: &str) -> Vec<Value> {
    let path = dir
        .join("records/sessions")
        .join(format!("{session}.jsonl"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// `mcpgate-broker verify ARGS... DIR/records`: (exit code, stdout).
pub fn verify(dir: &Path, args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(broker_bin())
        .arg("verify")
        .args(args)
        .arg(dir.join("records"))
        .output()
        .expect("run mcpgate-broker verify");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[tokio::test]
async fn a_broker_killed_mid_session_leaves_a_record_that_verifies_up_to_every_acknowledged_call() {
    let mut broker: Broker = broker();
    let api = Api::new(broker.api_url(), &broker.ca_pem());
    let token = api.token(ALICE).await;
    let session = api.new_session(&token, EVERYTHING).await;
    let id = session.response.session_id.to_string();
    let mut t = session.open_ready().await;
    t.initialize().await;

    // Calls as fast as the client can make them; each answer the client
    // gets is noted. The broker is killed while they run.
    let (counter, mut answered) = tokio::sync::watch::channel(0u64);
    let busy = tokio::spawn(async move {
        let mut seen = Vec::new();
        for n in 0..100_000u64 {
            let id = t.next_id();
            t.send(&json!({
                "jsonrpc": "2.0", "id": id, "method": "tools/call",
                "params": {"name": "echo", "arguments": {"message": format!("call {n}")}}
            }))
            .await;
            match t.recv_reply().await {
                Some(reply) if reply.get("result").is_some() => {
                    seen.push(tool_text(&reply));
                    counter.send_modify(|n| *n += 1);
                }
                _ => break,
            }
        }
        seen
    });
    tokio::time::timeout(Duration::from_secs(60), answered.wait_for(|n| *n >= 40))
        .await
        .expect("the session never got busy")
        .unwrap();
    broker.crash_and_restart();
    let seen = tokio::time::timeout(Duration::from_secs(30), busy)
        .await
        .expect("the client noticed the broker was gone")
        .unwrap();
    assert!(seen.len() >= 40, "{}", seen.len());

    // The restarted broker sealed the record as aborted, and it verifies.
    let events = record_of(broker.dir(), &id);
    let end = &events[events.len() - 2];
    assert_eq!(end["type"], "end", "{end}");
    assert_eq!(end["state"], "aborted", "{end}");
    assert_eq!(events.last().unwrap()["type"], "seal");
    let (code, out) = verify(broker.dir(), &["--all"]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = verify(broker.dir(), &[&id]);
    assert_eq!(code, 0, "{out}");

    // Write-ahead: every answer the client got is in the record, and so
    // is every call it made that was answered.
    let recorded: BTreeSet<String> = events
        .iter()
        .filter(|e| e["type"] == "message" && e["from"] == "upstream")
        .filter_map(|e| e["msg"]["result"]["content"][0]["text"].as_str())
        .map(str::to_owned)
        .collect();
    for text in &seen {
        assert!(
            recorded.contains(text),
            "{text} reached the client unrecorded"
        );
    }
    let calls = events
        .iter()
        .filter(|e| e["type"] == "message" && e["method"] == "tools/call")
        .count();
    assert!(
        calls >= seen.len(),
        "{calls} calls recorded, {} answered",
        seen.len()
    );
}
