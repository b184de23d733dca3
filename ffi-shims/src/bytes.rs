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
        match self.bytes_kind() {
            BytesKind::Bytes => Ok(bytes_as_slice(self).to_vec()),
            BytesKind::Buffer => self.copy_buffer(),
            BytesKind::Neither => Err(self.not_bytes()),
        }
    }

    /// Runs `f` on the contents of a `bytes`, `bytearray` or contiguous `memoryview`: those of a
    /// `bytes` borrowed (no copy: they cannot change, and the object outlives `f`), those of a
    /// mutable buffer copied first (`f` may run Python code, and other Python threads with it,
    /// which could change them under a borrow).
    pub fn with_bytes<R>(&self, f: impl FnOnce(&[u8]) -> R) -> Result<R, NotBytes> {
        match self.bytes_kind() {
            BytesKind::Bytes => Ok(f(bytes_as_slice(self))),
            BytesKind::Buffer => self.copy_buffer().map(|copy| f(&copy)),
            BytesKind::Neither => Err(self.not_bytes()),
        }
    }

    fn bytes_kind(&self) -> BytesKind {
        // SAFETY: attached; type checks only read the object's type.
        unsafe {
            if ffi::PyBytes_Check(self.as_ptr()) != 0 {
                BytesKind::Bytes
            } else if ffi::PyByteArray_Check(self.as_ptr()) != 0
                || ffi::PyMemoryView_Check(self.as_ptr()) != 0
            {
                BytesKind::Buffer
            } else {
                BytesKind::Neither
            }
        }
    }

    fn not_bytes(&self) -> NotBytes {
        NotBytes {
            type_name: self.type_name(),
        }
    }

    /// Copies the contents of a buffer-protocol object (a `bytearray`, a `memoryview`).
    fn copy_buffer(&self) -> Result<Vec<u8>, NotBytes> {
        let mut view = std::mem::MaybeUninit::<ffi::Py_buffer>::uninit();
        // SAFETY: attached; on success PyObject_GetBuffer fills `view` with a C-contiguous buffer that
        // stays valid until PyBuffer_Release, which we call right after copying (no Python code
        // runs in between, so nothing can change it meanwhile).
        unsafe {
            if ffi::PyObject_GetBuffer(self.as_ptr(), view.as_mut_ptr(), ffi::PyBUF_C_CONTIGUOUS)
                != 0
            {
                ffi::PyErr_Clear();
                return Err(self.not_bytes());
            }
            let mut view = view.assume_init();
            let copy =
                std::slice::from_raw_parts(view.buf.cast::<u8>(), view.len as usize).to_vec();
            ffi::PyBuffer_Release(&mut view);
            Ok(copy)
        }
    }
}

/// What [`PyObj::to_bytes`] and [`PyObj::with_bytes`] accept.
enum BytesKind {
    Bytes,
    /// A `bytearray` or `memoryview`: mutable, read through the buffer protocol.
    Buffer,
    Neither,
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
