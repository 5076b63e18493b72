//! The CLI's side of OpenID Connect: discovery, the browser login
//! (authorization code + PKCE + `state` + `nonce`, loopback redirect), the
//! device login (RFC 8628), renewal with a refresh token, client
//! credentials for CI, and revocation (RFC 7009) at logout.
//!
//! Every token request carries the broker's resource indicator (RFC 8707)
//! when it has one, so the access token is a JWT for the broker; without
//! one the broker gets the ID token. ID tokens are verified here with
//! `openidconnect`'s verifier (signature against the provider's key set,
//! `iss`, `aud`, `exp`, the login's `nonce`, `at_hash`); access tokens are
//! only read for their times — the broker verifies every token itself.
//!
//! The HTTP client ([`IdpHttp`]) never follows redirects (a redirect from
//! a token endpoint could carry a refresh token elsewhere: SSRF), and it
//! refuses any `http://` URL that is not on this machine, whatever the
//! discovery document says.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use mcpgate_shared::api::OidcLogin;
use mcpgate_shared::secret::Secret;
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreClaimName, CoreClaimType,
    CoreClient, CoreClientAuthMethod, CoreDeviceAuthorizationResponse, CoreGrantType,
    CoreIdTokenVerifier, CoreJsonWebKey, CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm, CoreResponseMode, CoreResponseType, CoreSubjectIdentifierType,
    CoreTokenResponse,
};
use openidconnect::{
    AccessTokenHash, AdditionalProviderMetadata, AsyncHttpClient, AuthorizationCode, ClientId,
    ClientSecret, CsrfToken, DeviceAuthorizationUrl, DeviceCodeErrorResponseType, DiscoveryError,
    EndpointMaybeSet, EndpointNotSet, EndpointSet, ErrorResponseType, HttpRequest, HttpResponse,
    IssuerUrl, Nonce, OAuth2TokenResponse, PkceCodeChallenge, ProviderMetadata, RedirectUrl,
    RefreshToken, RequestTokenError, RevocationUrl, Scope, StandardErrorResponse, TokenResponse,
};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::callback;
use crate::error::{self, Error, one_line};
use crate::state;
use crate::token::{self, OidcTokens};
use crate::ui::Spinner;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// When a token response says neither `exp` (in a JWT) nor `expires_in`,
/// assume this, so the token is renewed soon rather than trusted long.
const UNKNOWN_LIFETIME: u64 = 5 * 60;

/// Discovery fields `openidconnect`'s standard metadata type lacks.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct ExtraMetadata {
    /// RFC 8628.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_authorization_endpoint: Option<DeviceAuthorizationUrl>,
    /// RFC 7009 (RFC 8414 metadata).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_endpoint: Option<RevocationUrl>,
    /// RFC 9207: the provider always sends `iss` on the redirect.
    #[serde(default)]
    pub authorization_response_iss_parameter_supported: bool,
}

impl AdditionalProviderMetadata for ExtraMetadata {}

type Metadata = ProviderMetadata<
    ExtraMetadata,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

/// A client made from discovery: authorization endpoint set, token and
/// user info endpoints as discovered.
type OidcClient = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// Whether `url`'s host is this machine (`127.0.0.0/8`, `::1`,
/// `localhost`).
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// `https://` anywhere, `http://` only on this machine.
pub fn check_url(url: &Url) -> Result<(), String> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(url) => Ok(()),
        "http" => Err(format!(
            "{url} is plain http:// on another machine; logins go over https:// only (http:// is allowed on 127.0.0.1)"
        )),
        other => Err(format!("{url}: scheme {other}: is not https://")),
    }
}

/// The issuer URL as the broker advertised it, checked: absolute,
/// `https://` (or loopback `http://`), no query or fragment. Kept exactly
/// as spelled: the provider's `iss` must match it byte for byte.
pub fn check_issuer(issuer: &str) -> Result<IssuerUrl, Error> {
    let bad = |why: String| Error::Idp(format!("cannot use issuer {issuer:?}: {why}"));
    let url = Url::parse(issuer).map_err(|e| bad(e.to_string()))?;
    check_url(&url).map_err(bad)?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("an issuer has no query or fragment".into()));
    }
    IssuerUrl::new(issuer.to_owned()).map_err(|e| bad(e.to_string()))
}

/// The provider to log in with: `wanted` by the broker's name for it or by
/// its issuer URL, else the broker's first.
pub fn choose<'a>(
    providers: &'a [OidcLogin],
    wanted: Option<&str>,
) -> Result<&'a OidcLogin, Error> {
    let Some(wanted) = wanted else {
        return providers.first().ok_or_else(|| {
            Error::Usage("the broker offers no OpenID Provider to log in with".into())
        });
    };
    providers
        .iter()
        .find(|p| p.name == wanted)
        .or_else(|| providers.iter().find(|p| p.issuer == wanted))
        .ok_or_else(|| {
            let known: Vec<String> = providers
                .iter()
                .map(|p| format!("{} ({})", p.name, p.issuer))
                .collect();
            Error::Usage(format!(
                "the broker has no OpenID Provider named {wanted:?}; it offers: {}",
                if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                }
            ))
        })
}

/// An HTTP failure talking to the provider, as one line without secrets.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpError(String);

/// The HTTP client for the provider: no redirects, `https://` (or
/// loopback `http://`) only, the system's roots plus the `--ca-cert` CA.
pub struct IdpHttp {
    client: reqwest::Client,
}

impl IdpHttp {
    pub fn new(issuer: &Url, ca_pem: Option<&str>) -> Result<Self, Error> {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("mcpgate/", env!("CARGO_PKG_VERSION")));
        if is_loopback(issuer) {
            builder = builder.no_proxy();
        }
        let mut anchors = crate::client::system_roots();
        if let Some(pem) = ca_pem {
            anchors.extend(crate::tls::certificates(pem).unwrap_or_default());
        }
        for der in anchors {
            let cert = reqwest::Certificate::from_der(der.as_ref())
                .map_err(|e| Error::internal("cannot load a CA certificate", error::chain(&e)))?;
            builder = builder.add_root_certificate(cert);
        }
        let client = builder.build().map_err(|e| {
            Error::internal(
                "cannot set up the identity provider's HTTPS client",
                error::chain(&e),
            )
        })?;
        Ok(Self { client })
    }

    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let url = Url::parse(&request.uri().to_string())
            .map_err(|e| HttpError(format!("bad URL: {e}")))?;
        check_url(&url).map_err(HttpError)?;
        let origin = url.origin().ascii_serialization();
        let request = reqwest::Request::try_from(request)
            .map_err(|e| HttpError(format!("cannot build the request: {}", error::chain(&e))))?;
        let fail =
            |e: reqwest::Error| HttpError(format!("{origin}: {}", error::chain(&e.without_url())));
        let response = self.client.execute(request).await.map_err(fail)?;
        let mut builder = openidconnect::http::Response::builder().status(response.status());
        for (name, value) in response.headers() {
            builder = builder.header(name, value);
        }
        let body = response.bytes().await.map_err(fail)?;
        builder
            .body(body.to_vec())
            .map_err(|e| HttpError(e.to_string()))
    }
}

impl<'c> AsyncHttpClient<'c> for IdpHttp {
    type Error = HttpError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(self.send(request))
    }
}

/// What the token response's ID token must be.
enum IdTokenCheck<'a> {
    /// Present, with the nonce this login sent (browser login).
    Required(&'a Nonce),
    /// Present; no nonce was sent (device login).
    RequiredNoNonce,
    /// Verified when present (renewal: providers may or may not send one).
    IfPresent,
}

/// What an OpenID Provider's token endpoint is asked for.
pub struct Grant<'a> {
    pub client_id: &'a str,
    pub resource: Option<&'a str>,
    pub scopes: &'a [String],
}

/// A browser login between the URL and the callback.
struct BrowserLogin<'a> {
    idp: &'a Idp,
    client: OidcClient,
    resource: Option<&'a str>,
    listener: callback::Listener,
    url: Url,
    state: CsrfToken,
    nonce: Nonce,
    pkce_verifier: openidconnect::PkceCodeVerifier,
}

impl BrowserLogin<'_> {
    /// Waits for the callback (at most `timeout`), checks it, and
    /// exchanges the code for verified tokens.
    async fn finish(self, timeout: Duration) -> Result<OidcTokens, Error> {
        let idp = self.idp;
        let expected = callback::Expected {
            state: self.state.secret(),
            issuer: &idp.issuer,
            iss_required: idp
                .metadata
                .additional_metadata()
                .authorization_response_iss_parameter_supported,
        };
        let code = tokio::time::timeout(timeout, self.listener.wait(&expected))
            .await
            .map_err(|_| Error::LoginFailed {
                message: format!(
                    "the browser login did not finish within {}",
                    humantime::format_duration(timeout)
                ),
                hint: "run mcpgate login again and finish the login in the browser (or use --device on a machine without one)".into(),
            })??;

        let mut exchange = self
            .client
            .exchange_code(AuthorizationCode::new(code))
            .map_err(|e| idp.config_error(e))?
            .set_pkce_verifier(self.pkce_verifier);
        if let Some(resource) = self.resource {
            exchange = exchange.add_extra_param("resource", resource);
        }
        let response = exchange
            .request_async(&idp.http)
            .await
            .map_err(|e| idp.login_error("exchanging the authorization code", e))?;
        idp.tokens(
            &self.client.id_token_verifier(),
            self.resource,
            &response,
            IdTokenCheck::Required(&self.nonce),
            None,
        )
    }
}

/// One discovered OpenID Provider.
pub struct Idp {
    issuer: String,
    http: IdpHttp,
    metadata: Metadata,
}

impl Idp {
    /// Fetches `{issuer}/.well-known/openid-configuration` (its `issuer`
    /// must be `issuer` exactly) and the key set it names.
    pub async fn discover(issuer: &str, ca_pem: Option<&str>) -> Result<Self, Error> {
        let issuer_url = check_issuer(issuer)?;
        let http = IdpHttp::new(issuer_url.url(), ca_pem)?;
        let metadata = Metadata::discover_async(issuer_url, &http)
            .await
            .map_err(|e| discovery_error(issuer, e))?;
        check_url(metadata.authorization_endpoint().url()).map_err(|why| {
            Error::Idp(format!(
                "{issuer}'s authorization endpoint is unusable: {why}"
            ))
        })?;
        Ok(Self {
            issuer: issuer.to_owned(),
            http,
            metadata,
        })
    }

    fn client(&self, client_id: &str, secret: Option<&Secret<String>>) -> OidcClient {
        CoreClient::from_provider_metadata(
            self.metadata.clone(),
            ClientId::new(client_id.to_owned()),
            secret.map(|s| ClientSecret::new(s.expose().clone())),
        )
    }

    /// The browser login: prints the URL (and opens the browser unless
    /// told not to), waits for the loopback callback at most `timeout`,
    /// then exchanges the code.
    pub async fn browser_login(
        &self,
        grant: &Grant<'_>,
        open_browser: bool,
        timeout: Duration,
    ) -> Result<OidcTokens, Error> {
        let login = self.start_browser_login(grant).await?;
        let url = login.url.to_string();
        // The test harness reads the first stderr line starting with http.
        eprintln!("Open this URL in your browser to log in:\n  {url}");
        if open_browser {
            tokio::task::spawn_blocking(move || {
                if let Err(e) = webbrowser::open(&url) {
                    tracing::debug!(error = %e, "could not open a browser");
                }
            });
        }
        let spinner = Spinner::start("waiting for the login in the browser");
        let tokens = login.finish(timeout).await;
        drop(spinner);
        tokens
    }

    /// The first half of the browser login: the loopback listener and the
    /// authorization URL (PKCE S256, `state`, `nonce`, `prompt=consent`,
    /// the scopes and the resource).
    async fn start_browser_login<'a>(
        &'a self,
        grant: &Grant<'a>,
    ) -> Result<BrowserLogin<'a>, Error> {
        let listener = callback::Listener::bind().await?;
        let redirect = RedirectUrl::new(listener.redirect_uri())
            .map_err(|e| Error::internal("cannot build the redirect URI", e))?;
        let client = self
            .client(grant.client_id, None)
            .set_redirect_uri(redirect);
        let (pkce_challenge, pkce_verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_pkce_challenge(pkce_challenge)
            // oidc-provider (and others) issue a refresh token to a public
            // client only after an explicit consent.
            .add_prompt(CoreAuthPrompt::Consent)
            .add_scopes(scopes(grant.scopes));
        if let Some(resource) = grant.resource {
            request = request.add_extra_param("resource", resource);
        }
        let (url, state, nonce) = request.url();
        Ok(BrowserLogin {
            idp: self,
            client,
            resource: grant.resource,
            listener,
            url,
            state,
            nonce,
            pkce_verifier,
        })
    }

    /// The device login: prints where to go and the code, then polls
    /// (honouring `interval` and `slow_down`) until the person is done, the
    /// code expires, or `timeout` passes.
    pub async fn device_login(
        &self,
        grant: &Grant<'_>,
        timeout: Option<Duration>,
    ) -> Result<OidcTokens, Error> {
        let Some(device_url) = self
            .metadata
            .additional_metadata()
            .device_authorization_endpoint
            .clone()
        else {
            return Err(Error::Idp(format!(
                "{} offers no device login (no device_authorization_endpoint); log in without --device",
                self.issuer
            )));
        };
        let client = self
            .client(grant.client_id, None)
            .set_device_authorization_url(device_url);
        let mut request = client
            .exchange_device_code()
            .add_scopes(scopes(grant.scopes));
        if let Some(resource) = grant.resource {
            request = request.add_extra_param("resource", resource);
        }
        let details: CoreDeviceAuthorizationResponse = request
            .request_async(&self.http)
            .await
            .map_err(|e| self.login_error("starting the device login", e))?;

        let user_code: String = details
            .user_code()
            .secret()
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .collect();
        // The test harness matches `open (\S+) and enter the code (\S+)`.
        eprintln!(
            "To log in, open {} and enter the code {user_code}",
            details.verification_uri().url()
        );
        if let Some(complete) = details.verification_uri_complete()
            && let Ok(complete) = Url::parse(complete.secret())
        {
            eprintln!("Or open {complete} (the code is filled in there)");
        }

        let spinner = Spinner::start("waiting for the login on the other device");
        let limit = match timeout {
            Some(t) => t.min(details.expires_in()),
            None => details.expires_in(),
        };
        let mut poll = client
            .exchange_device_access_token(&details)
            .map_err(|e| self.config_error(e))?;
        if let Some(resource) = grant.resource {
            poll = poll.add_extra_param("resource", resource);
        }
        let response = poll
            .request_async(&self.http, tokio::time::sleep, Some(limit))
            .await
            .map_err(|e| match e {
                RequestTokenError::ServerResponse(r)
                    if *r.error() == DeviceCodeErrorResponseType::ExpiredToken =>
                {
                    Error::LoginFailed {
                        message: format!(
                            "the device login was not finished within {}",
                            humantime::format_duration(limit)
                        ),
                        hint: "run mcpgate login --device again and enter the new code sooner"
                            .into(),
                    }
                }
                other => self.login_error("waiting for the device login", other),
            })?;
        drop(spinner);
        self.tokens(
            &client.id_token_verifier(),
            grant.resource,
            &response,
            IdTokenCheck::RequiredNoNonce,
            None,
        )
    }

    /// Renews `stored` with its refresh token. A refusal (the grant was
    /// revoked, the refresh token expired or was replayed) says to log in
    /// again with `relogin`.
    pub async fn refresh(
        &self,
        grant: &Grant<'_>,
        stored: &OidcTokens,
        relogin: &str,
    ) -> Result<OidcTokens, Error> {
        let Some(refresh_token) = &stored.refresh_token else {
            return Err(Error::expired_locally(Some(relogin.to_owned())));
        };
        let refresh_token = RefreshToken::new(refresh_token.expose().clone());
        let client = self.client(grant.client_id, None);
        let mut request = client
            .exchange_refresh_token(&refresh_token)
            .map_err(|e| self.config_error(e))?;
        if let Some(resource) = grant.resource {
            request = request.add_extra_param("resource", resource);
        }
        let response = request
            .request_async(&self.http)
            .await
            .map_err(|e| match classify(e) {
                Failure::Refused(why) => Error::TokenRejected {
                    why: format!("{} will not renew the login: {why}", self.issuer),
                    relogin: Some(relogin.to_owned()),
                    expired: false,
                },
                other => other.into_error(&self.issuer, "renewing the login"),
            })?;
        self.tokens(
            &client.id_token_verifier(),
            grant.resource,
            &response,
            IdTokenCheck::IfPresent,
            stored.refresh_token.clone(),
        )
    }

    /// The client credentials grant (CI): the access token for `resource`.
    pub async fn client_credentials(
        &self,
        client_id: &str,
        secret: &Secret<String>,
        resource: Option<&str>,
    ) -> Result<OidcTokens, Error> {
        let client = self.client(client_id, Some(secret));
        let mut request = client
            .exchange_client_credentials()
            .map_err(|e| self.config_error(e))?;
        if let Some(resource) = resource {
            request = request.add_extra_param("resource", resource);
        }
        let response: CoreTokenResponse =
            request
                .request_async(&self.http)
                .await
                .map_err(|e| match classify(e) {
                    Failure::Refused(why) => Error::LoginFailed {
                        message: format!("{} refused the client credentials: {why}", self.issuer),
                        hint: "check MCPGATE_CLIENT_ID and MCPGATE_CLIENT_SECRET".into(),
                    },
                    other => other.into_error(&self.issuer, "asking for a token"),
                })?;
        // No ID token in this grant: the access token is what there is.
        Ok(access_token_tokens(&response, None))
    }

    /// Revokes `refresh_token` (RFC 7009; a public client sends its id in
    /// the body). `Ok(false)`: the provider has no revocation endpoint.
    ///
    /// Sent by hand: `oauth2` refuses a revocation endpoint that is not
    /// `https://`, and a provider on 127.0.0.1 may well be `http://` (the
    /// client still refuses plain http anywhere else).
    pub async fn revoke(
        &self,
        client_id: &str,
        refresh_token: &Secret<String>,
    ) -> Result<bool, Error> {
        let Some(url) = self
            .metadata
            .additional_metadata()
            .revocation_endpoint
            .clone()
        else {
            return Ok(false);
        };
        let body = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("token", refresh_token.expose())
            .append_pair("token_type_hint", "refresh_token")
            .append_pair("client_id", client_id)
            .finish();
        let request = openidconnect::http::Request::builder()
            .method("POST")
            .uri(url.url().as_str())
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .body(body.into_bytes())
            .map_err(|e| Error::internal("cannot build the revocation request", e))?;
        let step = "revoking the refresh token";
        let response = self
            .http
            .send(request)
            .await
            .map_err(|e| Failure::Unreachable(e.0).into_error(&self.issuer, step))?;
        if response.status().is_success() {
            return Ok(true);
        }
        #[derive(Deserialize)]
        struct OAuthError {
            error: String,
            error_description: Option<String>,
        }
        let why = match serde_json::from_slice::<OAuthError>(response.body()) {
            Ok(e) => match e.error_description {
                Some(d) => format!("{} ({})", one_line(&e.error, 100), one_line(&d, 300)),
                None => one_line(&e.error, 100),
            },
            Err(_) => format!("HTTP {}", response.status().as_u16()),
        };
        Err(Failure::Refused(why).into_error(&self.issuer, step))
    }

    /// The tokens to keep from a token response: the ID token verified
    /// (when there is one), and the token the broker gets.
    fn tokens(
        &self,
        verifier: &CoreIdTokenVerifier<'_>,
        resource: Option<&str>,
        response: &CoreTokenResponse,
        check: IdTokenCheck<'_>,
        previous_refresh: Option<Secret<String>>,
    ) -> Result<OidcTokens, Error> {
        let bad = |what: &str, e: &dyn std::fmt::Display| {
            Error::Idp(format!(
                "the ID token from {} failed verification: {what}{}",
                self.issuer,
                one_line(&e.to_string(), 300)
            ))
        };
        let id = match response.id_token() {
            Some(id_token) => {
                let claims = match check {
                    IdTokenCheck::Required(nonce) => id_token.claims(verifier, nonce),
                    IdTokenCheck::RequiredNoNonce | IdTokenCheck::IfPresent => {
                        id_token.claims(verifier, |_: Option<&Nonce>| Ok(()))
                    }
                }
                .map_err(|e| bad("", &e))?;
                // The access token must be the one the ID token vouches for.
                if let Some(expected) = claims.access_token_hash() {
                    let alg = id_token.signing_alg().map_err(|e| bad("at_hash: ", &e))?;
                    let key = id_token
                        .signing_key(verifier)
                        .map_err(|e| bad("at_hash: ", &e))?;
                    let actual = AccessTokenHash::from_token(response.access_token(), alg, key)
                        .map_err(|e| bad("at_hash: ", &e))?;
                    if actual != *expected {
                        return Err(bad("", &"the access token does not match its at_hash"));
                    }
                }
                Some(OidcTokens::new(
                    Secret::new(id_token.to_string()),
                    unix(claims.expiration().timestamp()),
                    unix(claims.issue_time().timestamp()),
                    None,
                ))
            }
            None if matches!(check, IdTokenCheck::IfPresent) => None,
            None => {
                return Err(Error::Idp(format!(
                    "{} sent no ID token for an openid login",
                    self.issuer
                )));
            }
        };
        let refresh = response
            .refresh_token()
            .map(|r| Secret::new(r.secret().clone()))
            .or(previous_refresh);
        if resource.is_some() {
            return Ok(access_token_tokens(response, refresh));
        }
        let Some(mut id) = id else {
            return Err(Error::Idp(format!(
                "{} sent no ID token, and the broker names no resource to use an access token for",
                self.issuer
            )));
        };
        id.refresh_token = refresh;
        Ok(id)
    }

    fn config_error(&self, e: openidconnect::ConfigurationError) -> Error {
        Error::Idp(format!("{} cannot be used: {e}", self.issuer))
    }

    /// A failed step of an interactive login.
    fn login_error<TE>(
        &self,
        step: &str,
        e: RequestTokenError<HttpError, StandardErrorResponse<TE>>,
    ) -> Error
    where
        TE: ErrorResponseType + std::fmt::Display + 'static,
    {
        match classify(e) {
            Failure::Refused(why) => Error::LoginFailed {
                message: format!("{} refused the login while {step}: {why}", self.issuer),
                hint: "run mcpgate login again; if it keeps failing, ask an admin to check the identity provider's client settings".into(),
            },
            other => other.into_error(&self.issuer, step),
        }
    }
}

/// The access token and its times (from its JWT claims, else
/// `expires_in`).
fn access_token_tokens(
    response: &CoreTokenResponse,
    refresh: Option<Secret<String>>,
) -> OidcTokens {
    let now = state::now();
    let token = response.access_token().secret().clone();
    let peeked = token::peek(&token).unwrap_or_default();
    let expires_at = peeked
        .exp
        .or_else(|| response.expires_in().map(|d| now + d.as_secs()))
        .unwrap_or(now + UNKNOWN_LIFETIME);
    let issued_at = peeked.iat.unwrap_or(now);
    OidcTokens::new(Secret::new(token), expires_at, issued_at, refresh)
}

fn unix(secs: i64) -> u64 {
    u64::try_from(secs).unwrap_or(0)
}

/// The scopes to ask for; `openid` is added by the client itself.
fn scopes(list: &[String]) -> Vec<Scope> {
    list.iter()
        .filter(|s| s.as_str() != "openid" && !s.is_empty())
        .map(|s| Scope::new(s.clone()))
        .collect()
}

/// A token endpoint failure, sorted by what the person can do about it.
enum Failure {
    /// The provider said no (`invalid_grant`, `access_denied`...): the text
    /// is its error code and description.
    Refused(String),
    /// The provider could not be reached.
    Unreachable(String),
    /// An answer that is not OAuth.
    Unexpected(String),
}

impl Failure {
    fn into_error(self, issuer: &str, step: &str) -> Error {
        match self {
            Failure::Refused(why) => Error::Idp(format!("{issuer} refused {step}: {why}")),
            Failure::Unreachable(cause) => Error::IdpUnreachable {
                url: issuer.to_owned(),
                cause: format!("{step}: {cause}"),
            },
            Failure::Unexpected(what) => Error::Idp(format!(
                "{issuer} gave an unexpected answer while {step}: {what}"
            )),
        }
    }
}

fn classify<TE>(e: RequestTokenError<HttpError, StandardErrorResponse<TE>>) -> Failure
where
    TE: ErrorResponseType + std::fmt::Display + 'static,
{
    match e {
        RequestTokenError::ServerResponse(r) => Failure::Refused(describe(&r)),
        RequestTokenError::Request(e) => Failure::Unreachable(e.0),
        // The body may hold tokens, and serde's message may quote it: name
        // only where the answer broke.
        RequestTokenError::Parse(e, _body) => Failure::Unexpected(format!(
            "cannot read the answer (at {})",
            one_line(&e.path().to_string(), 100)
        )),
        RequestTokenError::Other(text) => Failure::Unexpected(one_line(&text, 300)),
    }
}

fn describe<TE>(r: &StandardErrorResponse<TE>) -> String
where
    TE: ErrorResponseType + std::fmt::Display,
{
    let code = one_line(&r.error().to_string(), 100);
    match r.error_description() {
        Some(d) => format!("{code} ({})", one_line(d, 300)),
        None => code,
    }
}

fn discovery_error(issuer: &str, e: DiscoveryError<HttpError>) -> Error {
    match e {
        DiscoveryError::Request(e) => Error::IdpUnreachable {
            url: issuer.to_owned(),
            cause: format!("discovery: {}", e.0),
        },
        DiscoveryError::Response(status, _body, _) => Error::Idp(format!(
            "{issuer}/.well-known/openid-configuration answered HTTP {status}; is the issuer URL exactly right?"
        )),
        DiscoveryError::Parse(e) => Error::Idp(format!(
            "{issuer}'s discovery document is unreadable at {}: {}",
            e.path(),
            one_line(&e.inner().to_string(), 200)
        )),
        DiscoveryError::Validation(why) => Error::Idp(format!(
            "{issuer}'s discovery document is not valid: {}",
            one_line(&why, 300)
        )),
        other => Error::Idp(format!(
            "cannot discover {issuer}: {}",
            one_line(&error::chain(&other), 300)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(name: &str, issuer: &str) -> OidcLogin {
        OidcLogin {
            name: name.into(),
            issuer: issuer.into(),
            client_id: "mcpgate-cli".into(),
            scopes: vec!["openid".into(), "offline_access".into()],
            resource: None,
        }
    }

    #[test]
    fn http_issuers_are_refused_unless_on_this_machine() {
        for ok in [
            "https://idp.example.com",
            "https://idp.example.com/realms/corp",
            "http://127.0.0.1:3000",
            "http://127.8.9.10:3000/oidc",
            "http://[::1]:3000",
            "http://localhost:3000",
        ] {
            let issuer = check_issuer(ok).unwrap();
            // Kept exactly as spelled (no slash added).
            assert_eq!(issuer.as_str(), ok);
        }
        for bad in [
            "http://idp.example.com",
            "http://10.0.0.5:3000",
            "http://127.0.0.1.example.com",
            "ftp://127.0.0.1",
            "https://idp.example.com/?x=1",
            "https://idp.example.com/#f",
            "not a url",
        ] {
            let err = check_issuer(bad).unwrap_err();
            assert_eq!(err.exit_code(), crate::error::exit::OTHER, "{bad}");
            assert!(err.report().contains("issuer"), "{}", err.report());
        }
    }

    #[tokio::test]
    async fn the_http_client_refuses_plain_http_off_this_machine() {
        let http = IdpHttp::new(&Url::parse("https://idp.example.com").unwrap(), None).unwrap();
        let request = openidconnect::http::Request::builder()
            .uri("http://idp.example.com/token")
            .body(Vec::new())
            .unwrap();
        let err = http.send(request).await.unwrap_err();
        assert!(err.0.contains("plain http://"), "{err}");
    }

    #[tokio::test]
    async fn the_http_client_does_not_follow_redirects() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(
                        b"HTTP/1.1 302 Found\r\nlocation: http://127.0.0.1:1/stolen\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                    )
                    .await;
            }
        });
        let base = Url::parse(&format!("http://{addr}")).unwrap();
        let http = IdpHttp::new(&base, None).unwrap();
        let request = openidconnect::http::Request::builder()
            .method("POST")
            .uri(format!("http://{addr}/token"))
            .body(b"grant_type=refresh_token".to_vec())
            .unwrap();
        let response = http.send(request).await.unwrap();
        assert_eq!(response.status().as_u16(), 302);
    }

    #[test]
    fn providers_are_chosen_by_name_or_issuer_else_the_first() {
        let list = [
            provider("corp", "https://idp.example.com"),
            provider("ci", "https://token.actions.githubusercontent.com"),
        ];
        assert_eq!(choose(&list, None).unwrap().name, "corp");
        assert_eq!(choose(&list, Some("ci")).unwrap().name, "ci");
        assert_eq!(
            choose(&list, Some("https://token.actions.githubusercontent.com"))
                .unwrap()
                .name,
            "ci"
        );
        let err = choose(&list, Some("https://idp.example.com/")).unwrap_err();
        assert_eq!(err.exit_code(), crate::error::exit::USAGE);
        assert!(
            err.report().contains("corp (https://idp.example.com)"),
            "{}",
            err.report()
        );
        assert!(choose(&[], None).is_err());
    }

    #[test]
    fn openid_is_not_asked_twice() {
        let got: Vec<String> = scopes(&["openid".into(), "offline_access".into(), "email".into()])
            .into_iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(got, ["offline_access", "email"]);
    }

    #[test]
    fn extra_metadata_reads_the_fields_openidconnect_lacks() {
        let extra: ExtraMetadata = serde_json::from_str(
            r#"{"device_authorization_endpoint":"http://127.0.0.1:3000/device/auth",
                "revocation_endpoint":"http://127.0.0.1:3000/token/revocation",
                "authorization_response_iss_parameter_supported":true}"#,
        )
        .unwrap();
        assert!(extra.device_authorization_endpoint.is_some());
        assert!(extra.revocation_endpoint.is_some());
        assert!(extra.authorization_response_iss_parameter_supported);
        let none: ExtraMetadata = serde_json::from_str("{}").unwrap();
        assert!(none.device_authorization_endpoint.is_none());
        assert!(!none.authorization_response_iss_parameter_supported);
    }

    /// Against a stand-in provider on 127.0.0.1: what the CLI sends to
    /// the token and revocation endpoints, and how it reads the answers.
    mod with_a_provider {
        use super::super::*;
        use crate::error::exit;
        use crate::testing::{FakeIdp, IdpRequest, IdpSide};

        const ROTATED: &str = r#"{"access_token":"at-2","token_type":"Bearer","expires_in":600,"refresh_token":"rt-2"}"#;

        fn stored() -> OidcTokens {
            OidcTokens::new(
                Secret::new("at-1".into()),
                1,
                1,
                Some(Secret::new("rt-1".into())),
            )
        }

        fn scopes() -> Vec<String> {
            vec!["openid".into(), "offline_access".into()]
        }

        #[tokio::test]
        async fn refresh_sends_the_resource_and_keeps_the_rotated_refresh_token() {
            let fake = FakeIdp::start(|_, _| (200, ROTATED.into())).await;
            let idp = Idp::discover(&fake.issuer, None).await.unwrap();
            let scopes = scopes();
            let grant = grant(&scopes);
            let got = idp
                .refresh(&grant, &stored(), "mcpgate login ...")
                .await
                .unwrap();
            assert_eq!(got.token.expose(), "at-2");
            assert_eq!(got.refresh_token.as_ref().unwrap().expose(), "rt-2");
            let now = state::now();
            assert!(got.issued_at >= now - 5 && got.issued_at <= now);
            assert!(got.expires_at >= now + 590 && got.expires_at <= now + 600);

            let sent = &fake.requests_to("/token")[0];
            assert_eq!(sent.form["grant_type"], "refresh_token");
            assert_eq!(sent.form["refresh_token"], "rt-1");
            assert_eq!(sent.form["resource"], "urn:mcpgate-broker");
            // A public client names itself in the body, and has no secret.
            assert_eq!(sent.form["client_id"], "mcpgate-cli");
            assert!(sent.auth.is_none());
        }

        #[tokio::test]
        async fn a_refused_refresh_says_log_in_again_with_the_command() {
            let fake = FakeIdp::start(|_, _| {
                (
                    400,
                    r#"{"error":"invalid_grant","error_description":"grant request is invalid"}"#
                        .into(),
                )
            })
            .await;
            let idp = Idp::discover(&fake.issuer, None).await.unwrap();
            let scopes = scopes();
            let grant = Grant {
                client_id: "mcpgate-cli",
                resource: None,
                scopes: &scopes,
            };
            let relogin = "mcpgate login --broker https://b:8443 --issuer corp";
            let err = idp.refresh(&grant, &stored(), relogin).await.unwrap_err();
            assert_eq!(err.exit_code(), exit::TOKEN_REJECTED);
            let line = err.report();
            assert!(
                line.contains("invalid_grant (grant request is invalid)"),
                "{line}"
            );
            assert!(
                line.ends_with(&format!("log in again: {relogin}")),
                "{line}"
            );
            assert!(!line.contains("rt-1"), "{line}");
        }

        #[tokio::test]
        async fn without_a_resource_an_id_token_is_required() {
            let fake = FakeIdp::start(|_, _| (200, ROTATED.into())).await;
            let idp = Idp::discover(&fake.issuer, None).await.unwrap();
            let scopes = scopes();
            let grant = Grant {
                client_id: "mcpgate-cli",
                resource: None,
                scopes: &scopes,
            };
            let err = idp.refresh(&grant, &stored(), "x").await.unwrap_err();
            assert!(
                err.report().contains("sent no ID token"),
                "{}",
                err.report()
            );
        }

        #[tokio::test]
        async fn an_unreadable_token_answer_is_not_quoted() {
            let fake = FakeIdp::start(|_, _| {
                (
                    200,
                    r#"{"access_token":"at-secret-123","token_type":42}"#.into(),
                )
            })
            .await;
            let idp = Idp::discover(&fake.issuer, None).await.unwrap();
            let scopes = scopes();
            let grant = grant(&scopes);
            let err = idp.refresh(&grant, &stored(), "x").await.unwrap_err();
            let shown = format!("{err} {err:?} {}", err.report());
            assert!(!shown.contains("at-secret-123"), "{shown}");
            assert!(shown.contains("unexpected answer"), "{shown}");
        }

        #[tokio::test]
        async fn client_credentials_authenticate_the_client_and_ask_for_the_resource() {
            let fake = FakeIdp::start(|_, _| {
                (
                    200,
                    r#"{"access_token":"at-ci","token_type":"Bearer","expires_in":300}"#.into(),
                )
            })
            .await;
            let idp = Idp::discover(&fake.issuer, None).await.unwrap();
            let secret = Secret::new("s3cret".into());
            let got = idp
                .client_credentials("ci-bot", &secret, Some("urn:mcpgate-broker"))
                .await
                .unwrap();
            assert_eq!(got.token.expose(), "at-ci");
            assert!(got.refresh_token.is_none());
            let sent = &fake.requests_to("/token")[0];
            assert_eq!(sent.form["grant_type"], "client_credentials");
            assert_eq!(sent.form["resource"], "urn:mcpgate-broker");
            assert!(!sent.form.contains_key("scope"), "{:?}", sent.form);
            // client_secret_basic: "ci-bot:s3cret".
            assert_eq!(sent.auth.as_deref(), Some("Basic Y2ktYm90OnMzY3JldA=="));
        }

        /// A device flow: the token endpoint gives `token_answers` in
        /// order; `ROTATED` gets a signed ID token added.
        fn device_idp(
            token_answers: Vec<(u16, &'static str)>,
        ) -> impl Fn(&IdpRequest, &IdpSide) -> (u16, String) + Send + Sync + 'static {
            let answers = std::sync::Mutex::new(token_answers.into_iter());
            move |r, side| {
                match r.path.as_str() {
                "/device/auth" => (
                    200,
                    r#"{"device_code":"dc-1","user_code":"BCDF-GHJK","verification_uri":"http://127.0.0.1:1/device","verification_uri_complete":"http://127.0.0.1:1/device?user_code=BCDF-GHJK","expires_in":600,"interval":0}"#.into(),
                ),
                "/token" => {
                    let (status, body) = answers.lock().unwrap().next().unwrap();
                    if body != ROTATED {
                        return (status, body.into());
                    }
                    let id_token =
                        side.signer
                            .id_token(&side.issuer, "mcpgate-cli", None, Some("at-2"));
                    let mut answer: serde_json::Value = serde_json::from_str(ROTATED).unwrap();
                    answer["id_token"] = id_token.into();
                    (status, answer.to_string())
                }
                _ => (404, "{}".into()),
            }
            }
        }

        #[tokio::test]
        async fn the_device_login_polls_until_done_and_sends_the_resource() {
            let fake = FakeIdp::start(device_idp(vec![
                (400, r#"{"error":"authorization_pending"}"#),
                (400, r#"{"error":"authorization_pending"}"#),
                (200, ROTATED),
            ]))
            .await;
            let idp = Idp::discover(&fake.issuer, None).await.unwrap();
            let scopes = scopes();
            let grant = grant(&scopes);
            let got = idp.device_login(&grant, None).await.unwrap();
            assert_eq!(got.token.expose(), "at-2");
            assert_eq!(got.refresh_token.unwrap().expose(), "rt-2");

            let start = &fake.requests_to("/device/auth")[0];
            assert_eq!(start.form["client_id"], "mcpgate-cli");
            assert_eq!(start.form["scope"], "openid offline_access");
            assert_eq!(start.form["resource"], "urn:mcpgate-broker");
            let polls = fake.requests_to("/token");
            assert_eq!(polls.len(), 3);
            for poll in &polls {
                assert_eq!(
                    poll.form["grant_type"],
                    "urn:ietf:params:oauth:grant-type:device_code"
                );
                assert_eq!(poll.form["device_code"], "dc-1");
                assert_eq!(poll.form["resource"], "urn:mcpgate-broker");
            }
        }

        #[tokio::test]
        async fn an_expired_device_code_ends_the_login_clearly() {
            let fake = FakeIdp::start(device_idp(vec![
                (400, r#"{"error":"authorization_pending"}"#),
                (400, r#"{"error":"expired_token"}"#),
            ]))
            .await;
            let idp = Idp::discover(&fake.issuer, None).await.unwrap();
            let scopes = scopes();
            let grant = Grant {
                client_id: "mcpgate-cli",
                resource: None,
                scopes: &scopes,
            };
            let err = idp.device_login(&grant, None).await.err().unwrap();
            assert_eq!(err.exit_code(), exit::TOKEN_REJECTED);
            assert!(
                err.report().contains("not finished within"),
                "{}",
                err.report()
            );
            assert!(err.report().contains("--device"), "{}", err.report());

            // A person who says no at the provider.
            let fake = FakeIdp::start(device_idp(vec![(
                400,
                r#"{"error":"access_denied","error_description":"End-User aborted interaction"}"#,
            )]))
            .await;
            let idp = Idp::discover(&fake.issuer, None).await.unwrap();
            let err = idp.device_login(&grant, None).await.err().unwrap();
            assert_eq!(err.exit_code(), exit::TOKEN_REJECTED);
            assert!(
                err.report()
                    .contains("access_denied (End-User aborted interaction)"),
                "{}",
                err.report()
            );
        }

        /// Plays the browser after the login at the provider: follows
        /// the redirect to the loopback callback with `query`.
        async fn redirect_back(redirect_uri: &str, query: &str) -> String {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let url = Url::parse(redirect_uri).unwrap();
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", url.port().unwrap()))
                .await
                .unwrap();
            let head = format!(
                "GET {}?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
                url.path()
            );
            s.write_all(head.as_bytes()).await.unwrap();
            let mut page = String::new();
            s.read_to_string(&mut page).await.unwrap();
            page
        }

        /// The authorization request's query parameters.
        fn query(login: &BrowserLogin<'_>) -> std::collections::HashMap<String, String> {
            login.url.query_pairs().into_owned().collect()
        }

        /// Answers `login` on its loopback redirect with code `c-1`, its own
        /// `state` and `iss` when given: the login's outcome and the page
        /// the browser was shown.
        async fn answer(
            login: BrowserLogin<'_>,
            iss: Option<&str>,
        ) -> (Result<OidcTokens, Error>, String) {
            let q = query(&login);
            let mut back = format!("code=c-1&state={}", enc(&q["state"]));
            if let Some(iss) = iss {
                back.push_str(&format!("&iss={}", enc(iss)));
            }
            tokio::join!(
                login.finish(Duration::from_secs(10)),
                redirect_back(&q["redirect_uri"], &back)
            )
        }

        /// The CLI's grant at the fake provider.
        fn grant(scopes: &[String]) -> Grant<'_> {
            Grant {
                client_id: "mcpgate-cli",
                resource: Some("urn:mcpgate-broker"),
                scopes,
            }
        }

        fn enc(v: &str) -> String {
            url::form_urlencoded::byte_serialize(v.as_bytes()).collect()
        }

        /// A provider whose token endpoint answers a code with `at-1`,
        /// `rt-1` and an ID token carrying the nonce in `nonce`.
        fn code_idp(
            nonce: std::sync::Arc<std::sync::Mutex<Option<String>>>,
        ) -> impl Fn(&IdpRequest, &IdpSide) -> (u16, String) + Send + Sync + 'static {
            move |r, side| {
                assert_eq!(r.path, "/token");
                let nonce = nonce.lock().unwrap().clone();
                let id_token = side.signer.id_token(
                    &side.issuer,
                    "mcpgate-cli",
                    nonce.as_deref(),
                    Some("at-1"),
                );
                let answer = serde_json::json!({
                    "access_token": "at-1", "token_type": "Bearer", "expires_in": 600,
                    "refresh_token": "rt-1", "id_token": id_token,
                });
                (200, answer.to_string())
            }
        }

        #[tokio::test]
        async fn the_browser_login_sends_pkce_state_nonce_consent_and_resource() {
            let nonce = std::sync::Arc::new(std::sync::Mutex::new(None));
            let fake = FakeIdp::start(code_idp(nonce.clone())).await;
            let idp = Idp::discover(&fake.issuer, None).await.unwrap();
            let scopes = scopes();
            let grant = grant(&scopes);
            let login = idp.start_browser_login(&grant).await.unwrap();
            assert!(
                login
                    .url
                    .as_str()
                    .starts_with(&format!("{}/auth?", fake.issuer))
            );
            let q = query(&login);
            assert_eq!(q["response_type"], "code");
            assert_eq!(q["client_id"], "mcpgate-cli");
            assert_eq!(q["scope"], "openid offline_access");
            assert_eq!(q["prompt"], "consent");
            assert_eq!(q["resource"], "urn:mcpgate-broker");
            assert_eq!(q["code_challenge_method"], "S256");
            assert!(q["code_challenge"].len() >= 43);
            assert!(q["state"].len() >= 16 && q["nonce"].len() >= 16);
            let redirect = q["redirect_uri"].clone();
            assert!(redirect.starts_with("http://127.0.0.1:") && redirect.ends_with("/callback"));
            *nonce.lock().unwrap() = Some(q["nonce"].clone());

            let (tokens, page) = answer(login, Some(&fake.issuer)).await;
            assert!(page.contains("close this tab"), "{page}");
            let tokens = tokens.unwrap();
            // With a resource, the broker gets the access token.
            assert_eq!(tokens.token.expose(), "at-1");
            assert_eq!(tokens.refresh_token.unwrap().expose(), "rt-1");

            let sent = &fake.requests_to("/token")[0];
            assert_eq!(sent.form["grant_type"], "authorization_code");
            assert_eq!(sent.form["code"], "c-1");
            assert_eq!(sent.form["redirect_uri"], redirect);
            assert_eq!(sent.form["resource"], "urn:mcpgate-broker");
            assert_eq!(sent.form["client_id"], "mcpgate-cli");
            assert!(sent.form["code_verifier"].len() >= 43);
        }

        #[tokio::test]
        async fn without_a_resource_the_verified_id_token_is_presented() {
            let nonce = std::sync::Arc::new(std::sync::Mutex::new(None));
            let fake = FakeIdp::start(code_idp(nonce.clone())).await;
            let idp = Idp::discover(&fake.issuer, None).await.unwrap();
            let scopes = scopes();
            let grant = Grant {
                client_id: "mcpgate-cli",
                resource: None,
                scopes: &scopes,
            };
            let login = idp.start_browser_login(&grant).await.unwrap();
            let q = query(&login);
            assert!(!q.contains_key("resource"));
            *nonce.lock().unwrap() = Some(q["nonce"].clone());
            let (tokens, _) = answer(login, None).await;
            // The provider promised `iss` (RFC 9207) and the callback had
            // none: refused before the code is used.
            let err = tokens.unwrap_err();
            assert!(
                err.report().contains("no iss parameter"),
                "{}",
                err.report()
            );
            assert!(fake.requests_to("/token").is_empty());

            let login = idp.start_browser_login(&grant).await.unwrap();
            *nonce.lock().unwrap() = Some(query(&login)["nonce"].clone());
            let (tokens, _) = answer(login, Some(&fake.issuer)).await;
            let tokens = tokens.unwrap();
            let peeked = token::peek(tokens.token.expose()).unwrap();
            assert_eq!(peeked.iss.as_deref(), Some(fake.issuer.as_str()));
            assert_eq!(tokens.expires_at, peeked.exp.unwrap());
            assert_eq!(tokens.issued_at, peeked.iat.unwrap());
        }

        #[tokio::test]
        async fn an_id_token_with_another_nonce_is_refused() {
            let nonce = std::sync::Arc::new(std::sync::Mutex::new(Some("not-the-nonce".into())));
            let fake = FakeIdp::start(code_idp(nonce)).await;
            let idp = Idp::discover(&fake.issuer, None).await.unwrap();
            let scopes = scopes();
            let grant = grant(&scopes);
            let login = idp.start_browser_login(&grant).await.unwrap();
            let (tokens, _) = answer(login, Some(&fake.issuer)).await;
            let err = tokens.unwrap_err();
            assert_eq!(err.exit_code(), exit::OTHER);
            assert!(err.report().contains("nonce"), "{}", err.report());
        }

        #[tokio::test]
        async fn the_browser_login_gives_up_after_its_timeout() {
            let fake = FakeIdp::start(|_, _| (500, "{}".into())).await;
            let idp = Idp::discover(&fake.issuer, None).await.unwrap();
            let scopes = scopes();
            let grant = Grant {
                client_id: "mcpgate-cli",
                resource: None,
                scopes: &scopes,
            };
            let login = idp.start_browser_login(&grant).await.unwrap();
            let err = login.finish(Duration::from_millis(200)).await.unwrap_err();
            assert_eq!(err.exit_code(), exit::TOKEN_REJECTED);
            assert!(
                err.report().contains("did not finish within 200ms"),
                "{}",
                err.report()
            );
        }

        #[tokio::test]
        async fn revocation_sends_the_refresh_token_and_the_client_id() {
            let fake = FakeIdp::start(|_, _| (200, String::new())).await;
            let idp = Idp::discover(&fake.issuer, None).await.unwrap();
            let revoked = idp
                .revoke("mcpgate-cli", &Secret::new("rt-1".into()))
                .await
                .unwrap();
            assert!(revoked);
            let sent = &fake.requests_to("/token/revocation")[0];
            assert_eq!(sent.form["token"], "rt-1");
            assert_eq!(sent.form["token_type_hint"], "refresh_token");
            assert_eq!(sent.form["client_id"], "mcpgate-cli");
        }

        #[tokio::test]
        async fn the_issuer_must_match_the_discovery_document_exactly() {
            let fake = FakeIdp::start(|_, _| (404, "{}".into())).await;
            let localhost = fake.issuer.replace("127.0.0.1", "localhost");
            let err = Idp::discover(&localhost, None).await.err().unwrap();
            assert_eq!(err.exit_code(), exit::OTHER);
            assert!(err.report().contains("not valid"), "{}", err.report());
            let slash = format!("{}/", fake.issuer);
            assert!(Idp::discover(&slash, None).await.is_err());
        }

        #[tokio::test]
        async fn an_unreachable_provider_is_exit_14() {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let err = Idp::discover(&format!("http://127.0.0.1:{port}"), None)
                .await
                .err()
                .unwrap();
            assert_eq!(err.exit_code(), exit::UNREACHABLE);
        }
    }
}
