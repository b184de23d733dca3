//! One loaded version of a plugin: where it came from, and what it was accepted with.

use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::LoadWarning;
use crate::plugin::source::PluginSource;

/// Where a loaded plugin came from.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PluginInfo {
    /// The package manifest (absent when started from a bare [`PluginSource`]).
    pub manifest: Option<fidius_core::manifest::Manifest>,
    /// The plugin directory or `.fid` file it was loaded from.
    pub path: std::path::PathBuf,
    /// The trusted key whose signature verified, if any.
    pub signer: Option<fidius_core::signing::KeyFingerprint>,
    /// What the original fidius tool accepted and this version was loaded with (each also logged
    /// as a warning); empty for a plugin written for fidius. [`LoadOptions::strict`](crate::LoadOptions::strict)
    /// refuses them.
    pub warnings: Vec<LoadWarning>,
    /// Keeps the cache slot an archive was unpacked into from being pruned while this version runs.
    pub(crate) _cache_lease: Option<Arc<crate::host::SlotLease>>,
}

impl PluginInfo {
    /// The information of a plugin started from a bare directory: no manifest, no signer.
    pub(crate) fn bare(path: std::path::PathBuf) -> Self {
        Self {
            manifest: None,
            path,
            signer: None,
            warnings: Vec::new(),
            _cache_lease: None,
        }
    }
}

/// One loaded version. The handle holds the serving one and every instance of a version holds it
/// until it ends, so an older version (and the cache slot it runs from) is released once its last
/// call finished: a handle retains what still serves, however often it reloads.
#[derive(Debug)]
pub(crate) struct Version {
    pub(crate) source: Arc<PluginSource>,
    /// Replaced once, when the instances report what the version was accepted with.
    info: Mutex<Arc<PluginInfo>>,
}

impl Version {
    pub(crate) fn new(source: PluginSource, info: PluginInfo) -> Arc<Self> {
        Arc::new(Self {
            source: Arc::new(source),
            info: Mutex::new(Arc::new(info)),
        })
    }

    fn lock_info(&self) -> MutexGuard<'_, Arc<PluginInfo>> {
        // Replaced whole, so a poisoned lock still holds a consistent value.
        self.info
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn info(&self) -> Arc<PluginInfo> {
        Arc::clone(&self.lock_info())
    }

    /// Logs, once per load, what the version was accepted with, and keeps it in its [`PluginInfo`].
    pub(crate) fn record_warnings(&self, warnings: Vec<LoadWarning>) {
        if warnings.is_empty() {
            return;
        }
        let source = &self.source;
        let mut info = self.lock_info();
        let mut updated = (**info).clone();
        for warning in warnings {
            tracing::warn!(plugin = %source.name, version = %source.version, %warning, "loaded as the original fidius would (LoadOptions::strict refuses this)");
            if !updated.warnings.contains(&warning) {
                updated.warnings.push(warning);
            }
        }
        *info = Arc::new(updated);
    }
}
