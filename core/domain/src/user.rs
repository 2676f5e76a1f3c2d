//! Console users and service credentials (API keys) as records. Secrets never live in these
//! types: password and key hashes stay in the store, plaintext only passes through.

use crate::access::{Role, parse_grant};
use crate::contact::Email;
use crate::error::{Violations, required_text};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 12;

/// A console user as stored and returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct User {
    /// Login e-mail, unique (case-insensitive).
    pub email: String,
    /// Name shown in the console.
    pub display_name: String,
    /// Role.
    pub role: Role,
    /// Whether the user may sign in; a disabled user is locked out at once.
    pub active: bool,
}

/// A user as an admin sends it.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserInput {
    /// Required.
    #[serde(default)]
    pub email: Option<String>,
    /// Required.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Required.
    #[serde(default)]
    pub role: Option<Role>,
    /// True when absent.
    #[serde(default)]
    pub active: Option<bool>,
}

impl UserInput {
    /// Validates the input.
    pub fn parse(self) -> Result<User, Violations> {
        let mut errors = Violations::default();
        let email = errors.check("/email", Email::parse(self.email.as_deref().unwrap_or("")));
        let display_name = errors.check("/display_name", required_text(self.display_name.as_deref().unwrap_or(""), 200));
        if self.role.is_none() {
            errors.push("/role", "is required: admin, manager or agent");
        }
        errors.finish(|| User {
            email: email.map(|e| e.as_str().to_owned()).unwrap_or_default(),
            display_name: display_name.unwrap_or_default(),
            role: self.role.unwrap_or(Role::Agent),
            active: self.active.unwrap_or(true),
        })
    }
}

impl User {
    /// The key that makes e-mails unique: lower case.
    pub fn email_key(&self) -> String {
        self.email.trim().to_lowercase()
    }
}

/// Checks a new password: at least [`MIN_PASSWORD_CHARS`] characters, not all the same.
pub fn check_password(password: &str) -> Result<(), String> {
    let chars: Vec<char> = password.chars().collect();
    if chars.len() < MIN_PASSWORD_CHARS {
        return Err(format!("must have at least {MIN_PASSWORD_CHARS} characters"));
    }
    if chars.iter().all(|c| *c == chars[0]) {
        return Err("must not repeat one character".into());
    }
    Ok(())
}

/// A service credential as stored and returned (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApiKey {
    /// What uses it ("email connector on mail01").
    pub name: String,
    /// The key's first characters, to recognise it.
    pub prefix: String,
    /// Grants such as `customers:view`, `orders:edit`.
    pub scopes: Vec<String>,
    /// The admin who created it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_by: Option<Uuid>,
    /// When it was last used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<DateTime<Utc>>,
}

/// A service credential as an admin asks for it.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyInput {
    /// Required.
    #[serde(default)]
    pub name: Option<String>,
    /// At least one grant, `area:action`.
    #[serde(default)]
    pub scopes: Vec<String>,
}

impl ApiKeyInput {
    /// Validates the input; the prefix and creator are filled in by the caller.
    pub fn parse(self) -> Result<ApiKey, Violations> {
        let mut errors = Violations::default();
        let name = errors.check("/name", required_text(self.name.as_deref().unwrap_or(""), 200));
        if self.scopes.is_empty() {
            errors.push("/scopes", "at least one scope is required, e.g. customers:view");
        }
        let mut scopes = Vec::new();
        for (i, scope) in self.scopes.iter().enumerate() {
            if errors.check(format!("/scopes/{i}"), parse_grant(scope.trim())).is_some() && !scopes.contains(&scope.trim().to_owned()) {
                scopes.push(scope.trim().to_owned());
            }
        }
        errors.finish(|| ApiKey { name: name.unwrap_or_default(), prefix: String::new(), scopes, created_by: None, last_used_at: None })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn users_validate() {
        let user = serde_json::from_value::<UserInput>(json!({"email": "Maria@Example.GR", "display_name": "Μαρία", "role": "agent"}))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(user.email_key(), "maria@example.gr");
        assert!(user.active);
        let errors = UserInput::default().parse().unwrap_err();
        let pointers: Vec<_> = errors.0.iter().map(|e| e.pointer.as_str()).collect();
        assert_eq!(pointers, ["/email", "/display_name", "/role"]);
    }

    #[test]
    fn passwords() {
        assert!(check_password("short").is_err());
        assert!(check_password("aaaaaaaaaaaaaaa").is_err());
        assert!(check_password("correct horse battery").is_ok());
    }

    #[test]
    fn api_key_scopes() {
        let key = serde_json::from_value::<ApiKeyInput>(
            json!({"name": "email connector", "scopes": ["customers:view", "customers:view", "orders:edit"]}),
        )
        .unwrap()
        .parse()
        .unwrap();
        assert_eq!(key.scopes, ["customers:view", "orders:edit"]);
        let errors = serde_json::from_value::<ApiKeyInput>(json!({"name": "x", "scopes": ["customers:fly"]})).unwrap().parse().unwrap_err();
        assert_eq!(errors.0[0].pointer, "/scopes/0");
    }
}
