//! An instance thread that panics while serving (here: the host's own `tracing` layer panics on a
//! plugin's output, which is drained on the instance thread) fails only the call it was serving,
//! with `Unavailable`, and is replaced: the plugin keeps answering instead of leaving its callers
//! waiting forever. The layer also panics on the host's "instance thread panicked" event, which is
//! logged while the instance thread unwinds: that second panic must not abort the process. The
//! scenario runs in a child process (this test binary again), so an abort fails the test; the
//! panicking layer is the child's global subscriber.

mod support;

use fidius_core::manifest::Isolation;
use fidius_host::{CallError, LoadOptions};
use serde_json::json;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

const MARKER: &str = "fidius-test: this line makes the tracing layer panic";
/// The host's event about the panicked instance, which the layer panics on too.
const HOST_EVENT: &str = "an instance thread panicked while serving";
/// Set in the child process that runs the scenario.
const CHILD: &str = "FIDIUS_TEST_INSTANCE_PANIC_CHILD";

/// A `tracing` layer with a bug: it panics on any event mentioning [`MARKER`] or [`HOST_EVENT`].
struct PanicsOnMarker;

struct FindsMarker(bool);

impl Visit for FindsMarker {
    fn record_str(&mut self, _: &Field, value: &str) {
        self.0 |= value.contains(MARKER) || value.contains(HOST_EVENT);
    }
    fn record_debug(&mut self, _: &Field, value: &dyn std::fmt::Debug) {
        let value = format!("{value:?}");
        self.0 |= value.contains(MARKER) || value.contains(HOST_EVENT);
    }
}

impl<S: tracing::Subscriber> Layer<S> for PanicsOnMarker {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let mut found = FindsMarker(false);
        event.record(&mut found);
        assert!(!found.0, "the host's tracing layer panics");
    }
}

#[test]
fn an_instance_that_panics_while_serving_fails_its_call_and_is_replaced() {
    if std::env::var_os(CHILD).is_some() {
        scenario();
        return;
    }
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "an_instance_that_panics_while_serving_fails_its_call_and_is_replaced",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "the scenario's process: {:?}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

fn scenario() {
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(PanicsOnMarker))
        .expect("the only global subscriber of this binary");
    let root = tempfile::tempdir().unwrap();
    let dir = support::tester_plugin(root.path(), "panicky", "one", 2);
    let handle = support::start_with(
        &dir,
        "panicky",
        &LoadOptions::default().isolation(Isolation::Subinterpreter),
    );
    assert_eq!(support::eval_bounded(&handle, "6 * 7").unwrap(), json!(42));

    match support::eval_bounded(&handle, &format!("print({MARKER:?}) or 1")) {
        Err(CallError::Unavailable { plugin }) => assert_eq!(plugin, "panicky"),
        other => panic!("the call whose instance panicked: {other:?}"),
    }
    // The one instance was replaced: the plugin answers, from a fresh interpreter.
    assert_eq!(support::eval_bounded(&handle, "2 + 2").unwrap(), json!(4));
    let stats = handle.stats();
    assert_eq!(stats.instances, 1, "{stats:?}");
    assert_eq!(stats.retired_instances, 1, "{stats:?}");
}
