//! Arbitrary route tables and paths: every engine's compiled index must give the rule
//! that plain sequential first match gives, or refuse the table as the reference does.
//! Run: `cd crates/matcher/fuzz && cargo fuzz run first_match -s none`.
//!
//! Input layout: segments split by 0xFF; the first is the path, each other one a rule
//! whose first byte picks the kind (exact, prefix, regex) and case folding, and whose
//! rest is the pattern. Rules with an odd index are refused by the caller half the
//! time, to exercise the "first accepted" path.

#![no_main]

use libfuzzer_sys::fuzz_target;
use trellis_matcher::{Engine, Limits, PathIndex, PathPattern, PathRule};

#[path = "../../tests/common/reference.rs"]
mod reference;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|b| *b == 0xff);
    let path = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let mut rules = Vec::new();
    let mut refuse_odd = false;
    for p in parts.take(64) {
        let Some((&kind, pattern)) = p.split_first() else {
            continue;
        };
        let pattern = String::from_utf8_lossy(pattern).into_owned();
        if pattern.len() > 64 {
            continue;
        }
        refuse_odd ^= kind & 0x80 != 0;
        rules.push(PathRule {
            pattern: match kind % 3 {
                0 => PathPattern::Exact(pattern),
                1 => PathPattern::Prefix(pattern),
                _ => PathPattern::Regex(pattern),
            },
            ignore_case: kind & 0x10 != 0,
        });
    }
    let accept = |i: usize| !(refuse_odd && i % 2 == 1);
    let reference = reference::Sequential::new(&rules);
    for &engine in Engine::available() {
        let index = PathIndex::build(&rules, engine, Limits::default());
        match (&reference, index) {
            (Some(r), Ok(index)) => {
                assert_eq!(
                    index.first_match(&path, accept),
                    r.first(&path, accept),
                    "{engine:?}"
                );
            }
            // Hyperscan may refuse constructs the regex crate has, by name.
            (Some(_), Err(e)) if engine == Engine::Hyperscan => {
                let m = e.to_string();
                assert!(
                    m.contains("supported") || m.contains("exceeds limit"),
                    "{m}"
                );
            }
            (None, Err(_)) => {}
            (r, i) => panic!(
                "{engine:?}: reference valid={} index={:?}",
                r.is_some(),
                i.err()
            ),
        }
    }
});
