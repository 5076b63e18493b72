//! Latency the gateway adds, measured with the real peers.
//!
//! ```text
//! cargo run -p mcpgate-tests --bin latency -- [N [RUNS]]
//! ```
//!
//! Starts a broker with server-everything, then runs the Python SDK client's
//! `timing N` scenario RUNS times (default 200 calls, 5 runs) each way,
//! alternating: straight against server-everything (with the empty
//! environment the broker gives it), and through `mcpgate connect
//! everything`. Prints the median over runs of the time from spawning the
//! stdio server to its first response and to a finished handshake, and the
//! median and p90 of all `tools/call echo` round trips (each run's first call
//! is a warm-up and not counted), for both, and what the gateway added.
//! `LATENCY_BROKER_TOML` adds a fragment to the broker's config (say,
//! `[recording]` settings). Needs `tests/setup-peers` and
//! `cargo build --workspace --bins` first.

use anyhow::{Context, Result, bail};
use mcpgate_tests::broker::EVERYTHING;
use mcpgate_tests::python::{ClientRun, direct_everything, through_gateway};
use mcpgate_tests::{Broker, Cli};
use serde_json::Value;

/// A TOML fragment added to the broker's config.
const EXTRA_CONFIG: &str = "LATENCY_BROKER_TOML";

/// The numbers of one client run, in microseconds.
struct Timing {
    first_response: u64,
    connect: u64,
    /// Round trips, the warm-up call left out.
    calls: Vec<u64>,
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    percentile(&v, 50.0)
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
    let calls = r["latencies_us"]
        .as_array()
        .with_context(|| format!("{what}: no latencies in {r}"))?
        .iter()
        .skip(1) // warm-up
        .filter_map(Value::as_u64)
        .collect();
    Ok(Timing {
        first_response: us(&r["handshake"]["first_response_us"], "first_response_us")?,
        connect: us(&r["handshake"]["connect_us"], "connect_us")?,
        calls,
    })
}

/// Medians over runs, percentiles over every call of every run.
struct Summary {
    first_response: u64,
    connect: u64,
    median: u64,
    p90: u64,
    calls: usize,
}

fn summarise(runs: &[Timing]) -> Summary {
    let mut all: Vec<u64> = runs.iter().flat_map(|t| t.calls.iter().copied()).collect();
    all.sort_unstable();
    Summary {
        first_response: median(runs.iter().map(|t| t.first_response).collect()),
        connect: median(runs.iter().map(|t| t.connect).collect()),
        median: percentile(&all, 50.0),
        p90: percentile(&all, 90.0),
        calls: all.len(),
    }
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
    let mut args = std::env::args().skip(1);
    let number = |a: Option<String>, default: usize, what: &str| -> Result<usize> {
        match a {
            Some(a) => a
                .parse()
                .with_context(|| format!("{what} must be a number, not {a:?}")),
            None => Ok(default),
        }
    };
    let n = number(args.next(), 200, "N")?;
    let runs = number(args.next(), 5, "RUNS")?;
    if n < 2 || runs < 1 {
        bail!("N must be at least 2 (the first call is a warm-up) and RUNS at least 1");
    }
    let n_arg = n.to_string();

    eprintln!("starting a broker with server-everything ...");
    let mut builder = Broker::builder()
        .everything()
        .role("bench", &[EVERYTHING])
        .user("bench", &["bench"]);
    // More broker config for this run, e.g. `[recording]\nfsync = "never"`.
    if let Ok(extra) = std::env::var(EXTRA_CONFIG) {
        eprintln!("with {EXTRA_CONFIG}: {extra}");
        builder = builder.toml(&extra);
    }
    let broker = builder.start();
    let cli = Cli::new(&broker);
    cli.login_ok("bench");

    let (mut direct, mut gated) = (Vec::new(), Vec::new());
    for run in 1..=runs {
        eprintln!("run {run}/{runs}: {n} echo calls direct, then through mcpgate connect ...");
        direct.push(timing(&direct_everything("timing", &[&n_arg]), "direct")?);
        gated.push(timing(
            &through_gateway(&cli, EVERYTHING, "timing", &[&n_arg]),
            "gateway",
        )?);
    }
    let (d, g) = (summarise(&direct), summarise(&gated));

    println!(
        "{:<36} {:>12} {:>12} {:>12}",
        "", "direct", "gateway", "added"
    );
    let row = |name: &str, d: u64, g: u64| {
        println!("{name:<36} {:>12} {:>12} {:>12}", ms(d), ms(g), added(g, d));
    };
    row(
        &format!("spawn to first response (median/{runs})"),
        d.first_response,
        g.first_response,
    );
    row(
        &format!("spawn to handshake done (median/{runs})"),
        d.connect,
        g.connect,
    );
    row(
        &format!("tools/call median ({} calls)", d.calls.min(g.calls)),
        d.median,
        g.median,
    );
    row("tools/call p90", d.p90, g.p90);
    Ok(())
}
