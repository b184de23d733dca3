//! Async calls in both tiers: futures that never block the executor (tokio with 2 worker threads
//! keeps serving 1,000 calls while its plugin's other instances spin), work under another executor
//! (`futures::executor`), cancel a queued call when dropped, time out once, and complete when the
//! handle is dropped while they are queued; in the sub-interpreter tier the instance answers them
//! itself (no dispatch thread).

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fidius_core::interface::{PythonInterfaceDescriptor, WireMode};
use fidius_host::{
    AsyncPluginCall, CallError, CallOptions, LoadOptions, PluginSource, PythonPluginHandle,
};
use serde_json::{json, Value};

use support::{arg, method};

const ECHO: usize = 0;
const SPIN_UNTIL: usize = 1;
const HOLD_UNTIL: usize = 2;
const RECORD: usize = 3;
const RAW_REVERSE: usize = 4;

static WORKER: PythonInterfaceDescriptor = PythonInterfaceDescriptor {
    trait_name: "Worker",
    version: 1,
    interface_hash: 0x0a5b_c000_0000_0001,
    schema_fingerprint: None,
    methods: &[
        method("echo", WireMode::TypedJson, &[arg("value")], None),
        method("spin_until", WireMode::TypedJson, &[arg("path")], None),
        method("hold_until", WireMode::TypedJson, &[arg("path")], None),
        method("record", WireMode::TypedJson, &[arg("tag")], None),
        method("reverse", WireMode::Raw, &[arg("data")], None),
    ],
};

/// `spin_until` burns CPU in pure Python until a file exists; `hold_until` waits for one (in C,
/// `time.sleep`); each writes `<path>.started.<n>` first so the test knows it runs. `record`
/// appends its tag to the file named by the module's `RECORD` (the test writes it in).
const WORKER_PLUGIN: &str = r#"
import os
import time
from fidius import method

__interface_hash__ = 0x0A5BC00000000001
RECORD = None  # replaced with the record file's path


def _started(path):
    n = 0
    while True:
        try:
            open(f"{path}.started.{n}", "x").close()
            return
        except FileExistsError:
            n += 1


@method
def echo(value):
    return value


@method
def spin_until(path):
    _started(path)
    deadline = time.monotonic() + 120
    count = 0
    while time.monotonic() < deadline:
        count += 1
        if count % 10000 == 0 and os.path.exists(path):
            return "spun"
    return "gave up"


@method
def hold_until(path):
    _started(path)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if os.path.exists(path):
            return "released"
        time.sleep(0.005)
    return "gave up"


@method
def record(tag):
    with open(RECORD, "a") as out:
        out.write(tag + "\n")
    return tag


@method
def reverse(data):
    return bytes(reversed(data))
"#;

struct Plugin {
    handle: PythonPluginHandle,
    root: tempfile::TempDir,
    record: PathBuf,
}

fn start(tier: &str, options: LoadOptions) -> Plugin {
    start_named(tier, "worker", options)
}

fn start_named(tier: &str, name: &str, options: LoadOptions) -> Plugin {
    let root = tempfile::tempdir().expect("tempdir");
    let record = root.path().join("record");
    let module = WORKER_PLUGIN.replace(
        "RECORD = None",
        &format!("RECORD = {:?}", record.display().to_string()),
    );
    let dir = support::write_plugin(root.path(), "worker", &[("worker.py", &module)]);
    let handle = PythonPluginHandle::start(
        PluginSource::new(name, "1.0.0", &dir, "worker"),
        &WORKER,
        &options,
    )
    .unwrap_or_else(|error| panic!("{tier}: {error}"));
    Plugin {
        handle,
        root,
        record,
    }
}

fn args(value: Value) -> Vec<u8> {
    value.to_string().into_bytes()
}

fn decoded(result: Result<Vec<u8>, CallError>) -> Value {
    serde_json::from_slice(&result.expect("call succeeds")).expect("JSON result")
}

/// Waits (bounded) until `count` calls given `path` have started.
fn wait_started(path: &Path, count: usize) {
    let give_up = Instant::now() + Duration::from_secs(60);
    loop {
        let started = (0..count)
            .filter(|n| PathBuf::from(format!("{}.started.{n}", path.display())).exists())
            .count();
        if started == count {
            return;
        }
        assert!(Instant::now() < give_up, "calls did not start");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn recorded(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_thousand_async_calls_complete_on_two_tokio_workers_while_cpu_bound_calls_run() {
    for (tier, options) in support::both_tiers() {
        let plugin = start(tier, options.instances(3));
        let handle = plugin.handle.clone();
        let stop = plugin.root.path().join("stop");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .expect("tokio runtime");
        // Two CPU-bound calls made from the runtime itself: a future that blocked its executor
        // thread while its call ran would leave no worker for the calls below.
        let spinners: Vec<_> =
            (0..2)
                .map(|_| {
                    runtime.spawn(handle.call_typed_json_async(
                        SPIN_UNTIL,
                        args(json!([stop.display().to_string()])),
                    ))
                })
                .collect();
        wait_started(&stop, 2);

        let (done, finished) = std::sync::mpsc::channel();
        let callers = handle.clone();
        runtime.spawn(async move {
            let calls: Vec<_> = (0..1000)
                .map(|n| {
                    let call = callers.call_typed_json_async(ECHO, args(json!([n])));
                    tokio::spawn(async move { (n, call.await) })
                })
                .collect();
            let mut results = Vec::new();
            for call in calls {
                results.push(call.await.expect("task"));
            }
            let _ = done.send(results);
        });
        // Bounded here, outside the runtime: blocked workers could not even run a timer.
        let results = finished
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("{tier}: the 1,000 calls did not complete"));
        assert_eq!(results.len(), 1000);
        for (n, result) in results {
            assert_eq!(decoded(result), json!(n), "{tier}");
        }
        assert!(
            spinners.iter().all(|spinner| !spinner.is_finished()),
            "{tier}: the CPU-bound calls were still running"
        );

        std::fs::write(&stop, b"").expect("stop file");
        for spinner in spinners {
            let result = runtime.block_on(spinner).expect("task");
            assert_eq!(decoded(result), json!("spun"), "{tier}");
        }
    }
}

#[test]
fn dropping_a_queued_call_cancels_it_under_another_executor() {
    for (tier, options) in support::both_tiers() {
        let plugin = start(tier, options);
        let handle = &plugin.handle;
        let release = plugin.root.path().join("release");
        // Holds the only instance (and its one async dispatch thread).
        let held =
            handle.call_typed_json_async(HOLD_UNTIL, args(json!([release.display().to_string()])));
        wait_started(&release, 1);
        let dropped = handle.call_typed_json_async(RECORD, args(json!(["dropped"])));
        let kept = handle.call_typed_json_async(RECORD, args(json!(["kept"])));
        drop(dropped);
        std::fs::write(&release, b"").expect("release file");

        // Polled by `futures`' executor on this thread: no tokio anywhere.
        assert_eq!(
            decoded(futures::executor::block_on(held)),
            json!("released")
        );
        assert_eq!(decoded(futures::executor::block_on(kept)), json!("kept"));
        assert_eq!(
            recorded(&plugin.record),
            ["kept"],
            "{tier}: the dropped call never ran"
        );
        assert_eq!(
            futures::executor::block_on(handle.call_raw_async(RAW_REVERSE, b"abc".to_vec()))
                .expect("raw"),
            b"cba"
        );
    }
}

#[test]
fn a_call_queued_past_its_deadline_times_out_without_running() {
    for (tier, options) in support::both_tiers() {
        let plugin = start(tier, options);
        let handle = &plugin.handle;
        let release = plugin.root.path().join("release");
        let mut held =
            handle.call_typed_json_async(HOLD_UNTIL, args(json!([release.display().to_string()])));
        wait_started(&release, 1);
        let quick = CallOptions::default().timeout(Duration::from_millis(100));
        let late = handle.call_typed_json_async_with(RECORD, args(json!(["late"])), &quick);
        // Completes at its deadline although the instance is still held.
        match futures::executor::block_on(late) {
            Err(CallError::Timeout { method, .. }) => assert_eq!(method, "record", "{tier}"),
            other => panic!("{tier}: {other:?}"),
        }
        assert_eq!(handle.stats().timeouts, 1, "{tier}");
        assert!(
            futures::FutureExt::now_or_never(&mut held).is_none(),
            "{tier}: timed out while the instance was still held"
        );
        std::fs::write(&release, b"").expect("release file");
        assert_eq!(
            decoded(futures::executor::block_on(held)),
            json!("released")
        );
        // The next call runs after the timed-out one was skipped.
        assert_eq!(
            decoded(futures::executor::block_on(
                handle.call_typed_json_async(RECORD, args(json!(["after"])))
            )),
            json!("after")
        );
        assert_eq!(recorded(&plugin.record), ["after"], "{tier}");
    }
}

#[test]
fn a_running_async_call_with_a_timeout_is_interrupted_and_checks_fail_at_once() {
    for (tier, options) in support::both_tiers() {
        let plugin = start(tier, options);
        let handle = &plugin.handle;
        let never = plugin.root.path().join("never");
        let quick = CallOptions::default().timeout(Duration::from_millis(300));
        let spinning = handle.call_typed_json_async_with(
            SPIN_UNTIL,
            args(json!([never.display().to_string()])),
            &quick,
        );
        match futures::executor::block_on(spinning) {
            Err(CallError::Timeout { method, .. }) => assert_eq!(method, "spin_until", "{tier}"),
            other => panic!("{tier}: {other:?}"),
        }
        // The plugin still serves (the process tier restarts the killed worker).
        assert_eq!(
            decoded(futures::executor::block_on(
                handle.call_typed_json_async(ECHO, args(json!(["ok"])))
            )),
            json!("ok")
        );
        // Counted once, although the deadline and the interrupted call (answered before the one
        // instance took the call above) both said so.
        assert_eq!(handle.stats().timeouts, 1, "{tier}");
        // The handle's checks answer without a call.
        match futures::executor::block_on(handle.call_raw_async(ECHO, Vec::new())) {
            Err(CallError::WireModeMismatch { .. }) => {}
            other => panic!("{tier}: {other:?}"),
        }
        match futures::executor::block_on(handle.call_typed_json_async(99, b"[]".to_vec())) {
            Err(CallError::UnknownMethod { index, .. }) => assert_eq!(index, 99),
            other => panic!("{tier}: {other:?}"),
        }
    }
}

#[test]
fn a_sub_interpreter_instance_answers_async_calls_itself() {
    // A name of its own: the dispatch thread would be `fidius:direct:async` (15 bytes kept).
    let plugin = start_named(
        "subinterpreter",
        "direct",
        LoadOptions::default().isolation(fidius_core::manifest::Isolation::Subinterpreter),
    );
    for n in 0..50 {
        let call = plugin.handle.call_typed_json_async(ECHO, args(json!([n])));
        assert_eq!(decoded(futures::executor::block_on(call)), json!(n));
    }
    let names = support::thread_names();
    assert!(
        !names.iter().any(|name| name.starts_with("fidius:direct:")),
        "no dispatch thread between the future and the instance: {names:?}"
    );
}

#[test]
fn a_queued_async_call_completes_when_the_last_handle_is_dropped() {
    for (tier, options) in support::both_tiers() {
        let Plugin {
            handle,
            root,
            record,
        } = start(tier, options);
        let release = root.path().join("release");
        let held =
            handle.call_typed_json_async(HOLD_UNTIL, args(json!([release.display().to_string()])));
        wait_started(&release, 1);
        let queued = handle.call_typed_json_async(RECORD, args(json!(["queued"])));
        // Dropping the last handle lets queued calls finish (it waits for them in the
        // sub-interpreter tier), so it runs on a thread of its own.
        let dropping = std::thread::spawn(move || drop(handle));
        std::fs::write(&release, b"").expect("release file");
        let (held, queued) = support::bounded(&format!("{tier}: the calls"), move || {
            (
                futures::executor::block_on(held),
                futures::executor::block_on(queued),
            )
        });
        assert_eq!(decoded(held), json!("released"), "{tier}");
        assert_eq!(decoded(queued), json!("queued"), "{tier}");
        assert_eq!(recorded(&record), ["queued"], "{tier}");
        dropping.join().expect("the handle dropped");
    }
}

/// A waker whose `wake` panics (an executor's bug).
struct PanickingWaker;

impl std::task::Wake for PanickingWaker {
    fn wake(self: std::sync::Arc<Self>) {
        panic!("this waker panics");
    }
}

#[test]
fn a_waker_that_panics_does_not_take_the_answering_thread_down() {
    use std::future::Future;
    for (tier, options) in support::both_tiers() {
        let plugin = start(tier, options);
        let release = plugin.root.path().join("release");
        let mut held = plugin
            .handle
            .call_typed_json_async(HOLD_UNTIL, args(json!([release.display().to_string()])));
        let waker = std::task::Waker::from(std::sync::Arc::new(PanickingWaker));
        let polled =
            std::pin::Pin::new(&mut held).poll(&mut std::task::Context::from_waker(&waker));
        assert!(
            polled.is_pending(),
            "{tier}: the held call cannot be done yet"
        );
        wait_started(&release, 1);
        std::fs::write(&release, b"").expect("release file");
        // Served after the held call, whose answer woke (and panicked in) the stored waker.
        let handle = plugin.handle.clone();
        let after = support::bounded("a blocking call", move || {
            fidius_host::PluginCall::call_typed_json(&handle, ECHO, &args(json!(["after"])))
        });
        assert_eq!(decoded(after), json!("after"), "{tier}");
        assert_eq!(
            decoded(support::bounded("the held call", move || {
                futures::executor::block_on(held)
            })),
            json!("released"),
            "{tier}"
        );
        let handle = plugin.handle.clone();
        let next = support::bounded("an async call", move || {
            futures::executor::block_on(handle.call_typed_json_async(ECHO, args(json!(["next"]))))
        });
        assert_eq!(
            decoded(next),
            json!("next"),
            "{tier}: the plugin still answers async calls"
        );
    }
}

#[fidius_macro::plugin_interface(version = 1)]
pub trait Greeter {
    fn greet(&self, name: String) -> String;
    #[wire(raw)]
    fn shout(&self, data: Vec<u8>) -> Vec<u8>;
    #[optional(since = 2)]
    fn wave(&self);
}

#[test]
fn the_generated_async_client_calls_a_real_plugin_in_both_tiers() {
    let descriptor = &__fidius_Greeter::Greeter_PYTHON_DESCRIPTOR;
    let root = tempfile::tempdir().expect("tempdir");
    let module = format!(
        "__interface_hash__ = {:#x}\n\ndef greet(name):\n    return f'Hello, {{name}}!'\n\n\
         def shout(data):\n    return data.upper()\n",
        descriptor.interface_hash
    );
    let dir = support::write_plugin(root.path(), "greeter", &[("greeter.py", &module)]);
    for (tier, options) in support::both_tiers() {
        let handle = PythonPluginHandle::start(
            PluginSource::new("greeter", "1.0.0", &dir, "greeter"),
            descriptor,
            &options,
        )
        .unwrap_or_else(|error| panic!("{tier}: {error}"));
        let client = GreeterAsyncClient(handle);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .expect("tokio runtime");
        let greeting = runtime
            .block_on(runtime.spawn(client.greet("World".into())))
            .expect("task");
        assert_eq!(greeting.expect("greet"), "Hello, World!", "{tier}");
        let shouted = futures::executor::block_on(client.shout(b"hey".to_vec())).expect("shout");
        assert_eq!(shouted, b"HEY", "{tier}");
        match futures::executor::block_on(client.wave()) {
            Err(CallError::NotImplemented { method }) => assert_eq!(method, "wave", "{tier}"),
            other => panic!("{tier}: {other:?}"),
        }
    }
}
