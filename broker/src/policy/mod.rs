//! The policy engine: which tool calls, resource reads and prompts a role
//! may use on a server, which are held for approval, and why.
//!
//! Pure logic: [`Policy::compile`] reads the rules (from the config file
//! and its `broker.policy_files`), checks and compiles them once (globs,
//! regexes, CEL programs), and [`Policy::decide`] / [`Policy::visible`]
//! then only match and evaluate. Nothing is allowed unless a rule allows
//! it, a deny always wins, and a condition that cannot be evaluated denies
//! (fail closed).
//!
//! # Rules
//!
//! Rules are `[[policy]]` tables, in the config file or in policy files
//! listed as `broker.policy_files = ["policy.d/db.toml"]` (relative to the
//! config file; each holds only `[[policy]]` tables):
//!
//! ```toml
//! [[policy]]
//! name = "read-only tools"      # required, unique across all files
//! roles = ["engineer"]          # role names from [roles], or ["*"] for any role
//! servers = ["demo"]            # server names from [servers], or ["*"] for any
//! tools = ["list_*", "get_customer", "re:search_[a-z]+"]
//! # resources = ["demo://customers/*"]   # resource URIs
//! # prompts = ["summarise"]
//! effect = "allow"              # allow | deny | approve
//! # when = 'has(args.sql) && args.sql.matches("(?i)\\b(drop|alter|truncate|delete)\\b")'
//! # reason = "writes change customer data"   # shown to the client and the approver
//! # approvals = 2               # effect = "approve" only: approvals needed (default 1)
//! ```
//!
//! A rule lists at least one of `tools`, `resources` and `prompts`, each a
//! non-empty list of patterns: an exact name; a glob when it has one of
//! `* ? [ ] { } \` (`*` and `?` do not match `/`, `**` does); or a regex
//! after `re:`, matched against the whole name (`re:drop` does not match
//! `x_drop_y`).
//!
//! `when` is a [CEL](https://cel.dev) expression over `args` (the call's
//! arguments as a map, `{}` when there are none), `name` (tool or prompt
//! name, resource URI), `kind` (`"tool"`, `"resource"`, `"prompt"`),
//! `user`, `roles` (list of strings) and `server`, with CEL's standard
//! functions plus `path_within(path, prefix)`, which compares paths
//! lexically (`/srv/data/../etc` is not within `/srv/data`; relative paths
//! never are). A rule whose condition is false does not apply. A condition
//! that fails (a missing key, a wrong type, a result that is not a bool)
//! makes the rule deny the call, with the error as the reason: guard
//! optional arguments with `has(args.x) && ...`.
//!
//! # Decisions
//!
//! For one call, the rules that apply are those for one of the caller's
//! roles, for the server, whose pattern for the item's kind matches its
//! name, and whose condition (if any) holds. Then:
//! 1. any deny applies (or any condition failed): **deny**, by the first;
//! 2. else any approve applies: **approve** (hold for approval), by the
//!    first, needing the most `approvals` among them;
//! 3. else any allow applies: **allow**;
//! 4. else **deny**: "no rule allows it".
//!
//! In listings (`tools/list` and the like) an item is [visible](Policy::visible)
//! when an allow or approve rule matches its name (conditions aside: they
//! depend on the arguments of a call) and no deny rule without a condition
//! does.
//!
//! Every problem in the rules is found at start-up and reported as
//! `FILE:LINE: what is wrong`: unknown roles and servers, empty lists, bad
//! globs and regexes, CEL that does not parse or names an unknown variable,
//! a regex literal in `matches()` that does not compile, duplicate names.

mod check;
mod condition;
mod pattern;
mod rules;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use mcpgate_shared::names::{RoleName, ServerName};
use serde::Deserialize;

pub use check::{CheckReport, exit_code, run_check};
pub use condition::is_path_within;
pub use rules::PolicySection;

use condition::Vars;
use rules::Rule;

/// What a call, read or prompt is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ItemKind {
    Tool,
    Resource,
    Prompt,
}

impl fmt::Display for ItemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ItemKind::Tool => "tool",
            ItemKind::Resource => "resource",
            ItemKind::Prompt => "prompt",
        })
    }
}

/// What a rule, or a decision, does with a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    Allow,
    Deny,
    /// Hold the call until enough approvers allow it.
    Approve,
}

impl fmt::Display for Effect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
            Effect::Approve => "approve",
        })
    }
}

/// A rule, by name and where it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleRef {
    pub name: String,
    pub file: PathBuf,
    /// 1-based line of the rule's `[[policy]]` header.
    pub line: usize,
}

impl fmt::Display for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}:{})", self.name, self.file.display(), self.line)
    }
}

/// The outcome for one call and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub effect: Effect,
    /// The rule that decided; `None` for the default deny.
    pub rule: Option<RuleRef>,
    /// For the client and the approver: the rule's `reason`, else a
    /// sentence naming the rule (or the condition's error).
    pub reason: String,
    /// Approvals needed (`approve` only; 0 otherwise).
    pub approvals: u32,
    /// Every rule whose scope and pattern matched, in order, with its
    /// effect and what came of it ("applies", "condition is false: ...").
    pub matched: Vec<(RuleRef, Effect, String)>,
}

/// One call to decide on.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub user: &'a str,
    pub roles: &'a [RoleName],
    pub server: &'a ServerName,
    pub kind: ItemKind,
    /// Tool or prompt name, or resource URI.
    pub name: &'a str,
    /// The call's arguments (`Null` when absent).
    pub arguments: &'a serde_json::Value,
}

/// A rule that is wrong, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}: {message}", file.display())]
pub struct PolicyError {
    pub file: PathBuf,
    pub line: usize,
    pub message: String,
}

/// The compiled rules. Cheap to share (`Send + Sync`); deciding allocates
/// only for the explanation and, when a matching rule has a condition, for
/// the condition's variables.
pub struct Policy {
    rules: Vec<Rule>,
    env: Arc<cel::Env>,
    regexes: Arc<condition::Regexes>,
}

// The relay shares one policy between sessions' tasks.
const _: () = {
    const fn shareable<T: Send + Sync>() {}
    shareable::<Policy>();
};

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("rules", &self.rules.len())
            .finish()
    }
}

/// What became of one matching rule.
enum Outcome {
    Applies,
    ConditionTrue,
    ConditionFalse,
    Failed(String),
}

impl Policy {
    /// Compiles the config's inline `[[policy]]` rules and those of its
    /// `broker.policy_files`, in that order.
    pub fn compile(config: &crate::config::Config) -> Result<Policy, PolicyError> {
        let env = condition::environment();
        let (rules, regexes) = rules::compile_all(config, &env)?;
        Ok(Policy {
            rules,
            env,
            regexes: Arc::new(regexes),
        })
    }

    /// A policy that allows every tool, resource and prompt to any role on
    /// any server: for tests of other stages only.
    pub fn allow_all_for_tests() -> Policy {
        let any = || Some(pattern::Patterns::compile(["**"]).expect("a valid glob"));
        Policy {
            rules: vec![Rule {
                at: RuleRef {
                    name: "allow all (tests)".into(),
                    file: PathBuf::from("<tests>"),
                    line: 0,
                },
                roles: rules::Scope::Any,
                servers: rules::Scope::Any,
                tools: any(),
                resources: any(),
                prompts: any(),
                effect: Effect::Allow,
                condition: None,
                reason: None,
                approvals: 0,
            }],
            env: condition::environment(),
            regexes: Arc::default(),
        }
    }

    /// How many rules there are.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Decides one call (see the module docs for the order).
    pub fn decide(&self, req: &Request<'_>) -> Decision {
        let mut ctx = None;
        let mut matched = Vec::new();
        let mut deny: Option<(&Rule, Option<String>)> = None;
        let mut approve: Option<&Rule> = None;
        let mut approvals = 0;
        let mut allow: Option<&Rule> = None;
        for rule in &self.rules {
            if !rule.in_scope(req.roles, req.server) || !rule.matches(req.kind, req.name) {
                continue;
            }
            let outcome = match &rule.condition {
                None => Outcome::Applies,
                Some(condition) => {
                    let ctx = ctx.get_or_insert_with(|| self.context(req));
                    match condition.evaluate(ctx) {
                        Ok(true) => Outcome::ConditionTrue,
                        Ok(false) => Outcome::ConditionFalse,
                        Err(e) => Outcome::Failed(e),
                    }
                }
            };
            let (effect, text) = match &outcome {
                Outcome::Applies => (rule.effect, "applies".to_owned()),
                Outcome::ConditionTrue => (rule.effect, "applies: its condition is true".into()),
                Outcome::ConditionFalse => {
                    (rule.effect, "does not apply: its condition is false".into())
                }
                Outcome::Failed(e) => (
                    Effect::Deny,
                    format!("denies: its condition could not be evaluated: {e}"),
                ),
            };
            matched.push((rule.at.clone(), effect, text));
            match (outcome, rule.effect) {
                (Outcome::ConditionFalse, _) => {}
                (Outcome::Failed(e), _) => {
                    deny.get_or_insert((rule, Some(e)));
                }
                (_, Effect::Deny) => {
                    deny.get_or_insert((rule, None));
                }
                (_, Effect::Approve) => {
                    approve.get_or_insert(rule);
                    approvals = approvals.max(rule.approvals);
                }
                (_, Effect::Allow) => {
                    allow.get_or_insert(rule);
                }
            }
        }
        let (effect, rule, reason, approvals) = if let Some((rule, error)) = deny {
            let reason = match error {
                Some(e) => format!(
                    "the condition of rule {:?} could not be evaluated, so the call is denied: {e}",
                    rule.at.name
                ),
                None => rule
                    .reason
                    .clone()
                    .unwrap_or_else(|| format!("denied by rule {:?}", rule.at.name)),
            };
            (Effect::Deny, rule, reason, 0)
        } else if let Some(rule) = approve {
            let reason = rule
                .reason
                .clone()
                .unwrap_or_else(|| format!("rule {:?} holds it for approval", rule.at.name));
            (Effect::Approve, rule, reason, approvals)
        } else if let Some(rule) = allow {
            let reason = format!("allowed by rule {:?}", rule.at.name);
            (Effect::Allow, rule, reason, 0)
        } else {
            return Decision {
                effect: Effect::Deny,
                rule: None,
                reason: "no rule allows it".into(),
                approvals: 0,
                matched,
            };
        };
        Decision {
            effect,
            rule: Some(rule.at.clone()),
            reason,
            approvals,
            matched,
        }
    }

    /// Whether an item shows in listings for these roles on this server:
    /// some allow or approve rule matches it (with or without a condition)
    /// and no unconditional deny rule does.
    pub fn visible(
        &self,
        roles: &[RoleName],
        server: &ServerName,
        kind: ItemKind,
        name: &str,
    ) -> bool {
        let mut shown = false;
        for rule in &self.rules {
            if !rule.in_scope(roles, server) || !rule.matches(kind, name) {
                continue;
            }
            match (rule.effect, &rule.condition) {
                (Effect::Deny, None) => return false,
                (Effect::Deny, Some(_)) => {}
                (Effect::Allow | Effect::Approve, _) => shown = true,
            }
        }
        shown
    }

    fn context(&self, req: &Request<'_>) -> cel::Context<'static, 'static> {
        Vars {
            kind: req.kind,
            name: req.name,
            user: req.user,
            roles: req.roles.iter().map(RoleName::as_str).collect(),
            server: req.server.as_str(),
            arguments: req.arguments,
        }
        .context(&self.env, &self.regexes)
    }
}

#[cfg(test)]
mod tests;
