//! Refuses a pattern set before the engines compile it: a syntax error or a program
//! that outgrows the budget is reported with the pattern that caused it.

use crate::{Limits, MatchError};
use regex_automata::nfa::thompson;
use regex_automata::util::syntax;

/// Checks every pattern alone (so the error names it) and sums their program sizes.
/// Each pattern is parsed on its own, so a pattern can never escape the wrapping the
/// engines add around it.
pub fn check(patterns: &[(String, bool)], limits: Limits) -> Result<(), MatchError> {
    if patterns.len() > limits.max_patterns {
        return Err(MatchError::TooManyPatterns {
            count: patterns.len(),
            limit: limits.max_patterns,
        });
    }
    let mut total = 0usize;
    for (index, (pattern, ignore_case)) in patterns.iter().enumerate() {
        let nfa = thompson::Compiler::new()
            .syntax(syntax::Config::new().case_insensitive(*ignore_case))
            .configure(thompson::Config::new().nfa_size_limit(Some(limits.max_program_bytes)))
            .build(pattern)
            .map_err(|e| {
                if e.size_limit().is_some() {
                    MatchError::TooLarge {
                        pattern: pattern.clone(),
                        index,
                        count: patterns.len(),
                        limit: limits.max_program_bytes,
                    }
                } else {
                    MatchError::InvalidPattern {
                        pattern: pattern.clone(),
                        message: error_chain(&e),
                    }
                }
            })?;
        total += nfa.memory_usage();
        if total > limits.max_program_bytes {
            return Err(MatchError::TooLarge {
                pattern: pattern.clone(),
                index,
                count: patterns.len(),
                limit: limits.max_program_bytes,
            });
        }
    }
    Ok(())
}

/// regex-automata keeps the useful part of a syntax error in its source chain.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        message = s.to_string();
        source = s.source();
    }
    message
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string()
}
