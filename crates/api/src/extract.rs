//! Extractors: authentication, role checks, JSON bodies and pagination happen here, before a
//! handler runs, so handlers stay thin and no check is pasted into each of them.

use crate::{ApiError, AppState};
use axum::extract::{FromRef, FromRequest, FromRequestParts, Query, Request};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::http::StatusCode;
use base64::Engine;
use bytes::Bytes;
use marquee_domain::{FieldErrors, Role, UserId};
use serde::de::DeserializeOwned;
use serde::Deserialize;

/// The signed-in caller, from a verified bearer token.
#[derive(Debug, Clone)]
pub struct CurrentUser {
    pub id: UserId,
    pub role: Role,
}

impl CurrentUser {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// Admins act on everything; others only on what they own.
    pub fn may_manage(&self, owner: &UserId) -> bool {
        self.is_admin() || &self.id == owner
    }
}

impl<S> FromRequestParts<S> for CurrentUser
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        MaybeUser::from_request_parts(parts, state)
            .await?
            .0
            .ok_or_else(ApiError::unauthorized)
    }
}

/// The caller if a token was sent. A token that was sent but does not verify is still a 401:
/// silently treating a bad token as anonymous would hide the client's bug.
#[derive(Debug, Clone)]
pub struct MaybeUser(pub Option<CurrentUser>);

impl<S> FromRequestParts<S> for MaybeUser
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Some(header) = parts.headers.get(AUTHORIZATION) else {
            return Ok(MaybeUser(None));
        };
        let token = header
            .to_str()
            .ok()
            .and_then(|value| {
                let (scheme, token) = value.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "invalid_token",
                    "the Authorization header must be `Bearer <token>`",
                )
            })?;
        let state = AppState::from_ref(state);
        let claims = state.tokens.verify_reloading(token).await?;
        Ok(MaybeUser(Some(CurrentUser {
            id: claims.user_id(),
            role: claims.role,
        })))
    }
}

/// A signed-in organizer or admin: the roles that may create venues and events.
#[derive(Debug, Clone)]
pub struct Organizer(pub CurrentUser);

impl<S> FromRequestParts<S> for Organizer
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let user = CurrentUser::from_request_parts(parts, state).await?;
        if user.role.can_organize() {
            Ok(Organizer(user))
        } else {
            Err(ApiError::forbidden(
                "only organizers and admins may do this",
            ))
        }
    }
}

/// A signed-in admin.
#[derive(Debug, Clone)]
pub struct Admin(pub CurrentUser);

impl<S> FromRequestParts<S> for Admin
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let user = CurrentUser::from_request_parts(parts, state).await?;
        if user.is_admin() {
            Ok(Admin(user))
        } else {
            Err(ApiError::forbidden("only admins may do this"))
        }
    }
}

/// A JSON body, parsed with the path of any bad field reported back: syntax errors are 400
/// `malformed_json`; wrong types and missing fields are 400 `invalid_input` with `fields`;
/// a body over the limit is 413; a body that is not declared as JSON is 415.
#[derive(Debug, Clone)]
pub struct JsonBody<T>(pub T);

impl<T, S> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let declared_json = request
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(';').next())
            .map(|mime| {
                let mime = mime.trim().to_ascii_lowercase();
                mime == "application/json" || mime.ends_with("+json")
            })
            .unwrap_or(false);
        if !declared_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with Content-Type: application/json",
            ));
        }
        let limit = AppState::from_ref(state).settings.body_limit_bytes;
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::payload_too_large(limit)
                } else {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "unreadable_body",
                        "the request body could not be read",
                    )
                }
            })?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Parses JSON, turning serde's errors into the contract's 400s. Public so fuzz targets can
/// drive exactly what requests drive.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        classify_json_error(&path, error.into_inner())
    })?;
    deserializer
        .end()
        .map_err(|error| classify_json_error(".", error))?;
    Ok(value)
}

fn classify_json_error(path: &str, error: serde_json::Error) -> ApiError {
    match error.classify() {
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("the body is not valid JSON: {error}"),
        ),
        serde_json::error::Category::Data | serde_json::error::Category::Io => {
            let (field, message) = describe_data_error(path, &error.to_string());
            ApiError::invalid_input(FieldErrors::single(field, message))
        }
    }
}

/// serde reports a missing field at the path of its parent; name the field itself instead.
fn describe_data_error(path: &str, message: &str) -> (String, String) {
    let message = message
        .split(" at line ")
        .next()
        .unwrap_or(message)
        .to_string();
    let parent = if path == "." { "" } else { path };
    if let Some(rest) = message.strip_prefix("missing field `") {
        let field = rest.trim_end_matches('`');
        let full = if parent.is_empty() {
            field.to_string()
        } else {
            format!("{parent}.{field}")
        };
        return (full, "is required".to_string());
    }
    let field = if parent.is_empty() { "body" } else { parent };
    (field.to_string(), message)
}

/// `limit` and `cursor` of a list request, checked: `limit` 1..=100 (default 20).
#[derive(Debug, Clone)]
pub struct PageRequest {
    pub limit: u32,
    pub cursor: Option<String>,
}

impl PageRequest {
    pub const DEFAULT_LIMIT: u32 = 20;
    pub const MAX_LIMIT: u32 = 100;

    /// Cursors are the last id seen, base64url-encoded so clients treat them as opaque.
    pub fn encode_cursor(last_id: &str) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(last_id)
    }

    fn decode_cursor(raw: &str) -> Result<String, ApiError> {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(raw)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .filter(|id| !id.is_empty() && id.len() <= 64)
            .ok_or_else(|| ApiError::invalid_field("cursor", "is not a cursor this API issued"))
    }

    /// The cursor to send back: present only when the page was full.
    pub fn next_cursor(&self, page_len: usize, last_id: Option<&str>) -> Option<String> {
        (page_len == self.limit as usize)
            .then_some(last_id)
            .flatten()
            .map(Self::encode_cursor)
    }
}

#[derive(Deserialize)]
struct RawPage {
    limit: Option<String>,
    cursor: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for PageRequest {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Query(raw) = Query::<RawPage>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| ApiError::invalid_field("query", rejection.body_text()))?;
        let limit = match raw.limit.as_deref() {
            None | Some("") => Self::DEFAULT_LIMIT,
            Some(text) => text
                .parse::<u32>()
                .ok()
                .filter(|limit| (1..=Self::MAX_LIMIT).contains(limit))
                .ok_or_else(|| {
                    ApiError::invalid_field("limit", format!("must be 1..={}", Self::MAX_LIMIT))
                })?,
        };
        let cursor = match raw.cursor.as_deref() {
            None | Some("") => None,
            Some(cursor) => Some(Self::decode_cursor(cursor)?),
        };
        Ok(PageRequest { limit, cursor })
    }
}

/// Query parameters with the contract's 400 on a bad one.
#[derive(Debug, Clone)]
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| QueryParams(value))
            .map_err(|rejection| ApiError::invalid_field("query", rejection.body_text()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Sample {
        name: String,
        nested: Nested,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Nested {
        count: u32,
    }

    fn fields_of(error: &ApiError) -> Vec<String> {
        error
            .details_for_tests()
            .get("fields")
            .and_then(|fields| fields.as_object())
            .map(|fields| fields.keys().cloned().collect())
            .unwrap_or_default()
    }

    #[test]
    fn syntax_errors_are_malformed_json() {
        let error = parse_json::<Sample>(b"{\"name\": ").expect_err("eof");
        assert_eq!(error.code(), "malformed_json");
        let error = parse_json::<Sample>(br#"{"name": "x", "nested": {"count": 1}} trailing"#)
            .expect_err("trailing");
        assert_eq!(error.code(), "malformed_json");
    }

    #[test]
    fn data_errors_name_the_field() {
        let error =
            parse_json::<Sample>(br#"{"name": 5, "nested": {"count": 1}}"#).expect_err("type");
        assert_eq!(error.code(), "invalid_input");
        assert_eq!(fields_of(&error), vec!["name"]);
        let error = parse_json::<Sample>(br#"{"name": "x", "nested": {}}"#).expect_err("missing");
        assert_eq!(fields_of(&error), vec!["nested.count"]);
        let error = parse_json::<Sample>(br#"{"nested": {"count": 1}}"#).expect_err("missing");
        assert_eq!(fields_of(&error), vec!["name"]);
        let error =
            parse_json::<Sample>(br#"{"name": "x", "nested": {"count": -1}}"#).expect_err("range");
        assert_eq!(fields_of(&error), vec!["nested.count"]);
    }
}
