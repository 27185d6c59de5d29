//! Accounts on the wire: register, login, the user.

use marquee_domain::{DisplayName, Email, FieldErrors, Password, Role, User};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Deserialize, ToSchema)]
pub struct RegisterRequest {
    pub email: String,
    /// At least 8 characters.
    pub password: String,
    pub name: String,
    /// `fan` (default) or `organizer`. Admins are made only from the command line.
    pub role: Option<String>,
}

/// A registration that passed validation.
pub struct Registration {
    pub email: Email,
    pub password: Password,
    pub name: DisplayName,
    pub role: Role,
}

impl TryFrom<RegisterRequest> for Registration {
    type Error = FieldErrors;

    fn try_from(request: RegisterRequest) -> Result<Self, Self::Error> {
        let mut errors = FieldErrors::new();
        let email = errors.check("email", Email::parse(&request.email));
        let password = errors.check("password", Password::parse(request.password));
        let name = errors.check("name", DisplayName::parse(&request.name));
        let role = errors.check(
            "role",
            Role::parse_self_service(request.role.as_deref().unwrap_or("fan")),
        );
        match (email, password, name, role) {
            (Some(email), Some(password), Some(name), Some(role)) => Ok(Registration {
                email,
                password,
                name,
                role,
            }),
            _ => Err(errors),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserBody {
    pub id: String,
    pub email: String,
    pub name: String,
    /// `fan`, `organizer` or `admin`.
    pub role: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

impl From<&User> for UserBody {
    fn from(user: &User) -> Self {
        UserBody {
            id: user.id.to_string(),
            email: user.email.as_str().to_string(),
            name: user.name.as_str().to_string(),
            role: user.role.as_str().to_string(),
            created_at: user.created_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SessionBody {
    pub user: UserBody,
    /// A JWT to send as `Authorization: Bearer <token>`.
    pub token: String,
    pub token_type: &'static str,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}
