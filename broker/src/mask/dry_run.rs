//! `mcpgate-broker mask`: an admin's dry run of the masking rules on a
//! document from stdin, with `--explain` listing each finding.

use std::fmt::Write as _;

use anyhow::Context;
use mcpgate_shared::jsonrpc::{Message, parse_strict};

use super::{Explained, MaskKey, Masking, Report};
use crate::cli::MaskArgs;
use crate::config::Config;

/// Masks `input` and returns what to print.
pub fn run(args: &MaskArgs, input: &str) -> anyhow::Result<String> {
    let masking = load(args)?;
    let masker = masking.profile(&args.profile).with_context(|| {
        let known: Vec<_> = masking.profile_names().collect();
        format!(
            "no masking profile named {:?} (profiles: {})",
            args.profile,
            known.join(", ")
        )
    })?;
    let mut report = Report::default();
    let trimmed = input.trim();
    let mut out = match parse_strict(trimmed) {
        Some(serde_json::Value::Object(o)) if o.contains_key("jsonrpc") => {
            let mut msg = Message::from_object(o)
                .map_err(|e| anyhow::anyhow!("not a valid JSON-RPC message: {e}"))?;
            if let Some(body) = msg.body_mut() {
                masker.mask_value(body, &mut report, args.explain)?;
            }
            String::from_utf8_lossy(&msg.to_line()).into_owned()
        }
        Some(mut value) => {
            masker.mask_value(&mut value, &mut report, args.explain)?;
            let mut text = if trimmed.contains('\n') {
                serde_json::to_string_pretty(&value)?
            } else {
                serde_json::to_string(&value)?
            };
            text.push('\n');
            text
        }
        None => masker
            .mask_text(input, &mut report, args.explain)?
            .unwrap_or_else(|| input.to_owned()),
    };
    if args.explain {
        if !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&explain(&report.explained));
    }
    Ok(out)
}

fn load(args: &MaskArgs) -> anyhow::Result<Masking> {
    let Some(path) = &args.config else {
        return Masking::compile(
            &Default::default(),
            &Default::default(),
            &Default::default(),
            random_key()?,
        )
        .map_err(anyhow::Error::msg);
    };
    let config = Config::load(path)?;
    // The broker's own key when it is readable, so hash tokens match the
    // broker's; otherwise a throwaway one (and say so).
    let key_path = config.data_dir().join(super::MASK_KEY_FILE);
    let key = match std::fs::read(&key_path)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
    {
        Some(bytes) => MaskKey::new(bytes),
        None => {
            eprintln!(
                "note: {} is not readable; hash tokens use a throwaway key and will differ from the broker's",
                key_path.display()
            );
            random_key()?
        }
    };
    config
        .masking(key)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

fn random_key() -> anyhow::Result<MaskKey> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(MaskKey::new(bytes))
}

/// The findings as a table: type, rule, where, byte range.
fn explain(found: &[Explained]) -> String {
    let mut out = format!("\nfindings: {}\n", found.len());
    if found.is_empty() {
        return out;
    }
    let rows: Vec<[String; 4]> = found
        .iter()
        .map(|f| {
            [
                f.kind.clone(),
                f.rule.clone(),
                if f.at.is_empty() {
                    "(text)".to_owned()
                } else {
                    f.at.clone()
                },
                format!("{}..{}", f.start, f.end),
            ]
        })
        .collect();
    let header = ["TYPE", "RULE", "AT", "BYTES"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in std::iter::once(header.map(str::to_owned)).chain(rows) {
        let line = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect::<Vec<_>>()
            .join("  ");
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn args(config: Option<PathBuf>, explain: bool) -> MaskArgs {
        MaskArgs {
            config,
            profile: crate::mask::DEFAULT_PROFILE.to_owned(),
            explain,
        }
    }

    const REPLY: &str = r#"{"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text","text":"Card 4111 1111 1111 1111 for jane@example.com, key AKIAIOSFODNN7EXAMPLE"}],"structuredContent":null}}"#;

    #[test]
    fn explain_a_json_rpc_reply_with_the_built_in_defaults() {
        insta::assert_snapshot!(run(&args(None, true), REPLY).unwrap());
    }

    #[test]
    fn explain_text_with_custom_rules_fields_and_styles() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("broker.toml");
        std::fs::write(
            &config,
            format!(
                r#"
[broker]
data_dir = "{}"

[masking]
styles = {{ card = "partial" }}

[[masking.rules]]
name = "ticket"
pattern = 'TCK-\d{{5}}'

[[masking.fields]]
name = "owner"
path = "$.rows[*].owner"
"#,
                dir.path().display()
            ),
        )
        .unwrap();
        let text = "Ticket TCK-20411: refund to 5555-5555-5555-4444, ssn 536-22-8714, \
                    call +1 (415) 555-0132, db postgres://app:hunter2@db:5432/crm\n";
        insta::assert_snapshot!(
            "text",
            run(&args(Some(config.clone()), true), text).unwrap()
        );
        let doc = "{\n  \"rows\": [{\"owner\": \"Jane Roe\", \"note\": \"TCK-00001\"}]\n}";
        insta::assert_snapshot!("document", run(&args(Some(config), true), doc).unwrap());
    }

    #[test]
    fn an_unknown_profile_is_a_clear_error() {
        let mut a = args(None, false);
        a.profile = "nope".into();
        let e = run(&a, "x").unwrap_err().to_string();
        assert_eq!(e, "no masking profile named \"nope\" (profiles: default)");
    }
}
