//! Reading what is in the store: subscription, pending and creation-rate
//! records, due keys. A store is shared with other versions and other hosts, and an
//! operator may edit it, so reading MUST fail cleanly, never panic.

use jmap_web_push_guest::create_rate::CreateLog;
use jmap_web_push_guest::delivery::pending::Pending;
use jmap_web_push_guest::repo;
use jmap_web_push_guest::subscription::Subscription;

/// The input as a subscription record, a pending record, a creation-rate
/// record and a due key.
/// Properties: a record that reads writes back to a record that reads the
/// same; a due key that parses names what `due_key` would write, and its
/// parts.
pub fn stored_records(data: &[u8]) {
    if let Ok(sub) = Subscription::from_record(data) {
        let again = Subscription::from_record(sub.to_record().as_bytes()).unwrap_or_else(|e| {
            panic!("a subscription record read, but its rewrite does not: {e}")
        });
        assert_eq!(again, sub, "a subscription changed on rewrite");
    }
    if let Ok(pending) = Pending::from_record(data) {
        let again = Pending::from_record(&pending.to_record())
            .unwrap_or_else(|e| panic!("a pending record read, but its rewrite does not: {e}"));
        assert_eq!(again, pending, "a pending record changed on rewrite");
    }
    let rate = CreateLog::from_record(data);
    let again = CreateLog::from_record(&rate.to_record());
    assert_eq!(again, rate, "a creation-rate record changed on rewrite");
    let text = String::from_utf8_lossy(data);
    if let Some(due) = repo::parse_due_key(&text) {
        assert_eq!(due.key, text);
        let written = repo::due_key(due.at_ms, due.kind, &due.id);
        let reread = repo::parse_due_key(&written)
            .unwrap_or_else(|| panic!("due_key wrote {written:?}, which does not parse"));
        assert_eq!(
            (reread.at_ms, reread.kind, reread.id),
            (due.at_ms, due.kind, due.id)
        );
    }
    if let Some(id) = repo::sub_id_of_key(&text) {
        assert_eq!(repo::sub_key(id), text);
    }
}
