//! Containment: standard-library Python a plugin runs may not kill, hang or redirect the host, nor
//! reach another plugin; a bystander plugin loaded beside the misbehaving one answers afterwards.
//!
//! Each scenario that could end the process when containment regresses runs in a child process:
//! this test binary again, told by [`SCENARIO_ENV`] to run just that scenario. The parent asserts the
//! child's exit status and that it reached the end of the scenario.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use fidius_core::manifest::Isolation;
use fidius_host::{
    CallError, CallOptions, LoadError, LoadOptions, PluginCall, PluginHost, PluginSource,
    PythonPluginHandle, WorkerCommand,
};
use serde_json::{json, Value};

use support::{RETURN, TESTER, TRANSFORM};

/// Names the scenario a child process runs.
const SCENARIO_ENV: &str = "FIDIUS_CONTAINMENT_SCENARIO";
/// What a child prints once its scenario has run to the end.
const SCENARIO_DONE: &str = "containment scenario finished";

/// Runs `scenario` in a child process when called from the test `name` (which must be the test's
/// own name), and returns the child's output; inside that child, runs `scenario` and returns
/// `None`.
fn in_child(name: &str, scenario: fn()) -> Option<Output> {
    if std::env::var(SCENARIO_ENV).as_deref() == Ok(name) {
        scenario();
        println!("{SCENARIO_DONE}");
        return None;
    }
    let output = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(SCENARIO_ENV, name)
        .output()
        .unwrap();
    Some(output)
}

/// The child ended normally after running its whole scenario.
fn assert_child_survived(output: &Output) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains(SCENARIO_DONE),
        "the child process did not survive its scenario: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
}

/// A test that runs `scenario` in a child process and asserts the child survived it to the end.
macro_rules! child_test {
    ($name:ident, $scenario:ident) => {
        #[test]
        fn $name() {
            if let Some(output) = in_child(stringify!($name), $scenario) {
                assert_child_survived(&output);
            }
        }
    };
}

/// Runs `code` as statements in the plugin module (through `give_back`'s `eval`).
fn run(handle: &PythonPluginHandle, code: &str) -> Result<Value, CallError> {
    eval(handle, &format!("exec({code:?}, globals())"))
}

fn eval(handle: &PythonPluginHandle, expression: &str) -> Result<Value, CallError> {
    let out = handle.call_typed_json_with(
        RETURN,
        json!([expression]).to_string().as_bytes(),
        &patient(),
    )?;
    Ok(serde_json::from_slice(&out).unwrap())
}

/// Generous enough for a loaded machine, but a hang still fails the test instead of blocking it.
fn patient() -> CallOptions {
    CallOptions::default().timeout(Duration::from_secs(60))
}

fn assert_answers(handle: &PythonPluginHandle) {
    let out = handle.call_typed_json(TRANSFORM, b"[21]").unwrap();
    let out: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(out["result"], 42);
}

/// The Python exception a call raised: `(type, message, traceback)`.
fn python_error(result: Result<Value, CallError>) -> (String, String, String) {
    match result {
        Err(CallError::Python {
            exception_type,
            message,
            traceback,
            ..
        }) => (exception_type, message, traceback.unwrap_or_default()),
        other => panic!("expected a Python exception, got {other:?}"),
    }
}

/// Asserts the call raised `expected_type` with a message containing `expected_message`.
fn assert_raised(result: Result<Value, CallError>, expected_type: &str, expected_message: &str) {
    let (exception_type, message, _) = python_error(result);
    assert_eq!(exception_type, expected_type, "message: {message}");
    assert!(
        message.contains(expected_message),
        "{exception_type}: {message:?} does not say {expected_message:?}"
    );
}

/// What the import-free fallback traceback ends with.
const FALLBACK_NOTE: &str = "the traceback module could not be used";

// Finding 1: exception capture that cannot recurse and needs no import.

child_test!(
    a_plugin_that_breaks_import_or_traceback_cannot_abort_the_host,
    broken_import_scenario
);

fn broken_import_scenario() {
    let root = tempfile::tempdir().unwrap();
    let bystander = support::start_tester(root.path(), "bystander", "1.0", 2, 1);
    // Without `__import__` even the host's private copy of `traceback` cannot load: the fallback
    // describes the frames. A `sys.modules['traceback']` of None does not stop the private copy.
    for (name, breakage, fallback) in [
        (
            "no-import",
            "import builtins\ndel builtins.__import__",
            true,
        ),
        (
            "none-import",
            "import builtins\nbuiltins.__import__ = None",
            true,
        ),
        (
            "no-traceback",
            "import sys\nsys.modules['traceback'] = None",
            false,
        ),
    ] {
        let faulty = support::start_tester(root.path(), name, "1.0", 2, 1);
        run(&faulty, breakage).unwrap();
        // The next failing call: described, frames named.
        let (exception_type, message, traceback) =
            python_error(run(&faulty, "raise ValueError('after ' + 'breakage')"));
        assert_eq!(
            (exception_type.as_str(), message.as_str()),
            ("ValueError", "after breakage")
        );
        assert_eq!(traceback.contains(FALLBACK_NOTE), fallback, "{traceback}");
        assert!(
            traceback.contains("tester.py") && traceback.contains("in give_back"),
            "{traceback}"
        );
        assert!(
            traceback.contains("ValueError: after breakage"),
            "{traceback}"
        );
        // Importing `traceback` inside a call fails as an ordinary exception.
        let (exception_type, _, _) = python_error(run(&faulty, "import traceback"));
        assert!(exception_type.contains("Error"), "{exception_type}");
        // The instance serves on.
        assert_answers(&faulty);
    }
    // Exceptions whose description itself raises: placeholders, never a recursion.
    let faulty = support::start_tester(root.path(), "unprintable", "1.0", 2, 1);
    let (exception_type, message, traceback) = python_error(run(
        &faulty,
        "class Unprintable(Exception):\n    def __str__(self):\n        raise Unprintable()\nraise Unprintable()",
    ));
    assert_eq!(exception_type, "tester.Unprintable");
    assert_eq!(message, "<unprintable>");
    assert!(traceback.contains("Unprintable"), "{traceback}");
    assert_answers(&faulty);
    assert_answers(&bystander);
}

child_test!(
    a_failing_vendored_traceback_module_cannot_abort_the_host_during_load,
    vendored_traceback_scenario
);

fn vendored_traceback_scenario() {
    let root = tempfile::tempdir().unwrap();
    let bystander = support::start_tester(root.path(), "bystander", "1.0", 2, 1);
    let dir = support::write_plugin(
        root.path(),
        "shadowing",
        &[
            ("tester.py", "raise LookupError('import-time failure')\n"),
            (
                "vendor/traceback.py",
                "raise RuntimeError('broken traceback')\n",
            ),
        ],
    );
    let error = PythonPluginHandle::start(
        PluginSource::new("shadowing", "1.0.0", &dir, "tester"),
        &TESTER,
        &LoadOptions::default(),
    )
    .map(drop)
    .expect_err("the import raises");
    match &error {
        LoadError::Import { exception, .. } => {
            assert_eq!(exception.type_name, "LookupError");
            assert_eq!(exception.message, "import-time failure");
            let traceback = exception.traceback.as_deref().unwrap_or_default();
            assert!(traceback.contains("tester.py"), "{traceback}");
        }
        other => panic!("expected LoadError::Import, got {other}"),
    }
    assert_answers(&bystander);
}

#[test]
fn the_host_formats_tracebacks_with_the_standard_librarys_traceback_not_the_plugins() {
    let root = tempfile::tempdir().unwrap();
    let bystander = support::start_tester(root.path(), "bystander", "1.0", 2, 1);
    let dir = support::tester_plugin(root.path(), "own-traceback", "1.0", 2);
    std::fs::write(
        dir.join("vendor/traceback.py"),
        "def format_exception(*args, **kwargs):\n    return ['PLUGIN TRACEBACK\\n']\n",
    )
    .unwrap();
    let faulty = support::start(&dir, "own-traceback", 1);
    // The plugin's own `traceback` is what it imports itself.
    assert_eq!(
        eval(&faulty, "__import__('traceback').format_exception(None)").unwrap(),
        json!(["PLUGIN TRACEBACK\n"])
    );
    for breakage in ["pass", "import sys\nsys.modules['traceback'] = sys"] {
        run(&faulty, breakage).unwrap();
        let (_, _, traceback) =
            python_error(run(&faulty, "raise ValueError('formatted by the host')"));
        assert!(!traceback.contains("PLUGIN TRACEBACK"), "{traceback}");
        assert!(!traceback.contains(FALLBACK_NOTE), "{traceback}");
        assert!(
            traceback.starts_with("Traceback (most recent call last):"),
            "{traceback}"
        );
        // The standard library's formatter shows source lines.
        assert!(traceback.contains("return eval(expression)"), "{traceback}");
        assert!(
            traceback.contains("ValueError: formatted by the host"),
            "{traceback}"
        );
    }
    assert_answers(&bystander);
}

// Finding 2: interpreter-management modules.

/// What plugin A tries against every other interpreter in the process: read B's token and replace
/// B's `whoami`. Returns what it managed; raises if `_interpreters` cannot be imported.
const HIJACK: &str = r#"
import _interpreters
stolen = []
me = _interpreters.get_current()[0] if isinstance(_interpreters.get_current(), tuple) else _interpreters.get_current()
for entry in _interpreters.list_all():
    other = entry[0] if isinstance(entry, tuple) else entry
    if other == me:
        continue
    try:
        _interpreters.run_string(other, "import sys\nm = sys.modules.get('tester')\nif m is not None and hasattr(m, 'TOKEN'):\n    m.whoami.__code__ = (lambda: 'HIJACKED').__code__\n    raise RuntimeError(m.TOKEN)")
    except Exception as error:
        stolen.append(repr(error))
"#;

child_test!(
    a_plugin_cannot_reach_another_plugins_interpreter,
    interpreters_scenario
);

fn interpreters_scenario() {
    let root = tempfile::tempdir().unwrap();
    let attacker = support::start_tester(root.path(), "attacker", "1.0", 2, 1);
    let victim = support::start_tester(root.path(), "victim", "1.0", 2, 1);
    run(&victim, "TOKEN = 'b-private-token'").unwrap();
    assert_raised(
        run(&attacker, HIJACK),
        "ImportError",
        "fidius: importing _interpreters is refused",
    );
    for code in [
        "import importlib\nimportlib.import_module('_interpchannels')",
        "import importlib.util as u\nu.module_from_spec(u.find_spec('_interpqueues'))",
        "import _imp, importlib.machinery as m\n_imp.create_dynamic(m.PathFinder.find_spec('_interpreters'))",
        "import sys, importlib.machinery as m\nsys.meta_path[:] = [m.PathFinder]\nimport _interpreters",
        "import _testinternalcapi",
    ] {
        assert_raised(run(&attacker, code), "ImportError", "is refused in a plugin sub-interpreter");
    }
    // Frames of other interpreters' threads (B mid-call): refused, where reading them crashed.
    std::thread::scope(|scope| {
        let busy = scope.spawn(|| {
            run(
                &victim,
                "import time\nt = time.time()\nwhile time.time() - t < 3: pass",
            )
        });
        std::thread::sleep(Duration::from_millis(500));
        for call in ["sys._current_frames()", "sys._current_exceptions()"] {
            assert_raised(
                run(
                    &attacker,
                    &format!(
                        "import sys\nfor frame in {call}.values(): frame.f_globals.get('TOKEN')"
                    ),
                ),
                "PermissionError",
                &format!("fidius: {call} is refused"),
            );
        }
        busy.join().unwrap().unwrap();
    });
    // B still answers its own token and its own methods.
    assert_eq!(eval(&victim, "TOKEN").unwrap(), json!("b-private-token"));
    let whoami = victim.call_typed_json(support::WHOAMI, b"[]").unwrap();
    assert!(!String::from_utf8_lossy(&whoami).contains("HIJACKED"));
    assert_answers(&attacker);
}

child_test!(
    a_plugin_cannot_destroy_another_plugins_interpreter,
    destroy_scenario
);

fn destroy_scenario() {
    let root = tempfile::tempdir().unwrap();
    let attacker = support::start_tester(root.path(), "attacker", "1.0", 2, 1);
    let victim = support::start_tester(root.path(), "victim", "1.0", 2, 1);
    let destroy = "import _interpreters\n\
                   me = _interpreters.get_current()\n\
                   for entry in _interpreters.list_all():\n    \
                       other = entry[0] if isinstance(entry, tuple) else entry\n    \
                       if other not in (me, me[0] if isinstance(me, tuple) else me, 0):\n        \
                           try:\n            _interpreters.destroy(other)\n        \
                           except Exception:\n            pass";
    assert_raised(
        run(&attacker, destroy),
        "ImportError",
        "fidius: importing _interpreters",
    );
    assert_answers(&victim);
    drop(victim);
    assert_answers(&attacker);
}

// Finding 3: signals aimed at the host.

child_test!(
    signals_aimed_at_the_host_are_refused_in_sub_interpreters,
    signals_scenario
);

fn signals_scenario() {
    let root = tempfile::tempdir().unwrap();
    let bystander = support::start_tester(root.path(), "bystander", "1.0", 2, 1);
    let faulty = support::start_tester(root.path(), "signaller", "1.0", 2, 1);
    for (code, expected) in [
        ("import signal\nsignal.alarm(1)", "signal.alarm() is refused"),
        (
            "import signal\nsignal.setitimer(signal.ITIMER_REAL, 0.05)",
            "signal.setitimer() is refused",
        ),
        (
            "import signal\nsignal.setitimer(signal.ITIMER_PROF, 0.05)",
            "signal.setitimer() is refused",
        ),
        ("import _signal\n_signal.alarm(1)", "signal.alarm() is refused"),
        (
            "import signal\nsignal.raise_signal(signal.SIGUSR1)",
            "signal.raise_signal() is refused",
        ),
        (
            "import signal, threading\nsignal.pthread_kill(threading.main_thread().ident, signal.SIGUSR1)",
            "signal.pthread_kill(",
        ),
        ("import os, signal\nos.kill(os.getpid(), signal.SIGUSR1)", "os.kill("),
        ("import posix, signal\nposix.kill(posix.getpid(), signal.SIGUSR1)", "os.kill("),
        ("import os, signal\nos.kill(0, signal.SIGUSR1)", "os.kill(0,"),
        ("import os, signal\nos.killpg(0, signal.SIGUSR1)", "os.killpg(0,"),
        ("import os, signal\nos.killpg(os.getpgrp(), signal.SIGUSR1)", "os.killpg("),
        ("import os\nos.abort()", "os.abort() is refused"),
        ("import os\nos._exit(3)", "os._exit() is refused"),
    ] {
        assert_raised(run(&faulty, code), "PermissionError", expected);
    }
    // Simulating Ctrl-C reaches only Python-level SIGINT handlers, which the host never installs.
    run(
        &faulty,
        "import _thread, signal\n_thread.interrupt_main()\n_thread.interrupt_main(signal.SIGTERM)",
    )
    .unwrap();
    // Long enough for an alarm or timer that slipped through to have ended the process.
    std::thread::sleep(Duration::from_millis(1500));
    assert_answers(&faulty);
    assert_answers(&bystander);
}

child_test!(
    a_process_tier_plugin_may_signal_its_own_worker,
    process_signals_scenario
);

fn process_signals_scenario() {
    let root = tempfile::tempdir().unwrap();
    let bystander = support::start_tester(root.path(), "bystander", "1.0", 2, 1);
    let options = LoadOptions::default()
        .isolation(Isolation::Process)
        .worker_command(WorkerCommand::new(env!("CARGO_BIN_EXE_fidius-worker")));
    let dir = support::tester_plugin(root.path(), "worker-signaller", "1.0", 2);
    let faulty = support::start_with(&dir, "worker-signaller", &options);
    // Nothing is refused there (the process is the plugin's own): the signal ends the worker, which
    // is then replaced.
    match run(
        &faulty,
        "import os, signal\nos.kill(os.getpid(), signal.SIGUSR1)",
    ) {
        Err(CallError::WorkerCrashed { .. }) => {}
        other => panic!("expected the worker to crash, got {other:?}"),
    }
    assert_answers(&faulty);
    assert_answers(&bystander);
}

// Findings 6 and 4 of the brief: the working directory.

child_test!(
    a_plugin_cannot_move_the_hosts_working_directory,
    chdir_scenario
);

/// A `package.toml` plugin for [`PluginHost`].
fn package(root: &Path, name: &str) -> PathBuf {
    let manifest = format!(
        "[package]\nname = \"{name}\"\nversion = \"1.0.0\"\ninterface = \"Tester\"\n\
         interface_version = 1\nruntime = \"python\"\n\n[python]\nentry_module = \"tester\"\n"
    );
    support::write_plugin(
        root,
        name,
        &[
            ("package.toml", &manifest),
            ("tester.py", support::TESTER_PLUGIN),
            (
                "vendor/conflictlib/__init__.py",
                &support::conflictlib("1.0", 2),
            ),
        ],
    )
}

fn chdir_scenario() {
    let root = tempfile::tempdir().unwrap();
    let work = root.path().join("work");
    package(&work.join("plugins"), "mover");
    package(&work.join("plugins"), "bystander");
    // The README's relative search path; this child process owns its working directory.
    std::env::set_current_dir(&work).unwrap();
    let host = PluginHost::builder()
        .search_path("./plugins")
        .cache_dir("./cache")
        .build()
        .unwrap();
    let mover = host.load_python("mover", &TESTER).unwrap();
    let bystander = host.load_python("bystander", &TESTER).unwrap();
    let mover_eval = |code: &str| {
        let out = mover.call_typed_json_with(
            RETURN,
            json!([format!("exec({code:?}, globals())")])
                .to_string()
                .as_bytes(),
            &patient(),
        )?;
        Ok::<Value, CallError>(serde_json::from_slice(&out).unwrap())
    };
    for code in [
        "import os\nos.chdir('/')",
        "import posix\nposix.chdir('/')",
        "import os\nos.fchdir(os.open('/', os.O_RDONLY))",
    ] {
        assert_raised(mover_eval(code), "PermissionError", "os.chdir(");
    }
    assert_eq!(
        std::env::current_dir().unwrap(),
        work.canonicalize().unwrap()
    );
    // Native code can still move it (ctypes is not contained): the host's paths were made absolute
    // when it was built, so discovery and reload do not follow.
    mover_eval("import ctypes\nassert ctypes.CDLL(None).chdir(b'/') == 0").unwrap();
    assert_eq!(std::env::current_dir().unwrap(), Path::new("/"));
    assert_eq!(host.reload("mover").unwrap(), 1);
    assert!(host.discover().unwrap().plugins.len() >= 2);
    let out = mover.call_typed_json(TRANSFORM, b"[21]").unwrap();
    assert_eq!(serde_json::from_slice::<Value>(&out).unwrap()["result"], 42);
    let out = bystander.call_typed_json(TRANSFORM, b"[21]").unwrap();
    assert_eq!(serde_json::from_slice::<Value>(&out).unwrap()["result"], 42);
}

// Finding 9: the switch interval.

child_test!(
    a_huge_switch_interval_cannot_defeat_timeouts,
    switch_interval_scenario
);

fn switch_interval_scenario() {
    let root = tempfile::tempdir().unwrap();
    let bystander = support::start_tester(root.path(), "bystander", "1.0", 2, 1);
    let dir = support::tester_plugin(root.path(), "slow-switch", "1.0", 2);
    let timeout = Duration::from_millis(300);
    let faulty = support::start_with(
        &dir,
        "slow-switch",
        &LoadOptions::default().call_timeout(timeout),
    );
    let token = eval(&faulty, "INSTANCE_TOKEN").unwrap();
    assert_raised(
        run(&faulty, "import sys\nsys.setswitchinterval(1000)"),
        "ValueError",
        "fidius: sys.setswitchinterval(1000) is refused",
    );
    // The largest value allowed still lets the timeout interrupt the loop.
    run(&faulty, "import sys\nsys.setswitchinterval(0.1)").unwrap();
    let out = faulty.call_typed_json(
        RETURN,
        json!(["exec('while True: pass')"]).to_string().as_bytes(),
    );
    match out {
        Err(CallError::Timeout { after, .. }) => assert_eq!(after, timeout),
        other => panic!("expected a timeout, got {other:?}"),
    }
    // Interrupted, not abandoned: the same instance answers.
    assert_eq!(eval(&faulty, "INSTANCE_TOKEN").unwrap(), token);
    assert_eq!(faulty.stats().retired_instances, 0);
    assert_answers(&bystander);
}

// Finding 10: sys.executable.

const EXECUTABLE_PROBE: &str =
    "[__import__('sys').executable, __import__('sys')._base_executable, \
     __import__('subprocess').run([__import__('sys').executable, '-c', \
     'import sys; print(sys.version_info[:2])'], capture_output=True, text=True).stdout.strip()]";

fn assert_embedded_executable(handle: &PythonPluginHandle) {
    let answer = eval(handle, EXECUTABLE_PROBE).unwrap();
    let build_python = Path::new(env!("FIDIUS_BUILD_PYTHON"))
        .canonicalize()
        .unwrap();
    for reported in [&answer[0], &answer[1]] {
        let reported = Path::new(reported.as_str().unwrap())
            .canonicalize()
            .unwrap();
        assert_eq!(reported, build_python);
    }
    let version = fidius_ffi::python_version();
    let mut parts = version.split('.');
    let expected = format!("({}, {})", parts.next().unwrap(), parts.next().unwrap());
    assert_eq!(answer[2], json!(expected));
}

#[test]
fn sys_executable_is_the_embedded_python_in_both_tiers() {
    let root = tempfile::tempdir().unwrap();
    let bystander = support::start_tester(root.path(), "bystander", "1.0", 2, 1);
    let sub = support::start_tester(root.path(), "sub", "1.0", 2, 1);
    assert_embedded_executable(&sub);
    let options = LoadOptions::default()
        .isolation(Isolation::Process)
        .worker_command(WorkerCommand::new(env!("CARGO_BIN_EXE_fidius-worker")));
    let dir = support::tester_plugin(root.path(), "proc", "1.0", 2);
    let process = support::start_with(&dir, "proc", &options);
    assert_embedded_executable(&process);
    // The issue's case: a spawn pool inside a process-tier plugin starts the embedded Python.
    assert_eq!(
        eval(
            &process,
            "(lambda pool: (pool.apply(pow, (2, 5)), pool.terminate(), pool.join())[0])(\
             __import__('multiprocessing').get_context('spawn').Pool(1))"
        )
        .unwrap(),
        json!(32)
    );
    assert_answers(&bystander);
}
