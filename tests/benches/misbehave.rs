//! Guest misbehaviour, timed: a fixture component (`fixtures/misbehave`)
//! loops forever, allocates without bound, or traps; each call must fail on
//! its own, and the next call must work on a fresh instance. Prints how long
//! each misbehaving call takes to be stopped (against the configured CPU
//! deadline) and how long the next, normal call takes.
//!
//! Run: `cargo bench -p jmap-web-push-tests --bench misbehave`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jmap_web_push_host::store::memory::MemoryStore;
use jmap_web_push_host::{CallError, Caller, Flavour, PluginConfig, PushPlugin, SandboxOptions};
use jmap_web_push_tests::FIXTURE_PATH;

const ROUNDS: usize = 5;

fn fixture(deadline: Duration, memory_limit: usize) -> PushPlugin {
    PushPlugin::builder()
        .config(PluginConfig::default())
        .store(Arc::new(MemoryStore::new()))
        .sandbox(SandboxOptions {
            flavour: Flavour::Portable,
            component: Some(std::fs::read(FIXTURE_PATH).expect("fixture component built")),
            call_deadline: deadline,
            memory_limit,
            ..SandboxOptions::default()
        })
        .build()
        .expect("fixture loads")
}

fn caller() -> Caller {
    Caller {
        username: "u".into(),
        credential_id: None,
    }
}

/// Times `method` (which must fail as `expect` says) and the normal call
/// after it; medians and maxima over ROUNDS.
fn row(
    plugin: &PushPlugin,
    method: &str,
    expect: fn(&CallError) -> bool,
) -> (Duration, Duration, Duration) {
    let mut stopped = Vec::new();
    let mut next = Vec::new();
    for _ in 0..ROUNDS {
        let t = Instant::now();
        match plugin.call(&caller(), method, "{}", &[]) {
            Err(e) if expect(&e) => {}
            other => panic!("{method}: unexpected {other:?}"),
        }
        stopped.push(t.elapsed());
        let t = Instant::now();
        let r = plugin
            .call(&caller(), "fine", "{}", &[])
            .expect("the next call works")
            .expect("method answers");
        assert_eq!(r.arguments, "{\"ok\":4}");
        next.push(t.elapsed());
    }
    stopped.sort();
    next.sort();
    (stopped[ROUNDS / 2], stopped[ROUNDS - 1], next[ROUNDS / 2])
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

fn main() {
    println!(
        "| misbehaviour | CPU deadline | memory cap | stopped after (median of {ROUNDS}) | slowest | next normal call |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for deadline_ms in [100u64, 500, 2000] {
        let deadline = Duration::from_millis(deadline_ms);
        let plugin = fixture(deadline, 16 << 20);
        let (median, max, next) = row(&plugin, "loop", |e| matches!(e, CallError::Deadline(_)));
        println!(
            "| endless loop | {deadline_ms} ms | 16 MiB | {} ms | {} ms | {} ms |",
            ms(median),
            ms(max),
            ms(next)
        );
    }
    for mib in [16usize, 64] {
        let plugin = fixture(Duration::from_secs(30), mib << 20);
        let (median, max, next) = row(&plugin, "alloc", |e| matches!(e, CallError::Trap { .. }));
        println!(
            "| unbounded allocation | 30000 ms | {mib} MiB | {} ms | {} ms | {} ms |",
            ms(median),
            ms(max),
            ms(next)
        );
    }
    let plugin = fixture(Duration::from_secs(30), 16 << 20);
    let (median, max, next) = row(&plugin, "trap", |e| matches!(e, CallError::Trap { .. }));
    println!(
        "| trap | 30000 ms | 16 MiB | {} ms | {} ms | {} ms |",
        ms(median),
        ms(max),
        ms(next)
    );
}
