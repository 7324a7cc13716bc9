//! Owners, concurrency and limits: isolation between users and credentials,
//! races between hosts, quota, rate, request size, malformed arguments.

use super::*;

/// What `who` learns about `id` from get, update and destroy, with the id
/// itself replaced by a placeholder so that answers can be compared.
pub(super) fn probe(f: &Fixture, who: &Caller, id: &str) -> Vec<String> {
    let mask = |v: Value| v.to_string().replace(id, "<ID>");
    vec![
        mask(get(&f.plugin, who, json!({"ids": [id]}))),
        mask(get(
            &f.plugin,
            who,
            json!({"ids": [id], "properties": ["id"]}),
        )),
        mask(set(
            &f.plugin,
            who,
            json!({"update": {id: {"types": ["Email"]}}}),
        )),
        mask(set(
            &f.plugin,
            who,
            json!({"update": {id: {"verificationCode": "x"}}}),
        )),
        mask(set(&f.plugin, who, json!({"destroy": [id]}))),
    ]
}

pub(super) fn assert_isolated(f: &Fixture, intruder: &Caller) {
    let id = create_id(f, &alice(), "p1", json!({"types": ["Mailbox"]}));
    let before = record(&f.store, &id).unwrap();
    let for_real = probe(f, intruder, &id);
    let for_missing = probe(f, intruder, &random_id());
    assert_eq!(for_real, for_missing, "foreign id indistinguishable");
    assert!(
        for_real[0].contains("\"notFound\":[\"<ID>\"]"),
        "{:?}",
        for_real
    );
    assert_eq!(get_list(f, intruder, Value::Null).len(), 0);
    assert_eq!(record(&f.store, &id).unwrap(), before, "untouched");
    assert_eq!(
        get_one(f, &alice(), &id).unwrap()["types"],
        json!(["Mailbox"])
    );
}

#[test]
fn owner_isolation_other_user() {
    let f = fixture();
    assert_isolated(&f, &bob());
}

#[test]
fn owner_isolation_same_user_other_credential() {
    let f = fixture();
    assert_isolated(&f, &caller("alice", Some("cred-other")));
    assert_isolated(&fixture(), &caller("alice", None));
}

#[test]
fn concurrent_duplicate_device_client_id_from_two_hosts() {
    const ROUNDS: usize = 100;
    let gateway = Gateway::start();
    let (store, p1, p2) = two_hosts();
    let who = alice();
    for round in 0..ROUNDS {
        let dcid = format!("phone-{round}");
        let answers = race_set(&p1, &p2, |tag| {
            json!({"create": {"c": {
                "deviceClientId": dcid,
                "url": gateway.url(&format!("r{round}{tag}")),
            }}})
        });
        let winners: Vec<&Value> = answers
            .iter()
            .filter(|r| r["created"]["c"]["id"].is_string())
            .collect();
        assert_eq!(
            winners.len(),
            1,
            "round {round}: exactly one wins: {answers:?}"
        );
        let loser = answers
            .iter()
            .find(|r| !r["created"]["c"]["id"].is_string())
            .unwrap();
        assert_invalid(loser, "notCreated", "c", "deviceClientId");
    }
    let list = get_list_of(&p1, &who);
    assert_eq!(list.len(), ROUNDS, "one per deviceClientId");
    let subs = dump(&store)
        .into_iter()
        .filter(|(k, _)| k.starts_with("sub/"))
        .count();
    assert_eq!(subs, ROUNDS, "no orphan records");
}

#[test]
fn over_quota() {
    let f = fixture_with(PluginConfig {
        max_subscriptions_per_owner: 2,
        ..test_config()
    });
    create_id(&f, &alice(), "p1", json!({}));
    create_id(&f, &alice(), "p2", json!({}));
    let before = f.gateway.received().len();
    let r = create(&f, &alice(), "p3", json!({}));
    let (kind, _) = set_error(&r, "notCreated", "c");
    assert_eq!(kind, "overQuota", "{r}");
    assert_eq!(f.gateway.received().len(), before, "nothing sent");
    // Per owner: bob is not affected.
    create_id(&f, &bob(), "p4", json!({}));
    // Room again after a destroy.
    let first = get_list(&f, &alice(), Value::Null)[0]["id"].clone();
    set(&f.plugin, &alice(), json!({"destroy": [first]}));
    create_id(&f, &alice(), "p3", json!({}));
}

#[test]
fn over_quota_holds_when_two_hosts_race() {
    let f = fixture_with(PluginConfig {
        max_subscriptions_per_owner: 3,
        max_creates_per_hour: 1000,
        ..test_config()
    });
    let other = jmap_web_push_tests::plugin_with(
        f.store.clone(),
        PluginConfig {
            max_subscriptions_per_owner: 3,
            max_creates_per_hour: 1000,
            ..test_config()
        },
    );
    std::thread::scope(|s| {
        for (t, plugin) in [(0, &f.plugin), (1, &other)] {
            let f = &f;
            s.spawn(move || {
                for i in 0..6 {
                    let obj = create_obj(f, &format!("q{t}-{i}"), json!({}));
                    let _ = set(plugin, &alice(), json!({"create": {"c": obj}}));
                }
            });
        }
    });
    let n = get_list(&f, &alice(), Value::Null).len();
    assert!(n <= 3, "quota exceeded: {n} subscriptions");
    assert!(n >= 1);
}

#[test]
fn rate_limit() {
    let f = fixture_with(PluginConfig {
        max_creates_per_hour: 2,
        ..test_config()
    });
    let a = create_id(&f, &alice(), "p1", json!({}));
    create_id(&f, &alice(), "p2", json!({}));
    set(&f.plugin, &alice(), json!({"destroy": [a]}));
    let before = f.gateway.received().len();
    let r = create(&f, &alice(), "p3", json!({}));
    let (kind, _) = set_error(&r, "notCreated", "c");
    assert_eq!(kind, "rateLimit", "destroying does not refund: {r}");
    assert_eq!(f.gateway.received().len(), before, "nothing sent");
    create_id(&f, &bob(), "p4", json!({}));
}

#[test]
fn request_too_large_for_get() {
    let f = fixture_with(PluginConfig {
        max_objects_in_get: 3,
        ..test_config()
    });
    let ids: Vec<String> = (0..4).map(|_| random_id()).collect();
    let e = method_error(call(
        &f.plugin,
        &alice(),
        "PushSubscription/get",
        json!({ "ids": ids }),
    ));
    assert_eq!(e.error_type, "requestTooLarge");
    assert!(e.description.is_some());
    let r = get(&f.plugin, &alice(), json!({"ids": &ids[..3]}));
    assert_eq!(r["notFound"].as_array().unwrap().len(), 3);
}

#[test]
fn request_too_large_for_set() {
    let f = fixture_with(PluginConfig {
        max_objects_in_set: 2,
        ..test_config()
    });
    let e = method_error(call(
        &f.plugin,
        &alice(),
        "PushSubscription/set",
        json!({
            "create": {"c1": create_obj(&f, "p1", json!({})), "c2": create_obj(&f, "p2", json!({}))},
            "destroy": [random_id()],
        }),
    ));
    assert_eq!(e.error_type, "requestTooLarge");
    assert!(f.gateway.received().is_empty(), "nothing sent");
    assert!(
        dump(&f.store).iter().all(|(k, _)| !k.starts_with("sub/")),
        "nothing stored"
    );
}

#[test]
fn forbidden_when_url_or_keys_in_get_properties() {
    let f = fixture();
    create_id(&f, &alice(), "p1", json!({}));
    for props in [
        json!(["url"]),
        json!(["keys"]),
        json!(["id", "types", "url", "keys"]),
    ] {
        let e = method_error(call(
            &f.plugin,
            &alice(),
            "PushSubscription/get",
            json!({"ids": null, "properties": props}),
        ));
        assert_eq!(e.error_type, "forbidden", "{props}");
        assert!(e.description.is_some());
    }
    let e = method_error(call(
        &f.plugin,
        &alice(),
        "PushSubscription/get",
        json!({"properties": ["color"]}),
    ));
    assert_eq!(e.error_type, "invalidArguments");
}

#[test]
fn invalid_arguments_for_malformed_arguments() {
    let f = fixture();
    let id = create_id(&f, &alice(), "p1", json!({}));
    let cases = [
        ("PushSubscription/set", json!({"create": [1]})),
        ("PushSubscription/set", json!({"create": {"c": 5}})),
        ("PushSubscription/set", json!({"create": "x"})),
        ("PushSubscription/set", json!({"update": [id.clone()]})),
        (
            "PushSubscription/set",
            json!({"update": {id.clone(): null}}),
        ),
        ("PushSubscription/set", json!({"destroy": id.clone()})),
        ("PushSubscription/set", json!({"destroy": [1]})),
        ("PushSubscription/set", json!({"ifInState": "abc"})),
        ("PushSubscription/get", json!({"ids": id.clone()})),
        ("PushSubscription/get", json!({"ids": [1]})),
        ("PushSubscription/get", json!({"properties": "types"})),
        ("PushSubscription/get", json!({"properties": [true]})),
        ("PushSubscription/get", json!([])),
        ("PushSubscription/set", json!("create")),
        ("PushSubscription/set", json!(null)),
    ];
    for (method, args) in cases {
        let e = method_error(call(&f.plugin, &alice(), method, args.clone()));
        assert_eq!(e.error_type, "invalidArguments", "{method} {args}");
        assert!(e.description.as_deref().is_some_and(|d| !d.is_empty()));
    }
    for raw in ["", "{", "{\"ids\": [}", "\u{0}"] {
        let e = plugin_call_raw(&f.plugin, &alice(), "PushSubscription/get", raw);
        assert_eq!(e.error_type, "invalidArguments", "{raw:?}");
    }
    // I-JSON (RFC 7493 §2.3, RFC 8620 §3.1): a member name given twice is
    // refused, naming it, at any depth, rather than one value winning.
    for raw in [
        r#"{"ids": null, "ids": []}"#,
        r#"{"create": {"c": {"url": "https://a.example/1", "url": "https://b.example/2"}}}"#,
    ] {
        let method = if raw.contains("create") {
            "PushSubscription/set"
        } else {
            "PushSubscription/get"
        };
        let e = plugin_call_raw(&f.plugin, &alice(), method, raw);
        assert_eq!(e.error_type, "invalidArguments", "{raw}");
        let d = e.description.unwrap_or_default();
        assert!(d.contains("given twice"), "{raw}: {d}");
    }
    // Nesting: 127 levels parse inside the sandbox (no stack overflow on
    // the component's 256 KiB stack; the unknown argument is ignored), 200
    // are refused with a description.
    let nested = |depth: usize| format!(r#"{{"x": {}{}}}"#, "[".repeat(depth), "]".repeat(depth));
    let deep_ok = f
        .plugin
        .call(&alice(), "PushSubscription/get", &nested(126), &[])
        .expect("no trap");
    assert!(deep_ok.is_ok(), "{deep_ok:?}");
    let e = plugin_call_raw(&f.plugin, &alice(), "PushSubscription/get", &nested(200));
    assert_eq!(e.error_type, "invalidArguments");
    assert!(e
        .description
        .unwrap_or_default()
        .contains("recursion limit"));
    // Nothing was changed by any of them.
    assert!(get_one(&f, &alice(), &id).is_some());
    assert_eq!(f.gateway.received().len(), 1);
}

pub(super) fn plugin_call_raw(
    plugin: &PushPlugin,
    who: &Caller,
    method: &str,
    raw: &str,
) -> MethodError {
    match plugin.call(who, method, raw, &[]).expect("no trap") {
        Ok(r) => panic!("expected an error, got {}", r.arguments),
        Err(e) => e,
    }
}

#[test]
fn unknown_method() {
    let f = fixture();
    for m in [
        "PushSubscription/query",
        "PushSubscription/changes",
        "Email/get",
        "pushsubscription/get",
        "",
    ] {
        let e = method_error(call(&f.plugin, &alice(), m, json!({})));
        assert_eq!(e.error_type, "unknownMethod", "{m}");
    }
}
