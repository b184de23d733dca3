//! This package's test executables (and fidius-demo's binary, which reuses this script) embed
//! libpython through fidius-ffi: record its folder as rpath so they run without LD_LIBRARY_PATH,
//! and tell tests that interpreter's path as `FIDIUS_BUILD_PYTHON` (pip, headers, `multiprocessing`
//! baselines). The one implementation is `fidius_build::link_python`, which host crates call too.
fn main() {
    fidius_build::link_python();
    // `ci/bench` alone passes `--cfg fidius_bench_unproven_cache` (see host/cache.rs): a cfg, not a
    // Cargo feature, so no dependent can switch slot proofs off through feature unification.
    println!("cargo::rustc-check-cfg=cfg(fidius_bench_unproven_cache)");
}
