//! The example interface of the end-to-end demo (`ci/demo`).
//!
//! Two plugins implement [`VersionReport`] with the same Python library, `semver`, pinned to
//! incompatible major versions (2.13.0 and 3.0.2). Each runs in its own sub-interpreter, so each
//! imports its own copy under the same name, inside one host process.
#![forbid(unsafe_code)]

use fidius::{plugin_interface, PluginError};
use serde::{Deserialize, Serialize};

/// What a plugin made of one version string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The library that did the work and its version, e.g. `semver 3.0.2`.
    pub library: String,
    /// The parsed version in canonical form.
    pub canonical: String,
    /// The next minor release after it.
    pub next_minor: String,
}

#[plugin_interface(version = 1)]
pub trait VersionReport {
    /// Parses `text` as a semantic version; fails with `INVALID_VERSION` when the library refuses it.
    fn describe(&self, text: String) -> Result<Report, PluginError>;
    /// The highest of the whitespace-separated versions in `data`.
    #[wire(raw)]
    fn highest(&self, data: Vec<u8>) -> Vec<u8>;
}
