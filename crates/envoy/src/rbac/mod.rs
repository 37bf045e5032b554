//! AuthorizationPolicy as Envoy's RBAC filters (`envoy.filters.http.rbac` on HTTP,
//! `envoy.filters.network.rbac` on TCP), in the shape Istio gives them, and back into
//! Trellis's model for the proxy's compiled matcher.
//!
//! One RBAC filter per action (AUDIT as `LOG`, then DENY, then ALLOW), dry-run policies
//! as its `shadow_rules`; one RBAC policy per rule, named `<policy>/rule[<i>]` (a policy
//! without rules, which matches nothing, is one never-matching policy under its own
//! name). A rule is one permission and one principal:
//!
//! - permission: `and_rules[ TO, WHEN... ]`, TO being `any` (no `to`) or `or_rules` of
//!   the operations, each `and_rules` of its fields; a field is `or_rules` of its values
//!   and, for `not_` values, `not_rule(or_rules(...))`. The `when` conditions on the
//!   request's destination and headers follow in the same shape.
//! - principal: `and_ids[ FROM, WHEN... ]`, the same with sources, and the conditions
//!   on the source and the request's JWT.
//!
//! Values keep Istio's forms: principals as `authenticated.principal_name` with the
//! `spiffe://` prefix, namespaces, service accounts and trust domains as regular
//! expressions over the SPIFFE ID, request principals and `request.auth.*` as the
//! `istio_authn` metadata Istio's JWT filter writes. The decoder reads exactly this
//! shape and refuses anything else by name.
//!
//! On TCP there is no request: the network filter carries the policies as the proxy
//! reads them on a connection (ALLOW rules naming HTTP attributes dropped, HTTP fields
//! removed from DENY and AUDIT rules), so an Envoy enforcing them is never laxer.

mod decode;
mod encode;
mod forms;

pub(crate) use decode::Reader;
pub(crate) use encode::{http_filters, network_filters};

use trellis_config as tc;

pub(crate) const HTTP_RBAC: &str = "envoy.filters.http.rbac";
pub(crate) const NETWORK_RBAC: &str = "envoy.filters.network.rbac";
pub(crate) const HTTP_RBAC_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC";
pub(crate) const NETWORK_RBAC_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC";
const URI_TEMPLATE: &str = "envoy.path.match.uri_template.uri_template_matcher";
const URI_TEMPLATE_TYPE: &str =
    "type.googleapis.com/envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig";
/// The dynamic metadata namespace of the verified JWT's attributes (Istio's).
const ISTIO_AUTHN: &str = "istio_authn";
const CLAIMS: &str = "request.auth.claims";
const SPIFFE: &str = "spiffe://";
const RULE: &str = "/rule[";

/// The policies as the proxy applies them to a TCP connection (see the module doc).
pub(crate) fn tcp_reading(a: &tc::Authorization) -> tc::Authorization {
    let mut a = a.clone();
    for p in &mut a.policies {
        if p.action == tc::AuthorizationAction::Allow {
            p.rules.retain(|r| !names_http(r));
            continue;
        }
        for r in &mut p.rules {
            for f in &mut r.from {
                f.source.request_principals.clear();
                f.source.not_request_principals.clear();
            }
            for t in &mut r.to {
                let o = &mut t.operation;
                for v in [
                    &mut o.methods,
                    &mut o.not_methods,
                    &mut o.paths,
                    &mut o.not_paths,
                    &mut o.hosts,
                    &mut o.not_hosts,
                ] {
                    v.clear();
                }
            }
            r.when.retain(|c| !http_key(&c.key));
        }
    }
    a
}

fn names_http(r: &tc::AuthorizationRule) -> bool {
    r.to.iter().any(|t| {
        let o = &t.operation;
        [
            &o.methods,
            &o.not_methods,
            &o.paths,
            &o.not_paths,
            &o.hosts,
            &o.not_hosts,
        ]
        .iter()
        .any(|v| !v.is_empty())
    }) || r.from.iter().any(|f| {
        !f.source.request_principals.is_empty() || !f.source.not_request_principals.is_empty()
    }) || r.when.iter().any(|c| http_key(&c.key))
}

/// `request.headers[...]` and `request.auth.*`.
fn http_key(key: &str) -> bool {
    key.starts_with("request.")
}

#[cfg(test)]
mod tests;
