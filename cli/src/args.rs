//! Command-line arguments. The doc comments here are the `--help` text.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum, ValueHint};
use mcpgate_shared::names::{ServerName, SessionId, UserName};

use crate::approvals::ApprovalId;
use crate::client::BrokerUrl;
use crate::env;

/// Shown by `mcpgate --help` (not `-h`). Lists every exit code in
/// `error::exit`; a test keeps the two in step.
pub const AFTER_LONG_HELP: &str = "\
Environment:
  MCPGATE_HOME              state dir (default: $XDG_CONFIG_HOME/mcpgate or ~/.config/mcpgate)
  MCPGATE_CREDENTIAL_STORE  where the token goes: auto (OS keyring, else a 0600 file), keyring, file
  MCPGATE_BROKER, MCPGATE_USER, MCPGATE_CA_CERT, MCPGATE_ISSUER
                            defaults for mcpgate login --broker, --user, --ca-cert, --issuer
  MCPGATE_NO_BROWSER        any value: mcpgate login prints the URL but opens no browser
  MCPGATE_LOGIN_TIMEOUT     how long mcpgate login waits for the browser or device login,
                            e.g. 30s (default 5m for the browser, the code's lifetime for --device)
  MCPGATE_CI                1 or true: status, servers and connect log in from the CI sources
                            below each time (broker from MCPGATE_BROKER, CA from MCPGATE_CA_CERT,
                            provider from MCPGATE_ISSUER) and read or write no state dir
  MCPGATE_CI_TOKEN          CI: an OIDC token the broker trusts, e.g. GitHub Actions' ID token
  MCPGATE_CI_TOKEN_FILE     CI: a file holding such a token (default for --token-file)
  MCPGATE_CLIENT_ID, MCPGATE_CLIENT_SECRET
                            CI: client credentials for the provider's token endpoint
  MCPGATE_RESOURCE          CI: the resource indicator for client credentials (default for
                            --resource; normally the broker advertises it)
  MCPGATE_LOG               diagnostics on stderr, e.g. debug
  COLUMNS                   width to cut long lines of mcpgate approvals to (default 120)
  NO_COLOR                  no colour on stderr

Exit codes:
   0  success
   1  anything else (local files, OS keyring, broker-side or identity provider error,
      a decision not confirmed at the prompt, a record that fails mcpgate audit verify)
   2  usage: bad arguments or environment
  10  not logged in
  11  token expired or rejected (or not renewed), login refused, or login not completed
  12  no access: to the server, to decide that approval request, to request access, or to
      other users' records (needs a role with audit = true)
  13  unknown server
  14  broker or identity provider unreachable
  15  session certificate rejected or tunnel refused
  16  rate limited by the broker
  17  session ended by the broker
  18  approval request or recorded session not found (or not one you may see)
  19  approval request no longer pending, or changed since it was shown
  20  access request denied by an approver
  21  access request expired or cancelled before anyone decided";

/// Sign in to an mcpgate broker and connect MCP clients to the servers it
/// guards
#[derive(Debug, Parser)]
#[command(
    name = "mcpgate",
    version,
    propagate_version = true,
    after_long_help = AFTER_LONG_HELP,
    max_term_width = 100
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Sign in to a broker and keep the token in the OS keyring (or a 0600
    /// file)
    ///
    /// Without --user, asks the broker how to log in and uses its OpenID
    /// Provider (the first, or the one --issuer names): it prints a URL to
    /// open in a browser and waits for the login on a 127.0.0.1 redirect, or
    /// with --device prints a URL and a code to enter on any other device.
    /// The refresh token is kept too, so later commands renew the login on
    /// their own until the identity provider ends it.
    ///
    /// With --user, logs in with a password: read from the terminal without
    /// echo, or from the first line of stdin when stdin is not a terminal or
    /// --password-stdin is given.
    ///
    /// With --ci, logs in without a browser from a CI token or client
    /// credentials (see MCPGATE_CI_TOKEN and the other CI variables in
    /// mcpgate --help), prints who the broker says you are, and keeps
    /// nothing unless --save is given.
    ///
    /// The broker URL, its CA, your roles and how you logged in are kept in
    /// the state dir for the other commands.
    Login(LoginArgs),

    /// Forget the token and the broker settings on this machine
    ///
    /// For an OpenID Connect login, first revokes the refresh token at the
    /// identity provider (when it offers revocation; a failure is a warning).
    /// Then deletes the token from the OS keyring and the credentials file,
    /// and the state file. Running it when not logged in is not an error.
    Logout,

    /// Show who you are logged in as, at which broker, and until when
    ///
    /// For an OpenID Connect login, also the identity provider (issuer), the
    /// expiry of the token presented to the broker, and whether a refresh
    /// token is kept to renew it.
    Status(StatusArgs),

    /// List the MCP servers you may connect to
    Servers(ServersArgs),

    /// Relay MCP between stdin/stdout and a server, through the broker
    ///
    /// Makes a fresh key pair in memory, asks the broker for a short-lived
    /// session certificate, opens an mTLS tunnel and relays newline-delimited
    /// JSON-RPC: stdin to the broker, the broker to stdout. Only MCP goes to
    /// stdout; diagnostics go to stderr. Use it as the command of an MCP
    /// client's stdio server entry, e.g. `mcpgate connect db`.
    Connect(ConnectArgs),

    /// List the approval requests you may decide, and your own
    ///
    /// Held calls (a policy rule asked for a person's approval before the
    /// call reaches the server) and just-in-time access requests. Shows
    /// who asked, for which server, the call and its arguments (cut to the
    /// terminal's width), the rule and reason, approvals so far, and how
    /// long the request has left. Decide with mcpgate approve ID or
    /// mcpgate deny ID.
    ///
    /// With --watch, keeps running: prints the current requests, then each
    /// new request and each change (an approval recorded, approved,
    /// denied, expired, cancelled) as it happens, one timestamped block or
    /// line each, until Ctrl-C. With --output json, each of those is one
    /// JSON object a line: {"at", "event", "approval"}.
    Approvals(ApprovalsArgs),

    /// Approve a held call or an access request
    ///
    /// Shows exactly what is being approved (requester, server, session,
    /// method, name, the full arguments, rule, reason and the digest that
    /// binds them), asks for confirmation when stdin is a terminal (unless
    /// --yes), then sends the decision with that digest: it cannot apply to
    /// anything else than what was shown. Prints the resulting state.
    Approve(DecideArgs),

    /// Deny a held call or an access request
    ///
    /// Shows the request like mcpgate approve, asks for confirmation when
    /// stdin is a terminal (unless --yes), then denies it; one denial
    /// decides. The --reason is shown to the requester.
    Deny(DecideArgs),

    /// Ask for access to a server for a while; an approver must grant it
    ///
    /// Prints the request's id on stdout. With --wait, waits for the
    /// decision and exits 0 when access is granted, 20 when it is denied,
    /// 21 when nobody decided in time. Without --wait, mcpgate grants
    /// shows the grant once it is approved.
    RequestAccess(RequestAccessArgs),

    /// List access grants, live and expired, newest first
    ///
    /// Your own, and for the servers you approve, everyone's: who had
    /// access to which server until when, who approved it and why.
    Grants(GrantsArgs),

    /// List recorded sessions, newest first
    ///
    /// Your own sessions; with a role that has audit = true, everyone's.
    /// For each: the session id, user, server, when it started, how long it
    /// ran, its state (live, closed, aborted: the broker stopped first,
    /// deleted: removed by retention, with a signed tombstone), and how many
    /// events, tool calls and denied calls it recorded. Replay one with
    /// mcpgate replay SESSION.
    Sessions(SessionsArgs),

    /// Show a recorded session as a timeline
    ///
    /// First who opened it, when, from where and with which certificate;
    /// then each event with its time since the start: messages (→ client
    /// to server, ← server to client, ↩ the broker answering the client
    /// itself, ↪ the broker to the server) with the method, the tool and
    /// its arguments, results as they were masked, with how long the call
    /// took and what was masked; decisions (ALLOW, DENY, HOLD, APPROVE, ...)
    /// with the rule, the reason and the approvers; the end and the seal.
    /// Text others chose is shown with invisible characters escaped.
    ///
    /// By default prints everything at once. --speed 1 replays with the
    /// recorded timing, --speed 10 ten times faster. --follow keeps going
    /// while a live session is recorded, until its seal. --output json
    /// prints each event as one JSON line instead, exactly as recorded.
    Replay(ReplayArgs),

    /// Verify, export and report on session records (auditors)
    ///
    /// verify works on any session you may see; export and report need a
    /// role with audit = true.
    #[command(subcommand)]
    Audit(AuditCommand),

    /// Print a shell completion script to stdout
    ///
    /// For example: `mcpgate completions bash > ~/.local/share/bash-completion/completions/mcpgate`
    Completions(CompletionsArgs),
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The broker's HTTPS URL, e.g. https://mcpgate.example.com:8443
    #[arg(long, value_name = "URL", env = env::MCPGATE_BROKER, value_hint = ValueHint::Url)]
    pub broker: BrokerUrl,

    /// PEM file with the CA that signed the broker's certificate; kept for
    /// later commands (default: the system's root certificates)
    #[arg(long, value_name = "FILE", env = env::MCPGATE_CA_CERT, value_hint = ValueHint::FilePath)]
    pub ca_cert: Option<PathBuf>,

    /// Your user name at the broker, for a password login; without it,
    /// mcpgate logs in with the broker's OpenID Provider
    #[arg(long, value_name = "NAME", env = env::MCPGATE_USER)]
    pub user: Option<UserName>,

    /// Read the password from the first line of stdin (implied when stdin
    /// is not a terminal); needs --user
    #[arg(long, conflicts_with_all = ["device", "ci"])]
    pub password_stdin: bool,

    /// The OpenID Provider to log in with: the broker's name for it or its
    /// issuer URL (default: the broker's first). With --ci and client
    /// credentials, any issuer URL the broker trusts
    #[arg(long, value_name = "NAME_OR_URL", env = env::MCPGATE_ISSUER)]
    pub issuer: Option<String>,

    /// Log in on another device: print a URL and a code to enter there
    /// (OAuth device authorization grant), for machines without a browser
    #[arg(long, conflicts_with = "ci")]
    pub device: bool,

    /// Print the login URL but do not try to open a browser (also:
    /// MCPGATE_NO_BROWSER)
    #[arg(long)]
    pub no_browser: bool,

    /// Log in without a browser from a CI token or client credentials (see
    /// the CI variables in mcpgate --help); keeps nothing unless --save
    #[arg(long)]
    pub ci: bool,

    /// With --ci: a file holding the CI's OIDC token (default:
    /// MCPGATE_CI_TOKEN_FILE; MCPGATE_CI_TOKEN comes first)
    #[arg(long, value_name = "FILE", requires = "ci", value_hint = ValueHint::FilePath)]
    pub token_file: Option<PathBuf>,

    /// With --ci: keep the token like a login (without a refresh token), so
    /// later commands use it until it expires
    #[arg(long, requires = "ci")]
    pub save: bool,

    /// With --ci and client credentials: the resource indicator to ask the
    /// token for (default: MCPGATE_RESOURCE, else what the broker advertises)
    #[arg(long, value_name = "URI", requires = "ci")]
    pub resource: Option<String>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Also ask the broker whether the token is still good (renewing an
    /// OpenID Connect login first when it is due)
    #[arg(long)]
    pub check: bool,

    #[command(flatten)]
    pub output: OutputArg,
}

#[derive(Debug, Args)]
pub struct ServersArgs {
    #[command(flatten)]
    pub output: OutputArg,
}

#[derive(Debug, Args)]
pub struct OutputArg {
    /// Output format on stdout
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// For people
    Text,
    /// For programs: one JSON document
    Json,
}

#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// The server to connect to, as `mcpgate servers` lists it
    #[arg(value_name = "SERVER")]
    pub server: ServerName,
}

#[derive(Debug, Args)]
pub struct ApprovalsArgs {
    /// Requests in every state, not only pending ones (same as --state all)
    #[arg(long, conflicts_with = "state")]
    pub all: bool,

    /// Only requests in this state
    #[arg(long, value_enum, default_value_t = StateFilter::Pending)]
    pub state: StateFilter,

    /// Keep running and print new requests and changes as they happen,
    /// until Ctrl-C
    #[arg(long, short = 'w')]
    pub watch: bool,

    #[command(flatten)]
    pub output: OutputArg,
}

impl ApprovalsArgs {
    /// The states asked for, `--all` included.
    pub fn filter(&self) -> StateFilter {
        if self.all {
            StateFilter::All
        } else {
            self.state
        }
    }
}

/// Which approval requests to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StateFilter {
    /// Waiting for a decision
    Pending,
    Approved,
    Denied,
    /// Nobody decided in time
    Expired,
    /// The session ended or the client cancelled the call first
    Cancelled,
    /// Every state
    All,
}

impl StateFilter {
    /// The broker's name for it (`GET /v1/approvals?state=`).
    pub fn as_str(self) -> &'static str {
        match self {
            StateFilter::Pending => "pending",
            StateFilter::Approved => "approved",
            StateFilter::Denied => "denied",
            StateFilter::Expired => "expired",
            StateFilter::Cancelled => "cancelled",
            StateFilter::All => "all",
        }
    }
}

#[derive(Debug, Args)]
pub struct DecideArgs {
    /// The request's id (apr_ and 32 hex digits), as mcpgate approvals
    /// lists it
    #[arg(value_name = "ID")]
    pub id: ApprovalId,

    /// Why; recorded with the decision and shown to the requester
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,

    /// Do not ask for confirmation (it is asked only when stdin is a
    /// terminal)
    #[arg(long, short = 'y')]
    pub yes: bool,

    #[command(flatten)]
    pub output: OutputArg,
}

#[derive(Debug, Args)]
pub struct RequestAccessArgs {
    /// The server to ask access to
    #[arg(value_name = "SERVER")]
    pub server: ServerName,

    /// For how long, e.g. 30m, 1h, 2h 30m (at most what your role allows)
    #[arg(long, value_name = "DURATION", value_parser = parse_access_duration)]
    pub duration: Duration,

    /// Why you need it; the approvers see it, and it is recorded
    #[arg(long, value_name = "TEXT")]
    pub reason: String,

    /// Wait for the decision (exit 0 granted, 20 denied, 21 expired)
    #[arg(long)]
    pub wait: bool,
}

/// A `--duration`: humantime's form, whole seconds, more than zero.
pub fn parse_access_duration(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text.trim())
        .map_err(|e| format!("not a duration like 30m or 1h: {e}"))?;
    if d.is_zero() {
        return Err("must be longer than zero".into());
    }
    if d.subsec_nanos() != 0 {
        return Err("must be whole seconds".into());
    }
    Ok(d)
}

#[derive(Debug, Args)]
pub struct GrantsArgs {
    #[command(flatten)]
    pub output: OutputArg,
}

/// A point in time on the command line, in unix milliseconds: RFC 3339
/// (`2026-05-01T18:00:00Z`, UTC; the `Z` may be left out), a date
/// (`2026-05-01`: midnight UTC), `now`, or a span back from now (`2h`,
/// `7d`, `1h 30m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeArg(pub u64);

/// What `--since` and `--until` accept, for their help.
const TIME_FORMS: &str =
    "2026-05-01T18:00:00Z, 2026-05-01, now, or a span back from now like 2h or 7d";

/// Parses a [`TimeArg`] relative to the clock.
pub fn parse_time(text: &str) -> Result<TimeArg, String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    parse_time_at(text, now)
}

/// Parses a [`TimeArg`] relative to `now_ms`.
pub fn parse_time_at(text: &str, now_ms: u64) -> Result<TimeArg, String> {
    let text = text.trim();
    let err = || format!("{text:?} is not a time: use {TIME_FORMS}");
    if text.is_empty() {
        return Err(err());
    }
    if text == "now" {
        return Ok(TimeArg(now_ms));
    }
    if text.starts_with(|c: char| c.is_ascii_digit()) && text.contains('-') {
        let full = if text.len() == 10 {
            format!("{text}T00:00:00Z")
        } else {
            text.to_owned()
        };
        let at = humantime::parse_rfc3339_weak(&full).map_err(|_| err())?;
        let ms = at
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|_| err())?
            .as_millis();
        return u64::try_from(ms).map(TimeArg).map_err(|_| err());
    }
    let back = humantime::parse_duration(text).map_err(|_| err())?;
    Ok(TimeArg(now_ms.saturating_sub(back.as_millis() as u64)))
}

/// A session id as mcpgate sessions lists it.
pub fn parse_session(text: &str) -> Result<SessionId, String> {
    text.trim()
        .parse()
        .map_err(|e| format!("{e}; use an id as mcpgate sessions lists it"))
}

/// `--speed`: a positive number.
pub fn parse_speed(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 => Ok(x),
        _ => Err(format!(
            "{text:?} is not a speed: use a number above 0, e.g. 1 for real time or 10 for ten times faster"
        )),
    }
}

#[derive(Debug, Args)]
pub struct SessionsArgs {
    /// Only this user's sessions (other users' need a role with audit = true)
    #[arg(long, value_name = "USER")]
    pub user: Option<UserName>,

    /// Only sessions to this server
    #[arg(long, value_name = "SERVER")]
    pub server: Option<ServerName>,

    /// Only sessions active at or after this time: 2026-05-01T18:00:00Z,
    /// 2026-05-01, or a span back from now like 2h or 7d
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub since: Option<TimeArg>,

    #[command(flatten)]
    pub output: OutputArg,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The session's id, as mcpgate sessions lists it
    #[arg(value_name = "SESSION", value_parser = parse_session)]
    pub session: SessionId,

    /// Keep going while the session is recorded, until it ends
    #[arg(long, short = 'f')]
    pub follow: bool,

    /// Replay with the recorded timing divided by this: 1 is real time, 10
    /// ten times faster (default: print at once)
    #[arg(long, value_name = "X", value_parser = parse_speed)]
    pub speed: Option<f64>,

    #[command(flatten)]
    pub output: OutputArg,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Ask the broker to verify a session's record
    ///
    /// Checks every event's hash chain, the signed checkpoints and seal,
    /// and the index entry, against the broker's audit key. Prints OK, or
    /// each problem (which event, what is wrong) and exits 1. To verify
    /// without trusting the broker, copy the records and its public key
    /// and run mcpgate-broker verify.
    Verify(AuditVerifyArgs),

    /// Export every recorded event in a period for a SIEM (audit role)
    ///
    /// One event a line with stable field names (see the README): JSON
    /// lines, or CSV with a header line. Shows a progress bar on stderr when
    /// writing to a file from a terminal.
    Export(ExportArgs),

    /// Write the SOC 2 evidence report for a period (audit role)
    ///
    /// For each criterion (CC6.1, CC6.2/6.3, CC6.6, CC6.7, CC6.8,
    /// CC7.2/7.3, CC8.1, C1.1/1.2 and the integrity of the records), what
    /// the broker recorded: sessions, certificates issued, access requests,
    /// decisions, approvals, masking, deletions, and the verification of
    /// every record. Markdown or HTML.
    Report(ReportArgs),
}

#[derive(Debug, Args)]
pub struct AuditVerifyArgs {
    /// The session's id, as mcpgate sessions lists it
    #[arg(value_name = "SESSION", value_parser = parse_session)]
    pub session: SessionId,

    #[command(flatten)]
    pub output: OutputArg,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Events from this time on: 2026-05-01T18:00:00Z, 2026-05-01, or a
    /// span back from now like 7d
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub since: TimeArg,

    /// Events before this time (default: now)
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub until: Option<TimeArg>,

    /// jsonl (one JSON object a line) or csv
    #[arg(long, value_enum, default_value_t = ExportFormatArg::Jsonl)]
    pub format: ExportFormatArg,

    /// Write to FILE instead of stdout (kept as FILE.part until complete)
    #[arg(long = "out", short = 'o', value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormatArg {
    /// One JSON object a line
    Jsonl,
    /// CSV with a header line
    Csv,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The period's start: 2026-05-01T18:00:00Z, 2026-05-01, or a span back
    /// from now like 90d
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub since: TimeArg,

    /// The period's end (default: now)
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub until: Option<TimeArg>,

    /// md (Markdown) or html
    #[arg(long, value_enum, default_value_t = ReportFormatArg::Md)]
    pub format: ReportFormatArg,

    /// Write to FILE instead of stdout
    #[arg(long = "out", short = 'o', value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormatArg {
    /// Markdown
    Md,
    /// One self-contained HTML page
    Html,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to write the script for
    #[arg(value_enum)]
    pub shell: CompletionShell,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
    Powershell,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;
    use crate::error::exit;

    #[test]
    fn access_durations_are_whole_positive_humantime() {
        assert_eq!(parse_access_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_access_duration(" 90s "), Ok(Duration::from_secs(90)));
        assert_eq!(
            parse_access_duration("2h 30m"),
            Ok(Duration::from_secs(9000))
        );
        assert!(parse_access_duration("0m").is_err());
        assert!(parse_access_duration("1500ms").is_err());
        assert!(parse_access_duration("an hour").is_err());
        assert!(parse_access_duration("").is_err());
    }

    #[test]
    fn times_are_rfc3339_dates_or_spans_back_from_now() {
        let now = 1_800_000_000_000; // 2027-01-15T08:00:00Z
        let at = |t: &str| parse_time_at(t, now).map(|t| t.0);
        assert_eq!(at("2h"), Ok(now - 7_200_000));
        assert_eq!(at("7d"), Ok(now - 7 * 86_400_000));
        assert_eq!(at(" 1h 30m "), Ok(now - 5_400_000));
        assert_eq!(at("now"), Ok(now));
        assert_eq!(at("2027-01-15T08:00:00Z"), Ok(now));
        assert_eq!(at("2027-01-15T08:00:00.250Z"), Ok(now + 250));
        assert_eq!(at("2027-01-15 08:00:00"), Ok(now));
        assert_eq!(at("2027-01-15"), Ok(now - 8 * 3_600_000));
        for bad in [
            "",
            "yesterday",
            "2027-13-01",
            "2027-01-15T08:00:00+02:00",
            "-2h",
            "2h ago",
        ] {
            let err = at(bad).unwrap_err();
            assert!(
                err.contains("is not a time: use 2026-05-01T18:00:00Z"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn speeds_and_session_ids_are_checked() {
        assert_eq!(parse_speed("1"), Ok(1.0));
        assert_eq!(parse_speed("0.5"), Ok(0.5));
        for bad in ["0", "-1", "fast", "inf", "NaN"] {
            assert!(parse_speed(bad).is_err(), "{bad}");
        }
        assert!(parse_session("5e550001-0000-4000-8000-000000000001").is_ok());
        let err = parse_session("../etc/passwd").unwrap_err();
        assert!(err.contains("mcpgate sessions lists it"), "{err}");
    }

    #[test]
    fn record_commands_parse() {
        let id = "5e550001-0000-4000-8000-000000000001";
        let cli = Cli::try_parse_from([
            "mcpgate", "sessions", "--user", "bob", "--server", "db", "--since", "2h", "-o", "json",
        ])
        .unwrap();
        let Command::Sessions(s) = cli.command else {
            panic!("not sessions")
        };
        assert_eq!(s.user.unwrap().as_str(), "bob");
        assert_eq!(s.output.output, Output::Json);
        assert!(s.since.is_some());

        let cli =
            Cli::try_parse_from(["mcpgate", "replay", id, "--follow", "--speed", "2"]).unwrap();
        let Command::Replay(r) = cli.command else {
            panic!("not replay")
        };
        assert_eq!(r.session.as_str(), id);
        assert!(r.follow);
        assert_eq!(r.speed, Some(2.0));

        let cli = Cli::try_parse_from(["mcpgate", "audit", "verify", id]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Audit(AuditCommand::Verify(_))
        ));
        let cli = Cli::try_parse_from([
            "mcpgate", "audit", "export", "--since", "7d", "--format", "csv", "-o", "e.csv",
        ])
        .unwrap();
        let Command::Audit(AuditCommand::Export(e)) = cli.command else {
            panic!("not export")
        };
        assert_eq!(e.format, ExportFormatArg::Csv);
        assert_eq!(e.out.unwrap(), PathBuf::from("e.csv"));
        assert!(e.until.is_none());
        let cli = Cli::try_parse_from([
            "mcpgate",
            "audit",
            "report",
            "--since",
            "2026-01-01",
            "--until",
            "2026-02-01",
            "--format",
            "html",
        ])
        .unwrap();
        let Command::Audit(AuditCommand::Report(r)) = cli.command else {
            panic!("not report")
        };
        assert_eq!(r.format, ReportFormatArg::Html);
        assert_eq!(r.since.0, 1_767_225_600_000);

        for bad in [
            &["replay"][..],
            &["replay", "a b"],
            &["replay", id, "--speed", "0"],
            &["sessions", "--since", "yesterday"],
            &["audit", "export"],
            &["audit", "export", "--since", "7d", "--format", "xml"],
            &["audit", "report", "--since", "soon"],
        ] {
            let mut argv = vec!["mcpgate"];
            argv.extend_from_slice(bad);
            assert_eq!(
                Cli::try_parse_from(argv).unwrap_err().exit_code(),
                2,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn help_lists_every_exit_code() {
        for code in exit::ALL {
            let line = format!("\n{code:>4}  ");
            assert!(
                AFTER_LONG_HELP.contains(&line),
                "exit code {code} missing from help"
            );
        }
    }

    #[test]
    fn parses_the_documented_forms() {
        let cli = Cli::try_parse_from([
            "mcpgate",
            "login",
            "--broker",
            "https://127.0.0.1:8443",
            "--user",
            "alice",
            "--ca-cert",
            "ca.pem",
            "--password-stdin",
        ])
        .unwrap();
        let Command::Login(login) = cli.command else {
            panic!("not login")
        };
        assert_eq!(login.broker.to_string(), "https://127.0.0.1:8443");
        assert!(login.password_stdin);

        let cli = Cli::try_parse_from(["mcpgate", "servers", "--output", "json"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Servers(ServersArgs {
                output: OutputArg {
                    output: Output::Json
                }
            })
        ));

        let cli = Cli::try_parse_from([
            "mcpgate",
            "login",
            "--broker",
            "https://127.0.0.1:8443",
            "--issuer",
            "corp",
            "--device",
        ])
        .unwrap();
        let Command::Login(login) = cli.command else {
            panic!("not login")
        };
        assert!(login.user.is_none() && login.device);
        assert_eq!(login.issuer.as_deref(), Some("corp"));

        let cli = Cli::try_parse_from([
            "mcpgate",
            "login",
            "--broker",
            "https://127.0.0.1:8443",
            "--ci",
            "--token-file",
            "/run/token",
            "--save",
        ])
        .unwrap();
        let Command::Login(login) = cli.command else {
            panic!("not login")
        };
        assert!(login.ci && login.save);

        for bad in [
            &["--device", "--ci"][..],
            &["--save"],
            &["--token-file", "t"],
            &["--password-stdin", "--device"],
        ] {
            let mut argv = vec!["mcpgate", "login", "--broker", "https://b"];
            argv.extend_from_slice(bad);
            let err = Cli::try_parse_from(argv).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad:?}");
        }

        let id = "apr_0123456789abcdef0123456789abcdef";
        let cli = Cli::try_parse_from(["mcpgate", "approve", id, "--reason", "ok", "-y"]).unwrap();
        let Command::Approve(approve) = cli.command else {
            panic!("not approve")
        };
        assert_eq!(approve.id.as_str(), id);
        assert!(approve.yes);
        assert_eq!(approve.reason.as_deref(), Some("ok"));
        for bad in [
            "apr_123",
            "0123456789abcdef0123456789abcdef",
            "apr_../../v1/x",
        ] {
            let err = Cli::try_parse_from(["mcpgate", "deny", bad]).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad}");
        }

        let cli = Cli::try_parse_from(["mcpgate", "approvals", "--all", "--watch", "-o", "json"])
            .unwrap();
        let Command::Approvals(list) = cli.command else {
            panic!("not approvals")
        };
        assert!(list.watch && list.filter() == StateFilter::All);
        let cli = Cli::try_parse_from(["mcpgate", "approvals"]).unwrap();
        let Command::Approvals(list) = cli.command else {
            panic!("not approvals")
        };
        assert_eq!(list.filter(), StateFilter::Pending);
        let err = Cli::try_parse_from(["mcpgate", "approvals", "--all", "--state", "denied"])
            .unwrap_err();
        assert_eq!(err.exit_code(), 2);

        let cli = Cli::try_parse_from([
            "mcpgate",
            "request-access",
            "db",
            "--duration",
            "1h 30m",
            "--reason",
            "incident 4411",
            "--wait",
        ])
        .unwrap();
        let Command::RequestAccess(req) = cli.command else {
            panic!("not request-access")
        };
        assert_eq!(req.duration, Duration::from_secs(5400));
        assert!(req.wait);
        for bad in [
            &["db", "--duration", "1h"][..],
            &["db", "--reason", "r"],
            &["db", "--duration", "0s", "--reason", "r"],
            &["db", "--duration", "soon", "--reason", "r"],
        ] {
            let mut argv = vec!["mcpgate", "request-access"];
            argv.extend_from_slice(bad);
            assert_eq!(
                Cli::try_parse_from(argv).unwrap_err().exit_code(),
                2,
                "{bad:?}"
            );
        }

        let err = Cli::try_parse_from(["mcpgate", "connect", "a b"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let err = Cli::try_parse_from(["mcpgate", "login", "--broker", "http://x", "--user", "a"])
            .unwrap_err();
        assert!(err.to_string().contains("https://"), "{err}");
    }
}
