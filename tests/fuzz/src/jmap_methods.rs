//! `PushSubscription/get` and `/set` through the guest's core.

use jmap_web_push_guest::delivery::{self, StateChange};
use jmap_web_push_guest::json::{self, Value};
use jmap_web_push_guest::ports::{MemoryStore, NoLog};
use jmap_web_push_guest::subscription::{Owner, Subscription};
use jmap_web_push_guest::{jmap, lifecycle, repo, Env, Plugin};

use crate::support::{assert_records_read_back, config, now_ms, ScriptedPushService};

/// Most calls made for one input.
const MAX_CALLS: usize = 8;

/// Up to eight calls on one store and one plugin instance, separated by
/// 0xFF octets. Each call's first octet picks what it is (`% 5`) and how
/// the push service answers its pushes (`/ 5`); the rest is its text:
///
/// - 0: `PushSubscription/get` with the text as arguments;
/// - 1: `PushSubscription/set` with the text as arguments;
/// - 2: `/set` updating every stored subscription with its right
///   `verificationCode` (what the client does after the verification push);
/// - 3: a StateChange of the text as the `Email` state, then `tick`;
/// - 4: the text's credential revoked.
///
/// Properties: a method answer is a JSON object, a method error has a
/// description, and after every call each stored record reads back.
pub fn jmap_methods(data: &[u8]) {
    run(data);
}

/// What a [`jmap_methods`] input came to, so that a test can tell the
/// seeds reach the deep paths (a create, its verification, a push).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reached {
    /// Subscriptions stored at the end.
    pub subscriptions: usize,
    /// Of which verified.
    pub verified: usize,
    /// Push requests sent (verifications and StateChanges).
    pub pushes: usize,
}

/// [`jmap_methods`], telling what it reached.
pub fn run(data: &[u8]) -> Reached {
    let mut reached = Reached::default();
    let config = config();
    let mut store = MemoryStore::new();
    let mut plugin = Plugin::new();
    let mut log = NoLog;
    let owner = Owner {
        username: "alice".into(),
        credential_id: Some("cred".into()),
    };
    let mut created_ids = Vec::new();
    for (step, call) in data.split(|b| *b == 0xFF).take(MAX_CALLS).enumerate() {
        let Some((&selector, text)) = call.split_first() else {
            continue;
        };
        let text = String::from_utf8_lossy(text);
        let mut http = ScriptedPushService::new(&[selector / 5]);
        let mut env = Env {
            store: &mut store,
            http: &mut http,
            log: &mut log,
            config: &config,
            now_ms: now_ms(step),
        };
        let method = |name: &str,
                      args: &str,
                      env: &mut Env<'_>,
                      plugin: &mut Plugin,
                      ids: &mut Vec<(String, String)>| {
            match jmap::call(plugin, env, &owner, name, args, ids) {
                Ok(answer) => match json::parse(&answer) {
                    Ok(Value::Object(_)) => {}
                    other => {
                        panic!("{name} answered something not a JSON object: {other:?}: {answer}")
                    }
                },
                Err(e) => assert!(
                    !e.description.is_empty(),
                    "{name}: {:?} without a description",
                    e.kind
                ),
            }
        };
        match selector % 5 {
            0 => method(
                "PushSubscription/get",
                &text,
                &mut env,
                &mut plugin,
                &mut created_ids,
            ),
            1 => method(
                "PushSubscription/set",
                &text,
                &mut env,
                &mut plugin,
                &mut created_ids,
            ),
            2 => {
                let args = verify_all(&mut env);
                method(
                    "PushSubscription/set",
                    &args,
                    &mut env,
                    &mut plugin,
                    &mut created_ids,
                );
            }
            3 => {
                let mut changed = delivery::pending::Changed::new();
                changed
                    .entry("account".into())
                    .or_default()
                    .insert("Email".into(), text.into_owned());
                let event = StateChange {
                    username: owner.username.clone(),
                    changed,
                };
                // Errors are fine (the store may refuse a record as too
                // large, say); panics are not.
                let _ = delivery::state_changed(&mut plugin, &mut env, &event);
                let _ = lifecycle::tick(&mut plugin, &mut env);
            }
            _ => {
                let _ = lifecycle::credential_revoked(&mut env, &owner.username, &text);
            }
        }
        reached.pushes += http.sent;
        assert_records_read_back(&mut store);
    }
    for key in repo::list_all(&mut store, repo::SUB_PREFIX).unwrap_or_default() {
        if let Ok(Some(entry)) = jmap_web_push_guest::ports::Store::get(&mut store, &key) {
            reached.subscriptions += 1;
            if Subscription::from_record(&entry.value).is_ok_and(|s| s.verification.verified) {
                reached.verified += 1;
            }
        }
    }
    reached
}

/// `/set` arguments that verify every stored subscription with its code.
fn verify_all(env: &mut Env<'_>) -> String {
    let mut update = json::Map::new();
    let ids = repo::list_all(env.store, repo::SUB_PREFIX).unwrap_or_default();
    for key in ids {
        let id = repo::sub_id_of_key(&key).unwrap_or(&key).to_owned();
        if let Ok(Some((sub, _))) = repo::load(env.store, &id) {
            let sub: Subscription = sub;
            let mut patch = json::Map::new();
            patch.insert(
                "verificationCode".into(),
                Value::String(sub.verification_code),
            );
            update.insert(id, Value::Object(patch));
        }
    }
    let mut args = json::Map::new();
    args.insert("update".into(), Value::Object(update));
    Value::Object(args).to_string()
}
