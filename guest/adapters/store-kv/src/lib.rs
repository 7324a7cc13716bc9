//! Adapter component: the plugin's `jmap:web-push/store` interface over
//! `wasi:keyvalue@0.2.0-draft` (the version `wasmtime-wasi-keyvalue` 48
//! links), world `store-adapter` in `wit/adapters.wit`.
//!
//! `wasi:keyvalue` has no versions, no conditional writes, no ordered
//! listing and (in this draft) no compare-and-swap, so the adapter builds
//! them:
//!
//! - every value is stored as an [`envelope`]: the version (u64, big-endian)
//!   followed by the value;
//! - versions come from `atomics.increment` on the reserved key
//!   [`VERSION_COUNTER`], so they are unique, increasing and never reused
//!   (no ABA after a delete and re-create);
//! - a conditional `put`/`delete` reads, checks and writes inside one call;
//! - `list-keys` reads the whole key list, filters, sorts by octets and pages.
//!
//! **Limits.** The read-check-write is atomic only when no other client
//! writes the same bucket between the read and the write. That holds for
//! wasmtime-wasi-keyvalue's in-memory bucket, which is private to the
//! instance that opened it (a component instance is never re-entered), and
//! does NOT hold for a bucket shared by several clients: use the host
//! harness's stores (or a CAS-capable `wasi:keyvalue` draft) for several
//! processes. Listing costs O(keys in the bucket) per page.
//!
//! The logic is the plain-Rust [`KvStore`] over the [`Bucket`] trait, tested
//! natively; the wit-bindgen glue (wasm32 only) is a thin layer.

#![warn(missing_docs)]

use std::fmt;

/// The reserved key holding the version counter. Keys starting with
/// [`RESERVED_PREFIX`] are hidden from listings and refused to the plugin.
pub const VERSION_COUNTER: &str = "\u{1}kv/version";

/// Keys with this first character belong to the adapter.
pub const RESERVED_PREFIX: char = '\u{1}';

/// A failure of the underlying key-value bucket (`wasi:keyvalue/store.error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvError {
    /// The bucket does not exist.
    NoSuchStore,
    /// The host refused access.
    AccessDenied,
    /// Anything else, with the host's description.
    Other(String),
}

impl fmt::Display for KvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvError::NoSuchStore => f.write_str("no such key-value store"),
            KvError::AccessDenied => f.write_str("access to the key-value store denied"),
            KvError::Other(m) => write!(f, "key-value store: {m}"),
        }
    }
}

/// The operations of one `wasi:keyvalue` bucket the adapter needs.
pub trait Bucket {
    /// `store.bucket.get`.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError>;
    /// `batch.get-many`: one answer per key, in order.
    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, KvError>;
    /// `store.bucket.set`.
    fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError>;
    /// `store.bucket.delete`.
    fn delete(&self, key: &str) -> Result<(), KvError>;
    /// Every key of the bucket (all pages of `store.bucket.list-keys`), in
    /// any order.
    fn all_keys(&self) -> Result<Vec<String>, KvError>;
    /// `atomics.increment`: adds `delta` and returns the new value.
    fn increment(&self, key: &str, delta: u64) -> Result<u64, KvError>;
}

/// The `store` interface's write condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// Always.
    Any,
    /// Only when the key holds no value.
    Absent,
    /// Only when the key holds exactly this version.
    Version(u64),
}

/// The `store` interface's error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The condition did not hold; nothing was written.
    Conflict,
    /// The bucket cannot be used now.
    Unavailable(String),
    /// Any other failure.
    Other(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Conflict => f.write_str("condition failed"),
            StoreError::Unavailable(m) => write!(f, "store unavailable: {m}"),
            StoreError::Other(m) => write!(f, "store error: {m}"),
        }
    }
}

impl From<KvError> for StoreError {
    fn from(e: KvError) -> Self {
        match e {
            KvError::NoSuchStore => StoreError::Unavailable(e.to_string()),
            KvError::AccessDenied | KvError::Other(_) => StoreError::Other(e.to_string()),
        }
    }
}

/// A stored value with its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The plugin's value.
    pub value: Vec<u8>,
    /// Its version (never 0).
    pub version: u64,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPage {
    /// Keys in ascending octet order.
    pub keys: Vec<String>,
    /// The last key, when more keys follow.
    pub next: Option<String>,
}

/// Encoding of a stored value: `version (8 octets, big-endian) || value`.
pub mod envelope {
    use super::{Entry, StoreError};

    /// Wraps `value` with `version`.
    pub fn encode(version: u64, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + value.len());
        out.extend_from_slice(&version.to_be_bytes());
        out.extend_from_slice(value);
        out
    }

    /// Unwraps a stored envelope; anything shorter than 8 octets or with
    /// version 0 is reported as corrupt (`other`), never a panic.
    pub fn decode(key: &str, raw: Vec<u8>) -> Result<Entry, StoreError> {
        let Some((head, _)) = raw.split_first_chunk::<8>() else {
            return Err(StoreError::Other(format!("corrupt entry under {key:?}")));
        };
        let version = u64::from_be_bytes(*head);
        if version == 0 {
            return Err(StoreError::Other(format!("corrupt entry under {key:?}")));
        }
        Ok(Entry {
            value: raw[8..].to_vec(),
            version,
        })
    }
}

/// The `store` contract over a [`Bucket`].
pub struct KvStore<B> {
    bucket: B,
}

impl<B: Bucket> KvStore<B> {
    /// Wraps a bucket.
    pub fn new(bucket: B) -> Self {
        KvStore { bucket }
    }

    fn check_key(key: &str) -> Result<(), StoreError> {
        if key.starts_with(RESERVED_PREFIX) {
            return Err(StoreError::Other(format!(
                "keys starting with U+0001 are reserved by the store adapter: {key:?}"
            )));
        }
        Ok(())
    }

    /// `store.get`.
    pub fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        Self::check_key(key)?;
        self.bucket
            .get(key)?
            .map(|raw| envelope::decode(key, raw))
            .transpose()
    }

    /// `store.get-many`.
    pub fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Entry>>, StoreError> {
        for k in keys {
            Self::check_key(k)?;
        }
        let raws = self.bucket.get_many(keys)?;
        if raws.len() != keys.len() {
            return Err(StoreError::Other(format!(
                "get-many answered {} values for {} keys",
                raws.len(),
                keys.len()
            )));
        }
        keys.iter()
            .zip(raws)
            .map(|(k, raw)| raw.map(|r| envelope::decode(k, r)).transpose())
            .collect()
    }

    fn holds(current: Option<&Entry>, cond: Condition) -> bool {
        match (cond, current) {
            (Condition::Any, _) => true,
            (Condition::Absent, cur) => cur.is_none(),
            (Condition::Version(v), Some(cur)) => cur.version == v,
            (Condition::Version(_), None) => false,
        }
    }

    /// `store.put`: read, check, write with a fresh version.
    pub fn put(&self, key: &str, value: &[u8], cond: Condition) -> Result<u64, StoreError> {
        let current = match cond {
            Condition::Any => {
                Self::check_key(key)?;
                None
            }
            _ => self.get(key)?,
        };
        if !Self::holds(current.as_ref(), cond) {
            return Err(StoreError::Conflict);
        }
        let version = self.bucket.increment(VERSION_COUNTER, 1)?;
        if version == 0 {
            return Err(StoreError::Other("version counter answered 0".into()));
        }
        self.bucket.set(key, &envelope::encode(version, value))?;
        Ok(version)
    }

    /// `store.delete`: true when a value was deleted.
    pub fn delete(&self, key: &str, cond: Condition) -> Result<bool, StoreError> {
        let current = self.get(key)?;
        if !Self::holds(current.as_ref(), cond) {
            return Err(StoreError::Conflict);
        }
        if current.is_none() {
            return Ok(false);
        }
        self.bucket.delete(key)?;
        Ok(true)
    }

    /// `store.list-keys`: keys with `prefix` strictly after `after`, in
    /// octet order, at most `limit` (0 counts as 1).
    pub fn list_keys(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<KeyPage, StoreError> {
        let limit = limit.max(1) as usize;
        let mut keys: Vec<String> = self
            .bucket
            .all_keys()?
            .into_iter()
            .filter(|k| {
                !k.starts_with(RESERVED_PREFIX)
                    && k.starts_with(prefix)
                    && after.is_none_or(|a| k.as_str() > a)
            })
            .collect();
        keys.sort_unstable();
        keys.dedup();
        let next = if keys.len() > limit {
            keys.truncate(limit);
            keys.last().cloned()
        } else {
            None
        };
        Ok(KeyPage { keys, next })
    }
}

#[cfg(target_arch = "wasm32")]
mod bindings;

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::HashMap;

    /// A bucket like wasmtime-wasi-keyvalue's: a HashMap, unordered listing,
    /// increment on decimal text.
    #[derive(Default)]
    struct MapBucket {
        map: RefCell<HashMap<String, Vec<u8>>>,
        fail: RefCell<Option<KvError>>,
    }

    impl MapBucket {
        fn check(&self) -> Result<(), KvError> {
            match self.fail.borrow().clone() {
                Some(e) => Err(e),
                None => Ok(()),
            }
        }
    }

    impl Bucket for MapBucket {
        fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
            self.check()?;
            Ok(self.map.borrow().get(key).cloned())
        }
        fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, KvError> {
            keys.iter().map(|k| self.get(k)).collect()
        }
        fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
            self.check()?;
            self.map.borrow_mut().insert(key.into(), value.to_vec());
            Ok(())
        }
        fn delete(&self, key: &str) -> Result<(), KvError> {
            self.check()?;
            self.map.borrow_mut().remove(key);
            Ok(())
        }
        fn all_keys(&self) -> Result<Vec<String>, KvError> {
            self.check()?;
            Ok(self.map.borrow().keys().cloned().collect())
        }
        fn increment(&self, key: &str, delta: u64) -> Result<u64, KvError> {
            self.check()?;
            let mut map = self.map.borrow_mut();
            let cur: u64 = match map.get(key) {
                Some(v) => std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| KvError::Other("not a number".into()))?,
                None => 0,
            };
            let new = cur + delta;
            map.insert(key.into(), new.to_string().into_bytes());
            Ok(new)
        }
    }

    fn store() -> KvStore<MapBucket> {
        KvStore::new(MapBucket::default())
    }

    #[test]
    fn put_get_delete_round_trip() {
        let s = store();
        assert_eq!(s.get("a").unwrap(), None);
        let v1 = s.put("a", b"one", Condition::Absent).unwrap();
        assert_eq!(
            s.get("a").unwrap(),
            Some(Entry {
                value: b"one".to_vec(),
                version: v1
            })
        );
        let v2 = s.put("a", b"two", Condition::Version(v1)).unwrap();
        assert!(v2 > v1);
        assert!(s.delete("a", Condition::Version(v2)).unwrap());
        assert!(!s.delete("a", Condition::Any).unwrap());
        assert_eq!(s.get("a").unwrap(), None);
    }

    #[test]
    fn conditions_give_conflict_and_write_nothing() {
        let s = store();
        let v1 = s.put("k", b"x", Condition::Any).unwrap();
        assert_eq!(
            s.put("k", b"y", Condition::Absent),
            Err(StoreError::Conflict)
        );
        assert_eq!(
            s.put("k", b"y", Condition::Version(v1 + 1000)),
            Err(StoreError::Conflict)
        );
        assert_eq!(
            s.delete("k", Condition::Version(v1 + 1)),
            Err(StoreError::Conflict)
        );
        assert_eq!(
            s.delete("missing", Condition::Version(1)),
            Err(StoreError::Conflict)
        );
        assert_eq!(s.get("k").unwrap().unwrap().value, b"x");
    }

    #[test]
    fn versions_are_never_reused_after_delete() {
        let s = store();
        let v1 = s.put("k", b"x", Condition::Absent).unwrap();
        s.delete("k", Condition::Any).unwrap();
        let v2 = s.put("k", b"x", Condition::Absent).unwrap();
        assert_ne!(v1, v2);
        assert_eq!(
            s.put("k", b"z", Condition::Version(v1)),
            Err(StoreError::Conflict)
        );
    }

    #[test]
    fn listing_is_sorted_paged_and_hides_reserved_keys() {
        let s = store();
        for k in ["p/c", "p/a", "q/a", "p/b", "p", "p/d"] {
            s.put(k, b"v", Condition::Any).unwrap();
        }
        let page = s.list_keys("p/", None, 2).unwrap();
        assert_eq!(page.keys, ["p/a", "p/b"]);
        assert_eq!(page.next.as_deref(), Some("p/b"));
        let page = s.list_keys("p/", page.next.as_deref(), 2).unwrap();
        assert_eq!(page.keys, ["p/c", "p/d"]);
        assert_eq!(page.next, None);
        let all = s.list_keys("", None, 0).unwrap();
        assert_eq!(all.keys, ["p"], "limit 0 counts as 1");
        let every = s.list_keys("", None, 100).unwrap();
        assert!(every.keys.iter().all(|k| !k.starts_with(RESERVED_PREFIX)));
        assert_eq!(every.keys.len(), 6);
    }

    #[test]
    fn reserved_keys_are_refused() {
        let s = store();
        assert!(matches!(
            s.put(VERSION_COUNTER, b"1", Condition::Any),
            Err(StoreError::Other(_))
        ));
        assert!(matches!(s.get(VERSION_COUNTER), Err(StoreError::Other(_))));
    }

    #[test]
    fn corrupt_values_are_errors_not_panics() {
        let b = MapBucket::default();
        b.map.borrow_mut().insert("short".into(), vec![1, 2, 3]);
        b.map.borrow_mut().insert("zero".into(), vec![0; 8]);
        let s = KvStore::new(b);
        assert!(matches!(s.get("short"), Err(StoreError::Other(_))));
        assert!(matches!(s.get("zero"), Err(StoreError::Other(_))));
        assert!(matches!(
            s.get_many(&["short".into()]),
            Err(StoreError::Other(_))
        ));
    }

    #[test]
    fn bucket_errors_map_to_store_errors() {
        let s = store();
        *s.bucket.fail.borrow_mut() = Some(KvError::NoSuchStore);
        assert!(matches!(s.get("a"), Err(StoreError::Unavailable(_))));
        *s.bucket.fail.borrow_mut() = Some(KvError::Other("boom".into()));
        assert!(matches!(
            s.put("a", b"", Condition::Any),
            Err(StoreError::Other(m)) if m.contains("boom")
        ));
    }

    #[test]
    fn get_many_answers_in_order() {
        let s = store();
        let va = s.put("a", b"A", Condition::Any).unwrap();
        let got = s.get_many(&["b".into(), "a".into()]).unwrap();
        assert_eq!(got[0], None);
        assert_eq!(got[1].as_ref().map(|e| e.version), Some(va));
    }
}
