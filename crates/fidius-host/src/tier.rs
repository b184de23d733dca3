//! Which tier runs a plugin's instances, and why.

use std::fmt;

use fidius_core::manifest::Isolation;

use crate::error::LoadError;
use crate::options::LoadOptions;
use crate::runtime::source::PluginSource;

/// Where a plugin's instances run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Tier {
    /// Own-GIL sub-interpreters on worker threads inside the host process.
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
pub struct TierChoice {
    /// The tier its instances run in.
    pub tier: Tier,
    /// Why, e.g. `isolation = "process" in package.toml` or
    /// `numpy._core._multiarray_umath cannot run in a sub-interpreter (ImportError: ...)`.
    pub reason: String,
}

/// Decides where `source` runs: `LoadOptions` first, then the manifest's isolation (`manifest`:
/// `None` for a bare [`PluginSource`], which counts as `auto`).
pub(crate) fn decide(
    source: &PluginSource,
    manifest: Option<Isolation>,
    options: &LoadOptions,
) -> Result<TierChoice, LoadError> {
    let (isolation, from) = match (options.isolation, manifest) {
        (Some(isolation), _) => (isolation, "LoadOptions"),
        (None, Some(isolation)) => (isolation, "package.toml"),
        (None, None) => (Isolation::Auto, "default"),
    };
    let explicit = |tier| TierChoice {
        tier,
        reason: format!("isolation = \"{isolation}\" ({from})"),
    };
    if options.memory_limit.is_some() {
        if isolation == Isolation::Subinterpreter {
            return Err(LoadError::InvalidOptions {
                plugin: source.name.clone(),
                reason: format!(
                    "memory_limit needs the process tier, but isolation = \"subinterpreter\" ({from})"
                ),
            });
        }
        return Ok(TierChoice {
            tier: Tier::Process,
            reason: "memory_limit is set (only a process can be limited)".to_owned(),
        });
    }
    Ok(match isolation {
        Isolation::Subinterpreter => explicit(Tier::Subinterpreter),
        Isolation::Process => explicit(Tier::Process),
        _ => auto(source)?,
    })
}

/// `isolation = "auto"`.
fn auto(_source: &PluginSource) -> Result<TierChoice, LoadError> {
    Ok(TierChoice {
        tier: Tier::Subinterpreter,
        reason: "isolation = \"auto\"".to_owned(),
    })
}
