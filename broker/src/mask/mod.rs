//! Masking: sensitive data in what a server returns is replaced before it
//! leaves the broker.
//!
//! - [`detect`]: the built-in detectors, found in one pass over a string
//!   (a 64-byte-block prefilter marks where a value can start; hand-written
//!   validators check each candidate where its format has a check: Luhn,
//!   mod-97, SSN ranges, JWT header — no per-detector rescans).
//! - [`validate`]: those checks.
//! - [`names`]: the opt-in person-name detector (dictionary and context).
//! - [`style`]: what a value becomes (redacted, partly kept, keyed hash).
//! - [`config`]: the `[masking]` section as written; [`profile`]: its
//!   profiles compiled, and which session gets which.
//! - [`masker`]: one profile applied to text and to parsed JSON (every
//!   string a server sends, `structuredContent` and its text copy kept
//!   equal, field rules by JSONPath).
//!
//! The stage that applies it to the relay is `proxy::mask`; the admin's
//! dry-run is `mcpgate-broker mask`.

pub mod config;
pub mod detect;
pub mod dry_run;
pub mod masker;
pub mod names;
pub mod profile;
pub mod style;
pub mod validate;

pub use config::MaskingSection;
pub use detect::{Detector, Finding, Scanner};
pub use masker::{Explained, MaskError, Masker, Report};
pub use profile::{DEFAULT_PROFILE, Masking};
pub use style::{MASK_KEY_FILE, MaskKey, Style};

#[cfg(test)]
mod tests;

#[cfg(test)]
mod accuracy;
