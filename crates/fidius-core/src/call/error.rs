//! Errors of a call into a plugin.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An error a plugin reported on purpose (Python: `raise PluginError(code, message, details)`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginError {
    /// A stable, machine-readable code such as `EMPTY_INPUT`.
    pub code: String,
    /// A human-readable explanation.
    pub message: String,
    /// Structured extra data, when the plugin gave any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

impl PluginError {
    /// A plugin error without details.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            details: None,
        }
    }

    /// The same error with `details` attached.
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for PluginError {}

/// Why a call into a plugin did not return a value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The plugin raised [`PluginError`].
    // Not `#[from]`: that would also make the PluginError the `source`, and error reports that
    // print the chain would repeat it.
    #[error("plugin error {0}")]
    Plugin(PluginError),
    /// The method is `#[optional]` and this plugin does not define it.
    #[error("the plugin does not implement optional method `{method}`")]
    NotImplemented { method: String },
    /// The arguments could not be encoded as JSON.
    #[error("could not encode the arguments of `{method}` as JSON")]
    EncodeArguments {
        method: String,
        #[source]
        source: serde_json::Error,
    },
    /// The plugin's result did not decode into the method's return type.
    #[error("the result of `{method}` does not match its Rust return type")]
    DecodeResult {
        method: String,
        #[source]
        source: serde_json::Error,
    },
    /// No method has this index in the interface descriptor.
    #[error("no method with index {index} in interface `{interface}`")]
    UnknownMethod { interface: String, index: usize },
    /// The plugin raised an exception other than `PluginError`.
    #[error("`{method}` raised {exception_type}: {message}")]
    Python {
        method: String,
        exception_type: String,
        message: String,
        /// The formatted Python traceback, when one was available.
        traceback: Option<String>,
    },
    /// The method returned something the wire cannot carry (not JSON-serialisable, or not bytes
    /// from a raw method).
    #[error("`{method}` returned an invalid result: {reason}")]
    InvalidResult { method: String, reason: String },
    /// The arguments handed to the host were not a JSON array.
    #[error("invalid arguments for `{method}`: {reason}")]
    InvalidArguments { method: String, reason: String },
    /// A typed call to a raw method, or a raw call to a typed one.
    #[error("`{method}` is a {actual:?} method and cannot be called as {requested:?}")]
    WireModeMismatch {
        method: String,
        actual: crate::interface::WireMode,
        requested: crate::interface::WireMode,
    },
    /// The call did not finish within its timeout (`LoadOptions::call_timeout` or a per-call
    /// override in the host). The plugin code was interrupted, or the call was dropped before it
    /// started; see the host's documentation for what can be interrupted.
    #[error("`{method}` of plugin `{plugin}` timed out after {after:?}")]
    Timeout {
        plugin: String,
        method: String,
        after: std::time::Duration,
    },
    /// The plugin's instances are gone (shut down, or their worker thread died).
    #[error("plugin `{plugin}` is no longer running")]
    Unavailable { plugin: String },
    /// Process tier: the worker process serving the call died before answering (a segfault,
    /// `os._exit`, killed for memory...). The host and the plugin's other instances are unaffected,
    /// and the next call gets a fresh worker.
    #[error("the worker process of plugin `{plugin}` died during `{method}` ({status})")]
    WorkerCrashed {
        plugin: String,
        method: String,
        /// `exit status N` or `killed by signal N (NAME)`.
        status: String,
        /// The last lines the worker wrote to stderr (C-level output, fatal error messages).
        stderr_tail: String,
    },
    /// Process tier: no worker process could be started for this call (the plugin crashed its
    /// previous workers and is in back-off, or its load fails now).
    #[error("plugin `{plugin}`: no worker process available: {reason}")]
    WorkerUnavailable { plugin: String, reason: String },
}

impl From<PluginError> for CallError {
    fn from(error: PluginError) -> Self {
        CallError::Plugin(error)
    }
}
