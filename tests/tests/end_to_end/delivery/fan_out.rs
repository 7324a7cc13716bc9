//! Large fan-outs: sharding over instances and pipelined answers mapped to
//! their subscriptions.

use super::*;

/// A plugin on a fresh memory store that allows 100 subscriptions per
/// owner and fans large events out over `shards` instances.
fn fan_out_plugin(shards: u32) -> jmap_web_push_host::PushPlugin {
    jmap_web_push_host::PushPlugin::builder()
        .config(jmap_web_push_host::PluginConfig {
            max_subscriptions_per_owner: 100,
            max_creates_per_hour: 100,
            ..test_config()
        })
        .store(Arc::new(MemoryStore::new()))
        .fanout_shards(shards)
        .sandbox(jmap_web_push_host::SandboxOptions {
            aot_cache_dir: Some(cache_dir()),
            ..Default::default()
        })
        .build()
        .unwrap()
}

#[test]
fn a_large_fan_out_is_sharded_and_each_subscription_gets_exactly_one_push() {
    let gateway = Gateway::start();
    let plugin = fan_out_plugin(3);
    let client = PushClient::new();
    let alice = caller("alice", None);
    let n = jmap_web_push_host::SHARD_THRESHOLD as usize + 8;
    for i in 0..n {
        verified_subscription(
            &plugin,
            &gateway,
            &client,
            &alice,
            &format!("s{i}"),
            Value::Null,
        );
    }
    gateway.script("s0", [Answer::status(410)]);
    let r = fire(&plugin, "alice", &[("a1", "Email", "e1")]);
    assert_eq!((r.delivered as usize, r.destroyed), (n - 1, 1), "{r:?}");
    let destroyed = r.details.iter().find(|d| d.outcome == "destroyed").unwrap();
    assert_eq!(destroyed.count, 1);
    for i in 0..n {
        assert_eq!(
            changes_on(&gateway, &client, &format!("s{i}")).len(),
            1,
            "s{i}"
        );
    }
}

#[test]
fn a_pipelined_fan_out_maps_every_answer_to_its_subscription() {
    // One instance, more subscriptions than two pipeline pieces: the pushes
    // leave in three `start-batch` pieces through the real HTTP client, and
    // each answer (201, 410, 503) lands on the right subscription. Every
    // subscription has its own receiver keys, so a body encrypted for the
    // wrong one (the key agreements of a piece are batched) fails to
    // decrypt.
    let gateway = Gateway::start();
    let plugin = fan_out_plugin(1);
    let alice = caller("alice", None);
    let n = jmap_web_push_guest::delivery::pipeline_piece(0)
        + jmap_web_push_guest::delivery::pipeline_piece(1)
        + 7;
    let clients: Vec<PushClient> = (0..n).map(|_| PushClient::new()).collect();
    for (i, client) in clients.iter().enumerate() {
        verified_subscription(
            &plugin,
            &gateway,
            client,
            &alice,
            &format!("p{i}"),
            Value::Null,
        );
    }
    gateway.script("p5", [Answer::status(410)]);
    gateway.script("p20", [Answer::status(503)]);
    gateway.script("p36", [Answer::status(410)]);
    let r = fire(&plugin, "alice", &[("a1", "Email", "e1")]);
    assert_eq!(
        (r.delivered as usize, r.destroyed, r.deferred),
        (n - 3, 2, 1),
        "{r:?}"
    );
    for (i, client) in clients.iter().enumerate() {
        let got = changes_on(&gateway, client, &format!("p{i}"));
        assert_eq!(got.len(), 1, "p{i}");
        assert_eq!(got[0]["changed"]["a1"]["Email"], "e1");
    }
    let list = call(
        &plugin,
        &alice,
        "PushSubscription/get",
        serde_json::json!({"ids": null}),
    )
    .unwrap();
    assert_eq!(
        list["list"].as_array().map(Vec::len),
        Some(n - 2),
        "two destroyed"
    );
}
