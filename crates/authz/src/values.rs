//! Every value of one attribute (all principals, all paths, ...) across a policy set,
//! matched against a request once: sequentially, as Istio's Envoy filter does, or
//! compiled into one `trellis-matcher` index (exact map, prefix trie, one automaton for
//! the suffixes). Rules then read the per-value results by id.

use crate::matcher::StrMatch;
use std::collections::HashMap;
use trellis_matcher::{Engine, Limits, PathIndex, PathPattern, PathRule};

/// How the value sets are matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatchMode {
    /// Each value compared in turn.
    Sequential,
    /// One compiled index per attribute.
    Compiled(Engine),
}

#[derive(Default)]
pub struct ValueSet {
    values: Vec<StrMatch>,
    ids: HashMap<String, usize>,
    index: Option<PathIndex>,
    /// Value id of each rule in the index (`*` values stay outside it).
    index_ids: Vec<usize>,
    /// Ids of `*` values (any non-empty value).
    present: Vec<usize>,
}

impl ValueSet {
    /// The id of a value form (`abc`, `abc*`, `*abc`, `*`), shared by equal forms.
    pub fn id(&mut self, form: &str) -> usize {
        if let Some(id) = self.ids.get(form) {
            return *id;
        }
        let id = self.values.len();
        self.values.push(StrMatch::parse(form));
        self.ids.insert(form.to_string(), id);
        id
    }

    /// As [`id`](Self::id), for a path (which may be a template).
    pub fn path_id(&mut self, form: &str) -> usize {
        if let Some(id) = self.ids.get(form) {
            return *id;
        }
        let id = self.values.len();
        self.values.push(StrMatch::parse_path(form));
        self.ids.insert(form.to_string(), id);
        id
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn compile(&mut self, mode: MatchMode) -> Result<(), String> {
        let MatchMode::Compiled(engine) = mode else {
            return Ok(());
        };
        let mut rules = Vec::with_capacity(self.values.len());
        self.present.clear();
        self.index_ids.clear();
        for (id, v) in self.values.iter().enumerate() {
            let pattern = match v {
                StrMatch::Exact(e) => PathPattern::Exact(e.clone()),
                StrMatch::Prefix(p) => PathPattern::Prefix(p.clone()),
                StrMatch::Suffix(s) => PathPattern::Regex(format!("[\\s\\S]*{}", regex::escape(s))),
                StrMatch::Template(re, _) => PathPattern::Regex(re.clone()),
                StrMatch::Present => {
                    self.present.push(id);
                    continue;
                }
            };
            self.index_ids.push(id);
            rules.push(PathRule {
                pattern,
                ignore_case: false,
            });
        }
        self.index =
            Some(PathIndex::build(&rules, engine, Limits::default()).map_err(|e| e.to_string())?);
        Ok(())
    }

    /// Marks in `hits` (indexed by id) every value that `value` matches.
    pub fn mark(&self, value: &str, hits: &mut [bool]) {
        match &self.index {
            Some(index) => {
                // Refusing every candidate makes the index report all that match.
                index.first_match(value, |rule| {
                    hits[self.index_ids[rule]] = true;
                    false
                });
                if !value.is_empty() {
                    for id in &self.present {
                        hits[*id] = true;
                    }
                }
            }
            None => {
                for (id, v) in self.values.iter().enumerate() {
                    if v.is(value) {
                        hits[id] = true;
                    }
                }
            }
        }
    }
}
