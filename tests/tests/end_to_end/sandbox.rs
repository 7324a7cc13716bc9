//! The sandbox: a fixture component that traps, loops forever or
//! allocates without bound; each call fails with a clear error and the next
//! normal call succeeds on a fresh instance.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jmap_web_push_host::store::memory::MemoryStore;
use jmap_web_push_host::{CallError, Flavour, PushPlugin, SandboxOptions};
use jmap_web_push_tests::{cache_dir, caller, test_config, FIXTURE_PATH};

fn fixture() -> PushPlugin {
    PushPlugin::builder()
        .config(test_config())
        .store(Arc::new(MemoryStore::new()))
        .sandbox(SandboxOptions {
            flavour: Flavour::Portable,
            component: Some(std::fs::read(FIXTURE_PATH).expect("fixture component built")),
            call_deadline: Duration::from_millis(500),
            memory_limit: 16 << 20,
            aot_cache_dir: Some(cache_dir()),
            ..SandboxOptions::default()
        })
        .build()
        .expect("fixture loads")
}

fn works(plugin: &PushPlugin) {
    let r = plugin
        .call(&caller("u", None), "fine", "{}", &[])
        .expect("the next call works")
        .expect("method answers");
    assert_eq!(r.arguments, "{\"ok\":4}");
}

#[test]
fn a_trap_fails_that_call_only() {
    let plugin = fixture();
    works(&plugin);
    match plugin.call(&caller("u", None), "trap", "{}", &[]) {
        Err(CallError::Trap { message: msg, .. }) => assert!(!msg.is_empty()),
        other => panic!("expected a trap, got {other:?}"),
    }
    works(&plugin);
}

#[test]
fn an_endless_loop_hits_the_cpu_deadline() {
    let plugin = fixture();
    let start = Instant::now();
    match plugin.call(&caller("u", None), "loop", "{}", &[]) {
        Err(CallError::Deadline(d)) => assert_eq!(d, Duration::from_millis(500)),
        other => panic!("expected a deadline error, got {other:?}"),
    }
    let took = start.elapsed();
    assert!(took < Duration::from_secs(3), "interrupted after {took:?}");
    works(&plugin);
}

#[test]
fn unbounded_allocation_hits_the_memory_cap() {
    let plugin = fixture();
    match plugin.call(&caller("u", None), "alloc", "{}", &[]) {
        Err(CallError::Trap { message: msg, .. }) => println!("memory cap: {msg}"),
        other => panic!("expected a trap at the memory cap, got {other:?}"),
    }
    works(&plugin);
}

#[test]
fn calls_from_many_threads_run_in_parallel_instances() {
    let plugin = fixture();
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..20 {
                    works(&plugin);
                }
            });
        }
    });
}

/// The size budget: the shipped (wide) component and the portable one are
/// at most 1 MiB (1,048,576 octets) each, as `host-harness/build.rs` builds
/// them (`--profile guest`, stripped). The plugin is built on vetted crates
/// (`url` and its IDNA tables among them) rather than for size; a change
/// that grows it past 1 MiB fails here, not only in the benchmark's
/// printout.
#[test]
fn the_components_fit_the_1_mib_budget() {
    use jmap_web_push_host::sandbox::builtin;
    for (name, bytes) in [("wide", builtin::WIDE), ("portable", builtin::PORTABLE)] {
        assert!(
            bytes.len() <= 1024 * 1024,
            "the {name} component is {} octets, over the 1,048,576-octet budget",
            bytes.len()
        );
    }
}
