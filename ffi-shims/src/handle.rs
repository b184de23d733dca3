//! Python objects kept alive across attachments (a plugin's method table, the SDK's error class).

use std::ptr::NonNull;

use pyo3_ffi as ffi;

use crate::error::FfiError;
use crate::interpreter::{Interp, SubInterpreter};
use crate::object::PyObj;

/// What a [`PyHandle`] needs from the interpreter that owns its object.
pub(crate) trait HandleOwner {
    fn state(&self) -> *mut ffi::PyInterpreterState;
    /// Whether the calling thread is attached to this interpreter right now.
    fn is_attached_here(&self) -> bool;
    /// Runs `f` attached to this interpreter.
    fn attached(&self, f: &mut dyn FnMut()) -> Result<(), FfiError>;
}

impl HandleOwner for SubInterpreter {
    fn state(&self) -> *mut ffi::PyInterpreterState {
        SubInterpreter::state(self)
    }

    fn is_attached_here(&self) -> bool {
        SubInterpreter::is_attached_here(self)
    }

    fn attached(&self, f: &mut dyn FnMut()) -> Result<(), FfiError> {
        self.with(|_| f())
    }
}

/// A strong reference that outlives one [`SubInterpreter::with`] call but not its interpreter.
///
/// It borrows the interpreter, so the compiler ends the handle first; it is `!Send` like its owner.
/// Use it from inside `with` through [`bind`](Self::bind).
///
/// ```compile_fail
/// // A handle stays on its interpreter's thread.
/// fn assert_send<T: Send>() {}
/// assert_send::<fidius_ffi::PyHandle<'static>>();
/// ```
///
/// ```compile_fail
/// // And cannot outlive its interpreter.
/// use fidius_ffi::{InterpreterOptions, SubInterpreter};
/// let handle = {
///     let interpreter = SubInterpreter::new(InterpreterOptions::default()).unwrap();
///     interpreter.with(|py| interpreter.persist(py.none())).unwrap()
/// };
/// ```
pub struct PyHandle<'s> {
    ptr: NonNull<ffi::PyObject>,
    owner: &'s dyn HandleOwner,
}

impl<'s> PyHandle<'s> {
    /// Keeps `object` alive beyond the current attachment to `owner`.
    ///
    /// # Panics
    /// If `object` belongs to another interpreter (a bug in the caller, not bad input).
    pub(crate) fn new(owner: &'s dyn HandleOwner, object: PyObj<'_>) -> Self {
        assert!(
            object.interp().state() == owner.state(),
            "PyHandle: object belongs to another interpreter"
        );
        let ptr = NonNull::new(object.into_ptr()).expect("PyObj is never null");
        PyHandle { ptr, owner }
    }
}

impl<'s> PyHandle<'s> {
    /// A new reference to the object, usable while `interp` stays attached.
    ///
    /// # Panics
    /// If `interp` attaches a different interpreter than the one this handle belongs to.
    pub fn bind<'i>(&self, interp: Interp<'i>) -> PyObj<'i> {
        assert!(
            interp.state() == self.owner.state(),
            "PyHandle bound to another interpreter"
        );
        // SAFETY: `interp` proves this thread is attached to the handle's interpreter, and the handle
        // holds a strong reference, so the object is alive.
        unsafe { ffi::Py_INCREF(self.ptr.as_ptr()) };
        PyObj::from_non_null(interp, self.ptr)
    }
}

impl Drop for PyHandle<'_> {
    fn drop(&mut self) {
        let ptr = self.ptr;
        let release = || {
            // SAFETY: attached to the owning interpreter (either already, or inside `with`); we own
            // one strong reference.
            unsafe { ffi::Py_DECREF(ptr.as_ptr()) }
        };
        if self.owner.is_attached_here() {
            release();
        } else if self.owner.attached(&mut || release()).is_err() {
            // Attached to another interpreter right now: the reference is leaked rather than released
            // without its GIL. The interpreter reclaims it when it ends.
        }
    }
}
