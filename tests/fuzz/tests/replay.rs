//! Replays every committed input of every fuzz target: the seeds and each
//! input a fuzzing run ever found a crash with (its regression test).
//! Runs in the ordinary `cargo test --workspace` (the test command), without libFuzzer.

use std::fs;
use std::path::{Path, PathBuf};

use jmap_web_push_fuzz::TARGETS;

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target)
}

#[test]
fn every_target_passes_its_committed_inputs() {
    for (name, target) in TARGETS {
        let dir = corpus_dir(name);
        let mut inputs: Vec<PathBuf> = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.expect("a directory entry").path())
            .collect();
        inputs.sort();
        assert!(!inputs.is_empty(), "{name} has no committed inputs");
        for input in &inputs {
            let data = fs::read(input).expect("a corpus file");
            if let Err(panic) = std::panic::catch_unwind(|| target(&data)) {
                let why = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                panic!("{name} fails on {}: {why}", input.display());
            }
        }
    }
}

#[test]
fn every_target_has_a_corpus_directory_and_no_stray_one() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut dirs: Vec<String> = fs::read_dir(&root)
        .expect("tests/fuzz/corpus")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    let mut names: Vec<String> = TARGETS.iter().map(|(n, _)| n.to_string()).collect();
    names.sort();
    assert_eq!(dirs, names);
}

#[test]
fn the_method_seeds_reach_create_verification_and_push() {
    let data = fs::read(corpus_dir("jmap_methods").join("create-verify-change")).expect("seed");
    let reached = jmap_web_push_fuzz::run_jmap_methods(&data);
    assert_eq!(reached.subscriptions, 1, "{reached:?}");
    assert_eq!(reached.verified, 1, "{reached:?}");
    // The verification push, then the StateChange push.
    assert!(reached.pushes >= 2, "{reached:?}");
    let data = fs::read(corpus_dir("jmap_methods").join("create-two-then-destroy")).expect("seed");
    let reached = jmap_web_push_fuzz::run_jmap_methods(&data);
    // The credential "cred" is revoked at the end, and both go with it.
    assert_eq!(reached.subscriptions, 0, "{reached:?}");
    assert_eq!(reached.pushes, 2, "{reached:?}");
}
