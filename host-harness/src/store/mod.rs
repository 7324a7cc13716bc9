//! Storage backends implementing the WIT `store` contract.
//!
//! Every backend implements [`KvStore`]; the runtime adapts it to the
//! component's `store` import. Backends are shared by every instance (and,
//! for the durable ones, by every host process opening the same store).

pub mod embedded;
pub mod memory;
pub mod postgres;

use std::fmt;

/// The value types of the `store` contract are the plugin core's own port
/// types (`jmap_web_push_guest::ports`): one definition on both sides of the
/// WIT boundary.
pub use jmap_web_push_guest::ports::{Condition, Entry, KeyPage, StoreError};

/// The `store` contract (see `wit/plugin.wit`): linearizable per key,
/// conditional writes that exactly one concurrent writer wins, durable
/// acknowledged writes (for durable backends), and not-found is not an error.
pub trait KvStore: Send + Sync + fmt::Debug {
    /// Reads one key.
    fn get(&self, key: &str) -> Result<Option<Entry>, StoreError>;
    /// Reads several keys; one answer per key, in order.
    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Entry>>, StoreError> {
        keys.iter().map(|k| self.get(k)).collect()
    }
    /// Writes if `cond` holds; returns the new version.
    fn put(&self, key: &str, value: &[u8], cond: Condition) -> Result<u64, StoreError>;
    /// Deletes if `cond` holds; returns whether a value was deleted.
    /// `Version(v)` on a missing key is a `Conflict`.
    fn delete(&self, key: &str, cond: Condition) -> Result<bool, StoreError>;
    /// Keys with `prefix` strictly after `after`, at most `limit` (0 → 1).
    fn list_keys(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<KeyPage, StoreError>;
    /// How many keys start with `prefix`. The default pages through
    /// [`KvStore::list_keys`]; backends that can count without handing
    /// every key over SHOULD override it.
    fn count_prefix(&self, prefix: &str) -> Result<u64, StoreError> {
        let (mut n, mut after) = (0u64, None::<String>);
        loop {
            let page = self.list_keys(prefix, after.as_deref(), 1000)?;
            n += page.keys.len() as u64;
            match page.next {
                Some(k) => after = Some(k),
                None => return Ok(n),
            }
        }
    }
}

/// Largest key accepted by every backend, octets.
pub const MAX_KEY_OCTETS: usize = 1024;
/// Largest value accepted by every backend, octets.
pub const MAX_VALUE_OCTETS: usize = 16 << 20;

/// Checks the size limits common to every backend.
pub fn check_sizes(key: &str, value: &[u8]) -> Result<(), StoreError> {
    if key.len() > MAX_KEY_OCTETS || value.len() > MAX_VALUE_OCTETS {
        Err(StoreError::TooLarge)
    } else {
        Ok(())
    }
}
