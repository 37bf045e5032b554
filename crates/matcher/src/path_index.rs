//! The compiled form of an ordered list of path rules.

use crate::trie::Trie;
use crate::{compile_set, Engine, Limits, MatchError, RegexSet};
use std::collections::HashMap;

/// How one rule matches the request path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathPattern {
    Exact(String),
    Prefix(String),
    /// Full match (the whole path), in the Rust `regex` syntax.
    Regex(String),
    /// No path condition.
    Any,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathRule {
    pub pattern: PathPattern,
    /// ASCII case-insensitive for exact and prefix (Envoy's `case_sensitive: false`,
    /// Istio's `ignoreUriCase`); `(?i)` for regexes.
    pub ignore_case: bool,
}

/// Answers "first rule in order whose path matches and that the caller accepts".
pub struct PathIndex {
    exact: HashMap<String, Vec<u32>>,
    /// Keys lowercased.
    exact_folded: HashMap<String, Vec<u32>>,
    prefixes: Trie,
    /// Keys lowercased.
    prefixes_folded: Trie,
    any: Vec<u32>,
    regexes: Option<Box<dyn RegexSet>>,
    /// Distinct (pattern, ignore_case) → the rules that use it, ascending. Patterns are
    /// numbered in order of first use, so a lower pattern id has a lower first rule.
    regex_rules: Vec<Vec<u32>>,
    len: usize,
}

impl PathIndex {
    pub fn build(rules: &[PathRule], engine: Engine, limits: Limits) -> Result<Self, MatchError> {
        let mut index = PathIndex {
            exact: HashMap::new(),
            exact_folded: HashMap::new(),
            prefixes: Trie::default(),
            prefixes_folded: Trie::default(),
            any: Vec::new(),
            regexes: None,
            regex_rules: Vec::new(),
            len: rules.len(),
        };
        let mut patterns: Vec<(String, bool)> = Vec::new();
        let mut pattern_ids: HashMap<(String, bool), usize> = HashMap::new();
        for (i, rule) in rules.iter().enumerate() {
            let id = i as u32;
            let fold = rule.ignore_case;
            match &rule.pattern {
                PathPattern::Exact(p) if fold => index
                    .exact_folded
                    .entry(p.to_ascii_lowercase())
                    .or_default()
                    .push(id),
                PathPattern::Exact(p) => index.exact.entry(p.clone()).or_default().push(id),
                PathPattern::Prefix(p) if fold => index
                    .prefixes_folded
                    .insert(p.to_ascii_lowercase().as_bytes(), id),
                PathPattern::Prefix(p) => index.prefixes.insert(p.as_bytes(), id),
                PathPattern::Regex(r) => {
                    let key = (r.clone(), fold);
                    let next = patterns.len();
                    let pid = *pattern_ids.entry(key.clone()).or_insert(next);
                    if pid == next {
                        patterns.push(key);
                        index.regex_rules.push(Vec::new());
                    }
                    index.regex_rules[pid].push(id);
                }
                PathPattern::Any => index.any.push(id),
            }
        }
        if !patterns.is_empty() {
            index.regexes = Some(compile_set(engine, &patterns, limits)?);
        }
        Ok(index)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The lowest rule index whose path pattern matches `path` and for which `accept`
    /// returns true. `accept` must be a pure function of the rule index; it may be
    /// asked about a rule more than once and about rules after the answer.
    pub fn first_match(&self, path: &str, mut accept: impl FnMut(usize) -> bool) -> Option<usize> {
        let mut best = u32::MAX;
        let mut consider = |rules: &[u32], best: &mut u32| {
            for &r in rules {
                if r >= *best {
                    break;
                }
                if accept(r as usize) {
                    *best = r;
                    break;
                }
            }
        };
        if let Some(rules) = self.exact.get(path) {
            consider(rules, &mut best);
        }
        if !self.exact_folded.is_empty() {
            if let Some(rules) = self.exact_folded.get(&path.to_ascii_lowercase()) {
                consider(rules, &mut best);
            }
        }
        self.prefixes
            .walk(path.as_bytes(), false, |rules| consider(rules, &mut best));
        self.prefixes_folded
            .walk(path.as_bytes(), true, |rules| consider(rules, &mut best));
        consider(&self.any, &mut best);

        let Some(set) = &self.regexes else {
            return (best != u32::MAX).then_some(best as usize);
        };
        // No regex rule can beat a better answer already found.
        if self.regex_rules[0][0] < best {
            if let Some(p) = set.first(path) {
                let rules = &self.regex_rules[p];
                let before = best;
                consider(&rules[..1], &mut best);
                if rules[0] < before && best == before {
                    {
                        // The lowest matching rule was refused: any other matching
                        // pattern may hold the answer, so look at all of them.
                        let mut matched = Vec::new();
                        set.all(path, &mut matched);
                        for p in matched {
                            consider(&self.regex_rules[p], &mut best);
                        }
                    }
                }
            }
        }
        (best != u32::MAX).then_some(best as usize)
    }
}
