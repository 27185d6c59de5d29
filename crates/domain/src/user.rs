//! Accounts: who a user is and what role they act in.

use crate::{bounded_text, FieldResult, UserId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

/// What a user may do. Admins are only ever made from the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Fan,
    Organizer,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Fan => "fan",
            Role::Organizer => "organizer",
            Role::Admin => "admin",
        }
    }

    pub fn parse(raw: &str) -> FieldResult<Role> {
        match raw {
            "fan" => Ok(Role::Fan),
            "organizer" => Ok(Role::Organizer),
            "admin" => Ok(Role::Admin),
            _ => Err("must be one of fan, organizer, admin".to_string()),
        }
    }

    /// The roles a person may pick for themselves when signing up.
    pub fn parse_self_service(raw: &str) -> FieldResult<Role> {
        match Role::parse(raw)? {
            Role::Admin => Err("must be fan or organizer".to_string()),
            role => Ok(role),
        }
    }

    /// Organizers and admins may create venues and events.
    pub fn can_organize(self) -> bool {
        matches!(self, Role::Organizer | Role::Admin)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An email address, trimmed and lowercased so that uniqueness ignores case.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> FieldResult<Email> {
        let email = raw.trim().to_lowercase();
        if email.len() > 254 {
            return Err("must be at most 254 characters".to_string());
        }
        let Some((local, domain)) = email.split_once('@') else {
            return Err("must be an email address".to_string());
        };
        let domain_ok = !domain.is_empty()
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains("..")
            && domain
                .chars()
                .all(|c| c.is_alphanumeric() || c == '.' || c == '-');
        let local_ok = !local.is_empty()
            && local.len() <= 64
            && !local
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '@');
        if !domain_ok || !local_ok {
            return Err("must be an email address".to_string());
        }
        Ok(Email(email))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A plain-text password that meets the policy. It is never stored or logged: `Debug` hides it.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    pub const MIN_CHARS: usize = 8;
    /// Argon2 accepts longer inputs, but hashing megabytes on request is a denial of service.
    pub const MAX_BYTES: usize = 1024;

    pub fn parse(raw: String) -> FieldResult<Password> {
        if raw.chars().count() < Self::MIN_CHARS {
            return Err(format!("must be at least {} characters", Self::MIN_CHARS));
        }
        if raw.len() > Self::MAX_BYTES {
            return Err(format!("must be at most {} bytes", Self::MAX_BYTES));
        }
        Ok(Password(raw))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

/// The name a user shows to others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DisplayName(String);

impl DisplayName {
    pub fn parse(raw: &str) -> FieldResult<DisplayName> {
        bounded_text(raw, 1, 100).map(DisplayName)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A user account as the rest of the system sees it (the password hash lives only in the store).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: UserId,
    pub email: Email,
    pub name: DisplayName,
    pub role: Role,
    pub created_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(
            Email::parse("  Ada@Example.COM ").map(|e| e.as_str().to_string()),
            Ok("ada@example.com".to_string())
        );
        for bad in [
            "",
            "ada",
            "@example.com",
            "ada@",
            "ada@.com",
            "a b@x.io",
            "ada@x..io",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn passwords_need_eight_characters_and_hide_in_debug() {
        assert!(Password::parse("short".into()).is_err());
        let password = Password::parse("correct horse".into()).expect("valid");
        assert_eq!(format!("{password:?}"), "Password(***)");
        assert!(Password::parse("x".repeat(2000)).is_err());
    }

    #[test]
    fn nobody_signs_up_as_admin() {
        assert_eq!(Role::parse_self_service("organizer"), Ok(Role::Organizer));
        assert!(Role::parse_self_service("admin").is_err());
        assert!(Role::parse("root").is_err());
    }
}
