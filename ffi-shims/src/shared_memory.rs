//! Memory shared between a host and its process-tier worker (see [`SharedMemory`]).
//!
//! This is the crate's other kind of unsafe code (besides CPython's C API): mapping memory and
//! viewing parts of it as atomics. The protocol on top (rings, frames) is safe Rust in fidius-host.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};

use rustix::fs::{fcntl_add_seals, fstat, ftruncate, memfd_create, MemfdFlags, SealFlags};
use rustix::mm::{mmap, munmap, MapFlags, ProtFlags};

/// The data region starts on a page boundary after the header.
const PAGE: usize = 4096;
/// Bytes per word of a data copy.
const WORD: usize = std::mem::size_of::<u64>();

/// A shared, read-write mapping of a memory file (`memfd`), alive until dropped, split into two
/// typed regions:
///
/// * The **header**: `AtomicU32` words, the only shared state either side reads to make decisions
///   (counters, flags, futex words). Handed out as `&[AtomicU32]`, never accessed any other way.
/// * The **data** region: bytes that are only ever copied in and out, never referenced, and copied
///   with relaxed atomic loads and stores (8 bytes at a time where aligned, single bytes at the
///   ends). The other process is outside Rust's model, so it may write these bytes at any moment,
///   even while this side copies them; atomic copies make such a race well-defined (this side reads
///   some mix of old and new bytes, and the protocol on top validates what they mean), where a plain
///   `memcpy` racing a write would be undefined behaviour. Copies take `&mut self`, so within this
///   process there is one copier at a time:
///
/// ```compile_fail
/// fn copy_while_shared(memory: &fidius_ffi::SharedMemory) {
///     memory.write(0, b"bytes");
/// }
/// ```
///
/// Nothing here trusts the other process: every access is bounds-checked against this side's own
/// mapping, and the memory file is sealed against resizing before it reaches the other process (a
/// peer that could shrink it would turn this side's next access into `SIGBUS`).
#[derive(Debug)]
pub struct SharedMemory {
    base: NonNull<u8>,
    /// The whole mapping: header, padding to a page, data.
    len: usize,
    header_words: usize,
    /// Where the data region starts (page-aligned, so 8-aligned).
    data_start: usize,
    file: OwnedFd,
}

// SAFETY: the mapping is plain shared memory owned by this value; `&self` offers only the header's
// atomics (thread-safe), byte copies need `&mut self`, and `munmap` happens once, in `drop`.
unsafe impl Send for SharedMemory {}
// SAFETY: as above: `&SharedMemory` only offers atomics, which are thread-safe.
unsafe impl Sync for SharedMemory {}

impl SharedMemory {
    /// Creates a zeroed memory file with `header_words` atomic words and `data_len` data bytes
    /// (close-on-exec: it reaches a child only where it is handed over explicitly, e.g. as the
    /// child's stdin), seals its size, and maps it.
    pub fn create(header_words: usize, data_len: usize) -> io::Result<Self> {
        let len = Self::layout(header_words, data_len)?;
        let file = memfd_create(
            "fidius-worker",
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )?;
        ftruncate(&file, len as u64)?;
        fcntl_add_seals(&file, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)?;
        Self::map(file, len, header_words)
    }

    /// Maps the memory file `file`, as created by [`create`](Self::create) with the same
    /// `header_words` and `data_len` in another process. Refuses a file of any other size.
    pub fn open(file: OwnedFd, header_words: usize, data_len: usize) -> io::Result<Self> {
        let len = Self::layout(header_words, data_len)?;
        if u64::try_from(fstat(&file)?.st_size).ok() != Some(len as u64) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "shared memory file of unexpected size",
            ));
        }
        Self::map(file, len, header_words)
    }

    /// The mapping's total length for this layout.
    fn layout(header_words: usize, data_len: usize) -> io::Result<usize> {
        let invalid = |what| io::Error::new(io::ErrorKind::InvalidInput, what);
        if header_words == 0 || data_len == 0 {
            return Err(invalid("empty shared memory region"));
        }
        header_words
            .checked_mul(4)
            .and_then(|bytes| bytes.checked_next_multiple_of(PAGE))
            .and_then(|data_start| data_start.checked_add(data_len))
            .ok_or_else(|| invalid("shared memory layout overflows"))
    }

    fn map(file: OwnedFd, len: usize, header_words: usize) -> io::Result<Self> {
        // SAFETY: a fresh shared mapping at an address the kernel picks; it aliases no Rust object.
        // The file is exactly `len` bytes long (ftruncate in `create`, fstat in `open`).
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
        Ok(Self {
            base,
            len,
            header_words,
            data_start: (header_words * 4).next_multiple_of(PAGE),
            file,
        })
    }

    /// The memory file, to hand to the other process.
    pub fn file(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// The header: the atomic words both processes share.
    pub fn header(&self) -> &[AtomicU32] {
        // SAFETY: the header is the first `header_words * 4` bytes of the mapping (page-aligned, so
        // 4-aligned), inside it by construction, and lives as long as `&self`. AtomicU32 has the
        // layout of u32, every bit pattern is valid, and this process accesses these bytes only
        // through these atomics (the data region, the only other way in, starts after them).
        unsafe {
            std::slice::from_raw_parts(self.base.as_ptr().cast::<AtomicU32>(), self.header_words)
        }
    }

    /// Size of the data region in bytes.
    pub fn data_len(&self) -> usize {
        self.len - self.data_start
    }

    /// Copies `bytes` into the data region at `offset`.
    ///
    /// # Panics
    /// If the range does not fit in the data region (a bug in the caller's layout).
    pub fn write(&mut self, offset: usize, bytes: &[u8]) {
        let shared = self.data_range(offset, bytes.len());
        // SAFETY: `shared` is `bytes.len()` bytes inside the data region (checked), which this
        // process touches only through these atomic copies, one copier at a time (`&mut self`).
        unsafe { copy_to_shared(bytes, shared) };
    }

    /// Copies `into.len()` bytes from the data region at `offset` into `into`.
    ///
    /// # Panics
    /// If the range does not fit in the data region.
    pub fn read(&mut self, offset: usize, into: &mut [u8]) {
        let shared = self.data_range(offset, into.len());
        // SAFETY: as in `write`; `into` is Rust-owned memory, distinct from the mapping.
        unsafe { copy_from_shared(shared, into.as_mut_ptr(), into.len()) };
    }

    /// Appends `len` bytes from the data region at `offset` to `into`, a `Vec<u8>` (grown as needed)
    /// or a [`BytesBuilder`](crate::BytesBuilder): one copy, no zeroing first.
    ///
    /// # Panics
    /// If the range does not fit in the data region, or `into` is a builder with less room left.
    pub fn append_to(&mut self, offset: usize, len: usize, into: &mut impl AppendTarget) {
        let shared = self.data_range(offset, len);
        let spare = into.spare(len);
        // SAFETY: as in `read`; `spare` is room for `len` bytes in `into` (its `spare` promises so),
        // which `copy_from_shared` initialises in full before `commit` counts them.
        unsafe {
            copy_from_shared(shared, spare, len);
            into.commit(len);
        }
    }

    /// The address of `len` data bytes at `offset`.
    fn data_range(&self, offset: usize, len: usize) -> *mut u8 {
        let fits = offset
            .checked_add(len)
            .is_some_and(|end| end <= self.data_len());
        assert!(
            fits,
            "shared memory access out of layout: offset {offset}, size {len}, data region {}",
            self.data_len()
        );
        // SAFETY: `data_start + offset` is inside the mapping (checked above).
        unsafe { self.base.as_ptr().add(self.data_start + offset) }
    }
}

/// What [`SharedMemory::append_to`] copies into. Sealed: its methods hand out raw room in the target.
pub trait AppendTarget: append::Target {}

impl<T: append::Target> AppendTarget for T {}

pub(crate) mod append {
    /// Room to copy into, then a count of what was copied.
    pub trait Target {
        /// A pointer to room for `len` more bytes (reserving it first where the target can grow;
        /// panicking where it cannot).
        fn spare(&mut self, len: usize) -> *mut u8;

        /// Counts `len` bytes written at [`spare`](Self::spare) as part of the target.
        ///
        /// # Safety
        /// Those `len` bytes must have been initialised.
        unsafe fn commit(&mut self, len: usize);
    }

    impl Target for Vec<u8> {
        fn spare(&mut self, len: usize) -> *mut u8 {
            self.reserve(len);
            self.spare_capacity_mut().as_mut_ptr().cast::<u8>()
        }

        unsafe fn commit(&mut self, len: usize) {
            // SAFETY: `spare` reserved the room and the caller initialised it.
            unsafe { self.set_len(self.len() + len) };
        }
    }
}

/// Copies `from` to `to` with relaxed atomic stores: single bytes up to an 8-aligned address, then
/// 8-byte words (four per round, so the loop is not the bottleneck), then single bytes.
///
/// # Safety
/// `to..to + from.len()` must be valid for writes and accessed by this process only atomically
/// (never through references to plain bytes) while the copy runs.
unsafe fn copy_to_shared(from: &[u8], to: *mut u8) {
    let head = to.align_offset(WORD).min(from.len());
    let words = (from.len() - head) / WORD;
    let src = from.as_ptr();
    // SAFETY: every offset below is inside `from` and inside the destination (same length); the
    // destination words are 8-aligned (after `head`); the caller vouches for atomic-only access.
    unsafe {
        for index in 0..head {
            byte_at(to, index).store(*src.add(index), Ordering::Relaxed);
        }
        let (src_words, dst_words) = (src.add(head), to.add(head));
        let mut word = 0;
        while word + 4 <= words {
            let s = src_words.add(word * WORD).cast::<u64>();
            let (a, b, c, d) = (
                s.read_unaligned(),
                s.add(1).read_unaligned(),
                s.add(2).read_unaligned(),
                s.add(3).read_unaligned(),
            );
            word_at(dst_words, word).store(a, Ordering::Relaxed);
            word_at(dst_words, word + 1).store(b, Ordering::Relaxed);
            word_at(dst_words, word + 2).store(c, Ordering::Relaxed);
            word_at(dst_words, word + 3).store(d, Ordering::Relaxed);
            word += 4;
        }
        while word < words {
            let value = src_words.add(word * WORD).cast::<u64>().read_unaligned();
            word_at(dst_words, word).store(value, Ordering::Relaxed);
            word += 1;
        }
        for index in head + words * WORD..from.len() {
            byte_at(to, index).store(*src.add(index), Ordering::Relaxed);
        }
    }
}

/// Copies `len` bytes from `from` to `to` with relaxed atomic loads; the mirror of
/// [`copy_to_shared`].
///
/// # Safety
/// `from..from + len` must be valid for reads and accessed by this process only atomically while
/// the copy runs; `to..to + len` must be valid for writes and not overlap it.
unsafe fn copy_from_shared(from: *const u8, to: *mut u8, len: usize) {
    let head = from.align_offset(WORD).min(len);
    let words = (len - head) / WORD;
    // SAFETY: as in `copy_to_shared`, with the roles of the two sides swapped.
    unsafe {
        for index in 0..head {
            *to.add(index) = byte_at(from.cast_mut(), index).load(Ordering::Relaxed);
        }
        let (src_words, dst_words) = (from.add(head).cast_mut(), to.add(head));
        let mut word = 0;
        while word + 4 <= words {
            let (a, b, c, d) = (
                word_at(src_words, word).load(Ordering::Relaxed),
                word_at(src_words, word + 1).load(Ordering::Relaxed),
                word_at(src_words, word + 2).load(Ordering::Relaxed),
                word_at(src_words, word + 3).load(Ordering::Relaxed),
            );
            let d_ptr = dst_words.add(word * WORD).cast::<u64>();
            d_ptr.write_unaligned(a);
            d_ptr.add(1).write_unaligned(b);
            d_ptr.add(2).write_unaligned(c);
            d_ptr.add(3).write_unaligned(d);
            word += 4;
        }
        while word < words {
            let value = word_at(src_words, word).load(Ordering::Relaxed);
            dst_words
                .add(word * WORD)
                .cast::<u64>()
                .write_unaligned(value);
            word += 1;
        }
        for index in head + words * WORD..len {
            *to.add(index) = byte_at(from.cast_mut(), index).load(Ordering::Relaxed);
        }
    }
}

/// The shared byte at `base + index` as an atomic.
///
/// # Safety
/// The byte must be inside the data region.
unsafe fn byte_at<'a>(base: *mut u8, index: usize) -> &'a AtomicU8 {
    // SAFETY: the caller vouches for the address; AtomicU8 has the layout of u8 and no alignment
    // requirement, and any bit pattern is valid.
    unsafe { AtomicU8::from_ptr(base.add(index)) }
}

/// The shared word `index` after the 8-aligned `base` as an atomic.
///
/// # Safety
/// `base` must be 8-aligned and the word inside the data region.
unsafe fn word_at<'a>(base: *mut u8, index: usize) -> &'a AtomicU64 {
    // SAFETY: the caller vouches for the address and its alignment; AtomicU64 has the layout of u64
    // and any bit pattern is valid.
    unsafe { AtomicU64::from_ptr(base.add(index * WORD).cast::<u64>()) }
}

impl Drop for SharedMemory {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` is exactly the mapping made in `map`, unmapped only here; no
        // reference into it outlives `&self`.
        let _ = unsafe { munmap(self.base.as_ptr().cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_of_every_alignment_and_length_round_trip() {
        let mut memory = SharedMemory::create(16, 4 * PAGE).expect("memfd");
        let source: Vec<u8> = (0..=255u8).cycle().take(3 * PAGE + 77).collect();
        for offset in [0, 1, 7, 8, 9, 4093] {
            for len in [0, 1, 7, 8, 9, 31, 32, 33, 100, 3 * PAGE] {
                for skew in [0, 3] {
                    let bytes = &source[skew..skew + len];
                    memory.write(offset, bytes);
                    let mut back = vec![0u8; len + skew];
                    memory.read(offset, &mut back[skew..]);
                    assert_eq!(&back[skew..], bytes, "offset {offset}, len {len}");
                    let mut appended = vec![9u8; skew];
                    memory.append_to(offset, len, &mut appended);
                    assert_eq!(&appended[skew..], bytes, "offset {offset}, len {len}");
                }
            }
        }
    }

    #[test]
    fn header_and_data_are_separate_and_the_other_side_sees_both() {
        let mut host = SharedMemory::create(3, PAGE).expect("memfd");
        host.header()[2].store(0xfeed, Ordering::Release);
        host.write(0, &[0xff; 16]);
        let file = host.file().try_clone_to_owned().expect("dup");
        let mut worker = SharedMemory::open(file, 3, PAGE).expect("open");
        assert_eq!(worker.header()[2].load(Ordering::Acquire), 0xfeed);
        assert_eq!(
            worker.header()[0].load(Ordering::Acquire),
            0,
            "data left the header alone"
        );
        let mut data = [0u8; 16];
        worker.read(0, &mut data);
        assert_eq!(data, [0xff; 16]);
        let file = host.file().try_clone_to_owned().expect("dup");
        assert!(
            SharedMemory::open(file, 3, 2 * PAGE).is_err(),
            "size mismatch refused"
        );
    }

    #[test]
    fn the_file_cannot_be_resized_by_the_other_side() {
        let host = SharedMemory::create(1, PAGE).expect("memfd");
        assert!(
            ftruncate(host.file(), 1).is_err(),
            "a shrunk file would SIGBUS the host"
        );
        assert!(ftruncate(host.file(), 16 * PAGE as u64).is_err());
    }

    #[test]
    #[should_panic(expected = "out of layout")]
    fn a_copy_past_the_data_region_panics() {
        let mut memory = SharedMemory::create(1, PAGE).expect("memfd");
        memory.write(PAGE - 1, &[0, 0]);
    }
}
