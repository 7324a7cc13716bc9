//! The JMAP request envelope (RFC 8620 §3): request-level errors, method
//! dispatch, result references, createdIds, sessionState.

use serde_json::{json, Map, Value};

/// Capability URIs.
pub const CORE: &str = "urn:ietf:params:jmap:core";
/// RFC 8621 mail (only ever advertised through `server.extra_capabilities`).
pub const MAIL: &str = "urn:ietf:params:jmap:mail";
/// RFC 8621 submission (likewise).
pub const SUBMISSION: &str = "urn:ietf:params:jmap:submission";

/// The account capability object advertised for an extra capability this
/// server has no methods for: the required members with "nothing
/// supported" values, so that strict clients can parse the Session.
pub fn placeholder_account_capability(uri: &str) -> Value {
    match uri {
        MAIL => {
            json!({"maxMailboxesPerEmail": null, "maxMailboxDepth": null, "maxSizeMailboxName": 255,
                       "maxSizeAttachmentsPerEmail": 0, "emailQuerySortOptions": [], "mayCreateTopLevelMailbox": false})
        }
        SUBMISSION => json!({"maxDelayedSend": 0, "submissionExtensions": {}}),
        _ => json!({}),
    }
}

/// A request-level error (RFC 8620 §3.6.1), sent as RFC 7807 problem JSON
/// with status 400.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestError {
    /// `unknownCapability`, `notJSON`, `notRequest`, `limit`.
    pub kind: &'static str,
    /// Details.
    pub detail: String,
    /// For `limit`: the name of the limit applied (`maxSizeRequest`,
    /// `maxConcurrentRequests`, `maxCallsInRequest`), which RFC 8620
    /// §3.6.1 requires as the problem's `limit` member.
    pub limit: Option<&'static str>,
}

impl RequestError {
    fn new(kind: &'static str, detail: impl Into<String>) -> Self {
        RequestError {
            kind,
            detail: detail.into(),
            limit: None,
        }
    }

    /// A `urn:ietf:params:jmap:error:limit` error for the limit `name`.
    pub fn limit(name: &'static str, detail: impl Into<String>) -> Self {
        RequestError {
            kind: "limit",
            detail: detail.into(),
            limit: Some(name),
        }
    }

    /// The problem JSON.
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "type": format!("urn:ietf:params:jmap:error:{}", self.kind),
            "status": 400,
            "detail": self.detail,
        });
        if let Some(limit) = self.limit {
            v["limit"] = json!(limit);
        }
        v
    }
}

/// A parsed request.
#[derive(Debug)]
pub struct Request {
    /// `using`
    pub using: Vec<String>,
    /// (name, arguments, call id)
    pub calls: Vec<(String, Map<String, Value>, String)>,
    /// `createdIds`, if the client sent it.
    pub created_ids: Option<Vec<(String, String)>>,
}

/// Most method calls in one request (`maxCallsInRequest`).
pub const MAX_CALLS: usize = 64;

/// Parses and checks a request body against the supported capabilities.
pub fn parse(body: &[u8], supported: &[String]) -> Result<Request, RequestError> {
    // I-JSON (RFC 8620 §3.6.1): a member name given twice is refused, here
    // as in the plugin, by the same parser.
    let v: Value = jmap_web_push_guest::json::parse_slice(body)
        .map_err(|e| RequestError::new("notJSON", format!("the body is not I-JSON: {e}")))?;
    let Value::Object(obj) = v else {
        return Err(RequestError::new(
            "notRequest",
            "the body is not a JSON object",
        ));
    };
    let using = match obj.get("using") {
        Some(Value::Array(a)) => a
            .iter()
            .map(|u| u.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| RequestError::new("notRequest", "using must be an array of strings"))?,
        _ => {
            return Err(RequestError::new(
                "notRequest",
                "using (an array of capability URIs) is required",
            ))
        }
    };
    for u in &using {
        if !supported.iter().any(|s| s == u) {
            return Err(RequestError::new(
                "unknownCapability",
                format!(
                    "this server does not support {u}; it supports {}",
                    supported.join(", ")
                ),
            ));
        }
    }
    let Some(Value::Array(raw_calls)) = obj.get("methodCalls") else {
        return Err(RequestError::new(
            "notRequest",
            "methodCalls (an array) is required",
        ));
    };
    if raw_calls.len() > MAX_CALLS {
        return Err(RequestError::limit(
            "maxCallsInRequest",
            format!(
                "{} method calls; maxCallsInRequest is {MAX_CALLS}",
                raw_calls.len()
            ),
        ));
    }
    let mut calls = Vec::with_capacity(raw_calls.len());
    for (i, c) in raw_calls.iter().enumerate() {
        match c.as_array().map(Vec::as_slice) {
            Some([Value::String(name), Value::Object(args), Value::String(id)]) => {
                calls.push((name.clone(), args.clone(), id.clone()))
            }
            _ => {
                return Err(RequestError::new(
                    "notRequest",
                    format!("methodCalls[{i}] must be [name, arguments object, call id]"),
                ))
            }
        }
    }
    let created_ids = match obj.get("createdIds") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(
            m.iter()
                .map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| RequestError::new("notRequest", "createdIds values must be ids"))?,
        ),
        Some(_) => {
            return Err(RequestError::new(
                "notRequest",
                "createdIds must be an object",
            ))
        }
    };
    Ok(Request {
        using,
        calls,
        created_ids,
    })
}

/// Why a result reference did not resolve (becomes the method error
/// `invalidResultReference`, or `invalidArguments` for a duplicate key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefError {
    /// The method error type.
    pub kind: &'static str,
    /// Details.
    pub description: String,
}

/// Resolves `#name` arguments (RFC 8620 §3.7) against earlier responses
/// `(name, arguments, call id)`. Every value a reference resolves to is
/// counted against `budget` (one budget per request, starting at
/// [`MAX_RESOLVED_VALUES`]) before it is copied: a request MUST NOT be able
/// to multiply itself through references (thousands of references to one
/// large answer, or `Core/echo` chains doubling an answer per call).
pub fn resolve_references(
    args: &mut Map<String, Value>,
    earlier: &[(String, Value, String)],
    budget: &mut usize,
) -> Result<(), RefError> {
    let refs: Vec<String> = args
        .keys()
        .filter(|k| k.starts_with('#'))
        .cloned()
        .collect();
    for key in refs {
        let plain = key[1..].to_string();
        if args.contains_key(&plain) {
            return Err(RefError {
                kind: "invalidArguments",
                description: format!("both {plain} and {key} are given"),
            });
        }
        let r = args.remove(&key).unwrap_or(Value::Null);
        let bad = |d: String| RefError {
            kind: "invalidResultReference",
            description: d,
        };
        let (Some(result_of), Some(name), Some(path)) = (
            r.get("resultOf").and_then(Value::as_str),
            r.get("name").and_then(Value::as_str),
            r.get("path").and_then(Value::as_str),
        ) else {
            return Err(bad(format!("{key} must be {{resultOf, name, path}}")));
        };
        let Some((_, response, _)) = earlier
            .iter()
            .find(|(n, _, id)| id == result_of && n == name)
        else {
            return Err(bad(format!(
                "no earlier {name} response with call id {result_of}"
            )));
        };
        let found =
            find(response, path).ok_or_else(|| bad(format!("path {path} does not resolve")))?;
        let values = found.count(*budget).ok_or_else(|| {
            bad(format!(
                "{key}: the request's references resolve to more than {MAX_RESOLVED_VALUES} JSON values"
            ))
        })?;
        *budget -= values;
        args.insert(plain, found.to_value());
    }
    Ok(())
}

/// Most JSON values (every array, object, string, number, ... counted)
/// the result references of one request may resolve to, together.
pub const MAX_RESOLVED_VALUES: usize = 100_000;

/// What a path points to, borrowed: one value, or the values a `*`
/// collected (flattened as RFC 8620 §3.7 says).
enum Found<'a> {
    One(&'a Value),
    Many(Vec<&'a Value>),
}

impl Found<'_> {
    /// How many JSON values a copy would hold, if at most `max`.
    fn count(&self, max: usize) -> Option<usize> {
        let mut stack: Vec<&Value> = match self {
            Found::One(v) => vec![*v],
            Found::Many(items) => items.clone(),
        };
        // The array `Many` becomes.
        let mut seen = usize::from(matches!(self, Found::Many(_)));
        while let Some(v) = stack.pop() {
            seen += 1;
            if seen > max {
                return None;
            }
            match v {
                Value::Array(items) => stack.extend(items),
                Value::Object(members) => stack.extend(members.values()),
                _ => {}
            }
        }
        Some(seen)
    }

    fn to_value(&self) -> Value {
        match self {
            Found::One(v) => (*v).clone(),
            Found::Many(items) => Value::Array(items.iter().map(|v| (*v).clone()).collect()),
        }
    }
}

/// Evaluates a JSON Pointer with the RFC 8620 `*` extension, without
/// copying.
fn find<'a>(value: &'a Value, path: &str) -> Option<Found<'a>> {
    if path.is_empty() {
        return Some(Found::One(value));
    }
    let rest = path.strip_prefix('/')?;
    let (token, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let token = token.replace("~1", "/").replace("~0", "~");
    match value {
        Value::Array(items) if token == "*" => {
            let mut out = Vec::new();
            for item in items {
                match find(item, tail)? {
                    Found::One(Value::Array(inner)) => out.extend(inner),
                    Found::One(v) => out.push(v),
                    Found::Many(inner) => out.extend(inner),
                }
            }
            Some(Found::Many(out))
        }
        Value::Array(items) => items.get(array_index(&token)?).and_then(|v| find(v, tail)),
        Value::Object(m) => m.get(&token).and_then(|v| find(v, tail)),
        _ => None,
    }
}

/// An array index token of RFC 6901 §4: `0`, or digits without a leading
/// zero (no sign, no `01`).
fn array_index(token: &str) -> Option<usize> {
    let digits = !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit());
    if !digits || (token.len() > 1 && token.starts_with('0')) {
        return None;
    }
    token.parse().ok()
}

/// Evaluates a JSON Pointer with the RFC 8620 `*` extension.
pub fn evaluate_path(value: &Value, path: &str) -> Option<Value> {
    find(value, path).map(|f| f.to_value())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_errors() {
        let sup = vec![CORE.to_string()];
        assert_eq!(parse(b"nope", &sup).unwrap_err().kind, "notJSON");
        // I-JSON: a member name given twice, at the top or inside a
        // method's arguments, is refused rather than resolved silently.
        let dup_top = parse(br#"{"using":[],"using":[],"methodCalls":[]}"#, &sup).unwrap_err();
        assert_eq!(dup_top.kind, "notJSON");
        assert!(dup_top.detail.contains("using"), "{}", dup_top.detail);
        let dup_args = br#"{"using":[],"methodCalls":[["a",{"ids":null,"ids":[]},"c"]]}"#;
        assert_eq!(parse(dup_args, &sup).unwrap_err().kind, "notJSON");
        assert_eq!(parse(b"[]", &sup).unwrap_err().kind, "notRequest");
        assert_eq!(
            parse(br#"{"methodCalls":[]}"#, &sup).unwrap_err().kind,
            "notRequest"
        );
        assert_eq!(
            parse(br#"{"using":["urn:x"],"methodCalls":[]}"#, &sup)
                .unwrap_err()
                .kind,
            "unknownCapability"
        );
        assert_eq!(
            parse(br#"{"using":[],"methodCalls":[["a",{},"c", 1]]}"#, &sup)
                .unwrap_err()
                .kind,
            "notRequest"
        );
        let r = parse(
            br#"{"using":[],"methodCalls":[["a",{},"c"]],"createdIds":{"k":"i"}}"#,
            &sup,
        )
        .unwrap();
        assert_eq!(r.calls.len(), 1);
        assert_eq!(r.created_ids, Some(vec![("k".into(), "i".into())]));
        let calls = vec![json!(["Core/echo", {}, "c"]); MAX_CALLS + 1];
        let body = json!({"using": [], "methodCalls": calls}).to_string();
        let e = parse(body.as_bytes(), &sup).unwrap_err();
        assert_eq!(
            e.to_json(),
            json!({"type": "urn:ietf:params:jmap:error:limit", "limit": "maxCallsInRequest",
                   "status": 400, "detail": e.detail})
        );
    }

    #[test]
    fn a_reference_cannot_multiply_a_request_beyond_the_cap() {
        // Each call echoing two references to the previous answer doubles
        // it; the resolution refuses once one reference is too large.
        let mut earlier: Vec<(String, Value, String)> =
            vec![("Core/echo".into(), json!({"x": vec![0; 1000]}), "c0".into())];
        let mut refused_at = None;
        for i in 1..64 {
            let prev = format!("c{}", i - 1);
            let mut args = json!({
                "#a": {"resultOf": prev, "name": "Core/echo", "path": ""},
                "#b": {"resultOf": prev, "name": "Core/echo", "path": ""},
            })
            .as_object()
            .cloned()
            .unwrap();
            match resolve_references(&mut args, &earlier, &mut MAX_RESOLVED_VALUES.clone()) {
                Ok(()) => earlier.push(("Core/echo".into(), Value::Object(args), format!("c{i}"))),
                Err(e) => {
                    assert_eq!(e.kind, "invalidResultReference");
                    assert!(e.description.contains("more than"), "{}", e.description);
                    refused_at = Some(i);
                    break;
                }
            }
        }
        assert!(refused_at.is_some_and(|i| i < 12), "{refused_at:?}");
    }

    #[test]
    fn many_references_to_one_large_answer_share_one_budget() {
        // One answer of 99,990 values, then a call naming it 20 times: each
        // reference alone is under the cap, together they are not.
        let earlier = vec![(
            "Core/echo".to_string(),
            json!({"a": vec![0; 99_988]}),
            "c0".to_string(),
        )];
        let mut refs = Map::new();
        for n in 0..20 {
            refs.insert(
                format!("#r{n}"),
                json!({"resultOf": "c0", "name": "Core/echo", "path": ""}),
            );
        }
        let mut budget = MAX_RESOLVED_VALUES;
        let e = resolve_references(&mut refs, &earlier, &mut budget).unwrap_err();
        assert_eq!(e.kind, "invalidResultReference");
        // A request whose references stay within the budget resolves, and
        // what they took is gone from it.
        let mut small = json!({"#x": {"resultOf": "c0", "name": "Core/echo", "path": "/a/0"}})
            .as_object()
            .cloned()
            .unwrap();
        let mut budget = MAX_RESOLVED_VALUES;
        resolve_references(&mut small, &earlier, &mut budget).unwrap();
        assert_eq!(small["x"], json!(0));
        assert_eq!(budget, MAX_RESOLVED_VALUES - 1);
    }

    #[test]
    fn array_indexes_are_plain_digits() {
        let v = json!({"list": ["a", "b"]});
        assert_eq!(evaluate_path(&v, "/list/0"), Some(json!("a")));
        assert_eq!(evaluate_path(&v, "/list/1"), Some(json!("b")));
        for path in ["/list/+1", "/list/01", "/list/-0", "/list/", "/list/2"] {
            assert_eq!(evaluate_path(&v, path), None, "{path}");
        }
    }

    #[test]
    fn result_references() {
        let earlier = vec![(
            "PushSubscription/get".to_string(),
            json!({"list": [{"id": "a"}, {"id": "b"}], "notFound": []}),
            "c0".to_string(),
        )];
        let mut args = json!({"#destroy": {"resultOf": "c0", "name": "PushSubscription/get", "path": "/list/*/id"}})
            .as_object()
            .cloned()
            .unwrap();
        resolve_references(&mut args, &earlier, &mut MAX_RESOLVED_VALUES.clone()).unwrap();
        assert_eq!(args["destroy"], json!(["a", "b"]));
        let mut bad = json!({"#destroy": {"resultOf": "c9", "name": "PushSubscription/get", "path": "/list"}})
            .as_object()
            .cloned()
            .unwrap();
        assert_eq!(
            resolve_references(&mut bad, &earlier, &mut MAX_RESOLVED_VALUES.clone())
                .unwrap_err()
                .kind,
            "invalidResultReference"
        );
        let mut dup = json!({"destroy": [], "#destroy": {}})
            .as_object()
            .cloned()
            .unwrap();
        assert_eq!(
            resolve_references(&mut dup, &earlier, &mut MAX_RESOLVED_VALUES.clone())
                .unwrap_err()
                .kind,
            "invalidArguments"
        );
    }
}
