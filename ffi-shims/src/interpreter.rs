//! Own-GIL sub-interpreters and the attachment token that guards every use of them.

use std::cell::Cell;
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
/// Only [`SubInterpreter::with`] (and the baseline `MainInterpreter::with`) hand one out, for the
/// duration of their closure. It is `Copy` and `!Send`, so it stays on its thread.
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
        if !ATTACHED.get().is_null() {
            return Err(FfiError::AlreadyAttached);
        }
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
        // SAFETY: CPython is initialised and this thread has no current thread state (checked through
        // ATTACHED; fidius never leaves one current outside `with`). On success the new interpreter's
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
        // Dropped while this thread is attached to another interpreter: step out of that one briefly.
        let other = ATTACHED.get();
        if !other.is_null() {
            // SAFETY: `other` is the current thread state, so PyEval_SaveThread releases exactly that
            // GIL; the code attached to it is suspended on this very thread and touches nothing until
            // we restore it below.
            unsafe { ffi::PyEval_SaveThread() };
        }
        // No interrupter may hold a thread state of this interpreter when it ends (CPython aborts):
        // this waits for one in progress and turns later ones away.
        interrupt::retire_target(&self.interrupt);
        // SAFETY: no thread state is current now; ours is bound to this thread and not yet ended.
        // Py_EndInterpreter needs it current with its GIL held, and leaves nothing current.
        unsafe {
            ffi::PyEval_RestoreThread(self.tstate);
            ffi::Py_EndInterpreter(self.tstate);
        }
        if !other.is_null() {
            // SAFETY: `other` was current before and is still alive: its `with` frame is below us.
            unsafe { ffi::PyEval_RestoreThread(other) };
        }
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
        if !ATTACHED.get().is_null() {
            return Err(FfiError::AlreadyAttached);
        }
        // SAFETY: no thread state is current on this thread (ATTACHED is null and fidius never leaves
        // one current outside a guard); the caller vouches for `tstate`.
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

/// Whether the calling thread is attached to any interpreter through fidius.
pub(crate) fn attached_here() -> bool {
    !ATTACHED.get().is_null()
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
