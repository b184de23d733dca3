//! What calls carry back: values, errors as data, large payloads, and misuse of the handle.

use fidius_host::{CallError, PluginCall};
use serde_json::{json, Value};

use crate::support::{self, ECHO, FAIL, MAYBE, RETURN, TRANSFORM, WHOAMI};

fn plugin() -> (tempfile::TempDir, fidius_host::PythonPluginHandle) {
    let root = tempfile::tempdir().unwrap();
    let handle = support::start_tester(root.path(), "calls", "1.0", 2, 1);
    (root, handle)
}

fn fail(handle: &impl PluginCall, kind: &str) -> CallError {
    handle
        .call_typed_json(FAIL, json!([kind]).to_string().as_bytes())
        .unwrap_err()
}

#[test]
fn plugin_errors_keep_code_message_and_details() {
    let (_root, handle) = plugin();
    let CallError::Plugin(error) = fail(&handle, "plugin") else {
        panic!("expected CallError::Plugin");
    };
    assert_eq!(error.code, "EMPTY_INPUT");
    assert_eq!(error.message, "name must not be empty");
    assert_eq!(
        error.details,
        Some(json!({"field": "name", "limits": [1, 64]}))
    );
}

#[test]
fn other_exceptions_come_back_with_type_and_traceback_and_the_instance_keeps_serving() {
    let (_root, handle) = plugin();
    for (kind, expected_type) in [
        ("value", "ValueError"),
        ("exit", "SystemExit"),
        ("interrupt", "KeyboardInterrupt"),
    ] {
        match fail(&handle, kind) {
            CallError::Python {
                method,
                exception_type,
                traceback,
                ..
            } => {
                assert_eq!(method, "fail");
                assert_eq!(exception_type, expected_type);
                assert!(traceback.unwrap().contains("tester.py"));
            }
            other => panic!("{kind}: expected CallError::Python, got {other:?}"),
        }
    }
    let out = handle.call_typed_json(FAIL, b"[\"none\"]").unwrap();
    assert_eq!(out, br#""no failure""#);
}

#[test]
fn results_without_json_form_are_errors_not_garbage() {
    let (_root, handle) = plugin();
    for expression in ["object()", "float('inf')", "{1, 2}", "b'raw'"] {
        let error = handle
            .call_typed_json(RETURN, json!([expression]).to_string().as_bytes())
            .unwrap_err();
        assert!(
            matches!(&error, CallError::InvalidResult { method, .. } if method == "give_back"),
            "{expression}: {error:?}"
        );
    }
    let ok = handle
        .call_typed_json(
            RETURN,
            json!(["{'nested': [1, 2.5, None, True, 'x']}"])
                .to_string()
                .as_bytes(),
        )
        .unwrap();
    let ok: Value = serde_json::from_slice(&ok).unwrap();
    assert_eq!(ok, json!({"nested": [1, 2.5, null, true, "x"]}));
}

#[test]
fn raw_payloads_of_16_mib_round_trip() {
    let (_root, handle) = plugin();
    let payload: Vec<u8> = (0..16u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let out = handle.call_raw(ECHO, &payload).unwrap();
    assert_eq!(out.len(), payload.len());
    assert!(out == payload);
    assert_eq!(handle.call_raw(ECHO, b"").unwrap(), b"");
}

#[test]
fn misuse_of_the_handle_is_an_error_not_a_panic() {
    let (_root, handle) = plugin();
    assert!(matches!(
        handle.call_typed_json(99, b"[]"),
        Err(CallError::UnknownMethod { index: 99, .. })
    ));
    assert!(matches!(
        handle.call_typed_json(ECHO, b"[]"),
        Err(CallError::WireModeMismatch { .. })
    ));
    assert!(matches!(
        handle.call_raw(WHOAMI, b""),
        Err(CallError::WireModeMismatch { .. })
    ));
    for bad in [&b"{\"value\": 1}"[..], b"[1,", b""] {
        assert!(matches!(
            handle.call_typed_json(TRANSFORM, bad),
            Err(CallError::InvalidArguments { .. })
        ));
    }
    // The wrong number of arguments is refused before the call reaches Python.
    assert!(matches!(
        handle.call_typed_json(TRANSFORM, b"[1, 2]"),
        Err(CallError::InvalidArguments { reason, .. }) if reason == "expected 1 argument(s), got 2"
    ));
    assert!(!handle.implements(MAYBE));
    assert!(matches!(
        handle.call_typed_json(MAYBE, b"[]"),
        Err(CallError::NotImplemented { method }) if method == "maybe"
    ));
}

#[test]
fn the_plugin_sees_only_its_own_paths_and_the_hosts_sdk() {
    let (root, handle) = plugin();
    let ask = |expression: &str| -> Value {
        let out = handle
            .call_typed_json(RETURN, json!([expression]).to_string().as_bytes())
            .unwrap();
        serde_json::from_slice(&out).unwrap()
    };
    let path = ask("sys.path");
    let plugin_dir = root.path().join("calls");
    assert_eq!(path[0], json!(plugin_dir.join("vendor")));
    assert_eq!(path[1], json!(plugin_dir));
    assert!(!path.to_string().contains("site-packages"), "{path}");
    assert_eq!(
        ask("sys.modules['fidius'].__file__"),
        json!("<fidius-host>/fidius/__init__.py")
    );
    assert_eq!(ask("sys.dont_write_bytecode"), json!(true));
    assert!(!plugin_dir.join("__pycache__").exists());
    assert!(!plugin_dir.join("vendor/conflictlib/__pycache__").exists());
}

/// The Tester interface with the argument types a real trait would declare: typed calls are
/// checked against them before they reach the plugin.
static TYPED_TESTER: fidius_core::interface::PythonInterfaceDescriptor = {
    use fidius_core::interface::{PythonArgDescriptor, WireMode};
    const fn typed(name: &'static str, ty: &'static str) -> PythonArgDescriptor {
        PythonArgDescriptor { name, ty }
    }
    fidius_core::interface::PythonInterfaceDescriptor {
        methods: &[
            support::method("whoami", WireMode::TypedJson, &[], None),
            support::method("echo", WireMode::Raw, &[typed("data", "Vec < u8 >")], None),
            support::method(
                "transform",
                WireMode::TypedJson,
                &[typed("value", "i32")],
                None,
            ),
            support::method(
                "fail",
                WireMode::TypedJson,
                &[typed("kind", "String")],
                None,
            ),
            support::method(
                "give_back",
                WireMode::TypedJson,
                &[typed("expression", "String")],
                None,
            ),
            support::method("maybe", WireMode::TypedJson, &[], Some(2)),
        ],
        ..support::TESTER
    }
};

#[test]
fn typed_arguments_are_checked_against_the_traits_types() {
    let root = tempfile::tempdir().unwrap();
    let dir = support::tester_plugin(root.path(), "typed", "1.0", 2);
    let handle = fidius_host::PythonPluginHandle::start(
        fidius_host::PluginSource::new("typed", "1.0.0", &dir, "tester"),
        &TYPED_TESTER,
        &fidius_host::LoadOptions::default(),
    )
    .unwrap();
    let refused = |index: usize, args: &[u8]| match handle.call_typed_json(index, args) {
        Err(CallError::InvalidArguments { method, reason }) => format!("{method}: {reason}"),
        other => panic!(
            "{} was not refused: {other:?}",
            String::from_utf8_lossy(args)
        ),
    };
    assert_eq!(
        refused(RETURN, b"[42]"),
        "give_back: argument `expression` (position 0): expected a string, found integer 42"
    );
    assert_eq!(
        refused(TRANSFORM, b"[\"21\"]"),
        "transform: argument `value` (position 0): expected i32 (an integer from -2147483648 to \
         2147483647), found string \"21\""
    );
    assert!(refused(TRANSFORM, b"[4294967296]").contains("found integer 4294967296"));
    assert!(refused(TRANSFORM, b"[123456789012345678901234567890]")
        .contains("an integer beyond 64 bits (it would be rounded)"));
    // Nothing refused ran: the plugin counted no call. Then a correct call goes through.
    let out = handle.call_typed_json(TRANSFORM, b"[21]").unwrap();
    let out: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        (out["result"].clone(), out["calls"].clone()),
        (json!(42), json!(1))
    );
}
