//! Events on the wire: create, patch, the event, and its seats.

use crate::wire::venues::VenueSummary;
use chrono::{DateTime, Duration, Utc};
use marquee_domain::SeatId;
use marquee_domain::{
    Category, Event, EventDetails, EventPatch, FieldErrors, OrderLimits, PriceTier,
    StreamingSettings, Venue, VenueId, WaitingRoomSettings,
};
use marquee_store::SeatSnapshot;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use utoipa::ToSchema;

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateEventRequest {
    pub title: String,
    #[serde(default)]
    pub description: String,
    pub venue_id: String,
    /// A slug such as `concert`, `theatre`, `sports`, `comedy`.
    pub category: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub performers: Vec<String>,
    pub starts_at: DateTime<Utc>,
    /// Defaults to three hours after `starts_at`.
    pub ends_at: Option<DateTime<Utc>>,
    /// When tickets go on sale; defaults to now.
    pub on_sale_at: Option<DateTime<Utc>>,
    /// Every section of the venue must be priced by exactly one tier.
    pub price_tiers: Vec<PriceTierRequest>,
    pub limits: Option<LimitsRequest>,
    pub waiting_room: Option<WaitingRoomRequest>,
    pub streaming: Option<StreamingRequest>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct PriceTierRequest {
    pub name: String,
    pub price_cents: i64,
    /// ISO 4217, e.g. `GBP`.
    pub currency: String,
    pub sections: Vec<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct LimitsRequest {
    /// 1..=100, default 8.
    pub max_seats_per_order: i64,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct WaitingRoomRequest {
    #[serde(default)]
    pub enabled: bool,
    /// Default 600.
    pub admit_per_minute: Option<i64>,
    /// 60..=86400, default 900.
    pub pass_ttl_seconds: Option<i64>,
    /// 1..=10000000: also wait until fewer admitted fans hold a live pass. Default: no cap.
    pub max_active: Option<i64>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct StreamingRequest {
    #[serde(default)]
    pub enabled: bool,
}

/// Partial update: absent or null fields stay as they are.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct PatchEventRequest {
    pub title: Option<String>,
    pub description: Option<String>,
    pub category: Option<String>,
    pub tags: Option<Vec<String>>,
    pub performers: Option<Vec<String>>,
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
    pub on_sale_at: Option<DateTime<Utc>>,
    /// Only while the event is a draft.
    pub price_tiers: Option<Vec<PriceTierRequest>>,
    pub limits: Option<LimitsRequest>,
    pub waiting_room: Option<WaitingRoomRequest>,
    pub streaming: Option<StreamingRequest>,
}

/// A new event that passed field validation; pricing against the seat map is checked once the
/// venue is loaded.
pub struct EventDraft {
    pub venue_id: VenueId,
    pub details: EventDetails,
}

fn parse_tiers(
    requests: Vec<PriceTierRequest>,
    errors: &mut FieldErrors,
) -> Option<Vec<PriceTier>> {
    if requests.is_empty() || requests.len() > PriceTier::MAX_TIERS {
        errors.add(
            "price_tiers",
            format!("must contain 1..={} tiers", PriceTier::MAX_TIERS),
        );
        return None;
    }
    let before = errors.fields().len();
    let mut names = std::collections::HashSet::new();
    let mut tiers = Vec::with_capacity(requests.len());
    for (index, request) in requests.into_iter().enumerate() {
        let path = format!("price_tiers[{index}]");
        match PriceTier::parse(
            &request.name,
            request.price_cents,
            &request.currency,
            request.sections,
        ) {
            Ok(tier) => {
                if !names.insert(tier.name.to_lowercase()) {
                    errors.add(format!("{path}.name"), "must be unique within the event");
                }
                tiers.push(tier);
            }
            Err(nested) => errors.absorb(&path, nested),
        }
    }
    (errors.fields().len() == before).then_some(tiers)
}

fn parse_waiting_room(
    request: WaitingRoomRequest,
    current: WaitingRoomSettings,
    errors: &mut FieldErrors,
) -> Option<WaitingRoomSettings> {
    // Every field is checked before giving up, so one 400 names all bad fields.
    let admit_per_minute = match request.admit_per_minute {
        None => Some(current.admit_per_minute),
        Some(raw) => errors.check(
            "waiting_room.admit_per_minute",
            WaitingRoomSettings::parse_admit_per_minute(raw),
        ),
    };
    let pass_ttl_seconds = match request.pass_ttl_seconds {
        None => Some(current.pass_ttl_seconds),
        Some(raw) => errors.check(
            "waiting_room.pass_ttl_seconds",
            WaitingRoomSettings::parse_pass_ttl_seconds(raw),
        ),
    };
    let max_active = match request.max_active {
        None => Some(current.max_active),
        Some(raw) => errors
            .check(
                "waiting_room.max_active",
                WaitingRoomSettings::parse_max_active(raw),
            )
            .map(Some),
    };
    let (admit_per_minute, pass_ttl_seconds, max_active) =
        (admit_per_minute?, pass_ttl_seconds?, max_active?);
    Some(WaitingRoomSettings {
        enabled: request.enabled,
        admit_per_minute,
        pass_ttl_seconds,
        max_active,
    })
}

fn parse_limits(request: LimitsRequest, errors: &mut FieldErrors) -> Option<OrderLimits> {
    errors.check(
        "limits.max_seats_per_order",
        OrderLimits::parse(request.max_seats_per_order),
    )
}

impl EventDraft {
    pub fn parse(request: CreateEventRequest, now: DateTime<Utc>) -> Result<Self, FieldErrors> {
        let mut errors = FieldErrors::new();
        let title = errors.check("title", EventDetails::parse_title(&request.title));
        let description = errors.check(
            "description",
            EventDetails::parse_description(&request.description),
        );
        let category = errors.check("category", Category::parse(&request.category));
        let tags = errors.check("tags", EventDetails::parse_tags(request.tags));
        let performers = errors.check(
            "performers",
            EventDetails::parse_performers(request.performers),
        );
        if request.venue_id.trim().is_empty() {
            errors.add("venue_id", "is required");
        }
        let price_tiers = parse_tiers(request.price_tiers, &mut errors);
        let limits = match request.limits {
            None => Some(OrderLimits::default()),
            Some(limits) => parse_limits(limits, &mut errors),
        };
        let waiting_room = match request.waiting_room {
            None => Some(WaitingRoomSettings::default()),
            Some(room) => parse_waiting_room(room, WaitingRoomSettings::default(), &mut errors),
        };
        let streaming = StreamingSettings {
            enabled: request.streaming.is_some_and(|streaming| streaming.enabled),
        };
        let (
            Some(title),
            Some(description),
            Some(category),
            Some(tags),
            Some(performers),
            Some(price_tiers),
            Some(limits),
            Some(waiting_room),
        ) = (
            title,
            description,
            category,
            tags,
            performers,
            price_tiers,
            limits,
            waiting_room,
        )
        else {
            return Err(errors);
        };
        errors.into_result()?;
        let details = EventDetails {
            title,
            description,
            category,
            tags,
            performers,
            starts_at: request.starts_at,
            // Checked: a client may send a date at the end of chrono's range (found by fuzzing).
            ends_at: request
                .ends_at
                .or_else(|| request.starts_at.checked_add_signed(Duration::hours(3)))
                .unwrap_or(request.starts_at),
            on_sale_at: request
                .on_sale_at
                .unwrap_or_else(|| now.min(request.starts_at)),
            price_tiers,
            limits,
            waiting_room,
            streaming,
        };
        details.check_schedule()?;
        Ok(EventDraft {
            venue_id: VenueId::from_string(request.venue_id.trim()),
            details,
        })
    }
}

impl PatchEventRequest {
    /// Parses each field that is present; the current event fills in waiting-room defaults.
    pub fn parse(self, current: &Event) -> Result<EventPatch, FieldErrors> {
        let mut errors = FieldErrors::new();
        let mut patch = EventPatch {
            starts_at: self.starts_at,
            ends_at: self.ends_at,
            on_sale_at: self.on_sale_at,
            ..EventPatch::default()
        };
        if let Some(title) = self.title {
            patch.title = errors.check("title", EventDetails::parse_title(&title));
        }
        if let Some(description) = self.description {
            patch.description =
                errors.check("description", EventDetails::parse_description(&description));
        }
        if let Some(category) = self.category {
            patch.category = errors.check("category", Category::parse(&category));
        }
        if let Some(tags) = self.tags {
            patch.tags = errors.check("tags", EventDetails::parse_tags(tags));
        }
        if let Some(performers) = self.performers {
            patch.performers =
                errors.check("performers", EventDetails::parse_performers(performers));
        }
        if let Some(tiers) = self.price_tiers {
            patch.price_tiers = parse_tiers(tiers, &mut errors);
        }
        if let Some(limits) = self.limits {
            patch.limits = parse_limits(limits, &mut errors);
        }
        if let Some(room) = self.waiting_room {
            patch.waiting_room =
                parse_waiting_room(room, current.details.waiting_room, &mut errors);
        }
        if let Some(streaming) = self.streaming {
            patch.streaming = Some(StreamingSettings {
                enabled: streaming.enabled,
            });
        }
        errors.into_result()?;
        Ok(patch)
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PriceTierBody {
    pub name: String,
    pub price_cents: i64,
    pub currency: String,
    pub sections: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LimitsBody {
    pub max_seats_per_order: u32,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WaitingRoomBody {
    pub enabled: bool,
    pub admit_per_minute: u32,
    pub pass_ttl_seconds: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_active: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StreamingBody {
    pub enabled: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventBody {
    pub id: String,
    /// `draft`, `published` or `cancelled`.
    pub status: &'static str,
    /// Grows with every change; send it back as `If-Match` to update only what you saw.
    pub version: i64,
    pub owner_id: String,
    pub venue_id: String,
    pub venue: VenueSummary,
    pub title: String,
    pub description: String,
    pub category: String,
    pub tags: Vec<String>,
    pub performers: Vec<String>,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub on_sale_at: DateTime<Utc>,
    pub price_tiers: Vec<PriceTierBody>,
    /// The cheapest tier's price.
    pub min_price_cents: Option<i64>,
    pub currency: Option<String>,
    pub limits: LimitsBody,
    pub waiting_room: WaitingRoomBody,
    pub streaming: StreamingBody,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl EventBody {
    pub fn new(event: &Event, venue: &Venue) -> Self {
        let details = &event.details;
        let cheapest = details.min_price();
        EventBody {
            id: event.id.to_string(),
            status: event.status.as_str(),
            version: event.version,
            owner_id: event.owner_id.to_string(),
            venue_id: event.venue_id.to_string(),
            venue: VenueSummary::from(venue),
            title: details.title.clone(),
            description: details.description.clone(),
            category: details.category.as_str().to_string(),
            tags: details.tags.clone(),
            performers: details.performers.clone(),
            starts_at: details.starts_at,
            ends_at: details.ends_at,
            on_sale_at: details.on_sale_at,
            price_tiers: details
                .price_tiers
                .iter()
                .map(|tier| PriceTierBody {
                    name: tier.name.clone(),
                    price_cents: tier.price_cents,
                    currency: tier.currency.clone(),
                    sections: tier.sections.clone(),
                })
                .collect(),
            min_price_cents: cheapest.map(|tier| tier.price_cents),
            currency: cheapest.map(|tier| tier.currency.clone()),
            limits: LimitsBody {
                max_seats_per_order: details.limits.max_seats_per_order,
            },
            waiting_room: WaitingRoomBody {
                enabled: details.waiting_room.enabled,
                admit_per_minute: details.waiting_room.admit_per_minute,
                pass_ttl_seconds: details.waiting_room.pass_ttl_seconds,
                max_active: details.waiting_room.max_active,
            },
            streaming: StreamingBody {
                enabled: details.streaming.enabled,
            },
            created_at: event.created_at,
            updated_at: event.updated_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SeatsBody {
    pub event_id: String,
    /// The push stream offset of the last seat change included.
    pub version: i64,
    pub seats: Vec<SeatStatusBody>,
    pub general_admission: Vec<GeneralAdmissionBody>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SeatStatusBody {
    pub id: String,
    pub section: String,
    pub row: String,
    pub number: u32,
    pub tier: String,
    pub price_cents: i64,
    /// `available`, `held` or `sold`.
    pub status: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GeneralAdmissionBody {
    pub section: String,
    pub capacity: u32,
    pub available: u32,
    pub tier: String,
    pub price_cents: i64,
}

impl SeatsBody {
    /// Every seat of the event's venue with its price and status.
    pub fn new(event: &Event, venue: &Venue, snapshot: &SeatSnapshot) -> Self {
        let held: HashSet<&SeatId> = snapshot.held.iter().collect();
        let sold: HashSet<&SeatId> = snapshot.sold.iter().collect();
        let tier_of = |section: &str| {
            event
                .details
                .tier_for_section(section)
                .map(|tier| (tier.name.clone(), tier.price_cents))
                .unwrap_or_default()
        };
        let seats = venue
            .seat_map
            .seats(&venue.id)
            .map(|seat| {
                let (tier, price_cents) = tier_of(seat.section);
                SeatStatusBody {
                    id: seat.id.to_string(),
                    section: seat.section.to_string(),
                    row: seat.row.to_string(),
                    number: seat.number,
                    tier,
                    price_cents,
                    status: if sold.contains(&seat.id) {
                        "sold"
                    } else if held.contains(&seat.id) {
                        "held"
                    } else {
                        "available"
                    },
                }
            })
            .collect();
        let general_admission = venue
            .seat_map
            .general_admission()
            .map(|area| {
                let (tier, price_cents) = tier_of(area.section);
                let (held, sold) = snapshot
                    .general_admission
                    .get(area.section)
                    .copied()
                    .unwrap_or_default();
                GeneralAdmissionBody {
                    section: area.section.to_string(),
                    capacity: area.capacity,
                    available: area.capacity.saturating_sub(held + sold),
                    tier,
                    price_cents,
                }
            })
            .collect();
        SeatsBody {
            event_id: event.id.to_string(),
            version: snapshot.version,
            seats,
            general_admission,
        }
    }
}
