//! The Rust cdylib plugin the tests load: a real crate (`plugin.rs` + `greeter.rs`), written to the
//! test target's temporary folder and built once per test binary with `cargo build`, depending on
//! this checkout's `fidius` facade by path.
#![allow(
    dead_code,
    reason = "the tests use the debug build, ci/bench the release build"
)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const PLUGIN_SOURCE: &str = include_str!("plugin.rs");
const INTERFACE_SOURCE: &str = include_str!("greeter.rs");

/// The built `librust_greeter.so` (shared by every test of the binary; built on first use).
pub fn library() -> &'static Path {
    static LIBRARY: OnceLock<PathBuf> = OnceLock::new();
    LIBRARY.get_or_init(|| build(false))
}

/// The same library built with `--release` (for `ci/bench`).
pub fn release_library() -> &'static Path {
    static LIBRARY: OnceLock<PathBuf> = OnceLock::new();
    LIBRARY.get_or_init(|| build(true))
}

fn write_if_changed(path: &Path, contents: &str) {
    if std::fs::read_to_string(path).ok().as_deref() != Some(contents) {
        std::fs::create_dir_all(path.parent().expect("has a parent")).expect("create dir");
        std::fs::write(path, contents).expect("write crate file");
    }
}

fn build(release: bool) -> PathBuf {
    let checkout = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let facade = checkout.join("crates/fidius");
    // Persistent between runs (the test target's folder), so a rebuild is incremental.
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("rust-greeter");
    let manifest = format!(
        "[package]\nname = \"rust_greeter\"\nversion = \"0.4.0\"\nedition = \"2021\"\n\n\
         [lib]\ncrate-type = [\"cdylib\"]\n\n[dependencies]\nfidius = {{ path = {:?} }}\n\
         serde = {{ version = \"1\", features = [\"derive\"] }}\n\n[workspace]\n",
        facade.display().to_string()
    );
    write_if_changed(&root.join("Cargo.toml"), &manifest);
    write_if_changed(&root.join("src/lib.rs"), PLUGIN_SOURCE);
    write_if_changed(&root.join("src/greeter.rs"), INTERFACE_SOURCE);
    // The checkout's lock pins the same dependency versions (and needs no registry update).
    if !root.join("Cargo.lock").exists() {
        std::fs::copy(checkout.join("Cargo.lock"), root.join("Cargo.lock")).expect("copy lock");
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.args(["build", "--quiet"]);
    if release {
        command.arg("--release");
    }
    let output = command
        .arg("--manifest-path")
        .arg(root.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", root.join("target"))
        .output()
        .expect("run cargo build");
    assert!(
        output.status.success(),
        "cargo build of the plugin crate failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let profile = if release { "release" } else { "debug" };
    root.join("target").join(profile).join("librust_greeter.so")
}

/// `fidius python-stub`-style Python implementation of the same `Greeter`.
pub fn python_greeter(hash: u64) -> String {
    format!(
        r#"from fidius import method, PluginError

__interface__ = "Greeter"
__interface_version__ = 1
__interface_hash__ = {hash:#x}

@method
def greet(name):
    return f"Hello, {{name}}!"

@method
def add(a, b):
    return a + b

@method
def norm(point):
    if point["x"] < 0:
        raise PluginError("NEGATIVE", "x must not be negative")
    return point["x"] + abs(point["y"])

@method
def echo(data):
    return data

@method
def boom(message):
    raise RuntimeError(message)

@method
def farewell(name):
    return f"Goodbye, {{name}}."
"#
    )
}
