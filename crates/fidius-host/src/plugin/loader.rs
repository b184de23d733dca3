//! Loading a plugin into a fresh sub-interpreter and checking it against the interface.

use std::ops::Deref;

use fidius_core::interface::OwnedInterfaceDescriptor;
use fidius_ffi::{FfiError, Interpreter, PyHandle};
use serde::Deserialize;

use crate::error::{admit, LoadError, LoadWarning};
use crate::plugin::output::{self, OutputSink};
use crate::plugin::plugin_imports::{define_source_only_imports, install_source_only_imports};
use crate::plugin::precompiled::Precompiled;
use crate::plugin::source::PluginSource;
use crate::sdk::SDK_SOURCE;

static BOOTSTRAP: Precompiled =
    Precompiled::new(include_str!("bootstrap.py"), "<fidius bootstrap>");
/// The SDK's code, under the file name `_fidius_install_sdk` gives the module.
static SDK: Precompiled = Precompiled::new(SDK_SOURCE, "<fidius-host>/fidius/__init__.py");

/// An interpreter in which the part of every load that is the same for all plugins is done: the
/// host's Python (the bootstrap, the source-only import finder, the `fidius` SDK) is defined and
/// CPython's per-interpreter compiler state is built. No plugin code has run in it. A spare
/// interpreter is made ready ahead of time (`backend::thread::spare`), so a load on it pays only
/// for its plugin (measured on the two-core VM: the preparation was 7 ms of a small plugin's 8.9 ms
/// load on a spare, 3.7 ms of it the compiler's AST classes).
pub(crate) struct ReadyInterpreter<I> {
    interp: I,
}

impl<I: Interpreter> ReadyInterpreter<I> {
    /// Prepares `interp`, fresh from CPython: nothing may have run in it yet.
    pub(crate) fn prepare(interp: I) -> Result<Self, FfiError> {
        interp
            .with(|py| -> Result<(), FfiError> {
                define_source_only_imports(py)?;
                BOOTSTRAP.run(py)?;
                py.eval("_fidius_prepare")?
                    .call(&[&SDK.code(py)?])
                    .map_err(|raised| FfiError::Python(raised.describe()))?;
                Ok(())
            })
            .and_then(|prepared| prepared)?;
        Ok(Self { interp })
    }
}

impl<I> Deref for ReadyInterpreter<I> {
    type Target = I;

    fn deref(&self) -> &I {
        &self.interp
    }
}

/// A plugin imported into one interpreter: its methods in descriptor order and the SDK's error class.
pub(crate) struct LoadedInstance<'s> {
    /// `None` for optional methods the plugin does not define.
    pub(crate) methods: Vec<Option<PyHandle<'s>>>,
    pub(crate) plugin_error_class: PyHandle<'s>,
    /// Builtin `NotImplementedError`: raised by an optional method (as the generated stub's body
    /// does), it means the plugin does not implement it.
    pub(crate) not_implemented_class: PyHandle<'s>,
    /// What the plugin was accepted with (see [`LoadWarning`]).
    pub(crate) warnings: Vec<LoadWarning>,
    /// The bootstrap's `_fidius_output` list and `_fidius_take_output` function.
    pub(crate) output_buffer: PyHandle<'s>,
    pub(crate) take_output: PyHandle<'s>,
}

impl LoadedInstance<'_> {
    pub(crate) fn implemented(&self) -> Vec<bool> {
        self.methods.iter().map(Option::is_some).collect()
    }
}

/// What `_fidius_load` in bootstrap.py reports when the plugin is not acceptable.
#[derive(Debug, Deserialize)]
#[serde(tag = "error", rename_all = "snake_case")]
enum Rejection {
    Syntax {
        file: String,
        line: u32,
        message: String,
    },
    EntryMissing,
    Import {
        #[serde(rename = "type")]
        type_name: String,
        message: String,
        traceback: Option<String>,
    },
    HashMissing,
    HashNotInt {
        found: String,
    },
    HashMismatch {
        found: u64,
    },
    SchemaMismatch {
        found: String,
    },
    VersionMismatch {
        found: String,
    },
    MethodMissing {
        method: String,
    },
    NotCallable {
        method: String,
        found: String,
    },
    Arity {
        method: String,
        signature: String,
    },
    ConfigureMissing,
    Configure {
        #[serde(rename = "type")]
        type_name: String,
        message: String,
        traceback: Option<String>,
    },
    ConfigRequired {
        method: String,
    },
}

/// Imports the plugin into `interp` and checks it; no plugin code runs before this call. With a
/// `config`, the module's `__fidius_configure__(config)` builds the object whose attributes are the
/// methods.
pub(crate) fn load<'s, I: Interpreter>(
    interp: &'s ReadyInterpreter<I>,
    source: &PluginSource,
    descriptor: &OwnedInterfaceDescriptor,
    config: Option<&serde_json::Value>,
    output: &dyn OutputSink,
    strict: bool,
) -> Result<LoadedInstance<'s>, LoadError> {
    let log_level = output::python_log_level();
    import(
        interp, source, descriptor, config, log_level, output, strict,
    )
    .map_err(|source_error| LoadError::Bootstrap {
        plugin: source.name.clone(),
        source: source_error.into(),
    })?
    .checked
}

/// What the load steps made of a plugin in one interpreter.
pub(crate) struct Imported<'s> {
    /// The bootstrap's JSON report (a worker process hands it to its host, which checks it again
    /// with its own settings).
    pub(crate) report: Vec<u8>,
    /// The accepted plugin, or the load error its report describes.
    pub(crate) checked: Result<LoadedInstance<'s>, LoadError>,
}

/// The load steps, the same in a sub-interpreter and in a worker process's main interpreter: the
/// bootstrap (imports and checks the plugin), the check of its report, and keeping the accepted
/// plugin's methods. `Err` when the bootstrap itself failed.
pub(crate) fn import<'s, I: Interpreter>(
    interp: &'s ReadyInterpreter<I>,
    source: &PluginSource,
    descriptor: &OwnedInterfaceDescriptor,
    config: Option<&serde_json::Value>,
    log_level: u32,
    output: &dyn OutputSink,
    strict: bool,
) -> Result<Imported<'s>, FfiError> {
    let report = bootstrap(interp, source, descriptor, config, log_level, output)?;
    let checked = match check_report(&report, source, descriptor, strict) {
        Ok(warnings) => {
            let mut loaded = instance(&**interp, descriptor)?;
            loaded.warnings = warnings;
            Ok(loaded)
        }
        Err(rejected) => Err(rejected),
    };
    Ok(Imported { report, checked })
}

/// Runs the bootstrap's plugin part (sets up the source-only finder, `sys.path` and output capture,
/// imports the plugin and checks it), drains what the import printed, and returns the bootstrap's
/// JSON report for [`check_report`].
fn bootstrap<I: Interpreter>(
    interp: &ReadyInterpreter<I>,
    source: &PluginSource,
    descriptor: &OwnedInterfaceDescriptor,
    config: Option<&serde_json::Value>,
    log_level: u32,
    output: &dyn OutputSink,
) -> Result<Vec<u8>, FfiError> {
    let spec = serde_json::json!({
        "vendor_dir": source.vendor_dir(),
        "plugin_dir": source.dir(),
        "entry_module": source.entry_module,
        "hash": descriptor.interface_hash,
        "schema": descriptor.schema_fingerprint,
        "trait": descriptor.trait_name,
        "version": descriptor.version,
        "log_level": log_level,
        // `configure` tells a `null` configuration (`&()`) from none.
        "configure": config.is_some(),
        "config": config,
        "methods": descriptor.methods.iter().map(|method| serde_json::json!({
            "name": method.name,
            "arity": method.args.len(),
            "optional": method.optional_since.is_some(),
        })).collect::<Vec<_>>(),
    })
    .to_string();

    let report = interp
        .with(|py| -> Result<Vec<u8>, FfiError> {
            install_source_only_imports(
                py,
                &[&source.vendor_dir(), source.dir()],
                source.bytecode_cache.as_deref(),
            )?;
            let report = py
                .eval("_fidius_load")?
                .call(&[&py.json_to_python(spec.as_bytes()).map_err(internal)?])
                .map_err(|raised| FfiError::Python(raised.describe()))?;
            let report = report.to_json().map_err(internal)?;
            let import_error = py.eval("_fidius_import_error")?;
            Ok(if import_error.is_none() {
                report
            } else {
                with_import_error(&report, &import_error.describe_exception())
            })
        })
        .and_then(|report| report);
    // What the plugin printed at import time, even when the load failed: often the best clue.
    let _ = interp.with(|py| {
        if let Ok((buffer, take)) = output::buffer_and_take(py) {
            output.drain(&buffer, &take);
        }
    });
    report
}

/// Adds the described exception that failed the plugin's import to the bootstrap's report.
fn with_import_error(report: &[u8], exception: &fidius_ffi::PythonException) -> Vec<u8> {
    let Ok(serde_json::Value::Object(mut fields)) = serde_json::from_slice(report) else {
        return report.to_vec(); // check_report names what is wrong with it
    };
    fields.insert("type".to_owned(), exception.type_name.clone().into());
    fields.insert("message".to_owned(), exception.message.clone().into());
    fields.insert("traceback".to_owned(), exception.traceback.clone().into());
    serde_json::Value::Object(fields).to_string().into_bytes()
}

/// What a plugin was accepted with, in either tier: which descriptor methods it defines, and the
/// warnings (what the original fidius accepted) it loaded with.
#[derive(Debug, Clone, Default)]
pub(crate) struct Accepted {
    pub(crate) implemented: Vec<bool>,
    pub(crate) warnings: Vec<LoadWarning>,
}

/// Turns the bootstrap's report into the load error it describes, if any; an accepted plugin's
/// warnings (what the original fidius accepted) are refused too when `strict`.
pub(crate) fn check_report(
    report: &[u8],
    source: &PluginSource,
    descriptor: &OwnedInterfaceDescriptor,
    strict: bool,
) -> Result<Vec<LoadWarning>, LoadError> {
    let unreadable = |error| LoadError::BootstrapReport {
        plugin: source.name.clone(),
        report: String::from_utf8_lossy(report).into_owned(),
        source: error,
    };
    let mut parsed: serde_json::Value = serde_json::from_slice(report).map_err(unreadable)?;
    if parsed.get("ok").is_none() {
        let rejection = Rejection::deserialize(&parsed).map_err(unreadable)?;
        return Err(rejection_to_error(rejection, source, descriptor));
    }
    let warnings = match parsed.get_mut("warnings").map(serde_json::Value::take) {
        Some(warnings) => Vec::<LoadWarning>::deserialize(warnings).map_err(unreadable)?,
        None => Vec::new(),
    };
    warnings
        .into_iter()
        .map(|warning| admit(warning, &source.name, &descriptor.trait_name, strict))
        .collect()
}

/// Keeps the accepted plugin's methods, error class and output capture for serving calls.
fn instance<'s, I: Interpreter>(
    interp: &'s I,
    descriptor: &OwnedInterfaceDescriptor,
) -> Result<LoadedInstance<'s>, FfiError> {
    interp
        .with(|py| -> Result<LoadedInstance<'s>, FfiError> {
            // Popped from the end, then put back in order: one lookup of the list, and no code
            // compiled per method (an `eval` of `_fidius_loaded_methods[i]` each cost ~40 µs).
            let pop = py.eval("_fidius_loaded_methods")?.getattr("pop")?;
            let mut methods = (0..descriptor.methods.len())
                .map(|_| {
                    let method = pop
                        .call(&[])
                        .map_err(|raised| FfiError::Python(raised.describe()))?;
                    Ok((!method.is_none()).then(|| interp.persist(method)))
                })
                .collect::<Result<Vec<_>, FfiError>>()?;
            methods.reverse();
            let plugin_error_class = interp.persist(py.eval("sys.modules['fidius'].PluginError")?);
            let not_implemented_class = interp.persist(py.eval("NotImplementedError")?);
            py.run("del _fidius_loaded_methods")?;
            let (buffer, take) = output::buffer_and_take(py)?;
            Ok(LoadedInstance {
                methods,
                plugin_error_class,
                not_implemented_class,
                warnings: Vec::new(),
                output_buffer: interp.persist(buffer),
                take_output: interp.persist(take),
            })
        })
        .and_then(|instance| instance)
}

/// A conversion failure inside the bootstrap (the data is the host's own, so this is a fidius bug).
pub(crate) fn internal(error: fidius_ffi::JsonError) -> FfiError {
    FfiError::Python(fidius_ffi::PythonException {
        type_name: "fidius.BootstrapError".to_owned(),
        message: error.to_string(),
        traceback: None,
    })
}

fn rejection_to_error(
    rejection: Rejection,
    source: &PluginSource,
    descriptor: &OwnedInterfaceDescriptor,
) -> LoadError {
    let plugin = source.name.clone();
    let interface = descriptor.trait_name.clone();
    match rejection {
        Rejection::Syntax {
            file,
            line,
            message,
        } => LoadError::Syntax {
            plugin,
            file,
            line,
            message,
        },
        Rejection::EntryMissing => LoadError::EntryModuleNotFound {
            plugin,
            module: source.entry_module.clone(),
            dir: source.dir.clone(),
        },
        Rejection::Import {
            type_name,
            message,
            traceback,
        } => LoadError::Import {
            plugin,
            module: source.entry_module.clone(),
            exception: fidius_core::PythonError::new(type_name, message, traceback),
        },
        Rejection::HashMissing => LoadError::InterfaceHashMissing {
            plugin,
            interface,
            expected: descriptor.interface_hash,
        },
        Rejection::HashNotInt { found } => LoadError::InterfaceHashNotInt { plugin, found },
        Rejection::HashMismatch { found } => LoadError::InterfaceHashMismatch {
            plugin,
            interface,
            expected: descriptor.interface_hash,
            found,
        },
        Rejection::SchemaMismatch { found } => LoadError::InterfaceSchemaMismatch {
            plugin,
            interface,
            // The bootstrap only compares when the descriptor has one.
            expected: descriptor.schema_fingerprint.unwrap_or_default(),
            found,
        },
        Rejection::VersionMismatch { found } => LoadError::InterfaceVersionMismatch {
            plugin,
            interface,
            expected: descriptor.version,
            found,
        },
        Rejection::MethodMissing { method } => LoadError::MissingMethod {
            plugin,
            interface,
            method,
        },
        Rejection::NotCallable { method, found } => LoadError::NotCallable {
            plugin,
            method,
            found,
        },
        Rejection::Arity { method, signature } => {
            let expected = descriptor
                .method_index(&method)
                .and_then(|index| descriptor.method(index))
                .map_or(0, |method| method.args.len());
            LoadError::ArityMismatch {
                plugin,
                method,
                expected,
                signature,
            }
        }
        Rejection::ConfigureMissing => LoadError::ConfigureHookMissing {
            plugin,
            module: source.entry_module.clone(),
        },
        Rejection::Configure {
            type_name,
            message,
            traceback,
        } => LoadError::Configure {
            plugin,
            exception: fidius_core::PythonError::new(type_name, message, traceback),
        },
        Rejection::ConfigRequired { method } => LoadError::ConfigRequired {
            plugin,
            interface,
            method,
        },
    }
}
