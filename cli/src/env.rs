//! Every environment variable the CLI reads, in one place.

use std::time::Duration;

use crate::error::Error;

/// The state dir (overrides `$XDG_CONFIG_HOME/mcpgate` and `~/.config/mcpgate`).
pub const MCPGATE_HOME: &str = "MCPGATE_HOME";
/// Where the token goes: `auto` (default: OS keyring, else a 0600 file),
/// `keyring` or `file`.
pub const MCPGATE_CREDENTIAL_STORE: &str = "MCPGATE_CREDENTIAL_STORE";
/// Default for `mcpgate login --broker`; the broker in CI mode.
pub const MCPGATE_BROKER: &str = "MCPGATE_BROKER";
/// Default for `mcpgate login --user`.
pub const MCPGATE_USER: &str = "MCPGATE_USER";
/// Default for `mcpgate login --ca-cert`; the broker CA in CI mode.
pub const MCPGATE_CA_CERT: &str = "MCPGATE_CA_CERT";
/// Default for `mcpgate login --issuer`: an OpenID Provider's name at the
/// broker, or its issuer URL.
pub const MCPGATE_ISSUER: &str = "MCPGATE_ISSUER";
/// Any non-empty value: `mcpgate login` prints the URL but opens no browser.
pub const MCPGATE_NO_BROWSER: &str = "MCPGATE_NO_BROWSER";
/// How long `mcpgate login` waits for the browser (or device) login, as
/// `humantime` understands it: `30s`, `5m`.
pub const MCPGATE_LOGIN_TIMEOUT: &str = "MCPGATE_LOGIN_TIMEOUT";
/// `1` or `true`: every command logs in from the CI sources, fresh each
/// time, and writes nothing.
pub const MCPGATE_CI: &str = "MCPGATE_CI";
/// CI: an OIDC token the broker trusts (e.g. GitHub Actions' ID token).
pub const MCPGATE_CI_TOKEN: &str = "MCPGATE_CI_TOKEN";
/// CI: a file holding such a token; read at each use (such files rotate).
pub const MCPGATE_CI_TOKEN_FILE: &str = "MCPGATE_CI_TOKEN_FILE";
/// CI: a confidential client's id, for the client credentials grant.
pub const MCPGATE_CLIENT_ID: &str = "MCPGATE_CLIENT_ID";
/// CI: that client's secret.
pub const MCPGATE_CLIENT_SECRET: &str = "MCPGATE_CLIENT_SECRET";
/// CI: the resource indicator (RFC 8707) to ask client credentials tokens
/// for, when the broker does not advertise one for the issuer.
pub const MCPGATE_RESOURCE: &str = "MCPGATE_RESOURCE";
/// A `tracing` filter for diagnostics on stderr, e.g. `debug`.
pub const MCPGATE_LOG: &str = "MCPGATE_LOG";
/// Any non-empty value turns colour off (<https://no-color.org>).
pub const NO_COLOR: &str = "NO_COLOR";
pub const XDG_CONFIG_HOME: &str = "XDG_CONFIG_HOME";
/// The terminal's width, when the shell exports it: long lines in text
/// output are cut to it.
pub const COLUMNS: &str = "COLUMNS";
/// Tests only: `1` makes the completions test rewrite `completions/`.
#[cfg(test)]
pub const MCPGATE_UPDATE_COMPLETIONS: &str = "MCPGATE_UPDATE_COMPLETIONS";

/// How long `mcpgate login` waits for the browser by default.
pub const DEFAULT_LOGIN_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// The variable's value, treating unset, empty and non-UTF-8 alike as absent.
pub fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Whether output on stderr may use colour: a terminal and no `NO_COLOR`.
pub fn stderr_color() -> bool {
    use std::io::IsTerminal;
    var(NO_COLOR).is_none() && std::io::stderr().is_terminal()
}

/// Whether `MCPGATE_CI` asks for CI mode.
pub fn ci_mode() -> Result<bool, Error> {
    parse_switch(MCPGATE_CI, var(MCPGATE_CI).as_deref())
}

fn parse_switch(name: &str, value: Option<&str>) -> Result<bool, Error> {
    match value.map(str::to_ascii_lowercase).as_deref() {
        None | Some("0" | "false" | "no") => Ok(false),
        Some("1" | "true" | "yes") => Ok(true),
        Some(other) => Err(Error::Usage(format!(
            "{name}={other:?} is not one of 1, true, 0, false"
        ))),
    }
}

/// `MCPGATE_LOGIN_TIMEOUT`, when set.
pub fn login_timeout() -> Result<Option<Duration>, Error> {
    parse_timeout(var(MCPGATE_LOGIN_TIMEOUT).as_deref())
}

fn parse_timeout(value: Option<&str>) -> Result<Option<Duration>, Error> {
    let Some(value) = value else {
        return Ok(None);
    };
    match humantime::parse_duration(value.trim()) {
        Ok(d) if !d.is_zero() => Ok(Some(d)),
        Ok(_) => Err(Error::Usage(format!(
            "{MCPGATE_LOGIN_TIMEOUT}={value:?} must be longer than zero"
        ))),
        Err(e) => Err(Error::Usage(format!(
            "{MCPGATE_LOGIN_TIMEOUT}={value:?} is not a duration like 30s or 5m: {e}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switches_and_timeouts_parse_strictly() {
        assert!(!parse_switch("X", None).unwrap());
        assert!(parse_switch("X", Some("1")).unwrap());
        assert!(parse_switch("X", Some("TRUE")).unwrap());
        assert!(!parse_switch("X", Some("false")).unwrap());
        assert_eq!(
            parse_switch("X", Some("maybe")).unwrap_err().exit_code(),
            crate::error::exit::USAGE
        );
        assert_eq!(parse_timeout(None).unwrap(), None);
        assert_eq!(
            parse_timeout(Some("30s")).unwrap(),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_timeout(Some("5m")).unwrap(),
            Some(Duration::from_secs(300))
        );
        assert!(parse_timeout(Some("0s")).is_err());
        assert!(parse_timeout(Some("soon")).is_err());
    }
}
