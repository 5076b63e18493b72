//! The record from a user's and an auditor's side: a session through the
//! real CLI and the Python SDK client is listed, replayed (also live, with
//! `--follow`), verified by the broker, exported and reported on; a user
//! sees only their own sessions.

use std::path::Path;
use std::time::Duration;

use mcpgate_tests::broker::DEMO;
use mcpgate_tests::cli::Cli;
use mcpgate_tests::process::LineChild;
use mcpgate_tests::python::through_gateway;
use serde_json::{Value, json};

use crate::fixtures::{ALICE, BOB, builder};
use crate::recording::record_of;

const CAROL: &str = "carol";
const NOT_FOUND: i32 = 18;
const NO_ACCESS: i32 = mcpgate_tests::cli::exit::NO_ACCESS;

fn sessions_json(cli: &Cli) -> Vec<Value> {
    let out = cli.run(&["sessions", "--output", "json"]);
    assert!(out.success(), "{out}");
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// The line as recorded, without its hash trailer.
fn body_of(line: &str) -> String {
    let cut = line.rfind(r#","hash":""#).expect("a hash trailer");
    format!("{}}}", &line[..cut])
}

#[test]
fn a_recorded_session_is_listed_replayed_verified_exported_and_kept_from_others() {
    let broker = builder()
        .role_toml("auditor", "audit = true")
        .user(CAROL, &["auditor"])
        .start();
    let alice = Cli::new(&broker);
    alice.login_ok(ALICE);
    through_gateway(&alice, DEMO, "demo", &[]).expect_ok();

    // alice lists her session and replays it.
    let list = sessions_json(&alice);
    assert_eq!(list.len(), 1, "{list:?}");
    let s = list[0]["session"].as_str().unwrap().to_owned();
    assert_eq!(list[0]["user"], ALICE);
    assert_eq!(list[0]["server"], DEMO);
    assert_eq!(list[0]["state"], "closed");
    let record = record_of(broker.dir(), &s);
    assert_eq!(list[0]["events"], json!(record.len()));
    assert!(list[0]["calls"].as_u64().unwrap() >= 1, "{list:?}");
    let table = alice.run(&["sessions"]);
    assert!(table.success(), "{table}");
    assert!(
        table.stdout.contains(&s) && table.stdout.contains("closed"),
        "{table}"
    );

    let replay = alice.run(&["replay", &s]);
    assert!(replay.success(), "{replay}");
    let text = &replay.stdout;
    assert!(!text.contains('\x1b'), "colour without a terminal: {text}");
    for needle in [
        "user     alice",
        "server   demo",
        "tools/call list_customers",
        "ALLOW tools/call list_customers",
        "masked",
        "END closed:",
    ] {
        assert!(text.contains(needle), "replay lacks {needle:?}:\n{text}");
    }
    assert!(
        text.trim_end().lines().last().unwrap().contains("SEAL"),
        "{text}"
    );
    // The masked result is shown as recorded; no clear card number is.
    assert!(text.contains("[MASKED:"), "{text}");

    // The JSON replay is the record, line for line, without the trailers.
    let json_replay = alice.run(&["replay", &s, "--output", "json"]);
    assert!(json_replay.success(), "{json_replay}");
    let file = broker
        .dir()
        .join("records/sessions")
        .join(format!("{s}.jsonl"));
    let stored = std::fs::read_to_string(&file).unwrap();
    let replayed: Vec<&str> = json_replay.stdout.lines().collect();
    let recorded: Vec<String> = stored.lines().map(body_of).collect();
    assert_eq!(replayed, recorded);

    // The broker verifies it for her.
    let ok = alice.run(&["audit", "verify", &s]);
    assert!(ok.success(), "{ok}");
    assert!(
        ok.stdout
            .starts_with(&format!("OK: the record of session {s}")),
        "{ok}"
    );

    // bob sees nothing of alice's.
    let bob = Cli::new(&broker);
    bob.login_ok(BOB);
    assert!(sessions_json(&bob).is_empty());
    let mine_only = bob.run(&["sessions", "--user", ALICE]);
    assert_eq!(mine_only.code(), NO_ACCESS, "{mine_only}");
    for args in [vec!["replay", &s], vec!["audit", "verify", &s]] {
        let out = bob.run(&args);
        assert_eq!(out.code(), NOT_FOUND, "{args:?}: {out}");
        assert!(out.stderr.contains("no recorded session"), "{out}");
        assert!(!out.stdout.contains("list_customers"), "{out}");
    }
    for args in [
        vec!["audit", "export", "--since", "1h"],
        vec!["audit", "report", "--since", "1h"],
    ] {
        let out = bob.run(&args);
        assert_eq!(out.code(), NO_ACCESS, "{args:?}: {out}");
    }

    // carol, an auditor, sees it, exports it and reports on it.
    let carol = Cli::new(&broker);
    carol.login_ok(CAROL);
    assert!(
        sessions_json(&carol)
            .iter()
            .any(|x| x["session"] == s.as_str())
    );
    let out_dir = tempfile::tempdir().unwrap();
    let csv = out_dir.path().join("events.csv");
    let export = carol.run(&[
        "audit",
        "export",
        "--since",
        "1h",
        "--format",
        "csv",
        "-o",
        csv.to_str().unwrap(),
    ]);
    assert!(export.success(), "{export}");
    let csv_text = std::fs::read_to_string(&csv).unwrap();
    let mut rows = csv_text.lines();
    assert_eq!(
        rows.next().unwrap(),
        "time,session,seq,type,user,server,from,to,kind,method,name,id,bytes,decision,rule,reason,approval,approvers,masked,state,events,issuer,roles,client_addr,tunnel_peer,cert_serial,hash"
    );
    assert_eq!(rows.count(), record.len(), "one row per event");
    assert!(!Path::new(&format!("{}.part", csv.display())).exists());
    let jsonl = carol.run(&["audit", "export", "--since", "1h", "--format", "jsonl"]);
    assert!(jsonl.success(), "{jsonl}");
    let exported: Vec<Value> = jsonl
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(exported.len(), record.len());
    for (row, event) in exported.iter().zip(&record) {
        assert_eq!(row["hash"], event["hash"], "{row}");
        assert_eq!(row["seq"], event["seq"], "{row}");
    }
    let masked_row = exported
        .iter()
        .find(|r| {
            r["type"] == "message" && r["masked"].as_str().is_some_and(|m| m.contains("card="))
        })
        .expect("the masked reply is exported with its counts");
    assert_eq!(masked_row["from"], "upstream", "{masked_row}");
    let report = carol.run(&["audit", "report", "--since", "1h"]);
    assert!(report.success(), "{report}");
    for needle in [
        "# mcpgate evidence report",
        "CC6.1",
        "CC8.1",
        "all records verify",
    ] {
        assert!(
            report.stdout.contains(needle),
            "report lacks {needle:?}:\n{}",
            report.stdout
        );
    }

    // A changed byte in the record: the broker's verification says where.
    let mut bytes = std::fs::read(&file).unwrap();
    let at = stored.find("list_customers").unwrap();
    bytes[at] ^= 0x20;
    std::fs::write(&file, bytes).unwrap();
    let bad = alice.run(&["audit", "verify", &s]);
    assert_eq!(bad.code(), 1, "{bad}");
    assert!(bad.stdout.contains(&format!("session {s}")), "{bad}");
    assert!(bad.stdout.contains("modified"), "{bad}");
}

#[test]
fn a_live_session_is_followed_until_its_seal() {
    let broker = builder().start();
    let alice = Cli::new(&broker);
    alice.login_ok(ALICE);
    let mut connect: LineChild = alice.spawn_connect(DEMO);
    connect.send_json(&json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "follow-test", "version": "0"}}
    }));
    connect.recv_reply(Duration::from_secs(30));
    let list = sessions_json(&alice);
    let s = list[0]["session"].as_str().unwrap().to_owned();
    assert_eq!(list[0]["state"], "live", "{list:?}");

    let mut follow = LineChild::spawn(alice.command(&["replay", &s, "--follow"]));
    // The replay has caught up with the record so far...
    let header = follow
        .recv_line(Duration::from_secs(30))
        .expect("the replay's first line");
    assert!(header.contains(&s), "{header}");
    // ...and what happens next reaches it while the session is live.
    connect.send_json(&json!({
        "jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "get_customer", "arguments": {"id": 1}}
    }));
    connect.recv_reply(Duration::from_secs(30));
    let mut seen = Vec::new();
    loop {
        let line = follow
            .recv_line(Duration::from_secs(30))
            .unwrap_or_else(|| panic!("the follow ended early: {seen:?}"));
        let answer = line.contains('←') && line.contains("get_customer");
        seen.push(line);
        if answer {
            break;
        }
    }
    assert!(seen.iter().any(|l| l.contains("get_customer")), "{seen:?}");
    connect.close_stdin();
    connect.wait(Duration::from_secs(30));
    let mut rest = Vec::new();
    while let Some(line) = follow.recv_line(Duration::from_secs(30)) {
        rest.push(line);
    }
    let status = follow.wait(Duration::from_secs(30));
    assert!(status.success(), "{rest:?} {}", follow.stderr());
    assert!(rest.last().is_some_and(|l| l.contains("SEAL")), "{rest:?}");
}
