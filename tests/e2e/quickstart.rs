//! The README's main command: `mcpgate-broker quickstart` sets a broker up
//! from its embedded defaults, starts it, and runs a demo client session
//! through it with the real `mcpgate` CLI.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use mcpgate_tests::paths::broker_bin;
use mcpgate_tests::process::LineChild;

#[test]
fn quickstart_starts_a_broker_and_runs_a_demo_session_through_it() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("broker");
    let mut cmd = Command::new(broker_bin());
    cmd.args(["quickstart", "--dir"])
        .arg(&dir)
        .args([
            "--api-listen",
            "127.0.0.1:0",
            "--tunnel-listen",
            "127.0.0.1:0",
        ])
        .env("HOME", home.path())
        .env_remove("XDG_DATA_HOME");
    let mut qs = LineChild::spawn(cmd);
    let mut out = Vec::new();
    // Bounded: the demo session ends with this line, or recv_line panics.
    while !out
        .iter()
        .any(|l: &String| l.contains("The broker keeps running"))
    {
        let line = qs.recv_line(Duration::from_secs(60)).unwrap_or_else(|| {
            panic!(
                "quickstart exited early:\n{}\n{}",
                out.join("\n"),
                qs.stderr()
            )
        });
        out.push(line);
    }
    let text = out.join("\n");
    assert!(
        !text.contains("demo session failed"),
        "{text}\n{}",
        qs.stderr()
    );
    assert!(
        text.contains("demo session through the broker: initialize → mcpgate-demo"),
        "{text}"
    );
    assert!(text.contains("list_customers"), "{text}");
    assert!(text.contains("\"customers\""), "{text}");
    assert!(
        text.contains("mcpgate login --broker https://127.0.0.1:"),
        "{text}"
    );
    assert!(text.contains("mcpgate connect demo"), "{text}");
    // The generated password is printed once and kept 0600.
    let file = dir.join("initial-admin-password");
    let password = std::fs::read_to_string(&file).unwrap();
    assert!(password.len() >= 20);
    assert!(text.contains(password.trim()));
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(dir.join("ca.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
}
