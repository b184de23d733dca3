//! Per-call timeouts: runaway Python is interrupted and the instance serves on; calls stuck in C code
//! retire their instance; queued calls past their deadline never run; hanging imports time out.

use std::path::Path;
use std::time::Duration;

use fidius_host::{
    CallError, CallOptions, LoadError, LoadOptions, PluginCall, PluginSource, PythonPluginHandle,
};
use serde_json::{json, Value};

use crate::support::{self, RETURN, TESTER, TESTER_PLUGIN};

/// `TESTER_PLUGIN` plus misbehaving helpers, reached through `give_back` (which evaluates its
/// argument in the module).
fn faulty_plugin(root: &Path, name: &str) -> std::path::PathBuf {
    let module = format!(
        "{TESTER_PLUGIN}{}",
        r#"
import time

spins = 0
cleanups = 0
marks = 0

def spin(marker=None):
    global spins, cleanups
    spins += 1
    if marker:
        open(marker, "w").close()
    try:
        while True:
            pass
    finally:
        cleanups += 1

def stubborn():
    # Catches the interrupt and carries on in C code for a while: the instance must be retired.
    try:
        while True:
            pass
    except BaseException:
        time.sleep(3)
    return "finished late"

def mark():
    global marks
    marks += 1
    return marks
"#
    );
    let conflictlib = support::conflictlib("1.0", 1);
    support::write_plugin(
        root,
        name,
        &[
            ("tester.py", module.as_str()),
            ("vendor/conflictlib/__init__.py", conflictlib.as_str()),
        ],
    )
}

fn give_back(
    handle: &PythonPluginHandle,
    expression: &str,
    options: &CallOptions,
) -> Result<Value, CallError> {
    let out =
        handle.call_typed_json_with(RETURN, json!([expression]).to_string().as_bytes(), options)?;
    Ok(serde_json::from_slice(&out).unwrap())
}

/// Generous enough for a loaded machine, but a hang still fails the test instead of blocking it.
fn patient() -> CallOptions {
    CallOptions::default().timeout(Duration::from_secs(30))
}

#[test]
fn a_runaway_loop_times_out_and_the_same_instance_keeps_serving() {
    let root = tempfile::tempdir().unwrap();
    let timeout = Duration::from_millis(300);
    let handle = support::start_with(
        &faulty_plugin(root.path(), "runaway"),
        "runaway",
        &LoadOptions::default().call_timeout(timeout),
    );
    let token = give_back(&handle, "INSTANCE_TOKEN", &patient()).unwrap();
    for round in 1..=2 {
        match give_back(&handle, "spin()", &CallOptions::default()) {
            Err(CallError::Timeout {
                plugin,
                method,
                after,
            }) => {
                assert_eq!((plugin.as_str(), method.as_str()), ("runaway", "give_back"));
                assert_eq!(after, timeout);
            }
            other => panic!("expected a timeout, got {other:?}"),
        }
        // The loop was interrupted (its `finally` ran) and the same interpreter answers, state intact.
        let state = give_back(&handle, "[spins, cleanups, INSTANCE_TOKEN]", &patient()).unwrap();
        assert_eq!(state, json!([round, round, token]));
    }
    let stats = handle.stats();
    assert_eq!(stats.timeouts, 2);
    assert_eq!(stats.retired_instances, 0);
    assert_eq!(stats.instances, 1);
}

#[test]
fn a_per_call_timeout_overrides_the_plugins_default() {
    let root = tempfile::tempdir().unwrap();
    let handle = support::start_with(
        &faulty_plugin(root.path(), "override"),
        "override",
        &LoadOptions::default().call_timeout(Duration::from_millis(200)),
    );
    // No timeout for this call: it outlives the default and succeeds.
    let slept = give_back(
        &handle,
        "time.sleep(0.5) or 'slept'",
        &CallOptions::default().without_timeout(),
    )
    .unwrap();
    assert_eq!(slept, json!("slept"));
    // The default still applies to plain calls.
    assert!(matches!(
        handle.call_typed_json(RETURN, json!(["time.sleep(0.5)"]).to_string().as_bytes()),
        Err(CallError::Timeout { after, .. }) if after == Duration::from_millis(200)
    ));

    let unlimited = support::start_with(
        &faulty_plugin(root.path(), "unlimited"),
        "unlimited",
        &LoadOptions::default(),
    );
    let short = Duration::from_millis(250);
    assert!(matches!(
        give_back(&unlimited, "spin()", &CallOptions::default().timeout(short)),
        Err(CallError::Timeout { after, .. }) if after == short
    ));
    assert_eq!(
        give_back(&unlimited, "cleanups", &patient()).unwrap(),
        json!(1)
    );
}

#[test]
fn a_call_still_queued_at_its_deadline_never_runs() {
    let root = tempfile::tempdir().unwrap();
    let handle = support::start_with(
        &faulty_plugin(root.path(), "queued"),
        "queued",
        &LoadOptions::default().instances(1),
    );
    let marker = root.path().join("spinning");
    std::thread::scope(|scope| {
        let spinner = scope.spawn(|| {
            give_back(
                &handle,
                &format!("spin({:?})", marker.to_str().unwrap()),
                &CallOptions::default().timeout(Duration::from_secs(1)),
            )
        });
        // Wait until the only instance is busy, so the next call has to queue.
        for _ in 0..3000 {
            if marker.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(marker.exists(), "the spinning call never started");
        let queued = give_back(
            &handle,
            "mark()",
            &CallOptions::default().timeout(Duration::from_millis(100)),
        );
        assert!(
            matches!(queued, Err(CallError::Timeout { .. })),
            "{queued:?}"
        );
        assert!(matches!(
            spinner.join().unwrap(),
            Err(CallError::Timeout { .. })
        ));
    });
    // `mark()` was dropped when the instance reached it, past its deadline.
    assert_eq!(give_back(&handle, "marks", &patient()).unwrap(), json!(0));
    assert_eq!(give_back(&handle, "mark()", &patient()).unwrap(), json!(1));
}

#[test]
fn an_instance_that_does_not_come_back_is_retired_and_replaced() {
    let root = tempfile::tempdir().unwrap();
    let handle = support::start_with(
        &faulty_plugin(root.path(), "stuck"),
        "stuck",
        &LoadOptions::default()
            .call_timeout(Duration::from_millis(300))
            .retire_after(Duration::from_millis(300)),
    );
    let first = give_back(&handle, "INSTANCE_TOKEN", &patient()).unwrap();
    // time.sleep is C code: the interrupt waits for it to return, which takes an hour.
    assert!(matches!(
        give_back(&handle, "time.sleep(3600)", &CallOptions::default()),
        Err(CallError::Timeout { .. })
    ));
    // A fresh instance answers.
    let second = give_back(&handle, "[INSTANCE_TOKEN, spins]", &patient()).unwrap();
    assert_ne!(second[0], first);
    assert_eq!(second[1], json!(0));
    let stats = handle.stats();
    assert_eq!(stats.retired_instances, 1);
    assert_eq!(stats.detached_threads, 1);
    assert_eq!(stats.instances, 1);

    // Code that swallows the interrupt is retired as well, and the replacement serves.
    assert!(matches!(
        give_back(&handle, "stubborn()", &CallOptions::default()),
        Err(CallError::Timeout { .. })
    ));
    assert_eq!(give_back(&handle, "1 + 1", &patient()).unwrap(), json!(2));
    assert_eq!(handle.stats().retired_instances, 2);
    // Dropping the handle does not wait for the detached threads.
    drop(handle);
}

fn load_hanging(root: &Path, name: &str, body: &str) -> Result<PythonPluginHandle, LoadError> {
    let module = format!("{body}\n{TESTER_PLUGIN}");
    let conflictlib = support::conflictlib("1.0", 1);
    let dir = support::write_plugin(
        root,
        name,
        &[
            ("tester.py", module.as_str()),
            ("vendor/conflictlib/__init__.py", conflictlib.as_str()),
        ],
    );
    PythonPluginHandle::start(
        PluginSource::new(name, "1.0.0", dir, "tester"),
        &TESTER,
        &LoadOptions::default()
            .instances(2)
            .load_timeout(Duration::from_millis(500))
            .retire_after(Duration::from_millis(300)),
    )
}

#[test]
fn an_import_that_hangs_fails_the_load_and_other_plugins_keep_working() {
    let root = tempfile::tempdir().unwrap();
    let healthy = support::start_tester(root.path(), "healthy", "1.0", 2, 1);
    for (name, body) in [
        ("spins-at-import", "while True:\n    pass"),
        ("sleeps-at-import", "import time\ntime.sleep(3600)"),
    ] {
        match load_hanging(root.path(), name, body) {
            Err(LoadError::LoadTimeout { plugin, after }) => {
                assert_eq!(plugin, name);
                assert_eq!(after, Duration::from_millis(500));
            }
            Err(other) => panic!("{name}: expected a load timeout, got {other}"),
            Ok(_) => panic!("{name}: loaded"),
        }
    }
    let out = healthy
        .call_typed_json(support::TRANSFORM, b"[21]")
        .unwrap();
    let out: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(out["result"], 42);
}

#[test]
fn a_zero_timeout_is_refused_when_loading() {
    let root = tempfile::tempdir().unwrap();
    let dir = faulty_plugin(root.path(), "zero");
    for options in [
        LoadOptions::default().call_timeout(Duration::ZERO),
        LoadOptions::default().load_timeout(Duration::ZERO),
    ] {
        let result = PythonPluginHandle::start(
            PluginSource::new("zero", "1.0.0", &dir, "tester"),
            &TESTER,
            &options,
        );
        assert!(
            matches!(result, Err(LoadError::InvalidOptions { ref plugin, .. }) if plugin == "zero"),
            "{:?}",
            result.err()
        );
    }
}

#[test]
fn interrupts_hit_only_the_calls_they_were_meant_for() {
    let root = tempfile::tempdir().unwrap();
    let handle = support::start_with(
        &faulty_plugin(root.path(), "mixed"),
        "mixed",
        &LoadOptions::default().instances(2),
    );
    let runaway = CallOptions::default().timeout(Duration::from_millis(200));
    std::thread::scope(|scope| {
        let callers: Vec<_> = (0..4)
            .map(|thread| {
                let handle = &handle;
                scope.spawn(move || {
                    for call in 0..300 {
                        let value = thread * 1000 + call;
                        let out = handle
                            .call_typed_json_with(
                                support::TRANSFORM,
                                json!([value]).to_string().as_bytes(),
                                &patient(),
                            )
                            .unwrap_or_else(|error| panic!("call {value}: {error}"));
                        let out: Value = serde_json::from_slice(&out).unwrap();
                        assert_eq!(out["result"], value);
                    }
                })
            })
            .collect();
        for _ in 0..5 {
            assert!(matches!(
                give_back(&handle, "spin()", &runaway),
                Err(CallError::Timeout { .. })
            ));
        }
        for caller in callers {
            caller.join().unwrap();
        }
    });
    // Every runaway call was interrupted, and only those.
    let counts = give_back(&handle, "[spins, cleanups]", &patient()).unwrap();
    assert_eq!(counts[0], counts[1]);
    assert_eq!(handle.stats().retired_instances, 0);
}
