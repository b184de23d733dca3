//! `ci/bench --only-restart`: a numpy plugin in the process tier, workers started cold (exec,
//! CPython, bootstrap, import) against workers forked from a warm template
//! (`LoadOptions::worker_template`): the time from a worker's SIGKILL to the first answered call
//! after it, and the memory (PSS, `/proc/PID/smaps_rollup`) of the first and second worker.
//! Skipped, with a line saying so, when pip cannot install numpy (no network).

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use fidius_core::interface::{PythonInterfaceDescriptor, WireMode};
use fidius_core::manifest::Isolation;
use fidius_host::{
    CallError, LoadOptions, PluginCall, PluginHost, PythonPluginHandle, WorkerCommand,
};

use crate::support;

const HASH: u64 = 0x7e57_a12e_5ca1_ab1e;

const PLUGIN: &str = r#"
import os
import numpy
from fidius import method
__interface_hash__ = 0x7e57a12e5ca1ab1e

@method
def pid():
    return os.getpid()

@method
def dot(n):
    a = numpy.arange(n, dtype=numpy.float64)
    return float(a @ a)
"#;

static RESTART: PythonInterfaceDescriptor = PythonInterfaceDescriptor {
    trait_name: "Restart",
    version: 1,
    interface_hash: HASH,
    schema_fingerprint: None,
    methods: &[
        support::method("pid", WireMode::TypedJson, &[], None),
        support::method("dot", WireMode::TypedJson, &[support::arg("n")], None),
    ],
};
const PID: usize = 0;
const DOT: usize = 1;

fn ms(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1e3)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn pid_of(handle: &PythonPluginHandle) -> Result<u32, CallError> {
    let out = handle.call_typed_json(PID, b"[]")?;
    Ok(serde_json::from_slice(&out).expect("a pid"))
}

/// A `/proc/PID/status` or `smaps_rollup` field in KiB (0 when the process is gone).
fn proc_kib(pid: u32, file: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn parent_of(pid: u32) -> u32 {
    u32::try_from(proc_kib(pid, "status", "PPid:")).unwrap_or(0)
}

/// Processes whose parent is `parent`.
fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| parent_of(pid) == parent)
        .collect()
}

/// This process's worker processes and templates, and the templates' children.
fn worker_tree() -> Vec<u32> {
    let mut all = Vec::new();
    for child in children_of(std::process::id()) {
        all.push(child);
        all.extend(children_of(child));
    }
    all
}

fn gone(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_or(true, |status| status.contains("State:\tZ"))
}

/// SIGKILL to the serving worker, then calls until one is answered: that time, and the calls
/// that failed on the way (a call that raced the death).
fn restart_once(handle: &PythonPluginHandle) -> (Duration, u32) {
    let pid = pid_of(handle).expect("a worker");
    assert_ne!(pid, std::process::id());
    let started = Instant::now();
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let give_up = started + Duration::from_secs(60);
    let mut failed = 0;
    loop {
        match handle.call_typed_json(DOT, b"[1000]") {
            Ok(_) => break,
            Err(error) => {
                failed += 1;
                assert!(
                    Instant::now() < give_up,
                    "no worker after the kill: {error}"
                );
            }
        }
    }
    let elapsed = started.elapsed();
    // The old process is gone before the next round (it is, once its replacement answered).
    let wait_until = Instant::now() + Duration::from_secs(10);
    while !gone(pid) && Instant::now() < wait_until {
        std::thread::sleep(Duration::from_millis(1));
    }
    (elapsed, failed)
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// The section.
pub fn restarts(report: &mut String, root: &Path, quick: bool) {
    let samples = if quick { 10 } else { 40 };
    let plugins = root.join("restart-plugins");
    let dir = plugins.join("numpy-restart");
    let _ = writeln!(
        report,
        "\n## Process tier: restart after SIGKILL and memory, numpy plugin (cold workers vs a warm template)\n"
    );
    if let Err(why) = crate::warm_load::pip_install("numpy>=2.1", &dir.join("vendor")) {
        let _ = writeln!(report, "skipped: pip: {why}");
        return;
    }
    std::fs::write(
        dir.join("package.toml"),
        "[package]\nname = \"numpy-restart\"\nversion = \"1.0.0\"\ninterface = \"Restart\"\n\
         interface_version = 1\nruntime = \"python\"\n\n[python]\nentry_module = \"restart_plugin\"\n",
    )
    .expect("manifest");
    std::fs::write(dir.join("restart_plugin.py"), PLUGIN).expect("plugin");
    let host = PluginHost::builder()
        .search_path(&plugins)
        .cache_dir(root.join("restart-cache"))
        .bytecode_cache(true)
        .build()
        .expect("host");
    let load = |template: bool, instances: usize| {
        let options = LoadOptions::default()
            .isolation(Isolation::Process)
            .instances(instances)
            .worker_template(template)
            .worker_command(WorkerCommand::new(env!("CARGO_BIN_EXE_fidius-worker")));
        host.load_python_with("numpy-restart", &RESTART, options)
            .unwrap_or_else(|error| panic!("numpy-restart: {error}"))
    };
    // Fills the bytecode cache, so both modes import from bytecode.
    drop(load(false, 1));

    let _ = writeln!(
        report,
        "SIGKILL of the serving worker to the first answered call after it ({samples} restarts each; \
         calls that raced the death and failed are retried and counted).\n\n\
         | workers | p50 | p99 | failed calls on the way | forks | template fallbacks |\n|---|---|---|---|---|---|"
    );
    let mut p50s = Vec::new();
    // The third row: the host's environment sets OPENBLAS_NUM_THREADS=1 (as process pools often
    // do), so a forked worker has no BLAS threads to start again.
    let rows = [
        ("cold (exec + import)", false, false),
        ("forked from a template", true, false),
        ("forked, host has OPENBLAS_NUM_THREADS=1", true, true),
    ];
    for (label, template, one_blas_thread) in rows {
        if one_blas_thread {
            std::env::set_var("OPENBLAS_NUM_THREADS", "1");
        }
        let handle = load(template, 1);
        handle
            .call_typed_json(DOT, b"[1000]")
            .expect("a first call");
        let mut times = Vec::with_capacity(samples);
        let mut failed = 0;
        for _ in 0..samples {
            let (elapsed, failures) = restart_once(&handle);
            times.push(elapsed);
            failed += failures;
        }
        times.sort_unstable();
        let stats = handle.stats();
        let p50 = percentile(&times, 0.5);
        p50s.push(p50);
        let _ = writeln!(
            report,
            "| {} | {} | {} | {failed} | {} | {} |",
            label,
            ms(p50),
            ms(percentile(&times, 0.99)),
            stats.worker_forks,
            stats.worker_template_fallbacks,
        );
        drop(handle);
        if one_blas_thread {
            std::env::remove_var("OPENBLAS_NUM_THREADS");
        }
    }
    let _ = writeln!(
        report,
        "\ntemplate / cold, p50: {:.3} (with OPENBLAS_NUM_THREADS=1 in the host: {:.3})\n",
        p50s[1].as_secs_f64() / p50s[0].as_secs_f64(),
        p50s[2].as_secs_f64() / p50s[0].as_secs_f64()
    );

    let _ = writeln!(
        report,
        "Memory after one numpy call per worker (PSS from `/proc/PID/smaps_rollup`; the template's \
         own PSS is counted with the first worker).\n\n\
         | workers | first worker: RSS | first worker: PSS (+ template) | template PSS | second worker adds (PSS) | second / first worker's RSS | second / first PSS | threads per worker |\n|---|---|---|---|---|---|---|---|"
    );
    for template in [false, true] {
        let measure = |instances: usize| {
            let handle = load(template, instances);
            // Every worker answers (and touches numpy) at least once.
            std::thread::scope(|scope| {
                for _ in 0..instances * 4 {
                    scope.spawn(|| handle.call_typed_json(DOT, b"[100000]").expect("a call"));
                }
            });
            let tree = worker_tree();
            let templates: Vec<u32> = tree
                .iter()
                .copied()
                .filter(|&pid| parent_of(pid) == std::process::id() && !children_of(pid).is_empty())
                .collect();
            let workers: Vec<u32> = tree
                .iter()
                .copied()
                .filter(|pid| !templates.contains(pid))
                .collect();
            let pss: u64 = tree
                .iter()
                .map(|&pid| proc_kib(pid, "smaps_rollup", "Pss:"))
                .sum();
            let template_pss: u64 = templates
                .iter()
                .map(|&pid| proc_kib(pid, "smaps_rollup", "Pss:"))
                .sum();
            let rss = workers
                .first()
                .map_or(0, |&pid| proc_kib(pid, "status", "VmRSS:"));
            // Threads of a worker (the serve loop, its host watch, and OpenBLAS's pool).
            let threads = workers
                .first()
                .map_or(0, |&pid| proc_kib(pid, "status", "Threads:"));
            drop(handle);
            (pss, template_pss, rss, threads)
        };
        let (one, template_pss, first_rss, threads) = measure(1);
        let (two, _, _, _) = measure(2);
        let added = two.saturating_sub(one);
        let _ = writeln!(
            report,
            "| {} | {} | {} | {} | {} | {:.2} | {:.2} | {} |",
            if template {
                "forked from a template"
            } else {
                "cold (exec + import)"
            },
            mib(first_rss),
            mib(one),
            if template {
                mib(template_pss)
            } else {
                "-".to_owned()
            },
            mib(added),
            added as f64 / first_rss.max(1) as f64,
            added as f64 / one.max(1) as f64,
            threads,
        );
    }
}
