//! The CPython version, asked for by several threads at once before anything else touched
//! libpython: the way parallel plugin loads ask for it (to choose a tier) in a fresh host process.
//! Its own test binary, because only the first use in a process can race.

use std::sync::{Arc, Barrier};
use std::thread;

#[test]
fn the_first_reads_of_the_python_version_race_safely() {
    // CPython 3.13's `Py_GetVersion()` marks its buffer initialised before it formats it, so a
    // second thread asking at the same moment got an empty string.
    let threads = 8;
    let start = Arc::new(Barrier::new(threads));
    let versions: Vec<String> = (0..threads)
        .map(|_| {
            let start = Arc::clone(&start);
            thread::spawn(move || {
                start.wait();
                fidius_ffi::python_version()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|reader| reader.join().unwrap())
        .collect();
    let first = &versions[0];
    assert!(first.starts_with("3."), "{versions:?}");
    assert!(
        versions.iter().all(|version| version == first),
        "{versions:?}"
    );
}
