//! A [`KvStore`] wrapper that fails on demand, for the store rows of the
//! fault matrix: unavailable, a conflict on every write, values refused
//! as too large. Switches take effect at once, for every caller.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use jmap_web_push_host::store::{Condition, Entry, KeyPage, KvStore, StoreError};

/// The wrapper; share it as `Arc<FaultyStore>` and hand a clone to `serve`.
pub struct FaultyStore {
    inner: Arc<dyn KvStore>,
    /// Every operation fails with `Unavailable`.
    pub unavailable: AtomicBool,
    /// Every conditional write (`Absent` or `Version`) fails with
    /// `Conflict`, as if another writer always got there first.
    pub conflict_writes: AtomicBool,
    /// Values longer than this are refused with `TooLarge` (`usize::MAX`:
    /// no limit of its own).
    pub max_value: AtomicUsize,
    /// Operations refused so far.
    pub refused: AtomicU64,
}

impl std::fmt::Debug for FaultyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultyStore")
            .field("unavailable", &self.unavailable)
            .field("conflict_writes", &self.conflict_writes)
            .field("max_value", &self.max_value)
            .field("refused", &self.refused)
            .finish_non_exhaustive()
    }
}

impl FaultyStore {
    /// Wraps `inner`, failing nothing yet.
    pub fn new(inner: Arc<dyn KvStore>) -> Arc<FaultyStore> {
        Arc::new(FaultyStore {
            inner,
            unavailable: AtomicBool::new(false),
            conflict_writes: AtomicBool::new(false),
            max_value: AtomicUsize::new(usize::MAX),
            refused: AtomicU64::new(0),
        })
    }

    fn check_available(&self) -> Result<(), StoreError> {
        if self.unavailable.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(StoreError::Unavailable(
                "injected: store unavailable".into(),
            ));
        }
        Ok(())
    }

    fn check_write(&self, cond: Condition, value_len: usize) -> Result<(), StoreError> {
        self.check_available()?;
        if value_len > self.max_value.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(StoreError::TooLarge);
        }
        if self.conflict_writes.load(Ordering::SeqCst) && !matches!(cond, Condition::Any) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(StoreError::Conflict);
        }
        Ok(())
    }
}

impl KvStore for FaultyStore {
    fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        self.check_available()?;
        self.inner.get(key)
    }

    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Entry>>, StoreError> {
        self.check_available()?;
        self.inner.get_many(keys)
    }

    fn put(&self, key: &str, value: &[u8], cond: Condition) -> Result<u64, StoreError> {
        self.check_write(cond, value.len())?;
        self.inner.put(key, value, cond)
    }

    fn delete(&self, key: &str, cond: Condition) -> Result<bool, StoreError> {
        self.check_write(cond, 0)?;
        self.inner.delete(key, cond)
    }

    fn list_keys(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<KeyPage, StoreError> {
        self.check_available()?;
        self.inner.list_keys(prefix, after, limit)
    }

    fn count_prefix(&self, prefix: &str) -> Result<u64, StoreError> {
        self.check_available()?;
        self.inner.count_prefix(prefix)
    }
}
