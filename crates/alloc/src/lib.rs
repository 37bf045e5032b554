//! How a `trellis` process uses glibc's malloc.
//!
//! The control plane and the sidecars' xDS clients allocate and free buffers of
//! megabytes (a push at 10 000 services is ~6.5 MB per sidecar) and millions of small
//! blocks from several threads. With glibc's defaults each such buffer is its own `mmap`
//! (the threshold starts at 128 KiB), freed memory at the top of a heap goes back to the
//! kernel at 128 KiB, and thread arenas grow a few pages at a time with `mprotect`: the
//! same memory is handed back and faulted in again, push after push. [`tune`] keeps
//! buffers of up to 32 MiB in the heaps, keeps freed memory for reuse, and grows heaps in
//! 64 MiB steps of address space (pages are only backed when touched).
//!
//! Why glibc with these settings rather than another allocator, with the measurements:
//! docs/PERFORMANCE.md, the control plane's fifth run ("glibc malloc tuned").

/// Buffers below this come from the heaps and are reused (glibc's largest threshold).
const MMAP_THRESHOLD: libc::c_int = 32 << 20;
/// Free memory at the top of the main heap kept before any goes back to the kernel.
const TRIM_THRESHOLD: libc::c_int = 1 << 30;
/// Address space added each time a heap grows (not memory until touched).
const TOP_PAD: libc::c_int = 64 << 20;

/// Applies the settings above; false if malloc refused one (the process runs on with
/// glibc's default for it). Call first thing in `main`, before threads start.
pub fn tune() -> bool {
    let applied = [
        (libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD),
        (libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD),
        (libc::M_TOP_PAD, TOP_PAD),
    ]
    // SAFETY: mallopt takes a parameter number and a value and only changes
    // malloc's own settings; the parameters are glibc's, the values in range.
    .map(|(param, value)| unsafe { libc::mallopt(param, value) } == 1);
    applied.iter().all(|&ok| ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes in blocks that have a mapping of their own.
    fn mapped_bytes() -> usize {
        // SAFETY: mallinfo2 only reads malloc's statistics.
        unsafe { libc::mallinfo2() }.hblkhd
    }

    #[test]
    fn megabyte_buffers_come_from_the_heap_once_tuned() {
        let before = mapped_bytes();
        let buffer = vec![1u8; 4 << 20];
        assert!(
            mapped_bytes() >= before + buffer.len(),
            "glibc's default maps 4 MiB on its own"
        );
        drop(buffer);
        assert!(tune());
        let before = mapped_bytes();
        let buffer = vec![1u8; 4 << 20];
        assert_eq!(
            mapped_bytes(),
            before,
            "tuned: from a heap, kept when freed"
        );
        drop(buffer);
    }
}
