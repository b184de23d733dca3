//! What host and worker say to each other over the mailbox. Both sides come from one build, so the
//! format is private and versioned only by the mailbox's magic number.

use std::path::PathBuf;

use fidius_core::interface::OwnedInterfaceDescriptor;
use fidius_core::{CallError, PluginError};
use serde::{Deserialize, Serialize};

use crate::plugin::source::PluginSource;

/// Host → worker: load this plugin (JSON [`StartSpec`]).
pub(crate) const START: u8 = 1;
/// Host → worker: call a method (u32 method index, little-endian, then the payload).
pub(crate) const CALL: u8 = 2;
/// Host → worker: exit now.
pub(crate) const SHUTDOWN: u8 = 3;
/// Worker → host: the load's outcome (JSON [`Started`]).
pub(crate) const STARTED: u8 = 11;
/// Worker → host: output the plugin wrote (JSON, as the bootstrap hands it over).
pub(crate) const OUTPUT: u8 = 12;
/// Worker → host: a call's result bytes.
pub(crate) const REPLY_OK: u8 = 13;
/// Worker → host: a call's error (JSON [`RemoteError`]).
pub(crate) const REPLY_ERR: u8 = 14;

/// Everything a worker needs to load its plugin.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StartSpec {
    pub(crate) plugin: String,
    pub(crate) version: String,
    pub(crate) dir: PathBuf,
    pub(crate) entry_module: String,
    pub(crate) interface: OwnedInterfaceDescriptor,
    /// Python `logging` level the host wants records from.
    pub(crate) log_level: u32,
    /// Address-space limit for the worker (`RLIMIT_AS`), in bytes.
    pub(crate) memory_limit: Option<u64>,
    /// Refuse what the original fidius accepted with a warning (checked by the host).
    pub(crate) strict: bool,
}

impl StartSpec {
    pub(crate) fn source(&self) -> PluginSource {
        PluginSource::new(&self.plugin, &self.version, &self.dir, &self.entry_module)
    }
}

/// The worker's answer to [`START`].
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Started {
    /// The bootstrap ran; its JSON report says whether the plugin was accepted (the host checks it
    /// with the same code as for a sub-interpreter). `implemented` is filled when it was.
    Report {
        report: String,
        implemented: Vec<bool>,
    },
    /// The bootstrap itself failed (no report).
    Failed {
        type_name: String,
        message: String,
        traceback: Option<String>,
    },
}

/// A call error as it crosses from the worker. Only what `dispatch` can produce.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum RemoteError {
    Plugin(PluginError),
    NotImplemented {
        method: String,
    },
    Python {
        method: String,
        exception_type: String,
        message: String,
        traceback: Option<String>,
    },
    InvalidResult {
        method: String,
        reason: String,
    },
    InvalidArguments {
        method: String,
        reason: String,
    },
    UnknownMethod {
        index: usize,
    },
    /// Anything else, described.
    Other {
        message: String,
    },
}

impl RemoteError {
    pub(crate) fn from_call_error(error: CallError) -> Self {
        match error {
            CallError::Plugin(error) => Self::Plugin(error),
            CallError::NotImplemented { method } => Self::NotImplemented { method },
            CallError::Python {
                method,
                exception_type,
                message,
                traceback,
            } => Self::Python {
                method,
                exception_type,
                message,
                traceback,
            },
            CallError::InvalidResult { method, reason } => Self::InvalidResult { method, reason },
            CallError::InvalidArguments { method, reason } => {
                Self::InvalidArguments { method, reason }
            }
            CallError::UnknownMethod { index, .. } => Self::UnknownMethod { index },
            other => Self::Other {
                message: other.to_string(),
            },
        }
    }

    pub(crate) fn into_call_error(self, descriptor: &OwnedInterfaceDescriptor) -> CallError {
        match self {
            Self::Plugin(error) => CallError::Plugin(error),
            Self::NotImplemented { method } => CallError::NotImplemented { method },
            Self::Python {
                method,
                exception_type,
                message,
                traceback,
            } => CallError::Python {
                method,
                exception_type,
                message,
                traceback,
            },
            Self::InvalidResult { method, reason } => CallError::InvalidResult { method, reason },
            Self::InvalidArguments { method, reason } => {
                CallError::InvalidArguments { method, reason }
            }
            Self::UnknownMethod { index } => CallError::UnknownMethod {
                interface: descriptor.trait_name.clone(),
                index,
            },
            Self::Other { message } => CallError::InvalidResult {
                method: String::new(),
                reason: message,
            },
        }
    }
}
