//! Masking on the real path: the demo server's customer records reach a
//! real MCP client (the Python SDK) masked; server-everything's `echo`
//! sends back whatever evasion the test tries; nothing the broker keeps
//! holds a clear value.

use std::path::Path;

use mcpgate_shared::jsonrpc::MASK_FAILED;
use mcpgate_tests::broker::{DEMO, EVERYTHING};
use mcpgate_tests::cli::Cli;
use mcpgate_tests::paths::broker_bin;
use mcpgate_tests::python::{run_client, through_gateway};
use mcpgate_tests::tunnel::{Api, Tunnel, tool_text};
use serde_json::{Value, json};

use crate::fixtures::{ALICE, builder};

/// Every string leaf of `v`.
fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        Value::Object(o) => o.values().for_each(|x| strings(x, out)),
        _ => {}
    }
}

/// Every file under `dir` (the broker's store, its WAL, keys, config) and
/// the broker log, as bytes.
fn everything_kept(dir: &Path, out: &mut Vec<u8>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            everything_kept(&path, out);
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.extend_from_slice(&bytes);
        }
    }
}

/// Every event in every session record under a broker's data dir.
fn recorded_events(dir: &Path) -> Vec<Value> {
    let sessions = dir.join("records/sessions");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&sessions)
        .unwrap_or_else(|e| panic!("{}: {e}", sessions.display()))
        .flatten()
    {
        let text = std::fs::read_to_string(entry.path()).unwrap();
        out.extend(
            text.lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap()),
        );
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// The demo customers as the demo server itself returns them, unmasked.
fn clear_customers() -> Value {
    let argv = vec![broker_bin().display().to_string(), "demo-server".to_owned()];
    let run = run_client("demo", &[], &argv, |cmd| {
        cmd.env("DEMO_DB_PASSWORD", "demo-credential");
    });
    run.expect_ok()["list_customers"]["structured"].clone()
}

#[test]
fn demo_customer_records_reach_a_real_client_masked_and_are_kept_masked() {
    let clear = clear_customers();
    let customers = clear["customers"].as_array().expect("customers").clone();
    assert!(customers.len() >= 10, "{clear}");
    // The built-in defaults (the example config asks for other styles).
    let broker = builder().toml("[masking]\n").start();
    let cli = Cli::new(&broker);
    cli.login_ok(ALICE);

    let run = through_gateway(&cli, DEMO, "demo", &[]);
    let r = run.expect_ok();
    let masked = &r["list_customers"]["structured"];
    let text = r["list_customers"]["text"].as_array().expect("text")[0]
        .as_str()
        .expect("text content");
    // The text copy is the masked structured value, not masked apart.
    assert_eq!(
        &serde_json::from_str::<Value>(text).expect("text is JSON"),
        masked
    );
    let rows = masked["customers"].as_array().expect("masked customers");
    assert_eq!(rows.len(), customers.len());
    for (clear_row, row) in customers.iter().zip(rows) {
        for field in ["email", "phone", "card_number", "ssn"] {
            let value = clear_row[field].as_str().unwrap();
            let shown = row[field].as_str().unwrap();
            assert!(shown.starts_with("[MASKED:"), "{field}: {shown}");
            assert!(!text.contains(value), "{field} {value} leaked in the text");
        }
        // What is not sensitive passes as it was.
        assert_eq!(row["id"], clear_row["id"]);
        assert_eq!(row["city"], clear_row["city"]);
    }
    assert_eq!(rows[0]["card_number"], "[MASKED:card]");
    assert_eq!(rows[0]["ssn"], "[MASKED:ssn]");
    assert_eq!(rows[0]["email"], "[MASKED:email]");
    assert_eq!(rows[0]["phone"], "[MASKED:phone]");

    // The broker's record of the session holds the masked result as the
    // client got it, with what was masked counted by type, and nothing it
    // keeps holds a clear value.
    let log = broker.log();
    assert!(log.contains("decision=mask"), "{log}");
    let events = recorded_events(broker.dir());
    let reply = events
        .iter()
        .find(|e| {
            e["type"] == "message"
                && e["from"] == "upstream"
                && e["msg"]["result"]["structuredContent"]["customers"].is_array()
        })
        .expect("the list_customers reply is in the record");
    assert_eq!(&reply["msg"]["result"]["structuredContent"], masked);
    assert_eq!(reply["masked"]["card"], json!(customers.len()), "{reply}");
    assert_eq!(reply["masked"]["ssn"], json!(customers.len()), "{reply}");
    let mut kept = Vec::new();
    everything_kept(broker.dir(), &mut kept);
    kept.extend_from_slice(log.as_bytes());
    let mut clear_values = Vec::new();
    strings(&clear, &mut clear_values);
    for row in &customers {
        for field in ["email", "phone", "card_number", "ssn"] {
            let value = row[field].as_str().unwrap();
            assert!(!contains(&kept, value), "the broker kept {field} {value}");
        }
    }
}

const RULES: &str = r#"
[masking]
styles = { card = "partial" }

[[masking.rules]]
name = "city"
pattern = '\b(Chicago|Boston|Denver|Miami|Austin|Seattle|Portland|Phoenix|Atlanta|New York|San Francisco|Las Vegas)\b'

[[masking.fields]]
name = "customer_name"
path = "$.structuredContent.customers[*].name"
"#;

#[test]
fn a_custom_rule_and_a_json_path_rule_apply_on_the_real_path() {
    let clear = clear_customers();
    let broker = builder().toml(RULES).start();
    let cli = Cli::new(&broker);
    cli.login_ok(ALICE);
    let run = through_gateway(&cli, DEMO, "demo", &[]);
    let r = run.expect_ok();
    let masked = &r["list_customers"]["structured"];
    let text = r["list_customers"]["text"][0].as_str().unwrap();
    assert_eq!(&serde_json::from_str::<Value>(text).unwrap(), masked);
    let row = &masked["customers"][0];
    let clear_row = &clear["customers"][0];
    assert_eq!(row["city"], "[MASKED:city]");
    assert_eq!(row["name"], "[MASKED:customer_name]");
    // Partial cards keep the last four digits and nothing else.
    let card = row["card_number"].as_str().unwrap();
    let clear_card = clear_row["card_number"].as_str().unwrap();
    assert!(card.starts_with("****"), "{card}");
    assert!(
        card.ends_with(&clear_card[clear_card.len() - 4..]),
        "{card}"
    );
    assert_ne!(card, clear_card);
}

#[test]
fn a_sampling_request_from_the_server_reaches_the_client_masked() {
    let broker = builder().toml("[masking]\n").start();
    let cli = Cli::new(&broker);
    cli.login_ok(ALICE);
    // server-everything asks the client's model with the prompt it got.
    let prompt = "summarise the dispute on card 4111 1111 1111 1111 for jane.doe@example.com";
    let run = through_gateway(&cli, EVERYTHING, "sampling", &[prompt]);
    let r = run.expect_ok();
    let seen = r["sampling_requests_seen"].to_string();
    assert!(seen.contains("summarise the dispute"), "{seen}");
    assert!(
        seen.contains("[MASKED:card]") && seen.contains("[MASKED:email]"),
        "{seen}"
    );
    assert!(
        !seen.contains("4111") && !seen.contains("jane.doe"),
        "{seen}"
    );
}

async fn session(broker: &mcpgate_tests::Broker) -> Tunnel {
    let api = Api::new(broker.api_url(), &broker.ca_pem());
    let token = api.token(ALICE).await;
    let session = api.new_session(&token, EVERYTHING).await;
    let mut t = session.open_ready().await;
    t.initialize().await;
    t
}

#[tokio::test]
async fn evasions_through_a_real_server_are_masked() {
    let broker = builder().toml("[masking]\n").start();
    let mut t = session(&broker).await;
    // server-everything echoes the message back: whatever the test sends
    // is what a server would return.
    let cases = [
        ("4111 1111 1111 1111", "card"),
        ("4111-1111-1111-1111", "card"),
        ("4111.1111.1111.1111", "card"),
        ("4111\u{200b}1111\u{200b}1111\u{200b}1111", "card"),
        (
            "https://shop.example/pay?card=4111111111111111&ok=1",
            "card",
        ),
        ("536.22.8714", "ssn"),
        ("536-22-8714", "ssn"),
        ("Zoë <zoë.doe@example.com>", "email"),
        ("GB82 WEST 1234 5698 7654 32", "iban"),
        (
            "postgres://app:s3cr3t-pa55@db.internal:5432/crm",
            "url_password",
        ),
        ("AKIAIOSFODNN7EXAMPLE", "aws_access_key"),
    ];
    for (value, kind) in cases {
        let reply = t.call_tool("echo", json!({"message": value})).await;
        let text = tool_text(&reply);
        assert!(
            text.contains(&format!("[MASKED:{kind}")),
            "{value:?} came back as {text:?}"
        );
    }
    // A card in JSON text written with \u escapes, in nested arrays.
    let nested = r#"{"rows": [[["\u0034111111111111111"]]]}"#;
    let reply = t.call_tool("echo", json!({"message": nested})).await;
    let text = tool_text(&reply);
    assert!(
        text.contains("[MASKED:card]") && !text.contains("u0034"),
        "{text}"
    );
    t.close().await;
}

#[tokio::test]
async fn a_reply_that_cannot_be_masked_is_withheld_not_forwarded() {
    // More text than the masker may scan for one message.
    let broker = builder().toml("[masking]\nmax_bytes = 4096\n").start();
    let mut t = session(&broker).await;
    let long = format!("{} 4111111111111111", "x".repeat(5000));
    let reply = t.call_tool("echo", json!({"message": long})).await;
    assert_eq!(reply["error"]["code"], MASK_FAILED, "{reply}");
    assert!(!reply.to_string().contains("4111111111111111"), "{reply}");
    // The session goes on.
    let ok = t.call_tool("echo", json!({"message": "still here"})).await;
    assert_eq!(tool_text(&ok), "Echo: still here");
    t.close().await;
}
