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
    host_python, probe_files, ProbeError, ProbeOptions, ProbeOutcome,
};
use crate::error::LoadError;

/// Where a plugin's instances run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Tier {
    /// Own-GIL sub-interpreters on worker threads inside the host process.
    Subinterpreter,
    /// One worker process per instance, running the plugin in its main interpreter.
    Process,
    /// A Rust cdylib, called in the host process: no isolation at all.
    Rust,
}

impl From<Tier> for Isolation {
    fn from(tier: Tier) -> Self {
        match tier {
            Tier::Subinterpreter => Isolation::Subinterpreter,
            Tier::Process => Isolation::Process,
            // A Rust library has no isolation to ask for; it loads whatever the manifest says.
            Tier::Rust => Isolation::Auto,
        }
    }
}

impl fmt::Display for Tier {
    /// Spelled as the isolation that asks for it: `subinterpreter` or `process`; `rust` for a
    /// Rust library.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Tier::Rust {
            return f.write_str("rust");
        }
        Isolation::from(*self).fmt(f)
    }
}

/// The tier a plugin was given, and why (for logs, `fidius call`, errors).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TierChoice {
    /// The tier its instances run in.
    pub tier: Tier,
    /// Why; displays as e.g. `isolation = "process" in package.toml` or `isolation = "auto" and 1
    /// of 3 compiled extension module(s) cannot run in a sub-interpreter (probed at load): ...`.
    pub reason: TierReason,
}

/// Why a plugin runs in its tier.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TierReason {
    /// The isolation was asked for (`subinterpreter` or `process`).
    Requested {
        isolation: Isolation,
        origin: IsolationOrigin,
    },
    /// The load options set a memory limit, which only a process can have.
    MemoryLimit,
    /// `isolation = "auto"` and the plugin vendors no compiled extension.
    NoExtensions,
    /// `isolation = "auto"` and every compiled extension module imports in a sub-interpreter.
    ExtensionsImport {
        /// How many modules there are.
        total: usize,
        evidence: Evidence,
    },
    /// `isolation = "auto"` and some compiled extension module cannot run in a sub-interpreter.
    ExtensionsRefused(ExtensionRefusal),
    /// The plugin is a Rust cdylib: it runs in the host process, unisolated.
    RustLibrary,
}

impl fmt::Display for TierReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TierReason::Requested { isolation, origin } => {
                write!(f, "isolation = \"{isolation}\" in {origin}")
            }
            TierReason::MemoryLimit => f.write_str(
                "memory_limit is set in the load options (only a process can be limited)",
            ),
            TierReason::NoExtensions => {
                f.write_str("isolation = \"auto\" and no compiled extensions under vendor/")
            }
            TierReason::ExtensionsImport { total, evidence } => write!(
                f,
                "isolation = \"auto\" and all {total} compiled extension module(s) import in a \
                 sub-interpreter ({evidence})"
            ),
            TierReason::ExtensionsRefused(refusal) => {
                write!(f, "isolation = \"auto\" and {refusal}")
            }
            TierReason::RustLibrary => {
                f.write_str("a Rust library runs in the host process, without isolation")
            }
        }
    }
}

/// Where the isolation that applies was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum IsolationOrigin {
    /// [`LoadOptions::isolation`](crate::LoadOptions::isolation) (or `fidius call --isolation`).
    LoadOptions,
    /// `package.toml`.
    Manifest,
    /// Neither: a bare [`PluginSource`](crate::PluginSource) counts as `auto`.
    Defaults,
}

impl fmt::Display for IsolationOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IsolationOrigin::LoadOptions => "the load options",
            IsolationOrigin::Manifest => "package.toml",
            IsolationOrigin::Defaults => "the defaults",
        })
    }
}

/// Where what is known about a plugin's compiled extensions comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Evidence {
    /// The package's `extensions.toml`.
    Recorded,
    /// A probe in worker processes while the plugin was loaded.
    ProbedAtLoad,
    /// A probe by `fidius pack`.
    ProbedByPack,
}

impl fmt::Display for Evidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Evidence::Recorded => write!(f, "recorded in {EXTENSIONS_FILE}"),
            Evidence::ProbedAtLoad => f.write_str("probed at load"),
            Evidence::ProbedByPack => f.write_str("probed by fidius pack"),
        }
    }
}

impl TierChoice {
    pub(crate) fn new(tier: Tier, reason: TierReason) -> Self {
        Self { tier, reason }
    }

    /// What `isolation = "auto"` chooses for a plugin with these probe results: the process tier
    /// when any module cannot run in a sub-interpreter, else the sub-interpreter tier. `evidence`
    /// says where the results come from.
    ///
    /// A plugin without compiled extensions needs no results: see [`TierChoice::auto_without_extensions`].
    pub fn auto_from_record(record: &ExtensionRecord, evidence: Evidence) -> Self {
        Self::auto_from_probe(&ProbeOutcome::from_record(record.clone()), evidence)
    }

    fn auto_from_probe(probe: &ProbeOutcome, evidence: Evidence) -> Self {
        match ExtensionRefusal::of(probe, evidence) {
            None => Self::new(
                Tier::Subinterpreter,
                TierReason::ExtensionsImport {
                    total: probe.record.modules.len(),
                    evidence,
                },
            ),
            Some(refusal) => Self::new(Tier::Process, TierReason::ExtensionsRefused(refusal)),
        }
    }

    /// What `isolation = "auto"` chooses for a plugin with no compiled extension under `vendor/`.
    pub fn auto_without_extensions() -> Self {
        Self::new(Tier::Subinterpreter, TierReason::NoExtensions)
    }
}

/// How many distinct reasons (each with its modules) a refusal lists.
const MAX_LISTED: usize = 3;
/// How much of each deciding module's reason a refusal shows.
const MAX_REASON_CHARS: usize = 120;

/// The compiled extension modules of a plugin that cannot run in a sub-interpreter.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExtensionRefusal {
    /// How many modules were refused.
    pub refused: usize,
    /// How many compiled extension modules the plugin has.
    pub total: usize,
    /// Where this is known from.
    pub evidence: Evidence,
    /// The first few distinct reasons, each with the modules it refused, most telling first.
    pub deciding: Vec<RefusedModules>,
    /// How many further distinct reasons there are.
    pub more_reasons: usize,
}

/// Modules refused for one reason.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RefusedModules {
    /// Importing their top-level package fails in a sub-interpreter, so all of its modules do.
    Package {
        package: String,
        /// The package's import error (`Type: message`).
        error: String,
    },
    /// These modules (most telling first: tests modules are rarely what matters) fail for `reason`.
    Modules {
        modules: Vec<String>,
        /// `ImportError: ...`, `crashed: ...`, `timed out: ...`.
        reason: String,
    },
}

impl fmt::Display for RefusedModules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RefusedModules::Package { package, error } => write!(
                f,
                "package `{package}` (import fails: {})",
                shorten(error, MAX_REASON_CHARS)
            ),
            RefusedModules::Modules { modules, reason } => {
                match modules.as_slice() {
                    [] => {}
                    [only] => f.write_str(only)?,
                    [first, rest @ ..] => write!(f, "{first} and {} more", rest.len())?,
                }
                write!(f, " ({})", shorten(reason, MAX_REASON_CHARS))
            }
        }
    }
}

impl fmt::Display for ExtensionRefusal {
    /// `N of TOTAL compiled extension module(s) cannot run in a sub-interpreter (EVIDENCE): LISTING`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of {} compiled extension module(s) cannot run in a sub-interpreter ({}): ",
            self.refused, self.total, self.evidence
        )?;
        for (number, group) in self.deciding.iter().enumerate() {
            if number > 0 {
                f.write_str("; ")?;
            }
            group.fmt(f)?;
        }
        if self.more_reasons > 0 {
            write!(f, "; and {} more reasons", self.more_reasons)?;
        }
        Ok(())
    }
}

impl ExtensionRefusal {
    /// What in `probe` keeps the plugin out of sub-interpreters; `None` when every module imports
    /// there.
    fn of(probe: &ProbeOutcome, evidence: Evidence) -> Option<Self> {
        let refused: Vec<&ExtensionProbe> = probe.record.refused().collect();
        if refused.is_empty() {
            return None;
        }
        // Modules refused for the same reason (all of numpy's, when `import numpy` fails) are
        // named once; a package whose import fails is named as the package.
        let mut groups: Vec<RefusedModules> = Vec::new();
        for module in &refused {
            let top_level = module.name.split('.').next().unwrap_or(&module.name);
            if let Some(error) = probe.package_failures.get(top_level) {
                let package = RefusedModules::Package {
                    package: top_level.to_owned(),
                    error: error.clone(),
                };
                if !groups.contains(&package) {
                    groups.push(package);
                }
                continue;
            }
            let reason = module.reason.as_deref().unwrap_or("no reason recorded");
            let known = groups.iter_mut().find_map(|group| match group {
                RefusedModules::Modules {
                    modules,
                    reason: known,
                } if known == reason => Some(modules),
                _ => None,
            });
            match known {
                Some(modules) => modules.push(module.name.clone()),
                None => groups.push(RefusedModules::Modules {
                    modules: vec![module.name.clone()],
                    reason: reason.to_owned(),
                }),
            }
        }
        for group in &mut groups {
            if let RefusedModules::Modules { modules, .. } = group {
                modules.sort_by_key(|name| (name.contains("test"), name.len()));
            }
        }
        let more_reasons = groups.len().saturating_sub(MAX_LISTED);
        groups.truncate(MAX_LISTED);
        Some(Self {
            refused: refused.len(),
            total: probe.record.modules.len(),
            evidence,
            deciding: groups,
            more_reasons,
        })
    }
}

/// Why a plugin asked to run in a sub-interpreter must not, by `record` known from `evidence`:
/// part of the message of [`LoadError::SubinterpreterRefused`], also what `fidius package inspect`
/// prints. `None` when the record allows it.
pub fn subinterpreter_refusal(
    record: &ExtensionRecord,
    evidence: Evidence,
) -> Option<ExtensionRefusal> {
    ExtensionRefusal::of(&ProbeOutcome::from_record(record.clone()), evidence)
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
    decide_and_log(plugin, Some(manifest), requested, false, root, None, worker)
}

/// The tier for a plugin being loaded with `options`: [`choose_tier`], except that a memory limit
/// needs the process tier (only a process can be limited).
pub(crate) fn decide(
    source: &crate::plugin::source::PluginSource,
    manifest: Option<Isolation>,
    options: &crate::options::LoadOptions,
) -> Result<TierChoice, LoadError> {
    decide_and_log(
        &source.name,
        manifest,
        options.isolation,
        options.memory_limit.is_some(),
        &source.dir,
        source.bytecode_cache.as_deref(),
        || options.resolved_worker_command(),
    )
}

/// The one place a tier is decided and logged (`tracing` info `tier chosen`, fields `tier` and
/// `reason`, in a span that names the plugin).
fn decide_and_log(
    plugin: &str,
    manifest: Option<Isolation>,
    requested: Option<Isolation>,
    memory_limit: bool,
    root: &Path,
    bytecode_cache: Option<&Path>,
    worker: impl FnOnce() -> Result<WorkerCommand, WorkerNotFound>,
) -> Result<TierChoice, LoadError> {
    let _span = tracing::info_span!("choose_tier", plugin = %plugin).entered();
    let probe_failed = |source| LoadError::Probe {
        plugin: plugin.to_owned(),
        source: Box::new(source),
    };
    let (isolation, origin) = requested_isolation(manifest, requested);
    let choice = match isolation {
        Isolation::Subinterpreter if memory_limit => {
            return Err(LoadError::InvalidOptions {
                plugin: plugin.to_owned(),
                reason: format!(
                    "memory_limit needs the process tier, but isolation = \"{isolation}\" in {origin}"
                ),
            });
        }
        _ if memory_limit => TierChoice::new(Tier::Process, TierReason::MemoryLimit),
        Isolation::Subinterpreter => {
            // Binding: an extension known not to run in a sub-interpreter can crash the host there.
            if let Some((probe, evidence)) =
                extension_record(root, bytecode_cache, worker).map_err(probe_failed)?
            {
                if let Some(refusal) = ExtensionRefusal::of(&probe, evidence) {
                    return Err(LoadError::SubinterpreterRefused {
                        plugin: plugin.to_owned(),
                        origin,
                        reason: refusal,
                    });
                }
            }
            TierChoice::new(
                Tier::Subinterpreter,
                TierReason::Requested { isolation, origin },
            )
        }
        Isolation::Process => {
            TierChoice::new(Tier::Process, TierReason::Requested { isolation, origin })
        }
        // `Auto`, and any isolation added to the manifest later that this host does not know.
        _ => match extension_record(root, bytecode_cache, worker).map_err(probe_failed)? {
            None => TierChoice::auto_without_extensions(),
            Some((probe, evidence)) => TierChoice::auto_from_probe(&probe, evidence),
        },
    };
    tracing::info!(tier = %choice.tier, reason = %choice.reason, "tier chosen");
    Ok(choice)
}

/// What is known about the compiled extensions under `root/vendor/`, and where it comes from
/// (`recorded in extensions.toml` or `probed at load`); `None` when there are none. The package's
/// `extensions.toml` answers when it was probed with this host's Python `major.minor` and lists
/// exactly the extension files present; otherwise the extensions are probed now in worker
/// processes started with `worker()` (called only then), never in this process, and the results
/// are remembered for the life of the process.
fn extension_record(
    root: &Path,
    bytecode_cache: Option<&Path>,
    worker: impl FnOnce() -> Result<WorkerCommand, WorkerNotFound>,
) -> Result<Option<(ProbeOutcome, Evidence)>, ProbeError> {
    let python = host_python()?;
    let files = find_extension_modules(root, python).map_err(ProbeError::Scan)?;
    if files.is_empty() {
        return Ok(None);
    }
    match ExtensionRecord::load(root) {
        Ok(Some(record)) if record.matches(python, &files) => {
            return Ok(Some((
                ProbeOutcome::from_record(record),
                Evidence::Recorded,
            )));
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
    let probe = match remembered {
        Some(probe) => probe,
        None => {
            let worker = worker().map_err(ProbeError::WorkerNotFound)?;
            let options = ProbeOptions::default().bytecode_cache(bytecode_cache);
            let probe = probe_files(root, &files, &worker, &options, python)?;
            if let Ok(mut memo) = memo().lock() {
                memo.insert(key, probe.clone());
            }
            probe
        }
    };
    Ok(Some((probe, Evidence::ProbedAtLoad)))
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
fn memo() -> &'static Mutex<HashMap<MemoKey, ProbeOutcome>> {
    static MEMO: OnceLock<Mutex<HashMap<MemoKey, ProbeOutcome>>> = OnceLock::new();
    MEMO.get_or_init(Mutex::default)
}

/// The isolation that applies, and where it was asked for: the load options win over the manifest
/// (`None` for a bare [`PluginSource`](crate::PluginSource), which counts as `auto`).
fn requested_isolation(
    manifest: Option<Isolation>,
    requested: Option<Isolation>,
) -> (Isolation, IsolationOrigin) {
    match (requested, manifest) {
        (Some(isolation), _) => (isolation, IsolationOrigin::LoadOptions),
        (None, Some(isolation)) => (isolation, IsolationOrigin::Manifest),
        (None, None) => (Isolation::Auto, IsolationOrigin::Defaults),
    }
}
