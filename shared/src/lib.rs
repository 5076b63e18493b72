//! Wire types shared by the `mcpgate` CLI and the `mcpgate-broker`.
//!
//! - [`jsonrpc`]: parsing and classifying one newline-delimited JSON-RPC
//!   message, and building JSON-RPC error responses.
//! - [`mcp`]: MCP method names and protocol versions the gateway knows of.
//! - [`names`]: validated names (`UserName`, `ServerName`, `RoleName`,
//!   `SessionId`): a value that exists is valid.
//! - [`identity`]: how a session certificate names its user, session and server.
//! - [`api`]: the broker's HTTPS API bodies and the tunnel's status line.
//! - [`secret`]: a wrapper that never prints what it holds.
//! - [`approval`]: approval requests (held calls, just-in-time access) and
//!   the digest that binds an approval to one call's arguments.
//! - [`event`]: decision events (allow, deny, hold, approve, ...).
//! - [`hex`], [`html`]: lowercase hex; HTML escaping.
//! - [`record`]: the session record's events and index entries.
//!
//! **Invariant:** this crate does no I/O: no files, no sockets, no clock,
//! no randomness, no tokio. Everything here is a pure function of its input.
#![forbid(unsafe_code)]

pub mod api;
pub mod approval;
pub mod event;
pub mod hex;
pub mod html;
pub mod identity;
pub mod jsonrpc;
pub mod mcp;
pub mod names;
pub mod record;
pub mod secret;
