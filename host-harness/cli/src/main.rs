//! `jmap-web-push`: the command-line tool around the plugin.

mod admin_client;
mod demo;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use jmap_web_push::server;
use jmap_web_push::settings::{LogFormat, Settings};

/// JMAP Web Push: push notifications for JMAP clients, served by a
/// WebAssembly plugin.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the plugin end to end on this machine (a local push service, a
    /// subscription created as a client would, verification, state
    /// changes, 429 and 410 answers) and prints a step-by-step trace.
    #[command(after_help = "Example:\n  jmap-web-push demo")]
    Demo,
    /// Serves JMAP (Session, API with PushSubscription/*, event intake,
    /// metrics, admin routes) as the configuration file says.
    ///
    /// SIGHUP re-reads the configuration file (users, credentials, limits,
    /// plugin settings); SIGINT or SIGTERM stop after in-flight requests.
    #[command(
        after_help = "Examples:\n  jmap-web-push serve -c /etc/jmap-web-push/push.toml\n  jmap-web-push serve -c push.toml --log-format json\n  kill -HUP $(pidof jmap-web-push)   # reload the configuration file"
    )]
    Serve {
        /// The TOML configuration file (default: built-in defaults; then
        /// SIGHUP has nothing to reload).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Log line format on stderr (default: `server.log_format`, else
        /// text). `RUST_LOG` sets the levels, for example
        /// `RUST_LOG=info,jmap_web_push::push=warn`.
        #[arg(long, value_enum)]
        log_format: Option<LogFormat>,
    },
    /// VAPID key management (RFC 8292, RFC 9749).
    #[command(
        after_help = "Examples:\n  jmap-web-push vapid generate\n  jmap-web-push vapid show -c push.toml\n  jmap-web-push vapid rotate -c push.toml"
    )]
    Vapid {
        #[command(subcommand)]
        command: VapidCommand,
    },
    /// Prints an Argon2id hash of a password (or the SHA-256 of a bearer
    /// token) for the `[[users]]` section.
    #[command(
        after_help = "Examples:\n  jmap-web-push hash-password            # reads the password from stdin\n  jmap-web-push hash-password --token \"$TOKEN\""
    )]
    HashPassword {
        /// The password or token (read from stdin when omitted).
        secret: Option<String>,
        /// Hash a bearer token (SHA-256) instead of a password.
        #[arg(long)]
        token: bool,
    },
    /// Writes the plugin as one component for other runtimes: by default
    /// composed with the adapters so that it imports only WASI
    /// (`wasi:http`, `wasi:keyvalue@0.2.0-draft`, `wasi:cli`...).
    #[command(
        after_help = "Examples:\n  jmap-web-push compose -o plugin-on-wasi.wasm\n  jmap-web-push compose --into mail-server.wasm -o mail-server-with-push.wasm\n  jmap-web-push compose --no-adapters -o plugin.wasm"
    )]
    Compose {
        /// Where to write the component.
        #[arg(long, short)]
        out: PathBuf,
        /// The plugin build: `portable` (runs anywhere) or `wide` (needs the
        /// wide-arithmetic proposal in the runtime; about 3x faster P-256).
        #[arg(long, default_value = "portable", value_parser = ["portable", "wide"])]
        flavour: String,
        /// Plug the plugin into this component (a mail server that imports
        /// `jmap:web-push/jmap` and `event-in`) instead of writing the
        /// plugin alone.
        #[arg(long)]
        into: Option<PathBuf>,
        /// Leave out the adapters: the result imports the plugin's own
        /// `store`, `http-out` and `host` interfaces, for a host that
        /// implements them (such as this harness).
        #[arg(long)]
        no_adapters: bool,
    },
    /// Checks that a component conforms to a world of a WIT directory (its
    /// imports within the world's, its exports covering the world's), as
    /// `wasm-tools component targets` does.
    #[command(
        after_help = "Example:\n  jmap-web-push targets plugin-on-wasi.wasm --wit wit/ --world plugin-on-wasi"
    )]
    Targets {
        /// The component file.
        component: PathBuf,
        /// The WIT directory (for example `wit/` of this repository).
        #[arg(long)]
        wit: PathBuf,
        /// The world, for example `plugin-on-wasi`.
        #[arg(long)]
        world: String,
    },
    /// Checks a configuration file and prints it with every default filled in.
    #[command(
        after_help = "Example:\n  jmap-web-push check-config -c /etc/jmap-web-push/push.toml"
    )]
    CheckConfig {
        /// The TOML configuration file.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum VapidCommand {
    /// Generates a new key pair and prints it (for `plugin.vapid_private_key`).
    #[command(
        after_help = "Example:\n  jmap-web-push vapid generate >> push.toml   # then move the line under [plugin]"
    )]
    Generate,
    /// Prints the applicationServerKey in force for this configuration
    /// (generating and storing one on first use).
    ///
    /// When a server started with this configuration is running, it is
    /// asked (`GET /admin/vapid` with `server.admin_token`); otherwise the
    /// store is opened directly.
    #[command(after_help = "Example:\n  jmap-web-push vapid show -c /etc/jmap-web-push/push.toml")]
    Show {
        /// The TOML configuration file.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The running server's base URL (default: `server.listen`).
        #[arg(long)]
        server: Option<String>,
    },
    /// Replaces the generated key with a new one and prints it. Every
    /// subscription made under the old key is destroyed (its push service
    /// only accepts pushes signed with that key; clients subscribe again
    /// with the new one) and the Session state changes.
    ///
    /// When a server started with this configuration is running, it does
    /// the rotation (`POST /admin/vapid/rotate` with `server.admin_token`),
    /// so push keeps running; otherwise the store is opened directly. A
    /// key set in `plugin.vapid_private_key` cannot be rotated here: change
    /// it in the file.
    #[command(
        after_help = "Example:\n  jmap-web-push vapid rotate -c /etc/jmap-web-push/push.toml"
    )]
    Rotate {
        /// The TOML configuration file.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The running server's base URL (default: `server.listen`).
        #[arg(long)]
        server: Option<String>,
    },
}

fn load(config: Option<PathBuf>) -> anyhow::Result<Settings> {
    Ok(Settings::load(config.as_deref(), std::env::vars())?)
}

/// Filters for `serve` when `RUST_LOG` is not set: this project's events
/// (push outcomes, admin actions, the plugin's log lines) from `info`,
/// everything else from `warn`.
const SERVE_LOG_FILTER: &str = "warn,jmap_web_push=info,jmap_web_push_host=info";

/// Installs the stderr logger: `RUST_LOG` when set, else `default_filter`.
fn init_logging(format: LogFormat, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    // Colours only for a terminal: not in files, journald or pipes.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
}

/// Runs `serve` until SIGINT or SIGTERM; SIGHUP reloads. The handlers are
/// installed before the server starts, so a SIGHUP during start-up (the
/// store opening, the plugin compiling) does not kill the process; it
/// reloads once the server runs.
#[cfg(unix)]
async fn serve(settings: Settings, config: Option<PathBuf>) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangup = signal(SignalKind::hangup())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let running = server::start_with_file(settings, config).await?;
    println!(
        "jmap-web-push serving on {} ({})",
        running.addr, running.base_url
    );
    loop {
        tokio::select! {
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
            _ = hangup.recv() => {
                // `reload` logs what it did, or why it did not.
                let _ = running.reload().await;
            }
        }
    }
    tracing::info!("shutting down: finishing in-flight requests");
    running.shutdown().await
}

/// Runs `serve` until Ctrl-C.
#[cfg(not(unix))]
async fn serve(settings: Settings, config: Option<PathBuf>) -> anyhow::Result<()> {
    let running = server::start_with_file(settings, config).await?;
    println!(
        "jmap-web-push serving on {} ({})",
        running.addr, running.base_url
    );
    tokio::signal::ctrl_c().await?;
    tracing::info!("shutting down: finishing in-flight requests");
    running.shutdown().await
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Demo => demo::run(),
        Command::Serve { config, log_format } => {
            let settings = load(config.clone())?;
            init_logging(
                log_format.unwrap_or(settings.server.log_format),
                SERVE_LOG_FILTER,
            );
            tokio::runtime::Runtime::new()?.block_on(serve(settings, config))
        }
        Command::Vapid { command } => match command {
            VapidCommand::Generate => {
                let key = jmap_web_push_guest::crypto::vapid::VapidKey::generate()?;
                println!("vapid_private_key = \"{}\"", key.to_base64url());
                println!("# applicationServerKey: {}", key.public_key_base64url());
                Ok(())
            }
            VapidCommand::Show { config, server } => {
                let settings = load(config)?;
                anyhow::ensure!(
                    settings.plugin.vapid_contact.is_some(),
                    "plugin.vapid_contact is not set: VAPID is off"
                );
                if let Some(answer) =
                    admin_client::ask(&settings, server.as_deref(), admin_client::Ask::ShowVapid)?
                {
                    println!(
                        "{}",
                        serde_json::json!({"applicationServerKey": answer.body["applicationServerKey"]})
                    );
                    return Ok(());
                }
                let info = admin_client::plugin_for(&settings)?
                    .session()?
                    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
                let cap = info
                    .capabilities
                    .iter()
                    .find(|c| c.uri == "urn:ietf:params:jmap:webpush-vapid")
                    .context("no VAPID capability")?;
                println!("{}", cap.value);
                Ok(())
            }
            VapidCommand::Rotate { config, server } => {
                let settings = load(config)?;
                if let Some(answer) =
                    admin_client::ask(&settings, server.as_deref(), admin_client::Ask::RotateVapid)?
                {
                    println!(
                        "new applicationServerKey: {}",
                        answer.body["applicationServerKey"].as_str().unwrap_or("?")
                    );
                    println!(
                        "destroyed {} subscriptions of the old key",
                        answer.body["destroyed"]
                    );
                    println!("(rotated by the server running at {})", answer.server);
                    return Ok(());
                }
                let rotation = admin_client::plugin_for(&settings)?
                    .rotate_vapid_key()?
                    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
                println!(
                    "new applicationServerKey: {}",
                    rotation.application_server_key
                );
                println!(
                    "destroyed {} subscriptions of the old key",
                    rotation.destroyed
                );
                Ok(())
            }
        },
        Command::HashPassword { secret, token } => {
            let secret = match secret {
                Some(s) => s,
                None => {
                    let mut s = String::new();
                    std::io::stdin().read_line(&mut s)?;
                    s.trim_end_matches(['\r', '\n']).to_string()
                }
            };
            if token {
                println!("token_sha256 = \"{}\"", server::auth::token_sha256(&secret));
            } else {
                println!(
                    "password_hash = \"{}\"",
                    server::auth::hash_password(&secret)?
                );
            }
            Ok(())
        }
        Command::Compose {
            out,
            flavour,
            into,
            no_adapters,
        } => {
            use jmap_web_push_host::{compose, sandbox::builtin};
            let plugin = if flavour == "wide" {
                builtin::WIDE
            } else {
                builtin::PORTABLE
            };
            let bytes = match (into, no_adapters) {
                (None, true) => plugin.to_vec(),
                (None, false) => compose::plugin_on_wasi(plugin)?,
                (Some(socket), no_adapters) => {
                    let socket = std::fs::read(&socket)
                        .with_context(|| format!("reading {}", socket.display()))?;
                    if no_adapters {
                        compose::plug(("socket", &socket), &[("jmap:web-push-plugin", plugin)])?
                    } else {
                        compose::embed_on_wasi(&socket, plugin)?
                    }
                }
            };
            std::fs::write(&out, &bytes).with_context(|| format!("writing {}", out.display()))?;
            println!("wrote {} ({} octets); imports:", out.display(), bytes.len());
            for name in compose::import_names(&bytes)? {
                println!("  {name}");
            }
            Ok(())
        }
        Command::Targets {
            component,
            wit,
            world,
        } => {
            let bytes = std::fs::read(&component)
                .with_context(|| format!("reading {}", component.display()))?;
            jmap_web_push_host::compose::check_target(&bytes, &wit, &world)?;
            println!("{} conforms to world `{world}`", component.display());
            Ok(())
        }
        Command::CheckConfig { config } => {
            let settings = load(config)?;
            print!("{}", toml::to_string_pretty(&settings)?);
            Ok(())
        }
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve { .. }) {
        init_logging(LogFormat::Text, "warn");
    }
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
