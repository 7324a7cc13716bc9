//! The `POST /jmap/api` route: authentication, the request limits of
//! [`super::limits`], the API envelope of [`super::api`], and the plugin's
//! methods run on the blocking pool.

use super::login::{authenticate, peer_of};
use super::*;

/// A request-level error as RFC 7807 problem JSON (HTTP 400).
pub(super) fn request_error(e: &api::RequestError) -> Response {
    let mut r = (StatusCode::BAD_REQUEST, e.to_json().to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    r
}

/// The compatibility `state` of a `PushSubscription/get` response
/// (`server.compat_push_subscription_get_state`): base64url of the first 12
/// octets of SHA-256 over the JSON text of the returned `list`.
pub(super) fn push_get_state(arguments: &Value) -> String {
    let list = arguments.get("list").unwrap_or(&Value::Null).to_string();
    let digest = Sha256::digest(list.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..12])
}

pub(super) async fn api_handler(
    State(state): State<Arc<AppState>>,
    request: axum::extract::Request,
) -> Response {
    let current = state.current();
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let who = match authenticate(&state, &current, headers, peer_of(&parts.extensions)).await {
        Ok(who) => who,
        Err(failure) => {
            // The body is not read for a stranger: a connection that still
            // carries some of it cannot be reused.
            let has_body =
                declared.is_some_and(|n| n > 0) || headers.contains_key(header::TRANSFER_ENCODING);
            let r = failure.response();
            return if has_body {
                close_connection(r, parts.version)
            } else {
                r
            };
        }
    };
    state.metrics.api_requests.inc();
    let limit = current.settings.server.max_size_request;
    let body = match read_body(body, limit, declared).await {
        Ok(b) => b,
        Err(BodyError::TooLarge { drained }) => {
            let r = request_error(&api::RequestError::limit(
                "maxSizeRequest",
                format!(
                    "the request body is larger than maxSizeRequest ({limit} octets){}",
                    declared.map_or(String::new(), |n| format!(": {n} octets"))
                ),
            ));
            return if drained {
                r
            } else {
                close_connection(r, parts.version)
            };
        }
        Err(BodyError::Read(e)) => {
            return close_connection(
                problem(
                    StatusCode::BAD_REQUEST,
                    "about:blank",
                    format!("the request body could not be read: {e}"),
                ),
                parts.version,
            )
        }
    };
    let max = current.settings.server.max_concurrent_requests;
    let Some(_slot) = ApiSlot::try_acquire(&state, &who.username, max) else {
        return request_error(&api::RequestError::limit(
            "maxConcurrentRequests",
            format!(
                "{} already has {max} API requests in flight (maxConcurrentRequests); retry when one has been answered",
                who.username
            ),
        ));
    };
    let (caps, session_state) = match plugin_session(&state, &current).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let supported = supported_capabilities(&current, &caps);
    let request = match api::parse(&body, &supported) {
        Ok(r) => r,
        Err(e) => return request_error(&e),
    };
    let caller = Caller {
        username: who.username.clone(),
        credential_id: Some(who.credential_id.clone()),
    };
    let echo_created = request.created_ids.is_some();
    let mut created_ids = request.created_ids.unwrap_or_default();
    let mut responses: Vec<(String, Value, String)> = Vec::new();
    // One budget for every reference of the request (RFC 8620 §3.7).
    let mut reference_budget = api::MAX_RESOLVED_VALUES;
    for (name, mut args, call_id) in request.calls {
        if let Err(e) = api::resolve_references(&mut args, &responses, &mut reference_budget) {
            responses.push((
                "error".into(),
                json!({"type": e.kind, "description": e.description}),
                call_id,
            ));
            continue;
        }
        match name.as_str() {
            "Core/echo" => responses.push((name, Value::Object(args), call_id)),
            "PushSubscription/get" | "PushSubscription/set" => {
                let plugin = current.plugin.clone();
                let (c, n, a, ids) = (caller.clone(), name.clone(), Value::Object(args).to_string(), created_ids.clone());
                let result = tokio::task::spawn_blocking(move || plugin.call(&c, &n, &a, &ids)).await;
                if name == "PushSubscription/set" {
                    // A create may have left a verification retry due soon.
                    state.tick_wake.notify_one();
                }
                match result {
                    Ok(Ok(Ok(r))) => {
                        created_ids = r.created_ids;
                        let mut v = serde_json::from_str(&r.arguments).unwrap_or(Value::Null);
                        if name == "PushSubscription/get" && current.settings.server.compat_push_subscription_get_state {
                            let st = push_get_state(&v);
                            if let Value::Object(m) = &mut v {
                                m.entry("state").or_insert(Value::String(st));
                            }
                        }
                        responses.push((name, v, call_id));
                    }
                    Ok(Ok(Err(e))) => responses.push((
                        "error".into(),
                        json!({"type": e.error_type, "description": e.description}),
                        call_id,
                    )),
                    Ok(Err(e)) => {
                        state.metrics.traps.inc();
                        tracing::error!(error = %e, "plugin call failed");
                        responses.push(("error".into(), json!({"type": "serverFail", "description": e.to_string()}), call_id));
                    }
                    Err(e) => responses.push(("error".into(), json!({"type": "serverFail", "description": e.to_string()}), call_id)),
                }
            }
            other => responses.push((
                "error".into(),
                json!({"type": "unknownMethod", "description": format!("{other} is not supported by this server")}),
                call_id,
            )),
        }
    }
    let mut out = json!({
        "methodResponses": responses.into_iter().map(|(n, v, id)| json!([n, v, id])).collect::<Vec<_>>(),
        "sessionState": session_state,
    });
    if echo_created {
        out["createdIds"] = Value::Object(
            created_ids
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect(),
        );
    }
    json_response(out)
}
