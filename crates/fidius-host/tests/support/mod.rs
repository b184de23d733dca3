//! Plugins written to real directories, and the interface they implement.
#![allow(
    dead_code,
    reason = "each test binary uses a different part of the support code"
)]

use std::path::{Path, PathBuf};

pub mod tracing_capture;

use fidius_core::interface::{
    PythonArgDescriptor, PythonInterfaceDescriptor, PythonMethodDescriptor, WireMode,
};
use fidius_core::manifest::Isolation;
use fidius_host::{LoadOptions, PluginSource, PythonPluginHandle, WorkerCommand};

pub const TESTER_HASH: u64 = 0x9e37_79b9_7f4a_7c15;

/// A method descriptor with only what the runtime looks at.
pub const fn method(
    name: &'static str,
    wire: WireMode,
    args: &'static [PythonArgDescriptor],
    optional_since: Option<u32>,
) -> PythonMethodDescriptor {
    PythonMethodDescriptor {
        name,
        wire,
        args,
        returns: "",
        optional_since,
        signature: "",
        streams_result: false,
        streams_argument: false,
        streamed_argument: None,
    }
}

pub const fn arg(name: &'static str) -> PythonArgDescriptor {
    PythonArgDescriptor { name, ty: "" }
}

pub const WHOAMI: usize = 0;
pub const ECHO: usize = 1;
pub const TRANSFORM: usize = 2;
pub const FAIL: usize = 3;
pub const RETURN: usize = 4;
pub const MAYBE: usize = 5;

/// The interface every test plugin implements.
pub static TESTER: PythonInterfaceDescriptor = PythonInterfaceDescriptor {
    trait_name: "Tester",
    version: 1,
    interface_hash: TESTER_HASH,
    schema_fingerprint: None,
    methods: &[
        method("whoami", WireMode::TypedJson, &[], None),
        method("echo", WireMode::Raw, &[arg("data")], None),
        method("transform", WireMode::TypedJson, &[arg("value")], None),
        method("fail", WireMode::TypedJson, &[arg("kind")], None),
        method("give_back", WireMode::TypedJson, &[arg("expression")], None),
        method("maybe", WireMode::TypedJson, &[], Some(2)),
    ],
};

/// The usual plugin body: every method of `TESTER`, backed by a vendored `conflictlib`.
pub const TESTER_PLUGIN: &str = r#"
import sys
from fidius import method, PluginError
import conflictlib

__interface__ = "Tester"
__interface_version__ = 1
__interface_hash__ = 0x9e3779b97f4a7c15

INSTANCE_TOKEN = id(sys.modules)

@method
def whoami():
    return [conflictlib.VERSION, INSTANCE_TOKEN, conflictlib.calls]

@method
def echo(data):
    return data

@method
def transform(value):
    answer = conflictlib.transform(value)
    return {**answer, "instance": INSTANCE_TOKEN, "calls": conflictlib.calls}

@method
def fail(kind):
    if kind == "plugin":
        raise PluginError("EMPTY_INPUT", "name must not be empty", {"field": "name", "limits": [1, 64]})
    if kind == "value":
        raise ValueError("bad value")
    if kind == "exit":
        sys.exit(3)
    if kind == "interrupt":
        raise KeyboardInterrupt
    return "no failure"

@method
def give_back(expression):
    return eval(expression)
"#;

/// A `conflictlib` whose version decides its behaviour and that counts its calls in module state.
pub fn conflictlib(version: &str, factor: i64) -> String {
    format!(
        "VERSION = {version:?}\ncalls = 0\n\ndef transform(value):\n    global calls\n    calls += 1\n    return {{'version': VERSION, 'result': value * {factor}}}\n"
    )
}

/// Writes `files` (relative path, content) under `root/name` and returns the plugin directory.
pub fn write_plugin(root: &Path, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = root.join(name);
    for (path, content) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    dir
}

/// A complete `Tester` plugin vendoring `conflictlib` at `version`.
pub fn tester_plugin(root: &Path, name: &str, version: &str, factor: i64) -> PathBuf {
    write_plugin(
        root,
        name,
        &[
            ("tester.py", TESTER_PLUGIN),
            (
                "vendor/conflictlib/__init__.py",
                &conflictlib(version, factor),
            ),
        ],
    )
}

/// Writes a `Tester` plugin (see [`tester_plugin`]) under `root` and starts it.
pub fn start_tester(
    root: &Path,
    name: &str,
    version: &str,
    factor: i64,
    instances: usize,
) -> PythonPluginHandle {
    start(&tester_plugin(root, name, version, factor), name, instances)
}

pub fn start(dir: &Path, name: &str, instances: usize) -> PythonPluginHandle {
    start_with(dir, name, &LoadOptions::default().instances(instances))
}

pub fn start_with(dir: &Path, name: &str, options: &LoadOptions) -> PythonPluginHandle {
    PythonPluginHandle::start(
        PluginSource::new(name, "1.0.0", dir, "tester"),
        &TESTER,
        options,
    )
    .unwrap_or_else(|error| panic!("loading {name}: {error}"))
}

/// Resident set size of this process in bytes.
#[cfg(target_os = "linux")]
pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// Load options for each tier, named: sub-interpreters, and worker processes run by this
/// package's `fidius-worker`.
pub fn both_tiers() -> [(&'static str, LoadOptions); 2] {
    [
        (
            "subinterpreter",
            LoadOptions::default().isolation(Isolation::Subinterpreter),
        ),
        (
            "process",
            LoadOptions::default()
                .isolation(Isolation::Process)
                .worker_command(WorkerCommand::new(env!("CARGO_BIN_EXE_fidius-worker"))),
        ),
    ]
}

/// How long a test waits for something that could hang (a call, an executor) before it fails.
pub const HANG_BOUND: std::time::Duration = std::time::Duration::from_secs(60);

/// Runs `body` on a thread of its own and returns what it returns, failing the test (naming
/// `what`) when there is no result within [`HANG_BOUND`]: a hang fails the test instead of
/// blocking it. A future that blocks its executor thread shows as such a hang.
pub fn bounded<T: Send + 'static>(what: &str, body: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, result) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(body());
    });
    match result.recv_timeout(HANG_BOUND) {
        Ok(value) => value,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what}: no result within {HANG_BOUND:?}")
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            panic!("{what}: its thread panicked (see its message above)")
        }
    }
}

/// The OS names of this process's threads.
#[cfg(target_os = "linux")]
pub fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim_end().to_owned())
        .collect()
}

/// Evaluates `expression` in a `Tester` plugin (its `give_back` method), bounded by [`bounded`].
pub fn eval_bounded(
    handle: &PythonPluginHandle,
    expression: &str,
) -> Result<serde_json::Value, fidius_host::CallError> {
    let handle = handle.clone();
    let args = serde_json::json!([expression]).to_string();
    let out = bounded(&format!("`{expression}`"), move || {
        fidius_host::PluginCall::call_typed_json(&handle, RETURN, args.as_bytes())
    })?;
    Ok(serde_json::from_slice(&out).expect("a JSON result"))
}
