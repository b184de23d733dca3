//! The C allocator's settings for a process that moves large buffers (a process-tier worker).

/// Makes the C allocator keep freed memory for reuse, up to `trim_at` bytes at the top of the heap,
/// and serve blocks of up to 32 MiB from the heap rather than from fresh `mmap`s. Without this,
/// glibc hands the pages of a large message back to the kernel when it is freed (its thresholds
/// adapt to about one such block), so the next message of that size page-faults its buffers in
/// again, which costs more than copying them. Returns whether the allocator took the settings
/// (glibc on Linux only; elsewhere nothing changes).
pub fn retain_freed_heap(trim_at: usize) -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        /// glibc's largest `M_MMAP_THRESHOLD` on 64-bit targets.
        const LARGEST_HEAP_BLOCK: libc::c_int = 32 << 20;
        let trim_at = libc::c_int::try_from(trim_at).unwrap_or(libc::c_int::MAX);
        // SAFETY: `mallopt` only changes the allocator's thresholds; any value is accepted or
        // refused (returning 0), and it takes the allocator's own lock.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, LARGEST_HEAP_BLOCK) != 0
                && libc::mallopt(libc::M_TRIM_THRESHOLD, trim_at) != 0
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        let _ = trim_at;
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_takes_the_settings() {
        assert!(super::retain_freed_heap(64 << 20));
    }
}
