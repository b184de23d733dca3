//! Replacing a loaded plugin's code without failing a call.

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use crate::error::LoadError;
use crate::handle::{record_warnings, PluginInfo, PythonPluginHandle};
use crate::runtime::generation;
use crate::runtime::source::PluginSource;

/// Finds and verifies the plugin's package again, for a reload.
pub(crate) type Reloader =
    Box<dyn Fn() -> Result<(PluginSource, PluginInfo), LoadError> + Send + Sync>;

/// One loaded version of the plugin. Reloads append; nothing is removed while the handle lives, so
/// [`PythonPluginHandle::source`] and [`PythonPluginHandle::info`] can lend references.
pub(super) struct Version {
    pub(super) source: PluginSource,
    pub(super) info: PluginInfo,
    pub(super) next: OnceLock<Box<Version>>,
}

impl Version {
    pub(super) fn latest(&self) -> &Version {
        let mut version = self;
        while let Some(next) = version.next.get() {
            version = next;
        }
        version
    }
}

impl PythonPluginHandle {
    /// Replaces the plugin's code without dropping a call: reads the package again (through the
    /// `PluginHost` that loaded it: found again by name, or at the same path, with the manifest,
    /// interface and signature checks of a load), starts a new set of instances, and once every one
    /// of them has imported and checked the plugin, swaps them in.
    ///
    /// Calls running on the old instances finish there; calls queued or made from then on are served
    /// by the new ones (for a moment, either version may answer). If the new version fails to load,
    /// the old one keeps serving and the error is returned. Reloads of one handle run one at a time.
    /// A handle started from a bare [`PluginSource`] re-imports from the same directory.
    ///
    /// Each reload costs what loading the plugin costs, and CPython keeps a few MiB of every ended
    /// interpreter (see the README on memory), so reload on change, not on a timer.
    pub fn reload(&self) -> Result<(), LoadError> {
        let (source, info) = match &self.pool.reloader {
            Some(reloader) => reloader()?,
            None => {
                let latest = self.pool.versions.latest();
                (latest.source.clone(), latest.info.clone())
            }
        };
        let pool = &*self.pool;
        if source.name != pool.shared.name {
            return Err(LoadError::ReloadFoundOtherPlugin {
                plugin: pool.shared.name.clone(),
                found: source.name,
            });
        }
        let _one_at_a_time = pool
            .reloading
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let shared = &pool.shared;
        let serving = Arc::new(source.clone());
        let accepted = match &pool.processes {
            // The new workers serve from the next call on; the old ones end once their calls did.
            Some(processes) => processes.reload(&serving, pool.instances)?,
            None => {
                let generation = shared.generation.load(Ordering::Acquire) + 1;
                let loaded = generation::start(shared, &serving, generation, pool.instances, true)?;
                let accepted = loaded.accepted.clone();
                // New instances serve from here on, next to the old ones until those take their
                // next request, hand it back, and end.
                let signal = loaded.release();
                shared.promote(Arc::clone(&serving), generation, signal);
                accepted
            }
        };
        for (flag, &now) in pool.implemented.iter().zip(&accepted.implemented) {
            flag.store(now, Ordering::Relaxed);
        }
        let mut info = info;
        record_warnings(&serving, &mut info, accepted.warnings);
        let _ = pool.versions.latest().next.set(Box::new(Version {
            source,
            info,
            next: OnceLock::new(),
        }));
        tracing::info!(plugin = %serving.name, version = %serving.version, "plugin reloaded");
        Ok(())
    }
}
