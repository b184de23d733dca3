//! Process-wide CPython initialisation.

use std::mem::MaybeUninit;
use std::sync::OnceLock;

use pyo3_ffi as ffi;

use crate::error::FfiError;

static INITIALIZED: OnceLock<Result<(), String>> = OnceLock::new();

/// `sys._stdlib_dir` of the main interpreter, read right after initialisation (before any plugin
/// code could change it): where exception capture loads its private copy of `traceback`.
static STDLIB_DIR: OnceLock<String> = OnceLock::new();

/// The standard library's folder, once CPython is initialised.
pub(crate) fn stdlib_dir() -> Option<&'static str> {
    STDLIB_DIR.get().map(String::as_str)
}

/// Initialises CPython once for the whole process; later calls return the first outcome.
///
/// The main interpreter is set up isolated (environment variables such as `PYTHONPATH` are ignored,
/// no `site`, so nothing from the host's site-packages; no signal handlers, so Ctrl-C stays the host's;
/// no bytecode written, so signed plugin trees stay byte-identical). It then imports `_datetime`
/// (see below) and releases its GIL, which no fidius code takes again.
///
/// Importing `_datetime` in the main interpreter before any sub-interpreter exists works around
/// cpython#136423: when two isolated sub-interpreters both imported it and the first-created one is
/// ended first, ending the second crashed the process.
///
/// If something else in the process already initialised CPython, this returns an error rather than
/// taking a GIL that another runtime manages.
pub fn ensure_initialized() -> Result<(), FfiError> {
    INITIALIZED
        .get_or_init(initialize_main_interpreter)
        .clone()
        .map_err(|message| FfiError::Initialization { message })
}

/// The version of the linked CPython, e.g. `"3.13.5"`.
///
/// Read from the `Py_Version` constant, not `Py_GetVersion()`: CPython 3.13 marks that one's static
/// buffer initialised before formatting it on first use, so a second thread asking at the same
/// moment (parallel plugin loads choosing their tier in a fresh process) got an empty string.
pub fn python_version() -> String {
    // SAFETY: `Py_Version` is an immutable constant exported by libpython (3.11+); reading it needs
    // no GIL and no initialisation.
    let hex = unsafe { ffi::Py_Version };
    format!(
        "{}.{}.{}",
        (hex >> 24) & 0xff,
        (hex >> 16) & 0xff,
        (hex >> 8) & 0xff
    )
}

/// The executable of the CPython whose libpython is linked in (known at build time), for
/// `sys.executable` and `sys._base_executable` in every interpreter of the process. Without it
/// CPython guesses from the host program and `PATH`: usually another Python, so
/// `subprocess.run([sys.executable, ...])` or a `multiprocessing` spawn pool ran the wrong one.
const EMBEDDED_PYTHON: Option<&str> = option_env!("FIDIUS_EMBEDDED_PYTHON");

/// Sets `config.executable` to [`EMBEDDED_PYTHON`] when that file still exists; else CPython's guess
/// stays.
fn set_executable(config: &mut ffi::PyConfig) {
    let Some(executable) = EMBEDDED_PYTHON.filter(|path| std::path::Path::new(path).is_file())
    else {
        return;
    };
    let Ok(executable) = std::ffi::CString::new(executable) else {
        return;
    };
    // SAFETY: `config` is an initialised PyConfig and `executable` a NUL-terminated string that
    // PyConfig_SetBytesString decodes and copies into a field the config owns. A failure (out of
    // memory, undecodable bytes) leaves the field unset, which is CPython's default.
    let _ = unsafe {
        ffi::PyConfig_SetBytesString(config, &mut config.executable, executable.as_ptr())
    };
}

fn initialize_main_interpreter() -> Result<(), String> {
    // SAFETY: Py_IsInitialized may be called at any time, without the GIL.
    if unsafe { ffi::Py_IsInitialized() } != 0 {
        return Err("CPython was already initialised by other code in this process".to_owned());
    }
    crate::containment::install_audit_hook()?;
    let mut config = MaybeUninit::<ffi::PyConfig>::uninit();
    // SAFETY: PyConfig_InitIsolatedConfig fully initialises the struct it is given; it needs no GIL.
    let mut config = unsafe {
        ffi::PyConfig_InitIsolatedConfig(config.as_mut_ptr());
        config.assume_init()
    };
    config.site_import = 0;
    config.install_signal_handlers = 0;
    config.write_bytecode = 0;
    set_executable(&mut config);
    // SAFETY: `config` was initialised above; Py_InitializeFromConfig copies what it needs, and
    // PyConfig_Clear then frees the strings the config owns. OnceLock runs this at most once.
    let status = unsafe {
        let status = ffi::Py_InitializeFromConfig(&config);
        ffi::PyConfig_Clear(&mut config);
        status
    };
    // SAFETY: PyStatus_Exception only inspects the status value.
    if unsafe { ffi::PyStatus_Exception(status) } != 0 {
        return Err(crate::object::status_message(&status));
    }
    // SAFETY: initialisation succeeded, so this thread holds the main interpreter's GIL;
    // PySys_GetObject returns a borrowed reference or NULL (without an exception), and a str's UTF-8
    // buffer lives as long as the str, which sys keeps.
    unsafe {
        let dir = ffi::PySys_GetObject(c"_stdlib_dir".as_ptr());
        if !dir.is_null() && ffi::PyUnicode_Check(dir) != 0 {
            let text = ffi::PyUnicode_AsUTF8(dir);
            if text.is_null() {
                ffi::PyErr_Clear();
            } else {
                let _ = STDLIB_DIR.set(
                    std::ffi::CStr::from_ptr(text)
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    // SAFETY: as above.
    let datetime = unsafe { ffi::PyImport_ImportModule(c"_datetime".as_ptr()) };
    let datetime_ok = !datetime.is_null();
    // SAFETY: still attached to the main interpreter; Py_XDECREF accepts NULL, and PyErr_Clear drops
    // the import error if there was one. PyEval_SaveThread then releases the main GIL for good.
    unsafe {
        ffi::Py_XDECREF(datetime);
        ffi::PyErr_Clear();
        ffi::PyEval_SaveThread();
    }
    if !datetime_ok {
        return Err("the standard library could not be imported (_datetime is missing); is libpython's prefix complete?".to_owned());
    }
    Ok(())
}
