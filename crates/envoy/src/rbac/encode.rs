//! Trellis authorization → Envoy RBAC filters (the shape is in the module doc).

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::core::v3::{CidrRange, TypedExtensionConfig};
use envoy_types::pb::envoy::config::rbac::v3::{
    permission::{Rule, Set as Rules},
    principal::{Authenticated, Identifier, Set as Ids},
    rbac::Action,
    Permission, Policy, Principal,
};
use envoy_types::pb::envoy::config::route::v3::{header_matcher, HeaderMatcher};
use envoy_types::pb::envoy::extensions::path::r#match::uri_template::v3::UriTemplateMatchConfig;
use envoy_types::pb::envoy::r#type::matcher::v3::{
    list_matcher,
    metadata_matcher::{path_segment::Segment, PathSegment},
    path_matcher,
    string_matcher::MatchPattern,
    value_matcher, ListMatcher, MetadataMatcher, PathMatcher, RegexMatcher, StringMatcher,
    ValueMatcher,
};
use envoy_types::pb::google::protobuf::{Any, UInt32Value};
use trellis_config::{self as tc, AuthorizationAction as A};

use super::forms::{segment_regex, string_matcher};
use crate::structs::{HttpRbac, NetworkRbac, RbacRules};

type Result<T> = std::result::Result<T, String>;

/// The HTTP RBAC filters' configs, in filter order.
pub(crate) fn http_filters(a: &tc::Authorization) -> Result<Vec<Any>> {
    Ok(by_action(a)?
        .into_iter()
        .map(|(action, rules, shadow_rules)| {
            crate::any(
                super::HTTP_RBAC_TYPE,
                &HttpRbac {
                    rules,
                    shadow_rules,
                    shadow_rules_stat_prefix: dry_run_prefix(action),
                },
            )
        })
        .collect())
}

/// The network RBAC filters' configs for a TCP chain of listener `name`, with the
/// policies as they read on a connection.
pub(crate) fn network_filters(a: &tc::Authorization, name: &str) -> Result<Vec<Any>> {
    Ok(by_action(&super::tcp_reading(a))?
        .into_iter()
        .map(|(action, rules, shadow_rules)| {
            crate::any(
                super::NETWORK_RBAC_TYPE,
                &NetworkRbac {
                    rules,
                    shadow_rules,
                    stat_prefix: format!("{name}."),
                    shadow_rules_stat_prefix: dry_run_prefix(action),
                },
            )
        })
        .collect())
}

fn dry_run_prefix(action: A) -> String {
    match action {
        A::Allow => "istio_dry_run_allow_",
        A::Deny => "istio_dry_run_deny_",
        A::Audit => "istio_dry_run_audit_",
    }
    .into()
}

type Filter = (A, Option<RbacRules>, Option<RbacRules>);

/// A filter per action that has policies: the enforced ones and the dry-run ones.
fn by_action(a: &tc::Authorization) -> Result<Vec<Filter>> {
    let mut out = Vec::new();
    for (action, envoy) in [
        (A::Audit, Action::Log),
        (A::Deny, Action::Deny),
        (A::Allow, Action::Allow),
    ] {
        let mut sets = [None::<RbacRules>, None];
        for p in a.policies.iter().filter(|p| p.action == action) {
            let set = sets[usize::from(p.dry_run)].get_or_insert_with(|| RbacRules {
                action: envoy as i32,
                policies: BTreeMap::new(),
            });
            for (name, policy) in policies(p)? {
                if set.policies.insert(name.clone(), policy).is_some() {
                    return Err(format!("two policies named {name:?}"));
                }
            }
        }
        let [rules, shadow] = sets;
        if rules.is_some() || shadow.is_some() {
            out.push((action, rules, shadow));
        }
    }
    Ok(out)
}

fn policies(p: &tc::AuthorizationPolicy) -> Result<Vec<(String, Policy)>> {
    if p.rules.is_empty() {
        return Ok(vec![(p.name.clone(), never())]);
    }
    p.rules
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let path = format!("policy {}: rules[{i}]", p.name);
            Ok((
                format!("{}{}{i}]", p.name, super::RULE),
                rule(r).map_err(|e| format!("{path}: {e}"))?,
            ))
        })
        .collect()
}

/// A policy that matches nothing: an ALLOW policy without rules.
pub(super) fn never() -> Policy {
    Policy {
        permissions: vec![Permission::not(Permission::any())],
        principals: vec![Principal::any()],
        ..Default::default()
    }
}

/// The and/or/not tree both sides of a policy are built of.
pub(super) trait Node: Sized {
    fn any() -> Self;
    fn and(v: Vec<Self>) -> Self;
    fn or(v: Vec<Self>) -> Self;
    fn not(v: Self) -> Self;
}

impl Node for Permission {
    fn any() -> Self {
        Permission {
            rule: Some(Rule::Any(true)),
        }
    }
    fn and(rules: Vec<Self>) -> Self {
        Permission {
            rule: Some(Rule::AndRules(Rules { rules })),
        }
    }
    fn or(rules: Vec<Self>) -> Self {
        Permission {
            rule: Some(Rule::OrRules(Rules { rules })),
        }
    }
    fn not(p: Self) -> Self {
        Permission {
            rule: Some(Rule::NotRule(Box::new(p))),
        }
    }
}

impl Node for Principal {
    fn any() -> Self {
        Principal {
            identifier: Some(Identifier::Any(true)),
        }
    }
    fn and(ids: Vec<Self>) -> Self {
        Principal {
            identifier: Some(Identifier::AndIds(Ids { ids })),
        }
    }
    fn or(ids: Vec<Self>) -> Self {
        Principal {
            identifier: Some(Identifier::OrIds(Ids { ids })),
        }
    }
    fn not(p: Self) -> Self {
        Principal {
            identifier: Some(Identifier::NotId(Box::new(p))),
        }
    }
}

/// A field's items: `or` of the values, `not(or)` of the `not_` values.
fn field<N: Node>(
    items: &mut Vec<N>,
    values: &[String],
    not_values: &[String],
    leaf: impl Fn(&str) -> Result<N>,
) -> Result<()> {
    let or = |v: &[String]| -> Result<N> {
        Ok(N::or(v.iter().map(|v| leaf(v)).collect::<Result<_>>()?))
    };
    if !values.is_empty() {
        items.push(or(values)?);
    }
    if !not_values.is_empty() {
        items.push(N::not(or(not_values)?));
    }
    Ok(())
}

fn all_or_any<N: Node>(items: Vec<N>) -> N {
    if items.is_empty() {
        N::any()
    } else {
        N::and(items)
    }
}

fn rule(r: &tc::AuthorizationRule) -> Result<Policy> {
    let to = match r.to.is_empty() {
        true => Permission::any(),
        false => Permission::or(
            r.to.iter()
                .map(|t| operation(&t.operation))
                .collect::<Result<_>>()?,
        ),
    };
    let from = match r.from.is_empty() {
        true => Principal::any(),
        false => Principal::or(
            r.from
                .iter()
                .map(|f| source(&f.source))
                .collect::<Result<_>>()?,
        ),
    };
    let (mut permission, mut principal) = (vec![to], vec![from]);
    for c in &r.when {
        condition(c, &mut permission, &mut principal)
            .map_err(|e| format!("when {}: {e}", c.key))?;
    }
    Ok(Policy {
        permissions: vec![Permission::and(permission)],
        principals: vec![Principal::and(principal)],
        ..Default::default()
    })
}

fn operation(o: &tc::RuleOperation) -> Result<Permission> {
    let mut items = Vec::new();
    field(&mut items, &o.methods, &o.not_methods, |v| {
        Ok(header(":method", v, false))
    })?;
    field(&mut items, &o.paths, &o.not_paths, |v| Ok(path(v)))?;
    field(&mut items, &o.ports, &o.not_ports, port)?;
    field(&mut items, &o.hosts, &o.not_hosts, |v| {
        Ok(header(":authority", v, true))
    })?;
    Ok(all_or_any(items))
}

fn source(s: &tc::RuleSource) -> Result<Principal> {
    let mut items = Vec::new();
    field(&mut items, &s.principals, &s.not_principals, |v| {
        Ok(peer(v))
    })?;
    field(
        &mut items,
        &s.request_principals,
        &s.not_request_principals,
        |v| Ok(auth(&["request.auth.principal"], v, false)),
    )?;
    field(&mut items, &s.namespaces, &s.not_namespaces, |v| {
        Ok(namespace(v))
    })?;
    field(
        &mut items,
        &s.service_accounts,
        &s.not_service_accounts,
        service_account,
    )?;
    field(&mut items, &s.trust_domains, &s.not_trust_domains, |v| {
        Ok(trust_domain(v))
    })?;
    field(&mut items, &s.ip_blocks, &s.not_ip_blocks, |v| {
        Ok(Principal {
            identifier: Some(Identifier::DirectRemoteIp(cidr(v)?)),
        })
    })?;
    field(
        &mut items,
        &s.remote_ip_blocks,
        &s.not_remote_ip_blocks,
        |v| {
            Ok(Principal {
                identifier: Some(Identifier::RemoteIp(cidr(v)?)),
            })
        },
    )?;
    Ok(all_or_any(items))
}

/// A `when` condition: on the permission side (the destination, the request's
/// headers, the server name) or on the principal side (the source, the JWT).
fn condition(
    c: &tc::RuleCondition,
    permission: &mut Vec<Permission>,
    principal: &mut Vec<Principal>,
) -> Result<()> {
    if c.values.is_empty() && c.not_values.is_empty() {
        return Err("a condition needs values or not_values".into());
    }
    let (v, nv) = (&c.values, &c.not_values);
    let perm = |leaf: &dyn Fn(&str) -> Result<Permission>, out: &mut Vec<Permission>| {
        field(out, v, nv, leaf)
    };
    let prin = |leaf: &dyn Fn(&str) -> Result<Principal>, out: &mut Vec<Principal>| {
        field(out, v, nv, leaf)
    };
    if let Some(name) = c
        .key
        .strip_prefix("request.headers[")
        .and_then(|k| k.strip_suffix(']'))
    {
        return perm(&|v| Ok(header(name, v, false)), permission);
    }
    if c.key.starts_with(super::CLAIMS) {
        let mut path = vec![super::CLAIMS.to_string()];
        path.extend(
            tc::claim_path(&c.key).ok_or("not of the form request.auth.claims[<name>]...")?,
        );
        let path: Vec<&str> = path.iter().map(String::as_str).collect();
        return prin(&|v| Ok(auth(&path, v, true)), principal);
    }
    match c.key.as_str() {
        "destination.ip" => perm(
            &|v| {
                Ok(Permission {
                    rule: Some(Rule::DestinationIp(cidr(v)?)),
                })
            },
            permission,
        ),
        "destination.port" => perm(&port, permission),
        "connection.sni" => perm(
            &|v| {
                Ok(Permission {
                    rule: Some(Rule::RequestedServerName(string_matcher(v, "", false))),
                })
            },
            permission,
        ),
        "source.ip" => prin(
            &|v| {
                Ok(Principal {
                    identifier: Some(Identifier::DirectRemoteIp(cidr(v)?)),
                })
            },
            principal,
        ),
        "remote.ip" => prin(
            &|v| {
                Ok(Principal {
                    identifier: Some(Identifier::RemoteIp(cidr(v)?)),
                })
            },
            principal,
        ),
        "source.principal" => prin(&|v| Ok(peer(v)), principal),
        "source.namespace" => prin(&|v| Ok(namespace(v)), principal),
        "source.serviceAccount" => prin(&service_account, principal),
        "source.trustDomain" => prin(&|v| Ok(trust_domain(v)), principal),
        k @ ("request.auth.principal" | "request.auth.presenter") => {
            prin(&|v| Ok(auth(&[k], v, false)), principal)
        }
        k @ "request.auth.audiences" => prin(&|v| Ok(auth(&[k], v, true)), principal),
        other => Err(format!("{other:?} is not a condition key Trellis knows")),
    }
}

fn header(name: &str, form: &str, ignore_case: bool) -> Permission {
    Permission {
        rule: Some(Rule::Header(HeaderMatcher {
            name: name.into(),
            header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(
                string_matcher(form, "", ignore_case),
            )),
            ..Default::default()
        })),
    }
}

fn path(form: &str) -> Permission {
    let rule = if form.contains("{*}") || form.contains("{**}") {
        Rule::UriTemplate(TypedExtensionConfig {
            name: super::URI_TEMPLATE.into(),
            typed_config: Some(crate::any(
                super::URI_TEMPLATE_TYPE,
                &UriTemplateMatchConfig {
                    path_template: form.into(),
                },
            )),
        })
    } else {
        Rule::UrlPath(PathMatcher {
            rule: Some(path_matcher::Rule::Path(string_matcher(form, "", false))),
        })
    };
    Permission { rule: Some(rule) }
}

fn port(v: &str) -> Result<Permission> {
    let p: u16 = v
        .parse()
        .map_err(|_| format!("port {v:?} is not a number"))?;
    Ok(Permission {
        rule: Some(Rule::DestinationPort(p.into())),
    })
}

fn cidr(v: &str) -> Result<CidrRange> {
    let (addr, len) = match v.split_once('/') {
        Some((a, l)) => (
            a,
            Some(
                l.parse::<u32>()
                    .map_err(|_| format!("{v:?}: bad prefix length"))?,
            ),
        ),
        None => (v, None),
    };
    let ip: std::net::IpAddr = addr
        .parse()
        .map_err(|_| format!("{v:?} is not an address or CIDR"))?;
    let len = len.unwrap_or(if ip.is_ipv4() { 32 } else { 128 });
    Ok(CidrRange {
        address_prefix: addr.into(),
        prefix_len: Some(UInt32Value { value: len }),
    })
}

fn authenticated(principal_name: StringMatcher) -> Principal {
    Principal {
        identifier: Some(Identifier::Authenticated(Authenticated {
            principal_name: Some(principal_name),
        })),
    }
}

fn regex(r: String) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(MatchPattern::SafeRegex(RegexMatcher {
            regex: r,
            ..Default::default()
        })),
        ignore_case: false,
    }
}

fn peer(form: &str) -> Principal {
    authenticated(string_matcher(form, super::SPIFFE, false))
}

pub(super) fn namespace_regex(form: &str) -> String {
    format!(".*/ns/{}/.*", segment_regex(form))
}

fn namespace(form: &str) -> Principal {
    authenticated(regex(namespace_regex(form)))
}

/// `namespace/name`.
fn service_account(v: &str) -> Result<Principal> {
    let (ns, sa) = v
        .split_once('/')
        .ok_or_else(|| format!("{v:?} is not namespace/name"))?;
    Ok(authenticated(regex(format!(
        "{}[^/]+/ns/{}/sa/{}",
        super::SPIFFE,
        segment_regex(ns),
        segment_regex(sa)
    ))))
}

fn trust_domain(form: &str) -> Principal {
    authenticated(regex(format!(
        "{}{}/ns/.*",
        super::SPIFFE,
        segment_regex(form)
    )))
}

/// A `request.auth.*` attribute of the verified JWT, as Istio's filter writes it: a
/// string, or a list (audiences, claims) of which one value must match.
fn auth(path: &[&str], form: &str, list: bool) -> Principal {
    let string = ValueMatcher {
        match_pattern: Some(value_matcher::MatchPattern::StringMatch(string_matcher(
            form, "", false,
        ))),
    };
    let value = match list {
        false => string,
        true => ValueMatcher {
            match_pattern: Some(value_matcher::MatchPattern::ListMatch(Box::new(
                ListMatcher {
                    match_pattern: Some(list_matcher::MatchPattern::OneOf(Box::new(string))),
                },
            ))),
        },
    };
    #[allow(deprecated)] // `metadata` is what Istio writes; `sourced_metadata` is newer.
    Principal {
        identifier: Some(Identifier::Metadata(MetadataMatcher {
            filter: super::ISTIO_AUTHN.into(),
            path: path
                .iter()
                .map(|k| PathSegment {
                    segment: Some(Segment::Key(k.to_string())),
                })
                .collect(),
            value: Some(value),
            invert: false,
        })),
    }
}
