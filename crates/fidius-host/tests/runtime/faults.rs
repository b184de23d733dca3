//! Faults a plugin can cause inside its sub-interpreter: each is an error for that call, the instance
//! keeps serving, and other plugins never notice.

use fidius_host::{CallError, PluginCall, PythonPluginHandle};
use serde_json::{json, Value};

use crate::support::{self, RETURN, TRANSFORM};

/// Runs `code` as statements in the plugin module's namespace (through `give_back`'s `eval`).
fn run(handle: &PythonPluginHandle, code: &str) -> Result<Value, CallError> {
    let expression = format!("exec({code:?}, globals())");
    let out = handle.call_typed_json(RETURN, json!([expression]).to_string().as_bytes())?;
    Ok(serde_json::from_slice(&out).unwrap())
}

fn assert_healthy(handle: &PythonPluginHandle) {
    let out = handle.call_typed_json(TRANSFORM, b"[21]").unwrap();
    let out: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(out["result"], 42);
}

#[test]
fn faults_inside_a_call_are_errors_for_that_call_only() {
    let root = tempfile::tempdir().unwrap();
    let faulty = support::start_tester(root.path(), "faulty", "1.0", 2, 1);
    let bystander = support::start_tester(root.path(), "bystander", "1.0", 2, 1);
    let faults: &[(&str, &str, &str)] = &[
        ("raise SystemExit(3)", "SystemExit", "3"),
        ("import sys\nsys.exit('bye')", "SystemExit", "bye"),
        ("raise KeyboardInterrupt", "KeyboardInterrupt", ""),
        ("f = lambda: f()\nf()", "RecursionError", "maximum recursion depth"),
        // Recursion through C code with the limit raised: CPython's separate C recursion limit and the
        // worker's 16 MiB stack keep it an exception instead of a stack overflow.
        (
            "import sys\nsys.setrecursionlimit(10**7)\nx = []\nfor _ in range(10**6): x = [x]\nrepr(x)",
            "RecursionError",
            "repr",
        ),
        ("bytearray(1 << 62)", "MemoryError", ""),
        ("import os\nos.fork()", "RuntimeError", "fork not supported"),
        (
            "import os\nos.execv('/bin/true', ['true'])",
            "RuntimeError",
            "exec not supported",
        ),
        (
            "import threading\nthreading.Thread(target=print, daemon=True).start()",
            "RuntimeError",
            "daemon threads are disabled",
        ),
        (
            "import signal\nsignal.signal(signal.SIGINT, print)",
            "ValueError",
            "main thread of the main interpreter",
        ),
    ];
    for (code, expected_type, expected_message) in faults {
        match run(&faulty, code) {
            Err(CallError::Python {
                exception_type,
                message,
                ..
            }) => {
                assert_eq!(exception_type, *expected_type, "{code}");
                assert!(message.contains(expected_message), "{code}: {message}");
            }
            other => panic!("{code}: expected {expected_type}, got {other:?}"),
        }
        assert_healthy(&faulty);
        assert_healthy(&bystander);
    }
    // Asking for the host's Ctrl-C does nothing: Python installed no signal handlers.
    assert_eq!(
        run(&faulty, "import _thread\n_thread.interrupt_main()").unwrap(),
        Value::Null
    );
    assert_healthy(&faulty);
}

#[test]
fn plugin_threads_work_across_calls_and_their_output_is_routed() {
    let root = tempfile::tempdir().unwrap();
    let handle = support::start_tester(root.path(), "threaded", "1.0", 2, 1);
    run(
        &handle,
        "import threading\n\
         go = threading.Event()\n\
         results = []\n\
         def work(n):\n    go.wait()\n    print('worker', n)\n    results.append(n * n)\n\
         workers = [threading.Thread(target=work, args=(n,)) for n in range(4)]\n\
         for w in workers: w.start()",
    )
    .unwrap();
    // The threads wait in the interpreter while other calls run.
    assert_healthy(&handle);
    run(&handle, "go.set()\nfor w in workers: w.join()").unwrap();
    let results = handle
        .call_typed_json(RETURN, br#"["sorted(results)"]"#)
        .unwrap();
    let results: Value = serde_json::from_slice(&results).unwrap();
    assert_eq!(results, json!([0, 1, 4, 9]));
    let mut printed: Vec<String> = handle
        .recent_output()
        .into_iter()
        .map(|line| line.text)
        .collect();
    printed.sort();
    assert_eq!(printed, ["worker 0", "worker 1", "worker 2", "worker 3"]);
}
