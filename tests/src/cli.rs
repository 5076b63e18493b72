//! `mcpgate` as one user runs it: its own `MCPGATE_HOME` (file credential
//! store), and `HOME`/XDG dirs inside the same temp tree, so anything the
//! CLI writes anywhere lands where a test can inspect it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use crate::PASSWORD;
use crate::broker::Broker;
use crate::paths::cli_bin;
use crate::process::{self, LineChild, Output};

/// How long a one-shot CLI command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Exit codes of `mcpgate` (its documented contract).
pub mod exit {
    pub const NOT_LOGGED_IN: i32 = 10;
    pub const TOKEN_REJECTED: i32 = 11;
    pub const NO_ACCESS: i32 = 12;
    pub const UNKNOWN_SERVER: i32 = 13;
    pub const BROKER_UNREACHABLE: i32 = 14;
    pub const TUNNEL_REFUSED: i32 = 15;
    pub const RATE_LIMITED: i32 = 16;
    pub const SESSION_ENDED: i32 = 17;
}

/// One user's CLI installation.
pub struct Cli {
    root: TempDir,
    api_url: String,
    ca_path: PathBuf,
    /// Set by [`Cli::env`] on top of [`Cli::envs`].
    extra_env: Vec<(String, OsString)>,
}

impl Cli {
    /// A fresh, logged-out CLI pointed at `broker`.
    pub fn new(broker: &Broker) -> Cli {
        let root = tempfile::Builder::new()
            .prefix("mcpgate-cli-")
            .tempdir()
            .expect("temp dir");
        for sub in [
            "mcpgate",
            "home",
            "xdg-config",
            "xdg-data",
            "xdg-state",
            "xdg-cache",
        ] {
            std::fs::create_dir_all(root.path().join(sub)).expect("create CLI dirs");
        }
        Cli {
            root,
            api_url: broker.api_url().to_owned(),
            ca_path: broker.ca_path(),
            extra_env: vec![("MCPGATE_NO_BROWSER".into(), "1".into())],
        }
    }

    /// Adds `KEY=VALUE` to every later command's environment (and to MCP
    /// clients that launch `mcpgate connect`).
    pub fn env(&mut self, key: &str, value: impl Into<OsString>) -> &mut Self {
        self.extra_env.retain(|(k, _)| k != key);
        self.extra_env.push((key.into(), value.into()));
        self
    }

    /// The broker's API URL.
    pub fn api_url(&self) -> &str {
        &self.api_url
    }

    /// The broker CA file the CLI is told to trust.
    pub fn ca_path(&self) -> &Path {
        &self.ca_path
    }

    /// `mcpgate login --broker URL --ca-cert ca.pem ARGS...` as a running
    /// child, for flows that need a browser or a second device.
    pub fn spawn_login(&self, args: &[&str]) -> LineChild {
        let ca = self.ca_path.display().to_string();
        let mut all = vec!["login", "--broker", &self.api_url, "--ca-cert", &ca];
        all.extend_from_slice(args);
        LineChild::spawn(self.command(&all))
    }

    /// Points later commands (`login`) at a restarted broker's new URL.
    pub fn set_broker(&mut self, broker: &Broker) {
        self.api_url = broker.api_url().to_owned();
        self.ca_path = broker.ca_path();
    }

    /// `MCPGATE_HOME`.
    pub fn home(&self) -> PathBuf {
        self.root.path().join("mcpgate")
    }

    /// The whole temp tree: `MCPGATE_HOME`, `HOME` and the XDG dirs.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// The environment every `mcpgate` run gets on top of the inherited one
    /// (minus any inherited `MCPGATE_*`).
    pub fn envs(&self) -> Vec<(String, OsString)> {
        let r = self.root.path();
        vec![
            ("MCPGATE_HOME".into(), self.home().into()),
            ("MCPGATE_CREDENTIAL_STORE".into(), "file".into()),
            ("HOME".into(), r.join("home").into()),
            ("XDG_CONFIG_HOME".into(), r.join("xdg-config").into()),
            ("XDG_DATA_HOME".into(), r.join("xdg-data").into()),
            ("XDG_STATE_HOME".into(), r.join("xdg-state").into()),
            ("XDG_CACHE_HOME".into(), r.join("xdg-cache").into()),
            ("NO_COLOR".into(), "1".into()),
        ]
        .into_iter()
        .chain(self.extra_env.iter().cloned())
        .collect()
    }

    /// Applies [`Cli::envs`] to any command (the Python client that launches
    /// `mcpgate connect` passes its environment on).
    pub fn apply_env(&self, cmd: &mut Command) {
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("MCPGATE_") {
                cmd.env_remove(k);
            }
        }
        for (k, v) in self.envs() {
            cmd.env(k, v);
        }
    }

    /// `mcpgate ARGS...` with this user's environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(cli_bin());
        cmd.args(args);
        self.apply_env(&mut cmd);
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        process::run(self.command(args), None, COMMAND_TIMEOUT)
    }

    pub fn run_with_stdin(&self, args: &[&str], stdin: &str) -> Output {
        process::run(self.command(args), Some(stdin.as_bytes()), COMMAND_TIMEOUT)
    }

    /// `mcpgate login --broker URL --ca-cert ca.pem --user USER --password-stdin`.
    pub fn login(&self, user: &str) -> Output {
        self.login_with_password(user, PASSWORD)
    }

    pub fn login_with_password(&self, user: &str, password: &str) -> Output {
        let ca = self.ca_path.display().to_string();
        self.run_with_stdin(
            &[
                "login",
                "--broker",
                &self.api_url,
                "--ca-cert",
                &ca,
                "--user",
                user,
                "--password-stdin",
            ],
            &format!("{password}\n"),
        )
    }

    /// Logs in and panics if that fails.
    #[track_caller]
    pub fn login_ok(&self, user: &str) {
        let out = self.login(user);
        assert!(out.success(), "mcpgate login as {user} failed: {out}");
    }

    /// The argv of `mcpgate connect SERVER`, for an MCP client to launch.
    pub fn connect_argv(&self, server: &str) -> Vec<String> {
        vec![
            cli_bin().display().to_string(),
            "connect".into(),
            server.into(),
        ]
    }

    /// `mcpgate connect SERVER` as a child spoken to line by line.
    pub fn spawn_connect(&self, server: &str) -> LineChild {
        LineChild::spawn(self.command(&["connect", server]))
    }

    /// Every file under the CLI's temp tree, with its bytes.
    pub fn files(&self) -> Vec<(PathBuf, Vec<u8>)> {
        fn walk(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, out);
                } else if let Ok(bytes) = std::fs::read(&path) {
                    out.push((path, bytes));
                }
            }
        }
        let mut out = Vec::new();
        walk(self.root.path(), &mut out);
        out
    }
}
