//! Per-load settings.

/// How a plugin is loaded. `LoadOptions::default()` gives one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOptions {
    pub(crate) instances: usize,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self { instances: 1 }
    }
}

impl LoadOptions {
    /// Number of instances (own-GIL interpreters, one worker thread each) serving the plugin's calls
    /// from one shared queue. Default: 1. Zero is rejected when loading.
    pub fn instances(mut self, instances: usize) -> Self {
        self.instances = instances;
        self
    }
}
