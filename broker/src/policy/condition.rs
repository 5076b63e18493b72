//! A rule's `when` condition: a CEL expression (cel-rust), parsed and
//! checked once at start-up, evaluated per call against the call's
//! variables.
//!
//! Variables: `args` (the call's arguments as a map; `{}` when absent),
//! `name` (tool or prompt name, or resource URI), `kind` (`"tool"`,
//! `"resource"` or `"prompt"`), `user`, `roles` (list of strings) and
//! `server`. Besides CEL's standard functions and macros (`has`, `matches`,
//! `startsWith`, `exists`, ...) there is `path_within(path, prefix)`, which
//! compares file paths lexically (see [`path_within`]).
//!
//! Checked at start-up: the expression parses, it names no variable besides
//! those above (comprehension variables aside), regex literals given to
//! `matches` compile, and it is not a literal of another type than bool.
//! Anything else that goes wrong (a missing key, a wrong type, a non-bool
//! result) is an evaluation error, which the policy treats as a deny.

use std::collections::HashMap;
use std::sync::Arc;

use cel::common::ast::{EntryExpr, Expr, LiteralValue};
use cel::common::types::{CelBool, CelString};
use cel::extractors::This;
use cel::objects::{Key, Map};
use cel::{Context, Env, ExecutionError, IdedExpr, Program, Value};
use regex::Regex;
use serde_json::Value as Json;

use super::ItemKind;
use super::pattern::one_line;

/// The variables a condition may name.
pub const VARIABLES: &[&str] = &["args", "name", "kind", "user", "roles", "server"];

/// Identifiers CEL resolves to types (`type(x) == string`), not variables.
const TYPE_NAMES: &[&str] = &[
    "bool",
    "int",
    "uint",
    "double",
    "string",
    "bytes",
    "list",
    "map",
    "null_type",
    "type",
    "dyn",
    "optional",
];

/// Error texts are cut to this many characters: they end up in decisions
/// shown to clients and in logs.
const MAX_ERROR_CHARS: usize = 300;

/// The regex literals of a policy's conditions, compiled once. cel-rust's
/// own `matches` compiles its pattern at every call (hundreds of
/// microseconds for a case-insensitive `\b...\b`), so the crate is built
/// without it and `matches` is ours: literals from here, other patterns
/// (computed by the expression) compiled when called.
pub type Regexes = HashMap<String, Regex>;

/// The CEL environment every condition of a policy shares: the standard
/// library plus `path_within` (and `matches`, added to each evaluation's
/// context with the policy's [`Regexes`]).
pub fn environment() -> Arc<Env> {
    let mut env = Env::stdlib();
    // A fixed name and signature on a fresh environment: cannot collide.
    cel::add_overload!(env, fn path_within: (CelString, CelString) -> CelBool, name = "path_within")
        .expect("path_within is declared once");
    Arc::new(env)
}

/// A compiled `when`.
pub struct Condition {
    program: Program,
    source: String,
}

impl std::fmt::Debug for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Condition").field(&self.source).finish()
    }
}

impl Condition {
    /// Parses and checks `source`, adding its regex literals to `regexes`;
    /// the error is one line.
    pub fn compile(env: &Env, source: &str, regexes: &mut Regexes) -> Result<Condition, String> {
        if source.trim().is_empty() {
            return Err("the condition is empty (leave `when` out for none)".into());
        }
        let program = env.compile(source).map_err(|errors| {
            let first = errors.errors.first().map_or_else(
                || one_line(&errors.to_string()),
                |e| {
                    format!(
                        "at line {}, column {}: {}",
                        e.pos.0,
                        e.pos.1 + 1,
                        one_line(&e.msg)
                    )
                },
            );
            format!("the CEL condition does not parse: {first}")
        })?;
        let root = program.expression();
        check(root, &mut Vec::new(), regexes)?;
        if let Expr::Literal(lit) = &root.expr
            && !matches!(lit, LiteralValue::Boolean(_))
        {
            return Err("the condition is a constant that is not true or false".into());
        }
        Ok(Condition {
            program,
            source: source.to_owned(),
        })
    }

    /// Evaluates against `vars`: `Ok(true)` when the condition holds; any
    /// error, or a result that is not a bool, is `Err` with why.
    pub fn evaluate(&self, vars: &Context<'_, '_>) -> Result<bool, String> {
        match self.program.execute(vars) {
            Ok(Value::Bool(b)) => Ok(b),
            Ok(other) => Err(format!(
                "the condition gave a {} instead of true or false",
                other.type_of()
            )),
            Err(e) => Err(truncate(one_line(&e.to_string()))),
        }
    }
}

fn truncate(mut text: String) -> String {
    if let Some((cut, _)) = text.char_indices().nth(MAX_ERROR_CHARS) {
        text.truncate(cut);
        text.push('…');
    }
    text
}

/// Walks the expression: every identifier is a known variable, a type name
/// or bound by an enclosing comprehension (`all`, `exists`, `map`, ...);
/// regex literals given to `matches` compile (and are kept).
fn check<'e>(
    e: &'e IdedExpr,
    bound: &mut Vec<&'e str>,
    regexes: &mut Regexes,
) -> Result<(), String> {
    match &e.expr {
        Expr::Unspecified | Expr::Literal(_) => Ok(()),
        Expr::Ident(name) => {
            if name.starts_with('@')
                || bound.contains(&name.as_str())
                || VARIABLES.contains(&name.as_str())
                || TYPE_NAMES.contains(&name.as_str())
            {
                Ok(())
            } else {
                Err(format!(
                    "unknown variable `{name}` in the condition (known: {})",
                    VARIABLES.join(", ")
                ))
            }
        }
        Expr::Call(call) => {
            if call.func_name == "matches" {
                // `s.matches(re)` or `matches(s, re)`
                let re = match &call.target {
                    Some(_) => call.args.first(),
                    None => call.args.get(1),
                };
                if let Some(IdedExpr {
                    expr: Expr::Literal(LiteralValue::String(re)),
                    ..
                }) = re
                {
                    let compiled = Regex::new(re.inner()).map_err(|err| {
                        format!(
                            "the regex {:?} in matches() is not valid: {}",
                            re.inner(),
                            one_line(&err.to_string())
                        )
                    })?;
                    regexes.insert(re.inner().to_owned(), compiled);
                }
            }
            if let Some(target) = &call.target {
                check(target, bound, regexes)?;
            }
            call.args.iter().try_for_each(|a| check(a, bound, regexes))
        }
        Expr::Select(select) => check(&select.operand, bound, regexes),
        Expr::List(list) => list
            .elements
            .iter()
            .try_for_each(|x| check(x, bound, regexes)),
        Expr::Map(map) => map
            .entries
            .iter()
            .try_for_each(|entry| entry_check(&entry.expr, bound, regexes)),
        Expr::Struct(s) => s
            .entries
            .iter()
            .try_for_each(|entry| entry_check(&entry.expr, bound, regexes)),
        Expr::Comprehension(c) => {
            check(&c.iter_range, bound, regexes)?;
            check(&c.accu_init, bound, regexes)?;
            let depth = bound.len();
            bound.push(&c.iter_var);
            if let Some(v) = &c.iter_var2 {
                bound.push(v);
            }
            bound.push(&c.accu_var);
            let inner = check(&c.loop_cond, bound, regexes)
                .and_then(|()| check(&c.loop_step, bound, regexes))
                .and_then(|()| check(&c.result, bound, regexes));
            bound.truncate(depth);
            inner
        }
    }
}

fn entry_check<'e>(
    entry: &'e EntryExpr,
    bound: &mut Vec<&'e str>,
    regexes: &mut Regexes,
) -> Result<(), String> {
    match entry {
        EntryExpr::StructField(field) => check(&field.value, bound, regexes),
        EntryExpr::MapEntry(entry) => {
            check(&entry.key, bound, regexes)?;
            check(&entry.value, bound, regexes)
        }
    }
}

/// The variables of one call, built once per decision and shared by every
/// condition evaluated for it.
pub struct Vars<'a> {
    pub kind: ItemKind,
    pub name: &'a str,
    pub user: &'a str,
    pub roles: Vec<&'a str>,
    pub server: &'a str,
    pub arguments: &'a Json,
}

impl Vars<'_> {
    pub fn context(&self, env: &Arc<Env>, regexes: &Arc<Regexes>) -> Context<'static, 'static> {
        let mut ctx = Context::with_env(Arc::clone(env));
        let regexes = Arc::clone(regexes);
        // `s.matches(re)` and `matches(s, re)`: true when `re` matches
        // anywhere in `s` (CEL's semantics; anchor with ^ and $).
        let matches = move |This(text): This<Value>, re: Value| {
            let (Value::String(text), Value::String(re)) = (&text, &re) else {
                return Err(ExecutionError::function_error(
                    "matches",
                    format!(
                        "needs two strings, got {} and {}",
                        text.type_of(),
                        re.type_of()
                    ),
                ));
            };
            match regexes.get(re.as_str()) {
                Some(compiled) => Ok(compiled.is_match(text)),
                None => Regex::new(re)
                    .map(|compiled| compiled.is_match(text))
                    .map_err(|e| {
                        ExecutionError::function_error(
                            "matches",
                            format!("{re:?} is not a valid regex: {}", one_line(&e.to_string())),
                        )
                    }),
            }
        };
        // The environment has no `matches` (the crate's regex feature is
        // off), so the name is free.
        ctx.add_function("matches", matches)
            .expect("matches is not declared by the environment");
        let args = match self.arguments {
            Json::Null => Value::Map(Map {
                map: Arc::new(HashMap::new()),
            }),
            other => from_json(other),
        };
        ctx.add_variable_from_value("args", args);
        ctx.add_variable_from_value("name", self.name);
        ctx.add_variable_from_value("kind", self.kind.to_string());
        ctx.add_variable_from_value("user", self.user);
        ctx.add_variable_from_value("roles", self.roles.clone());
        ctx.add_variable_from_value("server", self.server);
        ctx
    }
}

/// JSON to CEL: integers are `int` when they fit (so `args.limit > 20`
/// compares ints), else `uint`, else `double`.
fn from_json(value: &Json) -> Value {
    match value {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Value::Int(i),
            (None, Some(u)) => Value::UInt(u),
            (None, None) => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => Value::String(Arc::new(s.clone())),
        Json::Array(items) => Value::List(Arc::new(items.iter().map(from_json).collect())),
        Json::Object(fields) => Value::Map(Map {
            map: Arc::new(
                fields
                    .iter()
                    .map(|(k, v)| (Key::String(Arc::new(k.clone())), from_json(v)))
                    .collect(),
            ),
        }),
    }
}

/// `path_within(path, prefix)`: whether `path`, normalised lexically
/// (`.` and empty segments dropped, `..` removing the segment before it),
/// is `prefix` or lies below it. `startsWith` alone would let
/// `/srv/data/../etc/passwd` through, and `/srv/database` pass for
/// `/srv/data`.
///
/// False, whatever the prefix, for what cannot be placed safely: a relative
/// path (relative to what the server thinks its directory is), a path with
/// a backslash (a separator on some systems, a file name character on
/// others) or a NUL. Symbolic links are not resolved: this is about the
/// path as written, not the file system.
fn path_within(path: &CelString<'_>, prefix: &CelString<'_>) -> CelBool {
    CelBool::from(is_path_within(path.inner(), prefix.inner()))
}

pub fn is_path_within(path: &str, prefix: &str) -> bool {
    match (normalise(path), normalise(prefix)) {
        (Some(path), Some(prefix)) => path.starts_with(&prefix),
        _ => false,
    }
}

fn normalise(path: &str) -> Option<Vec<&str>> {
    if !path.starts_with('/') || path.contains(['\\', '\0']) {
        return None;
    }
    let mut out = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            // `/..` is `/`, as the kernel has it.
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn eval(source: &str, arguments: Json) -> Result<bool, String> {
        let env = environment();
        let mut regexes = Regexes::new();
        let cond = Condition::compile(&env, source, &mut regexes).unwrap();
        let vars = Vars {
            kind: ItemKind::Tool,
            name: "query",
            user: "alice",
            roles: vec!["engineer"],
            server: "db",
            arguments: &arguments,
        };
        cond.evaluate(&vars.context(&env, &Arc::new(regexes)))
    }

    const SQL: &str =
        r#"has(args.sql) && args.sql.matches("(?i)\\b(drop|alter|truncate|delete)\\b")"#;

    #[test]
    fn sql_condition_is_case_insensitive_and_word_bounded() {
        assert_eq!(eval(SQL, json!({"sql": "DROP TABLE customers"})), Ok(true));
        assert_eq!(
            eval(SQL, json!({"sql": "select 1; Delete from t"})),
            Ok(true)
        );
        assert_eq!(
            eval(SQL, json!({"sql": "select * from dropbox"})),
            Ok(false)
        );
        assert_eq!(eval(SQL, json!({"sql": "select 1"})), Ok(false));
        assert_eq!(eval(SQL, json!({})), Ok(false));
        assert_eq!(eval(SQL, Json::Null), Ok(false));
    }

    #[test]
    fn matches_takes_literal_and_computed_patterns_in_both_call_forms() {
        assert_eq!(
            eval(r#"matches(args.s, "^ab+c$")"#, json!({"s": "abbc"})),
            Ok(true)
        );
        assert_eq!(
            eval(r#"args.s.matches("b+")"#, json!({"s": "xbbx"})),
            Ok(true)
        );
        assert_eq!(
            eval(r#"args.s.matches("^b")"#, json!({"s": "xb"})),
            Ok(false)
        );
        let computed = "args.s.matches(args.re)";
        assert_eq!(eval(computed, json!({"s": "abc", "re": "^a"})), Ok(true));
        assert_eq!(eval(computed, json!({"s": "abc", "re": "^b"})), Ok(false));
        let bad = eval(computed, json!({"s": "abc", "re": "("})).unwrap_err();
        assert!(bad.contains("not a valid regex"), "{bad}");
        let not_string = eval(computed, json!({"s": 1, "re": "1"})).unwrap_err();
        assert!(
            not_string.contains("needs two strings, got int and string"),
            "{not_string}"
        );
    }

    #[test]
    fn path_within_normalises_dot_dot() {
        let c = r#"has(args.path) && path_within(args.path, "/srv/data")"#;
        assert_eq!(eval(c, json!({"path": "/srv/data/a/b.csv"})), Ok(true));
        assert_eq!(eval(c, json!({"path": "/srv/data"})), Ok(true));
        assert_eq!(eval(c, json!({"path": "/srv/data/./x/../y"})), Ok(true));
        assert_eq!(
            eval(c, json!({"path": "/srv/data/../etc/passwd"})),
            Ok(false)
        );
        assert_eq!(
            eval(c, json!({"path": "/srv/data/../../srv/data2"})),
            Ok(false)
        );
        assert_eq!(eval(c, json!({"path": "/srv/database"})), Ok(false));
        assert_eq!(eval(c, json!({"path": "data/x"})), Ok(false));
        assert_eq!(eval(c, json!({"path": "/srv/data\\..\\etc"})), Ok(false));
        assert_eq!(eval(c, json!({"path": "//srv//data//x"})), Ok(true));
        assert!(!is_path_within("/srv/data/x", "srv/data"));
        assert!(is_path_within("/../../srv/data/x", "/srv/data/"));
        assert!(is_path_within("/anything", "/"));
    }

    #[test]
    fn flags_ints_and_other_variables() {
        assert_eq!(
            eval(
                "has(args.force) && args.force == true",
                json!({"force": true})
            ),
            Ok(true)
        );
        assert_eq!(
            eval(
                "has(args.force) && args.force == true",
                json!({"force": false})
            ),
            Ok(false)
        );
        assert_eq!(eval("args.limit > 20", json!({"limit": 21})), Ok(true));
        assert_eq!(eval("args.limit > 20", json!({"limit": 2})), Ok(false));
        assert_eq!(
            eval(
                r#"user == "alice" && "engineer" in roles && server == "db" && name == "query" && kind == "tool""#,
                json!({})
            ),
            Ok(true)
        );
        assert_eq!(
            eval("args.ids.all(i, i < 10)", json!({"ids": [1, 2, 3]})),
            Ok(true)
        );
    }

    #[test]
    fn evaluation_errors_are_errors_not_false() {
        let missing = eval("args.sql.matches('drop')", json!({})).unwrap_err();
        assert!(missing.contains("sql"), "{missing}");
        let wrong_type = eval("args.limit > 20", json!({"limit": "many"})).unwrap_err();
        assert!(!wrong_type.is_empty());
        let not_bool = eval("args.limit", json!({"limit": 3})).unwrap_err();
        assert!(not_bool.contains("instead of true or false"), "{not_bool}");
        let not_string = eval("path_within(args.path, '/srv')", json!({"path": 3})).unwrap_err();
        assert!(!not_string.is_empty());
    }

    #[test]
    fn compile_errors_say_what_is_wrong() {
        let env = environment();
        for (source, expect) in [
            ("args.sql.matches(", "does not parse"),
            ("argz.sql == 'x'", "unknown variable `argz`"),
            ("args.x.exists(v, v == other)", "unknown variable `other`"),
            (r#"args.sql.matches("(unclosed")"#, "regex \"(unclosed\""),
            (r#"matches(args.sql, "[z-a]")"#, "regex \"[z-a]\""),
            ("'yes'", "not true or false"),
            ("  ", "empty"),
        ] {
            let e = Condition::compile(&env, source, &mut Regexes::new()).unwrap_err();
            assert!(e.contains(expect), "{source}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
        // Comprehension variables, type names and macros are fine.
        for ok in [
            "args.ids.all(i, i > 0)",
            "args.m.exists(k, args.m[k] == 1)",
            "type(args.x) == string",
            "true",
        ] {
            Condition::compile(&env, ok, &mut Regexes::new())
                .unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }
}
