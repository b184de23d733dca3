//! The `extensions.toml` record: written by `fidius pack`, shown by `fidius package inspect`.

use std::path::Path;

use anyhow::Context as _;
use fidius_core::extensions::{
    find_extension_modules, ExtensionFile, ExtensionRecord, PythonVersion, EXTENSIONS_FILE,
};
use fidius_core::manifest::Isolation;
use fidius_core::tree::SIGNATURE_FILE;
use fidius_host::{
    host_python, probe_extensions, subinterpreter_refusal, Evidence, IsolationOrigin, ProbeOptions,
    TierChoice, TierReason, WorkerCommand,
};

use crate::out::outln;

/// Folders of this machine that probe reasons may name, and what stands for them in a record
/// written into a package: the package itself, and the Python that probed.
fn machine_paths(dir: &Path) -> Vec<(String, &'static str)> {
    let mut paths = Vec::new();
    if let Ok(package) = dir.canonicalize() {
        paths.push((package.to_string_lossy().into_owned(), "<package>"));
    }
    paths.push((
        std::path::absolute(dir)
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned(),
        "<package>",
    ));
    let python_prefix = option_env!("FIDIUS_BUILD_PYTHON")
        .map(Path::new)
        .and_then(|python| python.parent()?.parent());
    if let Some(prefix) = python_prefix {
        paths.push((prefix.to_string_lossy().into_owned(), "<python>"));
    }
    paths
}

/// This executable as the process-tier worker (`fidius worker`, a hidden subcommand), so the CLI
/// needs no separate `fidius-worker` binary.
pub fn own_worker() -> anyhow::Result<WorkerCommand> {
    let exe = std::env::current_exe().context("cannot find the running fidius executable")?;
    Ok(WorkerCommand::new(exe).arg("worker"))
}

/// Whether the package being packed is signed after the probe is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signing {
    /// The archive is signed afterwards: an existing `package.sig` may go stale, as it is replaced.
    Follows,
    /// Nothing signs it afterwards: a record that would invalidate an existing `package.sig` is
    /// left unwritten.
    None,
}

/// Probes the compiled extension modules under `dir/vendor/` in `fidius worker` processes and
/// records the results in `extensions.toml`. Does nothing for a package without compiled
/// extensions; see [`Signing`] for when an existing signature keeps the record unwritten.
pub fn record(dir: &Path, signing: Signing) -> anyhow::Result<()> {
    let python = host_python()?;
    let files = find_extension_modules(dir, python)
        .with_context(|| format!("cannot look for compiled extensions in {}", dir.display()))?;
    if files.is_empty() {
        return Ok(());
    }
    eprintln!(
        "probing {} compiled extension module(s) for sub-interpreter support, each in a child process",
        files.len()
    );
    let worker = own_worker()?;
    let mut record = probe_extensions(dir, &worker, &ProbeOptions::default())
        .with_context(|| format!("cannot probe the compiled extensions of {}", dir.display()))?;
    record.replace_paths_in_reasons(&machine_paths(dir));
    // One line per top-level package: SciPy alone has over a hundred extension modules.
    let mut refused: std::collections::BTreeMap<&str, (usize, &str)> = Default::default();
    for module in record.refused() {
        let package = module.name.split('.').next().unwrap_or(&module.name);
        let reason = module.reason.as_deref().unwrap_or("no reason given");
        refused.entry(package).or_insert((0, reason)).0 += 1;
    }
    for (package, (count, reason)) in refused {
        let first_line = reason.lines().next().unwrap_or_default();
        eprintln!("  {package}: {count} module(s) cannot run in a sub-interpreter: {first_line}");
    }
    let path = dir.join(EXTENSIONS_FILE);
    let unchanged =
        ExtensionRecord::load(dir).is_ok_and(|existing| existing.as_ref() == Some(&record));
    if unchanged {
        eprintln!("{} is up to date", path.display());
    } else if signing == Signing::None && dir.join(SIGNATURE_FILE).exists() {
        eprintln!(
            "warning: not writing {}: {} would no longer match; sign after packing (or pack with \
             --key) to record the probe, otherwise hosts probe at load",
            path.display(),
            SIGNATURE_FILE
        );
    } else {
        record
            .write(dir)
            .with_context(|| format!("cannot record the probe in {}", path.display()))?;
        eprintln!("recorded the probe in {}", path.display());
    }
    let choice = TierChoice::auto_from_record(&record, Evidence::ProbedByPack);
    outln!(
        "tier:        {} if isolation = \"auto\" ({})",
        choice.tier,
        choice.reason
    )?;
    Ok(())
}

/// Prints what `extensions.toml` says and the tier `isolation` leads to, without running any of
/// the package's code (inspect looks, it does not probe).
pub fn show(root: &Path, isolation: Isolation) -> anyhow::Result<()> {
    let python = host_python()?;
    let files = find_extension_modules(root, python)
        .with_context(|| format!("cannot look for compiled extensions in {}", root.display()))?;
    let record = match ExtensionRecord::load(root) {
        Ok(record) => record,
        Err(error) => {
            outln!("extensions:  BAD: {:#}", anyhow::Error::new(error))?;
            None
        }
    };
    let current = record
        .as_ref()
        .is_some_and(|record| record.matches(python, &files));
    let auto = match (&record, files.is_empty()) {
        (_, true) => Ok(TierChoice::auto_without_extensions()),
        (Some(record), false) if current => {
            Ok(TierChoice::auto_from_record(record, Evidence::Recorded))
        }
        (_, false) => Err(stale_reason(record.as_ref(), python, &files)),
    };
    if let Some(record) = &record {
        outln!(
            "extensions:  {EXTENSIONS_FILE}, probed with Python {}{}",
            record.python,
            if current {
                ""
            } else {
                " (out of date, not used)"
            }
        )?;
        let marker = match isolation {
            Isolation::Subinterpreter => format!(" <- refuses isolation = \"{isolation}\""),
            Isolation::Process => String::new(),
            _ => " <- decides the tier".to_owned(),
        };
        let marked = current && !matches!(isolation, Isolation::Process);
        for module in &record.modules {
            match (&module.reason, module.subinterpreter) {
                (_, true) => outln!("  ok   {}", module.name)?,
                (reason, false) => outln!(
                    "  no   {} ({}){}",
                    module.name,
                    reason.as_deref().unwrap_or("no reason given"),
                    if marked { marker.as_str() } else { "" }
                )?,
            }
        }
    } else if !files.is_empty() {
        outln!(
            "extensions:  {} compiled module(s), not probed",
            files.len()
        )?;
    }
    let asked = TierReason::Requested {
        isolation,
        origin: IsolationOrigin::Manifest,
    };
    let tier = match isolation {
        Isolation::Subinterpreter => {
            let refusal = record
                .as_ref()
                .filter(|_| current && !files.is_empty())
                .and_then(|record| subinterpreter_refusal(record, Evidence::Recorded));
            match (refusal, files.is_empty() || current) {
                (Some(refusal), _) => format!(
                    "none: loading fails ({asked}, but {refusal}; use isolation = \"auto\" or \"process\")"
                ),
                (None, true) => format!("subinterpreter ({asked})"),
                (None, false) => format!(
                    "subinterpreter if a probe at load allows it ({asked}; {})",
                    stale_reason(record.as_ref(), python, &files)
                ),
            }
        }
        Isolation::Process => format!("{isolation} ({asked})"),
        _ => match auto {
            Ok(choice) => format!("{} ({})", choice.tier, choice.reason),
            Err(why) => format!("decided at load (isolation = \"{isolation}\" and {why})"),
        },
    };
    outln!("tier:        {tier}")?;
    Ok(())
}

fn stale_reason(
    record: Option<&ExtensionRecord>,
    python: PythonVersion,
    files: &[ExtensionFile],
) -> String {
    let probe = format!(
        "the host will probe its {} compiled extension module(s) in a child process",
        files.len()
    );
    match record {
        None => format!("no {EXTENSIONS_FILE}; {probe}"),
        Some(record) if record.python != python => format!(
            "{EXTENSIONS_FILE} was probed with Python {}, hosts run {python}; {probe}",
            record.python
        ),
        Some(_) => format!("{EXTENSIONS_FILE} lists other files than vendor/ holds; {probe}"),
    }
}
