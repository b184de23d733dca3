//! Host functions: named Rust functions plugin code calls as `fidius.host.<name>(...)`, in both
//! tiers.
//!
//! Registered on [`PluginHostBuilder`](crate::PluginHostBuilder) (`host_function`,
//! `host_function_typed`, `host_function_timeout`). The arguments travel as a JSON array of the
//! positional arguments, the result as one JSON value. In the sub-interpreter tier the function runs
//! on the instance thread (the builtin behind `fidius.host` calls it through
//! `fidius_ffi::serve_host_calls`, with the interpreter's GIL released); in the process tier the
//! worker sends a `CALLBACK` message over its mailbox and the host thread waiting for the call's
//! reply runs the function and answers (`CALLBACK_OK` / `CALLBACK_ERR`).

pub(crate) mod chain;

use std::collections::BTreeMap;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use fidius_core::CallError;
use fidius_ffi::{FfiError, Interpreter};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The longest host function name (also what the host accepts from a worker).
pub(crate) const MAX_NAME: usize = 64;

/// Why a host function failed. The plugin gets it as a `fidius.HostError` whose `str()` is the
/// message; if the plugin does not catch it, the call fails with [`CallError::Python`] naming
/// `fidius.HostError`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct HostFunctionError {
    message: String,
}

impl HostFunctionError {
    /// An error with this message (what the plugin sees).
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }

    /// The message the plugin sees.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// A call the host function made to a plugin failed (for example [`CallError::Reentrant`]).
impl From<CallError> for HostFunctionError {
    fn from(error: CallError) -> Self {
        Self::new(error.to_string())
    }
}

/// The arguments or the result did not match the function's types.
impl From<serde_json::Error> for HostFunctionError {
    fn from(error: serde_json::Error) -> Self {
        Self::new(error.to_string())
    }
}

type Function = Arc<dyn Fn(&[u8]) -> Result<Vec<u8>, HostFunctionError> + Send + Sync>;

/// The host functions of a host (empty by default), shared by every plugin it loads.
#[derive(Clone, Default)]
pub(crate) struct HostFunctions {
    functions: BTreeMap<String, Function>,
    timeout: Option<Duration>,
    /// The first registration that was not acceptable, reported by `PluginHostBuilder::build`.
    refused: Option<(String, String)>,
}

impl HostFunctions {
    pub(crate) fn register(
        &mut self,
        name: String,
        function: impl Fn(&[u8]) -> Result<Vec<u8>, HostFunctionError> + Send + Sync + 'static,
    ) {
        let problem = if let Some(reason) = name_problem(&name) {
            Some(reason)
        } else if self.functions.contains_key(&name) {
            Some("registered twice".to_owned())
        } else {
            None
        };
        match problem {
            Some(reason) => {
                self.refused.get_or_insert((name, reason));
            }
            None => {
                self.functions.insert(name, Arc::new(function));
            }
        }
    }

    pub(crate) fn register_typed<A, R, F>(&mut self, name: String, function: F)
    where
        A: DeserializeOwned,
        R: Serialize,
        F: Fn(A) -> Result<R, HostFunctionError> + Send + Sync + 'static,
    {
        self.register(name, move |args: &[u8]| {
            let args: A = serde_json::from_slice(args)
                .map_err(|error| HostFunctionError::new(format!("bad arguments: {error}")))?;
            Ok(serde_json::to_vec(&function(args)?)?)
        });
    }

    pub(crate) fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = Some(timeout);
    }

    /// The first refused registration: `(name, why)`.
    pub(crate) fn refused(&self) -> Option<&(String, String)> {
        self.refused.as_ref()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.functions.is_empty()
    }

    /// The registered names, sorted.
    pub(crate) fn names(&self) -> Vec<String> {
        self.functions.keys().cloned().collect()
    }

    /// Runs host function `name` with `args` (a JSON array): its result's JSON, or the message the
    /// plugin's `fidius.HostError` carries (the function's error, a panic, an unknown name, the
    /// timeout).
    pub(crate) fn invoke(&self, name: &str, args: &[u8]) -> Result<Vec<u8>, String> {
        let Some(function) = self.functions.get(name) else {
            return Err(format!(
                "no host function named `{}`; the host registered: {}",
                name.chars().take(MAX_NAME).collect::<String>(),
                self.listed()
            ));
        };
        match self.timeout {
            None => run(function, name, args),
            Some(timeout) => run_with_timeout(function, name, args, timeout),
        }
    }

    fn listed(&self) -> String {
        if self.functions.is_empty() {
            return "none".to_owned();
        }
        self.names().join(", ")
    }

    /// Answers a worker's `CALLBACK` body (see `protocol::decode_callback`): the result, or the
    /// message it gets back. The worker is not trusted: the arguments must be a JSON array.
    pub(crate) fn answer_worker(&self, name: &str, args: &[u8]) -> Result<Vec<u8>, String> {
        if let Err(error) = serde_json::from_slice::<Vec<serde::de::IgnoredAny>>(args) {
            return Err(format!(
                "host function `{name}`: arguments are not a JSON array: {error}"
            ));
        }
        self.invoke(name, args)
    }
}

/// Runs the function on this thread, a panic becoming its error.
fn run(function: &Function, name: &str, args: &[u8]) -> Result<Vec<u8>, String> {
    match catch_unwind(AssertUnwindSafe(|| function(args))) {
        Ok(Ok(result)) => Ok(result),
        Ok(Err(error)) => Err(error.message),
        Err(_) => Err(format!("host function `{name}` panicked")),
    }
}

/// Runs the function on a thread of its own and waits at most `timeout`. A Rust closure cannot be
/// stopped: one that overruns keeps running there, its result is dropped when it finishes, and the
/// plugin gets the timeout error now.
fn run_with_timeout(
    function: &Function,
    name: &str,
    args: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    let (sender, receiver) = crossbeam_channel::bounded(1);
    let (function, owned_name, args) = (Arc::clone(function), name.to_owned(), args.to_vec());
    // Calls it makes to plugins are still checked against the calls this thread serves.
    let chain = chain::snapshot();
    let spawned = std::thread::Builder::new()
        .name(format!("fidius:host-function:{name}"))
        .spawn(move || {
            let _adopted = chain::adopt(&chain);
            let _ = sender.send(run(&function, &owned_name, &args));
        });
    if let Err(error) = spawned {
        return Err(format!(
            "host function `{name}`: cannot start its thread: {error}"
        ));
    }
    receiver.recv_timeout(timeout).unwrap_or_else(|_| {
        Err(format!(
            "host function `{name}` did not return within {timeout:?} (it keeps running in the \
             host; its result will be dropped)"
        ))
    })
}

/// Why `name` cannot be a host function name, if it cannot: an ASCII identifier that does not
/// start with `_` (the SDK's own attributes do), at most [`MAX_NAME`] bytes.
fn name_problem(name: &str) -> Option<String> {
    let mut chars = name.chars();
    let starts_well = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    if !starts_well || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Some("must be an ASCII identifier starting with a letter".to_owned());
    }
    if name.len() > MAX_NAME {
        return Some(format!("longer than {MAX_NAME} bytes"));
    }
    None
}

impl fmt::Debug for HostFunctions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostFunctions")
            .field("names", &self.names())
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Equal when they hold the same functions (the same closures, not equal ones).
impl PartialEq for HostFunctions {
    fn eq(&self, other: &Self) -> bool {
        self.timeout == other.timeout
            && self.refused == other.refused
            && self.functions.len() == other.functions.len()
            && self
                .functions
                .iter()
                .zip(&other.functions)
                .all(|((name, a), (other_name, b))| name == other_name && Arc::ptr_eq(a, b))
    }
}

impl Eq for HostFunctions {}

/// Gives the plugin loaded in `interp` its `fidius.host` functions (the names; calls are served by
/// whatever `fidius_ffi::serve_host_calls` scope runs the call).
pub(crate) fn bind<I: Interpreter>(interp: &I, names: &[String]) -> Result<(), FfiError> {
    if names.is_empty() {
        return Ok(());
    }
    let names = serde_json::to_vec(names).unwrap_or_default();
    interp
        .with(|py| -> Result<(), FfiError> {
            let names = py
                .json_to_python(&names)
                .map_err(crate::plugin::loader::internal)?;
            let builtin = py.host_call_builtin()?;
            py.eval("sys.modules['fidius'].host._fidius_bind")?
                .call(&[&names, &builtin])
                .map_err(|raised| FfiError::Python(raised.describe()))?;
            Ok(())
        })
        .and_then(|bound| bound)
}
