//! Best available: the first run of adjacent free seats in one row, front rows first (map order
//! is best first); when no row has such a run, the first free seats in map order.

use marquee_domain::{SeatId, Venue};
use std::collections::HashSet;

pub(crate) fn choose(
    venue: &Venue,
    section: Option<&str>,
    quantity: u32,
    unavailable: &HashSet<SeatId>,
) -> Option<Vec<SeatId>> {
    let wanted = quantity as usize;
    let free: Vec<_> = venue
        .seat_map
        .seats(&venue.id)
        .filter(|seat| section.is_none_or(|name| seat.section == name))
        .filter(|seat| !unavailable.contains(&seat.id))
        .collect();
    let mut run: Vec<&marquee_domain::SeatLayout<'_>> = Vec::new();
    for seat in &free {
        let continues = run.last().is_some_and(|last| {
            last.section == seat.section && last.row == seat.row && last.number + 1 == seat.number
        });
        if !continues {
            run.clear();
        }
        run.push(seat);
        if run.len() == wanted {
            return Some(run.iter().map(|seat| seat.id.clone()).collect());
        }
    }
    (free.len() >= wanted).then(|| {
        free.iter()
            .take(wanted)
            .map(|seat| seat.id.clone())
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use marquee_domain::{Coordinates, SeatMap, SectionSpec, UserId, VenueDetails, VenueId};

    fn venue() -> Venue {
        Venue {
            id: VenueId::generate(),
            owner_id: UserId::generate(),
            details: VenueDetails {
                name: "Hall".into(),
                address: String::new(),
                city: "X".into(),
                country: "GB".into(),
                location: Coordinates::new(0.0, 0.0).expect("coordinates"),
            },
            seat_map: SeatMap::parse(vec![SectionSpec {
                name: "Stalls".into(),
                rows: Some(vec![("A".into(), 4), ("B".into(), 4)]),
                capacity: None,
            }])
            .expect("map"),
            created_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn adjacent_seats_in_one_row_win_over_scattered_front_seats() {
        let venue = venue();
        let seats: Vec<SeatId> = venue.seat_map.seats(&venue.id).map(|s| s.id).collect();
        // Row A: 1 free, 2 taken, 3-4 free. Three adjacent seats exist only in row B.
        let unavailable: HashSet<SeatId> = [seats[1].clone()].into_iter().collect();
        let chosen = choose(&venue, None, 3, &unavailable).expect("seats");
        assert_eq!(chosen, seats[4..7].to_vec());
        let pair = choose(&venue, Some("Stalls"), 2, &unavailable).expect("seats");
        assert_eq!(pair, seats[2..4].to_vec());
    }

    #[test]
    fn scattered_seats_when_no_row_fits_and_none_when_full() {
        let venue = venue();
        let seats: Vec<SeatId> = venue.seat_map.seats(&venue.id).map(|s| s.id).collect();
        let unavailable: HashSet<SeatId> = [1, 3, 5, 7].iter().map(|&i| seats[i].clone()).collect();
        let chosen = choose(&venue, None, 3, &unavailable).expect("seats");
        assert_eq!(
            chosen,
            vec![seats[0].clone(), seats[2].clone(), seats[4].clone()]
        );
        assert!(choose(&venue, None, 5, &unavailable).is_none());
        assert!(choose(&venue, Some("Balcony"), 1, &HashSet::new()).is_none());
    }
}
