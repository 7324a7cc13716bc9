//! Settings: the file, the environment and flags, their precedence and
//! refusals.

use super::*;

#[test]
fn a_syntax_error_names_the_place_but_not_the_text() {
    let text = "[server]\nadmin_token = \"s3cr3t-token\nlisten = \"x\"\n";
    let e = Settings::parse(text, Vec::new()).unwrap_err().to_string();
    assert!(e.contains("line 2"), "{e}");
    assert!(!e.contains("s3cr3t"), "{e}");
}

#[test]
fn empty_file_gives_defaults() {
    let s = Settings::parse("", Vec::new()).unwrap();
    assert_eq!(s.server.listen.port(), 8080);
    assert_eq!(s.store.kind, StoreKind::Embedded);
    assert_eq!(s.plugin.max_subscriptions_per_owner, 50);
    assert!(s.http.extra_ca_files.is_empty());
    assert_eq!(s.server.max_size_request, 1_000_000);
    assert_eq!(s.server.max_concurrent_requests, 16);
    assert!(!s.server.compat_push_subscription_get_state);
}

#[test]
fn server_limits_are_read_and_checked() {
    let s = Settings::parse(
        "[server]\nmax_size_request = 5000\nmax_concurrent_requests = 2\ncompat_push_subscription_get_state = true\n",
        Vec::new(),
    )
    .unwrap();
    assert_eq!(s.server.max_size_request, 5000);
    assert_eq!(s.server.max_concurrent_requests, 2);
    assert!(s.server.compat_push_subscription_get_state);
    let e = Settings::parse("[server]\nmax_concurrent_requests = 0\n", Vec::new()).unwrap_err();
    assert!(
        e.to_string().contains("server.max_concurrent_requests"),
        "{e}"
    );
    let e = Settings::parse("[server]\nmax_size_request = 0\n", Vec::new()).unwrap_err();
    assert!(e.to_string().contains("server.max_size_request"), "{e}");
    let e = Settings::parse("[server]\nmax_concurrent_requests = -1\n", Vec::new()).unwrap_err();
    assert!(
        e.to_string().contains("server.max_concurrent_requests"),
        "{e}"
    );
}

#[test]
fn extra_ca_files_are_read_as_paths() {
    let s = Settings::parse(
        "[http]\nextra_ca_files = [\"/etc/push/a.pem\", \"b.pem\"]\n",
        Vec::new(),
    )
    .unwrap();
    assert_eq!(
        s.http.extra_ca_files,
        vec![PathBuf::from("/etc/push/a.pem"), PathBuf::from("b.pem")]
    );
}

#[test]
fn unknown_and_bad_keys_are_named() {
    let e = Settings::parse("[plugin]\nmax_subscriptions_per_ownr = 3\n", Vec::new()).unwrap_err();
    assert!(e.to_string().contains("plugin"), "{e}");
    assert!(e.to_string().contains("max_subscriptions_per_ownr"), "{e}");
    let e = Settings::parse("[server]\nlisten = \"nope\"\n", Vec::new()).unwrap_err();
    assert!(e.to_string().contains("server.listen"), "{e}");
    let e = Settings::parse(
        "[plugin]\nvapid_contact = \"mailto:ops@localhost\"\n",
        Vec::new(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("plugin.vapid_contact"), "{e}");
    let e = Settings::parse("[store]\nkind = \"postgres\"\n", Vec::new()).unwrap_err();
    assert!(e.to_string().contains("store.url"), "{e}");
}

#[test]
fn environment_overrides() {
    let s = Settings::parse(
        "[server]\nlisten = \"127.0.0.1:1\"\n",
        vec![
            (
                "JMAP_WEB_PUSH__SERVER__LISTEN".to_string(),
                "127.0.0.1:9999".to_string(),
            ),
            (
                "JMAP_WEB_PUSH__PLUGIN__MAX_SUBSCRIPTIONS_PER_OWNER".to_string(),
                "7".to_string(),
            ),
            (
                "JMAP_WEB_PUSH__PLUGIN__VAPID_CONTACT".to_string(),
                "mailto:a@example.com".to_string(),
            ),
            ("UNRELATED".to_string(), "x".to_string()),
        ],
    )
    .unwrap();
    assert_eq!(s.server.listen.port(), 9999);
    assert_eq!(s.plugin.max_subscriptions_per_owner, 7);
    assert_eq!(
        s.plugin.vapid_contact.as_deref(),
        Some("mailto:a@example.com")
    );
}
