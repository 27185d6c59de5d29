//! Discovery: search, suggestions and similar events, answered from this node's index replica.
//!
//! Query parameters arrive as strings and are parsed here one by one, so a bad one is named in
//! the 400 (`lat: must be a latitude between -90 and 90`) rather than reported as a serde error.

use crate::extract::QueryParams;
use crate::wire::ErrorBody;
use crate::{ApiError, AppState};
use axum::extract::{Path, State};
use axum::Json;
use chrono::{DateTime, Utc};
use marquee_domain::{Category, Coordinates};
use marquee_search::{Area, Hit, Point, SearchError, SearchRequest, SearchResults, Sort};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Instant;
use utoipa::{IntoParams, ToSchema};

/// Half the Earth's circumference: a larger radius means nothing more.
const MAX_RADIUS_KM: f64 = 20_000.0;
const MAX_SUGGESTIONS: usize = 20;
const MAX_SIMILAR: usize = 50;

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchParams {
    /// Free text, typo tolerant; `"quoted words"` match as a phrase; the last word also matches
    /// as a prefix unless followed by a space. At most 500 characters.
    q: Option<String>,
    /// With `lon`: the point distances are measured from.
    lat: Option<String>,
    lon: Option<String>,
    /// With `lat`/`lon`: only events within this many km (0 < r ≤ 20000).
    radius_km: Option<String>,
    /// `min_lon,min_lat,max_lon,max_lat`: only events inside the box (min_lon > max_lon crosses
    /// the antimeridian). Not with `radius_km`.
    bbox: Option<String>,
    category: Option<String>,
    /// Start time range, RFC 3339.
    from: Option<String>,
    to: Option<String>,
    min_price_cents: Option<String>,
    max_price_cents: Option<String>,
    /// `relevance` (default with `q`), `date` (default without), `distance` (needs `lat`/`lon`).
    sort: Option<String>,
    /// 1..=100, default 20.
    limit: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HitVenue {
    id: String,
    name: String,
    city: String,
    lat: f64,
    lon: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SearchHit {
    id: String,
    title: String,
    venue: HitVenue,
    starts_at: DateTime<Utc>,
    category: String,
    min_price_cents: i64,
    currency: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    distance_km: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    score: Option<f32>,
}

impl From<Hit> for SearchHit {
    fn from(hit: Hit) -> Self {
        let d = hit.document;
        SearchHit {
            id: d.id,
            title: d.title,
            venue: HitVenue {
                id: d.venue_id,
                name: d.venue_name,
                city: d.city,
                lat: d.lat,
                lon: d.lon,
            },
            starts_at: d.starts_at,
            category: d.category,
            min_price_cents: d.min_price_cents,
            currency: d.currency,
            // Metres are as precise as a fan needs.
            distance_km: hit.distance_km.map(|km| (km * 1000.0).round() / 1000.0),
            score: hit.score,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SearchBody {
    total: u64,
    hits: Vec<SearchHit>,
    /// `{"category": {"concert": 12, ...}}`: counts over every match, ignoring the category
    /// filter itself.
    facets: BTreeMap<String, BTreeMap<String, u64>>,
    next_cursor: Option<String>,
    took_ms: f64,
}

/// Search published, not-yet-ended events by words, place, time, price and category.
#[utoipa::path(
    get, path = "/api/v1/search", tag = "search",
    params(SearchParams),
    responses(
        (status = 200, description = "A page of hits", body = SearchBody),
        (status = 400, description = "A parameter is invalid; the error names it", body = ErrorBody),
    )
)]
pub async fn search(
    State(state): State<AppState>,
    QueryParams(params): QueryParams<SearchParams>,
) -> Result<Json<SearchBody>, ApiError> {
    let started = Instant::now();
    let request = parse_search(params, marquee_domain::timestamp_now())?;
    let index = state.search.clone();
    let results = run_blocking(move || index.search(&request)).await?;
    let SearchResults {
        total,
        hits,
        facets,
        next_cursor,
    } = results;
    Ok(Json(SearchBody {
        total,
        hits: hits.into_iter().map(SearchHit::from).collect(),
        facets: BTreeMap::from([("category".to_string(), facets)]),
        next_cursor,
        took_ms: started.elapsed().as_secs_f64() * 1000.0,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SuggestParams {
    /// What has been typed so far (1..=100 characters).
    q: Option<String>,
    /// 1..=20, default 8.
    limit: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SuggestBody {
    suggestions: Vec<String>,
}

/// Titles of upcoming events for search-as-you-type.
#[utoipa::path(
    get, path = "/api/v1/search/suggest", tag = "search",
    params(SuggestParams),
    responses(
        (status = 200, description = "Suggested titles, best first", body = SuggestBody),
        (status = 400, description = "Missing or invalid `q` or `limit`", body = ErrorBody),
    )
)]
pub async fn suggest(
    State(state): State<AppState>,
    QueryParams(params): QueryParams<SuggestParams>,
) -> Result<Json<SuggestBody>, ApiError> {
    let q = params
        .q
        .filter(|q| !q.trim().is_empty())
        .ok_or_else(|| ApiError::invalid_field("q", "is required"))?;
    if q.chars().count() > 100 {
        return Err(ApiError::invalid_field(
            "q",
            "must be at most 100 characters",
        ));
    }
    let limit = parse_limit(params.limit.as_deref(), 8, MAX_SUGGESTIONS)?;
    let index = state.search.clone();
    let now = marquee_domain::timestamp_now();
    let suggestions = match run_blocking(move || index.suggest(&q, limit, now)).await {
        // Nothing searchable typed yet (punctuation only): nothing to suggest.
        Err(error) if error.code() == "invalid_input" => Vec::new(),
        other => other?,
    };
    Ok(Json(SuggestBody { suggestions }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SimilarParams {
    /// 1..=50, default 10.
    limit: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SimilarBody {
    /// Best first; `score` is the cosine similarity of the events' vectors.
    hits: Vec<SearchHit>,
}

/// Upcoming events like this one: shared words, tags, performers, category and region.
#[utoipa::path(
    get, path = "/api/v1/events/{id}/similar", tag = "search",
    params(("id" = String, Path, description = "Event id"), SimilarParams),
    responses(
        (status = 200, description = "Similar events", body = SimilarBody),
        (status = 404, description = "No published, upcoming event with this id", body = ErrorBody),
    )
)]
pub async fn similar(
    State(state): State<AppState>,
    Path(id): Path<String>,
    QueryParams(params): QueryParams<SimilarParams>,
) -> Result<Json<SimilarBody>, ApiError> {
    let limit = parse_limit(params.limit.as_deref(), 10, MAX_SIMILAR)?;
    let index = state.search.clone();
    let now = marquee_domain::timestamp_now();
    let hits = run_blocking(move || index.similar(&id, limit, now)).await?;
    Ok(Json(SimilarBody {
        hits: hits.into_iter().map(SearchHit::from).collect(),
    }))
}

/// Index reads touch memory-mapped files and may take milliseconds: off the async workers.
async fn run_blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, SearchError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| ApiError::internal(&error))?
        .map_err(ApiError::from)
}

fn parse_search(params: SearchParams, now: DateTime<Utc>) -> Result<SearchRequest, ApiError> {
    let mut request = SearchRequest::new(now);
    if let Some(q) = params.q {
        if q.trim().is_empty() {
            return Err(ApiError::invalid_field(
                "q",
                "must not be empty; leave it out to browse",
            ));
        }
        if q.chars().count() > SearchRequest::MAX_TEXT_CHARS {
            return Err(ApiError::invalid_field(
                "q",
                format!(
                    "must be at most {} characters",
                    SearchRequest::MAX_TEXT_CHARS
                ),
            ));
        }
        request.text = Some(q);
    }
    let lat = parse_number("lat", params.lat.as_deref())?
        .map(|lat| Coordinates::parse_lat(lat).map_err(|m| ApiError::invalid_field("lat", m)))
        .transpose()?;
    let lon = parse_number("lon", params.lon.as_deref())?
        .map(|lon| Coordinates::parse_lon(lon).map_err(|m| ApiError::invalid_field("lon", m)))
        .transpose()?;
    request.origin = match (lat, lon) {
        (Some(lat), Some(lon)) => Some(Point { lat, lon }),
        (None, None) => None,
        (Some(_), None) => return Err(ApiError::invalid_field("lon", "is required with lat")),
        (None, Some(_)) => return Err(ApiError::invalid_field("lat", "is required with lon")),
    };
    if let Some(km) = parse_number("radius_km", params.radius_km.as_deref())? {
        if !(km > 0.0 && km <= MAX_RADIUS_KM) {
            return Err(ApiError::invalid_field(
                "radius_km",
                format!("must be more than 0 and at most {MAX_RADIUS_KM}"),
            ));
        }
        let center = request
            .origin
            .ok_or_else(|| ApiError::invalid_field("radius_km", "needs lat and lon"))?;
        request.area = Some(Area::Radius { center, km });
    }
    if let Some(raw) = params.bbox.as_deref() {
        if request.area.is_some() {
            return Err(ApiError::invalid_field(
                "bbox",
                "cannot be combined with radius_km",
            ));
        }
        request.area = Some(parse_bbox(raw)?);
    }
    if let Some(raw) = params.category.as_deref() {
        let category = Category::parse(raw).map_err(|m| ApiError::invalid_field("category", m))?;
        request.category = Some(category.as_str().to_string());
    }
    request.starts_from = parse_time("from", params.from.as_deref())?;
    request.starts_to = parse_time("to", params.to.as_deref())?;
    if let (Some(from), Some(to)) = (request.starts_from, request.starts_to) {
        if from > to {
            return Err(ApiError::invalid_field("to", "must not be before from"));
        }
    }
    request.min_price_cents = parse_price("min_price_cents", params.min_price_cents.as_deref())?;
    request.max_price_cents = parse_price("max_price_cents", params.max_price_cents.as_deref())?;
    if let (Some(min), Some(max)) = (request.min_price_cents, request.max_price_cents) {
        if min > max {
            return Err(ApiError::invalid_field(
                "max_price_cents",
                "must not be less than min_price_cents",
            ));
        }
    }
    request.sort = match params.sort.as_deref() {
        None if request.text.is_some() => Sort::Relevance,
        None => Sort::Date,
        Some("relevance") if request.text.is_none() => {
            return Err(ApiError::invalid_field("sort", "relevance needs q"))
        }
        Some("relevance") => Sort::Relevance,
        Some("date") => Sort::Date,
        Some("distance") if request.origin.is_none() => {
            return Err(ApiError::invalid_field(
                "sort",
                "distance needs lat and lon",
            ))
        }
        Some("distance") => Sort::Distance,
        Some(_) => {
            return Err(ApiError::invalid_field(
                "sort",
                "must be one of relevance, date, distance",
            ))
        }
    };
    request.limit = parse_limit(params.limit.as_deref(), 20, SearchRequest::MAX_LIMIT)?;
    if let Some(cursor) = params.cursor {
        if cursor.is_empty() || cursor.len() > 1_000 {
            return Err(ApiError::invalid_field(
                "cursor",
                "is not a cursor this search returned",
            ));
        }
        request.cursor = Some(cursor);
    }
    Ok(request)
}

fn parse_number(field: &str, raw: Option<&str>) -> Result<Option<f64>, ApiError> {
    raw.map(|raw| {
        raw.trim()
            .parse::<f64>()
            .ok()
            .filter(|value| value.is_finite())
            .ok_or_else(|| ApiError::invalid_field(field, "must be a number"))
    })
    .transpose()
}

fn parse_price(field: &str, raw: Option<&str>) -> Result<Option<i64>, ApiError> {
    raw.map(|raw| {
        raw.trim()
            .parse::<i64>()
            .ok()
            .filter(|cents| *cents >= 0)
            .ok_or_else(|| {
                ApiError::invalid_field(field, "must be a whole number of cents, 0 or more")
            })
    })
    .transpose()
}

fn parse_time(field: &str, raw: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    raw.map(|raw| {
        DateTime::parse_from_rfc3339(raw.trim())
            .map(|time| time.with_timezone(&Utc))
            .map_err(|_| ApiError::invalid_field(field, "must be an RFC 3339 time"))
    })
    .transpose()
}

fn parse_limit(raw: Option<&str>, default: usize, max: usize) -> Result<usize, ApiError> {
    match raw {
        None => Ok(default),
        Some(raw) => raw
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|limit| (1..=max).contains(limit))
            .ok_or_else(|| ApiError::invalid_field("limit", format!("must be 1..={max}"))),
    }
}

fn parse_bbox(raw: &str) -> Result<Area, ApiError> {
    let invalid = || {
        ApiError::invalid_field(
            "bbox",
            "must be min_lon,min_lat,max_lon,max_lat with latitudes in -90..=90, longitudes in -180..=180 and min_lat <= max_lat",
        )
    };
    let parts: Vec<f64> = raw
        .split(',')
        .map(|part| part.trim().parse::<f64>().map_err(|_| invalid()))
        .collect::<Result<_, _>>()?;
    let [min_lon, min_lat, max_lon, max_lat] = parts[..] else {
        return Err(invalid());
    };
    let lat_ok = |lat: f64| Coordinates::parse_lat(lat).is_ok();
    let lon_ok = |lon: f64| Coordinates::parse_lon(lon).is_ok();
    if !(lat_ok(min_lat) && lat_ok(max_lat) && lon_ok(min_lon) && lon_ok(max_lon))
        || min_lat > max_lat
    {
        return Err(invalid());
    }
    Ok(Area::Box {
        min_lat,
        min_lon,
        max_lat,
        max_lon,
    })
}
