//! The JMAP Session resource (`GET /.well-known/jmap`, RFC 8620 §2): the
//! capabilities the server and the plugin advertise, the user's account
//! and the Session state.

use super::login::{authenticate, peer_of};
use super::*;

pub(super) fn supported_capabilities(
    current: &Current,
    plugin_caps: &[(String, Value)],
) -> Vec<String> {
    let mut v = vec![api::CORE.to_string()];
    v.extend(current.settings.server.extra_capabilities.iter().cloned());
    v.extend(plugin_caps.iter().map(|(u, _)| u.clone()));
    v
}

pub(super) async fn plugin_session(
    state: &AppState,
    current: &Current,
) -> Result<(Vec<(String, Value)>, String), Response> {
    let plugin = current.plugin.clone();
    match tokio::task::spawn_blocking(move || plugin.session()).await {
        Ok(Ok(Ok(info))) => Ok((
            info.capabilities
                .into_iter()
                .map(|c| (c.uri, serde_json::from_str(&c.value).unwrap_or(Value::Null)))
                .collect(),
            info.state,
        )),
        Ok(Ok(Err(e))) => Err(problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "urn:ietf:params:jmap:error:serverUnavailable",
            format!("{e:?}"),
        )),
        Ok(Err(e)) => Err(trap(state, e)),
        Err(e) => Err(problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            "about:blank",
            e.to_string(),
        )),
    }
}

pub(super) async fn session(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    extensions: axum::http::Extensions,
) -> Response {
    let current = state.current();
    let who = match authenticate(&state, &current, &headers, peer_of(&extensions)).await {
        Ok(who) => who,
        Err(failure) => return failure.response(),
    };
    let (caps, plugin_state) = match plugin_session(&state, &current).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    // The limits the plugin applies (it brings out-of-range values into
    // range), not the raw configuration.
    let p = &current.settings.plugin.clone().normalized();
    let mut capabilities = Map::new();
    capabilities.insert(
        api::CORE.into(),
        json!({
            "maxSizeUpload": 0,
            "maxConcurrentUpload": 1,
            "maxSizeRequest": current.settings.server.max_size_request,
            "maxConcurrentRequests": current.settings.server.max_concurrent_requests,
            "maxCallsInRequest": api::MAX_CALLS,
            "maxObjectsInGet": p.max_objects_in_get,
            "maxObjectsInSet": p.max_objects_in_set,
            "collationAlgorithms": ["i;ascii-casemap", "i;octet"],
        }),
    );
    let mut account_caps = Map::new();
    for uri in &current.settings.server.extra_capabilities {
        capabilities.insert(uri.clone(), json!({}));
        account_caps.insert(uri.clone(), api::placeholder_account_capability(uri));
    }
    for (uri, value) in &caps {
        capabilities.insert(uri.clone(), value.clone());
    }
    let account_id = account_id(&who.username);
    let mut primary = Map::new();
    for uri in &current.settings.server.extra_capabilities {
        primary.insert(uri.clone(), json!(account_id));
    }
    let base = &current.base_url;
    json_response(json!({
        "capabilities": capabilities,
        "accounts": {account_id.clone(): {
            "name": who.username,
            "isPersonal": true,
            "isReadOnly": false,
            "accountCapabilities": account_caps,
        }},
        "primaryAccounts": primary,
        "username": who.username,
        "apiUrl": format!("{base}/jmap/api"),
        "downloadUrl": format!("{base}/jmap/download/{{accountId}}/{{blobId}}/{{name}}?accept={{type}}"),
        "uploadUrl": format!("{base}/jmap/upload/{{accountId}}/"),
        "eventSourceUrl": format!("{base}/jmap/eventsource/?types={{types}}&closeafter={{closeafter}}&ping={{ping}}"),
        "state": plugin_state,
    }))
}
