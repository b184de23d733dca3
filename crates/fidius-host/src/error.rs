//! Why a plugin could not be loaded.

use std::path::PathBuf;

use fidius_core::{PackageError, PythonError, WorkerExit};

use crate::backend::process::probe::ProbeError;
use crate::tier::{ExtensionRefusal, IsolationOrigin};

/// Something the original fidius tool accepted that fidius accepts too, with this warning (logged
/// once per load, and in [`PluginInfo::warnings`](crate::PluginInfo::warnings)); with
/// [`LoadOptions::strict`](crate::LoadOptions::strict) it is refused instead.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum LoadWarning {
    /// An interface method defined without `@method` (the original never required it).
    #[error("method `{method}` is not decorated with @method")]
    NotDecorated { method: String },
    /// The module's `__interface__` or the manifest's `package.interface` names the trait in
    /// another spelling (case, `_`, `-`), e.g. `shouter` for `Shouter`.
    #[error("the interface is named `{found}`, not `{expected}`")]
    InterfaceName {
        found: String,
        #[serde(default)]
        expected: String,
    },
}

/// Whether `found` names the trait `expected` but for case, `_` and `-`.
pub(crate) fn same_interface_spelling(found: &str, expected: &str) -> bool {
    let folded = |name: &str| -> String {
        name.chars()
            .filter(|c| !matches!(c, '_' | '-'))
            .flat_map(char::to_lowercase)
            .collect()
    };
    folded(found) == folded(expected)
}

/// Keeps `warning` (lenient) or turns it into the load error it stands for (strict, or a name that
/// differs by more than spelling).
pub(crate) fn admit(
    warning: LoadWarning,
    plugin: &str,
    expected_interface: &str,
    strict: bool,
) -> Result<LoadWarning, LoadError> {
    match warning {
        LoadWarning::InterfaceName { found, .. }
            if strict || !same_interface_spelling(&found, expected_interface) =>
        {
            Err(LoadError::InterfaceNameMismatch {
                plugin: plugin.to_owned(),
                expected: expected_interface.to_owned(),
                found,
            })
        }
        LoadWarning::InterfaceName { found, .. } => Ok(LoadWarning::InterfaceName {
            found,
            expected: expected_interface.to_owned(),
        }),
        LoadWarning::NotDecorated { method } if strict => Err(LoadError::NotDecorated {
            plugin: plugin.to_owned(),
            method,
        }),
        warning => Ok(warning),
    }
}

/// Why loading a plugin into its interpreters failed. Every variant names the plugin.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// No package of that name (and version, when asked for `name@version`) on the search paths.
    #[error("plugin `{name}` not found; found: {}", if available.is_empty() { "nothing".to_owned() } else { available.join(", ") })]
    NotFound {
        name: String,
        /// `name@version` of every package that was found.
        available: Vec<String>,
    },
    /// `PluginHost::reload` was asked for a plugin it has no live handle for.
    #[error("plugin `{name}` is not loaded by this host, so there is nothing to reload")]
    NotLoaded { name: String },
    /// The package could not be read, unpacked or hashed.
    #[error("plugin `{plugin}`: package at {} is unusable", path.display())]
    Package {
        plugin: String,
        path: PathBuf,
        #[source]
        source: Box<PackageError>,
    },
    /// The package cache folder cannot be used safely (another user's, writable by others) or at all.
    #[error("plugin `{plugin}`: cannot unpack {} into the package cache", archive.display())]
    Cache {
        plugin: String,
        archive: PathBuf,
        #[source]
        source: Box<crate::host::CacheError>,
    },
    /// The host requires signatures and the package has none.
    #[error("plugin `{plugin}`: package at {} is not signed, and this host requires signatures", path.display())]
    Unsigned { plugin: String, path: PathBuf },
    /// The signature does not verify against any trusted key (tampered package, or untrusted signer).
    #[error("plugin `{plugin}`: signature rejected")]
    SignatureRejected {
        plugin: String,
        #[source]
        source: Box<PackageError>,
    },
    /// The plugin must run in the process tier and no worker executable was found.
    #[error("plugin `{plugin}`: cannot run in the process tier")]
    WorkerNotFound {
        plugin: String,
        #[source]
        source: crate::backend::process::command::WorkerNotFound,
    },
    /// The operating system refused to start a worker process.
    #[error("plugin `{plugin}`: could not start worker process {}", program.display())]
    WorkerSpawn {
        plugin: String,
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A worker process died (crashed, exited, was killed) while loading the plugin.
    #[error(
        "plugin `{plugin}`: worker process died while loading the plugin ({status}){}",
        tail_suffix(stderr_tail)
    )]
    WorkerExited {
        plugin: String,
        /// How it ended; displays as `exit status N` or `killed by signal N (NAME)`.
        status: WorkerExit,
        /// The last lines the worker wrote to its stderr.
        stderr_tail: String,
    },
    /// A worker process answered with something that is not the protocol (killed).
    #[error("plugin `{plugin}`: worker process broke the protocol: {reason}")]
    WorkerProtocol { plugin: String, reason: String },
    /// The operating system refused to start a worker thread.
    #[error("plugin `{plugin}`: could not start worker thread")]
    Spawn {
        plugin: String,
        #[source]
        source: std::io::Error,
    },
    /// CPython could not be initialised or refused to create a sub-interpreter.
    #[error("plugin `{plugin}`: could not create a Python sub-interpreter")]
    Interpreter {
        plugin: String,
        #[source]
        source: InterpreterError,
    },
    /// The host's own bootstrap code failed inside the interpreter (a fidius bug or a broken stdlib).
    #[error("plugin `{plugin}`: the fidius bootstrap failed in the interpreter")]
    Bootstrap {
        plugin: String,
        #[source]
        source: InterpreterError,
    },
    /// The bootstrap's report could not be read (a fidius bug).
    #[error("plugin `{plugin}`: unreadable bootstrap report {report}")]
    BootstrapReport {
        plugin: String,
        report: String,
        #[source]
        source: serde_json::Error,
    },
    /// `LoadOptions` asked for something impossible.
    #[error("plugin `{plugin}`: invalid load options: {reason}")]
    InvalidOptions { plugin: String, reason: String },
    /// No module of that name in the plugin directory (or its `vendor/`).
    #[error("plugin `{plugin}`: entry module `{module}` was not found in {}", dir.display())]
    EntryModuleNotFound {
        plugin: String,
        module: String,
        dir: PathBuf,
    },
    /// The plugin's Python source does not parse.
    #[error("plugin `{plugin}`: syntax error in {file}, line {line}: {message}")]
    Syntax {
        plugin: String,
        file: String,
        line: u32,
        message: String,
    },
    /// Importing the entry module (or something it imports) raised.
    #[error(
        "plugin `{plugin}`: importing `{module}` raised {exception}{}",
        subinterpreter_hint(exception)
    )]
    Import {
        plugin: String,
        module: String,
        exception: PythonError,
    },
    /// The module has no `__interface_hash__`.
    #[error("plugin `{plugin}`: module defines no __interface_hash__ (expected {expected:#018x} for interface `{interface}`); generate it with `fidius python-stub`")]
    InterfaceHashMissing {
        plugin: String,
        interface: String,
        expected: u64,
    },
    /// `__interface_hash__` is not an integer.
    #[error("plugin `{plugin}`: __interface_hash__ must be an int, found {found}")]
    InterfaceHashNotInt { plugin: String, found: String },
    /// The plugin was written against a different version of the interface.
    #[error("plugin `{plugin}`: interface hash mismatch for `{interface}`: the host expects {expected:#018x}, the plugin declares {found:#018x}")]
    InterfaceHashMismatch {
        plugin: String,
        interface: String,
        expected: u64,
        found: u64,
    },
    /// `__interface_schema__` differs from the descriptor's schema fingerprint: a struct or enum
    /// the interface's methods use changed since the plugin's stub was generated (the interface
    /// hash does not cover them). A plugin without the constant is not checked.
    #[error("plugin `{plugin}`: the structs of interface `{interface}` changed since its stub was generated: the host's schema fingerprint is {expected:#018x}, the plugin's __interface_schema__ is {found}; regenerate the stub with `fidius python-stub` and update the plugin to the new fields")]
    InterfaceSchemaMismatch {
        plugin: String,
        interface: String,
        expected: u64,
        found: String,
    },
    /// `__interface__` names another trait.
    #[error("plugin `{plugin}`: implements interface `{found}`, the host expects `{expected}`")]
    InterfaceNameMismatch {
        plugin: String,
        expected: String,
        found: String,
    },
    /// `__interface_version__` differs.
    #[error("plugin `{plugin}`: implements version {found} of `{interface}`, the host expects version {expected}")]
    InterfaceVersionMismatch {
        plugin: String,
        interface: String,
        expected: u32,
        found: String,
    },
    /// A Rust cdylib plugin's library was refused before any of its functions ran (or could
    /// not be mapped).
    #[error("plugin `{plugin}`: Rust library {}: {problem}", library.display())]
    RustLibrary {
        plugin: String,
        library: PathBuf,
        problem: crate::backend::rust::LibraryProblem,
    },
    /// A required method is absent.
    #[error("plugin `{plugin}`: required method `{method}` of `{interface}` is missing")]
    MissingMethod {
        plugin: String,
        interface: String,
        method: String,
    },
    /// The plugin was loaded with a configuration (`load_python_configured`, `LoadOptions::config`)
    /// but its entry module defines no `__fidius_configure__(config)` to take it (or defines one
    /// that is not callable).
    #[error("plugin `{plugin}`: loaded with a configuration, but module `{module}` defines no callable __fidius_configure__(config)")]
    ConfigureHookMissing { plugin: String, module: String },
    /// The plugin's `__fidius_configure__(config)` raised (the message is a short excerpt).
    #[error(
        "plugin `{plugin}`: __fidius_configure__ raised {}",
        excerpt(exception)
    )]
    Configure {
        plugin: String,
        exception: PythonError,
    },
    /// A required method is absent from the module, which defines `__fidius_configure__`: the
    /// plugin expects to be loaded with a configuration.
    #[error("plugin `{plugin}`: required method `{method}` of `{interface}` is not a module-level function, and the module defines __fidius_configure__: load it with a configuration (`load_python_configured`, `LoadOptions::config`, `fidius call --config`)")]
    ConfigRequired {
        plugin: String,
        interface: String,
        method: String,
    },
    /// The attribute exists but cannot be called.
    #[error("plugin `{plugin}`: `{method}` is a {found}, not a function")]
    NotCallable {
        plugin: String,
        method: String,
        found: String,
    },
    /// The function was not registered with `@method`.
    #[error("plugin `{plugin}`: `{method}` is not decorated with @fidius.method")]
    NotDecorated { plugin: String, method: String },
    /// The function cannot be called with the interface's number of arguments.
    #[error("plugin `{plugin}`: `{method}{signature}` cannot take the interface's {expected} positional argument(s)")]
    ArityMismatch {
        plugin: String,
        method: String,
        expected: usize,
        signature: String,
    },
    /// Importing the plugin did not finish within `LoadOptions::load_timeout`. The import was
    /// interrupted, or, if it did not come back within the grace period (stuck in C code such as
    /// `time.sleep`), its thread was detached.
    #[error("plugin `{plugin}`: loading did not finish within {after:?}")]
    LoadTimeout {
        plugin: String,
        after: std::time::Duration,
    },
    /// A reload found a different plugin where this one was loaded from.
    #[error("plugin `{plugin}`: reload found plugin `{found}` in its place")]
    ReloadFoundOtherPlugin { plugin: String, found: String },
    /// `isolation = "auto"` needed the plugin's compiled extensions probed, and probing failed
    /// (no worker executable, or a broken one). A module that fails its probe is not an error: it
    /// sends the plugin to the process tier.
    #[error("plugin `{plugin}`: cannot tell whether its compiled extensions can run in a sub-interpreter")]
    Probe {
        plugin: String,
        #[source]
        source: Box<ProbeError>,
    },
    /// `isolation = "subinterpreter"` was asked for, but compiled extensions of the plugin cannot
    /// run in a sub-interpreter (as `extensions.toml` records, or a probe at load found). Loading
    /// them there could crash the host, so there is no override: load it with `auto` or `process`.
    #[error(
        "plugin `{plugin}`: isolation = \"subinterpreter\" in {origin}, but {reason}; importing \
         them in a sub-interpreter could crash the host, so load the plugin with isolation = \
         \"auto\" or \"process\""
    )]
    SubinterpreterRefused {
        plugin: String,
        /// Where the isolation was asked for: `package.toml` or `the load options`.
        origin: IsolationOrigin,
        /// Which modules cannot, why, and where that is known from.
        reason: ExtensionRefusal,
    },
    /// A worker thread ended before saying whether its instance loaded.
    #[error("plugin `{plugin}`: worker thread ended during load")]
    WorkerDied { plugin: String },
}

/// What went wrong in CPython while creating an interpreter or running the host's bootstrap in it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InterpreterError {
    /// Python code raised.
    #[error(transparent)]
    Python(PythonError),
    /// CPython or the embedding failed outside Python code (initialisation, a refused
    /// sub-interpreter, a thread state); the message says what.
    #[error("{message}")]
    Embedding { message: String },
}

impl From<fidius_ffi::FfiError> for InterpreterError {
    fn from(error: fidius_ffi::FfiError) -> Self {
        match error {
            fidius_ffi::FfiError::Python(exception) => {
                InterpreterError::Python(python_error(exception))
            }
            other => InterpreterError::Embedding {
                message: other.to_string(),
            },
        }
    }
}

/// The host's own form of an exception the embedding caught.
pub(crate) fn python_error(exception: fidius_ffi::PythonException) -> PythonError {
    PythonError::new(exception.type_name, exception.message, exception.traceback)
}

/// The last lines of a worker's stderr, on their own lines after the message, when there are any.
fn tail_suffix(tail: &str) -> String {
    if tail.trim().is_empty() {
        String::new()
    } else {
        format!("; its stderr ended with:\n{}", tail.trim_end())
    }
}

/// Points plugin authors at the process tier when an extension refused to load in a sub-interpreter.
fn subinterpreter_hint(exception: &PythonError) -> &'static str {
    if exception
        .message
        .contains("does not support loading in subinterpreters")
    {
        " (this compiled extension cannot run in an own-GIL sub-interpreter; load the plugin with \
         isolation = \"process\", or \"auto\" to let fidius decide)"
    } else {
        ""
    }
}

/// `Type: message` of `exception`, the message cut to a short excerpt (a configure hook may put the
/// whole configuration, secrets included, into its message).
fn excerpt(exception: &PythonError) -> String {
    let message = fidius_core::toml_error::shorten(&exception.message);
    if message.is_empty() {
        exception.type_name.clone()
    } else {
        format!("{}: {message}", exception.type_name)
    }
}
