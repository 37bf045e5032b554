//! Selection by server name (SNI), compiled at config load: exact names in one map,
//! `*.suffix` names in another, looked up by the name's own suffixes, longest first,
//! and `*` alone last. So the cost is one hash lookup per label whatever the number of
//! entries, and the most specific name wins (exact, then the longest wildcard), as in
//! Envoy's filter-chain match on `server_names`; among equal names the first wins.
//! Used for certificates (`ServerTls`) and for TLS passthrough routes (the proxy).

use std::collections::HashMap;

pub struct ServerNames<T> {
    exact: HashMap<String, usize>,
    wildcard: HashMap<String, usize>,
    any: Option<usize>,
    values: Vec<T>,
}

impl<T> Default for ServerNames<T> {
    fn default() -> Self {
        ServerNames {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            any: None,
            values: Vec::new(),
        }
    }
}

impl<T> ServerNames<T> {
    /// Adds `value` under each of `names` (case-insensitive).
    pub fn insert(&mut self, names: &[String], value: T) {
        let id = self.values.len();
        self.values.push(value);
        for n in names {
            let n = n.to_ascii_lowercase();
            if n == "*" {
                self.any.get_or_insert(id);
                continue;
            }
            match n.strip_prefix('*') {
                // Keyed with the dot: "*.example.com" → ".example.com".
                Some(suffix) => self.wildcard.entry(suffix.to_string()).or_insert(id),
                None => self.exact.entry(n).or_insert(id),
            };
        }
    }

    /// The value for `sni`, which is already lowercase.
    pub fn lookup(&self, sni: &str) -> Option<&T> {
        if let Some(id) = self.exact.get(sni) {
            return Some(&self.values[*id]);
        }
        // ".b.example.com", then ".example.com", then ".com": the name's own label
        // boundaries, so a wildcard always covers at least one whole label.
        sni.match_indices('.')
            .filter(|(i, _)| *i > 0)
            .find_map(|(i, _)| self.wildcard.get(&sni[i..]))
            .or(self.any.as_ref())
            .map(|id| &self.values[*id])
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::ServerNames;

    #[test]
    fn prefers_exact_then_longest_wildcard_then_any() {
        let mut t = ServerNames::default();
        t.insert(&["*.example.com".into()], 0);
        t.insert(&["*.api.example.com".into(), "www.example.com".into()], 1);
        t.insert(&["WWW.example.com".into()], 2);
        assert_eq!(
            t.lookup("www.example.com"),
            Some(&1),
            "exact beats wildcard; first wins"
        );
        assert_eq!(t.lookup("a.api.example.com"), Some(&1), "longest wildcard");
        assert_eq!(t.lookup("a.b.example.com"), Some(&0));
        assert_eq!(t.lookup("example.com"), None);
        assert_eq!(t.lookup("aexample.com"), None);
        assert_eq!(t.lookup("other.org"), None);
        t.insert(&["*".into()], 3);
        assert_eq!(t.lookup("other.org"), Some(&3));
        assert_eq!(
            t.lookup("a.b.example.com"),
            Some(&0),
            "any is the last resort"
        );
    }

    fn name_matches(pattern: &str, sni: &str) -> bool {
        let mut t = ServerNames::default();
        t.insert(&[pattern.to_string()], ());
        t.lookup(&sni.to_ascii_lowercase()).is_some()
    }

    #[test]
    fn names() {
        assert!(name_matches("a.example.com", "a.example.com"));
        assert!(name_matches("A.example.com", "a.example.com"));
        assert!(name_matches("*.example.com", "a.example.com"));
        assert!(name_matches("*.example.com", "a.b.example.com"));
        assert!(!name_matches("*.example.com", "example.com"));
        assert!(!name_matches("*.example.com", "aexample.com"));
        assert!(!name_matches("a.example.com", "b.example.com"));
    }
}
