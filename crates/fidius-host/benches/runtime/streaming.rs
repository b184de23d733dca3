//! Streamed results and arguments: items per second of a generator read to its end, and of a
//! streamed argument summed by the plugin, in both tiers.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use fidius_core::interface::{
    PythonArgDescriptor, PythonInterfaceDescriptor, PythonMethodDescriptor, WireMode,
};
use fidius_core::manifest::Isolation;
use fidius_host::{CallOptions, LoadOptions, PluginSource, PythonPluginHandle, WorkerCommand};

const PLUGIN: &str = r#"
from fidius import method
__interface_hash__ = 0x5eedf00d5eedf00d

@method
def count(n):
    return range(n)
"#;

static STREAMER: PythonInterfaceDescriptor = PythonInterfaceDescriptor {
    trait_name: "Streamer",
    version: 1,
    interface_hash: 0x5eed_f00d_5eed_f00d,
    schema_fingerprint: None,
    methods: &[PythonMethodDescriptor {
        name: "count",
        wire: WireMode::TypedJson,
        args: &[PythonArgDescriptor {
            name: "n",
            ty: "u64",
        }],
        returns: "u64",
        optional_since: None,
        signature: "count:u64->u64!stream",
        streams_result: true,
        streams_argument: false,
        streamed_argument: None,
    }],
};

/// One row per tier: a `range(n)` streamed to the host and counted, median of 5 runs.
pub fn streamed_items(report: &mut String, root: &Path, quick: bool) {
    let dir = root.join("streamer");
    std::fs::create_dir_all(&dir).expect("plugin dir");
    std::fs::write(dir.join("streamer.py"), PLUGIN).expect("plugin file");
    let items: u64 = if quick { 20_000 } else { 500_000 };
    let _ = writeln!(
        report,
        "\n## Streamed results ({items} items of a `range` read to the end, default window of 16, median of 5)\n\n| tier | items/s | per item |\n|---|---|---|"
    );
    let args = format!("[{items}]").into_bytes();
    for (tier, options) in tiers() {
        let handle = PythonPluginHandle::start(
            PluginSource::new("streamer", "1.0.0", &dir, "streamer"),
            &STREAMER,
            &options,
        )
        .expect("the streamer loads");
        let rate = median_rate(items, || {
            let read = handle
                .call_stream_raw(0, &args, &CallOptions::default())
                .expect("opens")
                .try_fold(0u64, |read, item| item.map(|_| read + 1))
                .expect("every item");
            assert_eq!(read, items);
        });
        let _ = writeln!(report, "| {tier} | {rate:.0} | {:.2} µs |", 1e6 / rate);
    }
}

const FEEDER_PLUGIN: &str = r#"
from fidius import method
__interface_hash__ = 0x5eedf00d5eedf00e

@method
def total(items):
    return sum(items)
"#;

static FEEDER: PythonInterfaceDescriptor = PythonInterfaceDescriptor {
    trait_name: "Feeder",
    version: 1,
    interface_hash: 0x5eed_f00d_5eed_f00e,
    schema_fingerprint: None,
    methods: &[PythonMethodDescriptor {
        name: "total",
        wire: WireMode::TypedJson,
        args: &[PythonArgDescriptor {
            name: "items",
            ty: "u64",
        }],
        returns: "u64",
        optional_since: None,
        signature: "total:u64->u64<stream",
        streams_result: false,
        streams_argument: true,
        streamed_argument: Some(0),
    }],
};

/// One row per tier: a streamed argument of `0..n` summed by the plugin (each item pulled from the
/// host as Python asks for it), median of 5 runs.
pub fn streamed_arguments(report: &mut String, root: &Path, quick: bool) {
    let dir = root.join("feeder");
    std::fs::create_dir_all(&dir).expect("plugin dir");
    std::fs::write(dir.join("feeder.py"), FEEDER_PLUGIN).expect("plugin file");
    let items: u64 = if quick { 20_000 } else { 500_000 };
    let _ = writeln!(
        report,
        "\n## Streamed arguments ({items} items summed by the plugin, one pull per item, median of 5)\n\n| tier | items/s | per item |\n|---|---|---|"
    );
    for (tier, options) in tiers() {
        let handle = PythonPluginHandle::start(
            PluginSource::new("feeder", "1.0.0", &dir, "feeder"),
            &FEEDER,
            &options,
        )
        .expect("the feeder loads");
        let rate = median_rate(items, || {
            let sum: u64 = handle
                .call_with_stream_typed_json(0, b"[]", 0..items, &CallOptions::default())
                .expect("the sum");
            assert_eq!(sum, items * (items - 1) / 2);
        });
        let _ = writeln!(report, "| {tier} | {rate:.0} | {:.2} µs |", 1e6 / rate);
    }
}

/// Both tiers' load options, named as the rows are.
fn tiers() -> [(&'static str, LoadOptions); 2] {
    [
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
    ]
}

/// Items per second of `run` (which moves `items` items), median of 5 runs.
fn median_rate(items: u64, mut run: impl FnMut()) -> f64 {
    let mut rates: Vec<f64> = (0..5)
        .map(|_| {
            let started = Instant::now();
            run();
            items as f64 / started.elapsed().as_secs_f64()
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    rates[2]
}
