//! Composition: the plugin plugged with adapter components into one
//! component, using the Bytecode Alliance's `wac-graph` (the library behind
//! `wac plug`), and target checks of built components against WIT worlds
//! (what `wasm-tools component targets` does).
//!
//! - [`plugin_on_wasi`] plugs the three adapters of `wit/adapters.wit`
//!   (`store` over `wasi:keyvalue`, `http-out` over `wasi:http`, `host` from
//!   the WASI environment) into the plugin. The result imports only standard
//!   interfaces (world `plugin-on-wasi` in `wit/targets.wit`) and runs in any
//!   runtime with `wasi:http` and `wasi:keyvalue@0.2.0-draft`.
//! - [`plug`] is the general form: any socket component, any plugs. The
//!   tests use it to compose a mail-server component with the plugin.
//! - [`check_target`] checks that a component conforms to a WIT world.
//!
//! The same composition from the command line: `jmap-web-push compose -o
//! plugin-on-wasi.wasm` (see README, "Composition").

use std::path::Path;

use wac_graph::{types::Package, CompositionGraph, EncodeOptions};

use crate::sandbox::BoxError;

/// The adapter components built with this harness (see `wit/adapters.wit`).
pub mod adapters {
    /// `store` over `wasi:keyvalue@0.2.0-draft` (store, atomics, batch).
    pub const STORE_KV: &[u8] = jmap_web_push_components::adapters::STORE_KV;
    /// `http-out` over `wasi:http/outgoing-handler@0.2.12`.
    pub const HTTP_OUT: &[u8] = jmap_web_push_components::adapters::HTTP_OUT;
    /// `host` and `types` from `wasi:cli/environment` and `wasi:cli/stderr`.
    pub const HOST_ENV: &[u8] = jmap_web_push_components::adapters::HOST_ENV;
}

/// Why a composition or a target check failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ComposeError {
    /// A component could not be read as a component.
    #[error("{name} is not a usable component: {reason}")]
    BadComponent {
        /// The package name given to it.
        name: String,
        /// What the parser said, with its causes.
        reason: String,
        /// The parser's error.
        #[source]
        source: BoxError,
    },
    /// None of the plugs' exports matched an import of the socket.
    #[error("nothing to plug: no plug exports an interface the socket imports")]
    NothingPlugged,
    /// Building or encoding the graph failed.
    #[error("composition failed: {reason}")]
    Graph {
        /// What wac said, with its causes.
        reason: String,
        /// wac's error.
        #[source]
        source: BoxError,
    },
    /// The WIT directory or world could not be loaded.
    #[error("WIT: {reason}")]
    Wit {
        /// What the WIT parser said, with its causes.
        reason: String,
        /// The WIT parser's error.
        #[source]
        source: BoxError,
    },
    /// The component does not conform to the world.
    #[error("the component does not conform to world `{world}`: {reason}")]
    NotTargeting {
        /// The world checked against.
        world: String,
        /// What did not match, with its causes.
        reason: String,
        /// The checker's error.
        #[source]
        source: BoxError,
    },
}

/// Plugs `plugs` (name, component) into `socket`: every import of the
/// socket that a plug exports (same name, or a semver-compatible one, with a
/// subtype check) is wired to that plug; the socket's exports are exported;
/// every import left over (the socket's and the plugs') becomes an import
/// of the result, merged by name. The result is validated.
pub fn plug(socket: (&str, &[u8]), plugs: &[(&str, &[u8])]) -> Result<Vec<u8>, ComposeError> {
    let mut graph = CompositionGraph::new();
    let register =
        |graph: &mut CompositionGraph, name: &str, bytes: &[u8]| {
            let package = Package::from_bytes(name, None, bytes.to_vec(), graph.types_mut())
                .map_err(|e| ComposeError::BadComponent {
                    name: name.to_string(),
                    reason: format!("{e:#}"),
                    source: e.into(),
                })?;
            graph.register_package(package).map_err(graph_error)
        };
    let socket_id = register(&mut graph, socket.0, socket.1)?;
    let mut plug_ids = Vec::with_capacity(plugs.len());
    for (name, bytes) in plugs {
        plug_ids.push(register(&mut graph, name, bytes)?);
    }
    wac_graph::plug(&mut graph, plug_ids, socket_id).map_err(|e| match e {
        wac_graph::PlugError::NoPlugHappened => ComposeError::NothingPlugged,
        other => graph_error(other),
    })?;
    graph.encode(EncodeOptions::default()).map_err(graph_error)
}

/// A wac error as [`ComposeError::Graph`], its causes in the text too.
fn graph_error(e: impl std::error::Error + Send + Sync + 'static) -> ComposeError {
    let e = anyhow::Error::from(e);
    ComposeError::Graph {
        reason: format!("{e:#}"),
        source: e.into(),
    }
}

/// A WIT parser error as [`ComposeError::Wit`].
fn wit_error(e: anyhow::Error) -> ComposeError {
    ComposeError::Wit {
        reason: format!("{e:#}"),
        source: e.into(),
    }
}

/// The plugin composed with the three adapters: a component that imports
/// only WASI 0.2 (`wasi:cli`, `wasi:io`, `wasi:clocks`, `wasi:random`,
/// `wasi:http`, ...) and `wasi:keyvalue@0.2.0-draft`, and exports `jmap` and
/// `event-in`. Use the portable plugin build unless the target runtime has
/// the wide-arithmetic proposal.
pub fn plugin_on_wasi(plugin: &[u8]) -> Result<Vec<u8>, ComposeError> {
    plug(
        ("jmap:web-push-plugin", plugin),
        &[
            ("jmap:web-push-store-kv", adapters::STORE_KV),
            ("jmap:web-push-http-out", adapters::HTTP_OUT),
            ("jmap:web-push-host-env", adapters::HOST_ENV),
        ],
    )
}

/// A component that imports the plugin's exports (a mail server written as
/// a component, `socket`) composed with the plugin and the three adapters:
/// the result imports only standard interfaces. The host adapter is
/// plugged into the socket as well, for the types-only
/// `jmap:web-push/types` the socket imports along with `jmap`.
pub fn embed_on_wasi(socket: &[u8], plugin: &[u8]) -> Result<Vec<u8>, ComposeError> {
    let plugin_on_wasi = plugin_on_wasi(plugin)?;
    plug(
        ("jmap:web-push-embedder", socket),
        &[
            ("jmap:web-push-plugin", &plugin_on_wasi),
            ("jmap:web-push-host-env", adapters::HOST_ENV),
        ],
    )
}

/// Checks that `component` conforms to `world` of the WIT package in
/// `wit_dir` (its imports are a subset of the world's, its exports a
/// superset, types checked structurally; semver-compatible WASI versions
/// match, e.g. `@0.2.0` and `@0.2.12`).
pub fn check_target(component: &[u8], wit_dir: &Path, world: &str) -> Result<(), ComposeError> {
    let mut resolve = wit_parser::Resolve::default();
    let (package, _) = resolve.push_dir(wit_dir).map_err(wit_error)?;
    let world_id = resolve
        .select_world(&[package], Some(world))
        .map_err(wit_error)?;
    wit_component::targets(&resolve, world_id, component, true).map_err(|e| {
        ComposeError::NotTargeting {
            world: world.to_string(),
            reason: format!("{e:#}"),
            source: e.into(),
        }
    })
}

/// The import names of a component, for reports (`wasi:http/types@0.2.12`,
/// ...).
pub fn import_names(component: &[u8]) -> Result<Vec<String>, ComposeError> {
    let mut types = wac_graph::types::Types::default();
    let package =
        Package::from_bytes("component", None, component.to_vec(), &mut types).map_err(|e| {
            ComposeError::BadComponent {
                name: "component".into(),
                reason: format!("{e:#}"),
                source: e.into(),
            }
        })?;
    Ok(types[package.ty()].imports.keys().cloned().collect())
}
