//! A real `mcpgate-broker` in a fresh temp dir, on ports the OS picks.
//!
//! [`BrokerBuilder::start`] runs `mcpgate-broker init --dir DIR`, edits
//! `DIR/broker.toml` (listen addresses, servers, roles, limits), adds users
//! with `mcpgate-broker user add ... --password-stdin`, then starts
//! `mcpgate-broker serve` and waits for its one ready line on stdout. The
//! broker's stderr (its log) goes to `DIR/broker.log` so tests can assert on
//! what it logged. The process is killed when the [`Broker`] is dropped.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::Deserialize;
use tempfile::TempDir;
use toml_edit::{Array, DocumentMut, InlineTable, Item, Table, value};

use crate::PASSWORD;
use crate::paths::{Peers, broker_bin};
use crate::process::{self, Output, wait_until};

/// How long `init`, `user add` and `serve` get to be ready.
const STARTUP: Duration = Duration::from_secs(30);
/// How long a SIGTERM'd broker gets before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// The broker's log filter variable (`mcpgate_broker::cli::LOG_ENV`).
const LOG_ENV: &str = "MCPGATE_LOG";

/// The server-everything entry every builder can add.
pub const EVERYTHING: &str = "everything";
/// The demo server `init` writes into the example config.
pub const DEMO: &str = "demo";

/// The one line `mcpgate-broker serve` prints on stdout when it is ready.
#[derive(Debug, Clone, Deserialize)]
pub struct Ready {
    pub api_url: String,
    pub tunnel_addr: String,
}

#[derive(Debug, Clone)]
struct ServerSpec {
    name: String,
    command: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

type Edit = Box<dyn FnOnce(&mut DocumentMut)>;

/// What the broker under test is configured with.
#[must_use]
pub struct BrokerBuilder {
    servers: Vec<ServerSpec>,
    server_env: Vec<(String, String, String)>,
    roles: Vec<(String, Vec<String>)>,
    users: Vec<(String, Vec<String>)>,
    max_message_bytes: Option<usize>,
    process_env: Vec<(String, String)>,
    /// `[[policy]]` rules replacing the example's; `None` keeps them.
    policy: Option<String>,
    edits: Vec<Edit>,
}

/// The policy tests of other features run under: everything allowed, so
/// that only the feature under test decides.
pub const ALLOW_ALL_POLICY: &str = r#"
[[policy]]
name = "allow everything (tests)"
roles = ["*"]
servers = ["*"]
tools = ["**"]
resources = ["**"]
prompts = ["**"]
effect = "allow"
"#;

impl Default for BrokerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl BrokerBuilder {
    pub fn new() -> Self {
        Self {
            servers: Vec::new(),
            server_env: Vec::new(),
            roles: Vec::new(),
            users: Vec::new(),
            max_message_bytes: None,
            process_env: Vec::new(),
            policy: Some(ALLOW_ALL_POLICY.into()),
            edits: Vec::new(),
        }
    }

    /// Replaces every `[[policy]]` rule with the ones in `rules` (TOML
    /// `[[policy]]` tables). Without this, everything is allowed.
    pub fn policy(mut self, rules: &str) -> Self {
        self.policy = Some(rules.into());
        self
    }

    /// Keeps the example policy `init` wrote (for the demo server).
    pub fn example_policy(mut self) -> Self {
        self.policy = None;
        self
    }

    /// Adds a stdio upstream `[servers.NAME]`.
    pub fn server(mut self, name: &str, command: &str, args: &[&str]) -> Self {
        self.servers.push(ServerSpec {
            name: name.into(),
            command: command.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            env: Vec::new(),
        });
        self
    }

    /// Adds `[servers.everything]`: the real server-everything over stdio.
    pub fn everything(self) -> Self {
        let cmd = Peers::get().everything_command();
        let args: Vec<&str> = cmd[1..].iter().map(String::as_str).collect();
        self.server(EVERYTHING, &cmd[0], &args)
    }

    /// Sets `[servers.NAME.env] KEY = VALUE` (for `demo` too, which `init`
    /// wrote).
    pub fn server_env(mut self, server: &str, key: &str, val: &str) -> Self {
        self.server_env
            .push((server.into(), key.into(), val.into()));
        self
    }

    /// Sets `[roles.NAME] servers = [...]`, replacing what was there.
    pub fn role(mut self, name: &str, servers: &[&str]) -> Self {
        self.roles
            .push((name.into(), servers.iter().map(|s| s.to_string()).collect()));
        self
    }

    /// Sets `[roles.NAME]` to a table written in TOML, e.g.
    /// `approves = ["demo"]`, replacing what was there.
    pub fn role_toml(self, name: &str, body: &str) -> Self {
        let table: DocumentMut = body
            .parse()
            .unwrap_or_else(|e| panic!("invalid TOML for role {name}: {e}\n{body}"));
        let name = name.to_owned();
        self.edit(move |doc| {
            let roles = table_mut(doc.as_table_mut(), "roles");
            roles.insert(&name, Item::Table(table.as_table().clone()));
        })
    }

    /// Adds a local user with [`PASSWORD`] and these roles.
    pub fn user(mut self, name: &str, roles: &[&str]) -> Self {
        self.users
            .push((name.into(), roles.iter().map(|s| s.to_string()).collect()));
        self
    }

    /// `broker.max_message_bytes`.
    pub fn max_message_bytes(mut self, n: usize) -> Self {
        self.max_message_bytes = Some(n);
        self
    }

    /// An environment variable of the broker process itself.
    pub fn process_env(mut self, key: &str, val: &str) -> Self {
        self.process_env.push((key.into(), val.into()));
        self
    }

    /// Adds the tables of a TOML fragment (e.g. `[[oidc]]` issuers) to
    /// `broker.toml`, replacing top-level keys of the same name.
    pub fn toml(self, fragment: &str) -> Self {
        let fragment: DocumentMut = fragment
            .parse()
            .unwrap_or_else(|e| panic!("invalid TOML fragment: {e}\n{fragment}"));
        self.edit(move |doc| {
            for (key, item) in fragment.iter() {
                doc.insert(key, item.clone());
            }
        })
    }

    /// Any other change to `broker.toml`, applied after the ones above.
    pub fn edit(mut self, f: impl FnOnce(&mut DocumentMut) + 'static) -> Self {
        self.edits.push(Box::new(f));
        self
    }

    /// Initialises, configures and starts the broker.
    pub fn start(mut self) -> Broker {
        let dir = tempfile::Builder::new()
            .prefix("mcpgate-e2e-")
            .tempdir()
            .expect("temp dir");
        let mut init = broker_cmd(["init", "--dir"]);
        init.arg(dir.path());
        let init = process::run(init, None, STARTUP);
        assert!(init.success(), "mcpgate-broker init failed: {init}");
        let config = dir.path().join("broker.toml");
        assert!(
            config.is_file(),
            "init wrote no {}: {init}",
            config.display()
        );

        let text = std::fs::read_to_string(&config).expect("read broker.toml");
        let mut doc: DocumentMut = text
            .parse()
            .unwrap_or_else(|e| panic!("init wrote a broker.toml that is not TOML: {e}\n{text}"));
        self.apply(&mut doc);
        std::fs::write(&config, doc.to_string()).expect("write broker.toml");

        for (user, roles) in &self.users {
            let mut cmd = broker_cmd(["user", "add", user]);
            for role in roles {
                cmd.arg("--role").arg(role);
            }
            cmd.arg("--config").arg(&config).arg("--password-stdin");
            let out = process::run(cmd, Some(format!("{PASSWORD}\n").as_bytes()), STARTUP);
            assert!(
                out.success(),
                "mcpgate-broker user add {user} failed: {out}"
            );
        }

        let mut broker = Broker {
            dir,
            config,
            process_env: self.process_env,
            child: None,
            ready: Ready {
                api_url: String::new(),
                tunnel_addr: String::new(),
            },
        };
        broker.spawn();
        broker
    }

    fn apply(&mut self, doc: &mut DocumentMut) {
        let b = table_mut(doc.as_table_mut(), "broker");
        b["api_listen"] = value("127.0.0.1:0");
        b["tunnel_listen"] = value("127.0.0.1:0");
        if let Some(n) = self.max_message_bytes {
            b["max_message_bytes"] = value(n as i64);
        }
        for s in &self.servers {
            let servers = table_mut(doc.as_table_mut(), "servers");
            let mut t = Table::new();
            t["transport"] = value("stdio");
            t["command"] = value(s.command.as_str());
            t["args"] = value(s.args.iter().map(String::as_str).collect::<Array>());
            let mut env = InlineTable::new();
            for (k, v) in &s.env {
                env.insert(k, v.as_str().into());
            }
            t["env"] = value(env);
            servers.insert(&s.name, Item::Table(t));
        }
        for (server, key, val) in &self.server_env {
            let servers = table_mut(doc.as_table_mut(), "servers");
            let entry = servers
                .get_mut(server)
                .and_then(Item::as_table_mut)
                .unwrap_or_else(|| panic!("no [servers.{server}] to set env on"));
            match entry.get_mut("env") {
                Some(Item::Value(toml_edit::Value::InlineTable(t))) => {
                    t.insert(key, val.as_str().into());
                }
                Some(Item::Table(t)) => {
                    t[key.as_str()] = value(val.as_str());
                }
                _ => {
                    let mut t = InlineTable::new();
                    t.insert(key, val.as_str().into());
                    entry["env"] = value(t);
                }
            }
        }
        for (role, servers) in &self.roles {
            let roles = table_mut(doc.as_table_mut(), "roles");
            let mut t = Table::new();
            t["servers"] = value(servers.iter().map(String::as_str).collect::<Array>());
            roles.insert(role, Item::Table(t));
        }
        if let Some(rules) = &self.policy {
            let rules: DocumentMut = rules
                .parse()
                .unwrap_or_else(|e| panic!("invalid policy TOML: {e}\n{rules}"));
            doc.remove("policy");
            if let Some(item) = rules.get("policy") {
                doc.insert("policy", item.clone());
            }
        }
        for edit in self.edits.drain(..) {
            edit(doc);
        }
    }
}

fn table_mut<'a>(root: &'a mut Table, key: &str) -> &'a mut Table {
    if !root.contains_key(key) {
        let mut t = Table::new();
        t.set_implicit(true);
        root.insert(key, Item::Table(t));
    }
    root[key]
        .as_table_mut()
        .unwrap_or_else(|| panic!("broker.toml: [{key}] is not a table"))
}

fn broker_cmd<const N: usize>(args: [&str; N]) -> Command {
    let mut cmd = Command::new(broker_bin());
    cmd.args(args);
    cmd
}

/// A running broker. Killed on drop; its temp dir goes with it.
pub struct Broker {
    dir: TempDir,
    config: PathBuf,
    process_env: Vec<(String, String)>,
    child: Option<Child>,
    ready: Ready,
}

impl Broker {
    pub fn builder() -> BrokerBuilder {
        BrokerBuilder::new()
    }

    fn spawn(&mut self) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open broker.log");
        let mut cmd = Command::new(broker_bin());
        cmd.arg("serve")
            .arg("--config")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        // Refusals are logged at warn, session life at info.
        if std::env::var_os(LOG_ENV).is_none() {
            cmd.env(LOG_ENV, "info");
        }
        for (k, v) in &self.process_env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start mcpgate-broker serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(first)) = lines.next() {
                let _ = tx.send(first);
            }
            // Keep draining: a broker that prints more must not block on a
            // full pipe.
            for _ in lines {}
        });
        let deadline = Instant::now() + STARTUP;
        let line = loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(line) => break line,
                Err(RecvTimeoutError::Disconnected) | Err(RecvTimeoutError::Timeout) => {
                    if let Some(status) = child.try_wait().expect("try_wait") {
                        panic!(
                            "mcpgate-broker serve exited ({status}) before it was ready\n--- log ---\n{}",
                            self.log()
                        );
                    }
                    if Instant::now() >= deadline {
                        let _ = child.kill();
                        let _ = child.wait();
                        panic!(
                            "mcpgate-broker serve printed no ready line within {STARTUP:?}\n--- log ---\n{}",
                            self.log()
                        );
                    }
                }
            }
        };
        self.ready = serde_json::from_str(&line).unwrap_or_else(|e| {
            panic!("the ready line is not {{\"api_url\",\"tunnel_addr\"}}: {e}: {line}")
        });
        self.child = Some(child);
    }

    /// `https://127.0.0.1:PORT`.
    pub fn api_url(&self) -> &str {
        &self.ready.api_url
    }

    /// `127.0.0.1:PORT` of the mTLS tunnel.
    pub fn tunnel_addr(&self) -> &str {
        &self.ready.tunnel_addr
    }

    /// The broker's folder (`broker.toml`, keys, store, `broker.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// The broker CA certificate clients trust.
    pub fn ca_path(&self) -> PathBuf {
        self.dir().join("ca.pem")
    }

    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.ca_path()).expect("read ca.pem")
    }

    /// The broker CA's private key (tests forge certificates with it).
    pub fn ca_key_pem(&self) -> String {
        std::fs::read_to_string(self.dir().join("ca.key")).expect("read ca.key")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir().join("broker.log")
    }

    /// Everything the broker logged so far (all runs).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// A mark to pass to [`Broker::wait_for_log_after`]: only lines logged
    /// after this call count.
    pub fn log_mark(&self) -> usize {
        File::open(self.log_path())
            .and_then(|f| f.metadata())
            .map(|m| m.len() as usize)
            .unwrap_or(0)
    }

    /// Waits for a log line after `mark` that satisfies `pred`; returns it.
    pub fn wait_for_log_after(
        &self,
        mark: usize,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_until(timeout, what, || {
                let log = self.log();
                log.get(mark..)
                    .unwrap_or("")
                    .lines()
                    .find(|l| pred(l))
                    .map(str::to_owned)
            })
        }));
        found.unwrap_or_else(|_| {
            panic!(
                "the broker logged no line for {what} within {timeout:?}\n--- log since mark ---\n{}",
                self.log().get(mark..).unwrap_or("")
            )
        })
    }

    /// Runs an admin command (`mcpgate-broker ARGS... --config broker.toml`).
    pub fn admin(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(broker_bin());
        cmd.args(args).arg("--config").arg(&self.config);
        process::run(cmd, None, STARTUP)
    }

    /// SIGTERM, then SIGKILL if it has not exited within a grace period.
    /// Returns whether it exited on SIGTERM.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let pid = Pid::from_raw(child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + STOP_GRACE;
        loop {
            if child.try_wait().expect("try_wait").is_some() {
                return true;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the broker (SIGTERM) and starts it again on the same config
    /// and data (the ports change: they are picked anew). Returns whether it
    /// exited on SIGTERM.
    pub fn stop_and_start(&mut self) -> bool {
        let graceful = self.stop();
        self.spawn();
        graceful
    }

    /// Kills the broker with SIGKILL (a crash: no chance to close anything
    /// out) and starts it again on the same config and data.
    pub fn crash_and_restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.spawn();
    }

    /// The broker's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- broker log ({}) ---\n{}",
                self.log_path().display(),
                self.log()
            );
        }
    }
}
