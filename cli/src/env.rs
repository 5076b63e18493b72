//! Every environment variable the CLI reads, in one place.

/// The state dir (overrides `$XDG_CONFIG_HOME/mcpgate` and `~/.config/mcpgate`).
pub const MCPGATE_HOME: &str = "MCPGATE_HOME";
/// Where the token goes: `auto` (default: OS keyring, else a 0600 file),
/// `keyring` or `file`.
pub const MCPGATE_CREDENTIAL_STORE: &str = "MCPGATE_CREDENTIAL_STORE";
/// Default for `mcpgate login --broker`.
pub const MCPGATE_BROKER: &str = "MCPGATE_BROKER";
/// Default for `mcpgate login --user`.
pub const MCPGATE_USER: &str = "MCPGATE_USER";
/// Default for `mcpgate login --ca-cert`.
pub const MCPGATE_CA_CERT: &str = "MCPGATE_CA_CERT";
/// A `tracing` filter for diagnostics on stderr, e.g. `debug`.
pub const MCPGATE_LOG: &str = "MCPGATE_LOG";
/// Any non-empty value turns colour off (<https://no-color.org>).
pub const NO_COLOR: &str = "NO_COLOR";
pub const XDG_CONFIG_HOME: &str = "XDG_CONFIG_HOME";
/// Tests only: `1` makes the completions test rewrite `completions/`.
#[cfg(test)]
pub const MCPGATE_UPDATE_COMPLETIONS: &str = "MCPGATE_UPDATE_COMPLETIONS";

/// The variable's value, treating unset, empty and non-UTF-8 alike as absent.
pub fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Whether output on stderr may use colour: a terminal and no `NO_COLOR`.
pub fn stderr_color() -> bool {
    use std::io::IsTerminal;
    var(NO_COLOR).is_none() && std::io::stderr().is_terminal()
}
