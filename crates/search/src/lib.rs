//! Discovery: finding events by words, place, date and price, and events like one another.
//!
//! **The index.** [`EventIndex`] is an embedded [Tantivy] index (an inverted index with BM25, the
//! engine behind Quickwit) of published, not-yet-ended events, one document per event. Text is
//! analysed once (`marquee` analyzer: split on non-alphanumerics, lowercase, fold accents to ASCII,
//! English Snowball stemming) and ranked with per-field boosts — title > performers > tags >
//! venue/city > description. Typos are forgiven by Levenshtein automata over the term dictionary
//! (no edit under 5 characters, 1 up to 8, 2 beyond, a transposition counting as one), and the
//! last word also matches as a prefix for search-as-you-type. Fuzzy and prefix matching run on one
//! catch-all field, so a query pays for one automaton per word rather than one per field; the
//! boosts come from exact matches on the separate fields.
//!
//! **Geo** is ours, since Tantivy has none: see [`geo`] (grid cells as terms to prune, then exact
//! haversine distance on fast fields).
//!
//! **Collection** is one pass of a custom collector ([`collect`]) that applies the filters kept
//! out of the query (time, price, category, exact distance), counts the total and the category
//! facets, and keeps the best `limit + 1` hits by the requested order with a stable tie-break on
//! the event id — the key of the keyset cursor (`search_after`), so pages do not shift or repeat.
//! Facets ignore the category filter on purpose: the counts tell a fan what else is there.
//!
//! **Similar events** ([`vector`]): each event gets a 64-dimension vector by feature hashing of
//! its stemmed words, tags, performers, category and city, plus its position on the unit sphere;
//! stored as eight `u64` fast fields and compared by exact cosine scan. No model, nothing to
//! download; at a million events a scan reads 64 MB of memory-mapped columns.
//!
//! **Freshness** ([`indexer`]): the indexer follows the store's outbox in micro-batches and
//! commits each batch together with the outbox position (the commit payload), so a restart resumes
//! from where the index is, never from scratch; `marquee search reindex` rebuilds from the store.
//! Each node keeps its own replica fed by the same stream — that is how search scales out, so
//! there is one implementation, not an embedded and a remote one.
//!
//! **Query cache** (a node query cache, as Elasticsearch has): results of recent requests are kept
//! in a bounded `moka` cache that is emptied each time the reader sees a new commit.
//!
//! [Tantivy]: https://github.com/quickwit-oss/tantivy

pub mod analysis;
pub mod collect;
pub mod geo;
mod index;
pub mod indexer;
pub mod vector;

pub use geo::{Area, Point};
pub use index::{EventIndex, IndexOptions};
pub use indexer::{document_for, rebuild, spawn_indexer, IndexerHandle};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One event as search sees it: what it finds it by and what a hit shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchDocument {
    pub id: String,
    pub title: String,
    pub description: String,
    pub category: String,
    pub tags: Vec<String>,
    pub performers: Vec<String>,
    pub venue_id: String,
    pub venue_name: String,
    pub city: String,
    pub country: String,
    pub lat: f64,
    pub lon: f64,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub min_price_cents: i64,
    pub currency: String,
}

/// The order of hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sort {
    Relevance,
    Date,
    Distance,
}

impl Sort {
    fn tag(self) -> char {
        match self {
            Sort::Relevance => 'r',
            Sort::Date => 't',
            Sort::Distance => 'd',
        }
    }
}

/// A validated search. Build it with [`SearchRequest::new`] and the setters' public fields;
/// [`EventIndex::search`] checks the combinations.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchRequest {
    pub text: Option<String>,
    pub area: Option<Area>,
    /// The point distances are measured from (the radius centre, or the fan's place).
    pub origin: Option<Point>,
    pub category: Option<String>,
    pub starts_from: Option<DateTime<Utc>>,
    pub starts_to: Option<DateTime<Utc>>,
    pub min_price_cents: Option<i64>,
    pub max_price_cents: Option<i64>,
    pub sort: Sort,
    pub limit: usize,
    pub cursor: Option<String>,
    /// Events that ended by then are left out.
    pub now: DateTime<Utc>,
}

impl SearchRequest {
    pub const MAX_LIMIT: usize = 100;
    pub const MAX_TEXT_CHARS: usize = 500;
    pub const MAX_WORDS: usize = 16;

    pub fn new(now: DateTime<Utc>) -> SearchRequest {
        SearchRequest {
            text: None,
            area: None,
            origin: None,
            category: None,
            starts_from: None,
            starts_to: None,
            min_price_cents: None,
            max_price_cents: None,
            sort: Sort::Date,
            limit: 20,
            cursor: None,
            now,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub document: SearchDocument,
    pub score: Option<f32>,
    pub distance_km: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SearchResults {
    pub total: u64,
    pub hits: Vec<Hit>,
    pub facets: BTreeMap<String, u64>,
    pub next_cursor: Option<String>,
}

/// What can go wrong; the first variants are the caller's fault (400s).
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("the cursor is not one this search returned")]
    BadCursor,
    #[error("no such event in the index")]
    NotFound,
    #[error("index: {0}")]
    Index(#[from] tantivy::TantivyError),
    #[error("index directory: {0}")]
    Directory(#[from] tantivy::directory::error::OpenDirectoryError),
    #[error("store: {0}")]
    Store(#[from] marquee_store::StoreError),
    #[error("change stream: {0}")]
    Changes(#[from] marquee_changes::ChangeFeedError),
    #[error("the index task stopped: {0}")]
    Task(String),
}

impl SearchError {
    pub(crate) fn invalid(field: &'static str, message: impl Into<String>) -> SearchError {
        SearchError::Invalid {
            field,
            message: message.into(),
        }
    }
}
