//! The shared SQL backend: PostgreSQL, for several host processes on one
//! store.
//!
//! One table holds every key:
//!
//! ```sql
//! CREATE TABLE kv (key TEXT COLLATE "C" PRIMARY KEY, value BYTEA NOT NULL,
//!                  version BIGINT NOT NULL);
//! CREATE SEQUENCE kv_version;
//! ```
//!
//! `COLLATE "C"` orders keys by their UTF-8 octets, as the contract asks.
//! Versions come from the sequence, so they are unique across every process
//! and never reused (a key deleted and created again gets a new version,
//! which keeps stale compare-and-swap writes out).
//!
//! Every operation is one autocommitted statement, so the condition check
//! and the write are atomic on the server whatever the number of processes:
//! `INSERT … ON CONFLICT DO NOTHING` for `absent`, `UPDATE … WHERE version =`
//! for `version(v)` (a concurrent writer waits for the row lock, then
//! re-checks the version and finds it changed), an upsert for `any`. The
//! affected row count tells a `conflict`. With the server's default
//! `synchronous_commit = on`, an acknowledged write is on disk.
//!
//! The client is the synchronous `postgres` crate: call the store from plain
//! or blocking threads (`spawn_blocking`), never from inside an async task,
//! as for the rest of the harness. Connections are pooled by `r2d2`
//! (at most `pool_size`, opened on demand, checked with a round trip only
//! after 30 s idle). A connection failure, a timeout, no free connection
//! within `connect_timeout + statement_timeout` or a server shutting down
//! is [`StoreError::Unavailable`]; a read that meets a dead pooled
//! connection goes on to the next (discarding each) until a live or new one
//! answers. While the last
//! attempt to connect failed and no connection is open, every operation
//! fails at once with that attempt's error (`Unavailable` for an outage,
//! `Other` for, say, an unknown database) and `r2d2` keeps trying in the
//! background.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use postgres::error::SqlState;
use postgres::{Client, Statement};

use super::{check_sizes, Condition, Entry, KeyPage, KvStore, StoreError};

mod connections;

use connections::{workers, Conn, LastFailure, Manager, TraceErrors};

/// The PostgreSQL client crate, for callers (tests, tools) that need a raw
/// connection beside the store.
pub use ::postgres as driver;

/// How to reach the server and how long to wait for it.
#[derive(Clone)]
pub struct PostgresConfig {
    /// A libpq-style URL or key/value string,
    /// e.g. `postgres://user@127.0.0.1:5432/db`. TLS is not supported:
    /// use a loopback or otherwise trusted network.
    pub url: String,
    /// Schema holding the table and the sequence (created if missing);
    /// `public` when `None`.
    pub schema: Option<String>,
    /// Most connections open at once.
    pub pool_size: usize,
    /// Longest wait for a TCP connection and the start-up handshake.
    pub connect_timeout: Duration,
    /// Server-side limit on each statement (`statement_timeout`), which also
    /// bounds the wait for a row another writer holds.
    pub statement_timeout: Duration,
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may carry a password.
        f.debug_struct("PostgresConfig")
            .field("url", &redact(&self.url))
            .field("schema", &self.schema)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .finish()
    }
}

impl PostgresConfig {
    /// Defaults: schema `public`, 16 connections, 5 s connect timeout, 10 s
    /// statement timeout.
    pub fn new(url: impl Into<String>) -> Self {
        PostgresConfig {
            url: url.into(),
            schema: None,
            pool_size: 16,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(10),
        }
    }

    /// The same, in `schema`.
    pub fn with_schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }
}

/// Hides the password of a `scheme://user:password@host` URL.
fn redact(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        if let Some((auth, host)) = rest.split_once('@') {
            if let Some((user, _)) = auth.split_once(':') {
                return format!("{scheme}://{user}:***@{host}");
            }
        }
    }
    url.to_string()
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The statements every connection prepares once.
const SQL: [&str; 14] = [
    // 0 get
    "SELECT value, version FROM kv WHERE key = $1",
    // 1 get_many
    "SELECT key, value, version FROM kv WHERE key = ANY($1)",
    // 2 put any
    "INSERT INTO kv (key, value, version) VALUES ($1, $2, nextval('kv_version')) \
     ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, version = EXCLUDED.version \
     RETURNING version",
    // 3 put absent
    "INSERT INTO kv (key, value, version) VALUES ($1, $2, nextval('kv_version')) \
     ON CONFLICT (key) DO NOTHING RETURNING version",
    // 4 put version
    "UPDATE kv SET value = $2, version = nextval('kv_version') \
     WHERE key = $1 AND version = $3 RETURNING version",
    // 5 delete any
    "DELETE FROM kv WHERE key = $1",
    // 6 delete version
    "DELETE FROM kv WHERE key = $1 AND version = $2",
    // 7 exists
    "SELECT 1 FROM kv WHERE key = $1",
    // 8 list: prefix, upper bound
    "SELECT key FROM kv WHERE key >= $1 AND key < $2 ORDER BY key LIMIT $3",
    // 9 list: prefix, no upper bound
    "SELECT key FROM kv WHERE key >= $1 ORDER BY key LIMIT $2",
    // 10 list: prefix, upper bound, cursor
    "SELECT key FROM kv WHERE key >= $1 AND key < $2 AND key > $3 ORDER BY key LIMIT $4",
    // 11 list: prefix, no upper bound, cursor
    "SELECT key FROM kv WHERE key >= $1 AND key > $2 ORDER BY key LIMIT $3",
    // 12 count: prefix, upper bound
    "SELECT count(*) FROM kv WHERE key >= $1 AND key < $2",
    // 13 count: prefix, no upper bound
    "SELECT count(*) FROM kv WHERE key >= $1",
];

const GET: usize = 0;
const GET_MANY: usize = 1;
const PUT_ANY: usize = 2;
const PUT_ABSENT: usize = 3;
const PUT_VERSION: usize = 4;
const DELETE_ANY: usize = 5;
const DELETE_VERSION: usize = 6;
const EXISTS: usize = 7;
const LIST_BOUNDED: usize = 8;
const LIST_OPEN: usize = 9;
const LIST_BOUNDED_AFTER: usize = 10;
const LIST_OPEN_AFTER: usize = 11;
const COUNT_BOUNDED: usize = 12;
const COUNT_OPEN: usize = 13;

/// A [`KvStore`] in a PostgreSQL database.
pub struct PostgresStore {
    config: PostgresConfig,
    /// Always `Some` but in `drop`, which may hand it to another thread.
    pool: Option<r2d2::Pool<Manager>>,
    /// The manager's schema generation.
    generation: Arc<AtomicU64>,
    /// Why the manager's last attempt to connect failed, if it did.
    last_failure: Arc<LastFailure>,
}

impl Drop for PostgresStore {
    /// Closes the idle connections. The synchronous client closes each on
    /// a runtime of its own, which panics inside an async context (a
    /// server dropping its store as it shuts down), so there they are
    /// closed on a thread of their own.
    fn drop(&mut self) {
        let Some(pool) = self.pool.take() else {
            return;
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            // Handed over only once the thread runs: a thread that cannot
            // be started must not drop them here.
            let (tx, rx) = std::sync::mpsc::channel::<r2d2::Pool<Manager>>();
            let closing = std::thread::Builder::new()
                .name("jmap-web-push-pg-close".into())
                .spawn(move || drop(rx.recv()));
            match closing {
                Ok(_) => {
                    if let Err(unsent) = tx.send(pool) {
                        std::mem::forget(unsent.0);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "PostgreSQL connections left open until exit");
                    std::mem::forget(pool);
                }
            }
        }
    }
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The error of an operation that found no connection because the last
/// attempt to open one failed: that attempt's, said so.
fn not_connected(failure: StoreError) -> StoreError {
    match failure {
        StoreError::Unavailable(m) => {
            StoreError::Unavailable(format!("{m} (not connected; retrying in the background)"))
        }
        StoreError::Other(m) => {
            StoreError::Other(format!("{m} (not connected; retrying in the background)"))
        }
        other => other,
    }
}

/// The first slice of an operation's wait for a connection, after which it
/// looks whether the last attempt to open one failed; each further slice
/// is twice as long, up to [`MAX_WAIT_SLICE`]. (Each slice may have the
/// pool start one more connection, so they are not all short.)
const FIRST_WAIT_SLICE: Duration = Duration::from_millis(50);

/// The longest slice of a wait for a connection.
const MAX_WAIT_SLICE: Duration = Duration::from_millis(800);

fn classify(e: &postgres::Error) -> StoreError {
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        let msg = format!("postgres: {} ({})", db.message(), code.code());
        if *code == SqlState::QUERY_CANCELED
            || *code == SqlState::ADMIN_SHUTDOWN
            || *code == SqlState::CRASH_SHUTDOWN
            || *code == SqlState::CANNOT_CONNECT_NOW
            || *code == SqlState::TOO_MANY_CONNECTIONS
            || *code == SqlState::LOCK_NOT_AVAILABLE
            || *code == SqlState::T_R_SERIALIZATION_FAILURE
            || *code == SqlState::T_R_DEADLOCK_DETECTED
            || *code == SqlState::INSUFFICIENT_RESOURCES
            || *code == SqlState::DISK_FULL
            || *code == SqlState::OUT_OF_MEMORY
            || code.code().starts_with("08")
        {
            StoreError::Unavailable(msg)
        } else if *code == SqlState::PROGRAM_LIMIT_EXCEEDED {
            StoreError::TooLarge
        } else {
            StoreError::Other(msg)
        }
    } else {
        // I/O, timeouts, closed connections, protocol errors.
        StoreError::Unavailable(format!("postgres: {e}"))
    }
}

/// The smallest string greater than every string starting with `prefix`,
/// or `None` when there is none (empty prefix, or only U+10FFFF). UTF-8
/// octet order is code point order, so bumping the last bumpable character
/// and dropping what follows gives it.
fn prefix_successor(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(c) = chars.pop() {
        let next = match c as u32 {
            0xD7FF => Some('\u{E000}'),
            n => char::from_u32(n + 1),
        };
        if let Some(n) = next {
            chars.push(n);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

impl PostgresStore {
    /// Connects with the default [`PostgresConfig`] and creates the schema.
    /// An unreachable server is [`StoreError::Unavailable`].
    pub fn open(url: &str) -> Result<Self, StoreError> {
        Self::open_with(PostgresConfig::new(url))
    }

    /// Connects with `config` and creates the table and the sequence if
    /// missing.
    pub fn open_with(config: PostgresConfig) -> Result<Self, StoreError> {
        let store = Self::open_lazy(config)?;
        store.with_conn(false, |_, _| Ok(()))?;
        Ok(store)
    }

    /// Like [`open_with`](Self::open_with) but does not connect until the
    /// first operation, so a host can start while the database is down; each
    /// operation until then is [`StoreError::Unavailable`]. Only a malformed
    /// URL is an error here.
    pub fn open_lazy(config: PostgresConfig) -> Result<Self, StoreError> {
        let mut pg = postgres::Config::from_str(&config.url)
            .map_err(|e| StoreError::Other(format!("bad PostgreSQL URL: {e}")))?;
        pg.connect_timeout(config.connect_timeout)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30))
            .tcp_user_timeout(config.statement_timeout + Duration::from_secs(5));
        if pg.get_application_name().is_none() {
            pg.application_name("jmap-web-push");
        }
        let generation = Arc::new(AtomicU64::new(0));
        let last_failure = Arc::new(LastFailure::default());
        let manager = Manager {
            pg,
            schema: config.schema.clone().unwrap_or_else(|| "public".into()),
            statement_timeout: config.statement_timeout,
            connect_timeout: config.connect_timeout,
            schema_ready: OnceLock::new(),
            generation: generation.clone(),
            last_failure: last_failure.clone(),
        };
        // Connections open on demand (none at start, none kept open for
        // their own sake) up to `pool_size`, on worker threads every store
        // of the process shares; idle ones are closed after 10 minutes,
        // every one after 30 (r2d2's defaults). `checkout` bounds the waits.
        let pool = r2d2::Pool::builder()
            .max_size(u32::try_from(config.pool_size.max(1)).unwrap_or(u32::MAX))
            .min_idle(Some(0))
            .thread_pool(workers())
            .connection_timeout(config.connect_timeout.max(Duration::from_millis(1)))
            .test_on_check_out(true)
            .error_handler(Box::new(TraceErrors))
            .build_unchecked(manager);
        Ok(PostgresStore {
            config,
            pool: Some(pool),
            generation,
            last_failure,
        })
    }

    fn pool(&self) -> Result<&r2d2::Pool<Manager>, StoreError> {
        self.pool
            .as_ref()
            .ok_or_else(|| StoreError::Other("postgres: the store is closing".into()))
    }

    /// Runs `f` on a pooled connection. A connection whose error says it
    /// may be broken is closed. With `retry_read`, such a failure is
    /// retried on another connection, at most `pool_size + 1` times in all:
    /// after a server restart every idle connection is dead, and each is
    /// discarded in turn until a new one is opened.
    fn with_conn<T>(
        &self,
        retry_read: bool,
        mut f: impl FnMut(&mut Client, &[Statement]) -> Result<T, postgres::Error>,
    ) -> Result<T, StoreError> {
        let pool = self.pool()?;
        let mut attempts = if retry_read {
            self.config.pool_size.max(1) + 1
        } else {
            1
        };
        loop {
            attempts -= 1;
            let mut conn = self.checkout(pool)?;
            let Conn {
                client, statements, ..
            } = &mut *conn;
            match f(client, statements) {
                Ok(v) => {
                    conn.last_used = Instant::now();
                    return Ok(v);
                }
                Err(e) => {
                    let err = classify(&e);
                    let broken = matches!(err, StoreError::Unavailable(_));
                    conn.broken = broken;
                    conn.last_used = Instant::now();
                    drop(conn);
                    if !(broken && attempts > 0) {
                        return Err(err);
                    }
                }
            }
        }
    }

    /// A connection from the pool, waiting at most `connect_timeout +
    /// statement_timeout` for a free or new one (as long as a busy
    /// statement may take). While the last attempt to open one failed (the
    /// server down, a wrong password, ...) and none is open, it fails at
    /// once with that attempt's error, classified: the pool keeps trying
    /// in the background, and the first operation after a success goes
    /// through. A wait also ends as soon as an attempt to open one fails.
    fn checkout(
        &self,
        pool: &r2d2::Pool<Manager>,
    ) -> Result<r2d2::PooledConnection<Manager>, StoreError> {
        if let Some(failure) = self.last_failure.get() {
            if pool.state().connections == 0 {
                // A zero wait still has the pool try again in the
                // background when it has room (and takes a connection
                // that came meanwhile).
                return pool
                    .get_timeout(Duration::ZERO)
                    .map_err(|_| not_connected(failure));
            }
        }
        let wait = self.config.connect_timeout + self.config.statement_timeout;
        let deadline = Instant::now() + wait;
        let mut next_slice = FIRST_WAIT_SLICE;
        loop {
            let now = Instant::now();
            let slice = deadline.saturating_duration_since(now).min(next_slice);
            next_slice = (next_slice * 2).min(MAX_WAIT_SLICE);
            match pool.get_timeout(slice) {
                Ok(conn) => return Ok(conn),
                Err(e) => {
                    if let Some(failure) = self.last_failure.get() {
                        if pool.state().connections == 0 {
                            return Err(not_connected(failure));
                        }
                    }
                    if Instant::now() >= deadline {
                        return Err(StoreError::Unavailable(format!(
                            "postgres: no free connection within {wait:?} ({e})"
                        )));
                    }
                }
            }
        }
    }

    /// Drops the schema (table, sequence and all). For tests that make a
    /// fresh schema per case.
    pub fn drop_schema(&self) -> Result<(), StoreError> {
        let schema = quote_ident(self.schema());
        self.with_conn(false, |c, _| {
            c.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        })?;
        // Pooled connections hold statements of the dropped table: the
        // pool discards them as they come up.
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    fn schema(&self) -> &str {
        self.config.schema.as_deref().unwrap_or("public")
    }
}

fn to_version(v: i64) -> Result<u64, StoreError> {
    u64::try_from(v)
        .ok()
        .filter(|v| *v != 0)
        .ok_or_else(|| StoreError::Other(format!("postgres: invalid stored version {v}")))
}

impl KvStore for PostgresStore {
    fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        let row = self.with_conn(true, |c, s| c.query_opt(&s[GET], &[&key]))?;
        match row {
            Some(row) => Ok(Some(Entry {
                value: row.get(0),
                version: to_version(row.get(1))?,
            })),
            None => Ok(None),
        }
    }

    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Entry>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let rows = self.with_conn(true, |c, s| c.query(&s[GET_MANY], &[&keys]))?;
        let mut found = std::collections::HashMap::with_capacity(rows.len());
        for row in rows {
            let key: String = row.get(0);
            let entry = Entry {
                value: row.get(1),
                version: to_version(row.get(2))?,
            };
            found.insert(key, entry);
        }
        Ok(keys.iter().map(|k| found.get(k).cloned()).collect())
    }

    fn put(&self, key: &str, value: &[u8], cond: Condition) -> Result<u64, StoreError> {
        check_sizes(key, value)?;
        let row = match cond {
            Condition::Any => {
                self.with_conn(false, |c, s| c.query_opt(&s[PUT_ANY], &[&key, &value]))?
            }
            Condition::Absent => {
                self.with_conn(false, |c, s| c.query_opt(&s[PUT_ABSENT], &[&key, &value]))?
            }
            Condition::Version(v) => {
                let Ok(v) = i64::try_from(v) else {
                    return Err(StoreError::Conflict);
                };
                self.with_conn(false, |c, s| {
                    c.query_opt(&s[PUT_VERSION], &[&key, &value, &v])
                })?
            }
        };
        match row {
            Some(row) => to_version(row.get(0)),
            None => Err(StoreError::Conflict),
        }
    }

    fn delete(&self, key: &str, cond: Condition) -> Result<bool, StoreError> {
        match cond {
            Condition::Any => {
                let n = self.with_conn(false, |c, s| c.execute(&s[DELETE_ANY], &[&key]))?;
                Ok(n > 0)
            }
            Condition::Absent => {
                // Holds only when there is nothing to delete.
                let row = self.with_conn(true, |c, s| c.query_opt(&s[EXISTS], &[&key]))?;
                if row.is_some() {
                    Err(StoreError::Conflict)
                } else {
                    Ok(false)
                }
            }
            Condition::Version(v) => {
                let Ok(v) = i64::try_from(v) else {
                    return Err(StoreError::Conflict);
                };
                let n = self.with_conn(false, |c, s| c.execute(&s[DELETE_VERSION], &[&key, &v]))?;
                if n > 0 {
                    Ok(true)
                } else {
                    Err(StoreError::Conflict)
                }
            }
        }
    }

    fn list_keys(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<KeyPage, StoreError> {
        let limit = limit.max(1) as usize;
        let fetch = limit as i64 + 1;
        // Keys with the prefix are exactly those in [prefix, successor).
        let upper = prefix_successor(prefix);
        let rows = self.with_conn(true, |c, s| match (&upper, after) {
            (Some(u), None) => c.query(&s[LIST_BOUNDED], &[&prefix, &u.as_str(), &fetch]),
            (None, None) => c.query(&s[LIST_OPEN], &[&prefix, &fetch]),
            (Some(u), Some(a)) => {
                c.query(&s[LIST_BOUNDED_AFTER], &[&prefix, &u.as_str(), &a, &fetch])
            }
            (None, Some(a)) => c.query(&s[LIST_OPEN_AFTER], &[&prefix, &a, &fetch]),
        })?;
        let keys: Vec<String> = rows.into_iter().map(|r| r.get(0)).collect();
        Ok(KeyPage::from_overfetched(keys, limit))
    }

    fn count_prefix(&self, prefix: &str) -> Result<u64, StoreError> {
        let upper = prefix_successor(prefix);
        let row = self.with_conn(true, |c, s| match &upper {
            Some(u) => c.query_one(&s[COUNT_BOUNDED], &[&prefix, &u.as_str()]),
            None => c.query_one(&s[COUNT_OPEN], &[&prefix]),
        })?;
        let n: i64 = row.get(0);
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests;
