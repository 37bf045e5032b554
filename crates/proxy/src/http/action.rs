//! What a route does, with its clusters resolved: forward (weighted clusters,
//! rewrites, timeout, retries, mirror, hash policy), redirect, or answer directly.

use bytes::Bytes;
use http::header::HeaderValue;
use http::StatusCode;
use trellis_config::{Redirect, Route, RouteMatch};

use super::forward::{Forward, RetryRule, Target};
use super::headers::Mutations;
use crate::cluster::ClusterSet;

/// What a route does.
pub enum Action {
    Forward(Forward),
    Redirect(Redirect, Option<usize>),
    Direct(StatusCode, Bytes),
}

/// The action of a route, with its clusters resolved.
pub fn action(r: &Route, clusters: &ClusterSet) -> Action {
    let prefix_len = match_prefix_len(&r.matches);
    if let Some(d) = &r.direct_response {
        let status = StatusCode::from_u16(d.status).unwrap_or(StatusCode::OK);
        return Action::Direct(status, Bytes::from(d.body.clone()));
    }
    if let Some(rd) = &r.redirect {
        return Action::Redirect(rd.clone(), prefix_len);
    }
    let a = r.route.as_ref().expect("validated: a route has one action");
    let targets: Vec<Target> = match &a.cluster {
        Some(c) => vec![Target {
            cluster: named(clusters, c),
            weight: 1,
            request: Mutations::default(),
            response: Mutations::default(),
        }],
        None => a
            .weighted_clusters
            .iter()
            .filter(|w| w.weight > 0)
            .map(|w| Target {
                cluster: named(clusters, &w.name),
                weight: w.weight,
                request: Mutations::new(&w.request_headers_to_add, &w.request_headers_to_remove),
                response: Mutations::new(&w.response_headers_to_add, &w.response_headers_to_remove),
            })
            .collect(),
    };
    Action::Forward(Forward {
        total_weight: targets.iter().map(|t| t.weight).sum(),
        targets,
        prefix_rewrite: a.prefix_rewrite.clone().map(|p| (prefix_len, p)),
        // Validated: the pattern compiles.
        regex_rewrite: a.regex_rewrite.as_ref().and_then(|r| {
            Some((
                regex::Regex::new(&r.pattern).ok()?,
                envoy_substitution(&r.substitution),
            ))
        }),
        host_rewrite: a
            .host_rewrite
            .as_ref()
            .and_then(|h| HeaderValue::from_str(h).ok()),
        timeout: Some(a.timeout.get()).filter(|t| !t.is_zero()),
        retry: a.retry_policy.as_ref().map(RetryRule::new),
        mirror: a
            .request_mirror
            .as_ref()
            .map(|m| (named(clusters, &m.cluster), m.percent)),
        hash_policy: a.hash_policy.clone(),
    })
}

/// The cluster a route names (validated: it exists).
pub(crate) fn named(clusters: &ClusterSet, name: &str) -> crate::cluster::ClusterRef {
    clusters
        .get(name)
        .cloned()
        .unwrap_or_else(|| panic!("validated: cluster {name:?} exists"))
}

/// Envoy's substitution (`\1` is group 1) in the regex crate's form (`${1}`), with a
/// literal `$` kept literal.
fn envoy_substitution(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '$' => out.push_str("$$"),
            '\\' if chars.peek().is_some_and(char::is_ascii_digit) => {
                let mut n = String::new();
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    n.push(*d);
                    chars.next();
                }
                out.push_str(&format!("${{{n}}}"));
            }
            c => out.push(c),
        }
    }
    out
}

fn match_prefix_len(m: &RouteMatch) -> Option<usize> {
    m.prefix.as_ref().map(|p| p.len())
}
