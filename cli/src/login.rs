//! `mcpgate login`: trade a user name and password for a broker token, and
//! keep it.
//!
//! Order matters: the password is read before the spinner starts (the
//! prompt needs the terminal), and the token is stored before the state file
//! that points at it, so a failure half-way never leaves a state file
//! naming a token that is not there.

use std::io::{BufRead, IsTerminal};

use mcpgate_shared::api::LoginRequest;
use mcpgate_shared::secret::Secret;

use crate::args::LoginArgs;
use crate::client::ApiClient;
use crate::context::Context;
use crate::error::Error;
use crate::state::{self, State, TokenStore};
use crate::ui::{self, Spinner};

pub async fn run(args: LoginArgs, ctx: &Context) -> Result<(), Error> {
    let ca_pem = args.ca_cert.as_deref().map(read_ca_cert).transpose()?;
    let client = ApiClient::new(&args.broker, ca_pem.as_deref())?;
    let password = read_password(&args)?;

    let spinner = Spinner::start(format!("logging in to {}", args.broker));
    let answer = client
        .login(&LoginRequest {
            user: args.user.clone(),
            password,
        })
        .await?;

    spinner.set("saving the token");
    let previous = State::load(&ctx.dir).ok().flatten();
    let new = State {
        broker: args.broker.clone(),
        ca_pem,
        // The broker's spelling of the name is the one its certificates use.
        user: answer.user.clone(),
        roles: answer.roles.clone(),
        expires_at: answer.expires_at,
        token_store: TokenStore::File, // replaced just below
    };
    let token_store = ctx.credentials.save(&new.account(), &answer.token)?;
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
    drop(spinner);

    let roles = if new.roles.is_empty() {
        "no roles".to_owned()
    } else {
        let names: Vec<&str> = new.roles.iter().map(|r| r.as_str()).collect();
        format!("roles {}", names.join(", "))
    };
    eprintln!(
        "logged in to {} as {} ({roles}); token expires {}, kept in {}",
        new.broker,
        new.user,
        ui::expiry(new.expires_at, state::now()),
        new.token_store.describe(&ctx.dir),
    );
    Ok(())
}

/// Reads and checks the `--ca-cert` file; returns its PEM text.
fn read_ca_cert(path: &std::path::Path) -> Result<String, Error> {
    let pem = std::fs::read_to_string(path)
        .map_err(|e| Error::Usage(format!("cannot read --ca-cert {}: {e}", path.display())))?;
    crate::tls::roots(&pem)
        .map_err(|e| Error::Usage(format!("--ca-cert {}: {e}", path.display())))?;
    Ok(pem)
}

/// The password: from the terminal without echo, or the first line of stdin
/// when asked to or when stdin is not a terminal.
fn read_password(args: &LoginArgs) -> Result<Secret<String>, Error> {
    let stdin = std::io::stdin();
    let password = if args.password_stdin || !stdin.is_terminal() {
        let mut line = String::new();
        stdin
            .lock()
            .read_line(&mut line)
            .map_err(|e| Error::stdio("cannot read the password from stdin", e))?;
        first_line(line)
    } else {
        rpassword::prompt_password(format!("Password for {} at {}: ", args.user, args.broker))
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
        assert_eq!(read_ca_cert(&path).unwrap_err().exit_code(), 2);
        assert_eq!(
            read_ca_cert(&tmp.path().join("missing.pem"))
                .unwrap_err()
                .exit_code(),
            2
        );
    }
}
