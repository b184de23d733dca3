//! `fidius` embeds libpython (through fidius-ffi, for `fidius call`): give it the rpath fidius-ffi
//! computed, so it runs without LD_LIBRARY_PATH, and record that interpreter as
//! `FIDIUS_BUILD_PYTHON`, so `fidius pack` vendors with the same Python the host embeds.
fn main() {
    if let Some(dirs) = std::env::var_os("DEP_FIDIUS_PYTHON_RPATH") {
        for dir in std::env::split_paths(&dirs) {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
        }
    }
    if let Ok(executable) = std::env::var("DEP_FIDIUS_PYTHON_EXECUTABLE") {
        println!("cargo:rustc-env=FIDIUS_BUILD_PYTHON={executable}");
    }
}
