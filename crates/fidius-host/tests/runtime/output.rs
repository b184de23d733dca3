//! What plugins write reaches `tracing` (with plugin, version and instance) and the handle's recent
//! output, never the host's own streams.

use fidius_host::{OutputStream, PluginCall, OUTPUT_TARGET};
use serde_json::json;
use tracing::Level;

use crate::support::tracing_capture::{self, Captured};
use crate::support::{self, RETURN};

/// Plugin-output events of `plugin` so far, from every thread (worker threads included).
pub fn captured_events(plugin: &str) -> Vec<Captured> {
    tracing_capture::captured_events(OUTPUT_TARGET, plugin)
}

const NOISY_PLUGIN: &str = r#"
print("loading noisy")
import sys
from fidius import method

__interface_hash__ = 0x9e3779b97f4a7c15

@method
def whoami():
    return []

@method
def echo(data):
    return data

@method
def transform(value):
    return value

@method
def fail(kind):
    return None

@method
def give_back(expression):
    return eval(expression)

def fileno_of(stream):
    try:
        return stream.fileno()
    except Exception as exc:
        return type(exc).__name__

@method
def talk(what):
    print("hello from", what)
    print("two", "lines\nin one print", end="!\n")
    sys.stderr.write("warning on stderr\n")
    sys.__stdout__.write("even the original stdout\n")
    sys.stdout.write("no newline yet")
    sys.stdout.write(", now\n")
    import logging
    log = logging.getLogger("noisy.worker")
    log.debug("debug record %d", 1)
    log.info("info record")
    log.warning("warning record")
    try:
        1 / 0
    except ZeroDivisionError:
        log.exception("it failed")
    return "said it"
"#;

#[test]
fn print_stderr_and_logging_reach_tracing_with_plugin_fields_and_the_handle() {
    // Install the capturing subscriber before the plugin loads, so the load's output is seen too.
    captured_events("noisy");
    let root = tempfile::tempdir().unwrap();
    let dir = support::write_plugin(root.path(), "noisy", &[("tester.py", NOISY_PLUGIN)]);
    let handle = support::start(&dir, "noisy", 2);

    let talk = |what: &str| {
        let out = handle
            .call_typed_json(
                RETURN,
                json!([format!("talk({what:?})")]).to_string().as_bytes(),
            )
            .unwrap();
        assert_eq!(out, br#""said it""#);
    };
    // `give_back` evaluates in the module, so it can reach `talk`, which is not an interface method.
    talk("first");

    let lines = handle.recent_output();
    let texts: Vec<&str> = lines.iter().map(|line| line.text.as_str()).collect();
    let loaded = texts
        .iter()
        .filter(|text| **text == "loading noisy")
        .count();
    assert_eq!(
        loaded, 2,
        "each instance's import-time print is kept: {texts:?}"
    );
    let call_lines: Vec<_> = lines
        .iter()
        .filter(|line| line.text != "loading noisy")
        .collect();
    let expected = [
        (OutputStream::Stdout, Level::INFO, "hello from first"),
        (OutputStream::Stdout, Level::INFO, "two lines"),
        (OutputStream::Stdout, Level::INFO, "in one print!"),
        (OutputStream::Stderr, Level::WARN, "warning on stderr"),
        (
            OutputStream::Stdout,
            Level::INFO,
            "even the original stdout",
        ),
        (OutputStream::Stdout, Level::INFO, "no newline yet, now"),
    ];
    for (index, (stream, level, text)) in expected.iter().enumerate() {
        let line = call_lines[index];
        assert_eq!(
            (&line.stream, &line.level, line.text.as_str()),
            (stream, level, *text),
            "{call_lines:#?}"
        );
    }
    let logged: Vec<_> = call_lines[expected.len()..].iter().collect();
    let logger = OutputStream::Log {
        logger: "noisy.worker".to_owned(),
    };
    // The test subscriber enables DEBUG, so the plugin's root logger was set to DEBUG too.
    assert_eq!(logged[0].text, "debug record 1");
    assert_eq!(
        (&logged[0].stream, logged[0].level),
        (&logger, Level::DEBUG)
    );
    assert_eq!(
        (logged[1].text.as_str(), logged[1].level),
        ("info record", Level::INFO)
    );
    assert_eq!(
        (logged[2].text.as_str(), logged[2].level),
        ("warning record", Level::WARN)
    );
    assert_eq!(logged[3].level, Level::ERROR);
    assert!(
        logged[3].text.starts_with("it failed\nTraceback")
            && logged[3].text.contains("ZeroDivisionError"),
        "{}",
        logged[3].text
    );
    assert_eq!(logged.len(), 4, "{logged:#?}");
    let instance = call_lines[0].instance;
    assert!(instance < 2);
    assert!(call_lines.iter().all(|line| line.instance == instance));

    let events = captured_events("noisy");
    let event = events
        .iter()
        .find(|event| event.fields.get("message").map(String::as_str) == Some("hello from first"))
        .expect("the print reached tracing");
    assert_eq!(event.level, Level::INFO);
    assert_eq!(event.fields["version"], "1.0.0");
    assert_eq!(event.fields["instance"], instance.to_string());
    assert_eq!(event.fields["stream"], "stdout");
    let record = events
        .iter()
        .find(|event| event.fields.get("message").map(String::as_str) == Some("warning record"))
        .expect("the logging record reached tracing");
    assert_eq!(record.level, Level::WARN);
    assert_eq!(record.fields["stream"], "log");
    assert_eq!(record.fields["logger"], "noisy.worker");

    // The handle keeps a bounded window: the newest lines survive.
    for round in 0..40 {
        talk(&format!("round {round}"));
    }
    let lines = handle.recent_output();
    assert_eq!(lines.len(), 200);
    assert!(lines.iter().any(|line| line.text == "hello from round 39"));
    assert!(!lines.iter().any(|line| line.text == "hello from first"));
}

#[test]
fn plugin_streams_are_not_the_process_file_descriptors() {
    captured_events("quiet");
    let root = tempfile::tempdir().unwrap();
    let dir = support::write_plugin(root.path(), "quiet", &[("tester.py", NOISY_PLUGIN)]);
    let handle = support::start(&dir, "quiet", 1);
    let ask = |expression: &str| -> serde_json::Value {
        let out = handle
            .call_typed_json(RETURN, json!([expression]).to_string().as_bytes())
            .unwrap();
        serde_json::from_slice(&out).unwrap()
    };
    for stream in [
        "sys.stdout",
        "sys.stderr",
        "sys.__stdout__",
        "sys.__stderr__",
    ] {
        let refused = ask(&format!("fileno_of({stream})"));
        assert_eq!(refused, json!("UnsupportedOperation"));
        assert_eq!(ask(&format!("{stream}.isatty()")), json!(false));
    }
    // A flood of output in one call is capped, and the instance keeps serving.
    ask("[print(i) for i in range(20000)] and None");
    let lines = handle.recent_output();
    assert_eq!(lines.len(), 200);
    assert_eq!(lines.last().unwrap().text, "9999");
    assert!(captured_events("quiet").iter().any(|event| event
        .fields
        .get("dropped")
        .map(String::as_str)
        == Some("10000")));
    assert_eq!(ask("1 + 1"), json!(2));
}

#[test]
fn what_a_plugin_printed_before_its_import_failed_reaches_tracing() {
    captured_events("doomed");
    let root = tempfile::tempdir().unwrap();
    let dir = support::write_plugin(
        root.path(),
        "doomed",
        &[(
            "tester.py",
            "import sys\nprint('reading config')\nprint('config missing', file=sys.stderr)\nraise RuntimeError('no config')\n",
        )],
    );
    let error = fidius_host::PythonPluginHandle::start(
        fidius_host::PluginSource::new("doomed", "1.0.0", dir, "tester"),
        &support::TESTER,
        &fidius_host::LoadOptions::default(),
    )
    .err()
    .expect("the import raises");
    assert!(
        matches!(error, fidius_host::LoadError::Import { .. }),
        "{error}"
    );
    let events = captured_events("doomed");
    let lines: Vec<(&str, Level)> = events
        .iter()
        .map(|event| (event.fields["message"].as_str(), event.level))
        .collect();
    assert_eq!(
        lines,
        [
            ("reading config", Level::INFO),
            ("config missing", Level::WARN)
        ]
    );
}

/// Libraries that write bytes (`sys.stdout.buffer.write`, an `io.TextIOWrapper` around it) work:
/// the bytes are decoded as UTF-8 and routed like text, on both streams; `fileno()` still says
/// there is no file descriptor.
#[test]
fn bytes_written_to_the_streams_buffers_are_routed_like_text() {
    let root = tempfile::tempdir().unwrap();
    let bystander = support::start_tester(root.path(), "bytes-bystander", "1.0", 2, 1);
    let dir = support::write_plugin(root.path(), "bytes", &[("tester.py", NOISY_PLUGIN)]);
    let handle = support::start(&dir, "bytes", 1);
    let code = "import io, sys\n\
        sys.stdout.buffer.write(b'raw bytes\\n')\n\
        sys.stderr.buffer.write(b'to stderr \\xc3')\n\
        sys.stderr.buffer.write(b'\\xa9 split, bad \\xff\\n')\n\
        wrapper = io.TextIOWrapper(sys.stdout.buffer, encoding='utf-8', line_buffering=True)\n\
        wrapper.write('through a TextIOWrapper\\n')\n\
        wrapper.detach()\n\
        sys.stdout.buffer.flush()\n\
        result = [sys.stdout.buffer.writable(), fileno_of(sys.stdout.buffer), fileno_of(sys.stderr.buffer)]";
    let expression = format!("[exec({code:?}, globals()), result][1]");
    let out = handle
        .call_typed_json(RETURN, json!([expression]).to_string().as_bytes())
        .unwrap();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&out).unwrap(),
        json!([true, "UnsupportedOperation", "UnsupportedOperation"])
    );
    let lines: Vec<(OutputStream, String)> = handle
        .recent_output()
        .into_iter()
        .map(|line| (line.stream, line.text))
        .collect();
    assert_eq!(
        lines,
        [
            (OutputStream::Stdout, "loading noisy".to_owned()),
            (OutputStream::Stdout, "raw bytes".to_owned()),
            (
                OutputStream::Stderr,
                "to stderr \u{e9} split, bad \\xff".to_owned()
            ),
            (OutputStream::Stdout, "through a TextIOWrapper".to_owned()),
        ]
    );
    assert!(bystander
        .call_typed_json(support::TRANSFORM, b"[1]")
        .is_ok());
}
