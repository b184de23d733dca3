//! Errors of a call into a plugin.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An error a plugin reported on purpose (Python: `raise PluginError(code, message, details)`).
///
/// `#[non_exhaustive]`: build one with [`PluginError::new`] (and [`PluginError::with_details`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
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

/// A Python exception as the host reports it: its class, `str()` and traceback. Plain data, owned
/// by fidius (the embedding's own exception type stays inside the host).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PythonError {
    /// Qualified name of the exception class, e.g. `ValueError` or `json.decoder.JSONDecodeError`.
    pub type_name: String,
    /// `str(exception)`.
    pub message: String,
    /// The formatted traceback, when one could be produced.
    pub traceback: Option<String>,
}

impl PythonError {
    /// An exception of class `type_name` with `str()` `message`, and its traceback if known.
    pub fn new(
        type_name: impl Into<String>,
        message: impl Into<String>,
        traceback: Option<String>,
    ) -> Self {
        Self {
            type_name: type_name.into(),
            message: message.into(),
            traceback,
        }
    }
}

impl fmt::Display for PythonError {
    /// `Type: message`, or `Type` alone when the message is empty.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.is_empty() {
            f.write_str(&self.type_name)
        } else {
            write!(f, "{}: {}", self.type_name, self.message)
        }
    }
}

impl std::error::Error for PythonError {}

/// How a worker process ended, as far as the host could tell.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WorkerExit {
    /// It exited with this code (`os._exit(3)`, a fatal error's exit).
    Code(i32),
    /// It was killed by this signal number (a segfault, `abort()`, the out-of-memory killer).
    Signal(i32),
    /// The host killed it because it broke the host–worker protocol.
    ProtocolViolation {
        /// What it sent that is not the protocol.
        reason: String,
    },
    /// It is gone, and its exit status could not be read.
    Unknown,
}

impl WorkerExit {
    /// The conventional name of `signal` and what it usually means, e.g. ` (SIGSEGV)`; empty for
    /// signals without one here.
    fn signal_name(signal: i32) -> &'static str {
        match signal {
            4 => " (SIGILL)",
            6 => " (SIGABRT)",
            7 => " (SIGBUS)",
            8 => " (SIGFPE)",
            9 => " (SIGKILL; out of memory, or killed)",
            11 => " (SIGSEGV)",
            13 => " (SIGPIPE)",
            15 => " (SIGTERM)",
            24 => " (SIGXCPU)",
            _ => "",
        }
    }
}

impl fmt::Display for WorkerExit {
    /// `exit status 3`, `killed by signal 11 (SIGSEGV)`, `killed after a protocol error: …`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WorkerExit::Code(code) => write!(f, "exit status {code}"),
            WorkerExit::Signal(signal) => {
                write!(f, "killed by signal {signal}{}", Self::signal_name(*signal))
            }
            WorkerExit::ProtocolViolation { reason } => {
                write!(f, "killed after a protocol error: {reason}")
            }
            WorkerExit::Unknown => f.write_str("its status is unknown"),
        }
    }
}

/// Why a call into a plugin did not return a value.
///
/// The variants a plugin's own code can end in (`Plugin`, `NotImplemented`, `Python`,
/// `InvalidResult`, `InvalidArguments`, `UnknownMethod`) serialise with serde: this is the form in
/// which a process-tier worker reports them to the host. The others arise in the host only; they
/// neither serialise nor deserialise (`#[serde(skip)]`), so a worker cannot claim them.
#[derive(Debug, thiserror::Error, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
    #[serde(skip)]
    /// The arguments could not be encoded as JSON.
    #[error("could not encode the arguments of `{method}` as JSON")]
    EncodeArguments {
        method: String,
        #[source]
        source: serde_json::Error,
    },
    #[serde(skip)]
    /// The plugin's result did not decode into the method's return type.
    #[error("the result of `{method}` does not match its Rust return type")]
    DecodeResult {
        method: String,
        #[source]
        source: serde_json::Error,
    },
    /// No method has this index in the interface descriptor.
    #[error("no method with index {index} in interface `{interface}`")]
    UnknownMethod {
        /// Not on the wire: the host fills in the interface it called.
        #[serde(skip)]
        interface: String,
        index: usize,
    },
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
    /// A Rust plugin's method panicked. The panic was caught at the library boundary (it never
    /// unwinds into the host) and the plugin keeps serving.
    #[error("`{method}` panicked: {message}")]
    Panic { method: String, message: String },
    /// The arguments handed to the host were not a JSON array.
    #[error("invalid arguments for `{method}`: {reason}")]
    InvalidArguments { method: String, reason: String },
    #[serde(skip)]
    /// A typed call to a raw method, or a raw call to a typed one.
    #[error("`{method}` is a {actual:?} method and cannot be called as {requested:?}")]
    WireModeMismatch {
        method: String,
        actual: crate::interface::WireMode,
        requested: crate::interface::WireMode,
    },
    #[serde(skip)]
    /// The call did not finish within its timeout (`LoadOptions::call_timeout` or a per-call
    /// override in the host). The plugin code was interrupted, or the call was dropped before it
    /// started; see the host's documentation for what can be interrupted.
    #[error("`{method}` of plugin `{plugin}` timed out after {after:?}")]
    Timeout {
        plugin: String,
        method: String,
        after: std::time::Duration,
    },
    #[serde(skip)]
    /// The plugin's instances are gone (shut down, or their worker thread died).
    #[error("plugin `{plugin}` is no longer running")]
    Unavailable { plugin: String },
    #[serde(skip)]
    /// Process tier: the worker process serving the call died before answering (a segfault,
    /// `os._exit`, killed for memory...). The host and the plugin's other instances are unaffected,
    /// and the next call gets a fresh worker.
    #[error("the worker process of plugin `{plugin}` died during `{method}` ({status})")]
    WorkerCrashed {
        plugin: String,
        method: String,
        /// How it ended; displays as `exit status N` or `killed by signal N (NAME)`.
        status: WorkerExit,
        /// The last lines the worker wrote to stderr (C-level output, fatal error messages).
        stderr_tail: String,
    },
    #[serde(skip)]
    /// A host function called a plugin whose call it is serving (directly, or through other
    /// plugins' host functions). That call waits for the host function, so this one would wait for
    /// itself: it is refused instead, whatever the plugin's number of instances.
    #[error(
        "`{method}` of plugin `{plugin}` was called from a host function serving a call of that \
         plugin; re-entrant calls are refused (the call would wait for itself)"
    )]
    Reentrant { plugin: String, method: String },
    #[serde(skip)]
    /// Process tier: no worker process could be started for this call (the plugin crashed its
    /// previous workers and is in back-off, or its load fails now).
    #[error("plugin `{plugin}`: no worker process available")]
    WorkerUnavailable {
        plugin: String,
        /// Why not: the error of the last attempt to start one (the host's `LoadError`, or the
        /// operating system's refusal to start a thread); [`std::error::Error::source`] returns it.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl From<PluginError> for CallError {
    fn from(error: PluginError) -> Self {
        CallError::Plugin(error)
    }
}
