//! Bytes across the boundary: one copy in, one copy out.

use pyo3_ffi as ffi;

use crate::error::FfiError;
use crate::interpreter::Interp;
use crate::object::PyObj;

impl<'i> Interp<'i> {
    /// A new `bytes` object holding a copy of `data`.
    pub fn bytes(self, data: &[u8]) -> Result<PyObj<'i>, FfiError> {
        // SAFETY: attached; the pointer and length describe `data`, which CPython copies.
        let value = unsafe {
            ffi::PyBytes_FromStringAndSize(data.as_ptr().cast(), data.len() as ffi::Py_ssize_t)
        };
        PyObj::from_owned_or_err(self, value)
    }
}

/// Why a value could not be read as bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected bytes, bytearray or memoryview, got {type_name}")]
pub struct NotBytes {
    /// The Python type that was found instead.
    pub type_name: String,
}

impl PyObj<'_> {
    /// Copies the contents of a `bytes`, `bytearray` or contiguous `memoryview` into a `Vec`.
    pub fn to_bytes(&self) -> Result<Vec<u8>, NotBytes> {
        self.with_bytes(<[u8]>::to_vec)
    }

    /// Runs `f` on the contents of a `bytes`, `bytearray` or contiguous `memoryview`, borrowed
    /// (no copy). The attachment (this thread holds the GIL) lasts throughout, so no Python code
    /// can change a mutable buffer meanwhile.
    pub fn with_bytes<R>(&self, f: impl FnOnce(&[u8]) -> R) -> Result<R, NotBytes> {
        let not_bytes = || NotBytes {
            type_name: self.type_name(),
        };
        // SAFETY: attached; type checks only read the object's type.
        let (is_bytes, is_buffer) = unsafe {
            (
                ffi::PyBytes_Check(self.as_ptr()) != 0,
                ffi::PyByteArray_Check(self.as_ptr()) != 0
                    || ffi::PyMemoryView_Check(self.as_ptr()) != 0,
            )
        };
        if is_bytes {
            return Ok(f(bytes_as_slice(self)));
        }
        if !is_buffer {
            return Err(not_bytes());
        }
        let mut view = std::mem::MaybeUninit::<ffi::Py_buffer>::uninit();
        // SAFETY: attached; on success PyObject_GetBuffer fills `view` with a C-contiguous buffer that
        // stays valid (and, while the GIL is held, unchanged) until PyBuffer_Release, which runs
        // right after `f`, even if `f` unwinds.
        unsafe {
            if ffi::PyObject_GetBuffer(self.as_ptr(), view.as_mut_ptr(), ffi::PyBUF_C_CONTIGUOUS)
                != 0
            {
                ffi::PyErr_Clear();
                return Err(not_bytes());
            }
            let view = ReleaseOnDrop(view.assume_init());
            let contents = std::slice::from_raw_parts(view.0.buf.cast::<u8>(), view.0.len as usize);
            Ok(f(contents))
        }
    }
}

/// A buffer view released when dropped.
struct ReleaseOnDrop(ffi::Py_buffer);

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        // SAFETY: the view was filled by a successful PyObject_GetBuffer and is released only here,
        // while still attached (it lives inside `with_bytes`, which holds an attachment token).
        unsafe { ffi::PyBuffer_Release(&mut self.0) };
    }
}

/// Borrows the buffer of a `bytes` object; the caller must know it is one.
pub(crate) fn bytes_as_slice<'a>(bytes: &'a PyObj<'_>) -> &'a [u8] {
    // SAFETY: attached; `bytes` is a bytes object, whose buffer is immutable and lives as long as the
    // object, which the returned borrow cannot outlive.
    unsafe {
        let data = ffi::PyBytes_AsString(bytes.as_ptr());
        let len = ffi::PyBytes_Size(bytes.as_ptr());
        std::slice::from_raw_parts(data.cast::<u8>(), len as usize)
    }
}
