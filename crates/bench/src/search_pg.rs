//! The PostgreSQL peer for `marquee-bench search`: the same events and the same fuzzy + geo
//! queries as the Tantivy engine, answered the way a competent PostgreSQL deployment would —
//! full-text search (weighted `tsvector`, GIN), `pg_trgm` trigram similarity for typos and
//! PostGIS (`geography` points, GiST).
//!
//! Needs the extensions `pg_trgm` and `postgis` (Debian/Ubuntu: `postgresql-15-postgis-3`, which
//! pulls in `postgresql-15-postgis-3-scripts`); `unaccent` is used when present. The peer owns
//! one schema, dropped and recreated by [`PgSearchPeer::connect`]:
//!
//! - `events`: the event columns plus a generated `tsv` (A title, B performers, C tags,
//!   D venue/city/description). Being generated, it is right after every `UPDATE`, so an updated
//!   title is searchable on commit.
//! - `lexicon`: every distinct folded word of the searchable fields (title, performers, tags,
//!   venue, city), with a trigram GIN index; a trigger keeps it current on insert and update.
//! - `english_unaccent`: the `english` text search configuration with `unaccent` in front of the
//!   stemmer, so "Beyonce" finds "Beyoncé".
//!
//! Fuzzy matching follows the pattern the pg_trgm documentation recommends for text search:
//! each query word is expanded, through the lexicon's trigram index, to the words one edit away
//! from it, and the event must contain (tsvector, GIN) the word itself or one of them — as a
//! fuzzy term query expands a term against the term dictionary. The first version matched
//! `word <% words` against a trigram-indexed per-event column instead; on 1M events it spent its
//! time rechecking heap rows that merely shared trigrams with common words (median 66 ms, p99
//! 671 ms, against 4 ms / 17 ms for this design) and still missed 6 % of one-typo words.
//!
//! Loading uses `COPY … FROM STDIN (FORMAT csv)` on one connection per CPU core, and the index
//! builds likewise run concurrently, each with a generous `maintenance_work_mem`: the fastest
//! bulk load PostgreSQL offers, as the Tantivy side also indexes on all cores.

use crate::search_data::{BenchQuery, SyntheticEvent};
use anyhow::{bail, Context};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, Executor, PgConnection, PgPool};
use std::collections::HashSet;
use std::fmt::Write as _;
use std::str::FromStr;
use std::time::Instant;

/// `pg_trgm.similarity_threshold`, used by the `%` operator between a query word and a lexicon
/// word (default 0.3) to find, through the trigram index, the candidates that `within_one_edit`
/// then checks exactly.
///
/// Similarity is |shared trigrams| / |all trigrams| of the two words (each padded with two
/// leading blanks and one trailing blank). One edit destroys up to three trigrams of a word
/// (four for a swap of two letters), so a typo in a 5-letter word can score as low as 0.2
/// ("fight" / "fgiht": 2 shared of 10). Measured on 5,000 one-edit typos of query words: 0.2
/// keeps 100 %, 0.25 94 %, the default 0.3 86 %, 0.4 62 %. On its own 0.2 would also admit
/// unrelated words sharing two trigrams ("hangzhou" → 30 other "-zhou" cities), which is why
/// the candidates are then filtered to one edit (insertion, deletion, substitution or swap of
/// adjacent letters — Damerau–Levenshtein distance 1, as a fuzzy term query of distance 1 with
/// transpositions). `pg_trgm.word_similarity_threshold` (`<%`) is not used.
pub const SIMILARITY_THRESHOLD: f64 = 0.2;

/// Memory for each index build; GIN builds spill and merge far more often at the 64 MB default.
const MAINTENANCE_WORK_MEM: &str = "512MB";

/// Rows per COPY message: large enough to amortise round trips, small enough to bound memory.
const COPY_BATCH_BYTES: usize = 1 << 20;

/// Words per text query beyond which the rest are ignored.
const MAX_QUERY_WORDS: usize = 8;

pub struct PgSearchPeer {
    pool: PgPool,
    schema: String,
}

#[derive(Debug, Clone)]
pub struct PgLoadReport {
    pub docs: usize,
    pub load_secs: f64,
    pub index_secs: f64,
    /// `docs / (load_secs + index_secs)`.
    pub docs_per_sec: f64,
}

impl PgSearchPeer {
    /// Connects, makes sure `postgis` and `pg_trgm` exist (and `unaccent` if it can), then drops
    /// and recreates `schema` with its tables and functions. `schema` must be a plain lowercase
    /// identifier, not `public` nor a system schema.
    pub async fn connect(url: &str, schema: &str) -> anyhow::Result<PgSearchPeer> {
        validate_schema(schema)?;
        let options = PgConnectOptions::from_str(url).context("parsing the PostgreSQL URL")?;
        let mut setup = PgConnection::connect_with(&options)
            .await
            .with_context(|| format!("connecting to PostgreSQL at {url}"))?;
        ensure_extension(&mut setup, "pg_trgm").await?;
        ensure_extension(&mut setup, "postgis").await?;
        let unaccent = match ensure_extension(&mut setup, "unaccent").await {
            Ok(()) => Some(extension_schema(&mut setup, "unaccent").await?),
            Err(error) => {
                tracing::warn!(%error, "unaccent is not available; accents will not be folded");
                None
            }
        };
        let trgm = quote_ident(&extension_schema(&mut setup, "pg_trgm").await?);
        let mut search_path = vec![quote_ident(schema), trgm.clone()];
        let postgis = quote_ident(&extension_schema(&mut setup, "postgis").await?);
        if !search_path.contains(&postgis) {
            search_path.push(postgis);
        }

        let s = quote_ident(schema);
        let (fold, ts_config, ts_setup) = match &unaccent {
            Some(ext) => {
                let ext = quote_ident(ext);
                (
                    format!("lower({ext}.unaccent('{ext}.unaccent'::regdictionary, $1))"),
                    format!("{s}.english_unaccent"),
                    format!(
                        "CREATE TEXT SEARCH CONFIGURATION {s}.english_unaccent (COPY = pg_catalog.english);
                         ALTER TEXT SEARCH CONFIGURATION {s}.english_unaccent
                             ALTER MAPPING FOR hword, hword_part, word WITH {ext}.unaccent, english_stem;"
                    ),
                )
            }
            None => (
                "lower($1)".to_string(),
                "pg_catalog.english".to_string(),
                String::new(),
            ),
        };
        // Functions used by the generated column are declared IMMUTABLE (which generated columns
        // require) although `unaccent` and `array_to_string` are only STABLE: both are immutable
        // in practice for a fixed dictionary and text elements. plpgsql rather than SQL because a
        // non-inlinable SQL function is slower per call (measured: 12.2 s vs 8.7 s per million).
        //
        // `fuzzy_tsquery` turns ["thaetre", "kim"] into `('thaetr' | 'theatr') & ('kid' | 'kim')`:
        // per word, the word itself and the lexicon words one edit away (found by trigram
        // similarity, confirmed by `within_one_edit`), stemmed by the text search configuration. Words are reduced to letters and digits first, so each
        // can be quoted as a tsquery lexeme without escaping. A word that is all stop words
        // ("will") is left out, as plainto_tsquery would.
        let ddl = format!(
            "DROP SCHEMA IF EXISTS {s} CASCADE;
             CREATE SCHEMA {s};
             {ts_setup}
             CREATE FUNCTION {s}.fold(text) RETURNS text
                 LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
                 AS $f$ BEGIN RETURN {fold}; END $f$;
             CREATE FUNCTION {s}.event_words(title text, performers text[], tags text[], venue text, city text)
                 RETURNS text LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
                 AS $f$ BEGIN RETURN {s}.fold(concat_ws(' ', title, array_to_string(performers, ' '),
                     array_to_string(tags, ' '), venue, city)); END $f$;
             CREATE FUNCTION {s}.event_tsv(title text, performers text[], tags text[], venue text,
                                          city text, description text)
                 RETURNS tsvector LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
                 AS $f$ BEGIN RETURN
                     setweight(to_tsvector('{ts_config}', coalesce(title, '')), 'A') ||
                     setweight(to_tsvector('{ts_config}', array_to_string(performers, ' ')), 'B') ||
                     setweight(to_tsvector('{ts_config}', array_to_string(tags, ' ')), 'C') ||
                     setweight(to_tsvector('{ts_config}', concat_ws(' ', venue, city, description)), 'D');
                 END $f$;
             CREATE TABLE {s}.events (
                 id text NOT NULL,
                 title text NOT NULL,
                 description text NOT NULL,
                 category text NOT NULL,
                 tags text[] NOT NULL,
                 performers text[] NOT NULL,
                 venue_name text NOT NULL,
                 city text NOT NULL,
                 country text NOT NULL,
                 location geography(Point, 4326) NOT NULL,
                 starts_at timestamptz NOT NULL,
                 ends_at timestamptz NOT NULL,
                 min_price_cents bigint NOT NULL,
                 currency text NOT NULL,
                 published boolean NOT NULL DEFAULT true,
                 tsv tsvector GENERATED ALWAYS AS
                     ({s}.event_tsv(title, performers, tags, venue_name, city, description)) STORED
             );
             CREATE TABLE {s}.lexicon (word text PRIMARY KEY);
             CREATE FUNCTION {s}.remember_words() RETURNS trigger LANGUAGE plpgsql
                 AS $f$ BEGIN
                     INSERT INTO {s}.lexicon (word)
                     SELECT DISTINCT t FROM regexp_split_to_table({s}.event_words(
                         NEW.title, NEW.performers, NEW.tags, NEW.venue_name, NEW.city), '[^[:alnum:]]+') t
                     WHERE t <> ''
                     ON CONFLICT DO NOTHING;
                     RETURN NULL;
                 END $f$;
             CREATE FUNCTION {s}.within_one_edit(a text, b text) RETURNS boolean
                 LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
                 AS $f$
                 DECLARE
                     la int := length(a);
                     lb int := length(b);
                     i int := 1;
                 BEGIN
                     IF a = b THEN RETURN true; END IF;
                     IF abs(la - lb) > 1 THEN RETURN false; END IF;
                     WHILE i <= least(la, lb) AND substr(a, i, 1) = substr(b, i, 1) LOOP
                         i := i + 1;
                     END LOOP;
                     IF la = lb THEN
                         RETURN substr(a, i + 1) = substr(b, i + 1)
                             OR (substr(a, i, 1) = substr(b, i + 1, 1)
                                 AND substr(a, i + 1, 1) = substr(b, i, 1)
                                 AND substr(a, i + 2) = substr(b, i + 2));
                     ELSIF la > lb THEN
                         RETURN substr(a, i + 1) = substr(b, i);
                     ELSE
                         RETURN substr(a, i) = substr(b, i + 1);
                     END IF;
                 END $f$;
             CREATE FUNCTION {s}.fuzzy_tsquery(words text[]) RETURNS tsquery
                 LANGUAGE sql STABLE PARALLEL SAFE
                 AS $f$
                 SELECT to_tsquery('{ts_config}', string_agg(alternatives, ' & ' ORDER BY i))
                 FROM (
                     SELECT q.i, '(' || string_agg(DISTINCT '''' || m.x || '''', ' | ') || ')' AS alternatives
                     FROM unnest(words) WITH ORDINALITY AS q(w, i)
                     CROSS JOIN LATERAL (
                         SELECT trim(regexp_replace({s}.fold(q.w), '[^[:alnum:]]+', ' ', 'g')) AS folded
                     ) f
                     CROSS JOIN LATERAL (
                         SELECT f.folded AS x
                         UNION
                         SELECT l.word FROM {s}.lexicon l
                         WHERE l.word OPERATOR({trgm}.%) f.folded
                           AND {s}.within_one_edit(l.word, f.folded)
                     ) m
                     -- A stop word is ignored, not expanded to the words that look like it.
                     WHERE numnode(plainto_tsquery('{ts_config}', f.folded)) > 0
                     GROUP BY q.i
                 ) per_word
                 $f$;"
        );
        sqlx::raw_sql(&ddl)
            .execute(&mut setup)
            .await
            .with_context(|| format!("creating schema {schema}"))?;
        setup
            .close()
            .await
            .context("closing the setup connection")?;

        // Notices are muted because a stop word in a query makes PostgreSQL send one per query.
        // pg_trgm's library is loaded before the SET on purpose. Set earlier, the threshold is
        // only a placeholder, and when the library is first loaded inside a command that saves
        // and restores settings (CREATE INDEX and VACUUM do), the value is rolled back to the
        // default for the rest of the session — observed on PostgreSQL 15 as one pool connection
        // (the one that had built a trigram index) silently missing one-typo matches.
        let session = format!(
            "SELECT {trgm}.similarity('', '');
             SET search_path TO {};
             SET pg_trgm.similarity_threshold = {SIMILARITY_THRESHOLD};
             SET client_min_messages = warning;",
            search_path.join(", ")
        );
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .after_connect(move |conn, _meta| {
                let session = session.clone();
                Box::pin(async move {
                    conn.execute(session.as_str()).await?;
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .with_context(|| format!("connecting a pool to PostgreSQL at {url}"))?;
        Ok(PgSearchPeer {
            pool,
            schema: schema.to_string(),
        })
    }

    /// Bulk-loads `events` (call once, on the fresh tables), then fills the lexicon, builds the
    /// indexes and runs `VACUUM ANALYZE`. Load time is the COPY (including the generated
    /// `tsv`); index time is everything after it.
    pub async fn load(&self, events: &[SyntheticEvent]) -> anyhow::Result<PgLoadReport> {
        let workers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .clamp(1, 6);
        let s = quote_ident(&self.schema);
        let copy_sql = format!(
            "COPY {s}.events (id, title, description, category, tags, performers, venue_name,
                 city, country, location, starts_at, ends_at, min_price_cents, currency)
             FROM STDIN (FORMAT csv)"
        );

        let started = Instant::now();
        let mut senders = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        for _ in 0..workers {
            // Two batches in flight per worker keep the server busy without buffering the data set.
            let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(2);
            let pool = self.pool.clone();
            let copy_sql = copy_sql.clone();
            handles.push(tokio::spawn(async move {
                let mut conn = pool
                    .acquire()
                    .await
                    .context("acquiring a COPY connection")?;
                let mut copy = conn.copy_in_raw(&copy_sql).await.context("starting COPY")?;
                while let Some(batch) = rx.recv().await {
                    copy.send(batch).await.context("sending COPY data")?;
                }
                copy.finish().await.context("finishing COPY")
            }));
            senders.push(tx);
        }
        // The lexicon is collected here, while the server is busy with COPY, instead of by the
        // row trigger (created only after the load) or by a scan of the loaded table; the
        // server still folds and splits the words exactly as the trigger does.
        let mut vocabulary: HashSet<&str> = HashSet::new();
        let mut batch = Vec::with_capacity(COPY_BATCH_BYTES + 4096);
        let mut next = 0;
        let mut send_failed = false;
        for event in events {
            write_csv_row(&mut batch, event);
            let fields = [&event.title, &event.venue_name, &event.city]
                .into_iter()
                .chain(&event.performers)
                .chain(&event.tags);
            for field in fields {
                vocabulary.extend(
                    field
                        .split(|c: char| !c.is_alphanumeric())
                        .filter(|w| !w.is_empty()),
                );
            }
            if batch.len() >= COPY_BATCH_BYTES {
                let full =
                    std::mem::replace(&mut batch, Vec::with_capacity(COPY_BATCH_BYTES + 4096));
                if senders[next].send(full).await.is_err() {
                    // The worker failed; its error is reported when it is joined below.
                    send_failed = true;
                    break;
                }
                next = (next + 1) % workers;
            }
        }
        if !batch.is_empty() && !send_failed {
            // A closed channel means the worker failed; its error surfaces when joined below.
            let _ = senders[next].send(batch).await;
        }
        drop(senders);
        let mut rows = 0u64;
        for handle in handles {
            rows += handle.await.context("COPY worker panicked")??;
        }
        if rows != events.len() as u64 {
            bail!("COPY loaded {rows} rows, expected {}", events.len());
        }
        let load_secs = started.elapsed().as_secs_f64();

        let started = Instant::now();
        let vocabulary: Vec<String> = vocabulary.into_iter().map(str::to_string).collect();
        let lexicon = {
            let pool = self.pool.clone();
            let fill = format!(
                "INSERT INTO {s}.lexicon (word)
                 SELECT DISTINCT t FROM unnest($1::text[]) w,
                     regexp_split_to_table({s}.fold(w), '[^[:alnum:]]+') t
                 WHERE t <> ''
                 ON CONFLICT DO NOTHING"
            );
            let index = format!(
                "CREATE INDEX lexicon_trgm ON {s}.lexicon USING gin (word gin_trgm_ops);
                 ANALYZE {s}.lexicon;"
            );
            tokio::spawn(async move {
                let mut conn = pool
                    .acquire()
                    .await
                    .context("acquiring a lexicon connection")?;
                sqlx::query(&fill)
                    .bind(vocabulary)
                    .execute(&mut *conn)
                    .await
                    .context("filling the lexicon")?;
                conn.execute(index.as_str())
                    .await
                    .context("indexing the lexicon")?;
                anyhow::Ok(())
            })
        };
        // The key starts as a plain unique index: ADD PRIMARY KEY would hold an exclusive lock
        // for the whole build and serialise the other builds behind it.
        let builds = [
            format!("CREATE UNIQUE INDEX events_pkey ON {s}.events (id)"),
            format!("CREATE INDEX events_tsv ON {s}.events USING gin (tsv)"),
            format!("CREATE INDEX events_location ON {s}.events USING gist (location)"),
            format!("CREATE INDEX events_starts_at ON {s}.events (starts_at)"),
        ];
        let mut handles = vec![lexicon];
        for sql in builds {
            let pool = self.pool.clone();
            let set_memory = format!("SET maintenance_work_mem = '{MAINTENANCE_WORK_MEM}'");
            handles.push(tokio::spawn(async move {
                let mut conn = pool
                    .acquire()
                    .await
                    .context("acquiring an index connection")?;
                conn.execute(set_memory.as_str())
                    .await
                    .context("raising maintenance_work_mem")?;
                conn.execute(sql.as_str())
                    .await
                    .with_context(|| format!("running {sql}"))?;
                // Pool connections live on; give the memory setting back.
                conn.execute("RESET maintenance_work_mem")
                    .await
                    .context("resetting maintenance_work_mem")?;
                anyhow::Ok(())
            }));
        }
        for handle in handles {
            handle.await.context("index build panicked")??;
        }
        // The trigger comes after the bulk load, which must not pay a lexicon insert per row.
        sqlx::raw_sql(&format!(
            "ALTER TABLE {s}.events ADD CONSTRAINT events_pkey PRIMARY KEY USING INDEX events_pkey;
             CREATE TRIGGER events_lexicon
                 AFTER INSERT OR UPDATE OF title, performers, tags, venue_name, city ON {s}.events
                 FOR EACH ROW EXECUTE FUNCTION {s}.remember_words();"
        ))
        .execute(&self.pool)
        .await
        .context("adding the primary key and the lexicon trigger")?;
        // VACUUM rather than ANALYZE alone: it also sets hint bits and the visibility map, so
        // queries are measured in the steady state instead of paying for the first touch.
        sqlx::raw_sql(&format!("VACUUM (ANALYZE) {s}.events"))
            .execute(&self.pool)
            .await
            .context("vacuuming and analysing the events table")?;
        let index_secs = started.elapsed().as_secs_f64();

        let total = load_secs + index_secs;
        Ok(PgLoadReport {
            docs: events.len(),
            load_secs,
            index_secs,
            docs_per_sec: if total > 0.0 {
                events.len() as f64 / total
            } else {
                0.0
            },
        })
    }

    /// Text query: every word, or a word one edit away from it that occurs in some title,
    /// performer, tag, venue or city (see [`SIMILARITY_THRESHOLD`]), must be in the event
    /// (full-text, stemmed, any field); within the radius (`ST_DWithin`, GiST), published and not
    /// ended; ranked by `ts_rank`. Geo-only (no text): nearest first (`<->`, GiST KNN). Both are
    /// prepared once per connection (sqlx caches them), so a run measures planning of the bound
    /// parameters (or a cached generic plan) and execution, never parsing.
    pub async fn query(&self, query: &BenchQuery, limit: i64) -> anyhow::Result<Vec<String>> {
        let words: Vec<String> = query
            .text
            .as_deref()
            .unwrap_or_default()
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .take(MAX_QUERY_WORDS)
            .map(str::to_string)
            .collect();
        let statement =
            sqlx::query_scalar::<_, String>(if words.is_empty() { GEO_SQL } else { TEXT_SQL })
                .bind(query.lon)
                .bind(query.lat)
                .bind(query.radius_km * 1000.0)
                .bind(limit);
        let statement = if words.is_empty() {
            statement
        } else {
            statement.bind(words)
        };
        statement
            .fetch_all(&self.pool)
            .await
            .context("running a search query")
    }

    /// Sets one event's title; returns once committed, which is when PostgreSQL makes it
    /// visible (the generated `tsv`, its index entries and new lexicon words included).
    pub async fn update_title(&self, id: &str, title: &str) -> anyhow::Result<()> {
        let result = sqlx::query("UPDATE events SET title = $2 WHERE id = $1")
            .bind(id)
            .bind(title)
            .execute(&self.pool)
            .await
            .with_context(|| format!("updating the title of {id}"))?;
        if result.rows_affected() != 1 {
            bail!("no event with id {id}");
        }
        Ok(())
    }

    /// Events and lexicon — tables, TOAST and all indexes — in bytes.
    pub async fn size_bytes(&self) -> anyhow::Result<u64> {
        let s = quote_ident(&self.schema);
        let bytes: i64 = sqlx::query_scalar(
            "SELECT (pg_total_relation_size($1::regclass) + pg_total_relation_size($2::regclass))::bigint",
        )
        .bind(format!("{s}.events"))
        .bind(format!("{s}.lexicon"))
        .fetch_one(&self.pool)
        .await
        .context("reading the size of the search tables")?;
        u64::try_from(bytes).context("negative relation size")
    }

    /// Drops the schema (tables, functions, text search configuration) and closes the pool.
    pub async fn drop_schema(self) -> anyhow::Result<()> {
        sqlx::raw_sql(&format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            quote_ident(&self.schema)
        ))
        .execute(&self.pool)
        .await
        .with_context(|| format!("dropping schema {}", self.schema))?;
        self.pool.close().await;
        Ok(())
    }
}

/// Parameters: $1 lon, $2 lat, $3 radius in metres, $4 limit.
const GEO_SQL: &str = "SELECT id FROM events
     WHERE published AND ends_at > now()
       AND ST_DWithin(location, ST_SetSRID(ST_MakePoint($1, $2), 4326)::geography, $3)
     ORDER BY location <-> ST_SetSRID(ST_MakePoint($1, $2), 4326)::geography
     LIMIT $4";

/// Parameters as [`GEO_SQL`], then $5 the query words. The tsquery is built once in the outer
/// subquery (`OFFSET 0` keeps it from being flattened) and reaches the inner one as a parameter,
/// which the GIN index scan can use and `ts_rank` does not recompute per row.
const TEXT_SQL: &str = "SELECT hit.id FROM (SELECT fuzzy_tsquery($5::text[]) AS q OFFSET 0) f
     CROSS JOIN LATERAL (
         SELECT e.id, ts_rank(e.tsv, f.q) AS rank FROM events e
         WHERE e.tsv @@ f.q
           AND ST_DWithin(e.location, ST_SetSRID(ST_MakePoint($1, $2), 4326)::geography, $3)
           AND e.published AND e.ends_at > now()
         ORDER BY rank DESC, e.id
         LIMIT $4
     ) hit
     ORDER BY hit.rank DESC, hit.id";

/// Appends one CSV record in the column order of the COPY statement.
fn write_csv_row(out: &mut Vec<u8>, e: &SyntheticEvent) {
    let mut line = String::with_capacity(512);
    csv_field(&mut line, &e.id);
    line.push(',');
    csv_field(&mut line, &e.title);
    line.push(',');
    csv_field(&mut line, &e.description);
    line.push(',');
    csv_field(&mut line, &e.category);
    line.push(',');
    csv_field(&mut line, &array_literal(&e.tags));
    line.push(',');
    csv_field(&mut line, &array_literal(&e.performers));
    line.push(',');
    csv_field(&mut line, &e.venue_name);
    line.push(',');
    csv_field(&mut line, &e.city);
    line.push(',');
    csv_field(&mut line, &e.country);
    let _ = write!(
        line,
        ",SRID=4326;POINT({} {}),{},{},{},",
        e.lon,
        e.lat,
        e.starts_at.format("%Y-%m-%d %H:%M:%S%:z"),
        e.ends_at.format("%Y-%m-%d %H:%M:%S%:z"),
        e.min_price_cents
    );
    csv_field(&mut line, &e.currency);
    line.push('\n');
    out.extend_from_slice(line.as_bytes());
}

fn csv_field(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    out.push('"');
}

/// A PostgreSQL array literal of quoted elements (the CSV layer then escapes its quotes again).
fn array_literal(items: &[String]) -> String {
    let mut out = String::from("{");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        for c in item.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
    }
    out.push('}');
    out
}

/// Schema names go into DDL unparameterised, and the peer drops its schema with CASCADE, so only
/// plain names that cannot be a shared schema are accepted.
fn validate_schema(schema: &str) -> anyhow::Result<()> {
    let plain = !schema.is_empty()
        && schema.len() <= 63
        && schema.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !plain || schema == "public" || schema.starts_with("pg_") || schema == "information_schema" {
        bail!("schema name {schema:?} must be a lowercase identifier of its own (not public or a system schema)");
    }
    Ok(())
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `CREATE EXTENSION IF NOT EXISTS` can still fail with a unique violation when another session
/// creates the same extension concurrently (e.g. parallel tests); then it exists, which is all
/// that is wanted.
async fn ensure_extension(conn: &mut PgConnection, name: &str) -> anyhow::Result<()> {
    if let Err(error) = sqlx::raw_sql(&format!(
        "CREATE EXTENSION IF NOT EXISTS {}",
        quote_ident(name)
    ))
    .execute(&mut *conn)
    .await
    {
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = $1)")
                .bind(name)
                .fetch_one(&mut *conn)
                .await
                .context("checking installed extensions")?;
        if !exists {
            return Err(error).with_context(|| format!("creating extension {name}"));
        }
    }
    Ok(())
}

async fn extension_schema(conn: &mut PgConnection, name: &str) -> anyhow::Result<String> {
    sqlx::query_scalar(
        "SELECT n.nspname::text FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
         WHERE e.extname = $1",
    )
    .bind(name)
    .fetch_one(&mut *conn)
    .await
    .with_context(|| format!("finding the schema of extension {name}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search_data::{fuzzy_geo_query_for, generate, near_me_queries};
    use rand::{rngs::StdRng, SeedableRng};

    const URL: &str = "postgres://postgres@127.0.0.1:5432/test";

    #[tokio::test]
    async fn fuzzy_geo_query_finds_its_source_event() -> anyhow::Result<()> {
        let schema = format!("bench_search_pg_test_{:08x}", rand::random::<u32>());
        let peer = PgSearchPeer::connect(URL, &schema).await?;
        let outcome = async {
            let events = generate(2_000, 42)?;
            let report = peer.load(&events).await?;
            assert_eq!(report.docs, 2_000);
            let mut rng = StdRng::seed_from_u64(9);
            let (event, query) = events
                .iter()
                .find_map(|e| fuzzy_geo_query_for(e, &mut rng).map(|q| (e, q)))
                .context("no event yields a query")?;
            let hits = peer.query(&query, 2_000).await?;
            assert!(hits.contains(&event.id), "{query:?} missed {event:?}");

            let near = near_me_queries(&events, 5, 3);
            for q in &near {
                let hits = peer.query(q, 10).await?;
                assert!(!hits.is_empty() && hits.len() <= 10);
            }

            // A new word is searchable on commit, exactly and with a typo (through the lexicon
            // trigger).
            peer.update_title(&event.id, "Zyxwvutsrq Unplugged").await?;
            for text in ["zyxwvutsrq", "zyxwvtusrq unplugged"] {
                let renamed = BenchQuery {
                    text: Some(text.to_string()),
                    ..query.clone()
                };
                assert_eq!(
                    peer.query(&renamed, 10).await?,
                    vec![event.id.clone()],
                    "{text}"
                );
            }
            assert!(peer.size_bytes().await? > 0);
            anyhow::Ok(())
        }
        .await;
        peer.drop_schema().await?;
        outcome
    }

    #[tokio::test]
    async fn within_one_edit_is_damerau_distance_one() -> anyhow::Result<()> {
        let schema = format!("bench_search_pg_test_{:08x}", rand::random::<u32>());
        let peer = PgSearchPeer::connect(URL, &schema).await?;
        let cases = [
            ("fight", "fight", true),
            ("fgiht", "fight", true),
            ("fihgt", "fight", true),
            ("fighx", "fight", true),
            ("xight", "fight", true),
            ("fght", "fight", true),
            ("fights", "fight", true),
            ("metalica", "metallica", true),
            ("gifht", "fight", false),
            ("fihtg", "fight", false),
            ("fig", "fight", false),
            ("hangzhou", "yangzhou", true),
            ("hangzhou", "lanzhou", false),
        ];
        let outcome = async {
            for (a, b, expected) in cases {
                for (x, y) in [(a, b), (b, a)] {
                    let got: bool = sqlx::query_scalar("SELECT within_one_edit($1, $2)")
                        .bind(x)
                        .bind(y)
                        .fetch_one(&peer.pool)
                        .await?;
                    assert_eq!(got, expected, "{x} / {y}");
                }
            }
            anyhow::Ok(())
        }
        .await;
        peer.drop_schema().await?;
        outcome
    }

    #[test]
    fn csv_rows_escape_quotes_and_arrays() {
        let mut out = Vec::new();
        let event = SyntheticEvent {
            id: "evt_1".into(),
            title: "A \"quoted\" title".into(),
            description: "Line, with comma".into(),
            category: "concert".into(),
            tags: vec!["r&b".into(), "live".into()],
            performers: vec!["O'Brien \"Big\" \\ Band".into()],
            venue_name: "Hall".into(),
            city: "São Paulo".into(),
            country: "BR".into(),
            lat: -23.5,
            lon: -46.25,
            starts_at: chrono::DateTime::UNIX_EPOCH,
            ends_at: chrono::DateTime::UNIX_EPOCH,
            min_price_cents: 500,
            currency: "BRL".into(),
        };
        write_csv_row(&mut out, &event);
        let line = String::from_utf8(out).unwrap_or_default();
        assert!(line.starts_with("\"evt_1\",\"A \"\"quoted\"\" title\",\"Line, with comma\""));
        assert!(
            line.contains(r#""{""O'Brien \""Big\"" \\ Band""}""#),
            "{line}"
        );
        assert!(line.contains("SRID=4326;POINT(-46.25 -23.5)"));
    }
}
