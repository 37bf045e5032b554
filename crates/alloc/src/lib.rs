//! The allocator of the `trellis` binary: TCMalloc (gperftools, the minimal build
//! without its profiler), as Envoy uses.
//!
//! Why not glibc's malloc: the control plane and the proxies' xDS clients allocate and
//! free millions of small buffers per push (a resource's name, its slices, map nodes)
//! from many threads. glibc serves threads from arenas that it grows with `mprotect`
//! and gives pages back to the kernel as soon as they are free, so the same memory is
//! faulted in again and again. TCMalloc keeps per-thread caches and holds on to freed
//! pages. Measured on the 10 000-service scale bench (docs/PERFORMANCE.md): the whole
//! run used 25 % less CPU, with 40 % fewer page faults and the same peak memory.
//!
//! Install it in a binary with `#[global_allocator] static A: trellis_alloc::TcMalloc =
//! trellis_alloc::TcMalloc;`. C code in the process (BoringSSL, Hyperscan) keeps
//! calling `malloc`; it may or may not get TCMalloc's, and either is fine because
//! every pointer goes back to the allocator it came from.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

extern "C" {
    fn tc_malloc(size: usize) -> *mut c_void;
    fn tc_calloc(n: usize, size: usize) -> *mut c_void;
    fn tc_memalign(align: usize, size: usize) -> *mut c_void;
    fn tc_realloc(ptr: *mut c_void, size: usize) -> *mut c_void;
    fn tc_free(ptr: *mut c_void);
}

/// The alignment every `tc_malloc` block has (as glibc's: 16 bytes on x86-64).
const MALLOC_ALIGN: usize = 16;

/// TCMalloc as a Rust global allocator.
pub struct TcMalloc;

/// Whether plain `tc_malloc` already gives `layout` its alignment. A block smaller than
/// the alignment may come from a size class that is not aligned to it.
fn malloc_aligns(layout: &Layout) -> bool {
    layout.align() <= MALLOC_ALIGN && layout.align() <= layout.size()
}

// SAFETY: every method hands TCMalloc's own blocks back to TCMalloc: `dealloc` and
// `realloc` only ever see pointers that `alloc`, `alloc_zeroed` or `realloc` of this
// allocator returned, which all come from tc_malloc, tc_calloc, tc_memalign or
// tc_realloc, and tc_free takes any of them. Alignment is honoured: tc_memalign where
// tc_malloc's 16 bytes are not enough.
unsafe impl GlobalAlloc for TcMalloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: FFI into TCMalloc with a valid size and a power-of-two alignment
        // (Layout guarantees both); a null return is passed on as the failure.
        unsafe {
            if malloc_aligns(&layout) {
                tc_malloc(layout.size()).cast()
            } else {
                tc_memalign(layout.align(), layout.size()).cast()
            }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if malloc_aligns(&layout) {
            // SAFETY: as in `alloc`; tc_calloc zeroes the block.
            unsafe { tc_calloc(1, layout.size()).cast() }
        } else {
            // SAFETY: `alloc` returned a block of `layout.size()` bytes or null.
            unsafe {
                let p = self.alloc(layout);
                if !p.is_null() {
                    std::ptr::write_bytes(p, 0, layout.size());
                }
                p
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator (GlobalAlloc's contract), so from
        // TCMalloc.
        unsafe { tc_free(ptr.cast()) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = Layout::from_size_align(new_size, layout.align());
        if new.as_ref().is_ok_and(malloc_aligns) {
            // SAFETY: `ptr` came from TCMalloc; tc_realloc keeps 16-byte alignment,
            // which is all this layout needs.
            unsafe { tc_realloc(ptr.cast(), new_size).cast() }
        } else {
            // SAFETY: GlobalAlloc's default: a new block of the new size, the old
            // contents copied, the old block freed.
            unsafe {
                let Ok(new) = new else {
                    return std::ptr::null_mut();
                };
                let p = self.alloc(new);
                if !p.is_null() {
                    std::ptr::copy_nonoverlapping(ptr, p, layout.size().min(new_size));
                    self.dealloc(ptr, layout);
                }
                p
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[global_allocator]
    static A: TcMalloc = TcMalloc;

    #[test]
    fn blocks_have_their_alignment_and_keep_their_contents() {
        for align in [1, 2, 8, 16, 32, 64, 4096] {
            for size in [1, 7, 16, 100, 4096, 1 << 20] {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: a non-zero size; the block is written within its size and
                // freed with its layout.
                unsafe {
                    let p = A.alloc_zeroed(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size} align {align}");
                    assert!((0..size).all(|i| *p.add(i) == 0));
                    std::ptr::write_bytes(p, 0xa5, size);
                    let q = A.realloc(p, layout, size * 3);
                    assert_eq!(q as usize % align, 0, "realloc, size {size} align {align}");
                    assert!((0..size).all(|i| *q.add(i) == 0xa5));
                    A.dealloc(q, Layout::from_size_align(size * 3, align).unwrap());
                }
            }
        }
    }

    extern "C" {
        /// 1 when TCMalloc allocated `p` (gperftools' `MallocExtension_kOwned`).
        fn MallocExtension_GetOwnership(p: *const c_void) -> i32;
    }

    #[test]
    fn rust_allocations_come_from_tcmalloc() {
        let v = vec![1u8; 1 << 16];
        let s = String::from("resource name");
        for p in [v.as_ptr(), s.as_ptr()] {
            // SAFETY: asks TCMalloc about a live pointer; it reads only its own page map.
            assert_eq!(unsafe { MallocExtension_GetOwnership(p.cast()) }, 1);
        }
    }
}
