//! Raised Python exceptions: kept as objects while attached, described as plain data to leave.
//!
//! Describing cannot recurse and needs no import to succeed. Everything it does can fail in turn
//! (plugin code may have deleted `builtins.__import__`, replaced `sys.modules['traceback']` or
//! shipped a `traceback.py` that raises), and every such failure is itself captured through
//! [`Raised::describe`]. A per-thread guard turns that second capture into a description built from
//! the type object alone, and the outer description then falls back to a traceback read from the
//! traceback objects through the C API, without running any Python code.

use std::cell::Cell;
use std::ffi::CStr;
use std::fmt::Write as _;
use std::ptr::NonNull;

use pyo3_ffi as ffi;

use crate::error::{FfiError, PythonException};
use crate::interpreter::Interp;
use crate::object::PyObj;

/// Frames the import-free fallback traceback shows (the most recent ones; a `RecursionError` has
/// about a thousand).
const FALLBACK_FRAMES: usize = 64;

thread_local! {
    /// Whether this thread is inside [`Raised::describe`] already.
    static DESCRIBING: Cell<bool> = const { Cell::new(false) };
}

/// Clears [`DESCRIBING`] when the outermost description ends, also on unwinding.
struct DescribingGuard;

impl Drop for DescribingGuard {
    fn drop(&mut self) {
        DESCRIBING.set(false);
    }
}

/// An exception raised in the attached interpreter, still a Python object so it can be inspected
/// (for example to recognise the SDK's `PluginError` and read its attributes).
pub struct Raised<'i> {
    exception: PyObj<'i>,
}

impl<'i> Raised<'i> {
    /// The exception object itself.
    pub fn object(&self) -> &PyObj<'i> {
        &self.exception
    }

    /// Type, message and traceback as plain data that may leave the interpreter.
    ///
    /// Never fails and never recurses: a part that cannot be produced is replaced (see the module
    /// documentation).
    pub fn describe(&self) -> PythonException {
        describe_exception(&self.exception)
    }
}

impl<'i> PyObj<'i> {
    /// Describes this object as a raised exception (type, `str()`, traceback), like
    /// [`Raised::describe`]; for exceptions that Python code caught and handed over.
    pub fn describe_exception(&self) -> PythonException {
        describe_exception(self)
    }
}

fn describe_exception(exception: &PyObj<'_>) -> PythonException {
    // Under a worker's memory limit, describing gets a little room the plugin never had.
    crate::memory_limit::with_reporting_grace(|| describe_without_recursion(exception))
}

fn describe_without_recursion(exception: &PyObj<'_>) -> PythonException {
    if DESCRIBING.replace(true) {
        // A failure while describing another exception: the outer description replaces the part
        // that failed, so this one only has to be cheap and run no Python code.
        return PythonException {
            type_name: static_type_name(exception),
            message: String::new(),
            traceback: None,
        };
    }
    let _guard = DescribingGuard;
    let interp = exception.interp();
    let type_name = qualified_type_name(exception).unwrap_or_else(|_| {
        clear_error();
        static_type_name(exception)
    });
    let message = exception.to_str_lossy().unwrap_or_else(|_| {
        clear_error();
        "<unprintable>".to_owned()
    });
    let traceback = format_traceback(interp, exception).unwrap_or_else(|_| {
        clear_error();
        fallback_traceback(exception, &type_name, &message)
    });
    PythonException {
        type_name,
        message,
        traceback: Some(traceback),
    }
}

fn clear_error() {
    // SAFETY: only called while attached (a `PyObj` exists); drops whatever a failed step raised.
    unsafe { ffi::PyErr_Clear() };
}

/// Takes the exception currently set in the attached interpreter.
///
/// When, against expectations, none is set, a `SystemError` saying so stands in for it.
pub(crate) fn fetch_exception(interp: Interp<'_>) -> Raised<'_> {
    // SAFETY: attached; returns a new reference to the raised exception, or NULL if none is set.
    let mut raised = unsafe { ffi::PyErr_GetRaisedException() };
    if raised.is_null() {
        // SAFETY: attached; the message is a static NUL-terminated string. Setting and taking the
        // error at once leaves the error indicator as we found it (clear).
        raised = unsafe {
            ffi::PyErr_SetString(
                ffi::PyExc_SystemError,
                c"a CPython call failed without setting an exception".as_ptr(),
            );
            ffi::PyErr_GetRaisedException()
        };
    }
    let raised = NonNull::new(raised).expect("an exception was just set");
    Raised {
        exception: PyObj::from_non_null(interp, raised),
    }
}

/// `module.QualName` of the object's type, without the module for builtins.
///
/// Reads the type itself, not `__class__`, which a class can turn into a property.
fn qualified_type_name(object: &PyObj<'_>) -> Result<String, FfiError> {
    let interp = object.interp();
    // SAFETY: attached; the type of a live object is a live type object. PyType_GetQualName returns a
    // new reference or NULL with an exception set.
    let (class, qualname) = unsafe {
        let class = ffi::Py_TYPE(object.as_ptr());
        (
            class.cast::<ffi::PyObject>(),
            ffi::PyType_GetQualName(class),
        )
    };
    let qualname = PyObj::from_owned_or_err(interp, qualname)?.to_str_lossy()?;
    let module = PyObj::from_borrowed_or_err(interp, class)?
        .getattr("__module__")?
        .to_str_lossy()?;
    Ok(if module == "builtins" {
        qualname
    } else {
        format!("{module}.{qualname}")
    })
}

/// The type's C-level name (`tp_name`): no Python code runs to read it.
fn static_type_name(object: &PyObj<'_>) -> String {
    // SAFETY: attached; a live object's type is live and `tp_name` is a NUL-terminated string the
    // type owns for its lifetime (which the object keeps going).
    unsafe {
        let class = ffi::Py_TYPE(object.as_ptr());
        let name = (*class).tp_name;
        if name.is_null() {
            return "<unknown type>".to_owned();
        }
        CStr::from_ptr(name).to_string_lossy().into_owned()
    }
}

/// Where each interpreter keeps its private `traceback.format_exception`, in the interpreter's
/// state dict (`PyInterpreterState_GetDict`), which Python code cannot reach.
const PRIVATE_FORMATTER: &CStr = c"fidius.traceback.format_exception";

/// Loads the standard library's `traceback.py` as a module of its own, registered nowhere, so a
/// plugin's `traceback.py` or a replaced `sys.modules['traceback']` does not change what the host
/// uses (its byte-code cache makes this about a millisecond once its imports are loaded).
const LOAD_PRIVATE_TRACEBACK: &CStr = c"def load(path):
    import importlib.util
    spec = importlib.util.spec_from_file_location('traceback', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.format_exception
";

/// This interpreter's private `traceback.format_exception`, loaded on first use.
fn private_format_exception(interp: Interp<'_>) -> Result<PyObj<'_>, FfiError> {
    let unavailable = |what: &str| {
        FfiError::Python(PythonException {
            type_name: "fidius.TracebackUnavailable".to_owned(),
            message: what.to_owned(),
            traceback: None,
        })
    };
    // SAFETY: attached; the state dict is a borrowed reference owned by the interpreter (NULL when
    // it could not be created, with no exception set).
    let state = unsafe { ffi::PyInterpreterState_GetDict(interp.state()) };
    if state.is_null() {
        return Err(unavailable("no interpreter state dict"));
    }
    // SAFETY: attached; `state` is a dict and the key NUL-terminated. Returns a borrowed reference or
    // NULL without an exception.
    let cached = unsafe { ffi::PyDict_GetItemString(state, PRIVATE_FORMATTER.as_ptr()) };
    if !cached.is_null() {
        return PyObj::from_borrowed_or_err(interp, cached);
    }
    let stdlib = crate::runtime::stdlib_dir().ok_or_else(|| unavailable("no stdlib folder"))?;
    // SAFETY: attached; PyDict_New returns a new reference or NULL with an exception set.
    let globals = PyObj::from_owned_or_err(interp, unsafe { ffi::PyDict_New() })?;
    // SAFETY: attached; `globals` is a live dict, the builtins a borrowed dict of this interpreter,
    // and the code NUL-terminated. PyRun_String returns a new reference or NULL with an exception.
    let ran = unsafe {
        ffi::PyDict_SetItemString(
            globals.as_ptr(),
            c"__builtins__".as_ptr(),
            ffi::PyEval_GetBuiltins(),
        );
        ffi::PyRun_String(
            LOAD_PRIVATE_TRACEBACK.as_ptr(),
            ffi::Py_file_input,
            globals.as_ptr(),
            globals.as_ptr(),
        )
    };
    PyObj::from_owned_or_err(interp, ran)?;
    // SAFETY: attached; `globals` is a live dict; a borrowed reference or NULL without an exception.
    let load = unsafe { ffi::PyDict_GetItemString(globals.as_ptr(), c"load".as_ptr()) };
    let load = PyObj::from_borrowed_or_err(interp, load)?;
    let path = interp.str(&format!("{stdlib}/traceback.py"))?;
    let format = load.call(&[&path]).map_err(|raised| raised.describe())?;
    // SAFETY: attached; both objects are live. A failure to cache only costs a reload next time.
    if unsafe { ffi::PyDict_SetItemString(state, PRIVATE_FORMATTER.as_ptr(), format.as_ptr()) } != 0
    {
        clear_error();
    }
    Ok(format)
}

/// `"".join(format_exception(exception))` with this interpreter's private `traceback` module.
fn format_traceback(interp: Interp<'_>, exception: &PyObj<'_>) -> Result<String, FfiError> {
    let format = private_format_exception(interp)?;
    let lines = format
        .call(&[exception])
        .map_err(|raised| raised.describe())?;
    let joined = interp
        .str("")?
        .getattr("join")?
        .call(&[&lines])
        .map_err(|raised| raised.describe())?;
    crate::object::unicode_to_string(interp, &joined)
}

/// A traceback in the `traceback` module's layout, read from the traceback objects through the
/// C API (file, line and function of each frame; no source lines, no chained exceptions).
fn fallback_traceback(exception: &PyObj<'_>, type_name: &str, message: &str) -> String {
    let frames = frames_without_python(exception);
    let mut text = String::from("Traceback (most recent call last):\n");
    let skipped = frames.len().saturating_sub(FALLBACK_FRAMES);
    if skipped > 0 {
        let _ = writeln!(text, "  [{skipped} older frames not shown]");
    }
    for (file, line, function) in &frames[skipped..] {
        let _ = writeln!(text, "  File \"{file}\", line {line}, in {function}");
    }
    if message.is_empty() {
        let _ = writeln!(text, "{type_name}");
    } else {
        let _ = writeln!(text, "{type_name}: {message}");
    }
    text.push_str("(fidius: the traceback module could not be used; source lines are not shown)\n");
    text
}

/// `(file, line, function)` of each frame of the exception's traceback, oldest first.
fn frames_without_python(exception: &PyObj<'_>) -> Vec<(String, i64, String)> {
    let interp = exception.interp();
    let mut frames = Vec::new();
    // SAFETY: attached; returns a new reference to the traceback, or NULL when there is none.
    let first = unsafe { ffi::PyException_GetTraceback(exception.as_ptr()) };
    let Ok(mut traceback) = PyObj::from_owned_or_err(interp, first) else {
        clear_error();
        return frames;
    };
    loop {
        // SAFETY: attached; PyTraceBack_Check only reads the object's type.
        if unsafe { ffi::PyTraceBack_Check(traceback.as_ptr()) } == 0 {
            break;
        }
        let tb = traceback.as_ptr().cast::<ffi::PyTracebackObject>();
        // SAFETY: `tb` is a live traceback object (checked above). Its frame is a live frame object
        // it owns; PyFrame_GetCode returns a new reference to the frame's code object. Reading the
        // field directly, unlike the `tb_frame` attribute, raises no audit event (no Python runs).
        let code = unsafe { ffi::PyFrame_GetCode((*tb).tb_frame) };
        let code = PyObj::from_owned_or_err(interp, code.cast());
        let line = traceback.getattr("tb_lineno").map_or(-1, |line| {
            // SAFETY: attached; `line` is a live object. PyLong_AsLongLong returns -1 with an exception
            // set when it is not an int; clearing when none is set does nothing.
            let line = unsafe { ffi::PyLong_AsLongLong(line.as_ptr()) };
            if line == -1 {
                clear_error();
            }
            line
        });
        let name = |code: &PyObj<'_>, attribute: &str| {
            code.getattr(attribute)
                .and_then(|value| value.to_str_lossy())
                .unwrap_or_else(|_| "?".to_owned())
        };
        match code {
            Ok(code) => frames.push((name(&code, "co_filename"), line, name(&code, "co_name"))),
            Err(_) => frames.push(("?".to_owned(), line, "?".to_owned())),
        }
        // SAFETY: `tb` is live; `tb_next` is NULL or a live traceback it owns, to which we take our
        // own reference before `traceback` (and possibly `tb`) goes.
        let next = unsafe { (*tb).tb_next };
        if next.is_null() {
            break;
        }
        // SAFETY: `next` is a live object (see above); Py_INCREF makes the reference ours.
        unsafe { ffi::Py_INCREF(next.cast()) };
        traceback = PyObj::from_non_null(
            interp,
            NonNull::new(next.cast()).expect("checked non-null above"),
        );
    }
    clear_error();
    frames
}
