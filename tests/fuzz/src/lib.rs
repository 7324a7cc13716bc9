//! # Fuzz targets
//!
//! Each target takes arbitrary octets, feeds them to one input surface of
//! the plugin or of `serve`, and checks properties that must hold for
//! every input. A target MUST NOT panic for any input; a panic is a bug
//! (either in the code or in a property), and a libFuzzer run reports it
//! with the input that caused it.
//!
//! | target | surface | properties beyond "no panic" |
//! | --- | --- | --- |
//! | [`jmap_methods`] | `PushSubscription/get` and `/set` arguments through the guest's core, on a store, over several calls | answers are JSON objects; every record the plugin wrote reads back |
//! | [`keys_and_urls`] | receiver keys (raw and base64url) and push URLs | key validation agrees with the `base64` crate and `p256`; an accepted push URL gives a VAPID `aud` for the same origin, and the `http::Uri` the host sends with names the same host and port |
//! | [`stored_records`] | reading stored subscription and pending records, due keys | what reads, writes back to a record that reads the same |
//! | [`event_intake`] | `POST /events` bodies, then delivery of what parses | delivery of any parsed event does not fail on its content |
//! | [`request_envelope`] | `POST /jmap/api` bodies: the envelope and result references | a parsed request respects `maxCallsInRequest`; references resolve or fail with a JMAP error type |
//!
//! Two drivers run them: `cargo test -p jmap-web-push-fuzz` replays the
//! committed inputs (`tests/fuzz/corpus/<target>/`, seeds and every crash
//! ever found), and `scripts/fuzz.sh` builds the libFuzzer driver
//! (`src/bin/fuzz.rs`) with sanitizer coverage on stable Rust.

#![warn(missing_docs)]

mod support;

mod event_intake;
mod jmap_methods;
mod keys_and_urls;
mod request_envelope;
mod stored_records;

pub use event_intake::event_intake;
pub use jmap_methods::{jmap_methods, Reached};

/// [`jmap_methods`], telling what an input reached.
pub use jmap_methods::run as run_jmap_methods;
pub use keys_and_urls::keys_and_urls;
pub use request_envelope::request_envelope;
pub use stored_records::stored_records;

/// A fuzz target.
pub type Target = fn(&[u8]);

/// Every target, by the name its corpus directory and `JWP_FUZZ_TARGET`
/// use.
pub const TARGETS: &[(&str, Target)] = &[
    ("jmap_methods", jmap_methods),
    ("keys_and_urls", keys_and_urls),
    ("stored_records", stored_records),
    ("event_intake", event_intake),
    ("request_envelope", request_envelope),
];

/// The target called `name`.
pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}
