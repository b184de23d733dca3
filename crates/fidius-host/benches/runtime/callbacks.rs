//! The "Host functions" section of `ci/bench`: what one `fidius.host.<name>()` round trip costs in
//! each tier, against a plain call of the same plugin in the same run.

use std::fmt::Write as _;
use std::path::Path;

use fidius_core::manifest::Isolation;
use fidius_core::PluginCall;
use fidius_host::{HostFunctionError, LoadOptions, PluginHost, PythonPluginHandle, WorkerCommand};

use super::{latency, micros, ADD, BENCH, PLUGIN};

/// The bench plugin whose `add` asks the host to add instead.
fn calling_plugin() -> String {
    PLUGIN.replace(
        "def add(a, b):\n    return a + b",
        "def add(a, b):\n    return fidius.host.add(a, b)",
    ) + "\nimport fidius\n"
}

fn package(root: &Path, name: &str, module: &str) -> std::path::PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).expect("plugin dir");
    let manifest = format!(
        "[package]\nname = \"{name}\"\nversion = \"1.0.0\"\ninterface = \"Bench\"\n\
         interface_version = 1\nruntime = \"python\"\n\n[python]\nentry_module = \"bench_plugin\"\n"
    );
    std::fs::write(dir.join("package.toml"), manifest).expect("manifest");
    std::fs::write(dir.join("bench_plugin.py"), module).expect("plugin file");
    dir
}

pub(super) fn host_functions(report: &mut String, root: &Path, iterations: usize) {
    let plain_dir = package(root, "cb-plain", PLUGIN);
    let calling_dir = package(root, "cb-calling", &calling_plugin());
    let bare = PluginHost::builder().build().expect("host");
    let with_functions = PluginHost::builder()
        .host_function_typed("add", |(a, b): (i64, i64)| {
            Ok::<_, HostFunctionError>(a + b)
        })
        .build()
        .expect("host");
    let _ = writeln!(
        report,
        "\n## Host functions: one `fidius.host.add(40, 2)` round trip per call (typed small call)\n\n\
         | tier | plain call p50 | plain call, host has host functions p50 | call making 1 host call p50 | p99 | host call round trip (difference) | host-call call / plain call |\n|---|---|---|---|---|---|---|"
    );
    let tiers = [
        (
            "sub-interpreter",
            LoadOptions::default().isolation(Isolation::Subinterpreter),
        ),
        (
            "process",
            LoadOptions::default()
                .isolation(Isolation::Process)
                .worker_command(WorkerCommand::new(env!("CARGO_BIN_EXE_fidius-worker"))),
        ),
    ];
    for (tier, options) in tiers {
        let load = |host: &PluginHost, dir: &Path| -> PythonPluginHandle {
            host.load_python_path(dir, &BENCH, options.clone())
                .expect("bench plugin loads")
        };
        let plain = load(&bare, &plain_dir);
        let plain_with = load(&with_functions, &plain_dir);
        let calling = load(&with_functions, &calling_dir);
        let args = br#"[40, 2]"#;
        assert_eq!(calling.call_typed_json(ADD, args).expect("call"), b"42");
        let call = |handle: &PythonPluginHandle| {
            latency(iterations, || {
                drop(handle.call_typed_json(ADD, args).expect("call"))
            })
        };
        let (plain, plain_with, calling) = (call(&plain), call(&plain_with), call(&calling));
        let _ = writeln!(
            report,
            "| {tier} | {} | {} | {} | {} | {} | {:.2}× |",
            micros(plain.p50),
            micros(plain_with.p50),
            micros(calling.p50),
            micros(calling.p99),
            micros(calling.p50.saturating_sub(plain_with.p50)),
            calling.p50.as_secs_f64() / plain.p50.as_secs_f64()
        );
    }
}
