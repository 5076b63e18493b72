//! How a session certificate names who and what it is for.
//!
//! The broker writes three URI subject alternative names into every session
//! certificate; the tunnel reads them back. Keeping both directions here
//! means the writer and the reader cannot drift apart.

use crate::names::{ServerName, SessionId, UserName};

pub const SESSION_URI_PREFIX: &str = "urn:mcpgate:session:";
pub const USER_URI_PREFIX: &str = "urn:mcpgate:user:";
pub const SERVER_URI_PREFIX: &str = "urn:mcpgate:server:";

/// The identity a session certificate carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertIdentity {
    pub session: SessionId,
    pub user: UserName,
    pub server: ServerName,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("certificate names no {0}")]
    Missing(&'static str),
    #[error("certificate names more than one {0}")]
    Duplicate(&'static str),
    #[error("certificate names an invalid {0}")]
    Invalid(&'static str),
}

impl CertIdentity {
    /// The URI SANs to put in the certificate, in a fixed order.
    pub fn uris(&self) -> [String; 3] {
        [
            format!("{SESSION_URI_PREFIX}{}", self.session),
            format!("{USER_URI_PREFIX}{}", self.user),
            format!("{SERVER_URI_PREFIX}{}", self.server),
        ]
    }

    /// Reads the identity back from a certificate's URI SANs. Exactly one of
    /// each kind must be present; anything else is refused.
    pub fn from_uris<'a>(uris: impl IntoIterator<Item = &'a str>) -> Result<Self, IdentityError> {
        let mut session = None;
        let mut user = None;
        let mut server = None;
        for uri in uris {
            if let Some(v) = uri.strip_prefix(SESSION_URI_PREFIX) {
                set_once(&mut session, v, "session")?;
            } else if let Some(v) = uri.strip_prefix(USER_URI_PREFIX) {
                set_once(&mut user, v, "user")?;
            } else if let Some(v) = uri.strip_prefix(SERVER_URI_PREFIX) {
                set_once(&mut server, v, "server")?;
            }
        }
        Ok(Self {
            session: parse(session, "session")?,
            user: parse(user, "user")?,
            server: parse(server, "server")?,
        })
    }
}

fn set_once<'a>(
    slot: &mut Option<&'a str>,
    value: &'a str,
    what: &'static str,
) -> Result<(), IdentityError> {
    if slot.replace(value).is_some() {
        return Err(IdentityError::Duplicate(what));
    }
    Ok(())
}

fn parse<T: std::str::FromStr>(v: Option<&str>, what: &'static str) -> Result<T, IdentityError> {
    v.ok_or(IdentityError::Missing(what))?
        .parse()
        .map_err(|_| IdentityError::Invalid(what))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CertIdentity {
        CertIdentity {
            session: "0b6c9a58-5f7e-4c53-9d0e-3f0c1b2a4d5e".parse().unwrap(),
            user: "alice".parse().unwrap(),
            server: "demo".parse().unwrap(),
        }
    }

    #[test]
    fn uris_round_trip() {
        let id = sample();
        let uris = id.uris();
        let back = CertIdentity::from_uris(uris.iter().map(String::as_str)).unwrap();
        assert_eq!(back, id);
    }

    #[test]
    fn missing_or_duplicate_parts_are_refused() {
        let uris = sample().uris();
        assert_eq!(
            CertIdentity::from_uris(uris[1..].iter().map(String::as_str)),
            Err(IdentityError::Missing("session"))
        );
        let mut twice: Vec<&str> = uris.iter().map(String::as_str).collect();
        twice.push("urn:mcpgate:user:mallory");
        assert_eq!(
            CertIdentity::from_uris(twice),
            Err(IdentityError::Duplicate("user"))
        );
        assert_eq!(
            CertIdentity::from_uris([
                "urn:mcpgate:session:x y",
                "urn:mcpgate:user:a",
                "urn:mcpgate:server:b"
            ]),
            Err(IdentityError::Invalid("session"))
        );
    }
}
