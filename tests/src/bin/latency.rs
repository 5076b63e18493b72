//! Latency the gateway adds, measured with the real peers.
//!
//! ```text
//! cargo run -p mcpgate-tests --bin latency -- [N]
//! ```
//!
//! Starts a broker with server-everything, then runs the Python SDK client's
//! `timing N` scenario twice: straight against server-everything, and
//! through `mcpgate connect everything`. Prints the time from spawning the
//! stdio server to its first response and to a finished handshake, and the
//! median and p90 of N `tools/call echo` round trips (the first call is a
//! warm-up and not counted), for both, and what the gateway added.
//! Needs `tests/setup-peers` and `cargo build --workspace --bins` first.

use anyhow::{Context, Result, bail};
use mcpgate_tests::broker::EVERYTHING;
use mcpgate_tests::python::{ClientRun, direct_everything, through_gateway};
use mcpgate_tests::{Broker, Cli};
use serde_json::Value;

/// The numbers of one client run, in microseconds.
struct Timing {
    first_response: u64,
    connect: u64,
    median: u64,
    p90: u64,
    calls: usize,
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn timing(run: &ClientRun, what: &str) -> Result<Timing> {
    if !run.ok() {
        bail!(
            "{what}: client.py failed: {}\n{}",
            run.report,
            run.output.stderr
        );
    }
    let r = &run.report;
    let us = |v: &Value, name: &str| {
        v.as_u64()
            .with_context(|| format!("{what}: no {name} in {r}"))
    };
    let mut lat: Vec<u64> = r["latencies_us"]
        .as_array()
        .with_context(|| format!("{what}: no latencies in {r}"))?
        .iter()
        .skip(1) // warm-up
        .filter_map(Value::as_u64)
        .collect();
    lat.sort_unstable();
    Ok(Timing {
        first_response: us(&r["handshake"]["first_response_us"], "first_response_us")?,
        connect: us(&r["handshake"]["connect_us"], "connect_us")?,
        median: percentile(&lat, 50.0),
        p90: percentile(&lat, 90.0),
        calls: lat.len(),
    })
}

fn ms(us: u64) -> String {
    format!("{:.2} ms", us as f64 / 1000.0)
}

fn added(gated: u64, direct: u64) -> String {
    let d = gated as i64 - direct as i64;
    format!(
        "{}{:.2} ms",
        if d < 0 { "-" } else { "+" },
        d.unsigned_abs() as f64 / 1000.0
    )
}

fn main() -> Result<()> {
    let n: usize = match std::env::args().nth(1) {
        Some(a) => a
            .parse()
            .with_context(|| format!("N must be a number, not {a:?}"))?,
        None => 200,
    };
    if n < 2 {
        bail!("N must be at least 2 (the first call is a warm-up)");
    }
    let n_arg = n.to_string();

    eprintln!("starting a broker with server-everything ...");
    let broker = Broker::builder()
        .everything()
        .role("bench", &[EVERYTHING])
        .user("bench", &["bench"])
        .start();
    let cli = Cli::new(&broker);
    cli.login_ok("bench");

    eprintln!("{n} echo calls straight to server-everything ...");
    let direct = timing(&direct_everything("timing", &[&n_arg]), "direct")?;
    eprintln!("{n} echo calls through mcpgate connect ...");
    let gated = timing(
        &through_gateway(&cli, EVERYTHING, "timing", &[&n_arg]),
        "gateway",
    )?;

    println!(
        "{:<34} {:>12} {:>12} {:>12}",
        "", "direct", "gateway", "added"
    );
    let row = |name: &str, d: u64, g: u64| {
        println!("{name:<34} {:>12} {:>12} {:>12}", ms(d), ms(g), added(g, d));
    };
    row(
        "spawn to first response",
        direct.first_response,
        gated.first_response,
    );
    row("spawn to handshake done", direct.connect, gated.connect);
    row(
        &format!(
            "tools/call median ({} calls)",
            direct.calls.min(gated.calls)
        ),
        direct.median,
        gated.median,
    );
    row("tools/call p90", direct.p90, gated.p90);
    Ok(())
}
