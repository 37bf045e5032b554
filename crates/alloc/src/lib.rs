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

/// What malloc holds: bytes handed out and not freed, and bytes free in its heaps
/// (kept for reuse, still resident until released).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub in_use: usize,
    pub free: usize,
}

pub fn usage() -> Usage {
    // SAFETY: mallinfo2 only reads malloc's statistics (it takes each arena's lock).
    let info = unsafe { libc::mallinfo2() };
    Usage {
        in_use: info.uordblks + info.hblkhd,
        free: info.fordblks,
    }
}

/// Free memory worth handing back: more than is in use, and more than `floor`.
/// [`tune`] keeps everything freed, which a process that serves bursts (a proxy after
/// 10 000 connections close) would otherwise hold for good.
pub fn worth_releasing(usage: Usage, floor: usize) -> bool {
    usage.free > floor && usage.free > usage.in_use
}

/// Hands free heap pages back to the kernel, in every arena (glibc's `malloc_trim`,
/// which also releases whole free pages in the middle of a heap). Takes each arena's
/// lock in turn while it walks it: call it off the request path, and rarely.
pub fn release() -> bool {
    // SAFETY: malloc_trim only returns malloc's own free pages to the kernel.
    unsafe { libc::malloc_trim(0) == 1 }
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

    /// The process's anonymous resident memory (`RssAnon`), in KiB.
    fn anonymous_kib() -> usize {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("RssAnon:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    #[test]
    fn freed_memory_is_counted_and_released() {
        // 64 KiB buffers with small live blocks between them, as a connection's buffers
        // sit among longer-lived allocations: freed, they stay in malloc's bins.
        let (buffers, live): (Vec<Vec<u8>>, Vec<Box<u64>>) = (0..256)
            .map(|i| (vec![i as u8; 64 << 10], Box::new(i as u64)))
            .unzip();
        let held = usage();
        assert!(held.in_use >= 16 << 20, "{held:?}");
        drop(buffers);
        let freed = usage();
        assert!(
            freed.free >= 16 << 20,
            "malloc keeps what was freed: {freed:?}"
        );
        assert!(worth_releasing(freed, 8 << 20));
        let resident = anonymous_kib();
        release();
        let after = anonymous_kib();
        assert!(
            after + 8 * 1024 < resident,
            "freed pages go back to the kernel: {resident} KiB -> {after} KiB"
        );
        assert!(!worth_releasing(
            Usage {
                in_use: 64 << 20,
                free: 32 << 20
            },
            8 << 20
        ));
        drop(live);
    }
}
