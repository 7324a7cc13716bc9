//! Runs a wasm32-wasip2 *command* (a `main`) on the engine the plugin's
//! sandbox uses (`Sandbox::engine(Flavour::Wide)`: Cranelift, epoch
//! interruption, wide arithmetic), with stdout and stderr inherited. It is
//! how the crypto crate's `encrypt_rate` example is timed in the sandbox
//! against the same example natively (BENCHMARKS.md, "Where the gap is"):
//!
//! ```sh
//! CARGO_ENCODED_RUSTFLAGS=-Ctarget-feature=+wide-arithmetic \
//!   cargo build -p jmap-web-push-crypto --example encrypt_rate --profile guest --target wasm32-wasip2
//! cargo build -p jmap-web-push-crypto --example encrypt_rate --profile guest
//! WASM_COMMAND=target/wasm32-wasip2/guest/examples/encrypt_rate.wasm cargo bench -p jmap-web-push --bench wasm_command
//! target/guest/examples/encrypt_rate
//! ```
//!
//! With `JMAP_WEB_PUSH_PERFMAP=1` the engine writes `/tmp/perf-<pid>.map`
//! for `perf report` (build with `CARGO_PROFILE_GUEST_STRIP=false` to keep
//! the function names).

use jmap_web_push_host::sandbox::Sandbox;
use jmap_web_push_host::Flavour;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::Store;
use wasmtime_wasi::p2::bindings::sync::Command;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

struct Host {
    ctx: WasiCtx,
    table: ResourceTable,
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

fn main() -> anyhow::Result<()> {
    let Some(path) = std::env::var_os("WASM_COMMAND") else {
        println!("wasm_command: WASM_COMMAND names no command (usage in the file's docs); nothing to run");
        return Ok(());
    };
    // `cargo bench` runs this in the package's directory: a relative path
    // is taken from the workspace root, where the commands above run.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let path = root.join(path);
    let engine = Sandbox::engine(Flavour::Wide)?;
    let component = Component::from_file(&engine, &path)?;
    let mut linker = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    let ctx = WasiCtx::builder().inherit_stdout().inherit_stderr().build();
    let mut store = Store::new(
        &engine,
        Host {
            ctx,
            table: ResourceTable::new(),
        },
    );
    // Epoch interruption is on in this engine; no deadline here.
    store.set_epoch_deadline(u64::MAX / 2);
    let command = Command::instantiate(&mut store, &component, &linker)?;
    command
        .wasi_cli_run()
        .call_run(&mut store)?
        .map_err(|()| anyhow::anyhow!("{}: the command returned an error", path.display()))
}
