//! Native tests of the delivery engine with a fake clock and a scripted
//! push service: what needs time to pass (24 h refusal runs, give-up age)
//! is tested here, where `now_ms` is a plain number.

use super::*;
use crate::config::Config;
use crate::ports::{
    HttpError, HttpOut, HttpRequest, HttpResponse, MemoryStore, NoLog, PushAction, PushKind,
    StartedBatch, Store,
};
use crate::subscription::{Owner, Subscription, VerificationState};
use std::collections::VecDeque;

/// Answers from a queue (default 201) and records requests.
#[derive(Default)]
pub(crate) struct Scripted {
    pub(crate) answers: VecDeque<u16>,
    pub(crate) sent: Vec<HttpRequest>,
}

impl HttpOut for Scripted {
    fn send_batch(&mut self, requests: Vec<HttpRequest>) -> Vec<Result<HttpResponse, HttpError>> {
        requests
            .into_iter()
            .map(|r| {
                self.sent.push(r);
                Ok(HttpResponse {
                    status: self.answers.pop_front().unwrap_or(201),
                    headers: Vec::new(),
                    body_prefix: Vec::new(),
                })
            })
            .collect()
    }
}

const HOUR_MS: u64 = 3_600_000;

fn subscription(store: &mut MemoryStore, now_ms: u64) -> String {
    subscription_with_id(store, now_ms, "sub1")
}

pub(crate) fn subscription_with_id(store: &mut MemoryStore, now_ms: u64, id: &str) -> String {
    let owner = Owner {
        username: "alice".into(),
        credential_id: None,
    };
    let sub = Subscription {
        id: id.into(),
        owner: owner.clone(),
        device_client_id: format!("d-{id}"),
        url: format!("https://push.example.net/{id}"),
        keys: None,
        verification_code: "c".into(),
        verification: VerificationState {
            verified: true,
            delivered: true,
            attempts: 0,
            next_attempt_ms: None,
        },
        expires: now_ms / 1000 + 30 * 24 * 3600,
        types: None,
        created: now_ms / 1000,
        vapid_key: None,
        refusals: Default::default(),
        last_push_ms: 0,
    };
    repo::save(store, &sub, Condition::Any).unwrap();
    store
        .put(
            &format!("{}{}", repo::owner_prefix(&owner), sub.id),
            b"",
            Condition::Any,
        )
        .unwrap();
    sub.id
}

pub(crate) fn event(state: &str) -> StateChange {
    let mut changed = Changed::new();
    changed
        .entry("a1".into())
        .or_default()
        .insert("Email".into(), state.into());
    StateChange {
        username: "alice".into(),
        changed,
    }
}

fn fire(
    store: &mut MemoryStore,
    http: &mut dyn HttpOut,
    config: &Config,
    now_ms: u64,
    state: &str,
) -> DeliveryReport {
    let mut log = NoLog;
    let mut env = Env {
        store,
        http,
        log: &mut log,
        config,
        now_ms,
    };
    state_changed(&mut Plugin::new(), &mut env, &event(state)).unwrap()
}

#[test]
fn a_run_of_refusals_destroys_only_after_the_limit_and_24_hours() {
    let config = Config {
        permanent_failure_limit: 3,
        ..Config::default()
    };
    let mut store = MemoryStore::new();
    let mut http = Scripted::default();
    let t0 = 1_800_000_000_000;
    subscription(&mut store, t0);
    // Three refusals within an hour: over the count, not over 24 h.
    for i in 0..3 {
        http.answers.push_back(403);
        let r = fire(
            &mut store,
            &mut http,
            &config,
            t0 + i * 60_000,
            &format!("s{i}"),
        );
        assert_eq!((r.dropped, r.destroyed), (1, 0));
    }
    assert!(repo::load(&mut store, "sub1").unwrap().is_some());
    // A success resets the run.
    let r = fire(&mut store, &mut http, &config, t0 + HOUR_MS, "ok");
    assert_eq!(r.delivered, 1);
    let sub = repo::load(&mut store, "sub1").unwrap().unwrap().0;
    assert_eq!(sub.refusals.count, 0);
    // A new run over more than 24 h reaching the limit destroys it.
    for (i, at) in [2 * HOUR_MS, 14 * HOUR_MS, 27 * HOUR_MS].iter().enumerate() {
        http.answers.push_back(400);
        let r = fire(&mut store, &mut http, &config, t0 + at, &format!("r{i}"));
        if i < 2 {
            assert_eq!(r.destroyed, 0, "refusal {i}");
        } else {
            assert_eq!(r.destroyed, 1, "third refusal after 25 h: {r:?}");
        }
    }
    assert!(repo::load(&mut store, "sub1").unwrap().is_none());
}

#[test]
fn every_push_reports_its_origin_answer_and_action_without_the_path() {
    use crate::ports::RecordingLog;
    let config = Config {
        permanent_failure_limit: 1,
        ..Config::default()
    };
    let mut store = MemoryStore::new();
    let mut http = Scripted::default();
    let t0 = 1_800_000_000_000;
    subscription(&mut store, t0);
    let mut log = RecordingLog::default();
    let mut run = |store: &mut MemoryStore, http: &mut Scripted, at: u64, state: &str| {
        let mut env = Env {
            store,
            http,
            log: &mut log,
            config: &config,
            now_ms: at,
        };
        state_changed(&mut Plugin::new(), &mut env, &event(state)).unwrap();
    };
    for (i, status) in [201u16, 429, 503, 403].into_iter().enumerate() {
        http.answers.push_back(status);
        run(
            &mut store,
            &mut http,
            t0 + i as u64 * 60_000,
            &format!("s{i}"),
        );
    }
    // A refusal that ends a run of refusals (limit 1, after 24 h).
    http.answers.push_back(400);
    run(&mut store, &mut http, t0 + 30 * HOUR_MS, "late");
    let got: Vec<(&str, &str, PushKind, &str, PushAction)> = log
        .outcomes
        .iter()
        .map(|o| {
            (
                o.subscription_id.as_str(),
                o.origin.as_str(),
                o.kind,
                o.answer.as_str(),
                o.action,
            )
        })
        .collect();
    let origin = "https://push.example.net";
    let k = PushKind::StateChange;
    assert_eq!(
        got,
        [
            ("sub1", origin, k, "2xx", PushAction::Delivered),
            ("sub1", origin, k, "429", PushAction::Deferred),
            ("sub1", origin, k, "503", PushAction::Deferred),
            ("sub1", origin, k, "403", PushAction::Dropped),
            ("sub1", origin, k, "400", PushAction::Destroyed),
        ]
    );
    assert!(repo::load(&mut store, "sub1").unwrap().is_none());
}

#[test]
fn a_413_split_and_a_410_are_reported_per_request() {
    use crate::ports::RecordingLog;
    let config = Config::default();
    let mut store = MemoryStore::new();
    let mut http = Scripted::default();
    let t0 = 1_800_000_000_000;
    subscription(&mut store, t0);
    let mut log = RecordingLog::default();
    let mut two_accounts = event("s1");
    two_accounts
        .changed
        .entry("a2".into())
        .or_default()
        .insert("Mailbox".into(), "m1".into());
    // 413 for both accounts together, then 201 and 410 for each alone.
    http.answers.extend([413, 201, 410]);
    let mut env = Env {
        store: &mut store,
        http: &mut http,
        log: &mut log,
        config: &config,
        now_ms: t0,
    };
    state_changed(&mut Plugin::new(), &mut env, &two_accounts).unwrap();
    let got: Vec<(&str, PushAction)> = log
        .outcomes
        .iter()
        .map(|o| (o.answer.as_str(), o.action))
        .collect();
    assert_eq!(
        got,
        [
            ("413", PushAction::Split),
            ("2xx", PushAction::Delivered),
            ("410", PushAction::Destroyed),
        ]
    );
    assert_eq!(http.sent.len(), 3);
    assert!(repo::load(&mut store, "sub1").unwrap().is_none());
}

#[test]
fn a_pending_change_is_given_up_after_the_configured_age() {
    let config = Config {
        give_up_after_secs: 3600,
        ..Config::default()
    };
    let mut store = MemoryStore::new();
    let mut http = Scripted::default();
    let t0 = 1_800_000_000_000;
    subscription(&mut store, t0);
    http.answers.push_back(503);
    let r = fire(&mut store, &mut http, &config, t0, "s1");
    assert_eq!(r.deferred, 1);
    assert!(store.get(&pending_key("sub1")).unwrap().is_some());
    // Two hours later the retry is due but too old: dropped, not sent.
    let sent_before = http.sent.len();
    let due: Vec<DueEntry> = store
        .keys()
        .filter_map(repo::parse_due_key)
        .filter(|e| e.kind == DueKind::Push)
        .collect();
    assert_eq!(due.len(), 1);
    let mut log = NoLog;
    let mut env = Env {
        store: &mut store,
        http: &mut http,
        log: &mut log,
        config: &config,
        now_ms: t0 + 2 * HOUR_MS,
    };
    let r = send_due(&mut Plugin::new(), &mut env, due).unwrap();
    assert_eq!(r.dropped, 1, "{r:?}");
    assert_eq!(http.sent.len(), sent_before, "nothing sent");
    assert!(store.get(&pending_key("sub1")).unwrap().is_none());
}

/// A host that returns handles from `start-batch` and answers at
/// `finish-batch`; logs the order of the calls.
#[derive(Default)]
struct Pipelined {
    calls: Vec<String>,
    started: BTreeMap<u64, Vec<HttpRequest>>,
    next: u64,
    gone: String,
}

impl HttpOut for Pipelined {
    fn send_batch(&mut self, requests: Vec<HttpRequest>) -> Vec<Result<HttpResponse, HttpError>> {
        self.calls.push(format!("send {}", requests.len()));
        requests.iter().map(|r| self.answer(r)).collect()
    }

    fn start_batch(&mut self, requests: Vec<HttpRequest>) -> StartedBatch {
        self.calls.push(format!("start {}", requests.len()));
        self.next += 1;
        self.started.insert(self.next, requests);
        StartedBatch::Handle(self.next)
    }

    fn finish_handle(&mut self, handle: u64) -> Vec<Result<HttpResponse, HttpError>> {
        self.calls.push(format!("finish {handle}"));
        let requests = self.started.remove(&handle).unwrap_or_default();
        requests.iter().map(|r| self.answer(r)).collect()
    }
}

impl Pipelined {
    fn answer(&self, r: &HttpRequest) -> Result<HttpResponse, HttpError> {
        Ok(HttpResponse {
            status: if r.url.ends_with(&self.gone) {
                410
            } else {
                201
            },
            headers: Vec::new(),
            body_prefix: Vec::new(),
        })
    }
}

#[test]
fn pipeline_pieces_double_up_to_the_cap() {
    let pieces: Vec<usize> = (0..8).map(pipeline_piece).collect();
    assert_eq!(pieces, [16, 32, 64, 128, 256, 256, 256, 256]);
    assert_eq!(pipeline_piece(usize::MAX), PIPELINE_MAX);
}

#[test]
fn large_fan_outs_are_pipelined_and_answers_reach_the_right_subscription() {
    let config = Config::default();
    let mut store = MemoryStore::new();
    let t0 = 1_800_000_000_000;
    let n = pipeline_piece(0) + pipeline_piece(1) + 5;
    for i in 0..n {
        subscription_with_id(&mut store, t0, &format!("s{i:03}"));
    }
    let mut http = Pipelined {
        gone: "/s020".into(),
        ..Default::default()
    };
    let r = fire(&mut store, &mut http, &config, t0, "x");
    assert_eq!((r.delivered, r.destroyed), (n as u32 - 1, 1), "{r:?}");
    // Every chunk is started before the first is awaited.
    assert_eq!(
        http.calls,
        [
            format!("start {PIPELINE_FIRST}"),
            format!("start {}", 2 * PIPELINE_FIRST),
            "start 5".to_string(),
            "finish 1".to_string(),
            "finish 2".to_string(),
            "finish 3".to_string(),
        ]
    );
    assert!(
        repo::load(&mut store, "s020").unwrap().is_none(),
        "the 410 one is gone"
    );
    assert!(repo::load(&mut store, "s019").unwrap().is_some());
    assert!(repo::load(&mut store, "s021").unwrap().is_some());
}

#[test]
fn a_small_fan_out_is_one_send_batch_and_missing_answers_are_errors() {
    let config = Config::default();
    let mut store = MemoryStore::new();
    let t0 = 1_800_000_000_000;
    for i in 0..3 {
        subscription_with_id(&mut store, t0, &format!("s{i}"));
    }
    let mut http = Pipelined {
        gone: "/nobody".into(),
        ..Default::default()
    };
    let r = fire(&mut store, &mut http, &config, t0, "x");
    assert_eq!(r.delivered, 3);
    assert_eq!(http.calls, ["send 3"]);
    // A host that loses a batch: every request of it counts as failed.
    let mut lost = Pipelined::default();
    let started = lost.start_batch(vec![]);
    let answers = lost.finish_batch(StartedBatch::Handle(99), 2);
    drop(started);
    assert_eq!(answers.len(), 2);
    assert!(answers
        .iter()
        .all(|a| matches!(a, Err(HttpError::Other(_)))));
}

#[test]
fn shards_partition_the_subscriptions() {
    let ids: Vec<String> = (0..1000).map(|i| format!("id{i}")).collect();
    for count in 1..5u32 {
        let mut seen = vec![0u32; count as usize];
        for id in &ids {
            seen[shard_of(id, count) as usize] += 1;
        }
        assert_eq!(seen.iter().sum::<u32>(), 1000);
        assert!(seen.iter().all(|n| *n > 1000 / count / 2), "{seen:?}");
    }
}

#[test]
fn unencrypted_push_headers() {
    let config = Config::default();
    let mut store = MemoryStore::new();
    let mut http = Scripted::default();
    subscription(&mut store, 1_800_000_000_000);
    fire(&mut store, &mut http, &config, 1_800_000_000_000, "s1");
    let req = &http.sent[0];
    assert_eq!(req.header("TTL"), Some("86400"));
    assert_eq!(
        req.header("Content-Type"),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(
        req.header("Authorization"),
        None,
        "no VAPID without a contact"
    );
    assert_eq!(
        String::from_utf8(req.body.clone()).unwrap(),
        r#"{"@type":"StateChange","changed":{"a1":{"Email":"s1"}}}"#
    );
}
