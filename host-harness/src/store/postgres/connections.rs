//! The connections of the PostgreSQL store: how the pool (`r2d2`) opens
//! one (session settings, the schema on first use, the prepared
//! statements), checks one that has been idle, and discards a broken or
//! stale one; the worker threads every store shares.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use postgres::{Client, NoTls, Statement};

use super::{classify, quote_ident, StoreError, SQL};

/// A connection and its prepared statements, as the pool keeps it.
pub(super) struct Conn {
    pub(super) client: Client,
    pub(super) statements: Vec<Statement>,
    /// When an operation last finished on it.
    pub(super) last_used: Instant,
    /// The schema generation it prepared its statements for.
    pub(super) generation: u64,
    /// An operation failed in a way that says the connection may be dead.
    pub(super) broken: bool,
}

/// Why the pool could not open or keep a connection.
#[derive(Debug)]
pub(super) enum ConnError {
    /// The server or the network said no.
    Postgres(postgres::Error),
    /// The schema was dropped since the connection prepared its statements.
    Stale,
}

impl fmt::Display for ConnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnError::Postgres(e) => write!(f, "{e}"),
            ConnError::Stale => f.write_str("prepared for a dropped schema"),
        }
    }
}

impl std::error::Error for ConnError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConnError::Postgres(e) => Some(e),
            ConnError::Stale => None,
        }
    }
}

/// How the pool (`r2d2`) opens, checks and discards connections: the
/// session settings, the schema on first use and the prepared statements
/// on every new connection; a round trip to check one only when it has
/// been idle longer than [`VALIDATE_AFTER`].
pub(super) struct Manager {
    pub(super) pg: postgres::Config,
    pub(super) schema: String,
    pub(super) statement_timeout: Duration,
    pub(super) connect_timeout: Duration,
    pub(super) schema_ready: OnceLock<()>,
    /// Bumped when the schema is dropped: older connections are discarded.
    pub(super) generation: Arc<AtomicU64>,
    /// Why the last attempt to open a connection failed, classified
    /// (cleared by the next that succeeds).
    pub(super) last_failure: Arc<LastFailure>,
}

impl Manager {
    /// A new connection with its session settings and statements (and the
    /// schema, the first time).
    fn open(&self) -> Result<Conn, ConnError> {
        let generation = self.generation.load(Ordering::Acquire);
        let mut client = self.pg.connect(NoTls).map_err(ConnError::Postgres)?;
        let ms = self.statement_timeout.as_millis().max(1);
        let schema = quote_ident(&self.schema);
        client
            .batch_execute(&format!(
                "SET statement_timeout = {ms}; SET search_path TO {schema}"
            ))
            .map_err(ConnError::Postgres)?;
        if self.schema_ready.get().is_none() {
            // Serialized across processes: concurrent `CREATE … IF NOT
            // EXISTS` of the same object can fail on the catalog's unique
            // index.
            let mut txn = client.transaction().map_err(ConnError::Postgres)?;
            txn.batch_execute(&format!(
                "SELECT pg_advisory_xact_lock(7253210418731); \
                 CREATE SCHEMA IF NOT EXISTS {schema}; \
                 CREATE TABLE IF NOT EXISTS {schema}.kv (\
                     key TEXT COLLATE \"C\" PRIMARY KEY, \
                     value BYTEA NOT NULL, \
                     version BIGINT NOT NULL); \
                 CREATE SEQUENCE IF NOT EXISTS {schema}.kv_version MINVALUE 1 START 1;"
            ))
            .map_err(ConnError::Postgres)?;
            txn.commit().map_err(ConnError::Postgres)?;
            let _ = self.schema_ready.set(());
        }
        let statements = SQL
            .iter()
            .map(|sql| client.prepare(sql))
            .collect::<Result<Vec<_>, _>>()
            .map_err(ConnError::Postgres)?;
        Ok(Conn {
            client,
            statements,
            last_used: Instant::now(),
            generation,
            broken: false,
        })
    }
}

impl r2d2::ManageConnection for Manager {
    type Connection = Conn;
    type Error = ConnError;

    fn connect(&self) -> Result<Conn, ConnError> {
        let conn = self.open();
        let failure = match &conn {
            Ok(_) => None,
            Err(ConnError::Postgres(e)) => Some(classify(e)),
            Err(ConnError::Stale) => None,
        };
        self.last_failure.record(failure);
        conn
    }

    fn is_valid(&self, conn: &mut Conn) -> Result<(), ConnError> {
        if conn.generation != self.generation.load(Ordering::Acquire) {
            return Err(ConnError::Stale);
        }
        if conn.last_used.elapsed() > VALIDATE_AFTER {
            conn.client
                .is_valid(self.connect_timeout)
                .map_err(ConnError::Postgres)?;
        }
        Ok(())
    }

    fn has_broken(&self, conn: &mut Conn) -> bool {
        conn.broken
            || conn.client.is_closed()
            || conn.generation != self.generation.load(Ordering::Acquire)
    }
}

/// Connection failures go to the log at debug level; the operation that
/// waited for the connection reports the last one as
/// [`StoreError::Unavailable`].
#[derive(Debug)]
pub(super) struct TraceErrors;

impl r2d2::HandleError<ConnError> for TraceErrors {
    fn handle_error(&self, error: ConnError) {
        tracing::debug!(%error, "PostgreSQL connection failed");
    }
}

/// The worker threads that open and close pooled connections, shared by
/// every store of the process (r2d2 would start three per store).
pub(super) fn workers() -> Arc<scheduled_thread_pool::ScheduledThreadPool> {
    static WORKERS: OnceLock<Arc<scheduled_thread_pool::ScheduledThreadPool>> = OnceLock::new();
    WORKERS
        .get_or_init(|| {
            Arc::new(
                scheduled_thread_pool::ScheduledThreadPool::builder()
                    .num_threads(4)
                    .thread_name_pattern("jmap-web-push-pg-{}")
                    .build(),
            )
        })
        .clone()
}

/// A connection idle longer than this is checked before use.
const VALIDATE_AFTER: Duration = Duration::from_secs(30);

/// Why the last attempt to open a connection failed, classified; `None`
/// once one succeeds. Read by every store operation, so the usual answer
/// ("it did not fail") is one atomic load.
#[derive(Default)]
pub(super) struct LastFailure {
    failing: AtomicBool,
    error: Mutex<Option<StoreError>>,
}

impl LastFailure {
    fn record(&self, failure: Option<StoreError>) {
        let mut error = self
            .error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.failing.store(failure.is_some(), Ordering::Release);
        *error = failure;
    }

    /// The failure, if the last attempt failed.
    pub(super) fn get(&self) -> Option<StoreError> {
        if !self.failing.load(Ordering::Acquire) {
            return None;
        }
        self.error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}
