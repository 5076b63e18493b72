//! The loopback redirect of a browser login (RFC 8252 §7.3): a listener on
//! `127.0.0.1` at a random port, `http://127.0.0.1:PORT/callback`, that
//! waits for the identity provider to send the browser back with a code.
//!
//! The callback is checked before the code is used:
//! - `state` must be the one this login sent (a forged redirect from
//!   another page has another or none);
//! - `iss` (RFC 9207), when present — or always, when the provider says it
//!   sends one — must be the issuer exactly, so a response from another
//!   provider (mix-up attack) is refused;
//! - `error`/`error_description` end the login with what the provider said.
//!
//! The browser gets a short page either way. Requests for other paths
//! (`/favicon.ico`) get a 404 and the wait goes on.

use std::time::Duration;

use mcpgate_shared::html::escape as html_escape;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::error::{Error, one_line};

/// The path the provider redirects to.
pub const CALLBACK_PATH: &str = "/callback";
/// A request head larger than this is not a callback.
const MAX_REQUEST_HEAD: usize = 16 * 1024;
/// How long one connection may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// What a callback must carry.
#[derive(Debug)]
pub struct Expected<'a> {
    /// The `state` sent in the authorization request.
    pub state: &'a str,
    /// The issuer URL, exactly.
    pub issuer: &'a str,
    /// The provider's metadata says it always sends `iss`
    /// (`authorization_response_iss_parameter_supported`).
    pub iss_required: bool,
}

/// Why a callback was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallbackError {
    /// `state` missing or not ours.
    StateMismatch,
    /// `iss` is another issuer, or missing though the provider sends one.
    IssuerMismatch { got: Option<String> },
    /// The provider sent `error` (e.g. `access_denied`).
    Provider {
        error: String,
        description: Option<String>,
    },
    /// Neither `code` nor `error`.
    NoCode,
    /// A parameter given twice: ambiguous, so refused.
    Repeated(&'static str),
}

impl CallbackError {
    /// One line for the person at the terminal (and the browser page).
    pub fn message(&self, issuer: &str) -> String {
        match self {
            CallbackError::StateMismatch => {
                "the login callback did not carry this login's state (a forged or stale redirect); refused".into()
            }
            CallbackError::IssuerMismatch { got: Some(got) } => format!(
                "the login callback came from issuer {}, not {issuer}; refused",
                one_line(got, 200)
            ),
            CallbackError::IssuerMismatch { got: None } => format!(
                "the login callback carried no iss parameter, though {issuer} always sends one; refused"
            ),
            CallbackError::Provider { error, description } => format!(
                "the identity provider ended the login: {}{}",
                one_line(error, 100),
                description
                    .as_deref()
                    .map(|d| format!(" ({})", one_line(d, 300)))
                    .unwrap_or_default()
            ),
            CallbackError::NoCode => "the login callback carried no authorization code".into(),
            CallbackError::Repeated(name) => {
                format!("the login callback carried {name} twice; refused")
            }
        }
    }
}

/// Checks a callback's query string; returns the authorization code.
pub fn parse_callback(query: &str, expected: &Expected<'_>) -> Result<String, CallbackError> {
    let mut state = None;
    let mut iss = None;
    let mut code = None;
    let mut error = None;
    let mut description = None;
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        let (name, slot) = match key.as_ref() {
            "state" => ("state", &mut state),
            "iss" => ("iss", &mut iss),
            "code" => ("code", &mut code),
            "error" => ("error", &mut error),
            "error_description" => ("error_description", &mut description),
            _ => continue,
        };
        if slot.replace(value.into_owned()).is_some() {
            return Err(CallbackError::Repeated(name));
        }
    }
    // The state is checked first, also for error responses: an error
    // without our state is not the provider's answer to this login.
    match &state {
        Some(got) if constant_time_eq(got.as_bytes(), expected.state.as_bytes()) => {}
        _ => return Err(CallbackError::StateMismatch),
    }
    match iss {
        Some(got) if got != expected.issuer => {
            return Err(CallbackError::IssuerMismatch { got: Some(got) });
        }
        None if expected.iss_required => {
            return Err(CallbackError::IssuerMismatch { got: None });
        }
        _ => {}
    }
    if let Some(error) = error {
        return Err(CallbackError::Provider { error, description });
    }
    code.filter(|c| !c.is_empty()).ok_or(CallbackError::NoCode)
}

/// Compares without stopping at the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The loopback listener for one login.
pub struct Listener {
    listener: TcpListener,
    port: u16,
}

impl Listener {
    /// Listens on `127.0.0.1` at a port the OS picks.
    pub async fn bind() -> Result<Self, Error> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(|e| Error::internal("cannot listen on 127.0.0.1 for the login callback", e))?;
        let port = listener
            .local_addr()
            .map_err(|e| Error::internal("cannot read the login callback's port", e))?
            .port();
        Ok(Self { listener, port })
    }

    /// `http://127.0.0.1:PORT/callback`.
    pub fn redirect_uri(&self) -> String {
        format!("http://127.0.0.1:{}{CALLBACK_PATH}", self.port)
    }

    /// Waits for the callback, answers the browser, and returns the code
    /// (or why the login failed). Runs until a callback arrives: the
    /// caller bounds it with a timeout.
    pub async fn wait(self, expected: &Expected<'_>) -> Result<String, Error> {
        loop {
            let (mut stream, peer) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::debug!(error = %e, "accept on the login callback failed");
                    continue;
                }
            };
            let Some(target) = read_target(&mut stream).await else {
                tracing::debug!(%peer, "not an HTTP GET on the login callback");
                respond(
                    &mut stream,
                    400,
                    "Bad request",
                    "This is mcpgate's login callback.",
                )
                .await;
                continue;
            };
            let (path, query) = target.split_once('?').unwrap_or((&target, ""));
            if path != CALLBACK_PATH {
                respond(
                    &mut stream,
                    404,
                    "Not found",
                    "This is mcpgate's login callback.",
                )
                .await;
                continue;
            }
            return match parse_callback(query, expected) {
                Ok(code) => {
                    respond(
                        &mut stream,
                        200,
                        "Logged in",
                        "mcpgate has the login. You can close this tab and go back to the terminal.",
                    )
                    .await;
                    Ok(code)
                }
                Err(why) => {
                    let message = why.message(expected.issuer);
                    respond(
                        &mut stream,
                        400,
                        "Login failed",
                        &format!("{message}. You can close this tab and run mcpgate login again."),
                    )
                    .await;
                    Err(Error::LoginFailed {
                        message,
                        hint: "run mcpgate login again".into(),
                    })
                }
            };
        }
    }
}

/// The request target of a `GET`, or `None` for anything else.
async fn read_target(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut chunk = [0u8; 2048];
    let read = async {
        loop {
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            head.extend_from_slice(&chunk[..n]);
            if head.windows(4).any(|w| w == b"\r\n\r\n") || head.len() > MAX_REQUEST_HEAD {
                return Some(());
            }
        }
    };
    tokio::time::timeout(READ_TIMEOUT, read).await.ok()??;
    let line_end = head.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&head[..line_end]).ok()?;
    let mut parts = line.split(' ');
    let (method, target) = (parts.next()?, parts.next()?);
    (method == "GET" && target.starts_with('/')).then(|| target.to_owned())
}

/// A small HTML page; `text` is escaped.
async fn respond(stream: &mut TcpStream, status: u16, title: &str, text: &str) {
    let body = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>mcpgate: {title}</title></head>\n\
         <body style=\"font-family: sans-serif; margin: 3em\"><h1>{title}</h1><p>{}</p></body></html>\n",
        html_escape(text)
    );
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        _ => "Bad Request",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\n\
         cache-control: no-store\r\ncontent-security-policy: default-src 'none'; style-src 'unsafe-inline'\r\n\
         x-content-type-options: nosniff\r\nreferrer-policy: no-referrer\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body.as_bytes()).await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUER: &str = "http://127.0.0.1:3000";

    fn expected(iss_required: bool) -> Expected<'static> {
        Expected {
            state: "st-123",
            issuer: ISSUER,
            iss_required,
        }
    }

    #[test]
    fn a_good_callback_yields_the_code() {
        let q = "code=c-1&state=st-123&iss=http%3A%2F%2F127.0.0.1%3A3000";
        assert_eq!(parse_callback(q, &expected(true)).unwrap(), "c-1");
        // Without iss, when the provider does not promise one.
        assert_eq!(
            parse_callback("code=c-1&state=st-123", &expected(false)).unwrap(),
            "c-1"
        );
    }

    #[test]
    fn state_mismatch_is_refused() {
        for q in [
            "code=c-1&state=st-999",
            "code=c-1",
            "code=c-1&state=",
            // An error without our state is not the answer to this login.
            "error=access_denied",
        ] {
            assert_eq!(
                parse_callback(q, &expected(false)),
                Err(CallbackError::StateMismatch),
                "{q}"
            );
        }
    }

    #[test]
    fn repeated_parameters_are_refused() {
        assert_eq!(
            parse_callback("code=c-1&state=st-123&state=st-999", &expected(false)),
            Err(CallbackError::Repeated("state"))
        );
        assert_eq!(
            parse_callback("code=a&code=b&state=st-123", &expected(false)),
            Err(CallbackError::Repeated("code"))
        );
    }

    #[test]
    fn iss_mismatch_is_refused() {
        for (q, got) in [
            (
                "code=c&state=st-123&iss=https%3A%2F%2Fevil.example",
                "https://evil.example",
            ),
            // Not exactly the issuer: a trailing slash, or localhost.
            (
                "code=c&state=st-123&iss=http%3A%2F%2F127.0.0.1%3A3000%2F",
                "http://127.0.0.1:3000/",
            ),
            (
                "code=c&state=st-123&iss=http%3A%2F%2Flocalhost%3A3000",
                "http://localhost:3000",
            ),
        ] {
            assert_eq!(
                parse_callback(q, &expected(false)),
                Err(CallbackError::IssuerMismatch {
                    got: Some(got.into())
                }),
                "{q}"
            );
        }
        assert_eq!(
            parse_callback("code=c&state=st-123", &expected(true)),
            Err(CallbackError::IssuerMismatch { got: None })
        );
        let msg = CallbackError::IssuerMismatch {
            got: Some("https://evil.example".into()),
        }
        .message(ISSUER);
        assert!(
            msg.contains("https://evil.example") && msg.contains(ISSUER),
            "{msg}"
        );
    }

    #[test]
    fn provider_errors_end_the_login_with_their_description() {
        let q = "error=access_denied&error_description=End-User%20aborted%0A%1B%5B2J&state=st-123";
        let err = parse_callback(q, &expected(false)).unwrap_err();
        assert_eq!(
            err,
            CallbackError::Provider {
                error: "access_denied".into(),
                description: Some("End-User aborted\n\x1b[2J".into()),
            }
        );
        let msg = err.message(ISSUER);
        assert_eq!(
            msg,
            "the identity provider ended the login: access_denied (End-User aborted [2J)"
        );
        assert_eq!(
            parse_callback("state=st-123", &expected(false)),
            Err(CallbackError::NoCode)
        );
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            html_escape(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
    }

    async fn get(port: u16, target: &str) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        s.write_all(format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn the_listener_ignores_other_paths_and_answers_the_browser() {
        let listener = Listener::bind().await.unwrap();
        let uri = listener.redirect_uri();
        assert!(
            uri.starts_with("http://127.0.0.1:") && uri.ends_with("/callback"),
            "{uri}"
        );
        let port = listener.port;
        let waiter = tokio::spawn(async move { listener.wait(&expected(true)).await });
        let favicon = get(port, "/favicon.ico").await;
        assert!(favicon.starts_with("HTTP/1.1 404"), "{favicon}");
        let page = get(
            port,
            "/callback?code=c-9&state=st-123&iss=http%3A%2F%2F127.0.0.1%3A3000",
        )
        .await;
        assert!(page.starts_with("HTTP/1.1 200"), "{page}");
        assert!(page.contains("close this tab"), "{page}");
        assert_eq!(waiter.await.unwrap().unwrap(), "c-9");
    }

    #[tokio::test]
    async fn a_forged_callback_gets_an_error_page_and_fails_the_login() {
        let listener = Listener::bind().await.unwrap();
        let port = listener.port;
        let waiter = tokio::spawn(async move { listener.wait(&expected(false)).await });
        let page = get(port, "/callback?code=c-9&state=other").await;
        assert!(page.starts_with("HTTP/1.1 400"), "{page}");
        assert!(page.contains("Login failed"), "{page}");
        let err = waiter.await.unwrap().unwrap_err();
        assert_eq!(err.exit_code(), crate::error::exit::TOKEN_REJECTED);
        assert!(err.report().contains("state"), "{}", err.report());
    }
}
