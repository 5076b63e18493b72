//! `mcpgate status`: who you are logged in as, where, and until when.
//!
//! Without `--check` this reads only the state file (no network, no
//! keyring); `--check` asks the broker (`GET /v1/whoami`) and refreshes the
//! roles and expiry it reports. The exit code says the outcome: 0 logged
//! in, 10 not logged in, 11 expired or refused.

use mcpgate_shared::api::WhoAmI;
use mcpgate_shared::names::RoleName;
use serde::Serialize;

use crate::args::{Output, StatusArgs};
use crate::client::BrokerUrl;
use crate::context::Context;
use crate::error::Error;
use crate::state::{self, State, TokenStore};
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
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expired: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_store: Option<TokenStore>,
    /// Present only with `--check`: who vouched for the identity.
    #[serde(skip_serializing_if = "Option::is_none")]
    issuer: Option<&'a str>,
}

pub async fn run(args: StatusArgs, ctx: &Context) -> Result<(), Error> {
    let Some(mut state) = State::load(&ctx.dir)? else {
        if args.output.output == Output::Json {
            print_json(&Report {
                logged_in: false,
                state_dir: ctx.dir.path().display().to_string(),
                user: None,
                broker: None,
                roles: None,
                expires_at: None,
                expired: None,
                token_store: None,
                issuer: None,
            });
        }
        return Err(Error::NotLoggedIn { reason: None });
    };

    let now = state::now();
    let mut checked: Option<WhoAmI> = None;
    let mut outcome = Ok(());
    if state.expired(now) {
        outcome = Err(Error::expired_locally(Some(state.relogin())));
    } else if args.check {
        match check(ctx, &mut state).await {
            Ok(who) => checked = Some(who),
            Err(e) => outcome = Err(e),
        }
    }

    let report = Report {
        logged_in: outcome.is_ok(),
        state_dir: ctx.dir.path().display().to_string(),
        user: Some(state.user.as_str()),
        broker: Some(&state.broker),
        roles: Some(&state.roles),
        expires_at: Some(state.expires_at),
        expired: Some(state.expired(now)),
        token_store: Some(state.token_store),
        issuer: checked.as_ref().map(|w| w.issuer.as_str()),
    };
    match args.output.output {
        Output::Json => print_json(&report),
        Output::Text => print!("{}", text(&report, &state, ctx, now)),
    }
    outcome
}

/// Asks the broker who the token belongs to, and keeps what it says about
/// roles and expiry.
async fn check(ctx: &Context, state: &mut State) -> Result<WhoAmI, Error> {
    let login = ctx.require_login()?;
    let spinner = ui::Spinner::start(format!("asking {}", state.broker));
    let who = login.client()?.whoami().await?;
    drop(spinner);
    if who.user != state.user {
        return Err(Error::Broker(format!(
            "the broker says the token belongs to {}, not {}; log in again",
            who.user, state.user
        )));
    }
    if who.roles != state.roles || who.expires_at != state.expires_at {
        state.roles = who.roles.clone();
        state.expires_at = who.expires_at;
        state.save(&ctx.dir)?;
    }
    Ok(who)
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
    let mut out = format!(
        "user:     {}\nbroker:   {}\nroles:    {roles}\nexpires:  {}\ntoken in: {}\n",
        state.user,
        state.broker,
        ui::expiry(state.expires_at, now),
        state.token_store.describe(&ctx.dir),
    );
    if let Some(issuer) = report.issuer {
        let issuer = crate::error::one_line(issuer, 200);
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
