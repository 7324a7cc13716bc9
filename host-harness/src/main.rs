//! `jmap-web-push`: the command-line tool around the plugin.

mod demo;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use jmap_web_push_host::server;
use jmap_web_push_host::settings::Settings;

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
    Demo,
    /// Serves JMAP (Session, API with PushSubscription/*, event intake,
    /// metrics) as the configuration file says.
    Serve {
        /// The TOML configuration file (default: built-in defaults).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// VAPID key management (RFC 8292, RFC 9749).
    Vapid {
        #[command(subcommand)]
        command: VapidCommand,
    },
    /// Prints an Argon2id hash of a password (or the SHA-256 of a bearer
    /// token) for the `[[users]]` section.
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
    CheckConfig {
        /// The TOML configuration file.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum VapidCommand {
    /// Generates a new key pair and prints it (for `plugin.vapid_private_key`).
    Generate,
    /// Prints the applicationServerKey in force for this configuration
    /// (generating and storing one on first use).
    Show {
        /// The TOML configuration file.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Replaces the stored key, destroys the subscriptions of the old one
    /// (B8) and prints the new applicationServerKey.
    Rotate {
        /// The TOML configuration file.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

fn load(config: Option<PathBuf>) -> anyhow::Result<Settings> {
    Ok(Settings::load(config.as_deref(), std::env::vars())?)
}

fn plugin_for(settings: &Settings) -> anyhow::Result<jmap_web_push_host::PushPlugin> {
    let store = server::open_store(settings)?;
    server::build_plugin(settings, store, Default::default())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Demo => demo::run(),
        Command::Serve { config } => {
            let settings = load(config)?;
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(async {
                let running = server::start(settings).await?;
                println!(
                    "jmap-web-push serving on {} ({})",
                    running.addr, running.base_url
                );
                tokio::signal::ctrl_c().await?;
                eprintln!("shutting down: finishing in-flight requests");
                running.shutdown().await
            })
        }
        Command::Vapid { command } => match command {
            VapidCommand::Generate => {
                let key = jmap_web_push_guest::crypto::vapid::VapidKey::generate()?;
                println!("vapid_private_key = \"{}\"", key.to_base64url());
                println!("# applicationServerKey: {}", key.public_key_base64url());
                Ok(())
            }
            VapidCommand::Show { config } => {
                let settings = load(config)?;
                anyhow::ensure!(
                    settings.plugin.vapid_contact.is_some(),
                    "plugin.vapid_contact is not set: VAPID is off"
                );
                let info = plugin_for(&settings)?
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
            VapidCommand::Rotate { config } => {
                let settings = load(config)?;
                let key = plugin_for(&settings)?
                    .rotate_vapid_key()?
                    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
                println!("new applicationServerKey: {key}");
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
            use jmap_web_push_host::{compose, runtime::builtin};
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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
