//! The two ports the core is written against: persistence ([`Store`]) and
//! outbound HTTP ([`HttpOut`]), mirroring the WIT `store` and `http-out`
//! imports. The component's bindings implement them with the real imports;
//! native tests use [`MemoryStore`] and scripted HTTP fakes.

use std::collections::BTreeMap;
use std::fmt;

/// A stored value and its version (never 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The value.
    pub value: Vec<u8>,
    /// Its version; changes on every write.
    pub version: u64,
}

/// When a write may happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// Unconditionally.
    Any,
    /// Only if the key holds no value.
    Absent,
    /// Only if the key holds exactly this version.
    Version(u64),
}

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The write condition did not hold; nothing was written.
    Conflict,
    /// The backend is unreachable; nothing is known to be written.
    Unavailable(String),
    /// Key or value too large for the backend.
    TooLarge,
    /// Any other failure.
    Other(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Conflict => f.write_str("store write conflict"),
            StoreError::Unavailable(m) => write!(f, "store unavailable: {m}"),
            StoreError::TooLarge => f.write_str("store value too large"),
            StoreError::Other(m) => write!(f, "store error: {m}"),
        }
    }
}

impl std::error::Error for StoreError {}

/// One page of a prefix listing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyPage {
    /// Keys in ascending octet order.
    pub keys: Vec<String>,
    /// Cursor for the next page; `None` on the last page.
    pub next: Option<String>,
}

impl KeyPage {
    /// A page from up to `limit + 1` keys read in order: the extra key, if
    /// present, only tells that another page follows (its cursor is the
    /// last key kept). Every backend lists this way.
    pub fn from_overfetched(mut keys: Vec<String>, limit: usize) -> KeyPage {
        let next = if keys.len() > limit {
            keys.truncate(limit);
            keys.last().cloned()
        } else {
            None
        };
        KeyPage { keys, next }
    }
}

/// Persistence, with the semantics of the WIT `store` interface.
pub trait Store {
    /// Reads one key.
    fn get(&mut self, key: &str) -> Result<Option<Entry>, StoreError>;
    /// Reads several keys; one answer per key, in order.
    fn get_many(&mut self, keys: &[String]) -> Result<Vec<Option<Entry>>, StoreError>;
    /// Writes if `cond` holds; returns the new version.
    fn put(&mut self, key: &str, value: &[u8], cond: Condition) -> Result<u64, StoreError>;
    /// Deletes if `cond` holds; returns whether a value was deleted.
    fn delete(&mut self, key: &str, cond: Condition) -> Result<bool, StoreError>;
    /// Lists keys with `prefix` strictly after `after`, at most `limit`.
    fn list_keys(
        &mut self,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<KeyPage, StoreError>;
}

/// One outbound POST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// Absolute URL.
    pub url: String,
    /// Headers in order.
    pub headers: Vec<(String, String)>,
    /// Body octets.
    pub body: Vec<u8>,
    /// Total timeout, ms.
    pub timeout_ms: u32,
}

impl HttpRequest {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

/// A push service's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The first octets of the body.
    pub body_prefix: Vec<u8>,
}

impl HttpResponse {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Why no answer was received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// Timed out.
    Timeout,
    /// Connection failed or broke.
    Connection(String),
    /// Name did not resolve.
    Dns(String),
    /// TLS failed.
    Tls(String),
    /// The host's policy refused the destination.
    DeniedByPolicy(String),
    /// A host size limit was exceeded.
    TooLarge,
    /// Anything else.
    Other(String),
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Timeout => f.write_str("timed out"),
            HttpError::Connection(m) => write!(f, "connection failed: {m}"),
            HttpError::Dns(m) => write!(f, "DNS failure: {m}"),
            HttpError::Tls(m) => write!(f, "TLS failure: {m}"),
            HttpError::DeniedByPolicy(m) => write!(f, "refused by policy: {m}"),
            HttpError::TooLarge => f.write_str("too large"),
            HttpError::Other(m) => write!(f, "HTTP failure: {m}"),
        }
    }
}

impl std::error::Error for HttpError {}

/// A batch started with [`HttpOut::start_batch`]: either its answers
/// already, or the host's handle for `finish-batch`.
#[derive(Debug)]
pub enum StartedBatch {
    /// Sent synchronously; these are the answers.
    Answered(Vec<Result<HttpResponse, HttpError>>),
    /// On the wire; collect with [`HttpOut::finish_batch`].
    Handle(u64),
}

/// Outbound HTTP, with the semantics of the WIT `http-out` interface.
pub trait HttpOut {
    /// Sends every request (concurrently) and returns one result each, in order.
    fn send_batch(&mut self, requests: Vec<HttpRequest>) -> Vec<Result<HttpResponse, HttpError>>;

    /// Starts a batch without waiting for it (`start-batch`). The default
    /// sends it at once with [`HttpOut::send_batch`].
    fn start_batch(&mut self, requests: Vec<HttpRequest>) -> StartedBatch {
        StartedBatch::Answered(self.send_batch(requests))
    }

    /// The answers of a started batch (`finish-batch`): one per request of
    /// `len` requests, in order; answers the host did not give are
    /// reported as [`HttpError::Other`].
    fn finish_batch(
        &mut self,
        started: StartedBatch,
        len: usize,
    ) -> Vec<Result<HttpResponse, HttpError>> {
        let mut answers = match started {
            StartedBatch::Answered(a) => a,
            StartedBatch::Handle(h) => self.finish_handle(h),
        };
        answers.truncate(len);
        while answers.len() < len {
            answers.push(Err(HttpError::Other("the host gave no answer".into())));
        }
        answers
    }

    /// Collects a batch by the host's handle. Only hosts that return
    /// [`StartedBatch::Handle`] are asked; the default answers nothing.
    fn finish_handle(&mut self, _handle: u64) -> Vec<Result<HttpResponse, HttpError>> {
        Vec::new()
    }
}

/// Log levels of the host's logger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// Debug.
    Debug,
    /// Info.
    Info,
    /// Warning.
    Warn,
    /// Error.
    Error,
}

/// Which push a [`PushOutcome`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushKind {
    /// A `PushVerification`.
    Verification,
    /// A `StateChange`.
    StateChange,
}

/// What the plugin did after a push service's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushAction {
    /// The push service took the push.
    Delivered,
    /// Kept to be sent again later.
    Deferred,
    /// Given up for this push; the subscription stays.
    Dropped,
    /// The subscription was destroyed.
    Destroyed,
    /// Answered 413 and re-sent as one push per account.
    Split,
}

/// One push sent and what came of it (the WIT `host.report-push`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushOutcome {
    /// The PushSubscription id.
    pub subscription_id: String,
    /// The push service's origin; never the URL's path.
    pub origin: String,
    /// Verification or state change.
    pub kind: PushKind,
    /// The answer class (`2xx`, `410`, `429`, `timeout`...).
    pub answer: String,
    /// What the plugin did.
    pub action: PushAction,
}

/// The host's logger.
pub trait Log {
    /// Writes one line. MUST NOT be given secrets.
    fn log(&mut self, level: LogLevel, message: &str);

    /// Reports one push's outcome (once per push request acted on). The
    /// default drops it.
    fn push_outcome(&mut self, outcome: PushOutcome) {
        let _ = outcome;
    }
}

/// A logger that drops everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoLog;

impl Log for NoLog {
    fn log(&mut self, _level: LogLevel, _message: &str) {}
}

/// A logger that keeps every log line and push outcome, for tests.
#[derive(Debug, Default, Clone)]
pub struct RecordingLog {
    /// The lines written so far, in order.
    pub lines: Vec<(LogLevel, String)>,
    /// The outcomes reported so far, in order.
    pub outcomes: Vec<PushOutcome>,
}

impl Log for RecordingLog {
    fn log(&mut self, level: LogLevel, message: &str) {
        self.lines.push((level, message.to_string()));
    }

    fn push_outcome(&mut self, outcome: PushOutcome) {
        self.outcomes.push(outcome);
    }
}

/// An in-memory [`Store`] for native tests and examples. Not shared between
/// processes.
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    map: BTreeMap<String, Entry>,
    next_version: u64,
    /// When set, every operation fails with `Unavailable` (failure tests).
    pub fail: bool,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of keys stored.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Every key, for assertions.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.map.keys().map(String::as_str)
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.fail {
            Err(StoreError::Unavailable("memory store set to fail".into()))
        } else {
            Ok(())
        }
    }

    fn holds(&self, key: &str, cond: Condition) -> bool {
        match cond {
            Condition::Any => true,
            Condition::Absent => !self.map.contains_key(key),
            Condition::Version(v) => self.map.get(key).is_some_and(|e| e.version == v),
        }
    }
}

impl Store for MemoryStore {
    fn get(&mut self, key: &str) -> Result<Option<Entry>, StoreError> {
        self.check()?;
        Ok(self.map.get(key).cloned())
    }

    fn get_many(&mut self, keys: &[String]) -> Result<Vec<Option<Entry>>, StoreError> {
        self.check()?;
        Ok(keys.iter().map(|k| self.map.get(k).cloned()).collect())
    }

    fn put(&mut self, key: &str, value: &[u8], cond: Condition) -> Result<u64, StoreError> {
        self.check()?;
        if !self.holds(key, cond) {
            return Err(StoreError::Conflict);
        }
        self.next_version += 1;
        let version = self.next_version;
        self.map.insert(
            key.to_string(),
            Entry {
                value: value.to_vec(),
                version,
            },
        );
        Ok(version)
    }

    fn delete(&mut self, key: &str, cond: Condition) -> Result<bool, StoreError> {
        self.check()?;
        if !self.holds(key, cond) {
            return Err(StoreError::Conflict);
        }
        Ok(self.map.remove(key).is_some())
    }

    fn list_keys(
        &mut self,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<KeyPage, StoreError> {
        self.check()?;
        let limit = limit.max(1) as usize;
        let start = match after {
            Some(a) if a >= prefix => std::ops::Bound::Excluded(a.to_string()),
            _ => std::ops::Bound::Included(prefix.to_string()),
        };
        let keys: Vec<String> = self
            .map
            .range((start, std::ops::Bound::Unbounded))
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(prefix))
            .take(limit + 1)
            .cloned()
            .collect();
        Ok(KeyPage::from_overfetched(keys, limit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_store_cas_and_listing() {
        let mut s = MemoryStore::new();
        let v1 = s.put("a/1", b"x", Condition::Absent).unwrap();
        assert_eq!(
            s.put("a/1", b"y", Condition::Absent),
            Err(StoreError::Conflict)
        );
        let v2 = s.put("a/1", b"y", Condition::Version(v1)).unwrap();
        assert_ne!(v1, v2);
        assert_eq!(
            s.put("a/1", b"z", Condition::Version(v1)),
            Err(StoreError::Conflict)
        );
        for i in 2..=5 {
            s.put(&format!("a/{i}"), b"v", Condition::Any).unwrap();
        }
        s.put("b/1", b"v", Condition::Any).unwrap();
        let p1 = s.list_keys("a/", None, 2).unwrap();
        assert_eq!(p1.keys, vec!["a/1", "a/2"]);
        let p2 = s.list_keys("a/", p1.next.as_deref(), 2).unwrap();
        assert_eq!(p2.keys, vec!["a/3", "a/4"]);
        let p3 = s.list_keys("a/", p2.next.as_deref(), 2).unwrap();
        assert_eq!(p3.keys, vec!["a/5"]);
        assert_eq!(p3.next, None);
        assert_eq!(
            s.delete("a/1", Condition::Version(v1)),
            Err(StoreError::Conflict)
        );
        assert!(s.delete("a/1", Condition::Version(v2)).unwrap());
        assert!(!s.delete("a/1", Condition::Any).unwrap());
    }
}
