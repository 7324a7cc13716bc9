//! The `store` contract (wit/plugin.wit, interface `store`), one suite run
//! against every backend: memory, embedded (redb) and PostgreSQL. Modelled
//! on Apache James's repository contract tests, plus compare-and-swap under
//! concurrency, outages, the plugin end to end on PostgreSQL, and a kill -9
//! of a process writing to the embedded store.
//!
//! The PostgreSQL cases need a server: `./scripts/test.sh` starts one
//! (scripts/pg.sh) and exports `JMAP_WEB_PUSH_TEST_PG`. Without it they
//! fail, unless `JMAP_WEB_PUSH_SKIP_PG=1` says to skip them. Each case works
//! in a fresh schema, dropped at the end, so cases run in parallel.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use jmap_web_push_host::store::embedded::EmbeddedStore;
use jmap_web_push_host::store::memory::MemoryStore;
use jmap_web_push_host::store::postgres::{PostgresConfig, PostgresStore};
use jmap_web_push_host::store::{Condition, KvStore, StoreError, MAX_KEY_OCTETS, MAX_VALUE_OCTETS};
use jmap_web_push_tests::*;
use serde_json::json;

// ---------------------------------------------------------------------------
// Fixtures

const PG_ENV: &str = "JMAP_WEB_PUSH_TEST_PG";
const SKIP_PG_ENV: &str = "JMAP_WEB_PUSH_SKIP_PG";

/// The test server's URL, `None` when the PostgreSQL tests are skipped on
/// purpose; panics when they would silently not run.
pub(crate) fn pg_url() -> Option<String> {
    match std::env::var(PG_ENV) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var(SKIP_PG_ENV).as_deref() == Ok("1") => {
            eprintln!(
                "\n!!!!!!!! SKIPPED: PostgreSQL store test ({SKIP_PG_ENV}=1); \
                 run ./scripts/test.sh to test the PostgreSQL backend !!!!!!!!\n"
            );
            None
        }
        _ => panic!(
            "{PG_ENV} is not set: the PostgreSQL store tests need a server. Run them \
             through ./scripts/test.sh (which starts one with scripts/pg.sh), or export \
             {PG_ENV}=$(./scripts/pg.sh start), or set {SKIP_PG_ENV}=1 to skip them."
        ),
    }
}

static UNIQUE: AtomicU64 = AtomicU64::new(0);

/// A name unique to this process and call.
fn unique(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{tag}_{}_{}_{nanos}",
        std::process::id(),
        UNIQUE.fetch_add(1, Ordering::SeqCst)
    )
}

/// A PostgreSQL schema name for a test case.
fn schema_name(case: &str) -> String {
    let mut s = unique(&format!("t_{case}"));
    s.truncate(63);
    s.to_ascii_lowercase()
}

/// A fresh store of one backend, cleaned up on drop.
struct Fixture {
    store: Arc<dyn KvStore>,
    cleanup: Option<Box<dyn FnOnce()>>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(f) = self.cleanup.take() {
            f();
        }
    }
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(unique(&format!("jwp-{tag}")));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[derive(Clone, Copy)]
enum Backend {
    Memory,
    Embedded,
    Postgres,
}

impl Backend {
    /// A fresh, empty store; `None` when PostgreSQL is skipped.
    fn fresh(self, case: &str) -> Option<Fixture> {
        match self {
            Backend::Memory => Some(Fixture {
                store: Arc::new(MemoryStore::new()),
                cleanup: None,
            }),
            Backend::Embedded => {
                let dir = TempDir::new(case);
                let store = EmbeddedStore::open(dir.0.join("store.redb")).expect("open");
                Some(Fixture {
                    store: Arc::new(store),
                    cleanup: Some(Box::new(move || drop(dir))),
                })
            }
            Backend::Postgres => {
                let url = pg_url()?;
                let store = Arc::new(
                    PostgresStore::open_with(
                        PostgresConfig::new(url).with_schema(schema_name(case)),
                    )
                    .expect("PostgreSQL store opens"),
                );
                let dropper = store.clone();
                Some(Fixture {
                    store,
                    cleanup: Some(Box::new(move || {
                        let _ = dropper.drop_schema();
                    })),
                })
            }
        }
    }
}

fn run(backend: Backend, case: &str, f: fn(&dyn KvStore)) {
    if let Some(fixture) = backend.fresh(case) {
        f(fixture.store.as_ref());
    }
}

/// Instantiates every case for one backend, as a module of tests.
macro_rules! backend {
    ($module:ident, $backend:expr, $($case:ident),* $(,)?) => {
        mod $module {
            $(
                #[test]
                fn $case() {
                    super::run($backend, stringify!($case), super::cases::$case);
                }
            )*
        }
    };
}

/// Instantiates every case for every backend.
macro_rules! contract_suite {
    ($($case:ident),* $(,)?) => {
        backend!(memory, super::Backend::Memory, $($case),*);
        backend!(embedded, super::Backend::Embedded, $($case),*);
        backend!(postgres, super::Backend::Postgres, $($case),*);
    };
}

contract_suite!(
    get_missing_is_none,
    put_then_get,
    put_any_overwrites,
    versions_are_nonzero_and_change_on_every_write,
    recreated_key_gets_a_new_version,
    absent_creates_a_missing_key,
    absent_on_present_key_conflicts_and_keeps_the_value,
    matching_version_writes,
    stale_version_conflicts_and_keeps_the_value,
    version_on_missing_key_conflicts,
    delete_missing_returns_false,
    delete_present_returns_true_and_removes,
    delete_with_matching_version,
    delete_with_stale_version_conflicts,
    delete_with_version_on_missing_key_conflicts,
    delete_absent_condition,
    keys_are_independent,
    list_on_empty_store,
    list_is_in_octet_order,
    list_prefix_excludes_neighbours,
    list_pages_with_limit_1,
    list_pages_with_limit_2,
    list_pages_with_a_large_limit,
    list_full_last_page_has_no_next,
    list_after_before_the_prefix_starts_at_the_prefix,
    list_after_past_the_prefix_is_empty,
    list_after_a_key_that_does_not_exist,
    list_empty_prefix_lists_all,
    list_limit_0_is_treated_as_1,
    list_skips_deleted_keys,
    count_prefix_counts_exactly_the_prefix,
    unicode_keys,
    empty_value,
    binary_value,
    large_value_1_mib,
    too_large_key,
    too_large_value,
    get_many_in_order_with_missing_keys,
    get_many_of_nothing,
    get_many_with_duplicates,
    cas_race_has_exactly_one_winner,
    absent_race_has_exactly_one_winner,
    cas_increments_from_8_threads_add_up,
);

mod cases;
mod embedded_crash;
mod failures;
mod plugin_on_postgres;
