//! The builtin behind `fidius.host` and the per-thread scope that serves it, in a real
//! sub-interpreter: results, errors, panics, nesting, no scope, and the GIL released around the
//! handler (so an interrupter, which needs that GIL, is not held up).

use std::sync::mpsc;
use std::time::Duration;

use fidius_ffi::{serve_host_calls, InterpreterOptions, InterruptOutcome, SubInterpreter};

/// Installs the builtin as `host_call` in `__main__` and a `HostError` class next to it.
fn interpreter() -> SubInterpreter {
    let interpreter = SubInterpreter::new(InterpreterOptions::default()).expect("interpreter");
    interpreter
        .with(|py| {
            let builtin = py.host_call_builtin().expect("builtin");
            let install = py
                .eval("lambda f: globals().update(host_call=f)")
                .expect("installer");
            install
                .call(&[&builtin])
                .map_err(|r| r.describe())
                .expect("installed");
            py.run("class HostError(Exception): pass\n").expect("class");
        })
        .expect("attached");
    interpreter
}

/// Evaluates `expression` and returns `repr()` of the result or of the raised exception.
fn outcome(interpreter: &SubInterpreter, expression: &str) -> String {
    interpreter
        .with(|py| {
            py.run(&format!(
                "try:\n    outcome = repr({expression})\nexcept BaseException as error:\n    \
                 outcome = type(error).__name__ + ': ' + str(error)\n"
            ))
            .expect("ran");
            py.eval_to_string("outcome").expect("outcome")
        })
        .expect("attached")
}

#[test]
fn the_handler_gets_name_and_json_arguments_and_its_json_comes_back() {
    let interpreter = interpreter();
    let seen = std::cell::RefCell::new(Vec::new());
    let handler = |name: &str, args: &[u8]| {
        seen.borrow_mut()
            .push(format!("{name} {}", String::from_utf8_lossy(args)));
        match name {
            "add" => Ok(br#"{"sum": [1, 2.5, null, true, "x"]}"#.to_vec()),
            "bad_json" => Ok(b"{not json".to_vec()),
            _ => Err(format!("no {name}")),
        }
    };
    serve_host_calls(&handler, || {
        assert_eq!(
            outcome(&interpreter, "host_call('add', (1, 'two', [3]), HostError)"),
            "{'sum': [1, 2.5, None, True, 'x']}"
        );
        assert_eq!(
            outcome(&interpreter, "host_call('other', (), HostError)"),
            "HostError: no other"
        );
        assert!(
            outcome(&interpreter, "host_call('bad_json', (), HostError)")
                .starts_with("HostError: host function `bad_json` returned invalid JSON")
        );
        // Arguments without a JSON form, and misuse, never reach the handler.
        assert!(
            outcome(&interpreter, "host_call('add', (object(),), HostError)")
                .starts_with("TypeError: fidius.host.add: object of type object")
        );
        assert!(outcome(&interpreter, "host_call('add', [1], HostError)")
            .starts_with("TypeError: host_call expects"));
        assert!(outcome(&interpreter, "host_call('add', (), 42)")
            .starts_with("TypeError: host_call expects"));
        assert!(outcome(&interpreter, "host_call('add')").starts_with("TypeError"));
    });
    assert_eq!(
        seen.into_inner(),
        ["add [1,\"two\",[3]]", "other []", "bad_json []"]
    );
}

#[test]
fn without_a_scope_or_with_a_panicking_handler_the_plugin_gets_the_error_class() {
    let interpreter = interpreter();
    assert!(outcome(&interpreter, "host_call('add', (), HostError)")
        .contains("can only be called while the host is serving a call"));
    let panicking = |_: &str, _: &[u8]| -> Result<Vec<u8>, String> { panic!("boom") };
    let answer = serve_host_calls(&panicking, || {
        outcome(&interpreter, "host_call('add', (), HostError)")
    });
    assert_eq!(answer, "HostError: host function `add` panicked");
    // Scopes nest; the outer handler serves again once the inner scope ends.
    let outer = |_: &str, _: &[u8]| Ok(b"1".to_vec());
    let inner = |_: &str, _: &[u8]| Ok(b"2".to_vec());
    serve_host_calls(&outer, || {
        let nested = serve_host_calls(&inner, || {
            outcome(&interpreter, "host_call('x', (), HostError)")
        });
        assert_eq!(nested, "2");
        assert_eq!(outcome(&interpreter, "host_call('x', (), HostError)"), "1");
    });
    assert!(outcome(&interpreter, "host_call('x', (), HostError)").starts_with("HostError"));
}

#[test]
fn the_gil_is_released_while_the_handler_runs() {
    let interpreter = interpreter();
    let interrupt = interpreter.interrupt_handle();
    // An interrupter takes the interpreter's GIL: it can only finish while the handler runs if the
    // builtin let go of it.
    let handler = |_: &str, _: &[u8]| {
        let (sender, receiver) = mpsc::channel();
        let interrupt = interrupt.clone();
        std::thread::spawn(move || {
            let _ = sender.send(interrupt.interrupt_if(|| false));
        });
        match receiver.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(InterruptOutcome::NotWanted)) => Ok(b"\"released\"".to_vec()),
            other => Err(format!("the interrupter did not get the GIL: {other:?}")),
        }
    };
    let answer = serve_host_calls(&handler, || {
        outcome(&interpreter, "host_call('wait', (), HostError)")
    });
    assert_eq!(answer, "'released'");
    // The same interpreter is still fully usable afterwards.
    assert_eq!(outcome(&interpreter, "6 * 7"), "42");
}
