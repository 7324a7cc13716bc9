//! Who is asking: the bearer token or Basic credentials of a request
//! checked against the users ([`super::auth::Authenticator`]), failed
//! attempts limited per client address and user name
//! ([`super::throttle`]), the client address behind trusted proxies, and
//! the 401/429/503 answers.

use super::*;

/// Why a request was not authenticated.
pub(super) enum AuthFailure {
    /// No credentials, or wrong ones: 401.
    Unauthorized,
    /// Too many failures from this address or for this user name: 429.
    Throttled(Duration),
    /// Every password-check thread stayed busy: 503.
    Busy,
}

impl AuthFailure {
    pub(super) fn response(&self) -> Response {
        let (status, detail, wait) = match self {
            AuthFailure::Unauthorized => return unauthorized(),
            AuthFailure::Throttled(wait) => (
                StatusCode::TOO_MANY_REQUESTS,
                "too many failed authentication attempts from this address or for this user name",
                wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
            ),
            AuthFailure::Busy => (
                StatusCode::SERVICE_UNAVAILABLE,
                "every password check is busy",
                1,
            ),
        };
        let mut r = problem(
            status,
            "about:blank",
            format!("{detail}; retry after {wait} s"),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(wait.max(1)));
        r
    }
}

/// The client's address: the peer, or, when the peer is one of
/// `server.trusted_proxies`, the nearest address in `X-Forwarded-For` that
/// is not a trusted proxy.
pub(super) fn client_address(
    trusted: &[IpAddr],
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
) -> IpAddr {
    let peer = peer.map_or(IpAddr::from([0, 0, 0, 0]), |p| p.ip());
    if !trusted.contains(&peer) {
        return peer;
    }
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    for hop in forwarded.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) if trusted.contains(&ip) => continue,
            Ok(ip) => return ip,
            Err(_) => return peer,
        }
    }
    peer
}

/// Authenticates a request: bearer tokens and Basic headers verified
/// before at once; a new Basic password on the password pool, unless too
/// many failures came from the client's address or for that user name.
pub(super) async fn authenticate(
    state: &AppState,
    current: &Current,
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
) -> Result<auth::Principal, AuthFailure> {
    let Some(h) = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
    else {
        return Err(AuthFailure::Unauthorized);
    };
    let address = client_address(&current.settings.server.trusted_proxies, headers, peer);
    match current.auth.quick(h) {
        auth::Quick::Known(p) => Ok(p),
        auth::Quick::Refused { username } => {
            if let Some(wait) = state.limiter.blocked(address, username.as_deref()) {
                return Err(AuthFailure::Throttled(wait));
            }
            state.limiter.failed(address, username.as_deref());
            Err(AuthFailure::Unauthorized)
        }
        auth::Quick::NeedsPassword(check) => {
            let username = check.username.clone();
            if let Some(wait) = state.limiter.blocked(address, Some(&username)) {
                return Err(AuthFailure::Throttled(wait));
            }
            match state.passwords.verify(current.auth.clone(), check).await {
                Ok(Some(p)) => Ok(p),
                Ok(None) => {
                    state.limiter.failed(address, Some(&username));
                    Err(AuthFailure::Unauthorized)
                }
                Err(throttle::PoolError::Busy) => Err(AuthFailure::Busy),
            }
        }
    }
}

/// The peer address axum recorded for the connection.
pub(super) fn peer_of(extensions: &axum::http::Extensions) -> Option<SocketAddr> {
    extensions
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_address_is_the_peer_unless_a_trusted_proxy_forwards() {
        let peer: SocketAddr = "10.0.0.5:4000".parse().unwrap();
        let proxy: IpAddr = "10.0.0.5".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("198.51.100.7"));
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // Not trusted: the header is the client's own claim, ignored.
        assert_eq!(client_address(&[], &h, Some(peer)), proxy);
        assert_eq!(client_address(&[proxy], &h, Some(peer)), ip("198.51.100.7"));
        // The nearest untrusted hop wins; what the client wrote further
        // left does not.
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("1.1.1.1, 203.0.113.9, 10.0.0.6"),
        );
        let both = [proxy, ip("10.0.0.6")];
        assert_eq!(client_address(&both, &h, Some(peer)), ip("203.0.113.9"));
        // Garbage stops the walk at the proxy itself.
        h.insert("x-forwarded-for", HeaderValue::from_static("nonsense"));
        assert_eq!(client_address(&[proxy], &h, Some(peer)), proxy);
    }
}
