//! Virtual host and route selection with Envoy semantics.
//!
//! The proxy asks a [`RouteMatcher`] two questions per request: which virtual host
//! serves this authority, and which route (first match in order) serves this request.
//! [`SequentialMatcher`] answers them the way Envoy does, one route at a time;
//! [`CompiledMatcher`] compiles each route table into one index (exact map, prefix
//! trie, one multi-pattern regex automaton) and gives the same answers in one pass.
//! Virtual hosts are found through [`DomainTable`]'s hash maps in both.

mod compiled;
mod domains;
mod rules;

pub use compiled::CompiledMatcher;
pub use domains::DomainTable;
pub use rules::{CompiledRoute, PathMatch, ValueMatch, ValueMatcher};
pub use trellis_matcher::Engine;

use http::{HeaderMap, Method};
use trellis_config::VirtualHost;

/// What routing looks at in a request.
pub struct RequestView<'a> {
    pub method: &'a Method,
    /// Host header or :authority, as sent (may include a port).
    pub authority: &'a str,
    /// Path without the query string.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
}

/// Selects a virtual host and a route; indices refer to the config's order.
pub trait RouteMatcher: Send + Sync + 'static {
    fn select_virtual_host(&self, authority: &str) -> Option<usize>;
    fn select_route(&self, virtual_host: usize, request: &RequestView<'_>) -> Option<usize>;
}

/// Envoy's behaviour: domains by exact, suffix, prefix, then `*`; routes in order,
/// first match wins.
pub struct SequentialMatcher {
    domains: DomainTable,
    routes: Vec<Vec<CompiledRoute>>,
}

impl SequentialMatcher {
    /// Compiles a validated route table. Errors name the virtual host and route index.
    pub fn new(virtual_hosts: &[VirtualHost]) -> Result<Self, String> {
        let domains = DomainTable::new(virtual_hosts.iter().map(|v| v.domains.as_slice()));
        let mut routes = Vec::with_capacity(virtual_hosts.len());
        for (i, vh) in virtual_hosts.iter().enumerate() {
            let mut compiled = Vec::with_capacity(vh.routes.len());
            for (j, r) in vh.routes.iter().enumerate() {
                compiled.push(
                    CompiledRoute::new(&r.matches)
                        .map_err(|e| format!("virtual_hosts[{i}].routes[{j}].match: {e}"))?,
                );
            }
            routes.push(compiled);
        }
        Ok(SequentialMatcher { domains, routes })
    }
}

impl RouteMatcher for SequentialMatcher {
    fn select_virtual_host(&self, authority: &str) -> Option<usize> {
        self.domains.select(authority)
    }

    fn select_route(&self, virtual_host: usize, request: &RequestView<'_>) -> Option<usize> {
        self.routes
            .get(virtual_host)?
            .iter()
            .position(|r| r.matches(request))
    }
}

#[cfg(test)]
mod tests;
