//! `POST /jmap/api` bodies: the JMAP request envelope (RFC 8620 §3.3) and
//! result references (§3.7).

use jmap_web_push_protocol::envelope::{self, MAX_CALLS};
use serde_json::Value;

/// The input as a request body, the way `serve` treats it: parsed against
/// the capabilities it supports, then each call's result references
/// resolved against the earlier calls' answers (each call answering with
/// its resolved arguments, as `Core/echo` does). Properties: a parsed
/// request uses only supported capabilities and at most
/// `maxCallsInRequest` calls; a refused one has a JMAP request-level error
/// type; a reference that does not resolve fails with
/// `invalidResultReference` or `invalidArguments` and a description.
pub fn request_envelope(data: &[u8]) {
    let supported = vec![
        envelope::CORE.to_owned(),
        "urn:ietf:params:jmap:webpush".to_owned(),
    ];
    let request = match envelope::parse(data, &supported) {
        Ok(r) => r,
        Err(e) => {
            assert!(
                ["notJSON", "notRequest", "unknownCapability", "limit"].contains(&e.kind),
                "request error of type {:?}",
                e.kind
            );
            assert!(!e.detail.is_empty());
            return;
        }
    };
    assert!(request.calls.len() <= MAX_CALLS);
    assert!(request.using.iter().all(|u| supported.contains(u)));
    let mut earlier: Vec<(String, Value, String)> = Vec::new();
    let mut budget = envelope::MAX_RESOLVED_VALUES;
    for (name, mut args, id) in request.calls {
        match envelope::resolve_references(&mut args, &earlier, &mut budget) {
            Ok(()) => earlier.push((name, Value::Object(args), id)),
            Err(e) => {
                assert!(
                    ["invalidResultReference", "invalidArguments"].contains(&e.kind),
                    "reference error of type {:?}",
                    e.kind
                );
                assert!(!e.description.is_empty());
                earlier.push(("error".to_owned(), serde_json::json!({"type": e.kind}), id));
            }
        }
    }
}
