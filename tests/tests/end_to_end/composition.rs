//! The plugin on standard WASI interfaces and inside other
//! components.
//!
//! - Every built component conforms to its target world (`wit/targets.wit`),
//!   checked like `wasm-tools component targets` does.
//! - The plugin composed with the three adapters imports only WASI; a plain
//!   wasmtime host with `wasmtime-wasi`, `wasmtime-wasi-http` and
//!   `wasmtime-wasi-keyvalue` (no project host code) runs a whole
//!   create / verify / state-change flow against a loopback push service.
//! - An example mail-server component that imports the plugin's exports is
//!   composed with the plugin and run by the host harness.

use std::path::PathBuf;
use std::sync::Arc;

use jmap_web_push_host::compose::{self, adapters};
use jmap_web_push_host::sandbox::builtin;
use jmap_web_push_host::store::memory::MemoryStore;
use jmap_web_push_host::store::KvStore;
use jmap_web_push_tests::*;
use serde_json::{json, Value};

use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};
use wasmtime_wasi_keyvalue::{WasiKeyValue, WasiKeyValueCtx, WasiKeyValueCtxBuilder};

fn wit_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../wit")
}

fn consumer() -> Vec<u8> {
    std::fs::read(CONSUMER_PATH).expect("consumer component built")
}

#[test]
fn every_built_component_conforms_to_its_target_world() {
    let consumer = consumer();
    let table: [(&str, &[u8], &str); 6] = [
        ("plugin (portable)", builtin::PORTABLE, "plugin-target"),
        ("plugin (wide)", builtin::WIDE, "plugin-target"),
        ("store adapter", adapters::STORE_KV, "store-adapter-target"),
        (
            "http-out adapter",
            adapters::HTTP_OUT,
            "http-out-adapter-target",
        ),
        ("host adapter", adapters::HOST_ENV, "host-adapter-target"),
        ("example mail server", &consumer, "consumer-target"),
    ];
    for (what, bytes, world) in table {
        compose::check_target(bytes, &wit_dir(), world).unwrap_or_else(|e| panic!("{what}: {e}"));
    }
}

#[test]
fn target_check_rejects_a_component_that_does_not_conform() {
    // The plugin imports `store`, which the store adapter's world does not
    // offer, and does not export `store`.
    let err = compose::check_target(builtin::PORTABLE, &wit_dir(), "store-adapter-target")
        .expect_err("the plugin is not a store adapter");
    assert!(
        matches!(err, compose::ComposeError::NotTargeting { .. }),
        "{err}"
    );
    let err = compose::check_target(adapters::STORE_KV, &wit_dir(), "no-such-world")
        .expect_err("unknown world");
    assert!(matches!(err, compose::ComposeError::Wit { .. }), "{err}");
    // The parser's own error is kept as the source.
    assert!(std::error::Error::source(&err).is_some(), "{err:?}");
}

#[test]
fn plugin_composed_with_adapters_imports_only_standard_interfaces() {
    let composed = compose::plugin_on_wasi(builtin::PORTABLE).expect("composes");
    let imports = compose::import_names(&composed).unwrap();
    assert!(!imports.is_empty());
    for name in &imports {
        assert!(
            name.starts_with("wasi:"),
            "non-WASI import {name} in {imports:?}"
        );
    }
    for needed in [
        "wasi:http/outgoing-handler",
        "wasi:keyvalue/store",
        "wasi:keyvalue/atomics",
    ] {
        assert!(
            imports.iter().any(|n| n.starts_with(needed)),
            "{needed} missing from {imports:?}"
        );
    }
    compose::check_target(&composed, &wit_dir(), "plugin-on-wasi").expect("targets plugin-on-wasi");
    // And the wide build composes the same way.
    let wide = compose::plugin_on_wasi(builtin::WIDE).expect("wide composes");
    compose::check_target(&wide, &wit_dir(), "plugin-on-wasi")
        .expect("wide targets plugin-on-wasi");
}

#[test]
fn composing_with_plugs_that_fit_nothing_is_an_error() {
    let err = compose::plug(
        ("jmap:store-kv", adapters::STORE_KV),
        &[("jmap:http-out", adapters::HTTP_OUT)],
    )
    .expect_err("the store adapter imports nothing the http adapter exports");
    assert!(
        matches!(err, compose::ComposeError::NothingPlugged),
        "{err}"
    );
    let err = compose::plug(("junk", b"not wasm"), &[]).expect_err("junk");
    assert!(
        matches!(err, compose::ComposeError::BadComponent { .. }),
        "{err}"
    );
    assert!(std::error::Error::source(&err).is_some(), "{err:?}");
}

// ---------------------------------------------------------------------------
// The generic host: wasmtime + wasmtime-wasi + wasmtime-wasi-http +
// wasmtime-wasi-keyvalue, nothing else.

mod generic {
    // The typed exports of the plugin world (`jmap`, `event-in`); the
    // composed component's imports are all WASI and are linked by the WASI
    // crates, so the world's own imports are never linked here.
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "plugin",
    });
}

struct GenericState {
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    kv: WasiKeyValueCtx,
}

impl WasiView for GenericState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for GenericState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: Default::default(),
        }
    }
}

/// Instantiates `component_bytes` in the generic host: wasmtime with
/// `wasmtime-wasi`, `wasmtime-wasi-http` and `wasmtime-wasi-keyvalue`
/// linked, `config` in `JMAP_WEB_PUSH_CONFIG`.
fn generic_raw_instance(
    component_bytes: &[u8],
    config: Value,
) -> (Store<GenericState>, wasmtime::component::Instance) {
    let engine = Engine::new(wasmtime::Config::new().wasm_component_model(true)).unwrap();
    let component = Component::new(&engine, component_bytes).expect("compiles");
    let mut linker: Linker<GenericState> = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).unwrap();
    wasmtime_wasi_http::p2::add_only_http_to_linker_sync(&mut linker).unwrap();
    wasmtime_wasi_keyvalue::add_to_linker(&mut linker, |s: &mut GenericState| {
        WasiKeyValue::new(&s.kv, &mut s.table)
    })
    .unwrap();
    let state = GenericState {
        table: ResourceTable::new(),
        wasi: WasiCtx::builder()
            .env("JMAP_WEB_PUSH_CONFIG", config.to_string())
            .inherit_stderr()
            .build(),
        http: WasiHttpCtx::new(),
        kv: WasiKeyValueCtxBuilder::new().build(),
    };
    let mut store = Store::new(&engine, state);
    let instance = linker
        .instantiate(&mut store, &component)
        .expect("instantiates with only WASI imports");
    (store, instance)
}

/// The composed plugin in the generic host, with its typed exports.
fn generic_instance(
    component_bytes: &[u8],
    config: Value,
) -> (Store<GenericState>, generic::Plugin) {
    let (mut store, instance) = generic_raw_instance(component_bytes, config);
    let plugin = generic::Plugin::new(&mut store, &instance).expect("exports jmap and event-in");
    (store, plugin)
}

/// Calls a JMAP method through the generic host's typed exports and parses
/// the response arguments.
fn jmap_call(
    plugin: &generic::Plugin,
    store: &mut Store<GenericState>,
    caller: &generic::jmap::web_push::types::Caller,
    method: &str,
    args: Value,
) -> Value {
    let r = plugin
        .jmap_web_push_jmap()
        .call_call(store, caller, method, &args.to_string(), &[])
        .unwrap()
        .unwrap_or_else(|e| panic!("{method}: {e:?}"));
    serde_json::from_str(&r.arguments).unwrap()
}

/// Delivers a one-type state change through the generic host's typed
/// exports.
fn deliver(
    plugin: &generic::Plugin,
    store: &mut Store<GenericState>,
    user: &str,
    (account, type_name, state): (&str, &str, &str),
) -> generic::exports::jmap::web_push::event_in::DeliveryReport {
    use generic::exports::jmap::web_push::event_in::{AccountChanges, StateChange, TypeState};
    let event = StateChange {
        username: user.into(),
        changed: vec![AccountChanges {
            account_id: account.into(),
            changes: vec![TypeState {
                type_name: type_name.into(),
                state: state.into(),
            }],
        }],
    };
    plugin
        .jmap_web_push_event_in()
        .call_state_changed(store, &event)
        .unwrap()
        .expect("state-changed answers")
}

#[test]
fn generic_wasi_host_runs_create_verify_and_delivery() {
    let composed = compose::plugin_on_wasi(builtin::PORTABLE).expect("composes");
    let gateway = Gateway::start();
    let client = PushClient::new();
    let (mut store, plugin) = generic_instance(
        &composed,
        json!({"insecure_test_mode": true, "vapid_contact": "mailto:ops@example.com"}),
    );
    let jmap = plugin.jmap_web_push_jmap();
    let alice = generic::jmap::web_push::types::Caller {
        username: "alice".into(),
        credential_id: Some("token-1".into()),
    };

    // The Session capability comes from the VAPID key the plugin generated
    // and kept in wasi:keyvalue.
    let session = jmap.call_session(&mut store).unwrap().expect("session");
    assert!(session
        .capabilities
        .iter()
        .any(|c| c.uri == "urn:ietf:params:jmap:webpush-vapid"));

    // Create: stored through the keyvalue adapter, verification sent
    // through the wasi:http adapter.
    let args = json!({"create": {"c1": {
        "deviceClientId": "phone",
        "url": gateway.url("push/alice"),
        "keys": client.keys_json(),
        "types": ["Email"],
    }}});
    let r = jmap_call(&plugin, &mut store, &alice, "PushSubscription/set", args);
    let id = r["created"]["c1"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{r}"))
        .to_string();
    let got = gateway.received_on("push/alice");
    assert_eq!(got.len(), 1, "one verification push");
    let push = &got[0];
    assert_eq!(push.header("content-encoding"), Some("aes128gcm"));
    assert_eq!(
        push.header("content-length"),
        Some(push.body.len().to_string().as_str()),
        "sent with Content-Length"
    );
    assert_eq!(push.header("transfer-encoding"), None, "never chunked");
    assert!(push
        .header("authorization")
        .unwrap()
        .starts_with("vapid t="));
    let verification = client.decrypt_json(&push.body).expect("decrypts");
    assert_eq!(verification["@type"], "PushVerification");
    assert_eq!(verification["pushSubscriptionId"], id);

    // Verify, read back.
    let args =
        json!({"update": {id.clone(): {"verificationCode": verification["verificationCode"]}}});
    let r = jmap_call(&plugin, &mut store, &alice, "PushSubscription/set", args);
    assert!(r["updated"].get(&id).is_some(), "{r}");
    let r = jmap_call(
        &plugin,
        &mut store,
        &alice,
        "PushSubscription/get",
        json!({"ids": null}),
    );
    assert_eq!(r["list"].as_array().map(Vec::len), Some(1), "{r}");
    assert_eq!(r["list"][0]["id"], id.as_str());

    // A state change is delivered, encrypted, to the verified subscription.
    let report = deliver(&plugin, &mut store, "alice", ("A1", "Email", "s-42"));
    assert_eq!(report.delivered, 1);
    let got = gateway.received_on("push/alice");
    assert_eq!(got.len(), 2);
    let change = client.decrypt_json(&got[1].body).expect("decrypts");
    assert_eq!(change["@type"], "StateChange");
    assert_eq!(change["changed"]["A1"]["Email"], "s-42");

    // A 410 from the push service destroys the subscription, through the
    // adapters too.
    gateway.set_default("push/alice", Answer::status(410));
    let report = deliver(&plugin, &mut store, "alice", ("A1", "Email", "s-43"));
    assert_eq!(report.destroyed, 1);
    let count = plugin
        .jmap_web_push_event_in()
        .call_subscription_count(&mut store, "alice")
        .unwrap()
        .expect("count");
    assert_eq!(count, 0);
}

#[test]
fn generic_wasi_host_delivers_a_pipelined_fan_out() {
    // More subscriptions than two pipeline pieces: `start-batch` and
    // `finish-batch` of the wasi:http adapter carry the fan-out.
    let composed = compose::plugin_on_wasi(builtin::PORTABLE).expect("composes");
    let gateway = Gateway::start();
    let client = PushClient::new();
    let (mut store, plugin) = generic_instance(
        &composed,
        json!({"insecure_test_mode": true, "max_creates_per_hour": 100,
               "max_subscriptions_per_owner": 100}),
    );
    let erin = generic::jmap::web_push::types::Caller {
        username: "erin".into(),
        credential_id: None,
    };
    let n = jmap_web_push_guest::delivery::pipeline_piece(0)
        + jmap_web_push_guest::delivery::pipeline_piece(1)
        + 3;
    for i in 0..n {
        let path = format!("fan/{i}");
        let args = json!({"create": {"c": {
            "deviceClientId": format!("d{i}"),
            "url": gateway.url(&path),
            "keys": client.keys_json(),
        }}});
        let r = jmap_call(&plugin, &mut store, &erin, "PushSubscription/set", args);
        let id = r["created"]["c"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("{r}"))
            .to_string();
        let v = client
            .decrypt_json(&gateway.received_on(&path)[0].body)
            .unwrap();
        let args = json!({"update": {id.clone(): {"verificationCode": v["verificationCode"]}}});
        let r = jmap_call(&plugin, &mut store, &erin, "PushSubscription/set", args);
        assert!(r["updated"].get(&id).is_some(), "{r}");
    }
    gateway.set_default("fan/17", Answer::status(404));
    let report = deliver(&plugin, &mut store, "erin", ("A", "Mailbox", "m1"));
    assert_eq!(
        (report.delivered as usize, report.destroyed),
        (n - 1, 1),
        "{report:?}"
    );
    for i in 0..n {
        let got = gateway.received_on(&format!("fan/{i}"));
        assert_eq!(got.len(), 2, "fan/{i}: verification + change");
        let change = client.decrypt_json(&got[1].body).unwrap();
        assert_eq!(change["changed"]["A"]["Mailbox"], "m1");
    }
}

#[test]
fn generic_wasi_host_maps_connection_failures_to_retries() {
    // A push URL nobody listens on: the wasi:http error becomes a
    // `connection` error, which the plugin treats as transient (the
    // verification is deferred, the create still succeeds).
    let composed = compose::plugin_on_wasi(builtin::PORTABLE).expect("composes");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let client = PushClient::new();
    let (mut store, plugin) = generic_instance(&composed, json!({"insecure_test_mode": true}));
    let bob = generic::jmap::web_push::types::Caller {
        username: "bob".into(),
        credential_id: None,
    };
    let args = json!({"create": {"c1": {
        "deviceClientId": "laptop",
        "url": format!("http://127.0.0.1:{port}/push/bob"),
        "keys": client.keys_json(),
    }}});
    let r = jmap_call(&plugin, &mut store, &bob, "PushSubscription/set", args);
    assert!(r["created"]["c1"]["id"].is_string(), "{r}");
    let tick = plugin
        .jmap_web_push_event_in()
        .call_tick(&mut store)
        .unwrap()
        .expect("tick");
    eprintln!("tick after a refused connection: {tick:?}");
    assert!(
        tick.next_run_in_ms.is_some(),
        "a retry is scheduled: {tick:?}"
    );
}

#[test]
fn bad_configuration_falls_back_to_safe_defaults() {
    // An unknown key: the host adapter logs and uses the defaults, which do
    // not allow http:// push URLs.
    let composed = compose::plugin_on_wasi(builtin::PORTABLE).expect("composes");
    let (mut store, plugin) = generic_instance(&composed, json!({"insecure_test_mod": true}));
    let carol = generic::jmap::web_push::types::Caller {
        username: "carol".into(),
        credential_id: None,
    };
    let args = json!({"create": {"c1": {
        "deviceClientId": "x",
        "url": "http://127.0.0.1:9/push",
        "keys": PushClient::new().keys_json(),
    }}});
    let r = jmap_call(&plugin, &mut store, &carol, "PushSubscription/set", args);
    assert_eq!(r["notCreated"]["c1"]["type"], "invalidProperties", "{r}");
}

// ---------------------------------------------------------------------------
// The other direction: a mail-server component that imports the plugin.

mod mail_server {
    wasmtime::component::bindgen!({
        path: "../wit",
        // Only the exports (`example-mail-server`) are used: the harness
        // links the composition's imports.
        world: "consumer",
    });
}

#[test]
fn mail_server_component_composed_with_the_plugin_runs_in_the_harness() {
    let composed = compose::plug(
        ("jmap:example-mail-server", &consumer()),
        &[("jmap:web-push-plugin", builtin::PORTABLE)],
    )
    .expect("composes");
    compose::check_target(&composed, &wit_dir(), "mail-server-with-plugin")
        .expect("imports only the plugin's host interfaces and WASI");

    let gateway = Gateway::start();
    let client = PushClient::new();
    let kv = Arc::new(MemoryStore::new());
    let host = plugin_with(kv.clone(), test_config());
    let mut embedded = host.instantiate_component(&composed).expect("instantiates");
    let instance = embedded.instance();
    let server = mail_server::Consumer::new(embedded.store(), &instance).unwrap();
    let steps = server.jmap_web_push_example_mail_server();
    let keys = client.keys_json();

    let id = embedded
        .with_deadline(|s, _| {
            steps.call_create_subscription(
                s,
                "dave",
                &gateway.url("push/dave"),
                keys["p256dh"].as_str().unwrap(),
                keys["auth"].as_str().unwrap(),
            )
        })
        .unwrap()
        .expect("created");
    // The plugin inside the composition wrote through the harness's store.
    assert!(kv.get(&format!("sub/{id}")).unwrap().is_some());

    let got = gateway.received_on("push/dave");
    assert_eq!(got.len(), 1);
    let code = client.decrypt_json(&got[0].body).unwrap()["verificationCode"]
        .as_str()
        .unwrap()
        .to_string();
    let wrong = embedded
        .with_deadline(|s, _| steps.call_verify(s, "dave", &id, "not-the-code"))
        .unwrap();
    assert!(wrong.is_err(), "a wrong code is refused");
    embedded
        .with_deadline(|s, _| steps.call_verify(s, "dave", &id, &code))
        .unwrap()
        .expect("verified");
    let object: Value = serde_json::from_str(
        &embedded
            .with_deadline(|s, _| steps.call_get_subscription(s, "dave", &id))
            .unwrap()
            .expect("get"),
    )
    .unwrap();
    assert_eq!(object["id"], id.as_str());
    assert_eq!(object["deviceClientId"], "consumer-device");

    let delivered = embedded
        .with_deadline(|s, _| steps.call_mail_arrived(s, "dave", "A9", "st-7"))
        .unwrap()
        .expect("event delivered");
    assert_eq!(delivered, 1);
    let got = gateway.received_on("push/dave");
    assert_eq!(got.len(), 2);
    let change = client.decrypt_json(&got[1].body).unwrap();
    assert_eq!(change["changed"]["A9"]["Email"], "st-7");

    // Another user's subscription is out of reach of the consumer's caller.
    let other = embedded
        .with_deadline(|s, _| steps.call_get_subscription(s, "eve", &id))
        .unwrap();
    assert!(other.is_err(), "eve does not see dave's subscription");
}

#[test]
fn mail_server_component_with_plugin_and_adapters_runs_on_a_generic_wasi_host() {
    // The mail-server component + plugin + adapters: only WASI imports, run
    // by the same plain wasmtime host as above, driven through the mail
    // server's own exports.
    let composed = compose::embed_on_wasi(&consumer(), builtin::PORTABLE).expect("composes");
    let imports = compose::import_names(&composed).unwrap();
    assert!(
        imports.iter().all(|n| n.starts_with("wasi:")),
        "non-WASI imports: {imports:?}"
    );
    let gateway = Gateway::start();
    let client = PushClient::new();
    let (mut store, instance) =
        generic_raw_instance(&composed, json!({"insecure_test_mode": true}));
    let server = mail_server::Consumer::new(&mut store, &instance).unwrap();
    let steps = server.jmap_web_push_example_mail_server();
    let keys = client.keys_json();
    let id = steps
        .call_create_subscription(
            &mut store,
            "frank",
            &gateway.url("push/frank"),
            keys["p256dh"].as_str().unwrap(),
            keys["auth"].as_str().unwrap(),
        )
        .unwrap()
        .expect("created");
    let got = gateway.received_on("push/frank");
    assert_eq!(got.len(), 1);
    let code = client.decrypt_json(&got[0].body).unwrap()["verificationCode"]
        .as_str()
        .unwrap()
        .to_string();
    steps
        .call_verify(&mut store, "frank", &id, &code)
        .unwrap()
        .expect("verified");
    let delivered = steps
        .call_mail_arrived(&mut store, "frank", "A1", "st-1")
        .unwrap()
        .expect("delivered");
    assert_eq!(delivered, 1);
    let change = client
        .decrypt_json(&gateway.received_on("push/frank")[1].body)
        .unwrap();
    assert_eq!(change["changed"]["A1"]["Email"], "st-1");
}
