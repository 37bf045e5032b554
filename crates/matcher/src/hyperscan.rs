//! The Hyperscan engine (`hyperscan` feature): one block-mode database for the whole
//! set, scanned once per lookup with a scratch space per worker thread.
//!
//! Patterns are in the Rust `regex` syntax. To give exactly the same answers as the
//! default engine they are not handed to Hyperscan's PCRE parser as written: each is
//! parsed with `regex-syntax` (which also expands case folding and Unicode classes) and
//! printed back as explicit PCRE, ASCII punctuation and controls escaped as `\x{..}`.
#![allow(unsafe_code)]

use crate::budget::error_chain;
use crate::{MatchError, RegexSet};
use regex_syntax::hir::{Class, Hir, HirKind, Look};
use std::ffi::{c_char, c_int, c_uint, c_ulonglong, c_void, CStr, CString};
use std::fmt::Write;
use std::ptr;
use thread_local::ThreadLocal;

#[repr(C)]
struct HsDatabase {
    _private: [u8; 0],
}
#[repr(C)]
struct HsScratch {
    _private: [u8; 0],
}
#[repr(C)]
struct HsCompileError {
    message: *const c_char,
    expression: c_int,
}

type MatchHandler = unsafe extern "C" fn(
    id: c_uint,
    from: c_ulonglong,
    to: c_ulonglong,
    flags: c_uint,
    context: *mut c_void,
) -> c_int;

#[link(name = "hs")]
extern "C" {
    fn hs_compile_multi(
        expressions: *const *const c_char,
        flags: *const c_uint,
        ids: *const c_uint,
        elements: c_uint,
        mode: c_uint,
        platform: *const c_void,
        db: *mut *mut HsDatabase,
        error: *mut *mut HsCompileError,
    ) -> c_int;
    fn hs_free_compile_error(error: *mut HsCompileError) -> c_int;
    fn hs_free_database(db: *mut HsDatabase) -> c_int;
    fn hs_alloc_scratch(db: *const HsDatabase, scratch: *mut *mut HsScratch) -> c_int;
    fn hs_free_scratch(scratch: *mut HsScratch) -> c_int;
    fn hs_scan(
        db: *const HsDatabase,
        data: *const c_char,
        length: c_uint,
        flags: c_uint,
        scratch: *mut HsScratch,
        on_event: MatchHandler,
        context: *mut c_void,
    ) -> c_int;
}

const HS_SUCCESS: c_int = 0;
const HS_SCAN_TERMINATED: c_int = -3;
const HS_MODE_BLOCK: c_uint = 1;
const HS_FLAG_SINGLEMATCH: c_uint = 8;
const HS_FLAG_ALLOWEMPTY: c_uint = 16;
const HS_FLAG_UTF8: c_uint = 32;
const HS_FLAG_UCP: c_uint = 64;

/// A compiled database. Hyperscan databases are immutable and may be scanned from any
/// thread; each thread needs its own scratch.
pub struct HyperscanSet {
    db: *mut HsDatabase,
    scratch: ThreadLocal<Scratch>,
    len: usize,
}

// SAFETY: a Hyperscan database is read-only after compilation and documented as safe to
// scan concurrently; all mutable scan state lives in per-thread scratch.
unsafe impl Send for HyperscanSet {}
// SAFETY: as above; `&self` methods only read the database.
unsafe impl Sync for HyperscanSet {}

struct Scratch(*mut HsScratch);
// SAFETY: a scratch is moved between threads only as a whole (ThreadLocal hands each
// thread its own and frees them all on drop); it is never used by two threads at once.
unsafe impl Send for Scratch {}

impl Drop for Scratch {
    fn drop(&mut self) {
        // SAFETY: the pointer came from hs_alloc_scratch and is freed once.
        unsafe { hs_free_scratch(self.0) };
    }
}

impl HyperscanSet {
    /// `patterns` must have passed [`crate::budget::check`]; each is `(regex, ignore_case)`.
    pub fn new(patterns: &[(String, bool)]) -> Result<Self, MatchError> {
        let mut expressions = Vec::with_capacity(patterns.len());
        for (pattern, ignore_case) in patterns {
            let invalid = |message: String| MatchError::InvalidPattern {
                pattern: pattern.clone(),
                message,
            };
            let hir = regex_syntax::ParserBuilder::new()
                .case_insensitive(*ignore_case)
                .build()
                .parse(pattern)
                .map_err(|e| invalid(error_chain(&e)))?;
            let mut pcre = String::from("\\A(?:");
            to_pcre(&hir, &mut pcre).map_err(invalid)?;
            pcre.push_str(")\\z");
            expressions.push(CString::new(pcre).map_err(|e| invalid(e.to_string()))?);
        }
        let pointers: Vec<*const c_char> = expressions.iter().map(|e| e.as_ptr()).collect();
        let flags = vec![
            HS_FLAG_SINGLEMATCH | HS_FLAG_ALLOWEMPTY | HS_FLAG_UTF8 | HS_FLAG_UCP;
            patterns.len()
        ];
        let ids: Vec<c_uint> = (0..patterns.len() as c_uint).collect();
        let mut db = ptr::null_mut();
        let mut error = ptr::null_mut();
        // SAFETY: the three arrays have `patterns.len()` elements and outlive the call;
        // every expression is a NUL-terminated string owned by `expressions`.
        let rc = unsafe {
            hs_compile_multi(
                pointers.as_ptr(),
                flags.as_ptr(),
                ids.as_ptr(),
                patterns.len() as c_uint,
                HS_MODE_BLOCK,
                ptr::null(),
                &mut db,
                &mut error,
            )
        };
        if rc != HS_SUCCESS {
            // SAFETY: on failure Hyperscan sets `error` to a compile error we must free;
            // its message is a NUL-terminated string valid until then.
            let (message, index) = unsafe {
                let message = CStr::from_ptr((*error).message)
                    .to_string_lossy()
                    .into_owned();
                let index = (*error).expression;
                hs_free_compile_error(error);
                (message, index)
            };
            let pattern = usize::try_from(index)
                .ok()
                .and_then(|i| patterns.get(i))
                .map(|p| p.0.clone())
                .unwrap_or_else(|| "<whole set>".into());
            return Err(MatchError::InvalidPattern {
                pattern,
                message: format!("hyperscan: {message}"),
            });
        }
        Ok(HyperscanSet {
            db,
            scratch: ThreadLocal::new(),
            len: patterns.len(),
        })
    }

    fn scan(&self, haystack: &str, mut on_match: impl FnMut(usize) -> bool) {
        let scratch = self.scratch.get_or(|| {
            let mut s = ptr::null_mut();
            // SAFETY: `db` is a valid database; `s` starts null so Hyperscan allocates.
            let rc = unsafe { hs_alloc_scratch(self.db, &mut s) };
            assert_eq!(rc, HS_SUCCESS, "hs_alloc_scratch failed: out of memory");
            Scratch(s)
        });
        let Ok(length) = c_uint::try_from(haystack.len()) else {
            return;
        };
        let mut callback: &mut dyn FnMut(usize) -> bool = &mut on_match;
        // SAFETY: `haystack` is valid for `length` bytes; `scratch` belongs to this
        // thread and was allocated for this database; `context` points at `callback`,
        // which outlives the synchronous scan and is only used by `trampoline`.
        let rc = unsafe {
            hs_scan(
                self.db,
                haystack.as_ptr().cast(),
                length,
                0,
                scratch.0,
                trampoline,
                (&mut callback as *mut &mut dyn FnMut(usize) -> bool).cast(),
            )
        };
        debug_assert!(
            rc == HS_SUCCESS || rc == HS_SCAN_TERMINATED,
            "hs_scan: {rc}"
        );
    }
}

/// Forwards a match to the Rust closure; returning non-zero stops the scan.
unsafe extern "C" fn trampoline(
    id: c_uint,
    _from: c_ulonglong,
    _to: c_ulonglong,
    _flags: c_uint,
    context: *mut c_void,
) -> c_int {
    // SAFETY: `context` is the `&mut &mut dyn FnMut` passed to hs_scan by `scan`,
    // alive for the whole scan.
    let callback = unsafe { &mut *context.cast::<&mut dyn FnMut(usize) -> bool>() };
    c_int::from(callback(id as usize))
}

impl Drop for HyperscanSet {
    fn drop(&mut self) {
        // Scratches go first (ThreadLocal drops after this body), which Hyperscan
        // does not require; the database is freed exactly once.
        // SAFETY: `db` came from hs_compile_multi and nothing else frees it.
        unsafe { hs_free_database(self.db) };
    }
}

impl RegexSet for HyperscanSet {
    fn first(&self, haystack: &str) -> Option<usize> {
        // Matches arrive in order of end offset; with every pattern anchored to the
        // end, they all end together, so the lowest id needs the whole report.
        let mut best: Option<usize> = None;
        self.scan(haystack, |id| {
            best = Some(best.map_or(id, |b| b.min(id)));
            id == 0
        });
        best
    }

    fn all(&self, haystack: &str, out: &mut Vec<usize>) {
        out.clear();
        self.scan(haystack, |id| {
            out.push(id);
            false
        });
        out.sort_unstable();
    }

    fn len(&self) -> usize {
        self.len
    }
}

/// Prints a regex-syntax HIR as a PCRE expression that Hyperscan reads with the same
/// meaning under HS_FLAG_UTF8 | HS_FLAG_UCP.
fn to_pcre(hir: &Hir, out: &mut String) -> Result<(), String> {
    match hir.kind() {
        HirKind::Empty => out.push_str("(?:)"),
        HirKind::Literal(lit) => {
            let text = std::str::from_utf8(&lit.0)
                .map_err(|_| "byte-oriented (?-u) literals are not supported".to_string())?;
            out.push_str("(?:");
            text.chars().for_each(|c| escape(c, out));
            out.push(')');
        }
        HirKind::Class(Class::Unicode(class)) => {
            if class.ranges().is_empty() {
                return Err("a class that matches nothing is not supported by Hyperscan".into());
            }
            out.push('[');
            for r in class.ranges() {
                escape(r.start(), out);
                if r.end() != r.start() {
                    out.push('-');
                    escape(r.end(), out);
                }
            }
            out.push(']');
        }
        HirKind::Class(Class::Bytes(_)) => {
            return Err("byte-oriented (?-u) classes are not supported".into())
        }
        HirKind::Look(look) => out.push_str(match look {
            Look::Start => "\\A",
            Look::End => "\\z",
            Look::WordUnicode => "\\b",
            Look::WordUnicodeNegate => "\\B",
            other => {
                return Err(format!(
                    "{other:?} assertions are not supported by Hyperscan"
                ))
            }
        }),
        HirKind::Repetition(rep) => {
            out.push_str("(?:");
            to_pcre(&rep.sub, out)?;
            out.push(')');
            match rep.max {
                None => write!(out, "{{{},}}", rep.min),
                Some(max) => write!(out, "{{{},{max}}}", rep.min),
            }
            .expect("writing to a String");
            if !rep.greedy {
                out.push('?');
            }
        }
        HirKind::Capture(cap) => {
            out.push_str("(?:");
            to_pcre(&cap.sub, out)?;
            out.push(')');
        }
        HirKind::Concat(items) => {
            for h in items {
                to_pcre(h, out)?;
            }
        }
        HirKind::Alternation(items) => {
            out.push_str("(?:");
            for (i, h) in items.iter().enumerate() {
                if i > 0 {
                    out.push('|');
                }
                to_pcre(h, out)?;
            }
            out.push(')');
        }
    }
    Ok(())
}

/// ASCII punctuation and controls are escaped (they may be syntax, and a NUL would end
/// the C string); other code points are written as UTF-8, which keeps big Unicode
/// classes such as `\w` under Hyperscan's pattern length limit.
fn escape(c: char, out: &mut String) {
    if c.is_ascii_alphanumeric() || (!c.is_ascii() && !c.is_control()) {
        out.push(c);
    } else {
        write!(out, "\\x{{{:x}}}", c as u32).expect("writing to a String");
    }
}
