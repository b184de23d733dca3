//! What code in a fidius sub-interpreter may not do to the process it shares with the host and with
//! the other plugins' interpreters.
//!
//! Two mechanisms, both out of reach of Python code:
//!
//! * A process-wide audit hook (`PySys_AddAuditHook`, C level, cannot be removed) refuses, in every
//!   interpreter but the main one: importing the interpreter-management and CPython test-only
//!   extension modules (the `import` event is raised for every import and also by
//!   `_imp.create_dynamic`, whatever finder or loader asked), signals aimed at this process
//!   (`os.kill`, `os.killpg`, `signal.pthread_kill`), changing the working directory
//!   (`os.chdir`, `os.fchdir`), and `sys._current_frames()`/`sys._current_exceptions()`, which
//!   return other interpreters' frames. The main interpreter is never refused anything: the host's own, or a
//!   process-tier worker's, where the plugin owns the whole process.
//! * Calls that raise no audit event are replaced in each new sub-interpreter, before any other code
//!   runs there, by C functions: the replaced originals are freed, so no Python object refers to
//!   them any more (not even through `gc`), and `_imp.create_builtin` refuses to build fresh copies
//!   of the modules they came from. `sys.setswitchinterval` keeps working below a bound.

use std::cell::UnsafeCell;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::OnceLock;

use pyo3_ffi as ffi;

use crate::error::FfiError;
use crate::interpreter::Interp;
use crate::object::PyObj;

/// Extension modules that reach other interpreters (`_interpreters` and its channels and queues,
/// under their 3.12 and 3.13 names) or CPython internals and deliberate crashes (the test-only C API
/// modules; the other test extensions, such as `_testmultiphase`, only exercise module loading and
/// stay importable): matched against the last component of the imported name, which is what
/// selects an extension's `PyInit_` function.
const REFUSED_EXTENSIONS: &[&str] = &[
    "_interpreters",
    "_interpchannels",
    "_interpqueues",
    "_xxsubinterpreters",
    "_xxinterpchannels",
    "_xxinterpqueues",
    "_testcapi",
    "_testinternalcapi",
    "_testlimitedcapi",
    "_testexternalinspection",
];

/// Pure-Python front ends of the modules above, refused by their full name for a clearer message.
const REFUSED_MODULES: &[&str] = &[
    "interpreters",
    "concurrent.interpreters",
    "test.support.interpreters",
];

/// The largest switch interval a sub-interpreter may set, in seconds. An interrupt (a call's
/// timeout) waits up to one interval for the interpreter's GIL, so a larger one would delay it.
pub const MAX_SWITCH_INTERVAL: f64 = 0.1;

/// Modules whose functions are replaced below: `_imp.create_builtin` refuses to make fresh copies.
///
/// (`faulthandler`, whose private functions crash on purpose, refuses to load in sub-interpreters.)
const PATCHED_MODULES: &[&CStr] = &[c"_imp", c"_signal", c"posix"];

/// `(module, function, why)` of every call refused outright in a sub-interpreter.
const REFUSED_CALLS: &[(&CStr, &CStr, &str)] = &[
    (
        c"_signal",
        c"alarm",
        "SIGALRM goes to the whole process, whose default action ends the host",
    ),
    (
        c"_signal",
        c"setitimer",
        "the timer's signal goes to the whole process, whose default action ends the host",
    ),
    (
        c"_signal",
        c"raise_signal",
        "the signal goes to the host process",
    ),
    (
        c"_signal",
        c"pidfd_send_signal",
        "the signal may go to the host process",
    ),
    (c"posix", c"abort", "it ends the host process"),
    (c"posix", c"_exit", "it ends the host process"),
];

/// A method definition CPython may point at for as long as the process lives.
pub(crate) struct MethodDef(UnsafeCell<ffi::PyMethodDef>);

// SAFETY: the definitions below are written only by their initialisers; CPython reads them, never
// writes, and reading from several threads at once is fine.
unsafe impl Sync for MethodDef {}

impl MethodDef {
    pub(crate) const fn new(
        name: &'static CStr,
        meth: ffi::PyMethodDefPointer,
        flags: c_int,
        doc: &'static CStr,
    ) -> Self {
        Self(UnsafeCell::new(ffi::PyMethodDef {
            ml_name: name.as_ptr(),
            ml_meth: meth,
            ml_flags: flags,
            ml_doc: doc.as_ptr(),
        }))
    }

    fn as_ptr(&self) -> *mut ffi::PyMethodDef {
        self.0.get()
    }
}

static REFUSER: MethodDef = MethodDef::new(
    c"refused",
    ffi::PyMethodDefPointer {
        PyCFunctionWithKeywords: refuse,
    },
    ffi::METH_VARARGS | ffi::METH_KEYWORDS,
    c"Refused in a fidius plugin sub-interpreter: raises PermissionError saying why.",
);

static SET_SWITCH_INTERVAL: MethodDef = MethodDef::new(
    c"setswitchinterval",
    ffi::PyMethodDefPointer {
        PyCFunction: set_switch_interval,
    },
    ffi::METH_O,
    c"sys.setswitchinterval, bounded in a fidius plugin sub-interpreter (see MAX_SWITCH_INTERVAL).",
);

static CREATE_BUILTIN: MethodDef = MethodDef::new(
    c"create_builtin",
    ffi::PyMethodDefPointer {
        PyCFunction: create_builtin,
    },
    ffi::METH_O,
    c"_imp.create_builtin, refusing fresh copies of the modules fidius restricts.",
);

/// The C functions behind the original `sys.setswitchinterval` and `_imp.create_builtin`: the same
/// in every interpreter of the process (they are libpython's).
struct Originals {
    set_switch_interval: ffi::PyCFunction,
    create_builtin: ffi::PyCFunction,
}

static ORIGINALS: OnceLock<Originals> = OnceLock::new();

/// One of [`ORIGINALS`]; they are set before any wrapper is installed, but a wrapper must not
/// unwind into CPython, so their absence is a `SystemError` (set here), not a panic.
fn original(pick: impl FnOnce(&Originals) -> ffi::PyCFunction) -> Option<ffi::PyCFunction> {
    let found = ORIGINALS.get().map(pick);
    if found.is_none() {
        // SAFETY: reading a static exception type pointer.
        set_error(
            unsafe { ffi::PyExc_SystemError },
            "fidius: the wrapped builtin is not recorded",
        );
    }
    found
}

extern "C" {
    fn PySys_AddAuditHook(
        hook: unsafe extern "C" fn(*const c_char, *mut ffi::PyObject, *mut c_void) -> c_int,
        user_data: *mut c_void,
    ) -> c_int;
}

/// Installs the process-wide audit hook; called once, before CPython is initialised.
pub(crate) fn install_audit_hook() -> Result<(), String> {
    // SAFETY: PySys_AddAuditHook may be called before Py_Initialize; the hook is a plain function
    // and needs no user data.
    if unsafe { PySys_AddAuditHook(audit_hook, std::ptr::null_mut()) } != 0 {
        return Err("CPython refused fidius's audit hook".to_owned());
    }
    Ok(())
}

/// What the audit hook refuses: the exception type and its message.
type Refusal = (*mut ffi::PyObject, String);

unsafe extern "C" fn audit_hook(
    event: *const c_char,
    args: *mut ffi::PyObject,
    _user_data: *mut c_void,
) -> c_int {
    // SAFETY: CPython passes a NUL-terminated event name.
    let event = unsafe { CStr::from_ptr(event) }.to_bytes();
    let check: fn(*mut ffi::PyObject) -> Option<Refusal> = match event {
        b"import" => refused_import,
        b"os.kill" => refused_kill,
        b"os.killpg" => refused_killpg,
        b"signal.pthread_kill" => refused_pthread_kill,
        b"os.chdir" => refused_chdir,
        b"sys._current_frames" => |_| refused_other_threads("sys._current_frames"),
        b"sys._current_exceptions" => |_| refused_other_threads("sys._current_exceptions"),
        _ => return 0,
    };
    // SAFETY: audit hooks run with a thread state current and its interpreter's GIL held.
    if unsafe { ffi::PyInterpreterState_Get() == ffi::PyInterpreterState_Main() } {
        return 0;
    }
    match check(args) {
        None => 0,
        Some((exception_type, message)) => {
            set_error(exception_type, &message);
            -1
        }
    }
}

pub(crate) fn set_error(exception_type: *mut ffi::PyObject, message: &str) {
    let message = CString::new(message.replace('\0', "?")).unwrap_or_default();
    // SAFETY: called with the GIL held (from the hook or a C function CPython calls); the type is a
    // static builtin exception and the message NUL-terminated.
    unsafe { ffi::PyErr_SetString(exception_type, message.as_ptr()) };
}

/// Item `index` of the audit arguments as text, if it is a `str`.
fn text_argument(args: *mut ffi::PyObject, index: ffi::Py_ssize_t) -> Option<String> {
    // SAFETY: with the GIL held, `args` is the event's argument tuple; PyTuple_GetItem returns a
    // borrowed item or NULL (with an IndexError, cleared here).
    let item = unsafe { ffi::PyTuple_GetItem(args, index) };
    if item.is_null() {
        // SAFETY: GIL held.
        unsafe { ffi::PyErr_Clear() };
        return None;
    }
    object_text(item)
}

/// The text of `object` if it is a `str`, read without running Python code.
fn object_text(object: *mut ffi::PyObject) -> Option<String> {
    // SAFETY: called with the GIL held and a live object. The UTF-8 buffer lives as long as the str,
    // which outlives this function; an encoding error is cleared.
    unsafe {
        if ffi::PyUnicode_Check(object) == 0 {
            return None;
        }
        let mut size: ffi::Py_ssize_t = 0;
        let data = ffi::PyUnicode_AsUTF8AndSize(object, &mut size);
        if data.is_null() {
            ffi::PyErr_Clear();
            return None;
        }
        let bytes = std::slice::from_raw_parts(data.cast::<u8>(), size as usize);
        Some(String::from_utf8_lossy(bytes).into_owned())
    }
}

/// Item `index` of the audit arguments as an integer, if it is one that fits.
fn int_argument(args: *mut ffi::PyObject, index: ffi::Py_ssize_t) -> Option<i64> {
    // SAFETY: as in `text_argument`; PyLong_AsLongLong returns -1 with an exception set on failure.
    unsafe {
        let item = ffi::PyTuple_GetItem(args, index);
        if item.is_null() || ffi::PyLong_Check(item) == 0 {
            ffi::PyErr_Clear();
            return None;
        }
        let value = ffi::PyLong_AsLongLong(item);
        if value == -1 && !ffi::PyErr_Occurred().is_null() {
            ffi::PyErr_Clear();
            return None;
        }
        Some(value)
    }
}

fn refused_import(args: *mut ffi::PyObject) -> Option<Refusal> {
    let name = text_argument(args, 0)?;
    let last = name.rsplit('.').next().unwrap_or(&name);
    // `_imp.create_dynamic` also names the file, whose stem is the extension's own name.
    let file_stem = text_argument(args, 1).and_then(|path| {
        let file = path.rsplit('/').next().unwrap_or(&path).to_owned();
        file.split('.').next().map(str::to_owned)
    });
    let refused = REFUSED_MODULES.contains(&name.as_str())
        || REFUSED_EXTENSIONS.contains(&last)
        || file_stem.is_some_and(|stem| REFUSED_EXTENSIONS.contains(&stem.as_str()));
    refused.then(|| {
        (
            // SAFETY: reading a static exception type pointer.
            unsafe { ffi::PyExc_ImportError },
            format!(
                "fidius: importing {name} is refused in a plugin sub-interpreter: it gives access \
                 to other interpreters or to CPython internals, which would let one plugin reach \
                 or crash another and the host"
            ),
        )
    })
}

fn signal_refusal(call: String) -> Refusal {
    (
        // SAFETY: reading a static exception type pointer.
        unsafe { ffi::PyExc_PermissionError },
        format!(
            "fidius: {call} is refused in a plugin sub-interpreter: the signal would go to the host \
             process, which every plugin shares (use the process tier for plugins that signal \
             their own process)"
        ),
    )
}

/// Whether `pid` (as `kill(2)` reads it) names this process, its process group or every process.
fn kill_reaches_this_process(pid: i64) -> bool {
    let own_pid = i64::from(std::process::id());
    let own_group = i64::from(rustix::process::getpgrp().as_raw_nonzero().get());
    match pid {
        0 | -1 => true,
        pid if pid < -1 => -pid == own_group,
        pid => pid == own_pid || is_own_thread(pid),
    }
}

/// Whether `id` is one of this process's threads (`kill(2)` accepts thread ids and then signals the
/// whole process).
fn is_own_thread(id: i64) -> bool {
    cfg!(target_os = "linux") && std::path::Path::new(&format!("/proc/self/task/{id}")).exists()
}

fn refused_kill(args: *mut ffi::PyObject) -> Option<Refusal> {
    let pid = int_argument(args, 0)?;
    let signal = int_argument(args, 1)?;
    (signal != 0 && kill_reaches_this_process(pid))
        .then(|| signal_refusal(format!("os.kill({pid}, {signal})")))
}

fn refused_killpg(args: *mut ffi::PyObject) -> Option<Refusal> {
    let group = int_argument(args, 0)?;
    let signal = int_argument(args, 1)?;
    let own_group = i64::from(rustix::process::getpgrp().as_raw_nonzero().get());
    (signal != 0 && (group == 0 || group == own_group))
        .then(|| signal_refusal(format!("os.killpg({group}, {signal})")))
}

fn refused_pthread_kill(args: *mut ffi::PyObject) -> Option<Refusal> {
    // Every thread of this process is one of the host's: a signal's default action ends them all.
    let thread = int_argument(args, 0).unwrap_or_default();
    let signal = int_argument(args, 1)?;
    (signal != 0).then(|| signal_refusal(format!("signal.pthread_kill({thread}, {signal})")))
}

fn refused_chdir(args: *mut ffi::PyObject) -> Option<Refusal> {
    let target = text_argument(args, 0)
        .map(|path| format!("{path:?}"))
        .or_else(|| int_argument(args, 0).map(|fd| fd.to_string()))
        .unwrap_or_default();
    Some((
        // SAFETY: reading a static exception type pointer.
        unsafe { ffi::PyExc_PermissionError },
        format!(
            "fidius: os.chdir({target}) is refused in a plugin sub-interpreter: the working \
             directory belongs to the whole host process (use absolute paths, e.g. from __file__)"
        ),
    ))
}

/// `sys._current_frames()` and `sys._current_exceptions()` walk the threads of every interpreter in
/// the process and hand their frames (other plugins' objects) to the caller: reading them crashes.
fn refused_other_threads(call: &str) -> Option<Refusal> {
    Some((
        // SAFETY: reading a static exception type pointer.
        unsafe { ffi::PyExc_PermissionError },
        format!(
            "fidius: {call}() is refused in a plugin sub-interpreter: it returns the frames of \
             every interpreter's threads, other plugins' objects included, which this interpreter \
             cannot safely touch"
        ),
    ))
}

/// `self` is the message (a `str`) the replaced function raises as `PermissionError`.
unsafe extern "C" fn refuse(
    message: *mut ffi::PyObject,
    _args: *mut ffi::PyObject,
    _kwargs: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: CPython calls this with the GIL held; `message` is the str this function was bound to.
    unsafe { ffi::PyErr_SetObject(ffi::PyExc_PermissionError, message) };
    std::ptr::null_mut()
}

/// `sys.setswitchinterval(interval)`, refusing values above [`MAX_SWITCH_INTERVAL`] (and NaN).
unsafe extern "C" fn set_switch_interval(
    sys: *mut ffi::PyObject,
    interval: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: CPython calls this with the GIL held and a live argument.
    let seconds = unsafe { ffi::PyFloat_AsDouble(interval) };
    // SAFETY: as above.
    if seconds == -1.0 && !unsafe { ffi::PyErr_Occurred() }.is_null() {
        return std::ptr::null_mut();
    }
    if seconds.is_nan() || seconds > MAX_SWITCH_INTERVAL {
        // SAFETY: reading a static exception type pointer.
        set_error(
            unsafe { ffi::PyExc_ValueError },
            &format!(
                "fidius: sys.setswitchinterval({seconds}) is refused in a plugin sub-interpreter: \
                 intervals above {MAX_SWITCH_INTERVAL} s would delay the host's timeouts"
            ),
        );
        return std::ptr::null_mut();
    }
    let Some(original) = original(|originals| originals.set_switch_interval) else {
        return std::ptr::null_mut();
    };
    // SAFETY: `original` is libpython's METH_O implementation of sys.setswitchinterval, called as
    // CPython would: with the sys module as self, one argument, and the GIL held.
    unsafe { original(sys, interval) }
}

/// `_imp.create_builtin(spec)`, refusing fresh copies of [`PATCHED_MODULES`].
unsafe extern "C" fn create_builtin(
    imp: *mut ffi::PyObject,
    spec: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: CPython calls this with the GIL held; the attribute lookup returns a new reference or
    // NULL with an exception set (which the original would raise too: pass it on).
    let name = unsafe { ffi::PyObject_GetAttrString(spec, c"name".as_ptr()) };
    if name.is_null() {
        return std::ptr::null_mut();
    }
    let refused = object_text(name).filter(|text| {
        PATCHED_MODULES
            .iter()
            .any(|module| module.to_bytes() == text.as_bytes())
    });
    // SAFETY: `name` is the new reference taken above, no longer used.
    unsafe { ffi::Py_DECREF(name) };
    if let Some(module) = refused {
        set_error(
            // SAFETY: reading a static exception type pointer.
            unsafe { ffi::PyExc_ImportError },
            &format!(
                "fidius: a second copy of the built-in module {module} cannot be created in a \
                 plugin sub-interpreter (fidius restricts some of its functions there)"
            ),
        );
        return std::ptr::null_mut();
    }
    let Some(original) = original(|originals| originals.create_builtin) else {
        return std::ptr::null_mut();
    };
    // SAFETY: libpython's METH_O implementation of _imp.create_builtin, called as CPython would.
    unsafe { original(imp, spec) }
}

/// Applies the replacements to the attached, newly created sub-interpreter (before any other code
/// runs in it).
pub(crate) fn contain(py: Interp<'_>) -> Result<(), FfiError> {
    let modules: Vec<(&CStr, PyObj<'_>)> = PATCHED_MODULES
        .iter()
        .map(|name| Ok((*name, py.import(&name.to_string_lossy())?)))
        .collect::<Result<_, FfiError>>()?;
    let module = |name: &CStr| {
        modules
            .iter()
            .find(|(module, _)| *module == name)
            .map(|(_, module)| module)
            .expect("every patched module is imported above")
    };
    let sys = py.import("sys")?;
    let set_switch_interval = sys.getattr("setswitchinterval")?;
    let create_builtin = module(c"_imp").getattr("create_builtin")?;
    let originals = Originals {
        set_switch_interval: c_function(&set_switch_interval)?,
        create_builtin: c_function(&create_builtin)?,
    };
    let _ = ORIGINALS.set(originals);
    // Redirected in place rather than replaced: CPython keeps a private copy of the sys module's
    // dict per interpreter, which would keep the original reachable (through `gc`).
    redirect(&set_switch_interval, &SET_SWITCH_INTERVAL);
    redirect(&create_builtin, &CREATE_BUILTIN);
    for (module_name, function, why) in REFUSED_CALLS {
        let module = module(module_name);
        if module.getattr(&function.to_string_lossy()).is_err() {
            continue; // not on this platform (pidfd_send_signal)
        }
        let public = if module_name.to_bytes() == b"_signal" {
            "signal"
        } else {
            "os"
        };
        let message = py.str(&format!(
            "fidius: {public}.{}() is refused in a plugin sub-interpreter: {why}",
            function.to_string_lossy()
        ))?;
        set_attribute(module, function, &bind(py, &REFUSER, &message)?)?;
    }
    Ok(())
}

/// The C function behind a builtin `METH_O` function object.
fn c_function(function: &PyObj<'_>) -> Result<ffi::PyCFunction, FfiError> {
    let unexpected = || {
        FfiError::Python(crate::PythonException {
            type_name: "fidius.ContainmentError".to_owned(),
            message: format!(
                "{} is not the one-argument builtin fidius wraps",
                function.type_name()
            ),
            traceback: None,
        })
    };
    // SAFETY: attached; both calls only read a builtin function object (checked first).
    unsafe {
        if ffi::PyCFunction_CheckExact(function.as_ptr()) == 0
            || ffi::PyCFunction_GetFlags(function.as_ptr()) != ffi::METH_O
        {
            return Err(unexpected());
        }
        ffi::PyCFunction_GetFunction(function.as_ptr()).ok_or_else(unexpected)
    }
}

/// Makes the builtin `function` (checked by [`c_function`]) run `definition` from now on, for every
/// reference to it. Both are `METH_O`, so the function's vectorcall entry (which reads the
/// definition on each call) stays right; its `self` stays the module.
fn redirect(function: &PyObj<'_>, definition: &'static MethodDef) {
    // SAFETY: attached; `function` is a PyCFunctionObject (checked by c_function, which the caller
    // ran first) of this interpreter, and `definition` is static, so the pointer stays valid for as
    // long as the function object lives.
    unsafe { (*function.as_ptr().cast::<ffi::PyCFunctionObject>()).m_ml = definition.as_ptr() };
}

/// A builtin function object for `definition`, bound to `slf`.
pub(crate) fn bind<'i>(
    py: Interp<'i>,
    definition: &MethodDef,
    slf: &PyObj<'i>,
) -> Result<PyObj<'i>, FfiError> {
    // SAFETY: attached; the definition is static, `slf` live. Returns a new reference or NULL.
    let function =
        unsafe { ffi::PyCFunction_NewEx(definition.as_ptr(), slf.as_ptr(), std::ptr::null_mut()) };
    PyObj::from_owned_or_err(py, function)
}

fn set_attribute(module: &PyObj<'_>, name: &CStr, value: &PyObj<'_>) -> Result<(), FfiError> {
    // SAFETY: attached; all three are live and the name NUL-terminated.
    if unsafe { ffi::PyObject_SetAttrString(module.as_ptr(), name.as_ptr(), value.as_ptr()) } != 0 {
        return Err(crate::exception::fetch_exception(module.interp())
            .describe()
            .into());
    }
    Ok(())
}
