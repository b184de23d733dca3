//! A cap on the memory CPython allocates in a process-tier worker, so that a plugin growing past
//! `memory_limit` gets `MemoryError` while the worker's own (Rust) code still has room to report it.
//!
//! Every byte Python's allocators take comes from two places, and both are wrapped: the "raw"
//! domain (`PyMem_RawMalloc`, which is `malloc`; pymalloc's blocks over 512 bytes go there too) and
//! pymalloc's arenas (`PyObject_SetArenaAllocator`, 1 MiB `mmap`s holding the small blocks). A
//! request that would take the total over the cap fails as if memory had run out; CPython turns that
//! into `MemoryError`. Memory that C code allocates with `malloc` itself is not counted: the worker's
//! `RLIMIT_AS`, set higher, still bounds it.
//!
//! Reporting that `MemoryError` needs memory too (its traceback is formatted, `traceback` may be
//! imported): while fidius describes a raised exception ([`with_reporting_grace`]) the cap is
//! [`GRACE`] higher. Plugin code never runs with the grace, so the plugin itself cannot use it.

use std::ffi::c_void;
use std::ptr::null_mut;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};

use pyo3_ffi as ffi;

use crate::worker_interpreter::WorkerInterpreter;
use crate::Interpreter;

/// How far past the limit fidius itself may allocate while it describes a raised exception.
pub const GRACE: usize = 16 << 20;

/// Threads describing an exception now (see [`with_reporting_grace`]).
static REPORTING: AtomicUsize = AtomicUsize::new(0);

/// Runs `f` (describing a raised exception) with the cap [`GRACE`] higher, so that a `MemoryError`
/// at the limit can still be reported. Costs two atomic operations where no limit is installed.
pub(crate) fn with_reporting_grace<R>(f: impl FnOnce() -> R) -> R {
    struct Reporting;
    impl Drop for Reporting {
        fn drop(&mut self) {
            REPORTING.fetch_sub(1, Ordering::Relaxed);
        }
    }
    REPORTING.fetch_add(1, Ordering::Relaxed);
    let _reporting = Reporting;
    f()
}

extern "C" {
    /// glibc: the usable size of a block `malloc` returned (0 for NULL).
    fn malloc_usable_size(ptr: *mut c_void) -> usize;
}

/// The wrapped allocators and the count; leaked, because CPython keeps calling through it until the
/// process ends.
struct Limited {
    raw: ffi::PyMemAllocatorEx,
    arena: ffi::PyObjectArenaAllocator,
    /// Bytes taken since the wrappers were installed (less what was freed, blocks from before
    /// included, so it may go below zero).
    used: AtomicIsize,
    limit: isize,
}

impl Limited {
    /// Counts `bytes` more if that stays within the limit (plus the grace while an exception is
    /// being described).
    fn reserve(&self, bytes: usize) -> bool {
        let Ok(bytes) = isize::try_from(bytes) else {
            return false;
        };
        let ceiling = if REPORTING.load(Ordering::Relaxed) > 0 {
            self.limit.saturating_add(GRACE as isize)
        } else {
            self.limit
        };
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(bytes).filter(|total| *total <= ceiling)
            })
            .is_ok()
    }

    fn adjust(&self, delta: isize) {
        self.used.fetch_add(delta, Ordering::Relaxed);
    }
}

fn usable(ptr: *mut c_void) -> isize {
    if ptr.is_null() {
        return 0;
    }
    // SAFETY: `ptr` is a live block of the raw domain, which is glibc `malloc` in fidius's
    // configuration (isolated, so `PYTHONMALLOC` cannot install debug hooks), and
    // malloc_usable_size only reads its header.
    isize::try_from(unsafe { malloc_usable_size(ptr) }).unwrap_or(isize::MAX)
}

fn limited<'a>(ctx: *mut c_void) -> &'a Limited {
    // SAFETY: every `ctx` these wrappers are called with is the leaked `Limited` installed with
    // them (see `WorkerInterpreter::limit_memory`), alive for the rest of the process.
    unsafe { &*ctx.cast::<Limited>() }
}

extern "C" fn raw_malloc(ctx: *mut c_void, size: usize) -> *mut c_void {
    let limited = limited(ctx);
    let Some(malloc) = limited.raw.malloc else {
        return null_mut();
    };
    if !limited.reserve(size) {
        return null_mut();
    }
    let ptr = malloc(limited.raw.ctx, size);
    limited.adjust(usable(ptr) - size as isize);
    ptr
}

extern "C" fn raw_calloc(ctx: *mut c_void, nelem: usize, elsize: usize) -> *mut c_void {
    let limited = limited(ctx);
    let (Some(calloc), Some(size)) = (limited.raw.calloc, nelem.checked_mul(elsize)) else {
        return null_mut();
    };
    if !limited.reserve(size) {
        return null_mut();
    }
    let ptr = calloc(limited.raw.ctx, nelem, elsize);
    limited.adjust(usable(ptr) - size as isize);
    ptr
}

extern "C" fn raw_realloc(ctx: *mut c_void, ptr: *mut c_void, new_size: usize) -> *mut c_void {
    let limited = limited(ctx);
    let Some(realloc) = limited.raw.realloc else {
        return null_mut();
    };
    let old = usable(ptr);
    let growth = (new_size as isize).saturating_sub(old).max(0);
    if !limited.reserve(growth as usize) {
        // Like a failed realloc: the old block stays as it is.
        return null_mut();
    }
    let moved = realloc(limited.raw.ctx, ptr, new_size);
    if moved.is_null() {
        limited.adjust(-growth);
    } else {
        limited.adjust(usable(moved) - old - growth);
    }
    moved
}

extern "C" fn raw_free(ctx: *mut c_void, ptr: *mut c_void) {
    let limited = limited(ctx);
    limited.adjust(-usable(ptr));
    if let Some(free) = limited.raw.free {
        free(limited.raw.ctx, ptr);
    }
}

extern "C" fn arena_alloc(ctx: *mut c_void, size: usize) -> *mut c_void {
    let limited = limited(ctx);
    let Some(alloc) = limited.arena.alloc else {
        return null_mut();
    };
    if !limited.reserve(size) {
        return null_mut();
    }
    let ptr = alloc(limited.arena.ctx, size);
    if ptr.is_null() {
        limited.adjust(-(size as isize));
    }
    ptr
}

extern "C" fn arena_free(ctx: *mut c_void, ptr: *mut c_void, size: usize) {
    let limited = limited(ctx);
    limited.adjust(-(size as isize));
    if let Some(free) = limited.arena.free {
        free(limited.arena.ctx, ptr, size);
    }
}

impl WorkerInterpreter {
    /// From now on, allocations by CPython in this process fail (`MemoryError` in Python) once
    /// what it took since this call would pass `limit` bytes. Call once, before plugin code runs.
    pub fn limit_memory(&self, limit: usize) -> Result<(), crate::FfiError> {
        self.with(|_| {
            let mut raw = ffi::PyMemAllocatorEx {
                ctx: null_mut(),
                malloc: None,
                calloc: None,
                realloc: None,
                free: None,
            };
            let mut arena = ffi::PyObjectArenaAllocator {
                ctx: null_mut(),
                alloc: None,
                free: None,
            };
            // SAFETY: the GIL is held (inside `with`) and the getters only copy the current
            // allocators into the structs given.
            unsafe {
                ffi::PyMem_GetAllocator(ffi::PyMemAllocatorDomain::PYMEM_DOMAIN_RAW, &mut raw);
                ffi::PyObject_GetArenaAllocator(&mut arena);
            }
            let ctx: *mut Limited = Box::into_raw(Box::new(Limited {
                raw,
                arena,
                used: AtomicIsize::new(0),
                limit: isize::try_from(limit).unwrap_or(isize::MAX),
            }));
            let mut raw_wrapper = ffi::PyMemAllocatorEx {
                ctx: ctx.cast(),
                malloc: Some(raw_malloc),
                calloc: Some(raw_calloc),
                realloc: Some(raw_realloc),
                free: Some(raw_free),
            };
            let mut arena_wrapper = ffi::PyObjectArenaAllocator {
                ctx: ctx.cast(),
                alloc: Some(arena_alloc),
                free: Some(arena_free),
            };
            // SAFETY: the GIL is held and no other thread runs Python yet (the worker installs
            // this before loading the plugin). The wrappers call the allocators they replace for
            // every block, so blocks from before are freed by the allocator that made them, as
            // CPython requires of hooks installed after initialisation. `ctx` is leaked: the
            // wrappers are used until the process ends.
            unsafe {
                ffi::PyMem_SetAllocator(
                    ffi::PyMemAllocatorDomain::PYMEM_DOMAIN_RAW,
                    &mut raw_wrapper,
                );
                ffi::PyObject_SetArenaAllocator(&mut arena_wrapper);
            }
        })
    }
}
