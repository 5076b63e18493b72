//! Command-line arguments. The doc comments here are the `--help` text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum, ValueHint};
use mcpgate_shared::names::{ServerName, UserName};

use crate::client::BrokerUrl;
use crate::env;

/// Shown by `mcpgate --help` (not `-h`). Lists every exit code in
/// `error::exit`; a test keeps the two in step.
pub const AFTER_LONG_HELP: &str = "\
Environment:
  MCPGATE_HOME              state dir (default: $XDG_CONFIG_HOME/mcpgate or ~/.config/mcpgate)
  MCPGATE_CREDENTIAL_STORE  where the token goes: auto (OS keyring, else a 0600 file), keyring, file
  MCPGATE_BROKER, MCPGATE_USER, MCPGATE_CA_CERT
                            defaults for mcpgate login --broker, --user, --ca-cert
  MCPGATE_LOG               diagnostics on stderr, e.g. debug
  NO_COLOR                  no colour on stderr

Exit codes:
   0  success
   1  anything else (local files, OS keyring, broker-side error)
   2  usage: bad arguments or environment
  10  not logged in
  11  token expired or rejected, or login refused
  12  no access to the server
  13  unknown server
  14  broker unreachable
  15  session certificate rejected or tunnel refused
  16  rate limited by the broker
  17  session ended by the broker";

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
    /// Reads the password from the terminal without echo, or from the first
    /// line of stdin when stdin is not a terminal or --password-stdin is
    /// given. The broker URL, its CA and your roles are kept in the state dir
    /// for the other commands.
    Login(LoginArgs),

    /// Forget the token and the broker settings on this machine
    ///
    /// Deletes the token from the OS keyring and the credentials file, and
    /// the state file. Running it when not logged in is not an error.
    Logout,

    /// Show who you are logged in as, at which broker, and until when
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

    /// Your user name at the broker
    #[arg(long, value_name = "NAME", env = env::MCPGATE_USER)]
    pub user: UserName,

    /// Read the password from the first line of stdin (implied when stdin
    /// is not a terminal)
    #[arg(long)]
    pub password_stdin: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Also ask the broker whether the token is still good
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

        let err = Cli::try_parse_from(["mcpgate", "connect", "a b"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let err = Cli::try_parse_from(["mcpgate", "login", "--broker", "http://x", "--user", "a"])
            .unwrap_err();
        assert!(err.to_string().contains("https://"), "{err}");
    }
}
