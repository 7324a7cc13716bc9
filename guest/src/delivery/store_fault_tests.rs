//! Native tests of the delivery engine on stores that fail or race at
//! chosen writes: a pending record another host always wins, a value too
//! large, a newer change merged while a push was out and an outage right
//! after it.

use super::engine_tests::{event, subscription_with_id, Scripted};
use super::*;
use crate::config::Config;
use crate::ports::{MemoryStore, NoLog, Store};

/// A store whose conditional writes of pending records fail with `error`
/// (another host always winning, or a value the backend refuses).
struct PendingWritesFail {
    inner: MemoryStore,
    error: StoreError,
}

impl Store for PendingWritesFail {
    fn get(&mut self, key: &str) -> Result<Option<crate::ports::Entry>, StoreError> {
        self.inner.get(key)
    }
    fn get_many(
        &mut self,
        keys: &[String],
    ) -> Result<Vec<Option<crate::ports::Entry>>, StoreError> {
        self.inner.get_many(keys)
    }
    fn put(&mut self, key: &str, value: &[u8], cond: Condition) -> Result<u64, StoreError> {
        if key.starts_with(repo::PENDING_PREFIX) && !matches!(cond, Condition::Any) {
            return Err(self.error.clone());
        }
        self.inner.put(key, value, cond)
    }
    fn delete(&mut self, key: &str, cond: Condition) -> Result<bool, StoreError> {
        self.inner.delete(key, cond)
    }
    fn list_keys(
        &mut self,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<crate::ports::KeyPage, StoreError> {
        self.inner.list_keys(prefix, after, limit)
    }
}

/// Two subscriptions, `sub1` with a pending change due now (so the event
/// must claim it with a conditional write) and `sub2` with none.
fn one_pending_one_not(now_ms: u64) -> MemoryStore {
    let mut store = MemoryStore::new();
    subscription_with_id(&mut store, now_ms, "sub1");
    subscription_with_id(&mut store, now_ms, "sub2");
    let mut owed = Changed::new();
    owed.entry("a1".into())
        .or_default()
        .insert("Mailbox".into(), "m1".into());
    let pending = Pending {
        changed: owed,
        first_ms: now_ms - 1_000,
        attempts: 1,
        next_attempt_ms: now_ms - 1,
        reason: "503".into(),
    };
    store
        .put(&pending_key("sub1"), &encode(&pending), Condition::Any)
        .unwrap();
    store
}

#[test]
fn a_pending_record_that_always_conflicts_fails_the_event_instead_of_dropping_it() {
    let now = 1_800_000_000_000;
    let mut store = PendingWritesFail {
        inner: one_pending_one_not(now),
        error: StoreError::Conflict,
    };
    let mut http = Scripted::default();
    let mut log = NoLog;
    let config = Config::default();
    let mut env = Env {
        store: &mut store,
        http: &mut http,
        log: &mut log,
        config: &config,
        now_ms: now,
    };
    match state_changed(&mut Plugin::new(), &mut env, &event("s1")) {
        Err(PluginError::StoreUnavailable(why)) => {
            assert!(why.contains("write conflicts"), "{why}")
        }
        other => panic!("expected the event to fail, got {other:?}"),
    }
    // Nothing was sent that a repeat of the event would send again, and
    // the owed change is still there.
    assert!(http.sent.is_empty());
    assert!(store.inner.get(&pending_key("sub1")).unwrap().is_some());
}

#[test]
fn a_pending_record_too_large_for_the_store_drops_that_change_only() {
    let now = 1_800_000_000_000;
    let mut store = PendingWritesFail {
        inner: one_pending_one_not(now),
        error: StoreError::TooLarge,
    };
    let mut http = Scripted::default();
    let mut log = NoLog;
    let config = Config::default();
    let mut env = Env {
        store: &mut store,
        http: &mut http,
        log: &mut log,
        config: &config,
        now_ms: now,
    };
    let report = state_changed(&mut Plugin::new(), &mut env, &event("s1")).expect("taken");
    assert_eq!((report.delivered, report.dropped), (1, 1), "{report:?}");
    assert_eq!(http.sent.len(), 1);
    assert!(http.sent[0].url.ends_with("/sub2"));
}

/// A store where, when the engine clears a pending record after its push
/// went out, another writer has just merged a newer change into it (so the
/// conditional delete conflicts), and the store then fails the engine's
/// reschedule of that newer change.
struct NewerChangeThenOutage {
    inner: MemoryStore,
    merged: bool,
}

impl Store for NewerChangeThenOutage {
    fn get(&mut self, key: &str) -> Result<Option<crate::ports::Entry>, StoreError> {
        self.inner.get(key)
    }
    fn get_many(
        &mut self,
        keys: &[String],
    ) -> Result<Vec<Option<crate::ports::Entry>>, StoreError> {
        self.inner.get_many(keys)
    }
    fn put(&mut self, key: &str, value: &[u8], cond: Condition) -> Result<u64, StoreError> {
        if self.merged && key.starts_with(repo::PENDING_PREFIX) {
            return Err(StoreError::Unavailable("injected outage".into()));
        }
        self.inner.put(key, value, cond)
    }
    fn delete(&mut self, key: &str, cond: Condition) -> Result<bool, StoreError> {
        if key.starts_with(repo::PENDING_PREFIX) && matches!(cond, Condition::Version(_)) {
            let entry = self
                .inner
                .get(key)?
                .expect("the pending record being cleared");
            let mut newer = Pending::from_record(&entry.value).expect("a pending record");
            newer
                .changed
                .entry("a1".into())
                .or_default()
                .insert("Calendar".into(), "c9".into());
            self.inner.put(key, &encode(&newer), Condition::Any)?;
            self.merged = true;
        }
        self.inner.delete(key, cond)
    }
    fn list_keys(
        &mut self,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<crate::ports::KeyPage, StoreError> {
        self.inner.list_keys(prefix, after, limit)
    }
}

#[test]
fn a_store_failure_while_rescheduling_a_newer_change_fails_the_call_and_keeps_it_due() {
    let now = 1_800_000_000_000;
    let mut store = NewerChangeThenOutage {
        inner: one_pending_one_not(now),
        merged: false,
    };
    let mut http = Scripted::default();
    let mut log = NoLog;
    let config = Config::default();
    let mut env = Env {
        store: &mut store,
        http: &mut http,
        log: &mut log,
        config: &config,
        now_ms: now,
    };
    match state_changed(&mut Plugin::new(), &mut env, &event("s1")) {
        Err(PluginError::StoreUnavailable(why)) => assert!(why.contains("injected"), "{why}"),
        other => panic!("expected the store's failure, got {other:?}"),
    }
    assert!(store.merged, "the push went out and the record was cleared");
    // The newer change is still owed, and a due entry still points at the
    // subscription, so a later tick delivers it.
    let entry = store
        .inner
        .get(&pending_key("sub1"))
        .unwrap()
        .expect("still owed");
    let owed = Pending::from_record(&entry.value).unwrap();
    assert_eq!(
        owed.changed["a1"].get("Calendar").map(String::as_str),
        Some("c9")
    );
    let due = store.inner.list_keys(repo::DUE_PREFIX, None, 100).unwrap();
    assert!(
        due.keys.iter().any(|k| k.ends_with("/sub1")),
        "no due entry left for sub1: {:?}",
        due.keys
    );
}
