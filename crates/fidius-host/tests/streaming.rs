//! Streamed results (`-> Stream<T>`) in both tiers, from a real CPython: a plugin's generator is
//! pulled lazily with bounded backpressure, dropping the stream closes it (its `finally` runs), an
//! exception mid-stream is one error item, and item and whole-stream timeouts end a stream.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fidius_core::manifest::Isolation;
use fidius_core::Stream;
use fidius_host::{
    CallError, CallOptions, LoadOptions, PluginCall, PluginHost, PluginSource, PluginStream,
    PythonPluginHandle, Tier, WorkerCommand,
};

/// The test interface; its items cross as JSON.
#[fidius_macro::plugin_interface(version = 1)]
pub trait Ticker {
    /// Yields 0, 1, ..., count - 1; its `finally` writes the file `cleanup-marker`.
    fn tick(&self, count: u32) -> Stream<u64>;
    /// Yields 0, 1, ... and records in the file `progress` how many it has made.
    fn walk(&self, count: u64) -> Stream<u64>;
    /// Yields `fail_at` items, then raises a `PluginError`.
    fn broken(&self, fail_at: u32) -> Stream<u64>;
    /// Yields `after` items, then spins in pure Python forever.
    fn stall(&self, after: u32) -> Stream<u64>;
    /// Returns a list, which streams like any iterable.
    fn squares(&self, count: u32) -> Stream<u64>;
    fn ping(&self) -> String;
}

use __fidius_Ticker::Ticker_PYTHON_DESCRIPTOR as TICKER;

const PLUGIN: &str = r#"
import os
from fidius import method, PluginError

__interface__ = "Ticker"
__interface_version__ = 1
__interface_hash__ = HASH

HERE = os.path.dirname(os.path.abspath(__file__))

def _record(name, text):
    temporary = os.path.join(HERE, name + ".tmp")
    with open(temporary, "w") as handle:
        handle.write(text)
    os.replace(temporary, os.path.join(HERE, name))

@method
def tick(count):
    try:
        i = 0
        while i < count:
            yield i
            i += 1
    finally:
        _record("cleanup-marker", "cleaned-up")

@method
def walk(count):
    for i in range(count):
        _record("progress", str(i + 1))
        yield i

@method
def broken(fail_at):
    for i in range(fail_at):
        yield i
    raise PluginError("BROKE", "failed after %d items" % fail_at)

@method
def stall(after):
    for i in range(after):
        yield i
    while True:
        pass

@method
def squares(count):
    return [i * i for i in range(count)]

@method
def ping():
    return "pong"
"#;

const TICK: usize = 0;

fn plugin_dir(root: &Path) -> PathBuf {
    let dir = root.join("ticker");
    std::fs::create_dir_all(&dir).unwrap();
    let hash = format!("{:#018x}", TICKER.interface_hash);
    std::fs::write(dir.join("ticker.py"), PLUGIN.replace("HASH", &hash)).unwrap();
    dir
}

/// Both tiers' options, named.
fn tiers() -> [(Tier, LoadOptions); 2] {
    [
        (
            Tier::Subinterpreter,
            LoadOptions::default().isolation(Isolation::Subinterpreter),
        ),
        (
            Tier::Process,
            LoadOptions::default()
                .isolation(Isolation::Process)
                .worker_command(WorkerCommand::new(env!("CARGO_BIN_EXE_fidius-worker"))),
        ),
    ]
}

fn start(dir: &Path, options: &LoadOptions) -> PythonPluginHandle {
    let handle = PythonPluginHandle::start(
        PluginSource::new("ticker", "1.0.0", dir, "ticker"),
        &TICKER,
        options,
    )
    .unwrap_or_else(|error| panic!("loading the ticker: {error}"));
    handle
}

/// Waits (bounded) until `path` exists.
fn wait_for_file(path: &Path) -> bool {
    let give_up = Instant::now() + Duration::from_secs(30);
    while Instant::now() < give_up {
        if path.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// A call that must be served within a bounded wait: the instance is free again.
fn ping(handle: &PythonPluginHandle) -> String {
    let options = CallOptions::default().timeout(Duration::from_secs(30));
    let out = handle
        .call_typed_json_with(5, b"[]", &options)
        .expect("ping after the stream");
    serde_json::from_slice(&out).expect("a string")
}

#[test]
fn a_generator_streams_all_its_items_through_the_typed_client_in_both_tiers() {
    for (tier, options) in tiers() {
        let root = tempfile::tempdir().unwrap();
        let dir = plugin_dir(root.path());
        let handle = start(&dir, &options);
        assert_eq!(handle.tier().tier, tier);
        let client = TickerClient(&handle);
        let items: Vec<u64> = client
            .tick(5)
            .expect("opens")
            .collect::<Result<_, _>>()
            .expect("every item");
        assert_eq!(items, [0, 1, 2, 3, 4], "{tier:?}");
        // Run to the end, the generator's `finally` ran too.
        assert!(wait_for_file(&dir.join("cleanup-marker")), "{tier:?}");
        let squares: Vec<u64> = client
            .squares(4)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(squares, [0, 1, 4, 9], "{tier:?}");
        let empty: Vec<u64> = client.tick(0).unwrap().collect::<Result<_, _>>().unwrap();
        assert!(empty.is_empty());
        assert_eq!(client.ping().unwrap(), "pong");

        // A streaming method is not a plain call, and a plain one is no stream.
        match handle.call_typed_json(TICK, b"[3]") {
            Err(CallError::InvalidArguments { method, reason }) => {
                assert_eq!(method, "tick");
                assert!(reason.contains("call_stream"), "{reason}");
            }
            other => panic!("{tier:?}: {other:?}"),
        }
        assert!(matches!(
            handle.call_stream_raw(5, b"[]", &CallOptions::default()),
            Err(CallError::InvalidArguments { .. })
        ));
        // Arguments are checked before the stream opens.
        assert!(matches!(
            handle.call_stream_raw(TICK, br#"["three"]"#, &CallOptions::default()),
            Err(CallError::InvalidArguments { .. })
        ));
        // The raw stream hands each item's JSON.
        let raw: Vec<Vec<u8>> = handle
            .call_stream_raw(TICK, b"[2]", &CallOptions::default())
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(raw, [b"0".to_vec(), b"1".to_vec()]);
    }
}

#[test]
fn ten_million_items_three_taken_then_dropped_ends_and_runs_the_generators_finally() {
    for (tier, options) in tiers() {
        let root = tempfile::tempdir().unwrap();
        let dir = plugin_dir(root.path());
        let handle = start(&dir, &options);
        let mut stream = TickerClient(&handle).tick(10_000_000).expect("opens");
        let first: Vec<u64> = stream
            .by_ref()
            .take(3)
            .collect::<Result<_, _>>()
            .expect("three items");
        assert_eq!(first, [0, 1, 2]);
        assert!(!dir.join("cleanup-marker").exists(), "{tier:?}");
        drop(stream);
        assert!(
            wait_for_file(&dir.join("cleanup-marker")),
            "{tier:?}: the generator's finally did not run after the drop"
        );
        // The one instance serves again: the generator did not run on to its end.
        assert_eq!(ping(&handle), "pong", "{tier:?}");
        assert_eq!(handle.stats().timeouts, 0);
    }
}

/// How many items the plugin had made, from its `progress` file.
fn progress(dir: &Path) -> u64 {
    std::fs::read_to_string(dir.join("progress"))
        .map(|text| text.trim().parse().expect("a count"))
        .unwrap_or(0)
}

#[test]
fn a_slow_consumer_keeps_the_plugin_at_most_a_window_ahead() {
    const WINDOW: usize = 4;
    for (tier, options) in tiers() {
        let root = tempfile::tempdir().unwrap();
        let dir = plugin_dir(root.path());
        let handle = start(&dir, &options.stream_window(WINDOW));
        let mut stream: PluginStream<u64> = TickerClient(&handle).walk(1_000_000).unwrap();
        let mut taken = 0u64;
        for round in 0..3 {
            for _ in 0..10 {
                assert_eq!(stream.next().unwrap().unwrap(), taken);
                taken += 1;
            }
            // Give an unbounded producer every chance to run ahead.
            std::thread::sleep(Duration::from_millis(300));
            let made = progress(&dir);
            // The window waiting for the consumer, one in the producer's hands, and in the
            // process tier the worker's window beside the host's.
            let bound = taken + 2 * WINDOW as u64 + 2;
            assert!(
                made >= taken && made <= bound,
                "{tier:?} round {round}: the plugin made {made} items, the consumer took {taken}"
            );
        }
        drop(stream);
        assert_eq!(ping(&handle), "pong");
        // With a wider window, it runs further ahead (the bound above is the window's doing).
        let wide = CallOptions::default().stream_window(64);
        let mut stream = handle
            .call_stream_typed_json::<u64>(1, b"[1000000]", &wide)
            .unwrap();
        assert_eq!(stream.next().unwrap().unwrap(), 0);
        let give_up = Instant::now() + Duration::from_secs(30);
        while progress(&dir) < 40 && Instant::now() < give_up {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(progress(&dir) >= 40, "{tier:?}: {}", progress(&dir));
    }
}

#[test]
fn a_stream_keeps_its_plugin_loaded_after_the_last_handle_is_dropped() {
    for (tier, options) in tiers() {
        let root = tempfile::tempdir().unwrap();
        let dir = plugin_dir(root.path());
        let handle = start(&dir, &options.stream_window(2));
        let stream = TickerClient(&handle).tick(100).unwrap();
        // The window is full long before this returns; shutting down must not wait for it.
        drop(handle);
        let items: Vec<u64> = stream.collect::<Result<_, _>>().expect("every item");
        assert_eq!(items.len(), 100, "{tier:?}");
    }
}

#[test]
fn an_exception_mid_stream_is_one_error_item_then_the_end() {
    for (tier, options) in tiers() {
        let root = tempfile::tempdir().unwrap();
        let handle = start(&plugin_dir(root.path()), &options);
        let mut stream = TickerClient(&handle).broken(3).unwrap();
        for expected in 0..3 {
            assert_eq!(stream.next().unwrap().unwrap(), expected);
        }
        match stream.next() {
            Some(Err(CallError::Plugin(error))) => {
                assert_eq!(error.code, "BROKE");
                assert_eq!(error.message, "failed after 3 items");
            }
            other => panic!("{tier:?}: {other:?}"),
        }
        assert!(stream.next().is_none(), "{tier:?}");
        assert!(stream.next().is_none());
        assert_eq!(ping(&handle), "pong");
    }
}

#[test]
fn item_and_whole_stream_timeouts_end_the_stream_and_the_instance_serves_again() {
    for (tier, options) in tiers() {
        let root = tempfile::tempdir().unwrap();
        let handle = start(&plugin_dir(root.path()), &options);
        // Per item: the call's timeout bounds each item.
        let per_item = CallOptions::default().timeout(Duration::from_millis(500));
        let mut stream = handle
            .call_stream_typed_json::<u64>(3, b"[2]", &per_item)
            .unwrap();
        assert_eq!(stream.next().unwrap().unwrap(), 0);
        assert_eq!(stream.next().unwrap().unwrap(), 1);
        match stream.next() {
            Some(Err(CallError::Timeout { method, after, .. })) => {
                assert_eq!(method, "stall");
                assert_eq!(after, Duration::from_millis(500));
            }
            other => panic!("{tier:?}: {other:?}"),
        }
        assert!(stream.next().is_none());
        drop(stream);
        assert_eq!(ping(&handle), "pong", "{tier:?}");

        // The whole stream: items keep coming, but not for longer than this.
        let whole = CallOptions::default().stream_timeout(Duration::from_millis(300));
        let stream = handle
            .call_stream_typed_json::<u64>(TICK, b"[4000000000]", &whole)
            .unwrap();
        let last = stream.last().expect("some item");
        assert!(
            matches!(last, Err(CallError::Timeout { after, .. }) if after == Duration::from_millis(300)),
            "{tier:?}: {last:?}"
        );
        assert_eq!(ping(&handle), "pong", "{tier:?}");
        assert_eq!(handle.stats().timeouts, 2, "{tier:?}");
    }
}

/// A minimal executor: polls a future on this thread, parking between wake-ups.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Arc::new(Unpark(std::thread::current())).into();
    let mut context = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        match future.as_mut().poll(&mut context) {
            Poll::Ready(output) => return output,
            Poll::Pending => std::thread::park(),
        }
    }
}

#[test]
fn a_stream_is_a_futures_stream_woken_by_its_items() {
    use futures_core::Stream as _;
    for (tier, options) in tiers() {
        let root = tempfile::tempdir().unwrap();
        let handle = start(&plugin_dir(root.path()), &options);
        let mut stream = TickerClient(&handle).tick(1000).unwrap();
        let mut items = Vec::new();
        block_on(std::future::poll_fn(|context| loop {
            match std::pin::Pin::new(&mut stream).poll_next(context) {
                std::task::Poll::Ready(Some(item)) => items.push(item.unwrap()),
                std::task::Poll::Ready(None) => return std::task::Poll::Ready(()),
                std::task::Poll::Pending => return std::task::Poll::Pending,
            }
        }));
        assert_eq!(items, (0..1000).collect::<Vec<u64>>(), "{tier:?}");
    }
}

/// The original tool's `tests/test-plugin-py-ticker` package, as it was written (no
/// `__interface__`, a `finally` writing a marker): found and loaded through a `PluginHost`.
#[test]
fn the_original_tools_ticker_package_loads_and_streams() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("py-ticker");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("package.toml"),
        "[package]\nname = \"py-ticker\"\nversion = \"0.1.0\"\ninterface = \"Ticker\"\n\
         interface_version = 1\nruntime = \"python\"\n\n[metadata]\ncategory = \"test\"\n\n\
         [python]\nentry_module = \"ticker\"\n",
    )
    .unwrap();
    let marker = dir.join("cleaned");
    let original = format!(
        "from fidius import method\n\n__interface_hash__ = {:#018X}\n\nimport os\n\n\
         _CLEANUP_MARKER = {:?}\n\n\n@method\ndef tick(count):\n    try:\n        i = 0\n        \
         while i < count:\n            yield i\n            i += 1\n    finally:\n        \
         if _CLEANUP_MARKER:\n            with open(_CLEANUP_MARKER, \"w\") as fh:\n                \
         fh.write(\"cleaned-up\")\n",
        original::__fidius_Ticker::Ticker_INTERFACE_HASH,
        marker.display().to_string()
    )
    .replace("0X", "0x");
    std::fs::write(dir.join("ticker.py"), original).unwrap();
    let host = PluginHost::builder()
        .search_path(root.path())
        .require_signature(false)
        .build()
        .unwrap();
    let handle = host
        .load_python(
            "py-ticker",
            &original::__fidius_Ticker::Ticker_PYTHON_DESCRIPTOR,
        )
        .expect("the original ticker loads");
    let client = original::TickerClient(&handle);
    let all: Vec<u64> = client.tick(5).unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(all, [0, 1, 2, 3, 4]);
    std::fs::remove_file(&marker).unwrap();
    let mut huge = client.tick(10_000_000).unwrap();
    let first: Vec<u64> = huge.by_ref().take(3).map(Result::unwrap).collect();
    assert_eq!(first, [0, 1, 2]);
    drop(huge);
    assert!(wait_for_file(&marker));
}

/// The original's `Ticker` trait (its `test-plugin-smoke`), as it was declared.
#[allow(
    dead_code,
    reason = "only the descriptor and client of this trait are used"
)]
mod original {
    #[fidius_macro::plugin_interface(version = 1, buffer = PluginAllocated)]
    pub trait Ticker: Send + Sync {
        fn tick(&self, count: u32) -> fidius_core::Stream<u64>;
    }
}
