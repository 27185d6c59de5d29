//! The Tantivy index of events: schema, writes with the outbox position, and the three reads.

use crate::analysis::{self, Clause, FOLDED, STEMMED};
use crate::collect::{fields, id_key, Candidate, Filters, SearchCollector, SortKey};
use crate::geo::{point_cells, Point};
use crate::vector::{self, Packed};
use crate::{Hit, SearchDocument, SearchError, SearchRequest, SearchResults, Sort};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tantivy::collector::TopDocs;
use tantivy::query::{
    AllQuery, BooleanQuery, BoostQuery, FuzzyTermQuery, Occur, PhraseQuery, Query, TermQuery,
    TermSetQuery,
};
use tantivy::schema::{
    Field, IndexRecordOption, NumericOptions, Schema, TextFieldIndexing, TextOptions, Value, FAST,
    STORED, STRING,
};
use tantivy::tokenizer::TextAnalyzer;
use tantivy::{doc, Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

#[derive(Debug, Clone)]
pub struct IndexOptions {
    /// Where the index lives; `None` keeps it in memory (tests).
    pub path: Option<PathBuf>,
    /// Memory the writer may buffer before it flushes a segment (Tantivy's minimum is 15 MB per
    /// indexing thread).
    pub writer_memory_bytes: usize,
    pub writer_threads: usize,
    /// Query cache entries.
    pub cache_entries: u64,
}

impl Default for IndexOptions {
    fn default() -> Self {
        IndexOptions {
            path: None,
            writer_memory_bytes: 64 << 20,
            writer_threads: 1,
            cache_entries: 10_000,
        }
    }
}

/// Field boosts: title > performers > tags > venue/city > description.
const BOOST_TITLE: f32 = 4.0;
const BOOST_PERFORMERS: f32 = 3.0;
const BOOST_TAGS: f32 = 2.0;
const BOOST_PLACE: f32 = 1.5;
const BOOST_DESCRIPTION: f32 = 1.0;
/// A fuzzy or prefix match is worth less than the word itself (the word spelled right ranks first).
const BOOST_FUZZY: f32 = 0.6;
const BOOST_PREFIX: f32 = 0.8;

#[derive(Clone, Copy)]
struct Fields {
    id: Field,
    id_key: Field,
    source: Field,
    category: Field,
    title: Field,
    performers: Field,
    tags: Field,
    place: Field,
    description: Field,
    any_stemmed: Field,
    any_folded: Field,
    cells: Field,
    lat: Field,
    lon: Field,
    starts_at: Field,
    ends_at: Field,
    price: Field,
    vector: [Field; vector::WORDS],
}

impl Fields {
    fn boosted(&self) -> [(Field, f32); 5] {
        [
            (self.title, BOOST_TITLE),
            (self.performers, BOOST_PERFORMERS),
            (self.tags, BOOST_TAGS),
            (self.place, BOOST_PLACE),
            (self.description, BOOST_DESCRIPTION),
        ]
    }
}

fn schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let text = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(STEMMED)
            .set_index_option(IndexRecordOption::WithFreqsAndPositions),
    );
    let catch_all = |tokenizer: &str| {
        TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(tokenizer)
                .set_index_option(IndexRecordOption::Basic),
        )
    };
    let fast_i64 = NumericOptions::default().set_fast();
    let vector = std::array::from_fn(|i| builder.add_u64_field(&format!("v{i}"), FAST));
    let fields = Fields {
        id: builder.add_text_field("id", STRING),
        id_key: builder.add_u64_field(fields::ID_KEY, FAST),
        source: builder.add_text_field("source", STORED),
        category: builder.add_text_field(fields::CATEGORY, STRING | FAST),
        title: builder.add_text_field("title", text.clone()),
        performers: builder.add_text_field("performers", text.clone()),
        tags: builder.add_text_field("tags", text.clone()),
        place: builder.add_text_field("place", text.clone()),
        description: builder.add_text_field("description", text),
        any_stemmed: builder.add_text_field("any_stemmed", catch_all(STEMMED)),
        any_folded: builder.add_text_field("any_folded", catch_all(FOLDED)),
        cells: builder.add_text_field("cells", STRING),
        lat: builder.add_f64_field(fields::LAT, FAST),
        lon: builder.add_f64_field(fields::LON, FAST),
        starts_at: builder.add_i64_field(fields::STARTS_AT, fast_i64.clone()),
        ends_at: builder.add_i64_field(fields::ENDS_AT, fast_i64.clone()),
        price: builder.add_i64_field(fields::PRICE, fast_i64),
        vector,
    };
    (builder.build(), fields)
}

/// The event index of one node. Cheap to share (`Arc`); reads run concurrently with the writer.
pub struct EventIndex {
    index: Index,
    reader: IndexReader,
    writer: Mutex<IndexWriter>,
    fields: Fields,
    cache: moka::sync::Cache<String, Arc<SearchResults>>,
}

impl EventIndex {
    pub fn open(options: &IndexOptions) -> Result<EventIndex, SearchError> {
        let (schema, fields) = schema();
        let index = match &options.path {
            None => Index::create_in_ram(schema),
            Some(path) => {
                std::fs::create_dir_all(path)
                    .map_err(|error| SearchError::Task(format!("{}: {error}", path.display())))?;
                let directory = tantivy::directory::MmapDirectory::open(path)?;
                match Index::open_or_create(directory, schema.clone()) {
                    Ok(index) => index,
                    // An index written by another version of the schema is a cache of the
                    // catalog, not data: start it again and let the indexer rebuild it.
                    Err(tantivy::TantivyError::SchemaError(reason)) => {
                        tracing::warn!(%reason, path = %path.display(), "search index schema changed; rebuilding");
                        std::fs::remove_dir_all(path)
                            .and_then(|()| std::fs::create_dir_all(path))
                            .map_err(|error| {
                                SearchError::Task(format!("{}: {error}", path.display()))
                            })?;
                        Index::create_in_dir(path, schema)?
                    }
                    Err(error) => return Err(error.into()),
                }
            }
        };
        index.tokenizers().register(STEMMED, analysis::stemmed());
        index.tokenizers().register(FOLDED, analysis::folded());
        let writer = index.writer_with_num_threads(
            options.writer_threads.max(1),
            options.writer_memory_bytes.max(15 << 20) * options.writer_threads.max(1),
        )?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok(EventIndex {
            index,
            reader,
            writer: Mutex::new(writer),
            fields,
            cache: moka::sync::Cache::new(options.cache_entries),
        })
    }

    /// The outbox position the last commit covered (0 for a new index).
    pub fn committed_position(&self) -> Result<i64, SearchError> {
        let metas = self.index.load_metas()?;
        Ok(metas
            .payload
            .and_then(|payload| payload.parse().ok())
            .unwrap_or(0))
    }

    /// Documents visible to searches now.
    pub fn num_docs(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// Adds or replaces events (by id). Visible after the next [`EventIndex::commit`].
    pub fn upsert(&self, documents: &[SearchDocument]) -> Result<(), SearchError> {
        let writer = self.writer()?;
        for document in documents {
            writer.delete_term(Term::from_field_text(self.fields.id, &document.id));
            writer.add_document(self.tantivy_document(document))?;
        }
        Ok(())
    }

    /// Removes events (cancelled, unpublished, ended). Visible after the next commit.
    pub fn delete(&self, ids: &[String]) -> Result<(), SearchError> {
        let writer = self.writer()?;
        for id in ids {
            writer.delete_term(Term::from_field_text(self.fields.id, id));
        }
        Ok(())
    }

    /// Removes every document (a rebuild starts with this).
    pub fn clear(&self) -> Result<(), SearchError> {
        self.writer()?.delete_all_documents()?;
        Ok(())
    }

    /// Makes pending writes durable and visible, recording that they cover the outbox up to
    /// `position`. Blocking (it syncs files): call it off the async runtime.
    pub fn commit(&self, position: i64) -> Result<(), SearchError> {
        {
            let mut writer = self.writer()?;
            let mut prepared = writer.prepare_commit()?;
            prepared.set_payload(&position.to_string());
            prepared.commit()?;
        }
        self.reader.reload()?;
        self.cache.invalidate_all();
        Ok(())
    }

    /// Merges every segment into one and waits (the benchmark uses it to measure a settled index).
    pub fn merge_all(&self) -> Result<(), SearchError> {
        let ids = self.index.searchable_segment_ids()?;
        if ids.len() > 1 {
            let mut writer = self.writer()?;
            let _ = writer.merge(&ids).wait()?;
        }
        self.reader.reload()?;
        Ok(())
    }

    fn writer(&self) -> Result<std::sync::MutexGuard<'_, IndexWriter>, SearchError> {
        self.writer
            .lock()
            .map_err(|_| SearchError::Task("the index writer panicked".into()))
    }

    fn tantivy_document(&self, d: &SearchDocument) -> TantivyDocument {
        let f = &self.fields;
        let performers = d.performers.join(" \u{2022} ");
        let tags = format!("{} {}", d.tags.join(" "), d.category);
        let place = format!("{} {} {}", d.venue_name, d.city, d.country);
        let any = format!("{} {} {} {}", d.title, performers, tags, place);
        let source = serde_json::to_string(d).unwrap_or_default();
        let mut document = doc!(
            f.id => d.id.as_str(),
            f.id_key => id_key(&d.id),
            f.source => source,
            f.category => d.category.as_str(),
            f.title => d.title.as_str(),
            f.performers => performers,
            f.tags => tags,
            f.place => place,
            f.description => d.description.as_str(),
            f.any_stemmed => any.as_str(),
            f.any_folded => any.as_str(),
            f.lat => d.lat,
            f.lon => d.lon,
            f.starts_at => d.starts_at.timestamp_millis(),
            f.ends_at => d.ends_at.timestamp_millis(),
            f.price => d.min_price_cents,
        );
        for cell in point_cells(Point {
            lat: d.lat,
            lon: d.lon,
        }) {
            document.add_text(f.cells, cell);
        }
        for (field, word) in f.vector.iter().zip(vector::embed(d)) {
            document.add_u64(*field, word);
        }
        document
    }

    /// Runs a search. Results of an identical request are served from the query cache until the
    /// next commit.
    pub fn search(&self, request: &SearchRequest) -> Result<SearchResults, SearchError> {
        let mut request = request.clone();
        // Time in steps of 10 s: close enough for "not ended" and it lets the cache work.
        let now_ms = request.now.timestamp_millis();
        request.now = chrono::DateTime::from_timestamp_millis(now_ms - now_ms.rem_euclid(10_000))
            .unwrap_or(request.now);
        let key = format!("{request:?}");
        if let Some(hit) = self.cache.get(&key) {
            return Ok((*hit).clone());
        }
        let results = self.run_search(&request)?;
        self.cache.insert(key, Arc::new(results.clone()));
        Ok(results)
    }

    fn run_search(&self, request: &SearchRequest) -> Result<SearchResults, SearchError> {
        validate(request)?;
        let after = request
            .cursor
            .as_deref()
            .map(|cursor| decode_cursor(cursor, request.sort))
            .transpose()?;
        let query = self.build_query(request)?;
        let collector = SearchCollector {
            filters: Filters {
                category: request.category.clone(),
                starts_from_ms: request.starts_from.map(|t| t.timestamp_millis()),
                starts_to_ms: request.starts_to.map(|t| t.timestamp_millis()),
                min_price_cents: request.min_price_cents,
                max_price_cents: request.max_price_cents,
                now_ms: request.now.timestamp_millis(),
                area: request.area,
                origin: request.origin,
            },
            sort: request.sort,
            keep: request.limit + 1,
            after,
        };
        let searcher = self.reader.searcher();
        let mut collected = searcher.search(&*query, &collector)?;
        let more = collected.top.len() > request.limit;
        collected.top.truncate(request.limit);
        let next_cursor = if more {
            collected
                .top
                .last()
                .map(|last| encode_cursor(request.sort, &last.sort))
        } else {
            None
        };
        let hits = collected
            .top
            .iter()
            .map(|candidate| self.hit(&searcher, candidate, request.sort))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SearchResults {
            total: collected.total,
            hits,
            facets: collected.facets.into_iter().collect(),
            next_cursor,
        })
    }

    fn hit(
        &self,
        searcher: &tantivy::Searcher,
        candidate: &Candidate,
        sort: Sort,
    ) -> Result<Hit, SearchError> {
        let document = self.source(searcher, candidate.address)?;
        Ok(Hit {
            document,
            score: (sort == Sort::Relevance).then_some(candidate.score),
            distance_km: candidate.distance_km,
        })
    }

    fn source(
        &self,
        searcher: &tantivy::Searcher,
        address: tantivy::DocAddress,
    ) -> Result<SearchDocument, SearchError> {
        let stored: TantivyDocument = searcher.doc(address)?;
        let text = stored
            .get_first(self.fields.source)
            .and_then(|value| value.as_str())
            .unwrap_or_default();
        serde_json::from_str(text).map_err(|error| {
            SearchError::Index(tantivy::TantivyError::InternalError(format!(
                "stored event does not parse: {error}"
            )))
        })
    }

    fn build_query(&self, request: &SearchRequest) -> Result<Box<dyn Query>, SearchError> {
        let mut must: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        if let Some(text) = &request.text {
            let clauses = self.text_clauses(text)?;
            if clauses.is_empty() {
                return Err(SearchError::invalid(
                    "q",
                    "must contain at least one letter or digit",
                ));
            }
            must.extend(clauses.into_iter().map(|clause| (Occur::Must, clause)));
        }
        if let Some(cells) = request.area.and_then(|area| area.covering()) {
            let terms = cells
                .iter()
                .map(|cell| Term::from_field_text(self.fields.cells, cell));
            must.push((Occur::Must, Box::new(TermSetQuery::new(terms))));
        }
        Ok(match must.len() {
            0 => Box::new(AllQuery),
            _ => Box::new(BooleanQuery::new(must)),
        })
    }

    /// One query per word or phrase; a document must match them all.
    fn text_clauses(&self, text: &str) -> Result<Vec<Box<dyn Query>>, SearchError> {
        let mut stemmed = analysis::stemmed();
        let mut folded = analysis::folded();
        let parsed = analysis::parse_query(text);
        let mut clauses: Vec<Box<dyn Query>> = Vec::new();
        for clause in parsed {
            match clause {
                Clause::Word { text, last } => {
                    let stems = analysis::tokens(&mut stemmed, &text);
                    let plain = analysis::tokens(&mut folded, &text);
                    // "rock'n'roll" is three tokens: each must match, the last may be a prefix.
                    let count = stems.len().min(plain.len());
                    for (i, (stem, word)) in stems.iter().zip(&plain).enumerate() {
                        let prefix = last && i + 1 == count;
                        clauses.push(self.word_query(stem, word, prefix));
                    }
                }
                Clause::Phrase(phrase) => {
                    let stems = analysis::tokens(&mut stemmed, &phrase);
                    match stems.len() {
                        0 => {}
                        1 => clauses.push(self.word_query(&stems[0], &stems[0], false)),
                        _ => clauses.push(self.phrase_query(&stems)),
                    }
                }
            }
            if clauses.len() > SearchRequest::MAX_WORDS {
                return Err(SearchError::invalid(
                    "q",
                    format!("must have at most {} words", SearchRequest::MAX_WORDS),
                ));
            }
        }
        Ok(clauses)
    }

    fn word_query(&self, stem: &str, word: &str, prefix: bool) -> Box<dyn Query> {
        let mut should: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for (field, boost) in self.fields.boosted() {
            let term = TermQuery::new(
                Term::from_field_text(field, stem),
                IndexRecordOption::WithFreqs,
            );
            should.push((
                Occur::Should,
                Box::new(BoostQuery::new(Box::new(term), boost)),
            ));
        }
        let distance = analysis::fuzzy_distance(word.chars().count());
        if distance > 0 {
            let fuzzy = FuzzyTermQuery::new(
                Term::from_field_text(self.fields.any_stemmed, stem),
                distance,
                true,
            );
            should.push((
                Occur::Should,
                Box::new(BoostQuery::new(Box::new(fuzzy), BOOST_FUZZY)),
            ));
        }
        if prefix {
            let prefix = FuzzyTermQuery::new_prefix(
                Term::from_field_text(self.fields.any_folded, word),
                0,
                true,
            );
            should.push((
                Occur::Should,
                Box::new(BoostQuery::new(Box::new(prefix), BOOST_PREFIX)),
            ));
        }
        Box::new(BooleanQuery::new(should))
    }

    fn phrase_query(&self, stems: &[String]) -> Box<dyn Query> {
        let should = self
            .fields
            .boosted()
            .into_iter()
            .map(|(field, boost)| {
                let terms = stems
                    .iter()
                    .map(|stem| Term::from_field_text(field, stem))
                    .collect();
                let phrase: Box<dyn Query> =
                    Box::new(BoostQuery::new(Box::new(PhraseQuery::new(terms)), boost));
                (Occur::Should, phrase)
            })
            .collect();
        Box::new(BooleanQuery::new(should))
    }

    /// Titles of upcoming events matching what has been typed so far, best first, distinct.
    pub fn suggest(
        &self,
        prefix: &str,
        limit: usize,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<String>, SearchError> {
        let mut request = SearchRequest::new(now);
        request.text = Some(prefix.to_string());
        request.sort = Sort::Relevance;
        request.limit = (limit * 3).clamp(1, SearchRequest::MAX_LIMIT);
        let results = self.search(&request)?;
        let mut titles: Vec<String> = Vec::new();
        for hit in results.hits {
            if !titles.contains(&hit.document.title) {
                titles.push(hit.document.title);
            }
            if titles.len() == limit {
                break;
            }
        }
        Ok(titles)
    }

    /// Upcoming events most like `id` by vector similarity, best first; the score is the cosine.
    pub fn similar(
        &self,
        id: &str,
        limit: usize,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<Hit>, SearchError> {
        let searcher = self.reader.searcher();
        let query = TermQuery::new(
            Term::from_field_text(self.fields.id, id),
            IndexRecordOption::Basic,
        );
        let found = searcher.search(&query, &TopDocs::with_limit(1))?;
        let Some((_, address)) = found.first() else {
            return Err(SearchError::NotFound);
        };
        let segment = searcher.segment_reader(address.segment_ord);
        let target = self.read_vector(segment)?;
        let probe: Packed = std::array::from_fn(|i| target[i].first(address.doc_id).unwrap_or(0));

        let now_ms = now.timestamp_millis();
        let mut best: std::collections::BinaryHeap<std::cmp::Reverse<(i32, u32, u32)>> =
            std::collections::BinaryHeap::new();
        for (segment_ord, reader) in searcher.segment_readers().iter().enumerate() {
            let columns = self.read_vector(reader)?;
            let ends = reader.fast_fields().i64(fields::ENDS_AT)?;
            let alive = reader.alive_bitset();
            for doc in 0..reader.max_doc() {
                if alive.is_some_and(|bits| !bits.is_alive(doc))
                    || (segment_ord as u32 == address.segment_ord && doc == address.doc_id)
                    || ends.first(doc).unwrap_or(i64::MIN) <= now_ms
                {
                    continue;
                }
                let candidate: Packed = std::array::from_fn(|i| columns[i].first(doc).unwrap_or(0));
                let score = vector::dot(&probe, &candidate);
                let entry = std::cmp::Reverse((score, segment_ord as u32, doc));
                if best.len() < limit {
                    best.push(entry);
                } else if best.peek().is_some_and(|worst| entry < *worst) {
                    best.pop();
                    best.push(entry);
                }
            }
        }
        let mut ranked: Vec<_> = best.into_iter().map(|r| r.0).collect();
        ranked.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        ranked
            .into_iter()
            .map(|(score, segment_ord, doc)| {
                let document =
                    self.source(&searcher, tantivy::DocAddress::new(segment_ord, doc))?;
                Ok(Hit {
                    document,
                    score: Some(vector::cosine(score)),
                    distance_km: None,
                })
            })
            .collect()
    }

    fn read_vector(
        &self,
        reader: &tantivy::SegmentReader,
    ) -> Result<Vec<tantivy::columnar::Column<u64>>, SearchError> {
        (0..vector::WORDS)
            .map(|i| Ok(reader.fast_fields().u64(&format!("v{i}"))?))
            .collect()
    }

    /// The analyzer queries use (exposed for tests of the analysis itself).
    pub fn analyzer() -> TextAnalyzer {
        analysis::stemmed()
    }
}

fn validate(request: &SearchRequest) -> Result<(), SearchError> {
    if let Some(text) = &request.text {
        if text.trim().is_empty() {
            return Err(SearchError::invalid("q", "must not be empty"));
        }
        if text.chars().count() > SearchRequest::MAX_TEXT_CHARS {
            return Err(SearchError::invalid(
                "q",
                format!(
                    "must be at most {} characters",
                    SearchRequest::MAX_TEXT_CHARS
                ),
            ));
        }
    }
    if request.limit == 0 || request.limit > SearchRequest::MAX_LIMIT {
        return Err(SearchError::invalid(
            "limit",
            format!("must be 1..={}", SearchRequest::MAX_LIMIT),
        ));
    }
    if request.sort == Sort::Distance && request.origin.is_none() {
        return Err(SearchError::invalid("sort", "distance needs lat and lon"));
    }
    Ok(())
}

fn encode_cursor(sort: Sort, key: &SortKey) -> String {
    let raw = format!("{}|{:016x}|{:016x}", sort.tag(), key.key.to_bits(), key.id);
    URL_SAFE_NO_PAD.encode(raw)
}

fn decode_cursor(cursor: &str, sort: Sort) -> Result<SortKey, SearchError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| SearchError::BadCursor)?;
    let raw = String::from_utf8(bytes).map_err(|_| SearchError::BadCursor)?;
    let mut parts = raw.splitn(3, '|');
    let (Some(tag), Some(bits), Some(id)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(SearchError::BadCursor);
    };
    if tag.len() != 1 || !tag.starts_with(sort.tag()) || bits.len() != 16 || id.len() != 16 {
        return Err(SearchError::BadCursor);
    }
    let bits = u64::from_str_radix(bits, 16).map_err(|_| SearchError::BadCursor)?;
    let id = u64::from_str_radix(id, 16).map_err(|_| SearchError::BadCursor)?;
    let key = f64::from_bits(bits);
    if key.is_nan() {
        return Err(SearchError::BadCursor);
    }
    Ok(SortKey { key, id })
}
