//! Raised Python exceptions: kept as objects while attached, described as plain data to leave.

use std::ptr::NonNull;

use pyo3_ffi as ffi;

use crate::error::{FfiError, PythonException};
use crate::interpreter::Interp;
use crate::object::PyObj;

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
    pub fn describe(&self) -> PythonException {
        crate::memory_limit::with_reporting_grace(|| self.describe_now())
    }

    fn describe_now(&self) -> PythonException {
        let interp = self.exception.interp();
        let or_placeholder = |part: Result<String, FfiError>| {
            part.unwrap_or_else(|_| {
                // SAFETY: attached; drop whatever describing the exception raised in turn.
                unsafe { ffi::PyErr_Clear() };
                "<unprintable>".to_owned()
            })
        };
        PythonException {
            type_name: or_placeholder(qualified_type_name(&self.exception)),
            message: or_placeholder(self.exception.to_str_lossy()),
            traceback: match format_traceback(interp, &self.exception) {
                Ok(traceback) => Some(traceback),
                Err(_) => {
                    // SAFETY: attached; drop whatever formatting the traceback raised.
                    unsafe { ffi::PyErr_Clear() };
                    None
                }
            },
        }
    }
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

/// `module.QualName` of the object's class, without the module for builtins.
fn qualified_type_name(object: &PyObj<'_>) -> Result<String, FfiError> {
    let class = object.getattr("__class__")?;
    let qualname = class.getattr("__qualname__")?.to_str_lossy()?;
    let module = class.getattr("__module__")?.to_str_lossy()?;
    Ok(if module == "builtins" {
        qualname
    } else {
        format!("{module}.{qualname}")
    })
}

/// `"".join(traceback.format_exception(exception))`.
fn format_traceback(interp: Interp<'_>, exception: &PyObj<'_>) -> Result<String, FfiError> {
    let format = interp.import("traceback")?.getattr("format_exception")?;
    let lines = format
        .call(&[exception])
        .map_err(|raised| FfiError::Python(raised.describe_without_traceback()))?;
    let joined = interp
        .str("")?
        .getattr("join")?
        .call(&[&lines])
        .map_err(|raised| FfiError::Python(raised.describe_without_traceback()))?;
    crate::object::unicode_to_string(interp, &joined)
}

impl Raised<'_> {
    /// Used while formatting a traceback fails, so a broken `traceback` module cannot recurse.
    fn describe_without_traceback(&self) -> PythonException {
        PythonException {
            type_name: qualified_type_name(&self.exception).unwrap_or_default(),
            message: self.exception.to_str_lossy().unwrap_or_default(),
            traceback: None,
        }
    }
}
