//! The PushSubscription object: create checks, property errors, records and
//! their JSON.

use super::*;
use serde_json::json;

const P256DH: &str =
    "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
const AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";
const NOW: u64 = 1_800_000_000;

/// A fixture written with `serde_json::json!`, as our JSON object.
fn obj(v: serde_json::Value) -> Map<String, Value> {
    crate::json::parse(&v.to_string())
        .unwrap()
        .as_object()
        .cloned()
        .unwrap()
}

#[test]
fn valid_create_with_defaults() {
    let c = Config::default();
    let n = check_create(
        &obj(json!({"deviceClientId": "d1", "url": "https://push.example.net/x"})),
        &c,
        NOW,
    )
    .unwrap();
    assert_eq!(n.expires, NOW + c.max_lifetime_secs);
    assert!(n.expires_changed && n.types_defaulted && n.keys_defaulted);
    assert_eq!(n.types, None);
}

#[test]
fn create_errors_name_the_property() {
    let c = Config::default();
    let cases: &[(serde_json::Value, &str)] = &[
        (json!({"url": "https://a.example/"}), "deviceClientId"),
        (json!({"deviceClientId": "d"}), "url"),
        (
            json!({"deviceClientId": "", "url": "https://a.example/"}),
            "deviceClientId",
        ),
        (
            json!({"deviceClientId": 5, "url": "https://a.example/"}),
            "deviceClientId",
        ),
        (
            json!({"deviceClientId": "d", "url": "http://a.example/"}),
            "url",
        ),
        (
            json!({"deviceClientId": "d", "url": "https://10.0.0.1/"}),
            "url",
        ),
        (
            json!({"deviceClientId": "d", "url": "https://a.example/", "id": "x"}),
            "id",
        ),
        (
            json!({"deviceClientId": "d", "url": "https://a.example/", "verificationCode": "x"}),
            "verificationCode",
        ),
        (
            json!({"deviceClientId": "d", "url": "https://a.example/", "expires": "2000-01-01T00:00:00Z"}),
            "expires",
        ),
        (
            json!({"deviceClientId": "d", "url": "https://a.example/", "expires": "tomorrow"}),
            "expires",
        ),
        (
            json!({"deviceClientId": "d", "url": "https://a.example/", "types": ["1Email"]}),
            "types",
        ),
        (
            json!({"deviceClientId": "d", "url": "https://a.example/", "types": ["Email Delivery"]}),
            "types",
        ),
        (
            json!({"deviceClientId": "d", "url": "https://a.example/", "types": [1]}),
            "types",
        ),
        (
            json!({"deviceClientId": "d", "url": "https://a.example/", "types": ["Email", "Email"]}),
            "types",
        ),
        (
            json!({"deviceClientId": "d", "url": "https://a.example/", "types": "Email"}),
            "types",
        ),
        (
            json!({"deviceClientId": "d", "url": "https://a.example/", "keys": {"p256dh": P256DH}}),
            "keys",
        ),
        (
            json!({"deviceClientId": "d", "url": "https://a.example/", "keys": {"p256dh": P256DH, "auth": AUTH, "x": 1}}),
            "keys",
        ),
        (
            json!({"deviceClientId": "d", "url": "https://a.example/", "keys": {"p256dh": "AAAA", "auth": AUTH}}),
            "keys",
        ),
        (
            json!({"deviceClientId": "d", "url": "https://a.example/", "bogus": 1}),
            "bogus",
        ),
    ];
    for (v, prop) in cases {
        let e = check_create(&obj(v.clone()), &c, NOW).unwrap_err();
        assert_eq!(e.len(), 1, "{v}: {e:?}");
        assert_eq!(e[0].property, *prop, "{v}");
    }
}

#[test]
fn every_invalid_property_of_a_create_is_named() {
    let c = Config::default();
    let e = check_create(
        &obj(
            json!({"url": "http://a.example/", "keys": {"p256dh": "AAAA", "auth": AUTH},
                    "types": "Email", "bogus": 1, "expires": "yesterday"}),
        ),
        &c,
        NOW,
    )
    .unwrap_err();
    let mut named: Vec<&str> = e.iter().map(|p| p.property.as_str()).collect();
    // The missing required property comes last.
    assert_eq!(named.pop(), Some("deviceClientId"));
    named.sort_unstable();
    assert_eq!(named, ["bogus", "expires", "keys", "types", "url"]);
    let set_error = crate::jmap::errors::SetError::from(e);
    assert_eq!(set_error.properties.len(), 6);
    for p in ["url", "keys", "types", "bogus", "expires", "deviceClientId"] {
        assert!(
            set_error.description.contains(p),
            "{}",
            set_error.description
        );
    }
}

#[test]
fn types_accept_unconfigured_names_and_the_empty_list() {
    for (types, want) in [
        (json!([]), Some(vec![])),
        (
            json!(["Email", "CalendarEvent", "Mailbox"]),
            Some(vec![
                "Email".into(),
                "CalendarEvent".into(),
                "Mailbox".into(),
            ]),
        ),
        (json!(["X_1"]), Some(vec!["X_1".to_string()])),
        (json!(null), None),
    ] {
        let got = check_types(&crate::json::parse(&types.to_string()).unwrap());
        assert_eq!(got, Ok(want), "{types}");
    }
    let long = "A".repeat(256);
    let too_many: Vec<String> = (0..=MAX_TYPES).map(|i| format!("T{i}")).collect();
    for bad in [
        json!(too_many),
        json!(["Email", "Email"]),
        json!([""]),
        json!(["_Email"]),
        json!(["E-mail"]),
        json!(["Émail"]),
        json!([long]),
        json!([null]),
        json!({"Email": true}),
    ] {
        let e = check_types(&crate::json::parse(&bad.to_string()).unwrap()).unwrap_err();
        assert_eq!(e.property, "types", "{bad}");
    }
    assert!(is_type_name(&"A".repeat(255)));
}

#[test]
fn expires_is_clamped_and_reported() {
    let c = Config::default();
    let far = utcdate::format(NOW + 365 * 86400);
    let n = check_create(
        &obj(json!({"deviceClientId": "d", "url": "https://a.example/", "expires": far, "keys": {"p256dh": P256DH, "auth": AUTH}, "types": ["Email"]})),
        &c,
        NOW,
    )
    .unwrap();
    assert_eq!(n.expires, NOW + c.max_lifetime_secs);
    assert!(n.expires_changed);
    let near = utcdate::format(NOW + 3600);
    let n = check_create(
        &obj(json!({"deviceClientId": "d", "url": "https://a.example/", "expires": near})),
        &c,
        NOW,
    )
    .unwrap();
    assert_eq!(n.expires, NOW + 3600);
    assert!(!n.expires_changed);
}

/// Records as the `serde` derive of earlier versions wrote them (printed
/// by that code, 394720c), with the subscriptions they hold.
const SERDE_RECORDS: [&str; 2] = [
    r#"{"id":"S1","owner":{"username":"u@example.com","credential_id":null},"device_client_id":"d\"1","url":"https://push.example.net/x","keys":{"p256dh":"P","auth":"A"},"verification_code":"c","verification":{"verified":true,"delivered":false,"attempts":2,"next_attempt_ms":123},"expires":1800000000,"types":["Email","Mailbox"],"created":1700000000,"vapid_key":null,"refusals":{"count":1,"since_ms":5},"last_push_ms":9}"#,
    r#"{"id":"S1","owner":{"username":"v","credential_id":"cred"},"device_client_id":"d\"1","url":"https://push.example.net/x","keys":null,"verification_code":"c","verification":{"verified":false,"delivered":false,"attempts":0,"next_attempt_ms":null},"expires":1800000000,"types":null,"created":1700000000,"vapid_key":"K","refusals":{"count":1,"since_ms":5},"last_push_ms":9}"#,
];

fn golden_subscriptions() -> [Subscription; 2] {
    let first = Subscription {
        id: "S1".into(),
        owner: Owner {
            username: "u@example.com".into(),
            credential_id: None,
        },
        device_client_id: "d\"1".into(),
        url: "https://push.example.net/x".into(),
        keys: Some(StoredKeys {
            p256dh: "P".into(),
            auth: "A".into(),
        }),
        verification_code: "c".into(),
        verification: VerificationState {
            verified: true,
            delivered: false,
            attempts: 2,
            next_attempt_ms: Some(123),
        },
        expires: 1_800_000_000,
        types: Some(vec!["Email".into(), "Mailbox".into()]),
        created: 1_700_000_000,
        vapid_key: None,
        refusals: Refusals {
            count: 1,
            since_ms: 5,
        },
        last_push_ms: 9,
    };
    let second = Subscription {
        owner: Owner {
            username: "v".into(),
            credential_id: Some("cred".into()),
        },
        keys: None,
        types: None,
        vapid_key: Some("K".into()),
        verification: VerificationState::default(),
        ..first.clone()
    };
    [first, second]
}

#[test]
fn records_are_byte_identical_to_the_serde_form() {
    for (sub, text) in golden_subscriptions().iter().zip(SERDE_RECORDS) {
        assert_eq!(sub.to_record(), text);
        assert_eq!(Subscription::from_record(text.as_bytes()).unwrap(), *sub);
    }
}

#[test]
fn records_of_older_versions_and_corrupt_records() {
    // Before `refusals` and `last_push_ms` existed: they default.
    let old = SERDE_RECORDS[0].replace(
        r#","refusals":{"count":1,"since_ms":5},"last_push_ms":9"#,
        "",
    );
    let sub = Subscription::from_record(old.as_bytes()).unwrap();
    assert_eq!((sub.refusals, sub.last_push_ms), (Refusals::default(), 0));
    // Unknown members (a newer version's) are ignored.
    let newer = SERDE_RECORDS[1].replacen('{', r#"{"future":[1,{"x":null}],"#, 1);
    assert_eq!(
        Subscription::from_record(newer.as_bytes()).unwrap(),
        golden_subscriptions()[1]
    );
    for (bad, want) in [
        (
            SERDE_RECORDS[0].replace(r#""expires":1800000000,"#, ""),
            "missing field `expires`",
        ),
        (
            SERDE_RECORDS[0].replace(r#""expires":1800000000"#, r#""expires":"soon""#),
            "invalid type: string \"soon\", expected u64",
        ),
        (
            SERDE_RECORDS[0].replace(r#""attempts":2"#, r#""attempts":4294967296"#),
            "invalid value: integer `4294967296`, expected u32",
        ),
        (
            SERDE_RECORDS[0].replace(r#""types":["Email","Mailbox"]"#, r#""types":["Email",1]"#),
            "invalid type: integer `1`, expected a string",
        ),
        (
            SERDE_RECORDS[0].replace(r#""keys":{"p256dh":"P","auth":"A"}"#, r#""keys":"PA""#),
            "invalid type: string \"PA\", expected struct StoredKeys",
        ),
        (
            "[]".to_string(),
            "invalid length 0, expected struct Subscription",
        ),
    ] {
        let e = Subscription::from_record(bad.as_bytes()).unwrap_err();
        assert!(e.to_string().starts_with(want), "{bad}: {e}");
        assert!(!e.is_syntax(), "{bad}: {e}");
    }
    assert!(
        Subscription::from_record(&SERDE_RECORDS[0].as_bytes()[..40])
            .unwrap_err()
            .is_syntax()
    );
}

#[test]
fn require_keys_rejects_null() {
    let c = Config {
        require_keys: true,
        ..Config::default()
    };
    assert_eq!(check_keys(&Value::Null, &c).unwrap_err().property, "keys");
}
