//! fidius refuses to switch Python thread states behind anyone's back: under a thread state that
//! other code made current (here `PyGILState_Ensure`, what PyO3's `with_gil` does), and inside
//! another interpreter's `with`.
//!
//! The foreign-thread-state scenarios run in a child process (this test binary, re-executed with
//! [`SCENARIO_ENV`] naming the scenario): getting them wrong aborts the process.

use std::process::{Command, Output};

use fidius_ffi::{
    ensure_initialized, FfiError, InterpreterOptions, InterruptOutcome, SubInterpreter,
    WorkerInterpreter,
};
use pyo3_ffi as ffi;

/// Names the scenario a child process runs.
const SCENARIO_ENV: &str = "FIDIUS_THREAD_STATE_SCENARIO";
/// What a child prints once its scenario has run to the end.
const SCENARIO_DONE: &str = "thread state scenario finished";

/// Runs `scenario` in a child process when called from the test `name` (the test's own name) and
/// returns the child's output; inside that child, runs `scenario` and returns `None`.
fn in_child(name: &str, scenario: fn()) -> Option<Output> {
    if std::env::var(SCENARIO_ENV).as_deref() == Ok(name) {
        scenario();
        println!("{SCENARIO_DONE}");
        return None;
    }
    let output = Command::new(std::env::current_exe().expect("test binary"))
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(SCENARIO_ENV, name)
        .output()
        .expect("child test process");
    Some(output)
}

macro_rules! child_test {
    ($name:ident, $scenario:ident) => {
        #[test]
        fn $name() {
            if let Some(output) = in_child(stringify!($name), $scenario) {
                let stdout = String::from_utf8_lossy(&output.stdout);
                let stderr = String::from_utf8_lossy(&output.stderr);
                assert!(
                    output.status.success() && stdout.contains(SCENARIO_DONE),
                    "the child did not survive its scenario: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
                    output.status
                );
            }
        }
    };
}

/// Runs `f` with a thread state of the main interpreter current that fidius knows nothing about,
/// made the way PyO3's `Python::with_gil` makes it.
fn under_foreign_thread_state(f: impl FnOnce()) {
    ensure_initialized().expect("CPython");
    // SAFETY: CPython is initialised and its main GIL is free (fidius released it for good);
    // PyGILState_Ensure creates and makes current a main-interpreter thread state for this thread.
    let state = unsafe { ffi::PyGILState_Ensure() };
    f();
    // SAFETY: the thread state `PyGILState_Ensure` made current is still current (fidius must not
    // have swapped it out: if it had, this aborts the process) and is released exactly once.
    unsafe { ffi::PyGILState_Release(state) };
}

/// Whether `result` is the refusal to work under a foreign thread state.
fn refused<T>(result: Result<T, FfiError>) -> bool {
    // By message, not by variant, so this file also builds against a fidius without the check.
    matches!(result, Err(error) if error.to_string().contains("did not make current"))
}

fn interpreter() -> SubInterpreter {
    SubInterpreter::new(InterpreterOptions::default()).expect("sub-interpreter")
}

fn create_under_foreign() {
    under_foreign_thread_state(|| {
        assert!(refused(SubInterpreter::new(InterpreterOptions::default())));
    });
    // Nothing was left behind: the thread creates interpreters normally afterwards.
    assert_eq!(
        interpreter()
            .with(|py| py.eval_to_string("6 * 7"))
            .unwrap()
            .unwrap(),
        "42"
    );
}
child_test!(
    creating_an_interpreter_under_a_foreign_thread_state_is_refused,
    create_under_foreign
);

fn attach_under_foreign() {
    let interp = interpreter();
    under_foreign_thread_state(|| {
        assert!(refused(interp.with(|_| ())));
    });
    assert!(interp.with(|_| ()).is_ok());
}
child_test!(
    attaching_under_a_foreign_thread_state_is_refused,
    attach_under_foreign
);

fn interrupt_under_foreign() {
    let interp = interpreter();
    let handle = interp.interrupt_handle();
    under_foreign_thread_state(|| {
        assert!(refused(handle.interrupt_if(|| true)));
    });
    assert!(handle.interrupt_if(|| false).is_ok());
}
child_test!(
    interrupting_under_a_foreign_thread_state_is_refused,
    interrupt_under_foreign
);

fn claim_under_foreign() {
    under_foreign_thread_state(|| {
        assert!(refused(WorkerInterpreter::claim()));
    });
}
child_test!(
    claiming_the_main_interpreter_under_a_foreign_thread_state_is_refused,
    claim_under_foreign
);

fn drop_under_foreign() {
    let interp = interpreter();
    let handle = interp.interrupt_handle();
    under_foreign_thread_state(|| drop(interp));
    // Ended at the thread's next chance: here, creating the next interpreter.
    drop(interpreter());
    assert!(matches!(
        handle.interrupt_if(|| false),
        Ok(InterruptOutcome::Gone)
    ));
}
child_test!(
    an_interpreter_dropped_under_a_foreign_thread_state_ends_later,
    drop_under_foreign
);

/// Python code whose thread, woken at its end, appends to `ran` as soon as it gets its interpreter's
/// GIL: while a `with` holds that GIL, only releasing it behind the `with`'s back lets it run.
const WAITS_FOR_THE_GIL: &str = "import os, threading\n\
ran = []\n\
go = threading.Event()\n\
def signal():\n    go.wait()\n    ran.append(1)\n    os.write(WRITE_FD, b'x')\n\
threading.Thread(target=signal).start()\n\
go.set()\n";

/// Python code that keeps the interpreter it runs in from ending until `WAITS_FOR_THE_GIL`'s thread
/// ran (or 30 s passed): ending an interpreter joins its threads.
const ENDS_AFTER_THE_SIGNAL: &str = "import select, threading\n\
threading.Thread(target=lambda: select.select([READ_FD], [], [], 30)).start()\n";

#[test]
fn dropping_an_interpreter_inside_another_ones_with_keeps_the_outer_gil() {
    let (read, write) = rustix::pipe::pipe().expect("pipe");
    use std::os::fd::AsRawFd;
    let outer = interpreter();
    let inner = interpreter();
    let inner_handle = inner.interrupt_handle();
    inner
        .with(|py| py.run(&ENDS_AFTER_THE_SIGNAL.replace("READ_FD", &read.as_raw_fd().to_string())))
        .unwrap()
        .unwrap();
    let ran = |py: fidius_ffi::Interp<'_>| {
        // Read without running bytecode (which could let a waiting thread take the GIL).
        py.import("__main__")
            .and_then(|main| main.getattr("ran"))
            .and_then(|ran| ran.len())
            .expect("ran")
    };
    let (before, after) = outer
        .with(|py| {
            py.run(&WAITS_FOR_THE_GIL.replace("WRITE_FD", &write.as_raw_fd().to_string()))
                .expect("start the waiting thread");
            let before = ran(py);
            drop(inner);
            (before, ran(py))
        })
        .unwrap();
    assert_eq!(
        before, after,
        "the outer interpreter's thread ran while its `with` held the GIL"
    );
    // Once the outer `with` returned, its thread ran and the inner interpreter ended.
    assert_eq!(outer.with(ran).unwrap(), 1);
    assert!(matches!(
        inner_handle.interrupt_if(|| false),
        Ok(InterruptOutcome::Gone)
    ));
}
