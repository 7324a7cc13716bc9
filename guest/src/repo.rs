//! The key layout in the store and the read/write operations on it.
//!
//! | key | value |
//! | --- | --- |
//! | `sub/<id>` | a [`Subscription`] as JSON |
//! | `pending/<id>` | the subscription's undelivered StateChange and its retry state |
//! | `owner/<owner-key>/<id>` | empty: the per-owner index |
//! | `dcid/<owner-key>/<b64(deviceClientId)>` | the id holding that deviceClientId (unique per owner, created with `absent`) |
//! | `rate/<owner-key>` | creates in the last hour, per minute (JSON array of `[minute start, count]`; earlier versions wrote one Unix time per create, still read) |
//! | `due/<ms, 20 digits>/<kind>/<id>` | empty: work due at that time (`v` verification, `p` pending push, `x` expiry) |
//! | `vapid/key` | the generated VAPID key |
//! | `vapid/in-force` | the public VAPID key the subscriptions were last reconciled with |
//!
//! `<owner-key>` is `u<b64(username)>.n` or `u<b64(username)>.c<b64(credential)>`;
//! base64url never contains `.` or `/`, so every prefix is unambiguous.
//!
//! This module is the only place that spells a key: the rest of the guest
//! and the host (metrics, the sandbox's undo journal) use its functions and
//! constants.

use crate::crypto::b64url_encode;
use crate::ports::{Condition, Store, StoreError};
use crate::subscription::{Owner, Subscription};

/// Prefix of every subscription record.
pub const SUB_PREFIX: &str = "sub/";

/// Key of a subscription record.
pub fn sub_key(id: &str) -> String {
    format!("{SUB_PREFIX}{id}")
}

/// The subscription id of a [`sub_key`], `None` for any other key.
pub fn sub_id_of_key(key: &str) -> Option<&str> {
    key.strip_prefix(SUB_PREFIX)
}

/// Prefix of every pending-change record.
pub const PENDING_PREFIX: &str = "pending/";

/// Key of a subscription's pending-change record.
pub fn pending_key(id: &str) -> String {
    format!("{PENDING_PREFIX}{id}")
}

/// Prefix shared by every owner of one user name.
pub fn user_prefix(username: &str) -> String {
    format!("owner/u{}.", b64url_encode(username.as_bytes()))
}

/// The owner part of index keys.
pub fn owner_key(owner: &Owner) -> String {
    let u = b64url_encode(owner.username.as_bytes());
    match &owner.credential_id {
        None => format!("u{u}.n"),
        Some(c) => format!("u{u}.c{}", b64url_encode(c.as_bytes())),
    }
}

/// Prefix of one owner's index entries.
pub fn owner_prefix(owner: &Owner) -> String {
    format!("owner/{}/", owner_key(owner))
}

/// Key of the deviceClientId reservation.
pub fn dcid_key(owner: &Owner, device_client_id: &str) -> String {
    format!(
        "dcid/{}/{}",
        owner_key(owner),
        b64url_encode(device_client_id.as_bytes())
    )
}

/// Key of an owner's create-rate record.
pub fn rate_key(owner: &Owner) -> String {
    format!("rate/{}", owner_key(owner))
}

/// Kinds of due work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DueKind {
    /// Re-send a PushVerification.
    Verification,
    /// Send a pending StateChange.
    Push,
    /// Destroy the subscription if it has expired.
    Expiry,
}

impl DueKind {
    fn tag(self) -> &'static str {
        match self {
            DueKind::Verification => "v",
            DueKind::Push => "p",
            DueKind::Expiry => "x",
        }
    }
}

/// Prefix of all due entries.
pub const DUE_PREFIX: &str = "due/";

/// Key of a due entry.
pub fn due_key(at_ms: u64, kind: DueKind, id: &str) -> String {
    format!("due/{at_ms:020}/{}/{id}", kind.tag())
}

/// A parsed due key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueEntry {
    /// The key itself.
    pub key: String,
    /// When, Unix ms.
    pub at_ms: u64,
    /// What.
    pub kind: DueKind,
    /// Subscription id.
    pub id: String,
}

/// Parses a due key.
pub fn parse_due_key(key: &str) -> Option<DueEntry> {
    let rest = key.strip_prefix(DUE_PREFIX)?;
    let (at, rest) = rest.split_once('/')?;
    let (kind, id) = rest.split_once('/')?;
    let kind = match kind {
        "v" => DueKind::Verification,
        "p" => DueKind::Push,
        "x" => DueKind::Expiry,
        _ => return None,
    };
    Some(DueEntry {
        key: key.to_string(),
        at_ms: at.parse().ok()?,
        kind,
        id: id.to_string(),
    })
}

/// Prefix of the VAPID keys' records.
pub const VAPID_PREFIX: &str = "vapid/";

/// Key of the generated VAPID key.
pub const VAPID_KEY: &str = "vapid/key";

/// Key of the public VAPID key the subscriptions were last reconciled with
/// (base64url): when the key in force differs, the configured key was
/// replaced and the subscriptions of other keys are destroyed.
pub const VAPID_IN_FORCE: &str = "vapid/in-force";

/// Page size for listings.
const PAGE: u32 = 200;

/// Reads a subscription and its version. A record that does not parse is
/// reported as `Other` (never silently dropped).
pub fn load(store: &mut dyn Store, id: &str) -> Result<Option<(Subscription, u64)>, StoreError> {
    match store.get(&sub_key(id))? {
        None => Ok(None),
        Some(e) => {
            let sub = Subscription::from_record(&e.value)
                .map_err(|err| StoreError::Other(format!("corrupt record sub/{id}: {err}")))?;
            Ok(Some((sub, e.version)))
        }
    }
}

/// Reads several subscriptions (missing ones are skipped).
pub fn load_many(
    store: &mut dyn Store,
    ids: &[String],
) -> Result<Vec<(Subscription, u64)>, StoreError> {
    let keys: Vec<String> = ids.iter().map(|id| sub_key(id)).collect();
    let mut out = Vec::with_capacity(ids.len());
    for (id, e) in ids.iter().zip(store.get_many(&keys)?) {
        if let Some(e) = e {
            let sub = Subscription::from_record(&e.value)
                .map_err(|err| StoreError::Other(format!("corrupt record sub/{id}: {err}")))?;
            out.push((sub, e.version));
        }
    }
    Ok(out)
}

/// Serializes a subscription.
pub fn encode(sub: &Subscription) -> Vec<u8> {
    sub.to_record().into_bytes()
}

/// Writes a subscription under `cond`; returns the new version.
pub fn save(store: &mut dyn Store, sub: &Subscription, cond: Condition) -> Result<u64, StoreError> {
    store.put(&sub_key(&sub.id), &encode(sub), cond)
}

/// Every key under `prefix`, following cursors.
pub fn list_all(store: &mut dyn Store, prefix: &str) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.list_keys(prefix, after.as_deref(), PAGE)?;
        out.extend(page.keys);
        match page.next {
            Some(n) => after = Some(n),
            None => return Ok(out),
        }
    }
}

/// The ids of one owner's subscriptions.
pub fn owner_ids(store: &mut dyn Store, owner: &Owner) -> Result<Vec<String>, StoreError> {
    let prefix = owner_prefix(owner);
    Ok(list_all(store, &prefix)?
        .into_iter()
        .filter_map(|k| k.strip_prefix(&prefix).map(str::to_string))
        .collect())
}

/// The ids of every subscription of a user name, whatever the credential.
pub fn user_ids(store: &mut dyn Store, username: &str) -> Result<Vec<String>, StoreError> {
    let prefix = user_prefix(username);
    Ok(list_all(store, &prefix)?
        .into_iter()
        .filter_map(|k| k.rsplit_once('/').map(|(_, id)| id.to_string()))
        .collect())
}

/// Erases a subscription and everything that points to it: the pending
/// record, the due entry of a verification still being sent, the owner
/// index, the deviceClientId reservation, the record itself (so url and
/// keys are gone) and the due entry of its expiry. The due entry of a
/// pending push (due within the retry cap) is left for `tick`, which drops
/// it when it finds no pending record. Returns whether the record existed.
///
/// The order is the contract, for a store that fails part-way (the call
/// then returns its error):
///
/// - what `tick` would send from (the owed change, the verification
///   retry) goes first, so a subscription that is no longer listed is never
///   pushed to;
/// - then the owner index: until it goes, the subscription is listed, and
///   a repeated destroy (or the erasure of its user or credential) finds
///   it again;
/// - then the reservation, which thus never outlives the index (so a
///   second subscription can never hold the same deviceClientId) and
///   always outlives the record (so a reservation without its record is
///   always a leftover, which a create may take over);
/// - the record, then its expiry entry last: whatever stays behind once
///   the index is gone is erased by `tick` at the expiry. Until then the
///   record can still be read, updated or destroyed by its id, and a
///   create with its deviceClientId names it in `existingId`.
pub fn erase(store: &mut dyn Store, sub: &Subscription) -> Result<bool, StoreError> {
    store.delete(&pending_key(&sub.id), Condition::Any)?;
    if let Some(at) = sub.verification.next_attempt_ms {
        store.delete(&due_key(at, DueKind::Verification, &sub.id), Condition::Any)?;
    }
    store.delete(
        &format!("{}{}", owner_prefix(&sub.owner), sub.id),
        Condition::Any,
    )?;
    // Only remove the reservation if it still names this subscription.
    let dk = dcid_key(&sub.owner, &sub.device_client_id);
    if let Some(e) = store.get(&dk)? {
        if e.value == sub.id.as_bytes() {
            match store.delete(&dk, Condition::Version(e.version)) {
                Ok(_) | Err(StoreError::Conflict) => {}
                Err(err) => return Err(err),
            }
        }
    }
    let existed = store.delete(&sub_key(&sub.id), Condition::Any)?;
    store.delete(
        &due_key(sub.expires * 1000, DueKind::Expiry, &sub.id),
        Condition::Any,
    )?;
    Ok(existed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_keys_are_prefix_free() {
        let a = Owner {
            username: "al".into(),
            credential_id: None,
        };
        let b = Owner {
            username: "alice".into(),
            credential_id: Some("c/1".into()),
        };
        assert!(!owner_prefix(&b).starts_with(&user_prefix(&a.username)));
        assert!(owner_prefix(&b).starts_with(&user_prefix(&b.username)));
        assert!(!owner_key(&b).contains('/'));
    }

    #[test]
    fn due_keys_sort_by_time_and_parse() {
        let k1 = due_key(999, DueKind::Verification, "a");
        let k2 = due_key(1000, DueKind::Push, "b");
        assert!(k1 < k2);
        let e = parse_due_key(&k2).unwrap();
        assert_eq!((e.at_ms, e.kind, e.id.as_str()), (1000, DueKind::Push, "b"));
        assert_eq!(parse_due_key("due/x/v/a"), None);
    }
}
