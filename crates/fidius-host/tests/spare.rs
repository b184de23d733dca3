//! Spare interpreters: with a host asking for spares, an instance start (a load, a reload) takes a
//! ready one instead of creating an interpreter, a plugin sees the same interpreter state on a
//! spare as on a fresh interpreter, the pool refills in the background once the load that took a
//! spare is over, and it never holds more than asked. (One test: the pool is process-wide.)

mod support;

use std::time::{Duration, Instant};

use fidius_host::{
    spare_interpreter_stats, PluginCall, PluginHost, PythonPluginHandle, SpareInterpreterStats,
};
use support::{RETURN, TRANSFORM};

/// What a plugin sees of its interpreter, evaluated in its module: the import system, output
/// capture, loaded modules and the bootstrap's globals.
const INTERPRETER_STATE: &str = "[sys.path, type(sys.stdout).__name__, type(sys.stderr).__name__,      sys.dont_write_bytecode, sorted(sys.modules),      [getattr(hook, '__qualname__', repr(hook)) for hook in sys.path_hooks],      [getattr(finder, '__name__', type(finder).__name__) for finder in sys.meta_path],      sys.modules['fidius'].__file__, sorted(sys.modules['__main__'].__dict__)]";

fn interpreter_state(handle: &PythonPluginHandle) -> serde_json::Value {
    let args = serde_json::to_vec(&[INTERPRETER_STATE]).unwrap();
    serde_json::from_slice(&handle.call_typed_json(RETURN, &args).unwrap()).unwrap()
}

/// The tester plugin, whose import waits (at most 60 s) until a file `go` appears beside it.
fn slow_import_plugin(root: &std::path::Path) -> std::path::PathBuf {
    let plugin = format!(
        "import os, time\n_go = os.path.join(os.path.dirname(__file__), 'go')\n_until = time.monotonic() + 60\nwhile not os.path.exists(_go) and time.monotonic() < _until:\n    time.sleep(0.005)\n{}",
        support::TESTER_PLUGIN
    );
    support::write_plugin(
        root,
        "slow",
        &[
            ("tester.py", &plugin),
            (
                "vendor/conflictlib/__init__.py",
                &support::conflictlib("one", 2),
            ),
        ],
    )
}

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

#[test]
fn a_load_takes_a_ready_spare_and_the_pool_refills_to_its_bound() {
    assert_eq!(
        spare_interpreter_stats().target,
        0,
        "no spares unless a host asks"
    );
    let root = tempfile::tempdir().unwrap();
    let state_dir = support::tester_plugin(root.path(), "state", "one", 2);
    let fresh = support::start(&state_dir, "state-fresh", 1);
    assert_eq!(spare_interpreter_stats().taken, 0);

    let _host = PluginHost::builder().spare_interpreters(2).build().unwrap();
    wait_for("two spares made", |stats| {
        stats.target == 2 && stats.ready == 2
    });

    // A spare is prepared ahead of time; what the plugin sees must not tell.
    let on_spare = support::start(&state_dir, "state-spare", 1);
    assert_eq!(spare_interpreter_stats().taken, 1, "the load took a spare");
    assert_eq!(
        interpreter_state(&on_spare),
        interpreter_state(&fresh),
        "a plugin on a spare sees what it sees on a fresh interpreter"
    );
    drop((fresh, on_spare));
    wait_for("refilled after the state check", |stats| stats.ready == 2);
    let taken_before = spare_interpreter_stats().taken;
    let handle = support::start_tester(root.path(), "warm", "one", 2, 1);
    let stats = spare_interpreter_stats();
    assert_eq!(
        stats.taken,
        taken_before + 1,
        "the load took a spare: {stats:?}"
    );
    let out: serde_json::Value =
        serde_json::from_slice(&handle.call_typed_json(TRANSFORM, b"[3]").unwrap()).unwrap();
    assert_eq!(out["result"], 6);
    assert!(
        support::thread_names()
            .iter()
            .any(|name| name == "fidius:warm#0"),
        "the spare thread carries the instance's name: {:?}",
        support::thread_names()
    );
    wait_for("refilled", |stats| {
        stats.ready == 2 && stats.made == taken_before + 3
    });

    // A reload starts its instance on a spare too; more instances than spares start the rest cold.
    handle.reload().unwrap();
    assert_eq!(spare_interpreter_stats().taken, taken_before + 2);
    let many = support::start_tester(root.path(), "many", "one", 2, 4);
    let stats = spare_interpreter_stats();
    assert!(
        stats.taken >= taken_before + 3 && stats.taken <= taken_before + 2 + 4,
        "at most the ready spares were taken: {stats:?}"
    );
    assert_eq!(
        many.stats().instances,
        4,
        "every instance runs, spare or cold"
    );
    let stats = wait_for("refilled again", |stats| stats.ready == 2);
    assert!(stats.made <= stats.taken + 2, "{stats:?}");

    // A spare is replaced only once the load that took it is over: made during the load, it would
    // compete with it for the cores.
    let before = spare_interpreter_stats();
    let slow = slow_import_plugin(root.path());
    let go = slow.join("go");
    let loading = std::thread::spawn(move || support::start(&slow, "slow", 1));
    wait_for("the slow load took a spare", |stats| {
        stats.taken == before.taken + 1
    });
    let watch_until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < watch_until {
        let stats = spare_interpreter_stats();
        assert_eq!(
            stats.made, before.made,
            "a spare was made while the load that took one was still importing: {stats:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::fs::write(&go, "").unwrap();
    let slow_handle = loading.join().unwrap();
    wait_for("replaced once the load was over", |stats| {
        stats.made == before.made + 1 && stats.ready == 2
    });
    drop(slow_handle);

    // A second host asking for fewer does not shrink the pool.
    let _other = PluginHost::builder().spare_interpreters(1).build().unwrap();
    assert_eq!(spare_interpreter_stats().target, 2);
}
