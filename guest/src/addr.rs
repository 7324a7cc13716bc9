//! Push URL checks and the destination deny list (behaviour B1, B7/B10).
//!
//! The same classification serves two places: `PushSubscription/set`
//! rejects URLs whose host is a literal forbidden address, and the host
//! harness re-checks every address a name resolves to at connect time.
//! IPv4 literals are read the way URL parsers (WHATWG) read them, so
//! `https://2130706433/`, `https://0x7f.1/` and `https://0177.0.0.1/` are all
//! recognised as 127.0.0.1.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an address is not a permitted push destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeniedRange {
    /// 0.0.0.0/8, `::`.
    Unspecified,
    /// 127.0.0.0/8, `::1`.
    Loopback,
    /// 10/8, 172.16/12, 192.168/16.
    Private,
    /// 169.254/16, fe80::/10.
    LinkLocal,
    /// 100.64/10 (RFC 6598).
    CarrierGradeNat,
    /// 224/4, ff00::/8.
    Multicast,
    /// 255.255.255.255.
    Broadcast,
    /// 192.0.2/24, 198.51.100/24, 203.0.113/24, 2001:db8::/32.
    Documentation,
    /// 240/4 and other IETF-reserved IPv4 blocks (192.0.0/24, 198.18/15).
    Reserved,
    /// fc00::/7.
    UniqueLocal,
    /// fec0::/10 (deprecated site-local).
    SiteLocal,
}

impl fmt::Display for DeniedRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeniedRange::Unspecified => "an unspecified address",
            DeniedRange::Loopback => "a loopback address",
            DeniedRange::Private => "a private address",
            DeniedRange::LinkLocal => "a link-local address",
            DeniedRange::CarrierGradeNat => "a carrier-grade NAT address",
            DeniedRange::Multicast => "a multicast address",
            DeniedRange::Broadcast => "the broadcast address",
            DeniedRange::Documentation => "a documentation address",
            DeniedRange::Reserved => "a reserved address",
            DeniedRange::UniqueLocal => "an IPv6 unique-local address",
            DeniedRange::SiteLocal => "an IPv6 site-local address",
        })
    }
}

/// Classifies an IPv4 address: `None` when it is a permitted destination.
pub fn classify_v4(ip: Ipv4Addr) -> Option<DeniedRange> {
    let o = ip.octets();
    Some(match o {
        [0, ..] => DeniedRange::Unspecified,
        [127, ..] => DeniedRange::Loopback,
        [10, ..] => DeniedRange::Private,
        [172, b, ..] if (16..=31).contains(&b) => DeniedRange::Private,
        [192, 168, ..] => DeniedRange::Private,
        [169, 254, ..] => DeniedRange::LinkLocal,
        [100, b, ..] if (64..=127).contains(&b) => DeniedRange::CarrierGradeNat,
        [255, 255, 255, 255] => DeniedRange::Broadcast,
        [a, ..] if (224..=239).contains(&a) => DeniedRange::Multicast,
        [a, ..] if a >= 240 => DeniedRange::Reserved,
        [192, 0, 2, _] | [198, 51, 100, _] | [203, 0, 113, _] => DeniedRange::Documentation,
        [192, 0, 0, _] => DeniedRange::Reserved,
        [198, b, ..] if b == 18 || b == 19 => DeniedRange::Reserved,
        _ => return None,
    })
}

/// Classifies an IPv6 address, including the IPv4 forms embedded in it
/// (IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`, NAT64
/// `64:ff9b::/96`, 6to4 `2002::/16` and Teredo `2001::/32`, whose client
/// address is stored inverted).
pub fn classify_v6(ip: Ipv6Addr) -> Option<DeniedRange> {
    let s = ip.segments();
    if ip.is_unspecified() {
        return Some(DeniedRange::Unspecified);
    }
    if ip.is_loopback() {
        return Some(DeniedRange::Loopback);
    }
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    // IPv4-mapped and IPv4-compatible.
    if s[0..5] == [0, 0, 0, 0, 0] && (s[5] == 0xffff || s[5] == 0) {
        return match classify_v4(embedded(s[6], s[7])) {
            Some(range) => Some(range),
            // Deprecated IPv4-compatible space (::a.b.c.d).
            None if s[5] == 0 => Some(DeniedRange::Reserved),
            None => None,
        };
    }
    // NAT64 well-known prefix.
    if s[0..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return classify_v4(embedded(s[6], s[7]));
    }
    if s[0] == 0x2002 {
        return classify_v4(embedded(s[1], s[2]));
    }
    if s[0] == 0x2001 && s[1] == 0 {
        return classify_v4(embedded(!s[6], !s[7]));
    }
    if s[0] & 0xff00 == 0xff00 {
        return Some(DeniedRange::Multicast);
    }
    if s[0] & 0xffc0 == 0xfe80 {
        return Some(DeniedRange::LinkLocal);
    }
    if s[0] & 0xffc0 == 0xfec0 {
        return Some(DeniedRange::SiteLocal);
    }
    if s[0] & 0xfe00 == 0xfc00 {
        return Some(DeniedRange::UniqueLocal);
    }
    if s[0] == 0x2001 && s[1] == 0x0db8 {
        return Some(DeniedRange::Documentation);
    }
    None
}

/// Classifies any address: `None` when it is a permitted destination.
pub fn classify(ip: IpAddr) -> Option<DeniedRange> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

/// Reads a URL host as an IP literal the way WHATWG URL parsers do: a
/// bracketed IPv6 address, or an IPv4 address of one to four parts, each
/// decimal, `0x` hexadecimal or `0`-prefixed octal (`2130706433`,
/// `0x7f.1`, `0177.0.0.1`). Returns `None` for a domain name.
pub fn parse_ip_literal(host: &str) -> Option<IpAddr> {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        let inner = inner.split('%').next().unwrap_or(inner);
        return inner.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    parse_whatwg_ipv4(host).map(IpAddr::V4)
}

fn parse_ipv4_part(p: &str) -> Option<u64> {
    if p.is_empty() {
        return None;
    }
    let (digits, radix) = if let Some(h) = p.strip_prefix("0x").or_else(|| p.strip_prefix("0X")) {
        (h, 16)
    } else if p.len() > 1 && p.starts_with('0') {
        (&p[1..], 8)
    } else {
        (p, 10)
    };
    if digits.is_empty() {
        return Some(0);
    }
    if digits.len() > 20 {
        return Some(u64::MAX);
    }
    u64::from_str_radix(digits, radix).ok()
}

fn parse_whatwg_ipv4(host: &str) -> Option<Ipv4Addr> {
    let host = host.strip_suffix('.').unwrap_or(host);
    let parts: Vec<&str> = host.split('.').collect();
    // WHATWG: only a host whose last part is numeric is an IPv4 address.
    let last = parts.last()?;
    parse_ipv4_part(last)?;
    if parts.len() > 4 {
        return None;
    }
    let nums: Vec<u64> = parts
        .iter()
        .map(|p| parse_ipv4_part(p))
        .collect::<Option<_>>()?;
    let (head, tail) = nums.split_at(nums.len() - 1);
    if head.iter().any(|&n| n > 255) {
        return None;
    }
    let tail_bits = 8 * (5 - nums.len() as u32);
    if tail_bits < 64 && tail[0] >= (1u64 << tail_bits) {
        return None;
    }
    let mut v: u64 = tail[0];
    for (i, &n) in head.iter().enumerate() {
        v |= n << (8 * (3 - i as u32));
    }
    u32::try_from(v).ok().map(Ipv4Addr::from)
}

/// The parts of an absolute push URL the plugin needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushUrl {
    /// `https` or `http`, lower case.
    pub scheme: String,
    /// Host, lower case; IPv6 literals keep their brackets.
    pub host: String,
    /// Explicit port, if any.
    pub port: Option<u16>,
}

impl PushUrl {
    /// The origin (`scheme://host[:port]`, default port omitted), as VAPID's
    /// `aud` claim wants it.
    pub fn origin(&self) -> String {
        let default = if self.scheme == "https" { 443 } else { 80 };
        match self.port {
            Some(p) if p != default => format!("{}://{}:{}", self.scheme, self.host, p),
            _ => format!("{}://{}", self.scheme, self.host),
        }
    }
}

/// Why a push URL is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlError {
    /// Longer than 2048 octets.
    TooLong(usize),
    /// Not an absolute `https://` URL (or `http://` in test mode).
    Scheme,
    /// Contains whitespace, control characters or a backslash.
    BadCharacter,
    /// Has `user:password@`.
    Userinfo,
    /// Has no host or an unparsable one.
    BadHost,
    /// Port is not a number from 1 to 65535.
    BadPort,
    /// The host is a literal address in a forbidden range.
    Denied(IpAddr, DeniedRange),
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UrlError::TooLong(n) => write!(f, "url is {n} octets long; at most 2048 are allowed"),
            UrlError::Scheme => f.write_str("url must be an absolute https:// URL"),
            UrlError::BadCharacter => {
                f.write_str("url contains whitespace, a control character or a backslash")
            }
            UrlError::Userinfo => f.write_str("url must not contain user information (user@)"),
            UrlError::BadHost => f.write_str("url has no valid host"),
            UrlError::BadPort => f.write_str("url has an invalid port"),
            UrlError::Denied(ip, r) => {
                write!(
                    f,
                    "url host {ip} is {r}; push services are on public addresses"
                )
            }
        }
    }
}

impl std::error::Error for UrlError {}

/// Maximum length of a push URL in octets.
pub const MAX_URL_OCTETS: usize = 2048;

/// Checks a push URL (behaviour B1) and returns its parts. With
/// `insecure_test_mode`, `http://` and loopback literals are allowed (never
/// private or other ranges).
pub fn check_push_url(url: &str, insecure_test_mode: bool) -> Result<PushUrl, UrlError> {
    if url.len() > MAX_URL_OCTETS {
        return Err(UrlError::TooLong(url.len()));
    }
    if url
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '\\')
    {
        return Err(UrlError::BadCharacter);
    }
    let (scheme, rest) = url.split_once("://").ok_or(UrlError::Scheme)?;
    let scheme = scheme.to_ascii_lowercase();
    if !(scheme == "https" || (insecure_test_mode && scheme == "http")) {
        return Err(UrlError::Scheme);
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    if authority.contains('@') {
        return Err(UrlError::Userinfo);
    }
    let (host, port) = if authority.starts_with('[') {
        let close = authority.find(']').ok_or(UrlError::BadHost)?;
        let (h, p) = authority.split_at(close + 1);
        (h, p.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port {
        None => None,
        Some("") => None,
        Some(p) => {
            if !p.bytes().all(|b| b.is_ascii_digit()) || p.len() > 5 {
                return Err(UrlError::BadPort);
            }
            match p.parse::<u16>() {
                Ok(0) | Err(_) => return Err(UrlError::BadPort),
                Ok(n) => Some(n),
            }
        }
    };
    if host.is_empty() {
        return Err(UrlError::BadHost);
    }
    let host = host.to_ascii_lowercase();
    if host.starts_with('[') {
        if parse_ip_literal(&host).is_none() {
            return Err(UrlError::BadHost);
        }
    } else if !host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_' || b >= 0x80)
    {
        return Err(UrlError::BadHost);
    }
    if let Some(ip) = parse_ip_literal(&host) {
        if let Some(range) = classify(ip) {
            if !(insecure_test_mode && range == DeniedRange::Loopback) {
                return Err(UrlError::Denied(ip, range));
            }
        }
    } else if !insecure_test_mode && (host == "localhost" || host.ends_with(".localhost")) {
        return Err(UrlError::Denied(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            DeniedRange::Loopback,
        ));
    }
    Ok(PushUrl { scheme, host, port })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (host as written in a URL, expected classification)
    const LITERALS: &[(&str, Option<DeniedRange>)] = &[
        ("127.0.0.1", Some(DeniedRange::Loopback)),
        ("2130706433", Some(DeniedRange::Loopback)),
        ("0x7f000001", Some(DeniedRange::Loopback)),
        ("0x7f.1", Some(DeniedRange::Loopback)),
        ("0177.0.0.1", Some(DeniedRange::Loopback)),
        ("127.1", Some(DeniedRange::Loopback)),
        ("0.0.0.0", Some(DeniedRange::Unspecified)),
        ("0", Some(DeniedRange::Unspecified)),
        ("10.1.2.3", Some(DeniedRange::Private)),
        ("172.16.0.1", Some(DeniedRange::Private)),
        ("172.31.255.255", Some(DeniedRange::Private)),
        ("192.168.1.1", Some(DeniedRange::Private)),
        ("169.254.169.254", Some(DeniedRange::LinkLocal)),
        ("100.64.0.1", Some(DeniedRange::CarrierGradeNat)),
        ("224.0.0.1", Some(DeniedRange::Multicast)),
        ("255.255.255.255", Some(DeniedRange::Broadcast)),
        ("192.0.2.1", Some(DeniedRange::Documentation)),
        ("198.51.100.7", Some(DeniedRange::Documentation)),
        ("203.0.113.9", Some(DeniedRange::Documentation)),
        ("[::1]", Some(DeniedRange::Loopback)),
        ("[::]", Some(DeniedRange::Unspecified)),
        ("[::ffff:127.0.0.1]", Some(DeniedRange::Loopback)),
        ("[::ffff:7f00:1]", Some(DeniedRange::Loopback)),
        ("[::ffff:10.0.0.1]", Some(DeniedRange::Private)),
        ("[::127.0.0.1]", Some(DeniedRange::Loopback)),
        ("[2002:7f00:1::]", Some(DeniedRange::Loopback)),
        (
            "[2001:0:4136:e378:8000:63bf:80ff:fffe]",
            Some(DeniedRange::Loopback),
        ),
        ("[64:ff9b::a9fe:a9fe]", Some(DeniedRange::LinkLocal)),
        ("[fe80::1]", Some(DeniedRange::LinkLocal)),
        ("[fec0::1]", Some(DeniedRange::SiteLocal)),
        ("[fd00::1]", Some(DeniedRange::UniqueLocal)),
        ("[fc00::1]", Some(DeniedRange::UniqueLocal)),
        ("[ff02::1]", Some(DeniedRange::Multicast)),
        ("[2001:db8::1]", Some(DeniedRange::Documentation)),
        ("8.8.8.8", None),
        ("172.32.0.1", None),
        ("100.128.0.1", None),
        ("[2606:4700::1111]", None),
        ("[::ffff:8.8.8.8]", None),
        ("[2002:0808:0808::]", None),
    ];

    #[test]
    fn literal_table() {
        for (host, want) in LITERALS {
            let ip = parse_ip_literal(host).unwrap_or_else(|| panic!("{host} not parsed"));
            assert_eq!(classify(ip), *want, "{host}");
        }
    }

    #[test]
    fn domain_names_are_not_literals() {
        for host in [
            "push.example.net",
            "fcm.googleapis.com",
            "1.2.3.example",
            "0x7g.1",
        ] {
            assert_eq!(parse_ip_literal(host), None, "{host}");
        }
        assert_eq!(parse_ip_literal("256.1.1.1"), None);
        assert_eq!(parse_ip_literal("1.2.3.4.5"), None);
    }

    #[test]
    fn push_url_rules() {
        assert!(check_push_url("https://push.example.net/p/abc", false).is_ok());
        assert_eq!(
            check_push_url("http://push.example.net/", false),
            Err(UrlError::Scheme)
        );
        assert!(check_push_url("http://push.example.net/", true).is_ok());
        assert_eq!(
            check_push_url("push.example.net/x", false),
            Err(UrlError::Scheme)
        );
        assert_eq!(
            check_push_url("https://u:p@push.example.net/", false),
            Err(UrlError::Userinfo)
        );
        assert_eq!(check_push_url("https:///x", false), Err(UrlError::BadHost));
        assert_eq!(
            check_push_url("https://a.example:99999/", false),
            Err(UrlError::BadPort)
        );
        assert_eq!(
            check_push_url("https://a.example/ x", false),
            Err(UrlError::BadCharacter)
        );
        assert!(matches!(
            check_push_url("https://127.0.0.1:8443/", false),
            Err(UrlError::Denied(_, DeniedRange::Loopback))
        ));
        assert!(matches!(
            check_push_url("https://localhost/", false),
            Err(UrlError::Denied(_, DeniedRange::Loopback))
        ));
        assert!(check_push_url("http://127.0.0.1:8443/", true).is_ok());
        assert!(matches!(
            check_push_url("http://10.0.0.1/", true),
            Err(UrlError::Denied(_, DeniedRange::Private))
        ));
        let long = format!("https://a.example/{}", "x".repeat(2048));
        assert!(matches!(
            check_push_url(&long, false),
            Err(UrlError::TooLong(_))
        ));
    }

    #[test]
    fn origin_keeps_non_default_port() {
        let u = check_push_url("https://Push.Example.net:8443/a?b", false).unwrap();
        assert_eq!(u.origin(), "https://push.example.net:8443");
        let u = check_push_url("https://push.example.net:443/a", false).unwrap();
        assert_eq!(u.origin(), "https://push.example.net");
    }
}
