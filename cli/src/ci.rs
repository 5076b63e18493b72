//! CI logins: no browser, no person, and by default nothing on disk.
//!
//! A token comes from the first of these that is set:
//! 1. `MCPGATE_CI_TOKEN`: an OIDC token the CI platform issued (e.g.
//!    GitHub Actions' ID token), presented as is;
//! 2. `--token-file FILE`, else `MCPGATE_CI_TOKEN_FILE`: a file holding one
//!    (read at each use: such files are rotated under the job);
//! 3. `MCPGATE_CLIENT_ID` + `MCPGATE_CLIENT_SECRET`: the client credentials
//!    grant at the token endpoint of the issuer chosen like a login's
//!    (`--issuer`/`MCPGATE_ISSUER` by name or URL, else the broker's
//!    first), with the broker's resource indicator.
//!
//! The broker's `/v1/whoami` then says who that is. `mcpgate login --ci`
//! prints it and stores nothing unless `--save`; with `MCPGATE_CI=1` every
//! command does this afresh (`MCPGATE_BROKER`, `MCPGATE_CA_CERT`) instead
//! of reading the state dir.

use std::path::{Path, PathBuf};

use mcpgate_shared::api::WhoAmI;
use mcpgate_shared::secret::Secret;

use crate::client::{ApiClient, BrokerUrl};
use crate::context::Login;
use crate::env;
use crate::error::Error;
use crate::oidc::{self, Idp};
use crate::state::{LoginKind, OidcFlow, OidcState, State, TokenStore};
use crate::token::{self, OidcTokens};

/// What to suggest when a CI token is refused.
pub const RELOGIN: &str = "mcpgate login --ci, with a valid MCPGATE_CI_TOKEN, MCPGATE_CI_TOKEN_FILE, or MCPGATE_CLIENT_ID and MCPGATE_CLIENT_SECRET";

/// Where a CI token comes from, in order of precedence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CiSource {
    Token(Secret<String>),
    TokenFile(PathBuf),
    ClientCredentials {
        client_id: String,
        client_secret: Secret<String>,
    },
}

impl CiSource {
    /// The first source that is set; `lookup` reads the environment.
    pub fn choose(
        lookup: impl Fn(&str) -> Option<String>,
        token_file: Option<PathBuf>,
    ) -> Result<Self, Error> {
        if let Some(token) = lookup(env::MCPGATE_CI_TOKEN) {
            return Ok(CiSource::Token(Secret::new(token)));
        }
        if let Some(path) =
            token_file.or_else(|| lookup(env::MCPGATE_CI_TOKEN_FILE).map(PathBuf::from))
        {
            return Ok(CiSource::TokenFile(path));
        }
        match (
            lookup(env::MCPGATE_CLIENT_ID),
            lookup(env::MCPGATE_CLIENT_SECRET),
        ) {
            (Some(client_id), Some(secret)) => Ok(CiSource::ClientCredentials {
                client_id,
                client_secret: Secret::new(secret),
            }),
            (Some(_), None) => Err(Error::Usage(format!(
                "{} is set but {} is not",
                env::MCPGATE_CLIENT_ID,
                env::MCPGATE_CLIENT_SECRET
            ))),
            (None, Some(_)) => Err(Error::Usage(format!(
                "{} is set but {} is not",
                env::MCPGATE_CLIENT_SECRET,
                env::MCPGATE_CLIENT_ID
            ))),
            (None, None) => Err(Error::Usage(format!(
                "no CI credentials: set {}, {} (or pass --token-file FILE), or {} and {}",
                env::MCPGATE_CI_TOKEN,
                env::MCPGATE_CI_TOKEN_FILE,
                env::MCPGATE_CLIENT_ID,
                env::MCPGATE_CLIENT_SECRET
            ))),
        }
    }
}

/// Where the broker is and which provider to ask.
#[derive(Debug, Clone)]
pub struct CiOptions {
    pub broker: BrokerUrl,
    pub ca_pem: Option<String>,
    /// `--issuer` / `MCPGATE_ISSUER`: a provider's name at the broker or
    /// an issuer URL (client credentials only).
    pub issuer: Option<String>,
    /// `--resource` / `MCPGATE_RESOURCE`: overrides what the broker
    /// advertises (client credentials only).
    pub resource: Option<String>,
}

/// A CI login: the state it would have if saved, its token, and what the
/// broker said about it.
pub struct CiLogin {
    pub state: State,
    pub tokens: OidcTokens,
    pub whoami: WhoAmI,
}

/// Gets a token from `source` and asks the broker who it is.
pub async fn run(opts: &CiOptions, source: CiSource) -> Result<CiLogin, Error> {
    let client = ApiClient::new(&opts.broker, opts.ca_pem.as_deref())?;
    let (mut tokens, mut provider) = match source {
        CiSource::Token(token) => (external_token(token.expose())?, None),
        CiSource::TokenFile(path) => (external_token(&read_token_file(&path)?)?, None),
        CiSource::ClientCredentials {
            client_id,
            client_secret,
        } => {
            let (tokens, provider) =
                client_credentials(&client, opts, &client_id, &client_secret).await?;
            (tokens, Some(provider))
        }
    };
    let whoami = client
        .with_token(tokens.token.clone(), RELOGIN.into())
        .whoami()
        .await?;
    if tokens.expires_at == 0 {
        // An opaque token: the broker knows when it ends.
        tokens.expires_at = whoami.expires_at;
    }
    let provider = provider.take().unwrap_or_else(|| OidcState {
        name: whoami.issuer.clone(),
        issuer: whoami.issuer.clone(),
        client_id: None,
        resource: None,
        scopes: Vec::new(),
        flow: OidcFlow::Ci,
        refresh_token: false,
    });
    let state = State {
        broker: opts.broker.clone(),
        ca_pem: opts.ca_pem.clone(),
        user: whoami.user.clone(),
        roles: whoami.roles.clone(),
        expires_at: tokens.expires_at,
        // Replaced when saved; in CI mode nothing is stored anywhere.
        token_store: TokenStore::File,
        login: LoginKind::Oidc(provider),
    };
    Ok(CiLogin {
        state,
        tokens,
        whoami,
    })
}

/// CI mode (`MCPGATE_CI=1`): a fresh login from the environment alone.
pub async fn login_from_env() -> Result<Login, Error> {
    let broker = env::var(env::MCPGATE_BROKER)
        .ok_or_else(|| {
            Error::Usage(format!(
                "{} is set, so {} must name the broker",
                env::MCPGATE_CI,
                env::MCPGATE_BROKER
            ))
        })?
        .parse::<BrokerUrl>()
        .map_err(|e| Error::Usage(format!("{}: {e}", env::MCPGATE_BROKER)))?;
    let ca_pem = env::var(env::MCPGATE_CA_CERT)
        .map(|path| crate::login::read_ca_cert(Path::new(&path), env::MCPGATE_CA_CERT))
        .transpose()?;
    let opts = CiOptions {
        broker,
        ca_pem,
        issuer: env::var(env::MCPGATE_ISSUER),
        resource: env::var(env::MCPGATE_RESOURCE),
    };
    let source = CiSource::choose(env::var, None)?;
    let ci = run(&opts, source).await?;
    Ok(Login::ci(ci.state, ci.tokens.token, ci.whoami))
}

/// A token the CI platform issued: its times come from its claims when it
/// is a JWT (`expires_at` 0: unknown until the broker says).
fn external_token(token: &str) -> Result<OidcTokens, Error> {
    let token = token.trim();
    if token.is_empty() || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::Usage(
            "the CI token is empty or not one line; check MCPGATE_CI_TOKEN or the token file"
                .into(),
        ));
    }
    let peeked = token::peek(token).unwrap_or_default();
    Ok(OidcTokens::new(
        Secret::new(token.to_owned()),
        peeked.exp.unwrap_or(0),
        peeked.iat.unwrap_or_else(crate::state::now),
        None,
    ))
}

fn read_token_file(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|e| {
        Error::Usage(format!(
            "cannot read the CI token file {}: {e}",
            path.display()
        ))
    })
}

/// The client credentials grant at the chosen issuer.
async fn client_credentials(
    client: &ApiClient,
    opts: &CiOptions,
    client_id: &str,
    client_secret: &Secret<String>,
) -> Result<(OidcTokens, OidcState), Error> {
    let wanted = opts.issuer.as_deref();
    let advertised = match client.auth_methods().await {
        Ok(methods) => methods.oidc,
        // An issuer URL given outright does not need the broker's list.
        Err(e) if wanted.is_some_and(|w| w.contains("://")) => {
            tracing::debug!(error = %e, "no provider list from the broker");
            Vec::new()
        }
        Err(e) => return Err(e),
    };
    let (name, issuer, resource) = match oidc::choose(&advertised, wanted) {
        Ok(p) => (p.name.clone(), p.issuer.clone(), p.resource.clone()),
        Err(_) if wanted.is_some_and(|w| w.contains("://")) => {
            let url = wanted.unwrap_or_default().to_owned();
            (url.clone(), url, None)
        }
        Err(_) if wanted.is_none() => {
            return Err(Error::Usage(
                "the broker advertises no OpenID Provider for client credentials; pass --issuer URL (or set MCPGATE_ISSUER)".into(),
            ));
        }
        Err(e) => return Err(e),
    };
    let resource = opts.resource.clone().or(resource);
    let idp = Idp::discover(&issuer, opts.ca_pem.as_deref()).await?;
    let tokens = idp
        .client_credentials(client_id, client_secret, resource.as_deref())
        .await?;
    let provider = OidcState {
        name,
        issuer,
        client_id: Some(client_id.to_owned()),
        resource,
        scopes: Vec::new(),
        flow: OidcFlow::Ci,
        refresh_token: false,
    };
    Ok((tokens, provider))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    const ALL: &[(&str, &str)] = &[
        ("MCPGATE_CI_TOKEN", "tok-env"),
        ("MCPGATE_CI_TOKEN_FILE", "/env/token"),
        ("MCPGATE_CLIENT_ID", "ci-bot"),
        ("MCPGATE_CLIENT_SECRET", "s3cret-value"),
    ];

    #[test]
    fn ci_sources_in_order_of_precedence() {
        // 1. The token in the environment beats everything.
        let got = CiSource::choose(lookup(ALL), Some("/arg/token".into())).unwrap();
        assert_eq!(got, CiSource::Token(Secret::new("tok-env".into())));
        // 2. Then --token-file, then MCPGATE_CI_TOKEN_FILE.
        let got = CiSource::choose(lookup(&ALL[1..]), Some("/arg/token".into())).unwrap();
        assert_eq!(got, CiSource::TokenFile("/arg/token".into()));
        let got = CiSource::choose(lookup(&ALL[1..]), None).unwrap();
        assert_eq!(got, CiSource::TokenFile("/env/token".into()));
        // 3. Then client credentials.
        let got = CiSource::choose(lookup(&ALL[2..]), None).unwrap();
        assert_eq!(
            got,
            CiSource::ClientCredentials {
                client_id: "ci-bot".into(),
                client_secret: Secret::new("s3cret-value".into()),
            }
        );
        // Half a pair, or nothing: a usage error that names the variables.
        let err = CiSource::choose(lookup(&ALL[2..3]), None).unwrap_err();
        assert_eq!(err.exit_code(), crate::error::exit::USAGE);
        assert!(
            err.report().contains("MCPGATE_CLIENT_SECRET"),
            "{}",
            err.report()
        );
        let err = CiSource::choose(lookup(&[]), None).unwrap_err();
        assert!(
            err.report().contains("MCPGATE_CI_TOKEN"),
            "{}",
            err.report()
        );
    }

    #[test]
    fn ci_sources_never_show_secrets() {
        let got = CiSource::choose(lookup(&ALL[2..]), None).unwrap();
        assert!(!format!("{got:?}").contains("s3cret-value"));
        let got = CiSource::choose(lookup(ALL), None).unwrap();
        assert!(!format!("{got:?}").contains("tok-env"));
    }

    #[test]
    fn external_tokens_are_one_trimmed_line() {
        let t = external_token("  abc.def.ghi\n").unwrap();
        assert_eq!(t.token.expose(), "abc.def.ghi");
        assert_eq!(t.expires_at, 0);
        assert!(t.refresh_token.is_none());
        assert!(external_token("\n").is_err());
        assert!(external_token("a b").is_err());
    }

    #[test]
    fn token_files_are_read_at_each_use() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("token");
        std::fs::write(&path, "first\n").unwrap();
        assert_eq!(read_token_file(&path).unwrap(), "first\n");
        std::fs::write(&path, "second\n").unwrap();
        assert_eq!(read_token_file(&path).unwrap(), "second\n");
        let err = read_token_file(&tmp.path().join("missing")).unwrap_err();
        assert_eq!(err.exit_code(), crate::error::exit::USAGE);
    }

    #[tokio::test]
    async fn client_credentials_use_the_advertised_issuer_and_resource() {
        use crate::testing::{FakeIdp, TestPki};
        let fake = FakeIdp::start(|_, _| {
            (
                200,
                r#"{"access_token":"at-ci","token_type":"Bearer","expires_in":300}"#.into(),
            )
        })
        .await;
        let pki = TestPki::new();
        let auth = serde_json::json!({
            "password": false,
            "oidc": [{"name": "corp", "issuer": fake.issuer, "client_id": "mcpgate-cli",
                      "scopes": ["openid"], "resource": "urn:mcpgate-broker"}],
        })
        .to_string();
        let api = pki
            .listen_api(move |_, path, bearer, _| match (path, bearer) {
                ("/v1/auth", None) => (200, auth.clone()),
                ("/v1/whoami", Some("Bearer at-ci")) => (
                    200,
                    r#"{"user":"ci-bot","roles":["deploy"],"issuer":"corp","expires_at":4102444800}"#
                        .into(),
                ),
                _ => (401, r#"{"error":"unauthenticated","message":"no"}"#.into()),
            })
            .await;
        let opts = CiOptions {
            broker: format!("https://{api}").parse().unwrap(),
            ca_pem: Some(pki.ca_pem()),
            issuer: None,
            resource: None,
        };
        let source = CiSource::ClientCredentials {
            client_id: "ci-bot".into(),
            client_secret: Secret::new("s3cret".into()),
        };
        let login = run(&opts, source).await.unwrap();
        assert_eq!(login.whoami.user.as_str(), "ci-bot");
        assert_eq!(login.state.roles[0].as_str(), "deploy");
        let oidc = login.state.oidc().unwrap();
        assert_eq!(oidc.name, "corp");
        assert_eq!(oidc.flow, OidcFlow::Ci);
        assert!(!oidc.refresh_token);
        let sent = &fake.requests_to("/token")[0];
        assert_eq!(sent.form["resource"], "urn:mcpgate-broker");
        assert_eq!(sent.form["grant_type"], "client_credentials");
    }
}
