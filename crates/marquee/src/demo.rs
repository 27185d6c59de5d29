//! `marquee demo`: a believable catalog to click through — venues with real seat maps in real
//! cities (true coordinates, from the GeoNames extract in `data/cities.csv`), a few hundred
//! events across categories over the coming months, and demo accounts. Generation is seeded, so
//! every fresh demo looks the same; a data dir that was already seeded is reused as it is.

use anyhow::Context;
use chrono::{DateTime, Duration, Timelike, Utc};
use indicatif::{ProgressBar, ProgressStyle};
use marquee_domain::{
    Category, Coordinates, DisplayName, Email, Event, EventDetails, EventId, EventStatus,
    OrderLimits, Password, PriceTier, Role, SeatMap, SectionLayout, SectionSpec, StreamingSettings,
    User, UserId, Venue, VenueDetails, VenueId, WaitingRoomSettings,
};
use marquee_store::{CatalogStore, ChangeKind};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

const CITIES_CSV: &str = include_str!("../data/cities.csv");

/// The demo's accounts. They exist only in demo data dirs; the passwords are public on purpose.
pub struct DemoAccount {
    pub email: &'static str,
    pub password: &'static str,
    pub name: &'static str,
    pub role: Role,
}

pub const DEMO_ACCOUNTS: [DemoAccount; 3] = [
    DemoAccount {
        email: "organizer@demo.marquee.test",
        password: "organizer-demo-pass",
        name: "Demo Organizer",
        role: Role::Organizer,
    },
    DemoAccount {
        email: "fan@demo.marquee.test",
        password: "fan-demo-pass",
        name: "Demo Fan",
        role: Role::Fan,
    },
    DemoAccount {
        email: "admin@demo.marquee.test",
        password: "admin-demo-pass",
        name: "Demo Admin",
        role: Role::Admin,
    },
];

/// Cities with venues, by name and ISO country code as they appear in `cities.csv`.
const DEMO_CITIES: [(&str, &str); 30] = [
    ("London", "GB"),
    ("Paris", "FR"),
    ("Berlin", "DE"),
    ("New York City", "US"),
    ("Los Angeles", "US"),
    ("Chicago", "US"),
    ("Nashville", "US"),
    ("Austin", "US"),
    ("Toronto", "CA"),
    ("Mexico City", "MX"),
    ("São Paulo", "BR"),
    ("Buenos Aires", "AR"),
    ("Madrid", "ES"),
    ("Barcelona", "ES"),
    ("Rome", "IT"),
    ("Milan", "IT"),
    ("Amsterdam", "NL"),
    ("Vienna", "AT"),
    ("Prague", "CZ"),
    ("Warsaw", "PL"),
    ("Stockholm", "SE"),
    ("Dublin", "IE"),
    ("Istanbul", "TR"),
    ("Cairo", "EG"),
    ("Lagos", "NG"),
    ("Johannesburg", "ZA"),
    ("Dubai", "AE"),
    ("Mumbai", "IN"),
    ("Tokyo", "JP"),
    ("Sydney", "AU"),
];

#[derive(Debug, Clone)]
pub struct City {
    pub name: String,
    pub country: String,
    pub lat: f64,
    pub lon: f64,
}

/// The embedded city list.
pub fn cities() -> anyhow::Result<Vec<City>> {
    let mut reader = csv::Reader::from_reader(CITIES_CSV.as_bytes());
    let mut cities = Vec::new();
    for record in reader.records() {
        let record = record.context("reading the embedded cities.csv")?;
        let field = |index: usize| record.get(index).unwrap_or_default();
        cities.push(City {
            name: field(1).to_string(),
            country: field(2).to_string(),
            lat: field(3).parse().context("latitude")?,
            lon: field(4).parse().context("longitude")?,
        });
    }
    Ok(cities)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeedOutcome {
    Seeded { venues: usize, events: usize },
    AlreadySeeded,
}

/// Seeds `store` unless it already holds the demo organizer.
pub async fn seed(store: &dyn CatalogStore, show_progress: bool) -> anyhow::Result<SeedOutcome> {
    let organizer_email = Email::parse(DEMO_ACCOUNTS[0].email).map_err(anyhow::Error::msg)?;
    if store
        .credentials_by_email(&organizer_email)
        .await?
        .is_some()
    {
        return Ok(SeedOutcome::AlreadySeeded);
    }
    let mut users = Vec::new();
    for account in &DEMO_ACCOUNTS {
        let user = User {
            id: UserId::generate(),
            email: Email::parse(account.email).map_err(anyhow::Error::msg)?,
            name: DisplayName::parse(account.name).map_err(anyhow::Error::msg)?,
            role: account.role,
            created_at: marquee_domain::timestamp_now(),
        };
        let password = Password::parse(account.password.to_string()).map_err(anyhow::Error::msg)?;
        let hash = marquee_auth::hash_password(password).await?;
        store.create_user(&user, &hash).await?;
        users.push(user);
    }
    let organizer = &users[0];

    let all_cities = cities()?;
    let mut rng = StdRng::seed_from_u64(2027);
    let plan: Vec<(City, VenueKind)> = DEMO_CITIES
        .iter()
        .enumerate()
        .filter_map(|(index, (name, country))| {
            let city = all_cities
                .iter()
                .find(|city| city.name == *name && city.country == *country)?;
            Some((city.clone(), VenueKind::ALL[index % VenueKind::ALL.len()]))
        })
        .collect();
    let events_per_venue = 10;
    let progress = if show_progress {
        ProgressBar::new((plan.len() * (events_per_venue + 1)) as u64)
    } else {
        ProgressBar::hidden()
    };
    progress.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:40.cyan/blue}] {pos}/{len} ({eta})")
            .context("progress template")?
            .progress_chars("=> "),
    );
    progress.set_message("seeding");

    let now = marquee_domain::timestamp_now();
    let mut event_count = 0;
    for (city, kind) in &plan {
        let venue = build_venue(&organizer.id, city, *kind)?;
        store.create_venue(&venue).await?;
        progress.inc(1);
        for _ in 0..events_per_venue {
            let details = build_event(&mut rng, &venue, city, *kind, now)?;
            let mut event = Event {
                id: EventId::generate(),
                owner_id: organizer.id.clone(),
                venue_id: venue.id.clone(),
                status: EventStatus::Draft,
                version: 1,
                details,
                created_at: now,
                updated_at: now,
            };
            store.create_event(&event).await?;
            // A few stay drafts so the organizer's dashboard has work in progress.
            if rng.gen_ratio(19, 20) {
                event.publish()?;
                store
                    .update_event(&event, ChangeKind::EventPublished)
                    .await?;
            }
            event_count += 1;
            progress.inc(1);
        }
    }
    progress.finish_with_message("seeded");
    Ok(SeedOutcome::Seeded {
        venues: plan.len(),
        events: event_count,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VenueKind {
    Arena,
    Theatre,
    Club,
    ConcertHall,
    Stadium,
}

impl VenueKind {
    const ALL: [VenueKind; 5] = [
        VenueKind::Arena,
        VenueKind::Theatre,
        VenueKind::Club,
        VenueKind::ConcertHall,
        VenueKind::Stadium,
    ];

    fn name(self, city: &str) -> String {
        match self {
            VenueKind::Arena => format!("{city} Arena"),
            VenueKind::Theatre => format!("{city} Playhouse"),
            VenueKind::Club => format!("The {city} Ballroom"),
            VenueKind::ConcertHall => format!("{city} Philharmonie"),
            VenueKind::Stadium => format!("{city} National Stadium"),
        }
    }

    /// Sections as (name, rows, seats per row) for reserved seating or (name, 0, capacity).
    fn layout(self) -> Vec<(&'static str, u32, u32)> {
        match self {
            VenueKind::Arena => vec![
                ("Floor", 0, 3000),
                ("Lower Bowl A", 20, 30),
                ("Lower Bowl B", 20, 30),
                ("Lower Bowl C", 20, 30),
                ("Upper Tier", 15, 40),
            ],
            VenueKind::Theatre => vec![
                ("Stalls", 20, 28),
                ("Dress Circle", 10, 26),
                ("Balcony", 8, 24),
            ],
            VenueKind::Club => vec![("Standing", 0, 1200), ("Balcony", 6, 20)],
            VenueKind::ConcertHall => {
                vec![("Parterre", 25, 30), ("Tier 1", 8, 30), ("Tier 2", 8, 30)]
            }
            VenueKind::Stadium => vec![
                ("Pitch", 0, 20000),
                ("North Stand", 40, 100),
                ("South Stand", 40, 100),
                ("East Stand", 40, 100),
                ("West Stand", 40, 100),
            ],
        }
    }

    fn categories(self) -> &'static [&'static str] {
        match self {
            VenueKind::Arena => &["concert", "concert", "sports", "comedy"],
            VenueKind::Theatre => &["theatre", "theatre", "comedy", "family"],
            VenueKind::Club => &["concert", "concert", "comedy"],
            VenueKind::ConcertHall => &["classical", "classical", "concert"],
            VenueKind::Stadium => &["concert", "sports", "sports", "festival"],
        }
    }
}

/// Row labels A, B, … Z, AA, AB, …
fn row_label(index: u32) -> String {
    let letter = |n: u32| char::from(b'A' + (n % 26) as u8);
    if index < 26 {
        letter(index).to_string()
    } else {
        format!("{}{}", letter(index / 26 - 1), letter(index))
    }
}

fn build_venue(owner: &UserId, city: &City, kind: VenueKind) -> anyhow::Result<Venue> {
    let specs = kind
        .layout()
        .into_iter()
        .map(|(name, rows, size)| SectionSpec {
            name: name.to_string(),
            rows: (rows > 0).then(|| {
                (0..rows)
                    .map(|row| (row_label(row), i64::from(size)))
                    .collect()
            }),
            capacity: (rows == 0).then_some(i64::from(size)),
        })
        .collect();
    let seat_map = SeatMap::parse(specs).context("demo seat map")?;
    Ok(Venue {
        id: VenueId::generate(),
        owner_id: owner.clone(),
        details: VenueDetails {
            name: kind.name(&city.name),
            address: format!("1 Festival Square, {}", city.name),
            city: city.name.clone(),
            country: city.country.clone(),
            location: Coordinates::new(city.lat, city.lon).map_err(anyhow::Error::msg)?,
        },
        seat_map,
        created_at: marquee_domain::timestamp_now(),
    })
}

fn currency_of(country: &str) -> (&'static str, i64) {
    // (currency, multiplier from a base price in US cents to minor units of that currency)
    match country {
        "GB" => ("GBP", 1),
        "US" => ("USD", 1),
        "CA" => ("CAD", 1),
        "AU" => ("AUD", 1),
        "FR" | "DE" | "ES" | "IT" | "NL" | "AT" | "IE" => ("EUR", 1),
        "JP" => ("JPY", 1),
        "MX" => ("MXN", 17),
        "BR" => ("BRL", 5),
        "AR" => ("ARS", 900),
        "CZ" => ("CZK", 23),
        "PL" => ("PLN", 4),
        "SE" => ("SEK", 10),
        "TR" => ("TRY", 32),
        "EG" => ("EGP", 48),
        "NG" => ("NGN", 1500),
        "ZA" => ("ZAR", 18),
        "AE" => ("AED", 4),
        "IN" => ("INR", 83),
        _ => ("USD", 1),
    }
}

const BANDS: [&str; 16] = [
    "The Midnight Arcade",
    "Neon Harbor",
    "Velvet Static",
    "Paper Satellites",
    "Iron Orchard",
    "Luna Vega",
    "The Glass Pilots",
    "Sable & Rye",
    "Northern Lights Collective",
    "Kofi Mensah",
    "Ana Ribeiro",
    "Hollow Crown",
    "Electric Mariachi",
    "Yuki Tanabe Trio",
    "The Wandering Keys",
    "Desert Bloom",
];
const GENRES: [&[&str]; 6] = [
    &["rock", "indie"],
    &["pop", "dance"],
    &["metal", "rock"],
    &["jazz", "soul"],
    &["electronic", "dance"],
    &["folk", "acoustic"],
];
const PLAYS: [&str; 8] = [
    "Hamlet",
    "A Midsummer Night's Dream",
    "The Importance of Being Earnest",
    "Cyrano de Bergerac",
    "Pygmalion",
    "The Seagull",
    "Twelfth Night",
    "An Enemy of the People",
];
const COMEDIANS: [&str; 6] = [
    "Maya Okafor",
    "Tom Brandt",
    "Priya Raman",
    "Luis Ortega",
    "Hannah Lind",
    "Sam Whitlock",
];
const WORKS: [&str; 8] = [
    "Beethoven: Symphony No. 9",
    "Mahler: Symphony No. 5",
    "Dvořák: New World Symphony",
    "Vivaldi: The Four Seasons",
    "Brahms: Piano Concerto No. 1",
    "Tchaikovsky: Swan Lake Suite",
    "Sibelius: Violin Concerto",
    "Holst: The Planets",
];
const TEAMS: [&str; 8] = [
    "Lions", "Falcons", "Rovers", "Comets", "Wolves", "Mariners", "Titans", "Harriers",
];

fn build_event(
    rng: &mut StdRng,
    venue: &Venue,
    city: &City,
    kind: VenueKind,
    now: DateTime<Utc>,
) -> anyhow::Result<EventDetails> {
    let category = *kind.categories().choose(rng).unwrap_or(&"concert");
    let (title, performers, tags, description) = match category {
        "concert" | "festival" => {
            let band = *BANDS.choose(rng).unwrap_or(&BANDS[0]);
            let genre = *GENRES.choose(rng).unwrap_or(&GENRES[0]);
            let title = if category == "festival" {
                format!("{} Summer Sound Festival", city.name)
            } else {
                format!(
                    "{band} — {} Tour",
                    ["World", "Homecoming", "Midnight", "Live"][rng.gen_range(0..4)]
                )
            };
            let description = format!(
                "{band} bring their {} show to {}. Doors open one hour before the show.",
                genre.join(" and "),
                venue.details.name
            );
            (title, vec![band.to_string()], genre.to_vec(), description)
        }
        "theatre" | "family" => {
            let play = *PLAYS.choose(rng).unwrap_or(&PLAYS[0]);
            let company = format!("{} Repertory Company", city.name);
            let description = format!("A new staging of {play} by the {company}.");
            (
                play.to_string(),
                vec![company],
                vec!["drama", "classic"],
                description,
            )
        }
        "comedy" => {
            let comic = *COMEDIANS.choose(rng).unwrap_or(&COMEDIANS[0]);
            let description = format!("{comic}'s new hour of stand-up, recorded live.");
            (
                format!("{comic}: Loud Thoughts"),
                vec![comic.to_string()],
                vec!["stand-up"],
                description,
            )
        }
        "classical" => {
            let work = *WORKS.choose(rng).unwrap_or(&WORKS[0]);
            let orchestra = format!("{} Philharmonic Orchestra", city.name);
            let description = format!("{orchestra} performs {work}.");
            (
                work.to_string(),
                vec![orchestra],
                vec!["orchestra", "classical"],
                description,
            )
        }
        _ => {
            let home = *TEAMS.choose(rng).unwrap_or(&TEAMS[0]);
            let away = *TEAMS.choose(rng).unwrap_or(&TEAMS[1]);
            let title = format!("{} {home} vs Visiting {away}", city.name);
            let description = format!("League night at {}.", venue.details.name);
            (title, vec![], vec!["football", "league"], description)
        }
    };
    // Evenings in the city's local time, approximated from its longitude.
    let days_ahead = rng.gen_range(3..180);
    let utc_offset_hours = (city.lon / 15.0).round() as i64;
    let start_day = now + Duration::days(days_ahead);
    let starts_at = start_day
        .with_hour(0)
        .and_then(|day| day.with_minute(0))
        .and_then(|day| day.with_second(0))
        .and_then(|day| day.with_nanosecond(0))
        .context("midnight")?
        + Duration::minutes(19 * 60 + 30 - utc_offset_hours * 60);
    let (currency, multiplier) = currency_of(&city.country);
    let base_cents = rng.gen_range(25..90) * 100;
    let price_tiers = venue
        .seat_map
        .sections()
        .iter()
        .enumerate()
        .map(|(index, section)| {
            let premium = match section.layout {
                SectionLayout::GeneralAdmission { .. } => 100,
                SectionLayout::Reserved { .. } => 150 - 20 * index as i64,
            };
            PriceTier::parse(
                &section.name,
                base_cents * premium.max(60) / 100 * multiplier,
                currency,
                vec![section.name.clone()],
            )
            .map_err(|errors| anyhow::anyhow!("demo tier: {errors}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let big = matches!(kind, VenueKind::Arena | VenueKind::Stadium);
    Ok(EventDetails {
        title,
        description,
        category: Category::parse(category).map_err(anyhow::Error::msg)?,
        tags: tags.into_iter().map(str::to_string).collect(),
        performers,
        starts_at,
        ends_at: starts_at + Duration::hours(3),
        on_sale_at: now.min(starts_at),
        price_tiers,
        limits: OrderLimits::default(),
        waiting_room: WaitingRoomSettings {
            enabled: big && rng.gen_ratio(1, 3),
            ..WaitingRoomSettings::default()
        },
        streaming: StreamingSettings {
            enabled: rng.gen_ratio(1, 4),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_demo_city_is_in_the_embedded_list() {
        let all = cities().expect("cities");
        for (name, country) in DEMO_CITIES {
            assert!(
                all.iter()
                    .any(|city| city.name == name && city.country == country),
                "{name}, {country} missing"
            );
        }
    }

    #[test]
    fn row_labels_run_past_z() {
        assert_eq!(row_label(0), "A");
        assert_eq!(row_label(25), "Z");
        assert_eq!(row_label(26), "AA");
        assert_eq!(row_label(39), "AN");
    }

    #[test]
    fn every_venue_kind_builds_a_valid_priced_event() {
        let city = City {
            name: "Testville".into(),
            country: "GB".into(),
            lat: 51.5,
            lon: -0.1,
        };
        let mut rng = StdRng::seed_from_u64(1);
        for kind in VenueKind::ALL {
            let venue = build_venue(&UserId::generate(), &city, kind).expect("venue");
            for _ in 0..10 {
                let details =
                    build_event(&mut rng, &venue, &city, kind, Utc::now()).expect("event");
                details.check_schedule().expect("schedule");
                details.check_pricing(&venue.seat_map).expect("pricing");
            }
        }
    }
}
