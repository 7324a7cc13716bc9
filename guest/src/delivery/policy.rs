//! What a push service's answer means (behaviour B6 table), as pure
//! functions: answer in, next action out.

use crate::ports::{HttpError, HttpResponse};

/// The [`Answer::Transient`] reason of a failed TLS handshake. A
/// StateChange push retries it (the certificate worked at verification; a
/// failure now is most likely one being replaced); a verification push
/// refuses it at once (see `verification::outcome`).
pub const TLS_FAILURE: &str = "tls";

/// The meaning of one answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// 200, 201, 202, 204: delivered.
    Delivered(u16),
    /// 404, 410: the subscription is gone; destroy it.
    Gone(u16),
    /// 413: the payload is too large for this service.
    TooLarge,
    /// 429: slow down; `retry_after_ms` from `Retry-After` (capped), if any.
    RateLimited {
        /// Delay asked for by the service, ms.
        retry_after_ms: Option<u64>,
    },
    /// 5xx, timeout, connection, TLS handshake or DNS failure: retry with
    /// backoff.
    Transient {
        /// Short reason (`503`, `timeout`, `connection`, [`TLS_FAILURE`],
        /// ...).
        reason: String,
        /// `Retry-After` of a 503, ms (capped), if any.
        retry_after_ms: Option<u64>,
    },
    /// 400, 401, 403, other 4xx, 3xx, or refused by the host's policy: not
    /// retried.
    Refused {
        /// Status code (0 when refused by the host's policy).
        status: u16,
        /// Why, with at most 1 KiB of the body.
        detail: String,
    },
}

impl Answer {
    /// A short label for reports (`2xx`, `410`, `429`, `timeout`, ...).
    pub fn reason(&self) -> String {
        match self {
            Answer::Delivered(_) => "2xx".into(),
            Answer::Gone(s) => s.to_string(),
            Answer::TooLarge => "413".into(),
            Answer::RateLimited { .. } => "429".into(),
            Answer::Transient { reason, .. } => reason.clone(),
            Answer::Refused { status: 0, .. } => "refused".into(),
            Answer::Refused { status, .. } => status.to_string(),
        }
    }
}

/// Largest part of a refusal body kept for logs and error descriptions.
pub const MAX_LOGGED_BODY: usize = 200;

/// A push service's body as one line of text for a log or an error
/// description: lossy UTF-8, control characters (line breaks included) as
/// spaces, so a hostile body cannot forge log lines.
fn printable(body: &[u8]) -> String {
    String::from_utf8_lossy(body)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Classifies one result of `http-out`. `now_unix_secs` resolves HTTP-date
/// `Retry-After` values; `cap_secs` bounds them.
pub fn classify(
    result: &Result<HttpResponse, HttpError>,
    now_unix_secs: u64,
    cap_secs: u32,
) -> Answer {
    let resp = match result {
        Ok(r) => r,
        Err(HttpError::Timeout) => {
            return Answer::Transient {
                reason: "timeout".into(),
                retry_after_ms: None,
            }
        }
        Err(HttpError::Connection(_)) | Err(HttpError::Other(_)) => {
            return Answer::Transient {
                reason: "connection".into(),
                retry_after_ms: None,
            }
        }
        Err(HttpError::Dns(_)) => {
            return Answer::Transient {
                reason: "dns".into(),
                retry_after_ms: None,
            }
        }
        // A failed handshake (a certificate expired or being replaced, a
        // front not yet speaking TLS) is a failure to connect, retried
        // like one: dropping the change would lose it for good.
        Err(HttpError::Tls(_)) => {
            return Answer::Transient {
                reason: TLS_FAILURE.into(),
                retry_after_ms: None,
            }
        }
        Err(HttpError::TooLarge) => return Answer::TooLarge,
        Err(e @ HttpError::DeniedByPolicy(_)) => {
            return Answer::Refused {
                status: 0,
                detail: e.to_string(),
            }
        }
    };
    let retry_after = || {
        resp.header("retry-after")
            .and_then(|v| parse_retry_after(v, now_unix_secs))
            .map(|s| s.min(u64::from(cap_secs)) * 1000)
    };
    match resp.status {
        200 | 201 | 202 | 204 => Answer::Delivered(resp.status),
        404 | 410 => Answer::Gone(resp.status),
        413 => Answer::TooLarge,
        429 => Answer::RateLimited {
            retry_after_ms: retry_after(),
        },
        500..=599 => Answer::Transient {
            reason: resp.status.to_string(),
            retry_after_ms: retry_after(),
        },
        s => {
            let body = &resp.body_prefix[..resp.body_prefix.len().min(MAX_LOGGED_BODY)];
            Answer::Refused {
                status: s,
                detail: format!("status {s}: {}", printable(body)),
            }
        }
    }
}

/// Parses `Retry-After` (RFC 9110 §10.2.3): delay-seconds or an HTTP-date
/// (IMF-fixdate, also RFC 850 and asctime forms). Returns seconds from now
/// (0 for a date in the past).
pub fn parse_retry_after(value: &str, now_unix_secs: u64) -> Option<u64> {
    let v = value.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        return Some(v.parse::<u64>().unwrap_or(u64::MAX));
    }
    let at = parse_http_date(v)?;
    Some(at.saturating_sub(now_unix_secs))
}

/// Parses an HTTP-date (RFC 9110 §5.6.7: IMF-fixdate, RFC 850, asctime)
/// into Unix seconds, with the `httpdate` crate.
pub fn parse_http_date(v: &str) -> Option<u64> {
    let at = httpdate::parse_http_date(v).ok()?;
    at.duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs())
}

/// Exponential backoff with jitter: `initial * 2^attempt`, capped at `max`,
/// then a random value in [half, full] of it (`jitter` in [0, 1)).
pub fn backoff_ms(attempt: u32, initial_ms: u32, max_ms: u32, jitter: f64) -> u64 {
    let base = u64::from(initial_ms.max(1))
        .saturating_mul(1u64 << attempt.min(40))
        .min(u64::from(max_ms.max(1)));
    let j = jitter.clamp(0.0, 1.0);
    base / 2 + ((base as f64 / 2.0) * j) as u64
}

/// A random jitter in [0, 1).
pub fn random_jitter() -> f64 {
    let mut b = [0u8; 4];
    if getrandom::fill(&mut b).is_err() {
        return 0.5;
    }
    f64::from(u32::from_le_bytes(b)) / (f64::from(u32::MAX) + 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16, headers: &[(&str, &str)]) -> Result<HttpResponse, HttpError> {
        Ok(HttpResponse {
            status,
            headers: headers
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            body_prefix: b"nope".to_vec(),
        })
    }

    const NOW: u64 = 784_111_777; // Sun, 06 Nov 1994 08:49:37 GMT

    #[test]
    fn answer_table() {
        let cases: &[(u16, &str)] = &[
            (200, "2xx"),
            (201, "2xx"),
            (202, "2xx"),
            (204, "2xx"),
            (404, "404"),
            (410, "410"),
            (413, "413"),
            (429, "429"),
            (500, "500"),
            (503, "503"),
            (400, "400"),
            (401, "401"),
            (403, "403"),
            (418, "418"),
            (301, "301"),
            (203, "203"),
        ];
        for (status, reason) in cases {
            assert_eq!(classify(&resp(*status, &[]), NOW, 3600).reason(), *reason);
        }
        assert!(matches!(
            classify(&resp(301, &[]), NOW, 3600),
            Answer::Refused { status: 301, .. }
        ));
        assert_eq!(
            classify(&Err(HttpError::Timeout), NOW, 3600).reason(),
            "timeout"
        );
        assert!(matches!(
            classify(&Err(HttpError::DeniedByPolicy("x".into())), NOW, 3600),
            Answer::Refused { status: 0, .. }
        ));
        // A failed handshake is retried, like a failed connection.
        assert_eq!(
            classify(&Err(HttpError::Tls("bad certificate".into())), NOW, 3600),
            Answer::Transient {
                reason: TLS_FAILURE.into(),
                retry_after_ms: None
            }
        );
    }

    #[test]
    fn a_refusal_body_is_kept_short_and_on_one_line() {
        let mut body = b"bad\r\nINFO forged line\x1b[31m ".to_vec();
        body.extend(std::iter::repeat_n(b'x', 5000));
        let r = Ok(HttpResponse {
            status: 400,
            headers: Vec::new(),
            body_prefix: body,
        });
        let Answer::Refused { detail, .. } = classify(&r, NOW, 3600) else {
            panic!("400 is a refusal");
        };
        assert!(
            detail.starts_with("status 400: bad  INFO forged line [31m "),
            "{detail}"
        );
        assert!(!detail.chars().any(char::is_control), "{detail}");
        assert!(
            detail.len() <= "status 400: ".len() + MAX_LOGGED_BODY,
            "{}",
            detail.len()
        );
    }

    #[test]
    fn retry_after_both_forms_and_cap() {
        assert_eq!(
            classify(&resp(429, &[("retry-after", "120")]), NOW, 3600),
            Answer::RateLimited {
                retry_after_ms: Some(120_000)
            }
        );
        assert_eq!(
            classify(
                &resp(429, &[("retry-after", "Sun, 06 Nov 1994 08:51:37 GMT")]),
                NOW,
                3600
            ),
            Answer::RateLimited {
                retry_after_ms: Some(120_000)
            }
        );
        assert_eq!(
            classify(&resp(429, &[("retry-after", "999999")]), NOW, 3600),
            Answer::RateLimited {
                retry_after_ms: Some(3_600_000)
            }
        );
        assert_eq!(
            classify(&resp(429, &[("retry-after", "soon")]), NOW, 3600),
            Answer::RateLimited {
                retry_after_ms: None
            }
        );
    }

    #[test]
    fn http_date_forms() {
        for v in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(parse_http_date(v), Some(NOW), "{v}");
        }
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", NOW),
            Some(0)
        );
        // Not HTTP-dates (a wrong weekday, a one-digit day, other zones):
        // the header is ignored and the usual backoff applies.
        for v in [
            "Mon, 06 Nov 1994 08:49:37 GMT",
            "Sun, 6 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "06 Nov 1994",
            "-5",
        ] {
            assert_eq!(parse_retry_after(v, NOW), None, "{v}");
        }
    }

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff_ms(0, 1000, 3_600_000, 1.0), 1000);
        assert_eq!(backoff_ms(3, 1000, 3_600_000, 1.0), 8000);
        assert_eq!(backoff_ms(3, 1000, 3_600_000, 0.0), 4000);
        assert_eq!(backoff_ms(30, 1000, 3_600_000, 1.0), 3_600_000);
        assert_eq!(backoff_ms(u32::MAX, 1000, 3_600_000, 1.0), 3_600_000);
    }
}
