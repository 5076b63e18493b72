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

/// A small deterministic generator, so a failing mutation can be replayed
/// from the seed the assertion prints.
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            copy_dir(&path, &to.join(entry.file_name()));
        } else {
            std::fs::copy(&path, to.join(entry.file_name())).unwrap();
        }
    }
}

fn lines_of(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn tampering_with_a_real_record_is_always_caught_and_located() {
    use mcpgate_tests::cli::Cli;
    use mcpgate_tests::python::through_gateway;

    let broker = crate::fixtures::broker();
    let cli = Cli::new(&broker);
    cli.login_ok(ALICE);
    // Two real sessions through the CLI and the Python SDK client.
    for _ in 0..2 {
        through_gateway(&cli, EVERYTHING, "basic", &[]).expect_ok();
    }
    let records = broker.dir().join("records");
    let sessions: Vec<String> = std::fs::read_dir(records.join("sessions"))
        .unwrap()
        .flatten()
        .map(|e| e.path().file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    let pubkey = broker.dir().join("audit.pub");
    let check = |dir: &Path| -> (i32, String) {
        let out = std::process::Command::new(broker_bin())
            .args(["verify", "--all", "--pubkey"])
            .arg(&pubkey)
            .arg(dir)
            .output()
            .expect("run mcpgate-broker verify");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (code, out) = check(&records);
    assert_eq!(code, 0, "the untouched record must verify: {out}");

    let seed = 0x6d63_7067_6174_6521u64;
    let mut rng = XorShift(seed);
    let scratch = tempfile::tempdir().unwrap();
    let mut tried = std::collections::BTreeMap::<&str, usize>::new();
    for round in 0..300 {
        let copy = scratch.path().join(format!("r{round}"));
        copy_dir(&records, &copy);
        let session = &sessions[rng.below(sessions.len())];
        let file = copy.join("sessions").join(format!("{session}.jsonl"));
        let index = copy.join("index.jsonl");
        let kind = [
            "byte",
            "byte",
            "byte",
            "delete",
            "swap",
            "insert",
            "truncate",
            "drop-session",
            "index-line",
        ][rng.below(9)];
        // What the report must name.
        let mut expect = format!("session {session}");
        match kind {
            "byte" => {
                let mut bytes = std::fs::read(&file).unwrap();
                let at = rng.below(bytes.len());
                bytes[at] ^= 1 + rng.below(255) as u8;
                std::fs::write(&file, bytes).unwrap();
            }
            "delete" | "swap" | "insert" => {
                let mut lines = lines_of(&file);
                let i = rng.below(lines.len());
                match kind {
                    "delete" => {
                        lines.remove(i);
                    }
                    "swap" => {
                        let j = (i + 1 + rng.below(lines.len() - 1)) % lines.len();
                        lines.swap(i, j);
                    }
                    _ => {
                        let dup = lines[rng.below(lines.len())].clone();
                        lines.insert(i, dup);
                    }
                }
                std::fs::write(&file, lines.concat()).unwrap();
            }
            "truncate" => {
                let bytes = std::fs::read(&file).unwrap();
                let at = rng.below(bytes.len());
                std::fs::write(&file, &bytes[..at]).unwrap();
            }
            "drop-session" => std::fs::remove_file(&file).unwrap(),
            _ => {
                let mut lines = lines_of(&index);
                lines.remove(rng.below(lines.len()));
                std::fs::write(&index, lines.concat()).unwrap();
                expect = "index".into();
            }
        }
        *tried.entry(kind).or_default() += 1;
        let (code, out) = check(&copy);
        assert_eq!(
            code, 1,
            "round {round} (seed {seed:#x}) {kind} in {session} was not caught: {out}"
        );
        assert!(
            out.contains(&expect) || (expect == "index" && out.contains("session ")),
            "round {round} (seed {seed:#x}) {kind}: the report does not name {expect}: {out}"
        );
    }
    eprintln!("tamper campaign on a real record: {tried:?}, all caught");
}
