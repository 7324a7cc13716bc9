//! The host side of the plugin's imports (`wit/plugin.wit`): `store` on a
//! [`KvStore`], `http-out` on an [`HttpSend`], `host` (configuration, log,
//! push reports) and the WASI context. One [`HostState`] per instance; what
//! every instance shares is one `Shared`. The sandbox that runs the
//! instances is [`crate::sandbox`].

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bindings::jmap::web_push::{host, http_out, store as wit_store, types};
use crate::net::{HttpSend, OutError, OutRequest, OutResponse, PendingBatch};
use crate::sandbox::Limiter;
use crate::store::{Condition, KvStore, StoreError};

/// What every instance shares: the store backend, the HTTP client and the
/// configuration.
pub(crate) struct Shared {
    pub kv: Arc<dyn KvStore>,
    pub http: Arc<dyn HttpSend>,
    pub config: types::Config,
}

/// The per-instance host state.
pub struct HostState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limits: Limiter,
    pub(crate) shared: Arc<Shared>,
    /// Batches started with `start-batch` and not yet finished.
    pub(crate) batches: std::collections::HashMap<u64, PendingBatch>,
    pub(crate) next_batch: u64,
    /// The keys the current call created, kept while the call must be
    /// all-or-nothing ([`crate::sandbox::Sandbox::call_undoable`]).
    pub(crate) journal: Option<Journal>,
}

/// What a call did to each key it touched first as an absent key: the
/// version of its last write, or `None` when it deleted the key again.
pub(crate) type Journal = std::collections::HashMap<String, Option<u64>>;

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
    pub(crate) fn undo(&mut self) -> usize {
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
