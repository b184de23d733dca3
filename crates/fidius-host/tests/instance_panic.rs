//! An instance thread that panics while serving (here: the host's own `tracing` layer panics on a
//! plugin's output, which is drained on the instance thread) fails only the call it was serving,
//! with `Unavailable`, and is replaced: the plugin keeps answering instead of leaving its callers
//! waiting forever. Its own binary: the panicking layer is this process's global subscriber.

mod support;

use std::sync::mpsc;
use std::time::Duration;

use fidius_core::manifest::Isolation;
use fidius_host::{CallError, LoadOptions, PluginCall, PythonPluginHandle};
use serde_json::{json, Value};
use support::RETURN;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

const MARKER: &str = "fidius-test: this line makes the tracing layer panic";

/// A `tracing` layer with a bug: it panics on any event mentioning [`MARKER`].
struct PanicsOnMarker;

struct FindsMarker(bool);

impl Visit for FindsMarker {
    fn record_str(&mut self, _: &Field, value: &str) {
        self.0 |= value.contains(MARKER);
    }
    fn record_debug(&mut self, _: &Field, value: &dyn std::fmt::Debug) {
        self.0 |= format!("{value:?}").contains(MARKER);
    }
}

impl<S: tracing::Subscriber> Layer<S> for PanicsOnMarker {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let mut found = FindsMarker(false);
        event.record(&mut found);
        assert!(!found.0, "the host's tracing layer panics");
    }
}

/// `give_back(expression)`, on a thread of its own so a hang fails the test.
fn give_back(handle: &PythonPluginHandle, expression: &str) -> Result<Value, CallError> {
    let (sender, receiver) = mpsc::channel();
    let handle = handle.clone();
    let args = json!([expression]).to_string();
    std::thread::spawn(move || {
        let _ = sender.send(handle.call_typed_json(RETURN, args.as_bytes()));
    });
    let out = receiver
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("`{expression}` did not answer"))?;
    Ok(serde_json::from_slice(&out).expect("a JSON result"))
}

#[test]
fn an_instance_that_panics_while_serving_fails_its_call_and_is_replaced() {
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(PanicsOnMarker))
        .expect("the only global subscriber of this binary");
    let root = tempfile::tempdir().unwrap();
    let dir = support::tester_plugin(root.path(), "panicky", "one", 2);
    let handle = support::start_with(
        &dir,
        "panicky",
        &LoadOptions::default().isolation(Isolation::Subinterpreter),
    );
    assert_eq!(give_back(&handle, "6 * 7").unwrap(), json!(42));

    match give_back(&handle, &format!("print({MARKER:?}) or 1")) {
        Err(CallError::Unavailable { plugin }) => assert_eq!(plugin, "panicky"),
        other => panic!("the call whose instance panicked: {other:?}"),
    }
    // The one instance was replaced: the plugin answers, from a fresh interpreter.
    assert_eq!(give_back(&handle, "2 + 2").unwrap(), json!(4));
    let stats = handle.stats();
    assert_eq!(stats.instances, 1, "{stats:?}");
    assert_eq!(stats.retired_instances, 1, "{stats:?}");
}
