//! Host functions (`fidius.host.<name>(...)`) through the public API, in both tiers, with a real
//! CPython: results, errors caught and uncaught, unknown names, calls to other plugins, re-entrant
//! calls refused instead of deadlocking, and the host function timeout.

mod support;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fidius_host::{
    CallError, HostFunctionError, LoadOptions, PluginCall, PluginHost, PluginHostBuilder,
    PythonPluginHandle, Tier,
};
use serde_json::{json, Value};

// `give_back`'s `eval` in the plugin, bounded so a hang fails the test instead of blocking it.
use support::eval_bounded as eval;
use support::{HANG_BOUND, RETURN, TESTER};

/// A packaged `Tester` plugin named `name` under `root`.
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

fn load(host: &PluginHost, root: &Path, name: &str, options: &LoadOptions) -> PythonPluginHandle {
    host.load_python_path(&package(root, name), &TESTER, options.clone())
        .unwrap_or_else(|error| panic!("loading {name}: {error}"))
}

/// [`eval`] through an async call, its future polled by `futures`' executor on a thread of its own.
fn eval_async(handle: &PythonPluginHandle, expression: &str) -> Result<Value, CallError> {
    let call = fidius_host::AsyncPluginCall::call_typed_json_async(
        handle,
        RETURN,
        json!([expression]).to_string().into_bytes(),
    );
    let out = support::bounded(&format!("`{expression}` (async)"), move || {
        futures::executor::block_on(call)
    })?;
    Ok(serde_json::from_slice(&out).expect("a JSON result"))
}

/// Runs `code` as statements in the plugin module, then evaluates `result`.
fn exec_then(handle: &PythonPluginHandle, code: &str, result: &str) -> Result<Value, CallError> {
    eval(
        handle,
        &format!("(exec({code:?}, globals()), globals()[{result:?}])[1]"),
    )
}

/// The builder with the host functions most tests use.
fn builder() -> PluginHostBuilder {
    let store: Arc<Mutex<Value>> = Arc::new(Mutex::new(json!({"greeting": "hello"})));
    PluginHost::builder()
        .host_function_typed("add", |(a, b): (i64, i64)| {
            Ok::<_, HostFunctionError>(a + b)
        })
        .host_function("kv_get", move |args: &[u8]| {
            let (key,): (String,) = serde_json::from_slice(args)?;
            let store = store.lock().unwrap();
            match store.get(&key) {
                Some(value) => Ok(serde_json::to_vec(value)?),
                None => Err(HostFunctionError::new(format!("no key {key:?}"))),
            }
        })
}

fn python_error(result: Result<Value, CallError>) -> (String, String) {
    match result {
        Err(CallError::Python {
            exception_type,
            message,
            ..
        }) => (exception_type, message),
        other => panic!("expected a Python exception, got {other:?}"),
    }
}

#[test]
fn a_host_function_returns_its_value_in_both_tiers() {
    let root = tempfile::tempdir().unwrap();
    let host = builder().build().unwrap();
    for (tier, options) in support::both_tiers() {
        let handle = load(&host, root.path(), &format!("values-{tier}"), &options);
        assert_eq!(
            handle.tier().tier,
            if tier == "process" {
                Tier::Process
            } else {
                Tier::Subinterpreter
            }
        );
        let sum = eval(&handle, "__import__('fidius').host.add(2, 3)").unwrap();
        assert_eq!(sum, json!(5), "{tier}");
        let greeting = eval(&handle, "__import__('fidius').host.kv_get('greeting')").unwrap();
        assert_eq!(greeting, json!("hello"), "{tier}");
        // Many in one call, with the plugin's own work in between.
        let many = eval(
            &handle,
            "sum(__import__('fidius').host.add(i, 1) for i in range(100))",
        )
        .unwrap();
        assert_eq!(many, json!(5050), "{tier}");
        // Arguments that do not match the typed function's types are the plugin's HostError.
        let (kind, message) = python_error(eval(&handle, "__import__('fidius').host.add('x')"));
        assert_eq!(kind, "fidius.HostError", "{tier}");
        assert!(message.contains("bad arguments"), "{tier}: {message}");
    }
}

#[test]
fn an_error_in_a_host_function_is_a_host_error_caught_or_a_call_error_uncaught() {
    let root = tempfile::tempdir().unwrap();
    let host = builder().build().unwrap();
    for (tier, options) in support::both_tiers() {
        let handle = load(&host, root.path(), &format!("errors-{tier}"), &options);
        let caught = exec_then(
            &handle,
            "import fidius\n\
             try:\n    fidius.host.kv_get('missing')\n    caught = None\n\
             except fidius.HostError as error:\n    caught = ['HostError', str(error)]\n",
            "caught",
        )
        .unwrap();
        assert_eq!(caught, json!(["HostError", "no key \"missing\""]), "{tier}");
        let (kind, message) =
            python_error(eval(&handle, "__import__('fidius').host.kv_get('missing')"));
        assert_eq!(
            (kind.as_str(), message.as_str()),
            ("fidius.HostError", "no key \"missing\""),
            "{tier}"
        );
        // A panicking host function is an error too, and the host lives on.
        let panicking = PluginHost::builder()
            .host_function(
                "explode",
                |_: &[u8]| -> Result<Vec<u8>, HostFunctionError> {
                    panic!("host function blew up")
                },
            )
            .build()
            .unwrap();
        let exploding = load(&panicking, root.path(), &format!("panics-{tier}"), &options);
        let (kind, message) = python_error(eval(&exploding, "__import__('fidius').host.explode()"));
        assert_eq!(kind, "fidius.HostError", "{tier}");
        assert!(message.contains("`explode` panicked"), "{tier}: {message}");
        assert_eq!(eval(&exploding, "1 + 1").unwrap(), json!(2));
    }
}

#[test]
fn an_unregistered_name_is_an_attribute_error_listing_the_registered_ones() {
    let root = tempfile::tempdir().unwrap();
    let host = builder().build().unwrap();
    for (tier, options) in support::both_tiers() {
        let handle = load(&host, root.path(), &format!("names-{tier}"), &options);
        let (kind, message) = python_error(eval(&handle, "__import__('fidius').host.kv_put"));
        assert_eq!(kind, "AttributeError", "{tier}");
        assert!(
            message.contains("'kv_put'") && message.contains("registered: add, kv_get"),
            "{tier}: {message}"
        );
        let listed = eval(&handle, "dir(__import__('fidius').host)").unwrap();
        assert_eq!(listed, json!(["add", "kv_get"]), "{tier}");
    }
    // A host without host functions says so.
    let bare = PluginHost::builder().build().unwrap();
    let handle = load(&bare, root.path(), "bare", &LoadOptions::default());
    let (kind, message) = python_error(eval(&handle, "__import__('fidius').host.add(1, 2)"));
    assert_eq!(kind, "AttributeError");
    assert!(message.contains("registered: none"), "{message}");
}

#[test]
fn host_function_names_are_checked_when_the_host_is_built() {
    for (name, why) in [
        ("_private", "ASCII identifier"),
        ("9lives", "ASCII identifier"),
        ("kv-get", "ASCII identifier"),
        ("", "ASCII identifier"),
    ] {
        let error = PluginHost::builder()
            .host_function(name, |_: &[u8]| Ok(b"null".to_vec()))
            .build()
            .err()
            .unwrap_or_else(|| panic!("{name:?} accepted"));
        assert!(error.to_string().contains(why), "{name:?}: {error}");
    }
    let long = "a".repeat(65);
    let error = PluginHost::builder()
        .host_function(long, |_: &[u8]| Ok(b"null".to_vec()))
        .build()
        .err()
        .expect("a 65-byte name accepted");
    assert!(error.to_string().contains("longer than 64"), "{error}");
    let twice = PluginHost::builder()
        .host_function("same", |_: &[u8]| Ok(b"1".to_vec()))
        .host_function("same", |_: &[u8]| Ok(b"2".to_vec()))
        .build()
        .err()
        .expect("a name registered twice accepted");
    assert!(twice.to_string().contains("registered twice"), "{twice}");
}

#[test]
fn host_functions_are_refused_outside_a_call_and_on_the_plugins_own_threads() {
    let root = tempfile::tempdir().unwrap();
    let host = builder().build().unwrap();
    for (tier, options) in support::both_tiers() {
        let handle = load(&host, root.path(), &format!("threads-{tier}"), &options);
        let from_thread = exec_then(
            &handle,
            "import fidius, threading\n\
             seen = []\n\
             def work():\n    try:\n        seen.append(fidius.host.add(1, 2))\n    \
             except fidius.HostError as error:\n        seen.append(str(error))\n\
             worker = threading.Thread(target=work)\nworker.start()\nworker.join()\n",
            "seen",
        )
        .unwrap();
        let message = from_thread[0].as_str().unwrap_or_default().to_owned();
        assert!(
            message.contains("only be called while the host is serving a call"),
            "{tier}: {from_thread}"
        );
    }
}

#[test]
fn a_host_function_can_call_another_plugin() {
    let root = tempfile::tempdir().unwrap();
    let other: Arc<Mutex<Option<PythonPluginHandle>>> = Arc::default();
    let reached = Arc::clone(&other);
    let host = PluginHost::builder()
        .host_function_typed("ask_other", move |(expression,): (String,)| {
            let other = reached
                .lock()
                .unwrap()
                .clone()
                .ok_or_else(|| HostFunctionError::new("no other plugin yet"))?;
            let out = other.call_typed_json(RETURN, json!([expression]).to_string().as_bytes())?;
            Ok(serde_json::from_slice::<Value>(&out)?)
        })
        .build()
        .unwrap();
    for (other_tier, other_options) in support::both_tiers() {
        let callee = load(
            &host,
            root.path(),
            &format!("callee-{other_tier}"),
            &other_options,
        );
        let callee_pid = eval(&callee, "__import__('os').getpid()").unwrap();
        *other.lock().unwrap() = Some(callee);
        for (tier, options) in support::both_tiers() {
            let caller = load(
                &host,
                root.path(),
                &format!("caller-{tier}-{other_tier}"),
                &options,
            );
            let answer = eval(
                &caller,
                "__import__('fidius').host.ask_other(\"[__import__('os').getpid(), 6 * 7]\")",
            )
            .unwrap();
            assert_eq!(
                answer,
                json!([callee_pid, 42]),
                "{tier} caller, {other_tier} callee"
            );
        }
    }
}

#[test]
fn a_reentrant_host_function_call_fails_instead_of_hanging() {
    let root = tempfile::tempdir().unwrap();
    let target: Arc<Mutex<Option<PythonPluginHandle>>> = Arc::default();
    let inner_errors: Arc<Mutex<Vec<String>>> = Arc::default();
    let (reached, errors) = (Arc::clone(&target), Arc::clone(&inner_errors));
    let host = PluginHost::builder()
        .host_function_typed("call_back", move |(expression,): (String,)| {
            let handle = reached
                .lock()
                .unwrap()
                .clone()
                .ok_or_else(|| HostFunctionError::new("no plugin yet"))?;
            match handle.call_typed_json(RETURN, json!([expression]).to_string().as_bytes()) {
                Ok(out) => Ok(serde_json::from_slice::<Value>(&out)?),
                Err(error) => {
                    let reentrant = matches!(error, CallError::Reentrant { .. });
                    errors.lock().unwrap().push(format!("{reentrant}: {error}"));
                    Err(error.into())
                }
            }
        })
        .build()
        .unwrap();
    for (tier, options) in support::both_tiers() {
        // Two instances: one would be idle, and still the call is refused (it is re-entrant).
        let handle = load(
            &host,
            root.path(),
            &format!("reentrant-{tier}"),
            &options.clone().instances(2),
        );
        *target.lock().unwrap() = Some(handle.clone());
        let (kind, message) = python_error(eval(
            &handle,
            "__import__('fidius').host.call_back('1 + 1')",
        ));
        assert_eq!(kind, "fidius.HostError", "{tier}");
        assert!(message.contains("re-entrant"), "{tier}: {message}");
        let errors = inner_errors.lock().unwrap().clone();
        assert!(
            errors.last().is_some_and(|last| last.starts_with("true: ")),
            "{tier}: {errors:?}"
        );
        // An async call's check holds for the call too (its future is completed by a thread
        // that waits for the call, as a blocking caller does).
        let (kind, message) = python_error(eval_async(
            &handle,
            "__import__('fidius').host.call_back('1 + 1')",
        ));
        assert_eq!(kind, "fidius.HostError", "{tier} async");
        assert!(message.contains("re-entrant"), "{tier} async: {message}");
        // The plugin still serves calls.
        assert_eq!(eval(&handle, "2 + 2").unwrap(), json!(4), "{tier}");
    }
}

/// The re-entrancy chain follows calls across plugins and tiers: A's host function calls B, whose
/// host function calls A again.
#[test]
fn a_reentrant_call_through_another_plugin_fails_instead_of_hanging() {
    let root = tempfile::tempdir().unwrap();
    let plugins: Arc<Mutex<Vec<PythonPluginHandle>>> = Arc::default();
    let reached = Arc::clone(&plugins);
    let host = PluginHost::builder()
        .host_function_typed(
            "call_plugin",
            move |(index, expression): (usize, String)| {
                let handle = reached
                    .lock()
                    .unwrap()
                    .get(index)
                    .cloned()
                    .ok_or_else(|| HostFunctionError::new("no such plugin"))?;
                let out =
                    handle.call_typed_json(RETURN, json!([expression]).to_string().as_bytes())?;
                Ok(serde_json::from_slice::<Value>(&out)?)
            },
        )
        .build()
        .unwrap();
    let [(_, thread), (_, process)] = support::both_tiers();
    let first = load(&host, root.path(), "ring-a", &thread);
    let second = load(&host, root.path(), "ring-b", &process);
    plugins.lock().unwrap().extend([first.clone(), second]);
    // A -> host -> B (process tier) -> host -> A: refused in B's host function; B's HostError
    // fails B's call, which fails A's host function, whose HostError fails A's call.
    let in_b = "__import__('fidius').host.call_plugin(0, '1')";
    let (kind, message) = python_error(eval(
        &first,
        &format!("__import__('fidius').host.call_plugin(1, {in_b:?})"),
    ));
    assert_eq!(kind, "fidius.HostError");
    assert!(message.contains("re-entrant"), "{message}");
    assert!(message.contains("ring-a"), "{message}");
    assert_eq!(eval(&first, "3").unwrap(), json!(3));
}

#[test]
fn a_host_function_past_its_timeout_is_a_host_error_and_keeps_running_in_the_host() {
    let root = tempfile::tempdir().unwrap();
    let (release, released) = crossbeam_channel::unbounded::<()>();
    let finished: Arc<Mutex<u32>> = Arc::default();
    let done = Arc::clone(&finished);
    let host = builder()
        .host_function("stall", move |_: &[u8]| {
            // Blocks until the test releases it (bounded, so a failed test cannot leak it forever).
            let _ = released.recv_timeout(HANG_BOUND);
            *done.lock().unwrap() += 1;
            Ok(b"\"late\"".to_vec())
        })
        .host_function_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    for (tier, options) in support::both_tiers() {
        let handle = load(&host, root.path(), &format!("timeout-{tier}"), &options);
        let (kind, message) = python_error(eval(&handle, "__import__('fidius').host.stall()"));
        assert_eq!(kind, "fidius.HostError", "{tier}");
        assert!(
            message.contains("did not return within 200ms"),
            "{tier}: {message}"
        );
        // Other host functions still answer, in time.
        assert_eq!(
            eval(&handle, "__import__('fidius').host.add(20, 22)").unwrap(),
            json!(42),
            "{tier}"
        );
    }
    // The overrunning functions are still running; released, they finish (their results dropped).
    release.send(()).unwrap();
    release.send(()).unwrap();
    let waited = std::time::Instant::now();
    while *finished.lock().unwrap() < 2 && waited.elapsed() < HANG_BOUND {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(*finished.lock().unwrap(), 2);
}
