//! `mcpgate login` against a real OpenID Provider, then sessions through
//! the broker: the browser flow (the harness plays the browser), the device
//! flow, refresh and its replay, group removal, logout, and CI mode.

use std::time::Duration;

use mcpgate_tests::Cli;
use mcpgate_tests::broker::EVERYTHING;
use mcpgate_tests::cli::exit;
use mcpgate_tests::idp::{DEFAULT_RESOURCE, Idp};
use mcpgate_tests::process::{LineChild, wait_until};
use mcpgate_tests::python::through_gateway;
use regex::Regex;
use serde_json::Value;

use crate::oidc::{ALICE_EMAIL, CI_CLIENT, CI_SECRET, broker, ci_platform, company_idp};

const LOGIN_WAIT: Duration = Duration::from_secs(30);

/// The first stderr line of `login` that is a URL.
fn login_url(login: &LineChild) -> String {
    wait_until(LOGIN_WAIT, "the login URL on stderr", || {
        login
            .stderr()
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with("http"))
            .map(str::to_owned)
    })
}

/// `mcpgate login` through the browser flow as `account`.
fn browser_login(cli: &Cli, idp: &Idp, account: &str) {
    let mut login = cli.spawn_login(&[]);
    let url = login_url(&login);
    let outcome = idp.browser_login(&url, account);
    assert_eq!(outcome.status, 200, "callback page: {}", outcome.body);
    let status = login.wait(LOGIN_WAIT);
    assert!(status.success(), "login failed: {}", login.stderr());
}

fn status_json(cli: &Cli) -> Value {
    let out = cli.run(&["status", "--check", "--output", "json"]);
    assert!(out.success(), "status: {out}");
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
}

fn credentials(cli: &Cli) -> Vec<u8> {
    std::fs::read(cli.home().join("credentials")).expect("the credentials file")
}

#[test]
fn browser_login_with_pkce_then_a_session_through_the_broker() {
    let idp = company_idp();
    let broker = broker(&idp, None);
    let cli = Cli::new(&broker);
    browser_login(&cli, &idp, "alice");

    let status = status_json(&cli);
    assert_eq!(status["user"], ALICE_EMAIL, "{status}");
    assert_eq!(status["issuer"], idp.issuer(), "{status}");
    assert!(status.to_string().contains("\"dev\""), "{status}");

    let run = through_gateway(&cli, EVERYTHING, "basic", &[]);
    run.expect_ok();

    // The tokens are in the 0600 credentials file, never in state.json.
    let state = std::fs::read_to_string(cli.home().join("state.json")).unwrap();
    assert!(!state.contains("eyJ"), "a token in state.json: {state}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(cli.home().join("credentials"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // The session is recorded under the IdP identity.
    let sessions = broker.admin(&["sessions", "--output", "json"]);
    assert!(sessions.stdout.contains(ALICE_EMAIL), "{sessions}");
    assert!(sessions.stdout.contains(idp.issuer()), "{sessions}");
}

#[test]
fn a_tampered_redirect_is_refused_by_the_cli() {
    let idp = company_idp();
    let broker = broker(&idp, None);
    let cli = Cli::new(&broker);
    for (what, tamper, expect) in [
        ("state", ("state", "forged-state"), "state"),
        ("iss", ("iss", "http://127.0.0.1:1"), "issuer"),
    ] {
        let mut login = cli.spawn_login(&[]);
        let url = login_url(&login);
        let mut redirect = idp.authorize_until_redirect(&url, "alice");
        let pairs: Vec<(String, String)> = redirect
            .query_pairs()
            .filter(|(k, _)| k != tamper.0)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .chain([(tamper.0.to_owned(), tamper.1.to_owned())])
            .collect();
        redirect.query_pairs_mut().clear().extend_pairs(pairs);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _ = rt.block_on(async {
            reqwest::Client::builder()
                .no_proxy()
                .build()
                .unwrap()
                .get(redirect.as_str())
                .send()
                .await
        });
        let code = login.wait(LOGIN_WAIT).code();
        assert_ne!(code, Some(0), "{what}: a tampered redirect logged in");
        assert!(
            login.stderr().to_lowercase().contains(expect),
            "{what}: {}",
            login.stderr()
        );
        assert!(!cli.home().join("state.json").exists(), "{what}");
    }
}

#[test]
fn device_flow_login_on_a_headless_machine() {
    let idp = company_idp();
    let broker = broker(&idp, None);
    let cli = Cli::new(&broker);
    let mut login = cli.spawn_login(&["--device"]);
    let re = Regex::new(r"open (\S+) and enter the code (\S+)").unwrap();
    let (uri, code) = wait_until(LOGIN_WAIT, "the device code on stderr", || {
        re.captures(&login.stderr())
            .map(|c| (c[1].to_owned(), c[2].to_owned()))
    });
    idp.approve_device(&uri, &code, "alice");
    let status = login.wait(LOGIN_WAIT);
    assert!(status.success(), "device login failed: {}", login.stderr());
    let out = cli.run(&["servers", "--output", "json"]);
    assert!(out.success() && out.stdout.contains(EVERYTHING), "{out}");
}

#[test]
fn removing_a_person_from_the_group_at_the_idp_ends_access_at_the_next_session() {
    let idp = company_idp();
    let broker = broker(&idp, None);
    let cli = Cli::new(&broker);
    browser_login(&cli, &idp, "alice");
    through_gateway(&cli, EVERYTHING, "basic", &[]).expect_ok();

    idp.set_account("alice", ALICE_EMAIL, &["sales"]);
    let out = cli.run(&["connect", EVERYTHING]);
    assert_eq!(out.code(), exit::NO_ACCESS, "{out}");
    assert!(out.stderr.contains("no role"), "{out}");
}

#[test]
fn a_replayed_refresh_token_is_refused_and_the_person_is_told_to_log_in() {
    let idp = company_idp();
    let broker = broker(&idp, None);
    let cli = Cli::new(&broker);
    browser_login(&cli, &idp, "alice");
    let first = credentials(&cli);
    // A session refreshes: the IdP rotates the refresh token and the CLI
    // saves the new one.
    through_gateway(&cli, EVERYTHING, "basic", &[]).expect_ok();
    assert_ne!(
        credentials(&cli),
        first,
        "the rotated refresh token was not saved"
    );

    // Someone replays the old one (a copied credentials file).
    std::fs::write(cli.home().join("credentials"), &first).unwrap();
    let out = cli.run(&["connect", EVERYTHING]);
    assert_eq!(out.code(), exit::TOKEN_REJECTED, "{out}");
    assert!(out.stderr.contains("mcpgate login"), "{out}");
}

#[test]
fn logout_revokes_the_refresh_token_at_the_idp() {
    let idp = company_idp();
    let broker = broker(&idp, None);
    let cli = Cli::new(&broker);
    browser_login(&cli, &idp, "alice");
    let state = std::fs::read(cli.home().join("state.json")).unwrap();
    let creds = credentials(&cli);
    let out = cli.run(&["logout"]);
    assert!(out.success(), "{out}");
    assert!(!cli.home().join("state.json").exists());

    // Put the files back: the refresh token in them must be dead.
    std::fs::write(cli.home().join("state.json"), state).unwrap();
    std::fs::write(cli.home().join("credentials"), creds).unwrap();
    let out = cli.run(&["connect", EVERYTHING]);
    assert_eq!(out.code(), exit::TOKEN_REJECTED, "{out}");
}

#[test]
fn ci_client_credentials_log_in_and_connect_without_writing_anything() {
    let idp = company_idp();
    let broker = broker(&idp, None);
    let mut cli = Cli::new(&broker);
    let (api, ca) = (cli.api_url().to_owned(), cli.ca_path().to_owned());
    cli.env("MCPGATE_CI", "1")
        .env("MCPGATE_BROKER", api)
        .env("MCPGATE_CA_CERT", ca)
        .env("MCPGATE_CLIENT_ID", CI_CLIENT)
        .env("MCPGATE_CLIENT_SECRET", CI_SECRET);
    let out = cli.run(&["login", "--ci"]);
    assert!(out.success(), "{out}");
    assert!(
        out.stdout.contains("ci-runner") || out.stderr.contains("ci-runner"),
        "{out}"
    );
    assert!(!out.stdout.contains(CI_SECRET) && !out.stderr.contains(CI_SECRET));

    through_gateway(&cli, EVERYTHING, "basic", &[]).expect_ok();
    let written: Vec<_> = cli.files().into_iter().map(|(p, _)| p).collect();
    assert!(written.is_empty(), "CI mode wrote {written:?}");

    // The workload's certificate lifetime (2m), not the broker's 10m.
    let sessions = broker.admin(&["sessions", "--output", "json"]);
    let list: Value = serde_json::from_str(&sessions.stdout).unwrap();
    let s = &list[0];
    assert_eq!(s["user"], "ci-runner", "{s}");
    let lifetime = s["connect_by"].as_u64().unwrap() - s["created_at"].as_u64().unwrap();
    assert!((110..=120).contains(&lifetime), "{s}");
}

#[test]
fn a_ci_platform_token_is_accepted_only_when_its_claims_match() {
    let idp = company_idp();
    let platform = ci_platform();
    let broker = broker(&idp, Some(&platform));
    let mut cli = Cli::new(&broker);
    let (api, ca) = (cli.api_url().to_owned(), cli.ca_path().to_owned());
    cli.env("MCPGATE_CI", "1")
        .env("MCPGATE_BROKER", api)
        .env("MCPGATE_CA_CERT", ca);
    let token = |client: &str| {
        platform.client_credentials(client, CI_SECRET, Some(DEFAULT_RESOURCE))["access_token"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    cli.env("MCPGATE_CI_TOKEN", token("ci-main"));
    let out = cli.run(&["login", "--ci"]);
    assert!(out.success(), "{out}");
    through_gateway(&cli, EVERYTHING, "basic", &[]).expect_ok();

    // The same through a file.
    let file = cli.root().join("ci-token");
    std::fs::write(&file, token("ci-fork")).unwrap();
    cli.env("MCPGATE_CI_TOKEN", "");
    let out = cli.run(&["login", "--ci", "--token-file", &file.display().to_string()]);
    assert_eq!(out.code(), exit::TOKEN_REJECTED, "{out}");
    assert!(out.stderr.contains("workload rule"), "{out}");
}
