//! Builds the guest component (both flavours) with a nested cargo
//! invocation, so a plain `cargo build` / `cargo test` at the workspace root
//! needs no manual step.
//!
//! - `portable`: plain wasm32-wasip2, loads in any component runtime.
//! - `wide`: compiled with `-C target-feature=+wide-arithmetic`, ~3x faster
//!   P-256; needs an engine with `Config::wasm_wide_arithmetic(true)`.
//!
//! Each flavour has its own target directory under the workspace target
//! directory (`guest-portable`, `guest-wide`) so the outer build's lock is
//! never contended and the builds stay incremental.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";

/// A 256 KiB shadow stack instead of Rust's default 1 MiB: the guest never
/// recurses deeply (serde_json limits nesting to 128), and the stack is part
/// of every instance's linear memory. Flags are separated by 0x1f as
/// `CARGO_ENCODED_RUSTFLAGS` wants.
/// One nested build: flavour (target directory name), the packages with
/// the environment variable naming each one's component, and extra flags.
type Build = (
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static str,
);

const STACK: &str = "-Clink-arg=-zstack-size=262144";

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let root = manifest_dir.parent().expect("workspace root").to_path_buf();
    for p in [
        "guest/src",
        "guest/Cargo.toml",
        "guest/crypto",
        "guest/adapters",
        "tests/consumer/src",
        "tests/consumer/Cargo.toml",
        "wit",
        "Cargo.toml",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(p).display());
    }
    println!("cargo:rerun-if-env-changed=JMAP_WEB_PUSH_GUEST_PROFILE");

    let target_root = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| if p.is_absolute() { p } else { root.join(p) })
        .unwrap_or_else(|| root.join("target"));
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    ensure_target(&cargo);

    let profile = env::var("JMAP_WEB_PUSH_GUEST_PROFILE").unwrap_or_else(|_| "guest".into());
    // (flavour, packages, extra flags): each flavour is one nested cargo
    // invocation with its own target directory.
    let builds: [Build; 3] = [
        (
            "portable",
            &[
                ("GUEST_PORTABLE", "jmap-web-push-guest"),
                // Adapter components for composition (wit/adapters.wit) and
                // the example mail-server component of the composition tests.
                ("ADAPTER_STORE_KV", "jmap-web-push-adapter-store-kv"),
                ("ADAPTER_HTTP_OUT", "jmap-web-push-adapter-http-out"),
                ("ADAPTER_HOST_ENV", "jmap-web-push-adapter-host-env"),
                ("CONSUMER", "jmap-web-push-consumer"),
            ],
            "",
        ),
        (
            "wide",
            &[("GUEST_WIDE", "jmap-web-push-guest")],
            "\x1f-Ctarget-feature=+wide-arithmetic",
        ),
        // The sandbox tests' misbehaving component.
        (
            "fixture",
            &[("GUEST_FIXTURE", "jmap-web-push-fixture-misbehave")],
            "",
        ),
    ];
    for (flavour, packages, flags) in builds {
        let target_dir = target_root.join(format!("guest-{flavour}"));
        let mut cmd = Command::new(&cargo);
        cmd.current_dir(&root).args(["build", "--quiet"]);
        for (_, package) in packages {
            cmd.args(["-p", package]);
        }
        let status = cmd
            .args(["--lib", "--target", TARGET, "--profile", &profile])
            .arg("--target-dir")
            .arg(&target_dir)
            .env("CARGO_ENCODED_RUSTFLAGS", format!("{STACK}{flags}"))
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("CARGO_BUILD_TARGET")
            .env_remove("RUSTC_WORKSPACE_WRAPPER")
            .env_remove("RUSTC_WRAPPER")
            .env_remove("CARGO_LLVM_COV")
            .env_remove("CARGO_PRIMARY_PACKAGE")
            .status()
            .expect("failed to run cargo for the guest");
        if !status.success() {
            panic!("building the guest components ({flavour}) failed");
        }
        let dir_profile = if profile == "dev" {
            "debug"
        } else {
            profile.as_str()
        };
        for (var, package) in packages {
            let wasm = target_dir
                .join(TARGET)
                .join(dir_profile)
                .join(format!("{}.wasm", package.replace('-', "_")));
            assert!(wasm.exists(), "component missing at {}", wasm.display());
            println!("cargo:rustc-env=JMAP_WEB_PUSH_{var}={}", wasm.display());
        }
    }
}

/// Installs the wasm target with rustup when it is missing (a fresh machine
/// with `RUSTUP_AUTO_INSTALL=0` does not install it from
/// rust-toolchain.toml).
fn ensure_target(cargo: &str) {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if let Some(sysroot) = sysroot {
        if Path::new(&sysroot)
            .join("lib/rustlib")
            .join(TARGET)
            .exists()
        {
            return;
        }
    }
    println!("cargo:warning=installing the {TARGET} target with rustup");
    let _ = cargo;
    let ok = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        panic!("the {TARGET} target is missing and `rustup target add {TARGET}` failed");
    }
}
