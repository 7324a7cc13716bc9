//! VAPID: keys, the ES256 JWT and its claims, the audience, the header, the
//! token cache, against p256 and the RFC 8292 example.

use super::testing::*;
use super::*;
use crate::crypto::b64url_decode;

const NOW: u64 = 1_700_000_000;

#[test]
fn rfc8292_example_token_verifies() {
    let header = "vapid t=eyJ0eXAiOiJKV1QiLCJhbGciOiJFUzI1NiJ9.eyJhdWQiOiJodHRwczovL3B1c2guZXhhbXBsZS5uZXQiLCJleHAiOjE0NTM1MjM3NjgsInN1YiI6Im1haWx0bzpwdXNoQGV4YW1wbGUuY29tIn0.i3CYb7t4xfxCDquptFOepC9GAu_HLGkMlMuCGSK2rpiUfnK9ojFwDXb1JrErtmysazNjjvW2L9OkSSHzvoD1oA, k=BA1Hxzyi1RUM1b5wjxsn7nGxAszw2u61m164i3MrAIxHF6YK5h4SDYic-dRuU_RCPCfA5aq9ojSwk5Y2EmClBPs";
    let v = verify_authorization(header).unwrap();
    assert_eq!(v.header_json, r#"{"typ":"JWT","alg":"ES256"}"#);
    assert_eq!(v.aud, "https://push.example.net");
    assert_eq!(v.exp, 1_453_523_768);
    assert_eq!(v.sub, "mailto:push@example.com");
    // JWK x and y are the coordinates of k.
    let k = b64url_decode(&v.k).unwrap();
    assert_eq!(
        b64url_encode(&k[1..33]),
        "DUfHPKLVFQzVvnCPGyfucbECzPDa7rWbXriLcysAjEc"
    );
    assert_eq!(
        b64url_encode(&k[33..]),
        "F6YK5h4SDYic-dRuU_RCPCfA5aq9ojSwk5Y2EmClBPs"
    );
    // A changed claim or signature no longer verifies.
    let tampered = header.replace("eyJhdWQiOiJodHRwczovL3B1c2g", "eyJhdWQiOiJodHRwczovL3B1c2k");
    assert!(verify_authorization(&tampered).is_err());
    let tampered = header.replace("i3CYb7t4", "i3CYb7t5");
    assert!(verify_authorization(&tampered).is_err());
    // Our constant header is the RFC's.
    assert_eq!(
        b64url_encode(br#"{"typ":"JWT","alg":"ES256"}"#),
        JWT_HEADER_B64
    );
}

fn signer() -> VapidSigner {
    VapidSigner::new(
        VapidKey::generate().unwrap(),
        "mailto:push@example.com",
        0,
        false,
    )
    .unwrap()
}

#[test]
fn signed_tokens_verify_with_exact_claims() {
    let mut s = signer();
    let value = s
        .authorization(
            "https://push.example.net/push/JzLQ3raZJfFBR0aqvOMsLrt54w4rJUsV",
            NOW,
        )
        .unwrap();
    assert!(value.starts_with("vapid t=eyJ0eXAiOiJKV1QiLCJhbGciOiJFUzI1NiJ9."));
    let v = verify_authorization(&value).unwrap();
    assert_eq!(v.header_json, r#"{"typ":"JWT","alg":"ES256"}"#);
    assert_eq!(
        v.claims_json,
        format!(
            r#"{{"aud":"https://push.example.net","exp":{},"sub":"mailto:push@example.com"}}"#,
            NOW + 43_200
        )
    );
    assert_eq!(v.k, s.key().public_key_base64url());
    assert!(value.ends_with(&format!(", k={}", v.k)));
    // A token signed by another key does not verify under this k.
    let other = signer()
        .authorization("https://push.example.net/x", NOW)
        .unwrap();
    let (t_other, _) = other.split_once(", k=").unwrap();
    let forged = format!("{t_other}, k={}", v.k);
    assert!(verify_authorization(&forged).is_err());
}

#[test]
fn audience_table() {
    let ok: &[(&str, &str)] = &[
        (
            "https://push.example.net/push/abc",
            "https://push.example.net",
        ),
        ("https://push.example.net:443/p", "https://push.example.net"),
        (
            "https://push.example.net:8443/p",
            "https://push.example.net:8443",
        ),
        ("http://push.example.net:80/p", "http://push.example.net"),
        (
            "http://push.example.net:8080",
            "http://push.example.net:8080",
        ),
        (
            "http://push.example.net:443/",
            "http://push.example.net:443",
        ),
        (
            "https://push.example.net:80/",
            "https://push.example.net:80",
        ),
        (
            "https://push.example.net/a/b?c=d#e",
            "https://push.example.net",
        ),
        ("https://push.example.net?x=1", "https://push.example.net"),
        ("https://push.example.net#frag", "https://push.example.net"),
        ("https://push.example.net", "https://push.example.net"),
        ("HTTPS://Push.EXAMPLE.Net/A", "https://push.example.net"),
        ("https://[2001:DB8::1]/p", "https://[2001:db8::1]"),
        (
            "https://[2001:db8:0:0:0:0:0:1]:8443/p",
            "https://[2001:db8::1]:8443",
        ),
        ("https://[::1]:443/", "https://[::1]"),
        ("https://192.0.2.1:443/", "https://192.0.2.1"),
        (
            "https://fcm.googleapis.com/fcm/send/abc:def",
            "https://fcm.googleapis.com",
        ),
        ("https://push.example.net:/p", "https://push.example.net"),
        // International names in punycode, as the host connects to them.
        (
            "https://püsh.example.net/",
            "https://xn--psh-hoa.example.net",
        ),
        (
            "https://push.example.net:0443/p",
            "https://push.example.net",
        ),
    ];
    for (url, want) in ok {
        assert_eq!(audience(url).as_deref(), Ok(*want), "{url}");
    }
    let bad: &[(&str, UrlError)] = &[
        ("https://user@push.example.net/", UrlError::Userinfo),
        ("https://user:pw@push.example.net/", UrlError::Userinfo),
        (
            "ftp://push.example.net/",
            UrlError::UnsupportedScheme("ftp".into()),
        ),
        ("mailto:a@b.c", UrlError::UnsupportedScheme("mailto".into())),
        ("push.example.net/x", UrlError::NotAbsolute),
        ("//push.example.net/x", UrlError::NotAbsolute),
        ("", UrlError::NotAbsolute),
        ("https:///x", UrlError::MissingHost),
        ("https://", UrlError::MissingHost),
        ("https://:443/", UrlError::MissingHost),
        ("https://push.example.net:65536/", UrlError::InvalidPort),
        ("https://push.example.net:12a/", UrlError::InvalidPort),
        ("https://push.example.net:1:2/", UrlError::InvalidPort),
        ("https://push.example.net:-1/", UrlError::InvalidPort),
        ("https://[2001:db8::1/", UrlError::InvalidHost),
        ("https://[not-v6]/", UrlError::InvalidHost),
        ("https://[::1]x/", UrlError::InvalidHost),
        ("https://[fe80::1%25eth0]/", UrlError::InvalidHost),
        ("https://push%2eexample.net/", UrlError::InvalidHost),
        (
            "https://push.example.net\\@evil/",
            UrlError::InvalidCharacters,
        ),
        (
            "https://push.example.net\\evil/",
            UrlError::InvalidCharacters,
        ),
        ("https://push.exa mple.net/", UrlError::InvalidCharacters),
        (" https://push.example.net/", UrlError::InvalidCharacters),
        ("https://push.example.net/\n", UrlError::InvalidCharacters),
    ];
    for (url, want) in bad {
        assert_eq!(
            audience(url),
            Err(VapidError::InvalidPushUrl(want.clone())),
            "{url}"
        );
    }
}

/// The header is a known answer for a fixed key, contact, audience and
/// time: two signers (no shared cache) give byte-identical values, and
/// the signature is the RFC 6979 one `p256` computes over the JWS
/// signing input `header.claims`.
#[test]
fn authorization_is_deterministic_and_signed_over_the_jws_input() {
    let key = "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw";
    let make = || {
        VapidSigner::new(
            VapidKey::from_base64url(key).unwrap(),
            "mailto:push@example.com",
            0,
            false,
        )
        .unwrap()
    };
    let url = "https://push.example.net/push/abc";
    let a = make().authorization(url, NOW).unwrap();
    let b = make().authorization(url, NOW).unwrap();
    assert_eq!(a, b);
    let jwt = a
        .strip_prefix("vapid t=")
        .and_then(|r| r.split_once(", k="))
        .map(|(t, _)| t)
        .unwrap();
    let (input, sig) = jwt.rsplit_once('.').unwrap();
    let expected: Signature = VapidKey::from_base64url(key)
        .unwrap()
        .signing
        .sign(input.as_bytes());
    assert_eq!(b64url_decode(sig).unwrap(), expected.to_bytes().to_vec());
}

#[test]
fn token_cached_per_audience_and_resigned_near_expiry() {
    let mut s = signer();
    let url = "https://push.example.net/a";
    let first = s.authorization(url, NOW).unwrap();
    let exp = verify_authorization(&first).unwrap().exp;
    assert_eq!(exp, NOW + 43_200);
    // Same origin, other path: the same token.
    assert_eq!(
        s.authorization("https://push.example.net/b", NOW + 10)
            .unwrap(),
        first
    );
    // Still reused just over an hour before exp.
    assert_eq!(s.authorization(url, exp - 3601).unwrap(), first);
    // Other origin: other token.
    let other = s
        .authorization("https://push.other.example/a", NOW)
        .unwrap();
    assert_ne!(other, first);
    assert_eq!(
        verify_authorization(&other).unwrap().aud,
        "https://push.other.example"
    );
    // Within an hour of exp: re-signed.
    let second = s.authorization(url, exp - 3600).unwrap();
    assert_ne!(second, first);
    assert_eq!(
        verify_authorization(&second).unwrap().exp,
        exp - 3600 + 43_200
    );
    // And that one is cached in turn.
    assert_eq!(s.authorization(url, exp - 3000).unwrap(), second);
    // The clock went back a day: the cached exp would be > lifetime ahead.
    let back = s.authorization(url, NOW - 86_400).unwrap();
    assert_eq!(
        verify_authorization(&back).unwrap().exp,
        NOW - 86_400 + 43_200
    );
    // Bad URLs are rejected, not cached.
    assert!(matches!(
        s.authorization("ftp://push.example.net/", NOW),
        Err(VapidError::InvalidPushUrl(_))
    ));
}

#[test]
fn cache_is_bounded() {
    let mut s = signer();
    for i in 0..(CACHE_CAPACITY + 10) {
        s.authorization(&format!("https://p{i}.example.net/"), NOW + i as u64)
            .unwrap();
        assert!(s.cache.len() <= CACHE_CAPACITY);
    }
    // The newest is still cached.
    let url = format!("https://p{}.example.net/", CACHE_CAPACITY + 9);
    let a = s.authorization(&url, NOW + 1000).unwrap();
    assert_eq!(s.authorization(&url, NOW + 1001).unwrap(), a);
}

#[test]
fn lifetime_default_and_clamp() {
    let key = VapidKey::generate().unwrap();
    let c = "mailto:push@example.com";
    let table: [(u32, u32); 5] = [
        (0, 43_200),
        (3600, 3600),
        (43_200, 43_200),
        (86_400, 86_400),
        (100_000, 86_400),
    ];
    for (given, want) in table {
        let mut s = VapidSigner::new(key.clone(), c, given, false).unwrap();
        assert_eq!(s.lifetime_secs(), want);
        let v = verify_authorization(&s.authorization("https://p.example/", NOW).unwrap()).unwrap();
        assert_eq!(v.exp, NOW + u64::from(want));
    }
    let mut s = VapidSigner::new(key, c, u32::MAX, false).unwrap();
    let v = verify_authorization(&s.authorization("https://p.example/", NOW).unwrap()).unwrap();
    assert_eq!(v.exp - NOW, 86_400);
    // A short lifetime still caches for half its life.
    let mut s = VapidSigner::new(VapidKey::generate().unwrap(), c, 600, false).unwrap();
    let a = s.authorization("https://p.example/", NOW).unwrap();
    assert_eq!(s.authorization("https://p.example/", NOW + 299).unwrap(), a);
    assert_ne!(s.authorization("https://p.example/", NOW + 300).unwrap(), a);
}

#[test]
fn contact_table() {
    let key = VapidKey::generate().unwrap();
    let ok = [
        "mailto:push@example.com",
        "MAILTO:Push@Example.com",
        "mailto:push+jmap@mail.example.com?subject=push",
        "https://example.com/contact",
        "https://example.com",
    ];
    for c in ok {
        let s = VapidSigner::new(key.clone(), c, 0, false).unwrap();
        assert_eq!(s.contact(), c);
    }
    let test_hosts = [
        "mailto:admin@localhost",
        "mailto:admin@LOCALHOST",
        "mailto:admin@mail.localhost",
        "mailto:admin@box.local",
        "mailto:admin@example.invalid",
        "mailto:admin@example.invalid.",
        "https://localhost/contact",
        "https://localhost:8443/",
        "https://printer.local/",
        "https://example.invalid",
    ];
    for c in test_hosts {
        let e = VapidSigner::new(key.clone(), c, 0, false).unwrap_err();
        assert!(matches!(e, VapidError::TestContact { .. }), "{c}: {e}");
        assert!(VapidSigner::new(key.clone(), c, 0, true).is_ok(), "{c}");
    }
    let bad = [
        "",
        "push@example.com",
        "mailto:",
        "mailto:push",
        "mailto:@example.com",
        "mailto:push@",
        "mailto:push@exa mple.com",
        "mailto:push@exa_mple.com",
        "http://example.com/contact",
        "tel:+123",
        " mailto:push@example.com",
        "mailto:push@example.com\n",
    ];
    for c in bad {
        let e = VapidSigner::new(key.clone(), c, 0, true).unwrap_err();
        assert!(matches!(e, VapidError::InvalidContact(_)), "{c:?}: {e:?}");
        assert!(e.to_string().contains("mailto:"), "{e}");
    }
    for c in [
        "https://user@example.com/",
        "https:///x",
        "https:example.com",
    ] {
        let e = VapidSigner::new(key.clone(), c, 0, true).unwrap_err();
        assert!(
            matches!(e, VapidError::InvalidContactUrl(_)),
            "{c:?}: {e:?}"
        );
    }
    let long = format!("mailto:{}@example.com", "a".repeat(1100));
    assert!(matches!(
        VapidSigner::new(key, &long, 0, false),
        Err(VapidError::InvalidContact(_))
    ));
}

/// RFC 6979 A.2.5 (P-256, SHA-256): the key imported through
/// [`VapidKey::from_base64url`] signs "sample" and "test" with exactly
/// the RFC's deterministic signatures (r, s).
#[test]
fn es256_signatures_are_the_rfc6979_a_2_5_vectors() {
    fn hex(h: &str) -> Vec<u8> {
        (0..h.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
            .collect()
    }
    const X: &str = "c9afa9d845ba75166b5c215767b1d6934e50c3db36e89b127b8a622b120f6721";
    const VECTORS: [(&[u8], &str, &str); 2] = [
        (
            b"sample",
            "efd48b2aacb6a8fd1140dd9cd45e81d69d2c877b56aaf991c34d0ea84eaf3716",
            "f7cb1c942d657c41d436c7a1b6e29f65f3e900dbb9aff4064dc4ab2f843acda8",
        ),
        (
            b"test",
            "f1abb023518351cd71d881567b1ea663ed3efcf6c5132b354f28d3b0b7d38367",
            "019f4113742a2b14bd25926b49c649155f267e60d3814b4c0cc84250e46f0083",
        ),
    ];
    let key = VapidKey::from_base64url(&b64url_encode(&hex(X))).unwrap();
    // RFC 6979 A.2.5's public key 04 || Ux || Uy.
    let public = key.public_key_bytes();
    assert_eq!(public[0], 4);
    assert_eq!(
        public[1..33],
        hex("60fed4ba255a9d31c961eb74c6356d68c049b8923b61fa6ce669622e60f29fb6")[..]
    );
    assert_eq!(
        public[33..],
        hex("7903fe1008b8bc99a41ae9e95628bc64f2f1b20c2d7e9f5177a3c294d4462299")[..]
    );
    for (message, r, s) in VECTORS {
        let sig: Signature = key.signing.sign(message);
        let bytes = sig.to_bytes();
        assert_eq!(bytes[..32], hex(r)[..]);
        assert_eq!(bytes[32..], hex(s)[..]);
    }
}

#[test]
fn key_serialization_round_trip() {
    let k = VapidKey::generate().unwrap();
    let s = k.to_base64url();
    assert_eq!(s.len(), 43);
    let back = VapidKey::from_base64url(&s).unwrap();
    assert_eq!(back, k);
    assert_eq!(back.public_key_base64url(), k.public_key_base64url());
    assert_eq!(VapidKey::from_base64url(&format!("{s}=")).unwrap(), k);
    let pk = k.public_key_bytes();
    assert_eq!(pk[0], 4);
    assert_eq!(
        b64url_decode(&k.public_key_base64url()).unwrap(),
        pk.to_vec()
    );
    assert_ne!(VapidKey::generate().unwrap(), k);
    assert!(!format!("{k:?}").contains(&s));

    // The RFC 8291 sender key as a known scalar -> known public key.
    let known = VapidKey::from_base64url("yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw").unwrap();
    assert_eq!(
        known.public_key_base64url(),
        "BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8"
    );

    let n = [
        0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63,
        0x25, 0x51u8,
    ];
    let mut n_minus_1 = n;
    n_minus_1[31] -= 1;
    assert!(VapidKey::from_base64url(&b64url_encode(&n_minus_1)).is_ok());
    let table: [(String, VapidError); 5] = [
        (b64url_encode(&[0u8; 32]), VapidError::KeyOutOfRange),
        (b64url_encode(&n), VapidError::KeyOutOfRange),
        (
            b64url_encode(&[1u8; 31]),
            VapidError::KeyWrongLength { len: 31 },
        ),
        (
            b64url_encode(&[1u8; 33]),
            VapidError::KeyWrongLength { len: 33 },
        ),
        (
            "ab+d".into(),
            VapidError::KeyNotBase64Url(Base64UrlError::InvalidCharacter {
                offset: 2,
                byte: b'+',
            }),
        ),
    ];
    for (input, want) in table {
        assert_eq!(VapidKey::from_base64url(&input), Err(want));
    }
}
