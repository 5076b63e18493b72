//! MCP facts the gateway needs: method names and protocol versions.
//!
//! The relay does not assume the first message is `initialize`: the
//! `2026-07-28` generation starts with `server/discover` (or with no
//! handshake at all), and the broker passes both through unchanged.

/// Protocol versions mcpgate relays, oldest first.
pub const PROTOCOL_VERSIONS: &[&str] = &[
    "2024-11-05",
    "2025-03-26",
    "2025-06-18",
    "2025-11-25",
    "2026-07-28",
];

/// The newest handshake-era version (`initialize`).
pub const LATEST_HANDSHAKE_VERSION: &str = "2025-11-25";
/// The stateless generation (`server/discover`, `_meta` per request).
pub const STATELESS_VERSION: &str = "2026-07-28";

pub const INITIALIZE: &str = "initialize";
pub const INITIALIZED: &str = "notifications/initialized";
pub const SERVER_DISCOVER: &str = "server/discover";
pub const PING: &str = "ping";
pub const TOOLS_LIST: &str = "tools/list";
pub const TOOLS_CALL: &str = "tools/call";
pub const RESOURCES_LIST: &str = "resources/list";
pub const RESOURCES_READ: &str = "resources/read";
pub const PROMPTS_LIST: &str = "prompts/list";
pub const PROMPTS_GET: &str = "prompts/get";
pub const CANCELLED: &str = "notifications/cancelled";
pub const PROGRESS: &str = "notifications/progress";
pub const SAMPLING_CREATE: &str = "sampling/createMessage";
pub const ELICITATION_CREATE: &str = "elicitation/create";
pub const ROOTS_LIST: &str = "roots/list";

/// Whether `version` is one mcpgate knows.
pub fn is_known_version(version: &str) -> bool {
    PROTOCOL_VERSIONS.contains(&version)
}
