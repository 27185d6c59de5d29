//! One pass over the documents a query matched: the filters that are cheaper on fast fields than
//! in the query (time, price, exact distance, category), the total, the category facets, and the
//! best hits by the requested order.
//!
//! Every order is expressed as a key where smaller is better (relevance is the negated score),
//! tie-broken by a 64-bit hash of the event id, so `(key, id hash)` is a total order and the
//! cursor of a page is simply the last hit's pair: the next page is what comes strictly after it.
//! The hash is a plain `u64` fast field; reading the id itself per candidate meant a dictionary
//! lookup (a zstd-compressed block) each time, which was a third of a query's time at a million
//! events. Two events colliding on both key and hash (odds ~n²/2⁶⁵) could only swap places
//! across a page boundary.

use crate::geo::{distance_km, Area, Point};
use crate::Sort;
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::{Column, StrColumn};
use tantivy::{DocAddress, DocId, Score, SegmentOrdinal, SegmentReader};

pub(crate) mod fields {
    pub const ID_KEY: &str = "id_key";
    pub const CATEGORY: &str = "category";
    pub const LAT: &str = "lat";
    pub const LON: &str = "lon";
    pub const STARTS_AT: &str = "starts_at";
    pub const ENDS_AT: &str = "ends_at";
    pub const PRICE: &str = "min_price_cents";
}

/// Filters applied per candidate, all on fast fields.
#[derive(Debug, Clone, Default)]
pub(crate) struct Filters {
    pub category: Option<String>,
    pub starts_from_ms: Option<i64>,
    pub starts_to_ms: Option<i64>,
    pub min_price_cents: Option<i64>,
    pub max_price_cents: Option<i64>,
    pub now_ms: i64,
    pub area: Option<Area>,
    pub origin: Option<Point>,
}

/// A position in the `(key, id hash)` order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SortKey {
    pub key: f64,
    pub id: u64,
}

impl SortKey {
    fn cmp_parts(key: f64, id: u64, other: &SortKey) -> Ordering {
        key.total_cmp(&other.key).then_with(|| id.cmp(&other.id))
    }
}

/// The tie-break value of an event id (FNV-1a, 64 bits).
pub(crate) fn id_key(id: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in id.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    pub sort: SortKey,
    pub address: DocAddress,
    pub score: Score,
    pub distance_km: Option<f64>,
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Candidate {}
impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        SortKey::cmp_parts(self.sort.key, self.sort.id, &other.sort)
    }
}

#[derive(Debug, Default)]
pub(crate) struct Collected {
    pub total: u64,
    pub facets: HashMap<String, u64>,
    /// Best first, at most `keep`.
    pub top: Vec<Candidate>,
}

pub(crate) struct SearchCollector {
    pub filters: Filters,
    pub sort: Sort,
    pub keep: usize,
    pub after: Option<SortKey>,
}

impl Collector for SearchCollector {
    type Fruit = Collected;
    type Child = SearchSegmentCollector;

    fn for_segment(
        &self,
        segment: SegmentOrdinal,
        reader: &SegmentReader,
    ) -> tantivy::Result<SearchSegmentCollector> {
        let fast = reader.fast_fields();
        let missing = |name: &str| {
            tantivy::TantivyError::SchemaError(format!("fast field {name} is missing"))
        };
        let categories = fast
            .str(fields::CATEGORY)?
            .ok_or_else(|| missing(fields::CATEGORY))?;
        // The wanted category's ordinal in this segment's dictionary; a segment without it
        // still counts facets but yields no hits.
        let wanted_category = match &self.filters.category {
            None => None,
            Some(category) => Some(categories.dictionary().term_ord(category.as_bytes())?),
        };
        let facet_counts = vec![0; categories.num_terms()];
        let filters = &self.filters;
        // Columns are read only when something needs them: each read is a random access.
        let needs_starts = self.sort == Sort::Date
            || filters.starts_from_ms.is_some()
            || filters.starts_to_ms.is_some();
        let needs_price = filters.min_price_cents.is_some() || filters.max_price_cents.is_some();
        let needs_place = filters.area.is_some() || filters.origin.is_some();
        Ok(SearchSegmentCollector {
            segment,
            filters: self.filters.clone(),
            sort: self.sort,
            keep: self.keep,
            after: self.after.clone(),
            place: if needs_place {
                Some((fast.f64(fields::LAT)?, fast.f64(fields::LON)?))
            } else {
                None
            },
            starts: needs_starts
                .then(|| fast.i64(fields::STARTS_AT))
                .transpose()?,
            ends: fast.i64(fields::ENDS_AT)?,
            price: needs_price.then(|| fast.i64(fields::PRICE)).transpose()?,
            ids: fast.u64(fields::ID_KEY)?,
            categories,
            wanted_category,
            facet_counts,
            total: 0,
            heap: BinaryHeap::new(),
        })
    }

    fn requires_scoring(&self) -> bool {
        self.sort == Sort::Relevance
    }

    fn merge_fruits(&self, fruits: Vec<Collected>) -> tantivy::Result<Collected> {
        let mut merged = Collected::default();
        for fruit in fruits {
            merged.total += fruit.total;
            for (category, count) in fruit.facets {
                *merged.facets.entry(category).or_default() += count;
            }
            merged.top.extend(fruit.top);
        }
        merged.top.sort();
        merged.top.truncate(self.keep);
        Ok(merged)
    }
}

pub(crate) struct SearchSegmentCollector {
    segment: SegmentOrdinal,
    filters: Filters,
    sort: Sort,
    keep: usize,
    after: Option<SortKey>,
    place: Option<(Column<f64>, Column<f64>)>,
    starts: Option<Column<i64>>,
    ends: Column<i64>,
    price: Option<Column<i64>>,
    ids: Column<u64>,
    categories: StrColumn,
    wanted_category: Option<Option<u64>>,
    facet_counts: Vec<u64>,
    total: u64,
    /// Max-heap: the worst kept candidate on top.
    heap: BinaryHeap<Candidate>,
}

impl SegmentCollector for SearchSegmentCollector {
    type Fruit = Collected;

    fn collect(&mut self, doc: DocId, score: Score) {
        let filters = &self.filters;
        let ends = self.ends.first(doc).unwrap_or(i64::MIN);
        if ends <= filters.now_ms {
            return;
        }
        let starts = match &self.starts {
            Some(column) => column.first(doc).unwrap_or(i64::MIN),
            None => 0,
        };
        if filters.starts_from_ms.is_some_and(|from| starts < from)
            || filters.starts_to_ms.is_some_and(|to| starts > to)
        {
            return;
        }
        if let Some(column) = &self.price {
            let price = column.first(doc).unwrap_or(0);
            if filters.min_price_cents.is_some_and(|min| price < min)
                || filters.max_price_cents.is_some_and(|max| price > max)
            {
                return;
            }
        }
        let mut distance = None;
        if let Some((lat, lon)) = &self.place {
            let (Some(lat), Some(lon)) = (lat.first(doc), lon.first(doc)) else {
                return;
            };
            let point = Point { lat, lon };
            if filters.area.is_some_and(|area| !area.contains(point)) {
                return;
            }
            distance = filters.origin.map(|origin| distance_km(origin, point));
        }
        let category = self.categories.term_ords(doc).next();
        if let Some(ord) = category {
            if let Some(count) = usize::try_from(ord)
                .ok()
                .and_then(|ord| self.facet_counts.get_mut(ord))
            {
                *count += 1;
            }
        }
        if let Some(wanted) = self.wanted_category {
            if wanted.is_none() || wanted != category {
                return;
            }
        }
        self.total += 1;

        let key = match self.sort {
            Sort::Relevance => -f64::from(score),
            Sort::Date => starts as f64,
            Sort::Distance => distance.unwrap_or(f64::INFINITY),
        };
        // Cheap rejections first, on the key alone; the id is read only when it decides.
        if let Some(after) = &self.after {
            if key < after.key {
                return;
            }
        }
        let full = self.heap.len() >= self.keep;
        if full {
            if let Some(worst) = self.heap.peek() {
                if key > worst.sort.key {
                    return;
                }
            }
        }
        let id = self.ids.first(doc).unwrap_or(0);
        if let Some(after) = &self.after {
            if SortKey::cmp_parts(key, id, after) != Ordering::Greater {
                return;
            }
        }
        if full {
            if let Some(worst) = self.heap.peek() {
                if SortKey::cmp_parts(key, id, &worst.sort) != Ordering::Less {
                    return;
                }
            }
            self.heap.pop();
        }
        self.heap.push(Candidate {
            sort: SortKey { key, id },
            address: DocAddress::new(self.segment, doc),
            score,
            distance_km: distance,
        });
    }

    fn harvest(self) -> Collected {
        let mut facets = HashMap::new();
        let mut name = String::new();
        for (ord, count) in self.facet_counts.iter().enumerate() {
            if *count == 0 {
                continue;
            }
            name.clear();
            if let Ok(true) = self.categories.ord_to_str(ord as u64, &mut name) {
                facets.insert(name.clone(), *count);
            }
        }
        Collected {
            total: self.total,
            facets,
            top: self.heap.into_sorted_vec(),
        }
    }
}
