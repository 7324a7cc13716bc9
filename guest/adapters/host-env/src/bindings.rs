//! The wit-bindgen glue: `host` over `wasi:cli/environment` and
//! `wasi:cli/stderr`. No logic lives here.

use crate::{config_or_defaults, Config, Urgency, CONFIG_VAR};

wit_bindgen::generate!({
    world: "host-adapter",
    path: "../../../wit",
});

use exports::jmap::web_push::host::{self as wit_host, Level};
use exports::jmap::web_push::types as wit_types;

struct Component;

export!(Component);

fn urgency(u: Urgency) -> wit_types::Urgency {
    match u {
        Urgency::VeryLow => wit_types::Urgency::VeryLow,
        Urgency::Low => wit_types::Urgency::Low,
        Urgency::Normal => wit_types::Urgency::Normal,
        Urgency::High => wit_types::Urgency::High,
    }
}

fn to_wit(c: &Config) -> wit_types::Config {
    jmap_web_push_config::config_to_wit!(c, wit_types::Config, wit_types::UrgencyRule, urgency)
}

/// Writes one line to stderr, in pieces of at most 4096 octets (the most one
/// `blocking-write-and-flush` takes).
fn write_stderr(line: &str) {
    let err = wasip2::cli::stderr::get_stderr();
    for chunk in line.as_bytes().chunks(4096) {
        if err.blocking_write_and_flush(chunk).is_err() {
            return;
        }
    }
}

impl wit_host::Guest for Component {
    fn get_config() -> wit_types::Config {
        let var = std::env::var(CONFIG_VAR).ok();
        let (config, error) = config_or_defaults(var.as_deref());
        if let Some(e) = error {
            write_stderr(&format!("ERROR jmap-web-push: {e}; using the defaults\n"));
        }
        if config.insecure_test_mode {
            write_stderr("WARN jmap-web-push: insecure_test_mode is on (http:// and loopback push URLs allowed)\n");
        }
        to_wit(&config)
    }

    fn log(level: Level, message: String) {
        let level = match level {
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Error => "ERROR",
        };
        write_stderr(&format!("{level} jmap-web-push: {message}\n"));
    }

    fn report_push(o: wit_host::PushOutcome) {
        let kind = match o.kind {
            wit_host::PushKind::Verification => "verification",
            wit_host::PushKind::StateChange => "state-change",
        };
        let action = match o.action {
            wit_host::PushAction::Delivered => "delivered",
            wit_host::PushAction::Deferred => "deferred",
            wit_host::PushAction::Dropped => "dropped",
            wit_host::PushAction::Destroyed => "destroyed",
            wit_host::PushAction::Split => "split",
        };
        write_stderr(&format!(
            "INFO jmap-web-push: push {action}: subscription {} at {} ({kind}, answer {})\n",
            o.subscription_id, o.origin, o.answer
        ));
    }
}
