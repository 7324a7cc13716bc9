//! The real component, loaded by the host harness, stores a
//! subscription through `store` and sends a verification POST through
//! `http-out` to a loopback server.

use std::sync::Arc;

use jmap_web_push_host::store::memory::MemoryStore;
use jmap_web_push_host::store::KvStore;
use jmap_web_push_tests::*;
use serde_json::json;

#[test]
fn create_stores_and_posts_verification() {
    let gateway = Gateway::start();
    let store = Arc::new(MemoryStore::new());
    let plugin = plugin_with(store.clone(), test_config());
    let client = PushClient::new();
    let alice = caller("alice", Some("cred-1"));

    let response = call(
        &plugin,
        &alice,
        "PushSubscription/set",
        json!({"create": {"c1": {
            "deviceClientId": "phone",
            "url": gateway.url("push/alice-phone"),
            "keys": client.keys_json(),
            "types": ["Email", "Mailbox"],
        }}}),
    )
    .expect("set succeeds");
    let id = response["created"]["c1"]["id"]
        .as_str()
        .expect("created id")
        .to_string();

    // Read back from the store: the record is there, with the URL.
    let record = store
        .get(&format!("sub/{id}"))
        .unwrap()
        .expect("subscription record stored");
    let record: serde_json::Value = serde_json::from_slice(&record.value).unwrap();
    assert_eq!(record["url"], gateway.url("push/alice-phone"));
    assert_eq!(record["device_client_id"], "phone");

    // The loopback server got one POST with the right headers and a body
    // that decrypts to the PushVerification.
    let got = gateway.received_on("push/alice-phone");
    assert_eq!(got.len(), 1);
    let push = &got[0];
    assert_eq!(push.header("content-encoding"), Some("aes128gcm"));
    assert_eq!(
        push.header("content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(push.header("ttl"), Some("86400"));
    let (claims, _k) = vapid_claims(push.header("authorization").unwrap()).unwrap();
    assert_eq!(
        claims["aud"],
        format!("http://127.0.0.1:{}", gateway.port())
    );
    assert_eq!(claims["sub"], "mailto:push-tests@example.com");
    let message = client.decrypt_json(&push.body).unwrap();
    assert_eq!(message["@type"], "PushVerification");
    assert_eq!(message["pushSubscriptionId"], id.as_str());
    let code = message["verificationCode"].as_str().unwrap();
    assert_eq!(record["verification_code"], code);
}
