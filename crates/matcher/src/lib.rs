//! First-match rule lookup compiled into one structure.
//!
//! Envoy evaluates routes one at a time: a table of 1,000 regex routes costs up to 1,000
//! regex runs per request. This crate compiles an ordered list of path rules once, at
//! config load, into
//!
//! - a hash map for exact paths,
//! - a byte trie for prefixes,
//! - one multi-pattern automaton for every regex, which finds all full matches in a
//!   single pass over the path,
//!
//! and answers "which is the first rule, in the original order, whose path matches and
//! which the caller accepts" — exactly what sequential first-match gives. The caller's
//! `accept` callback checks whatever the index does not (methods, headers, query
//! parameters), so the crate knows nothing about HTTP.
//!
//! Two regex engines sit behind [`RegexSet`]: [`AutomataSet`] (regex-automata, pure
//! Rust, the default) and, with the `hyperscan` feature, [`HyperscanSet`]. Both use the
//! Rust `regex` syntax's full-match semantics; a pattern one engine cannot compile is
//! refused with an error naming it.

mod automata;
mod budget;
#[cfg(feature = "hyperscan")]
mod hyperscan;
mod path_index;
mod trie;

pub use automata::AutomataSet;
#[cfg(feature = "hyperscan")]
pub use hyperscan::HyperscanSet;
pub use path_index::{PathIndex, PathPattern, PathRule};

/// Which regex engine compiles the pattern set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// regex-automata's meta engine (lazy DFA): portable, always available.
    Automata,
    /// Hyperscan; only when built with the `hyperscan` feature.
    Hyperscan,
}

impl Engine {
    /// Engines this build can use.
    pub fn available() -> &'static [Engine] {
        if cfg!(feature = "hyperscan") {
            &[Engine::Automata, Engine::Hyperscan]
        } else {
            &[Engine::Automata]
        }
    }
}

/// Bounds on what compilation may cost.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Most distinct regexes in one set.
    pub max_patterns: usize,
    /// Upper bound on the compiled regex program size, summed over patterns.
    pub max_program_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_patterns: 100_000,
            max_program_bytes: 256 << 20,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MatchError {
    #[error("invalid regex {pattern:?}: {message}")]
    InvalidPattern { pattern: String, message: String },
    #[error(
        "regex set too large: the compiled program passes {limit} bytes at pattern {pattern:?} \
         (pattern {index} of {count})"
    )]
    TooLarge {
        pattern: String,
        index: usize,
        count: usize,
        limit: usize,
    },
    #[error("too many regexes: {count} (limit {limit})")]
    TooManyPatterns { count: usize, limit: usize },
    #[error("the {0:?} engine is not in this build (rebuild with --features hyperscan)")]
    Unavailable(Engine),
}

/// A set of regexes, each matched against the whole haystack (RE2 full match).
pub trait RegexSet: Send + Sync {
    /// The lowest-numbered pattern that matches.
    fn first(&self, haystack: &str) -> Option<usize>;
    /// Every pattern that matches, ascending. `out` is cleared first.
    fn all(&self, haystack: &str, out: &mut Vec<usize>);
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A full-match regex set on the given engine, within `limits`.
pub fn compile_set(
    engine: Engine,
    patterns: &[(String, bool)],
    limits: Limits,
) -> Result<Box<dyn RegexSet>, MatchError> {
    budget::check(patterns, limits)?;
    match engine {
        Engine::Automata => Ok(Box::new(AutomataSet::new(patterns)?)),
        #[cfg(feature = "hyperscan")]
        Engine::Hyperscan => Ok(Box::new(HyperscanSet::new(patterns)?)),
        #[cfg(not(feature = "hyperscan"))]
        Engine::Hyperscan => Err(MatchError::Unavailable(engine)),
    }
}
