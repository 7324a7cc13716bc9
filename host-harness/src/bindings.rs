//! Host-side bindings generated from `wit/plugin.wit`.
#![allow(missing_docs)]

wasmtime::component::bindgen!({
    world: "plugin",
    path: "../wit",
});
