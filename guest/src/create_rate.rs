//! The per-owner creation rate limit (`max_creates_per_hour`, B3 in
//! docs/behaviour.md): how many subscriptions an owner created in the last
//! hour, kept in the store under [`repo::rate_key`](crate::repo::rate_key),
//! read and rewritten by every create (compare-and-swap).
//!
//! The record counts creates per minute: at most 66 buckets, however high
//! the limit, so a create costs the same whether the operator allows 20
//! an hour or 100,000. (It held one time per create before, read and
//! rewritten in full by every create: under a limit of 10,000 or more an
//! hour that was over 100 KiB per create, and the guest's memory grew
//! with it.)
//!
//! A create counts for at least an hour and at most a minute longer (its
//! bucket is dropped once the last second it covers is an hour old), so
//! no hour ever holds more creates than the limit.

use serde::{Deserialize, Serialize};

use crate::json;

/// Width of one bucket, seconds.
const BUCKET_SECS: u64 = 60;
/// How long a create counts against the limit, seconds.
const WINDOW_SECS: u64 = 3600;
/// How far ahead of this host's clock a bucket may start and still count
/// (another host's clock may be ahead), seconds.
pub const FUTURE_SKEW_SECS: u64 = 300;

/// One entry of the stored record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
enum Entry {
    /// `[minute start (Unix seconds), creates in that minute]`.
    Bucket(u64, u64),
    /// One create's time (Unix seconds): the record of earlier versions,
    /// still read.
    Time(u64),
}

/// The creates of one owner still counting against the limit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateLog {
    /// `(minute start, creates)`, oldest first, one per minute.
    buckets: Vec<(u64, u64)>,
}

impl CreateLog {
    /// Reads a stored record, either form. A record that does not parse
    /// reads as empty (as before: the limit fails open rather than
    /// refusing every create of the owner for ever).
    pub fn from_record(bytes: &[u8]) -> Self {
        let entries: Vec<Entry> = json::from_record(bytes).unwrap_or_default();
        let mut counts: Vec<(u64, u64)> = entries
            .into_iter()
            .map(|e| match e {
                Entry::Bucket(at, n) => (minute_of(at), n),
                Entry::Time(t) => (minute_of(t), 1),
            })
            .collect();
        // Sorted, then merged: a record in any order (or an operator's
        // edit) reads in O(n log n).
        counts.sort_unstable_by_key(|&(start, _)| start);
        let mut buckets: Vec<(u64, u64)> = Vec::with_capacity(counts.len());
        for (start, n) in counts {
            match buckets.last_mut() {
                Some(last) if last.0 == start => last.1 = last.1.saturating_add(n),
                _ => buckets.push((start, n)),
            }
        }
        CreateLog { buckets }
    }

    /// The record to store: one `[start, count]` pair per minute.
    pub fn to_record(&self) -> Vec<u8> {
        let entries: Vec<Entry> = self
            .buckets
            .iter()
            .map(|&(start, n)| Entry::Bucket(start, n))
            .collect();
        json::to_record(&entries)
    }

    /// Drops the buckets whose every second is at least an hour before
    /// `now` (Unix seconds), and those more than [`FUTURE_SKEW_SECS`] after
    /// it (a clock set far ahead, or an edited record, must not hold the
    /// limit for ever): at most 66 buckets are left.
    pub fn expire(&mut self, now: u64) {
        self.buckets.retain(|&(start, _)| {
            start.saturating_add(BUCKET_SECS + WINDOW_SECS) > now.saturating_add(1)
                && start <= now.saturating_add(FUTURE_SKEW_SECS)
        });
    }

    /// Creates still counting.
    pub fn count(&self) -> u64 {
        self.buckets
            .iter()
            .fold(0, |sum, &(_, n)| sum.saturating_add(n))
    }

    /// Counts one create at `now` (Unix seconds).
    pub fn record(&mut self, now: u64) {
        let start = minute_of(now);
        match self.buckets.binary_search_by_key(&start, |&(s, _)| s) {
            Ok(i) => self.buckets[i].1 = self.buckets[i].1.saturating_add(1),
            Err(i) => self.buckets.insert(i, (start, 1)),
        }
    }
}

/// The start of the minute holding `at` (Unix seconds).
fn minute_of(at: u64) -> u64 {
    at - at % BUCKET_SECS
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_800_000_000; // a minute boundary: 1_800_000_000 % 60 == 0

    fn log_at(times: &[u64]) -> CreateLog {
        let mut log = CreateLog::default();
        for &t in times {
            log.record(t);
        }
        log
    }

    fn count_at(mut log: CreateLog, now: u64) -> u64 {
        log.expire(now);
        log.count()
    }

    #[test]
    fn a_create_counts_for_an_hour_and_at_most_a_minute_longer() {
        assert_eq!(T0 % 60, 0);
        // (create time, the last second it counts, the first it does not)
        let cases = [
            (T0, T0 + 3599, T0 + 3600 + 59),
            (T0 + 59, T0 + 59 + 3599, T0 + 3600 + 59),
            (T0 + 30, T0 + 30 + 3599, T0 + 3600 + 59),
        ];
        for (at, still, gone) in cases {
            let log = log_at(&[at]);
            assert_eq!(count_at(log.clone(), still), 1, "created {at}, at {still}");
            assert_eq!(count_at(log.clone(), gone), 0, "created {at}, at {gone}");
            // Never dropped before its hour is over.
            for now in at..at + 3600 {
                assert_eq!(count_at(log.clone(), now), 1, "created {at}, at {now}");
            }
        }
    }

    #[test]
    fn creates_in_one_minute_share_a_bucket_and_the_record_stays_small() {
        let mut log = CreateLog::default();
        // 10,000 creates spread over one hour, every 0.36 s.
        for i in 0..10_000u64 {
            log.record(T0 + i * 36 / 100);
        }
        assert_eq!(log.count(), 10_000);
        assert_eq!(log.buckets.len(), 60);
        let bytes = log.to_record();
        assert!(bytes.len() < 1500, "{} octets", bytes.len());
        assert_eq!(CreateLog::from_record(&bytes), log);
    }

    #[test]
    fn a_record_of_create_times_from_earlier_versions_still_counts() {
        // Today's record text as earlier versions wrote it.
        const OLD: &[u8] = b"[1800000000,1800000010,1800000075]";
        let log = CreateLog::from_record(OLD);
        assert_eq!(log.count(), 3);
        assert_eq!(log.buckets, vec![(T0, 2), (T0 + 60, 1)]);
        assert_eq!(count_at(log.clone(), T0 + 3658), 3);
        assert_eq!(count_at(log, T0 + 3659), 1);
    }

    #[test]
    fn the_record_is_written_as_minute_buckets() {
        let log = log_at(&[T0 + 5, T0 + 6, T0 + 61]);
        assert_eq!(log.to_record(), b"[[1800000000,2],[1800000060,1]]".to_vec());
    }

    #[test]
    fn a_record_that_does_not_parse_reads_as_empty() {
        for bad in [&b"{}"[..], b"[\"x\"]", b"[[1,2,3]]", b"not json", b""] {
            assert_eq!(CreateLog::from_record(bad).count(), 0, "{bad:?}");
        }
    }

    #[test]
    fn a_hostile_record_cannot_overflow_or_hold_the_limit_for_ever() {
        let text = format!(
            "[[{T0},18446744073709551615],[{},5],[18446744073709551615,7]]",
            T0 + 60
        );
        let mut log = CreateLog::from_record(text.as_bytes());
        assert_eq!(log.count(), u64::MAX, "saturates");
        log.expire(T0 + 120);
        assert_eq!(log.buckets.len(), 2, "the far-future bucket is dropped");
        // A bucket a little ahead (another host's clock) still counts.
        let mut ahead = log_at(&[T0 + FUTURE_SKEW_SECS]);
        ahead.expire(T0);
        assert_eq!(ahead.count(), 1);
    }

    #[test]
    fn a_record_in_any_order_reads_merged_and_sorted() {
        let log = CreateLog::from_record(
            format!("[[{},1],{},[{T0},2],{}]", T0 + 60, T0 + 61, T0 + 5).as_bytes(),
        );
        assert_eq!(log.buckets, vec![(T0, 3), (T0 + 60, 2)]);
    }
}
