//! JSON and bytes conversion, calls, persistent handles and raised exceptions.

use fidius_ffi::{InterpreterOptions, JsonError, SubInterpreter};

fn interpreter_with(code: &str) -> SubInterpreter {
    let interp = SubInterpreter::new(InterpreterOptions::default()).unwrap();
    interp.with(|py| py.run(code)).unwrap().unwrap();
    interp
}

/// Parses `json` into Python, passes it through `transform` (a Python expression over `value`) and
/// returns the result as JSON text.
fn round_trip(interp: &SubInterpreter, json: &str, transform: &str) -> Result<String, JsonError> {
    interp
        .with(|py| {
            let value = py.json_to_python(json.as_bytes())?;
            let function = py.eval(&format!("lambda value: {transform}")).unwrap();
            let result = function
                .call(&[&value])
                .map_err(|raised| JsonError::Python(raised.describe()))?;
            result
                .to_json()
                .map(|bytes| String::from_utf8(bytes).unwrap())
        })
        .unwrap()
}

#[test]
fn json_values_become_python_values_and_back() {
    let interp = interpreter_with("");
    let json = r#"{"s":"héllo","i":-7,"big":18446744073709551615,"f":1.5,"t":true,"n":null,"l":[1,[2,{}]]}"#;
    assert_eq!(
        round_trip(
            &interp,
            json,
            "[type(value[k]).__name__ for k in sorted(value)]"
        )
        .unwrap(),
        r#"["int","float","int","list","NoneType","str","bool"]"#
    );
    assert_eq!(round_trip(&interp, json, "value").unwrap(), json);
    assert_eq!(
        round_trip(&interp, "[1, 2]", "tuple(value)").unwrap(),
        "[1,2]"
    );
    assert_eq!(
        round_trip(&interp, "{}", "{1: 'a', 2.5: 'b', None: 'c', False: 'd'}").unwrap(),
        r#"{"1":"a","2.5":"b","null":"c","false":"d"}"#
    );
}

#[test]
fn values_without_json_form_are_typed_errors() {
    let interp = interpreter_with("class Thing: pass");
    let cases = [
        ("float('nan')", "NonFiniteFloat"),
        ("2 ** 64", "IntegerOutOfRange"),
        ("{(1, 2): 3}", "InvalidKey"),
        ("[Thing()]", "NotSerializable"),
        ("b'bytes'", "NotSerializable"),
    ];
    for (expression, expected) in cases {
        let error = round_trip(&interp, "null", expression).unwrap_err();
        assert!(
            format!("{error:?}").starts_with(expected),
            "{expression}: {error:?}"
        );
    }
    let error = round_trip(&interp, "null", "[Thing()]").unwrap_err();
    assert_eq!(
        error.to_string(),
        "object of type Thing is not JSON serializable"
    );
    let cyclic = round_trip(&interp, "[]", "(value.append(value), value)[1]").unwrap_err();
    assert_eq!(cyclic, JsonError::TooDeep);
}

#[test]
fn invalid_json_input_is_an_error() {
    let interp = interpreter_with("");
    for bad in ["[1,", "{\"a\" 1}", "[1] trailing", "", "NaN"] {
        let error = interp
            .with(|py| py.json_to_python(bad.as_bytes()).map(drop))
            .unwrap();
        assert!(
            matches!(error, Err(JsonError::InvalidJson { .. })),
            "{bad:?}: {error:?}"
        );
    }
}

#[test]
fn a_json_array_becomes_positional_arguments() {
    let interp =
        interpreter_with("def describe(*args):\n    return [type(arg).__name__ for arg in args]");
    let described = interp
        .with(|py| {
            let args = py.json_to_arguments(br#"[1, "two", [3], {"four": 4}, null]"#)?;
            let args: Vec<_> = args.iter().collect();
            let describe = py.eval("describe").unwrap();
            let result = describe
                .call(&args)
                .map_err(|raised| JsonError::Python(raised.describe()))?;
            result.to_json()
        })
        .unwrap()
        .unwrap();
    assert_eq!(described, br#"["int","str","list","dict","NoneType"]"#);
    for bad in ["{}", "1", "[1", "[] []"] {
        let error = interp
            .with(|py| py.json_to_arguments(bad.as_bytes()).map(drop))
            .unwrap();
        assert!(
            matches!(error, Err(JsonError::InvalidJson { .. })),
            "{bad:?}: {error:?}"
        );
    }
}

#[test]
fn bytes_round_trip_through_bytes_bytearray_and_memoryview() {
    let interp = interpreter_with("");
    let payload: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    for transform in [
        "value",
        "bytearray(value)",
        "memoryview(value)",
        "memoryview(value)[::1]",
    ] {
        let out = interp
            .with(|py| {
                let value = py.bytes(&payload).unwrap();
                let function = py.eval(&format!("lambda value: {transform}")).unwrap();
                function.call(&[&value]).ok().unwrap().to_bytes()
            })
            .unwrap()
            .unwrap();
        assert_eq!(out, payload, "{transform}");
    }
    let refused = interp
        .with(|py| py.eval("'text'").unwrap().to_bytes())
        .unwrap()
        .unwrap_err();
    assert_eq!(refused.type_name, "str");
}

#[test]
fn raised_exceptions_can_be_inspected_before_leaving() {
    let interp = interpreter_with(
        "class PluginError(Exception):\n    def __init__(self, code):\n        self.code = code\n\
         def fail():\n    raise PluginError('EMPTY_INPUT')\n",
    );
    let code = interp
        .with(|py| {
            let fail = py.eval("fail").unwrap();
            let class = py.eval("PluginError").unwrap();
            let raised = fail.call(&[]).err().expect("fail() raises");
            assert!(raised.object().is_instance(&class));
            assert_eq!(raised.describe().type_name, "__main__.PluginError");
            raised
                .object()
                .getattr("code")
                .unwrap()
                .to_str_lossy()
                .unwrap()
        })
        .unwrap();
    assert_eq!(code, "EMPTY_INPUT");
}

#[test]
fn handles_keep_objects_across_attachments() {
    let interp = interpreter_with(
        "counter = [0]\ndef bump():\n    counter[0] += 1\n    return counter[0]\n",
    );
    let bump = interp
        .with(|py| interp.persist(py.eval("bump").unwrap()))
        .unwrap();
    let mut last = String::new();
    for _ in 0..3 {
        last = interp
            .with(|py| {
                bump.bind(py)
                    .call(&[])
                    .ok()
                    .unwrap()
                    .to_str_lossy()
                    .unwrap()
            })
            .unwrap();
    }
    assert_eq!(last, "3");
    drop(bump);
    let remaining = interp
        .with(|py| py.eval_to_string("counter[0]"))
        .unwrap()
        .unwrap();
    assert_eq!(remaining, "3");
}

#[test]
fn sequence_calls_spread_arguments() {
    let interp = interpreter_with("def add(a, b):\n    return a + b\n");
    let sum = interp
        .with(|py| {
            let args = py.json_to_python(b"[40, 2]").unwrap();
            let add = py.eval("add").unwrap();
            add.call_with_sequence(&args)
                .ok()
                .unwrap()
                .to_json()
                .unwrap()
        })
        .unwrap();
    assert_eq!(sum, b"42");
    let arity = interp
        .with(|py| {
            let args = py.json_to_python(b"[1]").unwrap();
            py.eval("add")
                .unwrap()
                .call_with_sequence(&args)
                .err()
                .unwrap()
                .describe()
        })
        .unwrap();
    assert_eq!(arity.type_name, "TypeError");
}

#[test]
fn with_bytes_hands_out_a_copy_of_a_buffer_that_python_code_can_change() {
    let interp = interpreter_with("data = bytearray(b'abc')\nfrozen = b'abc'");
    interp
        .with(|py| {
            let data = py.eval("data").unwrap();
            let seen = data
                .with_bytes(|bytes| {
                    py.run("data[0] = ord('x')").unwrap();
                    bytes.to_vec()
                })
                .unwrap();
            assert_eq!(seen, b"abc", "the closure's view did not change under it");
            assert_eq!(data.to_bytes().unwrap(), b"xbc");
            let frozen = py.eval("frozen").unwrap();
            assert_eq!(frozen.with_bytes(|bytes| bytes.to_vec()).unwrap(), b"abc");
            assert!(py.eval("1").unwrap().with_bytes(|_| ()).is_err());
        })
        .unwrap();
}

#[test]
fn a_bytes_builder_is_filled_in_place_from_shared_memory_and_zero_padded() {
    let interp = interpreter_with("");
    let mut memory = fidius_ffi::SharedMemory::create(1, 4096).expect("memfd");
    let source: Vec<u8> = (1..=200u8).collect();
    memory.write(0, &source);
    let (filled, padded, empty, kind) = interp
        .with(|py| {
            let mut whole = py.bytes_builder(200).expect("builder");
            memory.append_to(0, 7, &mut whole);
            memory.append_to(7, 193, &mut whole);
            assert_eq!(whole.remaining(), 0);
            let whole = whole.finish();
            let mut part = py.bytes_builder(10).expect("builder");
            memory.append_to(0, 4, &mut part);
            let part = part.finish();
            let empty = py.bytes_builder(0).expect("builder").finish();
            let kind = whole.type_name();
            (
                whole.to_bytes().unwrap(),
                part.to_bytes().unwrap(),
                empty.to_bytes().unwrap(),
                kind,
            )
        })
        .unwrap();
    assert_eq!(filled, source);
    assert_eq!(padded, [1, 2, 3, 4, 0, 0, 0, 0, 0, 0]);
    assert!(empty.is_empty());
    assert_eq!(kind, "bytes");
}
