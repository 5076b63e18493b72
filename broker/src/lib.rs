//! The mcpgate broker: the one enforcement point between people (or agents)
//! and MCP servers.
//!
//! Components, in the order a session meets them:
//! - [`config`]: the one TOML file (roles, users, servers, limits).
//! - [`ca`]: the broker CA, its TLS certificate, the signing of session
//!   certificates from CSRs (weak keys refused).
//! - [`auth`]: who is calling: the [`auth::Authenticator`] trait, local users
//!   (argon2id), broker-signed bearer tokens, failed-login limits.
//! - [`oidc`]: tokens from OpenID Providers (the company IdP, CI
//!   platforms), verified against their published keys and mapped to roles.
//! - [`api`]: the HTTPS API (login, servers, session requests);
//!   [`records_api`]: its records part (list, replay, verify, export,
//!   the evidence report).
//! - [`session`] and [`store`]: session records and their embedded SQLite
//!   store; one certificate opens one tunnel, once.
//! - [`tunnel`]: the mTLS listener that admits a session certificate.
//! - [`upstream`]: the stdio MCP server spawned for a session.
//! - [`policy`]: per role and server, which tools, resources and prompts
//!   are allowed, denied or held for approval (CEL conditions on arguments).
//! - [`mask`]: sensitive values in what servers return (cards, ids,
//!   contact details, keys and tokens), found in one pass and replaced.
//! - [`record`]: the tamper-evident session record (hash chain, signed
//!   checkpoints and seals, cross-session index), written before each
//!   message goes on.
//! - [`proxy`]: the relay, a pipeline of stages between tunnel and upstream.
//! - [`serve`]: wires the above together and shuts them down.
//! - [`init`], [`users`], [`quickstart`], [`demo_server`]: admin commands.
#![forbid(unsafe_code)]

pub mod api;
pub mod approval;
pub mod auth;
pub mod ca;
pub mod cli;
pub mod config;
pub mod demo_server;
pub mod init;
pub mod mask;
pub mod oidc;
pub mod policy;
pub mod proxy;
pub mod quickstart;
pub mod record;
pub mod records_api;
pub mod serve;
pub mod session;
pub mod store;
pub mod tunnel;
pub mod upstream;
pub mod users;
pub mod webhook;
