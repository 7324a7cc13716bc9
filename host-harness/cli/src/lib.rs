//! # jmap-web-push
//!
//! The `jmap-web-push` binary's library: the reference JMAP server for the
//! Web Push plugin ([`server`], configured by [`settings`]) and the
//! loopback push service the demo and the tests use ([`gateway`]), all on
//! the embedding library `jmap-web-push-host`.
//!
//! Run `jmap-web-push --help` for the command line; `jmap-web-push serve
//! --config push.toml` serves JMAP (Session, `PushSubscription/get` and
//! `/set`), takes the mail server's state changes on `POST /events`, and
//! pushes them.

#![warn(missing_docs)]

pub mod gateway;
pub mod server;
pub mod settings;
