//! Venues and seat maps on the wire.

use marquee_domain::{
    Coordinates, FieldErrors, SeatMap, SectionLayout, SectionSpec, Venue, VenueDetails,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateVenueRequest {
    pub name: String,
    #[serde(default)]
    pub address: String,
    pub city: String,
    /// ISO 3166-1 alpha-2 code, e.g. `GB`.
    pub country: String,
    /// -90..=90
    pub lat: f64,
    /// -180..=180
    pub lon: f64,
    /// At least one; each has either `rows` or `capacity`.
    pub sections: Vec<SectionRequest>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct SectionRequest {
    pub name: String,
    /// Reserved seating: rows of seats numbered 1..=seats.
    pub rows: Option<Vec<RowRequest>>,
    /// General admission: how many people the area holds.
    pub capacity: Option<i64>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RowRequest {
    pub label: String,
    /// 1..=1000
    pub seats: i64,
}

/// A venue that passed validation, still without id and owner.
pub struct VenueDraft {
    pub details: VenueDetails,
    pub seat_map: SeatMap,
}

impl TryFrom<CreateVenueRequest> for VenueDraft {
    type Error = FieldErrors;

    fn try_from(request: CreateVenueRequest) -> Result<Self, Self::Error> {
        let mut errors = FieldErrors::new();
        let name = errors.check("name", VenueDetails::parse_name(&request.name));
        let address = errors.check("address", VenueDetails::parse_address(&request.address));
        let city = errors.check("city", VenueDetails::parse_city(&request.city));
        let country = errors.check("country", VenueDetails::parse_country(&request.country));
        let lat = errors.check("lat", Coordinates::parse_lat(request.lat));
        let lon = errors.check("lon", Coordinates::parse_lon(request.lon));
        let specs = request
            .sections
            .into_iter()
            .map(|section| SectionSpec {
                name: section.name,
                rows: section
                    .rows
                    .map(|rows| rows.into_iter().map(|row| (row.label, row.seats)).collect()),
                capacity: section.capacity,
            })
            .collect();
        let seat_map = match SeatMap::parse(specs) {
            Ok(map) => Some(map),
            Err(nested) => {
                errors.absorb("", nested);
                None
            }
        };
        let location = match (lat, lon) {
            (Some(lat), Some(lon)) => Coordinates::new(lat, lon).ok(),
            _ => None,
        };
        match (name, address, city, country, location, seat_map) {
            (Some(name), Some(address), Some(city), Some(country), Some(location), Some(map))
                if errors.is_empty() =>
            {
                Ok(VenueDraft {
                    details: VenueDetails {
                        name,
                        address,
                        city,
                        country,
                        location,
                    },
                    seat_map: map,
                })
            }
            _ => Err(errors),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VenueBody {
    pub id: String,
    pub owner_id: String,
    pub name: String,
    pub address: String,
    pub city: String,
    pub country: String,
    pub lat: f64,
    pub lon: f64,
    /// Reserved seats plus general-admission places.
    pub capacity: u64,
    pub sections: Vec<SectionBody>,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SectionBody {
    pub name: String,
    /// `reserved` or `general_admission`.
    pub kind: &'static str,
    /// For general admission.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capacity: Option<u32>,
    /// For reserved seating, with every seat's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<Vec<RowBody>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RowBody {
    pub label: String,
    pub seats: Vec<SeatBody>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SeatBody {
    pub id: String,
    pub number: u32,
}

impl From<&Venue> for VenueBody {
    fn from(venue: &Venue) -> Self {
        let mut seats = venue.seat_map.seats(&venue.id).peekable();
        let sections = venue
            .seat_map
            .sections()
            .iter()
            .map(|section| match &section.layout {
                SectionLayout::GeneralAdmission { capacity } => SectionBody {
                    name: section.name.clone(),
                    kind: "general_admission",
                    capacity: Some(*capacity),
                    rows: None,
                },
                SectionLayout::Reserved { rows } => SectionBody {
                    name: section.name.clone(),
                    kind: "reserved",
                    capacity: None,
                    // `seats()` yields in map order, so each row takes its next `row.seats`.
                    rows: Some(
                        rows.iter()
                            .map(|row| RowBody {
                                label: row.label.clone(),
                                seats: seats
                                    .by_ref()
                                    .take(row.seats as usize)
                                    .map(|seat| SeatBody {
                                        id: seat.id.to_string(),
                                        number: seat.number,
                                    })
                                    .collect(),
                            })
                            .collect(),
                    ),
                },
            })
            .collect();
        VenueBody {
            id: venue.id.to_string(),
            owner_id: venue.owner_id.to_string(),
            name: venue.details.name.clone(),
            address: venue.details.address.clone(),
            city: venue.details.city.clone(),
            country: venue.details.country.clone(),
            lat: venue.details.location.lat(),
            lon: venue.details.location.lon(),
            capacity: venue.seat_map.capacity(),
            sections,
            created_at: venue.created_at,
        }
    }
}

/// A venue in brief, as embedded in events and lists.
#[derive(Debug, Serialize, ToSchema)]
pub struct VenueSummary {
    pub id: String,
    pub name: String,
    pub city: String,
    pub country: String,
    pub lat: f64,
    pub lon: f64,
    pub capacity: u64,
}

impl From<&Venue> for VenueSummary {
    fn from(venue: &Venue) -> Self {
        VenueSummary {
            id: venue.id.to_string(),
            name: venue.details.name.clone(),
            city: venue.details.city.clone(),
            country: venue.details.country.clone(),
            lat: venue.details.location.lat(),
            lon: venue.details.location.lon(),
            capacity: venue.seat_map.capacity(),
        }
    }
}
