//! `mcpgate-broker quickstart`: a working broker in one command.
//!
//! The first run creates a data dir with the embedded defaults (CA, keys,
//! the example config with the demo server), adds a local `admin` user
//! with a generated password (printed once, and kept 0600 in
//! `initial-admin-password` until you delete it), then starts the broker on
//! 127.0.0.1 and runs one demo client session through it with the real
//! `mcpgate` CLI, so a newcomer sees the whole path work. Later runs reuse
//! the same dir.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use mcpgate_shared::secret::Secret;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

use crate::auth::hash_password;
use crate::ca::{CA_CERT, CA_KEY, write_private};
use crate::config::Config;
use crate::init::{self, CONFIG_FILE};
use crate::serve::{self, Ready};

pub const ADMIN: &str = "admin";
pub const PASSWORD_FILE: &str = "initial-admin-password";

fn default_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("mcpgate-broker");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".local/share/mcpgate-broker")
}

/// 24 characters from an unambiguous alphabet (~140 bits).
fn generate_password() -> anyhow::Result<Secret<String>> {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyzABCDEFGHJKMNPQRSTUVWXYZ23456789";
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no random number generator: {e}"))?;
    // 256 % 54 != 0, so reject the top of the range to avoid bias.
    let mut out = String::new();
    let mut pool = bytes.to_vec();
    while out.len() < 24 {
        let Some(b) = pool.pop() else {
            let mut more = [0u8; 16];
            getrandom::fill(&mut more)
                .map_err(|e| anyhow::anyhow!("no random number generator: {e}"))?;
            pool.extend_from_slice(&more);
            continue;
        };
        if usize::from(b) < 256 - 256 % ALPHABET.len() {
            out.push(char::from(ALPHABET[usize::from(b) % ALPHABET.len()]));
        }
    }
    Ok(Secret::new(out))
}

fn set_listen(config: &Path, api: SocketAddr, tunnel: SocketAddr) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(config)?;
    let mut doc: toml_edit::DocumentMut = text.parse()?;
    doc["broker"]["api_listen"] = toml_edit::value(api.to_string());
    doc["broker"]["tunnel_listen"] = toml_edit::value(tunnel.to_string());
    let out = doc.to_string();
    Config::parse(&out, config)?;
    std::fs::write(config, out)?;
    Ok(())
}

pub async fn run(
    dir: Option<PathBuf>,
    api_listen: SocketAddr,
    tunnel_listen: SocketAddr,
    demo_session: bool,
) -> anyhow::Result<()> {
    let dir = dir.unwrap_or_else(default_dir);
    let config_path = dir.join(CONFIG_FILE);
    let first_run = !dir.join(CA_KEY).exists();
    if first_run {
        init::create(&dir, &[])?;
        eprintln!("initialized a new broker in {}", dir.display());
    }
    set_listen(&config_path, api_listen, tunnel_listen)?;
    let config = Config::load(&config_path)?;
    let password_file = dir.join(PASSWORD_FILE);
    let mut new_password = None;
    if !config.users.contains_key(&ADMIN.parse()?) {
        let password = generate_password()?;
        let text = std::fs::read_to_string(&config_path)?;
        let updated = crate::users::with_user(
            &text,
            &ADMIN.parse()?,
            &hash_password(&password)?,
            &["admin".parse()?],
        )?;
        Config::parse(&updated, &config_path)?;
        std::fs::write(&config_path, updated)?;
        let _ = std::fs::remove_file(&password_file);
        write_private(&password_file, password.expose().as_bytes())?;
        new_password = Some(password);
    }
    let ca = dir.join(CA_CERT);
    serve::run(&config_path, move |ready: &Ready| {
        print_instructions(ready, &ca, &password_file, new_password.as_ref());
        if demo_session {
            let ready = ready.clone();
            tokio::spawn(async move {
                match run_demo_session(&ready, &ca, &password_file).await {
                    Ok(summary) => println!("\ndemo session through the broker: {summary}\n"),
                    Err(e) => eprintln!("\ndemo session failed: {e:#}\n"),
                }
                println!("The broker keeps running; stop it with Ctrl-C.");
            });
        }
    })
    .await
}

fn print_instructions(
    ready: &Ready,
    ca: &Path,
    password_file: &Path,
    password: Option<&Secret<String>>,
) {
    println!();
    println!("mcpgate broker running");
    println!("  API     {}", ready.api_url);
    println!("  tunnel  {}", ready.tunnel_addr);
    match password {
        Some(p) => {
            // Shown once, on purpose: this is the quickstart's only way to
            // hand the generated password to the person running it.
            println!(
                "  admin password (shown once; also in {}): {}",
                password_file.display(),
                p.expose()
            );
        }
        None => println!(
            "  admin password: see {} (if you kept it)",
            password_file.display()
        ),
    }
    println!();
    println!("Sign in and connect:");
    println!(
        "  mcpgate login --broker {} --ca-cert {} --user {ADMIN}",
        ready.api_url,
        ca.display()
    );
    println!("  mcpgate connect demo");
    println!();
    println!("MCP client config (Claude Desktop, Cursor, VS Code):");
    println!(
        r#"  {{"mcpServers": {{"demo": {{"command": "mcpgate", "args": ["connect", "demo"]}}}}}}"#
    );
}

/// The `mcpgate` binary: next to this one, else on PATH.
fn mcpgate_exe() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("mcpgate")))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("mcpgate"))
}

/// Logs in with the generated password in a throw-away CLI home, opens
/// `mcpgate connect demo`, and speaks MCP through it.
async fn run_demo_session(
    ready: &Ready,
    ca: &Path,
    password_file: &Path,
) -> anyhow::Result<String> {
    let password = std::fs::read_to_string(password_file)
        .context("the initial admin password file is gone; skipping the demo session")?;
    let home = tempfile::tempdir()?;
    let exe = mcpgate_exe();
    let mut login = Command::new(&exe)
        .args(["login", "--broker", &ready.api_url, "--ca-cert"])
        .arg(ca)
        .args(["--user", ADMIN, "--password-stdin"])
        .env("MCPGATE_HOME", home.path())
        .env("MCPGATE_CREDENTIAL_STORE", "file")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {}", exe.display()))?;
    if let Some(mut stdin) = login.stdin.take() {
        stdin
            .write_all(format!("{}\n", password.trim()).as_bytes())
            .await?;
    }
    let out = login.wait_with_output().await?;
    if !out.status.success() {
        bail!(
            "mcpgate login failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let mut child = Command::new(&exe)
        .args(["connect", "demo"])
        .env("MCPGATE_HOME", home.path())
        .env("MCPGATE_CREDENTIAL_STORE", "file")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let mut stdin = child.stdin.take().context("no stdin")?;
    let mut lines = BufReader::new(child.stdout.take().context("no stdout")?).lines();
    let messages = [
        json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"mcpgate-quickstart","version":env!("CARGO_PKG_VERSION")}}}),
        json!({"jsonrpc":"2.0","method":"notifications/initialized"}),
        json!({"jsonrpc":"2.0","id":2,"method":"tools/list"}),
        json!({"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"list_customers","arguments":{"limit":2}}}),
    ];
    for m in &messages {
        stdin.write_all(format!("{m}\n").as_bytes()).await?;
    }
    stdin.flush().await?;
    let mut answers = std::collections::BTreeMap::new();
    let read_all = async {
        while answers.len() < 3 {
            let Some(line) = lines.next_line().await? else {
                break;
            };
            let v: Value = serde_json::from_str(&line)?;
            if let Some(id) = v.get("id").and_then(Value::as_i64) {
                answers.insert(id, v);
            }
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(Duration::from_secs(30), read_all)
        .await
        .context("no answer from the demo server within 30 s")??;
    drop(stdin);
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    let server = answers
        .get(&1)
        .and_then(|v| v.pointer("/result/serverInfo/name"))
        .and_then(Value::as_str)
        .unwrap_or("?")
        .to_owned();
    let tools = answers
        .get(&2)
        .and_then(|v| v.pointer("/result/tools"))
        .and_then(Value::as_array)
        .map(|t| {
            t.iter()
                .filter_map(|x| x["name"].as_str())
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    let call = answers
        .get(&3)
        .and_then(|v| v.pointer("/result/content/0/text"))
        .and_then(Value::as_str)
        .unwrap_or("(no text)");
    Ok(format!(
        "initialize → {server}; tools: {tools}\nlist_customers(limit=2) →\n{call}"
    ))
}
