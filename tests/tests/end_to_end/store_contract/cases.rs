//! The contract cases, each a function run against every backend by
//! `contract_suite!` in the parent module.

use super::*;

mod races;
pub use races::*;

fn put(s: &dyn KvStore, k: &str, v: &[u8]) -> u64 {
    s.put(k, v, Condition::Any).expect("put")
}

fn value(s: &dyn KvStore, k: &str) -> Option<Vec<u8>> {
    s.get(k).expect("get").map(|e| e.value)
}

/// Every key under `prefix` by paging with `limit`, checking each page.
fn all_pages(s: &dyn KvStore, prefix: &str, limit: u32) -> Vec<String> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..10_000 {
        let page = s.list_keys(prefix, after.as_deref(), limit).expect("list");
        assert!(page.keys.len() <= limit.max(1) as usize, "page over limit");
        for k in &page.keys {
            assert!(k.starts_with(prefix), "{k:?} lacks prefix {prefix:?}");
        }
        out.extend(page.keys.iter().cloned());
        match page.next {
            Some(n) => {
                assert_eq!(Some(&n), page.keys.last(), "next is the last key");
                after = Some(n);
            }
            None => return out,
        }
    }
    panic!("paging never ended");
}

pub fn get_missing_is_none(s: &dyn KvStore) {
    assert_eq!(s.get("missing").unwrap(), None);
}

pub fn put_then_get(s: &dyn KvStore) {
    let v = put(s, "k", b"hello");
    let e = s.get("k").unwrap().expect("stored");
    assert_eq!(e.value, b"hello");
    assert_eq!(e.version, v);
}

pub fn put_any_overwrites(s: &dyn KvStore) {
    put(s, "k", b"one");
    put(s, "k", b"two");
    assert_eq!(value(s, "k").as_deref(), Some(&b"two"[..]));
}

pub fn versions_are_nonzero_and_change_on_every_write(s: &dyn KvStore) {
    let mut seen = std::collections::HashSet::new();
    let mut last = None;
    for i in 0..10 {
        // The same value every other time: a write is a write.
        let v = put(s, "k", if i % 2 == 0 { b"same" } else { b"other" });
        assert_ne!(v, 0);
        assert!(seen.insert(v), "version {v} reused");
        assert_eq!(s.get("k").unwrap().unwrap().version, v);
        if let Some(last) = last {
            let next = s.put("k", b"same", Condition::Version(v)).unwrap();
            assert_ne!(next, v);
            assert_ne!(next, last);
            assert!(seen.insert(next));
        }
        last = Some(v);
    }
}

pub fn recreated_key_gets_a_new_version(s: &dyn KvStore) {
    // Otherwise a stale compare-and-swap would succeed (ABA).
    let v1 = put(s, "k", b"v");
    assert!(s.delete("k", Condition::Any).unwrap());
    let v2 = s.put("k", b"v", Condition::Absent).unwrap();
    assert_ne!(v1, v2);
    assert_eq!(
        s.put("k", b"stale", Condition::Version(v1)),
        Err(StoreError::Conflict)
    );
}

pub fn absent_creates_a_missing_key(s: &dyn KvStore) {
    let v = s.put("k", b"new", Condition::Absent).unwrap();
    assert_eq!(s.get("k").unwrap().unwrap().version, v);
    assert_eq!(value(s, "k").as_deref(), Some(&b"new"[..]));
}

pub fn absent_on_present_key_conflicts_and_keeps_the_value(s: &dyn KvStore) {
    let v = put(s, "k", b"first");
    assert_eq!(
        s.put("k", b"second", Condition::Absent),
        Err(StoreError::Conflict)
    );
    let e = s.get("k").unwrap().unwrap();
    assert_eq!((e.value.as_slice(), e.version), (&b"first"[..], v));
}

pub fn matching_version_writes(s: &dyn KvStore) {
    let v1 = put(s, "k", b"one");
    let v2 = s.put("k", b"two", Condition::Version(v1)).unwrap();
    assert_ne!(v1, v2);
    let e = s.get("k").unwrap().unwrap();
    assert_eq!((e.value.as_slice(), e.version), (&b"two"[..], v2));
}

pub fn stale_version_conflicts_and_keeps_the_value(s: &dyn KvStore) {
    let v1 = put(s, "k", b"one");
    let v2 = put(s, "k", b"two");
    assert_eq!(
        s.put("k", b"three", Condition::Version(v1)),
        Err(StoreError::Conflict)
    );
    assert_eq!(
        s.put("k", b"three", Condition::Version(v2 + 1_000_000)),
        Err(StoreError::Conflict)
    );
    assert_eq!(
        s.put("k", b"three", Condition::Version(u64::MAX)),
        Err(StoreError::Conflict)
    );
    let e = s.get("k").unwrap().unwrap();
    assert_eq!((e.value.as_slice(), e.version), (&b"two"[..], v2));
}

pub fn version_on_missing_key_conflicts(s: &dyn KvStore) {
    assert_eq!(
        s.put("k", b"v", Condition::Version(1)),
        Err(StoreError::Conflict)
    );
    assert_eq!(s.get("k").unwrap(), None);
}

pub fn delete_missing_returns_false(s: &dyn KvStore) {
    assert!(!s.delete("missing", Condition::Any).unwrap());
}

pub fn delete_present_returns_true_and_removes(s: &dyn KvStore) {
    put(s, "k", b"v");
    assert!(s.delete("k", Condition::Any).unwrap());
    assert_eq!(s.get("k").unwrap(), None);
    assert!(!s.delete("k", Condition::Any).unwrap());
}

pub fn delete_with_matching_version(s: &dyn KvStore) {
    let v = put(s, "k", b"v");
    assert!(s.delete("k", Condition::Version(v)).unwrap());
    assert_eq!(s.get("k").unwrap(), None);
}

pub fn delete_with_stale_version_conflicts(s: &dyn KvStore) {
    let v1 = put(s, "k", b"one");
    let v2 = put(s, "k", b"two");
    assert_eq!(
        s.delete("k", Condition::Version(v1)),
        Err(StoreError::Conflict)
    );
    assert_eq!(s.get("k").unwrap().unwrap().version, v2);
}

pub fn delete_with_version_on_missing_key_conflicts(s: &dyn KvStore) {
    assert_eq!(
        s.delete("missing", Condition::Version(1)),
        Err(StoreError::Conflict)
    );
    let v = put(s, "k", b"v");
    assert!(s.delete("k", Condition::Any).unwrap());
    assert_eq!(
        s.delete("k", Condition::Version(v)),
        Err(StoreError::Conflict)
    );
}

pub fn delete_absent_condition(s: &dyn KvStore) {
    // `absent` holds only when there is nothing to delete.
    assert!(!s.delete("missing", Condition::Absent).unwrap());
    put(s, "k", b"v");
    assert_eq!(s.delete("k", Condition::Absent), Err(StoreError::Conflict));
    assert_eq!(value(s, "k").as_deref(), Some(&b"v"[..]));
}

pub fn keys_are_independent(s: &dyn KvStore) {
    put(s, "a", b"1");
    put(s, "b", b"2");
    assert!(s.delete("a", Condition::Any).unwrap());
    assert_eq!(value(s, "b").as_deref(), Some(&b"2"[..]));
    put(s, "b", b"3");
    assert_eq!(s.get("a").unwrap(), None);
}

pub fn list_on_empty_store(s: &dyn KvStore) {
    let page = s.list_keys("a/", None, 10).unwrap();
    assert!(page.keys.is_empty());
    assert_eq!(page.next, None);
    let page = s.list_keys("", None, 10).unwrap();
    assert!(page.keys.is_empty());
    assert_eq!(page.next, None);
}

pub fn list_is_in_octet_order(s: &dyn KvStore) {
    // Octet order, not a locale's: upper case before lower case, '~'
    // (0x7E) before 'é' (0xC3 0xA9) before '中' (0xE4 ...) before '😀'
    // (0xF0 ...); "a/a" before "a/a/" before "a/ab".
    let keys = [
        "a/😀", "a/b", "a/B", "a/ab", "a/a/", "a/a", "a/~", "a/é", "a/中", "a/Z", "a/0", "a/-",
        "a/ ",
    ];
    for k in keys {
        put(s, k, k.as_bytes());
    }
    let mut expected: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    expected.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    let page = s.list_keys("a/", None, 100).unwrap();
    assert_eq!(page.keys, expected);
    assert_eq!(page.next, None);
    assert_eq!(all_pages(s, "a/", 3), expected);
}

pub fn list_prefix_excludes_neighbours(s: &dyn KvStore) {
    for k in [
        "a", "a.", "a/", "a/x", "a/y/z", "a0", "a0/x", "`", "b/x", "A/x",
    ] {
        put(s, k, b"v");
    }
    assert_eq!(all_pages(s, "a/", 100), ["a/", "a/x", "a/y/z"]);
    assert_eq!(all_pages(s, "a/", 1), ["a/", "a/x", "a/y/z"]);
    assert_eq!(all_pages(s, "a0", 100), ["a0", "a0/x"]);
    assert_eq!(all_pages(s, "a/y", 100), ["a/y/z"]);
    // Characters LIKE would treat as wildcards are plain characters.
    for k in ["p%/1", "p_/1", "p\\/1", "pX/1", "p%X/1"] {
        put(s, k, b"v");
    }
    assert_eq!(all_pages(s, "p%/", 100), ["p%/1"]);
    assert_eq!(all_pages(s, "p_/", 100), ["p_/1"]);
    assert_eq!(all_pages(s, "p\\/", 100), ["p\\/1"]);
}

fn numbered(s: &dyn KvStore, prefix: &str, n: usize) -> Vec<String> {
    let keys: Vec<String> = (0..n).map(|i| format!("{prefix}{i:03}")).collect();
    for k in &keys {
        put(s, k, k.as_bytes());
    }
    // Neighbours on both sides.
    put(s, "list.", b"before");
    put(s, "list0", b"after");
    keys
}

pub fn list_pages_with_limit_1(s: &dyn KvStore) {
    let keys = numbered(s, "list/", 7);
    assert_eq!(all_pages(s, "list/", 1), keys);
    let first = s.list_keys("list/", None, 1).unwrap();
    assert_eq!(first.keys, [keys[0].clone()]);
    assert_eq!(first.next.as_deref(), Some(keys[0].as_str()));
}

pub fn list_pages_with_limit_2(s: &dyn KvStore) {
    let keys = numbered(s, "list/", 7);
    assert_eq!(all_pages(s, "list/", 2), keys);
    let mut after = None;
    let mut sizes = Vec::new();
    loop {
        let page = s.list_keys("list/", after.as_deref(), 2).unwrap();
        sizes.push(page.keys.len());
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(sizes, [2, 2, 2, 1]);
}

pub fn list_pages_with_a_large_limit(s: &dyn KvStore) {
    let keys = numbered(s, "list/", 25);
    let page = s.list_keys("list/", None, 1000).unwrap();
    assert_eq!(page.keys, keys);
    assert_eq!(page.next, None);
    let page = s.list_keys("list/", None, u32::MAX).unwrap();
    assert_eq!(page.keys, keys);
    assert_eq!(all_pages(s, "list/", 10), keys);
}

pub fn list_full_last_page_has_no_next(s: &dyn KvStore) {
    let keys = numbered(s, "list/", 4);
    let page = s.list_keys("list/", None, 4).unwrap();
    assert_eq!(page.keys, keys);
    assert_eq!(page.next, None, "no further page");
    let page = s.list_keys("list/", Some(&keys[1]), 2).unwrap();
    assert_eq!(page.keys, &keys[2..]);
    assert_eq!(page.next, None);
}

pub fn list_after_before_the_prefix_starts_at_the_prefix(s: &dyn KvStore) {
    let keys = numbered(s, "list/", 3);
    for after in ["", "a", "list", "list.", "list.zzz"] {
        let page = s.list_keys("list/", Some(after), 10).unwrap();
        assert_eq!(page.keys, keys, "after {after:?}");
    }
}

pub fn list_after_past_the_prefix_is_empty(s: &dyn KvStore) {
    numbered(s, "list/", 3);
    for after in ["list/999", "list0", "z", "list/\u{10FFFF}"] {
        let page = s.list_keys("list/", Some(after), 10).unwrap();
        assert!(page.keys.is_empty(), "after {after:?}: {:?}", page.keys);
        assert_eq!(page.next, None);
    }
}

pub fn list_after_a_key_that_does_not_exist(s: &dyn KvStore) {
    let keys = numbered(s, "list/", 6);
    // Between list/002 and list/003.
    let page = s.list_keys("list/", Some("list/002x"), 2).unwrap();
    assert_eq!(page.keys, &keys[3..5]);
    assert_eq!(page.next.as_deref(), Some(keys[4].as_str()));
    // A cursor whose key was deleted meanwhile still works.
    let page = s.list_keys("list/", None, 2).unwrap();
    assert!(s.delete(&keys[1], Condition::Any).unwrap());
    let page = s.list_keys("list/", page.next.as_deref(), 2).unwrap();
    assert_eq!(page.keys, &keys[2..4]);
}

pub fn list_empty_prefix_lists_all(s: &dyn KvStore) {
    let mut keys: Vec<String> = ["", "z", "a/1", "b", "A", "é", "\u{1}"]
        .iter()
        .map(|k| k.to_string())
        .collect();
    for k in &keys {
        put(s, k, b"v");
    }
    keys.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    assert_eq!(s.list_keys("", None, 100).unwrap().keys, keys);
    assert_eq!(all_pages(s, "", 1), keys);
    assert_eq!(all_pages(s, "", 3), keys);
}

pub fn list_limit_0_is_treated_as_1(s: &dyn KvStore) {
    let keys = numbered(s, "list/", 3);
    let page = s.list_keys("list/", None, 0).unwrap();
    assert_eq!(page.keys, [keys[0].clone()]);
    assert_eq!(page.next.as_deref(), Some(keys[0].as_str()));
    assert_eq!(all_pages(s, "list/", 0), keys);
}

pub fn list_skips_deleted_keys(s: &dyn KvStore) {
    let keys = numbered(s, "list/", 5);
    assert!(s.delete(&keys[0], Condition::Any).unwrap());
    assert!(s.delete(&keys[3], Condition::Any).unwrap());
    assert_eq!(
        all_pages(s, "list/", 2),
        [keys[1].clone(), keys[2].clone(), keys[4].clone()]
    );
}

pub fn count_prefix_counts_exactly_the_prefix(s: &dyn KvStore) {
    assert_eq!(s.count_prefix("a/").unwrap(), 0);
    for k in [
        "a", "a.", "a/", "a/x", "a/y/z", "a0", "a0/x", "`", "b/x", "A/x", "p%/1", "p_/1", "pX/1",
        "é/1", "é/2",
    ] {
        put(s, k, b"v");
    }
    assert_eq!(s.count_prefix("a/").unwrap(), 3);
    assert_eq!(s.count_prefix("a0").unwrap(), 2);
    assert_eq!(s.count_prefix("p%/").unwrap(), 1);
    assert_eq!(s.count_prefix("p_/").unwrap(), 1);
    assert_eq!(s.count_prefix("é/").unwrap(), 2);
    assert_eq!(s.count_prefix("zz").unwrap(), 0);
    assert_eq!(s.count_prefix("").unwrap(), 15);
    assert!(s.delete("a/x", Condition::Any).unwrap());
    assert_eq!(s.count_prefix("a/").unwrap(), 2);
    // Past one listing page (1,000 keys).
    for i in 0..1_050 {
        put(s, &format!("n/{i:04}"), b"");
    }
    assert_eq!(s.count_prefix("n/").unwrap(), 1_050);
}

pub fn unicode_keys(s: &dyn KvStore) {
    let keys = [
        "ключ/1",
        "キー/1",
        "κλειδί/é",
        "emoji/😀/🎉",
        "mixed/a\u{301}",
    ];
    for k in keys {
        put(s, k, k.as_bytes());
    }
    for k in keys {
        assert_eq!(value(s, k).as_deref(), Some(k.as_bytes()), "{k}");
    }
    // Composed and decomposed forms are different keys.
    assert_eq!(s.get("mixed/\u{e1}").unwrap(), None);
    assert_eq!(all_pages(s, "emoji/😀/", 10), ["emoji/😀/🎉"]);
    assert_eq!(all_pages(s, "ключ/", 10), ["ключ/1"]);
    // Prefix ending in a multi-octet character.
    put(s, "κλειδί/éa", b"v");
    put(s, "κλειδί/ê", b"v");
    assert_eq!(all_pages(s, "κλειδί/é", 10), ["κλειδί/é", "κλειδί/éa"]);
    // The largest code point.
    put(s, "max/\u{10FFFF}", b"v");
    put(s, "max/\u{10FFFF}\u{10FFFF}", b"v");
    put(s, "max0", b"v");
    assert_eq!(
        all_pages(s, "max/\u{10FFFF}", 10),
        ["max/\u{10FFFF}", "max/\u{10FFFF}\u{10FFFF}"]
    );
}

pub fn empty_value(s: &dyn KvStore) {
    let v = s.put("k", b"", Condition::Absent).unwrap();
    let e = s.get("k").unwrap().expect("an empty value is a value");
    assert_eq!((e.value.len(), e.version), (0, v));
    assert_eq!(
        s.put("k", b"x", Condition::Absent),
        Err(StoreError::Conflict)
    );
    assert_eq!(all_pages(s, "k", 10), ["k"]);
    assert!(s.delete("k", Condition::Version(v)).unwrap());
}

pub fn binary_value(s: &dyn KvStore) {
    let all: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
    put(s, "bin", &all);
    assert_eq!(value(s, "bin"), Some(all));
}

pub fn large_value_1_mib(s: &dyn KvStore) {
    let big: Vec<u8> = (0..(1usize << 20)).map(|i| (i * 7 % 251) as u8).collect();
    let v = put(s, "big", &big);
    let e = s.get("big").unwrap().unwrap();
    assert_eq!(e.version, v);
    assert!(e.value == big, "1 MiB value round-trips");
    let got = s.get_many(&["big".to_string()]).unwrap();
    assert!(got[0].as_ref().unwrap().value == big);
}

pub fn too_large_key(s: &dyn KvStore) {
    let longest = "k".repeat(MAX_KEY_OCTETS);
    put(s, &longest, b"v");
    assert_eq!(value(s, &longest).as_deref(), Some(&b"v"[..]));
    let too_long = "k".repeat(MAX_KEY_OCTETS + 1);
    for cond in [Condition::Any, Condition::Absent, Condition::Version(1)] {
        assert_eq!(s.put(&too_long, b"v", cond), Err(StoreError::TooLarge));
    }
    // Counted in octets, not characters.
    let wide = "é".repeat(MAX_KEY_OCTETS / 2 + 1);
    assert_eq!(
        s.put(&wide, b"v", Condition::Any),
        Err(StoreError::TooLarge)
    );
    assert_eq!(s.get(&too_long).unwrap(), None);
}

pub fn too_large_value(s: &dyn KvStore) {
    let huge = vec![0u8; MAX_VALUE_OCTETS + 1];
    assert_eq!(s.put("k", &huge, Condition::Any), Err(StoreError::TooLarge));
    assert_eq!(s.get("k").unwrap(), None);
}

pub fn get_many_in_order_with_missing_keys(s: &dyn KvStore) {
    let va = put(s, "a", b"A");
    let vc = put(s, "c", b"C");
    let keys: Vec<String> = ["c", "missing", "a", "b"]
        .iter()
        .map(|k| k.to_string())
        .collect();
    let got = s.get_many(&keys).unwrap();
    assert_eq!(got.len(), 4);
    assert_eq!(
        got[0].as_ref().map(|e| (e.value.as_slice(), e.version)),
        Some((&b"C"[..], vc))
    );
    assert_eq!(got[1], None);
    assert_eq!(
        got[2].as_ref().map(|e| (e.value.as_slice(), e.version)),
        Some((&b"A"[..], va))
    );
    assert_eq!(got[3], None);
}

pub fn get_many_of_nothing(s: &dyn KvStore) {
    assert_eq!(s.get_many(&[]).unwrap(), Vec::new());
    let got = s.get_many(&["x".to_string(), "y".to_string()]).unwrap();
    assert_eq!(got, [None, None]);
}

pub fn get_many_with_duplicates(s: &dyn KvStore) {
    put(s, "a", b"A");
    let keys: Vec<String> = ["a", "b", "a"].iter().map(|k| k.to_string()).collect();
    let got = s.get_many(&keys).unwrap();
    assert_eq!(got.len(), 3);
    assert_eq!(got[0], got[2]);
    assert!(got[0].is_some());
    assert_eq!(got[1], None);
}
