//! Name patterns of a rule's `tools`, `resources` and `prompts` lists:
//! exact names, globs and anchored regular expressions, compiled once.
//!
//! A pattern is a regex when it starts with `re:`; it is matched against
//! the whole name (`^(?:...)$`), so `re:drop` matches `drop` only, never
//! `x_drop_y`. Otherwise it is a glob when it holds one of `* ? [ ] { } \`,
//! and an exact name when it does not. In globs `*` and `?` never match
//! `/` (so `demo://customers/*` does not reach `demo://customers/1/orders`)
//! and `**` matches across it.

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use regex::RegexSet;

/// What marks a regex pattern.
pub const REGEX_PREFIX: &str = "re:";
const GLOB_CHARS: &[char] = &['*', '?', '[', ']', '{', '}', '\\'];

/// One compiled list of patterns: a name matches when any pattern does.
pub struct Patterns {
    exact: Vec<String>,
    globs: Option<GlobSet>,
    regexes: Option<RegexSet>,
}

impl std::fmt::Debug for Patterns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Patterns")
            .field("exact", &self.exact)
            .field("globs", &self.globs.as_ref().map_or(0, GlobSet::len))
            .field("regexes", &self.regexes.as_ref().map(RegexSet::patterns))
            .finish()
    }
}

/// A pattern that does not compile: which one (its index in the list) and
/// why.
#[derive(Debug)]
pub struct PatternError {
    pub index: usize,
    pub message: String,
}

impl Patterns {
    /// Compiles `patterns`; the first bad one is the error.
    pub fn compile<'a>(
        patterns: impl IntoIterator<Item = &'a str>,
    ) -> Result<Patterns, PatternError> {
        let mut exact = Vec::new();
        let mut globs = GlobSetBuilder::new();
        let mut glob_count = 0;
        let mut regexes = Vec::new();
        for (index, pattern) in patterns.into_iter().enumerate() {
            let fail = |message: String| PatternError { index, message };
            if let Some(re) = pattern.strip_prefix(REGEX_PREFIX) {
                if re.is_empty() {
                    return Err(fail(format!("{pattern:?}: the regex is empty")));
                }
                let anchored = format!("^(?:{re})$");
                // Checked one by one so that the message names the pattern.
                regex::Regex::new(&anchored).map_err(|e| {
                    fail(format!(
                        "{pattern:?} is not a valid regex: {}",
                        one_line(&e.to_string())
                    ))
                })?;
                regexes.push(anchored);
            } else if pattern.is_empty() {
                return Err(fail("an empty pattern matches nothing".into()));
            } else if pattern.contains(GLOB_CHARS) {
                let glob = GlobBuilder::new(pattern)
                    .literal_separator(true)
                    .backslash_escape(true)
                    .build()
                    .map_err(|e| fail(format!("{pattern:?} is not a valid glob: {}", e.kind())))?;
                globs.add(glob);
                glob_count += 1;
            } else {
                exact.push(pattern.to_owned());
            }
        }
        let globs = match glob_count {
            0 => None,
            _ => Some(globs.build().map_err(|e| PatternError {
                index: 0,
                message: format!("the globs do not compile together: {e}"),
            })?),
        };
        let regexes = match regexes.is_empty() {
            true => None,
            false => Some(RegexSet::new(&regexes).map_err(|e| PatternError {
                index: 0,
                message: format!("the regexes do not compile together: {e}"),
            })?),
        };
        Ok(Patterns {
            exact,
            globs,
            regexes,
        })
    }

    pub fn is_match(&self, name: &str) -> bool {
        self.exact.iter().any(|e| e == name)
            || self.globs.as_ref().is_some_and(|g| g.is_match(name))
            || self.regexes.as_ref().is_some_and(|r| r.is_match(name))
    }
}

/// Error texts of the regex crate span several lines (a caret diagram);
/// config errors are one line.
pub fn one_line(text: &str) -> String {
    text.split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(patterns: &[&str]) -> Patterns {
        Patterns::compile(patterns.iter().copied()).unwrap()
    }

    #[test]
    fn exact_names_match_only_themselves() {
        let pats = p(&["get_customer"]);
        assert!(pats.is_match("get_customer"));
        assert!(!pats.is_match("get_customers"));
        assert!(!pats.is_match("Get_customer"));
        assert!(!pats.is_match(""));
    }

    #[test]
    fn globs_match_and_star_stops_at_slashes() {
        let pats = p(&["list_*", "demo://customers/*", "files://**", "get_?d"]);
        assert!(pats.is_match("list_customers"));
        assert!(pats.is_match("list_"));
        assert!(!pats.is_match("xlist_customers"));
        assert!(pats.is_match("get_id"));
        assert!(!pats.is_match("get_ids"));
        assert!(pats.is_match("demo://customers/7"));
        assert!(!pats.is_match("demo://customers/7/orders"));
        assert!(pats.is_match("files://srv/data/a.txt"));
    }

    #[test]
    fn regexes_are_anchored() {
        let pats = p(&["re:drop", "re:search_[a-z]+|find"]);
        assert!(pats.is_match("drop"));
        assert!(!pats.is_match("x_drop_y"));
        assert!(!pats.is_match("drop_table"));
        // The alternation is grouped before anchoring.
        assert!(pats.is_match("search_customers"));
        assert!(pats.is_match("find"));
        assert!(!pats.is_match("search_customers2"));
        assert!(!pats.is_match("findx"));
    }

    #[test]
    fn bad_patterns_name_the_pattern() {
        for (bad, expect) in [
            ("re:(", "not a valid regex"),
            ("re:", "regex is empty"),
            ("list_[", "not a valid glob"),
            ("", "empty pattern"),
        ] {
            let e = Patterns::compile(["ok", bad]).unwrap_err();
            assert_eq!(e.index, 1, "{bad:?}");
            assert!(e.message.contains(expect), "{bad:?}: {}", e.message);
            assert!(!e.message.contains('\n'), "{}", e.message);
        }
    }
}
