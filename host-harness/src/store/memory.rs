//! The in-memory backend (tests and examples): a `BTreeMap` behind a
//! mutex. Shared by clones of the same `Arc`, lost on exit.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use super::{check_sizes, Condition, Entry, KeyPage, KvStore, StoreError};

#[derive(Debug, Default)]
struct Inner {
    map: BTreeMap<String, Entry>,
    next_version: u64,
}

/// An in-memory [`KvStore`].
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
    unavailable: AtomicBool,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every operation fail with `Unavailable` (or work again), to
    /// test how callers handle a backend outage.
    pub fn set_unavailable(&self, down: bool) {
        self.unavailable.store(down, Ordering::SeqCst);
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Inner>, StoreError> {
        if self.unavailable.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("memory store switched off".into()));
        }
        self.inner
            .lock()
            .map_err(|_| StoreError::Other("memory store lock poisoned".into()))
    }
}

fn holds(map: &BTreeMap<String, Entry>, key: &str, cond: Condition) -> bool {
    match cond {
        Condition::Any => true,
        Condition::Absent => !map.contains_key(key),
        Condition::Version(v) => map.get(key).is_some_and(|e| e.version == v),
    }
}

impl KvStore for MemoryStore {
    fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        Ok(self.lock()?.map.get(key).cloned())
    }

    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Entry>>, StoreError> {
        let inner = self.lock()?;
        Ok(keys.iter().map(|k| inner.map.get(k).cloned()).collect())
    }

    fn put(&self, key: &str, value: &[u8], cond: Condition) -> Result<u64, StoreError> {
        check_sizes(key, value)?;
        let mut inner = self.lock()?;
        if !holds(&inner.map, key, cond) {
            return Err(StoreError::Conflict);
        }
        inner.next_version += 1;
        let version = inner.next_version;
        inner.map.insert(
            key.to_string(),
            Entry {
                value: value.to_vec(),
                version,
            },
        );
        Ok(version)
    }

    fn delete(&self, key: &str, cond: Condition) -> Result<bool, StoreError> {
        let mut inner = self.lock()?;
        if !holds(&inner.map, key, cond) {
            return Err(StoreError::Conflict);
        }
        Ok(inner.map.remove(key).is_some())
    }

    fn list_keys(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<KeyPage, StoreError> {
        let inner = self.lock()?;
        let limit = limit.max(1) as usize;
        let start = match after {
            Some(a) if a >= prefix => Bound::Excluded(a.to_string()),
            _ => Bound::Included(prefix.to_string()),
        };
        let keys: Vec<String> = inner
            .map
            .range((start, Bound::Unbounded))
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(prefix))
            .take(limit + 1)
            .cloned()
            .collect();
        Ok(KeyPage::from_overfetched(keys, limit))
    }
}
