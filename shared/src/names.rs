//! Validated names. Parse, don't validate: a `ServerName` that exists is a
//! valid server name, so nothing downstream checks again.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {value:?}: {rule}")]
pub struct NameError {
    pub kind: &'static str,
    pub value: String,
    pub rule: &'static str,
}

fn check(
    kind: &'static str,
    value: &str,
    max: usize,
    extra: &[char],
    rule: &'static str,
) -> Result<(), NameError> {
    let err = || NameError {
        kind,
        value: value.chars().take(80).collect(),
        rule,
    };
    let mut chars = value.chars();
    let first = chars.next().ok_or_else(err)?;
    if value.len() > max || !first.is_ascii_alphanumeric() {
        return Err(err());
    }
    if chars.all(|c| c.is_ascii_alphanumeric() || extra.contains(&c)) {
        Ok(())
    } else {
        Err(err())
    }
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $max:literal, $extra:expr, $rule:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                check($kind, s, $max, $extra, $rule)?;
                Ok(Self(s.to_owned()))
            }
        }

        impl TryFrom<String> for $name {
            type Error = NameError;
            fn try_from(s: String) -> Result<Self, NameError> {
                check($kind, &s, $max, $extra, $rule)?;
                Ok(Self(s))
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::try_from(s).map_err(serde::de::Error::custom)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

name_type!(
    /// A local or IdP user name as the broker knows it.
    UserName,
    "user name",
    128,
    &['.', '_', '-', '@', '+'],
    "1-128 characters: letters, digits and . _ - @ +, starting with a letter or digit"
);
name_type!(
    /// The name of an upstream MCP server in the broker config.
    ServerName,
    "server name",
    64,
    &['_', '-'],
    "1-64 characters: letters, digits, _ and -, starting with a letter or digit"
);
name_type!(
    /// The name of a role in the broker config.
    RoleName,
    "role name",
    64,
    &['_', '-', '.'],
    "1-64 characters: letters, digits, _ - and ., starting with a letter or digit"
);
name_type!(
    /// A session id: the broker makes them (UUIDs); here they are only checked.
    SessionId,
    "session id",
    64,
    &['-'],
    "1-64 characters: letters, digits and -"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_accept_the_documented_alphabet() {
        assert!("alice@example.com".parse::<UserName>().is_ok());
        assert!("demo".parse::<ServerName>().is_ok());
        assert!("db_prod-2".parse::<ServerName>().is_ok());
        assert!("ops.readonly".parse::<RoleName>().is_ok());
    }

    #[test]
    fn names_refuse_separators_and_empty() {
        for bad in ["", "-x", "a b", "a/b", "a:b", "é", "a\nb", "../x"] {
            assert!(bad.parse::<ServerName>().is_err(), "{bad:?}");
            assert!(bad.parse::<UserName>().is_err(), "{bad:?}");
        }
        assert!("x".repeat(65).parse::<ServerName>().is_err());
        let err = "a b".parse::<ServerName>().unwrap_err().to_string();
        assert!(err.contains("server name"), "{err}");
    }

    #[test]
    fn deserialising_checks_too() {
        assert!(serde_json::from_str::<ServerName>("\"a b\"").is_err());
        let n: ServerName = serde_json::from_str("\"demo\"").unwrap();
        assert_eq!(n.as_str(), "demo");
    }
}
