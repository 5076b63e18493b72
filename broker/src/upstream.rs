//! The upstream MCP server of one session: a stdio child process.
//!
//! The broker spawns one child per session with exactly the environment the
//! config gives it (nothing of the broker's own environment leaks in, so the
//! credentials in it are the only ones the server sees), in its own process
//! group (a signal aimed at the broker's group does not hit it, and a signal
//! aimed at the child reaches the helpers it started). Its stderr is a log,
//! never traffic: it goes to `tracing`, line by line, and never reaches the
//! client. [`Upstream::shutdown`] follows the stdio rules of MCP: close stdin,
//! wait, SIGTERM, wait, SIGKILL, because a server with a request in flight
//! may ignore the end of its input.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use mcpgate_shared::names::{ServerName, SessionId};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::task::JoinHandle;

use crate::config::StdioServer;

/// A stderr line longer than this is cut when logged, so a child that
/// writes without newlines cannot make the broker buffer without bound.
const MAX_STDERR_LINE: usize = 4096;
/// How long to wait for the exit status after SIGKILL. Only a process stuck
/// in the kernel takes longer; `kill_on_drop` and tokio's reaper then finish
/// the job.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// How long to let the stderr forwarder log what the child wrote last.
const STDERR_DRAIN: Duration = Duration::from_secs(1);

/// Why an upstream could not be started. Messages name the server and the
/// command, never environment values (they may be credentials).
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream server {server}: working directory {}: {source}", cwd.display())]
    Cwd {
        server: ServerName,
        cwd: PathBuf,
        source: io::Error,
    },
    #[error("upstream server {server}: environment variable name {name:?} is not valid")]
    EnvName { server: ServerName, name: String },
    #[error("upstream server {server}: cannot start {command:?}: {source}")]
    Spawn {
        server: ServerName,
        command: String,
        source: io::Error,
    },
    #[error("upstream server {server}: {command:?} started without piped {stream}")]
    Stdio {
        server: ServerName,
        command: String,
        stream: &'static str,
    },
}

/// How an upstream ended, as [`Upstream::shutdown`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// It exited on its own: after its stdin closed, or before.
    Exited(ExitStatus),
    /// It ignored the end of its input and needed SIGTERM.
    Terminated(ExitStatus),
    /// It ignored SIGTERM too and needed SIGKILL; `None` if even then its
    /// status did not come within a few seconds.
    Killed(Option<ExitStatus>),
    /// Its status could not be read.
    Unknown(String),
}

impl fmt::Display for Ending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ending::Exited(s) => write!(f, "exited ({s})"),
            Ending::Terminated(s) => write!(f, "needed SIGTERM ({s})"),
            Ending::Killed(Some(s)) => write!(f, "needed SIGKILL ({s})"),
            Ending::Killed(None) => f.write_str("needed SIGKILL (no exit status)"),
            Ending::Unknown(e) => write!(f, "unknown ({e})"),
        }
    }
}

/// One running upstream server process.
///
/// Dropping it kills the process (`kill_on_drop`); call
/// [`Upstream::shutdown`] to end it gracefully instead.
pub struct Upstream {
    server: ServerName,
    session: SessionId,
    child: Child,
    /// The child's process group (it leads its own), for signals that must
    /// also reach whatever it started.
    group: Option<Pid>,
    stdin: Option<ChildStdin>,
    stdout: Option<ChildStdout>,
    stderr_task: Option<JoinHandle<()>>,
    grace: Duration,
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("server", &self.server)
            .field("session", &self.session)
            .field("pid", &self.child.id())
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// Starts `spec` for one session. Must be called inside a tokio runtime.
    #[tracing::instrument(name = "upstream_spawn", skip_all, fields(%session, %server))]
    pub fn spawn(
        server: &ServerName,
        spec: &StdioServer,
        default_cwd: &Path,
        session: &SessionId,
    ) -> Result<Upstream, UpstreamError> {
        let cwd = spec.cwd.as_deref().unwrap_or(default_cwd);
        // Checked here because a missing cwd makes spawn fail with the same
        // "No such file or directory" as a missing command.
        match std::fs::metadata(cwd) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(UpstreamError::Cwd {
                    server: server.clone(),
                    cwd: cwd.to_owned(),
                    source: io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
                });
            }
            Err(source) => {
                return Err(UpstreamError::Cwd {
                    server: server.clone(),
                    cwd: cwd.to_owned(),
                    source,
                });
            }
        }

        let mut cmd = Command::new(&spec.command);
        cmd.args(&spec.args)
            .current_dir(cwd)
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // Its own group: the broker's Ctrl-C or a signal to the broker's
            // group must not cut the session short, and our SIGTERM reaches
            // the helpers a wrapper (`npx`, `sh -c`) started.
            .process_group(0);
        for (name, value) in &spec.env {
            if name.is_empty() || name.contains(['=', '\0']) {
                return Err(UpstreamError::EnvName {
                    server: server.clone(),
                    name: name.clone(),
                });
            }
            // The one place a configured credential leaves the broker.
            cmd.env(name, value.expose());
        }

        let mut child = cmd.spawn().map_err(|source| UpstreamError::Spawn {
            server: server.clone(),
            command: spec.command.clone(),
            source,
        })?;
        let missing = |stream| UpstreamError::Stdio {
            server: server.clone(),
            command: spec.command.clone(),
            stream,
        };
        let stdin = child.stdin.take().ok_or_else(|| missing("stdin"))?;
        let stdout = child.stdout.take().ok_or_else(|| missing("stdout"))?;
        let stderr = child.stderr.take().ok_or_else(|| missing("stderr"))?;
        let pid = child.id();
        let group = pid.and_then(|p| i32::try_from(p).ok()).map(Pid::from_raw);
        tracing::info!(
            target: "upstream",
            %session,
            %server,
            pid,
            command = %spec.command,
            "upstream started"
        );

        let stderr_task = tokio::spawn(forward_stderr(stderr, session.clone(), server.clone()));
        Ok(Upstream {
            server: server.clone(),
            session: session.clone(),
            child,
            group,
            stdin: Some(stdin),
            stdout: Some(stdout),
            stderr_task: Some(stderr_task),
            grace: spec.shutdown_grace,
        })
    }

    pub fn server(&self) -> &ServerName {
        &self.server
    }

    /// The child's process id, while it has not been reaped.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Hands the child's stdin and stdout to the relay. `None` the second
    /// time. Dropping the returned stdin is how the relay closes it.
    pub fn take_stdio(&mut self) -> Option<(ChildStdin, ChildStdout)> {
        match (self.stdin.take(), self.stdout.take()) {
            (Some(i), Some(o)) => Some((i, o)),
            (i, o) => {
                self.stdin = i;
                self.stdout = o;
                None
            }
        }
    }

    /// Resolves when the child has exited, on its own or not. Cancel safe,
    /// so a relay can `select!` on it; it keeps returning the same status
    /// once the child is gone.
    pub async fn exited(&mut self) -> io::Result<ExitStatus> {
        self.child.wait().await
    }

    /// The exit status if the child has already exited.
    pub fn try_exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Ends the child the way MCP's stdio transport asks for: close its
    /// stdin, wait `shutdown_grace`, SIGTERM, wait `shutdown_grace` again,
    /// SIGKILL. Signals go to its process group, and whatever is left in
    /// the group afterwards is killed: nothing a session started outlives
    /// it. Never takes much longer than twice the grace.
    pub async fn shutdown(mut self) -> Ending {
        drop(self.stdin.take());
        // A child blocked writing to a full stdout pipe that nobody reads
        // could not notice its stdin closing; dropping our end unblocks it.
        drop(self.stdout.take());

        let ending = match self.wait_for(self.grace).await {
            Some(Ok(status)) => Ending::Exited(status),
            Some(Err(e)) => Ending::Unknown(e.to_string()),
            None => {
                self.signal(Signal::SIGTERM);
                match self.wait_for(self.grace).await {
                    Some(Ok(status)) => Ending::Terminated(status),
                    Some(Err(e)) => Ending::Unknown(e.to_string()),
                    None => {
                        self.signal(Signal::SIGKILL);
                        match self.wait_for(KILL_WAIT).await {
                            Some(Ok(status)) => Ending::Killed(Some(status)),
                            _ => Ending::Killed(None),
                        }
                    }
                }
            }
        };
        // The leader is gone; sweep the group for helpers it left behind. The
        // group id cannot have been reused while any member is alive, and an
        // empty group just answers ESRCH.
        if let Some(group) = self.group
            && killpg(group, Signal::SIGKILL).is_ok()
        {
            tracing::debug!(
                target: "upstream",
                session = %self.session,
                server = %self.server,
                "killed processes the upstream left in its group"
            );
        }
        if let Some(mut task) = self.stderr_task.take()
            && tokio::time::timeout(STDERR_DRAIN, &mut task).await.is_err()
        {
            task.abort();
        }
        tracing::info!(
            target: "upstream",
            session = %self.session,
            server = %self.server,
            ending = %ending,
            "upstream ended"
        );
        ending
    }

    async fn wait_for(&mut self, limit: Duration) -> Option<io::Result<ExitStatus>> {
        tokio::time::timeout(limit, self.child.wait()).await.ok()
    }

    fn signal(&mut self, signal: Signal) {
        tracing::debug!(
            target: "upstream",
            session = %self.session,
            server = %self.server,
            %signal,
            "signalling upstream"
        );
        let sent = match self.group {
            Some(group) => killpg(group, signal).map_err(io::Error::from),
            // No pid to aim at: only the kill tokio itself can send is left.
            None if signal == Signal::SIGKILL => self.child.start_kill(),
            None => Ok(()),
        };
        if let Err(e) = sent {
            tracing::debug!(target: "upstream", server = %self.server, error = %e, "signal not sent");
        }
    }
}

/// Logs the child's stderr line by line. Lines are cut at
/// [`MAX_STDERR_LINE`] bytes (the rest up to the newline is skipped) and
/// decoded lossily: it is a log, not a protocol.
async fn forward_stderr(stderr: impl AsyncRead + Unpin, session: SessionId, server: ServerName) {
    let mut reader = BufReader::new(stderr);
    let mut line: Vec<u8> = Vec::new();
    let mut cut = false;
    loop {
        let chunk = match reader.fill_buf().await {
            Ok([]) => break,
            Ok(chunk) => chunk,
            Err(e) => {
                tracing::debug!(target: "upstream", %session, %server, error = %e, "stderr read failed");
                break;
            }
        };
        let (part, used, end_of_line) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (&chunk[..i], i + 1, true),
            None => (chunk, chunk.len(), false),
        };
        let room = MAX_STDERR_LINE.saturating_sub(line.len());
        if part.len() > room {
            cut = true;
        }
        line.extend_from_slice(&part[..part.len().min(room)]);
        reader.consume(used);
        if end_of_line {
            log_stderr_line(&line, cut, &session, &server);
            line.clear();
            cut = false;
        }
    }
    if !line.is_empty() {
        log_stderr_line(&line, cut, &session, &server);
    }
}

fn log_stderr_line(line: &[u8], cut: bool, session: &SessionId, server: &ServerName) {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end();
    if text.is_empty() {
        return;
    }
    tracing::info!(target: "upstream", %session, %server, cut, "stderr: {text}");
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    use mcpgate_shared::secret::Secret;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::time::timeout;

    use super::*;

    /// Every test bounds its own run time: a broken shutdown must fail the
    /// test, not hang the suite.
    const TEST_LIMIT: Duration = Duration::from_secs(20);

    fn spec(command: &str, args: &[&str], env: &[(&str, &str)]) -> StdioServer {
        StdioServer {
            description: None,
            command: command.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            cwd: None,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), Secret::new(v.to_string())))
                .collect::<BTreeMap<_, _>>(),
            shutdown_grace: Duration::from_millis(300),
        }
    }

    fn start(spec: &StdioServer) -> Upstream {
        Upstream::spawn(
            &"test".parse().unwrap(),
            spec,
            Path::new("/"),
            &"s-1".parse().unwrap(),
        )
        .unwrap()
    }

    async fn read_all(out: &mut ChildStdout) -> String {
        let mut s = String::new();
        out.read_to_string(&mut s).await.unwrap();
        s
    }

    /// Reads one line: used to wait until a script has set its traps, so
    /// the test does not race the shell.
    async fn read_line(out: &mut ChildStdout) -> String {
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while out.read(&mut byte).await.unwrap() == 1 && byte[0] != b'\n' {
            line.push(byte[0]);
        }
        String::from_utf8(line).unwrap()
    }

    #[tokio::test]
    async fn child_sees_exactly_the_configured_environment() {
        timeout(TEST_LIMIT, async {
            // Whatever the test process has (PATH, HOME, CARGO_*) must not
            // reach the child.
            let inherited: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
            assert!(!inherited.is_empty());
            let mut up = start(&spec(
                "/usr/bin/env",
                &[],
                &[("MCPGATE_TEST_TOKEN", "t0k3n")],
            ));
            let (_stdin, mut stdout) = up.take_stdio().unwrap();
            let out = read_all(&mut stdout).await;
            assert_eq!(out, "MCPGATE_TEST_TOKEN=t0k3n\n");
            for name in inherited {
                assert!(!out.contains(&format!("{name}=")), "{name} leaked");
            }
            assert!(matches!(up.shutdown().await, Ending::Exited(s) if s.success()));
        })
        .await
        .unwrap();
    }

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn stderr_goes_to_the_log_not_to_stdout() {
        let logs = Captured::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .finish();
        // The test runtime is single-threaded, so the stderr task runs under
        // this thread's default subscriber.
        let _guard = tracing::subscriber::set_default(subscriber);
        timeout(TEST_LIMIT, async {
            let mut up = start(&spec(
                "/bin/sh",
                &["-c", "echo to-stdout; echo to-stderr-xyz >&2"],
                &[],
            ));
            let (_stdin, mut stdout) = up.take_stdio().unwrap();
            assert_eq!(read_all(&mut stdout).await, "to-stdout\n");
            up.shutdown().await;
        })
        .await
        .unwrap();
        let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
        let line = logs
            .lines()
            .find(|l| l.contains("to-stderr-xyz"))
            .unwrap_or_else(|| panic!("stderr line not logged: {logs}"));
        assert!(line.contains("upstream") && line.contains("s-1"), "{line}");
    }

    #[tokio::test]
    async fn a_child_that_exits_on_eof_needs_no_signal() {
        timeout(TEST_LIMIT, async {
            let up = start(&spec("/bin/cat", &[], &[]));
            assert!(matches!(up.shutdown().await, Ending::Exited(s) if s.success()));
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn shutdown_sends_sigterm_to_a_child_that_ignores_eof() {
        timeout(TEST_LIMIT, async {
            let mut up = start(&spec(
                "/bin/sh",
                &["-c", "echo ready; exec sleep 1000"],
                &[],
            ));
            let (stdin, mut stdout) = up.take_stdio().unwrap();
            assert_eq!(read_line(&mut stdout).await, "ready");
            drop((stdin, stdout));
            let ending = up.shutdown().await;
            assert!(matches!(ending, Ending::Terminated(_)), "{ending}");
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn shutdown_sends_sigkill_to_a_child_that_traps_sigterm() {
        timeout(TEST_LIMIT, async {
            let mut up = start(&spec(
                "/bin/sh",
                &["-c", "trap '' TERM; echo ready; while :; do sleep 1; done"],
                &[],
            ));
            let (stdin, mut stdout) = up.take_stdio().unwrap();
            assert_eq!(read_line(&mut stdout).await, "ready");
            drop((stdin, stdout));
            let ending = up.shutdown().await;
            assert!(matches!(ending, Ending::Killed(Some(_))), "{ending}");
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn a_crash_is_observable_while_relaying() {
        timeout(TEST_LIMIT, async {
            let mut up = start(&spec("/bin/sh", &["-c", "exit 3"], &[]));
            let (_stdin, _stdout) = up.take_stdio().unwrap();
            let status = up.exited().await.unwrap();
            assert_eq!(status.code(), Some(3));
            // Cached: asking again (as shutdown does) gives the same answer.
            assert!(matches!(up.shutdown().await, Ending::Exited(s) if s.code() == Some(3)));
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn errors_name_server_and_command_but_no_env_values() {
        let s = spec(
            "/nonexistent/mcp-server",
            &[],
            &[("DB_PASSWORD", "s3cr3t-value")],
        );
        let err = Upstream::spawn(
            &"db".parse().unwrap(),
            &s,
            Path::new("/"),
            &"s-2".parse().unwrap(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("db") && err.contains("/nonexistent/mcp-server"),
            "{err}"
        );
        assert!(!err.contains("s3cr3t-value"), "{err}");

        let mut s = spec("/bin/cat", &[], &[]);
        s.cwd = Some("/nonexistent-dir".into());
        let err = Upstream::spawn(
            &"db".parse().unwrap(),
            &s,
            Path::new("/"),
            &"s-3".parse().unwrap(),
        )
        .unwrap_err();
        assert!(matches!(err, UpstreamError::Cwd { .. }), "{err}");
    }

    #[tokio::test]
    async fn stdio_is_handed_out_once_and_carries_traffic() {
        timeout(TEST_LIMIT, async {
            let mut up = start(&spec("/bin/cat", &[], &[]));
            let (mut stdin, mut stdout) = up.take_stdio().unwrap();
            assert!(up.take_stdio().is_none());
            stdin.write_all(b"hello\n").await.unwrap();
            drop(stdin);
            assert_eq!(read_all(&mut stdout).await, "hello\n");
            up.shutdown().await;
        })
        .await
        .unwrap();
    }
}
