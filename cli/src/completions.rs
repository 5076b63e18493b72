//! `mcpgate completions SHELL`, and the checked-in scripts in
//! `completions/` that a test keeps fresh.

use std::io::Write;

use clap::CommandFactory;
use clap_complete::Shell;

use crate::args::{Cli, CompletionShell, CompletionsArgs};
use crate::error::Error;

/// The binary name the scripts complete.
const BIN: &str = "mcpgate";

/// Each shell and the file its script is checked in as, under
/// `completions/` at the workspace root.
#[cfg(test)]
const FILES: &[(CompletionShell, &str)] = &[
    (CompletionShell::Bash, "mcpgate.bash"),
    (CompletionShell::Zsh, "_mcpgate"),
    (CompletionShell::Fish, "mcpgate.fish"),
    (CompletionShell::Powershell, "_mcpgate.ps1"),
];

pub fn run(args: CompletionsArgs) -> Result<(), Error> {
    let script = script(args.shell);
    let mut out = std::io::stdout().lock();
    out.write_all(&script)
        .and_then(|()| out.flush())
        .map_err(|e| Error::stdio("cannot write to stdout", e))
}

/// The completion script for `shell`.
pub fn script(shell: CompletionShell) -> Vec<u8> {
    let shell = match shell {
        CompletionShell::Bash => Shell::Bash,
        CompletionShell::Zsh => Shell::Zsh,
        CompletionShell::Fish => Shell::Fish,
        CompletionShell::Powershell => Shell::PowerShell,
    };
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), BIN, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::env;

    fn dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("completions")
    }

    /// Fails when a script in `completions/` differs from what the current
    /// argument definitions generate. `MCPGATE_UPDATE_COMPLETIONS=1`
    /// rewrites them instead.
    #[test]
    fn checked_in_completions_are_fresh() {
        let update = env::var(env::MCPGATE_UPDATE_COMPLETIONS).as_deref() == Some("1");
        let mut stale = Vec::new();
        for (shell, name) in FILES {
            let path = dir().join(name);
            let want = script(*shell);
            if update {
                std::fs::write(&path, &want).unwrap();
                continue;
            }
            if std::fs::read(&path).ok().as_deref() != Some(&want[..]) {
                stale.push(format!("completions/{name}"));
            }
        }
        assert!(
            stale.is_empty(),
            "stale completion scripts: {}; regenerate them with: MCPGATE_UPDATE_COMPLETIONS=1 cargo test -p mcpgate completions",
            stale.join(", ")
        );
    }

    #[test]
    fn every_script_mentions_every_subcommand() {
        for (shell, _) in FILES {
            let text = String::from_utf8(script(*shell)).unwrap();
            for sub in [
                "login",
                "logout",
                "status",
                "servers",
                "connect",
                "approvals",
                "approve",
                "deny",
                "request-access",
                "grants",
                "sessions",
                "replay",
                "audit",
                "completions",
            ] {
                assert!(text.contains(sub), "{shell:?} script lacks {sub}");
            }
        }
    }
}
