//! What code in a sub-interpreter may not do to the shared process (containment.rs), against the
//! real linked CPython. Every probe here is harmless if a refusal regresses (signal 0 or SIGWINCH,
//! whose default action is to do nothing; chdir to the current directory; cancelling timers): the
//! forms that would kill the process run in child processes in fidius-host's tests/containment.rs.

use fidius_ffi::{InterpreterOptions, SubInterpreter};

fn interpreter() -> SubInterpreter {
    SubInterpreter::new(InterpreterOptions::default()).unwrap_or_else(|e| panic!("{e}"))
}

fn eval(interp: &SubInterpreter, expr: &str) -> String {
    interp
        .with(|py| py.eval_to_string(expr))
        .expect("not attached elsewhere")
        .unwrap_or_else(|e| panic!("evaluating {expr:?} failed: {e}"))
}

fn run(interp: &SubInterpreter, code: &str) {
    interp
        .with(|py| py.run(code))
        .expect("not attached elsewhere")
        .unwrap_or_else(|e| panic!("running {code:?} failed: {e}"));
}

/// Runs `code` and returns `type: message` of what it raised.
fn raised(interp: &SubInterpreter, code: &str) -> String {
    match interp
        .with(|py| py.run(code))
        .expect("not attached elsewhere")
    {
        Ok(()) => panic!("{code:?} raised nothing"),
        Err(error) => error.to_string(),
    }
}

fn assert_refused(interp: &SubInterpreter, code: &str, expected: &str) {
    let error = raised(interp, code);
    assert!(
        error.contains(expected) && error.contains("fidius"),
        "{code:?} raised {error:?}, expected {expected:?}"
    );
}

#[test]
fn interpreter_management_modules_cannot_be_imported_by_any_route() {
    let interp = interpreter();
    run(
        &interp,
        "import importlib, importlib.util, importlib.machinery as machinery, _imp, sys",
    );
    let refused = "ImportError: fidius: importing";
    for code in [
        "import _interpreters",
        "import _interpchannels",
        "import _interpqueues",
        "import _xxsubinterpreters",
        "import _testcapi",
        "import _testinternalcapi",
        "import interpreters",
        "importlib.import_module('_interpreters')",
        "__import__('_interpqueues')",
        "spec = importlib.util.find_spec('_interpreters')\nimportlib.util.module_from_spec(spec)",
        "_imp.create_dynamic(machinery.PathFinder.find_spec('_interpreters'))",
        // Under another name: the last component still selects PyInit__interpreters.
        "spec = machinery.PathFinder.find_spec('_interpreters')\n\
         loader = machinery.ExtensionFileLoader('pkg._interpreters', spec.origin)\n\
         loader.create_module(importlib.util.spec_from_loader('pkg._interpreters', loader))",
        // A finder of our own in front of everything, and the path finder called directly.
        "class F:\n    @staticmethod\n    def find_spec(name, path=None, target=None):\n        \
         return machinery.PathFinder.find_spec(name, path, target)\n\
         sys.meta_path.insert(0, F)\nimport _interpchannels",
        "sys.meta_path[:] = [machinery.PathFinder]\nimport _interpreters",
    ] {
        assert_refused(&interp, code, refused);
    }
    // Nothing was half-imported, and ordinary imports still work.
    assert_eq!(
        eval(&interp, "[m for m in sys.modules if 'interp' in m]"),
        "[]"
    );
    run(&interp, "import json, subprocess, _posixsubprocess");
}

#[test]
fn signals_aimed_at_the_process_are_refused_and_others_allowed() {
    let interp = interpreter();
    run(&interp, "import os, posix, signal, _signal, threading");
    for (code, expected) in [
        ("signal.alarm(0)", "signal.alarm() is refused"),
        (
            "_signal.setitimer(signal.ITIMER_REAL, 0)",
            "signal.setitimer() is refused",
        ),
        (
            "signal.raise_signal(signal.SIGWINCH)",
            "signal.raise_signal() is refused",
        ),
        (
            "signal.pthread_kill(threading.get_ident(), signal.SIGWINCH)",
            "signal.pthread_kill(",
        ),
        ("os.kill(os.getpid(), signal.SIGWINCH)", "os.kill("),
        ("posix.kill(os.getpid(), signal.SIGWINCH)", "os.kill("),
        ("os.kill(0, signal.SIGWINCH)", "os.kill(0,"),
        ("os.kill(-os.getpgrp(), signal.SIGWINCH)", "os.kill(-"),
        (
            "os.kill(threading.get_native_id(), signal.SIGWINCH)",
            "os.kill(",
        ),
        ("os.killpg(0, signal.SIGWINCH)", "os.killpg(0,"),
        ("os.killpg(os.getpgrp(), signal.SIGWINCH)", "os.killpg("),
    ] {
        assert_refused(&interp, code, expected);
    }
    assert_refused(
        &interp,
        "signal.pidfd_send_signal(os.pidfd_open(os.getpid()), signal.SIGWINCH)",
        "signal.pidfd_send_signal() is refused",
    );
    // Probing (signal 0) stays allowed; so does signalling a process that is not this one.
    run(
        &interp,
        "os.kill(os.getpid(), 0)\nos.killpg(os.getpgrp(), 0)\nsignal.pthread_kill(threading.get_ident(), 0)",
    );
    run(
        &interp,
        "import subprocess\n\
         child = subprocess.Popen(['sleep', '30'])\n\
         os.kill(child.pid, signal.SIGTERM)\n\
         assert child.wait() == -signal.SIGTERM",
    );
}

#[test]
fn restricted_functions_cannot_be_recovered() {
    let interp = interpreter();
    run(
        &interp,
        "import gc, sys, _imp, importlib, importlib.machinery as machinery",
    );
    for code in [
        "_imp.create_builtin(machinery.ModuleSpec('_signal', None))",
        "_imp.create_builtin(machinery.ModuleSpec('posix', None))",
        "_imp.create_builtin(machinery.ModuleSpec('_imp', None))",
        "del sys.modules['_signal']\nimport _signal",
    ] {
        assert_refused(
            &interp,
            code,
            "ImportError: fidius: a second copy of the built-in module",
        );
    }
    // Reloading keeps the replacements, and the originals are gone: not even gc finds them.
    run(&interp, "import posix\nimportlib.reload(posix)");
    assert_refused(&interp, "posix.abort()", "os.abort() is refused");
    assert_eq!(
        eval(
            &interp,
            "[f for f in gc.get_objects() if type(f) is type(len) and (\
             f.__name__ in ('alarm', 'setitimer', 'raise_signal', 'pidfd_send_signal', 'abort', '_exit') \
             or (f.__name__ in ('create_builtin', 'setswitchinterval') and 'fidius' not in (f.__doc__ or '')))]"
        ),
        "[]"
    );
    // Ordinary built-in modules still import.
    run(&interp, "import _bisect, _random, math, _struct");
}

#[test]
fn the_switch_interval_is_bounded() {
    let interp = interpreter();
    run(&interp, "import sys");
    for value in ["1000", "0.2", "float('nan')", "float('inf')"] {
        assert_refused(
            &interp,
            &format!("sys.setswitchinterval({value})"),
            "ValueError: fidius: sys.setswitchinterval(",
        );
    }
    assert_eq!(
        raised(&interp, "sys.setswitchinterval(0)"),
        "ValueError: switch interval must be strictly positive"
    );
    run(&interp, "sys.setswitchinterval(0.05)");
    assert_eq!(eval(&interp, "round(sys.getswitchinterval(), 6)"), "0.05");
}

#[test]
fn the_working_directory_cannot_be_changed() {
    let interp = interpreter();
    run(&interp, "import os, posix");
    for code in [
        "os.chdir(os.getcwd())",
        "posix.chdir('.')",
        "os.fchdir(os.open('.', os.O_RDONLY))",
    ] {
        assert_refused(&interp, code, "os.chdir(");
    }
}
