//! Owned Python object handles and the single place where C return conventions become Rust results.

use std::ffi::{CStr, CString};
use std::ptr::NonNull;

use pyo3_ffi as ffi;

use crate::error::FfiError;
use crate::exception::{fetch_exception, Raised};
use crate::interpreter::Interp;

/// A strong reference to a Python object, valid while its interpreter stays attached.
///
/// The lifetime ties it to the [`Interp`] token, so it can neither outlive the attachment nor move to
/// another thread or interpreter. Dropping it releases the reference.
///
/// ```compile_fail
/// // An object cannot leave the `with` it was made in (its GIL is released after it).
/// use fidius_ffi::{InterpreterOptions, SubInterpreter};
/// let interpreter = SubInterpreter::new(InterpreterOptions::default()).unwrap();
/// let escaped = interpreter.with(|py| py.none()).unwrap();
/// ```
///
/// ```compile_fail
/// // Nor can it be smuggled out through a captured variable.
/// use fidius_ffi::{InterpreterOptions, PyObj, SubInterpreter};
/// let interpreter = SubInterpreter::new(InterpreterOptions::default()).unwrap();
/// let mut outside: Option<PyObj<'_>> = None;
/// interpreter.with(|py| outside = Some(py.none())).unwrap();
/// ```
///
/// ```compile_fail
/// // Nor cross to another thread.
/// fn assert_send<T: Send>() {}
/// assert_send::<fidius_ffi::PyObj<'static>>();
/// ```
pub struct PyObj<'i> {
    ptr: NonNull<ffi::PyObject>,
    interp: Interp<'i>,
}

impl<'i> PyObj<'i> {
    /// Takes ownership of a new reference returned by a C API call, or captures the exception that
    /// the NULL return signals.
    pub(crate) fn from_owned_or_err(
        interp: Interp<'i>,
        ptr: *mut ffi::PyObject,
    ) -> Result<Self, FfiError> {
        Self::from_owned_or_raised(interp, ptr).map_err(|raised| raised.describe().into())
    }

    /// Like [`from_owned_or_err`](Self::from_owned_or_err), but keeps the raised exception object so
    /// the caller can inspect it (its class, its attributes).
    pub(crate) fn from_owned_or_raised(
        interp: Interp<'i>,
        ptr: *mut ffi::PyObject,
    ) -> Result<Self, Raised<'i>> {
        match NonNull::new(ptr) {
            Some(ptr) => Ok(Self { ptr, interp }),
            None => Err(fetch_exception(interp)),
        }
    }

    /// Takes a new reference to a borrowed result of a C API call, or captures the exception that the
    /// NULL return signals.
    pub(crate) fn from_borrowed_or_err(
        interp: Interp<'i>,
        ptr: *mut ffi::PyObject,
    ) -> Result<Self, FfiError> {
        if !ptr.is_null() {
            // SAFETY: attached (the token exists) and `ptr` is a live borrowed reference.
            unsafe { ffi::Py_INCREF(ptr) };
        }
        Self::from_owned_or_err(interp, ptr)
    }

    /// Wraps a new reference that is known to be non-null.
    pub(crate) fn from_non_null(interp: Interp<'i>, ptr: NonNull<ffi::PyObject>) -> Self {
        Self { ptr, interp }
    }

    pub(crate) fn as_ptr(&self) -> *mut ffi::PyObject {
        self.ptr.as_ptr()
    }

    /// The attachment token this object lives under.
    pub fn interp(&self) -> Interp<'i> {
        self.interp
    }

    /// Gives up ownership without releasing the reference (for C calls that steal one).
    pub(crate) fn into_ptr(self) -> *mut ffi::PyObject {
        let ptr = self.ptr.as_ptr();
        std::mem::forget(self);
        ptr
    }

    /// `getattr(self, name)`.
    pub fn getattr(&self, name: &str) -> Result<PyObj<'i>, FfiError> {
        let name = c_string(name)?;
        // SAFETY: attached; `self` is live and `name` NUL-terminated. Returns a new reference or NULL.
        let value = unsafe { ffi::PyObject_GetAttrString(self.as_ptr(), name.as_ptr()) };
        PyObj::from_owned_or_err(self.interp, value)
    }

    /// `self(*args)`, keeping a raised exception as an object for inspection.
    pub fn call(&self, args: &[&PyObj<'i>]) -> Result<PyObj<'i>, Raised<'i>> {
        let pointers: Vec<*mut ffi::PyObject> = args.iter().map(|arg| arg.as_ptr()).collect();
        // SAFETY: attached; `self` and every argument are live objects of this interpreter, and the
        // argument array outlives the call. Returns a new reference or NULL with an exception set.
        let result = unsafe {
            ffi::PyObject_Vectorcall(
                self.as_ptr(),
                pointers.as_ptr(),
                pointers.len(),
                std::ptr::null_mut(),
            )
        };
        PyObj::from_owned_or_raised(self.interp, result)
    }

    /// `self(*sequence)` where `sequence` is a list or tuple.
    pub fn call_with_sequence(&self, sequence: &PyObj<'i>) -> Result<PyObj<'i>, Raised<'i>> {
        // SAFETY: attached; PySequence_Tuple returns a new reference or NULL with an exception set.
        let tuple = unsafe { ffi::PySequence_Tuple(sequence.as_ptr()) };
        let tuple = PyObj::from_owned_or_raised(self.interp, tuple)?;
        // SAFETY: attached; `self` is live and `tuple` is a tuple. Returns a new reference or NULL.
        let result =
            unsafe { ffi::PyObject_Call(self.as_ptr(), tuple.as_ptr(), std::ptr::null_mut()) };
        PyObj::from_owned_or_raised(self.interp, result)
    }

    /// `len(self)`.
    pub fn len(&self) -> Result<usize, FfiError> {
        // SAFETY: attached; `self` is live. Returns the length, or -1 with an exception set.
        let length = unsafe { ffi::PyObject_Size(self.as_ptr()) };
        usize::try_from(length).map_err(|_| fetch_exception(self.interp).describe().into())
    }

    /// `len(self) == 0`.
    pub fn is_empty(&self) -> Result<bool, FfiError> {
        self.len().map(|length| length == 0)
    }

    /// `isinstance(self, class)`; an error while checking counts as "no".
    pub fn is_instance(&self, class: &PyObj<'i>) -> bool {
        // SAFETY: attached; both objects are live.
        let answer = unsafe { ffi::PyObject_IsInstance(self.as_ptr(), class.as_ptr()) };
        if answer < 0 {
            // SAFETY: attached; drop the error the check raised.
            unsafe { ffi::PyErr_Clear() };
        }
        answer == 1
    }

    /// `self is None`.
    pub fn is_none(&self) -> bool {
        // SAFETY: Py_None returns the immortal None singleton; comparing pointers needs nothing more.
        self.as_ptr() == unsafe { ffi::Py_None() }
    }

    /// Name of the object's type, e.g. `int` or `mymodule.Thing`.
    pub fn type_name(&self) -> String {
        // SAFETY: attached; the type of a live object is a live type object. PyType_GetFullyQualifiedName
        // exists from 3.13; PyType_GetQualName from 3.11.
        let name = unsafe { ffi::PyType_GetQualName(ffi::Py_TYPE(self.as_ptr())) };
        match PyObj::from_owned_or_err(self.interp, name).and_then(|name| name.to_str_lossy()) {
            Ok(name) => name,
            Err(_) => {
                // SAFETY: attached; drop the error the lookup raised.
                unsafe { ffi::PyErr_Clear() };
                "<unknown type>".to_owned()
            }
        }
    }

    /// `str(self)` as UTF-8 (lone surrogates are replaced).
    pub fn to_str_lossy(&self) -> Result<String, FfiError> {
        // SAFETY: attached; `self` is a live object. PyObject_Str returns a new reference or NULL.
        let text = unsafe { ffi::PyObject_Str(self.as_ptr()) };
        let text = PyObj::from_owned_or_err(self.interp, text)?;
        unicode_to_string(self.interp, &text)
    }
}

impl Drop for PyObj<'_> {
    fn drop(&mut self) {
        // SAFETY: the lifetime guarantees the interpreter is still attached on this thread, and we own
        // one strong reference.
        unsafe { ffi::Py_DECREF(self.ptr.as_ptr()) };
    }
}

impl<'i> Interp<'i> {
    /// `import name` (a dotted name imports the submodule and returns it).
    pub fn import(self, name: &str) -> Result<PyObj<'i>, FfiError> {
        let name = c_string(name)?;
        // SAFETY: attached; `name` is NUL-terminated. Returns a new reference or NULL.
        let module = unsafe { ffi::PyImport_ImportModule(name.as_ptr()) };
        PyObj::from_owned_or_err(self, module)
    }

    /// A new `str` object.
    pub fn str(self, text: &str) -> Result<PyObj<'i>, FfiError> {
        // SAFETY: attached; the pointer and length describe valid UTF-8. Returns a new reference or NULL.
        let value = unsafe {
            ffi::PyUnicode_FromStringAndSize(text.as_ptr().cast(), text.len() as ffi::Py_ssize_t)
        };
        PyObj::from_owned_or_err(self, value)
    }

    /// The `None` singleton.
    pub fn none(self) -> PyObj<'i> {
        // SAFETY: attached; None is immortal, so taking a reference to it cannot fail.
        let none = unsafe { ffi::Py_None() };
        // SAFETY: as above; Py_INCREF on an immortal object is harmless and keeps the count honest.
        unsafe { ffi::Py_INCREF(none) };
        PyObj::from_non_null(self, NonNull::new(none).expect("None is never null"))
    }
}

pub(crate) fn c_string(text: &str) -> Result<CString, FfiError> {
    CString::new(text).map_err(|e| FfiError::NulByte {
        offset: e.nul_position(),
    })
}

/// Copies a `str` object's text out as UTF-8, replacing what cannot be encoded.
pub(crate) fn unicode_to_string(interp: Interp<'_>, text: &PyObj<'_>) -> Result<String, FfiError> {
    match unicode_as_str(text) {
        Some(text) => Ok(text.to_owned()),
        None => {
            // Lone surrogates cannot become UTF-8; re-encode with replacement instead of failing.
            // SAFETY: attached; clears the UnicodeEncodeError just raised. Both C strings are static.
            let bytes = unsafe {
                ffi::PyErr_Clear();
                ffi::PyUnicode_AsEncodedString(
                    text.as_ptr(),
                    c"utf-8".as_ptr(),
                    c"replace".as_ptr(),
                )
            };
            let bytes = PyObj::from_owned_or_err(interp, bytes)?;
            Ok(String::from_utf8_lossy(crate::bytes::bytes_as_slice(&bytes)).into_owned())
        }
    }
}

/// Borrows a `str` object's UTF-8 text, or returns `None` (with a Python error set) when it holds lone
/// surrogates. The caller must know `text` is a `str`.
pub(crate) fn unicode_as_str<'a>(text: &'a PyObj<'_>) -> Option<&'a str> {
    let mut size: ffi::Py_ssize_t = 0;
    // SAFETY: attached; `text` is a str. The UTF-8 buffer is cached inside the str object, so it lives
    // as long as `text`, which the returned borrow cannot outlive.
    let data = unsafe { ffi::PyUnicode_AsUTF8AndSize(text.as_ptr(), &mut size) };
    if data.is_null() {
        return None;
    }
    // SAFETY: PyUnicode_AsUTF8AndSize returned `size` bytes of valid UTF-8 at `data`.
    Some(unsafe {
        std::str::from_utf8_unchecked(std::slice::from_raw_parts(data.cast::<u8>(), size as usize))
    })
}

/// The message carried by a failed `PyStatus`.
pub(crate) fn status_message(status: &ffi::PyStatus) -> String {
    if status.err_msg.is_null() {
        return "unknown error".to_owned();
    }
    // SAFETY: a non-null err_msg points at a static NUL-terminated string inside libpython.
    unsafe { CStr::from_ptr(status.err_msg) }
        .to_string_lossy()
        .into_owned()
}
