//! One route's match conditions, compiled once at config load.

use crate::RequestView;
use regex::Regex;
use trellis_config::{HeaderMatcher, RouteMatch};

pub enum PathMatch {
    /// Checked by a compiled index before this route is asked.
    Indexed,
    Exact(String),
    Prefix(String),
    /// Anchored for a full match, as RE2 full match does in Envoy.
    Regex(Regex),
}

pub enum ValueMatch {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Regex(Regex),
    Present(bool),
}

/// Matches a header or query parameter by name and value.
pub struct ValueMatcher {
    pub name: String,
    pub value: ValueMatch,
    pub invert: bool,
}

impl ValueMatcher {
    pub fn new(m: &HeaderMatcher, lowercase_name: bool) -> Result<Self, String> {
        let value = if let Some(v) = &m.exact {
            ValueMatch::Exact(v.clone())
        } else if let Some(v) = &m.prefix {
            ValueMatch::Prefix(v.clone())
        } else if let Some(v) = &m.suffix {
            ValueMatch::Suffix(v.clone())
        } else if let Some(v) = &m.regex {
            ValueMatch::Regex(full_match(v, false)?)
        } else if let Some(p) = m.present {
            ValueMatch::Present(p)
        } else {
            return Err(format!("matcher for {:?} has no value form", m.name));
        };
        let name = if lowercase_name {
            m.name.to_ascii_lowercase()
        } else {
            m.name.clone()
        };
        Ok(ValueMatcher {
            name,
            value,
            invert: m.invert,
        })
    }

    /// `value` is None when the header or parameter is absent.
    pub fn matches(&self, value: Option<&str>) -> bool {
        let hit = match (&self.value, value) {
            (ValueMatch::Present(want), v) => v.is_some() == *want,
            (_, None) => false,
            (ValueMatch::Exact(e), Some(v)) => v == e,
            (ValueMatch::Prefix(p), Some(v)) => v.starts_with(p.as_str()),
            (ValueMatch::Suffix(s), Some(v)) => v.ends_with(s.as_str()),
            (ValueMatch::Regex(r), Some(v)) => r.is_match(v),
        };
        hit != self.invert
    }
}

pub fn full_match(pattern: &str, ignore_case: bool) -> Result<Regex, String> {
    let flags = if ignore_case { "(?i)" } else { "" };
    regex::RegexBuilder::new(&format!("^{flags}(?:{pattern})$"))
        .size_limit(1 << 20)
        .build()
        .map_err(|e| format!("invalid regex {pattern:?}: {e}"))
}

pub struct CompiledRoute {
    pub path: PathMatch,
    pub ignore_case: bool,
    pub methods: Vec<http::Method>,
    pub headers: Vec<ValueMatcher>,
    pub query_params: Vec<ValueMatcher>,
}

impl CompiledRoute {
    /// The route's conditions, path included.
    pub fn new(m: &RouteMatch) -> Result<Self, String> {
        Self::build(m, false)
    }

    /// The route's conditions except the path, which a compiled index checks.
    pub fn without_path(m: &RouteMatch) -> Result<Self, String> {
        Self::build(m, true)
    }

    fn build(m: &RouteMatch, indexed: bool) -> Result<Self, String> {
        let fold = |s: &String| {
            if m.ignore_case {
                s.to_ascii_lowercase()
            } else {
                s.clone()
            }
        };
        let path = if indexed {
            PathMatch::Indexed
        } else if let Some(p) = &m.path {
            PathMatch::Exact(fold(p))
        } else if let Some(p) = &m.prefix {
            PathMatch::Prefix(fold(p))
        } else if let Some(r) = &m.regex {
            PathMatch::Regex(full_match(r, m.ignore_case)?)
        } else {
            return Err("no path match".into());
        };
        let methods = m
            .methods
            .iter()
            .map(|s| {
                http::Method::from_bytes(s.to_ascii_uppercase().as_bytes())
                    .map_err(|_| format!("invalid method {s:?}"))
            })
            .collect::<Result<_, _>>()?;
        let headers = m
            .headers
            .iter()
            .map(|h| ValueMatcher::new(h, true))
            .collect::<Result<_, _>>()?;
        let query_params = m
            .query_params
            .iter()
            .map(|h| ValueMatcher::new(h, false))
            .collect::<Result<_, _>>()?;
        Ok(CompiledRoute {
            path,
            ignore_case: m.ignore_case,
            methods,
            headers,
            query_params,
        })
    }

    pub fn matches(&self, req: &RequestView<'_>) -> bool {
        self.path_matches(req.path) && self.matches_except_path(req)
    }

    pub fn matches_except_path(&self, req: &RequestView<'_>) -> bool {
        (self.methods.is_empty() || self.methods.contains(req.method))
            && self
                .headers
                .iter()
                .all(|h| h.matches(header_value(req, &h.name).as_deref()))
            && self
                .query_params
                .iter()
                .all(|q| q.matches(query_value(req.query, &q.name)))
    }

    fn path_matches(&self, path: &str) -> bool {
        match &self.path {
            PathMatch::Indexed => true,
            PathMatch::Regex(r) => r.is_match(path),
            PathMatch::Exact(e) if self.ignore_case => path.eq_ignore_ascii_case(e),
            PathMatch::Exact(e) => path == e,
            PathMatch::Prefix(p) if self.ignore_case => path
                .get(..p.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(p)),
            PathMatch::Prefix(p) => path.starts_with(p.as_str()),
        }
    }
}

/// Envoy joins repeated headers with `,` before matching. `:authority` and
/// `:method` are readable as pseudo-headers.
fn header_value<'a>(req: &RequestView<'a>, name: &str) -> Option<std::borrow::Cow<'a, str>> {
    use std::borrow::Cow;
    match name {
        ":authority" | "host" => return Some(Cow::Borrowed(req.authority)),
        ":method" => return Some(Cow::Borrowed(req.method.as_str())),
        ":path" => return Some(Cow::Borrowed(req.path)),
        _ => {}
    }
    let mut values = req.headers.get_all(name).iter();
    let first = values.next()?.to_str().ok()?;
    let mut joined: Option<String> = None;
    for v in values {
        let s = joined.get_or_insert_with(|| first.to_string());
        s.push(',');
        s.push_str(v.to_str().ok()?);
    }
    Some(joined.map_or(Cow::Borrowed(first), Cow::Owned))
}

/// First value of a query parameter; a bare `?flag` has the empty value.
pub fn query_value<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}
