//! This package's binaries and test executables embed libpython through fidius-ffi: give them the
//! rpath fidius-ffi computed, so they run without LD_LIBRARY_PATH.
fn main() {
    if let Some(dirs) = std::env::var_os("DEP_FIDIUS_PYTHON_RPATH") {
        for dir in std::env::split_paths(&dirs) {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
        }
    }
}
