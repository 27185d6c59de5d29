//! The in-process tier: a bounded map that evicts by one policy.
//!
//! LRU and TinyLFU are moka's (its TinyLFU is the W-TinyLFU of Caffeine: a count-min sketch of
//! recent popularity decides whether a new key may displace the LRU victim). moka has neither
//! pure LFU nor FIFO, so those two are [`OrderedMap`] here: a hash map for the entries and a
//! B-tree ordered by the policy's rank, `O(log n)` per operation, one lock.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::str::FromStr;
use std::sync::Mutex;

/// Which entry leaves when the tier is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Policy {
    /// The least recently read or written.
    Lru,
    /// The least often read since it came in (ties: the one read longest ago).
    Lfu,
    /// The oldest insert, whatever happened since.
    Fifo,
    /// LRU eviction with frequency-based admission: a newcomer displaces the victim only if
    /// it has been asked for more often recently (moka's W-TinyLFU).
    TinyLfu,
}

impl Policy {
    pub const ALL: [Policy; 4] = [Policy::Lru, Policy::Lfu, Policy::Fifo, Policy::TinyLfu];

    pub fn name(self) -> &'static str {
        match self {
            Policy::Lru => "lru",
            Policy::Lfu => "lfu",
            Policy::Fifo => "fifo",
            Policy::TinyLfu => "tinylfu",
        }
    }
}

impl FromStr for Policy {
    type Err = String;

    fn from_str(text: &str) -> Result<Policy, String> {
        Policy::ALL
            .into_iter()
            .find(|policy| policy.name().eq_ignore_ascii_case(text))
            .ok_or_else(|| format!("unknown cache policy {text:?} (lru, lfu, fifo or tinylfu)"))
    }
}

/// A bounded in-process map evicting by a [`Policy`].
pub struct LocalTier<K, V> {
    inner: Inner<K, V>,
    policy: Policy,
}

enum Inner<K, V> {
    Moka(moka::sync::Cache<K, V>),
    Ordered(Mutex<OrderedMap<K, V>>),
}

impl<K, V> LocalTier<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    pub fn new(policy: Policy, capacity: u64) -> LocalTier<K, V> {
        let inner = match policy {
            Policy::Lru | Policy::TinyLfu => {
                let eviction = if policy == Policy::Lru {
                    moka::policy::EvictionPolicy::lru()
                } else {
                    moka::policy::EvictionPolicy::tiny_lfu()
                };
                Inner::Moka(
                    moka::sync::Cache::builder()
                        .max_capacity(capacity)
                        .eviction_policy(eviction)
                        .build(),
                )
            }
            Policy::Lfu | Policy::Fifo => Inner::Ordered(Mutex::new(OrderedMap::new(
                policy,
                usize::try_from(capacity).unwrap_or(usize::MAX),
            ))),
        };
        LocalTier { inner, policy }
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    pub fn get(&self, key: &K) -> Option<V> {
        match &self.inner {
            Inner::Moka(cache) => cache.get(key),
            Inner::Ordered(map) => lock(map).get(key),
        }
    }

    pub fn insert(&self, key: K, value: V) {
        match &self.inner {
            Inner::Moka(cache) => cache.insert(key, value),
            Inner::Ordered(map) => lock(map).insert(key, value),
        }
    }

    pub fn remove(&self, key: &K) {
        match &self.inner {
            Inner::Moka(cache) => cache.invalidate(key),
            Inner::Ordered(map) => lock(map).remove(key),
        }
    }

    /// Entries held now. moka applies evictions in batches, so this settles them first.
    pub fn len(&self) -> u64 {
        match &self.inner {
            Inner::Moka(cache) => {
                cache.run_pending_tasks();
                cache.entry_count()
            }
            Inner::Ordered(map) => lock(map).entries.len() as u64,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Settles work a policy defers (moka's admission and eviction run in batches).
    pub fn settle(&self) {
        if let Inner::Moka(cache) = &self.inner {
            cache.run_pending_tasks();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic mid-update leaves a consistent map (every update is a few infallible steps).
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// LFU or FIFO: entries in a hash map, their eviction order in a B-tree keyed by
/// `(uses, sequence)` for LFU and `(0, sequence)` for FIFO, so the first key is the victim.
struct OrderedMap<K, V> {
    policy: Policy,
    capacity: usize,
    entries: HashMap<K, Slot<V>>,
    order: BTreeMap<(u64, u64), K>,
    sequence: u64,
}

struct Slot<V> {
    value: V,
    rank: (u64, u64),
}

impl<K: Hash + Eq + Clone, V: Clone> OrderedMap<K, V> {
    fn new(policy: Policy, capacity: usize) -> OrderedMap<K, V> {
        OrderedMap {
            policy,
            capacity,
            entries: HashMap::new(),
            order: BTreeMap::new(),
            sequence: 0,
        }
    }

    fn next(&mut self) -> u64 {
        self.sequence += 1;
        self.sequence
    }

    fn get(&mut self, key: &K) -> Option<V> {
        if self.policy == Policy::Fifo {
            return self.entries.get(key).map(|slot| slot.value.clone());
        }
        let sequence = self.next();
        let slot = self.entries.get_mut(key)?;
        self.order.remove(&slot.rank);
        slot.rank = (slot.rank.0.saturating_add(1), sequence);
        self.order.insert(slot.rank, key.clone());
        Some(slot.value.clone())
    }

    fn insert(&mut self, key: K, value: V) {
        if self.capacity == 0 {
            return;
        }
        if let Some(slot) = self.entries.get_mut(&key) {
            // A new value keeps its key's place (FIFO) and its count (LFU).
            slot.value = value;
            return;
        }
        if self.entries.len() >= self.capacity {
            if let Some((_, victim)) = self.order.pop_first() {
                self.entries.remove(&victim);
            }
        }
        let sequence = self.next();
        let rank = match self.policy {
            Policy::Lfu => (1, sequence),
            _ => (0, sequence),
        };
        self.order.insert(rank, key.clone());
        self.entries.insert(key, Slot { value, rank });
    }

    fn remove(&mut self, key: &K) {
        if let Some(slot) = self.entries.remove(key) {
            self.order.remove(&slot.rank);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn filled(policy: Policy) -> LocalTier<u32, u32> {
        let tier = LocalTier::new(policy, 3);
        for key in 1..=3 {
            tier.insert(key, key * 10);
        }
        tier
    }

    #[test]
    fn lfu_evicts_the_least_often_read() {
        let tier = filled(Policy::Lfu);
        for _ in 0..3 {
            tier.get(&1);
            tier.get(&3);
        }
        tier.get(&2);
        tier.insert(4, 40);
        assert_eq!(tier.get(&2), None, "read once: the victim");
        assert_eq!(
            (tier.get(&1), tier.get(&3), tier.get(&4)),
            (Some(10), Some(30), Some(40))
        );
    }

    #[test]
    fn fifo_evicts_the_oldest_insert_however_often_it_was_read() {
        let tier = filled(Policy::Fifo);
        for _ in 0..5 {
            tier.get(&1);
        }
        tier.insert(2, 21); // an update keeps its place
        tier.insert(4, 40);
        assert_eq!(tier.get(&1), None);
        assert_eq!((tier.get(&2), tier.get(&4)), (Some(21), Some(40)));
    }

    #[test]
    fn lru_evicts_the_least_recently_used() {
        let tier = filled(Policy::Lru);
        tier.settle();
        tier.get(&1);
        tier.get(&3);
        tier.insert(4, 40);
        tier.settle();
        assert_eq!(tier.get(&2), None);
        assert_eq!(tier.len(), 3);
    }

    #[test]
    fn policies_parse_by_name() {
        for policy in Policy::ALL {
            assert_eq!(policy.name().parse::<Policy>(), Ok(policy));
        }
        assert!("random".parse::<Policy>().is_err());
    }

    proptest! {
        /// Whatever the operations, a tier never holds more than its capacity, and what it
        /// returns is the last value written for that key.
        #[test]
        fn bounded_and_never_returns_a_value_not_last_written(
            policy in prop::sample::select(Policy::ALL.to_vec()),
            capacity in 0u64..8,
            operations in prop::collection::vec((0u8..3, 0u32..16, any::<u32>()), 0..200),
        ) {
            let tier = LocalTier::new(policy, capacity);
            let mut last: HashMap<u32, u32> = HashMap::new();
            for (operation, key, value) in operations {
                match operation {
                    0 => { tier.insert(key, value); last.insert(key, value); }
                    1 => { tier.remove(&key); last.remove(&key); }
                    _ => if let Some(found) = tier.get(&key) {
                        prop_assert_eq!(Some(&found), last.get(&key));
                    },
                }
            }
            prop_assert!(tier.len() <= capacity);
        }
    }
}
