//! A route's CORS policy compiled for the `cors` filter: origin matchers and the
//! header values it answers with.

use http::HeaderValue;
use trellis_routing::ValueMatcher;

/// A route's policy, ready to answer with.
pub struct Policy {
    pub(crate) origins: Vec<ValueMatcher>,
    pub(crate) methods: Option<HeaderValue>,
    pub(crate) headers: Option<HeaderValue>,
    pub(crate) expose: Option<HeaderValue>,
    pub(crate) max_age: Option<HeaderValue>,
    pub(crate) credentials: bool,
    pub(crate) forward_unmatched: bool,
}

fn joined(list: &[String]) -> Option<HeaderValue> {
    (!list.is_empty())
        .then(|| HeaderValue::from_str(&list.join(",")).ok())
        .flatten()
}

impl Policy {
    /// The policy of a route (validated: its origin patterns compile).
    pub fn new(c: &trellis_config::Cors) -> Policy {
        Policy {
            origins: c
                .allow_origins
                .iter()
                .filter_map(|o| ValueMatcher::new(&o.on_header("origin"), false).ok())
                .collect(),
            methods: joined(&c.allow_methods),
            headers: joined(&c.allow_headers),
            expose: joined(&c.expose_headers),
            max_age: c.max_age.map(|d| HeaderValue::from(d.get().as_secs())),
            credentials: c.allow_credentials,
            forward_unmatched: c.forward_unmatched_preflights,
        }
    }

    pub(crate) fn allows(&self, origin: &HeaderValue) -> bool {
        origin
            .to_str()
            .is_ok_and(|o| self.origins.iter().any(|m| m.matches(Some(o))))
    }
}
