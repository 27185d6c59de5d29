//! Events: what is on, where, when, at what prices, and the lifecycle draft → published →
//! cancelled. Pricing is checked against the venue's seat map: every section is sold at exactly
//! one tier, so a seat's price is never ambiguous.

use crate::EventId;
use crate::{bounded_text, FieldErrors, FieldResult, SeatMap, UserId, VenueId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventStatus {
    Draft,
    Published,
    Cancelled,
}

impl EventStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            EventStatus::Draft => "draft",
            EventStatus::Published => "published",
            EventStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(raw: &str) -> FieldResult<EventStatus> {
        match raw {
            "draft" => Ok(EventStatus::Draft),
            "published" => Ok(EventStatus::Published),
            "cancelled" => Ok(EventStatus::Cancelled),
            _ => Err("must be one of draft, published, cancelled".to_string()),
        }
    }
}

/// A lifecycle step that the event's current status does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an event that is {from} cannot be {attempted}")]
pub struct TransitionError {
    pub from: &'static str,
    pub attempted: &'static str,
}

/// Why a set of price tiers does not fit the venue's seat map (a business rule, not bad syntax).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PricingError {
    #[error("section {0:?} is not priced by any tier")]
    SectionUnpriced(String),
    #[error("section {0:?} is priced by more than one tier")]
    SectionPricedTwice(String),
    #[error("tier {tier:?} names section {section:?}, which the venue does not have")]
    UnknownSection { tier: String, section: String },
    #[error("all tiers of an event must use one currency")]
    MixedCurrencies,
}

/// A lowercase slug such as `concert` or `stand-up`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Category(String);

impl Category {
    pub fn parse(raw: &str) -> FieldResult<Category> {
        let slug = raw.trim().to_lowercase();
        let valid = (1..=32).contains(&slug.len())
            && slug
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if valid {
            Ok(Category(slug))
        } else {
            Err("must be 1-32 characters of a-z, 0-9, '-' or '_'".to_string())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceTier {
    pub name: String,
    pub price_cents: i64,
    /// ISO 4217, uppercase.
    pub currency: String,
    pub sections: Vec<String>,
}

impl PriceTier {
    pub const MAX_PRICE_CENTS: i64 = 100_000_000;
    pub const MAX_TIERS: usize = 50;

    pub fn parse(
        name: &str,
        price_cents: i64,
        currency: &str,
        sections: Vec<String>,
    ) -> Result<PriceTier, FieldErrors> {
        let mut errors = FieldErrors::new();
        let name = errors.check("name", bounded_text(name, 1, 100));
        if !(0..=Self::MAX_PRICE_CENTS).contains(&price_cents) {
            errors.add(
                "price_cents",
                format!("must be 0..={}", Self::MAX_PRICE_CENTS),
            );
        }
        let currency = currency.trim().to_ascii_uppercase();
        if currency.len() != 3 || !currency.chars().all(|c| c.is_ascii_uppercase()) {
            errors.add("currency", "must be an ISO 4217 currency code");
        }
        if sections.is_empty() {
            errors.add("sections", "must name at least one section");
        }
        errors.into_result()?;
        Ok(PriceTier {
            name: name.unwrap_or_default(),
            price_cents,
            currency,
            sections,
        })
    }
}

/// Limits on one order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLimits {
    pub max_seats_per_order: u32,
}

impl OrderLimits {
    pub const MAX: i64 = 100;

    pub fn parse(max_seats_per_order: i64) -> FieldResult<OrderLimits> {
        match u32::try_from(max_seats_per_order) {
            Ok(max) if (1..=Self::MAX).contains(&i64::from(max)) => Ok(OrderLimits {
                max_seats_per_order: max,
            }),
            _ => Err(format!("must be 1..={}", Self::MAX)),
        }
    }
}

impl Default for OrderLimits {
    fn default() -> Self {
        OrderLimits {
            max_seats_per_order: 8,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitingRoomSettings {
    pub enabled: bool,
    pub admit_per_minute: u32,
    pub pass_ttl_seconds: u32,
    /// Most admitted fans whose pass is still live (admission also waits for this); none if
    /// `None`. Absent in events stored before it existed.
    #[serde(default)]
    pub max_active: Option<u32>,
}

impl WaitingRoomSettings {
    pub fn parse_admit_per_minute(raw: i64) -> FieldResult<u32> {
        u32::try_from(raw)
            .ok()
            .filter(|rate| (1..=1_000_000).contains(rate))
            .ok_or_else(|| "must be 1..=1000000".to_string())
    }

    pub fn parse_pass_ttl_seconds(raw: i64) -> FieldResult<u32> {
        u32::try_from(raw)
            .ok()
            .filter(|ttl| (60..=86_400).contains(ttl))
            .ok_or_else(|| "must be 60..=86400".to_string())
    }

    pub fn parse_max_active(raw: i64) -> FieldResult<u32> {
        u32::try_from(raw)
            .ok()
            .filter(|cap| (1..=10_000_000).contains(cap))
            .ok_or_else(|| "must be 1..=10000000".to_string())
    }
}

impl Default for WaitingRoomSettings {
    fn default() -> Self {
        WaitingRoomSettings {
            enabled: false,
            admit_per_minute: 600,
            pass_ttl_seconds: 900,
            max_active: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamingSettings {
    pub enabled: bool,
}

/// Everything an organizer describes about an event; validated as a whole by
/// [`EventDetails::check_schedule`] and [`EventDetails::check_pricing`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventDetails {
    pub title: String,
    pub description: String,
    pub category: Category,
    pub tags: Vec<String>,
    pub performers: Vec<String>,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub on_sale_at: DateTime<Utc>,
    pub price_tiers: Vec<PriceTier>,
    pub limits: OrderLimits,
    pub waiting_room: WaitingRoomSettings,
    pub streaming: StreamingSettings,
}

impl EventDetails {
    pub fn parse_title(raw: &str) -> FieldResult<String> {
        bounded_text(raw, 1, 200)
    }

    pub fn parse_description(raw: &str) -> FieldResult<String> {
        bounded_text(raw, 0, 10_000)
    }

    /// Tags are lowercased and de-duplicated, keeping their first order.
    pub fn parse_tags(raw: Vec<String>) -> FieldResult<Vec<String>> {
        parse_labels(raw, 20, 40, true)
    }

    pub fn parse_performers(raw: Vec<String>) -> FieldResult<Vec<String>> {
        parse_labels(raw, 50, 100, false)
    }

    /// Times must run in order: on sale no later than the start, the start before the end.
    pub fn check_schedule(&self) -> Result<(), FieldErrors> {
        let mut errors = FieldErrors::new();
        let latest = Self::latest_time();
        for (field, time) in [
            ("starts_at", self.starts_at),
            ("ends_at", self.ends_at),
            ("on_sale_at", self.on_sale_at),
        ] {
            if time > latest {
                errors.add(field, "must be before the year 2200");
            }
        }
        if self.ends_at <= self.starts_at {
            errors.add("ends_at", "must be after starts_at");
        }
        if self.on_sale_at > self.starts_at {
            errors.add("on_sale_at", "must not be after starts_at");
        }
        errors.into_result()
    }

    fn latest_time() -> DateTime<Utc> {
        DateTime::from_timestamp(7_258_118_400, 0).unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    /// Every section of the seat map is priced by exactly one tier, tiers name only real
    /// sections, and one currency is used throughout.
    pub fn check_pricing(&self, seat_map: &SeatMap) -> Result<(), PricingError> {
        let currencies: HashSet<&str> = self
            .price_tiers
            .iter()
            .map(|tier| tier.currency.as_str())
            .collect();
        if currencies.len() > 1 {
            return Err(PricingError::MixedCurrencies);
        }
        let mut priced: HashMap<&str, usize> = HashMap::new();
        for tier in &self.price_tiers {
            for section in &tier.sections {
                if seat_map.section(section).is_none() {
                    return Err(PricingError::UnknownSection {
                        tier: tier.name.clone(),
                        section: section.clone(),
                    });
                }
                *priced.entry(section.as_str()).or_default() += 1;
            }
        }
        for section in seat_map.sections() {
            match priced.get(section.name.as_str()) {
                None => return Err(PricingError::SectionUnpriced(section.name.clone())),
                Some(1) => {}
                Some(_) => return Err(PricingError::SectionPricedTwice(section.name.clone())),
            }
        }
        Ok(())
    }

    pub fn tier_for_section(&self, section: &str) -> Option<&PriceTier> {
        self.price_tiers
            .iter()
            .find(|tier| tier.sections.iter().any(|name| name == section))
    }

    pub fn min_price(&self) -> Option<&PriceTier> {
        self.price_tiers.iter().min_by_key(|tier| tier.price_cents)
    }
}

fn parse_labels(
    raw: Vec<String>,
    max_items: usize,
    max_chars: usize,
    lowercase: bool,
) -> FieldResult<Vec<String>> {
    if raw.len() > max_items {
        return Err(format!("must have at most {max_items} entries"));
    }
    let mut seen = HashSet::new();
    let mut labels = Vec::with_capacity(raw.len());
    for item in raw {
        let mut label =
            bounded_text(&item, 1, max_chars).map_err(|message| format!("each entry {message}"))?;
        if lowercase {
            label = label.to_lowercase();
        }
        if seen.insert(label.to_lowercase()) {
            labels.push(label);
        }
    }
    Ok(labels)
}

/// A partial update: `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct EventPatch {
    pub title: Option<String>,
    pub description: Option<String>,
    pub category: Option<Category>,
    pub tags: Option<Vec<String>>,
    pub performers: Option<Vec<String>>,
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
    pub on_sale_at: Option<DateTime<Utc>>,
    pub price_tiers: Option<Vec<PriceTier>>,
    pub limits: Option<OrderLimits>,
    pub waiting_room: Option<WaitingRoomSettings>,
    pub streaming: Option<StreamingSettings>,
}

impl EventPatch {
    /// Price tiers shape what every seat costs; once an event is published they stay fixed.
    pub fn changes_pricing(&self) -> bool {
        self.price_tiers.is_some()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: EventId,
    pub owner_id: UserId,
    pub venue_id: VenueId,
    pub status: EventStatus,
    /// Grows by one with every change; the store refuses a write based on an older version.
    pub version: i64,
    pub details: EventDetails,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Event {
    pub fn publish(&mut self) -> Result<(), TransitionError> {
        match self.status {
            EventStatus::Draft => {
                self.status = EventStatus::Published;
                Ok(())
            }
            from @ (EventStatus::Published | EventStatus::Cancelled) => Err(TransitionError {
                from: from.as_str(),
                attempted: "published",
            }),
        }
    }

    pub fn cancel(&mut self) -> Result<(), TransitionError> {
        match self.status {
            EventStatus::Draft | EventStatus::Published => {
                self.status = EventStatus::Cancelled;
                Ok(())
            }
            EventStatus::Cancelled => Err(TransitionError {
                from: "cancelled",
                attempted: "cancelled",
            }),
        }
    }

    /// Applies a patch to a copy of the details. Cancelled events are frozen, and a published
    /// event's pricing is fixed; the caller still runs the schedule and pricing checks.
    pub fn patched(&self, patch: EventPatch) -> Result<EventDetails, TransitionError> {
        let frozen = self.status == EventStatus::Cancelled
            || (self.status == EventStatus::Published && patch.changes_pricing());
        if frozen {
            return Err(TransitionError {
                from: self.status.as_str(),
                attempted: if patch.changes_pricing() {
                    "re-priced"
                } else {
                    "changed"
                },
            });
        }
        let current = self.details.clone();
        Ok(EventDetails {
            title: patch.title.unwrap_or(current.title),
            description: patch.description.unwrap_or(current.description),
            category: patch.category.unwrap_or(current.category),
            tags: patch.tags.unwrap_or(current.tags),
            performers: patch.performers.unwrap_or(current.performers),
            starts_at: patch.starts_at.unwrap_or(current.starts_at),
            ends_at: patch.ends_at.unwrap_or(current.ends_at),
            on_sale_at: patch.on_sale_at.unwrap_or(current.on_sale_at),
            price_tiers: patch.price_tiers.unwrap_or(current.price_tiers),
            limits: patch.limits.unwrap_or(current.limits),
            waiting_room: patch.waiting_room.unwrap_or(current.waiting_room),
            streaming: patch.streaming.unwrap_or(current.streaming),
        })
    }

    pub fn has_ended(&self, now: DateTime<Utc>) -> bool {
        self.details.ends_at <= now
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SectionSpec;
    use chrono::Duration;

    fn seat_map() -> SeatMap {
        SeatMap::parse(vec![
            SectionSpec {
                name: "Stalls".into(),
                rows: Some(vec![("A".into(), 10)]),
                capacity: None,
            },
            SectionSpec {
                name: "Standing".into(),
                rows: None,
                capacity: Some(500),
            },
        ])
        .expect("valid map")
    }

    fn tier(name: &str, currency: &str, sections: &[&str]) -> PriceTier {
        PriceTier::parse(
            name,
            5000,
            currency,
            sections.iter().map(|s| s.to_string()).collect(),
        )
        .expect("valid tier")
    }

    fn details(tiers: Vec<PriceTier>) -> EventDetails {
        let starts_at = Utc::now() + Duration::days(30);
        EventDetails {
            title: "Show".into(),
            description: String::new(),
            category: Category::parse("concert").expect("valid"),
            tags: vec![],
            performers: vec![],
            starts_at,
            ends_at: starts_at + Duration::hours(3),
            on_sale_at: Utc::now(),
            price_tiers: tiers,
            limits: OrderLimits::default(),
            waiting_room: WaitingRoomSettings::default(),
            streaming: StreamingSettings::default(),
        }
    }

    #[test]
    fn every_section_is_priced_exactly_once() {
        let map = seat_map();
        let ok = details(vec![
            tier("A", "GBP", &["Stalls"]),
            tier("B", "GBP", &["Standing"]),
        ]);
        assert_eq!(ok.check_pricing(&map), Ok(()));
        let missing = details(vec![tier("A", "GBP", &["Stalls"])]);
        assert_eq!(
            missing.check_pricing(&map),
            Err(PricingError::SectionUnpriced("Standing".into()))
        );
        let twice = details(vec![
            tier("A", "GBP", &["Stalls", "Standing"]),
            tier("B", "GBP", &["Standing"]),
        ]);
        assert_eq!(
            twice.check_pricing(&map),
            Err(PricingError::SectionPricedTwice("Standing".into()))
        );
        let unknown = details(vec![tier("A", "GBP", &["Stalls", "Standing", "Balcony"])]);
        assert!(matches!(
            unknown.check_pricing(&map),
            Err(PricingError::UnknownSection { .. })
        ));
        let mixed = details(vec![
            tier("A", "GBP", &["Stalls"]),
            tier("B", "EUR", &["Standing"]),
        ]);
        assert_eq!(
            mixed.check_pricing(&map),
            Err(PricingError::MixedCurrencies)
        );
    }

    #[test]
    fn schedule_runs_forward() {
        let mut backwards = details(vec![]);
        backwards.ends_at = backwards.starts_at - Duration::hours(1);
        backwards.on_sale_at = backwards.starts_at + Duration::hours(1);
        let errors = backwards.check_schedule().expect_err("backwards");
        assert!(errors.fields().contains_key("ends_at"));
        assert!(errors.fields().contains_key("on_sale_at"));
    }

    #[test]
    fn lifecycle_moves_one_way() {
        let now = Utc::now();
        let mut event = Event {
            id: EventId::generate(),
            owner_id: UserId::generate(),
            venue_id: VenueId::generate(),
            status: EventStatus::Draft,
            version: 1,
            details: details(vec![]),
            created_at: now,
            updated_at: now,
        };
        assert!(event.publish().is_ok());
        assert!(event.publish().is_err());
        assert!(event
            .patched(EventPatch {
                price_tiers: Some(vec![]),
                ..EventPatch::default()
            })
            .is_err());
        assert!(event.cancel().is_ok());
        assert!(event.publish().is_err());
        assert!(event.cancel().is_err());
        assert!(event.patched(EventPatch::default()).is_err());
    }

    #[test]
    fn tags_are_normalised() {
        assert_eq!(
            EventDetails::parse_tags(vec!["Rock".into(), "rock".into(), " Metal ".into()]),
            Ok(vec!["rock".to_string(), "metal".to_string()])
        );
        assert!(EventDetails::parse_tags(vec![String::new()]).is_err());
    }
}
