//! Interrupting the Python code a sub-interpreter's owning thread runs, from any other thread.
//!
//! CPython offers one way to stop running bytecode from outside: `PyThreadState_SetAsyncExc`, which
//! marks an exception as pending for a thread; the thread raises it at its next bytecode boundary
//! (eval-breaker check). It must be called while holding the target interpreter's GIL, so the
//! interrupting thread briefly becomes a thread of that interpreter: it creates its own thread state,
//! takes the GIL (one switch interval, ~5 ms, while the target runs bytecode), sets the exception,
//! and deletes its thread state again before returning.
//!
//! `Py_EndInterpreter` aborts the process if the interpreter still has other thread states, so the
//! interrupter's thread state must never outlive the interpreter: [`SubInterpreter`]'s `Drop` takes
//! the same lock an interrupt holds from start to finish and marks the target gone before it ends
//! the interpreter.

use std::ffi::c_ulong;
use std::sync::{Arc, Mutex, MutexGuard};

use pyo3_ffi as ffi;

use crate::error::FfiError;
use crate::interpreter::{Interp, SubInterpreter};

/// The interpreter and the OS thread that owns it, while both exist.
pub(crate) struct Target {
    state: *mut ffi::PyInterpreterState,
    /// `PyThread_get_thread_ident()` of the owning thread (what `PyThreadState_SetAsyncExc` matches;
    /// `PyThreadState_GetID` is a different number and would match nothing).
    thread_ident: c_ulong,
}

// SAFETY: `Target` is only a pair of identifiers. The pointer is dereferenced (by CPython) only in
// `InterruptHandle::interrupt_if`, while the mutex around the `Option<Target>` is held, and the
// owning `SubInterpreter` empties that option under the same mutex before it ends the interpreter,
// so every dereference happens while the interpreter is alive, whichever thread makes it.
unsafe impl Send for Target {}

pub(crate) type SharedTarget = Arc<Mutex<Option<Target>>>;

pub(crate) fn new_target(
    state: *mut ffi::PyInterpreterState,
    thread_ident: c_ulong,
) -> SharedTarget {
    Arc::new(Mutex::new(Some(Target {
        state,
        thread_ident,
    })))
}

/// Called by `SubInterpreter::drop` before `Py_EndInterpreter`: waits for an interrupt in progress
/// (its thread state is deleted before it lets go of the lock) and refuses later ones.
pub(crate) fn retire_target(target: &SharedTarget) {
    lock(target).take();
}

fn lock(target: &SharedTarget) -> MutexGuard<'_, Option<Target>> {
    // The data is two plain values that are never left half-written: a poisoned lock is still usable.
    target
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Interrupts the Python code running on a [`SubInterpreter`]'s owning thread, from any thread.
///
/// `Clone + Send + Sync` and borrows nothing: it stays valid after the interpreter ended (an
/// interrupt then does nothing and says so).
#[derive(Clone)]
pub struct InterruptHandle {
    target: SharedTarget,
}

const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<InterruptHandle>();
};

/// What [`InterruptHandle::interrupt_if`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterruptOutcome {
    /// `KeyboardInterrupt` is now pending on the owning thread; it is raised at its next bytecode
    /// boundary.
    Raised,
    /// The condition said no, once the interpreter's GIL was held.
    NotWanted,
    /// The interpreter has ended.
    Gone,
}

impl SubInterpreter {
    /// A handle other threads can use to interrupt the code this interpreter's owning thread runs.
    pub fn interrupt_handle(&self) -> InterruptHandle {
        InterruptHandle {
            target: Arc::clone(self.interrupt_target()),
        }
    }
}

impl InterruptHandle {
    /// Takes the interpreter's GIL, asks `still_wanted`, and if it answers `true` makes the owning
    /// thread raise `KeyboardInterrupt` at its next bytecode boundary.
    ///
    /// `still_wanted` runs while this thread holds the interpreter's GIL, so the owning thread is not
    /// running Python code at that moment: state that the owning thread changes only while holding
    /// the GIL (such as "which call is running") cannot change under it. It must not call into Python.
    ///
    /// Blocks until the GIL is free: one switch interval while the target runs bytecode, but for as
    /// long as C code holds the GIL without releasing it. Must be called from a thread that has no
    /// Python thread state current: fails with [`FfiError::AlreadyAttached`] inside a `with`, and
    /// with [`FfiError::ForeignThreadState`] under one made current by other code.
    pub fn interrupt_if(
        &self,
        still_wanted: impl FnOnce() -> bool,
    ) -> Result<InterruptOutcome, FfiError> {
        crate::interpreter::ensure_detached()?;
        let target = lock(&self.target);
        let Some(target) = target.as_ref() else {
            return Ok(InterruptOutcome::Gone);
        };
        // SAFETY: the interpreter is alive (the target is still set and we hold its lock, which its
        // owner takes before ending it) and this thread has no current thread state (checked above,
        // in fidius's record and CPython's). PyThreadState_New needs no GIL.
        let tstate = unsafe { ffi::PyThreadState_New(target.state) };
        if tstate.is_null() {
            return Err(FfiError::ThreadState);
        }
        // SAFETY: `tstate` is a fresh thread state of a live interpreter, bound to this thread, and no
        // thread state is current here: PyEval_RestoreThread makes it current and takes that
        // interpreter's GIL.
        unsafe { ffi::PyEval_RestoreThread(tstate) };
        let outcome = if still_wanted() {
            // SAFETY: we hold the interpreter's GIL; KeyboardInterrupt is a static builtin type shared
            // by all interpreters. The ident is the owning thread's, as SetAsyncExc compares.
            let affected = unsafe {
                ffi::PyThreadState_SetAsyncExc(
                    target.thread_ident as std::ffi::c_long,
                    ffi::PyExc_KeyboardInterrupt,
                )
            };
            if affected == 1 {
                InterruptOutcome::Raised
            } else {
                InterruptOutcome::NotWanted
            }
        } else {
            InterruptOutcome::NotWanted
        };
        // SAFETY: `tstate` is current and holds the GIL. PyThreadState_Clear needs exactly that;
        // PyThreadState_DeleteCurrent then deletes it and releases the GIL, so the interpreter has no
        // thread state of ours left when the lock is released below.
        unsafe {
            ffi::PyThreadState_Clear(tstate);
            ffi::PyThreadState_DeleteCurrent();
        }
        Ok(outcome)
    }
}

impl Interp<'_> {
    /// Drops an interrupt that was requested for this thread but not raised yet (it arrived after the
    /// Python code it was meant for had returned), so it cannot hit the next call.
    pub fn discard_pending_interrupt(self) {
        // SAFETY: attached (the token exists), so SetAsyncExc searches this interpreter; a NULL
        // exception clears the pending one of the thread with this ident, i.e. the calling thread.
        unsafe {
            ffi::PyThreadState_SetAsyncExc(
                ffi::PyThread_get_thread_ident() as std::ffi::c_long,
                std::ptr::null_mut(),
            );
        }
    }
}

/// The calling thread's `PyThread_get_thread_ident()`.
pub(crate) fn current_thread_ident() -> c_ulong {
    // SAFETY: PyThread_get_thread_ident only reads the calling thread's id; it needs no GIL.
    unsafe { ffi::PyThread_get_thread_ident() }
}
