//! Creating and ending many interpreters, and the teardown order that crashed CPython (cpython#136423).

use fidius_ffi::{InterpreterOptions, SubInterpreter};

fn eval(interp: &SubInterpreter, expr: &str) -> String {
    interp
        .with(|py| py.eval_to_string(expr))
        .expect("not attached elsewhere")
        .unwrap_or_else(|e| panic!("evaluating {expr:?} failed: {e}"))
}

#[test]
fn fifty_create_end_cycles_leave_the_process_healthy() {
    for cycle in 0..50 {
        let interp = SubInterpreter::new(InterpreterOptions::default()).unwrap();
        interp
            .with(|py| {
                py.run(&format!(
                    "import json\nvalue = json.dumps({{'cycle': {cycle}}})"
                ))
            })
            .unwrap()
            .unwrap();
        assert_eq!(eval(&interp, "value"), format!("{{\"cycle\": {cycle}}}"));
    }
    let survivor = SubInterpreter::new(InterpreterOptions::default()).unwrap();
    survivor
        .with(|py| py.run("import json, re, collections, decimal"))
        .unwrap()
        .unwrap();
    assert_eq!(eval(&survivor, "str(decimal.Decimal('1.10') * 3)"), "3.30");
}

#[test]
fn ending_datetime_importers_first_created_first_does_not_crash() {
    let first = SubInterpreter::new(InterpreterOptions::default()).unwrap();
    let second = SubInterpreter::new(InterpreterOptions::default()).unwrap();
    for interp in [&first, &second] {
        interp
            .with(|py| py.run("import datetime, importlib.metadata\nstamp = datetime.date(2024, 2, 29).isoformat()"))
            .unwrap()
            .unwrap();
        assert_eq!(eval(interp, "stamp"), "2024-02-29");
    }
    drop(first);
    assert_eq!(
        eval(&second, "datetime.timedelta(days=1).total_seconds()"),
        "86400.0"
    );
    drop(second);
    let after = SubInterpreter::new(InterpreterOptions::default()).unwrap();
    assert_eq!(eval(&after, "__import__('datetime').date.min.year"), "1");
}
