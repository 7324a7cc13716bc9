//! The sandbox: engine configuration, the compiled component (AOT-cached on
//! disk), the pre-linked instance, pooled instances with a memory cap and a
//! CPU deadline, and trap containment.

use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, ResourceLimiter, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bindings::jmap::web_push::{host, http_out, store as wit_store, types};
use crate::bindings::{Plugin, PluginPre};
use crate::net::{HttpSend, OutError, OutRequest, OutResponse, PendingBatch};
use crate::store::{Condition, KvStore, StoreError};

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
    pub const WIDE: &[u8] = include_bytes!(env!("JMAP_WEB_PUSH_GUEST_WIDE"));
    /// The portable build.
    pub const PORTABLE: &[u8] = include_bytes!(env!("JMAP_WEB_PUSH_GUEST_PORTABLE"));
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
pub enum CallError {
    /// The call ran past its CPU deadline and was interrupted.
    #[error("the plugin call exceeded its CPU deadline of {0:?}")]
    Deadline(Duration),
    /// The guest trapped (panic, out-of-bounds, memory cap...).
    #[error("the plugin trapped: {0}")]
    Trap(String),
    /// A fresh instance could not be created.
    #[error("could not instantiate the plugin: {0}")]
    Instantiate(String),
}

/// What every instance shares: the store backend, the HTTP client and the
/// configuration.
pub(crate) struct Shared {
    pub kv: Arc<dyn KvStore>,
    pub http: Arc<dyn HttpSend>,
    pub config: types::Config,
}

/// Caps an instance's memories and tables, and records the largest linear
/// memory any instance reached (for benchmarks and metrics).
struct Limiter {
    memory_limit: usize,
    peak: Arc<std::sync::atomic::AtomicUsize>,
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

/// The per-instance host state.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: Limiter,
    shared: Arc<Shared>,
    /// Batches started with `start-batch` and not yet finished.
    batches: std::collections::HashMap<u64, PendingBatch>,
    next_batch: u64,
    /// The keys the current call created, kept while the call must be
    /// all-or-nothing ([`Sandbox::call_undoable`]).
    journal: Option<Journal>,
}

/// What a call did to each key it touched first as an absent key: the
/// version of its last write, or `None` when it deleted the key again.
type Journal = std::collections::HashMap<String, Option<u64>>;

/// Keys a call's undo never touches: the generated VAPID key may already be
/// in use by other instances the moment it is written.
fn journaled(key: &str) -> bool {
    !key.starts_with(jmap_web_push_guest::repo::VAPID_PREFIX)
}

impl HostState {
    /// Whether a write of `key` under `condition` is the call's first touch
    /// of a key that does not exist yet (read from the store only for
    /// `any`; `absent` says so by itself, `version` says the opposite).
    fn creates_key(&self, key: &str, condition: &wit_store::Condition) -> bool {
        let Some(journal) = &self.journal else {
            return false;
        };
        if !journaled(key) || journal.contains_key(key) {
            return false;
        }
        match condition {
            wit_store::Condition::Absent => true,
            wit_store::Condition::Version(_) => false,
            wit_store::Condition::Any => matches!(self.shared.kv.get(key), Ok(None)),
        }
    }

    /// Takes back what the call created: every key that was absent when
    /// the call first wrote it and still holds the call's last write is
    /// deleted (conditioned on that version, so another writer's later
    /// write is never removed). Keys that existed before are left as the
    /// call left them: each update or destroy of an existing subscription
    /// is one conditional write, complete or not made, and putting back a
    /// destroyed subscription could collide with another host's create of
    /// its deviceClientId. Returns how many keys were deleted.
    fn undo(&mut self) -> usize {
        let Some(journal) = self.journal.take() else {
            return 0;
        };
        let kv = &self.shared.kv;
        let mut undone = 0;
        for (key, last) in journal {
            let Some(version) = last else {
                continue; // created and deleted again: nothing left
            };
            match kv.delete(&key, Condition::Version(version)) {
                Ok(true) => undone += 1,
                Ok(false) | Err(StoreError::Conflict) => {}
                Err(e) => {
                    tracing::warn!(%key, error = %e, "a key the failed call created was not taken back")
                }
            }
        }
        undone
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

fn to_wit_store_error(e: StoreError) -> wit_store::StoreError {
    match e {
        StoreError::Conflict => wit_store::StoreError::Conflict,
        StoreError::Unavailable(m) => wit_store::StoreError::Unavailable(m),
        StoreError::TooLarge => wit_store::StoreError::TooLarge,
        StoreError::Other(m) => wit_store::StoreError::Other(m),
    }
}

fn from_wit_condition(c: wit_store::Condition) -> Condition {
    match c {
        wit_store::Condition::Any => Condition::Any,
        wit_store::Condition::Absent => Condition::Absent,
        wit_store::Condition::Version(v) => Condition::Version(v),
    }
}

fn to_wit_entry(e: crate::store::Entry) -> wit_store::Entry {
    wit_store::Entry {
        value: e.value,
        version: e.version,
    }
}

impl wit_store::Host for HostState {
    fn get(&mut self, key: String) -> Result<Option<wit_store::Entry>, wit_store::StoreError> {
        self.shared
            .kv
            .get(&key)
            .map(|e| e.map(to_wit_entry))
            .map_err(to_wit_store_error)
    }

    fn get_many(
        &mut self,
        keys: Vec<String>,
    ) -> Result<Vec<Option<wit_store::Entry>>, wit_store::StoreError> {
        self.shared
            .kv
            .get_many(&keys)
            .map(|v| v.into_iter().map(|e| e.map(to_wit_entry)).collect())
            .map_err(to_wit_store_error)
    }

    fn put(
        &mut self,
        key: String,
        value: Vec<u8>,
        condition: wit_store::Condition,
    ) -> Result<u64, wit_store::StoreError> {
        let created = self.creates_key(&key, &condition);
        let version = self
            .shared
            .kv
            .put(&key, &value, from_wit_condition(condition))
            .map_err(to_wit_store_error)?;
        if let Some(journal) = self.journal.as_mut() {
            if created {
                journal.insert(key, Some(version));
            } else if let Some(last) = journal.get_mut(&key) {
                *last = Some(version);
            }
        }
        Ok(version)
    }

    fn delete(
        &mut self,
        key: String,
        condition: wit_store::Condition,
    ) -> Result<bool, wit_store::StoreError> {
        let existed = self
            .shared
            .kv
            .delete(&key, from_wit_condition(condition))
            .map_err(to_wit_store_error)?;
        if let Some(last) = self.journal.as_mut().and_then(|j| j.get_mut(&key)) {
            *last = None;
        }
        Ok(existed)
    }

    fn list_keys(
        &mut self,
        prefix: String,
        after: Option<String>,
        limit: u32,
    ) -> Result<wit_store::KeyPage, wit_store::StoreError> {
        self.shared
            .kv
            .list_keys(&prefix, after.as_deref(), limit)
            .map(|p| wit_store::KeyPage {
                keys: p.keys,
                next: p.next,
            })
            .map_err(to_wit_store_error)
    }
}

fn to_out_requests(requests: Vec<http_out::Request>) -> Vec<OutRequest> {
    requests
        .into_iter()
        .map(|r| OutRequest {
            url: r.url,
            headers: r.headers,
            body: r.body,
            timeout_ms: r.timeout_ms,
        })
        .collect()
}

fn to_wit_answers(
    answers: Vec<Result<OutResponse, OutError>>,
) -> Vec<Result<http_out::Response, http_out::Error>> {
    answers
        .into_iter()
        .map(|r| match r {
            Ok(resp) => Ok(http_out::Response {
                status: resp.status,
                headers: resp.headers,
                body_prefix: resp.body_prefix,
            }),
            Err(e) => Err(match e {
                OutError::Timeout => http_out::Error::Timeout,
                OutError::Connection(m) => http_out::Error::Connection(m),
                OutError::Dns(m) => http_out::Error::Dns(m),
                OutError::Tls(m) => http_out::Error::Tls(m),
                OutError::DeniedByPolicy(m) => http_out::Error::DeniedByPolicy(m),
                OutError::TooLarge => http_out::Error::TooLarge,
                OutError::Other(m) => http_out::Error::Other(m),
            }),
        })
        .collect()
}

/// Most batches one instance may have in flight; more are sent
/// synchronously (a misbehaving guest cannot pile up background work).
const MAX_OPEN_BATCHES: usize = 1024;

impl http_out::Host for HostState {
    fn send_batch(
        &mut self,
        requests: Vec<http_out::Request>,
    ) -> Vec<Result<http_out::Response, http_out::Error>> {
        to_wit_answers(self.shared.http.send_batch(to_out_requests(requests)))
    }

    fn start_batch(&mut self, requests: Vec<http_out::Request>) -> u64 {
        let requests = to_out_requests(requests);
        let pending = if self.batches.len() >= MAX_OPEN_BATCHES {
            PendingBatch::answered(self.shared.http.send_batch(requests))
        } else {
            self.shared.http.start_batch(requests)
        };
        self.next_batch += 1;
        self.batches.insert(self.next_batch, pending);
        self.next_batch
    }

    fn finish_batch(&mut self, handle: u64) -> Vec<Result<http_out::Response, http_out::Error>> {
        match self.batches.remove(&handle) {
            Some(pending) => to_wit_answers(pending.wait()),
            None => Vec::new(),
        }
    }
}

impl host::Host for HostState {
    fn get_config(&mut self) -> types::Config {
        self.shared.config.clone()
    }

    fn log(&mut self, level: host::Level, message: String) {
        match level {
            host::Level::Debug => tracing::debug!(target: "jmap_web_push::plugin", "{message}"),
            host::Level::Info => tracing::info!(target: "jmap_web_push::plugin", "{message}"),
            host::Level::Warn => tracing::warn!(target: "jmap_web_push::plugin", "{message}"),
            host::Level::Error => tracing::error!(target: "jmap_web_push::plugin", "{message}"),
        }
    }

    fn report_push(&mut self, o: host::PushOutcome) {
        let kind = match o.kind {
            host::PushKind::Verification => "verification",
            host::PushKind::StateChange => "state-change",
        };
        let action = match o.action {
            host::PushAction::Delivered => "delivered",
            host::PushAction::Deferred => "deferred",
            host::PushAction::Dropped => "dropped",
            host::PushAction::Destroyed => "destroyed",
            host::PushAction::Split => "split",
        };
        tracing::info!(
            target: PUSH_LOG_TARGET,
            subscription_id = %o.subscription_id,
            origin = %o.origin,
            kind,
            answer = %o.answer,
            action,
            "push {action}"
        );
    }
}

/// The `tracing` target of the one event logged per push
/// (`host.report-push`): fields `subscription_id`, `origin`, `kind`
/// (`verification`, `state-change`), `answer` (the answer class: `2xx`,
/// `410`, `429`, `timeout`...) and `action` (`delivered`, `deferred`,
/// `dropped`, `destroyed`, `split`). Filter it with `RUST_LOG`, for example
/// `jmap_web_push::push=warn` to silence it.
pub const PUSH_LOG_TARGET: &str = "jmap_web_push::push";

impl types::Host for HostState {}

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
    /// Builds the engine for `flavour` (epoch interruption on; wide
    /// arithmetic when the flavour needs it).
    pub fn engine(flavour: Flavour) -> anyhow::Result<Engine> {
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        config.wasm_wide_arithmetic(flavour == Flavour::Wide);
        // For `perf record`: JMAP_WEB_PUSH_PERFMAP=1 writes /tmp/perf-<pid>.map
        // so guest functions show by name.
        if std::env::var_os("JMAP_WEB_PUSH_PERFMAP").is_some() {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        Ok(Engine::new(&config)?)
    }

    pub(crate) fn new(shared: Shared, options: SandboxOptions) -> anyhow::Result<Self> {
        let engine = Self::engine(options.flavour)?;
        let bytes: &[u8] = match (&options.component, options.flavour) {
            (Some(b), _) => b,
            (None, Flavour::Wide) => builtin::WIDE,
            (None, Flavour::Portable) => builtin::PORTABLE,
        };
        let (component, load_report) =
            load_component(&engine, bytes, options.aot_cache_dir.as_ref())?;
        let mut linker: Linker<HostState> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        Plugin::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?;
        let pre = PluginPre::new(linker.instantiate_pre(&component)?)?;
        let ticker = EpochTicker::start(engine.clone());
        Ok(Sandbox {
            engine,
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
            .map_err(|e| CallError::Instantiate(format!("{e:#}")))?;
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
        let (component, _) =
            load_component(&self.engine, bytes, self.options.aot_cache_dir.as_ref())?;
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
                    Err(CallError::Trap(format!("{e:#}")))
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

/// Compiles `bytes`, or loads the compiled form from `cache_dir` keyed by
/// the engine's compatibility hash and the component's hash.
fn load_component(
    engine: &Engine,
    bytes: &[u8],
    cache_dir: Option<&PathBuf>,
) -> anyhow::Result<(Component, LoadReport)> {
    let t = Instant::now();
    let Some(dir) = cache_dir else {
        let c = Component::new(engine, bytes)?;
        return Ok((
            c,
            LoadReport {
                compiled: true,
                load_time: t.elapsed(),
                component_size: bytes.len(),
            },
        ));
    };
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    bytes.hash(&mut h);
    let path = dir.join(format!("plugin-{:016x}.cwasm", h.finish()));
    if path.exists() {
        // SAFETY: the file was written by `Component::serialize` of an
        // engine with the same compatibility hash (it is in the name), in a
        // directory only this tool writes to.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(c) => {
                return Ok((
                    c,
                    LoadReport {
                        compiled: false,
                        load_time: t.elapsed(),
                        component_size: bytes.len(),
                    },
                ))
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "AOT cache entry unusable; recompiling")
            }
        }
    }
    let c = Component::new(engine, bytes)?;
    let compiled = c.serialize()?;
    if std::fs::create_dir_all(dir).is_ok() {
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        if std::fs::write(&tmp, &compiled).is_ok() {
            let _ = std::fs::rename(&tmp, &path);
        }
    }
    Ok((
        c,
        LoadReport {
            compiled: true,
            load_time: t.elapsed(),
            component_size: bytes.len(),
        },
    ))
}
