//! Command-line arguments of `mcpgate-broker` (clap derive; the doc comments
//! are the help text).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{ArgGroup, Parser, Subcommand, ValueEnum};
use mcpgate_shared::names::{RoleName, ServerName, SessionId, UserName};

/// Environment variable naming the config file, for every subcommand that
/// takes `--config`.
pub const CONFIG_ENV: &str = "MCPGATE_BROKER_CONFIG";
/// Log filter (tracing `EnvFilter` syntax), e.g. `info,mcpgate_broker=debug`.
pub const LOG_ENV: &str = "MCPGATE_LOG";

/// The mcpgate broker: identity, session certificates, and the one path
/// between MCP clients and MCP servers.
#[derive(Debug, Parser)]
#[command(name = "mcpgate-broker", version, propagate_version = true)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a CA, the broker's TLS certificate, signing keys and an
    /// example config in DIR
    Init {
        /// Directory to create (keys are written 0600)
        #[arg(long)]
        dir: PathBuf,
        /// DNS names or IP addresses clients use to reach the broker
        /// (repeatable; default 127.0.0.1, localhost, ::1)
        #[arg(long = "name", value_name = "NAME")]
        names: Vec<String>,
    },
    /// Run the broker: the HTTPS API and the mTLS tunnel
    Serve {
        #[arg(long, env = CONFIG_ENV)]
        config: PathBuf,
        /// Log format on stderr
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
    /// Policy rules: explain what they decide for a call
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Mask a JSON document or text read from stdin, as the broker would,
    /// and print the result
    ///
    /// Without --config the built-in defaults apply. A JSON-RPC message is
    /// masked as the relay masks one from a server (its result, params or
    /// error); any other JSON document is masked whole; anything else is
    /// masked as text.
    Mask(MaskArgs),
    /// Manage local users in the config file
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// List sessions from the broker's store (newest first)
    Sessions {
        #[arg(long, env = CONFIG_ENV)]
        config: PathBuf,
        /// How many to show
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Set up a broker with embedded defaults (once), start it on
    /// 127.0.0.1, and run a demo client session through it
    Quickstart {
        /// Where the broker keeps its keys, config and sessions
        /// (default: $XDG_DATA_HOME/mcpgate-broker or ~/.local/share/mcpgate-broker)
        #[arg(long)]
        dir: Option<PathBuf>,
        #[arg(long, default_value = "127.0.0.1:8443")]
        api_listen: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:8444")]
        tunnel_listen: SocketAddr,
        /// Do not run the demo client session after start-up
        #[arg(long)]
        no_demo_session: bool,
    },
    /// Verify session records offline with the broker's public audit key
    ///
    /// Checks every line's hash, each record's chain from its session's
    /// genesis, the signatures on checkpoints, seals and index lines, and
    /// the index against the records. Prints each problem with its place
    /// (session and event), or one OK line.
    #[command(
        after_help = "Exit status: 0 when everything verifies, 1 when a problem is found, \
        2 for usage errors (no records directory, no public key)."
    )]
    Verify(VerifyArgs),
    /// Run the demo MCP server on stdin/stdout (fake customer records)
    DemoServer,
    /// Print a shell completion script
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a local user (argon2id); the password is prompted for, or read
    /// from the first line of stdin when it is not a terminal
    Add {
        name: UserName,
        /// Role to grant (repeatable); it must exist under [roles]
        #[arg(long = "role", required = true)]
        roles: Vec<RoleName>,
        #[arg(long, env = CONFIG_ENV)]
        config: PathBuf,
        /// Read the password from stdin even on a terminal
        #[arg(long)]
        password_stdin: bool,
        /// Replace the user if it exists
        #[arg(long)]
        force: bool,
    },
}

/// `mcpgate-broker policy ...`.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Explain what the policy decides for one call and which rules matched
    ///
    /// Reads the config and its policy files as `serve` would, decides the
    /// call, and prints the decision, the rule that made it (FILE:LINE) and
    /// every other rule that matched.
    #[command(
        after_help = "Exit status: 0 allow, 3 deny, 4 approve (held for approval); \
        1 when the config or the arguments are wrong, 2 for usage errors."
    )]
    Check(PolicyCheckArgs),
}

/// What `policy check` decides on: who, where, what.
#[derive(Debug, clap::Args)]
#[command(group(ArgGroup::new("item").required(true).args(["tool", "resource", "prompt"])))]
#[command(group(ArgGroup::new("who").required(true).multiple(true).args(["user", "roles"])))]
pub struct PolicyCheckArgs {
    #[arg(long, env = CONFIG_ENV)]
    pub config: PathBuf,
    /// A local user under [users] (their roles are looked up); with
    /// --role, any user name (an IdP user), for conditions on `user`
    #[arg(long)]
    pub user: Option<UserName>,
    /// A role the caller has (repeatable), instead of looking up --user
    #[arg(long = "role", value_name = "ROLE")]
    pub roles: Vec<RoleName>,
    /// The server, as named under [servers]
    #[arg(long)]
    pub server: ServerName,
    /// A tool call by tool name
    #[arg(long, value_name = "NAME")]
    pub tool: Option<String>,
    /// A resource read by URI
    #[arg(long, value_name = "URI")]
    pub resource: Option<String>,
    /// A prompt by name
    #[arg(long, value_name = "NAME")]
    pub prompt: Option<String>,
    /// The call's arguments, a JSON object
    #[arg(long, value_name = "JSON", default_value = "{}")]
    pub args: String,
    #[arg(long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// What `mask` applies.
#[derive(Debug, clap::Args)]
pub struct MaskArgs {
    /// The broker config whose [masking] rules apply (hash tokens use its
    /// data dir's mask.key when there is one)
    #[arg(long, env = CONFIG_ENV)]
    pub config: Option<PathBuf>,
    /// The masking profile to apply
    #[arg(long, default_value = crate::mask::DEFAULT_PROFILE)]
    pub profile: String,
    /// After the result, list each finding: type, rule, where
    #[arg(long)]
    pub explain: bool,
}

/// What `verify` checks, with which key.
#[derive(Debug, clap::Args)]
#[command(allow_missing_positional = true)]
#[command(group(ArgGroup::new("which").required(true).args(["all", "session"])))]
pub struct VerifyArgs {
    /// Verify the whole index and every record
    #[arg(long)]
    pub all: bool,
    /// Verify one session: its record, its index entries, and the index
    /// chain
    #[arg(value_name = "SESSION")]
    pub session: Option<SessionId>,
    /// The broker's public audit key (SPKI PEM) [default: DIR/../audit.pub]
    #[arg(long, value_name = "FILE")]
    pub pubkey: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// The records directory (the one holding index.jsonl), or the
    /// broker's data dir
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}
