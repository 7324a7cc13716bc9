//! The `jmap-web-push` configuration file: one TOML file with every setting
//! of the plugin and the host, environment overrides, and validation errors
//! that name the bad key.
//!
//! ```toml
//! [server]
//! listen = "127.0.0.1:8080"              # address to serve JMAP on
//! public_url = "https://mail.example.com" # base of the absolute apiUrl (default: http://<listen>)
//! admin_token = "change-me"              # Bearer token for POST /events and /admin/*
//! log_format = "text"                    # text | json (one JSON object per line)
//! max_auth_failures = 10                 # failed logins per client address / user name per window, then 429 (0: off)
//! auth_failure_window_secs = 60
//! password_check_threads = 0             # Argon2 verifications at once (0: half the cores)
//! # trusted_proxies = ["127.0.0.1"]      # whose X-Forwarded-For names the client address
//! max_size_request = 1000000             # octets of one POST /jmap/api body (maxSizeRequest)
//! max_concurrent_requests = 16           # API requests in flight per user (maxConcurrentRequests)
//! # extra_capabilities = ["urn:ietf:params:jmap:mail"]  # advertised with no methods, for clients that send them
//! # compat_push_subscription_get_state = true  # add "state" to PushSubscription/get (jmap-client 0.4)
//! metrics_count_interval_secs = 10      # /metrics counts subscriptions and pending pushes in the store at most this often
//!
//! [store]
//! kind = "embedded"                      # embedded | memory | postgres
//! path = "/var/lib/jmap-web-push/store.redb"
//! # url = "postgres://user@127.0.0.1/push"   (kind = "postgres")
//!
//! [http]
//! connect_timeout_ms = 5000
//! max_timeout_ms = 30000
//! max_concurrency = 256
//! max_connections_per_origin = 32      # in flight and kept alive per push service
//! max_streams_per_http2_origin = 128  # in flight to a push service that speaks HTTP/2 (at most max_concurrency / 2)
//! # extra_ca_files = ["/etc/jmap-web-push/private-ca.pem"]  # trusted besides the system's roots
//!
//! [sandbox]
//! flavour = "wide"                       # wide | portable
//! memory_limit_mib = 64
//! call_deadline_ms = 30000
//!
//! [plugin]                               # every field of the WIT config record
//! vapid_contact = "mailto:postmaster@example.com"
//! max_subscriptions_per_owner = 50
//!
//! [[users]]
//! name = "alice@example.com"
//! credentials = [
//!   { id = "laptop", password_hash = "$argon2id$v=19$..." },  # Basic
//!   { id = "phone", token_sha256 = "<hex sha256 of the token>" },  # Bearer
//! ]
//! ```
//!
//! The two limits are advertised in the Session's `urn:ietf:params:jmap:core`
//! capability and enforced on `POST /jmap/api` with the RFC 8620 §3.6.1
//! `urn:ietf:params:jmap:error:limit` problem (HTTP 400, `"limit"` naming
//! the limit). `max_concurrent_requests` counts requests per authenticated
//! user (all of a user's credentials together), not per connection or
//! server-wide.
//!
//! `compat_push_subscription_get_state` is a compatibility switch, off by
//! default: RFC 8620 §7.2.1 says `PushSubscription/get` returns no `state`
//! (there is no `PushSubscription/changes`), but the `jmap-client` crate
//! (0.4) fails to parse a /get response without one ("missing field
//! `state`"). When on, `serve` adds `"state"` to each successful
//! `PushSubscription/get` response: base64url (no padding) of the first 12
//! octets of SHA-256 over the returned `list` (its JSON text), so it changes
//! exactly when what the call returned changes. It is not a JMAP state
//! string a client can pass to a /changes method.
//!
//! Environment overrides: `JMAP_WEB_PUSH__<SECTION>__<KEY>=<value>` (double
//! underscores; the value is read as TOML, or as a string if it is not
//! TOML), e.g. `JMAP_WEB_PUSH__SERVER__LISTEN=0.0.0.0:8080`.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use jmap_web_push_host::config::PluginConfig;

/// The whole configuration file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// The JMAP server.
    pub server: ServerSettings,
    /// The store backend.
    pub store: StoreSettings,
    /// Outbound HTTP.
    pub http: HttpSettings,
    /// The sandbox.
    pub sandbox: SandboxSettings,
    /// The plugin.
    pub plugin: PluginConfig,
    /// Users allowed to call the JMAP API.
    pub users: Vec<User>,
}

/// `[server]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// Listen address.
    pub listen: SocketAddr,
    /// Public base URL (for the absolute `apiUrl`); default `http://<listen>`.
    pub public_url: Option<String>,
    /// Bearer token for the event intake (`POST /events`) and the admin
    /// routes (`/admin/...`); without it both are disabled.
    pub admin_token: Option<String>,
    /// Capabilities to advertise (and accept in `using`) although this
    /// server has no methods for them, for clients that always send them:
    /// the `jmap-client` crate sends `urn:ietf:params:jmap:mail` and
    /// `urn:ietf:params:jmap:submission` with every request. Default none:
    /// only what is implemented is advertised.
    pub extra_capabilities: Vec<String>,
    /// `maxSizeRequest`: the largest `POST /jmap/api` body accepted, in
    /// octets (default 1 000 000). A larger one gets the
    /// `urn:ietf:params:jmap:error:limit` problem.
    pub max_size_request: u64,
    /// `maxConcurrentRequests`: JMAP API requests one authenticated user
    /// may have in flight at once (default 16); one more gets the
    /// `urn:ietf:params:jmap:error:limit` problem at once (no queueing).
    pub max_concurrent_requests: u32,
    /// Adds a `state` member to `PushSubscription/get` responses (off by
    /// default; RFC 8620 §7.2.1 has none) for clients that require one,
    /// such as the `jmap-client` crate 0.4. See the module documentation
    /// for its value.
    pub compat_push_subscription_get_state: bool,
    /// Failed authentications (a wrong password or token, an unknown user)
    /// from one client address (IPv6: its /64) or for one user name within
    /// `auth_failure_window_secs` after which further attempts get 429 with
    /// `Retry-After` until the window ends (default 10; 0 turns it off).
    /// Requests with a valid token or an already verified password are
    /// not refused.
    pub max_auth_failures: u32,
    /// The window of `max_auth_failures`, in seconds (default 60).
    pub auth_failure_window_secs: u64,
    /// Threads that verify passwords (Argon2) at once (default 0: half the
    /// cores, at least 1); more wait, up to 5 s, then get 503.
    pub password_check_threads: usize,
    /// Reverse proxies whose `X-Forwarded-For` names the client address
    /// for `max_auth_failures` (default none: the peer is the client).
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// How `serve` writes its log lines to stderr: `text` (default) or
    /// `json` (one JSON object per line). `serve --log-format` overrides it.
    pub log_format: LogFormat,
    /// How old the `/metrics` gauges of subscriptions and pending pushes
    /// may be, in seconds (default 10): the store counts them (one
    /// `count(*)` on PostgreSQL, one range walk in the embedded store) at
    /// most this often, however often `/metrics` is scraped. 0 counts on
    /// every scrape.
    pub metrics_count_interval_secs: u64,
}

/// The log line format of `serve`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `target`, the
    /// message as `message`, and every field at the top level).
    Json,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: None,
            admin_token: None,
            log_format: LogFormat::Text,
            max_auth_failures: 10,
            auth_failure_window_secs: 60,
            password_check_threads: 0,
            trusted_proxies: Vec::new(),
            extra_capabilities: Vec::new(),
            max_size_request: 1_000_000,
            max_concurrent_requests: 16,
            compat_push_subscription_get_state: false,
            metrics_count_interval_secs: 10,
        }
    }
}

/// Which store backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// The redb file (default).
    #[default]
    Embedded,
    /// In memory (lost on exit).
    Memory,
    /// PostgreSQL (several processes may share it).
    Postgres,
}

/// `[store]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSettings {
    /// Backend.
    pub kind: StoreKind,
    /// File of the embedded store.
    pub path: PathBuf,
    /// PostgreSQL URL.
    pub url: Option<String>,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            kind: StoreKind::Embedded,
            path: PathBuf::from("jmap-web-push.redb"),
            url: None,
        }
    }
}

/// `[http]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSettings {
    /// Connect timeout, ms.
    pub connect_timeout_ms: u64,
    /// Upper bound on one request, ms.
    pub max_timeout_ms: u64,
    /// Requests in flight at most.
    pub max_concurrency: usize,
    /// Requests in flight at most to one origin; also the idle keep-alive
    /// connections kept per origin.
    pub max_connections_per_origin: usize,
    /// Requests in flight at most to one origin that answers over HTTP/2
    /// (streams on one connection); at most half of `max_concurrency` is
    /// used.
    pub max_streams_per_http2_origin: usize,
    /// Response body octets kept.
    pub max_body_prefix: usize,
    /// PEM files of certificate authorities trusted besides the system's
    /// roots (a self-hosted push service whose certificate a private
    /// authority issued).
    pub extra_ca_files: Vec<PathBuf>,
}

impl Default for HttpSettings {
    fn default() -> Self {
        let d = jmap_web_push_host::net::HttpPolicy::default();
        HttpSettings {
            connect_timeout_ms: d.connect_timeout.as_millis() as u64,
            max_timeout_ms: d.max_timeout.as_millis() as u64,
            max_concurrency: d.max_concurrency,
            max_connections_per_origin: d.max_connections_per_origin,
            max_streams_per_http2_origin: d.max_streams_per_http2_origin,
            max_body_prefix: d.max_body_prefix,
            extra_ca_files: Vec::new(),
        }
    }
}

/// Guest build, as written in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FlavourSetting {
    /// `+wide-arithmetic` (default).
    #[default]
    Wide,
    /// Portable.
    Portable,
}

/// `[sandbox]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SandboxSettings {
    /// Guest build.
    pub flavour: FlavourSetting,
    /// Memory cap per instance, MiB.
    pub memory_limit_mib: usize,
    /// CPU deadline per call, ms.
    pub call_deadline_ms: u64,
    /// AOT cache directory (default: ~/.cache/jmap-web-push).
    pub aot_cache_dir: Option<PathBuf>,
}

impl Default for SandboxSettings {
    fn default() -> Self {
        SandboxSettings {
            flavour: FlavourSetting::Wide,
            memory_limit_mib: 64,
            call_deadline_ms: 30_000,
            aot_cache_dir: None,
        }
    }
}

/// A user of the JMAP API.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// User name (Basic auth name).
    pub name: String,
    /// Credentials; each one's `id` is the credential id subscriptions are
    /// tied to.
    #[serde(default)]
    pub credentials: Vec<Credential>,
}

/// One credential: a password (Basic) or a token (Bearer).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credential {
    /// Credential id.
    pub id: String,
    /// Argon2 PHC string of the password (`jmap-web-push hash-password`).
    pub password_hash: Option<String>,
    /// Hex SHA-256 of a bearer token (`jmap-web-push hash-password --token`).
    pub token_sha256: Option<String>,
}

/// Why the configuration is unusable; names the key.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The file could not be read.
    #[error("cannot read {path}: {error}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        error: std::io::Error,
    },
    /// Not TOML.
    #[error("{0}")]
    Syntax(String),
    /// A key has a bad value or is unknown.
    #[error("invalid configuration at `{key}`: {message}")]
    Invalid {
        /// Dotted key path.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// A TOML syntax error as `line L, column C: message`, without the
/// offending line itself (which may hold a token or a database password,
/// and reaches logs and the `/admin/reload` answer).
fn syntax_error(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!(
                "TOML syntax error at line {line}, column {column}: {}",
                e.message()
            )
        }
        None => format!("TOML syntax error: {}", e.message()),
    }
}

impl Settings {
    /// Reads `path` (or defaults when `None`), applies the environment
    /// overrides from `env`, and validates.
    pub fn load(
        path: Option<&std::path::Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, SettingsError> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p).map_err(|error| SettingsError::Read {
                path: p.to_path_buf(),
                error,
            })?,
            None => String::new(),
        };
        Self::parse(&text, env)
    }

    /// Parses TOML text with environment overrides and validates.
    pub fn parse(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, SettingsError> {
        let mut table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| SettingsError::Syntax(syntax_error(text, &e)))?;
        for (name, value) in env {
            let Some(path) = name.strip_prefix("JMAP_WEB_PUSH__") else {
                continue;
            };
            let keys: Vec<String> = path.split("__").map(|k| k.to_ascii_lowercase()).collect();
            let parsed = format!("v = {value}")
                .parse::<toml::Table>()
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or(toml::Value::String(value.clone()));
            let mut slot = &mut table;
            for k in &keys[..keys.len() - 1] {
                let entry = slot
                    .entry(k.clone())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                slot = match entry {
                    toml::Value::Table(t) => t,
                    _ => {
                        return Err(SettingsError::Invalid {
                            key: keys.join("."),
                            message: format!("{name} overrides a key inside a non-table value"),
                        })
                    }
                };
            }
            slot.insert(keys[keys.len() - 1].clone(), parsed);
        }
        let settings: Settings = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| SettingsError::Invalid {
                key: e.path().to_string(),
                message: e.inner().to_string(),
            })?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), SettingsError> {
        let bad = |key: &str, message: String| {
            Err(SettingsError::Invalid {
                key: key.into(),
                message,
            })
        };
        if let Some(contact) = &self.plugin.vapid_contact {
            if !(contact.starts_with("mailto:") || contact.starts_with("https://")) {
                return bad(
                    "plugin.vapid_contact",
                    "must start with mailto: or https://".into(),
                );
            }
            if let Err(e) = jmap_web_push_guest::crypto::vapid::VapidSigner::new(
                jmap_web_push_guest::crypto::vapid::VapidKey::generate()
                    .map_err(|e| SettingsError::Syntax(e.to_string()))?,
                contact,
                self.plugin.vapid_token_lifetime_secs,
                self.plugin.insecure_test_mode,
            ) {
                return bad("plugin.vapid_contact", e.to_string());
            }
        }
        if let Some(k) = &self.plugin.vapid_private_key {
            if let Err(e) = jmap_web_push_guest::crypto::vapid::VapidKey::from_base64url(k) {
                return bad("plugin.vapid_private_key", e.to_string());
            }
        }
        if self.plugin.max_plaintext_octets > 3993 {
            return bad(
                "plugin.max_plaintext_octets",
                "at most 3993 (one 4096-octet record)".into(),
            );
        }
        if self.store.kind == StoreKind::Postgres && self.store.url.is_none() {
            return bad(
                "store.url",
                "required when store.kind = \"postgres\"".into(),
            );
        }
        if let Some(u) = &self.server.public_url {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return bad(
                    "server.public_url",
                    "must be an absolute http(s) URL".into(),
                );
            }
        }
        if self.server.max_size_request == 0 {
            return bad("server.max_size_request", "must be at least 1".into());
        }
        if self.server.max_concurrent_requests == 0 {
            return bad(
                "server.max_concurrent_requests",
                "must be at least 1".into(),
            );
        }
        for (i, user) in self.users.iter().enumerate() {
            if user.name.is_empty() {
                return bad(&format!("users[{i}].name"), "must not be empty".into());
            }
            for (j, c) in user.credentials.iter().enumerate() {
                let key = format!("users[{i}].credentials[{j}]");
                match (&c.password_hash, &c.token_sha256) {
                    (Some(h), None) => {
                        if argon2::PasswordHash::new(h).is_err() {
                            return bad(
                                &format!("{key}.password_hash"),
                                "not a PHC hash string".into(),
                            );
                        }
                    }
                    (None, Some(t)) => {
                        if t.len() != 64 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
                            return bad(
                                &format!("{key}.token_sha256"),
                                "must be 64 hex digits".into(),
                            );
                        }
                    }
                    _ => {
                        return bad(
                            &key,
                            "needs exactly one of password_hash and token_sha256".into(),
                        );
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
