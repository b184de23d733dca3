//! Bytes across the boundary: one copy in, one copy out.

use pyo3_ffi as ffi;

use crate::error::FfiError;
use crate::interpreter::Interp;
use crate::object::PyObj;
use crate::shared_memory::append::Target;

impl<'i> Interp<'i> {
    /// A new `bytes` object holding a copy of `data`.
    pub fn bytes(self, data: &[u8]) -> Result<PyObj<'i>, FfiError> {
        // SAFETY: attached; the pointer and length describe `data`, which CPython copies.
        let value = unsafe {
            ffi::PyBytes_FromStringAndSize(data.as_ptr().cast(), data.len() as ffi::Py_ssize_t)
        };
        PyObj::from_owned_or_err(self, value)
    }

    /// A new `bytes` object of `len` bytes to be filled in place, e.g. by
    /// [`SharedMemory::append_to`](crate::SharedMemory::append_to), before any Python code can see
    /// it: its contents are copied once, from where they are, instead of into a `Vec` first.
    pub fn bytes_builder(self, len: usize) -> Result<BytesBuilder<'i>, FfiError> {
        let size = ffi::Py_ssize_t::try_from(len).map_err(|_| FfiError::TooLarge { len })?;
        // SAFETY: attached; with a null source CPython allocates `len` bytes (plus the terminating
        // NUL it writes itself) and leaves them for the caller to fill. Length 0 returns the shared
        // empty `bytes`, which is never written to (nothing fits in it).
        let object = unsafe { ffi::PyBytes_FromStringAndSize(std::ptr::null(), size) };
        Ok(BytesBuilder {
            object: PyObj::from_owned_or_err(self, object)?,
            len,
            filled: 0,
        })
    }
}

/// A `bytes` object under construction (see [`Interp::bytes_builder`]). Only this value refers to
/// it until [`finish`](Self::finish), so writing its buffer cannot change a `bytes` that Python
/// code holds (they are immutable).
pub struct BytesBuilder<'i> {
    /// The new object, never handed out before `finish`.
    object: PyObj<'i>,
    len: usize,
    filled: usize,
}

impl<'i> BytesBuilder<'i> {
    /// Bytes still to be filled.
    pub fn remaining(&self) -> usize {
        self.len - self.filled
    }

    /// The object, with any bytes not filled set to zero (so Python never sees uninitialised
    /// memory, whatever the caller did).
    pub fn finish(mut self) -> PyObj<'i> {
        let remaining = self.remaining();
        let spare = self.spare(remaining);
        // SAFETY: `spare` is the unfilled tail of the buffer (`remaining` bytes, inside it).
        unsafe {
            spare.write_bytes(0, remaining);
            self.commit(remaining);
        }
        self.object
    }
}

impl Target for BytesBuilder<'_> {
    fn spare(&mut self, len: usize) -> *mut u8 {
        assert!(
            len <= self.remaining(),
            "{len} bytes appended to a bytes builder with {} left",
            self.remaining()
        );
        // SAFETY: attached (the builder lives under the attachment token); the object is a `bytes`
        // of `self.len` bytes, and `filled <= len`, so the offset stays inside its buffer.
        unsafe {
            ffi::PyBytes_AsString(self.object.as_ptr())
                .cast::<u8>()
                .add(self.filled)
        }
    }

    unsafe fn commit(&mut self, len: usize) {
        self.filled += len;
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
