//! Which tier runs a plugin's instances, and why.

use std::fmt;

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
