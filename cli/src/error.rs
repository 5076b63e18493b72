//! Everything that can go wrong in the CLI, as one enum, and the one place
//! that turns it into an exit code and a one-line message with a hint.
//!
//! Messages say what went wrong; [`Error::hint`] says what to do. `main`
//! prints `error: <message>; <hint>` on stderr and exits with
//! [`Error::exit_code`]:
//!
//! | code | meaning | what to do |
//! | --- | --- | --- |
//! | 0 | success | |
//! | 1 | anything else: local files, the OS keyring, a broker-side error, an unexpected answer, a record that fails verification | read the message |
//! | 2 | usage: bad arguments or environment (clap, broker URL, `--ca-cert` file, `MCPGATE_CREDENTIAL_STORE`) | see `mcpgate help` |
//! | 10 | not logged in | `mcpgate login --broker URL` |
//! | 11 | token expired or rejected (also when the identity provider will not renew it), login refused (wrong user name or password), or an OpenID Connect login that did not complete (denied, timed out, state or issuer mismatch) | log in again |
//! | 12 | no access: to the server, to decide an approval request (not an approver for its server, or your own request), to request access (role or duration), or to other users' records, exports and reports (needs a role with `audit = true`) | the message says which; ask an admin or another approver |
//! | 13 | unknown server | `mcpgate servers` lists the names |
//! | 14 | broker (HTTPS API or tunnel) or identity provider unreachable; the message has the URL and the cause | check the URL, the network and `--ca-cert` |
//! | 15 | session certificate rejected or tunnel refused | run `mcpgate connect` again for a fresh session |
//! | 16 | rate limited by the broker; the message says when to retry | wait, then try again |
//! | 17 | session ended by the broker before the client was done | run `mcpgate connect` again |
//! | 18 | approval request or recorded session not found (or not one you may see) | `mcpgate approvals --all` and `mcpgate sessions` list the ids |
//! | 19 | approval request no longer pending (already decided, expired, cancelled) or changed since it was shown | `mcpgate approvals --all` shows its state |
//! | 20 | access request denied by an approver | ask the approver why, or request again |
//! | 21 | access request expired or cancelled before anyone decided | request again; ask an approver to look |
//!
//! **Invariant:** no variant holds a password, token or private key, so no
//! message, hint or `Debug` output can show one. Text that came from the
//! broker goes through [`one_line`] first: it cannot break the one-line
//! format or smuggle terminal escapes.

use std::fmt::Write as _;

use mcpgate_shared::api::{ApiError, ErrorCode};
use mcpgate_shared::names::ServerName;

/// Process exit codes. Keep in step with the table above and with
/// `args::AFTER_LONG_HELP`.
pub mod exit {
    pub const OTHER: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const NOT_LOGGED_IN: u8 = 10;
    pub const TOKEN_REJECTED: u8 = 11;
    pub const NO_ACCESS: u8 = 12;
    pub const UNKNOWN_SERVER: u8 = 13;
    pub const UNREACHABLE: u8 = 14;
    pub const TUNNEL_REFUSED: u8 = 15;
    pub const RATE_LIMITED: u8 = 16;
    pub const SESSION_ENDED: u8 = 17;
    pub const NOT_FOUND: u8 = 18;
    pub const CONFLICT: u8 = 19;
    pub const ACCESS_DENIED: u8 = 20;
    pub const ACCESS_EXPIRED: u8 = 21;

    /// Every code above, for tests.
    #[cfg(test)]
    pub const ALL: &[u8] = &[
        OTHER,
        USAGE,
        NOT_LOGGED_IN,
        TOKEN_REJECTED,
        NO_ACCESS,
        UNKNOWN_SERVER,
        UNREACHABLE,
        TUNNEL_REFUSED,
        RATE_LIMITED,
        SESSION_ENDED,
        NOT_FOUND,
        CONFLICT,
        ACCESS_DENIED,
        ACCESS_EXPIRED,
    ];
}

const LOGIN_HINT: &str = "run mcpgate login --broker URL";

/// The CLI's errors. `Display` is the "what went wrong" half of the line.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad arguments or environment that clap could not catch.
    #[error("{0}")]
    Usage(String),

    #[error("not logged in{}", reason.as_ref().map(|r| format!(" ({r})")).unwrap_or_default())]
    NotLoggedIn { reason: Option<String> },

    /// The token is expired (known locally or said by the broker), the
    /// broker refused it, or the identity provider will not renew it.
    #[error("{why}")]
    TokenRejected {
        why: String,
        /// The exact `mcpgate login ...` line to run, when we know it.
        relogin: Option<String>,
        /// The broker answered `token_expired`: a renewed token may pass.
        expired: bool,
    },

    /// `POST /v1/login` said no.
    #[error("login refused by the broker: {message}")]
    LoginRefused { message: String },

    /// An OpenID Connect login that did not complete: denied at the
    /// identity provider, timed out, or a callback that failed a check.
    #[error("{message}")]
    LoginFailed { message: String, hint: String },

    #[error("{}", match server {
        Some(s) => format!("no access to server {s}: {message}"),
        None => format!("the broker denied access: {message}"),
    })]
    NoAccess {
        server: Option<ServerName>,
        message: String,
    },

    #[error("unknown server {server}: {message}")]
    UnknownServer { server: ServerName, message: String },

    #[error("broker unreachable at {url}: {cause}")]
    Unreachable { url: String, cause: String },

    /// The OpenID Provider (discovery, token or revocation endpoint) could
    /// not be reached.
    #[error("identity provider unreachable at {url}: {cause}")]
    IdpUnreachable { url: String, cause: String },

    /// The OpenID Provider, or what the broker says about it, is unusable:
    /// a bad discovery document, an `http://` issuer off this machine, a
    /// token that fails verification.
    #[error("{0}")]
    Idp(String),

    #[error("certificate rejected by the broker: {cause}")]
    CertificateRejected { cause: String },

    #[error("tunnel refused by the broker: {reason}")]
    TunnelRefused { reason: String },

    /// The tunnel's TLS failed for another reason than the broker refusing
    /// our certificate (for example, the tunnel's certificate is not
    /// trusted).
    #[error("tunnel TLS handshake failed: {cause}")]
    TunnelTls { cause: String },

    #[error("rate limited by the broker: {message}")]
    RateLimited { message: String },

    #[error("session ended by the broker{}", cause.as_ref().map(|c| format!(" ({c})")).unwrap_or_default())]
    SessionEnded { cause: Option<String> },

    /// No approval request with this id, or none the caller may see.
    #[error("no approval request {id} that you may see{}", suffix(message))]
    ApprovalNotFound { id: String, message: String },

    /// The broker will not let the caller decide this request: not an
    /// approver for its server, or it is their own (the message says).
    #[error("you may not decide {id}: {message}")]
    NotApprover { id: String, message: String },

    /// `POST /v1/access-requests` said no: the role may not ask for this
    /// server, or not for that long (the message says).
    #[error("cannot request access to {server}: {message}")]
    AccessRequestRefused { server: ServerName, message: String },

    /// The request is not pending any more; `what` says how it ended,
    /// e.g. `was already decided (approved by bob)`.
    #[error("approval request {id} {what}")]
    AlreadyDecided { id: String, what: String },

    /// The broker refused the decision because the request changed under
    /// the caller (for example, the digest no longer matches).
    #[error("approval request {id} changed before the decision: {message}")]
    Conflict { id: String, message: String },

    /// `mcpgate request-access --wait`: an approver said no.
    #[error("access request {id} for {server} was {what}")]
    AccessDenied {
        id: String,
        server: ServerName,
        what: String,
    },

    /// `mcpgate request-access --wait`: nobody decided in time, or the
    /// request was cancelled.
    #[error("access request {id} for {server} {what}")]
    AccessNotGranted {
        id: String,
        server: ServerName,
        what: String,
    },

    /// No recorded session with this id, or none the caller may see, or
    /// its record was deleted: the broker's message says which.
    #[error("{message}")]
    RecordNotFound { session: String, message: String },

    /// Someone else's records, an export or a report, without a role
    /// that has `audit = true`; the broker's message says what was refused.
    #[error("{message}")]
    NotAuditor { message: String },

    /// `mcpgate audit verify`: the record has problems (printed on stdout).
    #[error("the record of session {session} failed verification: {problems} problem{}", if *problems == 1 { "" } else { "s" })]
    VerifyFailed { session: String, problems: usize },

    /// The broker lacks an API this command needs (it is older than the
    /// CLI).
    #[error("{0}")]
    Unsupported(String),

    /// The person answered no (or nothing) at a confirmation prompt.
    #[error("{0}")]
    NotConfirmed(String),

    /// The broker answered, but with an error that is not about the user
    /// (bad request, weak key, internal error) or with something unreadable.
    #[error("{0}")]
    Broker(String),

    /// Something on this machine: files in the state dir, the OS keyring,
    /// stdin/stdout, the crypto library. `hint` says what to do.
    #[error("{what}: {cause}")]
    Local {
        what: String,
        cause: String,
        hint: &'static str,
    },
}

impl Error {
    /// The process exit code for this error; see the module doc.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => exit::USAGE,
            Error::NotLoggedIn { .. } => exit::NOT_LOGGED_IN,
            Error::TokenRejected { .. }
            | Error::LoginRefused { .. }
            | Error::LoginFailed { .. } => exit::TOKEN_REJECTED,
            Error::NoAccess { .. }
            | Error::NotApprover { .. }
            | Error::AccessRequestRefused { .. }
            | Error::NotAuditor { .. } => exit::NO_ACCESS,
            Error::ApprovalNotFound { .. } | Error::RecordNotFound { .. } => exit::NOT_FOUND,
            Error::AlreadyDecided { .. } | Error::Conflict { .. } => exit::CONFLICT,
            Error::AccessDenied { .. } => exit::ACCESS_DENIED,
            Error::AccessNotGranted { .. } => exit::ACCESS_EXPIRED,
            Error::UnknownServer { .. } => exit::UNKNOWN_SERVER,
            Error::Unreachable { .. } | Error::IdpUnreachable { .. } => exit::UNREACHABLE,
            Error::CertificateRejected { .. }
            | Error::TunnelRefused { .. }
            | Error::TunnelTls { .. } => exit::TUNNEL_REFUSED,
            Error::RateLimited { .. } => exit::RATE_LIMITED,
            Error::SessionEnded { .. } => exit::SESSION_ENDED,
            Error::Broker(_)
            | Error::Idp(_)
            | Error::Local { .. }
            | Error::Unsupported(_)
            | Error::NotConfirmed(_)
            | Error::VerifyFailed { .. } => exit::OTHER,
        }
    }

    /// What to do about it, in a few words.
    pub fn hint(&self) -> String {
        match self {
            Error::Usage(_) => "see mcpgate help".into(),
            Error::NotLoggedIn { .. } => LOGIN_HINT.into(),
            Error::TokenRejected {
                relogin: Some(cmd), ..
            } => format!("log in again: {cmd}"),
            Error::TokenRejected { relogin: None, .. } => format!("log in again: {LOGIN_HINT}"),
            Error::LoginRefused { .. } => "check the user name and password, then try again".into(),
            Error::LoginFailed { hint, .. } => hint.clone(),
            Error::NoAccess { .. } => {
                "ask an admin for a role that lists it; mcpgate servers shows what you may use"
                    .into()
            }
            Error::UnknownServer { .. } => "mcpgate servers lists the servers you may use".into(),
            Error::ApprovalNotFound { .. } => {
                "check the id; mcpgate approvals --all lists the requests you may see".into()
            }
            Error::RecordNotFound { .. } => {
                "check the id; mcpgate sessions lists the sessions you may see".into()
            }
            Error::NotAuditor { .. } => "ask an admin if you need it".into(),
            Error::VerifyFailed { .. } => {
                "the record changed after the broker wrote it or is incomplete: keep a copy of the output and tell your security team; mcpgate-broker verify checks the records offline".into()
            }
            Error::NotApprover { .. } => {
                "only an approver for the server may decide, and never on their own request; ask another approver".into()
            }
            Error::AccessRequestRefused { .. } => {
                "ask an admin for a role that may request access to this server, or ask for a shorter --duration".into()
            }
            Error::AlreadyDecided { .. } => {
                "nothing left to decide; mcpgate approvals --all shows every request you may see"
                    .into()
            }
            Error::Conflict { .. } => {
                "look at it again with mcpgate approvals --all, then decide again".into()
            }
            Error::AccessDenied { .. } => {
                "ask the approver why, or request again with a clearer --reason".into()
            }
            Error::AccessNotGranted { .. } => {
                "request again, and ask an approver to look at mcpgate approvals".into()
            }
            Error::Unsupported(_) => "ask an admin to upgrade the broker".into(),
            Error::NotConfirmed(_) => "run it again and answer y, or pass --yes".into(),
            Error::Unreachable { cause, .. } if cause.contains("certificate") => {
                "the broker's certificate is not trusted: pass its CA with mcpgate login --ca-cert FILE".into()
            }
            Error::Unreachable { .. } => {
                "check the broker URL, the network, and that the broker is running".into()
            }
            Error::IdpUnreachable { cause, .. } if cause.contains("certificate") => {
                "the identity provider's certificate is not trusted: pass its CA with mcpgate login --ca-cert FILE".into()
            }
            Error::IdpUnreachable { .. } => {
                "check the network and that the identity provider is running, then try again".into()
            }
            Error::Idp(_) => {
                "ask an admin to check the broker's OpenID Connect settings and the identity provider".into()
            }
            Error::CertificateRejected { .. }
            | Error::TunnelRefused { .. }
            | Error::TunnelTls { .. } => {
                "run mcpgate connect again for a fresh session; if it keeps failing, ask an admin to check the broker log".into()
            }
            Error::RateLimited { .. } => "wait as the message says, then try again".into(),
            Error::SessionEnded { .. } => "run mcpgate connect again to start a new session".into(),
            Error::Broker(_) => "try again; if it persists, ask an admin to check the broker log".into(),
            Error::Local { hint, .. } => (*hint).into(),
        }
    }

    /// The whole one-line report: `<what went wrong>; <what to do>`.
    pub fn report(&self) -> String {
        one_line(&format!("{self}; {}", self.hint()), 2000)
    }

    /// A problem with a file in the state dir.
    pub fn local(what: impl Into<String>, cause: impl std::fmt::Display) -> Self {
        Self::local_with(
            what,
            cause,
            "check the state dir (MCPGATE_HOME) and its permissions",
        )
    }

    /// A state file that cannot be read back.
    pub fn damaged(path: &std::path::Path) -> Self {
        Error::Local {
            what: format!("{} is damaged", path.display()),
            cause: "it is not what mcpgate wrote".into(),
            hint: "run mcpgate logout, then log in again",
        }
    }

    /// The OS keyring failed.
    pub fn keyring(what: impl Into<String>, cause: impl std::fmt::Display) -> Self {
        Self::local_with(
            what,
            cause,
            "set MCPGATE_CREDENTIAL_STORE=file to keep the token in a 0600 file instead, then log in again",
        )
    }

    /// stdin, stdout or the terminal failed.
    pub fn stdio(what: impl Into<String>, cause: impl std::fmt::Display) -> Self {
        Self::local_with(
            what,
            cause,
            "check how mcpgate was started: its stdin and stdout must stay open",
        )
    }

    /// This machine's TLS or crypto set-up failed; not the user's doing.
    pub fn internal(what: impl Into<String>, cause: impl std::fmt::Display) -> Self {
        Self::local_with(
            what,
            cause,
            "run again with MCPGATE_LOG=debug; if it persists, report a bug",
        )
    }

    fn local_with(
        what: impl Into<String>,
        cause: impl std::fmt::Display,
        hint: &'static str,
    ) -> Self {
        Error::Local {
            what: what.into(),
            cause: one_line(&cause.to_string(), 300),
            hint,
        }
    }

    /// The token is known to be expired without asking the broker.
    pub fn expired_locally(relogin: Option<String>) -> Self {
        Error::TokenRejected {
            why: "token expired".into(),
            relogin,
            expired: false,
        }
    }

    /// Whether the broker said the token expired (and a renewed one may
    /// pass).
    pub fn is_token_expired(&self) -> bool {
        matches!(self, Error::TokenRejected { expired: true, .. })
    }

    /// A stored secret that cannot be read back; never says what it holds.
    pub fn damaged_secret(place: &str) -> Self {
        Error::Local {
            what: format!("the login kept in {place} is damaged"),
            cause: "it is not what mcpgate wrote".into(),
            hint: "run mcpgate logout, then log in again",
        }
    }
}

/// What an API call was about, so an error can name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiCall<'a> {
    Login,
    /// A call authenticated with the stored token.
    Authenticated,
    /// `POST /v1/sessions` for this server.
    Session(&'a ServerName),
    /// `GET /v1/approvals` or `GET /v1/access-grants`.
    Approvals,
    /// `GET /v1/approvals/{id}` or its decision.
    Approval(&'a str),
    /// `POST /v1/access-requests` for this server.
    AccessRequest(&'a ServerName),
    /// `GET /v1/records`.
    Records,
    /// `GET /v1/records/{session}` or its verification.
    Record(&'a str),
    /// `GET /v1/audit/export` or `/v1/audit/report`.
    Audit,
}

impl ApiCall<'_> {
    /// The name of the API this call belongs to when older brokers do
    /// not have it.
    fn newer_api(self) -> Option<&'static str> {
        match self {
            ApiCall::Approvals | ApiCall::Approval(_) | ApiCall::AccessRequest(_) => {
                Some("approvals")
            }
            ApiCall::Records | ApiCall::Record(_) | ApiCall::Audit => Some("records"),
            _ => None,
        }
    }
}

/// Maps an HTTP error answer from the broker to an [`Error`]. `body` is the
/// raw response body; it should be an [`ApiError`], but a proxy or a
/// half-started broker may send anything.
pub fn from_api(status: u16, body: &[u8], call: ApiCall<'_>, relogin: Option<String>) -> Error {
    let Ok(api) = serde_json::from_slice::<ApiError>(body) else {
        let text = String::from_utf8_lossy(body);
        let text = one_line(&text, 200);
        return match status {
            401 if call != ApiCall::Login => Error::TokenRejected {
                why: format!("token rejected by the broker (HTTP 401{})", suffix(&text)),
                relogin,
                expired: false,
            },
            429 => Error::RateLimited {
                message: format!("HTTP 429{}", suffix(&text)),
            },
            // An unknown route, not an unknown approval or session (those
            // come with an error body).
            404 | 405 if call.newer_api().is_some() => Error::Unsupported(format!(
                "the broker has no {} API (HTTP {status}); it is older than this CLI",
                call.newer_api().unwrap_or_default()
            )),
            _ => Error::Broker(format!(
                "the broker answered HTTP {status} without an error body{}",
                suffix(&text)
            )),
        };
    };
    let message = one_line(&api.message, 300);
    match (api.error, call) {
        (ErrorCode::Unauthenticated | ErrorCode::TokenExpired, ApiCall::Login) => {
            Error::LoginRefused { message }
        }
        (ErrorCode::TokenExpired, _) => Error::TokenRejected {
            why: format!("token expired: {message}"),
            relogin,
            expired: true,
        },
        (ErrorCode::Unauthenticated, _) => Error::TokenRejected {
            why: format!("token rejected by the broker: {message}"),
            relogin,
            expired: false,
        },
        (ErrorCode::Forbidden, ApiCall::Session(server)) => Error::NoAccess {
            server: Some(server.clone()),
            message,
        },
        (ErrorCode::Forbidden, ApiCall::Approval(id)) => Error::NotApprover {
            id: id.to_owned(),
            message,
        },
        (ErrorCode::Forbidden, ApiCall::AccessRequest(server)) => Error::AccessRequestRefused {
            server: server.clone(),
            message,
        },
        (ErrorCode::Forbidden, ApiCall::Records | ApiCall::Record(_) | ApiCall::Audit) => {
            Error::NotAuditor { message }
        }
        (ErrorCode::Forbidden, _) => Error::NoAccess {
            server: None,
            message,
        },
        (ErrorCode::UnknownServer, ApiCall::Session(server) | ApiCall::AccessRequest(server)) => {
            Error::UnknownServer {
                server: server.clone(),
                message,
            }
        }
        (ErrorCode::NotFound, ApiCall::Approval(id)) => Error::ApprovalNotFound {
            id: id.to_owned(),
            message,
        },
        (ErrorCode::NotFound, ApiCall::Record(session)) => Error::RecordNotFound {
            session: session.to_owned(),
            message: if message.is_empty() {
                format!("no recorded session {session} that you may see")
            } else {
                message
            },
        },
        (ErrorCode::Conflict, ApiCall::Approval(id)) => Error::Conflict {
            id: id.to_owned(),
            message,
        },
        (ErrorCode::RateLimited, _) => Error::RateLimited { message },
        (ErrorCode::WeakKey, _) => Error::Broker(format!(
            "the broker refused the session key as weak: {message}"
        )),
        (
            ErrorCode::UnknownServer
            | ErrorCode::BadRequest
            | ErrorCode::NotFound
            | ErrorCode::Conflict,
            _,
        ) => Error::Broker(format!(
            "the broker refused the request (HTTP {status}): {message}"
        )),
        (ErrorCode::Internal, _) => {
            Error::Broker(format!("the broker failed (HTTP {status}): {message}"))
        }
    }
}

fn suffix(text: &str) -> String {
    if text.is_empty() {
        String::new()
    } else {
        format!(": {text}")
    }
}

/// `err` and its sources as one line (`outer: inner: root`), skipping a
/// source whose text the previous one already contains.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !text.is_empty() && !out.contains(&text) {
            let _ = write!(out, ": {text}");
        }
        source = s.source();
    }
    one_line(&out, 500)
}

/// Makes untrusted or multi-line text safe to print on one line: control
/// characters (including escapes and newlines) become spaces, runs of white
/// space collapse, and the result is cut at `max` characters.
pub fn one_line(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max + 3));
    let mut count = 0;
    // Starting "after a space" drops leading white space.
    let mut last_space = true;
    for c in text.chars() {
        let c = if c.is_control() || c.is_whitespace() {
            ' '
        } else {
            c
        };
        if c == ' ' && last_space {
            continue;
        }
        last_space = c == ' ';
        if count == max {
            out.push_str("...");
            break;
        }
        out.push(c);
        count += 1;
    }
    if out.ends_with(' ') {
        out.pop();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(code: &str, message: &str) -> Vec<u8> {
        format!(r#"{{"error":"{code}","message":"{message}"}}"#).into_bytes()
    }

    fn demo() -> ServerName {
        "demo".parse().unwrap()
    }

    #[test]
    fn api_errors_map_to_the_documented_exit_codes() {
        let server = demo();
        let session = ApiCall::Session(&server);
        let approval = ApiCall::Approval("apr_0123456789abcdef0123456789abcdef");
        let access = ApiCall::AccessRequest(&server);
        let cases: &[(u16, &str, ApiCall<'_>, u8)] = &[
            (401, "unauthenticated", ApiCall::Login, exit::TOKEN_REJECTED),
            (
                401,
                "unauthenticated",
                ApiCall::Authenticated,
                exit::TOKEN_REJECTED,
            ),
            (401, "token_expired", session, exit::TOKEN_REJECTED),
            (403, "forbidden", session, exit::NO_ACCESS),
            (403, "forbidden", ApiCall::Authenticated, exit::NO_ACCESS),
            (404, "unknown_server", session, exit::UNKNOWN_SERVER),
            (429, "rate_limited", ApiCall::Login, exit::RATE_LIMITED),
            (400, "weak_key", session, exit::OTHER),
            (400, "bad_request", ApiCall::Login, exit::OTHER),
            (500, "internal", session, exit::OTHER),
            (403, "forbidden", approval, exit::NO_ACCESS),
            (403, "forbidden", access, exit::NO_ACCESS),
            (404, "unknown_server", access, exit::UNKNOWN_SERVER),
            (404, "not_found", approval, exit::NOT_FOUND),
            (409, "conflict", approval, exit::CONFLICT),
            (401, "token_expired", approval, exit::TOKEN_REJECTED),
            (404, "not_found", ApiCall::Approvals, exit::OTHER),
            (404, "not_found", ApiCall::Record("s-1"), exit::NOT_FOUND),
            (403, "forbidden", ApiCall::Records, exit::NO_ACCESS),
            (403, "forbidden", ApiCall::Audit, exit::NO_ACCESS),
            (500, "internal", ApiCall::Record("s-1"), exit::OTHER),
        ];
        for (status, code, call, want) in cases {
            let err = from_api(*status, &body(code, "m"), *call, None);
            assert_eq!(err.exit_code(), *want, "{status} {code} {call:?}: {err}");
        }
    }

    #[test]
    fn only_token_expired_invites_a_renewal() {
        let call = ApiCall::Authenticated;
        assert!(from_api(401, &body("token_expired", "m"), call, None).is_token_expired());
        assert!(!from_api(401, &body("unauthenticated", "m"), call, None).is_token_expired());
        assert!(!from_api(401, b"nope", call, None).is_token_expired());
        assert!(!from_api(403, &body("forbidden", "m"), call, None).is_token_expired());
        assert!(!Error::expired_locally(None).is_token_expired());
    }

    #[test]
    fn forbidden_names_the_server_and_says_what_to_do() {
        let server = demo();
        let err = from_api(
            403,
            &body("forbidden", "role dev does not list demo"),
            ApiCall::Session(&server),
            None,
        );
        let line = err.report();
        assert!(line.contains("no access to server demo"), "{line}");
        assert!(line.contains("ask an admin"), "{line}");
        assert!(line.contains("mcpgate servers"), "{line}");
    }

    #[test]
    fn rate_limit_keeps_the_brokers_retry_advice() {
        let err = from_api(
            429,
            &body("rate_limited", "too many logins; retry in 30s"),
            ApiCall::Login,
            None,
        );
        assert!(err.report().contains("retry in 30s"), "{}", err.report());
    }

    #[test]
    fn expired_token_hint_names_the_login_command() {
        let err = from_api(
            401,
            &body("token_expired", "expired"),
            ApiCall::Authenticated,
            Some("mcpgate login --broker https://b:8443 --user alice".into()),
        );
        assert!(err.report().contains("--user alice"), "{}", err.report());
    }

    #[test]
    fn bodies_that_are_not_api_errors_still_map() {
        let err = from_api(401, b"<html>nope</html>", ApiCall::Authenticated, None);
        assert_eq!(err.exit_code(), exit::TOKEN_REJECTED);
        let err = from_api(502, b"bad gateway\n\x1b[31m", ApiCall::Authenticated, None);
        assert_eq!(err.exit_code(), exit::OTHER);
        assert!(!err.report().contains('\x1b'));
    }

    #[test]
    fn reports_are_one_line_without_control_characters() {
        let err = from_api(
            403,
            &body("forbidden", "line one\\nline two\\u001b[2J"),
            ApiCall::Authenticated,
            None,
        );
        let line = err.report();
        assert!(!line.contains('\n') && !line.contains('\x1b'), "{line:?}");
        assert!(line.contains("line one line two"), "{line}");
    }

    #[test]
    fn every_error_has_a_hint_and_exit_codes_are_distinct() {
        let mut codes = exit::ALL.to_vec();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), exit::ALL.len());
        assert!(!codes.contains(&0));
        let all = [
            Error::Usage("u".into()),
            Error::NotLoggedIn { reason: None },
            Error::expired_locally(None),
            Error::LoginRefused {
                message: "m".into(),
            },
            Error::NoAccess {
                server: None,
                message: "m".into(),
            },
            Error::UnknownServer {
                server: demo(),
                message: "m".into(),
            },
            Error::Unreachable {
                url: "https://x".into(),
                cause: "c".into(),
            },
            Error::IdpUnreachable {
                url: "https://idp".into(),
                cause: "c".into(),
            },
            Error::Idp("i".into()),
            Error::LoginFailed {
                message: "m".into(),
                hint: "h".into(),
            },
            Error::damaged_secret("the OS keyring"),
            Error::CertificateRejected { cause: "c".into() },
            Error::TunnelRefused { reason: "r".into() },
            Error::TunnelTls { cause: "c".into() },
            Error::RateLimited {
                message: "m".into(),
            },
            Error::SessionEnded { cause: None },
            Error::Broker("b".into()),
            Error::local("w", "c"),
            Error::keyring("w", "c"),
            Error::stdio("w", "c"),
            Error::internal("w", "c"),
            Error::damaged(std::path::Path::new("/x")),
            Error::ApprovalNotFound {
                id: "apr_x".into(),
                message: "m".into(),
            },
            Error::NotApprover {
                id: "apr_x".into(),
                message: "m".into(),
            },
            Error::AccessRequestRefused {
                server: demo(),
                message: "m".into(),
            },
            Error::AlreadyDecided {
                id: "apr_x".into(),
                what: "was already decided (approved by bob)".into(),
            },
            Error::Conflict {
                id: "apr_x".into(),
                message: "m".into(),
            },
            Error::AccessDenied {
                id: "apr_x".into(),
                server: demo(),
                what: "denied by bob".into(),
            },
            Error::AccessNotGranted {
                id: "apr_x".into(),
                server: demo(),
                what: "has expired: nobody decided in time".into(),
            },
            Error::Unsupported("u".into()),
            Error::NotConfirmed("n".into()),
            Error::RecordNotFound {
                session: "s-1".into(),
                message: "m".into(),
            },
            Error::NotAuditor {
                message: "m".into(),
            },
            Error::VerifyFailed {
                session: "s-1".into(),
                problems: 2,
            },
        ];
        for err in &all {
            assert!(exit::ALL.contains(&err.exit_code()), "{err:?}");
            assert!(!err.hint().is_empty());
            assert!(!err.report().ends_with('.'), "{}", err.report());
        }
        assert_eq!(
            Error::NotLoggedIn { reason: None }.report(),
            "not logged in; run mcpgate login --broker URL"
        );
        assert_eq!(
            Error::SessionEnded { cause: None }.to_string(),
            "session ended by the broker"
        );
    }

    #[test]
    fn approval_errors_say_what_happened_and_what_to_do() {
        let id = "apr_0123456789abcdef0123456789abcdef";
        let err = from_api(
            409,
            &body("conflict", "digest does not match"),
            ApiCall::Approval(id),
            None,
        );
        assert_eq!(
            err.report(),
            format!(
                "approval request {id} changed before the decision: digest does not match; look at it again with mcpgate approvals --all, then decide again"
            )
        );
        let err = Error::AlreadyDecided {
            id: id.into(),
            what: "was already decided (approved by bob)".into(),
        };
        assert_eq!(
            err.to_string(),
            format!("approval request {id} was already decided (approved by bob)")
        );
        // A broker from before approvals: its router answers 404 without a
        // body, which is not "no such request".
        for call in [
            ApiCall::Approvals,
            ApiCall::Approval(id),
            ApiCall::AccessRequest(&demo()),
        ] {
            let err = from_api(404, b"", call, None);
            assert!(
                err.report().contains("upgrade the broker"),
                "{}",
                err.report()
            );
        }
        assert!(
            !from_api(404, b"", ApiCall::Authenticated, None)
                .report()
                .contains("upgrade")
        );
    }

    #[test]
    fn one_line_collapses_and_truncates() {
        assert_eq!(one_line("  a\n\n b\tc  ", 100), "a b c");
        assert_eq!(one_line("abcdef", 3), "abc...");
        assert_eq!(one_line("\x1b[31mred", 100), "[31mred");
    }
}

#[cfg(test)]
mod record_tests {
    use super::*;

    #[test]
    fn record_errors_say_what_happened_and_what_to_do() {
        let body = br#"{"error":"not_found","message":"no recorded session s-1 that you may see"}"#;
        let err = from_api(404, body, ApiCall::Record("s-1"), None);
        assert_eq!(err.exit_code(), exit::NOT_FOUND);
        assert_eq!(
            err.report(),
            "no recorded session s-1 that you may see; check the id; mcpgate sessions lists the sessions you may see"
        );
        let body = br#"{"error":"forbidden","message":"exporting records needs a role with audit = true"}"#;
        let err = from_api(403, body, ApiCall::Audit, None);
        assert_eq!(
            err.report(),
            "exporting records needs a role with audit = true; ask an admin if you need it"
        );
        let err = from_api(404, b"", ApiCall::Records, None);
        assert!(err.report().contains("no records API"), "{}", err.report());
        let err = Error::VerifyFailed {
            session: "s-1".into(),
            problems: 1,
        };
        assert_eq!(err.exit_code(), exit::OTHER);
        assert!(err.to_string().ends_with("1 problem"));
    }
}
