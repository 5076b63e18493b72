//! One compiled masking profile applied to text and to parsed JSON.
//!
//! Masking works on parsed values, never on raw bytes, so it cannot break
//! a message: every string (and object key) a server sends is scanned,
//! except protocol identifiers the client must echo back (`nextCursor`,
//! `progressToken`, ...) and base64 payloads (`blob`, the `data` of image
//! and audio content), which only a field rule masks. A string that is
//! itself JSON (a tool's text result) is parsed and masked as JSON, so
//! `\u0034` escapes and key names work there too; the text copy of a
//! tool's `structuredContent` is rewritten from the masked structured
//! value, so the two stay the same. Big integers are scanned as text: a
//! card number can be a JSON number.
//!
//! A value that cannot be masked (nested too deeply, too much text) is an
//! error: the caller withholds the message rather than pass it on raw.

use std::collections::BTreeMap;

use mcpgate_shared::jsonrpc::parse_strict;
use regex_automata::meta::Regex;
use serde_json::{Map, Value};
use serde_json_path::JsonPath;

use super::config::Validation;
use super::detect::{Detector, Finding, Scanner};
use super::style::{MaskKey, Normalise, Style, replace};
use super::validate;

/// Strings under these keys are protocol identifiers, never data: masking
/// them would break the conversation and they carry nothing of the user's.
const PROTOCOL_KEYS: &[&str] = &[
    "nextCursor",
    "cursor",
    "progressToken",
    "requestId",
    "protocolVersion",
    "mimeType",
    "type",
    "jsonrpc",
];

/// Object keys whose string values are secrets whatever they look like.
/// Compared case-insensitively with `-` read as `_`.
const SECRET_KEYS: &[&str] = &[
    "password",
    "passwd",
    "pwd",
    "passphrase",
    "secret",
    "client_secret",
    "secret_key",
    "secret_access_key",
    "aws_secret_access_key",
    "api_key",
    "apikey",
    "access_key",
    "private_key",
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "auth_token",
    "session_token",
];

/// Why a value could not be masked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaskError {
    #[error("the message is nested more than {0} levels deep")]
    TooDeep(usize),
    #[error("the message has more than {0} bytes of text to mask")]
    TooLarge(usize),
}

/// What a custom rule matched.
#[derive(Debug)]
pub(crate) struct CustomRules {
    regex: Regex,
    rules: Vec<CustomCompiled>,
}

#[derive(Debug)]
pub(crate) struct CustomCompiled {
    pub name: String,
    pub validate: Option<Validation>,
    pub style: Style,
}

impl CustomRules {
    pub(crate) fn new(patterns: &[&str], rules: Vec<CustomCompiled>) -> Result<Self, String> {
        let regex = Regex::new_many(patterns).map_err(|e| {
            // Point at the rule whose pattern failed.
            let which = e
                .pattern()
                .and_then(|p| rules.get(p.as_usize()))
                .map(|r| format!("masking rule {:?}", r.name))
                .unwrap_or_else(|| "masking rules".to_owned());
            format!("{which}: invalid pattern: {e}")
        })?;
        Ok(CustomRules { regex, rules })
    }
}

/// A JSONPath whose selections are masked whole.
#[derive(Debug)]
pub(crate) struct FieldCompiled {
    pub name: String,
    pub path: JsonPath,
    pub style: Style,
}

/// One compiled profile: which detectors, rules and fields, in which
/// styles, under which key.
#[derive(Debug)]
pub struct Masker {
    pub(crate) profile: String,
    pub(crate) scanner: Scanner,
    pub(crate) builtin_styles: BTreeMap<Detector, Style>,
    pub(crate) secret_style: Style,
    pub(crate) custom: Option<CustomRules>,
    pub(crate) fields: Vec<FieldCompiled>,
    pub(crate) key: MaskKey,
    pub(crate) max_depth: usize,
    pub(crate) max_bytes: usize,
}

/// One replaced value, as `--explain` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Explained {
    /// The type shown in the mask (`card`, a custom rule's name, ...).
    #[serde(rename = "type")]
    pub kind: String,
    /// What found it: `builtin:card`, `rule:NAME`, `field:NAME`,
    /// `key:password` (a secret-named JSON key).
    pub rule: String,
    /// Where: a JSON pointer into the document (empty for plain text, or
    /// the document root); `…/#key` for an object key.
    pub at: String,
    /// Byte range within that string (or the whole value for fields).
    pub start: usize,
    pub end: usize,
}

/// What masking did to one message or document.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Replaced values per type.
    pub counts: BTreeMap<String, u64>,
    /// Each replacement, when asked for.
    pub explained: Vec<Explained>,
}

impl Report {
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }
}

/// A hit in one string: built-in or custom, not yet merged.
#[derive(Debug, Clone, Copy)]
struct Hit {
    start: usize,
    end: usize,
    what: What,
}

#[derive(Debug, Clone, Copy)]
enum What {
    Builtin(Detector),
    Custom(usize),
}

impl Masker {
    /// The profile's name.
    pub fn profile(&self) -> &str {
        &self.profile
    }

    /// Masks plain text. `None` when nothing was found.
    pub fn mask_text(
        &self,
        text: &str,
        report: &mut Report,
        explain: bool,
    ) -> Result<Option<String>, MaskError> {
        let mut walk = Walk::new(self, report, explain);
        walk.text(text)
    }

    /// Masks a JSON value in place: field rules first, then every string
    /// in it. Returns whether anything changed.
    pub fn mask_value(
        &self,
        value: &mut Value,
        report: &mut Report,
        explain: bool,
    ) -> Result<bool, MaskError> {
        let before = report.total();
        // The text copy of structuredContent is recognised by the value
        // the server sent, before field rules changed it.
        let original = value
            .get("content")
            .and(value.get("structuredContent"))
            .cloned();
        let mut walk = Walk::new(self, report, explain);
        walk.fields(value);
        walk.body(value, original)?;
        Ok(report.total() != before)
    }
}

/// The state of one masking pass.
struct Walk<'a> {
    masker: &'a Masker,
    report: &'a mut Report,
    explain: bool,
    /// JSON pointer to the value being walked (kept only when explaining).
    at: String,
    scanned: usize,
    builtin: Vec<Finding>,
    hits: Vec<Hit>,
    /// A tool result's `structuredContent`, before and after masking: its
    /// text copy is replaced by the masked value, not masked separately.
    structured: Option<(Value, Value)>,
}

impl<'a> Walk<'a> {
    fn new(masker: &'a Masker, report: &'a mut Report, explain: bool) -> Self {
        Walk {
            masker,
            report,
            explain,
            at: String::new(),
            scanned: 0,
            builtin: Vec::new(),
            hits: Vec::new(),
            structured: None,
        }
    }

    fn count(&mut self, kind: &str, rule: impl FnOnce() -> String, start: usize, end: usize) {
        *self.report.counts.entry(kind.to_owned()).or_insert(0) += 1;
        if self.explain {
            self.report.explained.push(Explained {
                kind: kind.to_owned(),
                rule: rule(),
                at: self.at.clone(),
                start,
                end,
            });
        }
    }

    /// Field rules: whatever their paths select is replaced whole.
    fn fields(&mut self, root: &mut Value) {
        for field in &self.masker.fields {
            let pointers: Vec<String> = field
                .path
                .query_located(root)
                .iter()
                .map(|node| node.location().to_json_pointer())
                .collect();
            for pointer in pointers {
                // A selection inside an earlier one is already gone.
                let Some(target) = root.pointer_mut(&pointer) else {
                    continue;
                };
                let raw = match &mut *target {
                    Value::String(s) => std::mem::take(s),
                    other => other.to_string(),
                };
                let mut out = String::new();
                replace(
                    field.style,
                    &field.name,
                    &raw,
                    Normalise::Exact,
                    &self.masker.key,
                    &mut out,
                );
                *target = Value::String(out);
                *self.report.counts.entry(field.name.clone()).or_insert(0) += 1;
                if self.explain {
                    self.report.explained.push(Explained {
                        kind: field.name.clone(),
                        rule: format!("field:{}", field.name),
                        at: pointer,
                        start: 0,
                        end: raw.len(),
                    });
                }
            }
        }
    }

    /// The root of a message body: a tool result's `structuredContent` is
    /// masked first so its text copy can follow it.
    fn body(&mut self, root: &mut Value, original: Option<Value>) -> Result<(), MaskError> {
        if let Value::Object(map) = root
            && let Some(original) = original
            && let Some(structured) = map.get_mut("structuredContent")
        {
            let len = self.at.len();
            self.push_key("structuredContent");
            self.value(structured, 1)?;
            self.pop_key(len);
            self.structured = Some((original, structured.clone()));
            return self.object(map, 0, Some("structuredContent"));
        }
        self.value(root, 0)
    }

    fn push_key(&mut self, key: &str) {
        if self.explain {
            self.at.push('/');
            // RFC 6901 escaping.
            self.at.push_str(&key.replace('~', "~0").replace('/', "~1"));
        }
    }

    fn pop_key(&mut self, len: usize) {
        if self.explain {
            self.at.truncate(len);
        }
    }

    fn value(&mut self, value: &mut Value, depth: usize) -> Result<(), MaskError> {
        match value {
            Value::Object(map) => self.object(map, depth, None),
            Value::Array(items) => {
                if depth >= self.masker.max_depth {
                    return Err(MaskError::TooDeep(self.masker.max_depth));
                }
                for (i, item) in items.iter_mut().enumerate() {
                    let len = self.at.len();
                    if self.explain {
                        self.at.push('/');
                        self.at.push_str(&i.to_string());
                    }
                    self.value(item, depth + 1)?;
                    self.pop_key(len);
                }
                Ok(())
            }
            Value::String(s) => {
                if let Some(masked) = self.string(s, depth)? {
                    *s = masked;
                }
                Ok(())
            }
            Value::Number(n) => {
                // Long integers may be cards, SSNs or phone numbers
                // written as numbers; shorter ones cannot be any of them.
                let long = n
                    .as_u64()
                    .or_else(|| n.as_i64().map(i64::unsigned_abs))
                    .is_some_and(|u| u >= 100_000_000);
                if long && let Some(masked) = self.text(&n.to_string())? {
                    *value = Value::String(masked);
                }
                Ok(())
            }
            Value::Bool(_) | Value::Null => Ok(()),
        }
    }

    fn object(
        &mut self,
        map: &mut Map<String, Value>,
        depth: usize,
        done: Option<&str>,
    ) -> Result<(), MaskError> {
        if depth >= self.masker.max_depth {
            return Err(MaskError::TooDeep(self.masker.max_depth));
        }
        let binary = matches!(
            map.get("type").and_then(Value::as_str),
            Some("image" | "audio")
        );
        let mut renamed = Vec::new();
        for (key, child) in map.iter_mut() {
            if Some(key.as_str()) == done {
                continue;
            }
            let len = self.at.len();
            self.push_key(key);
            if let Value::String(s) = child {
                let base64 = key == "blob" || (key == "data" && binary);
                if base64 || PROTOCOL_KEYS.contains(&key.as_str()) {
                    self.pop_key(len);
                    continue;
                }
                if is_secret_key(key) && !is_placeholder(s) {
                    let end = s.len();
                    let mut out = String::new();
                    replace(
                        self.masker.secret_style,
                        "secret",
                        s,
                        Normalise::Exact,
                        &self.masker.key,
                        &mut out,
                    );
                    *s = out;
                    let key_name = key.clone();
                    self.count("secret", || format!("key:{key_name}"), 0, end);
                    self.pop_key(len);
                    continue;
                }
            }
            self.value(child, depth + 1)?;
            self.pop_key(len);
            if self.explain {
                self.at.push_str("/#");
                self.at.push_str(&key.replace('~', "~0").replace('/', "~1"));
            }
            let masked_key = self.text(key)?;
            self.pop_key(len);
            if let Some(masked) = masked_key {
                renamed.push((key.clone(), masked));
            }
        }
        if !renamed.is_empty() {
            rename_keys(map, renamed);
        }
        Ok(())
    }

    /// A string value: JSON inside is masked as JSON, anything else as
    /// text.
    fn string(&mut self, s: &str, depth: usize) -> Result<Option<String>, MaskError> {
        let trimmed = s.trim_start();
        if (trimmed.starts_with('{') || trimmed.starts_with('['))
            && let Some(mut parsed) = parse_strict(s)
        {
            let pretty = s.contains('\n');
            if let Some((original, masked)) = &self.structured
                && &parsed == original
            {
                // The text copy of structuredContent: already counted.
                return Ok((original != masked).then(|| serialise(masked, pretty)));
            }
            self.scanned += s.len();
            if self.scanned > self.masker.max_bytes {
                return Err(MaskError::TooLarge(self.masker.max_bytes));
            }
            let before = self.report.total();
            self.value(&mut parsed, depth + 1)?;
            return Ok((self.report.total() != before).then(|| serialise(&parsed, pretty)));
        }
        self.text(s)
    }

    /// Plain text: built-in detectors and custom rules, merged. JSON
    /// `\uXXXX` escapes of characters a value can be made of are read
    /// first (a text that embeds JSON after a prefix could hide a card as
    /// `\u0034111…`); the masked text then carries them decoded, which
    /// means the same inside any JSON string.
    fn text(&mut self, s: &str) -> Result<Option<String>, MaskError> {
        if let Some(decoded) = decode_escapes(s) {
            return self.text_plain(&decoded);
        }
        self.text_plain(s)
    }

    fn text_plain(&mut self, s: &str) -> Result<Option<String>, MaskError> {
        self.scanned += s.len();
        if self.scanned > self.masker.max_bytes {
            return Err(MaskError::TooLarge(self.masker.max_bytes));
        }
        self.builtin.clear();
        self.hits.clear();
        self.masker.scanner.scan(s, &mut self.builtin);
        self.hits.extend(self.builtin.iter().map(|f| Hit {
            start: f.start,
            end: f.end,
            what: What::Builtin(f.detector),
        }));
        if let Some(custom) = &self.masker.custom {
            for m in custom.regex.find_iter(s) {
                let rule = &custom.rules[m.pattern().as_usize()];
                let matched = &s[m.range()];
                let valid = match rule.validate {
                    None => true,
                    Some(Validation::Luhn) => validate::luhn(matched),
                    Some(Validation::Mod97) => validate::iban_mod97(matched),
                };
                if valid && !matched.is_empty() {
                    self.hits.push(Hit {
                        start: m.start(),
                        end: m.end(),
                        what: What::Custom(m.pattern().as_usize()),
                    });
                }
            }
            // Earliest first; at one start the longest. Overlaps go to
            // the earlier (longer) hit.
            self.hits
                .sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
        }
        if self.hits.is_empty() {
            return Ok(None);
        }
        let hits = std::mem::take(&mut self.hits);
        let mut out = String::with_capacity(s.len());
        let mut last = 0;
        for hit in &hits {
            if hit.start < last {
                continue;
            }
            out.push_str(&s[last..hit.start]);
            let value = &s[hit.start..hit.end];
            match hit.what {
                What::Builtin(d) => {
                    let style = self
                        .masker
                        .builtin_styles
                        .get(&d)
                        .copied()
                        .unwrap_or_default();
                    replace(
                        style,
                        d.name(),
                        value,
                        normalise(d),
                        &self.masker.key,
                        &mut out,
                    );
                    self.count(
                        d.name(),
                        || format!("builtin:{}", d.name()),
                        hit.start,
                        hit.end,
                    );
                }
                What::Custom(i) => {
                    let masker = self.masker;
                    let Some(rule) = masker.custom.as_ref().map(|c| &c.rules[i]) else {
                        continue;
                    };
                    let normalise = if rule.validate.is_some() {
                        Normalise::Alphanumeric
                    } else {
                        Normalise::Exact
                    };
                    replace(
                        rule.style,
                        &rule.name,
                        value,
                        normalise,
                        &masker.key,
                        &mut out,
                    );
                    self.count(
                        &rule.name,
                        || format!("rule:{}", rule.name),
                        hit.start,
                        hit.end,
                    );
                }
            }
            last = hit.end;
        }
        out.push_str(&s[last..]);
        self.hits = hits;
        Ok(Some(out))
    }
}

/// `s` with `\uXXXX` escapes of ASCII letters and digits and of the
/// separators values are written with decoded; `None` when there are
/// none. Quotes, backslashes and control characters stay escaped, so JSON
/// embedded in `s` stays valid and means the same.
fn decode_escapes(s: &str) -> Option<String> {
    if !s.contains("\\u") {
        return None;
    }
    let decodable = |c: char| {
        c.is_ascii_alphanumeric()
            || matches!(c, ' ' | '-' | '.' | '@' | '+' | '_' | ':' | '/' | '(' | ')')
            || matches!(
                c,
                '\u{a0}' | '\u{200b}' | '\u{200c}' | '\u{200d}' | '\u{2060}' | '\u{feff}'
            )
    };
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    let mut changed = false;
    while let Some(at) = rest.find("\\u") {
        out.push_str(&rest[..at]);
        let hex = rest.get(at + 2..at + 6);
        let c = hex
            .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .and_then(char::from_u32)
            .filter(|c| decodable(*c));
        match c {
            // An escaped backslash before it (`\\u0034`) is not an escape.
            Some(c) if !out.ends_with('\\') || out.ends_with("\\\\") => {
                out.push(c);
                rest = &rest[at + 6..];
                changed = true;
            }
            _ => {
                out.push_str("\\u");
                rest = &rest[at + 2..];
            }
        }
    }
    out.push_str(rest);
    changed.then_some(out)
}

fn normalise(d: Detector) -> Normalise {
    match d {
        Detector::Card | Detector::Ssn | Detector::Iban | Detector::Phone => {
            Normalise::Alphanumeric
        }
        Detector::Email => Normalise::Lowercase,
        _ => Normalise::Exact,
    }
}

fn serialise(value: &Value, pretty: bool) -> String {
    // Serialising a parsed `Value` cannot fail.
    if pretty {
        serde_json::to_string_pretty(value).unwrap_or_default()
    } else {
        serde_json::to_string(value).unwrap_or_default()
    }
}

fn is_secret_key(key: &str) -> bool {
    key.len() <= 32
        && SECRET_KEYS.iter().any(|name| {
            name.len() == key.len()
                && name
                    .bytes()
                    .zip(key.bytes())
                    .all(|(n, k)| n == k.to_ascii_lowercase() || (n == b'_' && k == b'-'))
        })
}

/// Values that stand for a secret without being one.
fn is_placeholder(s: &str) -> bool {
    let t = s.trim();
    t.is_empty()
        || t.starts_with("[MASKED:")
        || (t.starts_with("${") && t.ends_with('}'))
        || (t.starts_with("{{") && t.ends_with("}}"))
        || t.chars()
            .all(|c| c == '*' || c == 'x' || c == 'X' || c == '•')
        || matches!(
            t.to_ascii_lowercase().as_str(),
            "null" | "none" | "true" | "false" | "<redacted>" | "redacted"
        )
}

/// Renames keys in place, keeping order; a masked key that collides with
/// another gets a `~2`, `~3`, ... suffix so no value is lost.
fn rename_keys(map: &mut Map<String, Value>, renamed: Vec<(String, String)>) {
    let renamed: BTreeMap<String, String> = renamed.into_iter().collect();
    let old = std::mem::take(map);
    for (key, value) in old {
        let mut key = renamed.get(&key).cloned().unwrap_or(key);
        if map.contains_key(&key) {
            let base = key.clone();
            let mut n = 2;
            while map.contains_key(&key) {
                key = format!("{base}~{n}");
                n += 1;
            }
        }
        map.insert(key, value);
    }
}
