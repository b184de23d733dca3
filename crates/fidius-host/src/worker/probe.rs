//! `probe` mode: which compiled extensions can be imported in an own-GIL sub-interpreter.
//!
//! Arguments: the plugin directory, then the dotted names of the modules to try. For each module,
//! in order, the worker creates a fresh own-GIL sub-interpreter whose `sys.path` is the plugin's
//! (`vendor/`, the plugin directory, the standard library, as for a loaded plugin), imports the
//! module by its full name (which runs its parent packages' `__init__` too) and reports the outcome
//! ([`Report::Imported`]), then ends the interpreter and says so ([`Report::Ended`]): a crash while
//! ending the interpreter (numpy corrupts the heap after refusing to load) is blamed on the right
//! module, with the import's own error kept. A module whose package would fall back to pure Python
//! is reported as failing: it is the compiled module itself that is imported.
//!
//! Reports are JSON lines ([`Report`]) on a private copy of the original stdout; file descriptor 1
//! is pointed at stderr before any module is imported, so whatever a module's C code writes cannot
//! corrupt them. The host ([`crate::backend::process::probe`]) treats a crash or a hang as "no" for the module
//! in flight and starts a new worker for the rest.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use fidius_core::dist_info::VENDOR_DIR;
use fidius_ffi::{FfiError, InterpreterOptions, SubInterpreter};
use serde::{Deserialize, Serialize};

use crate::plugin::plugin_imports::{define_source_only_imports, install_source_only_imports};

/// Defines `_fidius_probe(vendor_dir, plugin_dir, name)`: `None` if `name` imports, else one line:
/// the first meaningful line of the innermost exception of the chain (the real cause), then, when
/// packages re-raised it, `(re-raised as Type: first line, then as …)` out to the one the import
/// raised. Packages often re-raise a clearer-sounding error from the real one (numpy: "you should
/// not try to import numpy from its source directory", after a 900-character banner); what the
/// author needs is the cause, in one line.
const PROBE_SOURCE: &str = r#"
def _fidius_probe(vendor_dir, plugin_dir, name):
    import importlib
    import sys

    sys.dont_write_bytecode = True
    stdlib = [entry for entry in sys.path if entry]
    sys.path[:] = [vendor_dir, plugin_dir, *stdlib]
    try:
        importlib.import_module(name)
    except BaseException as exc:  # SystemExit and KeyboardInterrupt at import count as failures too
        # Explicit causes (`raise ... from`) and implicit context (raised while handling) both
        # lead to the error the wrappers came from. numpy 2 in a sub-interpreter: "No module
        # named 'numpy'", wrapped by a banner, wrapped by "you should not try to import numpy
        # from its source directory".
        chain = [exc]
        while len(chain) < 16:
            link = chain[-1]
            link = link.__cause__ or (None if link.__suppress_context__ else link.__context__)
            if link is None or link in chain:
                break
            chain.append(link)
        described = _fidius_describe(chain[-1])
        wrappers = [_fidius_describe(link) for link in reversed(chain[:-1])]
        if wrappers:
            described += " (re-raised as " + ", then as ".join(wrappers) + ")"
        return described
    return None

def _fidius_describe(exc):
    kind = type(exc).__qualname__
    if type(exc).__module__ != "builtins":
        kind = f"{type(exc).__module__}.{kind}"
    lines = [" ".join(line.split()) for line in str(exc).splitlines()]
    message = next((line for line in lines if any(c.isalnum() for c in line)), "")
    if len(message) > 160:
        message = message[:159] + "…"
    return f"{kind}: {message}" if message else kind
"#;

/// One line the probe worker writes on its report channel.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "report", rename_all = "snake_case")]
pub(crate) enum Report {
    /// First line, once CPython is initialised: the full version it runs, e.g. `3.13.5`.
    Ready { python: String },
    /// One module's import outcome; `error` is `None` when the import succeeded. Sent before its
    /// interpreter ends.
    Imported { name: String, error: Option<String> },
    /// The module's interpreter has ended cleanly.
    Ended { name: String },
}

pub(super) fn main(args: Vec<OsString>) -> ExitCode {
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("fidius worker probe: {message}");
            ExitCode::from(super::USAGE)
        }
    }
}

fn run(args: Vec<OsString>) -> Result<(), String> {
    let mut args = args.into_iter();
    let plugin_dir = args
        .next()
        .ok_or("expected a plugin directory and module names")?;
    let plugin_dir = plugin_dir
        .into_string()
        .map_err(|dir| format!("plugin directory {dir:?} is not UTF-8"))?;
    let vendor_dir = Path::new(&plugin_dir).join(VENDOR_DIR);
    let vendor_dir = vendor_dir
        .to_str()
        .ok_or("vendor directory is not UTF-8")?
        .to_owned();
    let bytecode_cache = std::env::var_os(super::BYTECODE_CACHE_ENV).map(PathBuf::from);
    let modules = args
        .map(|module| module.into_string())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|module| format!("module name {module:?} is not UTF-8"))?;

    let mut reports =
        private_report_channel().map_err(|error| format!("cannot set up its streams: {error}"))?;
    fidius_ffi::ensure_initialized().map_err(|error| error.to_string())?;
    let mut send = |report: &Report| -> Result<(), String> {
        let mut line = serde_json::to_vec(report).map_err(|error| error.to_string())?;
        line.push(b'\n');
        reports
            .write_all(&line)
            .and_then(|()| reports.flush())
            .map_err(|error| format!("cannot report to the host: {error}"))
    };
    send(&Report::Ready {
        python: fidius_ffi::python_version(),
    })?;
    for name in modules {
        let interp = SubInterpreter::new(InterpreterOptions::default())
            .map_err(|error| format!("cannot create a sub-interpreter: {error}"))?;
        let error = match probe_one(
            &interp,
            &vendor_dir,
            &plugin_dir,
            &name,
            bytecode_cache.as_deref(),
        ) {
            Ok(outcome) => outcome,
            Err(error) => Some(format!("fidius could not probe it: {error}")),
        };
        send(&Report::Imported {
            name: name.clone(),
            error,
        })?;
        // A crash here belongs to this module too: the host saw `Imported` but not `Ended`.
        drop(interp);
        send(&Report::Ended { name })?;
    }
    Ok(())
}

/// Duplicates the real stdout to a private descriptor for reports, then points descriptor 1 at
/// stderr, so `printf` in an extension's C code, or `print` in its package, lands in stderr.
fn private_report_channel() -> io::Result<File> {
    let reports = rustix::io::fcntl_dupfd_cloexec(io::stdout().as_fd(), 3)?;
    rustix::stdio::dup2_stdout(io::stderr().as_fd())?;
    Ok(File::from(reports))
}

/// Imports `name` in `interp` (a fresh own-GIL sub-interpreter); `Ok(None)` when it imported.
fn probe_one(
    interp: &SubInterpreter,
    vendor_dir: &str,
    plugin_dir: &str,
    name: &str,
    bytecode_cache: Option<&Path>,
) -> Result<Option<String>, FfiError> {
    interp.with(|py| -> Result<Option<String>, FfiError> {
        define_source_only_imports(py)?;
        install_source_only_imports(
            py,
            &[Path::new(vendor_dir), Path::new(plugin_dir)],
            bytecode_cache,
        )?;
        py.run(PROBE_SOURCE)?;
        let probe = py.eval("_fidius_probe")?;
        let result = probe
            .call(&[&py.str(vendor_dir)?, &py.str(plugin_dir)?, &py.str(name)?])
            .map_err(|raised| FfiError::Python(raised.describe()))?;
        if result.is_none() {
            Ok(None)
        } else {
            result.to_str_lossy().map(Some)
        }
    })?
}
