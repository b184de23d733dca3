//! Issue #14, finding 4: a recorded "cannot run in a sub-interpreter" verdict is binding. Real
//! packages from PyPI, vendored by `fidius pack`: protobuf (`google._upb._message`) and tomli
//! (mypyc-compiled), which crashed the host when forced into a sub-interpreter. Forced there through
//! the manifest, the load options or `fidius call --isolation`, loading fails with a `LoadError`
//! naming the modules and the recorded reason; without the record the probe at load says the same.
//! Every load runs in a child process (`fidius call`, or this test binary run again), so a
//! regression that kills its host fails a test instead of the test runner.
//!
//! These tests need network access to PyPI (or pip's cache).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

use fidius_core::manifest::Isolation;
use fidius_host::{LoadError, LoadOptions, PluginSource, PythonPluginHandle, WorkerCommand};

use crate::support::{fails_with, fidius, stderr, stdout, succeeds, TestResult};

use crate::numpy::numeric::__fidius_Numeric::Numeric_PYTHON_DESCRIPTOR;
use crate::numpy::numeric::NumericClient;
use crate::numpy::INTERFACE;

/// A plugin: its name, requirement, what it imports at module top (so the extension loads with
/// it), the version expression `numpy_version` returns, and its manifest isolation.
struct Plugin {
    name: &'static str,
    requirement: &'static str,
    import: &'static str,
    version: &'static str,
    isolation: &'static str,
    /// A module `extensions.toml` must record as refused.
    refused: &'static str,
}

const PLUGINS: [Plugin; 2] = [
    Plugin {
        name: "proto-forced",
        requirement: "protobuf==7.36.2",
        import: "import google.protobuf\nfrom google.protobuf import descriptor_pb2",
        version: "google.protobuf.__version__",
        isolation: "isolation = \"subinterpreter\"\n",
        refused: "google._upb._message",
    },
    Plugin {
        name: "toml-auto",
        requirement: "tomli==2.5.0",
        import: "import tomli",
        version: "str(tomli.loads('v = 1')['v'])",
        isolation: "",
        refused: "tomli._parser",
    },
];

struct Packed {
    root: PathBuf,
}

impl Packed {
    fn dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }
}

fn packed() -> Result<&'static Packed, String> {
    static PACKED: OnceLock<Result<Packed, String>> = OnceLock::new();
    PACKED.get_or_init(pack_all).as_ref().map_err(Clone::clone)
}

fn pack_all() -> Result<Packed, String> {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("forced-subinterpreter");
    if root.exists() {
        fs::remove_dir_all(&root).map_err(|e| format!("cannot empty {}: {e}", root.display()))?;
    }
    fs::create_dir_all(&root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
    for plugin in &PLUGINS {
        write_plugin(&root.join(plugin.name), plugin)
            .map_err(|error| format!("cannot write plugin {}: {error}", plugin.name))?;
        let pack = fidius(&root, &["pack", plugin.name, "--out", "archives"]);
        if !pack.status.success() {
            return Err(format!(
                "`fidius pack {}` failed ({}); it pip-installs {}, so these tests need network \
                 access to PyPI (or pip's cache).\nstdout:\n{}\nstderr:\n{}",
                plugin.name,
                pack.status,
                plugin.requirement,
                stdout(&pack),
                stderr(&pack)
            ));
        }
    }
    Ok(Packed { root })
}

/// A Numeric plugin made with `fidius python-stub` that imports `plugin.import` at module top.
fn write_plugin(dir: &Path, plugin: &Plugin) -> Result<(), Box<dyn std::error::Error>> {
    fs::create_dir_all(dir)?;
    let module = dir.join("numeric.py");
    let out = module.to_string_lossy().into_owned();
    let stub = fidius(
        dir,
        &[
            "python-stub",
            "--interface",
            INTERFACE,
            "--trait-name",
            "Numeric",
            "--out",
            &out,
        ],
    );
    if !stub.status.success() {
        return Err(format!("python-stub failed: {}", stderr(&stub)).into());
    }
    let mut source = fs::read_to_string(&module)?.replace(
        "from fidius import method, PluginError\n",
        &format!(
            "{}\n\nfrom fidius import method, PluginError\n",
            plugin.import
        ),
    );
    for body in [
        format!("return {}", plugin.version),
        "return sum(values) / len(values)".to_owned(),
        "namespace = {}\n    exec(code, namespace)\n    return str(namespace.get(\"result\", \"\"))"
            .to_owned(),
    ] {
        source = source.replacen("raise NotImplementedError", &body, 1);
    }
    fs::write(&module, source)?;
    fs::write(
        dir.join("requirements.txt"),
        format!("{}\n", plugin.requirement),
    )?;
    fs::write(
        dir.join("package.toml"),
        format!(
            "[package]\nname = \"{}\"\nversion = \"1.0.0\"\ninterface = \"Numeric\"\n\
             interface_version = 1\nruntime = \"python\"\n\n[python]\nentry_module = \"numeric\"\n\
             requirements = \"requirements.txt\"\n{}",
            plugin.name, plugin.isolation
        ),
    )?;
    Ok(())
}

/// `fidius call NAME DIR numpy_version [--isolation ISOLATION]` (a child process).
fn call(dir: &Path, name: &str, isolation: Option<&str>) -> Output {
    let cache = dir.with_extension("cache").to_string_lossy().into_owned();
    let path = dir.to_string_lossy().into_owned();
    let mut args = vec![
        "call",
        name,
        &path,
        "numpy_version",
        "--interface",
        INTERFACE,
        "--trait-name",
        "Numeric",
        "--cache-dir",
        &cache,
    ];
    if let Some(isolation) = isolation {
        args.extend(["--isolation", isolation]);
    }
    fidius(dir.parent().unwrap_or(dir), &args)
}

/// Asserts a clean refusal (exit 1, one error line, no signal) naming the plugin, the module and
/// the evidence.
fn assert_refused(output: &Output, plugin: &Plugin, origin: &str, evidence: &str) {
    let line = fails_with(
        output,
        &[
            &format!("plugin `{}`", plugin.name),
            &format!("isolation = \"subinterpreter\" in {origin}"),
            "cannot run in a sub-interpreter",
            evidence,
            "\"auto\" or \"process\"",
        ],
    );
    assert!(
        line.contains(plugin.refused)
            || line.contains(plugin.refused.split('.').next().unwrap_or_default()),
        "{line}"
    );
}

#[test]
fn forcing_recorded_refusals_into_a_sub_interpreter_fails_the_load_cleanly() -> TestResult {
    let packed = packed()?;
    for plugin in &PLUGINS {
        let record = fs::read_to_string(packed.dir(plugin.name).join("extensions.toml"))?;
        let entry = record
            .split("[[module]]")
            .find(|entry| entry.contains(&format!("name = \"{}\"\n", plugin.refused)))
            .ok_or_else(|| format!("{}: no {} in\n{record}", plugin.name, plugin.refused))?;
        assert!(entry.contains("subinterpreter = false"), "{entry}");
    }
    let [proto, toml] = &PLUGINS;
    // The manifest asks for it.
    assert_refused(
        &call(&packed.dir(proto.name), proto.name, None),
        proto,
        "package.toml",
        "(recorded in extensions.toml)",
    );
    // `fidius call --isolation` asks for it (the load options).
    assert_refused(
        &call(&packed.dir(toml.name), toml.name, Some("subinterpreter")),
        toml,
        "the load options",
        "(recorded in extensions.toml)",
    );
    // Without the record, the probe at load decides the same.
    for plugin in &PLUGINS {
        let copy = packed.root.join(format!("{}-unrecorded", plugin.name));
        copy_dir(&packed.dir(plugin.name), &copy)?;
        fs::remove_file(copy.join("extensions.toml"))?;
        assert_refused(
            &call(&copy, plugin.name, Some("subinterpreter")),
            plugin,
            "the load options",
            "(probed at load)",
        );
    }
    // And `auto` still runs them, in the process tier.
    let auto = call(&packed.dir(proto.name), proto.name, Some("auto"));
    assert_eq!(succeeds(&auto).trim(), "\"7.36.2\"");
    Ok(())
}

#[test]
fn inspect_says_a_forced_sub_interpreter_load_will_fail() -> TestResult {
    let packed = packed()?;
    let [proto, _] = &PLUGINS;
    let dir = packed.dir(proto.name).to_string_lossy().into_owned();
    let inspect = succeeds(&fidius(&packed.root, &["package", "inspect", &dir]));
    let tier = inspect
        .lines()
        .find(|line| line.starts_with("tier:"))
        .ok_or("inspect printed no tier")?;
    assert!(
        tier.starts_with("tier:        none: loading fails (isolation = \"subinterpreter\" in package.toml, but ")
            && tier.contains("cannot run in a sub-interpreter (recorded in extensions.toml)")
            && tier.contains("google"),
        "{inspect}"
    );
    assert!(
        inspect.lines().any(|line| line.contains(proto.refused)
            && line.ends_with("<- refuses isolation = \"subinterpreter\"")),
        "{inspect}"
    );
    assert!(!inspect.contains("decides the tier"), "{inspect}");
    Ok(())
}

/// Run by [`a_bystander_keeps_answering_beside_a_refused_forced_load`] in a child process: loads a
/// bystander, then the tomli plugin with `LoadOptions::isolation(Subinterpreter)`, then calls the
/// bystander. Prints `REFUSED: <error>` and `BYSTANDER: <answer>`.
#[test]
fn child_forced_load_beside_a_bystander() -> TestResult {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return Ok(());
    };
    let dir = PathBuf::from(dir);
    let worker = WorkerCommand::new(env!("CARGO_BIN_EXE_fidius")).arg("worker");
    let bystander_dir = dir.with_extension("bystander");
    write_bystander(&bystander_dir)?;
    let bystander = NumericClient(PythonPluginHandle::start(
        PluginSource::new("bystander", "1.0.0", &bystander_dir, "numeric"),
        &Numeric_PYTHON_DESCRIPTOR,
        &LoadOptions::default(),
    )?);
    let forced = PythonPluginHandle::start(
        PluginSource::new("toml-auto", "1.0.0", &dir, "numeric"),
        &Numeric_PYTHON_DESCRIPTOR,
        &LoadOptions::default()
            .isolation(Isolation::Subinterpreter)
            .worker_command(worker),
    );
    match forced {
        Err(error @ LoadError::SubinterpreterRefused { .. }) => println!("REFUSED: {error}"),
        Err(other) => println!("OTHER ERROR: {other}"),
        Ok(_) => println!("LOADED"),
    }
    println!("BYSTANDER: {}", bystander.mean(vec![1.0, 2.0, 6.0])?);
    Ok(())
}

const CHILD_ENV: &str = "FIDIUS_TEST_FORCED_LOAD_DIR";

fn write_bystander(dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    write_plugin(
        dir,
        &Plugin {
            name: "bystander",
            requirement: "",
            import: "import json",
            version: "'1'",
            isolation: "",
            refused: "",
        },
    )
}

#[test]
fn a_bystander_keeps_answering_beside_a_refused_forced_load() -> TestResult {
    let packed = packed()?;
    let output = std::process::Command::new(std::env::current_exe()?)
        .args([
            "--exact",
            "forced_subinterpreter::child_forced_load_beside_a_bystander",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, packed.dir("toml-auto"))
        .output()?;
    let out = stdout(&output);
    assert!(
        output.status.success(),
        "the child host ended with {}:\n{out}\n{}",
        output.status,
        stderr(&output)
    );
    assert!(
        out.contains(
            "REFUSED: plugin `toml-auto`: isolation = \"subinterpreter\" in the load options"
        ) && out.contains("tomli"),
        "{out}"
    );
    assert!(out.contains("BYSTANDER: 3"), "{out}");
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    for entry in walkdir::WalkDir::new(from) {
        let entry = entry?;
        let relative = entry
            .path()
            .strip_prefix(from)
            .map_err(std::io::Error::other)?;
        let target = to.join(relative);
        if entry.file_type().is_dir() {
            fs::create_dir_all(&target)?;
        } else {
            fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}
