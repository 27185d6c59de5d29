//! `marquee-bench search`: the search index beside PostgreSQL full-text search + pg_trgm +
//! PostGIS, on the same synthetic events (real city coordinates) and the same queries.
//!
//! Phases, each for both engines:
//! 1. **Indexing** — every event into the engine, then durable and searchable (Marquee: upserts
//!    and one commit; PostgreSQL: COPY, then its GIN/GiST/btree indexes and ANALYZE).
//! 2. **Queries**, one at a time on one thread (so queries/s is per core), after a warm-up pass of
//!    other queries: 2–3 words with one typo inside a radius, and geo-only "near me" sorted by
//!    distance. Marquee's query cache never hits here: every timed query is distinct.
//! 3. **Update to visible** — Marquee: a title changed through the real store is followed out of
//!    the outbox by the real indexer into the million-event index, timed until a search finds the
//!    new word; PostgreSQL: the UPDATE's commit then the same search.
//! 4. **Size** on disk, and memory: the process's peak RSS (which includes the generated data set
//!    the bench holds) and its RSS while querying once the data set is dropped.

use crate::search_data::{self, BenchQuery, SyntheticEvent};
use crate::search_pg::PgSearchPeer;
use anyhow::Context;
use chrono::Utc;
use indicatif::{ProgressBar, ProgressStyle};
use marquee_search::{Area, EventIndex, IndexOptions, Point, SearchDocument, SearchRequest, Sort};
use marquee_store::{CatalogStore, ChangeKind, EventQuery, SqlCatalogStore, StoreOptions};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct SearchBench {
    pub events: usize,
    pub queries: usize,
    pub updates: usize,
    pub seed: u64,
    /// `None` skips the PostgreSQL peer.
    pub postgres_url: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct EngineReport {
    pub engine: &'static str,
    pub docs_per_sec: f64,
    pub index_secs: f64,
    pub fuzzy_geo: Latency,
    pub near_me: Latency,
    pub fuzzy_geo_hit_rate: f64,
    pub update_visible_p50_ms: f64,
    pub update_visible_p95_ms: f64,
    pub size_bytes: u64,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Latency {
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Sequential queries on one thread: queries per second per core.
    pub per_sec: f64,
}

#[derive(Debug, Clone, Default)]
pub struct SearchBenchReport {
    pub events: usize,
    pub marquee: EngineReport,
    pub postgres: Option<EngineReport>,
    pub peak_rss_bytes: u64,
    pub query_rss_bytes: u64,
    /// RSS once the data set is generated, before any engine runs: peak minus this is what
    /// indexing added.
    pub generated_rss_bytes: u64,
}

pub fn document(event: &SyntheticEvent) -> SearchDocument {
    SearchDocument {
        id: event.id.clone(),
        title: event.title.clone(),
        description: event.description.clone(),
        category: event.category.clone(),
        tags: event.tags.clone(),
        performers: event.performers.clone(),
        venue_id: format!("ven_{}", event.city),
        venue_name: event.venue_name.clone(),
        city: event.city.clone(),
        country: event.country.clone(),
        lat: event.lat,
        lon: event.lon,
        starts_at: event.starts_at,
        ends_at: event.ends_at,
        min_price_cents: event.min_price_cents,
        currency: event.currency.clone(),
    }
}

fn request(query: &BenchQuery, now: chrono::DateTime<Utc>) -> SearchRequest {
    let center = Point {
        lat: query.lat,
        lon: query.lon,
    };
    let mut request = SearchRequest::new(now);
    request.area = Some(Area::Radius {
        center,
        km: query.radius_km,
    });
    request.origin = Some(center);
    request.limit = 10;
    match &query.text {
        Some(text) => {
            request.text = Some(text.clone());
            request.sort = Sort::Relevance;
        }
        None => request.sort = Sort::Distance,
    }
    request
}

pub async fn run_search(bench: &SearchBench) -> anyhow::Result<SearchBenchReport> {
    let bar = |len: u64, what: &str| {
        let bar = ProgressBar::new(len);
        bar.set_style(
            ProgressStyle::with_template("{msg:>22} {bar:40} {pos}/{len} {per_sec}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message(what.to_string());
        bar
    };
    eprintln!("generating {} events…", bench.events);
    let events = search_data::generate(bench.events, bench.seed)?;
    let generated_rss = current_rss_bytes();
    let fuzzy = search_data::fuzzy_geo_queries(&events, bench.queries * 2, bench.seed + 1);
    let near = search_data::near_me_queries(&events, bench.queries * 2, bench.seed + 2);

    // The catalog the indexer will follow for the update phase; the bulk load is committed at
    // its head so the indexer resumes rather than rebuilds.
    let store_dir = tempfile::tempdir().context("store dir")?;
    let store: Arc<dyn CatalogStore> = Arc::new(
        SqlCatalogStore::connect(
            &format!(
                "sqlite://{}?mode=rwc",
                store_dir.path().join("bench.db").display()
            ),
            StoreOptions::default(),
        )
        .await?,
    );
    marquee::demo::seed(store.as_ref(), false).await?;
    let head = store.latest_change().await?;

    // --- Marquee: index.
    let dir = tempfile::tempdir().context("index dir")?;
    let index = Arc::new(EventIndex::open(&IndexOptions {
        path: Some(dir.path().join("search")),
        writer_memory_bytes: 128 << 20,
        writer_threads: 2,
        cache_entries: 10_000,
    })?);
    let progress = bar(events.len() as u64, "marquee: indexing");
    let started = Instant::now();
    for chunk in events.chunks(10_000) {
        let documents: Vec<_> = chunk.iter().map(document).collect();
        index.upsert(&documents)?;
        progress.inc(chunk.len() as u64);
    }
    {
        let index = index.clone();
        tokio::task::spawn_blocking(move || index.commit(head)).await??;
    }
    let index_secs = started.elapsed().as_secs_f64();
    progress.finish();
    {
        // Settle merges so queries see the index a long-running node would have.
        let index = index.clone();
        tokio::task::spawn_blocking(move || index.merge_all()).await??;
    }
    let mut marquee = EngineReport {
        engine: "marquee (tantivy)",
        docs_per_sec: events.len() as f64 / index_secs,
        index_secs,
        ..EngineReport::default()
    };

    // --- PostgreSQL: load.
    let peer = match &bench.postgres_url {
        Some(url) => {
            let schema = format!("bench_search_{}", std::process::id());
            let peer = PgSearchPeer::connect(url, &schema).await?;
            eprintln!("postgresql: loading and indexing {} events…", events.len());
            let load = peer.load(&events).await?;
            println!(
                "postgresql: {} rows loaded in {:.1} s, indexed in {:.1} s",
                load.docs, load.load_secs, load.index_secs
            );
            Some((peer, load))
        }
        None => None,
    };
    let peak_before_drop = peak_rss_bytes();
    let probe = events
        .get(events.len() / 2)
        .map(|event| (event.id.clone(), event.lat, event.lon))
        .context("no events to benchmark")?;
    drop(events);

    // --- Queries.
    eprintln!("querying…");
    let now = Utc::now();
    let (warm_fuzzy, timed_fuzzy) = fuzzy.split_at(bench.queries.min(fuzzy.len() / 2));
    let (warm_near, timed_near) = near.split_at(bench.queries.min(near.len() / 2));
    for query in warm_fuzzy.iter().chain(warm_near) {
        index.search(&request(query, now))?;
    }
    let mut hits = 0usize;
    marquee.fuzzy_geo = time_all(timed_fuzzy, |query| {
        let found = index.search(&request(query, now))?;
        hits += usize::from(!found.hits.is_empty());
        Ok(())
    })?;
    marquee.fuzzy_geo_hit_rate = hits as f64 / timed_fuzzy.len().max(1) as f64;
    marquee.near_me = time_all(timed_near, |query| {
        index.search(&request(query, now)).map(|_| ())?;
        Ok(())
    })?;
    let query_rss = current_rss_bytes();

    let postgres = match peer {
        Some((peer, load)) => {
            for query in warm_fuzzy.iter().chain(warm_near) {
                peer.query(query, 10).await?;
            }
            let fuzzy_geo = time_all_async(&peer, timed_fuzzy).await?;
            let near_me = time_all_async(&peer, timed_near).await?;
            let mut hits = 0usize;
            for query in timed_fuzzy {
                hits += usize::from(!peer.query(query, 10).await?.is_empty());
            }
            // Update to visible: the UPDATE commits, then the same search finds the new word.
            let mut visible = Vec::new();
            let (probe_id, probe_lat, probe_lon) = &probe;
            for i in 0..bench.updates {
                let word = unique_word(bench.seed, i);
                let started = Instant::now();
                peer.update_title(probe_id, &format!("Renamed {word}"))
                    .await?;
                let query = BenchQuery {
                    text: Some(word),
                    lat: *probe_lat,
                    lon: *probe_lon,
                    radius_km: 50.0,
                };
                while peer.query(&query, 10).await?.is_empty() {
                    anyhow::ensure!(
                        started.elapsed() < Duration::from_secs(30),
                        "update never visible in PostgreSQL"
                    );
                }
                visible.push(started.elapsed().as_secs_f64() * 1000.0);
            }
            let size_bytes = peer.size_bytes().await?;
            peer.drop_schema().await?;
            Some(EngineReport {
                engine: "postgresql fts + pg_trgm + postgis",
                docs_per_sec: load.docs_per_sec,
                index_secs: load.load_secs + load.index_secs,
                fuzzy_geo,
                near_me,
                fuzzy_geo_hit_rate: hits as f64 / timed_fuzzy.len().max(1) as f64,
                update_visible_p50_ms: percentile(&mut visible, 0.50),
                update_visible_p95_ms: percentile(&mut visible, 0.95),
                size_bytes,
            })
        }
        None => None,
    };

    // --- Marquee: update to visible through the real store, outbox and indexer.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let feed = Arc::new(marquee_changes::OutboxFeed::new(
        store.clone(),
        std::time::Duration::from_millis(25),
    ));
    let indexer = marquee_search::spawn_indexer(index.clone(), store.clone(), feed, stopped);
    let mut applied = indexer.applied.clone();
    applied.wait_for(|position| *position >= head).await?;
    let mut event = store
        .list_events(&EventQuery {
            status: Some(marquee_domain::EventStatus::Published),
            limit: 1,
            ..EventQuery::default()
        })
        .await?
        .into_iter()
        .next()
        .context("the demo catalog has a published event")?;
    let mut visible = Vec::new();
    for i in 0..bench.updates {
        let word = unique_word(bench.seed + 1, i);
        event.details.title = format!("Renamed {word}");
        let started = Instant::now();
        event = store.update_event(&event, ChangeKind::EventUpdated).await?;
        // The indexer announces each committed (and therefore searchable) position.
        let position = store.latest_change().await?;
        tokio::time::timeout(
            Duration::from_secs(30),
            applied.wait_for(|applied| *applied >= position),
        )
        .await
        .context("update never became visible")??;
        let mut probe = SearchRequest::new(Utc::now());
        probe.text = Some(word);
        anyhow::ensure!(
            !index.search(&probe)?.hits.is_empty(),
            "the indexer reported the update but search does not find it"
        );
        visible.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    marquee.update_visible_p50_ms = percentile(&mut visible, 0.50);
    marquee.update_visible_p95_ms = percentile(&mut visible, 0.95);
    let _ = stop.send(true);
    let _ = indexer.task.await;
    marquee.size_bytes = directory_size(&dir.path().join("search"));

    Ok(SearchBenchReport {
        events: bench.events,
        marquee,
        postgres,
        peak_rss_bytes: peak_before_drop.max(peak_rss_bytes()),
        query_rss_bytes: query_rss,
        generated_rss_bytes: generated_rss,
    })
}

/// Ten random letters: no two are within the typo budget of each other, so a search for the new
/// title cannot be answered by the old one.
fn unique_word(seed: u64, round: usize) -> String {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed.wrapping_mul(1_000_003) + round as u64);
    (0..10)
        .map(|_| rng.gen_range(b'a'..=b'z') as char)
        .collect()
}

fn time_all(
    queries: &[BenchQuery],
    mut run: impl FnMut(&BenchQuery) -> anyhow::Result<()>,
) -> anyhow::Result<Latency> {
    let mut samples = Vec::with_capacity(queries.len());
    let started = Instant::now();
    for query in queries {
        let one = Instant::now();
        run(query)?;
        samples.push(one.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(latency(samples, started.elapsed()))
}

async fn time_all_async(peer: &PgSearchPeer, queries: &[BenchQuery]) -> anyhow::Result<Latency> {
    let mut samples = Vec::with_capacity(queries.len());
    let started = Instant::now();
    for query in queries {
        let one = Instant::now();
        peer.query(query, 10).await?;
        samples.push(one.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(latency(samples, started.elapsed()))
}

fn latency(mut samples: Vec<f64>, elapsed: Duration) -> Latency {
    Latency {
        per_sec: samples.len() as f64 / elapsed.as_secs_f64(),
        p50_ms: percentile(&mut samples, 0.50),
        p99_ms: percentile(&mut samples, 0.99),
    }
}

fn percentile(samples: &mut [f64], q: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.sort_by(f64::total_cmp);
    let rank = ((samples.len() as f64 - 1.0) * q).round() as usize;
    samples[rank.min(samples.len() - 1)]
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with(field))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(0)
}

fn peak_rss_bytes() -> u64 {
    status_kib("VmHWM:") * 1024
}

pub(crate) fn current_rss_bytes() -> u64 {
    status_kib("VmRSS:") * 1024
}

fn directory_size(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|entry| entry.metadata().ok())
                .filter(|meta| meta.is_file())
                .map(|meta| meta.len())
                .sum()
        })
        .unwrap_or(0)
}
