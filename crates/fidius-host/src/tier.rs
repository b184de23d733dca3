//! Which tier runs a plugin's instances, and why.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::SystemTime;

use fidius_core::extensions::{
    find_extension_modules, ExtensionFile, ExtensionProbe, ExtensionRecord, EXTENSIONS_FILE,
};
use fidius_core::manifest::Isolation;

use crate::backend::process::command::{WorkerCommand, WorkerNotFound};
use crate::backend::process::probe::{
    host_python, parse_package_failure, probe_files, ProbeError, ProbeOptions,
};
use crate::error::LoadError;

/// Where a plugin's instances run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Tier {
    /// Own-GIL sub-interpreters on instance threads inside the host process.
    Subinterpreter,
    /// One worker process per instance, running the plugin in its main interpreter.
    Process,
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Tier::Subinterpreter => "subinterpreter",
            Tier::Process => "process",
        })
    }
}

/// The tier a plugin was given, and the reason in words (for logs, `fidius call`, errors).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TierChoice {
    /// The tier its instances run in.
    pub tier: Tier,
    /// Why, e.g. `isolation = "process" in package.toml` or
    /// `numpy._core._multiarray_umath cannot run in a sub-interpreter (ImportError: ...)`.
    pub reason: String,
}

impl TierChoice {
    fn new(tier: Tier, reason: String) -> Self {
        Self { tier, reason }
    }

    /// What `isolation = "auto"` chooses for a plugin with these probe results: the process tier
    /// when any module cannot run in a sub-interpreter, else the sub-interpreter tier. `source` says
    /// where the results come from, e.g. `recorded in extensions.toml` or `probed at load`.
    ///
    /// A plugin without compiled extensions needs no results: see [`TierChoice::auto_without_extensions`].
    pub fn auto_from_record(record: &ExtensionRecord, source: &str) -> Self {
        let total = record.modules.len();
        match refusals(record) {
            None => Self::new(
                Tier::Subinterpreter,
                format!(
                    "isolation = \"auto\" and all {total} compiled extension module(s) import in a \
                     sub-interpreter ({source})"
                ),
            ),
            Some(refused) => Self::new(
                Tier::Process,
                format!(
                    "isolation = \"auto\" and {}",
                    refused.describe(total, source)
                ),
            ),
        }
    }

    /// What `isolation = "auto"` chooses for a plugin with no compiled extension under `vendor/`.
    pub fn auto_without_extensions() -> Self {
        Self::new(
            Tier::Subinterpreter,
            "isolation = \"auto\" and no compiled extensions under vendor/".to_owned(),
        )
    }
}

/// How many distinct reasons (each with its modules) a tier reason lists.
const MAX_LISTED: usize = 3;
/// How much of each deciding module's reason a tier reason keeps.
const MAX_REASON_CHARS: usize = 120;

/// The modules of a record that cannot run in a sub-interpreter, described for people.
pub(crate) struct Refusals {
    /// How many modules were refused.
    pub(crate) count: usize,
    /// The deciding modules and their reasons, grouped by reason, e.g.
    /// `package \`numpy\` (import fails: ...)` or `google._upb._message (ImportError: ...)`.
    pub(crate) listing: String,
}

impl Refusals {
    /// `N of TOTAL compiled extension module(s) cannot run in a sub-interpreter (SOURCE): LISTING`.
    pub(crate) fn describe(&self, total: usize, source: &str) -> String {
        format!(
            "{} of {total} compiled extension module(s) cannot run in a sub-interpreter ({source}): {}",
            self.count, self.listing
        )
    }
}

/// What in `record` keeps the plugin out of sub-interpreters; `None` when every module imports there.
pub(crate) fn refusals(record: &ExtensionRecord) -> Option<Refusals> {
    let refused: Vec<&ExtensionProbe> = record.refused().collect();
    if refused.is_empty() {
        return None;
    }
    // Modules refused for the same reason (all of numpy's, when `import numpy` fails) are named
    // once, with the most telling module first: tests modules are rarely what matters.
    let mut by_reason: Vec<(&str, Vec<&str>)> = Vec::new();
    for module in &refused {
        let reason = module.reason.as_deref().unwrap_or("no reason recorded");
        match by_reason.iter_mut().find(|(known, _)| *known == reason) {
            Some((_, names)) => names.push(&module.name),
            None => by_reason.push((reason, vec![&module.name])),
        }
    }
    let mut deciding: Vec<String> = by_reason
        .iter()
        .take(MAX_LISTED)
        .map(|(reason, names)| {
            if let Some((package, error)) = parse_package_failure(reason) {
                return format!(
                    "package `{package}` (import fails: {})",
                    shorten(error, MAX_REASON_CHARS)
                );
            }
            let mut names = names.clone();
            names.sort_by_key(|name| (name.contains("test"), name.len()));
            let who = match names.len() {
                1 => names[0].to_owned(),
                n => format!("{} and {} more", names[0], n - 1),
            };
            format!("{who} ({})", shorten(reason, MAX_REASON_CHARS))
        })
        .collect();
    if by_reason.len() > MAX_LISTED {
        deciding.push(format!("and {} more reasons", by_reason.len() - MAX_LISTED));
    }
    Some(Refusals {
        count: refused.len(),
        listing: deciding.join("; "),
    })
}

/// Why a plugin asked to run in a sub-interpreter must not: the message of
/// [`LoadError::SubinterpreterRefused`], also what `fidius package inspect` prints. `None` when the
/// record allows it.
pub fn subinterpreter_refusal(record: &ExtensionRecord, source: &str) -> Option<String> {
    refusals(record).map(|refused| refused.describe(record.modules.len(), source))
}

fn shorten(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        None => text.to_owned(),
        Some((cut, _)) => format!("{}…", &text[..cut]),
    }
}

/// Chooses the tier for plugin `plugin` at `root` whose manifest says `manifest` and whose load
/// options say `requested` (which wins when set), and logs the choice (`tracing` info, fields
/// `plugin`, `tier`, `reason`).
///
/// For `isolation = "auto"`: no compiled extension under `vendor/` means the sub-interpreter tier;
/// otherwise the package's `extensions.toml` decides when it was probed with this host's Python
/// `major.minor` and lists exactly the extension files present, and else the extensions are probed
/// now in worker processes started with `worker()` (called only then), never in this process. Probe
/// results are remembered for the life of the process, keyed by the plugin root and the extension
/// files' sizes and modification times; nothing is written into the plugin tree.
///
/// For `isolation = "subinterpreter"` the same record (or probe) is binding: a module that cannot
/// run in a sub-interpreter is an error, never a crash of the host.
///
/// # Errors
///
/// [`LoadError::SubinterpreterRefused`] when a sub-interpreter was asked for and a compiled
/// extension cannot run there. [`LoadError::Probe`] when a probe is needed and no worker can be
/// started or it misbehaves. With `auto`, a module that fails its probe is not an error: it
/// chooses the process tier.
pub fn choose_tier(
    plugin: &str,
    manifest: Isolation,
    requested: Option<Isolation>,
    root: &Path,
    worker: impl FnOnce() -> Result<WorkerCommand, WorkerNotFound>,
) -> Result<TierChoice, LoadError> {
    let (isolation, origin) = requested_isolation(Some(manifest), requested);
    let choice = match isolation {
        Isolation::Subinterpreter => {
            let probe_failed = |source| LoadError::Probe {
                plugin: plugin.to_owned(),
                source: Box::new(source),
            };
            // Binding: an extension known not to run in a sub-interpreter can crash the host there.
            if let Some((record, evidence)) =
                extension_record(root, worker).map_err(probe_failed)?
            {
                if let Some(refused) = refusals(&record) {
                    return Err(LoadError::SubinterpreterRefused {
                        plugin: plugin.to_owned(),
                        origin: origin.to_owned(),
                        reason: refused.describe(record.modules.len(), &evidence),
                    });
                }
            }
            TierChoice::new(
                Tier::Subinterpreter,
                format!("isolation = \"subinterpreter\" in {origin}"),
            )
        }
        Isolation::Process => TierChoice::new(
            Tier::Process,
            format!("isolation = \"process\" in {origin}"),
        ),
        // `Auto`, and any isolation added to the manifest later that this host does not know.
        _ => choose_auto(root, worker).map_err(|source| LoadError::Probe {
            plugin: plugin.to_owned(),
            source: Box::new(source),
        })?,
    };
    tracing::info!(plugin = %plugin, tier = %choice.tier, reason = %choice.reason, "tier chosen");
    Ok(choice)
}

fn choose_auto(
    root: &Path,
    worker: impl FnOnce() -> Result<WorkerCommand, WorkerNotFound>,
) -> Result<TierChoice, ProbeError> {
    Ok(match extension_record(root, worker)? {
        None => TierChoice::auto_without_extensions(),
        Some((record, evidence)) => TierChoice::auto_from_record(&record, &evidence),
    })
}

/// What is known about the compiled extensions under `root/vendor/`, and where it comes from
/// (`recorded in extensions.toml` or `probed at load`); `None` when there are none. The package's
/// `extensions.toml` answers when it was probed with this host's Python `major.minor` and lists
/// exactly the extension files present; otherwise the extensions are probed now in worker
/// processes started with `worker()` (called only then), never in this process, and the results
/// are remembered for the life of the process.
fn extension_record(
    root: &Path,
    worker: impl FnOnce() -> Result<WorkerCommand, WorkerNotFound>,
) -> Result<Option<(ExtensionRecord, String)>, ProbeError> {
    let python = host_python()?;
    let files = find_extension_modules(root, python).map_err(ProbeError::Scan)?;
    if files.is_empty() {
        return Ok(None);
    }
    match ExtensionRecord::load(root) {
        Ok(Some(record)) if record.matches(python, &files) => {
            return Ok(Some((record, format!("recorded in {EXTENSIONS_FILE}"))));
        }
        Ok(Some(record)) => tracing::debug!(
            plugin_dir = %root.display(),
            recorded_python = %record.python,
            "{EXTENSIONS_FILE} was made for other extension files or another Python; probing again"
        ),
        Ok(None) => {}
        Err(error) => tracing::warn!(
            plugin_dir = %root.display(),
            error = %error,
            "ignoring an unusable {EXTENSIONS_FILE}; probing again"
        ),
    }
    let key = MemoKey::new(root, &files);
    let remembered = memo().lock().ok().and_then(|memo| memo.get(&key).cloned());
    let record = match remembered {
        Some(record) => record,
        None => {
            let worker = worker().map_err(ProbeError::WorkerNotFound)?;
            let record = probe_files(root, &files, &worker, &ProbeOptions::default(), python)?;
            if let Ok(mut memo) = memo().lock() {
                memo.insert(key, record.clone());
            }
            record
        }
    };
    Ok(Some((record, "probed at load".to_owned())))
}

/// Identifies one state of a plugin's extension files.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct MemoKey {
    root: PathBuf,
    files: Vec<(String, u64, Option<SystemTime>)>,
}

impl MemoKey {
    fn new(root: &Path, files: &[ExtensionFile]) -> Self {
        Self {
            root: root.canonicalize().unwrap_or_else(|_| root.to_path_buf()),
            files: files
                .iter()
                .map(|file| (file.relative_path.clone(), file.len, file.modified))
                .collect(),
        }
    }
}

/// Probe results of this process, so loading a plugin again does not probe again.
fn memo() -> &'static Mutex<HashMap<MemoKey, ExtensionRecord>> {
    static MEMO: OnceLock<Mutex<HashMap<MemoKey, ExtensionRecord>>> = OnceLock::new();
    MEMO.get_or_init(Mutex::default)
}

/// The tier for a plugin being loaded with `options`: [`choose_tier`], except that a memory limit
/// needs the process tier (only a process can be limited).
pub(crate) fn decide(
    source: &crate::plugin::source::PluginSource,
    manifest: Option<Isolation>,
    options: &crate::options::LoadOptions,
) -> Result<TierChoice, LoadError> {
    if options.memory_limit.is_some() {
        let (isolation, origin) = requested_isolation(manifest, options.isolation);
        if isolation == Isolation::Subinterpreter {
            return Err(LoadError::InvalidOptions {
                plugin: source.name.clone(),
                reason: format!(
                    "memory_limit needs the process tier, but isolation = \"subinterpreter\" in {origin}"
                ),
            });
        }
        let choice = TierChoice::new(
            Tier::Process,
            "memory_limit is set in the load options (only a process can be limited)".to_owned(),
        );
        tracing::info!(plugin = %source.name, tier = %choice.tier, reason = %choice.reason, "tier chosen");
        return Ok(choice);
    }
    choose_tier(
        &source.name,
        manifest.unwrap_or_default(),
        options.isolation,
        &source.dir,
        || options.resolved_worker_command(),
    )
}

/// The isolation that applies, and where it was asked for: the load options win over the manifest
/// (`None` for a bare [`PluginSource`](crate::PluginSource), which counts as `auto`).
fn requested_isolation(
    manifest: Option<Isolation>,
    requested: Option<Isolation>,
) -> (Isolation, &'static str) {
    match (requested, manifest) {
        (Some(isolation), _) => (isolation, "the load options"),
        (None, Some(isolation)) => (isolation, "package.toml"),
        (None, None) => (Isolation::Auto, "the defaults"),
    }
}
