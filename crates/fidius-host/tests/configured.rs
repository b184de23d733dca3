//! Configured instances: a plugin module's `__fidius_configure__(config)` builds the object that
//! serves the methods, once per instance, in both tiers, and again at each reload.

mod support;

use std::path::{Path, PathBuf};

use fidius_core::interface::{PythonInterfaceDescriptor, WireMode};
use fidius_host::{
    LoadError, LoadOptions, PluginCall, PluginHost, PluginSource, PythonPluginHandle,
};
use serde::Serialize;

use support::{arg, method};

const BYTE_PIPE_HASH: u64 = 0x5eed_0000_0000_0017;
const REVERSE: usize = 0;
const NAME: usize = 1;
const CONFIGURED: usize = 2;

/// The original tool's `BytePipe` (`reverse` raw, `name` typed), plus an optional method that
/// reports what the configured object knows.
static BYTE_PIPE: PythonInterfaceDescriptor = PythonInterfaceDescriptor {
    trait_name: "BytePipe",
    version: 1,
    interface_hash: BYTE_PIPE_HASH,
    schema_fingerprint: None,
    methods: &[
        method("reverse", WireMode::Raw, &[arg("data")], None),
        method("name", WireMode::TypedJson, &[], None),
        method("configured", WireMode::TypedJson, &[], Some(1)),
    ],
};

/// The original tool's configured plugin (its `tests/test-plugin-py-configured`): a class built by
/// `__fidius_configure__`, no module-level functions, no `fidius` import, no `@method`.
const CONFIGURED_PIPE: &str = r#"
__interface_hash__ = 0x5EED000000000017


class ConfiguredPipe:
    def __init__(self, config):
        self._name = config["display_name"]

    def reverse(self, data):
        return bytes(reversed(data))

    def name(self):
        return self._name


def __fidius_configure__(config):
    """Bind the config once and return the configured instance."""
    return ConfiguredPipe(config)
"#;

/// A configured plugin that records each `__fidius_configure__` call in the file its config names,
/// and counts them in module state (per instance: each has its own interpreter).
const COUNTING_PIPE: &str = r#"
from fidius import method

__interface_hash__ = 0x5EED000000000017
configure_calls = 0


class Pipe:
    def __init__(self, config):
        self.config = config

    @method
    def reverse(self, data):
        return bytes(reversed(data))

    @method
    def name(self):
        return self.config["display_name"]

    @method
    def configured(self):
        return {"config": self.config, "configure_calls": configure_calls}


def __fidius_configure__(config):
    global configure_calls
    configure_calls += 1
    with open(config["record"], "a") as record:
        record.write("configured\n")
    if config.get("fail"):
        raise ValueError("refusing config " + "x" * 500)
    return Pipe(config)
"#;

#[derive(Serialize)]
struct PipeConfig {
    display_name: String,
}

fn pipe_plugin(root: &Path, name: &str, module: &str) -> PathBuf {
    support::write_plugin(root, name, &[("pipe.py", module)])
}

fn start(dir: &Path, name: &str, options: &LoadOptions) -> Result<PythonPluginHandle, LoadError> {
    PythonPluginHandle::start(
        PluginSource::new(name, "1.0.0", dir, "pipe"),
        &BYTE_PIPE,
        options,
    )
}

fn records(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |text| text.lines().count())
}

#[test]
fn the_original_configured_pipe_loads_and_behaves_as_its_tests_assert() {
    for (tier, options) in support::both_tiers() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = pipe_plugin(root.path(), "py-configured-pipe", CONFIGURED_PIPE);
        let config = PipeConfig {
            display_name: "configured-pipe".into(),
        };
        let handle = start(&dir, "py-configured-pipe", &options.clone().config(&config))
            .unwrap_or_else(|error| panic!("{tier}: {error}"));
        let name: String =
            serde_json::from_slice(&handle.call_typed_json(NAME, b"[]").expect("name")).unwrap();
        assert_eq!(name, "configured-pipe", "{tier}");
        assert_eq!(handle.call_raw(REVERSE, b"abc").expect("reverse"), b"cba");
        assert!(!handle.implements(CONFIGURED), "{tier}");
        // Its methods are not decorated with @method: accepted with a warning, as the original did.
        assert!(!handle.info().warnings.is_empty(), "{tier}");

        // Without a configuration the module's own functions would be the methods: it has none.
        match start(&dir, "py-configured-pipe", &options) {
            Err(LoadError::ConfigRequired { method, .. }) => assert_eq!(method, "reverse"),
            Err(other) => panic!("{tier}: {other}"),
            Ok(_) => panic!("{tier}: loaded without its configuration"),
        }
    }
}

#[test]
fn configure_runs_once_per_instance_and_again_at_each_reload() {
    for (tier, options) in support::both_tiers() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = pipe_plugin(root.path(), "counting", COUNTING_PIPE);
        let record = root.path().join("record");
        let config = serde_json::json!({"display_name": "two", "record": record, "nested": [1, {"a": null}]});
        // Strict: the class's methods are decorated with @method, which counts for bound methods.
        let options = options.instances(2).strict(true).config(&config);
        let handle =
            start(&dir, "counting", &options).unwrap_or_else(|error| panic!("{tier}: {error}"));
        assert_eq!(records(&record), 2, "{tier}: one configure per instance");
        // Hold both instances busy in turn: each one was configured exactly once.
        for _ in 0..20 {
            let out: serde_json::Value =
                serde_json::from_slice(&handle.call_typed_json(CONFIGURED, b"[]").unwrap())
                    .unwrap();
            assert_eq!(out["configure_calls"], 1, "{tier}");
            assert_eq!(
                out["config"], config,
                "{tier}: the config arrives as JSON values"
            );
        }
        assert_eq!(records(&record), 2, "{tier}: calls do not configure again");

        handle
            .reload()
            .unwrap_or_else(|error| panic!("{tier}: {error}"));
        assert_eq!(
            records(&record),
            4,
            "{tier}: a reload configures its new instances"
        );
        let name: String =
            serde_json::from_slice(&handle.call_typed_json(NAME, b"[]").unwrap()).unwrap();
        assert_eq!(name, "two", "{tier}");
    }
}

#[test]
fn a_configure_hook_that_raises_fails_the_load_naming_the_plugin_and_the_hook() {
    for (tier, options) in support::both_tiers() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = pipe_plugin(root.path(), "refusing", COUNTING_PIPE);
        let config =
            serde_json::json!({"display_name": "x", "record": root.path().join("r"), "fail": true});
        let error = match start(&dir, "refusing", &options.config(&config)) {
            Err(error) => error,
            Ok(_) => panic!("{tier}: loaded although configure raised"),
        };
        let LoadError::Configure { exception, .. } = &error else {
            panic!("{tier}: {error}");
        };
        assert_eq!(exception.type_name, "ValueError", "{tier}");
        let shown = error.to_string();
        assert!(shown.contains("`refusing`"), "{tier}: {shown}");
        assert!(shown.contains("__fidius_configure__"), "{tier}: {shown}");
        assert!(shown.contains("refusing config"), "{tier}: {shown}");
        assert!(shown.len() < 200, "{tier}: a short excerpt, got {shown}");
    }
}

#[test]
fn a_config_for_a_module_without_a_configure_hook_is_refused() {
    let root = tempfile::tempdir().expect("tempdir");
    let plain = r#"
__interface_hash__ = 0x5EED000000000017

def reverse(data):
    return bytes(reversed(data))

def name():
    return "plain"
"#;
    let dir = pipe_plugin(root.path(), "plain", plain);
    for (tier, options) in support::both_tiers() {
        // Without a configuration, plain module functions serve as before.
        let handle = start(&dir, "plain", &options).unwrap_or_else(|e| panic!("{tier}: {e}"));
        assert_eq!(handle.call_raw(REVERSE, b"ab").unwrap(), b"ba");
        match start(&dir, "plain", &options.config(&())) {
            Err(LoadError::ConfigureHookMissing { module, .. }) => assert_eq!(module, "pipe"),
            Err(other) => panic!("{tier}: {other}"),
            Ok(_) => panic!("{tier}: the configuration was silently ignored"),
        }
    }
}

#[test]
fn a_null_configuration_still_calls_the_hook() {
    let root = tempfile::tempdir().expect("tempdir");
    let module = r#"
__interface_hash__ = 0x5EED000000000017

class Pipe:
    def __init__(self, config):
        self.seen = repr(config)
    def reverse(self, data):
        return data
    def name(self):
        return self.seen

def __fidius_configure__(config):
    return Pipe(config)
"#;
    let dir = pipe_plugin(root.path(), "nullable", module);
    for (tier, options) in support::both_tiers() {
        let handle = start(&dir, "nullable", &options.config(&()))
            .unwrap_or_else(|error| panic!("{tier}: {error}"));
        let name: String =
            serde_json::from_slice(&handle.call_typed_json(NAME, b"[]").unwrap()).unwrap();
        assert_eq!(name, "None", "{tier}");
    }
}

#[test]
fn a_host_loads_a_configured_package_by_name() {
    let root = tempfile::tempdir().expect("tempdir");
    let manifest = "[package]\nname = \"py-configured-pipe\"\nversion = \"0.1.0\"\n\
                    interface = \"BytePipe\"\ninterface_version = 1\nruntime = \"python\"\n\n\
                    [python]\nentry_module = \"pipe\"\n";
    support::write_plugin(
        root.path(),
        "py-configured-pipe",
        &[("package.toml", manifest), ("pipe.py", CONFIGURED_PIPE)],
    );
    let host = PluginHost::builder()
        .search_path(root.path())
        .cache_dir(root.path().join("cache"))
        .build()
        .expect("host");
    let handle = host
        .load_python_configured(
            "py-configured-pipe",
            &BYTE_PIPE,
            &PipeConfig {
                display_name: "by-name".into(),
            },
        )
        .expect("load_python_configured");
    let name: String =
        serde_json::from_slice(&handle.call_typed_json(NAME, b"[]").unwrap()).unwrap();
    assert_eq!(name, "by-name");
    assert_eq!(handle.call_raw(REVERSE, b"xyz").unwrap(), b"zyx");
    // A reload through the host keeps the configuration.
    assert_eq!(host.reload("py-configured-pipe").expect("reload"), 1);
    let name: String =
        serde_json::from_slice(&handle.call_typed_json(NAME, b"[]").unwrap()).unwrap();
    assert_eq!(name, "by-name");
}

#[test]
fn the_contract_check_applies_to_the_configured_object() {
    let root = tempfile::tempdir().expect("tempdir");
    // `reverse` takes no argument once `self` is bound: a check that counted `self` would pass it.
    let wrong_arity = r#"
__interface_hash__ = 0x5EED000000000017

class Pipe:
    def reverse(self):
        return b""
    def name(self):
        return "x"

def __fidius_configure__(config):
    return Pipe()
"#;
    let missing = r#"
__interface_hash__ = 0x5EED000000000017

def reverse(data):
    return data

class Pipe:
    def name(self):
        return "x"

def __fidius_configure__(config):
    return Pipe()
"#;
    let arity_dir = pipe_plugin(root.path(), "arity", wrong_arity);
    let missing_dir = pipe_plugin(root.path(), "missing", missing);
    let original_dir = pipe_plugin(root.path(), "original", CONFIGURED_PIPE);
    for (tier, options) in support::both_tiers() {
        match start(&arity_dir, "arity", &options.clone().config(&())) {
            Err(LoadError::ArityMismatch {
                method, expected, ..
            }) => assert_eq!((method.as_str(), expected), ("reverse", 1), "{tier}"),
            Err(other) => panic!("{tier}: {other}"),
            Ok(_) => panic!("{tier}: accepted a method that cannot take its argument"),
        }
        // The module's own `reverse` does not count: the configured object is what serves.
        match start(&missing_dir, "missing", &options.clone().config(&())) {
            Err(LoadError::MissingMethod { method, .. }) => assert_eq!(method, "reverse", "{tier}"),
            Err(other) => panic!("{tier}: {other}"),
            Ok(_) => panic!("{tier}: accepted an object without `reverse`"),
        }
        // Undecorated methods load with a warning, and strict refuses them.
        let config = PipeConfig {
            display_name: "strict".into(),
        };
        match start(
            &original_dir,
            "original",
            &options.strict(true).config(&config),
        ) {
            Err(LoadError::NotDecorated { .. }) => {}
            Err(other) => panic!("{tier}: {other}"),
            Ok(_) => panic!("{tier}: strict accepted undecorated functions"),
        }
    }
}
