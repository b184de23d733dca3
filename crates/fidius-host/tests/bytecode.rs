//! No bytecode from a plugin tree is ever imported, in either tier: a `__pycache__` beside the
//! plugin's sources is never read (even an unchecked-hash pyc, which CPython would otherwise use
//! without looking at the source), and a sourceless `.pyc` is not importable.

mod support;

use std::path::Path;
use std::process::Command;

use fidius_core::manifest::Isolation;
use fidius_host::{LoadOptions, PluginCall, PluginHost, WorkerCommand};
use serde_json::{json, Value};
use support::{RETURN, TESTER, TRANSFORM};

const MANIFEST: &str = "[package]\nname = \"cached\"\nversion = \"1.0.0\"\ninterface = \"Tester\"\n\
                        interface_version = 1\nruntime = \"python\"\n\n[python]\nentry_module = \"tester\"\n";

/// Compiles `code` with the bootstrapped CPython into an unchecked-hash pyc at the place CPython
/// would look for the bytecode of `source` (or at `source` itself, with `sourceless`).
fn compile_pyc(code: &str, source: &Path, sourceless: bool, scratch: &Path) {
    let attacker = scratch.join("attacker.py");
    std::fs::write(&attacker, code).unwrap();
    let script = "import importlib.util, py_compile, sys\n\
                  attacker, source, sourceless = sys.argv[1:]\n\
                  target = source if sourceless == '1' else importlib.util.cache_from_source(source)\n\
                  py_compile.compile(attacker, cfile=target, dfile=source, doraise=True,\n\
                      invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)\n";
    let status = Command::new(env!("FIDIUS_BUILD_PYTHON"))
        .arg("-I")
        .arg("-c")
        .arg(script)
        .arg(&attacker)
        .arg(source)
        .arg(if sourceless { "1" } else { "0" })
        .status()
        .unwrap();
    assert!(status.success(), "py_compile failed");
}

fn options(isolation: Isolation) -> LoadOptions {
    let options = LoadOptions::default().isolation(isolation);
    match isolation {
        Isolation::Process => {
            options.worker_command(WorkerCommand::new(env!("CARGO_BIN_EXE_fidius-worker")))
        }
        _ => options,
    }
}

fn give_back(handle: &impl PluginCall, expression: &str) -> Result<Value, String> {
    handle
        .call_typed_json(RETURN, json!([expression]).to_string().as_bytes())
        .map(|out| serde_json::from_slice(&out).unwrap())
        .map_err(|error| format!("{error} / {error:?}"))
}

#[test]
fn pycache_and_sourceless_bytecode_in_a_plugin_tree_never_run_in_either_tier() {
    let root = tempfile::tempdir().unwrap();
    let marker = root.path().join("marker");
    let plugins = root.path().join("plugins");
    let plugin = support::write_plugin(
        &plugins,
        "cached",
        &[
            ("package.toml", MANIFEST),
            ("tester.py", support::TESTER_PLUGIN),
            (
                "vendor/conflictlib/__init__.py",
                &support::conflictlib("real", 2),
            ),
        ],
    );
    let attacker_module = format!(
        "open({:?}, 'a').write('bytecode ran\\n')\n{}",
        marker.display().to_string(),
        support::TESTER_PLUGIN
    );
    // The entry module and a vendored package: both would be read from `__pycache__`.
    compile_pyc(
        &attacker_module,
        &plugin.join("tester.py"),
        false,
        root.path(),
    );
    compile_pyc(
        &format!(
            "open({:?}, 'a').write('vendored bytecode ran\\n')\n{}",
            marker.display().to_string(),
            support::conflictlib("attacker", 100)
        ),
        &plugin.join("vendor/conflictlib/__init__.py"),
        false,
        root.path(),
    );
    assert!(plugin.join("__pycache__").is_dir());
    // A sourceless module next to the sources.
    compile_pyc(
        &format!(
            "open({:?}, 'a').write('sourceless ran\\n')\nVALUE = 1\n",
            marker.display().to_string()
        ),
        &plugin.join("helper.pyc"),
        true,
        root.path(),
    );

    let host = PluginHost::builder()
        .search_path(&plugins)
        .cache_dir(root.path().join("cache"))
        .build()
        .unwrap();
    for isolation in [Isolation::Subinterpreter, Isolation::Process] {
        let handle = host
            .load_python_with("cached", &TESTER, options(isolation))
            .unwrap_or_else(|error| panic!("{isolation:?}: {error}"));
        let out = handle.call_typed_json(TRANSFORM, b"[3]").unwrap();
        let out: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            out["version"], "real",
            "{isolation:?}: the vendored source ran"
        );
        assert_eq!(out["result"], 6);
        let error = give_back(&handle, "__import__('helper').VALUE")
            .expect_err("a sourceless .pyc in the plugin tree was importable");
        assert!(
            error.contains("No module named 'helper'"),
            "{isolation:?}: {error}"
        );
        // The standard library still imports (with its own bytecode).
        assert_eq!(
            give_back(&handle, "__import__('json').dumps([1])").unwrap(),
            "[1]"
        );
        assert!(
            !marker.exists(),
            "{isolation:?}: bytecode from the plugin tree ran: {}",
            std::fs::read_to_string(&marker).unwrap_or_default()
        );
    }
}
