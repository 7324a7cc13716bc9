//! The plugin's settings: defined once in the `jmap-web-push-config` crate
//! (fields, defaults, limits, serde form), shared with the host harness and
//! the host-env adapter.

pub use jmap_web_push_config::*;
