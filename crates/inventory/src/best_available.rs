//! Best available: a run of adjacent free seats in one row, front rows first (map order is best
//! first); when no row has such a run, the first free seats in map order.
//!
//! In a rush, every fan asking at the same moment sees the same free seats, so "the" best run
//! would be everyone's choice: all but one collide on their leases, retry around each other in
//! lockstep and mostly give up (measured: 4–14 bookings/s for 64 concurrent fans on a 20,000-seat
//! event). So in a rush a request picks at random among the best `spread` runs that do not
//! overlap, and the caller widens `spread` on each retry; a quiet request (`spread` 1) gets the
//! best run itself. Quality barely moves (the runs are the front-most ones still free) and
//! concurrent requests spread over different seats.

use marquee_domain::{SeatId, Venue};
use rand::Rng;
use std::collections::HashSet;

pub(crate) fn choose(
    venue: &Venue,
    section: Option<&str>,
    quantity: u32,
    unavailable: &HashSet<SeatId>,
    spread: usize,
    rng: &mut impl Rng,
) -> Option<Vec<SeatId>> {
    let wanted = quantity as usize;
    let spread = spread.max(1);
    let free: Vec<_> = venue
        .seat_map
        .seats(&venue.id)
        .filter(|seat| section.is_none_or(|name| seat.section == name))
        .filter(|seat| !unavailable.contains(&seat.id))
        .collect();
    let mut runs: Vec<Vec<SeatId>> = Vec::new();
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
            runs.push(run.iter().map(|seat| seat.id.clone()).collect());
            if runs.len() == spread {
                break;
            }
            // The next candidate must not share a seat with this one.
            run.clear();
        }
    }
    if !runs.is_empty() {
        let pick = rng.gen_range(0..runs.len());
        return Some(runs.swap_remove(pick));
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
    use rand::SeedableRng;

    fn rng() -> rand::rngs::StdRng {
        rand::rngs::StdRng::seed_from_u64(7)
    }

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
        let chosen = choose(&venue, None, 3, &unavailable, 1, &mut rng()).expect("seats");
        assert_eq!(chosen, seats[4..7].to_vec());
        let pair = choose(&venue, Some("Stalls"), 2, &unavailable, 1, &mut rng()).expect("seats");
        assert_eq!(pair, seats[2..4].to_vec());
    }

    #[test]
    fn scattered_seats_when_no_row_fits_and_none_when_full() {
        let venue = venue();
        let seats: Vec<SeatId> = venue.seat_map.seats(&venue.id).map(|s| s.id).collect();
        let unavailable: HashSet<SeatId> = [1, 3, 5, 7].iter().map(|&i| seats[i].clone()).collect();
        let chosen = choose(&venue, None, 3, &unavailable, 4, &mut rng()).expect("seats");
        assert_eq!(
            chosen,
            vec![seats[0].clone(), seats[2].clone(), seats[4].clone()]
        );
        assert!(choose(&venue, None, 5, &unavailable, 4, &mut rng()).is_none());
        assert!(choose(&venue, Some("Balcony"), 1, &HashSet::new(), 4, &mut rng()).is_none());
    }

    #[test]
    fn a_spread_picks_among_the_front_most_runs_that_do_not_overlap() {
        let venue = venue();
        let seats: Vec<SeatId> = venue.seat_map.seats(&venue.id).map(|s| s.id).collect();
        // Pairs: A1-2, A3-4, B1-2, B3-4. The best three are the first three.
        let candidates = [
            seats[0..2].to_vec(),
            seats[2..4].to_vec(),
            seats[4..6].to_vec(),
        ];
        let mut rng = rng();
        let mut picked = HashSet::new();
        for _ in 0..200 {
            let chosen = choose(&venue, None, 2, &HashSet::new(), 3, &mut rng).expect("seats");
            assert!(
                candidates.contains(&chosen),
                "{chosen:?} is one of the best three"
            );
            picked.insert(chosen);
        }
        assert_eq!(picked.len(), 3, "every one of them gets picked");
    }
}
