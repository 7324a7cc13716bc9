//! `POST /events` bodies, then the delivery of what parses.

use jmap_web_push_guest::delivery::{self, pending::Changed, StateChange};
use jmap_web_push_guest::ports::{MemoryStore, NoLog};
use jmap_web_push_guest::{lifecycle, Env, Plugin};
use jmap_web_push_protocol::event_intake::{self, Event};

use crate::support::{
    assert_records_read_back, config, now_ms, verified_subscription, ScriptedPushService,
};

/// Most events delivered for one input (parsing takes them all).
const MAX_EVENTS: usize = 4;

/// The input as an intake body. What parses is delivered to a verified,
/// encrypted subscription of the event's user, the push service answering
/// as the body's first octets pick. Properties: a StateChange that parses
/// is delivered or deferred, never refused for its content, and every
/// record the plugin wrote reads back.
pub fn event_intake(data: &[u8]) {
    let Ok(events) = event_intake::parse(data) else {
        return;
    };
    let config = config();
    let mut store = MemoryStore::new();
    let mut plugin = Plugin::new();
    let mut log = NoLog;
    let mut http = ScriptedPushService::new(data);
    for (step, event) in events.into_iter().take(MAX_EVENTS).enumerate() {
        let now = now_ms(step);
        if let Event::StateChange { username, .. } = &event {
            verified_subscription(&mut store, username, &format!("s{step}"), now);
        }
        let mut env = Env {
            store: &mut store,
            http: &mut http,
            log: &mut log,
            config: &config,
            now_ms: now,
        };
        match event {
            Event::StateChange { username, changed } => {
                let mut plugin_changed = Changed::new();
                for account in changed {
                    let types = plugin_changed.entry(account.account_id).or_default();
                    for change in account.changes {
                        types.insert(change.type_name, change.state);
                    }
                }
                let event = StateChange {
                    username,
                    changed: plugin_changed,
                };
                if let Err(e) = delivery::state_changed(&mut plugin, &mut env, &event) {
                    panic!("a parsed StateChange was refused: {e:?}: {event:?}");
                }
                let _ = lifecycle::tick(&mut plugin, &mut env);
            }
            Event::CredentialRevoked {
                username,
                credential_id,
            } => {
                if let Err(e) = lifecycle::credential_revoked(&mut env, &username, &credential_id) {
                    panic!("a parsed CredentialRevoked was refused: {e:?}");
                }
            }
            Event::UserDeleted { username } => {
                if let Err(e) = lifecycle::user_deleted(&mut env, &username) {
                    panic!("a parsed UserDeleted was refused: {e:?}");
                }
            }
        }
        assert_records_read_back(&mut store);
    }
}
