//! `ci/bench` rows for a Rust cdylib plugin (`#[plugin_impl]`, called in the host process) beside
//! the same calls into a Python plugin in each tier (sub-interpreter, worker process), in one run.
//! The plugin crate is the tests' one, built with `--release` by cargo on first use (a debug build
//! would misrepresent the row). `ci/bench --only-rust` runs this section alone.

use std::fmt::Write as _;

use fidius_core::PluginCall;
use fidius_core::PluginError;
use fidius_host::{LoadOptions, PluginSource, PythonPluginHandle};
use fidius_macro::plugin_interface;

#[path = "../../tests/rust_plugin/mod.rs"]
mod rust_plugin;

include!("../../tests/rust_plugin/greeter.rs");

/// Appends the section: typed small call and raw 16 B echo, Rust cdylib against `python` (a
/// sub-interpreter plugin) and `process` (the same plugin in a worker process); `python_add` and
/// `python_echo` are their method indexes for the same calls.
pub fn section(
    report: &mut String,
    iterations: usize,
    python: &PythonPluginHandle,
    process: &PythonPluginHandle,
    python_add: usize,
    python_echo: usize,
) {
    let descriptor = &__fidius_Greeter::Greeter_PYTHON_DESCRIPTOR;
    let source = PluginSource::rust(
        "rust-greeter",
        "0.4.0",
        rust_plugin::release_library(),
        Some("rust-greeter".into()),
    );
    let rust = PythonPluginHandle::start(source, descriptor, &LoadOptions::default())
        .expect("load the Rust plugin");
    let add = descriptor.method_index("add").expect("add");
    let echo = descriptor.method_index("echo").expect("echo");
    let client = GreeterClient(rust.clone());
    let _ = writeln!(
        report,
        "\n## Rust cdylib plugin (in the host process, no isolation)\n\n| call | cdylib p50 | cdylib p99 | sub-interpreter p50 | sub-interpreter p99 | process tier p50 | process tier p99 |\n|---|---|---|---|---|---|---|"
    );
    type Call<'a> = Box<dyn Fn() + 'a>;
    fn python_typed(plugin: &PythonPluginHandle, add: usize) -> Call<'_> {
        Box::new(move || drop(plugin.call_typed_json(add, b"[40, 2]").unwrap()))
    }
    fn python_raw(plugin: &PythonPluginHandle, echo: usize) -> Call<'_> {
        Box::new(move || drop(plugin.call_raw(echo, b"0123456789abcdef").unwrap()))
    }
    let rows: [(&str, Call, Call, Call); 3] = [
        (
            "typed, small JSON (`add(40, 2)`, handle)",
            Box::new(|| drop(rust.call_typed_json(add, b"[40, 2]").unwrap())),
            python_typed(python, python_add),
            python_typed(process, python_add),
        ),
        (
            "typed, `add(40, 2)` through the generated client (encode + decode)",
            Box::new(|| {
                std::hint::black_box(client.add(40, 2).unwrap());
            }),
            python_typed(python, python_add),
            python_typed(process, python_add),
        ),
        (
            "raw echo, 16 B",
            Box::new(|| drop(rust.call_raw(echo, b"0123456789abcdef").unwrap())),
            python_raw(python, python_echo),
            python_raw(process, python_echo),
        ),
    ];
    for (name, ours, subinterpreter, worker) in &rows {
        let ours = super::latency(iterations, ours);
        let subinterpreter = super::latency(iterations, subinterpreter);
        let worker = super::latency(iterations, worker);
        let _ = writeln!(
            report,
            "| {name} | {} | {} | {} | {} | {} | {} |",
            nanos(ours.p50),
            nanos(ours.p99),
            super::micros(subinterpreter.p50),
            super::micros(subinterpreter.p99),
            super::micros(worker.p50),
            super::micros(worker.p99)
        );
    }
}

/// A cdylib call is tens of nanoseconds: `µs` with two decimals would round it away.
fn nanos(duration: std::time::Duration) -> String {
    format!("{} ns", duration.as_nanos())
}
