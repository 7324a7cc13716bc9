//! Delivery of StateChange pushes through the real component —
//! types filter, the push-service answer table (B6), durable retries across
//! restarts, several hosts on one store, headers.

mod answers;
mod fan_out;
mod headers_and_interval;
mod retries_and_hosts;
mod who_receives;

use std::sync::Arc;
use std::time::{Duration, Instant};

use jmap_web_push_host::store::embedded::EmbeddedStore;
use jmap_web_push_host::store::memory::MemoryStore;
use jmap_web_push_host::store::KvStore;
use jmap_web_push_host::{DeliveryReport, PushPlugin};
use jmap_web_push_tests::*;
use serde_json::{json, Value};

fn setup() -> (Gateway, Arc<MemoryStore>, PushPlugin) {
    let gateway = Gateway::start();
    let store = Arc::new(MemoryStore::new());
    let plugin = plugin_with(store.clone(), test_config());
    (gateway, store, plugin)
}

fn fire(plugin: &PushPlugin, user: &str, changes: &[(&str, &str, &str)]) -> DeliveryReport {
    plugin
        .state_changed(&state_change(user, changes))
        .expect("no trap")
        .expect("state change accepted")
}

/// StateChange pushes received on `path`, decrypted.
fn changes_on(gateway: &Gateway, client: &PushClient, path: &str) -> Vec<Value> {
    gateway
        .received_on(path)
        .iter()
        .map(|r| client.decrypt_json(&r.body).expect("decrypts"))
        .filter(|v| v["@type"] == "StateChange")
        .collect()
}
