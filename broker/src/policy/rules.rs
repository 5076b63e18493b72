//! `[[policy]]` entries as written (inline in the config file or in
//! `broker.policy_files`), where they were written, and their compilation
//! into [`Rule`]s with errors that point at a file and line.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cel::Env;
use mcpgate_shared::names::{RoleName, ServerName};
use serde::Deserialize;
use toml::Spanned;

use super::condition::{Condition, Regexes};
use super::pattern::Patterns;
use super::{Effect, ItemKind, PolicyError, RuleRef};
use crate::config::Config;

/// Means "any role" or "any server".
pub const ANY: &str = "*";
/// The most approvals a rule may ask for.
pub const MAX_APPROVALS: u32 = 20;

/// One `[[policy]]` table as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    name: Spanned<String>,
    roles: Spanned<Vec<Spanned<String>>>,
    servers: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    tools: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    resources: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    prompts: Option<Spanned<Vec<Spanned<String>>>>,
    effect: Spanned<Effect>,
    #[serde(default)]
    when: Option<Spanned<String>>,
    #[serde(default)]
    reason: Option<Spanned<String>>,
    #[serde(default)]
    approvals: Option<Spanned<u32>>,
}

/// The config file's `[[policy]]` entries, and the file they are in (for
/// line numbers in messages).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct PolicySection {
    rules: Vec<Spanned<RuleSpec>>,
    #[serde(skip)]
    source: Source,
}

impl PolicySection {
    /// Records which file, with which text, the rules were read from:
    /// `Config::parse` calls this, since spans are byte offsets into it.
    pub fn locate(&mut self, file: &Path, text: &str) {
        self.source = Source::new(file, text);
    }

    /// How many rules the config file itself holds.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// A policy file: nothing but `[[policy]]` entries.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    policy: Vec<Spanned<RuleSpec>>,
}

/// A file's name and where its lines start (not its text: the config file
/// holds secrets, and this is in `Config`'s `Debug` output).
#[derive(Clone, Default)]
struct Source {
    file: PathBuf,
    line_starts: Arc<[usize]>,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Source").field(&self.file).finish()
    }
}

impl Source {
    fn new(file: &Path, text: &str) -> Source {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Source {
            file: file.to_owned(),
            line_starts,
        }
    }

    /// The 1-based line of a byte offset.
    fn line(&self, offset: usize) -> usize {
        self.line_starts
            .partition_point(|&start| start <= offset)
            .max(1)
    }

    fn error(&self, offset: usize, message: impl Into<String>) -> PolicyError {
        PolicyError {
            file: self.file.clone(),
            line: self.line(offset),
            message: message.into(),
        }
    }
}

/// Who a rule is for: any role (or server), or the ones listed.
#[derive(Debug)]
pub enum Scope<T> {
    Any,
    Only(Vec<T>),
}

/// A compiled rule.
#[derive(Debug)]
pub struct Rule {
    pub at: RuleRef,
    pub roles: Scope<RoleName>,
    pub servers: Scope<ServerName>,
    pub tools: Option<Patterns>,
    pub resources: Option<Patterns>,
    pub prompts: Option<Patterns>,
    pub effect: Effect,
    pub condition: Option<Condition>,
    pub reason: Option<String>,
    pub approvals: u32,
}

impl Rule {
    /// Whether the rule is about this server, for one of these roles.
    pub fn in_scope(&self, roles: &[RoleName], server: &ServerName) -> bool {
        let role_ok = match &self.roles {
            Scope::Any => !roles.is_empty(),
            Scope::Only(list) => roles.iter().any(|r| list.contains(r)),
        };
        role_ok
            && match &self.servers {
                Scope::Any => true,
                Scope::Only(list) => list.contains(server),
            }
    }

    /// Whether the rule's patterns for `kind` match `name`.
    pub fn matches(&self, kind: ItemKind, name: &str) -> bool {
        let patterns = match kind {
            ItemKind::Tool => &self.tools,
            ItemKind::Resource => &self.resources,
            ItemKind::Prompt => &self.prompts,
        };
        patterns.as_ref().is_some_and(|p| p.is_match(name))
    }
}

/// Compiles the config's inline rules, then those of each policy file in
/// order; rule names are unique across all of them. Also returns the regex
/// literals of their conditions, compiled.
pub fn compile_all(config: &Config, env: &Env) -> Result<(Vec<Rule>, Regexes), PolicyError> {
    let mut rules = Vec::new();
    let mut regexes = Regexes::new();
    let mut names: HashMap<String, RuleRef> = HashMap::new();
    let section = &config.policy;
    for spec in &section.rules {
        rules.push(compile(
            config,
            env,
            &section.source,
            spec,
            &mut names,
            &mut regexes,
        )?);
    }
    let base = config.path.parent().unwrap_or(Path::new("."));
    let config_source = &section.source;
    for entry in &config.broker.policy_files {
        let path = base.join(entry.get_ref());
        let text = std::fs::read_to_string(&path).map_err(|e| {
            config_source.error(
                entry.span().start,
                format!("cannot read policy file {}: {e}", path.display()),
            )
        })?;
        let source = Source::new(&path, &text);
        let file: PolicyFile = toml::from_str(&text).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            source.error(offset, e.message().trim_end().replace('\n', " "))
        })?;
        if file.policy.is_empty() {
            return Err(source.error(0, "no [[policy]] entries in this policy file"));
        }
        for spec in &file.policy {
            rules.push(compile(
                config,
                env,
                &source,
                spec,
                &mut names,
                &mut regexes,
            )?);
        }
    }
    Ok((rules, regexes))
}

fn compile(
    config: &Config,
    env: &Env,
    source: &Source,
    spec: &Spanned<RuleSpec>,
    names: &mut HashMap<String, RuleRef>,
    regexes: &mut Regexes,
) -> Result<Rule, PolicyError> {
    let at_rule = spec.span().start;
    let spec = spec.get_ref();
    let name = spec.name.get_ref().trim();
    let err = |offset: usize, message: String| source.error(offset, message);
    if name.is_empty() || name.chars().any(char::is_control) {
        return Err(err(
            spec.name.span().start,
            "every [[policy]] needs a name (no control characters)".into(),
        ));
    }
    let at = RuleRef {
        name: name.to_owned(),
        file: source.file.clone(),
        line: source.line(at_rule),
    };
    if let Some(earlier) = names.get(name) {
        return Err(err(
            spec.name.span().start,
            format!(
                "rule name {name:?} is already used at {}:{}",
                earlier.file.display(),
                earlier.line
            ),
        ));
    }
    let rule_err =
        |offset: usize, message: String| err(offset, format!("rule {name:?}: {message}"));

    let roles = scope(&spec.roles, "roles", |r: &str| {
        let role: RoleName = r.parse().map_err(|e| format!("{e}"))?;
        match config.roles.contains_key(&role) {
            true => Ok(role),
            false => Err(format!("role {r:?} is not under [roles]")),
        }
    })
    .map_err(|(offset, m)| rule_err(offset, m))?;
    let servers = scope(&spec.servers, "servers", |s: &str| {
        let server: ServerName = s.parse().map_err(|e| format!("{e}"))?;
        match config.servers.contains_key(&server) {
            true => Ok(server),
            false => Err(format!("server {s:?} is not under [servers]")),
        }
    })
    .map_err(|(offset, m)| rule_err(offset, m))?;

    let patterns = |list: &Option<Spanned<Vec<Spanned<String>>>>, field: &str| {
        let Some(list) = list else {
            return Ok(None);
        };
        if list.get_ref().is_empty() {
            return Err(rule_err(
                list.span().start,
                format!("{field} is empty (leave it out instead)"),
            ));
        }
        Patterns::compile(list.get_ref().iter().map(|p| p.get_ref().as_str()))
            .map(Some)
            .map_err(|e| {
                let offset = list.get_ref()[e.index].span().start;
                rule_err(offset, format!("{field}: {}", e.message))
            })
    };
    let tools = patterns(&spec.tools, "tools")?;
    let resources = patterns(&spec.resources, "resources")?;
    let prompts = patterns(&spec.prompts, "prompts")?;
    if tools.is_none() && resources.is_none() && prompts.is_none() {
        return Err(rule_err(
            at_rule,
            "list at least one of tools, resources or prompts".into(),
        ));
    }

    let effect = *spec.effect.get_ref();
    let approvals = match (&spec.approvals, effect) {
        (None, Effect::Approve) => 1,
        (None, _) => 0,
        (Some(n), Effect::Approve) => {
            if !(1..=MAX_APPROVALS).contains(n.get_ref()) {
                return Err(rule_err(
                    n.span().start,
                    format!("approvals must be between 1 and {MAX_APPROVALS}"),
                ));
            }
            *n.get_ref()
        }
        (Some(n), _) => {
            return Err(rule_err(
                n.span().start,
                format!("approvals only applies to effect = \"approve\", not \"{effect}\""),
            ));
        }
    };
    let reason = match &spec.reason {
        Some(r) if r.get_ref().trim().is_empty() => {
            return Err(rule_err(
                r.span().start,
                "reason is empty (leave it out instead)".into(),
            ));
        }
        r => r.as_ref().map(|r| r.get_ref().trim().to_owned()),
    };
    let condition = match &spec.when {
        None => None,
        Some(when) => Some(
            Condition::compile(env, when.get_ref(), regexes)
                .map_err(|m| rule_err(when.span().start, format!("when: {m}")))?,
        ),
    };
    names.insert(name.to_owned(), at.clone());
    Ok(Rule {
        at,
        roles,
        servers,
        tools,
        resources,
        prompts,
        effect,
        condition,
        reason,
        approvals,
    })
}

/// A `roles` or `servers` list: `["*"]`, or names each `parse` accepts.
fn scope<T>(
    list: &Spanned<Vec<Spanned<String>>>,
    field: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Scope<T>, (usize, String)> {
    let items = list.get_ref();
    if items.is_empty() {
        return Err((
            list.span().start,
            format!("{field} is empty: list names, or \"*\" for any"),
        ));
    }
    if items.iter().any(|i| i.get_ref() == ANY) {
        return match items.len() {
            1 => Ok(Scope::Any),
            _ => Err((
                list.span().start,
                format!("{field}: \"*\" already means any; list it alone"),
            )),
        };
    }
    items
        .iter()
        .map(|i| parse(i.get_ref()).map_err(|m| (i.span().start, format!("{field}: {m}"))))
        .collect::<Result<Vec<T>, _>>()
        .map(Scope::Only)
}
