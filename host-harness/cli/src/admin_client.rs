//! How `vapid show` and `vapid rotate` reach the store: through a running
//! server's admin routes when one answers at the configured address (an
//! embedded store is locked by the server that has it open, and a rotation
//! done by the server keeps push running), else by opening the store.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

use jmap_web_push::server;
use jmap_web_push::settings::{Settings, StoreKind};
use jmap_web_push_host::PushPlugin;

/// What to ask the running server.
pub enum Ask {
    /// `GET /admin/vapid`.
    ShowVapid,
    /// `POST /admin/vapid/rotate`.
    RotateVapid,
}

/// A running server's answer.
pub struct Answer {
    /// The server's base URL.
    pub server: String,
    /// The JSON body.
    pub body: Value,
}

/// The base URL a server started with `settings` answers on, seen from this
/// machine: `server.listen` with an unspecified address (`0.0.0.0`, `::`)
/// replaced by loopback. `None` for port 0 (no fixed address).
fn local_base_url(settings: &Settings) -> Option<String> {
    let mut addr = settings.server.listen;
    if addr.port() == 0 {
        return None;
    }
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    Some(format!("http://{addr}"))
}

/// Asks the server running with `settings` (at `server_url`, else at
/// `server.listen`). `Ok(None)` when nothing listens there or no admin
/// token is configured: then the caller opens the store itself.
pub fn ask(
    settings: &Settings,
    server_url: Option<&str>,
    what: Ask,
) -> anyhow::Result<Option<Answer>> {
    let Some(token) = settings.server.admin_token.clone() else {
        anyhow::ensure!(
            server_url.is_none(),
            "--server needs server.admin_token in the configuration"
        );
        return Ok(None);
    };
    let Some(base) = server_url
        .map(|u| u.trim_end_matches('/').to_string())
        .or_else(|| local_base_url(settings))
    else {
        return Ok(None);
    };
    let explicit = server_url.is_some();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let ours = server::store_fingerprint(settings);
    rt.block_on(async move {
        let client = reqwest::Client::builder()
            // The admin token must not go to a proxy from the environment.
            .no_proxy()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(120))
            .build()?;
        // Which store does the server there use? (Nothing changes yet.)
        let shown = match get_json(client.get(format!("{base}/admin/vapid")), &token, &base).await {
            Ok(v) => v,
            // Nothing listens there: no server runs with this configuration.
            Err(Failed::Unreachable(e)) if e.is_connect() && !explicit => return Ok(None),
            Err(e) => return Err(e.into_error(&base)),
        };
        if shown["store"] != ours.as_str() && !explicit {
            anyhow::bail!(
                "the server at {base} uses another store than this configuration names \
                 (it may have been started with other settings); pass --server {base} to use \
                 it anyway, or stop it"
            );
        }
        let body = match what {
            Ask::ShowVapid => shown,
            Ask::RotateVapid => get_json(
                client.post(format!("{base}/admin/vapid/rotate")),
                &token,
                &base,
            )
            .await
            .map_err(|e| match e {
                Failed::Unreachable(e) if e.is_timeout() => anyhow::Error::new(e).context(format!(
                    "the server at {base} did not answer in time; the key may have \
                                 been rotated all the same: check with `vapid show` before \
                                 trying again"
                )),
                e => e.into_error(&base),
            })?,
        };
        Ok(Some(Answer { server: base, body }))
    })
}

/// Why a request to the server failed.
enum Failed {
    /// No answer (connection refused, timeout...).
    Unreachable(reqwest::Error),
    /// An answer that is not a success.
    Refused(anyhow::Error),
}

impl Failed {
    fn into_error(self, base: &str) -> anyhow::Error {
        match self {
            Failed::Unreachable(e) => {
                anyhow::Error::new(e).context(format!("asking the server at {base}"))
            }
            Failed::Refused(e) => e,
        }
    }
}

async fn get_json(
    request: reqwest::RequestBuilder,
    token: &str,
    base: &str,
) -> Result<Value, Failed> {
    let response = request
        .bearer_auth(token)
        .send()
        .await
        .map_err(Failed::Unreachable)?;
    let status = response.status();
    let bytes = response.bytes().await.map_err(Failed::Unreachable)?;
    let body: Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("the answer of {base} is not JSON (is it jmap-web-push?)"))
        .map_err(Failed::Refused)?;
    if !status.is_success() {
        let detail = body["detail"].as_str().unwrap_or("no detail");
        return Err(Failed::Refused(anyhow::anyhow!(
            "the server at {base} answered {status}: {detail}"
        )));
    }
    Ok(body)
}

/// The plugin on the configured store, opened by this process. An embedded
/// store held by a running server gives an error that says so.
pub fn plugin_for(settings: &Settings) -> anyhow::Result<PushPlugin> {
    let store = server::open_store(settings).map_err(|e| {
        if settings.store.kind == StoreKind::Embedded {
            e.context(format!(
                "cannot open the store {} (a running server holds it?); set server.admin_token \
                 and server.listen so this command can ask that server, or pass --server",
                settings.store.path.display()
            ))
        } else {
            e
        }
    })?;
    server::build_plugin(settings, store, Default::default())
}
