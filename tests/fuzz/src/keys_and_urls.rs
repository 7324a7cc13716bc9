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
///   the `/set` property check. Property: it accepts exactly what the
///   `base64` crate (URL-safe alphabet, padding optional) decodes to a
///   65-octet point `p256` accepts and a 16-octet secret.
/// - 2: the text as a push URL. Properties: a URL the `/set` check accepts
///   is accepted in test mode too, gives a VAPID `aud` naming the same
///   origin, and the `http::Uri` the host's client sends with (made from
///   the `url` crate's serialization, as `net/client.rs` does) names the
///   same scheme, host and port.
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
    use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
    use base64::engine::DecodePaddingMode;
    use base64::Engine as _;
    const B64URL: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let (p256dh, auth) = text.split_once(',').unwrap_or((text, ""));
    let mut keys = jmap_web_push_guest::json::Map::new();
    keys.insert("p256dh".into(), Value::String(p256dh.into()));
    keys.insert("auth".into(), Value::String(auth.into()));
    let checked = check_keys(&Value::Object(keys), &config());
    let reference = match (B64URL.decode(p256dh), B64URL.decode(auth)) {
        (Ok(p), Ok(a)) => {
            p.len() == 65
                && p[0] == 0x04
                && a.len() == 16
                && p256::PublicKey::from_sec1_bytes(&p).is_ok()
        }
        _ => false,
    };
    assert_eq!(
        matches!(checked, Ok(Some(_))),
        reference,
        "keys {p256dh:?} / {auth:?}: /set check {checked:?}, base64 + p256 {reference}"
    );
    if reference {
        assert!(parse_receiver_keys(p256dh, auth).is_ok());
    }
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
    // What the host's client sends with: the `url` crate's serialization
    // parsed as an `http::Uri` (host-harness/src/net/client.rs).
    let serialized = url::Url::parse(text)
        .unwrap_or_else(|e| panic!("{text:?} is accepted but the host cannot parse it: {e}"));
    let uri: http::Uri = serialized
        .as_str()
        .parse()
        .unwrap_or_else(|e| panic!("{text:?} is accepted but is not an http::Uri: {e}"));
    assert_eq!(uri.scheme_str(), Some(parts.scheme.as_str()), "{text:?}");
    assert_eq!(
        uri.host().map(str::to_ascii_lowercase),
        Some(parts.host()),
        "{text:?}: the client would connect to another host"
    );
    assert_eq!(uri.port_u16(), parts.port, "{text:?}");
}
