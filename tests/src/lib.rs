//! The real-peer test harness for mcpgate's end-to-end tests.
//!
//! Everything here starts real things on 127.0.0.1 and never mocks one:
//! - [`paths`]: where the built binaries (`mcpgate`, `mcpgate-broker`) and the
//!   installed peers (`tests/.peers`, from `tests/setup-peers`) are.
//! - [`broker`]: a [`broker::Broker`] in a fresh temp dir: `init`, config
//!   edits (servers, roles, limits), users, `serve` on ports picked by the OS,
//!   its log captured to a file; killed on drop.
//! - [`cli`]: a [`cli::Cli`] per user with its own `MCPGATE_HOME`, running
//!   `mcpgate login`, `servers`, `connect`, ...
//! - [`python`]: runs `tests/peers/client.py`, the official Python MCP SDK
//!   client, against a stdio server command and returns its JSON report.
//! - [`tunnel`]: the broker API and the mTLS tunnel spoken directly from Rust,
//!   so security tests can present certificates no honest CLI would.
//! - [`idp`]: a real OpenID Provider (npm `oidc-provider`) and a headless
//!   browser for it: PKCE logins, device approvals, key rotation, forged
//!   tokens signed with its real key.
//! - [`certs`]: key pairs, CSRs and forged certificates (foreign CA, expired).
//! - [`process`]: child processes with deadlines, line readers, exit codes.
//! - [`hook`]: a webhook receiver that hands the test every JSON body.
//!
//! **Invariant:** every wait is bounded by a deadline and polls for the
//! condition it needs; nothing sleeps a fixed time to let a race settle.
#![forbid(unsafe_code)]

pub mod broker;
pub mod certs;
pub mod cli;
pub mod hook;
pub mod idp;
pub mod paths;
pub mod process;
pub mod python;
pub mod tunnel;

pub use broker::{Broker, BrokerBuilder};
pub use cli::Cli;

/// The password every test user gets (users are per-broker, per-test).
pub const PASSWORD: &str = "correct horse battery staple";
