//! Native tests of `PushSubscription/set` on a store that fails chosen
//! writes: what a refused create or a failed destroy leaves behind must
//! never reach the client, its quota or delivery, and `tick` must clear it.

use crate::config::Config;
use crate::delivery::engine_tests::Scripted;
use crate::json::{self, Map, Value};
use crate::lifecycle;
use crate::ports::{
    Condition, Entry, KeyPage, LogLevel, MemoryStore, RecordingLog, Store, StoreError,
};
use crate::repo;
use crate::subscription::Owner;
use crate::{Env, Plugin};

const NOW_MS: u64 = 1_800_000_000_000;

/// A memory store whose puts and deletes of keys starting with one of
/// the prefixes fail with `Unavailable` while `failing` is set.
struct FailingWrites {
    inner: MemoryStore,
    put_prefixes: Vec<&'static str>,
    delete_prefixes: Vec<&'static str>,
    failing: bool,
}

impl FailingWrites {
    fn new(put_prefixes: Vec<&'static str>, delete_prefixes: Vec<&'static str>) -> Self {
        FailingWrites {
            inner: MemoryStore::new(),
            put_prefixes,
            delete_prefixes,
            failing: true,
        }
    }

    fn fails(&self, prefixes: &[&str], key: &str) -> bool {
        self.failing && prefixes.iter().any(|p| key.starts_with(p))
    }

    fn keys_under(&self, prefix: &str) -> Vec<String> {
        self.inner
            .keys()
            .filter(|k| k.starts_with(prefix))
            .map(str::to_string)
            .collect()
    }
}

impl Store for FailingWrites {
    fn get(&mut self, key: &str) -> Result<Option<Entry>, StoreError> {
        self.inner.get(key)
    }
    fn get_many(&mut self, keys: &[String]) -> Result<Vec<Option<Entry>>, StoreError> {
        self.inner.get_many(keys)
    }
    fn put(&mut self, key: &str, value: &[u8], cond: Condition) -> Result<u64, StoreError> {
        if self.fails(&self.put_prefixes, key) {
            return Err(StoreError::Unavailable("put refused by the test".into()));
        }
        self.inner.put(key, value, cond)
    }
    fn delete(&mut self, key: &str, cond: Condition) -> Result<bool, StoreError> {
        if self.fails(&self.delete_prefixes, key) {
            return Err(StoreError::Unavailable("delete refused by the test".into()));
        }
        self.inner.delete(key, cond)
    }
    fn list_keys(
        &mut self,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<KeyPage, StoreError> {
        self.inner.list_keys(prefix, after, limit)
    }
}

fn alice() -> Owner {
    Owner {
        username: "alice".into(),
        credential_id: None,
    }
}

/// Runs `f` on an environment over `store` at `now_ms`, the push service
/// answering `answers` in turn (then 201); returns its result, what was
/// sent and the log.
fn with_env<R>(
    store: &mut dyn Store,
    now_ms: u64,
    answers: &[u16],
    f: impl FnOnce(&mut Env<'_>) -> R,
) -> (R, Scripted, RecordingLog) {
    let mut http = Scripted {
        answers: answers.iter().copied().collect(),
        ..Scripted::default()
    };
    let (mut log, config) = (RecordingLog::default(), Config::default());
    let mut env = Env {
        store,
        http: &mut http,
        log: &mut log,
        config: &config,
        now_ms,
    };
    let r = f(&mut env);
    (r, http, log)
}

/// Runs one `PushSubscription/set` call; returns its response and log.
fn set_call(
    plugin: &mut Plugin,
    store: &mut dyn Store,
    now_ms: u64,
    args: &str,
) -> (Map<String, Value>, RecordingLog) {
    set_call_answered(plugin, store, now_ms, args, &[])
}

/// The same, the push service answering `answers` in turn (then 201).
fn set_call_answered(
    plugin: &mut Plugin,
    store: &mut dyn Store,
    now_ms: u64,
    args: &str,
    answers: &[u16],
) -> (Map<String, Value>, RecordingLog) {
    let args = json::parse(args).expect("test arguments are JSON");
    let args = args.as_object().expect("an object").clone();
    let (response, _, log) = with_env(store, now_ms, answers, |env| {
        super::set(plugin, env, &alice(), &args, &mut Vec::new())
            .unwrap_or_else(|e| panic!("method error: {e:?}"))
    });
    let response = response.as_object().expect("an object").clone();
    (response, log)
}

fn create_args(dcid: &str) -> String {
    format!(
        r#"{{"create":{{"c1":{{"deviceClientId":"{dcid}","url":"https://push.example.net/{dcid}"}}}}}}"#
    )
}

/// Runs `tick`; returns how many requests it sent.
fn tick(plugin: &mut Plugin, store: &mut dyn Store, now_ms: u64) -> usize {
    let (_, http, _) = with_env(store, now_ms, &[], |env| {
        lifecycle::tick(plugin, env).expect("tick")
    });
    http.sent.len()
}

/// Whether alice's subscriptions list `id`.
fn listed(store: &mut dyn Store, id: &str) -> bool {
    repo::owner_ids(store, &alice())
        .expect("readable")
        .iter()
        .any(|i| i == id)
}

#[test]
fn a_create_that_cannot_be_taken_back_leaves_nothing_the_client_or_its_quota_sees() {
    // The owner index cannot be written, so the create is refused and
    // taken back; the record cannot be deleted either.
    let mut store = FailingWrites::new(vec!["owner/"], vec![repo::SUB_PREFIX]);
    let mut plugin = Plugin::new();
    let (response, log) = set_call(&mut plugin, &mut store, NOW_MS, &create_args("phone"));
    let refused = &response["notCreated"]["c1"];
    assert_eq!(refused["type"], "serverFail", "{response:?}");
    assert!(
        log.lines
            .iter()
            .any(|(level, line)| *level == LogLevel::Error && line.contains("could not be erased")),
        "{:?}",
        log.lines
    );
    // What stays is the record and its expiry entry only: no owner index
    // (the quota), no deviceClientId reservation, no verification entry.
    let records = store.keys_under(repo::SUB_PREFIX);
    assert_eq!(records.len(), 1, "{records:?}");
    assert!(store.keys_under("owner/").is_empty());
    assert!(store.keys_under("dcid/").is_empty());
    let due = store.keys_under(repo::DUE_PREFIX);
    assert_eq!(due.len(), 1, "{due:?}");
    assert_eq!(
        repo::parse_due_key(&due[0]).map(|e| e.kind),
        Some(repo::DueKind::Expiry)
    );

    // With the store healthy again, the same deviceClientId can be created
    // and the leftover is not listed.
    store.failing = false;
    let (response, _) = set_call(
        &mut plugin,
        &mut store,
        NOW_MS + 1_000,
        &create_args("phone"),
    );
    let id = response["created"]["c1"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("created: {response:?}"))
        .to_string();
    assert_eq!(store.keys_under("owner/").len(), 1);

    // At the leftover's expiry, `tick` erases it; the new one, created a
    // second later, stays.
    let leftover = records[0].clone();
    let leftover_id = repo::sub_id_of_key(&leftover).expect("a record key");
    let (left, _) = repo::load(&mut store, leftover_id)
        .unwrap()
        .expect("leftover");
    tick(&mut plugin, &mut store, left.expires * 1000);
    assert!(
        store.inner.get(&leftover).unwrap().is_none(),
        "leftover erased"
    );
    assert!(store.inner.get(&repo::sub_key(&id)).unwrap().is_some());
}

#[test]
fn a_destroy_that_fails_part_way_can_be_repeated_and_frees_the_quota_at_once() {
    let mut store = FailingWrites::new(vec![], vec![]);
    store.failing = false;
    let mut plugin = Plugin::new();
    let (response, _) = set_call(&mut plugin, &mut store, NOW_MS, &create_args("phone"));
    let id = response["created"]["c1"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("created: {response:?}"))
        .to_string();

    // The record cannot be deleted: the destroy fails, but nothing points
    // at the record any more.
    store.delete_prefixes = vec![repo::SUB_PREFIX];
    store.failing = true;
    let destroy = format!(r#"{{"destroy":["{id}"]}}"#);
    let (response, _) = set_call(&mut plugin, &mut store, NOW_MS + 1_000, &destroy);
    assert_eq!(
        response["notDestroyed"][id.as_str()]["type"],
        "serverFail",
        "{response:?}"
    );
    assert!(store.keys_under("owner/").is_empty());
    assert!(store.keys_under("dcid/").is_empty());

    // Repeated once the store works, the destroy succeeds and leaves
    // nothing.
    store.failing = false;
    let (response, _) = set_call(&mut plugin, &mut store, NOW_MS + 2_000, &destroy);
    assert_eq!(
        response["destroyed"],
        json::Value::Array(vec![Value::from(id.as_str())])
    );
    assert!(store.keys_under(repo::SUB_PREFIX).is_empty());
    assert!(store.keys_under(repo::DUE_PREFIX).is_empty());
}

#[test]
fn a_destroy_that_fails_part_way_leaves_nothing_pushed_to_once_unlisted() {
    // (deletes that fail, how the subscription gets something to send)
    for failing in [vec![repo::PENDING_PREFIX], vec![repo::DUE_PREFIX]] {
        let mut store = FailingWrites::new(vec![], vec![]);
        store.failing = false;
        let mut plugin = Plugin::new();
        let id = if failing == vec![repo::PENDING_PREFIX] {
            // A verified subscription owing a change its push service
            // refused with 503.
            crate::delivery::engine_tests::subscription_with_id(&mut store.inner, NOW_MS, "sub1");
            let event = crate::delivery::engine_tests::event("s1");
            with_env(&mut store, NOW_MS, &[503], |env| {
                crate::delivery::state_changed(&mut plugin, env, &event).expect("taken")
            });
            assert_eq!(store.keys_under(repo::PENDING_PREFIX).len(), 1);
            "sub1".to_string()
        } else {
            // A new subscription whose verification push got a 503: it is
            // sent again later.
            let (response, _) = set_call_answered(
                &mut plugin,
                &mut store,
                NOW_MS,
                &create_args("phone"),
                &[503],
            );
            response["created"]["c1"]["id"]
                .as_str()
                .unwrap_or_else(|| panic!("created: {response:?}"))
                .to_string()
        };

        store.delete_prefixes = failing.clone();
        store.failing = true;
        let destroy = format!(r#"{{"destroy":["{id}"]}}"#);
        let (response, _) = set_call(&mut plugin, &mut store, NOW_MS + 1_000, &destroy);
        assert_eq!(
            response["notDestroyed"][id.as_str()]["type"],
            "serverFail",
            "{failing:?}: {response:?}"
        );

        // Whatever `tick` sends later goes to a subscription the client
        // still sees (and can destroy again).
        store.failing = false;
        let sent = tick(&mut plugin, &mut store, NOW_MS + 3_600_000);
        assert!(
            sent == 0 || listed(&mut store, &id),
            "{failing:?}: {sent} pushes to a subscription no longer listed"
        );
    }
}
