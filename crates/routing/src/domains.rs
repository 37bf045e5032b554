//! Virtual host selection by authority, in Envoy's order of precedence:
//! exact name, then the longest `*.suffix` wildcard, then the longest `prefix.*`
//! wildcard, then `*`.

use std::collections::HashMap;

pub struct DomainTable {
    exact: HashMap<String, usize>,
    /// (suffix after `*`, vhost), longest suffix first.
    suffixes: Vec<(String, usize)>,
    /// (prefix before `*`, vhost), longest prefix first.
    prefixes: Vec<(String, usize)>,
    default: Option<usize>,
}

impl DomainTable {
    pub fn new<'a>(domains: impl Iterator<Item = &'a [String]>) -> Self {
        let mut t = DomainTable {
            exact: HashMap::new(),
            suffixes: Vec::new(),
            prefixes: Vec::new(),
            default: None,
        };
        for (i, list) in domains.enumerate() {
            for d in list {
                let d = d.to_ascii_lowercase();
                if d == "*" {
                    t.default.get_or_insert(i);
                } else if let Some(s) = d.strip_prefix('*') {
                    t.suffixes.push((s.to_string(), i));
                } else if let Some(p) = d.strip_suffix('*') {
                    t.prefixes.push((p.to_string(), i));
                } else {
                    t.exact.entry(d).or_insert(i);
                }
            }
        }
        // Stable sorts keep config order among equally long patterns.
        t.suffixes.sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        t.prefixes.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        t
    }

    /// An exact name with the port as sent wins; then the host without its port
    /// (so `api.*` does not capture `api.example.com:443`); then wildcards that
    /// include a port; then `*`.
    pub fn select(&self, authority: &str) -> Option<usize> {
        // Hosts arrive in lower case nearly always: a copy only for the others.
        let host = match authority.bytes().any(|b| b.is_ascii_uppercase()) {
            true => std::borrow::Cow::Owned(authority.to_ascii_lowercase()),
            false => std::borrow::Cow::Borrowed(authority),
        };
        let host = host.as_ref();
        if let Some(i) = self.exact.get(host) {
            return Some(*i);
        }
        let bare = strip_port(host);
        bare.and_then(|b| self.select_host(b))
            .or_else(|| self.select_host(host))
            .or(self.default)
    }

    fn select_host(&self, host: &str) -> Option<usize> {
        if let Some(i) = self.exact.get(host) {
            return Some(*i);
        }
        // A wildcard must match at least one character (Envoy: `*.foo.com` ≠ `.foo.com`).
        if let Some((_, i)) = self
            .suffixes
            .iter()
            .find(|(s, _)| host.len() > s.len() && host.ends_with(s.as_str()))
        {
            return Some(*i);
        }
        self.prefixes
            .iter()
            .find(|(p, _)| host.len() > p.len() && host.starts_with(p.as_str()))
            .map(|(_, i)| *i)
    }
}

/// `example.com:8080` → `example.com`; `[::1]:80` → `[::1]`; no port → None.
fn strip_port(authority: &str) -> Option<&str> {
    if authority.starts_with('[') {
        let end = authority.find(']')?;
        return (end + 1 < authority.len()).then(|| &authority[..=end]);
    }
    let (host, port) = authority.rsplit_once(':')?;
    port.bytes().all(|b| b.is_ascii_digit()).then_some(host)
}
