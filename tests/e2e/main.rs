//! End-to-end tests: the real `mcpgate-broker` and `mcpgate` binaries, real
//! MCP peers (the official Python SDK client, the official
//! server-everything), real TLS, all on 127.0.0.1 with OS-picked ports.
//!
//! Run with `tests/run` (installs the peers and builds the binaries first).
//!
//! - [`relay`]: MCP through `mcpgate connect`: handshakes of both
//!   generations, tools, sampling, progress, cancellation.
//! - [`security`]: who may open a tunnel and what never crosses it.
//! - [`bad_input`]: malformed, batched, oversized messages; unknown servers;
//!   a crashing upstream.
//! - [`restart`]: what survives a broker restart.
//! - [`oidc`]: tokens from a real OpenID Provider at the broker; forged ones refused.
//! - [`oidc_cli`]: `mcpgate login` through that provider (browser, device, CI).
//! - [`quickstart`]: the README's one-command broker and demo session.
//! - [`audit`]: sessions listed, replayed (live too), verified, exported
//!   and reported on through the CLI; nobody sees another's.
//! - [`recording`]: the session record after a crash; verification.
//! - [`masking`]: customer records masked on their way to a real client,
//!   evasions through a real server, nothing clear kept, fail closed.

mod approvals;
mod audit;
mod bad_input;
mod fixtures;
mod masking;
mod oidc;
mod oidc_cli;
mod policy;
mod quickstart;
mod recording;
mod relay;
mod restart;
mod security;
