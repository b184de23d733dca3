//! The test executable finds libpython through its rpath, not through LD_LIBRARY_PATH.

#[cfg(target_os = "linux")]
#[test]
fn libpython_is_loaded_from_the_interpreter_we_linked_against() {
    let expected_dir = std::path::Path::new(env!("FIDIUS_LINKED_LIBPYTHON_DIR"));
    fidius_ffi::ensure_initialized().unwrap();
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let loaded: Vec<&str> = maps
        .lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .filter(|path| path.contains("libpython3"))
        .collect();
    assert!(!loaded.is_empty(), "no libpython mapped into the process");
    for path in loaded {
        let dir = std::path::Path::new(path).parent().unwrap();
        assert_eq!(
            dir.canonicalize().unwrap(),
            expected_dir.canonicalize().unwrap(),
            "libpython loaded from {path}"
        );
    }
}
