//! Verified tokens, remembered so that a client sending the same token again is not
//! verified again (Envoy's `jwt_cache_config`, on by default for Istio): a hit skips
//! the signature, never the time checks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::{Outputs, Verified, CLOCK_SKEW_SECONDS};

/// Envoy's default `jwt_cache_size`.
const CAPACITY: usize = 100;

pub(crate) struct Entry {
    pub rule: usize,
    pub verified: Arc<Verified>,
    pub outputs: Outputs,
    exp: Option<u64>,
    nbf: Option<u64>,
}

impl Entry {
    pub fn new(rule: usize, verified: Arc<Verified>, outputs: Outputs) -> Entry {
        // As verification read them (a number, checked there; fractions rounded).
        let time = |k: &str| {
            verified
                .claims
                .get(k)
                .and_then(serde_json::Value::as_f64)
                .map(|t| t.round() as u64)
        };
        Entry {
            rule,
            exp: time("exp"),
            nbf: time("nbf"),
            verified,
            outputs,
        }
    }

    /// Whether the token is still within its validity, as verification checks it.
    fn current(&self, now: u64) -> bool {
        self.exp.is_none_or(|exp| exp + CLOCK_SKEW_SECONDS >= now)
            && self.nbf.is_none_or(|nbf| nbf <= now + CLOCK_SKEW_SECONDS)
    }
}

#[derive(Default)]
pub(crate) struct Cache {
    entries: Mutex<HashMap<String, Arc<Entry>>>,
}

impl Cache {
    pub fn get(&self, token: &str) -> Option<Arc<Entry>> {
        let now = jsonwebtoken::get_current_timestamp();
        let mut entries = self.entries.lock().unwrap();
        let e = entries.get(token)?.clone();
        if e.current(now) {
            Some(e)
        } else {
            entries.remove(token);
            None
        }
    }

    pub fn insert(&self, token: &str, entry: Entry) -> Arc<Entry> {
        let mut entries = self.entries.lock().unwrap();
        if entries.len() >= CAPACITY {
            // Whole-cache eviction keeps this simple and bounded; a busy sidecar sees
            // few distinct tokens at once.
            entries.clear();
        }
        let entry = Arc::new(entry);
        entries.insert(token.to_string(), entry.clone());
        entry
    }
}
