//! Issue #9: `isolation = "auto"` probes compiled extensions in throwaway worker processes and picks
//! the process tier when one cannot run in a sub-interpreter. Every extension here is real: CPython's
//! own test modules, and small ones compiled with gcc at run time.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use fidius_core::extensions::{ExtensionRecord, PythonVersion, EXTENSIONS_FILE};
use fidius_core::manifest::Isolation;
use fidius_host::{
    choose_tier, probe_extensions, LoadError, ProbeError, ProbeOptions, Tier, WorkerCommand,
    WorkerNotFound,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn worker() -> WorkerCommand {
    WorkerCommand::new(env!("CARGO_BIN_EXE_fidius-worker"))
}

fn found_worker() -> Result<WorkerCommand, WorkerNotFound> {
    Ok(worker())
}

fn no_worker() -> Result<WorkerCommand, WorkerNotFound> {
    Err(WorkerNotFound {
        searched: vec![PathBuf::from("/nowhere/fidius-worker")],
    })
}

/// What the CPython fidius embeds says about itself.
struct Python {
    /// e.g. `.cpython-313-x86_64-linux-gnu.so`
    ext_suffix: String,
    include: PathBuf,
    /// Directory of the standard extension modules (`lib-dynload`).
    dynload: PathBuf,
}

fn python() -> Result<Python, Box<dyn std::error::Error>> {
    let executable = option_env!("FIDIUS_BUILD_PYTHON")
        .ok_or("fidius-ffi reported no Python executable at build time")?;
    let output = Command::new(executable)
        .args([
            "-I",
            "-c",
            "import os, sysconfig, _testmultiphase\n\
             print(sysconfig.get_config_var('EXT_SUFFIX'))\n\
             print(sysconfig.get_path('include'))\n\
             print(os.path.dirname(_testmultiphase.__file__))",
        ])
        .output()?;
    let text = String::from_utf8(output.stdout)?;
    let lines: Vec<&str> = text.lines().collect();
    match lines.as_slice() {
        [ext_suffix, include, dynload] => Ok(Python {
            ext_suffix: (*ext_suffix).to_owned(),
            include: PathBuf::from(include),
            dynload: PathBuf::from(dynload),
        }),
        _ => Err(format!(
            "{executable} did not describe itself: {text}{}",
            String::from_utf8_lossy(&output.stderr)
        )
        .into()),
    }
}

/// A plugin directory (only what tier choice looks at: `vendor/`).
fn plugin(root: &Path) -> Result<PathBuf, Box<dyn std::error::Error>> {
    let dir = root.join("plugin");
    fs::create_dir_all(dir.join("vendor"))?;
    fs::write(dir.join("plugin.py"), "")?;
    Ok(dir)
}

/// Copies CPython's own extension module `name` into `plugin/vendor/PACKAGE/` (or `vendor/`).
fn vendor_stdlib_module(py: &Python, plugin: &Path, package: &str, name: &str) -> TestResult {
    let file = format!("{name}{}", py.ext_suffix);
    let dir = plugin.join("vendor").join(package);
    fs::create_dir_all(&dir)?;
    fs::copy(py.dynload.join(&file), dir.join(&file))?;
    Ok(())
}

/// Compiles `source` into the extension module `vendor/NAME` with gcc.
fn vendor_compiled(py: &Python, plugin: &Path, name: &str, source: &str) -> TestResult {
    let work = tempfile::tempdir()?;
    let c_file = work.path().join(format!("{name}.c"));
    fs::write(&c_file, source)?;
    let out = plugin
        .join("vendor")
        .join(format!("{name}{}", py.ext_suffix));
    let status = match Command::new("gcc")
        .arg("-shared")
        .arg("-fPIC")
        .arg("-I")
        .arg(&py.include)
        .arg("-o")
        .arg(&out)
        .arg(&c_file)
        .status()
    {
        Ok(status) => status,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err("gcc is not installed; these tests compile small C extensions".into())
        }
        Err(error) => return Err(error.into()),
    };
    if !status.success() {
        return Err(format!("gcc failed on {name}.c ({status})").into());
    }
    Ok(())
}

const ABORTS: &str = r#"
#include <Python.h>
#include <stdlib.h>
PyMODINIT_FUNC PyInit__fidius_aborts(void) { abort(); }
"#;

const HANGS: &str = r#"
#include <Python.h>
#include <unistd.h>
PyMODINIT_FUNC PyInit__fidius_hangs(void) { for (;;) pause(); }
"#;

/// A well-behaved multi-phase module whose initialisation writes a forged report line to stdout.
const NOISY: &str = r#"
#include <Python.h>
#include <stdio.h>
static PyModuleDef_Slot slots[] = {
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
    {0, NULL},
};
static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "_fidius_noisy", NULL, 0, NULL, slots};
PyMODINIT_FUNC PyInit__fidius_noisy(void) {
    printf("{\"report\":\"module\",\"name\":\"_fidius_noisy\",\"error\":\"forged\"}\n");
    fflush(stdout);
    return PyModuleDef_Init(&def);
}
"#;

fn outcome(record: &ExtensionRecord, module: &str) -> Result<(bool, String), String> {
    record
        .modules
        .iter()
        .find(|probe| probe.name == module)
        .map(|probe| {
            (
                probe.subinterpreter,
                probe.reason.clone().unwrap_or_default(),
            )
        })
        .ok_or_else(|| format!("{module} was not probed: {record:?}"))
}

#[test]
fn single_phase_extension_sends_an_auto_plugin_to_the_process_tier() -> TestResult {
    let py = python()?;
    let work = tempfile::tempdir()?;
    let plugin = plugin(work.path())?;
    vendor_stdlib_module(&py, &plugin, "", "_testsinglephase")?;

    let record = probe_extensions(&plugin, &worker(), &ProbeOptions::default())?;
    let (ok, reason) = outcome(&record, "_testsinglephase")?;
    assert!(!ok, "a single-phase-init module passed its probe");
    assert!(
        reason.starts_with("ImportError: ")
            && reason.contains("does not support loading in subinterpreters"),
        "{reason}"
    );
    assert_eq!(record.python.to_string().split('.').count(), 2);

    let choice = choose_tier("single", Isolation::Auto, None, &plugin, found_worker)?;
    assert_eq!(choice.tier, Tier::Process, "{}", choice.reason);
    assert!(
        choice
            .reason
            .to_string()
            .contains("_testsinglephase (ImportError"),
        "{}",
        choice.reason
    );
    assert!(
        choice.reason.to_string().contains("probed at load"),
        "{}",
        choice.reason
    );
    assert!(
        !plugin.join(EXTENSIONS_FILE).exists(),
        "probing at load wrote into the plugin tree"
    );
    Ok(())
}

#[test]
fn multi_phase_extensions_keep_an_auto_plugin_in_sub_interpreters() -> TestResult {
    let py = python()?;
    let work = tempfile::tempdir()?;
    let plugin = plugin(work.path())?;
    vendor_stdlib_module(&py, &plugin, "", "_testmultiphase")?;
    // A module inside a package whose __init__ prints (to stdout) and a non-module shared library.
    vendor_stdlib_module(&py, &plugin, "fastpkg", "xxlimited")?;
    fs::write(
        plugin.join("vendor/fastpkg/__init__.py"),
        "print('{\"report\": \"ready\", \"python\": \"2.7\"}')\n",
    )?;
    fs::create_dir_all(plugin.join("vendor/fastpkg.libs"))?;
    fs::write(
        plugin.join("vendor/fastpkg.libs/libhelper-1a2b.so"),
        b"not a module",
    )?;

    let record = probe_extensions(&plugin, &worker(), &ProbeOptions::default())?;
    let names: Vec<&str> = record.modules.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["_testmultiphase", "fastpkg.xxlimited"]);
    assert!(
        record.modules.iter().all(|m| m.subinterpreter),
        "{record:?}"
    );

    let choice = choose_tier("multi", Isolation::Auto, None, &plugin, found_worker)?;
    assert_eq!(choice.tier, Tier::Subinterpreter, "{}", choice.reason);
    assert!(
        choice
            .reason
            .to_string()
            .contains("all 2 compiled extension"),
        "{}",
        choice.reason
    );

    // Remembered for this process: a second choice needs no worker.
    let again = choose_tier("multi", Isolation::Auto, None, &plugin, no_worker)?;
    assert_eq!(again, choice);
    Ok(())
}

#[test]
fn a_crashing_extension_is_a_no_and_the_rest_are_still_probed() -> TestResult {
    let py = python()?;
    let work = tempfile::tempdir()?;
    let plugin = plugin(work.path())?;
    vendor_compiled(&py, &plugin, "_fidius_aborts", ABORTS)?;
    vendor_compiled(&py, &plugin, "_fidius_noisy", NOISY)?;
    vendor_stdlib_module(&py, &plugin, "", "_testmultiphase")?;

    let record = probe_extensions(&plugin, &worker(), &ProbeOptions::default())?;
    let names: Vec<&str> = record.modules.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names,
        ["_fidius_aborts", "_fidius_noisy", "_testmultiphase"]
    );
    let (ok, reason) = outcome(&record, "_fidius_aborts")?;
    assert!(!ok);
    assert!(
        reason.starts_with("crashed: killed by signal 6 (SIGABRT)"),
        "{reason}"
    );
    // Probed by a fresh worker after the crash; its forged stdout line did not count.
    assert_eq!(outcome(&record, "_fidius_noisy")?, (true, String::new()));
    assert_eq!(outcome(&record, "_testmultiphase")?, (true, String::new()));

    let choice = choose_tier("crashy", Isolation::Auto, None, &plugin, found_worker)?;
    assert_eq!(choice.tier, Tier::Process);
    assert!(
        choice.reason.to_string().contains("1 of 3"),
        "{}",
        choice.reason
    );
    assert!(
        choice
            .reason
            .to_string()
            .contains("_fidius_aborts (crashed: killed by signal 6"),
        "{}",
        choice.reason
    );
    Ok(())
}

#[test]
fn an_extension_that_hangs_on_import_times_out() -> TestResult {
    let py = python()?;
    let work = tempfile::tempdir()?;
    let plugin = plugin(work.path())?;
    vendor_compiled(&py, &plugin, "_fidius_hangs", HANGS)?;
    vendor_stdlib_module(&py, &plugin, "", "_testmultiphase")?;

    let options = ProbeOptions::default().module_timeout(Duration::from_secs(2));
    let record = probe_extensions(&plugin, &worker(), &options)?;
    let (ok, reason) = outcome(&record, "_fidius_hangs")?;
    assert!(!ok);
    assert!(reason.starts_with("timed out"), "{reason}");
    assert_eq!(outcome(&record, "_testmultiphase")?, (true, String::new()));
    Ok(())
}

#[test]
fn a_matching_record_decides_without_probing_and_a_stale_one_is_ignored() -> TestResult {
    let py = python()?;
    let work = tempfile::tempdir()?;
    let plugin = plugin(work.path())?;
    vendor_stdlib_module(&py, &plugin, "", "_testmultiphase")?;
    let file = format!("vendor/_testmultiphase{}", py.ext_suffix);
    let host: PythonVersion = fidius_ffi::python_version().parse()?;

    // The record says "no" (a recorded result is trusted as is), and no worker is needed.
    let record = format!(
        "python = \"{host}\"\n\n[[module]]\nname = \"_testmultiphase\"\nfile = \"{file}\"\n\
         subinterpreter = false\nreason = \"ImportError: recorded at pack time\"\n"
    );
    fs::write(plugin.join(EXTENSIONS_FILE), &record)?;
    let choice = choose_tier("recorded", Isolation::Auto, None, &plugin, no_worker)?;
    assert_eq!(choice.tier, Tier::Process);
    assert!(
        choice
            .reason
            .to_string()
            .contains("recorded in extensions.toml"),
        "{}",
        choice.reason
    );
    assert!(
        choice.reason.to_string().contains("recorded at pack time"),
        "{}",
        choice.reason
    );

    // Probed with another Python: probe again, and say so when no worker can.
    fs::write(
        plugin.join(EXTENSIONS_FILE),
        record.replace(&format!("python = \"{host}\""), "python = \"3.99\""),
    )?;
    match choose_tier("stale", Isolation::Auto, None, &plugin, no_worker) {
        Err(LoadError::Probe { plugin, source }) => {
            assert_eq!(plugin, "stale");
            assert!(
                matches!(*source, ProbeError::WorkerNotFound(_)),
                "{source:?}"
            );
        }
        other => panic!("expected a probe error, got {other:?}"),
    }
    let choice = choose_tier("stale", Isolation::Auto, None, &plugin, found_worker)?;
    assert_eq!(choice.tier, Tier::Subinterpreter, "{}", choice.reason);
    assert!(
        choice.reason.to_string().contains("probed at load"),
        "{}",
        choice.reason
    );

    // An unreadable record is not trusted either.
    fs::write(plugin.join(EXTENSIONS_FILE), "python = 3\n")?;
    let choice = choose_tier("broken", Isolation::Auto, None, &plugin, found_worker)?;
    assert_eq!(choice.tier, Tier::Subinterpreter, "{}", choice.reason);
    Ok(())
}

#[test]
fn explicit_isolation_and_plugins_without_extensions_need_no_probe() -> TestResult {
    let py = python()?;
    let work = tempfile::tempdir()?;
    let pure = plugin(work.path())?;
    fs::write(pure.join("vendor/helper.py"), "")?;
    let choice = choose_tier("pure", Isolation::Auto, None, &pure, no_worker)?;
    assert_eq!(choice.tier, Tier::Subinterpreter);
    assert!(
        choice.reason.to_string().contains("no compiled extensions"),
        "{}",
        choice.reason
    );

    let choice = choose_tier("pinned", Isolation::Subinterpreter, None, &pure, no_worker)?;
    assert_eq!(choice.tier, Tier::Subinterpreter);
    assert_eq!(
        choice.reason.to_string(),
        "isolation = \"subinterpreter\" in package.toml"
    );
    vendor_stdlib_module(&py, &pure, "", "_testsinglephase")?;
    let choice = choose_tier(
        "pinned",
        Isolation::Subinterpreter,
        Some(Isolation::Process),
        &pure,
        no_worker,
    )?;
    assert_eq!(choice.tier, Tier::Process);
    assert_eq!(
        choice.reason.to_string(),
        "isolation = \"process\" in the load options"
    );
    Ok(())
}

/// Issue #14, finding 4: asking for a sub-interpreter does not skip the probe when the plugin has
/// compiled extensions; one that cannot run there is a `LoadError`, never an import in the host.
#[test]
fn a_sub_interpreter_asked_for_is_refused_when_the_probe_says_no() -> TestResult {
    let py = python()?;
    let work = tempfile::tempdir()?;
    let plugin = plugin(work.path())?;
    vendor_stdlib_module(&py, &plugin, "", "_testsinglephase")?;
    // No worker to probe with: the host cannot tell, so it does not guess.
    assert!(matches!(
        choose_tier(
            "pinned",
            Isolation::Subinterpreter,
            None,
            &plugin,
            no_worker
        ),
        Err(LoadError::Probe { .. })
    ));
    match choose_tier(
        "pinned",
        Isolation::Subinterpreter,
        None,
        &plugin,
        found_worker,
    ) {
        Err(LoadError::SubinterpreterRefused {
            plugin,
            origin,
            reason,
        }) => {
            assert_eq!(plugin, "pinned");
            assert_eq!(origin, fidius_host::IsolationOrigin::Manifest);
            assert!(
                reason.to_string().contains("_testsinglephase")
                    && reason.to_string().contains("(probed at load)"),
                "{reason}"
            );
        }
        other => panic!("expected SubinterpreterRefused, got {other:?}"),
    }
    // A module that imports there is no obstacle.
    let other = tempfile::tempdir()?;
    let allowed = self::plugin(other.path())?;
    vendor_stdlib_module(&py, &allowed, "", "_testmultiphase")?;
    let choice = choose_tier(
        "fine",
        Isolation::Subinterpreter,
        None,
        &allowed,
        found_worker,
    )?;
    assert_eq!(choice.tier, Tier::Subinterpreter, "{}", choice.reason);
    Ok(())
}

#[test]
fn a_worker_that_is_not_a_worker_is_an_error_not_a_verdict() -> TestResult {
    let py = python()?;
    let work = tempfile::tempdir()?;
    let plugin = plugin(work.path())?;
    vendor_stdlib_module(&py, &plugin, "", "_testmultiphase")?;
    // `true` exits 0 at once without reporting.
    let error = probe_extensions(
        &plugin,
        &WorkerCommand::new("true"),
        &ProbeOptions::default(),
    )
    .err()
    .ok_or("`true` passed for a probe worker")?;
    assert!(
        matches!(error, ProbeError::WorkerFailed { .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("ended before probing anything"),
        "{error}"
    );
    Ok(())
}

#[test]
fn a_package_that_cannot_be_imported_refuses_all_its_modules_with_one_probe() -> TestResult {
    let py = python()?;
    let work = tempfile::tempdir()?;
    let plugin = plugin(work.path())?;
    // Both modules would import on their own; the package around them re-raises a misleading
    // error from the real one, twice, as numpy does (a banner of many lines, then advice).
    fs::create_dir_all(plugin.join("vendor/pkg"))?;
    fs::write(
        plugin.join("vendor/pkg/__init__.py"),
        "try:\n    try:\n        raise ImportError('the real cause')\n    except ImportError as exc:\n        \
         raise ImportError('\\n\\nIMPORTANT: PLEASE READ THIS\\n\\n' + 'banner ' * 150) from exc\n\
         except ImportError as exc:\n    raise ImportError('misleading advice\\n  on two lines') from exc\n",
    )?;
    vendor_stdlib_module(&py, &plugin, "pkg", "_testmultiphase")?;
    vendor_stdlib_module(&py, &plugin, "pkg", "xxlimited")?;
    vendor_stdlib_module(&py, &plugin, "", "_testsinglephase")?;

    let record = probe_extensions(&plugin, &worker(), &ProbeOptions::default())?;
    for module in ["pkg._testmultiphase", "pkg.xxlimited"] {
        let (ok, reason) = outcome(&record, module)?;
        assert!(!ok, "{module}");
        assert_eq!(
            reason,
            "importing its package `pkg` fails: ImportError: the real cause (re-raised as \
             ImportError: IMPORTANT: PLEASE READ THIS, then as ImportError: misleading advice)"
        );
    }
    assert!(!outcome(&record, "_testsinglephase")?.0);
    let choice =
        fidius_host::TierChoice::auto_from_record(&record, fidius_host::Evidence::ProbedAtLoad);
    assert_eq!(choice.tier, Tier::Process);
    // One mention of the shared reason, for the package.
    assert_eq!(
        choice.reason.to_string().matches("the real cause").count(),
        1,
        "{}",
        choice.reason
    );
    assert!(
        choice
            .reason
            .to_string()
            .contains("package `pkg` (import fails: ImportError: the real cause"),
        "{}",
        choice.reason
    );
    Ok(())
}

/// The probe imports with the same source-only finder as both tiers: a package's `__init__` is
/// run from its source, never from an (unchecked-hash) `.pyc` in its `__pycache__`.
#[test]
fn the_probe_never_runs_bytecode_from_the_plugin_tree() -> TestResult {
    let py = python()?;
    let work = tempfile::tempdir()?;
    let plugin = plugin(work.path())?;
    let marker = work.path().join("marker");
    vendor_stdlib_module(&py, &plugin, "fastpkg", "xxlimited")?;
    let init = plugin.join("vendor/fastpkg/__init__.py");
    fs::write(&init, "VALUE = 1\n")?;
    let attacker = work.path().join("attacker.py");
    fs::write(
        &attacker,
        format!(
            "open({:?}, 'a').write('bytecode ran\\n')\n",
            marker.display().to_string()
        ),
    )?;
    let status = Command::new(option_env!("FIDIUS_BUILD_PYTHON").ok_or("no build Python")?)
        .args(["-I", "-c"])
        .arg(
            "import importlib.util, py_compile, sys\n\
             py_compile.compile(sys.argv[1], cfile=importlib.util.cache_from_source(sys.argv[2]),\n\
                 dfile=sys.argv[2], doraise=True,\n\
                 invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)",
        )
        .arg(&attacker)
        .arg(&init)
        .status()?;
    assert!(status.success(), "py_compile failed");
    assert!(plugin.join("vendor/fastpkg/__pycache__").is_dir());

    let record = probe_extensions(&plugin, &worker(), &ProbeOptions::default())?;
    let (ok, reason) = outcome(&record, "fastpkg.xxlimited")?;
    assert!(ok, "{reason}");
    assert!(
        !marker.exists(),
        "the probe ran bytecode from the plugin tree"
    );
    Ok(())
}

#[test]
fn the_probe_hands_the_tier_decision_typed_reasons() -> TestResult {
    use fidius_host::{Evidence, RefusedModules, TierReason};

    let py = python()?;
    let work = tempfile::tempdir()?;
    let plugin = plugin(work.path())?;
    fs::create_dir_all(plugin.join("vendor/pkg"))?;
    fs::write(
        plugin.join("vendor/pkg/__init__.py"),
        "raise ImportError('no sub-interpreters here')\n",
    )?;
    vendor_stdlib_module(&py, &plugin, "pkg", "_testmultiphase")?;
    vendor_stdlib_module(&py, &plugin, "", "_testsinglephase")?;
    vendor_stdlib_module(&py, &plugin, "", "xxlimited")?;

    let choice = choose_tier("typed", Isolation::Auto, None, &plugin, found_worker)?;
    assert_eq!(choice.tier, Tier::Process);
    let TierReason::ExtensionsRefused(refusal) = &choice.reason else {
        panic!("expected refused extensions, got {:?}", choice.reason);
    };
    assert_eq!(refusal.evidence, Evidence::ProbedAtLoad);
    assert_eq!((refusal.refused, refusal.total), (2, 3));
    assert_eq!(refusal.more_reasons, 0);
    assert_eq!(refusal.deciding.len(), 2, "{:?}", refusal.deciding);
    assert!(refusal.deciding.contains(&RefusedModules::Package {
        package: "pkg".to_owned(),
        error: "ImportError: no sub-interpreters here".to_owned(),
    }));
    assert!(
        refusal.deciding.iter().any(|group| matches!(
            group,
            RefusedModules::Modules { modules, reason }
                if modules == &["_testsinglephase".to_owned()] && reason.starts_with("ImportError")
        )),
        "{:?}",
        refusal.deciding
    );
    // Its words are what they were as text.
    let words = choice.reason.to_string();
    assert!(
        words.starts_with("isolation = \"auto\" and 2 of 3 compiled extension module(s)")
            && words
                .contains("package `pkg` (import fails: ImportError: no sub-interpreters here)")
            && words.contains("(probed at load)"),
        "{words}"
    );

    let choice = choose_tier(
        "typed",
        Isolation::Process,
        Some(Isolation::Subinterpreter),
        &plugin,
        no_worker,
    );
    match choice {
        Err(LoadError::SubinterpreterRefused { origin, reason, .. }) => {
            assert_eq!(origin, fidius_host::IsolationOrigin::LoadOptions);
            assert_eq!(
                reason.evidence,
                Evidence::ProbedAtLoad,
                "remembered from the probe"
            );
        }
        other => panic!("expected SubinterpreterRefused, got {other:?}"),
    }
    Ok(())
}
