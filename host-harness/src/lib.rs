//! # jmap-web-push-host
//!
//! The wasmtime host harness for the JMAP Web Push plugin component: what a
//! Rust mail server embeds to get standards-correct Web Push for its JMAP
//! clients. The `jmap-web-push` binary (`host-harness/cli`: the reference
//! server, the demo, the command line) is built on it.
//!
//! The plugin is a WebAssembly component (`wit/plugin.wit`, world
//! `jmap:web-push/plugin`). This crate supplies its imports — a [`store`]
//! backend and an outbound HTTP client ([`net`]), wired to the plugin in
//! [`imports`] — runs it in a sandbox ([`sandbox`]: AOT-cached compilation,
//! pre-linked instances, memory cap, CPU deadline, trap containment) and
//! exposes its exports as plain Rust methods on [`PushPlugin`].
//!
//! ```no_run
//! use std::sync::Arc;
//! use jmap_web_push_host::{PushPlugin, PluginConfig, Caller, store::memory::MemoryStore};
//!
//! let plugin = PushPlugin::builder()
//!     .config(PluginConfig { vapid_contact: Some("mailto:ops@example.com".into()), ..Default::default() })
//!     .store(Arc::new(MemoryStore::new()))
//!     .build()?;
//! let caller = Caller { username: "alice".into(), credential_id: Some("token-1".into()) };
//! let response = plugin.call(&caller, "PushSubscription/get", r#"{"ids":null}"#, &[])?;
//! println!("{:?}", response);
//! // On every state change of the mail server:
//! // plugin.state_changed(&event)?;  and periodically: plugin.tick()?;
//! # anyhow::Ok(())
//! ```
//!
//! Every method blocks the calling thread while the plugin runs (it may
//! send HTTP requests); from async code, use `spawn_blocking`. Calls from
//! several threads run in parallel on separate instances.

#![warn(missing_docs)]

pub mod bindings;
pub mod compose;
pub mod config;
pub mod imports;
pub mod net;
pub mod sandbox;
pub mod store;

use std::sync::Arc;

pub use bindings::exports::jmap::web_push::event_in::{
    AccountChanges, DeliveryReport, OutcomeCount, Rotation, StateChange, TickReport, TypeState,
};
pub use bindings::exports::jmap::web_push::jmap::{MethodError, MethodResponse, SessionInfo};
pub use bindings::jmap::web_push::types::{Caller, PluginError};
pub use config::PluginConfig;
pub use imports::PUSH_LOG_TARGET;
pub use net::{HttpClient, HttpPolicy, HttpSend};
pub use sandbox::{CallError, Flavour, SandboxOptions};

use imports::Shared;
use sandbox::Sandbox;
use store::KvStore;

/// Fewest subscriptions of one user for which an event is fanned out on
/// several instances in parallel (below it, one call is cheaper).
pub const SHARD_THRESHOLD: u32 = 32;

/// Builds a [`PushPlugin`].
#[derive(Default)]
pub struct PushPluginBuilder {
    config: PluginConfig,
    store: Option<Arc<dyn KvStore>>,
    http: Option<Arc<dyn HttpSend>>,
    http_policy: HttpPolicy,
    sandbox: SandboxOptions,
    fanout_shards: Option<u32>,
}

impl PushPluginBuilder {
    /// The plugin configuration (default: [`PluginConfig::default`]).
    pub fn config(mut self, config: PluginConfig) -> Self {
        self.config = config;
        self
    }

    /// The store backend (required).
    pub fn store(mut self, store: Arc<dyn KvStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// The outbound HTTP implementation (default: a new [`HttpClient`]
    /// with `http_policy`).
    pub fn http_client(mut self, http: Arc<dyn HttpSend>) -> Self {
        self.http = Some(http);
        self
    }

    /// The outbound HTTP policy when no client is given. Its loopback
    /// allowance follows the plugin's `insecure_test_mode` unless set here.
    pub fn http_policy(mut self, policy: HttpPolicy) -> Self {
        self.http_policy = policy;
        self
    }

    /// On how many instances in parallel one state change is fanned out
    /// (default: the number of cores). 1 runs every event in one call.
    pub fn fanout_shards(mut self, shards: u32) -> Self {
        self.fanout_shards = Some(shards.max(1));
        self
    }

    /// Sandbox options.
    pub fn sandbox(mut self, options: SandboxOptions) -> Self {
        self.sandbox = options;
        self
    }

    /// Loads the component and links it.
    pub fn build(self) -> anyhow::Result<PushPlugin> {
        let store = self
            .store
            .ok_or_else(|| anyhow::anyhow!("a store backend is required"))?;
        if self.config.insecure_test_mode {
            tracing::warn!("TEST MODE: the plugin accepts http:// and loopback push URLs");
        }
        let http = match self.http {
            Some(h) => h,
            None => {
                let mut policy = self.http_policy;
                policy.allow_insecure_loopback |= self.config.insecure_test_mode;
                Arc::new(HttpClient::new(policy)?)
            }
        };
        let shared = Shared {
            kv: store,
            http,
            config: config::to_wit(&self.config),
        };
        let fanout_shards = self.fanout_shards.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, |n| n.get().min(16) as u32)
        });
        Ok(PushPlugin {
            sandbox: Sandbox::new(shared, self.sandbox)?,
            fanout_shards,
        })
    }
}

/// The plugin, loaded and ready. Cheap to share behind an `Arc`.
pub struct PushPlugin {
    sandbox: Sandbox,
    fanout_shards: u32,
}

impl PushPlugin {
    /// A builder.
    pub fn builder() -> PushPluginBuilder {
        PushPluginBuilder::default()
    }

    /// How the component was loaded (compiled or from the AOT cache).
    pub fn load_report(&self) -> &sandbox::LoadReport {
        &self.sandbox.load_report
    }

    /// The largest guest linear memory any instance has reached, octets.
    pub fn peak_guest_memory(&self) -> usize {
        self.sandbox.peak_memory()
    }

    /// Instantiates a component that contains the plugin (for example a
    /// mail server written as a component and composed with it) on this
    /// plugin's host: same store backend, HTTP client, configuration and
    /// sandbox limits. See [`sandbox::Sandbox::instantiate_component`].
    pub fn instantiate_component(
        &self,
        bytes: &[u8],
    ) -> anyhow::Result<sandbox::EmbeddedComponent> {
        self.sandbox.instantiate_component(bytes)
    }

    /// Instantiates a fresh instance and drops it, returning the time
    /// taken (benchmarks).
    pub fn measure_instantiate(&self) -> Result<std::time::Duration, CallError> {
        self.sandbox.instantiate_fresh()
    }

    /// Calls a JMAP method (`PushSubscription/get` or `/set`) for an
    /// authenticated caller. `arguments` is the JSON arguments object;
    /// `created_ids` the request's createdIds so far. The inner `Err` is a
    /// JMAP method-level error to return to the client as `["error", ...]`.
    ///
    /// If the plugin traps or overruns its CPU deadline, the store writes
    /// of this call are taken back (see [`sandbox::Sandbox`]) and the outer
    /// `Err` is returned: answer the client `serverFail`; it can retry.
    pub fn call(
        &self,
        caller: &Caller,
        method: &str,
        arguments: &str,
        created_ids: &[(String, String)],
    ) -> Result<Result<MethodResponse, MethodError>, CallError> {
        // All-or-nothing: a trap or deadline leaves no half-made create
        // (record, reservation, index entry) behind, so the client can
        // retry the same create.
        self.sandbox.call_undoable(|p, s| {
            p.jmap_web_push_jmap()
                .call_call(s, caller, method, arguments, created_ids)
        })
    }

    /// The Session capabilities and their state.
    pub fn session(&self) -> Result<Result<SessionInfo, PluginError>, CallError> {
        self.sandbox
            .call(|p, s| p.jmap_web_push_jmap().call_session(s))
    }

    /// Delivers a state change to the user's subscriptions. When the user
    /// has at least [`SHARD_THRESHOLD`] subscriptions and more than one
    /// fan-out shard is configured, the shards run at once on separate
    /// instances (threads) and their reports are added up.
    pub fn state_changed(
        &self,
        event: &StateChange,
    ) -> Result<Result<DeliveryReport, PluginError>, CallError> {
        let mut count = self.fanout_shards;
        if count > 1 {
            let n = self.sandbox.call(|p, s| {
                p.jmap_web_push_event_in()
                    .call_subscription_count(s, &event.username)
            })?;
            if n.map_or(true, |n| n < SHARD_THRESHOLD) {
                count = 1;
            }
        }
        if count <= 1 {
            return self
                .sandbox
                .call(|p, s| p.jmap_web_push_event_in().call_state_changed(s, event));
        }
        let shard = |index: u32| {
            self.sandbox.call(|p, s| {
                p.jmap_web_push_event_in()
                    .call_state_changed_shard(s, event, index, count)
            })
        };
        let results: Vec<_> = std::thread::scope(|scope| {
            let others: Vec<_> = (1..count).map(|i| scope.spawn(move || shard(i))).collect();
            let mut all = vec![shard(0)];
            for h in others {
                all.push(h.join().unwrap_or_else(|_| {
                    Err(CallError::Trap {
                        message: "fan-out thread panicked".into(),
                        source: None,
                    })
                }));
            }
            all
        });
        let mut total = DeliveryReport {
            delivered: 0,
            deferred: 0,
            dropped: 0,
            destroyed: 0,
            details: Vec::new(),
        };
        for r in results {
            let r = match r? {
                Ok(r) => r,
                Err(e) => return Ok(Err(e)),
            };
            total.delivered += r.delivered;
            total.deferred += r.deferred;
            total.dropped += r.dropped;
            total.destroyed += r.destroyed;
            for d in r.details {
                match total
                    .details
                    .iter_mut()
                    .find(|t| t.outcome == d.outcome && t.reason == d.reason)
                {
                    Some(t) => t.count += d.count,
                    None => total.details.push(d),
                }
            }
        }
        Ok(Ok(total))
    }

    /// A credential was revoked: destroys its subscriptions.
    pub fn credential_revoked(
        &self,
        username: &str,
        credential_id: &str,
    ) -> Result<Result<u32, PluginError>, CallError> {
        self.sandbox.call(|p, s| {
            p.jmap_web_push_event_in()
                .call_credential_revoked(s, username, credential_id)
        })
    }

    /// A user was deleted: destroys all of the user's subscriptions.
    pub fn user_deleted(&self, username: &str) -> Result<Result<u32, PluginError>, CallError> {
        self.sandbox
            .call(|p, s| p.jmap_web_push_event_in().call_user_deleted(s, username))
    }

    /// Rotates the generated VAPID key: a new key replaces the stored one,
    /// every subscription of the old key is destroyed (its push service
    /// accepts only pushes signed with the key it was subscribed with) and
    /// the Session state changes. Every process sharing the store signs
    /// with the new key from its next push. Fails with `bad-config` when the
    /// configuration supplies the key.
    pub fn rotate_vapid_key(&self) -> Result<Result<Rotation, PluginError>, CallError> {
        self.sandbox
            .call(|p, s| p.jmap_web_push_event_in().call_rotate_vapid_key(s))
    }

    /// Does due work; call when the last report's `next_run_in_ms` says,
    /// and at least every minute.
    pub fn tick(&self) -> Result<Result<TickReport, PluginError>, CallError> {
        self.sandbox
            .call(|p, s| p.jmap_web_push_event_in().call_tick(s))
    }
}
