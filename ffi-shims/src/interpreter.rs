//! Own-GIL sub-interpreters and the attachment token that guards every use of them.

use std::cell::{Cell, RefCell};
use std::ffi::CString;
use std::marker::PhantomData;
use std::ptr;

use pyo3_ffi as ffi;

use crate::error::{FfiError, PythonException};
use crate::interrupt::{self, SharedTarget};
use crate::object::{self, PyObj};
use crate::runtime::ensure_initialized;

thread_local! {
    /// The thread state this OS thread is attached to through [`SubInterpreter::with`], or null.
    ///
    /// fidius keeps its own record instead of asking `PyGILState_Check`, which stops telling the truth
    /// once sub-interpreters exist.
    static ATTACHED: Cell<*mut ffi::PyThreadState> = const { Cell::new(ptr::null_mut()) };

    /// Interpreters dropped on this thread while a thread state was current (inside another
    /// interpreter's `with`, or under a foreign thread state): ended once none is (see
    /// [`SubInterpreter`]'s `Drop`).
    static DEFERRED_ENDS: RefCell<Vec<Ending>> = const { RefCell::new(Vec::new()) };
}

/// Fails unless the calling thread has no Python thread state current at all: none that fidius made
/// current (its own record, `ATTACHED`), and none that anything else did (PyO3's `with_gil`, another
/// embedding, an interrupter's callback), which only CPython's own thread-local knows.
///
/// Every attach, create and interrupt checks this first: making a thread state current over another
/// one aborts the process, and creating an interpreter silently detaches the current one.
pub(crate) fn ensure_detached() -> Result<(), FfiError> {
    if !ATTACHED.get().is_null() {
        return Err(FfiError::AlreadyAttached);
    }
    // SAFETY: PyThreadState_GetUnchecked only reads CPython's thread-local (the 3.13 function, or
    // `_PyThreadState_UncheckedGet` on 3.12 through pyo3-ffi's compat shim); it needs no GIL, works
    // before initialisation, and returns NULL when nothing is current.
    if !unsafe { ffi::compat::PyThreadState_GetUnchecked() }.is_null() {
        return Err(FfiError::ForeignThreadState);
    }
    Ok(())
}

/// How a sub-interpreter is configured. The defaults are the isolation fidius relies on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InterpreterOptions {
    /// Whether Python code may start threads with `threading`. Default: `true` (they are joined when
    /// the interpreter ends). Daemon threads, `os.fork()` and `os.exec*()` are always refused.
    pub allow_threads: bool,
}

impl Default for InterpreterOptions {
    fn default() -> Self {
        Self {
            allow_threads: true,
        }
    }
}

/// A CPython sub-interpreter with its own GIL and its own object allocator (PEP 684).
///
/// Created, used and ended on one OS thread: the type is neither `Send` nor `Sync`. While no closure
/// passed to [`with`](Self::with) runs, the interpreter's GIL is released, so an idle interpreter
/// blocks nothing. Dropping it ends the interpreter (joining any threads its code started).
///
/// Dropped while the thread is attached to another interpreter (inside its `with`), or while a
/// thread state that fidius did not make is current, the interpreter cannot end at once: ending it
/// needs its own thread state current, which would mean releasing the outer GIL behind the back of
/// the code holding it. It is ended instead as soon as this thread has no thread state current again:
/// when that outer `with` returns, or at the next `SubInterpreter::new` or drop on this thread once
/// the foreign thread state is gone. A thread that never gets there leaks the interpreter.
///
/// ```compile_fail
/// // Two threads cannot share one (that it cannot move is checked in the crate documentation).
/// fn assert_sync<T: Sync>() {}
/// assert_sync::<fidius_ffi::SubInterpreter>();
/// ```
pub struct SubInterpreter {
    /// The interpreter's main thread state, bound to the creating OS thread.
    tstate: *mut ffi::PyThreadState,
    /// The interpreter itself; identifies it to tokens and handles.
    state: *mut ffi::PyInterpreterState,
    /// What [`InterruptHandle`](crate::InterruptHandle)s aim at; emptied before the interpreter ends.
    interrupt: SharedTarget,
}

/// Proof that the current thread is attached to one interpreter (holds its GIL).
///
/// Only [`SubInterpreter::with`] (and [`WorkerInterpreter`](crate::WorkerInterpreter)'s `with`) hand
/// one out, for the duration of their closure. It is `Copy` and `!Send`, so it stays on its thread,
/// and the closure must work for every lifetime, so neither it nor anything borrowing it leaves:
///
/// ```compile_fail
/// use fidius_ffi::{InterpreterOptions, SubInterpreter};
/// let interpreter = SubInterpreter::new(InterpreterOptions::default()).unwrap();
/// let escaped = interpreter.with(|py| py).unwrap();
/// ```
///
/// ```compile_fail
/// fn assert_send<T: Send>() {}
/// assert_send::<fidius_ffi::Interp<'static>>();
/// ```
#[derive(Clone, Copy)]
pub struct Interp<'i> {
    state: *mut ffi::PyInterpreterState,
    _attached: PhantomData<&'i ()>,
}

/// An interpreter a plugin can be loaded into: an own-GIL [`SubInterpreter`] (in the host), or a
/// process-tier worker's main interpreter ([`WorkerInterpreter`](crate::WorkerInterpreter)).
pub trait Interpreter {
    /// Attaches the calling thread to this interpreter, runs `f`, and detaches again.
    ///
    /// Fails with [`FfiError::AlreadyAttached`] when called from inside another `with` on this thread.
    fn with<R>(&self, f: impl for<'i> FnOnce(Interp<'i>) -> R) -> Result<R, FfiError>;

    /// Keeps `object` alive beyond the current attachment (until the handle or the interpreter
    /// goes).
    ///
    /// # Panics
    /// If `object` belongs to another interpreter (a bug in the caller, not bad input).
    fn persist<'s>(&'s self, object: PyObj<'_>) -> crate::PyHandle<'s>;
}

impl Interpreter for SubInterpreter {
    fn with<R>(&self, f: impl for<'i> FnOnce(Interp<'i>) -> R) -> Result<R, FfiError> {
        SubInterpreter::with(self, f)
    }

    fn persist<'s>(&'s self, object: PyObj<'_>) -> crate::PyHandle<'s> {
        crate::PyHandle::new(self, object)
    }
}

impl SubInterpreter {
    /// Keeps `object` alive beyond the current attachment.
    ///
    /// # Panics
    /// If `object` belongs to another interpreter (a bug in the caller, not bad input).
    pub fn persist<'s>(&'s self, object: PyObj<'_>) -> crate::PyHandle<'s> {
        crate::PyHandle::new(self, object)
    }

    /// Creates an own-GIL sub-interpreter on the calling thread.
    ///
    /// Initialises CPython first if needed. Fails if the thread is attached to another interpreter.
    pub fn new(options: InterpreterOptions) -> Result<Self, FfiError> {
        ensure_initialized()?;
        ensure_detached()?;
        end_deferred();
        let config = ffi::PyInterpreterConfig {
            use_main_obmalloc: 0,
            allow_fork: 0,
            allow_exec: 0,
            allow_threads: i32::from(options.allow_threads),
            allow_daemon_threads: 0,
            check_multi_interp_extensions: 1,
            gil: ffi::PyInterpreterConfig_OWN_GIL,
        };
        let mut tstate: *mut ffi::PyThreadState = ptr::null_mut();
        // SAFETY: CPython is initialised and this thread has no current thread state (checked above,
        // in fidius's record and CPython's). On success the new interpreter's
        // thread state is current and holds its fresh GIL; on failure nothing is current.
        let status = unsafe { ffi::Py_NewInterpreterFromConfig(&mut tstate, &config) };
        // SAFETY: PyStatus_Exception only inspects the status value.
        if unsafe { ffi::PyStatus_Exception(status) } != 0 || tstate.is_null() {
            return Err(FfiError::InterpreterCreation {
                message: object::status_message(&status),
            });
        }
        // SAFETY: the new thread state is current and holds the GIL.
        let state = unsafe { ffi::PyThreadState_GetInterpreter(tstate) };
        // What plugin code may not do to the shared process, applied before any other code runs.
        if let Err(error) = crate::containment::contain(Interp::new(state)) {
            // SAFETY: the new thread state is still current with its GIL held and is the
            // interpreter's only one; ending the interpreter leaves nothing current.
            unsafe { ffi::Py_EndInterpreter(tstate) };
            return Err(error);
        }
        // SAFETY: still current and holding the GIL: release it until `with`.
        unsafe { ffi::PyEval_SaveThread() };
        Ok(Self {
            tstate,
            state,
            interrupt: interrupt::new_target(state, interrupt::current_thread_ident()),
        })
    }

    /// Attaches the calling thread to this interpreter, runs `f`, and detaches again.
    ///
    /// Fails with [`FfiError::AlreadyAttached`] when called from inside another `with` on this thread.
    pub fn with<R>(&self, f: impl for<'i> FnOnce(Interp<'i>) -> R) -> Result<R, FfiError> {
        // SAFETY: `self.tstate` is this interpreter's thread state, bound to this thread (the type is
        // !Send) and alive until `self` drops.
        let _attached = unsafe { Attachment::attach(self.tstate)? };
        Ok(f(Interp::new(self.state)))
    }
}

impl Drop for SubInterpreter {
    fn drop(&mut self) {
        let ending = Ending {
            tstate: self.tstate,
            interrupt: std::sync::Arc::clone(&self.interrupt),
        };
        if ensure_detached().is_ok() {
            end_deferred();
            ending.end();
        } else {
            DEFERRED_ENDS.with_borrow_mut(|deferred| deferred.push(ending));
        }
    }
}

/// What ending a sub-interpreter needs once its `SubInterpreter` is gone.
struct Ending {
    tstate: *mut ffi::PyThreadState,
    interrupt: SharedTarget,
}

impl Ending {
    /// Ends the interpreter. The calling thread must have no thread state current
    /// ([`ensure_detached`]) and be the one the interpreter was created on.
    fn end(self) {
        // No interrupter may hold a thread state of this interpreter when it ends (CPython aborts):
        // this waits for one in progress and turns later ones away.
        interrupt::retire_target(&self.interrupt);
        // SAFETY: no thread state is current (the caller checked); ours is bound to this thread (it
        // comes from a !Send SubInterpreter of this thread) and not yet ended. Py_EndInterpreter
        // needs it current with its GIL held, and leaves nothing current.
        unsafe {
            ffi::PyEval_RestoreThread(self.tstate);
            ffi::Py_EndInterpreter(self.tstate);
        }
    }
}

/// Ends the interpreters whose drop had to wait. The calling thread must have no thread state
/// current.
fn end_deferred() {
    while let Some(ending) = DEFERRED_ENDS.with_borrow_mut(Vec::pop) {
        ending.end();
    }
}

/// Keeps ATTACHED truthful and releases the GIL when a `with` closure returns or unwinds.
pub(crate) struct Attachment {
    _not_send: PhantomData<*mut ()>,
}

impl Attachment {
    /// Makes `tstate` current on this thread and takes its interpreter's GIL.
    ///
    /// # Safety
    /// - `tstate` must be a live thread state bound to the calling thread (created on it, or created
    ///   for its interpreter and used by no other thread);
    /// - it must stay alive until the returned guard drops.
    pub(crate) unsafe fn attach(tstate: *mut ffi::PyThreadState) -> Result<Self, FfiError> {
        ensure_detached()?;
        // SAFETY: no thread state is current on this thread (checked above, in fidius's record and
        // CPython's); the caller vouches for `tstate`.
        unsafe { ffi::PyEval_RestoreThread(tstate) };
        ATTACHED.set(tstate);
        Ok(Attachment {
            _not_send: PhantomData,
        })
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        ATTACHED.set(ptr::null_mut());
        // SAFETY: `attach` made a thread state current and took its GIL; release both.
        unsafe { ffi::PyEval_SaveThread() };
        // Interpreters dropped inside the closure end now that nothing is current (unless the
        // closure left a foreign thread state behind; then they wait for a later chance).
        if ensure_detached().is_ok() {
            end_deferred();
        }
    }
}

impl SubInterpreter {
    /// CPython's id of this interpreter (what `_interpreters` in the main interpreter calls it).
    pub fn id(&self) -> i64 {
        // SAFETY: the interpreter is alive while `self` is; reading its id needs no GIL.
        unsafe { ffi::PyInterpreterState_GetID(self.state) }
    }

    /// Whether the calling thread is attached to this interpreter right now.
    pub(crate) fn is_attached_here(&self) -> bool {
        ATTACHED.get() == self.tstate
    }

    pub(crate) fn state(&self) -> *mut ffi::PyInterpreterState {
        self.state
    }

    pub(crate) fn interrupt_target(&self) -> &SharedTarget {
        &self.interrupt
    }
}

/// The thread state the calling thread is attached to through fidius, or null.
pub(crate) fn attached_tstate() -> *mut ffi::PyThreadState {
    ATTACHED.get()
}

impl<'i> Interp<'i> {
    pub(crate) fn new(state: *mut ffi::PyInterpreterState) -> Self {
        Self {
            state,
            _attached: PhantomData,
        }
    }

    /// Identifies the interpreter this token attaches to.
    pub(crate) fn state(self) -> *mut ffi::PyInterpreterState {
        self.state
    }

    /// Runs `code` as a module body in the interpreter's `__main__` namespace.
    pub fn run(self, code: &str) -> Result<(), FfiError> {
        self.run_with_start(code, ffi::Py_file_input).map(drop)
    }

    /// Evaluates the expression `expr` in the interpreter's `__main__` namespace.
    pub fn eval(self, expr: &str) -> Result<PyObj<'i>, FfiError> {
        self.run_with_start(expr, ffi::Py_eval_input)
    }

    /// Evaluates `expr` and returns `str()` of the result.
    pub fn eval_to_string(self, expr: &str) -> Result<String, FfiError> {
        self.eval(expr)?.to_str_lossy()
    }

    fn run_with_start(self, code: &str, start: std::ffi::c_int) -> Result<PyObj<'i>, FfiError> {
        let code = CString::new(code).map_err(|e| FfiError::NulByte {
            offset: e.nul_position(),
        })?;
        let globals = self.main_globals()?;
        // SAFETY: attached (the token exists); `code` is NUL-terminated; `globals` is a live dict.
        let result =
            unsafe { ffi::PyRun_String(code.as_ptr(), start, globals.as_ptr(), globals.as_ptr()) };
        PyObj::from_owned_or_err(self, result)
    }

    /// The `__dict__` of `__main__`, as a new reference.
    fn main_globals(self) -> Result<PyObj<'i>, FfiError> {
        // SAFETY: attached; PyImport_AddModuleRef returns a new reference or NULL with an exception.
        let main = unsafe { ffi::PyImport_AddModuleRef(c"__main__".as_ptr()) };
        let main = PyObj::from_owned_or_err(self, main)?;
        // SAFETY: attached; `main` is a module, and PyModule_GetDict returns a borrowed reference
        // that lives as long as the module (which `main` keeps alive until we take our own below).
        let dict = unsafe { ffi::PyModule_GetDict(main.as_ptr()) };
        PyObj::from_borrowed_or_err(self, dict)
    }

    /// Takes the exception currently set in this interpreter, as plain data.
    ///
    /// Returns a `SystemError` description when, against expectations, none is set.
    pub fn fetch_exception(self) -> PythonException {
        crate::exception::fetch_exception(self).describe()
    }
}
