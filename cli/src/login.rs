//! `mcpgate login`: get a token the broker accepts, and keep it.
//!
//! Which login:
//! - `--ci`: a CI token or client credentials (`ci.rs`); stored only with
//!   `--save`.
//! - `--user NAME`: the password login, `POST /v1/login`.
//! - otherwise the broker is asked (`GET /v1/auth`): with an OpenID
//!   Provider, the browser login (or `--device`) of `oidc.rs`; with
//!   passwords only, the person is told to pass `--user`.
//!
//! An OpenID Connect login is proven before it is kept: the new token goes
//! to `/v1/whoami`, and the broker's answer names the user and roles.
//!
//! Order matters: the password is read before the spinner starts (the
//! prompt needs the terminal), and the token is stored before the state file
//! that points at it, so a failure half-way never leaves a state file
//! naming a token that is not there.

use std::io::{BufRead, IsTerminal};
use std::path::Path;

use mcpgate_shared::api::{LoginRequest, OidcLogin};
use mcpgate_shared::names::UserName;
use mcpgate_shared::secret::Secret;

use crate::args::LoginArgs;
use crate::ci::{self, CiOptions, CiSource};
use crate::client::ApiClient;
use crate::context::Context;
use crate::env;
use crate::error::{Error, one_line};
use crate::oidc::{self, Grant, Idp};
use crate::state::{self, LoginKind, OidcFlow, OidcState, State, TokenStore};
use crate::ui::{self, Spinner};

pub async fn run(args: LoginArgs, ctx: &Context) -> Result<(), Error> {
    let ca_pem = args
        .ca_cert
        .as_deref()
        .map(|p| read_ca_cert(p, "--ca-cert"))
        .transpose()?;
    if args.ci {
        return ci_login(&args, ctx, ca_pem).await;
    }
    let client = ApiClient::new(&args.broker, ca_pem.as_deref())?;
    if let Some(user) = &args.user
        && !args.device
    {
        return password_login(&args, user, ctx, &client, ca_pem).await;
    }
    if args.password_stdin {
        return Err(Error::Usage("--password-stdin needs --user NAME".into()));
    }

    let spinner = Spinner::start(format!("asking {} how to log in", args.broker));
    let methods = client.auth_methods().await?;
    drop(spinner);
    if methods.oidc.is_empty() {
        return Err(Error::Usage(format!(
            "the broker at {} offers no OpenID Provider{}; pass --user NAME",
            args.broker,
            if methods.password {
                ", only passwords"
            } else {
                ""
            }
        )));
    }
    let provider = oidc::choose(&methods.oidc, args.issuer.as_deref())?;
    oidc_login(&args, provider, ctx, &client, ca_pem).await
}

/// The password login, as before OpenID Connect.
async fn password_login(
    args: &LoginArgs,
    user: &UserName,
    ctx: &Context,
    client: &ApiClient,
    ca_pem: Option<String>,
) -> Result<(), Error> {
    let password = read_password(args, user)?;
    let spinner = Spinner::start(format!("logging in to {}", args.broker));
    let answer = client
        .login(&LoginRequest {
            user: user.clone(),
            password,
        })
        .await?;

    spinner.set("saving the token");
    let new = State {
        broker: args.broker.clone(),
        ca_pem,
        // The broker's spelling of the name is the one its certificates use.
        user: answer.user.clone(),
        roles: answer.roles.clone(),
        expires_at: answer.expires_at,
        token_store: TokenStore::File, // replaced when saved
        login: LoginKind::Password,
    };
    let new = save_login(ctx, new, &answer.token)?;
    drop(spinner);
    eprintln!(
        "logged in to {} as {} ({}); token expires {}, kept in {}",
        new.broker,
        new.user,
        roles(&new),
        ui::expiry(new.expires_at, state::now()),
        new.token_store.describe(&ctx.dir),
    );
    Ok(())
}

/// The browser or device login with `provider`, proven at the broker.
async fn oidc_login(
    args: &LoginArgs,
    provider: &OidcLogin,
    ctx: &Context,
    client: &ApiClient,
    ca_pem: Option<String>,
) -> Result<(), Error> {
    let spinner = Spinner::start(format!("asking {} for its endpoints", provider.issuer));
    let idp = Idp::discover(&provider.issuer, ca_pem.as_deref()).await?;
    drop(spinner);
    let grant = Grant {
        client_id: &provider.client_id,
        resource: provider.resource.as_deref(),
        scopes: &provider.scopes,
    };
    let configured_timeout = env::login_timeout()?;
    let (tokens, flow) = if args.device {
        (
            idp.device_login(&grant, configured_timeout).await?,
            OidcFlow::Device,
        )
    } else {
        let open_browser = !args.no_browser && env::var(env::MCPGATE_NO_BROWSER).is_none();
        let timeout = configured_timeout.unwrap_or(env::DEFAULT_LOGIN_TIMEOUT);
        (
            idp.browser_login(&grant, open_browser, timeout).await?,
            OidcFlow::Browser,
        )
    };

    let spinner = Spinner::start(format!("checking the login with {}", args.broker));
    let relogin = format!("mcpgate login --broker {}", args.broker);
    let who = client
        .clone_with_token(tokens.token.clone(), relogin)
        .whoami()
        .await?;
    spinner.set("saving the login");
    let new = State {
        broker: args.broker.clone(),
        ca_pem,
        user: who.user.clone(),
        roles: who.roles.clone(),
        expires_at: tokens.expires_at,
        token_store: TokenStore::File, // replaced when saved
        login: LoginKind::Oidc(OidcState {
            name: provider.name.clone(),
            issuer: provider.issuer.clone(),
            client_id: Some(provider.client_id.clone()),
            resource: provider.resource.clone(),
            scopes: provider.scopes.clone(),
            flow,
            refresh_token: tokens.refresh_token.is_some(),
        }),
    };
    let new = save_login(ctx, new, &tokens.to_secret())?;
    drop(spinner);
    let renewal = if tokens.refresh_token.is_some() {
        "and is renewed automatically"
    } else {
        "(no refresh token: log in again then)"
    };
    eprintln!(
        "logged in to {} as {} ({}) with {}; token expires {} {renewal}; kept in {}",
        new.broker,
        new.user,
        roles(&new),
        one_line(&provider.issuer, 200),
        ui::expiry(new.expires_at, state::now()),
        new.token_store.describe(&ctx.dir),
    );
    Ok(())
}

/// `--ci`: a token from the CI sources, checked at the broker, kept only
/// with `--save`.
async fn ci_login(args: &LoginArgs, ctx: &Context, ca_pem: Option<String>) -> Result<(), Error> {
    let source = CiSource::choose(env::var, args.token_file.clone())?;
    let opts = CiOptions {
        broker: args.broker.clone(),
        ca_pem,
        issuer: args.issuer.clone(),
        resource: args
            .resource
            .clone()
            .or_else(|| env::var(env::MCPGATE_RESOURCE)),
    };
    let spinner = Spinner::start(format!("logging in to {} from CI credentials", args.broker));
    let login = ci::run(&opts, source).await?;
    let kept = if args.save {
        spinner.set("saving the token");
        let state = save_login(ctx, login.state.clone(), &login.tokens.to_secret())?;
        format!("kept in {}", state.token_store.describe(&ctx.dir))
    } else {
        "not saved (add --save to keep it)".into()
    };
    drop(spinner);
    eprintln!(
        "logged in to {} as {} ({}); issuer {}; token expires {}; {kept}",
        login.state.broker,
        login.whoami.user,
        roles(&login.state),
        one_line(&login.whoami.issuer, 200),
        ui::expiry(login.tokens.expires_at, state::now()),
    );
    Ok(())
}

/// Stores `secret` for `new`'s account, then the state that points at it;
/// removes a keyring entry the previous login leaves behind.
fn save_login(ctx: &Context, new: State, secret: &Secret<String>) -> Result<State, Error> {
    let previous = State::load(&ctx.dir).ok().flatten();
    let token_store = ctx.credentials.save(&new.account(), secret)?;
    let new = State { token_store, ..new };
    // A keyring entry the new login no longer uses is orphaned: a different
    // user or broker, or the token moved to the file. (A file is overwritten
    // or removed by `save` itself.)
    if let Some(old) = previous.filter(|old| {
        old.token_store == TokenStore::Keyring
            && (old.account() != new.account() || new.token_store != TokenStore::Keyring)
    }) && let Err(e) = ctx.credentials.delete_keyring(&old.account())
    {
        tracing::debug!(error = %e, "could not delete the previous login's token");
    }
    new.save(&ctx.dir)?;
    Ok(new)
}

fn roles(state: &State) -> String {
    if state.roles.is_empty() {
        "no roles".to_owned()
    } else {
        let names: Vec<&str> = state.roles.iter().map(|r| r.as_str()).collect();
        format!("roles {}", names.join(", "))
    }
}

/// Reads and checks a CA file (`what` names where it came from); returns
/// its PEM text.
pub fn read_ca_cert(path: &Path, what: &str) -> Result<String, Error> {
    let pem = std::fs::read_to_string(path)
        .map_err(|e| Error::Usage(format!("cannot read {what} {}: {e}", path.display())))?;
    crate::tls::roots(&pem).map_err(|e| Error::Usage(format!("{what} {}: {e}", path.display())))?;
    Ok(pem)
}

/// The password: from the terminal without echo, or the first line of stdin
/// when asked to or when stdin is not a terminal.
fn read_password(args: &LoginArgs, user: &UserName) -> Result<Secret<String>, Error> {
    let stdin = std::io::stdin();
    let password = if args.password_stdin || !stdin.is_terminal() {
        let mut line = String::new();
        stdin
            .lock()
            .read_line(&mut line)
            .map_err(|e| Error::stdio("cannot read the password from stdin", e))?;
        first_line(line)
    } else {
        rpassword::prompt_password(format!("Password for {user} at {}: ", args.broker))
            .map_err(|e| Error::stdio("cannot read the password from the terminal", e))?
    };
    if password.is_empty() {
        return Err(Error::Usage(
            "no password given (empty first line on stdin, or an empty answer)".into(),
        ));
    }
    Ok(Secret::new(password))
}

/// The line without its line ending.
fn first_line(mut line: String) -> String {
    while line.ends_with(['\n', '\r']) {
        line.pop();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_line_loses_only_its_line_ending() {
        assert_eq!(first_line("pw\n".into()), "pw");
        assert_eq!(first_line("pw\r\n".into()), "pw");
        assert_eq!(first_line(" p w ".into()), " p w ");
        assert_eq!(first_line(String::new()), "");
    }

    #[test]
    fn ca_cert_file_must_hold_a_certificate() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("ca.pem");
        std::fs::write(&path, "not pem").unwrap();
        assert_eq!(read_ca_cert(&path, "--ca-cert").unwrap_err().exit_code(), 2);
        assert_eq!(
            read_ca_cert(&tmp.path().join("missing.pem"), "--ca-cert")
                .unwrap_err()
                .exit_code(),
            2
        );
    }

    /// `mcpgate login --device` against a stand-in broker and provider:
    /// the broker names the provider, the provider issues tokens, the
    /// broker's whoami names the user, and what is kept is the login.
    #[tokio::test]
    async fn a_device_login_is_proven_at_the_broker_and_kept() {
        use crate::testing::{FakeIdp, TestPki};
        let fake = FakeIdp::start(|r, side| match r.path.as_str() {
            "/device/auth" => (
                200,
                r#"{"device_code":"dc","user_code":"WXYZ","verification_uri":"http://127.0.0.1:1/d","expires_in":60,"interval":0}"#.into(),
            ),
            _ => {
                let id_token = side.signer.id_token(&side.issuer, "mcpgate-cli", None, None);
                let answer = serde_json::json!({
                    "access_token": "at-1", "token_type": "Bearer", "expires_in": 600,
                    "refresh_token": "rt-1", "id_token": id_token,
                });
                (200, answer.to_string())
            }
        })
        .await;
        let pki = TestPki::new();
        let auth = serde_json::json!({
            "password": true,
            "oidc": [{"name": "corp", "issuer": fake.issuer, "client_id": "mcpgate-cli",
                      "scopes": ["openid", "offline_access"], "resource": "urn:mcpgate-broker"}],
        })
        .to_string();
        let api = pki
            .listen_api(move |_, path, bearer, _| match (path, bearer) {
                ("/v1/auth", None) => (200, auth.clone()),
                ("/v1/whoami", Some("Bearer at-1")) => (
                    200,
                    r#"{"user":"alice@example.com","roles":["dev"],"issuer":"corp","expires_at":4102444800}"#
                        .into(),
                ),
                _ => (401, r#"{"error":"unauthenticated","message":"no"}"#.into()),
            })
            .await;
        let tmp = tempfile::tempdir().unwrap();
        let ca = tmp.path().join("ca.pem");
        std::fs::write(&ca, pki.ca_pem()).unwrap();
        let ctx = crate::context::tests::context(&tmp);
        let args = LoginArgs {
            broker: format!("https://{api}").parse().unwrap(),
            ca_cert: Some(ca),
            user: None,
            password_stdin: false,
            issuer: Some("corp".into()),
            device: true,
            no_browser: true,
            ci: false,
            token_file: None,
            save: false,
            resource: None,
        };
        run(args, &ctx).await.unwrap();

        let state = State::load(&ctx.dir).unwrap().unwrap();
        assert_eq!(state.user.as_str(), "alice@example.com");
        let oidc = state.oidc().unwrap();
        assert_eq!(oidc.issuer, fake.issuer);
        assert_eq!(oidc.flow, OidcFlow::Device);
        assert!(oidc.refresh_token);
        assert!(
            state.relogin().contains("--issuer corp --device"),
            "{}",
            state.relogin()
        );
        let text = std::fs::read_to_string(ctx.dir.state_file()).unwrap();
        assert!(!text.contains("at-1") && !text.contains("rt-1"), "{text}");
        let stored = crate::refresh::load(&ctx, &state).unwrap().unwrap();
        assert_eq!(stored.token.expose(), "at-1");
        assert_eq!(stored.refresh_token.unwrap().expose(), "rt-1");
    }
}
