//! `ci/bench` section "warm loads of real registry packages": a plugin that imports attrs, Jinja2,
//! pydantic 2 or numpy (installed from the package index with the bench's CPython into the plugin's
//! `vendor/`), loaded by a `PluginHost` with the bytecode cache off (every module compiled from
//! source, as before the cache) and on (cache warmed by one load), against a plain
//! `python3 -I -c 'import X'` of the same files with their bytecode compiled. Skipped, with a line
//! saying so, when pip cannot install (no network).

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use fidius_core::interface::PythonInterfaceDescriptor;
use fidius_host::{LoadOptions, PluginHost, PythonPluginHandle, WorkerCommand};

/// (label, pip requirement, module to import).
const PACKAGES: &[(&str, &str, &str)] = &[
    ("attrs", "attrs", "attrs"),
    ("jinja2", "Jinja2", "jinja2"),
    ("pydantic2", "pydantic>=2", "pydantic"),
    ("numpy", "numpy>=2.1", "numpy"),
];

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

fn ms(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1e3)
}

/// Installs `requirement` into `target` with the bench's CPython; why not, on failure.
fn pip_install(requirement: &str, target: &Path) -> Result<(), String> {
    let output = Command::new(env!("FIDIUS_BUILD_PYTHON"))
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(["--only-binary=:all:", "--target"])
        .arg(target)
        .arg(requirement)
        .output()
        .map_err(|error| error.to_string())?;
    if output.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        Err(stderr.lines().last().unwrap_or("pip failed").to_owned())
    }
}

/// `python3 -I -c 'import X'` with `dir` first on `sys.path` (its bytecode compiled beforehand).
fn plain_import(dir: &Path, module: &str) -> Duration {
    let script = format!(
        "import sys; sys.path.insert(0, {:?}); import {module}",
        dir.display().to_string()
    );
    let started = Instant::now();
    let status = Command::new(env!("FIDIUS_BUILD_PYTHON"))
        .args(["-I", "-c", &script])
        .status()
        .expect("python runs");
    assert!(status.success(), "plain import of {module} failed");
    started.elapsed()
}

/// The section; `plugin` is the bench plugin's source, `descriptor` its interface.
pub fn warm_loads(
    report: &mut String,
    root: &Path,
    quick: bool,
    plugin: &str,
    descriptor: &'static PythonInterfaceDescriptor,
) {
    let samples = if quick { 5 } else { 15 };
    let _ = writeln!(
        report,
        "\n## Warm loads of real registry packages (median of {samples}; fresh instance per load, tier `auto`)\n\n\
         | package | tier | `python3 -I -c 'import X'` with bytecode | fidius load, compiling (cache off) | fidius warm load (bytecode cache) | warm / plain python |\n|---|---|---|---|---|---|"
    );
    for (label, requirement, module) in PACKAGES {
        let plugins = root.join("warm-plugins");
        let dir = plugins.join(label);
        let vendor = dir.join("vendor");
        if let Err(why) = pip_install(requirement, &vendor) {
            let _ = writeln!(report, "| {label} | skipped: pip: {why} | | | | |");
            continue;
        }
        std::fs::write(
            dir.join("package.toml"),
            format!(
                "[package]\nname = \"{label}\"\nversion = \"1.0.0\"\ninterface = \"Bench\"\n\
                 interface_version = 1\nruntime = \"python\"\n\n[python]\nentry_module = \"bench_plugin\"\n"
            ),
        )
        .expect("manifest");
        std::fs::write(
            dir.join("bench_plugin.py"),
            format!("import {module}\n{plugin}"),
        )
        .expect("plugin");
        // The plain interpreter gets its own copy, with bytecode, so the plugin tree stays source-only.
        let plain = root.join("warm-plain").join(label);
        std::fs::create_dir_all(root.join("warm-plain")).expect("plain folder");
        let copied = Command::new("cp")
            .arg("-a")
            .arg(&vendor)
            .arg(&plain)
            .status()
            .is_ok_and(|status| status.success());
        let compiled = copied
            && Command::new(env!("FIDIUS_BUILD_PYTHON"))
                .args(["-I", "-m", "compileall", "-q"])
                .arg(&plain)
                .status()
                .is_ok_and(|status| status.success());
        assert!(
            compiled,
            "{label}: copying and compiling the plain copy failed"
        );

        let host = |bytecode: bool| {
            PluginHost::builder()
                .search_path(&plugins)
                .cache_dir(root.join("warm-cache"))
                .bytecode_cache(bytecode)
                .build()
                .expect("host")
        };
        let load = |host: &PluginHost| -> (Duration, PythonPluginHandle) {
            let started = Instant::now();
            let options = LoadOptions::default()
                .worker_command(WorkerCommand::new(env!("CARGO_BIN_EXE_fidius-worker")));
            let handle = host
                .load_python_with(label, descriptor, options)
                .unwrap_or_else(|error| panic!("{label}: {error}"));
            (started.elapsed(), handle)
        };
        let (cold_host, warm_host) = (host(false), host(true));
        let (_, first) = load(&warm_host); // the probe (memoised) and the cache's first fill
        let tier = first.tier().tier.to_string();
        drop(first);
        plain_import(&plain, module);
        let (mut python, mut cold, mut warm) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..samples {
            python.push(plain_import(&plain, module));
            cold.push(load(&cold_host).0);
            warm.push(load(&warm_host).0);
        }
        let (python, cold, warm) = (median(python), median(cold), median(warm));
        let _ = writeln!(
            report,
            "| {label} | {tier} | {} | {} | {} | {:.2} |",
            ms(python),
            ms(cold),
            ms(warm),
            warm.as_secs_f64() / python.as_secs_f64()
        );
    }
}
