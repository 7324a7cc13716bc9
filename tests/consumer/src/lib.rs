//! Test component: a mail server written as a component. It imports the
//! plugin's `jmap` and `event-in` interfaces (world `consumer` in
//! `wit/adapters.wit`), is composed with the plugin into one component, and
//! is run by the host harness. Each exported step builds the JMAP arguments
//! a mail server would send and checks the plugin's answers.
//!
//! The JSON shaping is plain Rust, tested natively; the glue is wasm32 only.

#![warn(missing_docs)]

use serde_json::{json, Value};

/// `PushSubscription/set` arguments creating one subscription with the
/// creation id `c1`.
pub fn create_args(url: &str, p256dh: &str, auth: &str) -> String {
    json!({
        "create": { "c1": {
            "deviceClientId": "consumer-device",
            "url": url,
            "keys": { "p256dh": p256dh, "auth": auth },
            "types": ["Email", "Mailbox"],
        }}
    })
    .to_string()
}

/// `PushSubscription/set` arguments updating the verification code.
pub fn verify_args(id: &str, code: &str) -> String {
    json!({ "update": { id: { "verificationCode": code } } }).to_string()
}

/// `PushSubscription/get` arguments for one id.
pub fn get_args(id: &str) -> String {
    json!({ "ids": [id] }).to_string()
}

/// The id of creation `c1` from a `/set` response, or why there is none.
pub fn created_id(response: &str) -> Result<String, String> {
    let v: Value = serde_json::from_str(response).map_err(|e| e.to_string())?;
    if let Some(err) = v.pointer("/notCreated/c1") {
        return Err(format!("not created: {err}"));
    }
    v.pointer("/created/c1/id")
        .and_then(Value::as_str)
        .map(String::from)
        .ok_or_else(|| format!("no created id in {response}"))
}

/// Checks that a `/set` response updated `id`.
pub fn updated(response: &str, id: &str) -> Result<(), String> {
    let v: Value = serde_json::from_str(response).map_err(|e| e.to_string())?;
    match v.get("updated").and_then(|u| u.get(id)) {
        Some(_) => Ok(()),
        None => Err(format!("not updated: {response}")),
    }
}

/// The one object of a `/get` response, as JSON.
pub fn single_object(response: &str) -> Result<String, String> {
    let v: Value = serde_json::from_str(response).map_err(|e| e.to_string())?;
    match v.get("list").and_then(Value::as_array).map(Vec::as_slice) {
        Some([one]) => Ok(one.to_string()),
        _ => Err(format!("expected one object in {response}")),
    }
}

#[cfg(target_arch = "wasm32")]
mod bindings {
    use super::*;

    wit_bindgen::generate!({
        world: "consumer",
        path: "../../wit",
    });

    use exports::jmap::web_push::example_mail_server::Guest;
    use jmap::web_push::event_in::{self, AccountChanges, StateChange, TypeState};
    use jmap::web_push::jmap::{self as plugin_jmap, MethodError};
    use jmap::web_push::types::Caller;

    struct Component;

    export!(Component);

    fn caller(username: &str) -> Caller {
        Caller {
            username: username.into(),
            credential_id: Some("consumer-credential".into()),
        }
    }

    fn call(username: &str, method: &str, args: String) -> Result<String, String> {
        plugin_jmap::call(&caller(username), method, &args, &[])
            .map(|r| r.arguments)
            .map_err(
                |MethodError {
                     error_type,
                     description,
                 }| {
                    format!(
                        "{method}: {error_type}: {}",
                        description.unwrap_or_default()
                    )
                },
            )
    }

    impl Guest for Component {
        fn create_subscription(
            username: String,
            url: String,
            p256dh: String,
            auth: String,
        ) -> Result<String, String> {
            let response = call(
                &username,
                "PushSubscription/set",
                create_args(&url, &p256dh, &auth),
            )?;
            created_id(&response)
        }

        fn verify(username: String, id: String, code: String) -> Result<(), String> {
            let response = call(&username, "PushSubscription/set", verify_args(&id, &code))?;
            updated(&response, &id)
        }

        fn get_subscription(username: String, id: String) -> Result<String, String> {
            let response = call(&username, "PushSubscription/get", get_args(&id))?;
            single_object(&response)
        }

        fn mail_arrived(
            username: String,
            account_id: String,
            email_state: String,
        ) -> Result<u32, String> {
            let event = StateChange {
                username,
                changed: vec![AccountChanges {
                    account_id,
                    changes: vec![TypeState {
                        type_name: "Email".into(),
                        state: email_state,
                    }],
                }],
            };
            event_in::state_changed(&event)
                .map(|report| report.delivered)
                .map_err(|e| format!("state-changed: {e:?}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_response_gives_the_id_or_the_error() {
        assert_eq!(
            created_id(r#"{"created":{"c1":{"id":"abc"}}}"#).unwrap(),
            "abc"
        );
        let err = created_id(r#"{"notCreated":{"c1":{"type":"invalidProperties"}}}"#);
        assert!(err.unwrap_err().contains("invalidProperties"));
        assert!(created_id("{}").is_err());
        assert!(created_id("not json").is_err());
    }

    #[test]
    fn arguments_are_the_jmap_shapes() {
        let v: Value = serde_json::from_str(&create_args("https://p/x", "K", "A")).unwrap();
        assert_eq!(v["create"]["c1"]["keys"]["auth"], "A");
        let v: Value = serde_json::from_str(&verify_args("id1", "code")).unwrap();
        assert_eq!(v["update"]["id1"]["verificationCode"], "code");
        assert!(updated(r#"{"updated":{"id1":null}}"#, "id1").is_ok());
        assert!(updated(r#"{"notUpdated":{"id1":{}}}"#, "id1").is_err());
        assert_eq!(
            single_object(r#"{"list":[{"id":"x"}]}"#).unwrap(),
            r#"{"id":"x"}"#
        );
        assert!(single_object(r#"{"list":[]}"#).is_err());
    }
}
