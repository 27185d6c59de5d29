//! Wire types: the JSON shapes of the contract, with their OpenAPI schemas, and their parsing into
//! domain types. Domain types never double as wire types, so the contract can stay stable while
//! the domain evolves.

pub mod accounts;
pub mod events;
pub mod orders;
pub mod venues;

use serde::Serialize;
use utoipa::ToSchema;

/// A page of a list; `next_cursor` is null on the last page.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// The contract's error body.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable snake_case code clients branch on, e.g. `invalid_input`, `not_found`.
    pub code: String,
    pub message: String,
    /// The id of the request, as in the `x-request-id` header.
    pub request_id: Option<String>,
    /// For `invalid_input`: each bad field's path and what is wrong with it.
    #[schema(value_type = Option<Object>)]
    pub fields: Option<std::collections::BTreeMap<String, String>>,
}
