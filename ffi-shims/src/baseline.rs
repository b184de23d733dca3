//! The original single-interpreter design, kept only as a baseline for `ci/bench`.
//!
//! Every host thread attaches to the process's main interpreter and takes turns on its one GIL, the
//! way the original fidius tool (and PyO3's `Python::with_gil`) runs all plugins. fidius itself never
//! runs plugin code here.

use std::cell::Cell;
use std::ptr::{self, NonNull};

use pyo3_ffi as ffi;

use crate::error::FfiError;
use crate::interpreter::{Attachment, Interp};
use crate::object::PyObj;
use crate::runtime::ensure_initialized;

thread_local! {
    /// This thread's thread state for the main interpreter, created on first use and kept, so each
    /// attach costs a GIL hand-off and nothing more (as a long-lived host thread would see).
    static MAIN_TSTATE: Cell<*mut ffi::PyThreadState> = const { Cell::new(ptr::null_mut()) };
}

/// The main interpreter, shared by every thread through one GIL.
pub struct MainInterpreter;

/// A main-interpreter object kept for the life of the process (never released), usable from any
/// thread while attached to the main interpreter.
pub struct MainHandle {
    ptr: NonNull<ffi::PyObject>,
}

// SAFETY: the object belongs to the main interpreter, which lives as long as the process, and its
// reference count is only touched through `bind`, which requires an attachment to that interpreter
// (holding its GIL), so no two threads touch it at once.
unsafe impl Send for MainHandle {}
// SAFETY: as above; `&MainHandle` offers nothing but `bind`.
unsafe impl Sync for MainHandle {}

impl MainInterpreter {
    /// Attaches the calling thread to the main interpreter (waiting for its GIL), runs `f`, detaches.
    pub fn with<R>(f: impl for<'i> FnOnce(Interp<'i>) -> R) -> Result<R, FfiError> {
        ensure_initialized()?;
        let mut tstate = MAIN_TSTATE.get();
        if tstate.is_null() {
            // SAFETY: CPython is initialised; PyThreadState_New needs no GIL and returns a thread state
            // for the main interpreter that this thread alone will use, kept for the thread's life.
            tstate = unsafe { ffi::PyThreadState_New(ffi::PyInterpreterState_Main()) };
            MAIN_TSTATE.set(tstate);
        }
        // SAFETY: `tstate` belongs to this thread and is never freed.
        let _attached = unsafe { Attachment::attach(tstate)? };
        // SAFETY: attached to the main interpreter; PyInterpreterState_Main only reads a global.
        let state = unsafe { ffi::PyInterpreterState_Main() };
        Ok(f(Interp::new(state)))
    }

    /// Keeps `object` (which must come from the main interpreter) alive forever.
    ///
    /// # Panics
    /// If `object` belongs to another interpreter.
    pub fn persist(object: PyObj<'_>) -> MainHandle {
        // SAFETY: PyInterpreterState_Main only reads a global.
        let main = unsafe { ffi::PyInterpreterState_Main() };
        assert!(
            object.interp().state() == main,
            "MainInterpreter::persist: object belongs to a sub-interpreter"
        );
        MainHandle {
            ptr: NonNull::new(object.into_ptr()).expect("PyObj is never null"),
        }
    }
}

impl MainHandle {
    /// A new reference to the object for the current attachment.
    ///
    /// # Panics
    /// If `interp` is not attached to the main interpreter.
    pub fn bind<'i>(&self, interp: Interp<'i>) -> PyObj<'i> {
        // SAFETY: PyInterpreterState_Main only reads a global.
        let main = unsafe { ffi::PyInterpreterState_Main() };
        assert!(
            interp.state() == main,
            "MainHandle bound to a sub-interpreter"
        );
        // SAFETY: attached to the main interpreter, which owns the object; we hold a strong reference.
        unsafe { ffi::Py_INCREF(self.ptr.as_ptr()) };
        PyObj::from_non_null(interp, self.ptr)
    }
}
