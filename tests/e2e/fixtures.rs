//! The broker set-ups the tests share.

use mcpgate_tests::Broker;
use mcpgate_tests::broker::{BrokerBuilder, DEMO, EVERYTHING};

/// A user whose role reaches `everything` and `demo`.
pub const ALICE: &str = "alice";
/// A user whose only role reaches no server.
pub const BOB: &str = "bob";

/// server-everything and the demo server; alice may use both, bob neither.
pub fn builder() -> BrokerBuilder {
    Broker::builder()
        .everything()
        .role("dev", &[EVERYTHING, DEMO])
        .role("outsider", &[])
        .user(ALICE, &["dev"])
        .user(BOB, &["outsider"])
}

/// [`builder`], started.
pub fn broker() -> Broker {
    builder().start()
}

/// A value no test could see by accident.
pub fn unique(label: &str) -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{label}-{}-{nanos:x}", std::process::id())
}
