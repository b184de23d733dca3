//! Binaries and test executables embed libpython: record its folder as rpath so they run without
//! LD_LIBRARY_PATH (also for macOS framework builds), and hand the same folders to dependent crates
//! (`links = "fidius_python"` makes them `DEP_FIDIUS_PYTHON_RPATH` there), along with the
//! interpreter's path (`DEP_FIDIUS_PYTHON_EXECUTABLE`).
fn main() {
    // `Py_3_12` and friends, so lib.rs can refuse older interpreters with a clear message.
    pyo3_build_config::print_expected_cfgs();
    pyo3_build_config::use_pyo3_cfgs();
    pyo3_build_config::add_libpython_rpath_link_args();
    pyo3_build_config::add_python_framework_link_args();
    let config = pyo3_build_config::get();
    let rpath: Vec<String> = config
        .lib_dir()
        .into_iter()
        .chain(config.python_framework_prefix())
        .map(str::to_owned)
        .collect();
    println!(
        "cargo:rpath={}",
        std::env::join_paths(&rpath)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default()
    );
    if let Some(executable) = config.executable() {
        println!("cargo:executable={executable}");
        // The embedded interpreter's own executable: what `sys.executable` says (runtime.rs).
        println!("cargo:rustc-env=FIDIUS_EMBEDDED_PYTHON={executable}");
    }
    // Lets a test prove the libpython loaded at run time is the one we linked against.
    if let Some(lib_dir) = config.lib_dir() {
        println!("cargo:rustc-env=FIDIUS_LINKED_LIBPYTHON_DIR={lib_dir}");
    }
}
