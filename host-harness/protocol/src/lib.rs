//! # serve's wire formats
//!
//! What `serve` reads from the network before the plugin sees it, as plain
//! functions over octets (sans-IO), so that they are tested and fuzzed
//! without a server or a sandbox:
//!
//! | module | format |
//! | --- | --- |
//! | [`envelope`] | the JMAP request envelope (RFC 8620 §3): request-level errors, result references, createdIds |
//! | [`event_intake`] | the mail server's events on `POST /events` |
//!
//! Both parse JSON with the plugin's own I-JSON parser
//! (`jmap_web_push_guest::json`), so host and guest agree on what a JSON
//! text means: a member name given twice is refused in both.

#![warn(missing_docs)]

pub mod envelope;
pub mod event_intake;
