//! Geo search without geo support in the engine: every document carries the terms of the grid
//! cells that contain it, at a few sizes (a quadtree flattened into terms); a radius or box query
//! first selects documents by the cells that cover the area (an inverted-index lookup, cheap), then
//! checks each candidate's exact great-circle distance. The covering may over-select (a cell is
//! larger than the circle's edge) but never under-selects — that is the property the tests prove
//! against brute force, including across the antimeridian and at the poles.

/// Mean Earth radius (IUGG), km.
pub const EARTH_RADIUS_KM: f64 = 6371.0088;

/// Cell edge lengths in degrees, coarse to fine. Each level is a quarter of the one before, so one
/// cell holds sixteen of the next; the finest (~14 km at the equator) suits city-sized radii.
pub const CELL_LEVELS: [f64; 5] = [8.0, 2.0, 0.5, 0.125, 0.03125];

/// The most cell terms a query may use; past it a coarser level is taken.
const MAX_COVERING_CELLS: usize = 96;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub lat: f64,
    pub lon: f64,
}

/// Great-circle distance by the haversine formula, km.
pub fn distance_km(a: Point, b: Point) -> f64 {
    let (lat1, lat2) = (a.lat.to_radians(), b.lat.to_radians());
    let dlat = lat2 - lat1;
    let dlon = (b.lon - a.lon).to_radians();
    let h = (dlat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (dlon / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * h.sqrt().min(1.0).asin()
}

/// An area to search: a circle, or a box given by its corners. A box whose `min_lon` is greater
/// than its `max_lon` crosses the antimeridian.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Area {
    Radius {
        center: Point,
        km: f64,
    },
    Box {
        min_lat: f64,
        min_lon: f64,
        max_lat: f64,
        max_lon: f64,
    },
}

impl Area {
    /// The exact test a candidate must pass.
    pub fn contains(&self, point: Point) -> bool {
        match *self {
            Area::Radius { center, km } => distance_km(center, point) <= km,
            Area::Box {
                min_lat,
                min_lon,
                max_lat,
                max_lon,
            } => {
                let lat_ok = point.lat >= min_lat && point.lat <= max_lat;
                let lon_ok = if min_lon <= max_lon {
                    point.lon >= min_lon && point.lon <= max_lon
                } else {
                    point.lon >= min_lon || point.lon <= max_lon
                };
                lat_ok && lon_ok
            }
        }
    }

    /// Latitude range and longitude intervals (one, or two when the area crosses the
    /// antimeridian) that contain the whole area.
    fn bounds(&self) -> (f64, f64, Vec<(f64, f64)>) {
        match *self {
            Area::Box {
                min_lat,
                min_lon,
                max_lat,
                max_lon,
            } => {
                let lons = if min_lon <= max_lon {
                    vec![(min_lon, max_lon)]
                } else {
                    vec![(min_lon, 180.0), (-180.0, max_lon)]
                };
                (min_lat, max_lat, lons)
            }
            Area::Radius { center, km } => {
                // Bounding box of a spherical cap (J. P. Matuschek, "Finding Points Within a
                // Distance of a Latitude/Longitude Using Bounding Coordinates").
                let angular = km / EARTH_RADIUS_KM;
                let lat = center.lat.to_radians();
                let min_lat = lat - angular;
                let max_lat = lat + angular;
                let half_pi = std::f64::consts::FRAC_PI_2;
                if angular >= std::f64::consts::PI || min_lat <= -half_pi || max_lat >= half_pi {
                    // The cap reaches a pole: every longitude is in it.
                    return (
                        min_lat.to_degrees().max(-90.0),
                        max_lat.to_degrees().min(90.0),
                        vec![(-180.0, 180.0)],
                    );
                }
                let delta_lon = (angular.sin() / lat.cos()).asin().to_degrees();
                let (west, east) = (center.lon - delta_lon, center.lon + delta_lon);
                let lons = if delta_lon.is_nan() || delta_lon >= 180.0 {
                    vec![(-180.0, 180.0)]
                } else if west < -180.0 {
                    vec![(west + 360.0, 180.0), (-180.0, east)]
                } else if east > 180.0 {
                    vec![(west, 180.0), (-180.0, east - 360.0)]
                } else {
                    vec![(west, east)]
                };
                (min_lat.to_degrees(), max_lat.to_degrees(), lons)
            }
        }
    }

    /// The cell terms that together contain the area, at the finest level that needs at most
    /// a bounded number; `None` when even the coarsest level would need too many (a continent-wide
    /// area), in which case every document is a candidate.
    pub fn covering(&self) -> Option<Vec<String>> {
        let (min_lat, max_lat, lons) = self.bounds();
        for (level, &size) in CELL_LEVELS.iter().enumerate().rev() {
            let lat_cells = lat_index(min_lat, size)..=lat_index(max_lat, size);
            let lon_ranges: Vec<_> = lons
                .iter()
                .map(|&(west, east)| lon_index(west, size)..=lon_index(east, size))
                .collect();
            let count = lat_cells.clone().count()
                * lon_ranges.iter().map(|r| r.clone().count()).sum::<usize>();
            if count <= MAX_COVERING_CELLS {
                let mut terms = Vec::with_capacity(count);
                for y in lat_cells {
                    for range in &lon_ranges {
                        for x in range.clone() {
                            terms.push(cell_term(level, y, x));
                        }
                    }
                }
                terms.sort();
                terms.dedup();
                return Some(terms);
            }
        }
        None
    }
}

/// The terms of the cells containing `point`, one per level.
pub fn point_cells(point: Point) -> Vec<String> {
    CELL_LEVELS
        .iter()
        .enumerate()
        .map(|(level, &size)| {
            cell_term(
                level,
                lat_index(point.lat, size),
                lon_index(point.lon, size),
            )
        })
        .collect()
}

fn cell_term(level: usize, y: i64, x: i64) -> String {
    format!("{level}:{y}:{x}")
}

fn lat_index(lat: f64, size: f64) -> i64 {
    let last = (180.0 / size).ceil() as i64 - 1;
    (((lat.clamp(-90.0, 90.0) + 90.0) / size).floor() as i64).clamp(0, last)
}

fn lon_index(lon: f64, size: f64) -> i64 {
    let last = (360.0 / size).ceil() as i64 - 1;
    (((lon.clamp(-180.0, 180.0) + 180.0) / size).floor() as i64).clamp(0, last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lat() -> impl Strategy<Value = f64> {
        prop_oneof![
            -90.0..=90.0f64,
            80.0..=90.0f64,
            -90.0..=-80.0f64,
            Just(90.0),
            Just(-90.0)
        ]
    }

    fn lon() -> impl Strategy<Value = f64> {
        prop_oneof![
            -180.0..=180.0f64,
            170.0..=180.0f64,
            -180.0..=-170.0f64,
            Just(180.0),
            Just(-180.0)
        ]
    }

    fn point() -> impl Strategy<Value = Point> {
        (lat(), lon()).prop_map(|(lat, lon)| Point { lat, lon })
    }

    #[test]
    fn known_distances() {
        let london = Point {
            lat: 51.5074,
            lon: -0.1278,
        };
        let paris = Point {
            lat: 48.8566,
            lon: 2.3522,
        };
        assert!((distance_km(london, paris) - 343.5).abs() < 1.0);
        // Across the antimeridian the short way round.
        let west = Point {
            lat: 0.0,
            lon: 179.9,
        };
        let east = Point {
            lat: 0.0,
            lon: -179.9,
        };
        assert!((distance_km(west, east) - 22.24).abs() < 0.1);
        let north = Point {
            lat: 90.0,
            lon: 0.0,
        };
        let also_north = Point {
            lat: 90.0,
            lon: 123.0,
        };
        assert!(distance_km(north, also_north) < 1e-6);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// No point inside a circle is left out by its covering.
        #[test]
        fn a_radius_covering_contains_every_point_inside(
            center in point(),
            km in prop_oneof![0.0..50.0f64, 0.0..2_000.0f64, 0.0..25_000.0f64],
            points in proptest::collection::vec(point(), 64),
            near in proptest::collection::vec((-1.0..1.0f64, -1.0..1.0f64), 64),
        ) {
            let area = Area::Radius { center, km };
            let Some(cells) = area.covering() else { return Ok(()) };
            // Random points, plus points near the centre so small circles are exercised too.
            let nearby = near.iter().map(|(dy, dx)| Point {
                lat: (center.lat + dy * km / 111.0).clamp(-90.0, 90.0),
                lon: wrap(center.lon + dx * km / 111.0 / center.lat.to_radians().cos().max(0.01)),
            });
            for p in points.iter().copied().chain(nearby) {
                if area.contains(p) {
                    let theirs = point_cells(p);
                    prop_assert!(
                        theirs.iter().any(|cell| cells.binary_search(cell).is_ok()),
                        "{p:?} is {} km from {center:?} (radius {km}) but outside the covering",
                        distance_km(center, p)
                    );
                }
            }
        }

        /// The same for boxes, including boxes across the antimeridian.
        #[test]
        fn a_box_covering_contains_every_point_inside(
            a in lat(), b in lat(), min_lon in lon(), max_lon in lon(),
            points in proptest::collection::vec(point(), 128),
        ) {
            let area = Area::Box { min_lat: a.min(b), max_lat: a.max(b), min_lon, max_lon };
            let Some(cells) = area.covering() else { return Ok(()) };
            for p in points {
                if area.contains(p) {
                    let theirs = point_cells(p);
                    prop_assert!(theirs.iter().any(|cell| cells.binary_search(cell).is_ok()));
                }
            }
        }
    }

    fn wrap(lon: f64) -> f64 {
        let wrapped = (lon + 180.0).rem_euclid(360.0) - 180.0;
        wrapped.clamp(-180.0, 180.0)
    }
}
