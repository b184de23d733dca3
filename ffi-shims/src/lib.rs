//! The only fidius crate with unsafe code: CPython's C API (through [`pyo3_ffi`]), and the memory a
//! process-tier worker shares with its host ([`SharedMemory`]); everything above it is safe Rust.
//!
//! # Contract
//!
//! * CPython is initialised once per process by [`ensure_initialized`]: isolated configuration (no
//!   environment variables, no `site`, no signal handlers, no bytecode writing), then the main
//!   interpreter's GIL is released for good. Plugin work never runs in the main interpreter.
//! * A [`SubInterpreter`] is an own-GIL (PEP 684) interpreter. It is created, used and ended on one OS
//!   thread; the type is `!Send` so the compiler enforces that.
//! * Code runs in it only inside [`SubInterpreter::with`], which attaches the calling thread (takes that
//!   interpreter's GIL) and hands out an [`Interp`] token whose lifetime ends when the GIL is released
//!   again. Every object handle ([`PyObj`]) borrows that token, so no Python object outlives the
//!   attachment or leaves its interpreter.
//! * Other threads can interrupt the Python code an interpreter's owning thread runs through an
//!   [`InterruptHandle`], which raises `KeyboardInterrupt` there asynchronously; the interrupter's
//!   temporary thread state is always gone before the interpreter ends.
//! * Every attach, create and interrupt first checks that the calling thread has no thread state
//!   current, in fidius's own record and in CPython's (`PyThreadState_GetUnchecked`): under a thread
//!   state made current by other code (PyO3's `with_gil`, another embedding) they fail with
//!   [`FfiError::ForeignThreadState`] instead of switching behind its back. A [`SubInterpreter`]
//!   dropped while a thread state is current is ended once none is (see its documentation).
//! * Python exceptions are captured inside the interpreter as a plain-data [`PythonException`] before
//!   anything crosses a thread.
//!
//! Inside this crate every `unsafe` block carries a `// SAFETY:` comment naming what makes it sound.
//!
//! ```compile_fail
//! // A sub-interpreter belongs to the thread that created it.
//! fn assert_send<T: Send>() {}
//! assert_send::<fidius_ffi::SubInterpreter>();
//! ```

#[cfg(not(Py_3_12))]
compile_error!(
    "fidius needs CPython 3.12 or newer (own-GIL sub-interpreters): point PYO3_PYTHON at one, \
     e.g. `export PYO3_PYTHON=$(ci/python-bootstrap | tail -n 1)`"
);

#[cfg(feature = "bench")]
mod baseline;
mod bytes;
mod containment;
mod error;
mod exception;
mod handle;
mod heap;
mod host_call;
mod interpreter;
mod interrupt;
mod json;
mod memory_limit;
mod object;
mod runtime;
mod shared_memory;
mod worker_interpreter;

#[cfg(feature = "bench")]
pub use baseline::{MainHandle, MainInterpreter};
pub use bytes::{BytesBuilder, NotBytes};
pub use containment::MAX_SWITCH_INTERVAL;
pub use error::{FfiError, PythonException};
pub use exception::Raised;
pub use handle::PyHandle;
pub use heap::retain_freed_heap;
pub use host_call::{serve_host_calls, HostCallHandler};
pub use interpreter::{Interp, Interpreter, InterpreterOptions, SubInterpreter};
pub use interrupt::{InterruptHandle, InterruptOutcome};
pub use json::JsonError;
pub use memory_limit::GRACE as MEMORY_LIMIT_GRACE;
pub use object::PyObj;
pub use runtime::{ensure_initialized, python_version};
pub use shared_memory::{AppendTarget, SharedMemory};
pub use worker_interpreter::{ForkError, ForkSide, WorkerInterpreter};
