//! The reference for differential tests and the fuzz target: plain sequential first
//! match with the `regex` crate, one route at a time, as Envoy does.

use trellis_matcher::{PathPattern, PathRule};

/// What Envoy does: each route on its own, in order.
pub struct Sequential(Vec<(PathRule, Option<regex::Regex>)>);

impl Sequential {
    pub fn new(rules: &[PathRule]) -> Option<Self> {
        let mut out = Vec::new();
        for r in rules {
            let re = match &r.pattern {
                PathPattern::Regex(p) => {
                    let flags = if r.ignore_case { "(?i)" } else { "" };
                    // An invalid generated pattern makes the table invalid for all.
                    Some(regex::Regex::new(&format!("^{flags}(?:{p})$")).ok()?)
                }
                _ => None,
            };
            // Patterns that are valid only once wrapped must be refused, like the
            // index refuses them.
            if let PathPattern::Regex(p) = &r.pattern {
                regex::Regex::new(p).ok()?;
            }
            out.push((r.clone(), re));
        }
        Some(Sequential(out))
    }

    pub fn first(&self, path: &str, accept: impl Fn(usize) -> bool) -> Option<usize> {
        self.0.iter().enumerate().position(|(i, (rule, re))| {
            let hit = match &rule.pattern {
                PathPattern::Exact(e) if rule.ignore_case => path.eq_ignore_ascii_case(e),
                PathPattern::Exact(e) => path == e,
                PathPattern::Prefix(p) if rule.ignore_case => path
                    .as_bytes()
                    .get(..p.len())
                    .is_some_and(|h| h.eq_ignore_ascii_case(p.as_bytes())),
                PathPattern::Prefix(p) => path.starts_with(p.as_str()),
                PathPattern::Regex(_) => re.as_ref().unwrap().is_match(path),
                PathPattern::Any => true,
            };
            hit && accept(i)
        })
    }
}
