//! The index as fans meet it: relevance, typos, phrases, prefixes, filters, facets, pages, geo
//! against brute force, similar events, and resuming from a commit.

use chrono::{DateTime, Duration, TimeZone, Utc};
use marquee_search::geo::distance_km;
use marquee_search::{
    Area, EventIndex, IndexOptions, Point, SearchDocument, SearchError, SearchRequest, Sort,
};
use proptest::prelude::*;
use std::collections::BTreeSet;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0)
        .single()
        .expect("valid time")
}

struct Doc<'a> {
    id: &'a str,
    title: &'a str,
    performers: &'a [&'a str],
    tags: &'a [&'a str],
    category: &'a str,
    description: &'a str,
    city: &'a str,
}

fn document(d: Doc<'_>) -> SearchDocument {
    SearchDocument {
        id: d.id.into(),
        title: d.title.into(),
        description: d.description.into(),
        category: d.category.into(),
        tags: d.tags.iter().map(|t| t.to_string()).collect(),
        performers: d.performers.iter().map(|p| p.to_string()).collect(),
        venue_id: format!("ven_{}", d.city),
        venue_name: format!("{} Arena", d.city),
        city: d.city.into(),
        country: "GB".into(),
        lat: 51.5,
        lon: -0.12,
        starts_at: now() + Duration::days(10),
        ends_at: now() + Duration::days(10) + Duration::hours(3),
        min_price_cents: 5_000,
        currency: "GBP".into(),
    }
}

fn catalog() -> EventIndex {
    let index = EventIndex::open(&IndexOptions::default()).expect("open");
    let docs = [
        Doc {
            id: "e01",
            title: "Metallica — M72 World Tour",
            performers: &["Metallica"],
            tags: &["metal", "rock"],
            category: "concert",
            description: "Two nights, no repeats.",
            city: "London",
        },
        Doc {
            id: "e02",
            title: "Metal Night",
            performers: &["Iron Lung"],
            tags: &["metal"],
            category: "concert",
            description: "Local heavy bands.",
            city: "Leeds",
        },
        Doc {
            id: "e03",
            title: "Swan Lake",
            performers: &["Royal Ballet"],
            tags: &["ballet"],
            category: "theatre",
            description: "Tchaikovsky's classic.",
            city: "London",
        },
        Doc {
            id: "e04",
            title: "Lake Swan Picnic",
            performers: &["Brass Band"],
            tags: &["family"],
            category: "family",
            description: "A day by the water.",
            city: "Bath",
        },
        Doc {
            id: "e05",
            title: "Summer Concerts in the Park",
            performers: &["Various"],
            tags: &["outdoor"],
            category: "concert",
            description: "Free concerts all summer.",
            city: "London",
        },
        Doc {
            id: "e06",
            title: "Adele Live",
            performers: &["Adele"],
            tags: &["pop"],
            category: "concert",
            description: "An evening with Adele.",
            city: "London",
        },
        Doc {
            id: "e07",
            title: "Piano Recital",
            performers: &["Yuja Wang"],
            tags: &["classical"],
            category: "classical",
            description: "Featuring songs Adele loves.",
            city: "Manchester",
        },
        Doc {
            id: "e08",
            title: "Rock Café Sessions",
            performers: &["The Rockets"],
            tags: &["rock"],
            category: "concert",
            description: "Acoustic rock.",
            city: "Zürich",
        },
    ];
    index
        .upsert(&docs.into_iter().map(document).collect::<Vec<_>>())
        .expect("upsert");
    index.commit(1).expect("commit");
    index
}

fn text(index: &EventIndex, q: &str) -> Vec<String> {
    let mut request = SearchRequest::new(now());
    request.text = Some(q.into());
    request.sort = Sort::Relevance;
    index
        .search(&request)
        .expect("search")
        .hits
        .into_iter()
        .map(|hit| hit.document.id)
        .collect()
}

#[test]
fn a_typo_still_finds_the_band() {
    let index = catalog();
    assert_eq!(
        text(&index, "metalica").first().map(String::as_str),
        Some("e01")
    );
    assert_eq!(
        text(&index, "metallcia world").first().map(String::as_str),
        Some("e01")
    );
    // Under 5 characters no edit is allowed: "tuor" is not "tour".
    assert!(text(&index, "metallica tuor ").is_empty());
    // Short words get no edits: "rokc" is not "rock".
    assert!(text(&index, "rokc ").is_empty());
}

#[test]
fn plurals_and_accents_match_their_stems() {
    let index = catalog();
    assert!(text(&index, "concert ").contains(&"e05".to_string()));
    assert!(text(&index, "concerts").contains(&"e05".to_string()));
    assert_eq!(text(&index, "zurich cafe"), ["e08"]);
}

#[test]
fn a_quoted_phrase_keeps_its_order() {
    let index = catalog();
    assert_eq!(text(&index, "\"swan lake\""), ["e03"]);
    let loose = text(&index, "swan lake ");
    assert!(loose.contains(&"e03".to_string()) && loose.contains(&"e04".to_string()));
}

#[test]
fn the_title_outranks_the_description() {
    let index = catalog();
    assert_eq!(text(&index, "adele "), ["e06", "e07"]);
}

#[test]
fn the_last_word_matches_as_a_prefix() {
    let index = catalog();
    assert_eq!(text(&index, "swa").first().map(String::as_str), Some("e03"));
    assert!(text(&index, "metall").contains(&"e01".to_string()));
}

#[test]
fn every_word_must_match_somewhere() {
    let index = catalog();
    assert_eq!(text(&index, "metal leeds "), ["e02"]);
    assert!(text(&index, "metal bath ").is_empty());
}

#[test]
fn filters_and_facets() {
    let index = catalog();
    let mut request = SearchRequest::new(now());
    request.category = Some("concert".into());
    let results = index.search(&request).expect("search");
    assert_eq!(results.total, 5);
    // Facets count every category the other filters allow, so a fan sees what else is there.
    assert_eq!(results.facets.get("concert"), Some(&5));
    assert_eq!(results.facets.get("theatre"), Some(&1));

    let mut ended = SearchRequest::new(now() + Duration::days(30));
    ended.text = Some("metallica".into());
    assert_eq!(index.search(&ended).expect("search").total, 0);

    let mut cheap = SearchRequest::new(now());
    cheap.max_price_cents = Some(4_999);
    assert_eq!(index.search(&cheap).expect("search").total, 0);
    cheap.max_price_cents = Some(5_000);
    assert_eq!(index.search(&cheap).expect("search").total, 8);

    let mut later = SearchRequest::new(now());
    later.starts_from = Some(now() + Duration::days(11));
    assert_eq!(index.search(&later).expect("search").total, 0);
}

#[test]
fn bad_requests_are_refused_precisely() {
    let index = catalog();
    let mut request = SearchRequest::new(now());
    request.text = Some("  ".into());
    assert!(matches!(
        index.search(&request),
        Err(SearchError::Invalid { field: "q", .. })
    ));
    request.text = Some("x".repeat(10_000));
    assert!(matches!(
        index.search(&request),
        Err(SearchError::Invalid { field: "q", .. })
    ));
    request.text = Some(".*[]()?".into());
    assert!(matches!(
        index.search(&request),
        Err(SearchError::Invalid { field: "q", .. })
    ));
    request.text = Some("a ".repeat(40));
    assert!(matches!(
        index.search(&request),
        Err(SearchError::Invalid { field: "q", .. })
    ));

    let mut distance = SearchRequest::new(now());
    distance.sort = Sort::Distance;
    assert!(matches!(
        index.search(&distance),
        Err(SearchError::Invalid { field: "sort", .. })
    ));

    for cursor in ["garbage!", "", "dHw1fGU=", "cnwwMDAwfGUwMQ"] {
        let mut paged = SearchRequest::new(now());
        paged.cursor = Some(cursor.into());
        assert!(
            matches!(index.search(&paged), Err(SearchError::BadCursor)),
            "{cursor}"
        );
    }
    // Unicode and regex-looking words are just words.
    let mut odd = SearchRequest::new(now());
    odd.text = Some("Zürich ☃ (rock|metal)*".into());
    assert!(index.search(&odd).is_ok());
}

fn many(count: usize) -> EventIndex {
    let index = EventIndex::open(&IndexOptions::default()).expect("open");
    let docs: Vec<_> = (0..count)
        .map(|i| {
            let mut doc = document(Doc {
                id: "x",
                title: "Jazz Evening",
                performers: &["Trio"],
                tags: &["jazz"],
                category: if i % 3 == 0 { "concert" } else { "festival" },
                description: "",
                city: "Paris",
            });
            doc.id = format!("e{i:03}");
            // Several events share a start time, so the tie-break on id is exercised.
            doc.starts_at = now() + Duration::days(1 + (i % 7) as i64);
            doc.ends_at = doc.starts_at + Duration::hours(2);
            if i % 2 == 0 {
                doc.title = "Jazz Evening Jazz".into();
            }
            doc
        })
        .collect();
    // In several commits, so there are several segments.
    for chunk in docs.chunks(17) {
        index.upsert(chunk).expect("upsert");
        index.commit(1).expect("commit");
    }
    index
}

#[test]
fn pages_cover_every_hit_once_in_order() {
    let index = many(95);
    for (sort, q) in [(Sort::Date, None), (Sort::Relevance, Some("jazz"))] {
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let mut request = SearchRequest::new(now());
            request.text = q.map(str::to_string);
            request.sort = sort;
            request.limit = 10;
            request.cursor = cursor.clone();
            let results = index.search(&request).expect("search");
            assert_eq!(results.total, 95);
            seen.extend(results.hits.into_iter().map(|hit| hit.document.id));
            match results.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        let distinct: BTreeSet<_> = seen.iter().cloned().collect();
        assert_eq!(seen.len(), 95, "{sort:?}");
        assert_eq!(distinct.len(), 95, "{sort:?}");
    }
}

#[test]
fn a_cursor_from_another_order_is_refused() {
    let index = many(30);
    let mut request = SearchRequest::new(now());
    request.limit = 5;
    let cursor = index.search(&request).expect("search").next_cursor;
    request.cursor = cursor;
    request.sort = Sort::Relevance;
    assert!(matches!(
        index.search(&request),
        Err(SearchError::BadCursor)
    ));
}

#[test]
fn similar_events_share_words_performers_and_place() {
    let index = catalog();
    let similar = index.similar("e01", 3, now()).expect("similar");
    assert_eq!(
        similar.first().map(|hit| hit.document.id.as_str()),
        Some("e02")
    );
    assert!(similar.iter().all(|hit| hit.document.id != "e01"));
    assert!(matches!(
        index.similar("nope", 3, now()),
        Err(SearchError::NotFound)
    ));
}

#[test]
fn a_reopened_index_resumes_from_its_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = IndexOptions {
        path: Some(dir.path().to_path_buf()),
        ..IndexOptions::default()
    };
    {
        let index = EventIndex::open(&options).expect("open");
        assert_eq!(index.committed_position().expect("position"), 0);
        index
            .upsert(&[document(Doc {
                id: "e1",
                title: "Metallica",
                performers: &[],
                tags: &[],
                category: "concert",
                description: "",
                city: "Oslo",
            })])
            .expect("upsert");
        index.commit(42).expect("commit");
        // Written but not committed: gone after the restart, to be replayed from position 42.
        index
            .upsert(&[document(Doc {
                id: "e2",
                title: "Adele",
                performers: &[],
                tags: &[],
                category: "concert",
                description: "",
                city: "Oslo",
            })])
            .expect("upsert");
    }
    let index = EventIndex::open(&options).expect("reopen");
    assert_eq!(index.committed_position().expect("position"), 42);
    assert_eq!(text(&index, "metallica"), ["e1"]);
    assert!(text(&index, "adele").is_empty());
}

fn geo_index(points: &[(f64, f64)]) -> EventIndex {
    let index = EventIndex::open(&IndexOptions::default()).expect("open");
    let docs: Vec<_> = points
        .iter()
        .enumerate()
        .map(|(i, (lat, lon))| {
            let mut doc = document(Doc {
                id: "x",
                title: "Gig",
                performers: &[],
                tags: &[],
                category: "concert",
                description: "",
                city: "Somewhere",
            });
            doc.id = format!("p{i:04}");
            doc.lat = *lat;
            doc.lon = *lon;
            doc
        })
        .collect();
    index.upsert(&docs).expect("upsert");
    index.commit(1).expect("commit");
    index
}

fn coordinate() -> impl Strategy<Value = (f64, f64)> {
    prop_oneof![
        (-90.0..=90.0f64, -180.0..=180.0f64),
        // Crowd the antimeridian and the poles, where covering code goes wrong.
        (
            -60.0..=60.0f64,
            prop_oneof![175.0..=180.0f64, -180.0..=-175.0f64]
        ),
        (
            prop_oneof![85.0..=90.0f64, -90.0..=-85.0f64],
            -180.0..=180.0f64
        ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn radius_search_equals_brute_force(
        points in proptest::collection::vec(coordinate(), 150..300),
        centres in proptest::collection::vec(coordinate(), 6),
        radii in proptest::collection::vec(prop_oneof![1.0..300.0f64, 300.0..3_000.0f64, 3_000.0..20_000.0f64], 6),
    ) {
        let index = geo_index(&points);
        for ((lat, lon), km) in centres.into_iter().zip(radii) {
            let center = Point { lat, lon };
            let mut request = SearchRequest::new(now());
            request.area = Some(Area::Radius { center, km });
            request.origin = Some(center);
            request.sort = Sort::Distance;
            request.limit = 100;
            let results = index.search(&request).expect("search");
            let expected: BTreeSet<String> = points
                .iter()
                .enumerate()
                .filter(|(_, (plat, plon))| distance_km(center, Point { lat: *plat, lon: *plon }) <= km)
                .map(|(i, _)| format!("p{i:04}"))
                .collect();
            prop_assert_eq!(results.total as usize, expected.len());
            let distances: Vec<f64> = results.hits.iter().filter_map(|hit| hit.distance_km).collect();
            prop_assert!(distances.windows(2).all(|w| w[0] <= w[1]), "sorted by distance");
            prop_assert!(distances.iter().all(|d| *d <= km));
            for hit in &results.hits {
                prop_assert!(expected.contains(&hit.document.id));
            }
            if expected.len() <= 100 {
                prop_assert_eq!(results.hits.len(), expected.len());
            }
        }
    }

    #[test]
    fn box_search_equals_brute_force(
        points in proptest::collection::vec(coordinate(), 150..300),
        corners in proptest::collection::vec((coordinate(), coordinate()), 6),
    ) {
        let index = geo_index(&points);
        for ((lat_a, lon_a), (lat_b, lon_b)) in corners {
            let area = Area::Box { min_lat: lat_a.min(lat_b), max_lat: lat_a.max(lat_b), min_lon: lon_a, max_lon: lon_b };
            let mut request = SearchRequest::new(now());
            request.area = Some(area);
            request.limit = 100;
            let results = index.search(&request).expect("search");
            let expected = points.iter().filter(|(lat, lon)| area.contains(Point { lat: *lat, lon: *lon })).count();
            prop_assert_eq!(results.total as usize, expected);
        }
    }
}

#[test]
fn the_query_cache_never_serves_results_from_before_a_commit() {
    let index = catalog();
    let mut request = SearchRequest::new(now());
    request.text = Some("adele".into());
    assert_eq!(index.search(&request).expect("search").total, 2);
    // Served from the cache now; a commit must empty it.
    assert_eq!(index.search(&request).expect("search").total, 2);
    index.delete(&["e06".to_string()]).expect("delete");
    // Not committed: not visible yet, cached or not.
    assert_eq!(index.search(&request).expect("search").total, 2);
    index.commit(2).expect("commit");
    assert_eq!(index.search(&request).expect("search").total, 1);
}

#[test]
fn an_index_of_another_schema_is_started_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut builder = tantivy::schema::Schema::builder();
        builder.add_text_field("something_else", tantivy::schema::TEXT);
        tantivy::Index::create_in_dir(dir.path(), builder.build()).expect("old index");
    }
    let index = EventIndex::open(&IndexOptions {
        path: Some(dir.path().to_path_buf()),
        ..IndexOptions::default()
    })
    .expect("opens by starting again");
    // Position 0: the indexer will rebuild it from the catalog.
    assert_eq!(index.committed_position().expect("position"), 0);
}
