//! The PostgreSQL store's key arithmetic (the store contract runs in the
//! tests crate against a real server).

use super::*;

#[test]
fn successor_bounds_the_prefix() {
    assert_eq!(prefix_successor(""), None);
    assert_eq!(prefix_successor("a/").as_deref(), Some("a0"));
    assert_eq!(prefix_successor("a\u{10FFFF}").as_deref(), Some("b"));
    assert_eq!(prefix_successor("\u{D7FF}").as_deref(), Some("\u{E000}"));
    assert_eq!(prefix_successor("\u{10FFFF}"), None);
    let p = "sub/é";
    let s = prefix_successor(p).unwrap();
    for k in ["sub/é", "sub/é\u{10FFFF}\u{10FFFF}", "sub/éz"] {
        assert!(k.as_bytes() < s.as_bytes() && k.starts_with(p));
    }
    assert!(!s.starts_with(p));
}

#[test]
fn redacts_passwords() {
    assert_eq!(
        redact("postgres://u:secret@h:1/db"),
        "postgres://u:***@h:1/db"
    );
    assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
}

#[test]
fn unreachable_server_is_unavailable() {
    let mut config = PostgresConfig::new("postgres://nobody@127.0.0.1:1/none");
    config.connect_timeout = Duration::from_secs(2);
    assert!(matches!(
        PostgresStore::open_with(config.clone()),
        Err(StoreError::Unavailable(_))
    ));
    let lazy = PostgresStore::open_lazy(config).unwrap();
    assert!(matches!(lazy.get("k"), Err(StoreError::Unavailable(_))));
    assert!(matches!(
        lazy.put("k", b"v", Condition::Any),
        Err(StoreError::Unavailable(_))
    ));
}
