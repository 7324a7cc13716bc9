//! End-to-end tests of the JMAP Web Push plugin: the built component
//! driven through the host harness, the reference server and independent
//! implementations. One test binary (so the component is compiled once and
//! the workspace links one large executable, not ten); each module covers
//! one behaviour:
//!
//! - [`conformance`]: `PushSubscription/get` and `/set` (docs/behaviour.md
//!   B1-B5, B9) and Apache James's method contract;
//! - [`delivery`]: StateChange pushes and acting on push-service answers;
//! - [`interop`]: python `http_ece`/`py_vapid` and node `web-push-testing`;
//! - [`server`]: `serve` end to end, with its push-service fault matrix;
//! - [`store_contract`]: the `store` contract on every backend;
//! - [`address_guard`]: outbound HTTP refuses forbidden destinations and
//!   bounds requests in flight;
//! - [`https_push_services`]: push services over TLS, HTTP/2 and HTTP/1.1;
//! - [`sandbox`]: a misbehaving component is contained;
//! - [`composition`]: the plugin on standard WASI and inside other
//!   components;
//! - [`walking_skeleton`]: the smallest path from create to verification
//!   push.
//!
//! Run one module with a filter: `cargo test -p jmap-web-push-tests --test
//! end_to_end delivery::`.

mod address_guard;
mod composition;
mod conformance;
mod delivery;
mod https_push_services;
mod interop;
mod sandbox;
mod server;
mod store_contract;
mod store_hygiene;
mod walking_skeleton;
