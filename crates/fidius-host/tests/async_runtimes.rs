//! The async API is runtime-agnostic: the same calls (`call_typed_json_async`, `call_raw_async`,
//! the generated async client, a streamed result consumed as a `futures::Stream`) driven by smol's
//! and async-std's `block_on`, each a single-threaded executor, in both tiers. Everything a test
//! awaits runs on that one thread, and what ends the plugin's long call (a stop or release file) is
//! written by a future on that same thread: a call future that blocked the thread while its call
//! ran would leave the timer, the other calls and the writer stuck, and the test fails at its
//! bounded wait instead of completing. (`async_calls.rs` covers tokio and `futures::executor`.)

mod support;

use std::cell::Cell;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use fidius_core::Stream;
use fidius_host::{AsyncPluginCall, CallError, LoadOptions, PluginSource, PythonPluginHandle};
use futures::future::{join, join4, join_all};
use futures::StreamExt;
use serde_json::{json, Value};

#[fidius_macro::plugin_interface(version = 1)]
pub trait Runtimes {
    fn echo(&self, value: u64) -> u64;
    /// Burns CPU in pure Python until the file `path` exists.
    fn spin_until(&self, path: String) -> String;
    /// Waits (`time.sleep`) until the file `path` exists.
    fn hold_until(&self, path: String) -> String;
    /// Appends `tag` to the plugin's record file.
    fn record(&self, tag: String) -> String;
    #[wire(raw)]
    fn reverse(&self, data: Vec<u8>) -> Vec<u8>;
    fn tick(&self, count: u32) -> Stream<u64>;
}

use __fidius_Runtimes::Runtimes_PYTHON_DESCRIPTOR as RUNTIMES;

/// `spin_until` and `hold_until` write `<path>.started` first, so a test knows the call runs; both
/// give up after 90 s, longer than a test's bounded wait.
const PLUGIN: &str = r#"
import os
import time

__interface_hash__ = HASH
RECORD = None  # replaced with the record file's path


def echo(value):
    return value


def spin_until(path):
    open(path + ".started", "w").close()
    deadline = time.monotonic() + 90
    count = 0
    while time.monotonic() < deadline:
        count += 1
        if count % 10000 == 0 and os.path.exists(path):
            return "spun"
    return "gave up"


def hold_until(path):
    open(path + ".started", "w").close()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if os.path.exists(path):
            return "released"
        time.sleep(0.005)
    return "gave up"


def record(tag):
    with open(RECORD, "a") as out:
        out.write(tag + "\n")
    return tag


def reverse(data):
    return bytes(reversed(data))


def tick(count):
    for i in range(count):
        yield i
"#;

/// A runtime's timer, boxed so one test body serves every runtime.
type Sleep = fn(Duration) -> Pin<Box<dyn Future<Output = ()>>>;

fn smol_sleep(duration: Duration) -> Pin<Box<dyn Future<Output = ()>>> {
    Box::pin(async move {
        smol::Timer::after(duration).await;
    })
}

fn async_std_sleep(duration: Duration) -> Pin<Box<dyn Future<Output = ()>>> {
    Box::pin(async_std::task::sleep(duration))
}

struct Plugin {
    handle: PythonPluginHandle,
    root: tempfile::TempDir,
    record: PathBuf,
}

fn start(tier: &str, options: LoadOptions) -> Plugin {
    let root = tempfile::tempdir().expect("tempdir");
    let record = root.path().join("record");
    let module = PLUGIN
        .replace("HASH", &format!("{:#x}", RUNTIMES.interface_hash))
        .replace(
            "RECORD = None",
            &format!("RECORD = {:?}", record.display().to_string()),
        );
    let dir = support::write_plugin(root.path(), "runtimes", &[("runtimes.py", &module)]);
    let handle = PythonPluginHandle::start(
        PluginSource::new("runtimes", "1.0.0", &dir, "runtimes"),
        &RUNTIMES,
        &options,
    )
    .unwrap_or_else(|error| panic!("{tier}: {error}"));
    Plugin {
        handle,
        root,
        record,
    }
}

fn index(name: &str) -> usize {
    RUNTIMES.method_index(name).expect("method of Runtimes")
}

fn path_args(path: &Path) -> Vec<u8> {
    json!([path.display().to_string()]).to_string().into_bytes()
}

fn decoded(result: Result<Vec<u8>, CallError>) -> Value {
    serde_json::from_slice(&result.expect("call succeeds")).expect("JSON result")
}

/// Waits, on the executor's timer, until `<path>.started` exists.
async fn started(path: &Path, sleep: Sleep) {
    let marker = PathBuf::from(format!("{}.started", path.display()));
    while !marker.exists() {
        sleep(Duration::from_millis(5)).await;
    }
}

/// One CPU-bound call (`spin_until`) on one instance, polled on this thread alongside: the timer
/// ticking while it runs, 200 typed and 200 raw handle calls, 100 async-client calls and a
/// 1,000-item stream, all concurrent; only then is the stop file written, by this same thread.
async fn keeps_serving_while_a_cpu_bound_call_runs(
    tier: &str,
    handle: &PythonPluginHandle,
    stop: &Path,
    sleep: Sleep,
) {
    let spinning = Cell::new(true);
    let spinner = async {
        let result = handle
            .call_typed_json_async(index("spin_until"), path_args(stop))
            .await;
        spinning.set(false);
        result
    };
    let rest = async {
        started(stop, sleep).await;
        for _ in 0..10 {
            sleep(Duration::from_millis(5)).await;
        }
        // Opened first, so it takes the second instance; the calls queue for the third.
        // Polled as a `futures::Stream` (it is an `Iterator` too, hence the explicit trait).
        let stream = StreamExt::collect::<Vec<Result<u64, CallError>>>(
            RuntimesClient(handle).tick(1000).expect("the stream opens"),
        );
        let typed =
            join_all((0..200u64).map(|n| {
                handle.call_typed_json_async(index("echo"), json!([n]).to_string().into())
            }));
        let raw =
            join_all((0..200u8).map(|n| handle.call_raw_async(index("reverse"), vec![n, 1, 2])));
        let client = RuntimesAsyncClient(handle.clone());
        let clients = join_all((0..100u64).map(|n| client.echo(n)));
        let (streamed, typed, raw, clients) = join4(stream, typed, raw, clients).await;
        let streamed: Vec<u64> = streamed
            .into_iter()
            .map(|item| item.expect("streamed item"))
            .collect();
        assert_eq!(streamed, (0..1000).collect::<Vec<u64>>(), "{tier}");
        for (n, result) in typed.into_iter().enumerate() {
            assert_eq!(decoded(result), json!(n), "{tier}");
        }
        for (n, result) in (0u8..).zip(raw) {
            assert_eq!(result.expect("raw call"), [2, 1, n], "{tier}");
        }
        for (n, result) in (0u64..).zip(clients) {
            assert_eq!(result.expect("client call"), n, "{tier}");
        }
        assert!(
            spinning.get(),
            "{tier}: the CPU-bound call ended before its stop file was written"
        );
        std::fs::write(stop, b"").expect("stop file");
    };
    let (spun, ()) = join(spinner, rest).await;
    assert_eq!(decoded(spun), json!("spun"), "{tier}");
}

/// The only instance is held (`hold_until`); of two calls queued behind it, the dropped one never
/// runs, the other (through the async client) does. The release file is written by this thread
/// while the held call's future is polled.
async fn dropping_a_queued_call_cancels_it(
    tier: &str,
    handle: &PythonPluginHandle,
    release: &Path,
    sleep: Sleep,
) {
    let held = handle.call_typed_json_async(index("hold_until"), path_args(release));
    let rest = async {
        started(release, sleep).await;
        let dropped =
            handle.call_typed_json_async(index("record"), json!(["dropped"]).to_string().into());
        let kept = RuntimesAsyncClient(handle.clone()).record("kept".into());
        drop(dropped);
        sleep(Duration::from_millis(20)).await;
        std::fs::write(release, b"").expect("release file");
        kept.await
    };
    let (held, kept) = join(held, rest).await;
    assert_eq!(decoded(held), json!("released"), "{tier}");
    assert_eq!(kept.expect("kept call"), "kept", "{tier}");
}

fn recorded(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Runs the "keeps serving" body in both tiers under `block_on`.
fn keeps_serving_under(
    runtime: &'static str,
    block_on: fn(Pin<Box<dyn Future<Output = ()> + '_>>),
    sleep: Sleep,
) {
    for (tier, options) in support::both_tiers() {
        let plugin = start(tier, options.instances(3));
        let stop = plugin.root.path().join("stop");
        let handle = plugin.handle.clone();
        support::bounded(&format!("{runtime}, {tier}"), move || {
            block_on(Box::pin(keeps_serving_while_a_cpu_bound_call_runs(
                tier, &handle, &stop, sleep,
            )))
        });
    }
}

/// Runs the "dropping cancels" body in both tiers under `block_on`.
fn dropping_cancels_under(
    runtime: &'static str,
    block_on: fn(Pin<Box<dyn Future<Output = ()> + '_>>),
    sleep: Sleep,
) {
    for (tier, options) in support::both_tiers() {
        let plugin = start(tier, options);
        let release = plugin.root.path().join("release");
        let handle = plugin.handle.clone();
        support::bounded(&format!("{runtime}, {tier}"), move || {
            block_on(Box::pin(dropping_a_queued_call_cancels_it(
                tier, &handle, &release, sleep,
            )))
        });
        assert_eq!(
            recorded(&plugin.record),
            ["kept"],
            "{runtime}, {tier}: the dropped call never ran"
        );
    }
}

#[test]
fn smol_keeps_serving_on_one_thread_while_a_cpu_bound_call_runs() {
    keeps_serving_under("smol", |body| smol::block_on(body), smol_sleep);
}

#[test]
fn async_std_keeps_serving_on_one_thread_while_a_cpu_bound_call_runs() {
    keeps_serving_under(
        "async-std",
        |body| async_std::task::block_on(body),
        async_std_sleep,
    );
}

#[test]
fn smol_dropping_a_queued_call_cancels_it() {
    dropping_cancels_under("smol", |body| smol::block_on(body), smol_sleep);
}

#[test]
fn async_std_dropping_a_queued_call_cancels_it() {
    dropping_cancels_under(
        "async-std",
        |body| async_std::task::block_on(body),
        async_std_sleep,
    );
}
