//! # jmap-web-push-components
//!
//! The WebAssembly components the host embeds, as bytes. This crate's
//! build script builds them with a nested
//! `cargo build --target wasm32-wasip2 --profile guest`
//! (`build_components.rs`), so a plain `cargo build` or `cargo run` needs
//! no manual step. It has no dependencies, so cargo starts that nested
//! build as soon as the outer build starts.
//!
//! Embedders use these through `jmap_web_push_host` (`sandbox::builtin`,
//! `compose::adapters`).

#![no_std]
#![warn(missing_docs)]

/// The plugin (`wit/plugin.wit`, world `jmap:web-push/plugin`).
pub mod plugin {
    /// Built with `-C target-feature=+wide-arithmetic` (P-256 about 4x
    /// faster); it MUST run on an engine with wasm wide arithmetic enabled.
    pub const WIDE: &[u8] = include_bytes!(env!("JMAP_WEB_PUSH_GUEST_WIDE"));
    /// Plain `wasm32-wasip2`: loads in any component runtime.
    pub const PORTABLE: &[u8] = include_bytes!(env!("JMAP_WEB_PUSH_GUEST_PORTABLE"));
}

/// The adapter components of the composition (`wit/adapters.wit`), built
/// like the portable plugin.
pub mod adapters {
    /// `store` over `wasi:keyvalue@0.2.0-draft` (store, atomics, batch).
    pub const STORE_KV: &[u8] = include_bytes!(env!("JMAP_WEB_PUSH_ADAPTER_STORE_KV"));
    /// `http-out` over `wasi:http/outgoing-handler@0.2.12`.
    pub const HTTP_OUT: &[u8] = include_bytes!(env!("JMAP_WEB_PUSH_ADAPTER_HTTP_OUT"));
    /// `host` and `types` from `wasi:cli/environment` and `wasi:cli/stderr`.
    pub const HOST_ENV: &[u8] = include_bytes!(env!("JMAP_WEB_PUSH_ADAPTER_HOST_ENV"));
}
