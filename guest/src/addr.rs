//! Push URL checks and the destination deny list (behaviour B1, B7/B10).
//!
//! The same classification serves two places: `PushSubscription/set`
//! rejects URLs whose host is a literal forbidden address, and the host
//! harness re-checks every address a name resolves to at connect time.
//! URLs are parsed by the `url` crate (the WHATWG URL Standard), the
//! parser the host harness connects with, so the plugin and the host never
//! disagree on a URL's host: `https://2130706433/`, `https://0x7f.1/` and
//! `https://0177.0.0.1/` are all 127.0.0.1, Unicode host names become
//! punycode, and `LOCALHOST.`, `ｌｏｃａｌｈｏｓｔ` or `a.localhost` are all names
//! of the local host. The same parse gives the VAPID `aud` claim
//! ([`parse_http_url`], [`PushUrl::origin`]).

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
    // NAT64 local-use prefix (RFC 8215): translated by a local NAT64 to
    // IPv4 at a position that depends on its prefix length, so refused
    // whole.
    if s[0..3] == [0x64, 0xff9b, 0x0001] {
        return Some(DeniedRange::Reserved);
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

/// Reads a URL host as an IP literal the way the `url` crate (WHATWG)
/// does: a bracketed IPv6 address, or an IPv4 address of one to four
/// parts, each decimal, `0x` hexadecimal or `0`-prefixed octal
/// (`2130706433`, `0x7f.1`, `0177.0.0.1`). Returns `None` for a domain
/// name or an invalid host.
pub fn parse_ip_literal(host: &str) -> Option<IpAddr> {
    match url::Host::parse(host).ok()? {
        url::Host::Ipv4(v4) => Some(IpAddr::V4(v4)),
        url::Host::Ipv6(v6) => Some(IpAddr::V6(v6)),
        url::Host::Domain(_) => None,
    }
}

/// Whether a host name (as the URL parser gives it: lower case, punycode)
/// names the local host: `localhost` or any name under it (RFC 6761 §6.3),
/// with or without trailing dots.
pub fn is_local_name(domain: &str) -> bool {
    let d = domain.trim_end_matches('.');
    d == "localhost" || d.ends_with(".localhost")
}

/// The parts of an absolute `http`/`https` URL the plugin needs, as the
/// `url` crate parsed them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushUrl {
    /// `https` or `http`, lower case.
    pub scheme: String,
    /// The port, when it is not the scheme's default.
    pub port: Option<u16>,
    /// The host as parsed (domain, IPv4 or IPv6).
    pub parsed_host: url::Host<String>,
}

impl PushUrl {
    /// The host: lower case, international names in punycode, IPv4 in
    /// dotted decimal, IPv6 in brackets (RFC 5952 form).
    pub fn host(&self) -> String {
        self.parsed_host.to_string()
    }

    /// The origin (`scheme://host[:port]`, default port omitted), as VAPID's
    /// `aud` claim wants it.
    pub fn origin(&self) -> String {
        let default = if self.scheme == "https" { 443 } else { 80 };
        match self.port {
            Some(p) if p != default => format!("{}://{}:{}", self.scheme, self.parsed_host, p),
            _ => format!("{}://{}", self.scheme, self.parsed_host),
        }
    }
}

/// Why a URL has no usable `http`/`https` origin.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UrlSyntaxError {
    /// Not an absolute `scheme://authority` URL.
    NotAbsolute,
    /// The scheme is not `https` or `http`.
    UnsupportedScheme(String),
    /// Contains whitespace, control characters or a backslash.
    InvalidCharacters,
    /// The authority contains user information (`user@` / `user:pass@`).
    Userinfo,
    /// The host is empty.
    MissingHost,
    /// The host is not a valid domain name, IPv4 or bracketed IPv6 literal
    /// (percent-encoded hosts are refused too).
    InvalidHost,
    /// The port is not a number from 1 to 65535.
    InvalidPort,
}

impl fmt::Display for UrlSyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotAbsolute => write!(f, "not an absolute URL (expected https://host/...)"),
            Self::UnsupportedScheme(s) => {
                write!(f, "scheme '{s}' is not supported (expected https)")
            }
            Self::InvalidCharacters => write!(
                f,
                "the URL contains whitespace, a control character or a backslash \
                 (percent-encode them)"
            ),
            Self::Userinfo => write!(f, "the URL must not contain user information (user@)"),
            Self::MissingHost => write!(f, "the URL has no host"),
            Self::InvalidHost => write!(f, "the URL's host is not a valid host name or IP literal"),
            Self::InvalidPort => write!(f, "the URL's port is not a number from 1 to 65535"),
        }
    }
}

impl std::error::Error for UrlSyntaxError {}

/// Why a push URL is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UrlError {
    /// Longer than 2048 octets.
    TooLong(usize),
    /// Not an absolute `https://` URL (or `http://` in test mode).
    Scheme,
    /// Not a well-formed URL with a host.
    Syntax(UrlSyntaxError),
    /// The host is a literal address in a forbidden range, or a name of
    /// the local host (reported as loopback).
    Denied(IpAddr, DeniedRange),
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UrlError::TooLong(n) => write!(f, "url is {n} octets long; at most 2048 are allowed"),
            UrlError::Scheme => f.write_str("url must be an absolute https:// URL"),
            UrlError::Syntax(e) => write!(f, "url is invalid: {e}"),
            UrlError::Denied(ip, r) => {
                write!(
                    f,
                    "url host {ip} is {r}; push services are on public addresses"
                )
            }
        }
    }
}

impl std::error::Error for UrlError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            UrlError::Syntax(e) => Some(e),
            _ => None,
        }
    }
}

/// Maximum length of a push URL in octets.
pub const MAX_URL_OCTETS: usize = 2048;

/// RFC 3986 scheme syntax: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ).
fn is_scheme(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
}

/// Parses an absolute `http`/`https` URL with the `url` crate (WHATWG),
/// after refusing what that parser would silently repair and a push URL
/// must not contain: whitespace, control characters and backslashes
/// (stripped or turned into `/` by WHATWG), a missing `//`, user
/// information (even empty, `https://@host/`), percent-encoded hosts and
/// domain names with other characters than letters, digits, `-`, `_` and
/// dots. The host comes out lower case and in punycode; the port only when
/// it is not the scheme's default.
///
/// # Errors
/// A [`UrlSyntaxError`] naming what is wrong.
pub fn parse_http_url(input: &str) -> Result<PushUrl, UrlSyntaxError> {
    if input
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '\\')
    {
        return Err(UrlSyntaxError::InvalidCharacters);
    }
    let Some((scheme, rest)) = input.split_once("://") else {
        return match input.split_once(':') {
            Some((scheme, _))
                if is_scheme(scheme)
                    && !scheme.eq_ignore_ascii_case("https")
                    && !scheme.eq_ignore_ascii_case("http") =>
            {
                Err(UrlSyntaxError::UnsupportedScheme(
                    scheme.to_ascii_lowercase(),
                ))
            }
            _ => Err(UrlSyntaxError::NotAbsolute),
        };
    };
    if !is_scheme(scheme) {
        return Err(UrlSyntaxError::NotAbsolute);
    }
    if !scheme.eq_ignore_ascii_case("https") && !scheme.eq_ignore_ascii_case("http") {
        return Err(UrlSyntaxError::UnsupportedScheme(
            scheme.to_ascii_lowercase(),
        ));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err(UrlSyntaxError::Userinfo);
    }
    if authority.is_empty() {
        return Err(UrlSyntaxError::MissingHost);
    }
    if authority.contains('%') {
        return Err(UrlSyntaxError::InvalidHost);
    }
    let parsed = url::Url::parse(input).map_err(|e| match e {
        url::ParseError::EmptyHost => UrlSyntaxError::MissingHost,
        url::ParseError::InvalidPort => UrlSyntaxError::InvalidPort,
        url::ParseError::RelativeUrlWithoutBase => UrlSyntaxError::NotAbsolute,
        _ => UrlSyntaxError::InvalidHost,
    })?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(UrlSyntaxError::Userinfo);
    }
    if parsed.port() == Some(0) {
        return Err(UrlSyntaxError::InvalidPort);
    }
    let host = parsed.host().ok_or(UrlSyntaxError::MissingHost)?.to_owned();
    if let url::Host::Domain(d) = &host {
        // WHATWG lets through domain characters DNS names do not have
        // (`{`, `!`, `*`, ...); the host's HTTP client (`http::Uri`)
        // refuses some of them, so such a URL could never be pushed to.
        // A push service's name is letters, digits, `-`, `_` and dots
        // (international names arrive here in punycode).
        let name_octets = d
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if d.trim_end_matches('.').is_empty() || !name_octets {
            return Err(UrlSyntaxError::InvalidHost);
        }
    }
    Ok(PushUrl {
        scheme: parsed.scheme().to_string(),
        port: parsed.port(),
        parsed_host: host,
    })
}

/// Checks a push URL (behaviour B1) and returns its parts: at most 2048
/// octets, `https` ([`parse_http_url`]), a host that is neither a literal
/// address in a denied range nor a name of the local host
/// ([`is_local_name`]), and a name DNS can resolve (no empty label, labels
/// of at most 63 octets, at most 253 in all). With `insecure_test_mode`,
/// `http://` and loopback (literals and local names) are allowed, never
/// private or other ranges.
pub fn check_push_url(url: &str, insecure_test_mode: bool) -> Result<PushUrl, UrlError> {
    if url.len() > MAX_URL_OCTETS {
        return Err(UrlError::TooLong(url.len()));
    }
    let parsed = parse_http_url(url).map_err(|e| match e {
        UrlSyntaxError::NotAbsolute | UrlSyntaxError::UnsupportedScheme(_) => UrlError::Scheme,
        other => UrlError::Syntax(other),
    })?;
    if !(parsed.scheme == "https" || (insecure_test_mode && parsed.scheme == "http")) {
        return Err(UrlError::Scheme);
    }
    let denied = match &parsed.parsed_host {
        url::Host::Ipv4(v4) => classify_v4(*v4).map(|r| (IpAddr::V4(*v4), r)),
        url::Host::Ipv6(v6) => classify_v6(*v6).map(|r| (IpAddr::V6(*v6), r)),
        url::Host::Domain(d) if is_local_name(d) => {
            Some((IpAddr::V4(Ipv4Addr::LOCALHOST), DeniedRange::Loopback))
        }
        url::Host::Domain(_) => None,
    };
    if let Some((ip, range)) = denied {
        if !(insecure_test_mode && range == DeniedRange::Loopback) {
            return Err(UrlError::Denied(ip, range));
        }
    }
    // WHATWG keeps names DNS cannot resolve: empty labels (`a..b`, `.a`),
    // labels over 63 octets, names over 253; a push to one could only fail
    // later, as a connection error. UTS #46's VerifyDNSLength (the `idna`
    // crate that `url` uses) refuses them; one root dot
    // (`push.example.net.`) stays allowed.
    if let url::Host::Domain(d) = &parsed.parsed_host {
        if !idna::uts46::verify_dns_length(d, true) {
            return Err(UrlError::Syntax(UrlSyntaxError::InvalidHost));
        }
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests;
