//! Receiver keys and push URLs: what a client sends in `keys` and `url`.

use jmap_web_push_crypto::keys::{parse_receiver_keys, ReceiverKeys};
use jmap_web_push_guest::addr::{check_push_url, parse_http_url};
use jmap_web_push_guest::crypto::audience;
use jmap_web_push_guest::json::Value;
use jmap_web_push_guest::subscription::{check_keys, check_url};

use crate::support::config;

/// The first octet picks the surface (`% 3`), the rest is the input:
///
/// - 0: raw key octets: a length octet, the `p256dh` octets, then `auth`.
///   Property: [`ReceiverKeys::from_bytes`] accepts exactly the 65-octet
///   uncompressed points `p256` accepts (with a 16-octet `auth`).
/// - 1: the text as `p256dh` and `auth` (split at the first `,`), through
///   base64url and the `/set` property check. Property: the property check
///   and [`parse_receiver_keys`] agree.
/// - 2: the text as a push URL. Properties: a URL the `/set` check accepts
///   is accepted in test mode too, gives a VAPID `aud`, and the `url`
///   crate (which the host connects with) reads the same scheme, host and
///   port.
pub fn keys_and_urls(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    match selector % 3 {
        0 => raw_keys(rest),
        1 => encoded_keys(&String::from_utf8_lossy(rest)),
        _ => push_url(&String::from_utf8_lossy(rest)),
    }
}

fn raw_keys(data: &[u8]) {
    let Some((&len, rest)) = data.split_first() else {
        return;
    };
    let (p256dh, auth) = rest.split_at(usize::from(len).min(rest.len()));
    let ours = ReceiverKeys::from_bytes(p256dh, auth);
    let reference = p256dh.len() == 65
        && p256dh[0] == 0x04
        && auth.len() == 16
        && p256::PublicKey::from_sec1_bytes(p256dh).is_ok();
    assert_eq!(
        ours.is_ok(),
        reference,
        "receiver key {p256dh:02x?} (auth {} octets): ours {ours:?}, p256 {reference}",
        auth.len()
    );
    if let Ok(keys) = ours {
        assert_eq!(keys.p256dh().as_slice(), p256dh);
        assert_eq!(keys.auth().as_slice(), auth);
    }
}

fn encoded_keys(text: &str) {
    let (p256dh, auth) = text.split_once(',').unwrap_or((text, ""));
    let direct = parse_receiver_keys(p256dh, auth);
    let mut keys = jmap_web_push_guest::json::Map::new();
    keys.insert("p256dh".into(), Value::String(p256dh.into()));
    keys.insert("auth".into(), Value::String(auth.into()));
    let checked = check_keys(&Value::Object(keys), &config());
    assert_eq!(
        direct.is_ok(),
        matches!(checked, Ok(Some(_))),
        "keys {p256dh:?} / {auth:?}: parse {direct:?}, /set check {checked:?}"
    );
}

fn push_url(text: &str) {
    let config = config();
    let checked = check_url(&Value::String(text.into()), &config);
    let strict = check_push_url(text, false);
    assert_eq!(
        checked.is_ok(),
        strict.is_ok(),
        "{text:?}: {checked:?} / {strict:?}"
    );
    let Ok(parts) = strict else {
        return;
    };
    assert!(
        check_push_url(text, true).is_ok(),
        "{text:?} is accepted, but not in test mode"
    );
    let aud = audience(text).unwrap_or_else(|e| panic!("{text:?} is accepted but has no aud: {e}"));
    assert_eq!(aud, parts.origin());
    assert!(
        parse_http_url(&aud).is_ok_and(|again| again == parts),
        "{text:?}: its aud {aud:?} does not name the same origin"
    );
    let host_view = url::Url::parse(text)
        .unwrap_or_else(|e| panic!("{text:?} is accepted but the host cannot parse it: {e}"));
    assert_eq!(host_view.scheme(), parts.scheme, "{text:?}");
    assert_eq!(
        host_view.host().map(|h| h.to_owned()),
        Some(parts.parsed_host.clone()),
        "{text:?}: host and guest read different hosts"
    );
    assert_eq!(host_view.port(), parts.port, "{text:?}");
}
