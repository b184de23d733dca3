//! The first slice of the sub-interpreter contract, against the real linked CPython.

use std::sync::{Arc, Barrier};
use std::thread;

use fidius_ffi::{FfiError, Interpreter, InterpreterOptions, SubInterpreter, WorkerInterpreter};

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

#[test]
fn evaluates_an_expression() {
    let interp = SubInterpreter::new(InterpreterOptions::default()).unwrap();
    assert_eq!(eval(&interp, "6 * 7"), "42");
    assert_eq!(eval(&interp, "'caf\\u00e9'.upper()"), "CAFÉ");
    run(&interp, "import sys");
    assert_eq!(eval(&interp, "sys.version_info >= (3, 12)"), "True");
    assert_eq!(
        eval(&interp, "sys.version.split()[0]"),
        fidius_ffi::python_version()
    );
}

#[test]
fn runs_with_own_gil_and_isolated_configuration() {
    let interp = SubInterpreter::new(InterpreterOptions::default()).unwrap();
    run(&interp, "import sys");
    if eval(&interp, "sys.version_info >= (3, 13)") == "True" {
        // Read from the main interpreter: plugin sub-interpreters may not import `_interpreters`.
        let id = interp.id();
        assert_ne!(id, 0);
        // The main interpreter, through the API a process-tier worker uses to claim it.
        let main = WorkerInterpreter::claim().unwrap();
        let config = |field: &str| {
            main.with(|py| {
                py.eval_to_string(&format!(
                    "__import__('_interpreters').get_config({id}).{field}"
                ))
            })
            .unwrap()
            .unwrap()
        };
        assert_eq!(config("gil"), "own");
        assert_eq!(config("use_main_obmalloc"), "False");
        assert_eq!(config("check_multi_interp_extensions"), "True");
        assert_eq!(config("allow_daemon_threads"), "False");
    }
    let refused = interp.with(|py| py.run("import os\nos.fork()")).unwrap();
    match refused {
        Err(FfiError::Python(e)) => assert_eq!(e.type_name, "RuntimeError", "{e}"),
        other => panic!("os.fork() in a sub-interpreter should raise RuntimeError, got {other:?}"),
    }
    // The host's environment does not leak in: no site-packages on sys.path.
    assert_eq!(
        eval(&interp, "any('site-packages' in p for p in sys.path)"),
        "False"
    );
}

#[test]
fn two_interpreters_on_two_threads_are_isolated() {
    let both_set = Arc::new(Barrier::new(2));
    let workers: Vec<_> = ["alpha", "beta"]
        .into_iter()
        .map(|name| {
            let both_set = Arc::clone(&both_set);
            thread::spawn(move || {
                let interp = SubInterpreter::new(InterpreterOptions::default()).unwrap();
                run(
                    &interp,
                    &format!("import sys, json\nowner = {name:?}\njson.fidius_owner = {name:?}"),
                );
                // Both interpreters are alive and have written their globals before either reads.
                both_set.wait();
                let seen_global = eval(&interp, "owner");
                let seen_module_state = eval(&interp, "json.fidius_owner");
                let modules_id = eval(&interp, "id(sys.modules)");
                both_set.wait();
                (name, seen_global, seen_module_state, modules_id)
            })
        })
        .collect();
    let results: Vec<_> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    for (name, seen_global, seen_module_state, _) in &results {
        assert_eq!(seen_global, name);
        assert_eq!(seen_module_state, name);
    }
    assert_ne!(results[0].3, results[1].3, "sys.modules is shared");
}

#[test]
fn exception_comes_back_with_type_message_and_traceback() {
    let interp = SubInterpreter::new(InterpreterOptions::default()).unwrap();
    let error = interp.with(|py| py.eval("1 / 0").map(drop)).unwrap();
    let Err(FfiError::Python(exception)) = error else {
        panic!("expected a Python exception, got {error:?}");
    };
    assert_eq!(exception.type_name, "ZeroDivisionError");
    assert_eq!(exception.message, "division by zero");
    let traceback = exception.traceback.expect("a traceback");
    assert!(
        traceback.contains("ZeroDivisionError: division by zero"),
        "{traceback}"
    );

    let custom = interp
        .with(|py| py.run("class Boom(Exception):\n    pass\nraise Boom('it went off')"))
        .unwrap();
    let Err(FfiError::Python(exception)) = custom else {
        panic!("expected a Python exception, got {custom:?}");
    };
    assert_eq!(exception.type_name, "__main__.Boom");
    assert_eq!(exception.to_string(), "__main__.Boom: it went off");
    // The interpreter stays usable after an exception.
    assert_eq!(eval(&interp, "'still ' + 'here'"), "still here");
}

#[test]
fn attachments_do_not_nest() {
    let first = SubInterpreter::new(InterpreterOptions::default()).unwrap();
    let second = SubInterpreter::new(InterpreterOptions::default()).unwrap();
    let nested = first.with(|_| second.with(|_| ())).unwrap();
    assert!(matches!(nested, Err(FfiError::AlreadyAttached)));
    let created_inside =
        first.with(|_| SubInterpreter::new(InterpreterOptions::default()).map(drop));
    assert!(matches!(created_inside, Ok(Err(FfiError::AlreadyAttached))));
    assert_eq!(eval(&second, "1 + 1"), "2");
}

#[test]
fn text_with_nul_is_an_error_not_a_panic() {
    let interp = SubInterpreter::new(InterpreterOptions::default()).unwrap();
    let result = interp.with(|py| py.run("x = 1\0")).unwrap();
    assert!(matches!(result, Err(FfiError::NulByte { offset: 5 })));
}
