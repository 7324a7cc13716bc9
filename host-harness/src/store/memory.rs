//! The in-memory backend (tests and examples): the plugin core's own
//! [`jmap_web_push_guest::ports::MemoryStore`] behind a mutex, so every
//! instance shares it. Lost on exit.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use jmap_web_push_guest::ports::{MemoryStore as CoreMemoryStore, Store};

use super::{check_sizes, Condition, Entry, KeyPage, KvStore, StoreError};

/// An in-memory [`KvStore`].
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<CoreMemoryStore>,
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

    fn with<R>(
        &self,
        f: impl FnOnce(&mut CoreMemoryStore) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        if self.unavailable.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("memory store switched off".into()));
        }
        let mut inner = self
            .inner
            .lock()
            .map_err(|_| StoreError::Other("memory store lock poisoned".into()))?;
        f(&mut inner)
    }
}

impl KvStore for MemoryStore {
    fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        self.with(|s| s.get(key))
    }

    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Entry>>, StoreError> {
        self.with(|s| s.get_many(keys))
    }

    fn put(&self, key: &str, value: &[u8], cond: Condition) -> Result<u64, StoreError> {
        check_sizes(key, value)?;
        self.with(|s| s.put(key, value, cond))
    }

    fn delete(&self, key: &str, cond: Condition) -> Result<bool, StoreError> {
        self.with(|s| s.delete(key, cond))
    }

    fn list_keys(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<KeyPage, StoreError> {
        self.with(|s| s.list_keys(prefix, after, limit))
    }
}
