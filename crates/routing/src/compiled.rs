//! Route selection through one compiled index per virtual host.

use crate::rules::CompiledRoute;
use crate::{DomainTable, RequestView, RouteMatcher};
use trellis_config::{RouteMatch, VirtualHost};
use trellis_matcher::{Engine, Limits, MatchError, PathIndex, PathPattern, PathRule};

/// Envoy's answers (first matching route in order) from one index lookup: the index
/// finds path matches for all routes at once, and only those routes' remaining
/// conditions (methods, headers, query parameters) are checked, in order.
pub struct CompiledMatcher {
    domains: DomainTable,
    hosts: Vec<(PathIndex, Vec<CompiledRoute>)>,
}

impl CompiledMatcher {
    /// Compiles a validated route table. Errors name the virtual host, the route and the
    /// pattern.
    pub fn new(
        virtual_hosts: &[VirtualHost],
        engine: Engine,
        max_regex_program_bytes: usize,
    ) -> Result<Self, String> {
        let limits = Limits {
            max_program_bytes: max_regex_program_bytes,
            ..Limits::default()
        };
        let domains = DomainTable::new(virtual_hosts.iter().map(|v| v.domains.as_slice()));
        let mut hosts = Vec::with_capacity(virtual_hosts.len());
        for (i, vh) in virtual_hosts.iter().enumerate() {
            let mut conditions = Vec::with_capacity(vh.routes.len());
            let mut rules = Vec::with_capacity(vh.routes.len());
            for (j, r) in vh.routes.iter().enumerate() {
                conditions.push(
                    CompiledRoute::without_path(&r.matches)
                        .map_err(|e| format!("virtual_hosts[{i}].routes[{j}].match: {e}"))?,
                );
                rules.push(path_rule(&r.matches));
            }
            let index = PathIndex::build(&rules, engine, limits)
                .map_err(|e| locate(&format!("virtual_hosts[{i}]"), &vh.routes, e))?;
            hosts.push((index, conditions));
        }
        Ok(CompiledMatcher { domains, hosts })
    }
}

fn path_rule(m: &RouteMatch) -> PathRule {
    let pattern = if let Some(p) = &m.path {
        PathPattern::Exact(p.clone())
    } else if let Some(p) = &m.prefix {
        PathPattern::Prefix(p.clone())
    } else if let Some(r) = &m.regex {
        PathPattern::Regex(r.clone())
    } else {
        PathPattern::Any
    };
    PathRule {
        pattern,
        ignore_case: m.ignore_case,
    }
}

/// Points an index error at the first route that uses the offending pattern.
fn locate(host: &str, routes: &[trellis_config::Route], e: MatchError) -> String {
    let pattern = match &e {
        MatchError::InvalidPattern { pattern, .. } | MatchError::TooLarge { pattern, .. } => {
            Some(pattern)
        }
        _ => None,
    };
    let route = pattern.and_then(|p| {
        routes
            .iter()
            .position(|r| r.matches.regex.as_ref() == Some(p))
    });
    match route {
        Some(j) => format!("{host}.routes[{j}].match.regex: {e}"),
        None => format!("{host}.routes: {e}"),
    }
}

impl RouteMatcher for CompiledMatcher {
    fn select_virtual_host(&self, authority: &str) -> Option<usize> {
        self.domains.select(authority)
    }

    fn select_route(&self, virtual_host: usize, request: &RequestView<'_>) -> Option<usize> {
        let (index, routes) = self.hosts.get(virtual_host)?;
        index.first_match(request.path, |i| routes[i].matches_except_path(request))
    }
}
