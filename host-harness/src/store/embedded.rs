//! The embedded, crash-safe default backend: one [redb] file, no server.
//!
//! Each operation is one write transaction, committed durably before it is
//! acknowledged (redb's default durability fsyncs on commit), so a write
//! that returned survives a crash of the process. Write transactions are
//! serialized by redb, which makes conditional writes atomic. One process
//! opens the file at a time; several processes sharing a store use the
//! PostgreSQL backend.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{check_sizes, Condition, Entry, KeyPage, KvStore, StoreError};

/// key → version (8 octets, big endian) || value
const DATA: TableDefinition<&str, &[u8]> = TableDefinition::new("data");
/// "version" → last version handed out
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// A [`KvStore`] in a redb file.
#[derive(Debug)]
pub struct EmbeddedStore {
    db: Database,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn decode(raw: &[u8]) -> Result<Entry, StoreError> {
    if raw.len() < 8 {
        return Err(StoreError::Other(
            "corrupt entry (shorter than its version)".into(),
        ));
    }
    let (v, value) = raw.split_at(8);
    let mut b = [0u8; 8];
    b.copy_from_slice(v);
    Ok(Entry {
        value: value.to_vec(),
        version: u64::from_be_bytes(b),
    })
}

impl EmbeddedStore {
    /// Opens (or creates) the store file at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        if let Some(parent) = path.as_ref().parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent).map_err(unavailable)?;
            }
        }
        let db = Database::create(path.as_ref()).map_err(unavailable)?;
        let txn = db.begin_write().map_err(unavailable)?;
        {
            txn.open_table(DATA).map_err(unavailable)?;
            txn.open_table(META).map_err(unavailable)?;
        }
        txn.commit().map_err(unavailable)?;
        Ok(EmbeddedStore { db })
    }

    fn read_entry(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        let txn = self.db.begin_read().map_err(unavailable)?;
        let table = txn.open_table(DATA).map_err(unavailable)?;
        match table.get(key).map_err(unavailable)? {
            Some(v) => Ok(Some(decode(v.value())?)),
            None => Ok(None),
        }
    }

    /// Runs a conditional write in one transaction.
    fn write(
        &self,
        key: &str,
        value: Option<&[u8]>,
        cond: Condition,
    ) -> Result<(u64, bool), StoreError> {
        let txn = self.db.begin_write().map_err(unavailable)?;
        let result = {
            let mut data = txn.open_table(DATA).map_err(unavailable)?;
            let current = match data.get(key).map_err(unavailable)? {
                Some(v) => Some(decode(v.value())?.version),
                None => None,
            };
            let holds = match cond {
                Condition::Any => true,
                Condition::Absent => current.is_none(),
                Condition::Version(v) => current == Some(v),
            };
            if !holds {
                return Err(StoreError::Conflict);
            }
            match value {
                Some(value) => {
                    let mut meta = txn.open_table(META).map_err(unavailable)?;
                    let last = meta
                        .get("version")
                        .map_err(unavailable)?
                        .map(|v| v.value())
                        .unwrap_or(0);
                    let version = last + 1;
                    meta.insert("version", version).map_err(unavailable)?;
                    let mut raw = Vec::with_capacity(8 + value.len());
                    raw.extend_from_slice(&version.to_be_bytes());
                    raw.extend_from_slice(value);
                    data.insert(key, raw.as_slice()).map_err(unavailable)?;
                    (version, true)
                }
                None => {
                    let existed = data.remove(key).map_err(unavailable)?.is_some();
                    (0, existed)
                }
            }
        };
        txn.commit().map_err(unavailable)?;
        Ok(result)
    }
}

impl KvStore for EmbeddedStore {
    fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        self.read_entry(key)
    }

    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Entry>>, StoreError> {
        let txn = self.db.begin_read().map_err(unavailable)?;
        let table = txn.open_table(DATA).map_err(unavailable)?;
        keys.iter()
            .map(|k| match table.get(k.as_str()).map_err(unavailable)? {
                Some(v) => Ok(Some(decode(v.value())?)),
                None => Ok(None),
            })
            .collect()
    }

    fn put(&self, key: &str, value: &[u8], cond: Condition) -> Result<u64, StoreError> {
        check_sizes(key, value)?;
        self.write(key, Some(value), cond).map(|(v, _)| v)
    }

    fn delete(&self, key: &str, cond: Condition) -> Result<bool, StoreError> {
        self.write(key, None, cond).map(|(_, existed)| existed)
    }

    fn list_keys(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<KeyPage, StoreError> {
        let limit = limit.max(1) as usize;
        let txn = self.db.begin_read().map_err(unavailable)?;
        let table = txn.open_table(DATA).map_err(unavailable)?;
        let start = match after {
            Some(a) if a >= prefix => a,
            _ => prefix,
        };
        let mut keys = Vec::new();
        for item in table.range(start..).map_err(unavailable)? {
            let (k, _) = item.map_err(unavailable)?;
            let k = k.value();
            if Some(k) == after {
                continue;
            }
            if !k.starts_with(prefix) {
                break;
            }
            keys.push(k.to_string());
            if keys.len() > limit {
                break;
            }
        }
        Ok(KeyPage::from_overfetched(keys, limit))
    }

    fn count_prefix(&self, prefix: &str) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(unavailable)?;
        let table = txn.open_table(DATA).map_err(unavailable)?;
        let mut n = 0u64;
        for item in table.range(prefix..).map_err(unavailable)? {
            let (k, _) = item.map_err(unavailable)?;
            if !k.value().starts_with(prefix) {
                break;
            }
            n += 1;
        }
        Ok(n)
    }
}
