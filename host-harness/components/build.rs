//! Builds the components the harness embeds with a nested cargo
//! invocation, so a plain `cargo build` / `cargo run` at the workspace root
//! needs no manual step:
//!
//! - the plugin, `portable` (plain wasm32-wasip2, loads in any component
//!   runtime; `compose` ships it) and `wide` (`-C
//!   target-feature=+wide-arithmetic`, ~3x faster P-256, for an engine with
//!   `Config::wasm_wide_arithmetic(true)`; `serve` runs it);
//! - the adapter components for composition (`wit/adapters.wit`).
//!
//! The test-only components are built by `tests/build.rs`, so `cargo run`
//! does not build them. This crate has no dependencies, so cargo runs this
//! script at the very start of a build, beside wasmtime's compilation.

#[path = "build_components.rs"]
mod components;

use components::Build;

fn main() {
    let root = components::workspace_root();
    components::rerun_if_changed(
        &root,
        &[
            "guest/src",
            "guest/Cargo.toml",
            "guest/crypto",
            "guest/adapters",
        ],
    );
    components::build_all(
        &root,
        &[
            Build {
                name: "portable",
                packages: &[
                    ("GUEST_PORTABLE", "jmap-web-push-guest"),
                    ("ADAPTER_STORE_KV", "jmap-web-push-adapter-store-kv"),
                    ("ADAPTER_HTTP_OUT", "jmap-web-push-adapter-http-out"),
                    ("ADAPTER_HOST_ENV", "jmap-web-push-adapter-host-env"),
                ],
                flags: "",
            },
            Build {
                name: "wide",
                packages: &[("GUEST_WIDE", "jmap-web-push-guest")],
                flags: "\x1f-Ctarget-feature=+wide-arithmetic",
            },
        ],
    );
}
