//! Calls from plugin code into its host: the builtin behind the SDK's `fidius.host.<name>(...)`.
//!
//! The builtin ([`Interp::host_call_builtin`]) holds no state. Whatever serves it is set per thread,
//! for a scope, by [`serve_host_calls`]: a Rust closure that takes the host function's name and its
//! arguments as a JSON array, and returns the result's JSON or an error message. Outside such a
//! scope (at import time, on a thread the plugin started) the builtin raises instead.
//!
//! The closure runs with the interpreter's GIL released: it may block (wait for a worker's host,
//! call other plugins) without stopping the interpreter's other threads, and the process-wide
//! watchdog, which needs that GIL to interrupt a call past its deadline, is never held up by it.
//! The thread stays fidius-attached meanwhile, so nothing it runs can attach this thread to
//! another interpreter ([`FfiError::AlreadyAttached`](crate::FfiError::AlreadyAttached)), and the
//! closure is given no `Interp`, so it cannot touch Python objects. A panic in it is caught and
//! raised as the error.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::NonNull;

use pyo3_ffi as ffi;

use crate::containment::{bind, set_error, MethodDef};
use crate::error::FfiError;
use crate::interpreter::Interp;
use crate::object::{unicode_as_str, PyObj};

/// What serves host calls: `(name, arguments as a JSON array)` to the result's JSON, or the message
/// of the exception the plugin gets.
pub type HostCallHandler<'h> = dyn Fn(&str, &[u8]) -> Result<Vec<u8>, String> + 'h;

thread_local! {
    /// The handler of the innermost [`serve_host_calls`] on this thread. Its real lifetime is that
    /// scope's; it is only dereferenced inside it (see there).
    static HANDLER: Cell<Option<NonNull<HostCallHandler<'static>>>> = const { Cell::new(None) };
}

/// Restores the handler an outer scope had, when a scope ends or unwinds.
struct Restore(Option<NonNull<HostCallHandler<'static>>>);

impl Drop for Restore {
    fn drop(&mut self) {
        HANDLER.set(self.0);
    }
}

/// Runs `f` with `handler` serving the host calls plugin code makes on this thread meanwhile.
/// Scopes nest; the innermost one serves.
pub fn serve_host_calls<R>(handler: &HostCallHandler<'_>, f: impl FnOnce() -> R) -> R {
    let pointer = NonNull::from(handler);
    // SAFETY: only the lifetime bound of the trait object changes (same fat-pointer layout). The
    // erased pointer is read only by `host_call` on this thread while `f` runs, i.e. while
    // `handler` is borrowed by this frame: `Restore` puts the outer value back before this function
    // returns or unwinds, so no dangling pointer stays behind.
    let erased: NonNull<HostCallHandler<'static>> = unsafe { std::mem::transmute(pointer) };
    let _restore = Restore(HANDLER.replace(Some(erased)));
    f()
}

static HOST_CALL: MethodDef = MethodDef::new(
    c"host_call",
    ffi::PyMethodDefPointer {
        PyCFunctionFast: host_call,
    },
    ffi::METH_FASTCALL,
    c"host_call(name, args, error_class): calls the host function `name` with the tuple `args` \
(converted to a JSON array); returns its result, or raises error_class(message).",
);

impl<'i> Interp<'i> {
    /// The builtin `host_call(name: str, args: tuple, error_class: type)` that the SDK's
    /// `fidius.host` wraps: converts `args` to a JSON array, hands it to the handler of the
    /// enclosing [`serve_host_calls`] with the GIL released, and returns the handler's JSON as
    /// Python objects, or raises `error_class(message)` for its error (also when no scope serves
    /// this thread, or the handler panicked). Arguments without a JSON form raise `TypeError`.
    pub fn host_call_builtin(self) -> Result<PyObj<'i>, FfiError> {
        bind(self, &HOST_CALL, &self.none())
    }
}

/// The message of a raised `TypeError` for a misuse of the builtin.
fn type_error(message: &str) -> *mut ffi::PyObject {
    // SAFETY: reading a static exception type pointer.
    set_error(unsafe { ffi::PyExc_TypeError }, message);
    std::ptr::null_mut()
}

unsafe extern "C" fn host_call(
    _module: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    // A panic must not unwind into CPython (it would abort the process).
    catch_unwind(AssertUnwindSafe(|| {
        if nargs != 3 {
            return type_error("host_call takes exactly 3 arguments (name, args, error_class)");
        }
        // SAFETY: CPython calls a METH_FASTCALL function with its GIL held and `nargs` live
        // borrowed arguments at `args`.
        let (name, arguments, error_class) = unsafe { (*args, *args.add(1), *args.add(2)) };
        // SAFETY: the calling thread holds the GIL of the interpreter it is attached to.
        let py = Interp::new(unsafe { ffi::PyInterpreterState_Get() });
        let borrowed = |pointer| PyObj::from_borrowed_or_err(py, pointer);
        let (Ok(name), Ok(arguments)) = (borrowed(name), borrowed(arguments)) else {
            return std::ptr::null_mut();
        };
        // SAFETY: GIL held; the checks only read the objects' types.
        let (is_str, is_tuple, is_exception_class) = unsafe {
            (
                ffi::PyUnicode_Check(name.as_ptr()) != 0,
                ffi::PyTuple_Check(arguments.as_ptr()) != 0,
                ffi::PyExceptionClass_Check(error_class) != 0,
            )
        };
        if !(is_str && is_tuple && is_exception_class) {
            return type_error("host_call expects (str, tuple, exception class)");
        }
        let Some(name) = unicode_as_str(&name).map(str::to_owned) else {
            return std::ptr::null_mut(); // the UnicodeEncodeError is set
        };
        let json = match arguments.to_json() {
            Ok(json) => json,
            Err(error) => return type_error(&format!("fidius.host.{name}: {error}")),
        };
        let Some(handler) = HANDLER.get() else {
            set_error(
                error_class,
                &format!(
                    "fidius.host.{name}: host functions can only be called while the host is \
                     serving a call of this plugin, from the thread running that call"
                ),
            );
            return std::ptr::null_mut();
        };
        // SAFETY: GIL held by this thread's current thread state; released until restored below.
        let saved = unsafe { ffi::PyEval_SaveThread() };
        let answer = catch_unwind(AssertUnwindSafe(|| {
            // SAFETY: a handler is set only inside `serve_host_calls` on this thread, whose frame
            // (and so the borrowed handler) is live while Python code it runs calls this builtin.
            let handler = unsafe { handler.as_ref() };
            handler(&name, &json)
        }))
        .unwrap_or_else(|_| Err(format!("host function `{name}` panicked")));
        // SAFETY: `saved` is this thread's thread state, released just above.
        unsafe { ffi::PyEval_RestoreThread(saved) };
        match answer {
            Ok(result) => match py.json_to_python(&result) {
                Ok(value) => value.into_ptr(),
                Err(error) => {
                    // SAFETY: GIL held; drops whatever a failed conversion left set.
                    unsafe { ffi::PyErr_Clear() };
                    set_error(
                        error_class,
                        &format!("host function `{name}` returned invalid JSON: {error}"),
                    );
                    std::ptr::null_mut()
                }
            },
            Err(message) => {
                set_error(error_class, &message);
                std::ptr::null_mut()
            }
        }
    }))
    .unwrap_or_else(|_| {
        // SAFETY: reading a static exception type pointer.
        set_error(
            unsafe { ffi::PyExc_SystemError },
            "fidius: host_call panicked",
        );
        std::ptr::null_mut()
    })
}
