//! Runs `tests/peers/client.py`: the official Python MCP SDK client
//! (`mcp.Client`, default `mode="auto"`) driving one scenario against a
//! stdio server command, reporting what happened as one JSON object.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::cli::Cli;
use crate::paths::Peers;
use crate::process::{self, Output};

/// How long one scenario may take, start to finish.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(120);

/// One finished client run.
#[derive(Debug)]
pub struct ClientRun {
    pub output: Output,
    /// The JSON object the client printed (`{"ok": true|false, ...}`).
    pub report: Value,
}

impl ClientRun {
    pub fn ok(&self) -> bool {
        self.output.success() && self.report["ok"] == Value::Bool(true)
    }

    /// Panics with the client's stderr (SDK traceback, server logs) unless
    /// the scenario succeeded; returns the report.
    #[track_caller]
    pub fn expect_ok(&self) -> &Value {
        assert!(
            self.ok(),
            "client.py failed: {}\n--- client stderr ---\n{}",
            self.report,
            self.output.stderr
        );
        &self.report
    }
}

/// Runs `client.py SCENARIO ARGS... -- SERVER_ARGV...` with `cmd_env` applied.
pub fn run_client(
    scenario: &str,
    args: &[&str],
    server_argv: &[String],
    cmd_env: impl FnOnce(&mut Command),
) -> ClientRun {
    let peers = Peers::get();
    let mut cmd = Command::new(&peers.python);
    cmd.arg(&peers.client_py)
        .arg(scenario)
        .args(args)
        .arg("--")
        .args(server_argv)
        .env("PYTHONUNBUFFERED", "1");
    cmd_env(&mut cmd);
    let output = process::run(cmd, None, SCENARIO_TIMEOUT);
    let last = output
        .stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    let report = serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("client.py printed no JSON report ({e}): {output}"));
    ClientRun { output, report }
}

/// The scenario through the gateway: the client launches `mcpgate connect
/// SERVER` as its stdio server, with `cli`'s environment.
pub fn through_gateway(cli: &Cli, server: &str, scenario: &str, args: &[&str]) -> ClientRun {
    run_client(scenario, args, &cli.connect_argv(server), |cmd| {
        cli.apply_env(cmd)
    })
}

/// The scenario straight against server-everything (the baseline). The
/// server gets an empty environment, as the broker gives it one: node reads
/// variables such as `NODE_EXTRA_CA_CERTS` at start-up, which would make the
/// baseline slower than the gateway for reasons that are not the gateway's.
pub fn direct_everything(scenario: &str, args: &[&str]) -> ClientRun {
    let mut argv = vec!["/usr/bin/env".to_owned(), "-i".to_owned()];
    argv.extend(Peers::get().everything_command());
    run_client(scenario, args, &argv, |_| {})
}
