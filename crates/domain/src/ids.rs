//! Identifiers. Entity ids are ULIDs rendered as strings: sortable by creation time (which makes
//! id-ordered cursors stable) and opaque to clients. Seat ids are derived from their place in the
//! seat map, so a 100,000-seat venue stores no per-seat rows.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Mutex;

/// ULIDs from one process-wide generator: within one millisecond `Ulid::new()` is random, so
/// two ids made in the same millisecond could sort backwards; the generator increments instead.
/// Id-ordered cursors rely on this to list items in creation order.
pub(crate) fn monotonic_ulid() -> ulid::Ulid {
    static GENERATOR: Mutex<Option<ulid::Generator>> = Mutex::new(None);
    let mut guard = GENERATOR
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    guard
        .get_or_insert_with(ulid::Generator::new)
        .generate()
        .unwrap_or_else(|_overflow| ulid::Ulid::new())
}

macro_rules! entity_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// A fresh id, later in sort order than every id made before it in this process.
            pub fn generate() -> Self {
                Self(monotonic_ulid().to_string())
            }

            /// Wraps an id received from a client or read from storage. Unknown ids are not an
            /// error here: looking them up answers "not found".
            pub fn from_string(raw: impl Into<String>) -> Self {
                Self(raw.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

entity_id!(
    /// A user account.
    UserId
);
entity_id!(
    /// A venue with its seat map.
    VenueId
);
entity_id!(
    /// An event at a venue.
    EventId
);

/// A reserved seat: `{venue}-{section}-{row}-{number}` with section and row as indexes into the
/// seat map. Clients treat it as opaque; the format is stable because tickets refer to it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SeatId(String);

impl SeatId {
    pub(crate) fn derive(venue: &VenueId, section: usize, row: usize, number: u32) -> Self {
        Self(format!("{venue}-{section}-{row}-{number}"))
    }

    pub fn from_string(raw: impl Into<String>) -> Self {
        Self(raw.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SeatId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_in_creation_order_even_within_a_millisecond() {
        let ids: Vec<EventId> = (0..10_000).map(|_| EventId::generate()).collect();
        assert!(ids.windows(2).all(|pair| pair[0] < pair[1]));
    }
}
