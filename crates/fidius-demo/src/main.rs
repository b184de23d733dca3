//! `fidius-demo`: the host half of `ci/demo`.
//!
//! It requires signatures from one trusted key, discovers the `VersionReport` packages in a
//! folder, loads each into its own pool of instances (own-GIL sub-interpreters, or worker processes
//! for the plugin built on numpy, which `isolation = "auto"` sends to the process tier), shows what
//! each plugin's library makes of the same inputs, then calls all of them from several threads at
//! once.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use clap::Parser;
use fidius_core::CallError;
use fidius_demo::__fidius_VersionReport::VersionReport_PYTHON_DESCRIPTOR;
use fidius_demo::VersionReportClient;
use fidius_host::{LoadOptions, PluginHost, PublicKey, PythonPluginHandle, Tier};

/// Load the signed `VersionReport` plugins in a folder and call them concurrently.
#[derive(Debug, Parser)]
#[command(version)]
struct DemoArgs {
    /// Folder holding the plugin packages (`.fid` files or plugin directories).
    #[arg(long, value_name = "DIR")]
    plugins: PathBuf,

    /// The public key every plugin must be signed with.
    #[arg(long, value_name = "KEY.public")]
    key: PathBuf,

    /// Where `.fid` archives are unpacked [default: fidius's cache in $HOME].
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,

    /// Instances per plugin (sub-interpreters, or worker processes in the process tier).
    #[arg(long, default_value_t = 2)]
    instances: usize,

    /// Host threads calling at once.
    #[arg(long, default_value_t = 4)]
    threads: usize,

    /// Calls each thread makes, spread over all plugins.
    #[arg(long, default_value_t = 5_000)]
    calls_per_thread: usize,
}

type Client = VersionReportClient<PythonPluginHandle>;

/// One loaded plugin and the library version it reported.
struct Loaded {
    name: String,
    library: String,
    client: Client,
}

/// Inputs every plugin is shown: a full version, a short one (only semver 3 may accept it) and a
/// raw list where string order and version order disagree.
const SAMPLES: [&str; 2] = ["1.2.3-rc.1", "1.2"];
const CANDIDATES: &[u8] = b"1.9.0 1.10.0-rc.1 1.10.0";

fn main() -> ExitCode {
    match run(DemoArgs::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: DemoArgs) -> anyhow::Result<()> {
    let key = PublicKey::from_file(&args.key)
        .with_context(|| format!("cannot read the trusted key {}", args.key.display()))?;
    let mut builder = PluginHost::builder()
        .search_path(&args.plugins)
        .require_signature(true)
        .trusted_key(key);
    if let Some(cache_dir) = &args.cache_dir {
        builder = builder.cache_dir(cache_dir);
    }
    let host = builder.build()?;

    let plugins = discover(&host, &args.plugins)?
        .iter()
        .map(|name| load(&host, name, args.instances))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for plugin in &plugins {
        show(plugin)?;
    }
    show_isolation(&plugins)?;

    let elapsed = call_concurrently(&plugins, args.threads, args.calls_per_thread)?;
    let calls = args.threads * args.calls_per_thread;
    println!(
        "timing: {calls} calls from {} threads over {} instances in {:.2} s = {:.0} calls/s",
        args.threads,
        plugins.len() * args.instances,
        elapsed.as_secs_f64(),
        calls as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}

/// Lists what the search path holds (manifests only) and returns the `VersionReport` plugins.
fn discover(host: &PluginHost, dir: &Path) -> anyhow::Result<Vec<String>> {
    let discovery = host.discover()?;
    for broken in &discovery.broken {
        println!("unreadable: {}: {:#}", broken.path.display(), broken.error);
    }
    let listing: Vec<String> = discovery
        .plugins
        .iter()
        .map(|found| {
            let signed = if found.signed { "signed" } else { "unsigned" };
            format!("{} {} ({signed})", found.name(), found.version())
        })
        .collect();
    println!(
        "discovered (manifests only) in {}: {}",
        dir.display(),
        listing.join(", ")
    );
    let names: Vec<String> = discovery
        .plugins
        .into_iter()
        .filter(|found| found.interface() == VersionReport_PYTHON_DESCRIPTOR.trait_name)
        .map(|found| found.name().to_owned())
        .collect();
    ensure!(
        names.len() >= 2,
        "expected at least two VersionReport plugins in {}, found {}",
        dir.display(),
        names.len()
    );
    Ok(names)
}

fn load(host: &PluginHost, name: &str, instances: usize) -> anyhow::Result<Loaded> {
    let handle = host
        .load_python_with(
            name,
            &VersionReport_PYTHON_DESCRIPTOR,
            LoadOptions::default().instances(instances),
        )
        .with_context(|| format!("cannot load plugin {name}"))?;
    let info = handle.info();
    let signer = info
        .signer
        .as_ref()
        .context("the host loaded a plugin without a verified signature")?;
    let tier = handle.tier();
    let instances = match tier.tier {
        Tier::Process => "worker processes",
        Tier::Subinterpreter => "sub-interpreters",
        Tier::Rust => "in-process library",
        // `Tier` is non-exhaustive; a tier this demo does not know gets a neutral word.
        _ => "instances",
    };
    println!(
        "loaded {name} from {} (signed by key {signer}, {} {instances})",
        info.path.display(),
        handle.instances(),
    );
    println!("  tier: {} ({})", tier.tier, tier.reason);
    let client = VersionReportClient(handle);
    let library = client.describe(SAMPLES[0].to_owned())?.library;
    Ok(Loaded {
        name: name.to_owned(),
        library,
        client,
    })
}

/// What one plugin makes of the sample inputs.
fn show(plugin: &Loaded) -> anyhow::Result<()> {
    println!("{}: imported {}", plugin.name, plugin.library);
    for text in SAMPLES {
        let outcome = match plugin.client.describe(text.to_owned()) {
            Ok(report) => format!("{}, next minor {}", report.canonical, report.next_minor),
            Err(CallError::Plugin(error)) => format!("refused: {} ({})", error.code, error.message),
            Err(other) => {
                return Err(other).context(format!("{}: describe({text:?})", plugin.name))
            }
        };
        println!("  describe({text:?}) -> {outcome}");
    }
    let highest = plugin.client.highest(CANDIDATES.to_vec())?;
    println!(
        "  highest({:?}) -> {}",
        String::from_utf8_lossy(CANDIDATES),
        String::from_utf8_lossy(&highest)
    );
    Ok(())
}

/// The point of the demo, checked rather than assumed: one import name, several versions, in
/// one host process; and a plugin whose library cannot live in a sub-interpreter, beside them.
fn show_isolation(plugins: &[Loaded]) -> anyhow::Result<()> {
    let mut libraries: Vec<&str> = plugins.iter().map(|p| p.library.as_str()).collect();
    libraries.sort_unstable();
    libraries.dedup();
    if libraries.len() != plugins.len() {
        bail!("plugins share a library version ({libraries:?}); the demo needs different pins");
    }
    let in_tier = |tier: Tier| -> Vec<&str> {
        plugins
            .iter()
            .filter(|plugin| plugin.client.0.tier().tier == tier)
            .map(|plugin| plugin.library.as_str())
            .collect()
    };
    let in_process = in_tier(Tier::Subinterpreter);
    let semver: Vec<&str> = in_process
        .iter()
        .copied()
        .filter(|library| library.starts_with("semver "))
        .collect();
    ensure!(
        semver.len() >= 2,
        "expected two semver plugins in sub-interpreters, found {semver:?}"
    );
    println!(
        "isolation: `import semver` is {} in one process (pid {})",
        semver.join(" and "),
        std::process::id()
    );
    for library in in_tier(Tier::Process) {
        println!("isolation: {library} runs in worker processes beside them (process tier)");
    }
    for library in in_tier(Tier::Rust) {
        println!(
            "isolation: none for {library}: a Rust cdylib called directly in the host process, \
             through the same client"
        );
    }
    Ok(())
}

/// `threads` host threads each make `calls_per_thread` calls, taking the plugins in turn, and
/// check every answer came from the library its plugin reported.
fn call_concurrently(
    plugins: &[Loaded],
    threads: usize,
    calls_per_thread: usize,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|thread| {
                scope.spawn(move || -> anyhow::Result<()> {
                    for call in 0..calls_per_thread {
                        let plugin = &plugins[(thread + call) % plugins.len()];
                        let text = format!("{thread}.{call}.0");
                        let report = plugin.client.describe(text.clone())?;
                        ensure!(
                            report.library == plugin.library && report.canonical == text,
                            "{} answered {report:?} for {text:?}",
                            plugin.name
                        );
                    }
                    Ok(())
                })
            })
            .collect();
        workers.into_iter().try_for_each(|worker| {
            worker
                .join()
                .map_err(|_| anyhow::anyhow!("a calling thread panicked"))?
        })
    })?;
    Ok(started.elapsed())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    #[test]
    fn verify_cli() {
        super::DemoArgs::command().debug_assert();
    }
}
