//! `mcpgate`: sign in to an mcpgate broker and connect MCP clients to the
//! servers it guards.
//!
//! - [`args`]: the command line (clap; doc comments are the help text).
//! - [`login`], [`logout`], [`status`], [`servers`], [`connect`],
//!   [`completions`]: one module per subcommand; [`approvals`] (list and
//!   watch approval requests), [`decide`] (approve, deny), [`access`]
//!   (request-access, grants); [`sessions`] (recorded sessions), [`replay`]
//!   (a record as a timeline), [`audit`] (verify, export, report).
//! - [`context`], [`state`], [`credentials`]: the state dir, the non-secret
//!   login state, and the token (OS keyring or a 0600 file); [`token`]: an
//!   OpenID Connect login's stored tokens and when to renew them;
//!   [`refresh`]: renewing them under a lock shared by all processes.
//! - [`oidc`]: the identity provider (discovery, browser and device logins,
//!   renewal, revocation); [`callback`]: the browser login's loopback
//!   redirect; [`ci`]: CI tokens and client credentials.
//! - [`client`]: the broker's HTTPS API; [`tunnel`] and [`relay`]: the mTLS
//!   session tunnel and the stdin/stdout relay; [`tls`]: shared TLS pieces.
//! - [`error`]: the error enum, exit codes and one-line messages;
//!   [`ui`]: spinners and formatting on stderr; [`env`](mod@env): environment
//!   variables.
//!
//! **Invariant:** stdout carries only data (tables, JSON, MCP);
//! everything for people goes to stderr. **Invariant:** passwords, tokens
//! and private keys never reach any output, error or `Debug`.
#![forbid(unsafe_code)]

mod access;
mod approvals;
mod args;
mod audit;
mod callback;
mod ci;
mod client;
mod completions;
mod connect;
mod context;
mod credentials;
mod decide;
mod env;
mod error;
mod login;
mod logout;
mod oidc;
mod refresh;
mod relay;
mod replay;
mod servers;
mod sessions;
mod state;
mod status;
#[cfg(test)]
mod testing;
mod tls;
mod token;
mod tunnel;
mod ui;

use std::process::ExitCode;

use clap::Parser;

use crate::args::{Cli, Command};
use crate::context::Context;
use crate::error::Error;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{} {}", ui::error_prefix(), err.report());
            ExitCode::from(err.exit_code())
        }
    }
}

fn run(cli: Cli) -> Result<(), Error> {
    // Completions need neither the state dir nor a runtime.
    let command = match cli.command {
        Command::Completions(args) => return completions::run(args),
        other => other,
    };
    let ctx = Context::from_env()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::internal("cannot start the async runtime", e))?;
    let result = runtime.block_on(async {
        match command {
            Command::Login(args) => login::run(args, &ctx).await,
            Command::Logout => logout::run(&ctx).await,
            Command::Status(args) => status::run(args, &ctx).await,
            Command::Servers(args) => servers::run(args, &ctx).await,
            Command::Connect(args) => connect::run(args, &ctx).await,
            Command::Approvals(args) => approvals::run(args, &ctx).await,
            Command::Approve(args) => decide::run(args, true, &ctx).await,
            Command::Deny(args) => decide::run(args, false, &ctx).await,
            Command::RequestAccess(args) => access::request(args, &ctx).await,
            Command::Grants(args) => access::grants(args, &ctx).await,
            Command::Sessions(args) => sessions::run(args, &ctx).await,
            Command::Replay(args) => replay::run(args, &ctx).await,
            Command::Audit(command) => audit::run(command, &ctx).await,
            Command::Completions(args) => completions::run(args),
        }
    });
    // tokio's stdin reads block a thread that cannot be cancelled; waiting
    // for it would keep the process alive after the broker ended the
    // session. Nothing left on the runtime has work worth finishing.
    runtime.shutdown_background();
    result
}

/// Diagnostics on stderr, off unless `MCPGATE_LOG` asks for them (only this
/// crate's warnings by default, so dependencies cannot clutter stderr).
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env(env::MCPGATE_LOG)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("mcpgate=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(env::stderr_color())
        .try_init();
}
