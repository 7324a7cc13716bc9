//! RFC 8620 §1.4 `UTCDate` parsing and formatting (RFC 3339 with `Z`).

use std::fmt;

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

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(y) => 29,
        _ => 28,
    }
}

/// Formats Unix seconds as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn format(unix_secs: u64) -> String {
    let secs = unix_secs as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Parses a UTCDate into Unix seconds (fractional seconds are truncated).
/// Only the `Z` offset is accepted, as RFC 8620 requires; dates before 1970
/// are rejected.
pub fn parse(s: &str) -> Result<u64, UtcDateError> {
    let err = || UtcDateError(s.chars().take(64).collect());
    let b = s.as_bytes();
    if b.len() < 20 || b.len() > 40 {
        return Err(err());
    }
    let num = |range: std::ops::Range<usize>| -> Result<u32, UtcDateError> {
        let part = &b[range];
        if !part.iter().all(u8::is_ascii_digit) {
            return Err(err());
        }
        Ok(part
            .iter()
            .fold(0u32, |acc, c| acc * 10 + u32::from(c - b'0')))
    };
    if b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return Err(err());
    }
    let (y, mo, d, h, mi, se) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    let rest = &b[19..];
    let rest = match rest.first() {
        Some(b'.') => {
            let digits = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
            if digits == 0 {
                return Err(err());
            }
            &rest[1 + digits..]
        }
        _ => rest,
    };
    if rest != b"Z" {
        return Err(err());
    }
    let y = i64::from(y);
    if !(1970..=9999).contains(&y)
        || !(1..=12).contains(&mo)
        || d == 0
        || d > days_in_month(y, mo)
        || h > 23
        || mi > 59
        || se > 59
    {
        return Err(err());
    }
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + i64::from(h * 3600 + mi * 60 + se);
    u64::try_from(secs).map_err(|_| err())
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
    ];

    #[test]
    fn format_and_parse_table() {
        for (s, t) in TABLE {
            assert_eq!(format(*t), *s);
            assert_eq!(parse(s).unwrap(), *t, "{s}");
        }
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
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
