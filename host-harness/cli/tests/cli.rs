//! The `jmap-web-push` binary: key management, configuration checks,
//! `--help` on every subcommand, and operating a running server
//! ([`operating`]).

#[path = "cli/crash.rs"]
mod crash;
#[path = "cli/operating.rs"]
mod operating;
#[path = "cli/several_hosts.rs"]
mod several_hosts;
#[path = "cli/support.rs"]
mod support;

use std::path::PathBuf;
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_jmap-web-push"))
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("binary runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn temp_config(body: &str) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!(
        "jwp-cli-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("push.toml");
    let config = format!(
        "[store]\nkind = \"embedded\"\npath = \"{}\"\n[plugin]\nvapid_contact = \"mailto:ops@example.com\"\n{body}",
        dir.join("store.redb").display()
    );
    std::fs::write(&file, config).unwrap();
    (dir, file)
}

#[test]
fn every_subcommand_has_help() {
    for args in [
        vec!["--help"],
        vec!["demo", "--help"],
        vec!["serve", "--help"],
        vec!["vapid", "--help"],
        vec!["vapid", "generate", "--help"],
        vec!["vapid", "show", "--help"],
        vec!["vapid", "rotate", "--help"],
        vec!["hash-password", "--help"],
        vec!["check-config", "--help"],
        vec!["compose", "--help"],
        vec!["targets", "--help"],
    ] {
        let o = run(&args);
        assert!(o.status.success(), "{args:?}: {}", text(&o));
        let help = text(&o);
        assert!(help.contains("Usage:"), "{args:?}");
        if args.len() > 1 {
            assert!(help.contains("Example"), "{args:?} has no example:\n{help}");
        }
        // Operators do not know the project's internal behaviour codes.
        let internal = help
            .match_indices("(B")
            .any(|(i, _)| help[i + 2..].starts_with(|c: char| c.is_ascii_digit()));
        assert!(!internal, "{args:?} names an internal spec code:\n{help}");
    }
}

#[test]
fn vapid_generate_show_and_rotate() {
    let o = run(&["vapid", "generate"]);
    assert!(o.status.success());
    let out = text(&o);
    assert!(out.starts_with("vapid_private_key = \""), "{out}");

    let (dir, file) = temp_config("");
    let file = file.to_str().unwrap();
    let show = |f: &str| -> String {
        let o = run(&["vapid", "show", "-c", f]);
        assert!(o.status.success(), "{}", text(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v["applicationServerKey"].as_str().unwrap().to_string()
    };
    let first = show(file);
    assert_eq!(first.len(), 87, "65 octets in base64url");
    assert_eq!(show(file), first, "the generated key is kept in the store");
    let o = run(&["vapid", "rotate", "-c", file]);
    assert!(o.status.success(), "{}", text(&o));
    let rotated = text(&o);
    let second = show(file);
    assert_ne!(second, first);
    assert!(rotated.contains(&second), "{rotated}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_configured_key_cannot_be_rotated_and_bad_keys_are_named() {
    let (dir, file) = temp_config("vapid_private_key = \"not a key\"\n");
    let o = run(&["check-config", "-c", file.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("plugin.vapid_private_key"),
        "{}",
        text(&o)
    );
    let _ = std::fs::remove_dir_all(dir);

    let key = text(&run(&["vapid", "generate"]));
    let key = key.lines().next().unwrap().to_string();
    let (dir, file) = temp_config(&format!("{key}\n"));
    let o = run(&["vapid", "rotate", "-c", file.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(text(&o).contains("configuration"), "{}", text(&o));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn check_config_fills_defaults_and_honours_the_environment() {
    let (dir, file) = temp_config("");
    let o = bin()
        .args(["check-config", "-c", file.to_str().unwrap()])
        .env("JMAP_WEB_PUSH__PLUGIN__MAX_SUBSCRIPTIONS_PER_OWNER", "9")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("max_subscriptions_per_owner = 9"), "{out}");
    assert!(out.contains("push_ttl_secs = 86400"), "{out}");
    let o = bin()
        .args(["check-config", "-c", file.to_str().unwrap()])
        .env("JMAP_WEB_PUSH__SERVER__LISTEN", "not-an-address")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(text(&o).contains("server.listen"), "{}", text(&o));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn compose_writes_a_wasi_only_component_that_targets_its_world() {
    let dir = std::env::temp_dir().join(format!("jwp-compose-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("plugin-on-wasi.wasm");
    let o = run(&["compose", "-o", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let listing = text(&o);
    assert!(
        listing.contains("wasi:keyvalue/store@0.2.0-draft"),
        "{listing}"
    );
    assert!(!listing.contains("jmap:web-push/store"), "{listing}");
    let wit = concat!(env!("CARGO_MANIFEST_DIR"), "/../../wit");
    let o = run(&[
        "targets",
        out.to_str().unwrap(),
        "--wit",
        wit,
        "--world",
        "plugin-on-wasi",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("conforms"));
    // The composed plugin is not a bare plugin: it does not import `store`.
    let bare = dir.join("plugin.wasm");
    let o = run(&["compose", "--no-adapters", "-o", bare.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("jmap:web-push/store@0.2.0"));
    let o = run(&[
        "targets",
        bare.to_str().unwrap(),
        "--wit",
        wit,
        "--world",
        "plugin-on-wasi",
    ]);
    assert!(
        !o.status.success(),
        "a bare plugin does not target plugin-on-wasi"
    );
    assert!(text(&o).contains("does not conform"), "{}", text(&o));
    let _ = std::fs::remove_dir_all(&dir);
}
