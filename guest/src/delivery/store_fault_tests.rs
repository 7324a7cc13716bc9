//! Native tests of the delivery engine on stores that fail or race at
//! chosen writes: a pending record another host always wins, a value too
//! large, a newer change merged while a push was out and an outage right
//! after it.

use super::engine_tests::{event, subscription_with_id, Scripted};
use super::*;
use crate::config::Config;
use crate::ports::{MemoryStore, NoLog, Store};

/// The engine's environment on `store`, a scripted push service, no log.
fn env_on<'a>(
    store: &'a mut dyn Store,
    http: &'a mut Scripted,
    log: &'a mut NoLog,
    config: &'a Config,
    now_ms: u64,
) -> Env<'a> {
    Env {
        store,
        http,
        log,
        config,
        now_ms,
    }
}

/// The change `sub1` still owes, as stored.
fn owed_by_sub1(store: &mut MemoryStore) -> Pending {
    let entry = store
        .get(&pending_key("sub1"))
        .unwrap()
        .expect("still owed");
    Pending::from_record(&entry.value).expect("a pending record")
}

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
    let (mut http, mut log, config) = (Scripted::default(), NoLog, Config::default());
    let mut env = env_on(&mut store, &mut http, &mut log, &config, now);
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
    let (mut http, mut log, config) = (Scripted::default(), NoLog, Config::default());
    let mut env = env_on(&mut store, &mut http, &mut log, &config, now);
    let report = state_changed(&mut Plugin::new(), &mut env, &event("s1")).expect("taken");
    assert_eq!((report.delivered, report.dropped), (1, 1), "{report:?}");
    assert_eq!(http.sent.len(), 1);
    assert!(http.sent[0].url.ends_with("/sub2"));
}

/// A store where other writers race the engine on a pending record after
/// its push went out: when the engine clears the record, an event has just
/// merged `Calendar c9` into it (so the conditional delete conflicts); when
/// `race_reschedule`, another event merges `Contact c10` just before the
/// engine's first reschedule of the rest (a second conflict). With
/// `outage`, the store then fails every further pending-record write.
struct RacedAfterPush {
    inner: MemoryStore,
    /// The first racing writer also reschedules the record to this time,
    /// with its own due entry (another host's retry after a 429).
    other_schedule: Option<u64>,
    race_reschedule: bool,
    outage: bool,
    merged: bool,
}

impl RacedAfterPush {
    fn merge(&mut self, key: &str, type_name: &str, state: &str) -> Result<(), StoreError> {
        let entry = self.inner.get(key)?.expect("the pending record");
        let mut newer = Pending::from_record(&entry.value).expect("a pending record");
        newer
            .changed
            .entry("a1".into())
            .or_default()
            .insert(type_name.into(), state.into());
        self.inner.put(key, &encode(&newer), Condition::Any)?;
        Ok(())
    }
}

impl Store for RacedAfterPush {
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
            if self.outage {
                return Err(StoreError::Unavailable("injected outage".into()));
            }
            if std::mem::take(&mut self.race_reschedule) {
                self.merge(key, "Contact", "c10")?;
            }
        }
        self.inner.put(key, value, cond)
    }
    fn delete(&mut self, key: &str, cond: Condition) -> Result<bool, StoreError> {
        if key.starts_with(repo::PENDING_PREFIX)
            && matches!(cond, Condition::Version(_))
            && !self.merged
        {
            self.merge(key, "Calendar", "c9")?;
            if let Some(at) = self.other_schedule {
                let entry = self.inner.get(key)?.expect("the pending record");
                let mut p = Pending::from_record(&entry.value).expect("a pending record");
                p.next_attempt_ms = at;
                self.inner.put(key, &encode(&p), Condition::Any)?;
                let id = key
                    .strip_prefix(repo::PENDING_PREFIX)
                    .expect("a pending key");
                self.inner
                    .put(&repo::due_key(at, DueKind::Push, id), b"", Condition::Any)?;
            }
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
    let mut store = RacedAfterPush {
        inner: one_pending_one_not(now),
        other_schedule: None,
        race_reschedule: false,
        outage: true,
        merged: false,
    };
    let (mut http, mut log, config) = (Scripted::default(), NoLog, Config::default());
    let mut env = env_on(&mut store, &mut http, &mut log, &config, now);
    match state_changed(&mut Plugin::new(), &mut env, &event("s1")) {
        Err(PluginError::StoreUnavailable(why)) => assert!(why.contains("injected"), "{why}"),
        other => panic!("expected the store's failure, got {other:?}"),
    }
    assert!(store.merged, "the push went out and the record was cleared");
    // The newer change is still owed, and the due entry of its record's
    // next attempt (the lease of the push that went out) is still there,
    // so a later tick delivers it.
    let owed = owed_by_sub1(&mut store.inner);
    assert_eq!(
        owed.changed["a1"].get("Calendar").map(String::as_str),
        Some("c9")
    );
    let due = repo::due_key(owed.next_attempt_ms, DueKind::Push, "sub1");
    assert!(store.inner.get(&due).unwrap().is_some(), "{due} is gone");
}

#[test]
fn changes_merged_while_a_push_was_out_become_due_at_once_even_after_repeated_conflicts() {
    let now = 1_800_000_000_000;
    let mut store = RacedAfterPush {
        inner: one_pending_one_not(now),
        other_schedule: None,
        race_reschedule: true,
        outage: false,
        merged: false,
    };
    let (mut http, mut log, config) = (Scripted::default(), NoLog, Config::default());
    let mut env = env_on(&mut store, &mut http, &mut log, &config, now);
    let report = state_changed(&mut Plugin::new(), &mut env, &event("s1")).expect("taken");
    assert_eq!(report.delivered, 2, "{report:?}");
    assert!(
        !store.race_reschedule,
        "the second writer raced the reschedule"
    );
    // What was sent (Mailbox m1, Email s1) is no longer owed; both changes
    // merged meanwhile are, due now, with a due entry to match and the
    // push's lease entry gone.
    let owed = owed_by_sub1(&mut store.inner);
    let a1 = &owed.changed["a1"];
    assert_eq!(a1.get("Calendar").map(String::as_str), Some("c9"));
    assert_eq!(a1.get("Contact").map(String::as_str), Some("c10"));
    assert!(
        !a1.contains_key("Mailbox") && !a1.contains_key("Email"),
        "{a1:?}"
    );
    assert_eq!(owed.next_attempt_ms, now);
    // A fresh owed change: no attempt and no failure of its own yet (not
    // the 503 of the record it was merged into).
    assert_eq!((owed.attempts, owed.reason.as_str()), (0, ""));
    let due = store
        .inner
        .list_keys(repo::DUE_PREFIX, None, 100)
        .unwrap()
        .keys;
    assert_eq!(due, vec![repo::due_key(now, DueKind::Push, "sub1")]);
}

#[test]
fn changes_merged_while_a_push_was_out_wait_for_the_minimum_push_interval() {
    let now = 1_800_000_000_000;
    let mut store = RacedAfterPush {
        inner: one_pending_one_not(now),
        other_schedule: None,
        race_reschedule: false,
        outage: false,
        merged: false,
    };
    let config = Config {
        min_push_interval_secs: 60,
        ..Config::default()
    };
    let (mut http, mut log) = (Scripted::default(), NoLog);
    let mut env = env_on(&mut store, &mut http, &mut log, &config, now);
    let report = state_changed(&mut Plugin::new(), &mut env, &event("s1")).expect("taken");
    assert_eq!(report.delivered, 2, "{report:?}");
    assert!(store.merged, "the push went out and the record was cleared");
    // The change merged while the push was out is owed, due once the
    // interval since that push is over, with a due entry to match.
    let owed = owed_by_sub1(&mut store.inner);
    assert_eq!(
        owed.changed["a1"].get("Calendar").map(String::as_str),
        Some("c9")
    );
    assert_eq!(owed.next_attempt_ms, now + 60_000);
    assert_eq!(
        (owed.attempts, owed.reason.as_str()),
        (0, "interval"),
        "it waits for the interval, not for a retry"
    );
    let due = store
        .inner
        .list_keys(repo::DUE_PREFIX, None, 100)
        .unwrap()
        .keys;
    assert_eq!(
        due,
        vec![repo::due_key(now + 60_000, DueKind::Push, "sub1")]
    );
}

#[test]
fn a_stale_due_entry_that_is_a_records_only_entry_gives_way_to_the_one_in_force() {
    // A record rescheduled to `later` whose own due entry was never written
    // (the store failed between the two writes): only the old entry is left.
    let now = 1_800_000_000_000;
    let later = now + 30_000;
    let mut inner = MemoryStore::new();
    subscription_with_id(&mut inner, now, "sub1");
    let mut owed = Changed::new();
    owed.entry("a1".into())
        .or_default()
        .insert("Mailbox".into(), "m1".into());
    let pending = Pending {
        changed: owed,
        first_ms: now - 1_000,
        attempts: 1,
        next_attempt_ms: later,
        reason: "503".into(),
    };
    inner
        .put(&pending_key("sub1"), &encode(&pending), Condition::Any)
        .unwrap();
    let stale = repo::due_key(now - 5, DueKind::Push, "sub1");
    inner.put(&stale, b"", Condition::Any).unwrap();
    let entry = repo::parse_due_key(&stale).expect("a due key");

    let (mut http, mut log, config) = (Scripted::default(), NoLog, Config::default());
    let mut env = env_on(&mut inner, &mut http, &mut log, &config, now);
    send_due(&mut Plugin::new(), &mut env, vec![entry]).expect("tick");
    assert!(http.sent.is_empty(), "not due yet");
    let due = inner.list_keys(repo::DUE_PREFIX, None, 100).unwrap().keys;
    assert_eq!(due, vec![repo::due_key(later, DueKind::Push, "sub1")]);
}

#[test]
fn a_retry_another_host_scheduled_while_a_push_was_out_keeps_its_time() {
    let now = 1_800_000_000_000;
    let retry_at = now + 120_000;
    let mut store = RacedAfterPush {
        inner: one_pending_one_not(now),
        other_schedule: Some(retry_at),
        race_reschedule: false,
        outage: false,
        merged: false,
    };
    let (mut http, mut log, config) = (Scripted::default(), NoLog, Config::default());
    let mut env = env_on(&mut store, &mut http, &mut log, &config, now);
    state_changed(&mut Plugin::new(), &mut env, &event("s1")).expect("taken");
    let owed = owed_by_sub1(&mut store.inner);
    assert_eq!(
        owed.next_attempt_ms, retry_at,
        "the other host's Retry-After stands"
    );
    assert_eq!(
        owed.changed["a1"].keys().collect::<Vec<_>>(),
        vec!["Calendar"],
        "what was sent is no longer owed"
    );
    let due = store
        .inner
        .list_keys(repo::DUE_PREFIX, None, 100)
        .unwrap()
        .keys;
    assert_eq!(due, vec![repo::due_key(retry_at, DueKind::Push, "sub1")]);
}
