//! `ci/bench --against REV`: the round trips that must not get slower, measured by one binary built
//! against two commits (this tree and REV) so `ci/bench` can run both in one session and compare.
//!
//! Written against the public host API only (`fidius` with feature `host`), so the same file also
//! builds against an older commit that predates it (`ci/bench` copies it in there). Cases a tree
//! cannot build are left out of that tree's copy; `ci/bench` prints a "skipped" line for a case only
//! one side reported.
//!
//! Output, one line per case: `fidius-compare-v1 <TAB> case <TAB> bytes moved per call <TAB> p50 ns
//! <TAB> p99 ns`. Run with `fidius-worker ...` as the first argument, the binary is the process
//! tier's worker (so no separate worker binary has to come from the same build).
#![forbid(unsafe_code)]

use std::hint::black_box;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use fidius::host::{LoadOptions, PluginSource, PythonPluginHandle, WorkerCommand};
use fidius::manifest::Isolation;
use fidius::{plugin_interface, PluginCall, PythonInterfaceDescriptor};

/// What every line starts with, so `ci/bench` ignores anything else the binary prints.
const LINE_TAG: &str = "fidius-compare-v1";
/// The first argument that makes this binary a process-tier worker.
const WORKER_ARG: &str = "fidius-worker";
/// The payload of the bandwidth rows.
const BIG: usize = 16 << 20;

#[plugin_interface(version = 1)]
pub trait Bench {
    #[wire(raw)]
    fn echo(&self, data: Vec<u8>) -> Vec<u8>;
    fn add(&self, a: i64, b: i64) -> i64;
}

const PLUGIN_BODY: &str = r#"
from fidius import method

@method
def echo(data):
    return data

@method
def add(a, b):
    return a + b
"#;

/// Samples per latency case and per bandwidth case.
struct Samples {
    latency: usize,
    bandwidth: usize,
}

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() == Some(std::ffi::OsStr::new(WORKER_ARG)) {
        return fidius::host::worker::main(args.collect());
    }
    let quick = std::env::args().any(|arg| arg == "--quick");
    let samples = if quick {
        Samples {
            latency: 3_000,
            bandwidth: 8,
        }
    } else {
        Samples {
            latency: 20_000,
            bandwidth: 30,
        }
    };
    match run(&samples) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("compare bench: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(samples: &Samples) -> Result<(), Box<dyn std::error::Error>> {
    let descriptor: &'static PythonInterfaceDescriptor = &__fidius_Bench::Bench_PYTHON_DESCRIPTOR;
    let root = tempfile_dir()?;
    let dir = root.join("plugin");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("bench_plugin.py"),
        format!(
            "__interface_hash__ = {:#x}\n{PLUGIN_BODY}",
            descriptor.interface_hash
        ),
    )?;
    let echo = descriptor.method_index("echo").ok_or("no echo method")?;
    let add = descriptor.method_index("add").ok_or("no add method")?;
    let worker = WorkerCommand::new(std::env::current_exe()?).arg(WORKER_ARG);
    let tiers = [
        ("sub-interpreter", LoadOptions::default()),
        (
            "process",
            LoadOptions::default()
                .isolation(Isolation::Process)
                .worker_command(worker),
        ),
    ];
    let small = b"0123456789abcdef";
    let big = vec![0x5a_u8; BIG];
    for (tier, options) in &tiers {
        let source = PluginSource::new(format!("bench-{tier}"), "1.0.0", &dir, "bench_plugin");
        let plugin = PythonPluginHandle::start(source, descriptor, options)?;
        report(
            &format!("{tier} raw echo 16 B"),
            0,
            latency(samples.latency, || {
                black_box(plugin.call_raw(echo, small).map(drop))
            })?,
        );
        report(
            &format!("{tier} typed small call"),
            0,
            latency(samples.latency, || {
                black_box(plugin.call_typed_json(add, b"[40, 2]").map(drop))
            })?,
        );
        report(
            &format!("{tier} raw echo 16 MiB"),
            2 * BIG,
            latency(samples.bandwidth, || {
                black_box(plugin.call_raw(echo, &big).map(drop))
            })?,
        );
    }
    // The plain copy the bandwidth target compares against: 16 MiB into a fresh buffer, as each
    // direction of an echo needs at least once.
    report(
        "in-process 16 MiB copy",
        BIG,
        latency(samples.bandwidth, || {
            black_box(black_box(&big).to_vec());
            Ok::<(), std::convert::Infallible>(())
        })?,
    );
    std::fs::remove_dir_all(&root)?;
    Ok(())
}

/// A fresh folder under the system temp dir. Not `tempfile`: the facade has no such dependency, and
/// this file must build unchanged against older commits.
fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("fidius-compare-{}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir(&dir)?;
    Ok(dir)
}

/// p50 and p99 of `iterations` timed calls, after a tenth as many (at least one) untimed.
fn latency<E>(
    iterations: usize,
    mut call: impl FnMut() -> Result<(), E>,
) -> Result<(Duration, Duration), E> {
    for _ in 0..(iterations / 10).max(1) {
        call()?;
    }
    let mut times = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let started = Instant::now();
        call()?;
        times.push(started.elapsed());
    }
    times.sort_unstable();
    Ok((times[times.len() / 2], times[times.len() * 99 / 100]))
}

fn report(case: &str, bytes: usize, (p50, p99): (Duration, Duration)) {
    println!(
        "{LINE_TAG}\t{case}\t{bytes}\t{}\t{}",
        p50.as_nanos(),
        p99.as_nanos()
    );
}
