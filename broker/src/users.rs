//! `mcpgate-broker user add`: local users in the config file.
//!
//! The file is edited with `toml_edit`, so comments and layout survive, and
//! the result is parsed and checked before it replaces the old file.

use std::io::{BufRead, IsTerminal};
use std::path::Path;

use anyhow::{Context, bail};
use mcpgate_shared::names::{RoleName, UserName};
use mcpgate_shared::secret::Secret;

use crate::auth::hash_password;
use crate::config::Config;

/// Shortest password accepted.
pub const MIN_PASSWORD_LEN: usize = 12;

fn read_password(from_stdin: bool) -> anyhow::Result<Secret<String>> {
    let stdin = std::io::stdin();
    if from_stdin || !stdin.is_terminal() {
        let mut line = String::new();
        stdin
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from stdin")?;
        return Ok(Secret::new(line.trim_end_matches(['\r', '\n']).to_owned()));
    }
    let first = Secret::new(rpassword::prompt_password("Password: ")?);
    let again = Secret::new(rpassword::prompt_password("Password again: ")?);
    if first != again {
        bail!("the passwords differ; try again");
    }
    Ok(first)
}

pub fn add(
    config: &Path,
    name: &UserName,
    roles: &[RoleName],
    password_stdin: bool,
    force: bool,
) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(config)
        .with_context(|| format!("cannot read {}", config.display()))?;
    // Check the roles before asking for a password.
    let current = Config::parse(&text, config)?;
    for role in roles {
        if !current.roles.contains_key(role) {
            bail!(
                "role {role:?} is not under [roles] in {}; add it first",
                config.display()
            );
        }
    }
    if current.users.contains_key(name) && !force {
        bail!("user {name:?} already exists; pass --force to replace it");
    }
    let password = read_password(password_stdin)?;
    if password.expose().chars().count() < MIN_PASSWORD_LEN {
        bail!("the password is too short: use at least {MIN_PASSWORD_LEN} characters");
    }
    let updated = with_user(&text, name, &hash_password(&password)?, roles)?;
    Config::parse(&updated, config).context("the updated config does not parse")?;
    replace_file(config, updated.as_bytes())?;
    eprintln!(
        "user {name} saved in {} (restart the broker to apply)",
        config.display()
    );
    Ok(())
}

/// The config text with `[users.NAME]` set.
pub fn with_user(
    text: &str,
    name: &UserName,
    hash: &str,
    roles: &[RoleName],
) -> anyhow::Result<String> {
    let mut doc: toml_edit::DocumentMut = text.parse().context("the config is not valid TOML")?;
    let users = doc
        .entry("users")
        .or_insert_with(|| {
            let mut t = toml_edit::Table::new();
            t.set_implicit(true);
            toml_edit::Item::Table(t)
        })
        .as_table_mut()
        .context("`users` in the config is not a table")?;
    let mut user = toml_edit::Table::new();
    user["password_hash"] = toml_edit::value(hash);
    user["roles"] = toml_edit::value(toml_edit::Array::from_iter(
        roles.iter().map(|r| r.as_str()),
    ));
    users.insert(name.as_str(), toml_edit::Item::Table(user));
    Ok(doc.to_string())
}

/// Writes next to the file and renames over it, keeping its permissions.
fn replace_file(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(contents)?;
    tmp.as_file().sync_all()?;
    if let Ok(meta) = std::fs::metadata(path) {
        tmp.as_file().set_permissions(meta.permissions())?;
    }
    tmp.persist(path)
        .with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adding_a_user_keeps_comments_and_parses() {
        let text = crate::config::EXAMPLE.replace("@BROKER_EXE@", "/bin/true");
        let hash = hash_password(&Secret::new("a long password".into())).unwrap();
        let out = with_user(
            &text,
            &"alice".parse().unwrap(),
            &hash,
            &["admin".parse().unwrap()],
        )
        .unwrap();
        assert!(out.contains("# Local users. Add them with:"));
        let c = Config::parse(&out, Path::new("x.toml")).unwrap();
        assert_eq!(
            c.users[&"alice".parse().unwrap()].roles,
            vec!["admin".parse().unwrap()]
        );
    }
}
