//! Storage backends implementing the WIT `store` contract.
//!
//! Every backend implements [`KvStore`]; the runtime adapts it to the
//! component's `store` import. Backends are shared by every instance (and,
//! for the durable ones, by every host process opening the same store).

pub mod embedded;
pub mod memory;
pub mod postgres;

use std::fmt;

/// A stored value and its version (never 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The value.
    pub value: Vec<u8>,
    /// Its version; changes on every write.
    pub version: u64,
}

/// When a write may happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// Unconditionally.
    Any,
    /// Only if the key holds no value.
    Absent,
    /// Only if the key holds exactly this version.
    Version(u64),
}

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The condition did not hold; nothing was written.
    #[error("write condition did not hold")]
    Conflict,
    /// The backend is unreachable or timed out.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Key or value too large.
    #[error("key or value too large")]
    TooLarge,
    /// Anything else.
    #[error("store error: {0}")]
    Other(String),
}

/// One page of a prefix listing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyPage {
    /// Keys in ascending octet order.
    pub keys: Vec<String>,
    /// Cursor for the next page, `None` on the last.
    pub next: Option<String>,
}

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
