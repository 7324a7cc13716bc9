//! RFC 8620 §1.4 `UTCDate` parsing and formatting (RFC 3339 with `Z`), on
//! the `time` crate.

use std::fmt;

use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, PrimitiveDateTime};

/// Why a string is not a UTCDate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UtcDateError(pub String);

impl fmt::Display for UtcDateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not a UTCDate (expected YYYY-MM-DDTHH:MM:SSZ)",
            self.0
        )
    }
}

impl std::error::Error for UtcDateError {}

/// Formats Unix seconds as `YYYY-MM-DDTHH:MM:SSZ` (dates past year 9999,
/// which RFC 3339 cannot write, as its last second).
pub fn format(unix_secs: u64) -> String {
    let at = i64::try_from(unix_secs)
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .unwrap_or_else(|| PrimitiveDateTime::MAX.assume_utc());
    at.replace_nanosecond(0)
        .unwrap_or(at)
        .format(&Rfc3339)
        .unwrap_or_else(|_| "9999-12-31T23:59:59Z".to_owned())
}

/// Parses a UTCDate into Unix seconds (fractional seconds are truncated).
/// Only the `Z` offset (upper case, as RFC 8620 §1.4 requires) and the `T`
/// separator are accepted; dates before 1970 and leap seconds are
/// rejected.
pub fn parse(s: &str) -> Result<u64, UtcDateError> {
    let err = || UtcDateError(s.chars().take(64).collect());
    let b = s.as_bytes();
    if b.len() > 40 || b.get(10) != Some(&b'T') || b.last() != Some(&b'Z') {
        return Err(err());
    }
    let at = OffsetDateTime::parse(s, &Rfc3339).map_err(|_| err())?;
    // `time` reads a leap second (`:60`) as the end of the previous one.
    if b.get(17..19) == Some(b"60") {
        return Err(err());
    }
    u64::try_from(at.unix_timestamp()).map_err(|_| err())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &[(&str, u64)] = &[
        ("1970-01-01T00:00:00Z", 0),
        ("2016-01-23T04:36:08Z", 1_453_523_768),
        ("2000-02-29T23:59:59Z", 951_868_799),
        ("2038-01-19T03:14:08Z", 2_147_483_648),
        ("2026-11-26T18:00:00Z", 1_795_716_000),
        ("9999-12-31T23:59:59Z", 253_402_300_799),
    ];

    #[test]
    fn format_and_parse_table() {
        for (s, t) in TABLE {
            assert_eq!(format(*t), *s);
            assert_eq!(parse(s).unwrap(), *t, "{s}");
        }
    }

    #[test]
    fn dates_past_year_9999_format_as_its_last_second() {
        assert_eq!(format(253_402_300_800), "9999-12-31T23:59:59Z");
        assert_eq!(format(u64::MAX), "9999-12-31T23:59:59Z");
    }

    #[test]
    fn fractions_are_truncated() {
        assert_eq!(parse("2016-01-23T04:36:08.123Z").unwrap(), 1_453_523_768);
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "2016-01-23",
            "2016-01-23T04:36:08",
            "2016-01-23T04:36:08+01:00",
            "2016-01-23 04:36:08Z",
            "2016-13-23T04:36:08Z",
            "2015-02-29T04:36:08Z",
            "2016-01-23T24:00:00Z",
            "2016-01-23T04:36:08.Z",
            "1969-12-31T23:59:59Z",
            "abcd-01-23T04:36:08Z",
            "2016-01-23T04:36:08z",
            "２016-01-23T04:36:08Z",
            "2016-12-31T23:59:60Z",
            "2016-01-23t04:36:08Z",
            "+2016-01-23T04:36:08Z",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
