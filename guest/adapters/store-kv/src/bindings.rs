//! The wit-bindgen glue: [`crate::Bucket`] over the `wasi:keyvalue` imports
//! and the `store` export over [`crate::KvStore`]. No logic lives here.

use std::cell::OnceCell;

use crate::{Bucket, Condition, KvError, KvStore, StoreError};

wit_bindgen::generate!({
    world: "store-adapter",
    generate_all,
    path: "../../../wit",
});

use exports::jmap::web_push::store as wit;
use wasi::keyvalue::{atomics, batch, store as kv};

/// The bucket this instance uses, opened on first use and kept for the
/// instance's life: wasmtime-wasi-keyvalue gives every `open` its own copy of
/// the data, so opening once per call would lose every write.
struct WasiBucket(kv::Bucket);

fn kv_error(e: kv::Error) -> KvError {
    match e {
        kv::Error::NoSuchStore => KvError::NoSuchStore,
        kv::Error::AccessDenied => KvError::AccessDenied,
        kv::Error::Other(m) => KvError::Other(m),
    }
}

impl Bucket for WasiBucket {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.0.get(key).map_err(kv_error)
    }

    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, KvError> {
        let answers = batch::get_many(&self.0, keys).map_err(kv_error)?;
        Ok(answers.into_iter().map(|a| a.map(|(_, v)| v)).collect())
    }

    fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        self.0.set(key, value).map_err(kv_error)
    }

    fn delete(&self, key: &str) -> Result<(), KvError> {
        self.0.delete(key).map_err(kv_error)
    }

    fn all_keys(&self) -> Result<Vec<String>, KvError> {
        let mut keys = Vec::new();
        let mut cursor = None;
        loop {
            let page = self.0.list_keys(cursor).map_err(kv_error)?;
            let got = page.keys.len();
            keys.extend(page.keys);
            match page.cursor {
                Some(c) if got > 0 && Some(c) != cursor => cursor = Some(c),
                _ => return Ok(keys),
            }
        }
    }

    fn increment(&self, key: &str, delta: u64) -> Result<u64, KvError> {
        atomics::increment(&self.0, key, delta).map_err(kv_error)
    }
}

thread_local! {
    static STORE: OnceCell<Result<KvStore<WasiBucket>, KvError>> = const { OnceCell::new() };
}

/// The bucket identifier: `JMAP_WEB_PUSH_KV_BUCKET`, default `""` (the only
/// one wasmtime-wasi-keyvalue accepts).
fn with_store<R>(
    f: impl FnOnce(&KvStore<WasiBucket>) -> Result<R, StoreError>,
) -> Result<R, wit::StoreError> {
    STORE.with(|cell| {
        let store = cell.get_or_init(|| {
            let id = std::env::var("JMAP_WEB_PUSH_KV_BUCKET").unwrap_or_default();
            kv::open(&id)
                .map(|b| KvStore::new(WasiBucket(b)))
                .map_err(kv_error)
        });
        match store {
            Ok(s) => f(s).map_err(to_wit_error),
            Err(e) => Err(to_wit_error(StoreError::from(e.clone()))),
        }
    })
}

fn to_wit_error(e: StoreError) -> wit::StoreError {
    match e {
        StoreError::Conflict => wit::StoreError::Conflict,
        StoreError::Unavailable(m) => wit::StoreError::Unavailable(m),
        StoreError::Other(m) => wit::StoreError::Other(m),
    }
}

fn condition(c: wit::Condition) -> Condition {
    match c {
        wit::Condition::Any => Condition::Any,
        wit::Condition::Absent => Condition::Absent,
        wit::Condition::Version(v) => Condition::Version(v),
    }
}

fn entry(e: crate::Entry) -> wit::Entry {
    wit::Entry {
        value: e.value,
        version: e.version,
    }
}

struct Component;

export!(Component);

impl wit::Guest for Component {
    fn get(key: String) -> Result<Option<wit::Entry>, wit::StoreError> {
        with_store(|s| s.get(&key)).map(|e| e.map(entry))
    }

    fn get_many(keys: Vec<String>) -> Result<Vec<Option<wit::Entry>>, wit::StoreError> {
        with_store(|s| s.get_many(&keys)).map(|v| v.into_iter().map(|e| e.map(entry)).collect())
    }

    fn put(key: String, value: Vec<u8>, c: wit::Condition) -> Result<u64, wit::StoreError> {
        with_store(|s| s.put(&key, &value, condition(c)))
    }

    fn delete(key: String, c: wit::Condition) -> Result<bool, wit::StoreError> {
        with_store(|s| s.delete(&key, condition(c)))
    }

    fn list_keys(
        prefix: String,
        after: Option<String>,
        limit: u32,
    ) -> Result<wit::KeyPage, wit::StoreError> {
        with_store(|s| s.list_keys(&prefix, after.as_deref(), limit)).map(|p| wit::KeyPage {
            keys: p.keys,
            next: p.next,
        })
    }
}
