//! The address guard: which destinations a push may go to.
//!
//! - [`precheck`] runs before a request is handed to the client: the scheme
//!   (`https`; `http` only in test mode), no user information, an IP-literal
//!   host checked here (the client does not resolve literals), the body
//!   size.
//! - `GuardedResolver` is the client's resolver: it resolves a host name
//!   with the system resolver and returns only the addresses the guard
//!   allows, so the client connects to none that is denied.
//!
//! The ranges themselves are the plugin's (`jmap_web_push_guest::addr`):
//! guest and host classify addresses with the same code.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::dns::Name;

use jmap_web_push_guest::addr::{classify, DeniedRange};

use super::{HttpPolicy, OutError, OutRequest};

/// The address guard: `Err` with the reason when `ip` may not be contacted.
pub fn check_addr(ip: IpAddr, allow_loopback: bool) -> Result<(), DeniedRange> {
    match classify(ip) {
        None => Ok(()),
        Some(DeniedRange::Loopback) if allow_loopback => Ok(()),
        Some(r) => Err(r),
    }
}

/// Checks `r` before it is sent and returns its parsed URL (the `url`
/// crate, as the plugin parsed it).
///
/// # Errors
/// [`OutError::DeniedByPolicy`] for a scheme, user information or IP
/// literal the policy refuses, [`OutError::TooLarge`] for a body over
/// [`HttpPolicy::max_request_body`], [`OutError::Other`] for a URL that
/// does not parse.
pub fn precheck(policy: &HttpPolicy, r: &OutRequest) -> Result<url::Url, OutError> {
    let url = url::Url::parse(&r.url).map_err(|e| OutError::Other(format!("bad URL: {e}")))?;
    match url.scheme() {
        "https" => {}
        "http" if policy.allow_insecure_loopback => {}
        s => {
            return Err(OutError::DeniedByPolicy(format!(
                "scheme {s} is not allowed"
            )))
        }
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(OutError::DeniedByPolicy(
            "URL carries user information".into(),
        ));
    }
    let literal = match url.host() {
        Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
        Some(url::Host::Domain(_)) => None,
        None => return Err(OutError::Other("URL has no host".into())),
    };
    if let Some(ip) = literal {
        check_addr(ip, policy.allow_insecure_loopback)
            .map_err(|range| OutError::DeniedByPolicy(format!("{ip} is {range}")))?;
    }
    if r.body.len() > policy.max_request_body {
        return Err(OutError::TooLarge);
    }
    Ok(url)
}

/// A name resolved only to denied addresses (carried through the client's
/// error chain to [`OutError::DeniedByPolicy`]).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Denied(pub(crate) String);

/// A name that did not resolve (carried to [`OutError::Dns`]).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct DnsFailed(pub(crate) String);

/// The client's resolver: the system resolver, with every address the
/// guard denies dropped; an error when none is left. (The client connects
/// to IP-literal hosts without resolving; [`precheck`] checked those.)
#[derive(Debug, Clone, Copy)]
pub(crate) struct GuardedResolver {
    pub(crate) allow_loopback: bool,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Resolving =
    Pin<Box<dyn Future<Output = Result<std::vec::IntoIter<SocketAddr>, BoxError>> + Send>>;

impl tower_service::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = BoxError;
    type Future = Resolving;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Resolving {
        let allow_loopback = self.allow_loopback;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            // Port 0: the connector puts the URL's port in.
            let found: Vec<SocketAddr> = match tokio::net::lookup_host((host.as_str(), 0)).await {
                Ok(found) => found.collect(),
                Err(e) => return Err(Box::new(DnsFailed(format!("{host}: {e}"))) as BoxError),
            };
            let mut denied = None;
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| match check_addr(a.ip(), allow_loopback) {
                    Ok(()) => true,
                    Err(r) => {
                        denied = Some(format!("{host} resolves to {} ({r})", a.ip()));
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                return Err(match denied {
                    Some(why) => Box::new(Denied(why)) as BoxError,
                    None => Box::new(DnsFailed(format!("{host} has no addresses"))) as BoxError,
                });
            }
            Ok(allowed.into_iter())
        })
    }
}
