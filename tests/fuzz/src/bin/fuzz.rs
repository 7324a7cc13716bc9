//! The libFuzzer driver: `JWP_FUZZ_TARGET=<name>` picks one of
//! [`jmap_web_push_fuzz::TARGETS`]; the command-line arguments are
//! libFuzzer's. Built and run by `scripts/fuzz.sh`.

#![no_main]

use std::sync::OnceLock;

use jmap_web_push_fuzz::{target, Target};

fn chosen() -> Target {
    static CHOSEN: OnceLock<Target> = OnceLock::new();
    *CHOSEN.get_or_init(|| {
        let name = std::env::var("JWP_FUZZ_TARGET").unwrap_or_default();
        target(&name).unwrap_or_else(|| {
            eprintln!(
                "JWP_FUZZ_TARGET must name one of: {}",
                jmap_web_push_fuzz::TARGETS
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            std::process::exit(2)
        })
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| chosen()(data));
