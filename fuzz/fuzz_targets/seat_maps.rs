//! Why this exists: a venue's seat map comes from the client (`POST /api/v1/venues`), and
//! `marquee_domain::SeatMap::parse` is what keeps it bounded: at most 200 sections, 1000 rows per
//! section, 1000 seats per row and 100,000 reserved seats per venue. Everything downstream
//! (seat listings, seat ids, holds) trusts those bounds. This target builds section specs with
//! `arbitrary` and checks that parsing never panics and that an accepted map is consistent:
//! enumerating its seats yields exactly `reserved_seat_count()` seats, which is within the cap.

#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use marquee_domain::{SeatMap, SectionSpec, VenueId};

/// Caps that keep one case small while still straddling the parser's own limits where that is
/// cheap (names over 100 characters, labels over 20).
const MAX_SECTIONS: usize = 24;
const MAX_ROWS: usize = 64;
const MAX_NAME_CHARS: usize = 120;
const MAX_LABEL_CHARS: usize = 24;

#[derive(Debug)]
struct Input {
    specs: Vec<SectionSpec>,
}

fn capped_string(u: &mut Unstructured<'_>, max_chars: usize) -> arbitrary::Result<String> {
    let raw = String::arbitrary(u)?;
    Ok(raw.chars().take(max_chars).collect())
}

/// Seat counts: mostly near the interesting range (0..=1001), sometimes any i64.
fn seat_count(u: &mut Unstructured<'_>) -> arbitrary::Result<i64> {
    Ok(if u.ratio(7, 8)? {
        u.int_in_range(-1..=1001)?
    } else {
        i64::arbitrary(u)?
    })
}

fn capacity(u: &mut Unstructured<'_>) -> arbitrary::Result<i64> {
    Ok(if u.ratio(7, 8)? {
        u.int_in_range(-1..=100_001)?
    } else {
        i64::arbitrary(u)?
    })
}

impl<'a> Arbitrary<'a> for Input {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let section_count = u.int_in_range(0..=MAX_SECTIONS)?;
        let mut specs = Vec::with_capacity(section_count);
        for _ in 0..section_count {
            let name = capped_string(u, MAX_NAME_CHARS)?;
            let rows = if bool::arbitrary(u)? {
                let row_count = u.int_in_range(0..=MAX_ROWS)?;
                let mut rows = Vec::with_capacity(row_count);
                for _ in 0..row_count {
                    rows.push((capped_string(u, MAX_LABEL_CHARS)?, seat_count(u)?));
                }
                Some(rows)
            } else {
                None
            };
            let capacity = if bool::arbitrary(u)? {
                Some(capacity(u)?)
            } else {
                None
            };
            specs.push(SectionSpec {
                name,
                rows,
                capacity,
            });
        }
        // Optional padding, cheap in input bytes, to reach the section and row count limits:
        // uniquely named general-admission sections, and uniquely labelled one-seat rows.
        let pad_sections = usize::from(u8::arbitrary(u)?);
        if pad_sections > 200 - MAX_SECTIONS {
            for index in 0..pad_sections {
                specs.push(SectionSpec {
                    name: format!("pad section {index}"),
                    rows: None,
                    capacity: Some(1),
                });
            }
        }
        let pad_rows = usize::from(u16::arbitrary(u)? % 1100);
        if pad_rows > 900 {
            if let Some(rows) = specs.iter_mut().find_map(|spec| spec.rows.as_mut()) {
                rows.extend((0..pad_rows).map(|index| (format!("p{index}"), 1)));
            }
        }
        Ok(Input { specs })
    }
}

fuzz_target!(|input: Input| {
    let Ok(seat_map) = SeatMap::parse(input.specs) else {
        return;
    };
    let venue = VenueId::generate();
    let reserved = seat_map.reserved_seat_count();
    assert_eq!(seat_map.seats(&venue).count() as u64, reserved);
    assert!(reserved <= 100_000, "{reserved} reserved seats were accepted");
    assert!(!seat_map.sections().is_empty());
    assert!(seat_map.sections().len() <= 200);
    assert!(seat_map.capacity() >= reserved);
});
