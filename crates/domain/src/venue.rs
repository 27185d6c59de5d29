//! Venues and their seat maps. A section is either reserved seating (rows of numbered seats) or a
//! general-admission area with a capacity; the limits below keep one venue's map bounded.

use crate::{bounded_text, FieldErrors, FieldResult, SeatId, UserId, VenueId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// A point on Earth in degrees (WGS 84).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Coordinates {
    lat: f64,
    lon: f64,
}

impl Coordinates {
    pub fn parse_lat(lat: f64) -> FieldResult<f64> {
        if lat.is_finite() && (-90.0..=90.0).contains(&lat) {
            Ok(lat)
        } else {
            Err("must be a latitude between -90 and 90".to_string())
        }
    }

    pub fn parse_lon(lon: f64) -> FieldResult<f64> {
        if lon.is_finite() && (-180.0..=180.0).contains(&lon) {
            Ok(lon)
        } else {
            Err("must be a longitude between -180 and 180".to_string())
        }
    }

    /// Both halves checked; report each bad half under its own field name with the two parse
    /// functions above when building from separate fields.
    pub fn new(lat: f64, lon: f64) -> FieldResult<Coordinates> {
        Ok(Coordinates {
            lat: Self::parse_lat(lat)?,
            lon: Self::parse_lon(lon)?,
        })
    }

    pub fn lat(self) -> f64 {
        self.lat
    }

    pub fn lon(self) -> f64 {
        self.lon
    }
}

/// The bounds a seat map must respect. The contract fixes these numbers; they are a type so that
/// tests and the demo can name them instead of repeating literals.
#[derive(Debug, Clone, Copy)]
pub struct SeatMapLimits;

impl SeatMapLimits {
    pub const MAX_SEATS_PER_ROW: i64 = 1000;
    pub const MAX_RESERVED_SEATS: u64 = 100_000;
    pub const MAX_GENERAL_ADMISSION_CAPACITY: i64 = 100_000;
    pub const MAX_SECTIONS: usize = 200;
    pub const MAX_ROWS_PER_SECTION: usize = 1000;
}

/// One row of reserved seats numbered `1..=seats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    pub label: String,
    pub seats: u32,
}

/// How a section is sold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SectionLayout {
    Reserved { rows: Vec<Row> },
    GeneralAdmission { capacity: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Section {
    pub name: String,
    pub layout: SectionLayout,
}

/// A section as a client described it, before validation. Counts are signed so that a negative
/// number is reported as a bad field rather than as a type error.
#[derive(Debug, Clone, Default)]
pub struct SectionSpec {
    pub name: String,
    pub rows: Option<Vec<(String, i64)>>,
    pub capacity: Option<i64>,
}

/// A general-admission area and its capacity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneralAdmissionArea<'a> {
    pub section: &'a str,
    pub capacity: u32,
}

/// One reserved seat and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeatLayout<'a> {
    pub id: SeatId,
    pub section: &'a str,
    pub row: &'a str,
    pub number: u32,
}

/// A validated seat map: at least one section, unique section names, unique row labels within a
/// section, and the limits of [`SeatMapLimits`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatMap {
    sections: Vec<Section>,
}

impl SeatMap {
    pub fn parse(specs: Vec<SectionSpec>) -> Result<SeatMap, FieldErrors> {
        let mut errors = FieldErrors::new();
        if specs.is_empty() {
            errors.add("sections", "must contain at least one section");
        }
        if specs.len() > SeatMapLimits::MAX_SECTIONS {
            errors.add(
                "sections",
                format!(
                    "must contain at most {} sections",
                    SeatMapLimits::MAX_SECTIONS
                ),
            );
            return Err(errors);
        }
        let mut names = HashSet::new();
        let mut reserved_seats: u64 = 0;
        let mut sections = Vec::with_capacity(specs.len());
        for (index, spec) in specs.into_iter().enumerate() {
            let path = format!("sections[{index}]");
            let name = errors.check(&format!("{path}.name"), bounded_text(&spec.name, 1, 100));
            if let Some(name) = &name {
                if !names.insert(name.to_lowercase()) {
                    errors.add(format!("{path}.name"), "must be unique within the venue");
                }
            }
            let layout = match (spec.rows, spec.capacity) {
                (Some(_), Some(_)) | (None, None) => {
                    errors.add(path.clone(), "must have either rows or capacity");
                    None
                }
                (None, Some(capacity)) => {
                    let max = SeatMapLimits::MAX_GENERAL_ADMISSION_CAPACITY;
                    if (1..=max).contains(&capacity) {
                        u32::try_from(capacity)
                            .ok()
                            .map(|capacity| SectionLayout::GeneralAdmission { capacity })
                    } else {
                        errors.add(format!("{path}.capacity"), format!("must be 1..={max}"));
                        None
                    }
                }
                (Some(rows), None) => {
                    let rows = parse_rows(&path, rows, &mut errors);
                    if let Some(rows) = &rows {
                        reserved_seats += rows.iter().map(|row| u64::from(row.seats)).sum::<u64>();
                    }
                    rows.map(|rows| SectionLayout::Reserved { rows })
                }
            };
            if let (Some(name), Some(layout)) = (name, layout) {
                sections.push(Section { name, layout });
            }
        }
        if reserved_seats > SeatMapLimits::MAX_RESERVED_SEATS {
            errors.add(
                "sections",
                format!(
                    "must hold at most {} reserved seats (got {reserved_seats})",
                    SeatMapLimits::MAX_RESERVED_SEATS
                ),
            );
        }
        errors.into_result()?;
        Ok(SeatMap { sections })
    }

    pub fn sections(&self) -> &[Section] {
        &self.sections
    }

    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|section| section.name == name)
    }

    /// Every reserved seat in map order: by section, then row, then number.
    pub fn seats<'a>(&'a self, venue: &'a VenueId) -> impl Iterator<Item = SeatLayout<'a>> + 'a {
        self.sections
            .iter()
            .enumerate()
            .flat_map(move |(section_index, section)| {
                let rows: &[Row] = match &section.layout {
                    SectionLayout::Reserved { rows } => rows,
                    SectionLayout::GeneralAdmission { .. } => &[],
                };
                rows.iter().enumerate().flat_map(move |(row_index, row)| {
                    (1..=row.seats).map(move |number| SeatLayout {
                        id: SeatId::derive(venue, section_index, row_index, number),
                        section: &section.name,
                        row: &row.label,
                        number,
                    })
                })
            })
    }

    /// Finds a reserved seat of this map by id, without scanning the map.
    pub fn locate<'a>(&'a self, venue: &VenueId, seat: &SeatId) -> Option<SeatLayout<'a>> {
        let rest = seat
            .as_str()
            .strip_prefix(venue.as_str())?
            .strip_prefix('-')?;
        let mut parts = rest.splitn(3, '-').map(str::parse::<usize>);
        let (Some(Ok(section_index)), Some(Ok(row_index)), Some(Ok(number))) =
            (parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let section = self.sections.get(section_index)?;
        let SectionLayout::Reserved { rows } = &section.layout else {
            return None;
        };
        let row = rows.get(row_index)?;
        let number = u32::try_from(number).ok()?;
        let id = SeatId::derive(venue, section_index, row_index, number);
        ((1..=row.seats).contains(&number) && &id == seat).then_some(SeatLayout {
            id,
            section: &section.name,
            row: &row.label,
            number,
        })
    }

    pub fn general_admission(&self) -> impl Iterator<Item = GeneralAdmissionArea<'_>> {
        self.sections
            .iter()
            .filter_map(|section| match section.layout {
                SectionLayout::GeneralAdmission { capacity } => Some(GeneralAdmissionArea {
                    section: &section.name,
                    capacity,
                }),
                SectionLayout::Reserved { .. } => None,
            })
    }

    pub fn reserved_seat_count(&self) -> u64 {
        self.sections
            .iter()
            .map(|section| match &section.layout {
                SectionLayout::Reserved { rows } => rows.iter().map(|r| u64::from(r.seats)).sum(),
                SectionLayout::GeneralAdmission { .. } => 0,
            })
            .sum()
    }

    /// Reserved seats plus general-admission places.
    pub fn capacity(&self) -> u64 {
        self.reserved_seat_count()
            + self
                .general_admission()
                .map(|area| u64::from(area.capacity))
                .sum::<u64>()
    }
}

fn parse_rows(path: &str, rows: Vec<(String, i64)>, errors: &mut FieldErrors) -> Option<Vec<Row>> {
    if rows.is_empty() {
        errors.add(format!("{path}.rows"), "must contain at least one row");
        return None;
    }
    if rows.len() > SeatMapLimits::MAX_ROWS_PER_SECTION {
        errors.add(
            format!("{path}.rows"),
            format!(
                "must contain at most {} rows",
                SeatMapLimits::MAX_ROWS_PER_SECTION
            ),
        );
        return None;
    }
    let before = errors.fields().len();
    let mut labels = HashSet::new();
    let mut parsed = Vec::with_capacity(rows.len());
    for (index, (label, seats)) in rows.into_iter().enumerate() {
        let row_path = format!("{path}.rows[{index}]");
        if let Some(label) = errors.check(&format!("{row_path}.label"), bounded_text(&label, 1, 20))
        {
            if !labels.insert(label.clone()) {
                errors.add(
                    format!("{row_path}.label"),
                    "must be unique within the section",
                );
            }
            let max = SeatMapLimits::MAX_SEATS_PER_ROW;
            match u32::try_from(seats) {
                Ok(seats) if (1..=max).contains(&i64::from(seats)) => {
                    parsed.push(Row { label, seats })
                }
                _ => errors.add(format!("{row_path}.seats"), format!("must be 1..={max}")),
            }
        }
    }
    (errors.fields().len() == before).then_some(parsed)
}

/// The descriptive part of a venue, validated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VenueDetails {
    pub name: String,
    pub address: String,
    pub city: String,
    /// ISO 3166-1 alpha-2, uppercase.
    pub country: String,
    pub location: Coordinates,
}

impl VenueDetails {
    pub fn parse_name(raw: &str) -> FieldResult<String> {
        bounded_text(raw, 1, 200)
    }

    pub fn parse_address(raw: &str) -> FieldResult<String> {
        bounded_text(raw, 0, 500)
    }

    pub fn parse_city(raw: &str) -> FieldResult<String> {
        bounded_text(raw, 1, 100)
    }

    pub fn parse_country(raw: &str) -> FieldResult<String> {
        let code = raw.trim().to_ascii_uppercase();
        if code.len() == 2 && code.chars().all(|c| c.is_ascii_uppercase()) {
            Ok(code)
        } else {
            Err("must be an ISO 3166-1 alpha-2 country code".to_string())
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Venue {
    pub id: VenueId,
    pub owner_id: UserId,
    pub details: VenueDetails,
    pub seat_map: SeatMap,
    pub created_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rows(section: &str, rows: &[(&str, i64)]) -> SectionSpec {
        SectionSpec {
            name: section.into(),
            rows: Some(rows.iter().map(|(l, s)| (l.to_string(), *s)).collect()),
            capacity: None,
        }
    }

    #[test]
    fn a_map_needs_a_section_and_valid_counts() {
        assert!(SeatMap::parse(vec![]).is_err());
        let errors =
            SeatMap::parse(vec![rows("Stalls", &[("A", 0), ("B", 1001)])]).expect_err("bad counts");
        assert!(errors.fields().contains_key("sections[0].rows[0].seats"));
        assert!(errors.fields().contains_key("sections[0].rows[1].seats"));
        let both = SectionSpec {
            name: "Mixed".into(),
            rows: Some(vec![("A".into(), 2)]),
            capacity: Some(10),
        };
        assert!(SeatMap::parse(vec![both]).is_err());
    }

    #[test]
    fn duplicate_section_names_and_row_labels_are_rejected() {
        let errors = SeatMap::parse(vec![
            rows("Stalls", &[("A", 2), ("A", 3)]),
            rows("stalls", &[("A", 2)]),
        ])
        .expect_err("duplicates");
        assert!(errors.fields().contains_key("sections[0].rows[1].label"));
        assert!(errors.fields().contains_key("sections[1].name"));
    }

    #[test]
    fn reserved_seats_are_capped_per_venue() {
        let big_row: Vec<(&str, i64)> = vec![("R", 1000); 1];
        let sections: Vec<SectionSpec> = (0..101)
            .map(|i| {
                let mut spec = rows(&format!("S{i}"), &big_row);
                spec.rows = Some(vec![("R".into(), 1000)]);
                spec
            })
            .collect();
        assert!(SeatMap::parse(sections).is_err());
    }

    #[test]
    fn coordinates_are_range_checked() {
        assert!(Coordinates::new(51.5, -0.15).is_ok());
        assert!(Coordinates::new(90.01, 0.0).is_err());
        assert!(Coordinates::new(0.0, -180.5).is_err());
        assert!(Coordinates::new(f64::NAN, 0.0).is_err());
    }

    #[test]
    fn seats_are_located_by_id_and_strangers_are_not() {
        let map = SeatMap::parse(vec![rows("Stalls", &[("A", 3), ("B", 2)])]).expect("map");
        let venue = VenueId::generate();
        for seat in map.seats(&venue) {
            assert_eq!(map.locate(&venue, &seat.id), Some(seat.clone()));
        }
        let other = VenueId::generate();
        for bogus in [
            format!("{venue}-0-1-3"),
            format!("{venue}-0-0-0"),
            format!("{venue}-1-0-1"),
            format!("{venue}-0-0-01"),
            format!("{other}-0-0-1"),
            "garbage".to_string(),
        ] {
            assert!(
                map.locate(&venue, &SeatId::from_string(bogus.clone()))
                    .is_none(),
                "{bogus}"
            );
        }
    }

    proptest! {
        #[test]
        fn every_seat_has_a_unique_id_and_counts_add_up(
            layout in prop::collection::vec(prop::collection::vec(1i64..40, 1..8), 1..6)
        ) {
            let specs: Vec<SectionSpec> = layout.iter().enumerate().map(|(s, section_rows)| SectionSpec {
                name: format!("Section {s}"),
                rows: Some(section_rows.iter().enumerate().map(|(r, n)| (format!("R{r}"), *n)).collect()),
                capacity: None,
            }).collect();
            let map = SeatMap::parse(specs).expect("valid layout");
            let venue = VenueId::generate();
            let ids: HashSet<SeatId> = map.seats(&venue).map(|seat| seat.id).collect();
            let expected: i64 = layout.iter().flatten().sum();
            prop_assert_eq!(ids.len() as i64, expected);
            prop_assert_eq!(map.reserved_seat_count() as i64, expected);
        }
    }
}
