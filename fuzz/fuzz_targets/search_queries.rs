//! Why this exists: a search's free text and its cursor come straight from the query string.
//! Whatever they hold — unbalanced quotes, regex syntax, control characters, huge words, forged
//! cursors — the index must answer with hits or a caller's error (`Invalid`, `BadCursor`), never
//! panic and never fail inside the engine; and every hit must satisfy the request's filters.

#![no_main]

use chrono::{TimeZone, Utc};
use libfuzzer_sys::fuzz_target;
use marquee_search::{
    Area, EventIndex, IndexOptions, Point, SearchDocument, SearchError, SearchRequest, Sort,
};
use std::sync::OnceLock;

fn index() -> &'static EventIndex {
    static INDEX: OnceLock<EventIndex> = OnceLock::new();
    INDEX.get_or_init(|| {
        let index = EventIndex::open(&IndexOptions::default()).expect("in-memory index");
        let starts = Utc.with_ymd_and_hms(2030, 1, 1, 20, 0, 0).single().expect("time");
        let titles = ["Metallica — M72", "Swan Lake", "Zürich Jazz Café", "Comedy Night"];
        let docs: Vec<_> = titles
            .iter()
            .enumerate()
            .map(|(i, title)| SearchDocument {
                id: format!("evt_{i}"),
                title: title.to_string(),
                description: "A night out.".into(),
                category: ["concert", "theatre"][i % 2].into(),
                tags: vec!["live".into()],
                performers: vec![format!("Performer {i}")],
                venue_id: "ven_1".into(),
                venue_name: "Hall".into(),
                city: "Oslo".into(),
                country: "NO".into(),
                lat: 59.9 + i as f64,
                lon: 10.7 - i as f64 * 60.0,
                starts_at: starts,
                ends_at: starts + chrono::Duration::hours(3),
                min_price_cents: 1_000 * i as i64,
                currency: "NOK".into(),
            })
            .collect();
        index.upsert(&docs).expect("upsert");
        index.commit(1).expect("commit");
        index
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\n');
    let q = parts.next().unwrap_or_default();
    let cursor = parts.next();
    let selector = data.first().copied().unwrap_or(0);
    let now = Utc.with_ymd_and_hms(2029, 6, 1, 0, 0, 0).single().expect("time");
    let mut request = SearchRequest::new(now);
    request.text = (!q.is_empty() || selector & 1 == 1).then(|| q.to_string());
    request.cursor = cursor.map(str::to_string);
    request.sort = match selector % 3 {
        0 => Sort::Relevance,
        1 => Sort::Date,
        _ => Sort::Distance,
    };
    if selector & 4 == 4 {
        let center = Point { lat: 59.9, lon: 10.7 };
        request.origin = Some(center);
        request.area = Some(Area::Radius { center, km: f64::from(selector) * 40.0 });
    }
    match index().search(&request) {
        Ok(results) => {
            assert!(results.hits.len() <= request.limit);
            assert!(results.total as usize >= results.hits.len());
            if let Some(Area::Radius { km, .. }) = request.area {
                for hit in &results.hits {
                    assert!(hit.distance_km.expect("distance with an origin") <= km);
                }
            }
        }
        Err(SearchError::Invalid { .. } | SearchError::BadCursor) => {}
        Err(other) => panic!("engine error on caller input: {other}"),
    }
    let _ = index().suggest(q, 8, now);
});
