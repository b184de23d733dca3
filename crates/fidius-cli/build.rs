//! Records the Python interpreter this build was configured against as `FIDIUS_BUILD_PYTHON`,
//! so `fidius pack` vendors with the same Python the host embeds unless told otherwise.
//!
//! `pyo3_build_config::get()` only works in crates that depend on `pyo3`/`pyo3-ffi`, and
//! fidius-cli must not link libpython, so this uses the resolver that pyo3-ffi's own build
//! script runs: it honours `PYO3_PYTHON`, `PYO3_CONFIG_FILE`, a virtualenv, then `python3`.
//! That module is doc-hidden and may change between PyO3 releases; the workspace pins 0.30.
use pyo3_build_config::pyo3_build_script_impl::{resolve_build_config, target_triple_from_env};

fn main() {
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
    println!("cargo:rerun-if-env-changed=PYO3_CONFIG_FILE");
    match resolve_build_config(&target_triple_from_env()) {
        Ok(config) => match config.interpreter_config.executable() {
            Some(executable) => println!("cargo:rustc-env=FIDIUS_BUILD_PYTHON={executable}"),
            None => println!(
                "cargo:warning=the PyO3 configuration names no Python executable; `fidius pack` will need --python or FIDIUS_PYTHON"
            ),
        },
        Err(error) => println!(
            "cargo:warning=no Python interpreter found at build time ({error}); `fidius pack` will need --python or FIDIUS_PYTHON"
        ),
    }
}
