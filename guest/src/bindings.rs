//! The wit-bindgen glue: implements the core's ports with the component's
//! imports and maps the exports to [`crate::Plugin`]. The only generated
//! code of the crate; no logic lives here.

use std::cell::RefCell;
use std::collections::BTreeMap;

use crate::config::{Config, Urgency};
use crate::delivery::{DeliveryReport, StateChange};
use crate::error::PluginError;
use crate::ports::{
    self, Condition, Entry, HttpError, HttpRequest, HttpResponse, KeyPage, LogLevel, StoreError,
};
use crate::subscription::Owner;
use crate::{Env, Plugin};

wit_bindgen::generate!({
    world: "plugin",
    path: "../wit",
});

use exports::jmap::web_push::event_in;
use exports::jmap::web_push::jmap as jmap_export;
use jmap::web_push::{host, http_out, store, types};

struct Component;

export!(Component);

thread_local! {
    static STATE: RefCell<Option<(Config, Plugin)>> = const { RefCell::new(None) };
}

fn urgency(u: types::Urgency) -> Urgency {
    match u {
        types::Urgency::VeryLow => Urgency::VeryLow,
        types::Urgency::Low => Urgency::Low,
        types::Urgency::Normal => Urgency::Normal,
        types::Urgency::High => Urgency::High,
    }
}

fn config_from_host() -> Config {
    jmap_web_push_config::config_from_wit!(host::get_config(), urgency).normalized()
}

struct ImportStore;

fn store_error(e: store::StoreError) -> StoreError {
    match e {
        store::StoreError::Conflict => StoreError::Conflict,
        store::StoreError::Unavailable(m) => StoreError::Unavailable(m),
        store::StoreError::TooLarge => StoreError::TooLarge,
        store::StoreError::Other(m) => StoreError::Other(m),
    }
}

fn condition(c: Condition) -> store::Condition {
    match c {
        Condition::Any => store::Condition::Any,
        Condition::Absent => store::Condition::Absent,
        Condition::Version(v) => store::Condition::Version(v),
    }
}

fn entry(e: store::Entry) -> Entry {
    Entry {
        value: e.value,
        version: e.version,
    }
}

impl ports::Store for ImportStore {
    fn get(&mut self, key: &str) -> Result<Option<Entry>, StoreError> {
        store::get(key).map(|e| e.map(entry)).map_err(store_error)
    }

    fn get_many(&mut self, keys: &[String]) -> Result<Vec<Option<Entry>>, StoreError> {
        store::get_many(keys)
            .map(|v| v.into_iter().map(|e| e.map(entry)).collect())
            .map_err(store_error)
    }

    fn put(&mut self, key: &str, value: &[u8], cond: Condition) -> Result<u64, StoreError> {
        store::put(key, value, condition(cond)).map_err(store_error)
    }

    fn delete(&mut self, key: &str, cond: Condition) -> Result<bool, StoreError> {
        store::delete(key, condition(cond)).map_err(store_error)
    }

    fn list_keys(
        &mut self,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<KeyPage, StoreError> {
        store::list_keys(prefix, after, limit)
            .map(|p| KeyPage {
                keys: p.keys,
                next: p.next,
            })
            .map_err(store_error)
    }
}

struct ImportHttp;

fn to_wit_requests(requests: Vec<HttpRequest>) -> Vec<http_out::Request> {
    requests
        .into_iter()
        .map(|r| http_out::Request {
            url: r.url,
            headers: r.headers,
            body: r.body,
            timeout_ms: r.timeout_ms,
        })
        .collect()
}

fn from_wit_answers(
    answers: Vec<Result<http_out::Response, http_out::Error>>,
) -> Vec<Result<HttpResponse, HttpError>> {
    answers
        .into_iter()
        .map(|r| match r {
            Ok(resp) => Ok(HttpResponse {
                status: resp.status,
                headers: resp.headers,
                body_prefix: resp.body_prefix,
            }),
            Err(e) => Err(match e {
                http_out::Error::Timeout => HttpError::Timeout,
                http_out::Error::Connection(m) => HttpError::Connection(m),
                http_out::Error::Dns(m) => HttpError::Dns(m),
                http_out::Error::Tls(m) => HttpError::Tls(m),
                http_out::Error::DeniedByPolicy(m) => HttpError::DeniedByPolicy(m),
                http_out::Error::TooLarge => HttpError::TooLarge,
                http_out::Error::Other(m) => HttpError::Other(m),
            }),
        })
        .collect()
}

impl ports::HttpOut for ImportHttp {
    fn send_batch(&mut self, requests: Vec<HttpRequest>) -> Vec<Result<HttpResponse, HttpError>> {
        if requests.is_empty() {
            return Vec::new();
        }
        from_wit_answers(http_out::send_batch(&to_wit_requests(requests)))
    }

    fn start_batch(&mut self, requests: Vec<HttpRequest>) -> ports::StartedBatch {
        if requests.is_empty() {
            return ports::StartedBatch::Answered(Vec::new());
        }
        ports::StartedBatch::Handle(http_out::start_batch(&to_wit_requests(requests)))
    }

    fn finish_handle(&mut self, handle: u64) -> Vec<Result<HttpResponse, HttpError>> {
        from_wit_answers(http_out::finish_batch(handle))
    }
}

struct HostLog;

impl ports::Log for HostLog {
    fn log(&mut self, level: LogLevel, message: &str) {
        let level = match level {
            LogLevel::Debug => host::Level::Debug,
            LogLevel::Info => host::Level::Info,
            LogLevel::Warn => host::Level::Warn,
            LogLevel::Error => host::Level::Error,
        };
        host::log(level, message);
    }

    fn push_outcome(&mut self, o: ports::PushOutcome) {
        host::report_push(&host::PushOutcome {
            subscription_id: o.subscription_id,
            origin: o.origin,
            kind: match o.kind {
                ports::PushKind::Verification => host::PushKind::Verification,
                ports::PushKind::StateChange => host::PushKind::StateChange,
            },
            answer: o.answer,
            action: match o.action {
                ports::PushAction::Delivered => host::PushAction::Delivered,
                ports::PushAction::Deferred => host::PushAction::Deferred,
                ports::PushAction::Dropped => host::PushAction::Dropped,
                ports::PushAction::Destroyed => host::PushAction::Destroyed,
                ports::PushAction::Split => host::PushAction::Split,
            },
        });
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Runs `f` with the instance's plugin state and a fresh [`Env`].
fn with_env<R>(f: impl FnOnce(&mut Plugin, &mut Env<'_>) -> R) -> R {
    STATE.with(|cell| {
        let mut slot = cell.borrow_mut();
        let (config, plugin) = slot.get_or_insert_with(|| (config_from_host(), Plugin::new()));
        let (mut s, mut h, mut l) = (ImportStore, ImportHttp, HostLog);
        let mut env = Env {
            store: &mut s,
            http: &mut h,
            log: &mut l,
            config,
            now_ms: now_ms(),
        };
        f(plugin, &mut env)
    })
}

fn plugin_error(e: PluginError) -> types::PluginError {
    match e {
        PluginError::StoreUnavailable(m) => types::PluginError::StoreUnavailable(m),
        PluginError::BadConfig(m) => types::PluginError::BadConfig(m),
        PluginError::InvalidArgument(m) => types::PluginError::InvalidArgument(m),
        PluginError::Internal(m) => types::PluginError::Internal(m),
    }
}

impl jmap_export::Guest for Component {
    fn call(
        caller: types::Caller,
        name: String,
        arguments: String,
        created_ids: Vec<(String, String)>,
    ) -> Result<jmap_export::MethodResponse, jmap_export::MethodError> {
        let owner = Owner {
            username: caller.username,
            credential_id: caller.credential_id,
        };
        let mut created_ids = created_ids;
        with_env(|plugin, env| {
            crate::jmap::call(plugin, env, &owner, &name, &arguments, &mut created_ids)
        })
        .map(|arguments| jmap_export::MethodResponse {
            arguments,
            created_ids,
        })
        .map_err(|e| jmap_export::MethodError {
            error_type: e.kind.as_str().to_string(),
            description: Some(e.description),
        })
    }

    fn session() -> Result<jmap_export::SessionInfo, types::PluginError> {
        with_env(crate::lifecycle::session)
            .map(|s| jmap_export::SessionInfo {
                capabilities: s
                    .capabilities
                    .into_iter()
                    .map(|(uri, value)| jmap_export::Capability { uri, value })
                    .collect(),
                state: s.state,
            })
            .map_err(plugin_error)
    }
}

fn report(r: DeliveryReport) -> event_in::DeliveryReport {
    event_in::DeliveryReport {
        delivered: r.delivered,
        deferred: r.deferred,
        dropped: r.dropped,
        destroyed: r.destroyed,
        details: r
            .details
            .into_iter()
            .map(|((outcome, reason), count)| event_in::OutcomeCount {
                outcome,
                reason,
                count,
            })
            .collect(),
    }
}

impl event_in::Guest for Component {
    fn state_changed(
        event: event_in::StateChange,
    ) -> Result<event_in::DeliveryReport, types::PluginError> {
        Self::state_changed_shard(event, 0, 1)
    }

    fn state_changed_shard(
        event: event_in::StateChange,
        index: u32,
        count: u32,
    ) -> Result<event_in::DeliveryReport, types::PluginError> {
        let mut changed = BTreeMap::new();
        for account in event.changed {
            let types: &mut BTreeMap<String, String> =
                changed.entry(account.account_id).or_default();
            for c in account.changes {
                types.insert(c.type_name, c.state);
            }
        }
        let change = StateChange {
            username: event.username,
            changed,
        };
        with_env(|plugin, env| {
            crate::delivery::state_changed_shard(plugin, env, &change, index, count)
        })
        .map(report)
        .map_err(plugin_error)
    }

    fn subscription_count(username: String) -> Result<u32, types::PluginError> {
        with_env(|_, env| {
            crate::repo::user_ids(env.store, &username)
                .map(|ids| ids.len() as u32)
                .map_err(PluginError::from)
        })
        .map_err(plugin_error)
    }

    fn credential_revoked(
        username: String,
        credential_id: String,
    ) -> Result<u32, types::PluginError> {
        with_env(|_, env| crate::lifecycle::credential_revoked(env, &username, &credential_id))
            .map_err(plugin_error)
    }

    fn user_deleted(username: String) -> Result<u32, types::PluginError> {
        with_env(|_, env| crate::lifecycle::user_deleted(env, &username)).map_err(plugin_error)
    }

    fn rotate_vapid_key() -> Result<event_in::Rotation, types::PluginError> {
        with_env(crate::lifecycle::rotate_vapid_key)
            .map(|r| event_in::Rotation {
                application_server_key: r.application_server_key,
                destroyed: r.destroyed,
            })
            .map_err(plugin_error)
    }

    fn tick() -> Result<event_in::TickReport, types::PluginError> {
        with_env(crate::lifecycle::tick)
            .map(|t| event_in::TickReport {
                delivery: report(t.delivery),
                expired: t.expired,
                verifications_sent: t.verifications_sent,
                next_run_in_ms: t.next_run_in_ms,
            })
            .map_err(plugin_error)
    }
}
