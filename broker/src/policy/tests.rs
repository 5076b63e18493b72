//! Decisions, listings and start-up errors of the policy engine, on rules
//! written as an operator would write them.

use std::path::Path;

use clap::Parser;
use serde_json::{Value, json};

use super::*;
use crate::cli::{Output, PolicyCheckArgs, PolicyCommand};
use crate::config::{Config, EXAMPLE};

const BASE: &str = r#"
[broker]

[roles.engineer]
servers = ["demo", "db"]

[roles.dba]
servers = ["db"]

[roles.approver]
approves = ["db"]

[users.alice]
password_hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA"
roles = ["engineer"]

[servers.demo]
transport = "stdio"
command = "demo"

[servers.db]
transport = "stdio"
command = "db"
"#;

fn config(rules: &str) -> Config {
    let text = format!("{BASE}\n{rules}");
    Config::parse(&text, Path::new("/etc/mcpgate/broker.toml"))
        .unwrap_or_else(|e| panic!("{e}\n{rules}"))
}

fn policy(rules: &str) -> Policy {
    Policy::compile(&config(rules)).unwrap()
}

fn roles(names: &[&str]) -> Vec<RoleName> {
    names.iter().map(|r| r.parse().unwrap()).collect()
}

fn server(name: &str) -> ServerName {
    name.parse().unwrap()
}

/// Decides a call by `roles` on `server`.
fn decide(p: &Policy, who: &[&str], on: &str, kind: ItemKind, name: &str, args: Value) -> Decision {
    let roles = roles(who);
    let server = server(on);
    p.decide(&Request {
        user: "alice",
        roles: &roles,
        server: &server,
        kind,
        name,
        arguments: &args,
    })
}

fn tool(p: &Policy, who: &[&str], on: &str, name: &str, args: Value) -> Effect {
    decide(p, who, on, ItemKind::Tool, name, args).effect
}

fn rule_name(d: &Decision) -> Option<&str> {
    d.rule.as_ref().map(|r| r.name.as_str())
}

/// The 1-based line of the first line of `text` containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in the text"))
        + 1
}

const READS: &str = r#"
[[policy]]
name = "engineers read"
roles = ["engineer"]
servers = ["demo"]
tools = ["get_customer", "list_*", "re:search_[a-z]+"]
resources = ["demo://customers/*"]
prompts = ["summarise"]
effect = "allow"
"#;

#[test]
fn exact_glob_and_regex_patterns_allow_what_they_name() {
    let p = policy(READS);
    let e = &["engineer"];
    assert_eq!(
        tool(&p, e, "demo", "get_customer", json!({})),
        Effect::Allow
    );
    assert_eq!(
        tool(&p, e, "demo", "list_customers", json!({})),
        Effect::Allow
    );
    assert_eq!(
        tool(&p, e, "demo", "search_customers", json!({})),
        Effect::Allow
    );
    // Exact means exact; the regex is anchored at both ends.
    assert_eq!(
        tool(&p, e, "demo", "get_customers", json!({})),
        Effect::Deny
    );
    assert_eq!(
        tool(&p, e, "demo", "search_customers2", json!({})),
        Effect::Deny
    );
    assert_eq!(
        tool(&p, e, "demo", "x_search_customers", json!({})),
        Effect::Deny
    );
    assert_eq!(tool(&p, e, "demo", "drop_table", json!({})), Effect::Deny);
    // Each kind has its own list.
    let read = |kind, name| decide(&p, e, "demo", kind, name, Value::Null).effect;
    assert_eq!(
        read(ItemKind::Resource, "demo://customers/7"),
        Effect::Allow
    );
    assert_eq!(
        read(ItemKind::Resource, "demo://customers/7/cards"),
        Effect::Deny
    );
    assert_eq!(read(ItemKind::Prompt, "summarise"), Effect::Allow);
    assert_eq!(read(ItemKind::Prompt, "get_customer"), Effect::Deny);
    assert_eq!(read(ItemKind::Tool, "summarise"), Effect::Deny);
}

#[test]
fn anchored_regex_does_not_match_inside_a_name() {
    let p = policy(
        r#"
[[policy]]
name = "drop only"
roles = ["*"]
servers = ["*"]
tools = ["re:drop"]
effect = "allow"
"#,
    );
    assert_eq!(tool(&p, &["dba"], "db", "drop", json!({})), Effect::Allow);
    assert_eq!(
        tool(&p, &["dba"], "db", "x_drop_y", json!({})),
        Effect::Deny
    );
    assert_eq!(
        tool(&p, &["dba"], "db", "drop_table", json!({})),
        Effect::Deny
    );
}

#[test]
fn nothing_is_allowed_unless_a_rule_allows_it() {
    let p = policy("");
    assert!(p.is_empty());
    let d = decide(
        &p,
        &["engineer"],
        "demo",
        ItemKind::Tool,
        "get_customer",
        json!({}),
    );
    assert_eq!(d.effect, Effect::Deny);
    assert_eq!(d.rule, None);
    assert_eq!(d.reason, "no rule allows it");
    assert!(d.matched.is_empty());
    // A deny-only policy allows nothing either.
    let p = policy(
        r#"
[[policy]]
name = "no drops"
roles = ["*"]
servers = ["*"]
tools = ["drop_*"]
effect = "deny"
"#,
    );
    assert_eq!(
        tool(&p, &["engineer"], "demo", "get_customer", json!({})),
        Effect::Deny
    );
}

#[test]
fn deny_wins_over_allow_and_approve_whatever_the_order() {
    let rules = r#"
[[policy]]
name = "everything"
roles = ["engineer"]
servers = ["db"]
tools = ["*"]
effect = "allow"

[[policy]]
name = "writes need a dba"
roles = ["engineer"]
servers = ["db"]
tools = ["drop_*", "update_*"]
effect = "approve"

[[policy]]
name = "never drop"
roles = ["*"]
servers = ["*"]
tools = ["drop_*"]
effect = "deny"
reason = "dropping destroys data"
"#;
    let p = policy(rules);
    let d = decide(
        &p,
        &["engineer"],
        "db",
        ItemKind::Tool,
        "drop_table",
        json!({}),
    );
    assert_eq!(d.effect, Effect::Deny);
    assert_eq!(rule_name(&d), Some("never drop"));
    assert_eq!(d.reason, "dropping destroys data");
    let text = format!("{BASE}\n{rules}");
    let r = d.rule.unwrap();
    assert_eq!(
        r.line,
        line_of(&text, "never drop") - 1,
        "the [[policy]] header line"
    );
    assert_eq!(r.file, Path::new("/etc/mcpgate/broker.toml"));
    // The other rules that matched are listed too, in order.
    let listed: Vec<(&str, Effect)> = d
        .matched
        .iter()
        .map(|(r, e, _)| (r.name.as_str(), *e))
        .collect();
    assert_eq!(
        listed,
        [
            ("everything", Effect::Allow),
            ("writes need a dba", Effect::Approve),
            ("never drop", Effect::Deny)
        ]
    );
    // Approve wins over allow.
    let d = decide(
        &p,
        &["engineer"],
        "db",
        ItemKind::Tool,
        "update_row",
        json!({}),
    );
    assert_eq!((d.effect, d.approvals), (Effect::Approve, 1));
    assert_eq!(rule_name(&d), Some("writes need a dba"));
    assert_eq!(
        tool(&p, &["engineer"], "db", "select", json!({})),
        Effect::Allow
    );
}

#[test]
fn approve_takes_the_most_approvals_and_names_the_first_rule() {
    let p = policy(
        r#"
[[policy]]
name = "writes"
roles = ["engineer"]
servers = ["db"]
tools = ["update_*"]
effect = "approve"
reason = "writes change customer data"

[[policy]]
name = "bulk writes"
roles = ["engineer"]
servers = ["db"]
tools = ["update_*"]
effect = "approve"
approvals = 2
when = "has(args.all) && args.all"
"#,
    );
    let d = decide(
        &p,
        &["engineer"],
        "db",
        ItemKind::Tool,
        "update_rows",
        json!({"all": true}),
    );
    assert_eq!((d.effect, d.approvals), (Effect::Approve, 2));
    assert_eq!(rule_name(&d), Some("writes"));
    assert_eq!(d.reason, "writes change customer data");
    let d = decide(
        &p,
        &["engineer"],
        "db",
        ItemKind::Tool,
        "update_rows",
        json!({}),
    );
    assert_eq!((d.effect, d.approvals), (Effect::Approve, 1));
}

#[test]
fn rules_apply_only_to_their_roles_and_servers() {
    let p = policy(
        r#"
[[policy]]
name = "dbas on db"
roles = ["dba"]
servers = ["db"]
tools = ["query"]
effect = "allow"

[[policy]]
name = "anyone on demo"
roles = ["*"]
servers = ["demo"]
tools = ["ping"]
effect = "allow"
"#,
    );
    assert_eq!(tool(&p, &["dba"], "db", "query", json!({})), Effect::Allow);
    assert_eq!(
        tool(&p, &["engineer", "dba"], "db", "query", json!({})),
        Effect::Allow
    );
    assert_eq!(
        tool(&p, &["engineer"], "db", "query", json!({})),
        Effect::Deny
    );
    assert_eq!(tool(&p, &["dba"], "demo", "query", json!({})), Effect::Deny);
    assert_eq!(
        tool(&p, &["approver"], "demo", "ping", json!({})),
        Effect::Allow
    );
    assert_eq!(
        tool(&p, &["approver"], "db", "ping", json!({})),
        Effect::Deny
    );
    // "*" is any role the caller has, so no role gets nothing.
    assert_eq!(tool(&p, &[], "demo", "ping", json!({})), Effect::Deny);
}

const DB_RULES: &str = r#"
[[policy]]
name = "db tools"
roles = ["engineer"]
servers = ["db"]
tools = ["query", "read_file", "export"]
effect = "allow"

[[policy]]
name = "no destructive sql"
roles = ["*"]
servers = ["*"]
tools = ["*"]
effect = "deny"
when = 'has(args.sql) && args.sql.matches("(?i)\\b(drop|alter|truncate|delete)\\b")'
reason = "destructive SQL is not allowed"

[[policy]]
name = "files stay in /srv/data"
roles = ["*"]
servers = ["db"]
tools = ["read_file"]
effect = "deny"
when = '!has(args.path) || !path_within(args.path, "/srv/data")'

[[policy]]
name = "forced exports need approval"
roles = ["*"]
servers = ["db"]
tools = ["export"]
effect = "approve"
when = "has(args.force) && args.force == true"
"#;

#[test]
fn sql_condition_denies_destructive_statements_in_any_case() {
    let p = policy(DB_RULES);
    let e = &["engineer"];
    for sql in [
        "DROP TABLE customers",
        "select 1; delete from t",
        "Alter table x",
        "truncate t",
    ] {
        let d = decide(&p, e, "db", ItemKind::Tool, "query", json!({ "sql": sql }));
        assert_eq!(d.effect, Effect::Deny, "{sql}");
        assert_eq!(rule_name(&d), Some("no destructive sql"));
        assert_eq!(d.reason, "destructive SQL is not allowed");
    }
    for sql in [
        "select * from dropbox",
        "select deleted_at from t",
        "SELECT 1",
    ] {
        let d = decide(&p, e, "db", ItemKind::Tool, "query", json!({ "sql": sql }));
        assert_eq!(d.effect, Effect::Allow, "{sql}");
        assert_eq!(rule_name(&d), Some("db tools"));
        let (_, _, outcome) = d
            .matched
            .iter()
            .find(|(r, _, _)| r.name == "no destructive sql")
            .unwrap();
        assert!(outcome.contains("condition is false"), "{outcome}");
    }
    assert_eq!(tool(&p, e, "db", "query", json!({})), Effect::Allow);
}

#[test]
fn path_within_keeps_reads_inside_the_prefix() {
    let p = policy(DB_RULES);
    let read = |path: &str| {
        tool(
            &p,
            &["engineer"],
            "db",
            "read_file",
            json!({ "path": path }),
        )
    };
    assert_eq!(read("/srv/data/2024/sales.csv"), Effect::Allow);
    assert_eq!(read("/srv/data/../etc/passwd"), Effect::Deny);
    assert_eq!(read("/srv/database/x"), Effect::Deny);
    assert_eq!(read("sales.csv"), Effect::Deny);
    assert_eq!(
        tool(&p, &["engineer"], "db", "read_file", json!({})),
        Effect::Deny
    );
}

#[test]
fn a_flag_set_to_true_holds_the_call() {
    let p = policy(DB_RULES);
    let export = |args| decide(&p, &["engineer"], "db", ItemKind::Tool, "export", args);
    let d = export(json!({"force": true}));
    assert_eq!((d.effect, d.approvals), (Effect::Approve, 1));
    assert_eq!(rule_name(&d), Some("forced exports need approval"));
    assert_eq!(export(json!({"force": false})).effect, Effect::Allow);
    assert_eq!(export(json!({})).effect, Effect::Allow);
}

#[test]
fn a_condition_that_cannot_be_evaluated_denies_and_says_why() {
    let p = policy(
        r#"
[[policy]]
name = "reads"
roles = ["engineer"]
servers = ["db"]
tools = ["query"]
effect = "allow"

[[policy]]
name = "small queries"
roles = ["engineer"]
servers = ["db"]
tools = ["query"]
effect = "allow"
when = "args.limit < 100"
"#,
    );
    // The key is missing: not false, an error, and the call is denied even
    // though an unconditional allow matched.
    let d = decide(&p, &["engineer"], "db", ItemKind::Tool, "query", json!({}));
    assert_eq!(d.effect, Effect::Deny);
    assert_eq!(rule_name(&d), Some("small queries"));
    assert!(
        d.reason.contains("small queries") && d.reason.contains("limit"),
        "{}",
        d.reason
    );
    let (_, effect, outcome) = &d.matched[1];
    assert_eq!(*effect, Effect::Deny);
    assert!(outcome.contains("could not be evaluated"), "{outcome}");
    // A wrong type too.
    let d = decide(
        &p,
        &["engineer"],
        "db",
        ItemKind::Tool,
        "query",
        json!({"limit": "ten"}),
    );
    assert_eq!(d.effect, Effect::Deny);
    assert_eq!(rule_name(&d), Some("small queries"));
    // Arguments that are not an object cannot be looked into either.
    let d = decide(
        &p,
        &["engineer"],
        "db",
        ItemKind::Tool,
        "query",
        json!([1, 2]),
    );
    assert_eq!(d.effect, Effect::Deny);
    let d = decide(
        &p,
        &["engineer"],
        "db",
        ItemKind::Tool,
        "query",
        json!({"limit": 5}),
    );
    assert_eq!(d.effect, Effect::Allow);
}

#[test]
fn visible_shows_what_some_rule_may_allow_and_hides_unconditional_denies() {
    let p = policy(&format!(
        "{DB_RULES}{}",
        r#"
[[policy]]
name = "no exports for dbas"
roles = ["dba"]
servers = ["db"]
tools = ["export"]
effect = "deny"

[[policy]]
name = "dbas query"
roles = ["dba"]
servers = ["db"]
tools = ["query", "export"]
effect = "approve"
"#
    ));
    let db = server("db");
    let seen = |who: &[&str], name: &str| p.visible(&roles(who), &db, ItemKind::Tool, name);
    assert!(seen(&["engineer"], "query"));
    // Conditional denies depend on the arguments: the tool still shows.
    assert!(seen(&["engineer"], "read_file"));
    assert!(seen(&["engineer"], "export"));
    // No rule allows it.
    assert!(!seen(&["engineer"], "drop_table"));
    // An approve rule shows it; an unconditional deny hides it.
    assert!(seen(&["dba"], "query"));
    assert!(!seen(&["dba"], "export"));
    assert!(seen(&["dba", "engineer"], "query"));
    assert!(!seen(&["dba", "engineer"], "export"));
    // Other roles and servers see nothing.
    assert!(!seen(&["approver"], "query"));
    assert!(!p.visible(
        &roles(&["engineer"]),
        &server("demo"),
        ItemKind::Tool,
        "query"
    ));
    assert!(!p.visible(&roles(&["engineer"]), &db, ItemKind::Prompt, "query"));
}

/// `rules` appended to [`BASE`] must fail with `expect`, at the line of the
/// first line containing `at`.
fn assert_invalid(rules: &str, at: &str, expect: &str) {
    let text = format!("{BASE}\n{rules}");
    let e = Config::parse(&text, Path::new("/etc/mcpgate/broker.toml"))
        .expect_err(rules)
        .to_string();
    let lines: Vec<&str> = text.lines().collect();
    let line = lines.iter().rposition(|l| l.contains(at)).unwrap() + 1;
    assert!(
        e.starts_with(&format!("/etc/mcpgate/broker.toml: line {line}: ")),
        "want line {line}: {e}"
    );
    assert!(e.contains(expect), "want {expect:?}: {e}");
    assert!(!e.contains('\n'), "{e}");
}

#[test]
fn mistakes_in_inline_rules_name_the_line() {
    let rule = |body: &str| format!("[[policy]]\nname = \"r\"\n{body}\n");
    let ok = "roles = [\"engineer\"]\nservers = [\"db\"]\ntools = [\"query\"]\neffect = \"allow\"";
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "tools = [\"query\"]",
            "tools = [\"ok\", \"re:(\"]",
            "re:(",
            "not a valid regex",
        ),
        (
            "tools = [\"query\"]",
            "tools = [\"list_[\"]",
            "list_[",
            "not a valid glob",
        ),
        (
            "tools = [\"query\"]",
            "tools = []",
            "tools = []",
            "tools is empty",
        ),
        (
            "roles = [\"engineer\"]",
            "roles = [\"nope\"]",
            "roles = [\"nope\"]",
            "role \"nope\" is not under [roles]",
        ),
        (
            "roles = [\"engineer\"]",
            "roles = []",
            "roles = []",
            "roles is empty",
        ),
        (
            "roles = [\"engineer\"]",
            "roles = [\"*\", \"dba\"]",
            "roles = [\"*\"",
            "list it alone",
        ),
        (
            "servers = [\"db\"]",
            "servers = [\"nope\"]",
            "servers = [\"nope\"]",
            "server \"nope\" is not under [servers]",
        ),
        (
            "effect = \"allow\"",
            "effect = \"allow\"\nwhen = \"args.sql ==\"",
            "when =",
            "does not parse",
        ),
        (
            "effect = \"allow\"",
            "effect = \"allow\"\nwhen = \"argz.sql == 'x'\"",
            "when =",
            "unknown variable `argz`",
        ),
        (
            "effect = \"allow\"",
            "effect = \"allow\"\nwhen = '''args.sql.matches(\"(?i)(drop\")'''",
            "when =",
            "in matches() is not valid",
        ),
        (
            "effect = \"allow\"",
            "effect = \"allow\"\napprovals = 2",
            "approvals = 2",
            "only applies to effect = \"approve\"",
        ),
        (
            "effect = \"allow\"",
            "effect = \"approve\"\napprovals = 0",
            "approvals = 0",
            "between 1 and 20",
        ),
        (
            "effect = \"allow\"",
            "effect = \"allow\"\nreason = \" \"",
            "reason =",
            "reason is empty",
        ),
        (
            "tools = [\"query\"]",
            "",
            "[[policy]]",
            "at least one of tools, resources or prompts",
        ),
    ];
    for (from, to, at, expect) in cases {
        let body = ok.replacen(from, to, 1);
        assert_ne!(body, ok, "{from:?}");
        // A valid rule first, so the line is not simply the first one.
        assert_invalid(&format!("{READS}\n{}", rule(&body)), at, expect);
    }
    // Mistakes serde catches carry the line too.
    let e = Config::parse(
        &format!("{BASE}\n{}", rule(&format!("{ok}\nefect = 1"))),
        Path::new("b.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("efect") && e.contains("line"), "{e}");
    let e = Config::parse(
        &format!("{BASE}\n{}", rule(&ok.replace("\"allow\"", "\"permit\""))),
        Path::new("b.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("permit") && e.contains("line"), "{e}");
}

#[test]
fn duplicate_rule_names_are_refused() {
    let dup = READS.replace("engineers read", "dup");
    let text = format!("{dup}\n{dup}");
    let e = Config::parse(
        &format!("{BASE}\n{text}"),
        Path::new("/etc/mcpgate/broker.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("\"dup\" is already used at /etc/mcpgate/broker.toml:"),
        "{e}"
    );
}

#[test]
fn policy_files_are_read_after_inline_rules_and_their_mistakes_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("policy.d")).unwrap();
    let db = dir.path().join("policy.d/db.toml");
    std::fs::write(&db, DB_RULES).unwrap();
    let config_text = BASE.replacen(
        "[broker]\n",
        "[broker]\npolicy_files = [\"policy.d/db.toml\"]\n",
        1,
    ) + READS;
    let path = dir.path().join("broker.toml");
    let c = Config::parse(&config_text, &path).unwrap();
    let p = Policy::compile(&c).unwrap();
    assert_eq!(p.len(), 5);
    let d = decide(
        &p,
        &["engineer"],
        "db",
        ItemKind::Tool,
        "query",
        json!({"sql": "drop table x"}),
    );
    assert_eq!(d.effect, Effect::Deny);
    let r = d.rule.unwrap();
    assert_eq!(
        (r.file, r.line),
        (db.clone(), line_of(DB_RULES, "no destructive sql") - 1)
    );
    assert_eq!(
        tool(&p, &["engineer"], "demo", "get_customer", json!({})),
        Effect::Allow
    );

    // A bad regex in the file: that file, that line.
    let bad = DB_RULES.replace("\"export\"]", "\"export\", \"re:[\"]");
    std::fs::write(&db, &bad).unwrap();
    let e = Config::parse(&config_text, &path).unwrap_err().to_string();
    let want = format!("{}: line {}: ", db.display(), line_of(&bad, "re:["));
    assert!(
        e.starts_with(&want) && e.contains("not a valid regex"),
        "{e}"
    );
    // The error type itself reads FILE:LINE.
    let e = Policy::compile(&c).unwrap_err();
    assert_eq!(e.file, db);
    assert!(
        e.to_string()
            .starts_with(&format!("{}:{}: rule \"db tools\"", db.display(), e.line)),
        "{e}"
    );

    // A mistake serde finds: an unknown key.
    let bad = DB_RULES.replacen(
        "effect = \"allow\"",
        "effect = \"allow\"\nwhenn = \"true\"",
        1,
    );
    std::fs::write(&db, &bad).unwrap();
    let e = Config::parse(&config_text, &path).unwrap_err().to_string();
    let want = format!("{}: line {}: ", db.display(), line_of(&bad, "whenn"));
    assert!(e.starts_with(&want) && e.contains("whenn"), "{e}");

    // A rule in the file reusing an inline rule's name.
    std::fs::write(&db, DB_RULES.replace("db tools", "engineers read")).unwrap();
    let e = Config::parse(&config_text, &path).unwrap_err().to_string();
    assert!(
        e.contains("already used at") && e.contains("broker.toml:"),
        "{e}"
    );

    // A missing file: the config's line that names it.
    std::fs::remove_file(&db).unwrap();
    let e = Config::parse(&config_text, &path).unwrap_err().to_string();
    let want = format!(
        "{}: line {}: ",
        path.display(),
        line_of(&config_text, "policy_files")
    );
    assert!(
        e.starts_with(&want) && e.contains("cannot read policy file"),
        "{e}"
    );
}

fn example() -> Config {
    let text = EXAMPLE.replace("@BROKER_EXE@", "/usr/local/bin/mcpgate-broker");
    Config::parse(&text, Path::new("/etc/mcpgate/broker.toml")).unwrap()
}

#[test]
fn example_policy_decides_as_documented() {
    let c = example();
    let p = Policy::compile(&c).unwrap();
    let admin = &["admin"];
    // What the quickstart's demo session calls.
    assert_eq!(
        tool(&p, admin, "demo", "list_customers", json!({"limit": 2})),
        Effect::Allow
    );
    assert_eq!(
        tool(&p, admin, "demo", "list_customers", json!({})),
        Effect::Allow
    );
    assert_eq!(
        tool(&p, admin, "demo", "get_customer", json!({"id": 7})),
        Effect::Allow
    );
    assert_eq!(
        tool(
            &p,
            admin,
            "demo",
            "search_customers",
            json!({"query": "berlin"})
        ),
        Effect::Allow
    );
    // A bulk export is held; dropping a table is refused.
    let d = decide(
        &p,
        admin,
        "demo",
        ItemKind::Tool,
        "list_customers",
        json!({"limit": 50}),
    );
    assert_eq!((d.effect, d.approvals), (Effect::Approve, 1));
    assert!(!d.reason.is_empty());
    let d = decide(
        &p,
        admin,
        "demo",
        ItemKind::Tool,
        "drop_table",
        json!({"table": "customers"}),
    );
    assert_eq!(d.effect, Effect::Deny);
    assert!(d.rule.is_some(), "an explicit rule, not the default");
    // Write tools (should the server grow some) wait for an approver.
    assert_eq!(
        tool(&p, admin, "demo", "update_customer", json!({})),
        Effect::Approve
    );
    // Destructive SQL is refused on any server, for any tool.
    assert_eq!(
        tool(
            &p,
            admin,
            "demo",
            "search_customers",
            json!({"sql": "Drop table x"})
        ),
        Effect::Deny
    );
    // Resources and prompts may be read.
    let read = |kind, name| decide(&p, admin, "demo", kind, name, Value::Null).effect;
    assert_eq!(
        read(ItemKind::Resource, "demo://customers/1"),
        Effect::Allow
    );
    assert_eq!(read(ItemKind::Prompt, "summarise_customer"), Effect::Allow);
    // Approvers approve; they do not call tools.
    assert_eq!(
        tool(&p, &["approver"], "demo", "list_customers", json!({})),
        Effect::Deny
    );
    let approver = c.roles.get(&"approver".parse().unwrap()).unwrap();
    assert_eq!(approver.approves, [server("demo")]);
    // Listings: the reads and the held tool show, drop_table does not.
    let demo = server("demo");
    let seen = |name| p.visible(&roles(admin), &demo, ItemKind::Tool, name);
    assert!(seen("list_customers") && seen("get_customer") && seen("search_customers"));
    assert!(!seen("drop_table"));
}

fn check_args(extra: &[&str]) -> PolicyCheckArgs {
    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        policy: PolicyCommand,
    }
    let argv = ["x", "check", "--config", "unused.toml"]
        .iter()
        .chain(extra);
    match Cli::try_parse_from(argv)
        .unwrap_or_else(|e| panic!("{e}"))
        .policy
    {
        PolicyCommand::Check(args) => args,
    }
}

#[test]
fn policy_check_explains_the_decision_with_file_and_line() {
    let c = config(DB_RULES);
    let args = check_args(&[
        "--user",
        "alice",
        "--server",
        "db",
        "--tool",
        "query",
        "--args",
        r#"{"sql": "DROP TABLE customers"}"#,
    ]);
    let report = check::check(&c, &args).unwrap();
    assert_eq!(report.roles, roles(&["engineer"]));
    assert_eq!(report.decision.effect, Effect::Deny);
    assert_eq!(exit_code(report.decision.effect), 3);
    let text = format!("{BASE}\n{DB_RULES}");
    let mut out = Vec::new();
    check::write_text(&report, &mut out).unwrap();
    let out = String::from_utf8(out).unwrap();
    let at = format!(
        "/etc/mcpgate/broker.toml:{}",
        line_of(&text, "no destructive sql") - 1
    );
    assert!(
        out.starts_with("deny: tool \"query\" on server \"db\""),
        "{out}"
    );
    assert!(
        out.contains(&format!("decided by: no destructive sql ({at})")),
        "{out}"
    );
    assert!(
        out.contains("reason:     destructive SQL is not allowed"),
        "{out}"
    );
    // The allow rule that also matched is listed.
    assert!(
        out.contains("allow    db tools (/etc/mcpgate/broker.toml:"),
        "{out}"
    );

    // IdP users: roles given, the user named for conditions only.
    let args = check_args(&[
        "--user",
        "bob@example.com",
        "--role",
        "engineer",
        "--server",
        "db",
        "--tool",
        "export",
        "--args",
        r#"{"force": true}"#,
        "--output",
        "json",
    ]);
    assert_eq!(args.output, Output::Json);
    let report = check::check(&c, &args).unwrap();
    assert_eq!(report.decision.effect, Effect::Approve);
    assert_eq!(exit_code(Effect::Approve), 4);
    let j = check::to_json(&report);
    assert_eq!(j["effect"], "approve");
    assert_eq!(j["rule"]["name"], "forced exports need approval");
    assert_eq!(j["user"], "bob@example.com");
    assert_eq!(j["approvals"], 1);

    // The default deny says so; roles that cannot reach the server are noted.
    let args = check_args(&["--role", "dba", "--server", "demo", "--prompt", "summarise"]);
    let report = check::check(&c, &args).unwrap();
    assert_eq!(report.decision.rule, None);
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("sessions to it are refused")),
        "{:?}",
        report.notes
    );

    let args = check_args(&["--user", "alice", "--server", "db", "--resource", "db://x"]);
    assert_eq!(check::check(&c, &args).unwrap().kind, ItemKind::Resource);
    assert_eq!(exit_code(Effect::Allow), 0);
}

#[test]
fn policy_check_refuses_what_it_cannot_decide() {
    let c = config(DB_RULES);
    for (argv, expect) in [
        (
            &["--user", "mallory", "--server", "db", "--tool", "q"][..],
            "not a local user",
        ),
        (
            &["--role", "nope", "--server", "db", "--tool", "q"],
            "role \"nope\"",
        ),
        (
            &["--user", "alice", "--server", "nope", "--tool", "q"],
            "server \"nope\"",
        ),
        (
            &[
                "--user", "alice", "--server", "db", "--tool", "q", "--args", "{",
            ],
            "not valid JSON",
        ),
        (
            &[
                "--user", "alice", "--server", "db", "--tool", "q", "--args", "[1]",
            ],
            "JSON object",
        ),
    ] {
        let e = check::check(&c, &check_args(argv)).unwrap_err();
        assert!(format!("{e:#}").contains(expect), "{argv:?}: {e:#}");
    }
    // Usage: one item, and someone to decide for.
    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        policy: PolicyCommand,
    }
    for argv in [
        &[
            "x", "check", "--config", "c", "--user", "a", "--server", "db",
        ][..],
        &[
            "x", "check", "--config", "c", "--user", "a", "--server", "db", "--tool", "t",
            "--prompt", "p",
        ],
        &[
            "x", "check", "--config", "c", "--server", "db", "--tool", "t",
        ],
    ] {
        assert!(Cli::try_parse_from(argv).is_err(), "{argv:?}");
    }
}

#[test]
fn allow_all_for_tests_allows_everything_and_is_shareable() {
    let p = Policy::allow_all_for_tests();
    assert_eq!(
        tool(&p, &["x"], "any", "drop_table", json!({})),
        Effect::Allow
    );
    assert_eq!(
        decide(
            &p,
            &["x"],
            "any",
            ItemKind::Resource,
            "file:///etc/passwd",
            Value::Null
        )
        .effect,
        Effect::Allow
    );
    let p = std::sync::Arc::new(p);
    let q = std::sync::Arc::clone(&p);
    let d = std::thread::spawn(move || tool(&q, &["x"], "any", "t", json!({"a": 1}))).join();
    assert_eq!(d.unwrap(), Effect::Allow);
}
