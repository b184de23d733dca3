//! The core promise: same-named libraries in different versions, side by side, under load.

use std::collections::HashMap;
use std::thread;

use fidius_host::PluginCall;
use serde_json::{json, Value};

use crate::support::{self, TRANSFORM, WHOAMI};

#[test]
fn two_versions_of_one_library_stay_apart_under_concurrent_load() {
    let root = tempfile::tempdir().unwrap();
    let old = support::start_tester(root.path(), "old", "1.0", 2, 1);
    let new = support::start_tester(root.path(), "new", "2.0", 3, 1);
    const THREADS: i64 = 8;
    const CALLS: i64 = 1_000;
    thread::scope(|scope| {
        for thread_index in 0..THREADS {
            let (old, new) = (&old, &new);
            scope.spawn(move || {
                for call in 0..CALLS {
                    let value = thread_index * CALLS + call;
                    let (handle, version, factor) = if call % 2 == 0 {
                        (old, "1.0", 2)
                    } else {
                        (new, "2.0", 3)
                    };
                    let out = handle
                        .call_typed_json(TRANSFORM, json!([value]).to_string().as_bytes())
                        .unwrap();
                    let out: Value = serde_json::from_slice(&out).unwrap();
                    assert_eq!(out["version"], version);
                    assert_eq!(out["result"], value * factor);
                }
            });
        }
    });
    // Module state lives per interpreter: each copy counted only its own plugin's calls.
    for (handle, version) in [(&old, "1.0"), (&new, "2.0")] {
        let who: Value =
            serde_json::from_slice(&handle.call_typed_json(WHOAMI, b"[]").unwrap()).unwrap();
        assert_eq!(who[0], version);
        assert_eq!(who[2], THREADS * CALLS / 2);
    }
}

#[test]
fn a_pool_spreads_calls_and_loses_none() {
    let root = tempfile::tempdir().unwrap();
    let pool = support::start_tester(root.path(), "pooled", "1.0", 1, 4);
    assert_eq!(pool.instances(), 4);
    const THREADS: usize = 16;
    const CALLS: usize = 250;
    let observed: Vec<Vec<(u64, i64)>> = thread::scope(|scope| {
        let workers: Vec<_> = (0..THREADS)
            .map(|_| {
                let pool = &pool;
                scope.spawn(move || {
                    (0..CALLS)
                        .map(|_| {
                            let out = pool.call_typed_json(TRANSFORM, b"[1]").unwrap();
                            let out: Value = serde_json::from_slice(&out).unwrap();
                            (
                                out["instance"].as_u64().unwrap(),
                                out["calls"].as_i64().unwrap(),
                            )
                        })
                        .collect()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    // Each instance numbers the calls it serves 1, 2, 3, ...: every number exactly once means no
    // call was lost or answered twice, and the counts add up to the total.
    let mut served: HashMap<u64, Vec<i64>> = HashMap::new();
    for (instance, count) in observed.into_iter().flatten() {
        served.entry(instance).or_default().push(count);
    }
    assert!(served.len() > 1, "calls were not spread over the pool");
    assert!(
        served.len() <= 4,
        "more instances answered than were started"
    );
    let mut total = 0;
    for counts in served.values_mut() {
        counts.sort_unstable();
        let expected: Vec<i64> = (1..=counts.len() as i64).collect();
        assert_eq!(*counts, expected, "an instance lost or repeated a call");
        total += counts.len();
    }
    assert_eq!(total, THREADS * CALLS);
}

#[test]
fn a_bare_handle_reloads_from_its_directory() {
    let root = tempfile::tempdir().unwrap();
    let dir = support::tester_plugin(root.path(), "bare", "1.0", 2);
    let handle = support::start(&dir, "bare", 2);
    let version = |handle: &fidius_host::PythonPluginHandle| -> Value {
        let out = handle.call_typed_json(TRANSFORM, b"[5]").unwrap();
        serde_json::from_slice(&out).unwrap()
    };
    assert_eq!(version(&handle)["result"], 10);
    std::fs::write(
        dir.join("vendor/conflictlib/__init__.py"),
        support::conflictlib("2.0", 7),
    )
    .unwrap();
    // Nothing changes until the reload: the code was imported once per instance.
    assert_eq!(version(&handle)["version"], "1.0");
    handle.reload().unwrap();
    for _ in 0..20 {
        let out = version(&handle);
        assert_eq!(
            (out["version"].as_str(), out["result"].as_i64()),
            (Some("2.0"), Some(35))
        );
    }
    assert_eq!(handle.instances(), 2);
}

#[test]
fn a_reload_ends_every_idle_instance_of_the_old_version() {
    let root = tempfile::tempdir().unwrap();
    let dir = support::tester_plugin(root.path(), "idle", "1.0", 2);
    let handle = support::start(&dir, "idle", 3);
    for _ in 0..3 {
        handle.reload().unwrap();
    }
    // Nobody calls: the old instances are parked, and each must still notice it was superseded
    // (a wake-up request on the shared queue could be taken by a new instance instead).
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while handle.stats().instances != 3 && std::time::Instant::now() < give_up {
        thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(
        handle.stats().instances,
        3,
        "superseded instances still running"
    );
}
