//! `fidius call`: load one plugin through the host code and call one method, the way a plugin
//! author tries a plugin without writing a host.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Args;
use fidius_core::interface::WireMode;
use fidius_core::manifest::Isolation;
use fidius_core::toml_error::shorten;
use fidius_core::PluginCall;
use fidius_host::{CallOptions, LoadOptions, PluginHost, PublicKey, PythonPluginHandle};

use super::extensions::own_worker;
use super::python_stub::read_interface;
use super::units::parse_duration;

use crate::out::outln;

/// Load a plugin (directory or .fid) through the host and call one method.
///
/// The interface is read from its Rust source with the same canonicaliser as the macro, so the
/// plugin is checked exactly as a compiled host would check it. NAME (the manifest's
/// `package.name`) is optional: when given, the package must hold that plugin.
#[derive(Debug, Args)]
#[command(
    override_usage = "fidius call [NAME] <DIR|FILE.fid> <METHOD> [JSON_ARGS] --interface <PATH.rs> --trait-name <T>"
)]
pub struct CallCommand {
    /// [NAME] DIR|FILE.fid METHOD [JSON_ARGS]: the plugin's name (optional), the plugin directory
    /// or `.fid` archive, the method, and its arguments as a JSON array for typed methods, e.g.
    /// '["World"]' (default: []).
    #[arg(value_name = "ARGS", num_args = 2..=4, required = true)]
    positional: Vec<String>,

    /// The Rust source file that declares the interface trait.
    #[arg(long, value_name = "PATH.rs")]
    interface: PathBuf,

    /// The name of the interface trait.
    #[arg(long, value_name = "T")]
    trait_name: String,

    /// Raw methods: read the input bytes from this file (default: no bytes).
    #[arg(long, value_name = "FILE")]
    raw_in: Option<PathBuf>,

    /// A method with a streamed argument (`items: Stream<T>`): its items as JSON lines, one per
    /// line, read as the plugin asks for them (`-`: stdin). JSON_ARGS holds the other arguments.
    #[arg(long, value_name = "FILE")]
    stream_in: Option<PathBuf>,

    /// Raw methods: write the output bytes to this file instead of stdout.
    #[arg(long, value_name = "FILE")]
    raw_out: Option<PathBuf>,

    /// Call this many times in all and print calls/s with p50/p99 latency.
    #[arg(long, default_value_t = 1, value_name = "N")]
    repeat: usize,

    /// Spread the calls over this many threads.
    #[arg(long, default_value_t = 1, value_name = "K")]
    threads: usize,

    /// Instances (own-GIL interpreters, or worker processes in the process tier) serving the plugin.
    #[arg(long, default_value_t = 1, value_name = "N")]
    instances: usize,

    /// Fail a call that takes longer than this (e.g. `500ms`, `2s`, `1.5s`, `1m`): runaway Python is
    /// interrupted, and the command exits non-zero with the timeout error. Default: no limit.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    timeout: Option<Duration>,

    #[command(flatten)]
    load: LoadArgs,
}

/// How a command loads a plugin through the host: the signature policy, the tier, strictness and
/// the load timeout (`fidius call`, `fidius test`).
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Override the package's isolation: auto, subinterpreter or process. The tier chosen and why
    /// is printed to stderr either way.
    #[arg(long, value_name = "MODE", value_parser = str::parse::<Isolation>)]
    isolation: Option<Isolation>,

    /// Trust signatures by this public key (repeatable).
    #[arg(long = "key", value_name = "KEY.public")]
    keys: Vec<PathBuf>,

    /// Refuse the plugin unless a `--key` signed it.
    #[arg(long, requires = "keys")]
    require_signature: bool,

    /// Refuse what the original fidius accepted and fidius loads with a warning (methods without
    /// @method, an interface name spelled differently from the trait's).
    #[arg(long)]
    strict: bool,

    /// Fail the load (import of the plugin and its dependencies, in each instance) if it takes
    /// longer than this, e.g. `30s`. Default: no limit.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    load_timeout: Option<Duration>,

    /// Where `.fid` archives are unpacked (default: see `fidius cache list`).
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,

    /// Load a configured instance: each instance calls the plugin module's
    /// `__fidius_configure__(config)` with this JSON value, e.g. '{"display_name": "pipe"}', and
    /// the object it returns serves the methods.
    #[arg(long, value_name = "JSON")]
    config: Option<String>,
}

impl LoadArgs {
    /// A host with this signature policy and cache folder.
    pub fn host(&self) -> anyhow::Result<PluginHost> {
        let mut builder = PluginHost::builder().require_signature(self.require_signature);
        for key in &self.keys {
            let key = PublicKey::from_file(key)
                .with_context(|| format!("cannot load public key {}", key.display()))?;
            builder = builder.trusted_key(key);
        }
        if let Some(dir) = &self.cache_dir {
            builder = builder.cache_dir(dir);
        }
        Ok(builder.build()?)
    }

    /// Load options with this tier override, strictness and load timeout; this executable serves
    /// as the process-tier worker.
    pub fn options(&self) -> anyhow::Result<LoadOptions> {
        let mut options = LoadOptions::default()
            .worker_command(own_worker()?)
            .strict(self.strict);
        if let Some(isolation) = self.isolation {
            options = options.isolation(isolation);
        }
        if let Some(timeout) = self.load_timeout {
            options = options.load_timeout(timeout);
        }
        if let Some(text) = &self.config {
            let config: serde_json::Value = serde_json::from_str(text)
                .with_context(|| format!("--config `{}` is not JSON", shorten(text)))?;
            options = options.config(&config);
        }
        Ok(options)
    }
}

impl CallCommand {
    pub fn execute(self) -> anyhow::Result<()> {
        if self.threads == 0 || self.repeat == 0 {
            bail!("--repeat and --threads must be at least 1");
        }
        let target = CallTarget::from_positional(&self.positional)?;
        let interface = read_interface(&self.interface, &self.trait_name)?;
        let descriptor = interface.spec.descriptor();
        let index = descriptor.method_index(&target.method).with_context(|| {
            let names: Vec<&str> = descriptor.methods.iter().map(|m| m.name.as_str()).collect();
            format!(
                "interface `{}` has no method `{}`; its methods are: {}",
                descriptor.trait_name,
                target.method,
                names.join(", ")
            )
        })?;
        let wire = descriptor.methods[index].wire;
        let method = &descriptor.methods[index];
        match (method.streams_argument, &self.stream_in) {
            (true, None) => bail!(
                "`{}` takes a streamed argument (`Stream<T>`): pass its items with --stream-in \
                 FILE (JSON lines, `-` for stdin)",
                target.method
            ),
            (false, Some(_)) => bail!(
                "`{}` takes no streamed argument; --stream-in is for methods that do",
                target.method
            ),
            _ => {}
        }
        let streams = method.streams_result;
        if (streams || method.streams_argument) && self.repeat > 1 {
            bail!(
                "`{}` streams; --repeat measures plain calls only",
                target.method
            );
        }
        let input = self.input(&target, wire)?;

        let host = self.load.host()?;
        let mut options = self.load.options()?.instances(self.instances);
        if let Some(timeout) = self.timeout {
            options = options.call_timeout(timeout);
        }
        let handle = host.load_python_path(&target.package, descriptor, options)?;
        let info = handle.info();
        let found = info
            .manifest
            .as_ref()
            .map(|manifest| manifest.package.name.as_str())
            .unwrap_or_default();
        if let Some(expected) = target.plugin.as_deref().filter(|&name| name != found) {
            bail!(
                "{} holds plugin `{found}`, not `{expected}`",
                target.package.display(),
            );
        }

        let tier = handle.tier();
        eprintln!("tier: {} ({})", tier.tier, tier.reason);
        for warning in &info.warnings {
            eprintln!("warning: {warning} (loaded as the original fidius would; --strict refuses)");
        }

        if let Some(path) = &self.stream_in {
            let (items, failed) = super::stream_in::open(path)?;
            let result = if streams {
                handle
                    .call_stream_with_stream_raw(index, &input, items, &CallOptions::default())
                    .map_err(reported)
                    .and_then(print_items)
                    .map(|()| None)
            } else {
                handle
                    .call_with_stream_raw(index, &input, items, &CallOptions::default())
                    .map_err(reported)
                    .map(Some)
            };
            if let Some(error) = super::stream_in::read_error(&failed) {
                bail!(error);
            }
            if let Some(output) = result? {
                self.print(wire, &output)?;
            }
            return Ok(());
        }
        if streams {
            return print_stream(&handle, index, &input);
        }
        let output = call(&handle, index, wire, &input)?;
        self.print(wire, &output)?;
        if self.repeat > 1 {
            let report = measure(&handle, index, wire, &input, self.repeat, self.threads)?;
            eprintln!("{report}");
        }
        Ok(())
    }

    fn input(&self, target: &CallTarget, wire: WireMode) -> anyhow::Result<Vec<u8>> {
        match wire {
            WireMode::Raw => {
                if target.args.is_some() {
                    bail!(
                        "`{}` is a raw method (bytes in, bytes out): pass its input with \
                         --raw-in FILE, not JSON_ARGS",
                        target.method
                    );
                }
                match &self.raw_in {
                    Some(path) => std::fs::read(path)
                        .with_context(|| format!("cannot read --raw-in {}", path.display())),
                    None => Ok(Vec::new()),
                }
            }
            WireMode::TypedJson => {
                let text = target.args.as_deref().unwrap_or("[]");
                let example = || {
                    format!(
                        "JSON_ARGS is a JSON array of the arguments, e.g. fidius call {} {} \
                         '[\"World\"]'",
                        target.package.display(),
                        target.method
                    )
                };
                let value: serde_json::Value = serde_json::from_str(text)
                    .with_context(|| format!("`{}` is not JSON; {}", shorten(text), example()))?;
                if !value.is_array() {
                    bail!("`{}` is not an array; {}", shorten(text), example());
                }
                Ok(text.as_bytes().to_vec())
            }
        }
    }

    fn print(&self, wire: WireMode, output: &[u8]) -> anyhow::Result<()> {
        match (wire, &self.raw_out) {
            (WireMode::Raw, Some(path)) => std::fs::write(path, output)
                .with_context(|| format!("cannot write --raw-out {}", path.display())),
            (WireMode::Raw, None) => crate::out::write(output),
            (WireMode::TypedJson, _) => {
                let value: serde_json::Value =
                    serde_json::from_slice(output).context("the plugin returned invalid JSON")?;
                outln!("{}", serde_json::to_string_pretty(&value)?)?;
                Ok(())
            }
        }
    }
}

/// What the positional arguments name: `[NAME] DIR|FILE.fid METHOD [JSON_ARGS]`.
#[derive(Debug)]
struct CallTarget {
    plugin: Option<String>,
    package: PathBuf,
    method: String,
    args: Option<String>,
}

impl CallTarget {
    /// NAME is there when four arguments are given, or three whose second is a path that exists
    /// (`NAME PACKAGE METHOD`, as opposed to `PACKAGE METHOD JSON`). The first may exist too: a
    /// package folder is often named after its plugin.
    fn from_positional(positional: &[String]) -> anyhow::Result<Self> {
        let with_name = match positional {
            [_, _, _, _] => true,
            [_, second, _] => Path::new(second).exists(),
            _ => false,
        };
        let (plugin, rest) = match (with_name, positional.split_first()) {
            (true, Some((name, rest))) => (Some(name.clone()), rest),
            _ => (None, positional),
        };
        match rest {
            [package, method] | [package, method, _] => Ok(Self {
                plugin,
                package: PathBuf::from(package),
                method: method.clone(),
                args: rest.get(2).cloned(),
            }),
            _ => bail!(
                "expected [NAME] DIR|FILE.fid METHOD [JSON_ARGS], e.g. \
                 fidius call my-greeter-0.1.0.fid greet '[\"World\"]' --interface src/lib.rs \
                 --trait-name Greeter"
            ),
        }
    }
}

fn call(
    handle: &PythonPluginHandle,
    index: usize,
    wire: WireMode,
    input: &[u8],
) -> anyhow::Result<Vec<u8>> {
    let result = match wire {
        WireMode::Raw => handle.call_raw(index, input),
        WireMode::TypedJson => handle.call_typed_json(index, input),
    };
    result.map_err(reported)
}

/// A streamed result: one compact JSON value per line, each printed as it arrives.
fn print_stream(handle: &PythonPluginHandle, index: usize, input: &[u8]) -> anyhow::Result<()> {
    let stream = handle
        .call_stream_raw(index, input, &CallOptions::default())
        .map_err(reported)?;
    print_items(stream)
}

/// A streamed result's items, one compact JSON value per line, each printed as it arrives.
fn print_items(stream: fidius_host::RawPluginStream) -> anyhow::Result<()> {
    for item in stream {
        let item = item.map_err(reported)?;
        let value: serde_json::Value =
            serde_json::from_slice(&item).context("the plugin streamed invalid JSON")?;
        outln!("{value}")?;
    }
    Ok(())
}

/// A call's error, its traceback or the worker's stderr printed first.
fn reported(error: fidius_core::CallError) -> anyhow::Error {
    {
        match &error {
            fidius_core::CallError::Python {
                traceback: Some(traceback),
                ..
            } => eprint!("{traceback}"),
            fidius_core::CallError::WorkerCrashed { stderr_tail, .. }
                if !stderr_tail.is_empty() =>
            {
                eprint!("the worker's stderr ended with:\n{stderr_tail}")
            }
            _ => {}
        }
        anyhow::Error::new(error)
    }
}

/// `total` calls over `threads` threads: throughput and latency percentiles.
fn measure(
    handle: &PythonPluginHandle,
    index: usize,
    wire: WireMode,
    input: &[u8],
    total: usize,
    threads: usize,
) -> anyhow::Result<String> {
    let started = Instant::now();
    let mut latencies: Vec<Duration> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|thread| {
                let calls = total / threads + usize::from(thread < total % threads);
                scope.spawn(move || -> anyhow::Result<Vec<Duration>> {
                    (0..calls)
                        .map(|_| {
                            let call_started = Instant::now();
                            call(handle, index, wire, input)?;
                            Ok(call_started.elapsed())
                        })
                        .collect()
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| {
                worker
                    .join()
                    .unwrap_or_else(|_| bail!("a calling thread panicked"))
            })
            .collect::<anyhow::Result<Vec<_>>>()
            .map(|per_thread| per_thread.into_iter().flatten().collect())
    })?;
    let wall = started.elapsed();
    latencies.sort_unstable();
    let percentile = |p: usize| latencies[(latencies.len() * p / 100).min(latencies.len() - 1)];
    Ok(format!(
        "{total} calls on {threads} thread(s) in {:.3} s: {:.0} calls/s, p50 {:.1} µs, p99 {:.1} µs",
        wall.as_secs_f64(),
        total as f64 / wall.as_secs_f64(),
        percentile(50).as_secs_f64() * 1e6,
        percentile(99).as_secs_f64() * 1e6,
    ))
}
