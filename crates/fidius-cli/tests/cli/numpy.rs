//! Issue #9's acceptance tests, with real numpy wheels from PyPI: plugins vendoring numpy are
//! routed to the process tier automatically, two numpy versions load into one host, a worker that
//! exits or segfaults costs one call, and `fidius call` / `fidius package inspect` show the tier.
//!
//! These tests need network access to PyPI (or pip's cache): `fidius pack` pip-installs numpy
//! 2.1.3 and 2.2.6 once per test run, into a directory the tests share.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

use fidius_core::CallError;
use fidius_host::{LoadOptions, PluginCall, PluginHost, PythonPluginHandle, Tier, WorkerCommand};

use crate::support::{fails_with, fidius, stderr, stdout, succeeds, TestResult};

pub(crate) mod numeric {
    include!("../fixtures/numeric.rs");
}
use numeric::__fidius_Numeric::Numeric_PYTHON_DESCRIPTOR;
use numeric::NumericClient;

pub(crate) const INTERFACE: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/numeric.rs");

/// The two plugins: name and the numpy each pins. Both versions have CPython 3.13 wheels.
const PLUGINS: [(&str, &str); 2] = [("numeric-a", "2.1.3"), ("numeric-b", "2.2.6")];

/// The module that makes numpy unusable in a sub-interpreter (single-phase init).
const NUMPY_CORE: &str = "numpy._core._multiarray_umath";

/// How the tier reason of a packed numpy plugin goes on after `isolation = "auto" and N of N
/// compiled extension module(s)`: the recorded probe decided, and it names the numpy package.
const RECORDED: &str =
    "cannot run in a sub-interpreter (recorded in extensions.toml): package `numpy`";

/// The generated stub's bodies, and what the plugins put there.
const BODIES: [(&str, &str); 3] = [
    (
        "\"\"\"The `numpy.__version__` the plugin imported.\"\"\"\n    raise NotImplementedError",
        "\"\"\"The `numpy.__version__` the plugin imported.\"\"\"\n    return numpy.__version__",
    ),
    (
        "\"\"\"The mean of `values`, computed by numpy.\"\"\"\n    raise NotImplementedError",
        "\"\"\"The mean of `values`, computed by numpy.\"\"\"\n    \
         return float(numpy.mean(numpy.array(values, dtype=numpy.float64)))",
    ),
    (
        "`str(result)` if it sets `result`.\"\"\"\n    raise NotImplementedError",
        "`str(result)` if it sets `result`.\"\"\"\n    \
         namespace = {\"numpy\": numpy}\n    exec(code, namespace)\n    \
         return str(namespace.get(\"result\", \"\"))",
    ),
];

/// Both plugins, vendored and packed by the real `fidius pack`; their archives share one directory.
struct Packed {
    root: PathBuf,
    /// Where the `.fid` archives are (and nothing else): a host's search path.
    plugins: PathBuf,
}

impl Packed {
    fn dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    fn archive(&self, name: &str) -> PathBuf {
        self.plugins.join(format!("{name}-1.0.0.fid"))
    }
}

/// Packs both plugins once per test run, in `CARGO_TARGET_TMPDIR/numpy-acceptance` (emptied
/// first, so every run vendors with pip afresh; pip's own cache keeps reruns fast). A failure is
/// reported to every test that needs the packages, without packing again.
fn packed() -> Result<&'static Packed, PackFailed> {
    static PACKED: OnceLock<Result<Packed, String>> = OnceLock::new();
    PACKED
        .get_or_init(pack_both)
        .as_ref()
        .map_err(|message| PackFailed(message.clone()))
}

/// Why the shared packages could not be made, shown as is (a test's `Err` is shown with `Debug`,
/// which would escape pip's output onto one line).
struct PackFailed(String);

impl std::fmt::Debug for PackFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Display for PackFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PackFailed {}

fn pack_both() -> Result<Packed, String> {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("numpy-acceptance");
    let io = |what: &str, error: std::io::Error| format!("{what} {}: {error}", root.display());
    if root.exists() {
        fs::remove_dir_all(&root).map_err(|e| io("cannot empty", e))?;
    }
    fs::create_dir_all(&root).map_err(|e| io("cannot create", e))?;
    let packed = Packed {
        plugins: root.join("plugins"),
        root,
    };
    for (name, numpy) in PLUGINS {
        write_plugin(&packed.dir(name), name, numpy)
            .map_err(|error| format!("cannot write plugin {name}: {error}"))?;
        let plugins = packed.plugins.to_string_lossy().into_owned();
        let pack = fidius(&packed.root, &["pack", name, "--out", &plugins]);
        if !pack.status.success() {
            return Err(format!(
                "`fidius pack {name}` failed ({}); it pip-installs numpy=={numpy}, so these tests \
                 need network access to PyPI (or numpy in pip's cache).\nstdout:\n{}\nstderr:\n{}",
                pack.status,
                stdout(&pack),
                stderr(&pack)
            ));
        }
        let out = stdout(&pack);
        if !out.contains("tier:        process if isolation = \"auto\"") {
            return Err(format!(
                "`fidius pack {name}` did not predict the process tier:\n{out}\n{}",
                stderr(&pack)
            ));
        }
    }
    Ok(packed)
}

/// A Numeric plugin generated with `fidius python-stub` and filled in, importing numpy at module
/// top, with `requirements.txt` pinning `numpy==VERSION` and no isolation key (auto).
fn write_plugin(dir: &Path, name: &str, numpy: &str) -> Result<(), Box<dyn std::error::Error>> {
    fs::create_dir_all(dir)?;
    let module = dir.join("numeric.py");
    let stub = fidius(
        dir,
        &[
            "python-stub",
            "--interface",
            INTERFACE,
            "--trait-name",
            "Numeric",
            "--out",
            &module.to_string_lossy(),
        ],
    );
    if !stub.status.success() {
        return Err(format!("python-stub failed: {}", stderr(&stub)).into());
    }
    let mut source = fs::read_to_string(&module)?.replace(
        "from fidius import method, PluginError\n",
        "import numpy\n\nfrom fidius import method, PluginError\n",
    );
    for (generated, body) in BODIES {
        if !source.contains(generated) {
            return Err(format!("the stub changed shape: no {generated:?} in\n{source}").into());
        }
        source = source.replace(generated, body);
    }
    fs::write(&module, source)?;
    fs::write(dir.join("requirements.txt"), format!("numpy=={numpy}\n"))?;
    fs::write(
        dir.join("package.toml"),
        format!(
            "[package]\nname = \"{name}\"\nversion = \"1.0.0\"\ninterface = \"Numeric\"\n\
             interface_version = 1\nruntime = \"python\"\n\n[python]\nentry_module = \"numeric\"\n\
             requirements = \"requirements.txt\"\n"
        ),
    )?;
    Ok(())
}

#[test]
fn pack_records_numpy_refusing_sub_interpreters_and_inspect_shows_the_process_tier() -> TestResult {
    let packed = packed()?;
    for (name, numpy) in PLUGINS {
        let record = fs::read_to_string(packed.dir(name).join("extensions.toml"))?;
        let core = format!("name = \"{NUMPY_CORE}\"\n");
        let entry = record
            .split("[[module]]")
            .find(|entry| entry.contains(&core))
            .ok_or_else(|| format!("{name}: no {NUMPY_CORE} in extensions.toml:\n{record}"))?;
        assert!(
            entry.contains("subinterpreter = false"),
            "{name}: {entry}\nin\n{record}"
        );
        // The recorded reason leads with the real cause, in one line, not with numpy's wrapper
        // ("you should not try to import numpy from its source directory" after a long banner).
        let reason = entry
            .lines()
            .find(|line| line.starts_with("reason = "))
            .ok_or_else(|| format!("{name}: no reason in {entry}"))?;
        let cause = reason.split(" (re-raised as ").next().unwrap_or_default();
        assert!(
            cause.starts_with("reason = \"importing its package `numpy` fails: ")
                && reason.contains(" (re-raised as ImportError: ")
                && !cause.contains("source directory")
                && !cause.contains("IMPORTANT")
                && reason.len() < 600,
            "{name}: {reason}"
        );

        let inspect = succeeds(&fidius(
            &packed.root,
            &[
                "package",
                "inspect",
                &packed.archive(name).to_string_lossy(),
            ],
        ));
        for expected in [
            format!("package:     {name} 1.0.0"),
            "entry:       numeric (isolation auto)".to_owned(),
            "extensions:  extensions.toml, probed with Python 3.".to_owned(),
            format!("  no   {NUMPY_CORE} ("),
            format!("vendored:\n  numpy {numpy}"),
            "tier:        process (isolation = \"auto\" and ".to_owned(),
        ] {
            assert!(
                inspect.contains(&expected),
                "missing {expected:?} in\n{inspect}"
            );
        }
        let tier = inspect
            .lines()
            .find(|line| line.starts_with("tier:"))
            .ok_or("inspect printed no tier")?;
        assert!(tier.contains(RECORDED), "{tier}");
        assert!(
            inspect
                .lines()
                .any(|line| line.contains(NUMPY_CORE) && line.ends_with("<- decides the tier")),
            "{inspect}"
        );
    }
    Ok(())
}

fn load(host: &PluginHost, name: &str) -> Result<PythonPluginHandle, fidius_host::LoadError> {
    host.load_python_with(
        name,
        &Numeric_PYTHON_DESCRIPTOR,
        LoadOptions::default()
            .worker_command(WorkerCommand::new(env!("CARGO_BIN_EXE_fidius")).arg("worker")),
    )
}

fn worker_pid(
    plugin: &NumericClient<PythonPluginHandle>,
) -> Result<u32, Box<dyn std::error::Error>> {
    Ok(plugin
        .run("import os; result = os.getpid()".into())?
        .parse()?)
}

/// `run(code)` must kill the worker with a status containing `status_part`.
fn expect_crash(plugin: &NumericClient<PythonPluginHandle>, code: &str, status_part: &str) {
    match plugin.run(code.into()) {
        Err(CallError::WorkerCrashed {
            plugin: name,
            method,
            status,
            ..
        }) => {
            assert_eq!(name, "numeric-a");
            assert_eq!(method, "run");
            assert!(status.to_string().contains(status_part), "{code}: {status}");
        }
        other => panic!("{code}: expected WorkerCrashed, got {other:?}"),
    }
}

#[test]
fn two_numpy_versions_run_in_one_host_in_worker_processes_that_survive_crashes() -> TestResult {
    let packed = packed()?;
    let cache = tempfile::tempdir()?;
    let host = PluginHost::builder()
        .search_path(&packed.plugins)
        .cache_dir(cache.path())
        .build()?;
    let a = load(&host, "numeric-a")?;
    let b = load(&host, "numeric-b")?;
    for handle in [&a, &b] {
        let tier = handle.tier();
        assert_eq!(tier.tier, Tier::Process, "{tier:?}");
        let reason = tier.reason.to_string();
        assert!(
            reason.starts_with("isolation = \"auto\" and ") && reason.contains(RECORDED),
            "{tier:?}"
        );
    }

    let a = NumericClient(a);
    let b = NumericClient(b);
    assert_eq!(a.numpy_version()?, "2.1.3");
    assert_eq!(b.numpy_version()?, "2.2.6");
    // The same call by index, as a host without the typed client makes it.
    let index = Numeric_PYTHON_DESCRIPTOR
        .method_index("numpy_version")
        .ok_or("no numpy_version")?;
    let raw = b.0.call_typed_json(index, b"[]")?;
    assert_eq!(serde_json::from_slice::<String>(&raw)?, "2.2.6");
    for plugin in [&a, &b] {
        assert_eq!(plugin.mean(vec![1.0, 2.0, 3.0, 4.0])?, 2.5);
    }
    let host_pid = std::process::id();
    let b_pid = worker_pid(&b)?;
    assert_ne!(worker_pid(&a)?, host_pid);
    assert_ne!(b_pid, host_pid);

    let crashes = [
        ("import os; os._exit(3)", "exit status 3"),
        ("import ctypes; ctypes.string_at(0)", "SIGSEGV"),
    ];
    for (count, (code, status_part)) in (1..).zip(crashes) {
        let before = worker_pid(&a)?;
        expect_crash(&a, code, status_part);
        assert_eq!(a.mean(vec![1.0, 2.0, 3.0, 4.0])?, 2.5, "after {code}");
        assert_ne!(
            worker_pid(&a)?,
            before,
            "a fresh worker serves after {code}"
        );
        assert_eq!(a.numpy_version()?, "2.1.3");
        let stats = a.0.stats();
        assert_eq!(stats.worker_crashes, count, "{stats:?}");
        assert_eq!(stats.worker_restarts, count, "{stats:?}");
    }

    // The other plugin never noticed: same worker, same numpy, no crashes.
    assert_eq!(worker_pid(&b)?, b_pid);
    assert_eq!(b.numpy_version()?, "2.2.6");
    assert_eq!(b.0.stats().worker_crashes, 0);
    Ok(())
}

/// `fidius call NAME ARCHIVE ARGS… --interface numeric.rs --trait-name Numeric`, unpacking into
/// `cache`.
fn fidius_call(packed: &Packed, cache: &Path, name: &str, args: &[&str]) -> Output {
    let archive = packed.archive(name).to_string_lossy().into_owned();
    let cache = cache.to_string_lossy().into_owned();
    let mut all = vec!["call", name, &archive];
    all.extend_from_slice(args);
    all.extend_from_slice(&[
        "--interface",
        INTERFACE,
        "--trait-name",
        "Numeric",
        "--cache-dir",
        &cache,
    ]);
    fidius(&packed.root, &all)
}

#[test]
fn fidius_call_routes_numpy_plugins_to_the_process_tier_and_reports_crashes() -> TestResult {
    let packed = packed()?;
    let cache = tempfile::tempdir()?;
    let call = |name: &str, args: &[&str]| fidius_call(packed, cache.path(), name, args);
    for (name, numpy) in PLUGINS {
        let output = call(name, &["numpy_version"]);
        assert_eq!(succeeds(&output).trim(), format!("\"{numpy}\""));
        let tier = stderr(&output);
        let tier = tier
            .lines()
            .find(|line| line.starts_with("tier: "))
            .ok_or_else(|| format!("no tier line on stderr:\n{tier}"))?;
        assert!(
            tier.starts_with("tier: process (isolation = \"auto\" and ") && tier.contains(RECORDED),
            "{tier}"
        );
    }
    let mean = call("numeric-a", &["mean", "[[1, 2, 3, 4]]"]);
    assert_eq!(succeeds(&mean).trim(), "2.5");

    let crash = call("numeric-b", &["run", r#"["import os; os._exit(3)"]"#]);
    fails_with(
        &crash,
        &[
            "worker process of plugin `numeric-b` died during `run`",
            "exit status 3",
        ],
    );
    assert!(
        stderr(&crash).contains("tier: process"),
        "{}",
        stderr(&crash)
    );
    Ok(())
}

/// Threads of process `pid` (`/proc/PID/status`).
fn threads_of(pid: u32) -> Result<u32, Box<dyn std::error::Error>> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let threads = status
        .lines()
        .find_map(|line| line.strip_prefix("Threads:"))
        .ok_or("no Threads line")?;
    Ok(threads.trim().parse()?)
}

/// Issue #18: a numpy plugin's workers forked from a warm template (served by `fidius worker`):
/// OpenBLAS's pool does not stop the fork, a forked worker gets the BLAS threads a cold one has,
/// numpy's global generator is reseeded per worker, and a crash is replaced from the template.
#[test]
fn numpy_workers_fork_from_a_warm_template_with_cold_workers_blas_threads() -> TestResult {
    let packed = packed()?;
    let cache = tempfile::tempdir()?;
    let host = PluginHost::builder()
        .search_path(&packed.plugins)
        .cache_dir(cache.path())
        .build()?;
    let worker = || WorkerCommand::new(env!("CARGO_BIN_EXE_fidius")).arg("worker");
    let forked = NumericClient(
        host.load_python_with(
            "numeric-a",
            &Numeric_PYTHON_DESCRIPTOR,
            LoadOptions::default()
                .worker_command(worker())
                .worker_template(true),
        )?,
    );
    let cold = NumericClient(host.load_python_with(
        "numeric-a",
        &Numeric_PYTHON_DESCRIPTOR,
        LoadOptions::default().worker_command(worker()),
    )?);
    for plugin in [&forked, &cold] {
        assert_eq!(plugin.mean(vec![1.0, 2.0, 3.0, 4.0])?, 2.5);
    }
    let stats = forked.0.stats();
    assert_eq!(
        (stats.worker_forks, stats.worker_template_fallbacks),
        (1, 0),
        "{stats:?}"
    );
    let pid = worker_pid(&forked)?;
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    assert!(
        !status.contains(&format!("PPid:\t{}\n", std::process::id())),
        "forked by the template, not spawned: {status}"
    );
    assert_eq!(threads_of(pid)?, threads_of(worker_pid(&cold)?)?);
    // The variable the template ran with is gone again.
    assert_eq!(
        forked.run("import os; result = os.environ.get('OPENBLAS_NUM_THREADS')".into())?,
        "None"
    );

    let draw = "import numpy; result = numpy.random.random()";
    let first = forked.run(draw.into())?;
    expect_crash(&forked, "import ctypes; ctypes.string_at(0)", "SIGSEGV");
    assert_eq!(forked.mean(vec![1.0, 3.0])?, 2.0);
    assert_ne!(worker_pid(&forked)?, pid);
    assert_ne!(
        forked.run(draw.into())?,
        first,
        "each forked worker draws its own numbers"
    );
    assert_eq!(forked.0.stats().worker_forks, 2);
    Ok(())
}
