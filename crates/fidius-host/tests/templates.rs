//! Warm worker templates (`LoadOptions::worker_template`): workers forked from a process that
//! imported the plugin once. Real CPython, real processes, real signals.

mod support;

use std::time::{Duration, Instant};

use fidius_core::manifest::Isolation;
use fidius_host::{
    CallError, CallOptions, LoadOptions, PluginCall, PythonPluginHandle, WorkerCommand, WorkerExit,
};
use serde_json::{json, Value};

use support::tracing_capture::{captured_events, Captured};
use support::{RETURN, TESTER_PLUGIN, TRANSFORM};

fn template_options() -> LoadOptions {
    LoadOptions::default()
        .isolation(Isolation::Process)
        .worker_command(WorkerCommand::new(env!("CARGO_BIN_EXE_fidius-worker")))
        .worker_template(true)
}

/// A tester plugin whose module runs `at_import` when imported (in the template, when there is
/// one).
fn plugin(root: &std::path::Path, name: &str, at_import: &str) -> std::path::PathBuf {
    support::write_plugin(
        root,
        name,
        &[
            ("tester.py", &format!("{TESTER_PLUGIN}\n{at_import}\n")),
            (
                "vendor/conflictlib/__init__.py",
                &support::conflictlib("1.0", 2),
            ),
        ],
    )
}

fn run_expression(handle: &PythonPluginHandle, expression: &str) -> Result<Value, CallError> {
    let out = handle.call_typed_json(RETURN, json!([expression]).to_string().as_bytes())?;
    Ok(serde_json::from_slice(&out).expect("JSON result"))
}

fn worker_pid(handle: &PythonPluginHandle) -> u32 {
    let pid = run_expression(handle, "__import__('os').getpid()")
        .expect("getpid")
        .as_u64()
        .expect("a pid");
    u32::try_from(pid).expect("a pid")
}

/// The parent of process `pid`, from `/proc`.
fn parent_of(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("a live process");
    status
        .lines()
        .find_map(|line| line.strip_prefix("PPid:"))
        .and_then(|parent| parent.trim().parse().ok())
        .expect("a PPid line")
}

/// SIGKILL to `pid`, never to this test process.
fn kill(pid: u32) {
    assert_ne!(pid, std::process::id(), "not the test runner");
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
}

/// Waits (bounded) until `pid` is gone.
fn wait_gone(pid: u32) {
    let give_up = Instant::now() + Duration::from_secs(30);
    while std::fs::read_to_string(format!("/proc/{pid}/status"))
        .is_ok_and(|status| !status.contains("State:\tZ"))
    {
        assert!(Instant::now() < give_up, "process {pid} did not end");
        std::thread::sleep(Duration::from_millis(5));
    }
    // The host's exit watch (a thread on the pidfd) flags it within this; a call made before that
    // finds out during the call instead and fails with `WorkerCrashed`, as for a spawned worker.
    std::thread::sleep(Duration::from_millis(100));
}

/// `conflictlib.calls` after one more `transform` call: 1 in a worker with fresh module state.
fn calls_after_one_more(handle: &PythonPluginHandle) -> u64 {
    let out = handle
        .call_typed_json(TRANSFORM, b"[21]")
        .expect("transform");
    let out: Value = serde_json::from_slice(&out).expect("JSON");
    assert_eq!(out["result"], 42);
    out["calls"].as_u64().expect("a count")
}

#[test]
fn a_worker_killed_by_sigkill_is_replaced_from_the_template_with_fresh_module_state() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = plugin(root.path(), "forked", "");
    let handle = support::start_with(&dir, "forked", &template_options());
    let first = worker_pid(&handle);
    let template = parent_of(first);
    assert_ne!(
        template,
        std::process::id(),
        "the worker was forked, not spawned"
    );
    assert_eq!(handle.stats().worker_forks, 1);
    assert_eq!(calls_after_one_more(&handle), 1);
    assert_eq!(calls_after_one_more(&handle), 2);

    kill(first);
    wait_gone(first);
    // The next call notices the death, waits for the replacement, and gets fresh module state.
    assert_eq!(calls_after_one_more(&handle), 1);
    let second = worker_pid(&handle);
    assert_ne!(second, first);
    assert_eq!(parent_of(second), template, "forked from the same template");
    let stats = handle.stats();
    assert_eq!((stats.worker_forks, stats.worker_crashes), (2, 1));

    // Death during a call: the template's report of the exit status reaches the caller.
    match run_expression(
        &handle,
        "__import__('os').kill(__import__('os').getpid(), 9)",
    ) {
        Err(CallError::WorkerCrashed { status, .. }) => assert_eq!(status, WorkerExit::Signal(9)),
        other => panic!("expected WorkerCrashed, got {other:?}"),
    }
    // A call past its timeout kills a forked worker (a pidfd signal) as it kills a spawned one.
    let spin = json!(["[0 for _ in iter(int, 1)]"]).to_string();
    let timed_out = handle.call_typed_json_with(
        RETURN,
        spin.as_bytes(),
        &CallOptions::default().timeout(Duration::from_millis(300)),
    );
    assert!(
        matches!(timed_out, Err(CallError::Timeout { .. })),
        "{timed_out:?}"
    );
    assert_eq!(calls_after_one_more(&handle), 1);
    assert_eq!(parent_of(worker_pid(&handle)), template);
    assert_eq!(handle.stats().worker_forks, 4);
}

#[test]
fn forked_workers_share_no_state_and_draw_different_random_numbers() {
    let root = tempfile::tempdir().expect("tempdir");
    // `random` is imported (and seeded) in the template, before any fork.
    let dir = plugin(root.path(), "siblings", "import random\nMARK = []");
    let handle = support::start_with(&dir, "siblings", &template_options().instances(2));
    assert_eq!(handle.stats().worker_forks, 2);
    let arrived = root.path().join("arrived");
    std::fs::create_dir(&arrived).expect("a folder");
    // Each call marks its worker's module state, then waits (bounded) until both calls are in,
    // so the two calls run on the two workers.
    let expression = format!(
        "[MARK.append(1), open({dir:?} + '/' + str(__import__('os').getpid()), 'w').close(), \
         [__import__('time').sleep(0.01) for _ in range(3000) if len(__import__('os').listdir({dir:?})) < 2], \
         (__import__('os').getpid(), random.getrandbits(64), len(MARK))][-1]",
        dir = arrived.display().to_string()
    );
    let answers: Vec<Value> = std::thread::scope(|scope| {
        let calls: Vec<_> = (0..2)
            .map(|_| scope.spawn(|| run_expression(&handle, &expression).expect("a call")))
            .collect();
        calls
            .into_iter()
            .map(|call| call.join().expect("call thread"))
            .collect()
    });
    let (a, b) = (&answers[0], &answers[1]);
    assert_ne!(a[0], b[0], "two workers: {answers:?}");
    let template = parent_of(u32::try_from(a[0].as_u64().unwrap()).unwrap());
    assert_eq!(
        parent_of(u32::try_from(b[0].as_u64().unwrap()).unwrap()),
        template
    );
    assert_ne!(template, std::process::id());
    assert_ne!(
        a[1], b[1],
        "each forked worker has its own random stream: {answers:?}"
    );
    // Each saw only its own mark.
    assert_eq!((a[2].as_u64(), b[2].as_u64()), (Some(1), Some(1)));
}

/// Worker template events of `plugin` so far (workers start on threads of their own).
fn template_events(plugin: &str) -> Vec<Captured> {
    captured_events("fidius::worker_template", plugin)
}

#[test]
fn a_template_that_started_a_thread_refuses_to_fork_and_workers_start_cold() {
    template_events("threaded");
    let root = tempfile::tempdir().expect("tempdir");
    let dir = plugin(
        root.path(),
        "threaded",
        "import threading, time\n\
         threading.Thread(target=time.sleep, args=(3600,), daemon=True, name='busy').start()",
    );
    let handle = support::start_with(&dir, "threaded", &template_options().instances(2));
    let stats = handle.stats();
    assert_eq!(stats.worker_forks, 0);
    assert_eq!(stats.worker_template_fallbacks, 1, "refused once, then off");
    let pid = worker_pid(&handle);
    assert_eq!(parent_of(pid), std::process::id(), "a cold worker");
    let events = template_events("threaded");
    let reason = events
        .iter()
        .find_map(|event| event.fields.get("reason"))
        .unwrap_or_else(|| panic!("no refusal logged: {events:?}"));
    assert!(reason.contains("the process has 2 threads"), "{reason}");
    // Restarts stay cold and work.
    kill(pid);
    wait_gone(pid);
    assert_eq!(calls_after_one_more(&handle), 1);
    assert_eq!(handle.stats().worker_forks, 0);
}

#[test]
fn a_dead_template_costs_one_cold_start_and_is_then_restarted() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = plugin(root.path(), "orphaned", "");
    let handle = support::start_with(&dir, "orphaned", &template_options());
    let first = worker_pid(&handle);
    let template = parent_of(first);
    assert_ne!(template, std::process::id());
    kill(template);
    wait_gone(template);
    // The forked worker outlives its template and still serves.
    assert_eq!(calls_after_one_more(&handle), 1);
    assert_eq!(worker_pid(&handle), first);

    // Its death is still noticed (its status is unknown now: nobody reaped it for the host).
    kill(first);
    wait_gone(first);
    assert_eq!(calls_after_one_more(&handle), 1);
    let second = worker_pid(&handle);
    assert_eq!(parent_of(second), std::process::id(), "started cold");
    assert_eq!(handle.stats().worker_template_fallbacks, 1);

    // The next restart brings up a new template and forks from it.
    kill(second);
    wait_gone(second);
    assert_eq!(calls_after_one_more(&handle), 1);
    let third = worker_pid(&handle);
    let new_template = parent_of(third);
    assert_ne!(new_template, std::process::id());
    assert_ne!(new_template, template);
    assert_eq!(handle.stats().worker_forks, 2);
}

#[test]
fn a_forked_worker_keeps_the_memory_limit_and_routes_its_output_as_a_cold_one() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = plugin(root.path(), "contained", "");
    let handle = support::start_with(
        &dir,
        "contained",
        &template_options().memory_limit(512 << 20),
    );
    let pid = worker_pid(&handle);
    assert_ne!(parent_of(pid), std::process::id(), "forked");
    let code = "exec('x = bytearray(1 << 30)', globals())";
    match run_expression(&handle, code) {
        Err(CallError::Python { exception_type, .. }) => assert_eq!(exception_type, "MemoryError"),
        other => panic!("expected MemoryError, got {other:?}"),
    }
    assert_eq!(worker_pid(&handle), pid, "the same worker keeps serving");
    // Python-level output and the worker's own fds 1 and 2 (its pipe, not the template's).
    let code = "exec(\"print('py out')\\nimport os\\nos.write(1, b'fd one\\\\n')\\nos.write(2, b'fd two\\\\n')\", globals())";
    run_expression(&handle, code).expect("writes");
    let give_up = Instant::now() + Duration::from_secs(10);
    loop {
        let lines = handle.recent_output();
        let has = |text: &str| lines.iter().any(|line| line.text == text);
        if has("py out") && has("fd one") && has("fd two") {
            break;
        }
        assert!(Instant::now() < give_up, "output not routed: {lines:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    // The fd output came through this worker's own pipe: it is still routed after the template
    // is gone.
    let template = parent_of(pid);
    kill(template);
    wait_gone(template);
    let code = "exec(\"import os\\nos.write(2, b'after the template\\\\n')\", globals())";
    run_expression(&handle, code).expect("writes");
    let give_up = Instant::now() + Duration::from_secs(10);
    while !handle
        .recent_output()
        .iter()
        .any(|line| line.text == "after the template")
    {
        assert!(Instant::now() < give_up, "output lost with the template");
        std::thread::sleep(Duration::from_millis(10));
    }
}
