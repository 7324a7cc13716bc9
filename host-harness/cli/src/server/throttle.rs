//! Bounds on password guessing: failed authentications counted per client
//! address and per user name in fixed windows ([`FailureLimiter`]), and the
//! Argon2 verifications run on a small pool of blocking threads
//! ([`PasswordPool`]) instead of the async runtime, so a flood of wrong
//! passwords cannot take the CPU from everyone else.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::auth::{Authenticator, PasswordCheck, Principal};

/// Most entries one table keeps; past it, expired windows are swept, and
/// if that is not enough the table starts afresh.
const MAX_ENTRIES: usize = 100_000;

/// One fixed window of failures.
#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
}

/// Counts failed authentications per client address (IPv6 by /64, what one
/// subscriber usually holds) and per user name; once either reaches
/// `max_failures` within `window`, requests from that address or for that
/// user name are refused until the window ends.
pub struct FailureLimiter {
    max_failures: u32,
    window: Duration,
    by_address: Mutex<HashMap<IpAddr, Window>>,
    by_user: Mutex<HashMap<String, Window>>,
}

/// The key of an address: IPv4 as is, IPv6 by its /64 prefix.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

fn blocked_for<K: std::hash::Hash + Eq>(
    table: &Mutex<HashMap<K, Window>>,
    key: &K,
    max: u32,
    window: Duration,
    now: Instant,
) -> Option<Duration> {
    let table = table.lock().unwrap_or_else(|e| e.into_inner());
    let w = table.get(key)?;
    let ends = w.started + window;
    (w.failures >= max && now < ends).then(|| ends - now)
}

fn count<K: std::hash::Hash + Eq>(
    table: &Mutex<HashMap<K, Window>>,
    key: K,
    window: Duration,
    now: Instant,
) {
    let mut table = table.lock().unwrap_or_else(|e| e.into_inner());
    if table.len() >= MAX_ENTRIES {
        table.retain(|_, w| now < w.started + window);
        if table.len() >= MAX_ENTRIES {
            table.clear();
        }
    }
    let w = table.entry(key).or_insert(Window {
        started: now,
        failures: 0,
    });
    if now >= w.started + window {
        *w = Window {
            started: now,
            failures: 0,
        };
    }
    w.failures = w.failures.saturating_add(1);
}

impl FailureLimiter {
    /// A limiter; `max_failures` 0 turns it off.
    pub fn new(max_failures: u32, window: Duration) -> Self {
        FailureLimiter {
            max_failures,
            window,
            by_address: Mutex::new(HashMap::new()),
            by_user: Mutex::new(HashMap::new()),
        }
    }

    /// How long `address` (and `username`, when given) must wait, or
    /// `None` when it may try.
    pub fn blocked(&self, address: IpAddr, username: Option<&str>) -> Option<Duration> {
        if self.max_failures == 0 {
            return None;
        }
        let now = Instant::now();
        let by_address = blocked_for(
            &self.by_address,
            &address_key(address),
            self.max_failures,
            self.window,
            now,
        );
        let by_user = username.and_then(|u| {
            blocked_for(
                &self.by_user,
                &u.to_string(),
                self.max_failures,
                self.window,
                now,
            )
        });
        by_address.max(by_user)
    }

    /// Counts one failed authentication.
    pub fn failed(&self, address: IpAddr, username: Option<&str>) {
        if self.max_failures == 0 {
            return;
        }
        let now = Instant::now();
        count(&self.by_address, address_key(address), self.window, now);
        if let Some(u) = username {
            count(&self.by_user, u.to_string(), self.window, now);
        }
    }
}

/// Runs Argon2 verifications on at most `threads` blocking threads at once.
pub struct PasswordPool {
    permits: Arc<tokio::sync::Semaphore>,
    /// How long a verification may wait for a thread before the request
    /// is answered 503.
    queue_timeout: Duration,
}

/// Why a password was not verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolError {
    /// Every thread stayed busy for the queue timeout.
    Busy,
}

impl PasswordPool {
    /// A pool of `threads` (0: half the cores, at least 1).
    pub fn new(threads: usize) -> Self {
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
        } else {
            threads
        };
        PasswordPool {
            permits: Arc::new(tokio::sync::Semaphore::new(threads)),
            queue_timeout: Duration::from_secs(5),
        }
    }

    /// Verifies `check` with `auth` on a pool thread.
    pub async fn verify(
        &self,
        auth: Arc<Authenticator>,
        check: PasswordCheck,
    ) -> Result<Option<Principal>, PoolError> {
        let permit = tokio::time::timeout(self.queue_timeout, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| PoolError::Busy)?
            .map_err(|_| PoolError::Busy)?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            auth.verify_password(&check)
        })
        .await
        .map_err(|_| PoolError::Busy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_or_a_user_is_blocked_after_the_limit_until_the_window_ends() {
        let l = FailureLimiter::new(3, Duration::from_millis(300));
        let a: IpAddr = "192.0.2.7".parse().unwrap();
        let b: IpAddr = "192.0.2.8".parse().unwrap();
        for _ in 0..2 {
            l.failed(a, Some("alice"));
        }
        assert_eq!(l.blocked(a, Some("alice")), None, "below the limit");
        l.failed(a, Some("alice"));
        assert!(l.blocked(a, None).is_some(), "the address");
        assert!(
            l.blocked(b, Some("alice")).is_some(),
            "the user name, from elsewhere"
        );
        assert_eq!(l.blocked(b, Some("bob")), None, "others are not");
        let wait = l.blocked(a, None).unwrap();
        assert!(wait <= Duration::from_millis(300));
        std::thread::sleep(wait + Duration::from_millis(20));
        assert_eq!(l.blocked(a, Some("alice")), None, "the window ended");
    }

    #[test]
    fn ipv6_addresses_count_by_their_64_prefix_and_zero_turns_it_off() {
        let l = FailureLimiter::new(2, Duration::from_secs(60));
        let x: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let y: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        l.failed(x, None);
        l.failed(y, None);
        assert!(l.blocked(x, None).is_some());
        assert_eq!(l.blocked(other, None), None);
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        l.failed(mapped, None);
        l.failed(v4, None);
        assert!(
            l.blocked(v4, None).is_some(),
            "a v4-mapped address is its v4"
        );
        let off = FailureLimiter::new(0, Duration::from_secs(60));
        for _ in 0..100 {
            off.failed(x, Some("alice"));
        }
        assert_eq!(off.blocked(x, Some("alice")), None);
    }
}
