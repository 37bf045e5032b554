//! The portable engine: one lazy DFA (regex-automata's hybrid) over all patterns.
//!
//! The lazy DFA is used directly rather than through the meta regex: the meta regex
//! falls back to the PikeVM, whose per-thread scratch grows with states × patterns
//! (gigabytes at 10,000 patterns). The lazy DFA's cache is bounded and is told never
//! to give up, so a search always completes in time linear in the path.

use crate::budget::error_chain;
use crate::{MatchError, RegexSet};
use regex_automata::hybrid::dfa::{Cache, DFA};
use regex_automata::nfa::thompson::{self, WhichCaptures};
use regex_automata::util::pool::Pool;
use regex_automata::{Anchored, Input, MatchKind, PatternSet};

type CachePool = Pool<Cache, Box<dyn Fn() -> Cache + Send + Sync>>;

struct Compiled {
    dfa: DFA,
    caches: CachePool,
}

impl Compiled {
    fn new(wrapped: &[String], kind: MatchKind) -> Result<Self, String> {
        let dfa = DFA::builder()
            .configure(
                DFA::config()
                    .match_kind(kind)
                    .cache_capacity(4 << 20)
                    .skip_cache_capacity_check(true)
                    .minimum_cache_clear_count(None),
            )
            .thompson(
                thompson::Config::new()
                    .which_captures(WhichCaptures::None)
                    .nfa_size_limit(None),
            )
            .build_many(wrapped)
            .map_err(|e| error_chain(&e))?;
        let factory = dfa.clone();
        let caches: CachePool = Pool::new(Box::new(move || factory.create_cache()));
        Ok(Compiled { dfa, caches })
    }
}

/// Two lazy DFAs over the same patterns. The leftmost-first one answers "lowest
/// matching pattern" in one anchored pass: with every pattern anchored at both ends,
/// leftmost-first priority is pattern order. The all-matches one is only consulted
/// when the caller needs more than the first.
///
/// Patterns with a Unicode word boundary (`\b` in Unicode mode) are kept out of the
/// DFAs, which cannot evaluate them on non-ASCII text, and run one by one instead.
pub struct AutomataSet {
    first: Compiled,
    all: Compiled,
    /// DFA pattern id → caller's pattern id.
    ids: Vec<usize>,
    word_boundary: Vec<(usize, regex::Regex)>,
    len: usize,
}

impl AutomataSet {
    /// `patterns` must have passed [`crate::budget::check`]; each is `(regex, ignore_case)`.
    pub fn new(patterns: &[(String, bool)]) -> Result<Self, MatchError> {
        let mut wrapped = Vec::with_capacity(patterns.len());
        let mut ids = Vec::with_capacity(patterns.len());
        let mut word_boundary = Vec::new();
        for (i, (p, ci)) in patterns.iter().enumerate() {
            let invalid = |message: String| MatchError::InvalidPattern {
                pattern: p.clone(),
                message,
            };
            let flags = if *ci { "i" } else { "" };
            let full = format!("(?{flags}:{p})\\z");
            let hir = regex_syntax::parse(&full).map_err(|e| invalid(error_chain(&e)))?;
            if hir.properties().look_set().contains_word_unicode() {
                let re =
                    regex::Regex::new(&format!("^{full}")).map_err(|e| invalid(error_chain(&e)))?;
                word_boundary.push((i, re));
            } else {
                wrapped.push(full);
                ids.push(i);
            }
        }
        let build = |kind| {
            Compiled::new(&wrapped, kind).map_err(|message| MatchError::InvalidPattern {
                pattern: "<whole set>".into(),
                message,
            })
        };
        Ok(AutomataSet {
            first: build(MatchKind::LeftmostFirst)?,
            all: build(MatchKind::All)?,
            ids,
            word_boundary,
            len: patterns.len(),
        })
    }
}

impl RegexSet for AutomataSet {
    fn first(&self, haystack: &str) -> Option<usize> {
        let input = Input::new(haystack).anchored(Anchored::Yes);
        let mut cache = self.first.caches.get();
        let dfa_hit = self
            .first
            .dfa
            .try_search_fwd(&mut cache, &input)
            // Cannot fail: no quit bytes (word-boundary patterns are elsewhere) and
            // the cache never gives up.
            .expect("lazy DFA search without quit bytes or give-up")
            .map(|m| self.ids[m.pattern().as_usize()]);
        let slow_hit = self
            .word_boundary
            .iter()
            .take_while(|(i, _)| dfa_hit.is_none_or(|d| *i < d))
            .find(|(_, re)| re.is_match(haystack))
            .map(|(i, _)| *i);
        slow_hit.or(dfa_hit)
    }

    fn all(&self, haystack: &str, out: &mut Vec<usize>) {
        out.clear();
        let input = Input::new(haystack).anchored(Anchored::Yes);
        let mut set = PatternSet::new(self.all.dfa.pattern_len());
        let mut cache = self.all.caches.get();
        self.all
            .dfa
            .try_which_overlapping_matches(&mut cache, &input, &mut set)
            .expect("lazy DFA search without quit bytes or give-up");
        out.extend(set.iter().map(|p| self.ids[p.as_usize()]));
        out.extend(
            self.word_boundary
                .iter()
                .filter(|(_, re)| re.is_match(haystack))
                .map(|(i, _)| *i),
        );
        out.sort_unstable();
    }

    fn len(&self) -> usize {
        self.len
    }
}
