//! One JSON-RPC 2.0 message, as MCP frames it: a single JSON object on one
//! line (no batches).
//!
//! [`Message::parse`] is the gateway's one canonical parse. It refuses what
//! a peer could read differently from us — duplicate keys, unknown or
//! case-varied top-level members, ids that are neither strings nor integers,
//! batches — so that what the broker decides on is exactly what it forwards:
//! [`Message::to_line`] re-serialises the parsed value rather than copying
//! the bytes that came in.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Messages larger than this are refused unless configured otherwise.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;
/// The gateway refused the message (policy, size, or validation); mcpgate's
/// own codes live in the JSON-RPC "server error" range.
pub const GATEWAY_REFUSED: i64 = -32001;
/// The upstream server is gone (crashed, exited, or never started).
pub const UPSTREAM_UNAVAILABLE: i64 = -32002;
/// The upstream sent something the gateway could not pass on.
pub const UPSTREAM_INVALID: i64 = -32003;
/// Policy denied the call (a deny rule, or no rule allowed it); it never
/// reached the upstream. `data` names the rule.
pub const POLICY_DENIED: i64 = -32010;
/// The call was held for approval and an approver denied it.
pub const APPROVAL_DENIED: i64 = -32011;
/// The call was held for approval and nobody decided in time.
pub const APPROVAL_EXPIRED: i64 = -32012;
/// The call was held for approval and the approval could not be completed
/// (cancelled, or the broker could not keep its record): not forwarded.
pub const APPROVAL_FAILED: i64 = -32013;
/// The upstream's message could not be masked (too large, nested too
/// deeply, or the broker could not keep its record of the masking): it was
/// withheld, never forwarded unmasked.
pub const MASK_FAILED: i64 = -32014;
/// The message could not be written to the session record, so it was not
/// forwarded (the recording fails closed).
pub const RECORD_FAILED: i64 = -32015;

/// A request id: a string or an integer. `1` and `"1"` are different ids.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Id {
    Number(i64),
    String(String),
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Id::Number(n) => write!(f, "{n}"),
            Id::String(s) => write!(f, "{s:?}"),
        }
    }
}

impl From<&Id> for Value {
    fn from(id: &Id) -> Value {
        match id {
            Id::Number(n) => Value::from(*n),
            Id::String(s) => Value::from(s.as_str()),
        }
    }
}

/// What kind of JSON-RPC message this is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Request {
        id: Id,
        method: String,
    },
    Notification {
        method: String,
    },
    Result {
        id: Id,
    },
    /// An error response; `id` is `None` when it answers something that had
    /// no readable id.
    Error {
        id: Option<Id>,
    },
}

/// A parsed, validated message. Its members are the ones it was parsed from,
/// in their order; nothing else.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    object: Map<String, Value>,
    kind: Kind,
    annotations: Annotations,
}

/// What the broker's stages noted about a message on its way. Never
/// serialised with it: the session record stores it beside the message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Annotations {
    /// How many values of each type the masking stage replaced.
    pub masked: std::collections::BTreeMap<String, u64>,
}

/// Why a line was refused, and what to answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct Rejection {
    /// The id of the refused request, when one could be read, so the answer
    /// can be matched by the sender.
    pub id: Option<Id>,
    pub code: i64,
    pub message: String,
    /// Whether the refused message expected an answer. Notifications and
    /// responses get none: the refusal is only logged.
    pub answerable: bool,
}

impl Rejection {
    fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            id: None,
            code,
            message: message.into(),
            answerable: true,
        }
    }

    /// The JSON-RPC error response for this refusal, as one line.
    pub fn to_line(&self) -> Vec<u8> {
        error_line(self.id.as_ref(), self.code, &self.message, None)
    }
}

/// A refusal for a message larger than `limit` bytes.
pub fn too_large(limit: usize) -> Rejection {
    Rejection::new(
        INVALID_REQUEST,
        format!("message too large: the limit is {limit} bytes"),
    )
}

/// A JSON-RPC error response as one newline-terminated line.
pub fn error_line(id: Option<&Id>, code: i64, message: &str, data: Option<Value>) -> Vec<u8> {
    let mut error = Map::new();
    error.insert("code".into(), Value::from(code));
    error.insert("message".into(), Value::from(message));
    if let Some(data) = data {
        error.insert("data".into(), data);
    }
    let mut obj = Map::new();
    obj.insert("jsonrpc".into(), Value::from("2.0"));
    obj.insert("id".into(), id.map(Value::from).unwrap_or(Value::Null));
    obj.insert("error".into(), Value::Object(error));
    let mut line = serde_json::to_vec(&obj).unwrap_or_default();
    line.push(b'\n');
    line
}

const REQUEST_MEMBERS: &[&str] = &["jsonrpc", "id", "method", "params"];
const RESPONSE_MEMBERS: &[&str] = &["jsonrpc", "id", "result", "error"];

impl Message {
    /// Parses one line (without its newline). Leading and trailing ASCII
    /// white space is allowed; anything else that is not exactly one valid
    /// JSON-RPC message is refused.
    pub fn parse(line: &[u8]) -> Result<Message, Rejection> {
        let text = std::str::from_utf8(line)
            .map_err(|_| Rejection::new(PARSE_ERROR, "parse error: the line is not UTF-8"))?;
        let mut de = serde_json::Deserializer::from_str(text);
        let Strict(value) = Strict::deserialize(&mut de)
            .map_err(|e| Rejection::new(PARSE_ERROR, format!("parse error: {e}")))?;
        de.end().map_err(|_| {
            Rejection::new(
                PARSE_ERROR,
                "parse error: more than one JSON value on the line",
            )
        })?;
        let object = match value {
            Value::Object(o) => o,
            Value::Array(_) => {
                return Err(Rejection::new(
                    INVALID_REQUEST,
                    "batches are not supported: send one message per line",
                ));
            }
            _ => {
                return Err(Rejection::new(
                    INVALID_REQUEST,
                    "a message must be a JSON object",
                ));
            }
        };
        Self::from_object(object)
    }

    /// Validates an already-parsed object.
    pub fn from_object(object: Map<String, Value>) -> Result<Message, Rejection> {
        // Read the id first so that every later refusal can be answered.
        let id = match object.get("id") {
            None => None,
            Some(Value::String(s)) => Some(Id::String(s.clone())),
            Some(Value::Number(n)) => match n.as_i64() {
                Some(i) => Some(Id::Number(i)),
                None => {
                    return Err(Rejection::new(
                        INVALID_REQUEST,
                        "id must be a string or an integer",
                    ));
                }
            },
            Some(Value::Null) => None,
            Some(_) => {
                return Err(Rejection::new(
                    INVALID_REQUEST,
                    "id must be a string or an integer",
                ));
            }
        };
        let has_null_id = matches!(object.get("id"), Some(Value::Null));
        let refuse = |message: String| Rejection {
            id: id.clone(),
            code: INVALID_REQUEST,
            message,
            answerable: true,
        };
        if object.get("jsonrpc") != Some(&Value::from("2.0")) {
            return Err(refuse("jsonrpc must be \"2.0\"".into()));
        }
        let kind = if let Some(method) = object.get("method") {
            let Value::String(method) = method else {
                return Err(refuse("method must be a string".into()));
            };
            if let Some(bad) = object
                .keys()
                .find(|k| !REQUEST_MEMBERS.contains(&k.as_str()))
            {
                return Err(refuse(format!("unexpected member {bad:?} in a request")));
            }
            if object.get("params").is_some_and(|p| !p.is_object()) {
                return Err(refuse("params must be an object".into()));
            }
            match (&id, has_null_id) {
                (Some(id), _) => Kind::Request {
                    id: id.clone(),
                    method: method.clone(),
                },
                (None, true) => return Err(refuse("a request id must not be null".into())),
                (None, false) => Kind::Notification {
                    method: method.clone(),
                },
            }
        } else {
            if let Some(bad) = object
                .keys()
                .find(|k| !RESPONSE_MEMBERS.contains(&k.as_str()))
            {
                return Err(refuse(format!("unexpected member {bad:?} in a message")));
            }
            match (object.get("result"), object.get("error")) {
                (Some(_), None) => match &id {
                    Some(id) => Kind::Result { id: id.clone() },
                    None => return Err(refuse("a result needs an id".into())),
                },
                (None, Some(error)) => {
                    let ok = error.as_object().is_some_and(|e| {
                        e.get("code").is_some_and(|c| c.as_i64().is_some())
                            && e.get("message").is_some_and(Value::is_string)
                    });
                    if !ok {
                        return Err(refuse(
                            "error must be an object with an integer code and a string message"
                                .into(),
                        ));
                    }
                    if id.is_none() && !has_null_id {
                        return Err(refuse("an error response needs an id (or null)".into()));
                    }
                    Kind::Error { id: id.clone() }
                }
                (Some(_), Some(_)) => {
                    return Err(refuse(
                        "a response has either result or error, not both".into(),
                    ));
                }
                (None, None) => {
                    return Err(refuse(
                        "a message needs a method, a result or an error".into(),
                    ));
                }
            }
        };
        Ok(Message {
            object,
            kind,
            annotations: Annotations::default(),
        })
    }

    pub fn kind(&self) -> &Kind {
        &self.kind
    }

    /// The method of a request or notification.
    pub fn method(&self) -> Option<&str> {
        match &self.kind {
            Kind::Request { method, .. } | Kind::Notification { method } => Some(method),
            _ => None,
        }
    }

    /// The id of a request or response.
    pub fn id(&self) -> Option<&Id> {
        match &self.kind {
            Kind::Request { id, .. } | Kind::Result { id } => Some(id),
            Kind::Error { id } => id.as_ref(),
            Kind::Notification { .. } => None,
        }
    }

    pub fn is_request(&self) -> bool {
        matches!(self.kind, Kind::Request { .. })
    }

    pub fn params(&self) -> Option<&Map<String, Value>> {
        self.object.get("params").and_then(Value::as_object)
    }

    pub fn result(&self) -> Option<&Value> {
        self.object.get("result")
    }

    pub fn as_object(&self) -> &Map<String, Value> {
        &self.object
    }

    /// Mutable access for later stages (masking). The kind was decided at
    /// parse time; a stage must not change `jsonrpc`, `id` or `method`.
    pub fn result_mut(&mut self) -> Option<&mut Value> {
        self.object.get_mut("result")
    }

    /// The member that carries what the message says: `result`, `error`, or
    /// `params` (absent for a request or notification without params).
    /// Masking and its JSON-path rules start here.
    pub fn body_mut(&mut self) -> Option<&mut Value> {
        let member = match self.kind {
            Kind::Request { .. } | Kind::Notification { .. } => "params",
            Kind::Result { .. } => "result",
            Kind::Error { .. } => "error",
        };
        self.object.get_mut(member)
    }

    pub fn annotations(&self) -> &Annotations {
        &self.annotations
    }

    pub fn annotations_mut(&mut self) -> &mut Annotations {
        &mut self.annotations
    }

    pub fn into_object(self) -> Map<String, Value> {
        self.object
    }

    /// The canonical serialisation: one line, newline-terminated.
    pub fn to_line(&self) -> Vec<u8> {
        // Serialising a `Map<String, Value>` cannot fail: keys are strings
        // and every number in it came from a JSON parse.
        let mut line = serde_json::to_vec(&self.object).unwrap_or_default();
        line.push(b'\n');
        line
    }

    /// A JSON-RPC error answering this request. `None` for anything that is
    /// not a request (those get no answer).
    pub fn error_reply(&self, code: i64, message: &str) -> Option<Vec<u8>> {
        match &self.kind {
            Kind::Request { id, .. } => Some(error_line(Some(id), code, message, None)),
            _ => None,
        }
    }
}

/// Parses one JSON text with duplicate object keys refused, for JSON found
/// inside a message (a tool's text that is itself JSON): `None` when it is
/// not exactly one JSON value or repeats a key.
pub fn parse_strict(text: &str) -> Option<Value> {
    let mut de = serde_json::Deserializer::from_str(text);
    let Strict(value) = Strict::deserialize(&mut de).ok()?;
    de.end().ok()?;
    Some(value)
}

/// A `Value` parsed with duplicate object keys refused (serde_json alone
/// keeps the last one silently, which a peer might read differently).
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("number out of range"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(Strict(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(format_args!("duplicate key {key:?}")));
            }
            let Strict(v) = map.next_value()?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Message, Rejection> {
        Message::parse(s.as_bytes())
    }

    #[test]
    fn classifies_the_four_kinds() {
        let m = parse(r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{}}"#).unwrap();
        assert_eq!(
            m.kind(),
            &Kind::Request {
                id: Id::Number(0),
                method: "initialize".into()
            }
        );
        let m = parse(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap();
        assert_eq!(m.method(), Some("notifications/initialized"));
        assert!(m.id().is_none());
        let m = parse(r#"{"jsonrpc":"2.0","id":"1","result":{}}"#).unwrap();
        assert_eq!(m.id(), Some(&Id::String("1".into())));
        let m = parse(r#"{"jsonrpc":"2.0","id":null,"error":{"code":-1,"message":"x"}}"#).unwrap();
        assert_eq!(m.kind(), &Kind::Error { id: None });
    }

    #[test]
    fn number_and_string_ids_differ() {
        let a = parse(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#).unwrap();
        let b = parse(r#"{"jsonrpc":"2.0","id":"1","method":"ping"}"#).unwrap();
        assert_ne!(a.id(), b.id());
    }

    #[test]
    fn refuses_batches_and_non_objects() {
        let r = parse(r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#).unwrap_err();
        assert_eq!(r.code, INVALID_REQUEST);
        assert!(r.message.contains("batch"));
        assert_eq!(parse("42").unwrap_err().code, INVALID_REQUEST);
        assert_eq!(parse("{not json").unwrap_err().code, PARSE_ERROR);
        assert_eq!(parse("{} {}").unwrap_err().code, PARSE_ERROR);
        assert_eq!(Message::parse(b"\xff").unwrap_err().code, PARSE_ERROR);
    }

    #[test]
    fn refuses_duplicate_keys_at_any_depth() {
        let r = parse(r#"{"jsonrpc":"2.0","id":1,"method":"a","method":"b"}"#).unwrap_err();
        assert_eq!(r.code, PARSE_ERROR);
        assert!(r.message.contains("duplicate key"), "{}", r.message);
        let r = parse(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","name":"b"}}"#,
        )
        .unwrap_err();
        assert!(r.message.contains("duplicate key"));
    }

    #[test]
    fn refuses_case_variants_and_unknown_members_with_the_id() {
        let r = parse(r#"{"jsonrpc":"2.0","id":7,"Method":"ping"}"#).unwrap_err();
        assert_eq!(r.id, Some(Id::Number(7)));
        let r = parse(r#"{"jsonrpc":"2.0","id":7,"method":"ping","extra":1}"#).unwrap_err();
        assert!(r.message.contains("extra"));
        let line = String::from_utf8(r.to_line()).unwrap();
        assert!(
            line.starts_with(r#"{"jsonrpc":"2.0","id":7,"error":{"code":-32600"#),
            "{line}"
        );
        assert!(line.ends_with('\n'));
    }

    #[test]
    fn refuses_bad_ids_versions_and_params() {
        for bad in [
            r#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":{},"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#,
            r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#,
            r#"{"id":1,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":[1]}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":7}"#,
            r#"{"jsonrpc":"2.0","id":1}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{},"error":{"code":1,"message":"m"}}"#,
            r#"{"jsonrpc":"2.0","result":{}}"#,
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":"x","message":"m"}}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn refuses_absurd_nesting() {
        let deep = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"x","params":{{"a":{}{}}}}}"#,
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        assert_eq!(parse(&deep).unwrap_err().code, PARSE_ERROR);
    }

    #[test]
    fn forwards_the_canonical_form() {
        let m = parse("  {\"jsonrpc\":\"2.0\", \"id\":3, \"method\":\"tools/call\",\"params\":{\"name\":\"\\u0065cho\"}} ").unwrap();
        assert_eq!(
            String::from_utf8(m.to_line()).unwrap(),
            "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"tools/call\",\"params\":{\"name\":\"echo\"}}\n"
        );
    }

    #[test]
    fn error_reply_only_for_requests() {
        let req = parse(r#"{"jsonrpc":"2.0","id":"a","method":"x"}"#).unwrap();
        assert!(req.error_reply(GATEWAY_REFUSED, "no").is_some());
        let note = parse(r#"{"jsonrpc":"2.0","method":"x"}"#).unwrap();
        assert!(note.error_reply(GATEWAY_REFUSED, "no").is_none());
    }
}
