//! Where the things under test are: the two binaries in the cargo target
//! dir, and the MCP peers `tests/setup-peers` installed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const BUILD_HINT: &str = "run tests/run or cargo build --workspace --bins first";
const PEERS_HINT: &str = "run tests/setup-peers (or tests/run) first";

/// The folder holding the workspace's built binaries: the first ancestor of
/// this executable that contains `mcpgate-broker` (the test binary lives in
/// `target/debug/deps`, the latency bench in `target/debug`).
fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().expect("the test's own executable path");
        exe.ancestors()
            .skip(1)
            .find(|dir| dir.join(exe_name("mcpgate-broker")).is_file())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| {
                panic!(
                    "mcpgate-broker is not built next to {}: {BUILD_HINT}",
                    exe.display()
                )
            })
    })
}

fn exe_name(name: &str) -> String {
    format!("{name}{}", std::env::consts::EXE_SUFFIX)
}

fn built(name: &str) -> PathBuf {
    let path = bin_dir().join(exe_name(name));
    assert!(
        path.is_file(),
        "{} is missing: {BUILD_HINT}",
        path.display()
    );
    path
}

/// `target/<profile>/mcpgate-broker`.
pub fn broker_bin() -> PathBuf {
    built("mcpgate-broker")
}

/// `target/<profile>/mcpgate`.
pub fn cli_bin() -> PathBuf {
    built("mcpgate")
}

/// The `tests/` folder of the workspace.
pub fn tests_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The installed MCP peers, as `tests/.peers/env` names them.
#[derive(Debug, Clone)]
pub struct Peers {
    /// The venv's python, with the official `mcp` SDK.
    pub python: PathBuf,
    /// A node new enough for server-everything.
    pub node: PathBuf,
    /// `@modelcontextprotocol/server-everything`'s `dist/index.js`.
    pub everything_js: PathBuf,
    /// `tests/peers/client.py`.
    pub client_py: PathBuf,
    /// The copy of `tests/peers/oidc-provider.mjs` next to its node_modules.
    pub oidc_provider: PathBuf,
}

impl Peers {
    /// The peers, read once. Panics with what to run when they are missing.
    pub fn get() -> &'static Peers {
        static PEERS: OnceLock<Peers> = OnceLock::new();
        PEERS.get_or_init(|| {
            let env_file = tests_dir().join(".peers").join("env");
            let text = std::fs::read_to_string(&env_file)
                .unwrap_or_else(|e| panic!("{}: {e}: {PEERS_HINT}", env_file.display()));
            let vars: HashMap<&str, &str> = text
                .lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .filter_map(|l| l.split_once('='))
                .collect();
            let path = |key: &str| {
                let p = PathBuf::from(vars.get(key).unwrap_or_else(|| {
                    panic!("{} names no {key}: {PEERS_HINT}", env_file.display())
                }));
                assert!(
                    p.exists(),
                    "{key}={} does not exist: {PEERS_HINT}",
                    p.display()
                );
                p
            };
            Peers {
                python: path("MCPGATE_TEST_PYTHON"),
                node: path("MCPGATE_TEST_NODE"),
                everything_js: path("MCPGATE_TEST_EVERYTHING_JS"),
                client_py: tests_dir().join("peers").join("client.py"),
                oidc_provider: path("MCPGATE_TEST_OIDC_PROVIDER"),
            }
        })
    }

    /// The command line that runs server-everything over stdio.
    pub fn everything_command(&self) -> Vec<String> {
        vec![
            self.node.display().to_string(),
            self.everything_js.display().to_string(),
            "stdio".into(),
        ]
    }
}
