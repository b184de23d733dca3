//! Memory stays bounded: many calls, and many load/unload cycles (one test binary, run alone, so
//! no other test's allocations blur the numbers).
#![cfg(target_os = "linux")]

mod support;

use fidius_host::PluginCall;

use support::{rss_bytes, ECHO, TRANSFORM};

const MIB: u64 = 1 << 20;

/// What one load/unload cycle may keep. CPython 3.13 frees an ended interpreter's object arenas only
/// if not a single block in them leaked, and CPython itself always leaks some, so each cycle keeps
/// roughly the interpreter's whole heap: measured 1.3 MiB for a bare interpreter and 1.6 MiB for a
/// cycle of this test's plugin (2 cores, CPython 3.13.5, debug build). The bound is that measurement
/// plus about 50%, for noise from allocator fragmentation.
const LEAK_PER_CYCLE_BOUND: u64 = 5 * MIB / 2;

#[test]
fn calls_leave_rss_flat_and_load_unload_cycles_stay_bounded() {
    let root = tempfile::tempdir().unwrap();
    let dir = support::tester_plugin(root.path(), "steady", "1.0", 1);

    let handle = support::start(&dir, "steady", 1);
    for _ in 0..5_000 {
        handle.call_raw(ECHO, b"sixteen bytes!!!").unwrap();
        handle.call_typed_json(TRANSFORM, b"[7]").unwrap();
    }
    let before = rss_bytes();
    for _ in 0..50_000 {
        assert_eq!(
            handle.call_raw(ECHO, b"sixteen bytes!!!").unwrap(),
            b"sixteen bytes!!!"
        );
        handle.call_typed_json(TRANSFORM, b"[7]").unwrap();
    }
    let after = rss_bytes();
    eprintln!(
        "100,000 calls: RSS {} -> {} KiB",
        before / 1024,
        after / 1024
    );
    assert!(
        after.saturating_sub(before) < 4 * MIB,
        "RSS grew from {before} to {after} bytes over 100,000 calls"
    );
    drop(handle);

    let cycle = || {
        let handle = support::start(&dir, "cycled", 1);
        handle.call_typed_json(TRANSFORM, b"[1]").unwrap();
    };
    for _ in 0..5 {
        cycle();
    }
    let warm = rss_bytes();
    for _ in 0..45 {
        cycle();
    }
    let end = rss_bytes();
    let per_cycle = end.saturating_sub(warm) / 45;
    eprintln!(
        "load/unload: RSS {} -> {} KiB, {} KiB per cycle",
        warm / 1024,
        end / 1024,
        per_cycle / 1024
    );
    assert!(
        per_cycle <= LEAK_PER_CYCLE_BOUND,
        "each load/unload cycle kept {per_cycle} bytes"
    );

    let survivor = support::start(&dir, "survivor", 2);
    let out = survivor.call_typed_json(TRANSFORM, b"[21]").unwrap();
    assert!(String::from_utf8(out).unwrap().contains("\"result\":21"));
}
