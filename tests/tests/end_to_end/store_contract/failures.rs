//! Outages and failures: a typed error, never a panic; recovery after the
//! server kills the connections; a store dropped inside an async runtime.

use super::*;

pub(super) fn assert_unavailable<T: std::fmt::Debug>(what: &str, r: Result<T, StoreError>) {
    assert!(
        matches!(r, Err(StoreError::Unavailable(_))),
        "{what}: {r:?} (want Unavailable)"
    );
}

pub(super) fn every_operation_is_unavailable(s: &dyn KvStore) {
    assert_unavailable("get", s.get("k"));
    assert_unavailable("get_many", s.get_many(&["k".to_string()]));
    assert_unavailable("put any", s.put("k", b"v", Condition::Any));
    assert_unavailable("put absent", s.put("k", b"v", Condition::Absent));
    assert_unavailable("put version", s.put("k", b"v", Condition::Version(1)));
    assert_unavailable("delete", s.delete("k", Condition::Any));
    assert_unavailable("list", s.list_keys("", None, 10));
}

#[test]
fn memory_switched_off_is_unavailable() {
    let s = MemoryStore::new();
    s.put("k", b"v", Condition::Any).unwrap();
    s.set_unavailable(true);
    every_operation_is_unavailable(&s);
    s.set_unavailable(false);
    assert_eq!(s.get("k").unwrap().unwrap().value, b"v");
}

#[test]
fn embedded_at_an_impossible_path_is_unavailable() {
    let dir = TempDir::new("impossible");
    let file = dir.0.join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let r = EmbeddedStore::open(file.join("sub").join("store.redb"));
    assert_unavailable("open under a file", r);
    let r = EmbeddedStore::open(&dir.0);
    assert!(r.is_err(), "a directory is not a store file");
}

#[test]
fn postgres_on_a_closed_port_is_unavailable() {
    // A port that was just free: nobody listens there.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut config = PostgresConfig::new(format!("postgres://postgres@127.0.0.1:{port}/none"));
    config.connect_timeout = Duration::from_secs(2);
    let started = std::time::Instant::now();
    assert_unavailable("open", PostgresStore::open_with(config.clone()));
    let lazy = PostgresStore::open_lazy(config).expect("a well-formed URL");
    every_operation_is_unavailable(&lazy);
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn postgres_with_an_unknown_database_is_not_a_panic() {
    let Some(url) = pg_url() else { return };
    let url = match url.rsplit_once('/') {
        Some((base, _)) => format!("{base}/no_such_database_{}", std::process::id()),
        None => return,
    };
    let r = PostgresStore::open(&url);
    assert!(
        matches!(r, Err(StoreError::Unavailable(_) | StoreError::Other(_))),
        "{r:?}"
    );
}

#[test]
fn a_postgres_store_on_an_unknown_database_answers_each_operation_at_once_with_the_reason() {
    let Some(url) = pg_url() else { return };
    let url = match url.rsplit_once('/') {
        Some((base, _)) => format!("{base}/no_such_database_{}", std::process::id()),
        None => return,
    };
    let lazy = PostgresStore::open_lazy(PostgresConfig::new(url)).expect("a well-formed URL");
    for _ in 0..5 {
        let started = std::time::Instant::now();
        let r = lazy.get("k");
        assert!(
            matches!(&r, Err(StoreError::Other(m)) if m.contains("does not exist")),
            "{r:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "took {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn postgres_recovers_after_its_connections_are_killed() {
    use jmap_web_push_host::store::postgres::driver::{Client, NoTls};
    let Some(url) = pg_url() else { return };
    // A name of its own, so only this store's connections are killed.
    let app = unique("killme");
    let sep = if url.contains('?') { '&' } else { '?' };
    let schema = schema_name("killed");
    let store = PostgresStore::open_with(
        PostgresConfig::new(format!("{url}{sep}application_name={app}")).with_schema(&schema),
    )
    .unwrap();
    store.put("k", b"v", Condition::Any).unwrap();
    // Several connections in the pool (all of them killed below).
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                for _ in 0..100 {
                    store.get("k").unwrap();
                }
            });
        }
    });
    let mut admin = Client::connect(&url, NoTls).unwrap();
    let killed = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            &[&app],
        )
        .unwrap()
        .len();
    assert!(killed >= 1, "killed {killed} connections");
    eprintln!("killed {killed} pooled connections");
    std::thread::sleep(Duration::from_millis(100));
    // Reads retry on a fresh connection; a write may report Unavailable
    // (nothing known to be written), then works.
    assert_eq!(store.get("k").unwrap().unwrap().value, b"v");
    let mut written = false;
    for _ in 0..3 {
        match store.put("k2", b"v2", Condition::Any) {
            Ok(_) => {
                written = true;
                break;
            }
            Err(StoreError::Unavailable(_)) => continue,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(written);
    assert_eq!(store.get("k2").unwrap().unwrap().value, b"v2");
    store.drop_schema().unwrap();
}

#[test]
fn a_postgres_store_with_open_connections_can_be_dropped_inside_an_async_runtime() {
    // `serve` drops its store as its async task ends; the synchronous
    // client's connections must not be closed on that thread.
    let Some(url) = pg_url() else { return };
    let schema = schema_name("dropped_async");
    let store = PostgresStore::open_with(PostgresConfig::new(&url).with_schema(&schema)).unwrap();
    store.put("k", b"v", Condition::Any).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async move { drop(store) });
    let again = PostgresStore::open_with(PostgresConfig::new(&url).with_schema(&schema)).unwrap();
    assert_eq!(
        again.get("k").unwrap().map(|e| e.value),
        Some(b"v".to_vec())
    );
    again.drop_schema().unwrap();
}
