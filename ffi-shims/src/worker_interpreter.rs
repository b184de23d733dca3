//! The main interpreter of a process-tier worker, where plugins whose extensions refuse
//! sub-interpreters (numpy and most compiled packages today) run.

use std::marker::PhantomData;

use pyo3_ffi as ffi;

use crate::error::FfiError;
use crate::handle::HandleOwner;
use crate::interpreter::{ensure_detached, Attachment, Interp, Interpreter};
use crate::object::PyObj;
use crate::runtime::ensure_initialized;
use crate::PyHandle;

/// The process's main interpreter, claimed by the calling thread.
///
/// Only for worker processes, which exist to run one plugin instance: the host itself never runs
/// plugin code in its main interpreter. `!Send`: the thread state belongs to the claiming thread.
pub struct WorkerInterpreter {
    tstate: *mut ffi::PyThreadState,
    state: *mut ffi::PyInterpreterState,
    _not_send: PhantomData<*mut ()>,
}

impl WorkerInterpreter {
    /// Initialises CPython if needed (same isolated configuration as the host's) and gives the
    /// calling thread its own thread state in the main interpreter.
    pub fn claim() -> Result<Self, FfiError> {
        ensure_initialized()?;
        ensure_detached()?;
        // SAFETY: CPython is initialised; PyInterpreterState_Main only reads a global, and
        // PyThreadState_New needs no GIL. The thread state is used by this thread only (`!Send`)
        // and deleted in `drop`.
        let (state, tstate) = unsafe {
            let state = ffi::PyInterpreterState_Main();
            (state, ffi::PyThreadState_New(state))
        };
        if tstate.is_null() {
            return Err(FfiError::InterpreterCreation {
                message: "could not create a thread state for the main interpreter".to_owned(),
            });
        }
        Ok(Self {
            tstate,
            state,
            _not_send: PhantomData,
        })
    }
}

impl Interpreter for WorkerInterpreter {
    fn with<R>(&self, f: impl for<'i> FnOnce(Interp<'i>) -> R) -> Result<R, FfiError> {
        // SAFETY: `self.tstate` was created for this thread (the type is !Send) and lives until
        // `self` drops.
        let _attached = unsafe { Attachment::attach(self.tstate)? };
        Ok(f(Interp::new(self.state)))
    }

    fn persist<'s>(&'s self, object: PyObj<'_>) -> PyHandle<'s> {
        PyHandle::new(self, object)
    }
}

impl HandleOwner for WorkerInterpreter {
    fn state(&self) -> *mut ffi::PyInterpreterState {
        self.state
    }

    fn is_attached_here(&self) -> bool {
        crate::interpreter::attached_tstate() == self.tstate
    }

    fn attached(&self, f: &mut dyn FnMut()) -> Result<(), FfiError> {
        self.with(|_| f())
    }
}

impl Drop for WorkerInterpreter {
    fn drop(&mut self) {
        if ensure_detached().is_err() {
            // Dropped inside an attachment (or under a foreign thread state): leave the thread
            // state to process exit rather than delete one that is current or switch behind the
            // current one's back.
            return;
        }
        // SAFETY: no thread state is current on this thread (checked above); ours is alive and
        // bound to it.
        // PyThreadState_Clear needs it current with the GIL held; PyThreadState_DeleteCurrent then
        // deletes it and releases the GIL.
        unsafe {
            ffi::PyEval_RestoreThread(self.tstate);
            ffi::PyThreadState_Clear(self.tstate);
            ffi::PyThreadState_DeleteCurrent();
        }
    }
}
