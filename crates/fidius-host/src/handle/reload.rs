//! Replacing a loaded plugin's code without failing a call.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::error::LoadError;
use crate::handle::PythonPluginHandle;
use crate::plugin::source::PluginSource;
use crate::plugin::version::{PluginInfo, Version};

/// Finds and verifies the plugin's package again, for a reload.
pub(crate) type Reloader =
    Box<dyn Fn() -> Result<(PluginSource, PluginInfo), LoadError> + Send + Sync>;

impl PythonPluginHandle {
    /// Replaces the plugin's code without dropping a call: reads the package again (through the
    /// `PluginHost` that loaded it: found again by name, or at the same path, with the manifest,
    /// interface and signature checks of a load), starts a new set of instances, and once every one
    /// of them has imported and checked the plugin, swaps them in.
    ///
    /// Calls running on the old instances finish there; calls queued or made from then on are served
    /// by the new ones (for a moment, either version may answer). If the new version fails to load,
    /// the old one keeps serving and the error is returned. Reloads of one handle run one at a time.
    /// A handle started from a bare [`PluginSource`] re-imports from the same directory. The old
    /// version (its [`PluginInfo`], the cache slot it ran from) is released once its instances
    /// have ended.
    ///
    /// Each reload costs what loading the plugin costs, and CPython keeps a few MiB of every ended
    /// interpreter (see the README on memory), so reload on change, not on a timer.
    pub fn reload(&self) -> Result<(), LoadError> {
        let plugin = &*self.plugin;
        let (source, info) = match &plugin.reloader {
            Some(reloader) => reloader()?,
            None => {
                let serving = Arc::clone(&plugin.serving());
                ((*serving.source).clone(), (*serving.info()).clone())
            }
        };
        if source.name != plugin.shared.name {
            return Err(LoadError::ReloadFoundOtherPlugin {
                plugin: plugin.shared.name.clone(),
                found: source.name,
            });
        }
        let _one_at_a_time = plugin
            .reloading
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let version = Version::new(source, info);
        let accepted = plugin.backend.reload(&version)?;
        for (flag, &now) in plugin.implemented.iter().zip(&accepted.implemented) {
            flag.store(now, Ordering::Relaxed);
        }
        version.record_warnings(accepted.warnings);
        tracing::info!(plugin = %version.source.name, version = %version.source.version, "plugin reloaded");
        *plugin.serving() = version;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Weak};
    use std::time::{Duration, Instant};

    use fidius_core::interface::{PythonInterfaceDescriptor, PythonMethodDescriptor, WireMode};
    use fidius_core::PluginCall;

    use crate::{LoadOptions, PluginSource, PythonPluginHandle};

    static MINIMAL: PythonInterfaceDescriptor = PythonInterfaceDescriptor {
        trait_name: "Minimal",
        version: 1,
        interface_hash: 0x5eed,
        schema_fingerprint: None,
        methods: &[PythonMethodDescriptor {
            name: "ping",
            wire: WireMode::TypedJson,
            args: &[],
            returns: "",
            optional_since: None,
            signature: "",
            streams_result: false,
            streams_argument: false,
            streamed_argument: None,
        }],
    };

    const PLUGIN: &str = "from fidius import method\n\
        __interface__ = 'Minimal'\n\
        __interface_version__ = 1\n\
        __interface_hash__ = 0x5eed\n\
        @method\n\
        def ping():\n    return 1\n";

    /// Every reload used to append a version that lived as long as the handle; now a handle keeps
    /// the serving version and those whose instances have not ended yet.
    #[test]
    fn reloads_retain_only_the_versions_still_serving() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("minimal.py"), PLUGIN).unwrap();
        let source = PluginSource::new("minimal", "1.0.0", dir.path(), "minimal");
        let handle = PythonPluginHandle::start(source, &MINIMAL, &LoadOptions::default()).unwrap();
        let serving = || Arc::downgrade(&handle.plugin.serving());
        let mut versions: Vec<Weak<_>> = vec![serving()];
        for _ in 0..200 {
            handle.reload().unwrap();
            assert_eq!(handle.call_typed_json(0, b"[]").unwrap(), b"1");
            versions.push(serving());
        }
        let retained = || {
            versions
                .iter()
                .filter(|version| version.strong_count() > 0)
                .count()
        };
        // The old instances end on their own threads once told; a bounded wait for the last ones.
        let give_up = Instant::now() + Duration::from_secs(60);
        while retained() > 1 && Instant::now() < give_up {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(retained(), 1, "only the serving version is left");
        assert!(versions.last().unwrap().strong_count() > 0);
        assert_eq!(handle.stats().instances, 1);
    }
}
