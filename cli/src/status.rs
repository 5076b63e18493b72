//! `mcpgate status`: who you are logged in as, where, how, and until when.
//!
//! Without `--check` this reads only the state file (no network, no
//! keyring); `--check` asks the broker (`GET /v1/whoami`, after renewing an
//! OpenID Connect login that is due) and keeps the roles and expiry it
//! reports. In CI mode (`MCPGATE_CI=1`) the login is made from the CI
//! sources, so the broker is always asked. The exit code says the outcome:
//! 0 logged in, 10 not logged in, 11 expired or refused.

use mcpgate_shared::api::WhoAmI;
use mcpgate_shared::names::RoleName;
use serde::Serialize;

use crate::args::{Output, StatusArgs};
use crate::client::BrokerUrl;
use crate::context::Context;
use crate::env;
use crate::error::{Error, one_line};
use crate::state::{self, LoginKind, OidcFlow, State, TokenStore};
use crate::ui;

/// `--output json`. Field names are a stable interface.
#[derive(Debug, Serialize)]
struct Report<'a> {
    logged_in: bool,
    state_dir: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    broker: Option<&'a BrokerUrl>,
    #[serde(skip_serializing_if = "Option::is_none")]
    roles: Option<&'a [RoleName]>,
    /// When the token presented to the broker expires (unix seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expired: Option<bool>,
    /// Absent in CI mode: nothing is stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    token_store: Option<TokenStore>,
    /// `password`, `oidc` (browser or device login) or `ci`.
    #[serde(skip_serializing_if = "Option::is_none")]
    login: Option<&'static str>,
    /// OpenID Connect: the broker's name for the provider.
    #[serde(skip_serializing_if = "Option::is_none")]
    provider: Option<&'a str>,
    /// Who vouches for the identity: the issuer URL of an OpenID Connect
    /// login, or what the broker said when it was asked (`checked`).
    #[serde(skip_serializing_if = "Option::is_none")]
    issuer: Option<&'a str>,
    /// OpenID Connect: whether a refresh token is kept to renew the token.
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<bool>,
    /// Whether the broker was asked just now.
    checked: bool,
}

impl<'a> Report<'a> {
    fn not_logged_in(state_dir: String) -> Self {
        Report {
            logged_in: false,
            state_dir,
            user: None,
            broker: None,
            roles: None,
            expires_at: None,
            expired: None,
            token_store: None,
            login: None,
            provider: None,
            issuer: None,
            refresh_token: None,
            checked: false,
        }
    }

    fn of(state: &'a State, state_dir: String, now: u64, checked: Option<&'a WhoAmI>) -> Self {
        let oidc = state.oidc();
        Report {
            logged_in: true,
            state_dir,
            user: Some(state.user.as_str()),
            broker: Some(&state.broker),
            roles: Some(&state.roles),
            expires_at: Some(state.expires_at),
            expired: Some(state.expired(now)),
            token_store: Some(state.token_store),
            login: Some(match &state.login {
                LoginKind::Password => "password",
                LoginKind::Oidc(o) if o.flow == OidcFlow::Ci => "ci",
                LoginKind::Oidc(_) => "oidc",
            }),
            provider: oidc.map(|o| o.name.as_str()),
            issuer: checked
                .map(|w| w.issuer.as_str())
                .or(oidc.map(|o| o.issuer.as_str())),
            refresh_token: oidc.map(|o| o.refresh_token),
            checked: checked.is_some(),
        }
    }
}

pub async fn run(args: StatusArgs, ctx: &Context) -> Result<(), Error> {
    let state_dir = ctx.dir.path().display().to_string();
    if env::ci_mode()? {
        return ci_status(&args, ctx, state_dir).await;
    }
    let Some(mut state) = State::load(&ctx.dir)? else {
        if args.output.output == Output::Json {
            print_json(&Report::not_logged_in(state_dir));
        }
        return Err(Error::NotLoggedIn { reason: None });
    };

    let mut checked: Option<WhoAmI> = None;
    let mut outcome = Ok(());
    if state.expired(state::now()) && !state.renewable() {
        outcome = Err(Error::expired_locally(Some(state.relogin())));
    } else if args.check {
        match check(ctx).await {
            Ok((who, now_state)) => {
                checked = Some(who);
                state = now_state;
            }
            Err(e) => outcome = Err(e),
        }
    }

    let now = state::now();
    let mut report = Report::of(&state, state_dir, now, checked.as_ref());
    report.logged_in = outcome.is_ok();
    match args.output.output {
        Output::Json => print_json(&report),
        Output::Text => print!("{}", text(&report, &state, ctx, now)),
    }
    outcome
}

/// CI mode: log in from the CI sources (which asks the broker) and report.
async fn ci_status(args: &StatusArgs, ctx: &Context, state_dir: String) -> Result<(), Error> {
    let login = ctx.login().await?;
    let now = state::now();
    let mut report = Report::of(&login.state, state_dir, now, login.whoami.as_ref());
    report.token_store = None;
    match args.output.output {
        Output::Json => print_json(&report),
        Output::Text => print!("{}", text(&report, &login.state, ctx, now)),
    }
    Ok(())
}

/// Asks the broker who the token belongs to (renewing it first if due),
/// and keeps what it says about roles and expiry.
async fn check(ctx: &Context) -> Result<(WhoAmI, State), Error> {
    let mut login = ctx.login().await?;
    let spinner = ui::Spinner::start(format!("asking {}", login.state.broker));
    let who = login
        .call(ctx, |client| async move { client.whoami().await })
        .await?;
    drop(spinner);
    let state = &mut login.state;
    if who.user != state.user {
        return Err(Error::Broker(format!(
            "the broker says the token belongs to {}, not {}; log in again",
            who.user, state.user
        )));
    }
    // An OpenID Connect login's expiry is its token's, which the stored
    // tokens also hold: only the roles come from the broker.
    let expires_at = match state.login {
        LoginKind::Password => who.expires_at,
        LoginKind::Oidc(_) => state.expires_at,
    };
    if who.roles != state.roles || expires_at != state.expires_at {
        state.roles = who.roles.clone();
        state.expires_at = expires_at;
        state.save(&ctx.dir)?;
    }
    Ok((who, login.state))
}

fn text(report: &Report<'_>, state: &State, ctx: &Context, now: u64) -> String {
    let roles = if state.roles.is_empty() {
        "(none)".to_owned()
    } else {
        state
            .roles
            .iter()
            .map(RoleName::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let stored = match report.token_store {
        Some(store) => store.describe(&ctx.dir),
        None => "nowhere (CI mode: a fresh token for each command)".into(),
    };
    let mut out = format!(
        "user:     {}\nbroker:   {}\nroles:    {roles}\nexpires:  {}\ntoken in: {stored}\n",
        state.user,
        state.broker,
        ui::expiry(state.expires_at, now),
    );
    if let Some(oidc) = state.oidc() {
        let how = match oidc.flow {
            OidcFlow::Browser => "browser login",
            OidcFlow::Device => "device login",
            OidcFlow::Ci => "CI token",
        };
        out.push_str(&format!(
            "login:    OpenID Connect, {} ({how})\n",
            one_line(&oidc.name, 100)
        ));
        if report.checked {
            // The issuer line below says who the broker saw.
        } else {
            out.push_str(&format!("issuer:   {}\n", one_line(&oidc.issuer, 200)));
        }
        if report.token_store.is_some() {
            out.push_str(if oidc.refresh_token {
                "refresh:  refresh token kept; the token is renewed automatically\n"
            } else {
                "refresh:  no refresh token; log in again when the token expires\n"
            });
        }
    }
    if report.checked
        && let Some(issuer) = report.issuer
    {
        let issuer = one_line(issuer, 200);
        out.push_str(&format!("issuer:   {issuer} (checked with the broker)\n"));
    }
    out
}

fn print_json(report: &Report<'_>) {
    // Serialising plain data cannot fail.
    println!(
        "{}",
        serde_json::to_string_pretty(report).unwrap_or_default()
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::tests::NoKeyring;
    use crate::credentials::{Credentials, StoreMode};
    use crate::state::StateDir;

    fn ctx(tmp: &tempfile::TempDir) -> Context {
        let dir = StateDir::new(tmp.path());
        Context::new(
            dir.clone(),
            Credentials::new(dir, StoreMode::File, Box::new(NoKeyring)),
        )
    }

    #[test]
    fn oidc_status_shows_issuer_expiry_and_refresh_token() {
        let tmp = tempfile::tempdir().unwrap();
        let ctx = ctx(&tmp);
        let state = crate::state::tests::sample_oidc();
        let now = state.expires_at - 600;
        let report = Report::of(&state, "/s".into(), now, None);
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["login"], "oidc");
        assert_eq!(json["provider"], "corp");
        assert_eq!(json["issuer"], "http://127.0.0.1:3000");
        assert_eq!(json["refresh_token"], true);
        assert_eq!(json["expires_at"], state.expires_at);
        assert_eq!(json["checked"], false);
        let text = text(&report, &state, &ctx, now);
        assert!(text.contains("issuer:   http://127.0.0.1:3000\n"), "{text}");
        assert!(
            text.contains("login:    OpenID Connect, corp (browser login)"),
            "{text}"
        );
        assert!(text.contains("refresh token kept"), "{text}");
        assert!(
            text.contains("expires:  2030-03-17T17:46:40Z (in 10m)"),
            "{text}"
        );
    }

    #[test]
    fn password_status_is_as_before() {
        let tmp = tempfile::tempdir().unwrap();
        let ctx = ctx(&tmp);
        let state = crate::state::tests::sample();
        let report = Report::of(&state, "/s".into(), 0, None);
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["login"], "password");
        assert!(json.get("issuer").is_none() && json.get("refresh_token").is_none());
        let text = text(&report, &state, &ctx, 0);
        assert!(
            !text.contains("issuer") && !text.contains("refresh"),
            "{text}"
        );
    }
}
