//! The sandbox: engine configuration, the compiled component (AOT-cached on
//! disk), the pre-linked instance, pooled instances with a memory cap and a
//! CPU deadline, and trap containment. The host side of the plugin's
//! imports (what an instance can reach) is [`crate::imports`].

use std::hash::{Hash, Hasher};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, ResourceLimiter, Store};
use wasmtime_wasi::WasiCtx;

use crate::bindings::{Plugin, PluginPre};
use crate::imports::{HostState, Journal, Shared};

/// Which build of the guest to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Flavour {
    /// Compiled with `+wide-arithmetic` (about 3x faster P-256); needs the
    /// engine's wide-arithmetic proposal, which this harness enables.
    #[default]
    Wide,
    /// Plain wasm32-wasip2, for runtimes without wide arithmetic.
    Portable,
}

/// The guest components built into this harness.
pub mod builtin {
    /// The `+wide-arithmetic` build.
    pub const WIDE: &[u8] = jmap_web_push_components::plugin::WIDE;
    /// The portable build.
    pub const PORTABLE: &[u8] = jmap_web_push_components::plugin::PORTABLE;
}

/// Sandbox limits and loading options.
#[derive(Debug, Clone)]
pub struct SandboxOptions {
    /// The guest build to load (ignored when `component` is set).
    pub flavour: Flavour,
    /// A component to load instead of the built-in one (its flavour must
    /// still be given, for the engine configuration).
    pub component: Option<Vec<u8>>,
    /// Guest linear memory cap per instance, octets.
    pub memory_limit: usize,
    /// CPU deadline of one call (epoch interruption).
    pub call_deadline: Duration,
    /// Where compiled components are cached (`None`: compile in memory).
    pub aot_cache_dir: Option<PathBuf>,
    /// Most idle instances kept for reuse.
    pub max_idle_instances: usize,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        SandboxOptions {
            flavour: Flavour::Wide,
            component: None,
            memory_limit: 64 << 20,
            call_deadline: Duration::from_secs(30),
            aot_cache_dir: default_cache_dir(),
            max_idle_instances: 16,
        }
    }
}

fn default_cache_dir() -> Option<PathBuf> {
    std::env::var_os("JMAP_WEB_PUSH_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CACHE_HOME").map(|p| PathBuf::from(p).join("jmap-web-push"))
        })
        .or_else(|| std::env::var_os("HOME").map(|p| PathBuf::from(p).join(".cache/jmap-web-push")))
}

/// Why a call into the guest failed (the guest's own errors are values,
/// not this).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The call ran past its CPU deadline and was interrupted.
    #[error("the plugin call exceeded its CPU deadline of {0:?}")]
    Deadline(Duration),
    /// The guest trapped (panic, out-of-bounds, memory cap...).
    #[error("the plugin trapped: {message}")]
    Trap {
        /// What wasmtime reported, with its causes.
        message: String,
        /// Wasmtime's error, when there is one (not for a fan-out thread
        /// that panicked).
        #[source]
        source: Option<BoxError>,
    },
    /// A fresh instance could not be created.
    #[error("could not instantiate the plugin: {message}")]
    Instantiate {
        /// What wasmtime reported, with its causes.
        message: String,
        /// Wasmtime's error.
        #[source]
        source: BoxError,
    },
}

/// A boxed source error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Caps an instance's memories and tables, and records the largest linear
/// memory any instance reached (for benchmarks and metrics).
pub(crate) struct Limiter {
    pub(crate) memory_limit: usize,
    pub(crate) peak: Arc<std::sync::atomic::AtomicUsize>,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            // Refusing makes `memory.grow` fail; the guest's allocator then
            // aborts, which traps this call only.
            return Ok(false);
        }
        self.peak.fetch_max(desired, Ordering::Relaxed);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }

    fn instances(&self) -> usize {
        8
    }

    fn tables(&self) -> usize {
        16
    }

    fn memories(&self) -> usize {
        4
    }
}

/// A live instance kept for reuse (its guest caches, such as VAPID
/// tokens, survive between calls).
struct Live {
    store: Store<HostState>,
    plugin: Plugin,
}

/// Increments the engine epoch every `TICK` until dropped.
struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

const TICK: Duration = Duration::from_millis(10);

impl EpochTicker {
    fn start(engine: Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("epoch-ticker".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    engine.increment_epoch();
                }
            })
            .ok();
        EpochTicker { stop, thread }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The loaded plugin: compiled once, linked once, instances pooled.
pub struct Sandbox {
    engine: Engine,
    /// The configuration `engine` was built from, for compiling on an
    /// engine of its own ([`compile`]).
    config: wasmtime::Config,
    linker: Linker<HostState>,
    pre: PluginPre<HostState>,
    shared: Arc<Shared>,
    idle: Mutex<Vec<Live>>,
    options: SandboxOptions,
    peak_memory: Arc<std::sync::atomic::AtomicUsize>,
    _ticker: EpochTicker,
    /// How the component was obtained, and how long it took.
    pub load_report: LoadReport,
}

/// How the component was loaded.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// Compiled now (`false`: read from the AOT cache).
    pub compiled: bool,
    /// Time to obtain the compiled component.
    pub load_time: Duration,
    /// Size of the component in octets.
    pub component_size: usize,
}

impl Sandbox {
    /// The engine configuration for `flavour`: the component model, epoch
    /// interruption, wide arithmetic when the flavour needs it, and the
    /// perf map when `JMAP_WEB_PUSH_PERFMAP` is set.
    pub fn config(flavour: Flavour) -> wasmtime::Config {
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        config.wasm_wide_arithmetic(flavour == Flavour::Wide);
        // For `perf record`: JMAP_WEB_PUSH_PERFMAP=1 writes /tmp/perf-<pid>.map
        // so guest functions show by name.
        if std::env::var_os("JMAP_WEB_PUSH_PERFMAP").is_some() {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        config
    }

    /// Builds the engine for `flavour` ([`Sandbox::config`]).
    pub fn engine(flavour: Flavour) -> anyhow::Result<Engine> {
        Ok(Engine::new(&Self::config(flavour))?)
    }

    pub(crate) fn new(shared: Shared, options: SandboxOptions) -> anyhow::Result<Self> {
        let config = Self::config(options.flavour);
        let engine = Engine::new(&config)?;
        let bytes: &[u8] = match (&options.component, options.flavour) {
            (Some(b), _) => b,
            (None, Flavour::Wide) => builtin::WIDE,
            (None, Flavour::Portable) => builtin::PORTABLE,
        };
        let (component, load_report) =
            load_component(&engine, &config, bytes, options.aot_cache_dir.as_ref())?;
        let mut linker: Linker<HostState> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        Plugin::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?;
        let pre = PluginPre::new(linker.instantiate_pre(&component)?)?;
        let ticker = EpochTicker::start(engine.clone());
        Ok(Sandbox {
            engine,
            config,
            linker,
            pre,
            shared: Arc::new(shared),
            idle: Mutex::new(Vec::new()),
            options,
            peak_memory: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            _ticker: ticker,
            load_report,
        })
    }

    /// The CPU deadline of one call, in epoch ticks.
    fn deadline_ticks(&self) -> u64 {
        (self.options.call_deadline.as_millis() / TICK.as_millis()).max(1) as u64
    }

    /// The largest linear memory any instance has had, octets.
    pub fn peak_memory(&self) -> usize {
        self.peak_memory.load(Ordering::Relaxed)
    }

    /// The engine (for tools that precompile).
    pub fn engine_ref(&self) -> &Engine {
        &self.engine
    }

    fn new_store(&self) -> Store<HostState> {
        let state = HostState {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
            limits: Limiter {
                memory_limit: self.options.memory_limit,
                peak: self.peak_memory.clone(),
            },
            shared: self.shared.clone(),
            batches: Default::default(),
            next_batch: 0,
            journal: None,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(u64::MAX / 2);
        store
    }

    fn instantiate(&self) -> Result<Live, CallError> {
        let mut store = self.new_store();
        let plugin = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| CallError::Instantiate {
                message: format!("{e:#}"),
                source: e.into(),
            })?;
        Ok(Live { store, plugin })
    }

    /// Instantiates another component against the plugin's host: the same
    /// `store`, `http-out` and `host` implementations (and WASI) the plugin
    /// gets, with the same memory cap. This runs a component that *contains*
    /// the plugin, such as a mail server written as a component and composed
    /// with it ([`crate::compose::plug`]). The caller looks up the exports
    /// on the returned instance (for example with a `bindgen!` world's
    /// `new`) and runs them on [`EmbeddedComponent::store`]; each call gets
    /// the sandbox's CPU deadline when made through
    /// [`EmbeddedComponent::with_deadline`].
    pub fn instantiate_component(&self, bytes: &[u8]) -> anyhow::Result<EmbeddedComponent> {
        let (component, _) = load_component(
            &self.engine,
            &self.config,
            bytes,
            self.options.aot_cache_dir.as_ref(),
        )?;
        let mut store = self.new_store();
        let instance = self.linker.instantiate(&mut store, &component)?;
        let ticks = self.deadline_ticks();
        Ok(EmbeddedComponent {
            store,
            instance,
            deadline_ticks: ticks,
        })
    }

    /// Instantiates once without running anything (for benchmarks).
    pub fn instantiate_fresh(&self) -> Result<Duration, CallError> {
        let t = Instant::now();
        let live = self.instantiate()?;
        let d = t.elapsed();
        drop(live);
        Ok(d)
    }

    /// Runs `f` on a pooled (or fresh) instance under the CPU deadline. A
    /// trap discards the instance; the next call gets a fresh one.
    pub(crate) fn call<R>(
        &self,
        f: impl FnOnce(&Plugin, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        self.call_with(false, f)
    }

    /// [`Sandbox::call`] for a JMAP method, which must leave nothing
    /// half-made (B9): the keys the call creates are journaled and, if it
    /// traps or overruns its deadline, deleted again (each only if nobody
    /// wrote it since; the generated VAPID key is never taken back). A
    /// create cut off between its writes (record, deviceClientId
    /// reservation, owner index, due entries) so leaves nothing, and the
    /// client can retry it. Outbound pushes cannot be taken back.
    pub(crate) fn call_undoable<R>(
        &self,
        f: impl FnOnce(&Plugin, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        self.call_with(true, f)
    }

    fn call_with<R>(
        &self,
        undoable: bool,
        f: impl FnOnce(&Plugin, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        let live = self.idle.lock().ok().and_then(|mut v| v.pop());
        let mut live = match live {
            Some(l) => l,
            None => self.instantiate()?,
        };
        let ticks = self.deadline_ticks();
        live.store.set_epoch_deadline(ticks);
        live.store.data_mut().journal = undoable.then(Journal::new);
        let result = f(&live.plugin, &mut live.store);
        // The WIT lets the host drop batches the call did not finish.
        live.store.data_mut().batches.clear();
        if result.is_err() {
            let undone = live.store.data_mut().undo();
            if undone > 0 {
                tracing::warn!(undone, "keys created by the failed call taken back");
            }
        }
        live.store.data_mut().journal = None;
        match result {
            Ok(r) => {
                live.store.set_epoch_deadline(u64::MAX / 2);
                if let Ok(mut idle) = self.idle.lock() {
                    if idle.len() < self.options.max_idle_instances {
                        idle.push(live);
                    }
                }
                Ok(r)
            }
            Err(e) => {
                let deadline = matches!(
                    e.downcast_ref::<wasmtime::Trap>(),
                    Some(wasmtime::Trap::Interrupt)
                );
                tracing::error!(error = %format!("{e:#}"), "plugin call failed; instance discarded");
                if deadline {
                    Err(CallError::Deadline(self.options.call_deadline))
                } else {
                    Err(CallError::Trap {
                        message: format!("{e:#}"),
                        source: Some(e.into()),
                    })
                }
            }
        }
    }
}

/// A component that embeds the plugin, instantiated on the plugin's host
/// (see [`Sandbox::instantiate_component`]).
pub struct EmbeddedComponent {
    store: Store<HostState>,
    instance: wasmtime::component::Instance,
    deadline_ticks: u64,
}

impl EmbeddedComponent {
    /// The instance, to look up exports.
    pub fn instance(&self) -> wasmtime::component::Instance {
        self.instance
    }

    /// The store the instance lives in.
    pub fn store(&mut self) -> &mut Store<HostState> {
        &mut self.store
    }

    /// Runs `f` with the sandbox's CPU deadline armed; a deadline overrun
    /// traps the call with an interrupt.
    pub fn with_deadline<R>(
        &mut self,
        f: impl FnOnce(&mut Store<HostState>, wasmtime::component::Instance) -> R,
    ) -> R {
        self.store.set_epoch_deadline(self.deadline_ticks);
        let r = f(&mut self.store, self.instance);
        self.store.set_epoch_deadline(u64::MAX / 2);
        r
    }
}

/// Compiles `bytes` on an engine of its own, built from the serving
/// engine's `config`, and drops that engine with its compiler: wasmtime
/// keeps each compiling thread's Cranelift context in the engine for reuse,
/// which a long-lived engine would hold for as long as it runs. Then gives
/// the freed heap back to the system (glibc keeps it in its arenas
/// otherwise). Without this a cold start stayed about 30 MiB above a warm
/// one (BENCHMARKS.md, "Cold start"). Only a cache miss compiles.
fn compile(config: &wasmtime::Config, bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
    let compiled = Engine::new(config)?.precompile_component(bytes)?;
    release_freed_heap();
    Ok(compiled)
}

/// `malloc_trim(0)` where the allocator is glibc's.
fn release_freed_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` has no preconditions; it only releases free
    // memory at the top of or inside the arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Writes `compiled` to `path` through a new file of a random name in the
/// same directory, renamed over `path` when complete: `path` is never seen
/// half written, and a file another thread or process maps is replaced,
/// never changed in place. The entry gets the mode any new file gets
/// (0666 less the umask), so a cache another user precompiled stays
/// readable as before.
fn write_cache_entry(dir: &Path, path: &Path, compiled: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut builder = tempfile::Builder::new();
    builder.prefix(".plugin-").suffix(".tmp");
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    let mut tmp = builder.tempfile_in(dir)?;
    tmp.write_all(compiled)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// The plugin (or another component) compiled for `engine` (built from
/// `config`): from the AOT cache in `cache_dir` when it holds this
/// component for this configuration, else compiled ([`compile`]) and
/// written there.
fn load_component(
    engine: &Engine,
    config: &wasmtime::Config,
    bytes: &[u8],
    cache_dir: Option<&PathBuf>,
) -> anyhow::Result<(Component, LoadReport)> {
    let t = Instant::now();
    let report = |compiled: bool| LoadReport {
        compiled,
        load_time: t.elapsed(),
        component_size: bytes.len(),
    };
    let Some(dir) = cache_dir else {
        let compiled = compile(config, bytes)?;
        // SAFETY: `compiled` is `Engine::precompile_component`'s output,
        // unmodified and never out of this process's memory; wasmtime
        // checks that it suits `engine` and refuses it otherwise.
        let c = unsafe { Component::deserialize(engine, &compiled) }?;
        return Ok((c, report(true)));
    };
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    bytes.hash(&mut h);
    let path = dir.join(format!("plugin-{:016x}.cwasm", h.finish()));
    if path.exists() {
        // SAFETY: files in the cache are `Engine::precompile_component`'s
        // output, written whole under a temporary name and renamed into
        // place (`write_cache_entry`), never changed in place, in a
        // directory only this tool writes to; wasmtime checks that the
        // compiled code suits `engine` and refuses it otherwise.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(c) => return Ok((c, report(false))),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "AOT cache entry unusable; recompiling")
            }
        }
    }
    let compiled = compile(config, bytes)?;
    let from_file = match write_cache_entry(dir, &path, &compiled) {
        // Run from the file, as a warm start does: the code is then a file
        // mapping, not anonymous memory.
        // SAFETY: as above.
        Ok(()) => match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "AOT cache entry just written is unusable; running from memory");
                None
            }
        },
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "AOT cache not written; running from memory");
            None
        }
    };
    let c = match from_file {
        Some(c) => c,
        // SAFETY: as in the case without a cache directory.
        None => unsafe { Component::deserialize(engine, &compiled) }?,
    };
    Ok((c, report(true)))
}
