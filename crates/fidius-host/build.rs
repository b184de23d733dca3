//! This package's binaries and test executables embed libpython through fidius-ffi: give them the
//! rpath fidius-ffi computed, so they run without LD_LIBRARY_PATH. Tests also learn that
//! interpreter's path as `FIDIUS_BUILD_PYTHON` (pip, headers, `multiprocessing` baselines).
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
