//! Sign-in through a real OpenID Provider (npm `oidc-provider` on
//! 127.0.0.1): what the broker accepts, what it refuses and why.
//!
//! The negative suite sends each token to the broker's real `GET
//! /v1/whoami` endpoint and checks both the answer and the reason the
//! broker logged (never the token itself).

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mcpgate_tests::Broker;
use mcpgate_tests::idp::{DEFAULT_RESOURCE, Idp, decode_jwt};
use mcpgate_tests::tunnel::Api;
use serde_json::{Value, json};

use crate::fixtures;

pub const CLI_CLIENT: &str = "mcpgate-cli";
pub const CI_CLIENT: &str = "ci-runner";
pub const CI_SECRET: &str = "ci-runner-secret-0123456789";
pub const ALICE_EMAIL: &str = "alice@example.com";

const LOG_WAIT: Duration = Duration::from_secs(10);

/// The company IdP: alice is in `eng`, mallory only in `sales`; the CLI's
/// public client and a confidential CI client.
pub fn company_idp() -> Idp {
    Idp::builder()
        .account("alice", ALICE_EMAIL, &["eng"])
        .account("mallory", "mallory@example.com", &["sales"])
        .public_client(CLI_CLIENT)
        .confidential_client(CI_CLIENT, CI_SECRET, json!({}))
        .start()
}

/// A CI platform's token issuer: `ci-main` gets tokens for acme/app's main
/// branch, `ci-fork` for a fork.
pub fn ci_platform() -> Idp {
    Idp::builder()
        .confidential_client(
            "ci-main",
            CI_SECRET,
            json!({"repository": "acme/app", "ref": "refs/heads/main",
                   "sub": "repo:acme/app:ref:refs/heads/main"}),
        )
        .confidential_client(
            "ci-fork",
            CI_SECRET,
            json!({"repository": "evil/app", "ref": "refs/heads/main",
                   "sub": "repo:evil/app:ref:refs/heads/main"}),
        )
        .start()
}

/// `[[oidc]]` for the company IdP (`eng` → role `dev`, the CI client as a
/// workload) and, when given, the CI platform.
pub fn oidc_toml(company: &Idp, platform: Option<&Idp>) -> String {
    let mut toml = format!(
        r#"
[[oidc]]
name = "corp"
issuer = "{issuer}"
client_id = "{CLI_CLIENT}"
resource = "{DEFAULT_RESOURCE}"
email_domains = ["example.com"]
jwks_min_refresh_interval = "1s"

[[oidc.groups]]
group = "eng"
roles = ["dev"]

[[oidc.workloads]]
name = "ci-runner"
claims = {{ client_id = "{CI_CLIENT}" }}
roles = ["dev"]
cert_ttl = "2m"
"#,
        issuer = company.issuer()
    );
    if let Some(p) = platform {
        toml.push_str(&format!(
            r#"
[[oidc]]
name = "ci-platform"
issuer = "{issuer}"
audiences = ["{DEFAULT_RESOURCE}"]

[[oidc.workloads]]
name = "ci-acme-app"
claims = {{ repository = "acme/app", ref = "refs/heads/main" }}
roles = ["dev"]
cert_ttl = "1m"
"#,
            issuer = p.issuer()
        ));
    }
    toml
}

/// The shared fixture broker with OIDC configured.
pub fn broker(company: &Idp, platform: Option<&Idp>) -> Broker {
    fixtures::builder()
        .toml(&oidc_toml(company, platform))
        .start()
}

/// Claims a person's access token from the company IdP would carry.
fn person_claims(idp: &Idp) -> Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    json!({
        "iss": idp.issuer(), "sub": "alice", "aud": DEFAULT_RESOURCE,
        "iat": now, "exp": now + 300, "client_id": CLI_CLIENT,
        "email": ALICE_EMAIL, "email_verified": true, "groups": ["eng"],
    })
}

fn with(mut v: Value, key: &str, value: Value) -> Value {
    if value.is_null() {
        v.as_object_mut().unwrap().remove(key);
    } else {
        v[key] = value;
    }
    v
}

fn b64(v: &Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

#[tokio::test]
async fn forged_and_misaddressed_tokens_are_refused_with_the_reason_logged() {
    let idp = company_idp();
    let other = company_idp(); // an IdP the broker does not list
    let broker = broker(&idp, None);
    let api = Api::new(broker.api_url(), &broker.ca_pem());
    let good = person_claims(&idp);
    let now = good["iat"].as_u64().unwrap();

    // The control: the same construction with nothing wrong is accepted.
    let me = api.whoami(&idp.sign(&json!({}), &good)).await.unwrap();
    assert_eq!(me.user.as_str(), ALICE_EMAIL);
    assert_eq!(me.issuer, idp.issuer());

    let key = idp.signing_key();
    let hs256 = {
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some(key.kid.clone());
        h.typ = Some("at+jwt".into());
        jsonwebtoken::encode(
            &h,
            &good,
            &EncodingKey::from_secret(key.public_pem.as_bytes()),
        )
        .unwrap()
    };
    let stranger = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let stranger_key = EncodingKey::from_ec_pem(stranger.serialize_pem().as_bytes()).unwrap();
    let sign_with_stranger = |kid: &str| {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some(kid.into());
        h.typ = Some("at+jwt".into());
        jsonwebtoken::encode(&h, &good, &stranger_key).unwrap()
    };

    let cases: Vec<(&str, String, u16, &str)> = vec![
        (
            "alg none, unsigned",
            format!(
                "{}.{}.",
                b64(&json!({"alg": "none", "typ": "at+jwt"})),
                b64(&good)
            ),
            401,
            "alg none",
        ),
        (
            "alg none in a signed token's header",
            idp.sign(&json!({"alg": "none"}), &good),
            401,
            "alg none",
        ),
        ("HS256 keyed with the IdP's public key", hs256, 401, "HMAC"),
        (
            "a key not in the JWKS",
            sign_with_stranger("not-in-the-jwks"),
            401,
            "not in the issuer's key set",
        ),
        (
            "a foreign key under the IdP's kid",
            sign_with_stranger(&key.kid),
            401,
            "signature does not verify",
        ),
        (
            "an issuer the broker does not list",
            other.sign(
                &json!({}),
                &with(good.clone(), "iss", json!(other.issuer())),
            ),
            401,
            "is not trusted",
        ),
        (
            "wrong iss with the listed IdP's key",
            idp.sign(
                &json!({}),
                &with(good.clone(), "iss", json!("https://evil.example")),
            ),
            401,
            "is not trusted",
        ),
        (
            "wrong aud",
            idp.sign(
                &json!({}),
                &with(good.clone(), "aud", json!("urn:someone-else")),
            ),
            401,
            "audience is not accepted",
        ),
        (
            "an ID token for another client",
            idp.sign(
                &json!({"typ": "JWT"}),
                &with(good.clone(), "aud", json!("other-app")),
            ),
            401,
            "ID token's audience",
        ),
        (
            "an access token without typ at+jwt",
            idp.sign(&json!({"typ": null}), &good),
            401,
            "ID token's audience",
        ),
        (
            "expired",
            idp.sign(
                &json!({}),
                &with(
                    with(good.clone(), "exp", json!(now - 300)),
                    "iat",
                    json!(now - 600),
                ),
            ),
            401,
            "expired",
        ),
        (
            "not yet valid",
            idp.sign(&json!({}), &with(good.clone(), "nbf", json!(now + 3600))),
            401,
            "not valid yet",
        ),
        (
            "issued in the future",
            idp.sign(&json!({}), &with(good.clone(), "iat", json!(now + 3600))),
            401,
            "issued in the future",
        ),
        (
            "too old to carry current groups",
            idp.sign(&json!({}), &with(good.clone(), "iat", json!(now - 3600))),
            401,
            "get a fresh one",
        ),
        (
            "no groups claim",
            idp.sign(&json!({}), &with(good.clone(), "groups", Value::Null)),
            403,
            "maps to no role",
        ),
        (
            "groups that map to no role",
            idp.sign(&json!({}), &with(good.clone(), "groups", json!(["sales"]))),
            403,
            "none of your groups",
        ),
        (
            "an email outside the allowed domains",
            idp.sign(
                &json!({}),
                &with(good.clone(), "email", json!("alice@evil.example")),
            ),
            401,
            "domain",
        ),
        (
            "an unverified email",
            idp.sign(
                &json!({}),
                &with(good.clone(), "email_verified", json!(false)),
            ),
            401,
            "not verified",
        ),
    ];
    for (what, token, status, reason) in cases {
        let mark = broker.log_mark();
        let err = api
            .whoami(&token)
            .await
            .err()
            .unwrap_or_else(|| panic!("{what}: accepted"));
        assert_eq!(err.status, status, "{what}: {}", err.body);
        assert!(err.body.contains(reason), "{what}: {}", err.body);
        let line = broker.wait_for_log_after(mark, LOG_WAIT, what, |l| {
            l.contains("API call refused") && l.contains(reason)
        });
        let signature = token.rsplit('.').next().unwrap_or("");
        assert!(
            signature.is_empty() || !broker.log().contains(signature),
            "{what}: the token reached the log: {line}"
        );
    }
}

#[tokio::test]
async fn key_rotation_at_the_idp_is_picked_up_without_a_restart() {
    let idp = company_idp();
    let broker = broker(&idp, None);
    let api = Api::new(broker.api_url(), &broker.ca_pem());
    let token = |idp: &Idp| {
        idp.client_credentials(CI_CLIENT, CI_SECRET, Some(DEFAULT_RESOURCE))["access_token"]
            .as_str()
            .expect("an access token")
            .to_owned()
    };
    let before = token(&idp);
    let me = api.whoami(&before).await.unwrap();
    assert_eq!(me.user.as_str(), "ci-runner");

    let new_kid = idp.rotate_keys();
    let after = token(&idp);
    assert_eq!(decode_jwt(&after).0["kid"], json!(new_kid));
    let mark = broker.log_mark();
    assert_eq!(api.whoami(&after).await.unwrap().user.as_str(), "ci-runner");
    broker.wait_for_log_after(mark, LOG_WAIT, "the key refetch", |l| {
        l.contains("unknown key id")
    });
    // The old key is still published, so tokens it signed still verify.
    assert!(api.whoami(&before).await.is_ok());
}

#[tokio::test]
async fn ci_platform_tokens_must_match_the_claim_rules() {
    let idp = company_idp();
    let platform = ci_platform();
    let broker = broker(&idp, Some(&platform));
    let api = Api::new(broker.api_url(), &broker.ca_pem());
    let token = |client: &str| {
        platform.client_credentials(client, CI_SECRET, Some(DEFAULT_RESOURCE))["access_token"]
            .as_str()
            .expect("an access token")
            .to_owned()
    };
    let me = api.whoami(&token("ci-main")).await.unwrap();
    assert_eq!(me.user.as_str(), "ci-acme-app");
    assert_eq!(me.issuer, platform.issuer());

    let mark = broker.log_mark();
    let err = api.whoami(&token("ci-fork")).await.unwrap_err();
    assert_eq!(err.status, 401, "{}", err.body);
    assert!(
        err.body.contains("matches no workload rule"),
        "{}",
        err.body
    );
    broker.wait_for_log_after(mark, LOG_WAIT, "the refused fork token", |l| {
        l.contains("API call refused") && l.contains("workload rule")
    });
}
