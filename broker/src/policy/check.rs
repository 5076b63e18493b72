//! `mcpgate-broker policy check`: what the policy decides for one call, by
//! which rule (FILE:LINE), and every other rule that matched. For writing
//! and reviewing rules without starting the broker.

use std::io::Write;

use anyhow::{Context as _, bail};
use mcpgate_shared::names::{RoleName, ServerName};
use serde_json::json;

use super::{Decision, Effect, ItemKind, Policy, Request};
use crate::cli::{Output, PolicyCheckArgs};
use crate::config::Config;

/// Exit status of `policy check` for a decision (errors are 1, usage 2).
pub fn exit_code(effect: Effect) -> u8 {
    match effect {
        Effect::Allow => 0,
        Effect::Deny => 3,
        Effect::Approve => 4,
    }
}

/// One explained decision.
#[derive(Debug)]
pub struct CheckReport {
    pub user: String,
    pub roles: Vec<RoleName>,
    pub server: ServerName,
    pub kind: ItemKind,
    pub name: String,
    pub decision: Decision,
    /// Things worth knowing besides the decision (e.g. that these roles
    /// cannot open a session to the server at all).
    pub notes: Vec<String>,
}

/// Runs `policy check`: prints the report to `out` and returns the
/// decision's effect (see [`exit_code`]).
pub fn run_check(args: &PolicyCheckArgs, out: &mut dyn Write) -> anyhow::Result<Effect> {
    let config = Config::load(&args.config)?;
    let report = check(&config, args)?;
    match args.output {
        Output::Table => write_text(&report, out)?,
        Output::Json => writeln!(out, "{}", serde_json::to_string_pretty(&to_json(&report))?)?,
    }
    Ok(report.decision.effect)
}

/// Decides the call `args` describes against `config`'s policy.
pub fn check(config: &Config, args: &PolicyCheckArgs) -> anyhow::Result<CheckReport> {
    let policy = Policy::compile(config)?;
    let (user, roles) = match (&args.user, args.roles.is_empty()) {
        (Some(user), true) => {
            let local = config.users.get(user).with_context(|| {
                format!(
                    "{user} is not a local user under [users]; for IdP users pass their roles with --role"
                )
            })?;
            (user.to_string(), local.roles.clone())
        }
        (user, _) => {
            for role in &args.roles {
                if !config.roles.contains_key(role) {
                    bail!("role {role:?} is not under [roles]");
                }
            }
            let user = user.as_ref().map(ToString::to_string).unwrap_or_default();
            (user, args.roles.clone())
        }
    };
    if !config.servers.contains_key(&args.server) {
        bail!("server {:?} is not under [servers]", args.server.as_str());
    }
    let (kind, name) = match (&args.tool, &args.resource, &args.prompt) {
        (Some(tool), None, None) => (ItemKind::Tool, tool),
        (None, Some(uri), None) => (ItemKind::Resource, uri),
        (None, None, Some(prompt)) => (ItemKind::Prompt, prompt),
        _ => bail!("give exactly one of --tool, --resource and --prompt"),
    };
    let arguments: serde_json::Value =
        serde_json::from_str(&args.args).context("--args is not valid JSON")?;
    if !arguments.is_object() {
        bail!("--args must be a JSON object, like '{{\"limit\": 2}}'");
    }
    let decision = policy.decide(&Request {
        user: &user,
        roles: &roles,
        server: &args.server,
        kind,
        name,
        arguments: &arguments,
    });
    let mut notes = Vec::new();
    if roles.is_empty() {
        notes.push(format!("{user} has no role: every call is denied"));
    } else if !config.may_connect(&roles, &args.server) {
        notes.push(format!(
            "none of these roles lists server {:?} under servers: sessions to it are refused \
             before any call (unless access was granted on request)",
            args.server.as_str()
        ));
    }
    Ok(CheckReport {
        user,
        roles,
        server: args.server.clone(),
        kind,
        name: name.clone(),
        decision,
        notes,
    })
}

pub(super) fn write_text(r: &CheckReport, out: &mut dyn Write) -> std::io::Result<()> {
    let d = &r.decision;
    writeln!(
        out,
        "{}: {} {:?} on server {:?}",
        d.effect,
        r.kind,
        r.name,
        r.server.as_str()
    )?;
    let roles: Vec<&str> = r.roles.iter().map(RoleName::as_str).collect();
    let user = if r.user.is_empty() { "-" } else { &r.user };
    writeln!(out, "  caller:     {user} (roles: {})", roles.join(", "))?;
    match &d.rule {
        Some(rule) => writeln!(out, "  decided by: {rule}")?,
        None => writeln!(
            out,
            "  decided by: the default (nothing is allowed unless a rule allows it)"
        )?,
    }
    writeln!(out, "  reason:     {}", d.reason)?;
    if d.effect == Effect::Approve {
        writeln!(out, "  approvals:  {}", d.approvals)?;
    }
    if d.matched.is_empty() {
        writeln!(out, "  rules that matched: none")?;
    } else {
        writeln!(out, "  rules that matched:")?;
        for (rule, effect, outcome) in &d.matched {
            writeln!(out, "    {:<8} {rule}: {outcome}", effect.to_string())?;
        }
    }
    for note in &r.notes {
        writeln!(out, "  note: {note}")?;
    }
    Ok(())
}

pub(super) fn to_json(r: &CheckReport) -> serde_json::Value {
    let d = &r.decision;
    let rule =
        |rule: &super::RuleRef| json!({ "name": rule.name, "file": rule.file, "line": rule.line });
    json!({
        "effect": d.effect.to_string(),
        "rule": d.rule.as_ref().map(rule),
        "reason": d.reason,
        "approvals": d.approvals,
        "user": r.user,
        "roles": r.roles,
        "server": r.server,
        "kind": r.kind.to_string(),
        "name": r.name,
        "matched": d.matched.iter().map(|(rr, effect, outcome)| json!({
            "rule": rule(rr),
            "effect": effect.to_string(),
            "outcome": outcome,
        })).collect::<Vec<_>>(),
        "notes": r.notes,
    })
}
