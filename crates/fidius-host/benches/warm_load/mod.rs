//! `ci/bench` section "warm loads of real registry packages": a plugin that imports attrs, Jinja2,
//! pydantic 2 or numpy (installed from the package index with the bench's CPython into the plugin's
//! `vendor/`), loaded by a `PluginHost` with the bytecode cache off (every module compiled from
//! source, as before the cache) and on (cache warmed by one load), against a plain
//! `python3 -I -c 'import X'` of the same files with their bytecode compiled. Skipped, with a line
//! saying so, when pip cannot install (no network). The three medians per package are also drawn
//! as a bar chart (`plot`), written to `target/bench/load-times.svg` and, only when asked with
//! `--write-plot` or `FIDIUS_BENCH_WRITE_PLOT=1`, copied to the committed
//! `ci/bench-results/load-times.svg` the README shows (so a plain bench run leaves the tree clean).

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
pub fn pip_install(requirement: &str, target: &Path) -> Result<(), String> {
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
    let mut memory_rows = Vec::new();
    let mut plotted = Vec::new();
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
                .unwrap_or_else(|error| panic!("{label}: {error} ({error:?})"));
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
        plotted.push(PlotRow {
            label: format!("{label} ({tier})"),
            before: cold,
            after: warm,
            python,
        });
        if tier == "subinterpreter" {
            memory_rows.push(memory_row(
                label, module, &plain, &cold_host, &warm_host, descriptor,
            ));
        }
        let _ = writeln!(
            report,
            "| {label} | {tier} | {} | {} | {} | {:.2} |",
            ms(python),
            ms(cold),
            ms(warm),
            warm.as_secs_f64() / python.as_secs_f64()
        );
    }
    write_plot(report, &plotted, samples);
    let _ = writeln!(
        report,
        "\n## Memory of real plugins in the sub-interpreter tier (RSS of this process)\n\n\
         | package | per instance (4 instances), cache off | per instance, bytecode cache | kept per load/drop cycle, cache off | kept per cycle, bytecode cache | kept per create/import/destroy cycle in plain CPython (`_interpreters`, bytecode) |\n|---|---|---|---|---|---|"
    );
    for row in memory_rows {
        let _ = writeln!(report, "{row}");
    }
}

/// One package's bars: fidius load without the bytecode cache (before), with it (after), and
/// plain `python3 -c 'import X'`, each a median.
struct PlotRow {
    /// The package and the tier it ran in.
    label: String,
    before: Duration,
    after: Duration,
    python: Duration,
}

/// Draws `rows` to `target/bench/load-times.svg` (and copies it to `ci/bench-results/` when asked)
/// and says where in `report`.
fn write_plot(report: &mut String, rows: &[PlotRow], samples: usize) {
    if rows.is_empty() {
        return;
    }
    let checkout = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let svg = checkout.join("target/bench/load-times.svg");
    let drawn = std::fs::create_dir_all(checkout.join("target/bench"))
        .map_err(|error| error.to_string())
        .and_then(|()| plot(rows, samples, &svg).map_err(|error| error.to_string()));
    if let Err(why) = drawn {
        let _ = writeln!(report, "\nThe load-time plot was not drawn: {why}");
        return;
    }
    let _ = writeln!(
        report,
        "\nPlot of these loads: `target/bench/load-times.svg`."
    );
    let asked = std::env::args().any(|arg| arg == "--write-plot")
        || std::env::var_os("FIDIUS_BENCH_WRITE_PLOT").is_some_and(|value| value == "1");
    if asked {
        let committed = checkout.join("ci/bench-results/load-times.svg");
        let copied = std::fs::create_dir_all(checkout.join("ci/bench-results"))
            .and_then(|()| std::fs::copy(&svg, &committed));
        let _ = match copied {
            Ok(_) => writeln!(report, "Copied to `ci/bench-results/load-times.svg`."),
            Err(error) => writeln!(report, "Copying it to `ci/bench-results/` failed: {error}"),
        };
    }
}

/// A grouped bar chart, one group per package, in milliseconds.
fn plot(rows: &[PlotRow], samples: usize, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    use plotters::style::text_anchor::{HPos, Pos, VPos};

    let ms = |duration: Duration| duration.as_secs_f64() * 1e3;
    let tallest = rows
        .iter()
        .flat_map(|row| [row.before, row.after, row.python])
        .max()
        .map_or(1.0, ms);
    let root = SVGBackend::new(path, (960, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    // Group i is centred on x = i, so the axis's whole-number key points name the packages.
    let groups = rows.len() as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "Plugin load time per package, CPython {} (median of {samples}, ci/bench --only-warm-load)",
                fidius_ffi::python_version()
            ),
            ("sans-serif", 22),
        )
        .margin(16)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(-0.5..groups - 0.5, 0.0..tallest * 1.15)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(rows.len())
        .x_label_formatter(&|x| {
            let whole = x.round();
            if (x - whole).abs() > 1e-6 || whole < 0.0 {
                return String::new();
            }
            rows.get(whole as usize)
                .map_or_else(String::new, |row| row.label.clone())
        })
        .y_label_formatter(&|ms| format!("{ms:.0}"))
        .y_desc("milliseconds")
        .light_line_style(TRANSPARENT)
        .label_style(("sans-serif", 16))
        .draw()?;
    /// Which of a row's medians a series draws.
    type Bar = fn(&PlotRow) -> Duration;
    let series: [(&str, RGBColor, Bar); 3] = [
        (
            "fidius load, no bytecode cache (before)",
            RGBColor(214, 96, 77),
            |row| row.before,
        ),
        (
            "fidius warm load, bytecode cache (after)",
            RGBColor(67, 147, 195),
            |row| row.after,
        ),
        (
            "python3 -I -c 'import X', with bytecode",
            RGBColor(150, 150, 150),
            |row| row.python,
        ),
    ];
    let width = 0.8 / series.len() as f64;
    for (k, (name, color, value)) in series.into_iter().enumerate() {
        let left = |i: usize| i as f64 - 0.4 + k as f64 * width;
        chart
            .draw_series(rows.iter().enumerate().map(|(i, row)| {
                Rectangle::new(
                    [(left(i), 0.0), (left(i) + width * 0.9, ms(value(row)))],
                    color.filled(),
                )
            }))?
            .label(name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled()));
        chart.draw_series(rows.iter().enumerate().map(|(i, row)| {
            Text::new(
                format!("{:.0}", ms(value(row))),
                (left(i), ms(value(row)) + tallest * 0.01),
                TextStyle::from(("sans-serif", 13).into_font())
                    .pos(Pos::new(HPos::Left, VPos::Bottom)),
            )
        }))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(("sans-serif", 15))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

fn mib(bytes: i64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

fn rss() -> i64 {
    i64::try_from(crate::support::rss_bytes()).unwrap_or(i64::MAX)
}

/// Per-instance RSS and RSS kept per load/drop cycle of one plugin, with and without the bytecode
/// cache, and what plain CPython keeps per isolated interpreter importing the same package.
fn memory_row(
    label: &str,
    module: &str,
    plain: &Path,
    cold_host: &PluginHost,
    warm_host: &PluginHost,
    descriptor: &'static PythonInterfaceDescriptor,
) -> String {
    const INSTANCES: usize = 4;
    const CYCLES: i64 = 5;
    let load = |host: &PluginHost, instances: usize| {
        host.load_python_with(
            label,
            descriptor,
            LoadOptions::default().instances(instances),
        )
        .unwrap_or_else(|error| panic!("{label}: {error} ({error:?})"))
    };
    let per_instance = |host: &PluginHost| {
        drop(load(host, 1)); // what the first load of a process sets up once
        let before = rss();
        let handle = load(host, INSTANCES);
        let grown = rss() - before;
        drop(handle);
        grown / INSTANCES as i64
    };
    let per_cycle = |host: &PluginHost| {
        drop(load(host, 1));
        let before = rss();
        for _ in 0..CYCLES {
            drop(load(host, 1));
        }
        (rss() - before) / CYCLES
    };
    let (instance_cold, instance_warm) = (per_instance(cold_host), per_instance(warm_host));
    let (cycle_cold, cycle_warm) = (per_cycle(cold_host), per_cycle(warm_host));
    let script = format!(
        "import _interpreters, sys\n\
         def rss():\n    return int(open('/proc/self/statm').read().split()[1]) * 4096\n\
         code = 'import sys; sys.path.insert(0, {plain:?}); import {module}'\n\
         def cycle():\n    i = _interpreters.create('isolated'); _interpreters.run_string(i, code); _interpreters.destroy(i)\n\
         cycle(); before = rss()\n\
         for _ in range({CYCLES}): cycle()\n\
         print((rss() - before) // {CYCLES})\n",
        plain = plain.display().to_string()
    );
    let plain_cycle = Command::new(env!("FIDIUS_BUILD_PYTHON"))
        .args(["-I", "-c", &script])
        .output()
        .ok()
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .and_then(|out| out.trim().parse::<i64>().ok())
        .map_or_else(|| "(failed)".to_owned(), mib);
    format!(
        "| {label} | {} | {} | {} | {} | {plain_cycle} |",
        mib(instance_cold),
        mib(instance_warm),
        mib(cycle_cold),
        mib(cycle_warm)
    )
}

/// Section "spare interpreters": a small plugin's load (one instance) without a spare and with one
/// ready, and the memory a ready spare holds. Run last: the spare pool is process-wide and stays
/// once asked for.
pub fn spare_loads(
    report: &mut String,
    root: &Path,
    quick: bool,
    plugin: &str,
    descriptor: &'static PythonInterfaceDescriptor,
) {
    let samples = if quick { 9 } else { 31 };
    let dir = root.join("spare-plugin");
    std::fs::create_dir_all(&dir).expect("plugin dir");
    std::fs::write(dir.join("bench_plugin.py"), plugin).expect("plugin file");
    let load = || {
        let started = Instant::now();
        let handle = PythonPluginHandle::start(
            fidius_host::PluginSource::new("spare", "1.0.0", &dir, "bench_plugin"),
            descriptor,
            &LoadOptions::default(),
        )
        .expect("small plugin loads");
        let elapsed = started.elapsed();
        drop(handle);
        elapsed
    };
    let cold: Vec<Duration> = (0..samples).map(|_| load()).collect();
    let _host = PluginHost::builder()
        .spare_interpreters(1)
        .build()
        .expect("host");
    let mut spare = Vec::new();
    for _ in 0..samples {
        let until = Instant::now() + Duration::from_secs(30);
        while fidius_host::spare_interpreter_stats().ready == 0 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(2));
        }
        spare.push(load());
    }
    // Seven more spares (the pool holds one already): what each adds to the process.
    let before = crate::support::rss_bytes();
    let _more = PluginHost::builder()
        .spare_interpreters(8)
        .build()
        .expect("host");
    let until = Instant::now() + Duration::from_secs(60);
    while fidius_host::spare_interpreter_stats().ready < 8 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
    let per_spare = crate::support::rss_bytes().saturating_sub(before) / 7;
    let _ = writeln!(
        report,
        "\n## Spare interpreters (small plugin, 1 instance, p50 of {samples})\n\n| load | p50 |\n|---|---|\n| no spare (creates its interpreter) | {} |\n| spare ready (`spare_interpreters(1)`) | {} |\n| RSS per ready spare (7 more made) | {:.2} MiB |",
        ms(median(cold)),
        ms(median(spare)),
        per_spare as f64 / f64::from(1 << 20)
    );
}
