//! Builds the rule plugins in `plugins/` (a cargo workspace of its own) for `wasm32-wasip2` and
//! copies the components into `OUT_DIR`, where `src/defaults.rs` embeds the default ones. Runs
//! with nothing done by hand: the target is added with rustup when it is missing, and the
//! flags, wrappers and target settings of the outer build (RUSTFLAGS, clippy's wrapper, ...)
//! are not passed on. The inner build has its own target directory beside the outer one, so
//! it never waits on the outer build's lock and is shared by every profile.
//!
//! `CRM_PLUGINS_PREBUILT=DIR` skips the build and takes the `.wasm` files from DIR instead.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The components built, by crate file name; the first two are embedded as defaults.
const COMPONENTS: &[&str] =
    &["crm_plugin_matcher", "crm_plugin_pricing", "crm_plugin_template", "crm_plugin_hostile", "crm_plugin_hostile_io"];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let root = manifest_dir.join("../..").canonicalize().expect("workspace root");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    println!("cargo:rerun-if-env-changed=CRM_PLUGINS_PREBUILT");
    let watched = ["wit", "core/domain/src", "core/domain/Cargo.toml", "plugins/Cargo.toml", "plugins/Cargo.lock"];
    let crates = COMPONENTS.iter().map(|c| format!("plugins/{}", c.trim_start_matches("crm_plugin_").replace('_', "-")));
    for watched in watched.into_iter().map(String::from).chain(crates) {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }

    let built = match std::env::var_os("CRM_PLUGINS_PREBUILT") {
        Some(dir) => PathBuf::from(dir),
        None => build(&root, &out_dir),
    };
    for name in COMPONENTS {
        let from = built.join(format!("{name}.wasm"));
        let to = out_dir.join(format!("{name}.wasm"));
        std::fs::copy(&from, &to).unwrap_or_else(|e| panic!("cannot copy {}: {e}", from.display()));
    }
}

/// Builds the plugins workspace and returns the directory holding the components.
fn build(root: &Path, out_dir: &Path) -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    ensure_target();
    // Beside the outer target directory (`<target>/<profile>/build/<pkg>/out` → `<target>`),
    // so that debug, release and clippy builds share one inner build.
    let target_dir = out_dir.ancestors().nth(4).map(|t| t.join("wasm-plugins")).unwrap_or_else(|| out_dir.join("wasm-plugins"));
    let mut command = Command::new(cargo);
    command
        .current_dir(root.join("plugins"))
        .args(["build", "--release", "--locked", "--target", "wasm32-wasip2", "--target-dir"])
        .arg(&target_dir);
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_RUSTC_WRAPPER",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET_DIR",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_MANIFEST_DIR",
        "CARGO_MANIFEST_PATH",
        "RUSTDOCFLAGS",
        "CARGO_ENCODED_RUSTDOCFLAGS",
        "CARGO_PROFILE_RELEASE_DEBUG",
        "CARGO_LLVM_COV",
        "LLVM_PROFILE_FILE",
    ] {
        command.env_remove(var);
    }
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CARGO_TARGET_") && key.ends_with("_RUSTFLAGS") || key.starts_with("CARGO_CFG_") {
            command.env_remove(key.as_ref());
        }
    }
    let status = command.status().expect("cannot run cargo to build the plugins");
    assert!(status.success(), "building the rule plugins for wasm32-wasip2 failed (see the output above)");
    target_dir.join("wasm32-wasip2").join("release")
}

/// Adds the `wasm32-wasip2` target with rustup when the toolchain lacks it.
fn ensure_target() {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let sysroot = Command::new(&rustc).args(["--print", "sysroot"]).output().ok().filter(|o| o.status.success());
    let installed = sysroot
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()).join("lib/rustlib/wasm32-wasip2").is_dir())
        .unwrap_or(false);
    if !installed {
        println!("cargo:warning=adding the wasm32-wasip2 target with rustup to build the rule plugins");
        let status = Command::new("rustup").args(["target", "add", "wasm32-wasip2"]).status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "the wasm32-wasip2 target is missing and `rustup target add wasm32-wasip2` failed; install it by hand"
        );
    }
}
