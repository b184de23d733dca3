//! Spare interpreters: with a host asking for spares, an instance start (a load, a reload) takes a
//! ready one instead of creating an interpreter, the pool refills in the background, and it never
//! holds more than asked. (One test: the pool is process-wide.)

mod support;

use std::time::{Duration, Instant};

use fidius_host::{spare_interpreter_stats, PluginCall, PluginHost, SpareInterpreterStats};
use support::TRANSFORM;

fn wait_for(what: &str, done: impl Fn(&SpareInterpreterStats) -> bool) -> SpareInterpreterStats {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let stats = spare_interpreter_stats();
        assert!(stats.ready <= stats.target, "over its bound: {stats:?}");
        if done(&stats) {
            return stats;
        }
        assert!(Instant::now() < until, "{what}: {stats:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The OS names of this process's threads.
fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim_end().to_owned())
        .collect()
}

#[test]
fn a_load_takes_a_ready_spare_and_the_pool_refills_to_its_bound() {
    assert_eq!(
        spare_interpreter_stats().target,
        0,
        "no spares unless a host asks"
    );
    let _host = PluginHost::builder().spare_interpreters(2).build().unwrap();
    wait_for("two spares made", |stats| {
        stats.target == 2 && stats.ready == 2
    });

    let root = tempfile::tempdir().unwrap();
    let handle = support::start_tester(root.path(), "warm", "one", 2, 1);
    let stats = spare_interpreter_stats();
    assert_eq!(stats.taken, 1, "the load took a spare: {stats:?}");
    let out: serde_json::Value =
        serde_json::from_slice(&handle.call_typed_json(TRANSFORM, b"[3]").unwrap()).unwrap();
    assert_eq!(out["result"], 6);
    assert!(
        thread_names().iter().any(|name| name == "fidius:warm#0"),
        "the spare thread carries the instance's name: {:?}",
        thread_names()
    );
    wait_for("refilled", |stats| stats.ready == 2 && stats.made == 3);

    // A reload starts its instance on a spare too; more instances than spares start the rest cold.
    handle.reload().unwrap();
    assert_eq!(spare_interpreter_stats().taken, 2);
    let many = support::start_tester(root.path(), "many", "one", 2, 4);
    let stats = spare_interpreter_stats();
    assert!(
        stats.taken >= 3 && stats.taken <= 2 + 4,
        "at most the ready spares were taken: {stats:?}"
    );
    assert_eq!(
        many.stats().instances,
        4,
        "every instance runs, spare or cold"
    );
    let stats = wait_for("refilled again", |stats| stats.ready == 2);
    assert!(stats.made <= stats.taken + 2, "{stats:?}");

    // A second host asking for fewer does not shrink the pool.
    let _other = PluginHost::builder().spare_interpreters(1).build().unwrap();
    assert_eq!(spare_interpreter_stats().target, 2);
}
