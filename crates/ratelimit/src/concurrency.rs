//! Load shedding by concurrency: at most `capacity` requests in flight, of which the last
//! `reserve` slots are kept for priority requests (checkout: holds and orders), so a flood of
//! browsing cannot starve the fans who are paying. A request that finds no slot is refused at
//! once — queueing it would only add latency to a server that is already full.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    Normal,
    /// May use the reserve.
    Checkout,
}

#[derive(Debug)]
pub struct ConcurrencyLimiter {
    in_flight: AtomicUsize,
    capacity: usize,
    reserve: usize,
}

impl ConcurrencyLimiter {
    /// `reserve` is clamped below `capacity`.
    pub fn new(capacity: usize, reserve: usize) -> Arc<ConcurrencyLimiter> {
        Arc::new(ConcurrencyLimiter {
            in_flight: AtomicUsize::new(0),
            capacity,
            reserve: reserve.min(capacity.saturating_sub(1)),
        })
    }

    /// A slot for one request, or `None` when the request should be shed.
    pub fn try_acquire(self: &Arc<Self>, priority: Priority) -> Option<ConcurrencyPermit> {
        let limit = match priority {
            Priority::Normal => self.capacity - self.reserve,
            Priority::Checkout => self.capacity,
        };
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |current| {
                (current < limit).then_some(current + 1)
            })
            .ok()
            .map(|_| ConcurrencyPermit(Arc::clone(self)))
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// Gives its slot back when dropped.
#[derive(Debug)]
pub struct ConcurrencyPermit(Arc<ConcurrencyLimiter>);

impl Drop for ConcurrencyPermit {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_reserve_is_left_for_checkout() {
        let limiter = ConcurrencyLimiter::new(10, 3);
        let normal: Vec<_> = (0..10)
            .filter_map(|_| limiter.try_acquire(Priority::Normal))
            .collect();
        assert_eq!(normal.len(), 7);
        let checkout: Vec<_> = (0..10)
            .filter_map(|_| limiter.try_acquire(Priority::Checkout))
            .collect();
        assert_eq!(checkout.len(), 3);
        drop(normal);
        assert_eq!(limiter.in_flight(), 3);
        assert!(limiter.try_acquire(Priority::Normal).is_some());
    }

    proptest! {
        /// Whatever the order of arrivals and departures, the cap holds, normal requests never
        /// eat into the reserve, and every slot comes back.
        #[test]
        fn caps_hold_under_any_sequence(ops in proptest::collection::vec((any::<bool>(), any::<bool>()), 1..200), capacity in 1usize..20, reserve in 0usize..20) {
            let limiter = ConcurrencyLimiter::new(capacity, reserve);
            let mut held: Vec<(Priority, ConcurrencyPermit)> = Vec::new();
            for (acquire, checkout) in ops {
                if acquire {
                    let priority = if checkout { Priority::Checkout } else { Priority::Normal };
                    match limiter.try_acquire(priority) {
                        Some(permit) => held.push((priority, permit)),
                        // Refused only when full, or for a normal request, at the reserve.
                        None if priority == Priority::Checkout => prop_assert_eq!(held.len(), capacity),
                        None => prop_assert!(held.len() >= capacity - reserve.min(capacity - 1)),
                    }
                } else if !held.is_empty() {
                    held.remove(0);
                }
                prop_assert!(limiter.in_flight() <= capacity);
                let normal = held.iter().filter(|(p, _)| *p == Priority::Normal).count();
                prop_assert!(normal <= capacity - reserve.min(capacity - 1));
                prop_assert_eq!(limiter.in_flight(), held.len());
            }
            drop(held);
            prop_assert_eq!(limiter.in_flight(), 0);
        }
    }
}
