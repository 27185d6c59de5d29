//! The store behind the caches in these tests: a map with the knobs the tests need (count the
//! loads, hold a load half-way, fail writes). The cache is generic over its store, and what is
//! tested is the cache.

use async_trait::async_trait;
use marquee_cache::{Backing, BackingError};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Notify;

#[derive(Default)]
pub struct Shelf {
    pub values: Mutex<HashMap<u32, String>>,
    pub loads: AtomicUsize,
    /// While set, a load reads the value and then waits for `release` before answering.
    pub hold_loads: AtomicBool,
    pub held: Notify,
    pub release: Notify,
    pub fail_loads: AtomicBool,
    pub fail_stores: AtomicBool,
}

impl Shelf {
    pub fn set(&self, key: u32, value: &str) {
        self.values
            .lock()
            .expect("shelf")
            .insert(key, value.to_string());
    }

    pub fn value(&self, key: u32) -> Option<String> {
        self.values.lock().expect("shelf").get(&key).cloned()
    }
}

#[async_trait]
impl Backing<u32, String> for Shelf {
    async fn load(&self, key: &u32) -> Result<Option<String>, BackingError> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        if self.fail_loads.load(Ordering::SeqCst) {
            return Err(BackingError("the store is down".into()));
        }
        let value = self.value(*key);
        if self.hold_loads.load(Ordering::SeqCst) {
            self.held.notify_one();
            self.release.notified().await;
        }
        // A store takes a while to answer: long enough for a stampede to gather.
        tokio::time::sleep(Duration::from_millis(20)).await;
        Ok(value)
    }

    async fn store(&self, key: &u32, value: &String) -> Result<(), BackingError> {
        if self.fail_stores.load(Ordering::SeqCst) {
            return Err(BackingError("the store refuses writes".into()));
        }
        self.set(*key, value);
        Ok(())
    }
}
