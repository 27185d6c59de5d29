//! Leases for one process: a map from key to the token that holds it, and a delay queue (a
//! deadline-ordered set served by one task) that lapses leases at their deadlines.
//!
//! Time comes from `tokio::time`, so tests drive TTLs with a paused clock. Tokens start at the
//! Unix time in microseconds when the store is created and grow by one per grant, so they keep
//! growing across restarts of the process (fences written before a restart stay smaller), as long
//! as the wall clock does not jump backwards by more than the grants made since.

use crate::{
    check_request, expiry_after, FencingToken, LapsedLease, Lease, LeaseError, LeaseStore,
};
use async_trait::async_trait;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{broadcast, Notify};
use tokio::time::Instant;

struct LiveLease {
    keys: Vec<String>,
    holder: String,
    deadline: Instant,
}

#[derive(Default)]
struct Table {
    owners: HashMap<String, u64>,
    leases: HashMap<u64, LiveLease>,
    deadlines: BTreeSet<(Instant, u64)>,
    next_token: u64,
}

impl Table {
    /// Removes a lease whose deadline has passed and returns it for announcement.
    fn expire(&mut self, token: u64) -> Option<LapsedLease> {
        let lease = self.leases.remove(&token)?;
        self.deadlines.remove(&(lease.deadline, token));
        for key in &lease.keys {
            if self.owners.get(key) == Some(&token) {
                self.owners.remove(key);
            }
        }
        Some(LapsedLease {
            keys: lease.keys,
            holder: lease.holder,
            token: FencingToken(token),
        })
    }

    fn live_owner(&self, key: &str, now: Instant) -> Option<u64> {
        let token = *self.owners.get(key)?;
        let lease = self.leases.get(&token)?;
        (lease.deadline > now).then_some(token)
    }

    fn expire_due(&mut self, now: Instant) -> Vec<LapsedLease> {
        let due: Vec<u64> = self
            .deadlines
            .iter()
            .take_while(|(deadline, _)| *deadline <= now)
            .map(|(_, token)| *token)
            .collect();
        due.into_iter()
            .filter_map(|token| self.expire(token))
            .collect()
    }
}

struct Shared {
    table: Mutex<Table>,
    wake: Arc<Notify>,
    lapses: broadcast::Sender<LapsedLease>,
}

impl Shared {
    fn table(&self) -> MutexGuard<'_, Table> {
        // A panic while holding the lock cannot leave the table half-updated in a way that
        // breaks mutual exclusion worse than losing the process, so keep serving.
        self.table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn announce(&self, lapsed: Vec<LapsedLease>) {
        for lease in lapsed {
            // No subscriber is fine: nobody needed to know.
            let _ = self.lapses.send(lease);
        }
    }
}

/// In-process leases. Cloning shares the same table.
#[derive(Clone)]
pub struct InProcessLeases {
    shared: Arc<Shared>,
}

impl Default for InProcessLeases {
    fn default() -> Self {
        Self::new()
    }
}

impl InProcessLeases {
    /// Creates the store and starts its lapse task on the current Tokio runtime.
    pub fn new() -> InProcessLeases {
        let first_token = u64::try_from(chrono::Utc::now().timestamp_micros()).unwrap_or(1);
        let (lapses, _) = broadcast::channel(4096);
        let shared = Arc::new(Shared {
            table: Mutex::new(Table {
                next_token: first_token,
                ..Table::default()
            }),
            wake: Arc::new(Notify::new()),
            lapses,
        });
        tokio::spawn(run_lapses(Arc::downgrade(&shared), shared.wake.clone()));
        InProcessLeases { shared }
    }
}

/// The delay queue: sleeps until the earliest deadline (or until woken by a new, earlier one),
/// then lapses what is due. Ends when the store is dropped.
async fn run_lapses(shared: std::sync::Weak<Shared>, wake: Arc<Notify>) {
    loop {
        let woken = wake.notified();
        tokio::pin!(woken);
        // Register interest before reading the deadline so a wake in between is not lost.
        woken.as_mut().enable();
        let Some(strong) = shared.upgrade() else {
            return;
        };
        let next_deadline = strong
            .table()
            .deadlines
            .first()
            .map(|(deadline, _)| *deadline);
        drop(strong);
        match next_deadline {
            Some(deadline) => {
                tokio::select! {
                    () = tokio::time::sleep_until(deadline) => {}
                    () = &mut woken => {}
                }
            }
            None => {
                // Wake periodically too, so the task notices when the store is dropped.
                tokio::select! {
                    () = &mut woken => {}
                    () = tokio::time::sleep(Duration::from_secs(60)) => {}
                }
            }
        }
        let Some(strong) = shared.upgrade() else {
            return;
        };
        let lapsed = strong.table().expire_due(Instant::now());
        strong.announce(lapsed);
    }
}

#[async_trait]
impl LeaseStore for InProcessLeases {
    fn backend(&self) -> &'static str {
        "in-process"
    }

    async fn acquire(
        &self,
        keys: &[String],
        holder: &str,
        ttl: Duration,
    ) -> Result<Lease, LeaseError> {
        check_request(keys, ttl)?;
        let now = Instant::now();
        let deadline = now + ttl;
        let (lease, lapsed, earliest) = {
            let mut table = self.shared.table();
            let lapsed = table.expire_due(now);
            // Keys held by one live lease of this same holder are its own: a retry of a request
            // whose first attempt took them and died before answering takes them back.
            let mut own: Option<u64> = None;
            let mut taken = Vec::new();
            for key in keys {
                let Some(owner) = table.live_owner(key, now) else {
                    continue;
                };
                let same_holder = table
                    .leases
                    .get(&owner)
                    .is_some_and(|lease| lease.holder == holder);
                if same_holder && own.is_none_or(|own| own == owner) {
                    own = Some(owner);
                } else {
                    taken.push(key.clone());
                }
            }
            if !taken.is_empty() {
                drop(table);
                self.shared.announce(lapsed);
                return Err(LeaseError::Taken { keys: taken });
            }
            let token = match own {
                Some(token) => {
                    if let Some(previous) = table.leases.remove(&token) {
                        table.deadlines.remove(&(previous.deadline, token));
                        // Keys of the earlier grant not asked for again stay with the lease.
                        let mut all = previous.keys;
                        let added: Vec<String> = keys
                            .iter()
                            .filter(|key| !all.contains(key))
                            .cloned()
                            .collect();
                        all.extend(added);
                        table.leases.insert(
                            token,
                            LiveLease {
                                keys: all,
                                holder: holder.to_string(),
                                deadline,
                            },
                        );
                    }
                    token
                }
                None => {
                    table.next_token += 1;
                    let token = table.next_token;
                    table.leases.insert(
                        token,
                        LiveLease {
                            keys: keys.to_vec(),
                            holder: holder.to_string(),
                            deadline,
                        },
                    );
                    token
                }
            };
            for key in keys {
                table.owners.insert(key.clone(), token);
            }
            table.deadlines.insert((deadline, token));
            let earliest = table.deadlines.first().map(|(d, _)| *d) == Some(deadline);
            let lease = Lease {
                keys: keys.to_vec(),
                holder: holder.to_string(),
                token: FencingToken(token),
                expires_at: expiry_after(ttl),
            };
            (lease, lapsed, earliest)
        };
        self.shared.announce(lapsed);
        if earliest {
            self.shared.wake.notify_one();
        }
        Ok(lease)
    }

    async fn extend(&self, lease: &Lease, ttl: Duration) -> Result<Lease, LeaseError> {
        check_request(&lease.keys, ttl)?;
        let now = Instant::now();
        let mut table = self.shared.table();
        let token = lease.token.0;
        let live = table
            .leases
            .get(&token)
            .is_some_and(|live| live.deadline > now);
        if !live {
            return Err(LeaseError::NotHeld);
        }
        let deadline = now + ttl;
        if let Some(live) = table.leases.get_mut(&token) {
            let previous = std::mem::replace(&mut live.deadline, deadline);
            table.deadlines.remove(&(previous, token));
            table.deadlines.insert((deadline, token));
        }
        drop(table);
        // The delay task may be sleeping towards an older deadline; let it re-plan.
        self.shared.wake.notify_one();
        Ok(Lease {
            expires_at: expiry_after(ttl),
            ..lease.clone()
        })
    }

    async fn release(&self, lease: &Lease) -> Result<(), LeaseError> {
        let now = Instant::now();
        let mut table = self.shared.table();
        let token = lease.token.0;
        let live = table
            .leases
            .get(&token)
            .is_some_and(|live| live.deadline > now);
        if !live {
            return Err(LeaseError::NotHeld);
        }
        if let Some(released) = table.leases.remove(&token) {
            table.deadlines.remove(&(released.deadline, token));
            for key in &released.keys {
                if table.owners.get(key) == Some(&token) {
                    table.owners.remove(key);
                }
            }
        }
        Ok(())
    }

    async fn is_held(&self, keys: &[String], token: FencingToken) -> Result<bool, LeaseError> {
        let now = Instant::now();
        let table = self.shared.table();
        Ok(!keys.is_empty()
            && keys
                .iter()
                .all(|key| table.live_owner(key, now) == Some(token.0)))
    }

    fn lapses(&self) -> broadcast::Receiver<LapsedLease> {
        self.shared.lapses.subscribe()
    }

    async fn ping(&self) -> Result<(), LeaseError> {
        Ok(())
    }
}
