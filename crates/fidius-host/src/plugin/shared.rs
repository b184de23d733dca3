//! What the handle and its backend share about one loaded plugin, whichever tier serves it.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use fidius_core::interface::{OwnedInterfaceDescriptor, OwnedMethodDescriptor};
use fidius_core::CallError;

use crate::callback::HostFunctions;
use crate::plugin::descriptor::SharedDescriptor;
use crate::plugin::output::RecentOutput;

/// One plugin's name, interface, recent output and timeout count: the same for every version a
/// reload brings in and for every backend.
pub(crate) struct PluginShared {
    /// The plugin's name, in thread names, logs and errors.
    pub(crate) name: String,
    pub(crate) descriptor: SharedDescriptor,
    /// What its instances wrote lately (see `PythonPluginHandle::recent_output`).
    pub(crate) recent_output: Arc<RecentOutput>,
    /// Calls that returned [`CallError::Timeout`]; counted by the handle only.
    pub(crate) timeouts: AtomicU64,
    /// The configuration each instance hands to the module's `__fidius_configure__` at load and
    /// at every reload (`LoadOptions::config`); `None`: the module's own functions are the methods.
    pub(crate) config: Option<serde_json::Value>,
    /// What the plugin's `fidius.host` offers (its host's functions; none by default).
    pub(crate) host_functions: HostFunctions,
}

impl PluginShared {
    pub(crate) fn new(name: String, descriptor: SharedDescriptor, recent_lines: usize) -> Self {
        Self {
            name,
            descriptor,
            recent_output: Arc::new(RecentOutput::new(recent_lines)),
            timeouts: AtomicU64::new(0),
            config: None,
            host_functions: HostFunctions::default(),
        }
    }

    /// The same plugin, configured with `config` (see [`PluginShared::config`]).
    pub(crate) fn with_config(mut self, config: Option<serde_json::Value>) -> Self {
        self.config = config;
        self
    }

    /// The same plugin, offering `host_functions` as `fidius.host`.
    pub(crate) fn with_host_functions(mut self, host_functions: HostFunctions) -> Self {
        self.host_functions = host_functions;
        self
    }

    /// The error of a call to method `index` that did not finish within `after`.
    pub(crate) fn timed_out(&self, index: usize, after: Duration) -> CallError {
        CallError::Timeout {
            plugin: self.name.clone(),
            method: self
                .descriptor
                .method(index)
                .map_or_else(String::new, |method| method.name.clone()),
            after,
        }
    }

    /// The error of a call that found no instance to serve it.
    pub(crate) fn unavailable(&self) -> CallError {
        CallError::Unavailable {
            plugin: self.name.clone(),
        }
    }
}

/// Method `index` of `descriptor`, or the error of a call naming a method it does not have. The one
/// index check: the handle runs it before a call leaves for an instance, a worker process on what
/// its host sent.
pub(crate) fn method(
    descriptor: &OwnedInterfaceDescriptor,
    index: usize,
) -> Result<&OwnedMethodDescriptor, CallError> {
    descriptor
        .method(index)
        .ok_or_else(|| CallError::UnknownMethod {
            interface: descriptor.trait_name.clone(),
            index,
        })
}
