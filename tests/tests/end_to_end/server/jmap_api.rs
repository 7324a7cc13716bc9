//! The JMAP side of `serve`: the Session, authentication and its
//! throttling, request-level errors, method calls with result references,
//! account ids, the compat setting, and the `jmap-client` crate as a real
//! client.

use super::*;

#[test]
fn session_requires_auth_and_describes_the_server() {
    let s = start(false);
    let r = s
        .http
        .get(format!("{}/.well-known/jmap", s.base()))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let challenges: Vec<_> = r
        .headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert!(
        challenges.iter().any(|c| c.starts_with("Basic")),
        "{challenges:?}"
    );
    assert!(
        challenges.iter().any(|c| c.starts_with("Bearer")),
        "{challenges:?}"
    );
    let bad = s
        .http
        .get(format!("{}/.well-known/jmap", s.base()))
        .header("Authorization", "Bearer wrong")
        .send()
        .unwrap();
    assert_eq!(bad.status().as_u16(), 401);

    for auth in [basic(), bearer()] {
        let session = s.session_as(&auth);
        assert_eq!(session["apiUrl"], format!("{}/jmap/api", s.base()));
        assert_eq!(session["username"], "alice@example.com");
        assert!(session["capabilities"]["urn:ietf:params:jmap:core"].is_object());
        let key = session["capabilities"]["urn:ietf:params:jmap:webpush-vapid"]
            ["applicationServerKey"]
            .as_str()
            .unwrap();
        assert_eq!(
            jmap_web_push_guest::crypto::b64url_decode(key)
                .unwrap()
                .len(),
            65
        );
        assert!(session["state"].as_str().is_some_and(|s| !s.is_empty()));
        assert!(session["capabilities"]
            .get("urn:ietf:params:jmap:mail")
            .is_none());
    }
}

#[test]
fn failed_logins_are_throttled_per_address_and_per_user_name_with_retry_after() {
    let s = TestServer::start_configured(|settings| {
        settings.server.max_auth_failures = 3;
        settings.server.auth_failure_window_secs = 60;
        // Addresses come from X-Forwarded-For, as behind a reverse proxy.
        settings.server.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    });
    let basic_for = |user: &str, password: &str| {
        use base64::Engine as _;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
    };
    let session = |auth: &str, from: &str| {
        let r = s
            .http
            .get(format!("{}/.well-known/jmap", s.base()))
            .header("Authorization", auth)
            .header("X-Forwarded-For", from)
            .send()
            .unwrap();
        let retry = r
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
        (r.status().as_u16(), retry)
    };
    let wrong = basic_for(TestServer::USER, "wrong");
    // A password verified before the attack keeps working through it.
    assert_eq!(session(&basic(), "198.51.100.1").0, 200);
    for _ in 0..3 {
        assert_eq!(session(&wrong, "198.51.100.1").0, 401);
    }
    let (status, retry) = session(&wrong, "198.51.100.1");
    assert_eq!(status, 429, "the fourth try from the address");
    assert!(retry.is_some_and(|r| (1..=60).contains(&r)), "{retry:?}");
    assert_eq!(session(&basic(), "198.51.100.1").0, 200, "verified before");
    assert_eq!(session(&bearer(), "198.51.100.1").0, 200, "a valid token");
    // The user name is blocked from everywhere for new passwords...
    // (The scheme in lower case: the same password, a header not seen
    // before.)
    let fresh = basic().replacen("Basic", "basic", 1);
    assert_eq!(session(&fresh, "203.0.113.5").0, 429);
    // ...other names and addresses are not.
    assert_eq!(session(&basic_for("mallory", "x"), "203.0.113.6").0, 401);
    // A wrong bearer token counts for its address too.
    for _ in 0..3 {
        assert_eq!(session("Bearer nope", "203.0.113.7").0, 401);
    }
    assert_eq!(session("Bearer nope", "203.0.113.7").0, 429);
    // Every client behind the proxy counts apart: another address's first
    // wrong password is a plain 401.
    assert_eq!(session(&basic_for("bob", "x"), "203.0.113.8").0, 401);
}

#[test]
fn request_level_errors_are_problem_json() {
    let s = start(false);
    let cases: &[(&str, &str)] = &[
        ("not json", "urn:ietf:params:jmap:error:notJSON"),
        // I-JSON: a member name given twice is refused, not resolved.
        (
            r#"{"using":["urn:ietf:params:jmap:core"],"methodCalls":[["Core/echo",{"a":1,"a":2},"0"]]}"#,
            "urn:ietf:params:jmap:error:notJSON",
        ),
        ("[1,2]", "urn:ietf:params:jmap:error:notRequest"),
        (
            r#"{"using":["urn:ietf:params:jmap:core"]}"#,
            "urn:ietf:params:jmap:error:notRequest",
        ),
        (
            r#"{"using":["urn:ietf:params:jmap:mail"],"methodCalls":[]}"#,
            "urn:ietf:params:jmap:error:unknownCapability",
        ),
        (
            r#"{"using":["urn:ietf:params:jmap:core"],"methodCalls":[["x",{},"0",1]]}"#,
            "urn:ietf:params:jmap:error:notRequest",
        ),
    ];
    for (body, kind) in cases {
        let (status, v, ct) = s.api(Some(&basic()), body);
        assert_eq!(status, 400, "{body}");
        assert_eq!(v["type"], *kind, "{body}");
        assert_eq!(ct.as_deref(), Some("application/problem+json"));
        assert!(v["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }
    let (status, _, _) = s.api(None, r#"{"using":[],"methodCalls":[]}"#);
    assert_eq!(status, 401);
}

#[test]
fn api_methods_references_and_created_ids() {
    let s = start(false);
    let gateway = Gateway::start();
    let client = PushClient::new();
    let body = json!({
        "using": ["urn:ietf:params:jmap:core"],
        "methodCalls": [
            ["PushSubscription/set", {"create": {"k1": {
                "deviceClientId": "dev1", "url": gateway.url("p1"), "keys": client.keys_json()}}}, "0"],
            ["PushSubscription/get", {"ids": null, "properties": ["id"]}, "1b"],
            ["PushSubscription/get", {"#ids": {"resultOf": "1b", "name": "PushSubscription/get", "path": "/list/*/id"}, "properties": ["deviceClientId"]}, "1"],
            ["Mailbox/get", {}, "2"],
            ["Core/echo", {"hello": true}, "3"],
            ["PushSubscription/get", {"#ids": {"resultOf": "9", "name": "PushSubscription/set", "path": "/x"}}, "4"],
        ],
        "createdIds": {},
    });
    let (status, v, _) = s.api(Some(&basic()), &body.to_string());
    assert_eq!(status, 200, "{v}");
    let mut r = v["methodResponses"].as_array().unwrap().clone();
    let id = r[0][1]["created"]["k1"]["id"].as_str().unwrap().to_string();
    assert_eq!(r[1][1]["list"][0]["id"], id.as_str());
    r.remove(1);
    let id = id.as_str();
    assert_eq!(r[1][0], "PushSubscription/get");
    assert_eq!(r[1][1]["list"][0]["id"], id);
    assert_eq!(r[1][1]["list"][0]["deviceClientId"], "dev1");
    assert_eq!(
        r[2],
        json!(["error", {"type": "unknownMethod", "description": "Mailbox/get is not supported by this server"}, "2"])
    );
    assert_eq!(r[3], json!(["Core/echo", {"hello": true}, "3"]));
    assert_eq!(r[4][1]["type"], "invalidResultReference");
    assert_eq!(v["createdIds"]["k1"], id);
    assert!(v["sessionState"].as_str().is_some());
    // The verification went out; a different credential of the same user
    // does not see the subscription (subscriptions are tied to credentials).
    assert_eq!(gateway.received_on("p1").len(), 1);
    let (_, v, _) = s.api(
        Some(&bearer()),
        &json!({"using": ["urn:ietf:params:jmap:core"], "methodCalls": [["PushSubscription/get", {"ids": [id]}, "0"]]}).to_string(),
    );
    assert_eq!(v["methodResponses"][0][1]["notFound"][0], id);
}

#[test]
fn jmap_client_crate_against_serve() {
    use jmap_client::client::Client;
    use jmap_client::push_subscription::Keys;
    use jmap_client::DataType;

    // jmap-client 0.4 requires `state` in PushSubscription/get responses.
    let s = TestServer::start_configured(|settings| {
        settings.server.extra_capabilities = jmap_client_capabilities();
        settings.server.compat_push_subscription_get_state = true;
    });
    let gateway = Gateway::start();
    let push = PushClient::new();
    let base = s.base();
    let keys = push.keys_json();
    let url = gateway.url("jc");
    let received = || gateway.received_on("jc");
    let client =
        s.rt.block_on(
            Client::new()
                .credentials(("alice@example.com", PASSWORD))
                .follow_redirects(["127.0.0.1"])
                .connect(&base),
        )
        .expect("jmap-client connects");
    let keys = Keys::new(
        &jmap_web_push_guest::crypto::b64url_decode(keys["p256dh"].as_str().unwrap()).unwrap(),
        &jmap_web_push_guest::crypto::b64url_decode(keys["auth"].as_str().unwrap()).unwrap(),
    );
    let created =
        s.rt.block_on(client.push_subscription_create("jmap-client-device", &url, Some(keys)))
            .expect("push_subscription_create");
    let id = created.id().unwrap().to_string();
    // The account jmap-client picked from the Session is a JMAP Id.
    assert!(
        is_jmap_id(client.default_account_id()),
        "{}",
        client.default_account_id()
    );
    let get = |id: &str| {
        let mut request = client.build();
        request.get_push_subscription().ids([id]);
        let mut response =
            s.rt.block_on(request.send_get_push_subscription())
                .expect("PushSubscription/get through jmap-client");
        assert!(response.not_found().is_empty());
        assert!(!response.state().is_empty());
        let mut list = response.take_list();
        assert_eq!(list.len(), 1);
        list.remove(0)
    };
    let read = get(&id);
    assert_eq!(read.id(), Some(id.as_str()));
    assert_eq!(read.device_client_id(), Some("jmap-client-device"));
    assert_eq!(read.verification_code(), None, "not verified yet");
    let verification = push.decrypt_json(&received()[0].body).unwrap();
    assert_eq!(verification["pushSubscriptionId"], id.as_str());
    let code = verification["verificationCode"].as_str().unwrap();
    s.rt.block_on(client.push_subscription_verify(&id, code))
        .expect("push_subscription_verify");
    assert_eq!(get(&id).verification_code(), Some(code));
    s.rt.block_on(client.push_subscription_update_types(&id, Some([DataType::Email])))
        .expect("push_subscription_update_types");
    let (status, v) = s.event(
        Some(&format!("Bearer {ADMIN}")),
        &json!({"type": "StateChange", "username": "alice@example.com",
                "changed": {"a1": {"Email": "e7", "Mailbox": "m7"}}})
        .to_string(),
    );
    assert_eq!(
        (status, v["results"][0]["delivered"].clone()),
        (200, json!(1))
    );
    let got = push.decrypt_json(&received().last().unwrap().body).unwrap();
    assert_eq!(
        got,
        json!({"@type": "StateChange", "changed": {"a1": {"Email": "e7"}}})
    );
    s.rt.block_on(client.push_subscription_destroy(&id))
        .expect("push_subscription_destroy");
    drop(client);
}

#[test]
fn account_ids_are_jmap_ids_and_stable() {
    let account_of = |s: &TestServer, auth: String| -> String {
        let session = s.session_as(&auth);
        let accounts = session["accounts"].as_object().unwrap();
        assert_eq!(accounts.len(), 1, "{session}");
        let (id, account) = accounts.iter().next().unwrap();
        assert!(is_jmap_id(id), "{id:?} is not a JMAP Id");
        assert!(
            !id.starts_with(|c: char| c.is_ascii_digit() || c == '-'),
            "{id}"
        );
        assert_eq!(account["name"], TestServer::USER);
        let primary = session["primaryAccounts"].as_object().unwrap();
        assert_eq!(primary.len(), 10, "{session}");
        assert!(primary.values().all(|v| v == id.as_str()), "{session}");
        id.clone()
    };
    let s = start(true);
    let id = account_of(&s, basic());
    assert_eq!(account_of(&s, basic()), id, "two fetches");
    assert_eq!(account_of(&s, bearer()), id, "both credentials");
    s.shutdown();
    let restarted = start(true);
    assert_eq!(account_of(&restarted, basic()), id, "after a restart");
    assert_eq!(id, jmap_web_push::server::account_id(TestServer::USER));
}

#[test]
fn push_subscription_get_has_state_only_with_the_compat_setting() {
    let gateway = Gateway::start();
    let client = PushClient::new();
    for compat in [false, true] {
        let s = TestServer::start_configured(|settings| {
            settings.server.compat_push_subscription_get_state = compat
        });
        let path = format!("state-{compat}");
        let created = s.call(
            "PushSubscription/set",
            json!({"create": {"k": {"deviceClientId": "d", "url": gateway.url(&path), "keys": client.keys_json()}}}),
        );
        let id = created["created"]["k"]["id"].as_str().unwrap().to_string();
        assert!(created.get("state").is_none(), "/set: {created}");
        let got = s.call("PushSubscription/get", json!({"ids": null}));
        assert_eq!(got["list"][0]["id"], id.as_str());
        assert!(got.get("accountId").is_none(), "{got}");
        if !compat {
            assert!(
                got.get("state").is_none(),
                "RFC 8620 §7.2.1: no state: {got}"
            );
            continue;
        }
        let state = got["state"]
            .as_str()
            .unwrap_or_else(|| panic!("{got}"))
            .to_string();
        assert!(is_jmap_id(&state), "{state}");
        let again = s.call("PushSubscription/get", json!({"ids": null}));
        assert_eq!(again["state"], state.as_str(), "same list, same state");
        s.call(
            "PushSubscription/set",
            json!({"update": {id.clone(): {"types": ["Email"]}}}),
        );
        let changed = s.call("PushSubscription/get", json!({"ids": null}));
        assert_ne!(changed["state"], state.as_str(), "changed list, new state");
        // A method error stays a plain error.
        let forbidden = s.call("PushSubscription/get", json!({"properties": ["url"]}));
        assert!(forbidden.get("state").is_none(), "{forbidden}");
    }
}
