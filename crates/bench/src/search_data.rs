//! Synthetic but realistic events and queries for `marquee-bench search`.
//!
//! Both search engines under comparison (Tantivy in `marquee-search` and the PostgreSQL peer in
//! [`crate::search_pg`]) load exactly the events produced here and answer exactly the
//! queries produced here, so the generator is seeded and deterministic: the same `(count, seed)`
//! gives the same events on any machine and with any number of threads (each chunk of events has
//! its own RNG derived from the seed and the chunk index).
//!
//! Realism that matters for search benchmarks:
//! - term frequencies follow a Zipf-ish spread (performers, adjectives, nouns, cities are drawn
//!   with weights `1/(rank+k)^s`), so posting lists have the usual long tail;
//! - cities are real places (the embedded GeoNames extract of [`marquee::demo::cities`]), weighted
//!   by population rank, and each city has a fixed set of venues a few km from its centre, so
//!   geographic density is lumpy as in reality;
//! - text mixes famous names (Metallica, Adele, Swan Lake…) with hundreds of invented ones, and
//!   includes accented names (Beyoncé, Dvořák, Müller) so accent folding is exercised.
//!
//! Start times depend on the current day (UTC midnight), because the engines filter out events
//! that have already ended; [`generate_at`] takes the base instant explicitly.

use anyhow::Context;
use chrono::{DateTime, Duration, TimeZone, Utc};
use rand::distributions::{Distribution, WeightedIndex};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Debug, Clone)]
pub struct SyntheticEvent {
    pub id: String,
    pub title: String,
    pub description: String,
    /// One of [`CATEGORIES`].
    pub category: String,
    /// Lowercase, 2–5.
    pub tags: Vec<String>,
    pub performers: Vec<String>,
    pub venue_name: String,
    pub city: String,
    /// ISO 3166-1 alpha-2.
    pub country: String,
    pub lat: f64,
    pub lon: f64,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    /// In the currency's minor unit (ISO 4217 exponent; yen have none).
    pub min_price_cents: i64,
    pub currency: String,
}

pub const CATEGORIES: [&str; 8] = [
    "concert",
    "theatre",
    "comedy",
    "sports",
    "festival",
    "classical",
    "family",
    "conference",
];

/// Share of each category, same order as [`CATEGORIES`].
const CATEGORY_WEIGHTS: [u32; 8] = [30, 15, 12, 15, 5, 8, 8, 7];

/// Seeded and deterministic; see the module documentation. Start times are spread over the 365
/// days following today (UTC).
pub fn generate(count: usize, seed: u64) -> anyhow::Result<Vec<SyntheticEvent>> {
    let today = Utc::now().date_naive().and_time(chrono::NaiveTime::MIN);
    generate_at(count, seed, Utc.from_utc_datetime(&today))
}

/// [`generate`] with an explicit base instant: events start between 1 and 366 days after it.
pub fn generate_at(
    count: usize,
    seed: u64,
    base: DateTime<Utc>,
) -> anyhow::Result<Vec<SyntheticEvent>> {
    let vocab = Vocab::build()?;
    let chunks = count.div_ceil(CHUNK);
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, chunks.max(1));
    let chunks_per_thread = chunks.div_ceil(threads);
    let mut parts: Vec<Vec<SyntheticEvent>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let vocab = &vocab;
                scope.spawn(move || {
                    let first = t * chunks_per_thread;
                    let last = ((t + 1) * chunks_per_thread).min(chunks);
                    let mut out = Vec::new();
                    for chunk in first..last {
                        let start = chunk * CHUNK;
                        let end = (start + CHUNK).min(count);
                        let mut rng = StdRng::seed_from_u64(mix(seed, chunk as u64));
                        out.reserve(end - start);
                        for i in start..end {
                            out.push(vocab.event(i, base, &mut rng));
                        }
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("event generator thread panicked"))
            })
            .collect::<anyhow::Result<_>>()
    })?;
    let mut events = std::mem::take(&mut parts[0]);
    events.reserve_exact(count - events.len());
    for part in parts.into_iter().skip(1) {
        events.extend(part);
    }
    Ok(events)
}

#[derive(Debug, Clone)]
pub struct BenchQuery {
    /// 2–3 lowercase words of a real event (title, performer or city words) with one typo in a
    /// word of 5+ letters; `None` for geo-only queries.
    pub text: Option<String>,
    pub lat: f64,
    pub lon: f64,
    pub radius_km: f64,
}

/// Fuzzy + geo queries: words from an event, centred within 15 km of that event's venue (which is
/// itself a few km from the city centre) with a radius of 25–200 km, so the source event is
/// always inside the circle and most queries have hits.
pub fn fuzzy_geo_queries(events: &[SyntheticEvent], count: usize, seed: u64) -> Vec<BenchQuery> {
    let mut rng = StdRng::seed_from_u64(mix(seed, 0xF022_1E55));
    let mut queries = Vec::with_capacity(count);
    if events.is_empty() {
        return queries;
    }
    while queries.len() < count {
        let event = &events[rng.gen_range(0..events.len())];
        if let Some(query) = fuzzy_geo_query_for(event, &mut rng) {
            queries.push(query);
        }
    }
    queries
}

/// Geo-only "near me": a point within 15 km of a random event's venue, radius 50 km, text `None`.
pub fn near_me_queries(events: &[SyntheticEvent], count: usize, seed: u64) -> Vec<BenchQuery> {
    let mut rng = StdRng::seed_from_u64(mix(seed, 0x0E4B_0E4B));
    if events.is_empty() {
        return Vec::new();
    }
    (0..count)
        .map(|_| {
            let event = &events[rng.gen_range(0..events.len())];
            let (lat, lon) = jitter(event.lat, event.lon, 15.0, &mut rng);
            BenchQuery {
                text: None,
                lat,
                lon,
                radius_km: 50.0,
            }
        })
        .collect()
}

/// One fuzzy + geo query built from `event`; `None` when the event has fewer than two searchable
/// words or none long enough to carry a typo (the caller then picks another event).
pub fn fuzzy_geo_query_for(event: &SyntheticEvent, rng: &mut impl Rng) -> Option<BenchQuery> {
    let mut candidates: Vec<String> = Vec::new();
    let sources = std::iter::once(event.title.as_str())
        .chain(event.performers.iter().map(String::as_str))
        .chain(std::iter::once(event.city.as_str()));
    for source in sources {
        for word in query_words(source) {
            if !candidates.contains(&word) {
                candidates.push(word);
            }
        }
    }
    let long: Vec<usize> = (0..candidates.len())
        .filter(|&i| candidates[i].chars().count() >= 5)
        .collect();
    if long.is_empty() || candidates.len() < 2 {
        return None;
    }
    let typo_index = long[rng.gen_range(0..long.len())];
    let wanted = rng.gen_range(2..=3usize).min(candidates.len());
    let mut others: Vec<usize> = (0..candidates.len()).filter(|&i| i != typo_index).collect();
    let mut chosen = vec![typo_index];
    while chosen.len() < wanted && !others.is_empty() {
        chosen.push(others.swap_remove(rng.gen_range(0..others.len())));
    }
    // Words keep their order of appearance, as a person would type them.
    chosen.sort_unstable();
    let text = chosen
        .iter()
        .map(|&i| {
            if i == typo_index {
                typo(&candidates[i], rng)
            } else {
                candidates[i].clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    let (lat, lon) = jitter(event.lat, event.lon, 15.0, rng);
    Some(BenchQuery {
        text: Some(text),
        lat,
        lon,
        radius_km: f64::from(rng.gen_range(25u32..=200)),
    })
}

/// Lowercase words of `text` a person could search for: letters and digits only, 3+ characters,
/// no stop words (which both engines would ignore or match everywhere).
fn query_words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() >= 3)
        .map(str::to_lowercase)
        .filter(|w| !STOP_WORDS.contains(&w.as_str()))
}

/// Words nobody searches for: the English stop words of 3+ letters (PostgreSQL's `english`
/// configuration drops them, so both engines must not depend on them) plus a few that occur in
/// almost every title.
#[rustfmt::skip]
const STOP_WORDS: [&str; 109] = [
    "myself", "our", "ours", "ourselves", "you", "your", "yours", "yourself", "yourselves", "him",
    "his", "himself", "she", "her", "hers", "herself", "its", "itself", "they", "them", "their",
    "theirs", "themselves", "what", "which", "who", "whom", "this", "that", "these", "those",
    "are", "was", "were", "been", "being", "have", "has", "had", "having", "does", "did", "doing",
    "the", "and", "but", "because", "until", "while", "for", "with", "about", "against", "between",
    "into", "through", "during", "before", "after", "above", "below", "from", "down", "out", "off",
    "over", "under", "again", "further", "then", "once", "here", "there", "when", "where", "why",
    "how", "all", "any", "both", "each", "few", "more", "most", "other", "some", "such", "nor",
    "not", "only", "own", "same", "than", "too", "very", "can", "will", "just", "don", "should",
    "now", "live", "los", "las", "del", "der", "die", "das", "les",
];

/// One edit — drop, swap of two adjacent letters, or substitution — that changes the word.
fn typo(word: &str, rng: &mut impl Rng) -> String {
    let mut chars: Vec<char> = word.chars().collect();
    loop {
        match rng.gen_range(0..3) {
            0 => {
                chars.remove(rng.gen_range(0..chars.len()));
            }
            1 => {
                let i = rng.gen_range(0..chars.len() - 1);
                if chars[i] == chars[i + 1] {
                    continue;
                }
                chars.swap(i, i + 1);
            }
            _ => {
                let i = rng.gen_range(0..chars.len());
                let replacement = char::from(b'a' + rng.gen_range(0..26u8));
                if chars[i] == replacement {
                    continue;
                }
                chars[i] = replacement;
            }
        }
        return chars.into_iter().collect();
    }
}

/// A point uniformly distributed in a disc of `max_km` around (lat, lon).
fn jitter(lat: f64, lon: f64, max_km: f64, rng: &mut impl Rng) -> (f64, f64) {
    let distance = max_km * rng.gen::<f64>().sqrt();
    let bearing = rng.gen::<f64>() * std::f64::consts::TAU;
    let dlat = distance * bearing.cos() / 111.32;
    // Near the poles the cosine vanishes; the floor keeps longitude offsets finite.
    let dlon = distance * bearing.sin() / (111.32 * lat.to_radians().cos().max(0.01));
    let lat = (lat + dlat).clamp(-90.0, 90.0);
    let mut lon = lon + dlon;
    if lon > 180.0 {
        lon -= 360.0;
    } else if lon < -180.0 {
        lon += 360.0;
    }
    (lat, lon)
}

/// SplitMix64 finaliser: decorrelates the per-chunk seeds derived from one user seed.
fn mix(seed: u64, salt: u64) -> u64 {
    let mut z = seed ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

const CHUNK: usize = 1 << 15;

/// A list drawn from with Zipf-ish weights `1/(rank+offset)^exponent`.
struct Zipf<T> {
    items: Vec<T>,
    index: WeightedIndex<f64>,
}

impl<T> Zipf<T> {
    fn new(items: Vec<T>, offset: f64, exponent: f64) -> anyhow::Result<Self> {
        let weights = (0..items.len()).map(|rank| (rank as f64 + offset).powf(-exponent));
        let index = WeightedIndex::new(weights).context("building a Zipf distribution")?;
        Ok(Zipf { items, index })
    }

    fn pick(&self, rng: &mut impl Rng) -> &T {
        &self.items[self.index.sample(rng)]
    }
}

fn zipf_str(
    items: &[&'static str],
    offset: f64,
    exponent: f64,
) -> anyhow::Result<Zipf<&'static str>> {
    Zipf::new(items.to_vec(), offset, exponent)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum VenueKind {
    Arena,
    Stadium,
    Theatre,
    ConcertHall,
    Club,
    ConventionCentre,
    Park,
}

const VENUE_KINDS: [VenueKind; 7] = [
    VenueKind::Arena,
    VenueKind::Stadium,
    VenueKind::Theatre,
    VenueKind::ConcertHall,
    VenueKind::Club,
    VenueKind::ConventionCentre,
    VenueKind::Park,
];

struct Venue {
    name: String,
    lat: f64,
    lon: f64,
}

struct CityEntry {
    name: String,
    country: String,
    currency: &'static str,
    /// Minor units of the local currency worth about one US cent.
    per_usd_cent: f64,
    /// UTC offset in hours, estimated from longitude; good enough to put shows in the evening.
    utc_offset: f64,
    /// One list per [`VENUE_KINDS`] entry.
    venues: Vec<Vec<Venue>>,
}

struct Artist {
    name: String,
    genre: &'static str,
    tour: Option<&'static str>,
}

/// All word lists and derived name pools. Built from a fixed seed so the vocabulary is the same
/// whatever seed the events use.
struct Vocab {
    cities: Vec<CityEntry>,
    city_pick: WeightedIndex<f64>,
    category_pick: WeightedIndex<u32>,
    artists: Zipf<Artist>,
    comedians: Zipf<String>,
    speakers: Zipf<String>,
    actors: Zipf<String>,
    conductors: Zipf<String>,
    ensembles: Zipf<String>,
    companies: Zipf<String>,
    family_shows: Zipf<String>,
    adjectives: Zipf<&'static str>,
    nouns: Zipf<&'static str>,
    plays: Zipf<&'static str>,
    works: Zipf<(&'static str, &'static str)>,
    topics: Zipf<&'static str>,
    genres: Zipf<&'static str>,
    mascots: Zipf<&'static str>,
    sports: Zipf<&'static str>,
    general_tags: Zipf<&'static str>,
}

impl Vocab {
    fn build() -> anyhow::Result<Vocab> {
        let mut rng = StdRng::seed_from_u64(0x6D61_7271_7565_6521);
        let raw = marquee::demo::cities()?;
        anyhow::ensure!(!raw.is_empty(), "the embedded city list is empty");
        let mut cities = Vec::with_capacity(raw.len());
        for (rank, city) in raw.iter().enumerate() {
            let (currency, per_usd_cent) = currency_of(&city.country);
            // Bigger (earlier) cities get more venues of each kind.
            let per_kind = 1 + 6 * 20 / (rank + 20);
            let venues = VENUE_KINDS
                .iter()
                .map(|&kind| {
                    (0..rng.gen_range(1..=per_kind))
                        .map(|_| {
                            let (lat, lon) = jitter(city.lat, city.lon, 8.0, &mut rng);
                            Venue {
                                name: venue_name(kind, &city.name, &mut rng),
                                lat,
                                lon,
                            }
                        })
                        .collect()
                })
                .collect();
            cities.push(CityEntry {
                name: city.name.clone(),
                country: city.country.clone(),
                currency,
                per_usd_cent,
                utc_offset: (city.lon / 15.0).round(),
                venues,
            });
        }
        // The list is ordered by population, so rank is a fair proxy for how many events a city
        // hosts: Shanghai gets ~1.3 % of events, the 1000th city ~0.03 %.
        let city_pick =
            WeightedIndex::new((0..cities.len()).map(|rank| 1.0 / (rank as f64 + 20.0)))
                .context("city weights")?;

        let mut artists: Vec<Artist> = FAMOUS_ARTISTS
            .iter()
            .map(|&(name, genre, tour)| Artist {
                name: name.to_string(),
                genre,
                tour,
            })
            .collect();
        let mut seen: std::collections::HashSet<String> =
            artists.iter().map(|a| a.name.clone()).collect();
        while artists.len() < 420 {
            let name = match rng.gen_range(0..5) {
                0 => format!(
                    "The {} {}",
                    pick(&ADJECTIVES, &mut rng),
                    pick(&BAND_NOUNS, &mut rng)
                ),
                1 => format!(
                    "{} {}",
                    pick(&ADJECTIVES, &mut rng),
                    pick(&BAND_NOUNS, &mut rng)
                ),
                2 => format!("{} {}", pick(&NOUNS, &mut rng), pick(&NOUNS, &mut rng)),
                _ => person(&mut rng),
            };
            if seen.insert(name.clone()) {
                artists.push(Artist {
                    name,
                    genre: pick(&GENRES, &mut rng),
                    tour: None,
                });
            }
        }
        // Famous names stay at the head of the Zipf curve; invented ones are shuffled behind them.
        let mut names = |n: usize, rng: &mut StdRng, famous: &[&str]| -> Vec<String> {
            let mut out: Vec<String> = famous.iter().map(|s| s.to_string()).collect();
            while out.len() < n {
                let name = person(rng);
                if seen.insert(name.clone()) {
                    out.push(name);
                }
            }
            out
        };
        let comedians = names(150, &mut rng, &FAMOUS_COMEDIANS);
        let speakers = names(300, &mut rng, &[]);
        let actors = names(200, &mut rng, &[]);
        let conductors = names(60, &mut rng, &[]);
        let mut ensembles: Vec<String> = Vec::new();
        for city in raw.iter().take(40) {
            ensembles.push(match rng.gen_range(0..4) {
                0 => format!("{} Philharmonic Orchestra", city.name),
                1 => format!("{} Symphony Orchestra", city.name),
                2 => format!("{} Chamber Orchestra", city.name),
                _ => format!("{} Ballet", city.name),
            });
        }
        for _ in 0..30 {
            ensembles.push(format!("{} String Quartet", pick(&LAST_NAMES, &mut rng)));
        }
        let companies: Vec<String> = (0..80)
            .map(|_| match rng.gen_range(0..3) {
                0 => format!(
                    "{} {} Theatre Company",
                    pick(&ADJECTIVES, &mut rng),
                    pick(&NOUNS, &mut rng)
                ),
                1 => format!("The {} Players", pick(&NOUNS, &mut rng)),
                _ => format!("{} Repertory", pick(&LAST_NAMES, &mut rng)),
            })
            .collect();
        let family_shows: Vec<String> = (0..120)
            .map(|_| match rng.gen_range(0..6) {
                0 => format!("{} Adventures Live!", pick(&ANIMALS, &mut rng)),
                1 => format!("Circus {}", pick(&LAST_NAMES, &mut rng)),
                2 => format!(
                    "{} {} on Ice",
                    pick(&ADJECTIVES, &mut rng),
                    pick(&NOUNS, &mut rng)
                ),
                3 => format!("Magic Show with {} the Great", pick(&FIRST_NAMES, &mut rng)),
                4 => format!(
                    "Puppet Theatre: The {} {}",
                    pick(&ADJECTIVES, &mut rng),
                    pick(&ANIMALS, &mut rng)
                ),
                _ => format!("Science Show: {} Lab", pick(&NOUNS, &mut rng)),
            })
            .collect();

        Ok(Vocab {
            cities,
            city_pick,
            category_pick: WeightedIndex::new(CATEGORY_WEIGHTS).context("category weights")?,
            artists: Zipf::new(artists, 2.0, 1.0)?,
            comedians: Zipf::new(comedians, 2.0, 0.9)?,
            speakers: Zipf::new(speakers, 3.0, 0.8)?,
            actors: Zipf::new(actors, 3.0, 0.8)?,
            conductors: Zipf::new(conductors, 2.0, 0.9)?,
            ensembles: Zipf::new(ensembles, 2.0, 0.9)?,
            companies: Zipf::new(companies, 2.0, 0.9)?,
            family_shows: Zipf::new(family_shows, 2.0, 0.9)?,
            adjectives: zipf_str(&ADJECTIVES, 1.0, 0.9)?,
            nouns: zipf_str(&NOUNS, 1.0, 0.9)?,
            plays: zipf_str(&PLAYS, 1.0, 0.9)?,
            works: Zipf::new(WORKS.to_vec(), 1.0, 0.9)?,
            topics: zipf_str(&TOPICS, 1.0, 0.8)?,
            genres: zipf_str(&GENRES, 1.0, 0.8)?,
            mascots: zipf_str(&MASCOTS, 1.0, 0.7)?,
            sports: zipf_str(&SPORTS, 1.0, 0.9)?,
            general_tags: zipf_str(&GENERAL_TAGS, 1.0, 0.8)?,
        })
    }

    fn event(&self, i: usize, base: DateTime<Utc>, rng: &mut StdRng) -> SyntheticEvent {
        let city = &self.cities[self.city_pick.sample(rng)];
        let category = self.category_pick.sample(rng);
        let mut tags: Vec<String> = Vec::with_capacity(5);
        let mut performers: Vec<String> = Vec::with_capacity(3);
        let adj = *self.adjectives.pick(rng);
        let noun = *self.nouns.pick(rng);
        let year = base.format("%Y").to_string();
        // (title, venue kind, duration in minutes, price range in US dollars, first sentence)
        let (title, kind, minutes, (low, high)) = match CATEGORIES[category] {
            "concert" => {
                let artist = self.artists.pick(rng);
                performers.push(artist.name.clone());
                if rng.gen_bool(0.25) {
                    performers.push(self.artists.pick(rng).name.clone());
                }
                tags.push(artist.genre.to_string());
                let title = match (artist.tour, rng.gen_range(0..4)) {
                    (Some(tour), 0 | 1) => format!("{} — {}", artist.name, tour),
                    (_, 0) => format!("{} — {} {} World Tour", artist.name, adj, noun),
                    (_, 1) => format!("{}: {} {} Tour", artist.name, adj, noun),
                    (_, 2) => format!("{} Live in {}", artist.name, city.name),
                    _ => format!("{} — {} Nights", artist.name, adj),
                };
                let kind = [
                    VenueKind::Arena,
                    VenueKind::Stadium,
                    VenueKind::Club,
                    VenueKind::ConcertHall,
                ][rng.gen_range(0..4)];
                (title, kind, rng.gen_range(120..=180), (35, 180))
            }
            "theatre" => {
                let play = *self.plays.pick(rng);
                performers.push(self.companies.pick(rng).clone());
                performers.push(self.actors.pick(rng).clone());
                if rng.gen_bool(0.4) {
                    performers.push(self.actors.pick(rng).clone());
                }
                tags.push(
                    if play.contains('!') || rng.gen_bool(0.3) {
                        "musical"
                    } else {
                        "drama"
                    }
                    .to_string(),
                );
                let title = if rng.gen_bool(0.8) {
                    play.to_string()
                } else {
                    format!("The {} {}", adj, noun)
                };
                (
                    title,
                    VenueKind::Theatre,
                    rng.gen_range(120..=170),
                    (25, 150),
                )
            }
            "comedy" => {
                let comedian = self.comedians.pick(rng).clone();
                let title = match rng.gen_range(0..4) {
                    0 => format!("Comedy Night with {}", comedian),
                    1 => format!("{}: {} {}", comedian, adj, noun),
                    2 => format!("{} — Live Stand-up", comedian),
                    _ => format!("{} Comedy Club Showcase", city.name),
                };
                performers.push(comedian);
                if rng.gen_bool(0.3) {
                    performers.push(self.comedians.pick(rng).clone());
                }
                tags.push("stand-up".to_string());
                let kind = if rng.gen_bool(0.6) {
                    VenueKind::Club
                } else {
                    VenueKind::Theatre
                };
                (title, kind, rng.gen_range(75..=120), (15, 70))
            }
            "sports" => {
                let sport = *self.sports.pick(rng);
                tags.push(sport.to_string());
                let home = team(&city.name, self.mascots.pick(rng), rng);
                let title = match sport {
                    "tennis" => format!("{} Open", city.name),
                    "marathon" => format!("{} Marathon", city.name),
                    "boxing" => {
                        let a = person(rng);
                        let b = person(rng);
                        let title = format!("Fight Night: {} vs {}", a, b);
                        performers.push(a);
                        performers.push(b);
                        title
                    }
                    _ => {
                        let away_city = &self.cities[self.city_pick.sample(rng)].name;
                        let away = team(away_city, self.mascots.pick(rng), rng);
                        let title = format!("{} vs {}", home, away);
                        performers.push(home);
                        performers.push(away);
                        title
                    }
                };
                if performers.is_empty() {
                    performers.push(format!("{} Sports Club", city.name));
                }
                (
                    title,
                    VenueKind::Stadium,
                    rng.gen_range(100..=200),
                    (20, 250),
                )
            }
            "festival" => {
                let genre = *self.genres.pick(rng);
                tags.push(genre.to_string());
                tags.push("outdoor".to_string());
                for _ in 0..rng.gen_range(3..=5) {
                    let name = &self.artists.pick(rng).name;
                    if !performers.contains(name) {
                        performers.push(name.clone());
                    }
                }
                let title = match rng.gen_range(0..4) {
                    0 => format!("{} {} Festival {}", city.name, title_case(genre), year),
                    1 => format!("{} {} Festival", adj, noun),
                    2 => format!("{}fest {}", noun, year),
                    _ => format!("{} in the Park", title_case(genre)),
                };
                (
                    title,
                    VenueKind::Park,
                    60 * 24 * rng.gen_range(1..=3),
                    (60, 400),
                )
            }
            "classical" => {
                let (work, composer) = *self.works.pick(rng);
                performers.push(self.ensembles.pick(rng).clone());
                performers.push(self.conductors.pick(rng).clone());
                tags.push(
                    if work.contains("Lake")
                        || work.contains("Nutcracker")
                        || work.contains("Giselle")
                    {
                        "ballet"
                    } else {
                        "orchestra"
                    }
                    .to_string(),
                );
                let title = match rng.gen_range(0..3) {
                    0 => work.to_string(),
                    1 => format!("{}: {}", composer, work),
                    _ => format!("{} plays {}", performers[0], composer),
                };
                (
                    title,
                    VenueKind::ConcertHall,
                    rng.gen_range(90..=180),
                    (20, 200),
                )
            }
            "family" => {
                let show = self.family_shows.pick(rng).clone();
                performers.push(show.split(':').next().unwrap_or(&show).trim().to_string());
                tags.push("kids".to_string());
                tags.push("all-ages".to_string());
                let kind = if show.contains("Ice") {
                    VenueKind::Arena
                } else {
                    VenueKind::Theatre
                };
                (show, kind, rng.gen_range(60..=120), (10, 60))
            }
            _ => {
                let topic = *self.topics.pick(rng);
                for _ in 0..rng.gen_range(2..=4) {
                    let name = self.speakers.pick(rng);
                    if !performers.contains(name) {
                        performers.push(name.clone());
                    }
                }
                tags.push(topic.to_lowercase());
                tags.push("networking".to_string());
                let title = match rng.gen_range(0..4) {
                    0 => format!("{} Summit {}", topic, city.name),
                    1 => format!("{}Conf {}", topic.replace(' ', ""), year),
                    2 => format!("{} Days {}", topic, city.name),
                    _ => format!("World {} Congress", topic),
                };
                (
                    title,
                    VenueKind::ConventionCentre,
                    60 * rng.gen_range(8..=56),
                    (0, 900),
                )
            }
        };
        let wanted_tags = rng.gen_range(2..=5usize);
        for _ in 0..8 {
            if tags.len() >= wanted_tags {
                break;
            }
            let tag = *self.general_tags.pick(rng);
            if !tags.iter().any(|t| t == tag) {
                tags.push(tag.to_string());
            }
        }
        tags.truncate(5);

        let kind_index = VENUE_KINDS.iter().position(|&k| k == kind).unwrap_or(0);
        let venues = &city.venues[kind_index];
        let venue = &venues[rng.gen_range(0..venues.len())];

        let day = rng.gen_range(1..=365i64);
        // Evening local time for most shows, daytime for conferences and family shows.
        let local_hour = match CATEGORIES[category] {
            "conference" => 9.0,
            "family" => [11.0, 14.0, 16.0][rng.gen_range(0..3)],
            "festival" => 12.0,
            _ => [18.5, 19.0, 19.5, 20.0, 20.5, 21.0][rng.gen_range(0..6)],
        };
        let utc_minutes = ((local_hour - city.utc_offset) * 60.0).round() as i64;
        let starts_at = base + Duration::days(day) + Duration::minutes(utc_minutes);
        let ends_at = starts_at + Duration::minutes(minutes);

        let dollars = if high == 0 {
            0
        } else {
            rng.gen_range(low..=high)
        };
        let cents = (f64::from(dollars) * 100.0 * city.per_usd_cent).round() as i64;
        // Round to a "nice" price of the local currency.
        let step = ((100.0 * city.per_usd_cent).round() as i64).max(1) * 5;
        let min_price_cents = (cents / step) * step;

        let description = self.description(
            CATEGORIES[category],
            &title,
            &performers,
            &venue.name,
            &city.name,
            adj,
            noun,
            tags.first().map(String::as_str).unwrap_or("live"),
            rng,
        );

        SyntheticEvent {
            id: format!("evt_{:010}", i),
            title,
            description,
            category: CATEGORIES[category].to_string(),
            tags,
            performers,
            venue_name: venue.name.clone(),
            city: city.name.clone(),
            country: city.country.clone(),
            lat: venue.lat,
            lon: venue.lon,
            starts_at,
            ends_at,
            min_price_cents,
            currency: city.currency.to_string(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn description(
        &self,
        category: &str,
        title: &str,
        performers: &[String],
        venue: &str,
        city: &str,
        adj: &str,
        noun: &str,
        genre: &str,
        rng: &mut StdRng,
    ) -> String {
        let lead = performers.first().map(String::as_str).unwrap_or(title);
        let adj2 = self.adjectives.pick(rng).to_lowercase();
        let noun2 = self.nouns.pick(rng).to_lowercase();
        let a_adj2 = with_article(&adj2);
        let a_noun2 = with_article(&noun2);
        let first = match category {
            "concert" => match rng.gen_range(0..3) {
                0 => format!("{lead} bring their {} {genre} show to {venue} for one night only.", adj.to_lowercase()),
                1 => format!("After a sold-out year, {lead} return to {city} with new songs and old favourites."),
                _ => format!("An evening of {adj2} {genre} with {lead}, live at {venue}."),
            },
            "theatre" => match rng.gen_range(0..3) {
                0 => format!("{lead} present {a_adj2} new production of {title}."),
                1 => format!("{title} comes to {venue} in a staging critics call {adj2} and unforgettable."),
                _ => format!("{} tale of love, ambition and {noun2}, performed by {lead}.", title_case(&a_adj2)),
            },
            "comedy" => match rng.gen_range(0..3) {
                0 => format!("{lead} takes the stage at {venue} with a brand-new hour of stand-up."),
                1 => format!("Ninety minutes of {adj2} observations about {noun2}, family and modern life."),
                _ => format!("{city}'s favourite comedy night returns, hosted by {lead}."),
            },
            "sports" if genre == "marathon" => format!(
                "{title}: 42.195 km through the streets of {city}, finishing at {venue}."
            ),
            "sports" if genre == "tennis" => format!(
                "A week of top-level tennis in {city}, with the final at {venue}."
            ),
            "sports" => match rng.gen_range(0..3) {
                0 => format!("{title}: {a_adj2} {genre} clash at {venue}."),
                1 => format!("Cheer on {lead} in {city} in one of the season's decisive {genre} fixtures."),
                _ => format!("Top-level {genre} at {venue}, with fan zone and food stalls from noon."),
            },
            "festival" => match rng.gen_range(0..3) {
                0 => format!("{title} brings {} and more to {city} for {a_adj2} weekend.", performers.join(", ")),
                1 => format!("Three stages of {genre}, street food and art installations at {venue}."),
                _ => format!("Headlined by {lead}, the festival celebrates {adj2} {genre} under the open sky."),
            },
            "classical" => match rng.gen_range(0..3) {
                0 => format!("{lead} perform {title} at {venue}."),
                1 => format!("{} evening of {genre} music in the heart of {city}.", title_case(&a_adj2)),
                _ => format!("{lead} under the baton of {} in a programme critics call {adj2}.", performers.get(1).map(String::as_str).unwrap_or("a guest conductor")),
            },
            "family" => match rng.gen_range(0..3) {
                0 => format!("{title} is {a_adj2} show for children and grown-ups alike."),
                1 => format!("Songs, puppets and {a_noun2} or two: fun for the whole family at {venue}."),
                _ => format!("Bring the kids to {venue} for an afternoon of {adj2} surprises."),
            },
            _ => match rng.gen_range(0..3) {
                0 => format!("{title} gathers practitioners of {genre} in {city} for talks and workshops."),
                1 => format!("Keynotes by {lead} and others on the {adj2} future of {genre}."),
                _ => format!("Two days of {genre} talks, hands-on labs and networking at {venue}."),
            },
        };
        let mut description = first;
        let extra = rng.gen_range(0..=2);
        let mut used = [false; EXTRA_SENTENCES.len()];
        for _ in 0..extra {
            let k = rng.gen_range(0..EXTRA_SENTENCES.len());
            if used[k] {
                continue;
            }
            used[k] = true;
            description.push(' ');
            description.push_str(
                &EXTRA_SENTENCES[k]
                    .replace("{Aadj}", &title_case(&a_adj2))
                    .replace("{adj}", &adj2)
                    .replace("{noun}", &noun.to_lowercase()),
            );
        }
        description
    }
}

const EXTRA_SENTENCES: [&str; 10] = [
    "Doors open one hour before the show.",
    "Tickets are limited, so book early.",
    "Expect {adj} visuals and a crowd that sings along.",
    "The venue is step-free and close to public transport.",
    "Food and drinks are available on site.",
    "Under-16s must be accompanied by an adult.",
    "{Aadj} night inspired by the {noun}.",
    "Seating is unreserved; arrive early for the best views.",
    "Part of this year's city-wide culture programme.",
    "Merchandise and signed copies will be on sale.",
];

fn pick<T: Copy>(items: &[T], rng: &mut impl Rng) -> T {
    items[rng.gen_range(0..items.len())]
}

fn person(rng: &mut impl Rng) -> String {
    format!("{} {}", pick(&FIRST_NAMES, rng), pick(&LAST_NAMES, rng))
}

fn team(city: &str, mascot: &str, rng: &mut impl Rng) -> String {
    match rng.gen_range(0..5) {
        0 => format!("FC {city}"),
        1 => format!("{city} United"),
        2 => format!("Sporting {city}"),
        _ => format!("{city} {mascot}"),
    }
}

fn with_article(word: &str) -> String {
    let article = if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {word}")
}

fn title_case(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn venue_name(kind: VenueKind, city: &str, rng: &mut impl Rng) -> String {
    let adj = pick(&ADJECTIVES, rng);
    let noun = pick(&NOUNS, rng);
    let last = pick(&LAST_NAMES, rng);
    match (kind, rng.gen_range(0..3)) {
        (VenueKind::Arena, 0) => format!("{city} Arena"),
        (VenueKind::Arena, 1) => format!("{noun} Arena"),
        (VenueKind::Arena, _) => format!("{last} Dome"),
        (VenueKind::Stadium, 0) => format!("{city} Stadium"),
        (VenueKind::Stadium, 1) => format!("{last} Park"),
        (VenueKind::Stadium, _) => format!("{adj} {noun} Stadium"),
        (VenueKind::Theatre, 0) => format!("{last} Theatre"),
        (VenueKind::Theatre, 1) => format!("Royal {noun} Theatre"),
        (VenueKind::Theatre, _) => format!("The {adj} Playhouse"),
        (VenueKind::ConcertHall, 0) => format!("{city} Concert Hall"),
        (VenueKind::ConcertHall, 1) => format!("{last} Hall"),
        (VenueKind::ConcertHall, _) => format!("{city} Opera House"),
        (VenueKind::Club, 0) => format!("Club {noun}"),
        (VenueKind::Club, 1) => format!("The {adj} {noun}"),
        (VenueKind::Club, _) => format!("{noun} Lounge"),
        (VenueKind::ConventionCentre, 0) => format!("{city} Convention Centre"),
        (VenueKind::ConventionCentre, 1) => format!("{last} Expo Hall"),
        (VenueKind::ConventionCentre, _) => format!("{noun} Conference Center"),
        (VenueKind::Park, 0) => format!("{city} Central Park"),
        (VenueKind::Park, 1) => format!("{noun} Fields"),
        (VenueKind::Park, _) => format!("{last} Gardens"),
    }
}

/// (currency, minor units worth about one US cent). Rough rates: prices only need to look
/// plausible, they are never searched.
fn currency_of(country: &str) -> (&'static str, f64) {
    match country {
        "US" | "EC" | "SV" | "PR" => ("USD", 1.0),
        "DE" | "FR" | "IT" | "ES" | "NL" | "BE" | "AT" | "PT" | "IE" | "FI" | "GR" | "SK"
        | "SI" | "LT" | "LV" | "EE" | "LU" | "MT" | "CY" | "HR" => ("EUR", 0.9),
        "GB" => ("GBP", 0.8),
        "JP" => ("JPY", 1.5),
        "CN" => ("CNY", 7.2),
        "IN" => ("INR", 83.0),
        "BR" => ("BRL", 5.0),
        "RU" => ("RUB", 90.0),
        "MX" => ("MXN", 17.0),
        "CA" => ("CAD", 1.35),
        "AU" => ("AUD", 1.5),
        "KR" => ("KRW", 13.0),
        "TR" => ("TRY", 30.0),
        "ID" => ("IDR", 15500.0),
        "PK" => ("PKR", 280.0),
        "NG" => ("NGN", 1500.0),
        "EG" => ("EGP", 48.0),
        "ZA" => ("ZAR", 18.0),
        "AR" => ("ARS", 900.0),
        "CO" => ("COP", 4000.0),
        "SA" => ("SAR", 3.75),
        "AE" => ("AED", 3.67),
        "CH" => ("CHF", 0.9),
        "SE" => ("SEK", 10.5),
        "NO" => ("NOK", 10.5),
        "DK" => ("DKK", 6.9),
        "PL" => ("PLN", 4.0),
        "CZ" => ("CZK", 23.0),
        "HU" => ("HUF", 360.0),
        "TH" => ("THB", 36.0),
        "VN" => ("VND", 250.0),
        "PH" => ("PHP", 56.0),
        "MY" => ("MYR", 4.7),
        "SG" => ("SGD", 1.35),
        "HK" => ("HKD", 7.8),
        "TW" => ("TWD", 32.0),
        "IL" => ("ILS", 3.7),
        "NZ" => ("NZD", 1.6),
        "CL" => ("CLP", 9.0),
        "PE" => ("PEN", 3.7),
        "BD" => ("BDT", 110.0),
        "UA" => ("UAH", 40.0),
        "KE" => ("KES", 130.0),
        _ => ("USD", 1.0),
    }
}

/// (name, genre, signature tour title). Head of the artist Zipf curve.
const FAMOUS_ARTISTS: [(&str, &str, Option<&str>); 40] = [
    ("Metallica", "metal", Some("M72 World Tour")),
    ("Taylor Swift", "pop", Some("The Eras Tour")),
    ("Coldplay", "rock", Some("Music of the Spheres World Tour")),
    ("Adele", "pop", Some("Weekends with Adele")),
    ("Beyoncé", "r&b", Some("Renaissance World Tour")),
    ("Ed Sheeran", "pop", Some("Mathematics Tour")),
    ("The Weeknd", "r&b", Some("After Hours til Dawn")),
    ("Billie Eilish", "pop", Some("Hit Me Hard and Soft Tour")),
    ("Bad Bunny", "latin", Some("Most Wanted Tour")),
    ("Dua Lipa", "pop", Some("Radical Optimism Tour")),
    ("Bruno Mars", "pop", None),
    ("Rammstein", "metal", Some("Stadium Tour")),
    ("Arctic Monkeys", "indie", None),
    ("Foo Fighters", "rock", Some("Everything or Nothing at All")),
    ("Iron Maiden", "metal", Some("The Future Past Tour")),
    ("Kendrick Lamar", "hip-hop", Some("Grand National Tour")),
    ("Rosalía", "latin", Some("Motomami World Tour")),
    ("BTS", "k-pop", None),
    (
        "Shakira",
        "latin",
        Some("Las Mujeres Ya No Lloran World Tour"),
    ),
    ("Imagine Dragons", "rock", Some("Loom World Tour")),
    ("Muse", "rock", Some("Will of the People Tour")),
    ("Pearl Jam", "rock", Some("Dark Matter World Tour")),
    ("Green Day", "punk", Some("The Saviors Tour")),
    ("Red Hot Chili Peppers", "rock", None),
    (
        "Depeche Mode",
        "electronic",
        Some("Memento Mori World Tour"),
    ),
    ("The Rolling Stones", "rock", Some("Hackney Diamonds Tour")),
    ("Harry Styles", "pop", Some("Love On Tour")),
    ("Olivia Rodrigo", "pop", Some("Guts World Tour")),
    ("Radiohead", "alternative", None),
    ("Florence + The Machine", "indie", None),
    ("Bon Jovi", "rock", None),
    ("AC/DC", "rock", Some("Power Up Tour")),
    ("Elton John", "pop", Some("Farewell Yellow Brick Road")),
    ("Lady Gaga", "pop", Some("The Mayhem Ball")),
    ("Drake", "hip-hop", None),
    ("Ariana Grande", "pop", None),
    ("Sting", "rock", None),
    ("Daft Punk", "electronic", None),
    ("Norah Jones", "jazz", None),
    ("Buena Vista Social Club", "latin", None),
];

const FAMOUS_COMEDIANS: [&str; 6] = [
    "Trevor Noah",
    "Ricky Gervais",
    "Ali Wong",
    "John Mulaney",
    "Jimmy Carr",
    "Hannah Gadsby",
];

const GENRES: [&str; 18] = [
    "rock",
    "pop",
    "indie",
    "jazz",
    "electronic",
    "hip-hop",
    "metal",
    "folk",
    "r&b",
    "techno",
    "country",
    "punk",
    "soul",
    "reggae",
    "latin",
    "blues",
    "alternative",
    "k-pop",
];

const GENERAL_TAGS: [&str; 20] = [
    "live",
    "tickets",
    "weekend",
    "night",
    "indoor",
    "outdoor",
    "seated",
    "standing",
    "all-ages",
    "18+",
    "vip",
    "tour",
    "premiere",
    "family-friendly",
    "accessible",
    "limited",
    "matinee",
    "acoustic",
    "sold-out-soon",
    "new",
];

const ADJECTIVES: [&str; 72] = [
    "Electric",
    "Midnight",
    "Golden",
    "Wild",
    "Silent",
    "Neon",
    "Crimson",
    "Velvet",
    "Broken",
    "Endless",
    "Northern",
    "Burning",
    "Lost",
    "Hidden",
    "Eternal",
    "Wandering",
    "Savage",
    "Cosmic",
    "Frozen",
    "Radiant",
    "Hollow",
    "Restless",
    "Scarlet",
    "Silver",
    "Sacred",
    "Distant",
    "Fearless",
    "Gentle",
    "Lucky",
    "Lonely",
    "Modern",
    "Royal",
    "Secret",
    "Shining",
    "Stolen",
    "Sunny",
    "Twisted",
    "Violet",
    "Wicked",
    "Young",
    "Atomic",
    "Blue",
    "Brave",
    "Bright",
    "Dark",
    "Drifting",
    "Emerald",
    "Faded",
    "Glass",
    "Haunted",
    "Iron",
    "Jade",
    "Kinetic",
    "Liquid",
    "Lunar",
    "Magnetic",
    "Mystic",
    "Paper",
    "Polar",
    "Quiet",
    "Rebel",
    "Rising",
    "Rusty",
    "Solar",
    "Sonic",
    "Stellar",
    "Tidal",
    "Ultra",
    "Vivid",
    "Wooden",
    "Glorious",
    "Fabulous",
];

const NOUNS: [&str; 80] = [
    "Heart",
    "Fire",
    "Dream",
    "Echo",
    "Storm",
    "River",
    "Horizon",
    "Shadow",
    "Light",
    "Ocean",
    "Garden",
    "Mountain",
    "Machine",
    "Mirror",
    "Signal",
    "Season",
    "Highway",
    "Thunder",
    "Kingdom",
    "Paradise",
    "Summer",
    "Winter",
    "Moon",
    "Star",
    "Wave",
    "Forest",
    "Desert",
    "Harbor",
    "Island",
    "Canyon",
    "Comet",
    "Empire",
    "Frontier",
    "Galaxy",
    "Harvest",
    "Lantern",
    "Meadow",
    "Orbit",
    "Parade",
    "Pilgrim",
    "Prism",
    "Rebellion",
    "Revival",
    "Rhythm",
    "Satellite",
    "Sparrow",
    "Temple",
    "Tide",
    "Tower",
    "Valley",
    "Voyage",
    "Whisper",
    "Wolf",
    "Anthem",
    "Avenue",
    "Carnival",
    "Circus",
    "Cathedral",
    "Daylight",
    "Engine",
    "Fever",
    "Ghost",
    "Glacier",
    "Hurricane",
    "Jungle",
    "Kaleidoscope",
    "Labyrinth",
    "Mosaic",
    "Nebula",
    "Odyssey",
    "Phoenix",
    "Reverie",
    "Serenade",
    "Spectrum",
    "Tempest",
    "Utopia",
    "Vertigo",
    "Wilderness",
    "Zenith",
    "Aurora",
];

const BAND_NOUNS: [&str; 30] = [
    "Wolves",
    "Foxes",
    "Ravens",
    "Pilots",
    "Strangers",
    "Machines",
    "Kings",
    "Saints",
    "Ghosts",
    "Giants",
    "Lions",
    "Tigers",
    "Sparrows",
    "Drifters",
    "Outlaws",
    "Pioneers",
    "Rebels",
    "Dreamers",
    "Vandals",
    "Wanderers",
    "Echoes",
    "Shadows",
    "Satellites",
    "Comets",
    "Horses",
    "Owls",
    "Bandits",
    "Monks",
    "Sirens",
    "Prophets",
];

const FIRST_NAMES: [&str; 80] = [
    "Ava", "Liam", "Noah", "Emma", "Olivia", "Lucas", "Mia", "Sofia", "Mateo", "Leon", "Yuki",
    "Hana", "Aarav", "Priya", "Chen", "Mei", "Omar", "Layla", "Kwame", "Amara", "Ingrid", "Lars",
    "Freya", "Matteo", "Giulia", "Pierre", "Camille", "Diego", "Lucía", "Rafael", "Ana", "Tomasz",
    "Zofia", "Ivan", "Olga", "Emre", "Elif", "Kenji", "Sakura", "Jin", "Minji", "Arjun", "Ananya",
    "Tariq", "Fatima", "Sipho", "Nia", "Finn", "Saoirse", "Mateus", "Beatriz", "Hugo", "Chloé",
    "Jonas", "Astrid", "Mikael", "Noor", "Yusuf", "Zara", "Oscar", "Ruby", "Felix", "Iris", "Max",
    "Luna", "Theo", "Nora", "Sam", "Alex", "Jordan", "Riley", "Casey", "Marcus", "Elena", "Daniel",
    "Grace", "Victor", "Isabel", "Nikolai", "Anya",
];

const LAST_NAMES: [&str; 80] = [
    "Smith",
    "Garcia",
    "Müller",
    "Rossi",
    "Nakamura",
    "Kim",
    "Patel",
    "Okafor",
    "Johansson",
    "Novak",
    "Kowalski",
    "Dubois",
    "Silva",
    "Santos",
    "Ivanova",
    "Yilmaz",
    "Tanaka",
    "Chen",
    "Wang",
    "Singh",
    "Haddad",
    "Mensah",
    "Andersen",
    "Fischer",
    "Moreau",
    "Romano",
    "Costa",
    "Hernández",
    "López",
    "Martin",
    "Brown",
    "Taylor",
    "Wilson",
    "Clarke",
    "Murphy",
    "O'Brien",
    "Kelly",
    "Walsh",
    "Becker",
    "Schmidt",
    "Bianchi",
    "Ricci",
    "Ferreira",
    "Almeida",
    "Petrov",
    "Sokolov",
    "Horvath",
    "Nagy",
    "Lindqvist",
    "Berg",
    "Dahl",
    "Virtanen",
    "Korhonen",
    "Sato",
    "Suzuki",
    "Park",
    "Choi",
    "Nguyen",
    "Tran",
    "Reyes",
    "Cruz",
    "Mendoza",
    "Ortiz",
    "Vargas",
    "Adeyemi",
    "Nkosi",
    "Abebe",
    "Kariuki",
    "Rahman",
    "Hossain",
    "Ali",
    "Khan",
    "Cohen",
    "Levi",
    "Papadopoulos",
    "Georgiou",
    "Janssen",
    "de Vries",
    "Peeters",
    "Dvořák",
];

const PLAYS: [&str; 36] = [
    "Hamlet",
    "Les Misérables",
    "The Phantom of the Opera",
    "Macbeth",
    "Wicked",
    "The Lion King",
    "Romeo and Juliet",
    "Chicago",
    "Mamma Mia!",
    "A Midsummer Night's Dream",
    "Hamilton",
    "Cats",
    "King Lear",
    "Othello",
    "The Tempest",
    "Cabaret",
    "Death of a Salesman",
    "A Streetcar Named Desire",
    "Waiting for Godot",
    "The Importance of Being Earnest",
    "Twelfth Night",
    "The Book of Mormon",
    "Moulin Rouge!",
    "West Side Story",
    "Miss Saigon",
    "Sweeney Todd",
    "Into the Woods",
    "Dear Evan Hansen",
    "Pygmalion",
    "The Cherry Orchard",
    "Uncle Vanya",
    "Cyrano de Bergerac",
    "Les Liaisons Dangereuses",
    "Hedda Gabler",
    "A Doll's House",
    "The Seagull",
];

/// (work, composer).
const WORKS: [(&str, &str); 32] = [
    ("Swan Lake", "Tchaikovsky"),
    ("The Nutcracker", "Tchaikovsky"),
    ("The Four Seasons", "Vivaldi"),
    ("Symphony No. 9", "Beethoven"),
    ("Requiem", "Mozart"),
    ("La Traviata", "Verdi"),
    ("Carmen", "Bizet"),
    ("The Magic Flute", "Mozart"),
    ("Tosca", "Puccini"),
    ("La Bohème", "Puccini"),
    ("Madama Butterfly", "Puccini"),
    ("Giselle", "Adam"),
    ("New World Symphony", "Dvořák"),
    ("The Rite of Spring", "Stravinsky"),
    ("Boléro", "Ravel"),
    ("Goldberg Variations", "Bach"),
    ("Brandenburg Concertos", "Bach"),
    ("Messiah", "Handel"),
    ("Rhapsody in Blue", "Gershwin"),
    ("Piano Concerto No. 2", "Rachmaninoff"),
    ("Clair de Lune", "Debussy"),
    ("Finlandia", "Sibelius"),
    ("The Planets", "Holst"),
    ("Carmina Burana", "Orff"),
    ("Symphony No. 5", "Mahler"),
    ("Enigma Variations", "Elgar"),
    ("Nocturnes", "Chopin"),
    ("Die Walküre", "Wagner"),
    ("Peer Gynt", "Grieg"),
    ("Symphony No. 7", "Shostakovich"),
    ("The Creation", "Haydn"),
    ("Unfinished Symphony", "Schubert"),
];

const TOPICS: [&str; 20] = [
    "AI",
    "Cloud",
    "Data",
    "Security",
    "DevOps",
    "Rust",
    "Kubernetes",
    "Fintech",
    "Marketing",
    "Design",
    "Product",
    "Machine Learning",
    "Open Source",
    "Robotics",
    "Climate Tech",
    "Healthtech",
    "Blockchain",
    "Mobile",
    "Game Dev",
    "Web",
];

const MASCOTS: [&str; 24] = [
    "Lions",
    "Tigers",
    "Bears",
    "Eagles",
    "Wolves",
    "Sharks",
    "Falcons",
    "Hawks",
    "Rangers",
    "Giants",
    "Titans",
    "Knights",
    "Kings",
    "Royals",
    "Pirates",
    "Vikings",
    "Dragons",
    "Stallions",
    "Comets",
    "Rockets",
    "Thunder",
    "Storm",
    "Blaze",
    "Phoenix",
];

const SPORTS: [&str; 9] = [
    "football",
    "basketball",
    "ice-hockey",
    "baseball",
    "rugby",
    "tennis",
    "volleyball",
    "marathon",
    "boxing",
];

const ANIMALS: [&str; 10] = [
    "Dragon", "Unicorn", "Panda", "Penguin", "Dinosaur", "Tiger", "Fox", "Bear", "Owl", "Dolphin",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0)
            .single()
            .expect("valid date")
    }

    /// Levenshtein distance with adjacent transpositions counted as one edit.
    fn edit_distance(a: &str, b: &str) -> usize {
        let a: Vec<char> = a.chars().collect();
        let b: Vec<char> = b.chars().collect();
        let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
        for (i, row) in d.iter_mut().enumerate() {
            row[0] = i;
        }
        for (j, cell) in d[0].iter_mut().enumerate() {
            *cell = j;
        }
        for i in 1..=a.len() {
            for j in 1..=b.len() {
                let cost = usize::from(a[i - 1] != b[j - 1]);
                d[i][j] = (d[i - 1][j] + 1)
                    .min(d[i][j - 1] + 1)
                    .min(d[i - 1][j - 1] + cost);
                if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                    d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
                }
            }
        }
        d[a.len()][b.len()]
    }

    #[test]
    fn deterministic_for_a_seed() -> anyhow::Result<()> {
        let a = generate_at(70_000, 7, base())?;
        let b = generate_at(70_000, 7, base())?;
        let c = generate_at(70_000, 8, base())?;
        assert_eq!(a.len(), 70_000);
        let key = |e: &SyntheticEvent| format!("{:?}", e);
        assert!(a.iter().zip(&b).all(|(x, y)| key(x) == key(y)));
        assert!(a.iter().zip(&c).any(|(x, y)| key(x) != key(y)));
        let qa = fuzzy_geo_queries(&a, 50, 1);
        let qb = fuzzy_geo_queries(&b, 50, 1);
        assert_eq!(format!("{qa:?}"), format!("{qb:?}"));
        Ok(())
    }

    #[test]
    fn events_are_well_formed() -> anyhow::Result<()> {
        let events = generate_at(5_000, 3, base())?;
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e.id, format!("evt_{:010}", i));
            assert!(CATEGORIES.contains(&e.category.as_str()));
            assert!((2..=5).contains(&e.tags.len()), "{e:?}");
            assert!(e.tags.iter().all(|t| *t == t.to_lowercase()));
            assert!(!e.performers.is_empty());
            assert!((-90.0..=90.0).contains(&e.lat) && (-180.0..=180.0).contains(&e.lon));
            assert!(e.starts_at > base() && e.starts_at < base() + Duration::days(367));
            assert!(e.ends_at > e.starts_at);
            assert_eq!(e.country.len(), 2);
        }
        Ok(())
    }

    #[test]
    fn queries_have_one_typo_and_valid_coordinates() -> anyhow::Result<()> {
        let events = generate_at(5_000, 11, base())?;
        let mut rng = StdRng::seed_from_u64(5);
        for _ in 0..500 {
            let event = &events[rng.gen_range(0..events.len())];
            let Some(query) = fuzzy_geo_query_for(event, &mut rng) else {
                continue;
            };
            let text = query.text.as_deref().unwrap_or_default();
            let words: Vec<&str> = text.split(' ').collect();
            assert!((2..=3).contains(&words.len()), "{text}");
            let source: Vec<String> = query_words(&event.title)
                .chain(event.performers.iter().flat_map(|p| query_words(p)))
                .chain(query_words(&event.city))
                .collect();
            let typos: Vec<&&str> = words
                .iter()
                .filter(|w| !source.iter().any(|s| s == **w))
                .collect();
            assert_eq!(typos.len(), 1, "{text} from {event:?}");
            assert!(
                source
                    .iter()
                    .any(|s| s.chars().count() >= 5 && edit_distance(s, typos[0]) == 1),
                "{text} from {event:?}"
            );
            assert!((25.0..=200.0).contains(&query.radius_km));
            assert!((-90.0..=90.0).contains(&query.lat) && (-180.0..=180.0).contains(&query.lon));
        }
        for query in near_me_queries(&events, 200, 2) {
            assert!(query.text.is_none());
            assert_eq!(query.radius_km, 50.0);
            assert!((-90.0..=90.0).contains(&query.lat) && (-180.0..=180.0).contains(&query.lon));
        }
        Ok(())
    }
}
