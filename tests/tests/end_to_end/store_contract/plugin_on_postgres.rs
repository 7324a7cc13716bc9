//! The plugin end to end on PostgreSQL, on one host and on two racing.

use super::*;

#[test]
fn plugin_on_postgres_creates_and_verifies_a_subscription() {
    let Some(url) = pg_url() else { return };
    let store = Arc::new(
        PostgresStore::open_with(PostgresConfig::new(url).with_schema(schema_name("e2e"))).unwrap(),
    );
    let gateway = Gateway::start();
    let plugin = plugin_with(store.clone(), test_config());
    let client = PushClient::new();
    let alice = caller("alice", Some("cred-1"));
    let id = verified_subscription(
        &plugin,
        &gateway,
        &client,
        &alice,
        "pg/alice",
        json!(["Email"]),
    );
    let record = store
        .get(&format!("sub/{id}"))
        .unwrap()
        .expect("subscription record in PostgreSQL");
    let record: serde_json::Value = serde_json::from_slice(&record.value).unwrap();
    assert_eq!(record["url"], gateway.url("pg/alice"));
    let got = call(
        &plugin,
        &alice,
        "PushSubscription/get",
        json!({"ids": [id.clone()]}),
    )
    .unwrap();
    assert_eq!(got["list"][0]["id"], id.as_str(), "{got}");
    assert_eq!(got["list"][0]["deviceClientId"], "device-pg/alice");
    store.drop_schema().unwrap();
}

#[test]
fn two_plugins_on_two_postgres_handles_race_one_device_client_id() {
    let Some(url) = pg_url() else { return };
    let schema = schema_name("dcid_race");
    let open = || {
        Arc::new(PostgresStore::open_with(PostgresConfig::new(&url).with_schema(&schema)).unwrap())
    };
    let (store_a, store_b) = (open(), open());
    let gateway = Gateway::start();
    let a = plugin_with(store_a.clone(), test_config());
    let b = plugin_with(store_b.clone(), test_config());
    let client = PushClient::new();
    let alice = caller("alice", None);
    for round in 0..5 {
        let dcid = format!("phone-{round}");
        let barrier = Barrier::new(2);
        let results: Vec<serde_json::Value> = std::thread::scope(|scope| {
            let handles: Vec<_> = [&a, &b]
                .into_iter()
                .enumerate()
                .map(|(i, plugin)| {
                    let (barrier, gateway, client, alice, dcid) =
                        (&barrier, &gateway, &client, &alice, &dcid);
                    scope.spawn(move || {
                        let args = json!({"create": {"c": {
                            "deviceClientId": dcid,
                            "url": gateway.url(&format!("race/{round}/{i}")),
                            "keys": client.keys_json(),
                        }}});
                        barrier.wait();
                        call(plugin, alice, "PushSubscription/set", args).expect("set")
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let created: Vec<&serde_json::Value> = results
            .iter()
            .filter_map(|r| r["created"].get("c"))
            .collect();
        let refused: Vec<&serde_json::Value> = results
            .iter()
            .filter_map(|r| r["notCreated"].get("c"))
            .collect();
        assert_eq!(
            (created.len(), refused.len()),
            (1, 1),
            "round {round}: exactly one create wins: {results:?}"
        );
        assert_eq!(refused[0]["type"], "invalidProperties", "{results:?}");
        // Both handles see the one subscription.
        for plugin in [&a, &b] {
            let got = call(plugin, &alice, "PushSubscription/get", json!({"ids": null})).unwrap();
            let n = got["list"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|s| s["deviceClientId"] == dcid.as_str())
                .count();
            assert_eq!(n, 1, "round {round}: {got}");
        }
    }
    store_a.drop_schema().unwrap();
}
