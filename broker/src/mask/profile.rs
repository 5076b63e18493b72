//! The masking profiles of a config, compiled once, and which session gets
//! which.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use mcpgate_shared::names::{RoleName, ServerName};

use super::config::{Binding, MaskingSection, ProfileSection};
use super::detect::{Detector, Scanner};
use super::masker::{CustomCompiled, CustomRules, FieldCompiled, Masker};
use super::style::{MaskKey, Style};

/// The profile a session gets when no `[[masking.apply]]` entry matches.
pub const DEFAULT_PROFILE: &str = "default";

/// Every profile of the config, compiled.
#[derive(Debug)]
pub struct Masking {
    profiles: BTreeMap<String, Arc<Masker>>,
    bindings: Vec<Binding>,
}

impl Masking {
    /// Compiles `[masking]`. `servers` and `roles` are the config's, for
    /// checking the names `apply` uses. Errors say which rule, field or
    /// profile is wrong and how.
    pub fn compile(
        section: &MaskingSection,
        servers: &BTreeSet<String>,
        roles: &BTreeSet<String>,
        key: MaskKey,
    ) -> Result<Masking, String> {
        if section.max_depth == 0 || section.max_bytes == 0 {
            return Err("masking: max_depth and max_bytes must be at least 1".into());
        }
        let mut names = BTreeSet::new();
        for name in section
            .rules
            .iter()
            .map(|r| &r.name)
            .chain(section.fields.iter().map(|f| &f.name))
        {
            check_type_name(name)?;
            if Detector::from_name(name).is_some() || name == "secret" {
                return Err(format!(
                    "masking rule {name:?}: the name of a built-in detector; choose another"
                ));
            }
            if !names.insert(name.as_str()) {
                return Err(format!(
                    "masking rule {name:?}: the name is used twice among rules and fields"
                ));
            }
        }
        for (kind, _) in section.styles.iter() {
            check_style_target(kind, &names).map_err(|e| format!("masking.styles: {e}"))?;
        }
        let mut profiles = BTreeMap::new();
        let default_profile = ProfileSection::default();
        let mut sections: Vec<(&str, &ProfileSection)> = section
            .profiles
            .iter()
            .map(|(n, p)| (n.as_str(), p))
            .collect();
        if !section.profiles.contains_key(DEFAULT_PROFILE) {
            sections.push((DEFAULT_PROFILE, &default_profile));
        }
        for (name, profile) in sections {
            check_type_name(name).map_err(|e| format!("masking profile {name:?}: {e}"))?;
            let masker = compile_profile(name, profile, section, &names, key.clone())
                .map_err(|e| format!("masking profile {name:?}: {e}"))?;
            profiles.insert(name.to_owned(), Arc::new(masker));
        }
        for (i, binding) in section.apply.iter().enumerate() {
            let at = format!("masking.apply[{i}]");
            if !profiles.contains_key(&binding.profile) {
                return Err(format!("{at}: no profile named {:?}", binding.profile));
            }
            for s in &binding.servers {
                if s != "*" && !servers.contains(s) {
                    return Err(format!("{at}: no server named {s:?}"));
                }
            }
            for r in &binding.roles {
                if r != "*" && !roles.contains(r) {
                    return Err(format!("{at}: no role named {r:?}"));
                }
            }
        }
        Ok(Masking {
            profiles,
            bindings: section.apply.clone(),
        })
    }

    /// The masker for a session: the first `apply` entry matching the
    /// server and any of the roles, else the default profile.
    pub fn for_session(&self, server: &ServerName, roles: &[RoleName]) -> Arc<Masker> {
        let matches = |list: &[String], name: &str| list.iter().any(|n| n == "*" || n == name);
        let name = self
            .bindings
            .iter()
            .find(|b| {
                matches(&b.servers, server.as_str())
                    && roles.iter().any(|r| matches(&b.roles, r.as_str()))
            })
            .map(|b| b.profile.as_str())
            .unwrap_or(DEFAULT_PROFILE);
        self.profile(name)
            .or_else(|| self.profile(DEFAULT_PROFILE))
            .expect("compile always makes the default profile")
    }

    /// A profile by name.
    pub fn profile(&self, name: &str) -> Option<Arc<Masker>> {
        self.profiles.get(name).cloned()
    }

    pub fn profile_names(&self) -> impl Iterator<Item = &str> {
        self.profiles.keys().map(String::as_str)
    }
}

fn compile_profile(
    name: &str,
    profile: &ProfileSection,
    section: &MaskingSection,
    names: &BTreeSet<&str>,
    key: MaskKey,
) -> Result<Masker, String> {
    let mut detectors = BTreeSet::new();
    let listed: Vec<String> = profile
        .detectors
        .clone()
        .unwrap_or_else(|| vec!["default".to_owned()]);
    for d in &listed {
        match d.as_str() {
            "default" => detectors.extend(Detector::ALL.into_iter().filter(|d| d.default_on())),
            "all" => detectors.extend(Detector::ALL),
            other => {
                detectors.insert(detector(other)?);
            }
        }
    }
    for d in &profile.exclude {
        detectors.remove(&detector(d)?);
    }
    let mut styles: BTreeMap<&str, Style> = BTreeMap::new();
    for (kind, style) in section.styles.iter().chain(profile.styles.iter()) {
        check_style_target(kind, names).map_err(|e| format!("styles: {e}"))?;
        styles.insert(kind.as_str(), *style);
    }
    let style_of = |kind: &str, own: Option<Style>| {
        // A profile's style wins over the rule's own, which wins over the
        // section's.
        profile
            .styles
            .get(kind)
            .copied()
            .or(own)
            .or_else(|| section.styles.get(kind).copied())
            .unwrap_or_default()
    };
    let wanted =
        |list: &Option<Vec<String>>, what: &str| -> Result<Option<BTreeSet<String>>, String> {
            let Some(list) = list else { return Ok(None) };
            for n in list {
                if !names.contains(n.as_str()) {
                    return Err(format!("{what}: no masking rule or field named {n:?}"));
                }
            }
            Ok(Some(list.iter().cloned().collect()))
        };
    let rules_wanted = wanted(&profile.rules, "rules")?;
    let fields_wanted = wanted(&profile.fields, "fields")?;

    let mut patterns = Vec::new();
    let mut rules = Vec::new();
    for rule in &section.rules {
        if rules_wanted
            .as_ref()
            .is_some_and(|w| !w.contains(&rule.name))
        {
            continue;
        }
        patterns.push(rule.pattern.as_str());
        rules.push(CustomCompiled {
            name: rule.name.clone(),
            validate: rule.validate,
            style: style_of(&rule.name, rule.style),
        });
    }
    let custom = if rules.is_empty() {
        None
    } else {
        Some(CustomRules::new(&patterns, rules)?)
    };
    let mut fields = Vec::new();
    for field in &section.fields {
        if fields_wanted
            .as_ref()
            .is_some_and(|w| !w.contains(&field.name))
        {
            continue;
        }
        let path = serde_json_path::JsonPath::parse(&field.path)
            .map_err(|e| format!("masking field {:?}: invalid path: {e}", field.name))?;
        fields.push(FieldCompiled {
            name: field.name.clone(),
            path,
            style: style_of(&field.name, field.style),
        });
    }
    let builtin_styles = Detector::ALL
        .into_iter()
        .map(|d| (d, style_of(d.name(), None)))
        .collect();
    Ok(Masker {
        profile: name.to_owned(),
        scanner: Scanner::new(detectors),
        builtin_styles,
        secret_style: style_of("secret", None),
        custom,
        fields,
        key,
        max_depth: section.max_depth,
        max_bytes: section.max_bytes,
    })
}

fn detector(name: &str) -> Result<Detector, String> {
    Detector::from_name(name).ok_or_else(|| {
        let known: Vec<_> = Detector::ALL.iter().map(|d| d.name()).collect();
        format!(
            "no built-in detector named {name:?} (known: default, all, {})",
            known.join(", ")
        )
    })
}

fn check_style_target(kind: &str, names: &BTreeSet<&str>) -> Result<(), String> {
    if Detector::from_name(kind).is_some() || names.contains(kind) {
        Ok(())
    } else {
        Err(format!(
            "{kind:?} is neither a built-in detector nor a masking rule or field"
        ))
    }
}

/// Type names appear inside masks (`[MASKED:name]`): keep them plain.
fn check_type_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid name (lower-case letters, digits, '_' and '-', at most 40)"
        ))
    }
}
