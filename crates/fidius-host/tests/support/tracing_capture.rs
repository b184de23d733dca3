//! `tracing` events captured for assertions: one global subscriber per test binary (plugin
//! instances and workers log from threads of their own), recording one target's events.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

use tracing::field::{Field, Visit};
use tracing::Level;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

/// One captured `tracing` event: its level and every field, as text.
#[derive(Debug, Clone)]
pub struct Captured {
    pub level: Level,
    pub fields: BTreeMap<String, String>,
}

#[derive(Clone)]
struct Capture {
    target: &'static str,
    events: Arc<Mutex<Vec<Captured>>>,
}

struct FieldsToText<'a>(&'a mut BTreeMap<String, String>);

impl Visit for FieldsToText<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl<S: tracing::Subscriber> Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() != self.target {
            return;
        }
        let mut fields = BTreeMap::new();
        event.record(&mut FieldsToText(&mut fields));
        self.events.lock().unwrap().push(Captured {
            level: *event.metadata().level(),
            fields,
        });
    }
}

/// The events of `target` with field `plugin` = `plugin` so far, from every test of this binary.
/// The first call installs the global subscriber (at DEBUG) for `target`; a binary captures one
/// target only.
pub fn captured_events(target: &'static str, plugin: &str) -> Vec<Captured> {
    static CAPTURE: OnceLock<Capture> = OnceLock::new();
    let capture = CAPTURE.get_or_init(|| {
        let capture = Capture {
            target,
            events: Arc::default(),
        };
        let subscriber = tracing_subscriber::registry().with(
            capture
                .clone()
                .with_filter(tracing_subscriber::filter::LevelFilter::DEBUG),
        );
        tracing::subscriber::set_global_default(subscriber).expect("no other global subscriber");
        capture
    });
    assert_eq!(
        capture.target, target,
        "this binary already captures another target"
    );
    let events = capture.events.lock().unwrap();
    events
        .iter()
        .filter(|event| event.fields.get("plugin").map(String::as_str) == Some(plugin))
        .cloned()
        .collect()
}
