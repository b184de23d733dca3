//! Streamed arguments (`items: Stream<T>`) and bidirectional methods in both tiers, from a real
//! CPython: the plugin reads a host iterator lazily (one item in flight), at the argument's
//! declared position; bad items, a panicking iterator, an early return, an early drop, a timeout
//! and an iterator kept past its call.

mod support;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fidius_core::Stream;
use fidius_host::{
    CallError, CallOptions, LoadOptions, PluginCall, PluginSource, PythonPluginHandle,
};

/// The test interface.
#[fidius_macro::plugin_interface(version = 1)]
pub trait Feeder {
    /// The sum of the items.
    fn total(&self, items: Stream<u64>) -> u64;
    /// The sum of the first `take` items (the stream declared second); reads no more.
    fn take_some(&self, take: u32, items: Stream<u64>) -> u64;
    /// Each item times `factor`, as it comes (bidirectional).
    fn scale(&self, factor: u64, items: Stream<u64>) -> Stream<u64>;
    /// The sum, or 0 if reading the items raised (the plugin swallows the host's error).
    fn careful(&self, items: Stream<u64>) -> u64;
    /// Keeps the iterator in module state and returns at once.
    fn keep(&self, items: Stream<u64>) -> u64;
    /// What `next()` on the kept iterator raises.
    fn use_kept(&self) -> String;
    fn ping(&self) -> String;
    /// Calls a host function from a bidirectional generator, through the streamed argument's own
    /// builtin (what a hostile plugin could do): yields the error's text, per item.
    fn sneaky(&self, items: Stream<u64>) -> Stream<String>;
}

use __fidius_Feeder::Feeder_PYTHON_DESCRIPTOR as FEEDER;

const TOTAL: usize = 0;
const TAKE_SOME: usize = 1;
const SCALE: usize = 2;
const CAREFUL: usize = 3;

const PLUGIN: &str = r#"
import fidius
from fidius import method

__interface__ = "Feeder"
__interface_version__ = 1
__interface_hash__ = HASH

kept = []

@method
def total(items):
    result = 0
    for item in items:
        result += item
    return result

@method
def take_some(take, items):
    if not isinstance(take, int):
        raise TypeError("take must be the int, got %r" % (take,))
    result = 0
    # zip reads `range` first: once it is exhausted, no further item is pulled.
    for _, item in zip(range(take), items):
        result += item
    return result

@method
def scale(factor, items):
    for item in items:
        yield item * factor

@method
def careful(items):
    try:
        return total(items)
    except fidius.HostError:
        return 0

@method
def keep(items):
    kept.append(items)
    return 0

@method
def use_kept():
    try:
        next(kept[-1])
    except RuntimeError as error:
        return str(error)
    return "no error"

@method
def ping():
    return "pong"

@method
def sneaky(items):
    for item in items:
        try:
            items._call("kv_get", (item,), fidius.HostError)
            yield "served"
        except fidius.HostError as error:
            yield str(error)
"#;

fn plugin_dir(root: &Path) -> PathBuf {
    let hash = format!("{:#018x}", FEEDER.interface_hash);
    support::write_plugin(
        root,
        "feeder",
        &[("feeder.py", &PLUGIN.replace("HASH", &hash))],
    )
}

fn start(dir: &Path, options: &LoadOptions) -> PythonPluginHandle {
    PythonPluginHandle::start(
        PluginSource::new("feeder", "1.0.0", dir, "feeder"),
        &FEEDER,
        options,
    )
    .unwrap_or_else(|error| panic!("loading the feeder: {error}"))
}

/// A host iterator over `0..count` that records how many items it made and whether it was dropped.
struct Counted {
    next: u64,
    count: u64,
    made: Arc<AtomicU64>,
    dropped: Arc<AtomicBool>,
}

impl Counted {
    fn new(count: u64) -> (Self, Arc<AtomicU64>, Arc<AtomicBool>) {
        let (made, dropped) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        (
            Self {
                next: 0,
                count,
                made: Arc::clone(&made),
                dropped: Arc::clone(&dropped),
            },
            made,
            dropped,
        )
    }
}

impl Iterator for Counted {
    type Item = u64;
    fn next(&mut self) -> Option<u64> {
        if self.next >= self.count {
            return None;
        }
        self.next += 1;
        self.made.fetch_add(1, Ordering::SeqCst);
        Some(self.next - 1)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

fn wait_until(what: impl Fn() -> bool) -> bool {
    let give_up = Instant::now() + Duration::from_secs(30);
    while Instant::now() < give_up {
        if what() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

fn options() -> CallOptions {
    CallOptions::default()
}

#[test]
fn a_million_streamed_items_are_pulled_lazily_in_both_tiers() {
    const MILLION: u64 = 1_000_000;
    for (tier, load) in support::both_tiers() {
        let root = tempfile::tempdir().unwrap();
        let handle = start(&plugin_dir(root.path()), &load);

        let (items, made, dropped) = Counted::new(MILLION);
        let sum: u64 = handle
            .call_with_stream_typed_json(TOTAL, b"[]", items, &options())
            .unwrap_or_else(|error| panic!("{tier}: {error}"));
        assert_eq!(sum, MILLION * (MILLION - 1) / 2, "{tier}");
        assert_eq!(made.load(Ordering::SeqCst), MILLION, "{tier}");
        assert!(
            dropped.load(Ordering::SeqCst),
            "{tier}: the iterator is dropped with the call"
        );

        // The plugin reads half and returns: the host made no more than it read (a host that
        // collected the iterator first would have made all million).
        let (items, made, dropped) = Counted::new(MILLION);
        let half: u64 = handle
            .call_with_stream_typed_json(TAKE_SOME, b"[500000]", items, &options())
            .unwrap_or_else(|error| panic!("{tier}: {error}"));
        assert_eq!(half, 500_000 * 499_999 / 2, "{tier}");
        assert_eq!(made.load(Ordering::SeqCst), 500_000, "{tier}: read ahead");
        assert!(dropped.load(Ordering::SeqCst), "{tier}");
        assert_eq!(handle.call_typed_json(6, b"[]").unwrap(), b"\"pong\"");
    }
}

#[test]
fn a_streamed_argument_declared_second_arrives_at_its_declared_position_in_both_tiers() {
    for (tier, load) in support::both_tiers() {
        let root = tempfile::tempdir().unwrap();
        let handle = start(&plugin_dir(root.path()), &load);
        // `take` (declared first) is the JSON array's only element; the items are the second
        // argument. The plugin stops after 3 (it returns before consuming all).
        let (items, made, _) = Counted::new(10);
        let sum: u64 = handle
            .call_with_stream_typed_json(TAKE_SOME, b"[3]", items, &options())
            .unwrap_or_else(|error| panic!("{tier}: {error}"));
        assert_eq!(sum, 3, "{tier}");
        assert_eq!(made.load(Ordering::SeqCst), 3, "{tier}");
        // The raw form: each item's JSON.
        let raw = handle
            .call_with_stream_raw(
                TAKE_SOME,
                b"[2]",
                vec![b"40".to_vec(), b"2".to_vec(), b"99".to_vec()],
                &options(),
            )
            .unwrap();
        assert_eq!(raw, b"42", "{tier}");
        // The other arguments are checked without the streamed one.
        match handle.call_with_stream_raw(TAKE_SOME, b"[]", Vec::new(), &options()) {
            Err(CallError::InvalidArguments { reason, .. }) => {
                assert!(reason.contains("expected 1 argument"), "{tier}: {reason}")
            }
            other => panic!("{tier}: {other:?}"),
        }
    }
}

#[test]
fn a_bidirectional_method_scales_each_item_and_an_early_drop_drops_the_input_in_both_tiers() {
    for (tier, load) in support::both_tiers() {
        let root = tempfile::tempdir().unwrap();
        let handle = start(&plugin_dir(root.path()), &load);
        let (items, made, dropped) = Counted::new(u64::MAX);
        let mut stream = handle
            .call_stream_with_stream_typed_json::<u64, u64, _>(SCALE, b"[3]", items, &options())
            .unwrap_or_else(|error| panic!("{tier}: {error}"));
        let first: Vec<u64> = stream
            .by_ref()
            .take(5)
            .collect::<Result<_, _>>()
            .unwrap_or_else(|error| panic!("{tier}: {error}"));
        assert_eq!(first, [0, 3, 6, 9, 12], "{tier}");
        drop(stream);
        assert!(
            wait_until(|| dropped.load(Ordering::SeqCst)),
            "{tier}: the input is dropped with the stream"
        );
        // Bounded by the window (16, twice that in flight in the process tier) plus one pull.
        assert!(made.load(Ordering::SeqCst) <= 40, "{tier}: {made:?}");
        // The instance serves again.
        let ping = handle.call_typed_json_with(
            6,
            b"[]",
            &CallOptions::default().timeout(Duration::from_secs(30)),
        );
        assert_eq!(ping.unwrap(), b"\"pong\"", "{tier}");

        // Read to the end.
        let all: Vec<u64> = handle
            .call_stream_with_stream_typed_json::<u64, u64, _>(SCALE, b"[2]", 0..100u64, &options())
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(all, (0..100).map(|i| i * 2).collect::<Vec<_>>(), "{tier}");
    }
}

#[test]
fn a_bad_item_or_a_panicking_iterator_fails_the_call_naming_the_item_in_both_tiers() {
    for (tier, load) in support::both_tiers() {
        let root = tempfile::tempdir().unwrap();
        let handle = start(&plugin_dir(root.path()), &load);
        let bad = vec![b"1".to_vec(), br#""two""#.to_vec(), b"3".to_vec()];
        for index in [TOTAL, CAREFUL] {
            // Also when the plugin catches the `HostError` its `next()` raised.
            match handle.call_with_stream_raw(index, b"[]", bad.clone(), &options()) {
                Err(CallError::InvalidArguments { method, reason }) => {
                    assert!(method == "total" || method == "careful");
                    assert!(reason.contains("`items`, item 2"), "{tier}: {reason}");
                    assert!(reason.contains("expected"), "{tier}: {reason}");
                }
                other => panic!("{tier}: {other:?}"),
            }
        }
        let panicking = (0..10u64).inspect(|&i| assert!(i < 4, "the host's iterator gives up"));
        match handle.call_with_stream_typed_json::<u64, u64, _>(TOTAL, b"[]", panicking, &options())
        {
            Err(CallError::InvalidArguments { reason, .. }) => {
                assert!(reason.contains("item 5"), "{tier}: {reason}");
                assert!(reason.contains("panicked"), "{tier}: {reason}");
            }
            other => panic!("{tier}: {other:?}"),
        }
        // In a bidirectional stream the bad item is the stream's error.
        let mut stream = handle
            .call_stream_with_stream_raw(SCALE, b"[1]", bad.clone(), &options())
            .unwrap();
        assert_eq!(stream.next().unwrap().unwrap(), b"1");
        match stream.next() {
            Some(Err(CallError::InvalidArguments { reason, .. })) => {
                assert!(reason.contains("item 2"), "{tier}: {reason}")
            }
            other => panic!("{tier}: {other:?}"),
        }
        assert!(stream.next().is_none(), "{tier}");
        assert_eq!(handle.call_typed_json(6, b"[]").unwrap(), b"\"pong\"");
    }
}

#[test]
fn wrong_entry_points_timeouts_and_a_kept_iterator_are_clear_errors_in_both_tiers() {
    for (tier, load) in support::both_tiers() {
        let root = tempfile::tempdir().unwrap();
        let handle = start(&plugin_dir(root.path()), &load);
        match handle.call_typed_json(TOTAL, b"[]") {
            Err(CallError::InvalidArguments { reason, .. }) => {
                assert!(reason.contains("call_with_stream_raw"), "{tier}: {reason}")
            }
            other => panic!("{tier}: {other:?}"),
        }
        assert!(matches!(
            handle.call_stream_raw(SCALE, b"[1]", &options()),
            Err(CallError::InvalidArguments { .. })
        ));
        assert!(matches!(
            handle.call_with_stream_raw(SCALE, b"[1]", Vec::new(), &options()),
            Err(CallError::InvalidArguments { .. })
        ));
        assert!(matches!(
            handle.call_stream_with_stream_raw(TOTAL, b"[]", Vec::new(), &options()),
            Err(CallError::InvalidArguments { .. })
        ));
        assert!(matches!(
            handle.call_with_stream_raw(6, b"[]", Vec::new(), &options()),
            Err(CallError::InvalidArguments { .. })
        ));

        // An endless input under a timeout: the call still times out.
        let endless = (0..).map(|i: u64| i.to_string().into_bytes());
        let timed = CallOptions::default().timeout(Duration::from_secs(2));
        match handle.call_with_stream_raw(TOTAL, b"[]", endless, &timed) {
            Err(CallError::Timeout { .. }) => {}
            other => panic!("{tier}: {other:?}"),
        }

        // An iterator kept past its call raises instead of reading another call's items.
        assert_eq!(
            handle
                .call_with_stream_raw(4, b"[]", vec![b"1".to_vec()], &options())
                .unwrap(),
            b"0"
        );
        let message: String =
            serde_json::from_slice(&handle.call_typed_json(5, b"[]").unwrap()).unwrap();
        assert!(
            message.contains("used after its call returned"),
            "{tier}: {message}"
        );
    }
}

#[test]
fn the_typed_client_passes_streamed_arguments_in_both_tiers() {
    for (tier, load) in support::both_tiers() {
        let root = tempfile::tempdir().unwrap();
        let handle = start(&plugin_dir(root.path()), &load);
        let client = FeederClient(&handle);
        assert_eq!(client.total(0..10u64).unwrap(), 45, "{tier}");
        assert_eq!(client.take_some(2, vec![5u64, 6, 7]).unwrap(), 11, "{tier}");
        let scaled: Vec<u64> = client
            .scale(2, [0u64, 1, 2])
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(scaled, [0, 2, 4], "{tier}");
        assert_eq!(client.ping().unwrap(), "pong");
    }
}

/// The original tool's streamed-argument plugins (`tests/test-plugin-py-client-stream`,
/// `tests/test-plugin-py-bidi-stream`), their Python as it is, each stream its method's only (so
/// first) argument: our rule (declared position) and the original's (always first) agree.
mod original {
    use super::*;

    #[fidius_macro::plugin_interface(version = 1)]
    pub trait Sink {
        fn load(&self, rows: fidius_core::Stream<u64>) -> u64;
    }

    #[fidius_macro::plugin_interface(version = 1)]
    pub trait Transformer {
        fn transform(&self, input: fidius_core::Stream<u64>) -> fidius_core::Stream<u64>;
    }

    const SINK: &str = "__interface__ = \"Sink\"\n__interface_version__ = 1\n__interface_hash__ = HASH\n\nfrom fidius import method\n\n\n@method\ndef load(rows):\n    return sum(rows)\n";
    const TRANSFORMER: &str = "__interface__ = \"Transformer\"\n__interface_version__ = 1\n__interface_hash__ = HASH\n\nfrom fidius import method\n\n\n@method\ndef transform(rows):\n    for r in rows:\n        yield r * 2\n";

    #[test]
    fn the_original_client_and_bidi_stream_plugins_behave_as_its_tests_assert_in_both_tiers() {
        for (tier, load) in support::both_tiers() {
            let root = tempfile::tempdir().unwrap();
            let hash = format!(
                "{:#018x}",
                __fidius_Sink::Sink_PYTHON_DESCRIPTOR.interface_hash
            );
            let dir = support::write_plugin(
                root.path(),
                "sink",
                &[("sink.py", &SINK.replace("HASH", &hash))],
            );
            let sink = PythonPluginHandle::start(
                PluginSource::new("sink", "1.0.0", &dir, "sink"),
                &__fidius_Sink::Sink_PYTHON_DESCRIPTOR,
                &load,
            )
            .unwrap_or_else(|error| panic!("{tier}: {error}"));
            assert_eq!(
                SinkClient(&sink).load(vec![1u64, 2, 3, 4, 5]).unwrap(),
                15,
                "{tier}"
            );

            let hash = format!(
                "{:#018x}",
                __fidius_Transformer::Transformer_PYTHON_DESCRIPTOR.interface_hash
            );
            let dir = support::write_plugin(
                root.path(),
                "transformer",
                &[("transformer.py", &TRANSFORMER.replace("HASH", &hash))],
            );
            let transformer = PythonPluginHandle::start(
                PluginSource::new("transformer", "1.0.0", &dir, "transformer"),
                &__fidius_Transformer::Transformer_PYTHON_DESCRIPTOR,
                &load,
            )
            .unwrap_or_else(|error| panic!("{tier}: {error}"));
            let client = TransformerClient(&transformer);
            let doubled: Vec<u64> = client
                .transform(1u64..=5)
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(doubled, [2, 4, 6, 8, 10], "{tier}");
            // An unbounded input: three outputs taken, then the stream dropped.
            let first: Vec<u64> = client
                .transform(0u64..)
                .unwrap()
                .take(3)
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(first, [0, 2, 4], "{tier}");
        }
    }
}

#[test]
fn a_bidirectional_generator_gets_no_host_functions_and_its_worker_lives_in_both_tiers() {
    for (tier, load) in support::both_tiers() {
        let root = tempfile::tempdir().unwrap();
        let handle = start(&plugin_dir(root.path()), &load);
        let said: Vec<String> = handle
            .call_stream_with_stream_typed_json::<u64, String, _>(7, b"[]", [1u64, 2], &options())
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap_or_else(|error| panic!("{tier}: {error}"));
        assert_eq!(said.len(), 2, "{tier}: {said:?}");
        for message in &said {
            assert!(
                message.contains("cannot be called from a streaming method"),
                "{tier}: {message}"
            );
        }
        assert_eq!(handle.call_typed_json(6, b"[]").unwrap(), b"\"pong\"");
        assert_eq!(handle.stats().worker_crashes, 0, "{tier}");
    }
}
