//! Register, log in, and who am I.

use crate::extract::{CurrentUser, JsonBody};
use crate::wire::accounts::{LoginRequest, RegisterRequest, Registration, SessionBody, UserBody};
use crate::wire::ErrorBody;
use crate::{ApiError, AppState};
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::Json;
use marquee_auth::{hash_password, verify_password};
use marquee_domain::{Email, User, UserId};
use std::net::SocketAddr;

fn session(state: &AppState, user: &User) -> Result<SessionBody, ApiError> {
    let token = state.tokens.issue(&user.id, user.role)?;
    let lifetime = chrono::Duration::from_std(state.tokens.lifetime())
        .unwrap_or_else(|_| chrono::Duration::days(1));
    Ok(SessionBody {
        user: UserBody::from(user),
        token,
        token_type: "Bearer",
        expires_at: chrono::Utc::now() + lifetime,
    })
}

/// Create an account and sign in.
#[utoipa::path(
    post, path = "/api/v1/auth/register", tag = "accounts",
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "Account created", body = SessionBody),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 409, description = "`email_taken`", body = ErrorBody),
        (status = 429, description = "`rate_limited`: too many attempts from this address or for this e-mail; `Retry-After` says when to try again", body = ErrorBody),
    )
)]
pub async fn register(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    JsonBody(request): JsonBody<RegisterRequest>,
) -> Result<(StatusCode, Json<SessionBody>), ApiError> {
    // Before any hashing: the throttle is what keeps a flood from costing argon2 each.
    state
        .rate_limits
        .check_auth_attempt(peer.ip(), &request.email)
        .await?;
    let registration = Registration::try_from(request)?;
    let password_hash = hash_password(registration.password).await?;
    let user = User {
        id: UserId::generate(),
        email: registration.email,
        name: registration.name,
        role: registration.role,
        created_at: marquee_domain::timestamp_now(),
    };
    state.store.create_user(&user, &password_hash).await?;
    tracing::info!(user_id = %user.id, role = %user.role, "user registered");
    Ok((StatusCode::CREATED, Json(session(&state, &user)?)))
}

/// Exchange email and password for a token.
#[utoipa::path(
    post, path = "/api/v1/auth/login", tag = "accounts",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Signed in", body = SessionBody),
        (status = 401, description = "`invalid_credentials`", body = ErrorBody),
        (status = 429, description = "`rate_limited`: too many attempts from this address or for this account (known or not: the answer is the same); `Retry-After` says when to try again", body = ErrorBody),
    )
)]
pub async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    JsonBody(request): JsonBody<LoginRequest>,
) -> Result<Json<SessionBody>, ApiError> {
    state
        .rate_limits
        .check_auth_attempt(peer.ip(), &request.email)
        .await?;
    let stored = match Email::parse(&request.email) {
        Ok(email) => state.store.credentials_by_email(&email).await?,
        Err(_) => None,
    };
    let (user, hash) = match stored {
        Some(credentials) => (Some(credentials.user), Some(credentials.password_hash)),
        None => (None, None),
    };
    // Verify even for unknown emails, so timing does not reveal which accounts exist.
    let verified = verify_password(hash, request.password).await?;
    match user {
        Some(user) if verified => Ok(Json(session(&state, &user)?)),
        _ => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
            "the email or password is wrong",
        )),
    }
}

/// The signed-in user.
#[utoipa::path(
    get, path = "/api/v1/me", tag = "accounts",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The user", body = UserBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
    )
)]
pub async fn me(
    State(state): State<AppState>,
    caller: CurrentUser,
) -> Result<Json<UserBody>, ApiError> {
    // A valid token for an account that no longer exists is treated as a bad token.
    let user = state.store.user(&caller.id).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "the token's account does not exist",
        )
    })?;
    Ok(Json(UserBody::from(&user)))
}
