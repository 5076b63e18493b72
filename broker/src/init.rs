//! `mcpgate-broker init`: a new broker's keys and config in one folder.

use std::path::Path;

use anyhow::Context;

use crate::ca;
use crate::config::{Config, EXAMPLE};

/// The config file `init` writes inside the data dir.
pub const CONFIG_FILE: &str = "broker.toml";

/// The example config with this binary's path and the given names filled in.
pub fn example_config(names: &[String]) -> anyhow::Result<String> {
    let exe = std::env::current_exe().context("cannot find the path of this binary")?;
    let exe = exe.to_string_lossy();
    let mut text = EXAMPLE.replace("@BROKER_EXE@", &exe);
    if !names.is_empty() {
        let list = toml_edit::Value::from(toml_edit::Array::from_iter(
            names.iter().map(String::as_str),
        ));
        text = text.replace(
            "public_names = [\"127.0.0.1\", \"localhost\", \"::1\"]",
            &format!("public_names = {list}"),
        );
    }
    Ok(text)
}

pub fn run(dir: &Path, names: Vec<String>) -> anyhow::Result<()> {
    create(dir, &names)?;
    eprintln!("created a broker in {}", dir.display());
    eprintln!(
        "next: mcpgate-broker user add NAME --role admin --config {}",
        dir.join(CONFIG_FILE).display()
    );
    eprintln!(
        "then: mcpgate-broker serve --config {}",
        dir.join(CONFIG_FILE).display()
    );
    Ok(())
}

/// Creates `dir` (0700) with the CA, keys and a config.
pub fn create(dir: &Path, names: &[String]) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let default_names = ["127.0.0.1".to_string(), "localhost".into(), "::1".into()];
    let public: &[String] = if names.is_empty() {
        &default_names
    } else {
        names
    };
    ca::create(dir, public)?;
    crate::mask::MaskKey::load_or_create(dir)?;
    let config_path = dir.join(CONFIG_FILE);
    if !config_path.exists() {
        let text = example_config(names)?;
        Config::parse(&text, &config_path).context("the generated config does not parse")?;
        ca::write_private(&config_path, text.as_bytes())?;
    }
    Ok(())
}
