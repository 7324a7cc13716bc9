//! Nested cargo builds of WebAssembly components, shared by the build
//! scripts of `host-harness/components` (the plugin in both flavours and
//! the adapters, embedded in the harness) and `tests` (the test-only
//! components: the misbehaving fixture and the example mail server).
//! Included with `#[path]`: build scripts cannot depend on a workspace crate
//! without building it for the host first.
//!
//! Every nested build uses one target directory, `components` under the
//! workspace target directory (never the outer build's, whose lock the
//! outer cargo holds). Sharing it means the host-side part of a build
//! (proc macros such as wit-bindgen's and serde's, build scripts) is
//! compiled once for all flavours and components: `--target` keeps the
//! flavour's rustflags off host artifacts, and cargo keys the target
//! artifacts of dependencies by their rustflags, so the flavours'
//! dependencies sit side by side. The workspace's own component crates are
//! the exception: one file and one fingerprint per crate, so building the
//! other flavour recompiles the plugin crate (about 6 s with its LTO link),
//! and each build copies its components to `out/<profile>/<name>/` at once,
//! before the next build overwrites them.
//!
//! When the tests' build script and the harness's run at the same time, the
//! second nested cargo waits for the first one's lock on the directory.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The components' target.
pub const TARGET: &str = "wasm32-wasip2";

/// A 256 KiB shadow stack instead of Rust's default 1 MiB: the guest never
/// recurses deeply (serde_json limits nesting to 128), and the stack is part
/// of every instance's linear memory. Flags are separated by 0x1f as
/// `CARGO_ENCODED_RUSTFLAGS` wants.
const STACK: &str = "-Clink-arg=-zstack-size=262144";

/// One nested build: its name (its components are copied to
/// `components/out/<profile>/<name>/` under the target directory),
/// the packages with the environment variable naming each one's component,
/// and extra encoded rustflags (each starting with 0x1f).
pub struct Build {
    pub name: &'static str,
    pub packages: &'static [(&'static str, &'static str)],
    pub flags: &'static str,
}

/// The workspace root: the nearest ancestor of the calling package's
/// manifest directory that holds `wit/` and a `Cargo.lock`.
pub fn workspace_root() -> PathBuf {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    manifest_dir
        .ancestors()
        .find(|dir| dir.join("wit").is_dir() && dir.join("Cargo.lock").is_file())
        .expect("workspace root (a directory with wit/ and Cargo.lock) above the package")
        .to_path_buf()
}

/// Tells cargo to rerun the build script when any of `paths` (relative to
/// the workspace root), what every component build depends on (`wit/`,
/// `guest/config`, the workspace manifest and lock file, this file) or the
/// guest profile variable changes.
pub fn rerun_if_changed(root: &Path, paths: &[&str]) {
    const COMMON: [&str; 5] = [
        "wit",
        "guest/config",
        "Cargo.toml",
        "Cargo.lock",
        "host-harness/components/build_components.rs",
    ];
    for p in COMMON.iter().chain(paths) {
        println!("cargo:rerun-if-changed={}", root.join(p).display());
    }
    println!("cargo:rerun-if-env-changed=JMAP_WEB_PUSH_GUEST_PROFILE");
}

/// Runs each build in turn, copies its components to
/// `components/out/<profile>/<name>/` under the target directory and sets `JMAP_WEB_PUSH_<VAR>` to each copy's
/// path for the calling package's compilation.
pub fn build_all(root: &Path, builds: &[Build]) {
    let target_root = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| if p.is_absolute() { p } else { root.join(p) })
        .unwrap_or_else(|| root.join("target"));
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    ensure_target(&target_root);
    let profile = env::var("JMAP_WEB_PUSH_GUEST_PROFILE").unwrap_or_else(|_| "guest".into());
    let target_dir = target_root.join("components");
    for build in builds {
        let mut cmd = Command::new(&cargo);
        cmd.current_dir(root).args(["build", "--quiet"]);
        for (_, package) in build.packages {
            cmd.args(["-p", package]);
        }
        let status = cmd
            .args(["--lib", "--target", TARGET, "--profile", &profile])
            .arg("--target-dir")
            .arg(&target_dir)
            .env("CARGO_ENCODED_RUSTFLAGS", format!("{STACK}{}", build.flags))
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("CARGO_BUILD_TARGET")
            .env_remove("RUSTC_WORKSPACE_WRAPPER")
            .env_remove("RUSTC_WRAPPER")
            .env_remove("CARGO_LLVM_COV")
            .env_remove("CARGO_PRIMARY_PACKAGE")
            .status()
            .expect("failed to run cargo for the components");
        if !status.success() {
            panic!("building the {} components failed", build.name);
        }
        let dir_profile = if profile == "dev" {
            "debug"
        } else {
            profile.as_str()
        };
        let out_dir = target_dir.join("out").join(&profile).join(build.name);
        std::fs::create_dir_all(&out_dir).expect("create the components' directory");
        for (var, package) in build.packages {
            let file = format!("{}.wasm", package.replace('-', "_"));
            let built = target_dir.join(TARGET).join(dir_profile).join(&file);
            assert!(built.exists(), "component missing at {}", built.display());
            let copy = out_dir.join(&file);
            copy_if_changed(&built, &copy);
            println!("cargo:rustc-env=JMAP_WEB_PUSH_{var}={}", copy.display());
        }
    }
}

/// Copies `from` to `to` unless `to` already holds the same bytes, so an
/// unchanged component keeps its modification time and does not make cargo
/// recompile the crates that embed it.
fn copy_if_changed(from: &Path, to: &Path) {
    let bytes = std::fs::read(from).expect("read a built component");
    if std::fs::read(to).ok().as_deref() == Some(&bytes[..]) {
        return;
    }
    // Write beside, then rename: a reader never sees half a component. The
    // process id keeps two outer builds (say debug and release) that copy
    // at the same moment from sharing the partial file.
    let partial = to.with_extension(format!("wasm.{}.partial", std::process::id()));
    std::fs::write(&partial, &bytes).expect("write a component copy");
    std::fs::rename(&partial, to).expect("move a component copy into place");
}

/// Installs the wasm target with rustup when it is missing (a fresh machine
/// with `RUSTUP_AUTO_INSTALL=0` does not install it from
/// rust-toolchain.toml). A file lock under the target directory keeps the
/// build scripts of two packages, which cargo may run at once, from
/// running `rustup target add` side by side.
fn ensure_target(target_root: &Path) {
    let _ = std::fs::create_dir_all(target_root);
    let lock = std::fs::File::create(target_root.join(".wasm-target.lock"));
    let _guard = lock.as_ref().ok().map(|f| f.lock());
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
    let ok = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        panic!("the {TARGET} target is missing and `rustup target add {TARGET}` failed");
    }
}
