//! `ci/bench`: the sub-interpreter runtime against the original single-interpreter design, in one
//! run on one machine. Prints a markdown report and writes it to `target/bench/runtime.md`.
//!
//! Baseline = the same Python functions in the process's one main interpreter, called directly from
//! host threads that take turns on its GIL (how the original fidius tool runs every plugin).

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use fidius_core::archive::{pack_dir, SignaturePolicy};
use fidius_core::interface::{PythonArgDescriptor, PythonInterfaceDescriptor, WireMode};
use fidius_core::manifest::Isolation;
use fidius_core::signing::generate_signing_key;
use fidius_core::PluginCall;
use fidius_ffi::{MainHandle, MainInterpreter};
use fidius_host::{
    CallOptions, LoadOptions, PluginHost, PluginSource, PublicKey, PythonPluginHandle,
    WorkerCommand,
};

#[path = "runtime/callbacks.rs"]
mod callbacks;
mod rust_cdylib;
#[path = "../tests/support/mod.rs"]
mod support;
mod warm_load;
// `ci/bench --only-restart`: restarts and memory of a numpy plugin, cold workers vs a warm template.
mod restart;

#[path = "runtime/streaming.rs"]
mod streaming;

const HASH: u64 = 0x0bad_cafe_f00d_d00d;
const PLUGIN: &str = r#"
from fidius import method
__interface_hash__ = 0x0badcafef00dd00d

@method
def echo(data):
    return data

@method
def add(a, b):
    return a + b

@method
def size(text):
    return len(text)

@method
def spin(n):
    total = 0
    for i in range(n):
        total += i * i
    return total
"#;
const SDK: &str = include_str!("../python-sdk/fidius/__init__.py");

const ARG: PythonArgDescriptor = support::arg("x");
static BENCH: PythonInterfaceDescriptor = PythonInterfaceDescriptor {
    trait_name: "Bench",
    version: 1,
    interface_hash: HASH,
    schema_fingerprint: None,
    methods: &[
        support::method("echo", WireMode::Raw, &[ARG], None),
        support::method("add", WireMode::TypedJson, &[ARG, ARG], None),
        support::method("size", WireMode::TypedJson, &[ARG], None),
        support::method("spin", WireMode::TypedJson, &[ARG], None),
    ],
};
const ECHO: usize = 0;
const ADD: usize = 1;
const SIZE: usize = 2;
const SPIN: usize = 3;

struct Latency {
    p50: Duration,
    p99: Duration,
}

fn latency(iterations: usize, mut call: impl FnMut()) -> Latency {
    for _ in 0..iterations / 10 {
        call();
    }
    let samples: Vec<Duration> = (0..iterations)
        .map(|_| {
            let started = Instant::now();
            call();
            started.elapsed()
        })
        .collect();
    percentiles(samples)
}

fn percentiles(mut samples: Vec<Duration>) -> Latency {
    samples.sort_unstable();
    Latency {
        p50: samples[samples.len() / 2],
        p99: samples[samples.len() * 99 / 100],
    }
}

fn micros(duration: Duration) -> String {
    format!("{:.2} µs", duration.as_secs_f64() * 1e6)
}

/// The bench functions in the main interpreter, for the baseline.
struct Baseline {
    echo: MainHandle,
    add: MainHandle,
    size: MainHandle,
    spin: MainHandle,
    loads: MainHandle,
    dumps: MainHandle,
}

impl Baseline {
    fn new() -> Self {
        MainInterpreter::with(|py| {
            py.run(&format!(
                "import sys, json\n_sdk = type(sys)('fidius')\nexec({SDK:?}, _sdk.__dict__)\n\
                 sys.modules['fidius'] = _sdk\nexec({PLUGIN:?})"
            ))
            .expect("baseline setup");
            let get = |name: &str| MainInterpreter::persist(py.eval(name).expect("baseline name"));
            Baseline {
                echo: get("echo"),
                add: get("add"),
                size: get("size"),
                spin: get("spin"),
                loads: get("json.loads"),
                dumps: get("json.dumps"),
            }
        })
        .expect("main interpreter")
    }

    /// One typed call as the original design makes it: attach, JSON in, call, JSON out, detach.
    fn call_typed(&self, function: &MainHandle, args: &[u8]) -> Vec<u8> {
        MainInterpreter::with(|py| {
            let args = py.json_to_python(args).unwrap();
            let out = function.bind(py).call_with_sequence(&args).ok().unwrap();
            out.to_json().unwrap()
        })
        .unwrap()
    }

    fn call_raw(&self, input: &[u8]) -> Vec<u8> {
        MainInterpreter::with(|py| {
            let input = py.bytes(input).unwrap();
            self.echo
                .bind(py)
                .call(&[&input])
                .ok()
                .unwrap()
                .to_bytes()
                .unwrap()
        })
        .unwrap()
    }

    /// The same typed call, converting with Python's own `json` module instead of serde.
    fn call_typed_via_json_module(&self, function: &MainHandle, args: &[u8]) -> Vec<u8> {
        MainInterpreter::with(|py| {
            let text = py.bytes(args).unwrap();
            let args = self.loads.bind(py).call(&[&text]).ok().unwrap();
            let out = function.bind(py).call_with_sequence(&args).ok().unwrap();
            let json = self.dumps.bind(py).call(&[&out]).ok().unwrap();
            json.to_str_lossy().unwrap().into_bytes()
        })
        .unwrap()
    }
}

fn load(dir: &Path, name: &str, instances: usize) -> PythonPluginHandle {
    load_with(dir, name, LoadOptions::default().instances(instances))
}

fn load_with(dir: &Path, name: &str, options: LoadOptions) -> PythonPluginHandle {
    PythonPluginHandle::start(
        PluginSource::new(name, "1.0.0", dir, "bench_plugin"),
        &BENCH,
        &options,
    )
    .expect("bench plugin loads")
}

/// The process tier, with the worker binary Cargo built next to this benchmark.
fn load_process(dir: &Path, name: &str, instances: usize) -> PythonPluginHandle {
    load_with(
        dir,
        name,
        LoadOptions::default()
            .instances(instances)
            .isolation(Isolation::Process)
            .worker_command(WorkerCommand::new(env!("CARGO_BIN_EXE_fidius-worker"))),
    )
}

/// What `multiprocessing_baseline.py` reports.
#[derive(serde::Deserialize)]
struct MultiprocessingReport {
    raw: PythonLatency,
    typed: PythonLatency,
    pipe: PythonLatency,
    cpu_calls_per_s: std::collections::BTreeMap<String, f64>,
}

#[derive(serde::Deserialize)]
struct PythonLatency {
    p50_ns: u64,
    p99_ns: u64,
}

impl PythonLatency {
    fn latency(&self) -> Latency {
        Latency {
            p50: Duration::from_nanos(self.p50_ns),
            p99: Duration::from_nanos(self.p99_ns),
        }
    }
}

/// Runs the `multiprocessing` baseline with the Python fidius was built against.
fn multiprocessing_baseline(
    iterations: usize,
    spin_n: u64,
    calls_each: usize,
    workers: usize,
) -> MultiprocessingReport {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/multiprocessing_baseline.py");
    let output = std::process::Command::new(env!("FIDIUS_BUILD_PYTHON"))
        .arg(&script)
        .args([iterations, spin_n as usize, calls_each, workers].map(|n| n.to_string()))
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("run the multiprocessing baseline");
    assert!(output.status.success(), "multiprocessing baseline failed");
    serde_json::from_slice(&output.stdout).expect("multiprocessing baseline report")
}

/// Process CPU time (user + system) from /proc, in clock ticks of 10 ms.
#[cfg(target_os = "linux")]
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    fields
        .get(11)
        .and_then(|u| u.parse::<u64>().ok())
        .unwrap_or(0)
        + fields
            .get(12)
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn throughput(callers: usize, calls_each: usize, call: impl Fn(usize) + Sync) -> f64 {
    let start_line = Barrier::new(callers + 1);
    let started = thread::scope(|scope| {
        for caller in 0..callers {
            let (call, start_line) = (&call, &start_line);
            scope.spawn(move || {
                start_line.wait();
                for _ in 0..calls_each {
                    call(caller);
                }
            });
        }
        start_line.wait();
        Instant::now()
    });
    (callers * calls_each) as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let quick = std::env::args().any(|arg| arg == "--quick");
    // `ci/bench --only-cached-archive`: just the "load_python of a cached archive" section.
    let only_cached_archive = std::env::args().any(|arg| arg == "--only-cached-archive");
    let iterations = if quick { 2_000 } else { 50_000 };
    let root = tempfile::tempdir().expect("temp dir");
    let dir = root.path().join("bench");
    std::fs::create_dir_all(&dir).expect("plugin dir");
    std::fs::write(dir.join("bench_plugin.py"), PLUGIN).expect("plugin file");
    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    let mut report = String::new();
    let _ = writeln!(
        report,
        "# fidius runtime benchmark\n\nCPython {}, {cores} cores, {} build, {iterations} samples per row.\n",
        fidius_ffi::python_version(),
        if cfg!(debug_assertions) { "debug" } else { "release" },
    );

    if only_cached_archive {
        cached_archive_loads(&mut report, root.path(), quick);
        print!("{report}");
        return;
    }
    // `ci/bench --only-host-functions`: just the "Host functions" section.
    if std::env::args().any(|arg| arg == "--only-host-functions") {
        callbacks::host_functions(&mut report, root.path(), iterations);
        print!("{report}");
        return;
    }
    // `ci/bench --only-warm-load`: just the "warm loads of real registry packages" section.
    if std::env::args().any(|arg| arg == "--only-warm-load") {
        warm_load::warm_loads(&mut report, root.path(), quick, PLUGIN, &BENCH);
        warm_load::spare_loads(&mut report, root.path(), quick, PLUGIN, &BENCH);
        print!("{report}");
        return;
    }
    // `ci/bench --only-spare`: just the "Spare interpreters" section.
    if std::env::args().any(|arg| arg == "--only-spare") {
        warm_load::spare_loads(&mut report, root.path(), quick, PLUGIN, &BENCH);
        print!("{report}");
        return;
    }
    // `ci/bench --only-streaming`: just the "Streamed results" and "Streamed arguments" sections.
    if std::env::args().any(|arg| arg == "--only-streaming") {
        streaming::streamed_items(&mut report, root.path(), quick);
        streaming::streamed_arguments(&mut report, root.path(), quick);
        print!("{report}");
        return;
    }
    // `ci/bench --only-restart`: just the "restart after SIGKILL and memory" section.
    if std::env::args().any(|arg| arg == "--only-restart") {
        restart::restarts(&mut report, root.path(), quick);
        print!("{report}");
        return;
    }
    // `ci/bench --only-rust`: just the "Rust cdylib plugin" section (with both Python tiers beside it).
    if std::env::args().any(|arg| arg == "--only-rust") {
        rust_cdylib::section(
            &mut report,
            iterations,
            &load(&dir, "bench", 1),
            &load_process(&dir, "rust-row-process", 1),
            ADD,
            ECHO,
        );
        print!("{report}");
        return;
    }
    // `ci/bench --only-async`: just the "Async calls" section.
    if std::env::args().any(|arg| arg == "--only-async") {
        async_calls(&mut report, &dir, iterations);
        print!("{report}");
        return;
    }

    let plugin = load(&dir, "bench", 1);
    let baseline = Baseline::new();
    let small_args = br#"[40, 2]"#.to_vec();
    let big_args =
        serde_json::to_vec(&(String::from_utf8(vec![b'x'; 64 << 10]).unwrap(),)).unwrap();

    let _ = writeln!(report, "## Round trip, one caller\n\n| call | fidius p50 | fidius p99 | baseline p50 | baseline p99 |\n|---|---|---|---|---|");
    type Call<'a> = Box<dyn Fn() + 'a>;
    let rows: [(&str, Call, Call); 3] = [
        (
            "raw echo, 16 B",
            Box::new(|| drop(plugin.call_raw(ECHO, b"0123456789abcdef").unwrap())),
            Box::new(|| drop(baseline.call_raw(b"0123456789abcdef"))),
        ),
        (
            "typed, small JSON",
            Box::new(|| drop(plugin.call_typed_json(ADD, &small_args).unwrap())),
            Box::new(|| drop(baseline.call_typed(&baseline.add, &small_args))),
        ),
        (
            "typed, 64 KiB argument",
            Box::new(|| drop(plugin.call_typed_json(SIZE, &big_args).unwrap())),
            Box::new(|| drop(baseline.call_typed(&baseline.size, &big_args))),
        ),
    ];
    for (name, ours, theirs) in &rows {
        let ours = latency(iterations, ours);
        let theirs = latency(iterations, theirs);
        let _ = writeln!(
            report,
            "| {name} | {} | {} | {} | {} |",
            micros(ours.p50),
            micros(ours.p99),
            micros(theirs.p50),
            micros(theirs.p99)
        );
    }

    rust_cdylib::section(
        &mut report,
        iterations,
        &plugin,
        &load_process(&dir, "rust-row-process", 1),
        ADD,
        ECHO,
    );

    // Timeout machinery on the fast path: the same small call with and without a deadline, alternated
    // in rounds so drift on a shared machine hits both alike.
    let with_deadline = CallOptions::default().timeout(Duration::from_secs(10));
    let (mut plain, mut timed) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        plain.push(
            latency(iterations / 5, || {
                drop(plugin.call_typed_json(ADD, &small_args).unwrap())
            })
            .p50,
        );
        timed.push(
            latency(iterations / 5, || {
                drop(
                    plugin
                        .call_typed_json_with(ADD, &small_args, &with_deadline)
                        .unwrap(),
                )
            })
            .p50,
        );
    }
    plain.sort_unstable();
    timed.sort_unstable();
    let (plain, timed) = (plain[2], timed[2]);
    let _ = writeln!(
        report,
        "\n## Timeout machinery (typed small call, median of 5 rounds of p50)\n\n| no timeout | 10 s timeout | overhead |\n|---|---|---|\n| {} | {} | {:+.1} % |",
        micros(plain),
        micros(timed),
        (timed.as_secs_f64() / plain.as_secs_f64() - 1.0) * 100.0
    );

    let _ = writeln!(report, "\n## JSON conversion choice (main interpreter, no thread hop)\n\n| payload | serde ↔ Python objects (shipped) p50 | `json.loads`/`json.dumps` p50 |\n|---|---|---|");
    for (name, function, args) in [
        ("small", &baseline.add, &small_args),
        ("64 KiB", &baseline.size, &big_args),
    ] {
        let serde = latency(iterations, || drop(baseline.call_typed(function, args)));
        let module = latency(iterations, || {
            drop(baseline.call_typed_via_json_module(function, args))
        });
        let _ = writeln!(
            report,
            "| {name} | {} | {} |",
            micros(serde.p50),
            micros(module.p50)
        );
    }

    // CPU-bound work: calibrate a call of about 10 ms on one instance.
    let mut spin_n: u64 = 20_000;
    loop {
        let started = Instant::now();
        plugin
            .call_typed_json(SPIN, format!("[{spin_n}]").as_bytes())
            .unwrap();
        if started.elapsed() >= Duration::from_millis(10) || spin_n > 1 << 30 {
            break;
        }
        spin_n *= 2;
    }
    let spin_args = format!("[{spin_n}]").into_bytes();
    let calls_each = if quick { 5 } else { 25 };
    let plugins: Vec<PythonPluginHandle> = (0..cores)
        .map(|i| load(&dir, &format!("cpu{i}"), 1))
        .collect();
    // Warm every interpreter (and the baseline) before timing, so K=1 does not pay first-call costs.
    for plugin in &plugins {
        plugin.call_typed_json(SPIN, &spin_args).unwrap();
    }
    baseline.call_typed(&baseline.spin, &spin_args);
    let _ = writeln!(report, "\n## CPU-bound calls (~10 ms of pure Python each), K concurrent callers, median of 3 alternating rounds\n\n| K | fidius calls/s (K plugins, own GILs) | speed-up vs K=1 | baseline calls/s (one shared GIL) | speed-up vs K=1 | fidius / baseline |\n|---|---|---|---|---|---|");
    let mut ours_one = 0.0;
    let mut theirs_one = 0.0;
    for callers in 1..=cores {
        // Alternate the two designs over 3 rounds and keep each one's median: a shared VM's CPU
        // speed drifts by tens of percent over seconds, which a single run would read as a result.
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            ours.push(throughput(callers, calls_each, |caller| {
                plugins[caller].call_typed_json(SPIN, &spin_args).unwrap();
            }));
            theirs.push(throughput(callers, calls_each, |_| {
                baseline.call_typed(&baseline.spin, &spin_args);
            }));
        }
        let (ours, theirs) = (median(ours), median(theirs));
        if callers == 1 {
            ours_one = ours;
            theirs_one = theirs;
        }
        let _ = writeln!(
            report,
            "| {callers} | {ours:.1} | {:.2}× | {theirs:.1} | {:.2}× | {:.2}× |",
            ours / ours_one,
            theirs / theirs_one,
            ours / theirs
        );
    }
    drop(plugins);

    process_tier(
        &mut report,
        &dir,
        iterations,
        quick,
        cores,
        spin_n,
        &spin_args,
    );
    async_calls(&mut report, &dir, iterations);
    callbacks::host_functions(&mut report, root.path(), iterations);

    #[cfg(target_os = "linux")]
    {
        let starts: Vec<Duration> = (0..10)
            .map(|i| {
                let started = Instant::now();
                let handle = load(&dir, &format!("start{i}"), 1);
                let elapsed = started.elapsed();
                drop(handle);
                elapsed
            })
            .collect();
        let mut sorted = starts.clone();
        sorted.sort_unstable();
        let before = support::rss_bytes();
        let idle = load(&dir, "idle", 8);
        let per_instance = support::rss_bytes().saturating_sub(before) / 8;
        let ticks_before = cpu_ticks();
        thread::sleep(Duration::from_secs(1));
        let idle_ticks = cpu_ticks().saturating_sub(ticks_before);
        drop(idle);
        let reloads: Vec<Duration> = (0..5)
            .map(|_| {
                let started = Instant::now();
                plugin.reload().expect("reload");
                started.elapsed()
            })
            .collect();
        let mut reloads_sorted = reloads;
        reloads_sorted.sort_unstable();
        let cycles_before = support::rss_bytes();
        for i in 0..10 {
            drop(load(&dir, &format!("cycle{i}"), 1));
        }
        let per_cycle = support::rss_bytes().saturating_sub(cycles_before) / 10;
        let _ = writeln!(
            report,
            "\n## Instances\n\n| measure | value |\n|---|---|\n| instance start (interpreter + import of a small plugin), p50 of 10 | {:.1} ms |\n| idle RSS per instance (pool of 8) | {:.2} MiB |\n| CPU used by 8 idle instances + 2 idle plugins over 1 s | {} ms |\n| RSS kept per load/unload cycle (CPython leak, see README) | {:.2} MiB |\n| hot reload, old to new version serving (1 instance), p50 of 5 | {:.1} ms |",
            sorted[sorted.len() / 2].as_secs_f64() * 1e3,
            per_instance as f64 / (1 << 20) as f64,
            idle_ticks * 10,
            per_cycle as f64 / (1 << 20) as f64,
            reloads_sorted[reloads_sorted.len() / 2].as_secs_f64() * 1e3,
        );
    }

    streaming::streamed_items(&mut report, root.path(), quick);
    streaming::streamed_arguments(&mut report, root.path(), quick);

    cached_archive_loads(&mut report, root.path(), quick);
    warm_load::warm_loads(&mut report, root.path(), quick, PLUGIN, &BENCH);
    warm_load::spare_loads(&mut report, root.path(), quick, PLUGIN, &BENCH);
    restart::restarts(&mut report, root.path(), quick);

    print!("{report}");
    let out_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench");
    if std::fs::create_dir_all(&out_dir).is_ok() {
        let _ = std::fs::write(out_dir.join("runtime.md"), &report);
    }
}

/// The process tier against `multiprocessing`, the usual hand-rolled way to isolate Python in
/// processes: round trips, worker start, CPU-bound throughput.
fn process_tier(
    report: &mut String,
    dir: &Path,
    iterations: usize,
    quick: bool,
    cores: usize,
    spin_n: u64,
    spin_args: &[u8],
) {
    let calls_each = if quick { 5 } else { 25 };
    let baseline = multiprocessing_baseline(iterations, spin_n, calls_each, cores);
    let plugin = load_process(dir, "process", 1);
    let small_args = br#"[40, 2]"#;
    let raw = latency(iterations, || {
        drop(plugin.call_raw(ECHO, b"0123456789abcdef").unwrap())
    });
    let typed = latency(iterations, || {
        drop(plugin.call_typed_json(ADD, small_args).unwrap())
    });
    let _ = writeln!(report, "\n## Process tier: round trip, one caller\n\n| call | fidius process tier p50 | p99 | `multiprocessing.Pool.apply` p50 | p99 | Pool p50 / fidius p50 |\n|---|---|---|---|---|---|");
    for (name, ours, theirs) in [
        ("raw echo, 16 B", &raw, baseline.raw.latency()),
        ("typed, small JSON", &typed, baseline.typed.latency()),
    ] {
        let _ = writeln!(
            report,
            "| {name} | {} | {} | {} | {} | {:.1}× |",
            micros(ours.p50),
            micros(ours.p99),
            micros(theirs.p50),
            micros(theirs.p99),
            theirs.p50.as_secs_f64() / ours.p50.as_secs_f64()
        );
    }
    let pipe = baseline.pipe.latency();
    let _ = writeln!(
        report,
        "\nFor scale: a bare `multiprocessing.Pipe` ping-pong of 16 B (no pool, no pickling of a call) takes p50 {} / p99 {} here.",
        micros(pipe.p50),
        micros(pipe.p99)
    );
    drop(plugin);

    let starts: Vec<Duration> = (0..10)
        .map(|i| {
            let started = Instant::now();
            let handle = load_process(dir, &format!("pstart{i}"), 1);
            let elapsed = started.elapsed();
            drop(handle);
            elapsed
        })
        .collect();
    let mut starts = starts;
    starts.sort_unstable();
    let _ = writeln!(
        report,
        "\nWorker start (spawn, interpreter, import of a small plugin, checked), p50 of 10: {:.1} ms (p90 {:.1} ms).",
        starts[starts.len() / 2].as_secs_f64() * 1e3,
        starts[starts.len() * 9 / 10].as_secs_f64() * 1e3,
    );

    let _ = writeln!(report, "\n## Process tier: CPU-bound calls (same ~10 ms function), K concurrent callers, median of 3 rounds\n\n| K | fidius process tier calls/s (K workers) | `multiprocessing.Pool(K).map` calls/s | fidius / Pool |\n|---|---|---|---|");
    for workers in 1..=cores {
        let plugin = load_process(dir, &format!("pcpu{workers}"), workers);
        for _ in 0..workers {
            plugin.call_typed_json(SPIN, spin_args).unwrap();
        }
        let rounds: Vec<f64> = (0..3)
            .map(|_| {
                throughput(workers, calls_each, |_| {
                    plugin.call_typed_json(SPIN, spin_args).unwrap();
                })
            })
            .collect();
        let ours = median(rounds);
        let theirs = baseline
            .cpu_calls_per_s
            .get(&workers.to_string())
            .copied()
            .unwrap_or(f64::NAN);
        let _ = writeln!(
            report,
            "| {workers} | {ours:.1} | {theirs:.1} | {:.2}× |",
            ours / theirs
        );
    }
}

/// `load_python` of an archive already in the cache, with a fresh `PluginHost` per load (so the
/// host's in-process memo does not hide the cost): the archive is hashed and its slot proven
/// against its record (every file hashed) before the instance starts. With
/// `--cfg fidius_bench_unproven_cache` (`ci/bench` sets it), the same loads with the proof skipped, as
/// before slots were proven, alternate with them in rounds.
fn cached_archive_loads(report: &mut String, root: &Path, quick: bool) {
    let key = generate_signing_key();
    let manifest = |name: &str| {
        format!(
            "[package]\nname = \"{name}\"\nversion = \"1.0.0\"\ninterface = \"Bench\"\n\
             interface_version = 1\nruntime = \"python\"\n\n[python]\nentry_module = \"bench_plugin\"\n"
        )
    };
    // A small plugin, and one vendoring 40 MiB of Python (400 modules the plugin does not import:
    // hashing cost without import cost, the worst case for the proof).
    let filler = |module: u64| -> String {
        let mut state = module.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..2_000)
            .map(|line| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                format!("value_{line} = {state}  # vendored, never imported\n")
            })
            .collect()
    };
    let mut cases = Vec::new();
    for (name, vendored) in [("small", 0), ("vendored", 400)] {
        for signed in [false, true] {
            let package = format!("{name}-{}", if signed { "signed" } else { "unsigned" });
            let source = root.join("archive-src").join(&package);
            std::fs::create_dir_all(source.join("vendor/filler")).expect("source dir");
            std::fs::write(source.join("package.toml"), manifest(&package)).expect("manifest");
            std::fs::write(source.join("bench_plugin.py"), PLUGIN).expect("plugin");
            for i in 0..vendored as u64 {
                std::fs::write(source.join(format!("vendor/filler/m{i}.py")), filler(i))
                    .expect("filler");
            }
            let plugins = root.join("archives").join(&package);
            let policy = if signed {
                SignaturePolicy::SignWith(&key)
            } else {
                SignaturePolicy::CheckExisting(&[])
            };
            pack_dir(&source, &plugins, policy).expect("pack");
            cases.push((package, plugins, signed));
        }
    }
    let cache = root.join("archive-cache");
    let load = |package: &str, plugins: &Path, signed: bool| {
        let mut builder = PluginHost::builder().search_path(plugins).cache_dir(&cache);
        if signed {
            builder = builder
                .require_signature(true)
                .trusted_key(PublicKey::from(key.verifying_key()));
        }
        let started = Instant::now();
        let handle = builder
            .build()
            .expect("host")
            .load_python(package, &BENCH)
            .expect("cached archive loads");
        let elapsed = started.elapsed();
        drop(handle);
        elapsed
    };
    let samples = if quick { 5 } else { 15 };
    let _ = writeln!(report, "\n## load_python of a cached archive (fresh host per load, median of {samples} alternating rounds)\n\n| package | slot proven (shipped) | slot not proven (before) | cost of the proof |\n|---|---|---|---|");
    for (package, plugins, signed) in &cases {
        load(package, plugins, *signed); // unpack into the cache once
        let mut proven = Vec::new();
        let mut unproven: Vec<Duration> = Vec::new();
        for _ in 0..samples {
            proven.push(load(package, plugins, *signed));
            #[cfg(fidius_bench_unproven_cache)]
            {
                use std::sync::atomic::Ordering;
                fidius_host::SERVE_UNPROVEN_FOR_BENCHMARKS.store(true, Ordering::Relaxed);
                unproven.push(load(package, plugins, *signed));
                fidius_host::SERVE_UNPROVEN_FOR_BENCHMARKS.store(false, Ordering::Relaxed);
            }
        }
        proven.sort_unstable();
        unproven.sort_unstable();
        let proven = proven[proven.len() / 2];
        let (before, cost) = match unproven.get(unproven.len() / 2) {
            Some(&before) => (
                format!("{:.2} ms", before.as_secs_f64() * 1e3),
                format!(
                    "{:+.1} %",
                    (proven.as_secs_f64() / before.as_secs_f64() - 1.0) * 100.0
                ),
            ),
            None => ("(run ci/bench)".to_owned(), String::new()),
        };
        let _ = writeln!(
            report,
            "| {package}{} | {:.2} ms | {before} | {cost} |",
            if *signed { ", signature required" } else { "" },
            proven.as_secs_f64() * 1e3,
        );
    }
}

/// An async call awaited in a task of a tokio runtime (2 worker threads) against the same call
/// made blocking, one caller, in both tiers: what the async dispatch hop costs.
fn async_calls(report: &mut String, dir: &Path, iterations: usize) {
    use fidius_core::AsyncPluginCall;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("tokio runtime");
    let _ = writeln!(report, "\n## Async calls (typed, small JSON; one caller awaiting in a tokio task, 2 worker threads)\n\n| tier | blocking p50 | p99 | async p50 | p99 | async p50 / blocking p50 |\n|---|---|---|---|---|---|");
    for (tier, plugin) in [
        ("sub-interpreter", load(dir, "async-thread", 1)),
        ("process", load_process(dir, "async-process", 1)),
    ] {
        let args = br#"[40, 2]"#;
        let blocking = latency(iterations, || {
            drop(plugin.call_typed_json(ADD, args).unwrap())
        });
        let awaited = plugin.clone();
        let samples = runtime
            .block_on(runtime.spawn(async move {
                for _ in 0..iterations / 10 {
                    awaited
                        .call_typed_json_async(ADD, args.to_vec())
                        .await
                        .unwrap();
                }
                let mut samples = Vec::with_capacity(iterations);
                for _ in 0..iterations {
                    let started = Instant::now();
                    awaited
                        .call_typed_json_async(ADD, args.to_vec())
                        .await
                        .unwrap();
                    samples.push(started.elapsed());
                }
                samples
            }))
            .expect("async bench task");
        let awaited = percentiles(samples);
        let _ = writeln!(
            report,
            "| {tier} | {} | {} | {} | {} | {:.2}× |",
            micros(blocking.p50),
            micros(blocking.p99),
            micros(awaited.p50),
            micros(awaited.p99),
            awaited.p50.as_secs_f64() / blocking.p50.as_secs_f64()
        );
    }
}
