//! Push URL checks: the literal address table, local names, Unicode and
//! encoded hosts, host-name characters and DNS lengths, the origin.

use super::*;

/// (host as written in a URL, expected classification)
const LITERALS: &[(&str, Option<DeniedRange>)] = &[
    ("127.0.0.1", Some(DeniedRange::Loopback)),
    ("2130706433", Some(DeniedRange::Loopback)),
    ("0x7f000001", Some(DeniedRange::Loopback)),
    ("0x7f.1", Some(DeniedRange::Loopback)),
    ("0177.0.0.1", Some(DeniedRange::Loopback)),
    ("127.1", Some(DeniedRange::Loopback)),
    ("0.0.0.0", Some(DeniedRange::Unspecified)),
    ("0", Some(DeniedRange::Unspecified)),
    ("10.1.2.3", Some(DeniedRange::Private)),
    ("172.16.0.1", Some(DeniedRange::Private)),
    ("172.31.255.255", Some(DeniedRange::Private)),
    ("192.168.1.1", Some(DeniedRange::Private)),
    ("169.254.169.254", Some(DeniedRange::LinkLocal)),
    ("100.64.0.1", Some(DeniedRange::CarrierGradeNat)),
    ("224.0.0.1", Some(DeniedRange::Multicast)),
    ("255.255.255.255", Some(DeniedRange::Broadcast)),
    ("192.0.2.1", Some(DeniedRange::Documentation)),
    ("198.51.100.7", Some(DeniedRange::Documentation)),
    ("203.0.113.9", Some(DeniedRange::Documentation)),
    ("[::1]", Some(DeniedRange::Loopback)),
    ("[::]", Some(DeniedRange::Unspecified)),
    ("[::ffff:127.0.0.1]", Some(DeniedRange::Loopback)),
    ("[::ffff:7f00:1]", Some(DeniedRange::Loopback)),
    ("[::ffff:10.0.0.1]", Some(DeniedRange::Private)),
    ("[::127.0.0.1]", Some(DeniedRange::Loopback)),
    ("[2002:7f00:1::]", Some(DeniedRange::Loopback)),
    (
        "[2001:0:4136:e378:8000:63bf:80ff:fffe]",
        Some(DeniedRange::Loopback),
    ),
    ("[64:ff9b::a9fe:a9fe]", Some(DeniedRange::LinkLocal)),
    ("[fe80::1]", Some(DeniedRange::LinkLocal)),
    ("[fec0::1]", Some(DeniedRange::SiteLocal)),
    ("[fd00::1]", Some(DeniedRange::UniqueLocal)),
    ("[fc00::1]", Some(DeniedRange::UniqueLocal)),
    ("[ff02::1]", Some(DeniedRange::Multicast)),
    ("[2001:db8::1]", Some(DeniedRange::Documentation)),
    ("[64:ff9b:1::a00:1]", Some(DeniedRange::Reserved)),
    ("[64:ff9b:1:ffff::1]", Some(DeniedRange::Reserved)),
    ("8.8.8.8", None),
    ("172.32.0.1", None),
    ("100.128.0.1", None),
    ("[2606:4700::1111]", None),
    ("[::ffff:8.8.8.8]", None),
    ("[2002:0808:0808::]", None),
];

#[test]
fn literal_table() {
    for (host, want) in LITERALS {
        let ip = parse_ip_literal(host).unwrap_or_else(|| panic!("{host} not parsed"));
        assert_eq!(classify(ip), *want, "{host}");
    }
}

#[test]
fn domain_names_are_not_literals() {
    for host in [
        "push.example.net",
        "fcm.googleapis.com",
        "1.2.3.example",
        "0x7g.1",
    ] {
        assert_eq!(parse_ip_literal(host), None, "{host}");
    }
    assert_eq!(parse_ip_literal("256.1.1.1"), None);
    assert_eq!(parse_ip_literal("1.2.3.4.5"), None);
}

#[test]
fn push_url_rules() {
    assert!(check_push_url("https://push.example.net/p/abc", false).is_ok());
    assert_eq!(
        check_push_url("http://push.example.net/", false),
        Err(UrlError::Scheme)
    );
    assert!(check_push_url("http://push.example.net/", true).is_ok());
    assert_eq!(
        check_push_url("push.example.net/x", false),
        Err(UrlError::Scheme)
    );
    assert_eq!(
        check_push_url("https://u:p@push.example.net/", false),
        Err(UrlError::Syntax(UrlSyntaxError::Userinfo))
    );
    assert_eq!(
        check_push_url("https:///x", false),
        Err(UrlError::Syntax(UrlSyntaxError::MissingHost))
    );
    assert_eq!(
        check_push_url("https://a.example:99999/", false),
        Err(UrlError::Syntax(UrlSyntaxError::InvalidPort))
    );
    assert_eq!(
        check_push_url("https://a.example/ x", false),
        Err(UrlError::Syntax(UrlSyntaxError::InvalidCharacters))
    );
    assert!(matches!(
        check_push_url("https://127.0.0.1:8443/", false),
        Err(UrlError::Denied(_, DeniedRange::Loopback))
    ));
    assert!(matches!(
        check_push_url("https://localhost/", false),
        Err(UrlError::Denied(_, DeniedRange::Loopback))
    ));
    assert!(check_push_url("http://127.0.0.1:8443/", true).is_ok());
    assert!(matches!(
        check_push_url("http://10.0.0.1/", true),
        Err(UrlError::Denied(_, DeniedRange::Private))
    ));
    let long = format!("https://a.example/{}", "x".repeat(2048));
    assert!(matches!(
        check_push_url(&long, false),
        Err(UrlError::TooLong(_))
    ));
}

#[test]
fn every_spelling_of_a_local_name_is_refused() {
    for url in [
        "https://localhost/",
        "https://localhost./",
        "https://localhost../",
        "https://LOCALHOST/",
        "https://LocalHost.:8443/p",
        "https://a.localhost/",
        "https://push.a.LOCALHOST./x",
        "https://\u{ff4c}\u{ff4f}\u{ff43}\u{ff41}\u{ff4c}\u{ff48}\u{ff4f}\u{ff53}\u{ff54}/",
        "https://localhost\u{3002}/",
    ] {
        match check_push_url(url, false) {
            Err(UrlError::Denied(_, DeniedRange::Loopback)) => {}
            other => panic!("{url}: {other:?}"),
        }
    }
    // Names that merely contain the word are not local.
    for url in ["https://localhost.example.net/", "https://mylocalhost/"] {
        assert!(check_push_url(url, false).is_ok(), "{url}");
    }
    // Test mode allows them, as it allows loopback literals.
    assert!(check_push_url("http://localhost.:8080/", true).is_ok());
}

#[test]
fn unicode_hosts_become_punycode_and_encoded_hosts_are_refused() {
    let u = check_push_url("https://p\u{fc}sh.example.net/x", false).unwrap();
    assert_eq!(u.origin(), "https://xn--psh-hoa.example.net");
    assert_eq!(
        check_push_url("https://loc%61lhost/", false),
        Err(UrlError::Syntax(UrlSyntaxError::InvalidHost))
    );
    assert_eq!(
        check_push_url("https://push.example.net:0/", false),
        Err(UrlError::Syntax(UrlSyntaxError::InvalidPort))
    );
    assert_eq!(
        check_push_url("https://@push.example.net/", false),
        Err(UrlError::Syntax(UrlSyntaxError::Userinfo))
    );
}

#[test]
fn host_names_are_letters_digits_hyphens_underscores_and_dots() {
    // Found by fuzzing: WHATWG accepts these hosts, the host's HTTP
    // client cannot send to them.
    for url in [
        "https://8pu{!/x",
        "https://push{.example.net/",
        "https://pu*sh.example.net/",
        "https://push!.example.net/",
        "https://pu$h.example.net/",
    ] {
        assert_eq!(
            check_push_url(url, false),
            Err(UrlError::Syntax(UrlSyntaxError::InvalidHost)),
            "{url}"
        );
    }
    // Names DNS cannot resolve (found failing later as TLS errors).
    let long_label = format!("https://{}.example.net/", "a".repeat(64));
    let long_name = format!("https://{}net/", "abcdefghi.".repeat(26));
    for url in [
        "https://a..example.net/",
        "https://.example.net/",
        "https://push.example.net../",
        "https://./",
        long_label.as_str(),
        long_name.as_str(),
    ] {
        assert_eq!(
            check_push_url(url, false),
            Err(UrlError::Syntax(UrlSyntaxError::InvalidHost)),
            "{url}"
        );
    }
    let longest_label = format!("https://{}.example.net/", "a".repeat(63));
    for url in [
        longest_label.as_str(),
        "https://push-1.example.net/",
        "https://_push.example.net/",
        "https://push.example.net./",
    ] {
        assert!(check_push_url(url, false).is_ok(), "{url}");
    }
}

#[test]
fn origin_keeps_non_default_port() {
    let u = check_push_url("https://Push.Example.net:8443/a?b", false).unwrap();
    assert_eq!(u.origin(), "https://push.example.net:8443");
    let u = check_push_url("https://push.example.net:443/a", false).unwrap();
    assert_eq!(u.origin(), "https://push.example.net");
}
