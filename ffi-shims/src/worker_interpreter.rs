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

/// Which side of [`WorkerInterpreter::fork`] this process is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForkSide {
    /// The process that forked; the child has this pid.
    Parent { child: i32 },
    /// The new process: CPython's after-fork work (the `os.register_at_fork` hooks, the GIL and
    /// thread states reset) is done.
    Child,
}

/// Why [`WorkerInterpreter::fork`] did not fork.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ForkError {
    /// The process has more than one thread: forking it would copy locks other threads may hold
    /// (malloc's, CPython's, a BLAS pool's) into a child that has only this thread.
    #[error("the process has {count} threads ({names}); forking is only safe with one")]
    Threads {
        /// Threads of the process, this one included.
        count: usize,
        /// Their names (`/proc/self/task/*/comm`), comma-separated.
        names: String,
    },
    /// The threads of the process could not be counted.
    #[error("cannot count the threads of the process: {0}")]
    Count(std::io::Error),
    /// `fork()` failed.
    #[error("fork failed: {0}")]
    Fork(std::io::Error),
    /// The interpreter could not be entered.
    #[error(transparent)]
    Interpreter(#[from] FfiError),
}

/// The threads of this process: their number and names.
fn threads() -> Result<(usize, String), std::io::Error> {
    let mut names = Vec::new();
    for task in std::fs::read_dir("/proc/self/task")? {
        let path = task?.path().join("comm");
        // A thread that ended meanwhile has no `comm` any more; it still counted as one.
        let name = std::fs::read_to_string(path).unwrap_or_default();
        names.push(name.trim_end().to_owned());
    }
    Ok((names.len(), names.join(", ")))
}

impl WorkerInterpreter {
    /// Forks the process the way `os.fork()` does: `PyOS_BeforeFork`, `fork()`, then
    /// `PyOS_AfterFork_Parent` or `PyOS_AfterFork_Child`, which run the `os.register_at_fork`
    /// hooks (`random` reseeds itself there) and reset CPython's locks and thread states in the
    /// child.
    ///
    /// Refuses ([`ForkError::Threads`]) when the process has any thread but the calling one: the
    /// child would inherit locks held by threads that do not exist in it.
    pub fn fork(&self) -> Result<ForkSide, ForkError> {
        let (count, names) = threads().map_err(ForkError::Count)?;
        if count != 1 {
            return Err(ForkError::Threads { count, names });
        }
        self.with(|_| {
            // SAFETY: attached to the main interpreter (the GIL is held), as PyOS_BeforeFork and
            // the after-fork functions require; the process has a single thread (checked above,
            // and this thread starts none in between), so the child's copy of every lock is
            // consistent. Each branch calls the after-fork function matching PyOS_BeforeFork.
            unsafe {
                ffi::PyOS_BeforeFork();
                let pid = libc::fork();
                if pid == 0 {
                    ffi::PyOS_AfterFork_Child();
                    Ok(ForkSide::Child)
                } else {
                    let error = std::io::Error::last_os_error();
                    ffi::PyOS_AfterFork_Parent();
                    if pid < 0 {
                        Err(ForkError::Fork(error))
                    } else {
                        Ok(ForkSide::Parent { child: pid })
                    }
                }
            }
        })?
    }
}
