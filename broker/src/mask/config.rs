//! The `[masking]` section of the broker config, as written.
//!
//! ```toml
//! [masking]
//! styles = { card = "partial", email = "hash" }   # per type; default redact
//!
//! [[masking.rules]]                # a custom detector
//! name = "employee_id"
//! pattern = '\bEMP-\d{6}\b'
//! validate = "luhn"                # optional: luhn | mod97
//! style = "hash"
//!
//! [[masking.fields]]               # always mask what a JSON path selects
//! name = "row_email"
//! path = "$.structuredContent.rows[*].email"
//!
//! [masking.profiles.support]       # which detectors and rules apply
//! detectors = ["default", "ipv4"]
//! exclude = ["phone"]
//!
//! [[masking.apply]]                # who gets which profile; first match
//! profile = "support"
//! servers = ["crm"]
//! roles = ["support"]
//! ```
//!
//! With no `[masking]` at all every default detector is on for everyone:
//! masking is a safe default, turning it down is the admin's explicit act.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::style::Style;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskingSection {
    /// Default style per type (`card`, `email`, a custom rule's name…).
    #[serde(default)]
    pub styles: BTreeMap<String, Style>,
    #[serde(default)]
    pub rules: Vec<CustomRule>,
    #[serde(default)]
    pub fields: Vec<FieldRule>,
    /// Named profiles; `default` is the one used when no `apply` entry
    /// matches (every default detector, every rule and field).
    #[serde(default)]
    pub profiles: BTreeMap<String, ProfileSection>,
    #[serde(default)]
    pub apply: Vec<Binding>,
    /// Deeper JSON is not masked but withheld (the call fails).
    #[serde(default = "default_max_depth")]
    pub max_depth: usize,
    /// At most this many bytes of text are scanned per message (JSON found
    /// inside strings counts again); more is withheld.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
}

impl Default for MaskingSection {
    fn default() -> Self {
        MaskingSection {
            styles: BTreeMap::new(),
            rules: Vec::new(),
            fields: Vec::new(),
            profiles: BTreeMap::new(),
            apply: Vec::new(),
            max_depth: default_max_depth(),
            max_bytes: default_max_bytes(),
        }
    }
}

fn default_max_depth() -> usize {
    64
}

fn default_max_bytes() -> usize {
    16 * 1024 * 1024
}

/// A named regex, optionally checked, masked as its own type.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomRule {
    /// Also the type shown: `[MASKED:employee_id]`.
    pub name: String,
    /// Rust `regex` syntax; the whole match is masked.
    pub pattern: String,
    #[serde(default)]
    pub validate: Option<Validation>,
    #[serde(default)]
    pub style: Option<Style>,
}

/// A check a custom rule's match must pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Validation {
    /// The Luhn checksum over the match's digits (cards, IMEIs, …).
    Luhn,
    /// ISO 7064 mod 97-10 (IBANs and similar).
    Mod97,
}

/// Whatever `path` selects is masked whole, whatever it contains.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldRule {
    /// Also the type shown.
    pub name: String,
    /// A JSONPath (RFC 9535) from the message's `result` (`params` for
    /// requests and notifications, `error` for errors), e.g.
    /// `$.structuredContent.rows[*].email`.
    pub path: String,
    #[serde(default)]
    pub style: Option<Style>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileSection {
    /// Built-in detectors by name, `default` (the default set) or `all`.
    /// Omitted: the default set.
    #[serde(default)]
    pub detectors: Option<Vec<String>>,
    /// Detectors to leave out of the above.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Custom rules by name. Omitted: all of them.
    #[serde(default)]
    pub rules: Option<Vec<String>>,
    /// Field rules by name. Omitted: all of them.
    #[serde(default)]
    pub fields: Option<Vec<String>>,
    /// Styles for this profile, over `[masking] styles`.
    #[serde(default)]
    pub styles: BTreeMap<String, Style>,
}

/// Which sessions get a profile: the first entry whose servers and roles
/// both match (a session matches a role list when the user holds any of
/// them); `"*"` matches all.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Binding {
    pub profile: String,
    #[serde(default = "any")]
    pub servers: Vec<String>,
    #[serde(default = "any")]
    pub roles: Vec<String>,
}

fn any() -> Vec<String> {
    vec!["*".to_owned()]
}
