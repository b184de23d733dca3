//! Memory shared between a host and its process-tier worker: a file-backed mapping both processes
//! map, accessed only through atomics and bounds-checked byte copies.
//!
//! This is the crate's other kind of unsafe code (besides CPython's C API): mapping memory and
//! viewing parts of it as atomics. The protocol on top (rings, frames) is safe Rust in fidius-host.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64};

use rustix::fs::{fstat, ftruncate, memfd_create, MemfdFlags};
use rustix::mm::{mmap, munmap, MapFlags, ProtFlags};

/// A shared, read-write mapping of a memory file (`memfd`), alive until dropped.
///
/// Both sides of a host/worker pair map the same file. Nothing here trusts the other process:
/// every access is bounds-checked against this side's own mapping, atomics are the only shared
/// state read for decisions, and plain bytes are only copied (never referenced) so whatever the
/// other side writes can at worst produce wrong bytes, not unsoundness on this side.
#[derive(Debug)]
pub struct SharedMemory {
    base: NonNull<u8>,
    len: usize,
    file: OwnedFd,
}

// SAFETY: the mapping is plain shared memory owned by this value; all access goes through atomics
// or copies that are valid from any thread, and `munmap` happens once, in `drop`.
unsafe impl Send for SharedMemory {}
// SAFETY: as above: `&SharedMemory` only offers atomics and copies, which are thread-safe.
unsafe impl Sync for SharedMemory {}

impl SharedMemory {
    /// Creates a zeroed memory file of `len` bytes (close-on-exec: it reaches a child only where it
    /// is handed over explicitly, e.g. as the child's stdin) and maps it.
    pub fn create(len: usize) -> io::Result<Self> {
        let file = memfd_create("fidius-worker", MemfdFlags::CLOEXEC)?;
        ftruncate(&file, len as u64)?;
        Self::map(file, len)
    }

    /// Maps the whole memory file `file`, as created by [`create`](Self::create) in another process.
    pub fn open(file: OwnedFd) -> io::Result<Self> {
        let len = usize::try_from(fstat(&file)?.st_size)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "negative file size"))?;
        Self::map(file, len)
    }

    fn map(file: OwnedFd, len: usize) -> io::Result<Self> {
        if len == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "empty shared memory",
            ));
        }
        // SAFETY: a fresh shared mapping at an address the kernel picks; it aliases no Rust object.
        // The file is at least `len` bytes long (ftruncate above, or fstat).
        let base = unsafe {
            mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                &file,
                0,
            )?
        };
        let base = NonNull::new(base.cast::<u8>())
            .ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Self { base, len, file })
    }

    /// The memory file, to hand to the other process.
    pub fn file(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// Size of the mapping in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always `false`: an empty mapping cannot be created.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The 4-byte atomic at `offset`.
    ///
    /// # Panics
    /// If `offset` is not 4-aligned or the atomic does not fit (a bug in the caller's layout).
    pub fn atomic_u32(&self, offset: usize) -> &AtomicU32 {
        self.check(offset, 4, 4);
        // SAFETY: in bounds and aligned (checked); the mapping lives as long as `&self`; AtomicU32
        // has the layout of u32 and every bit pattern is valid; the memory is only ever accessed
        // atomically at this offset by fidius (both processes use the same layout).
        unsafe { &*self.base.as_ptr().add(offset).cast::<AtomicU32>() }
    }

    /// The 8-byte atomic at `offset`.
    ///
    /// # Panics
    /// If `offset` is not 8-aligned or the atomic does not fit.
    pub fn atomic_u64(&self, offset: usize) -> &AtomicU64 {
        self.check(offset, 8, 8);
        // SAFETY: as in `atomic_u32`, for an 8-aligned, in-bounds u64.
        unsafe { &*self.base.as_ptr().add(offset).cast::<AtomicU64>() }
    }

    /// Copies `bytes` into the mapping at `offset`.
    ///
    /// # Panics
    /// If the range does not fit.
    pub fn write(&self, offset: usize, bytes: &[u8]) {
        self.check(offset, bytes.len(), 1);
        // SAFETY: the destination range is inside the mapping (checked) and cannot overlap `bytes`,
        // which is Rust-owned memory. The protocol hands this range to this side exclusively until
        // it publishes it with a release store.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.base.as_ptr().add(offset),
                bytes.len(),
            )
        };
    }

    /// Copies `into.len()` bytes from the mapping at `offset` into `into`.
    ///
    /// # Panics
    /// If the range does not fit.
    pub fn read(&self, offset: usize, into: &mut [u8]) {
        self.check(offset, into.len(), 1);
        // SAFETY: the source range is inside the mapping (checked), `into` is Rust-owned and
        // distinct from it. The bytes are plain data (any value is valid); the protocol only reads
        // ranges the other side published with a release store that this side acquired.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.base.as_ptr().add(offset),
                into.as_mut_ptr(),
                into.len(),
            )
        };
    }

    fn check(&self, offset: usize, size: usize, align: usize) {
        let fits = offset.checked_add(size).is_some_and(|end| end <= self.len);
        assert!(
            fits && offset % align == 0,
            "shared memory access out of layout: offset {offset}, size {size}, mapping {}",
            self.len
        );
    }
}

impl Drop for SharedMemory {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` is exactly the mapping made in `map`, unmapped only here; no
        // reference into it outlives `&self`.
        let _ = unsafe { munmap(self.base.as_ptr().cast(), self.len) };
    }
}
