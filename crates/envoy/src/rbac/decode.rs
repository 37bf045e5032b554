//! Envoy RBAC filters written in Trellis's (Istio's) shape → Trellis authorization.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::core::v3::CidrRange;
use envoy_types::pb::envoy::config::rbac::v3::{
    permission::Rule, principal::Identifier, rbac::Action, Permission, Policy, Principal,
    Rbac as Rules,
};
use envoy_types::pb::envoy::config::route::v3::header_matcher::HeaderMatchSpecifier;
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as HttpRbac;
use envoy_types::pb::envoy::extensions::filters::network::rbac::v3::Rbac as NetworkRbac;
use envoy_types::pb::envoy::extensions::path::r#match::uri_template::v3::UriTemplateMatchConfig;
use envoy_types::pb::envoy::r#type::matcher::v3::{
    list_matcher, metadata_matcher::path_segment::Segment, path_matcher,
    string_matcher::MatchPattern, value_matcher, MetadataMatcher, StringMatcher,
};
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use trellis_config::{self as tc, AuthorizationAction as A};

use super::encode::{namespace_regex, never};
use super::forms::{form, segment_form};

type Result<T> = std::result::Result<T, String>;

/// Collects the RBAC filters of one chain, in order.
#[derive(Default)]
pub(crate) struct Reader {
    policies: Vec<tc::AuthorizationPolicy>,
    /// (action, dry run) of each set read: one of each.
    seen: Vec<(A, bool)>,
}

impl Reader {
    pub(crate) fn http(&mut self, any: &Any) -> Result<()> {
        if any.type_url != super::HTTP_RBAC_TYPE {
            return Err(format!(
                "expected {}, got {}",
                super::HTTP_RBAC_TYPE,
                any.type_url
            ));
        }
        let r = HttpRbac::decode(any.value.as_slice()).map_err(|e| e.to_string())?;
        if r.matcher.is_some() || r.shadow_matcher.is_some() {
            return Err("matcher and shadow_matcher are not supported (rules only)".into());
        }
        self.rules(r.rules.as_ref(), false, "rules")?;
        self.rules(r.shadow_rules.as_ref(), true, "shadow_rules")
    }

    pub(crate) fn network(&mut self, any: &Any) -> Result<()> {
        if any.type_url != super::NETWORK_RBAC_TYPE {
            return Err(format!(
                "expected {}, got {}",
                super::NETWORK_RBAC_TYPE,
                any.type_url
            ));
        }
        let r = NetworkRbac::decode(any.value.as_slice()).map_err(|e| e.to_string())?;
        if r.matcher.is_some() || r.shadow_matcher.is_some() {
            return Err("matcher and shadow_matcher are not supported (rules only)".into());
        }
        if r.enforcement_type != 0 {
            return Err(
                "enforcement_type: only ONE_TIME_ON_FIRST_BYTE (the decision is per connection)"
                    .into(),
            );
        }
        if r.delay_deny.is_some() {
            return Err("delay_deny is not supported".into());
        }
        self.rules(r.rules.as_ref(), false, "rules")?;
        self.rules(r.shadow_rules.as_ref(), true, "shadow_rules")
    }

    /// The policies read, None without any.
    pub(crate) fn finish(self) -> Option<tc::Authorization> {
        (!self.policies.is_empty()).then_some(tc::Authorization {
            policies: self.policies,
        })
    }

    fn rules(&mut self, rules: Option<&Rules>, dry_run: bool, path: &str) -> Result<()> {
        let Some(rules) = rules else {
            return Ok(());
        };
        let action = match Action::try_from(rules.action) {
            Ok(Action::Allow) => A::Allow,
            Ok(Action::Deny) => A::Deny,
            Ok(Action::Log) => A::Audit,
            _ => {
                return Err(format!(
                    "{path}.action {}: only ALLOW, DENY and LOG",
                    rules.action
                ))
            }
        };
        if self.seen.contains(&(action, dry_run)) {
            // Two ALLOW filters would both have to allow; Istio's model has one set.
            return Err(format!("{path}: a second {action:?} filter"));
        }
        self.seen.push((action, dry_run));
        if rules.audit_logging_options.is_some() {
            return Err(format!("{path}.audit_logging_options is not supported"));
        }
        let mut by_name: BTreeMap<String, Vec<(usize, tc::AuthorizationRule)>> = BTreeMap::new();
        let mut names: Vec<&String> = rules.policies.keys().collect();
        names.sort();
        for name in names {
            let p = &rules.policies[name];
            let ppath = format!("{path}.policies[{name:?}]");
            if *p == never() {
                by_name.entry(name.clone()).or_default();
                continue;
            }
            let (base, index) = split_rule(name).unwrap_or((name, 0));
            let rule = policy(p).map_err(|e| format!("{ppath}.{e}"))?;
            by_name
                .entry(base.to_string())
                .or_default()
                .push((index, rule));
        }
        if by_name.is_empty() && action == A::Allow {
            // ALLOW with no policies allows nothing: one policy that matches nothing.
            by_name.insert("(no policies)".into(), Vec::new());
        }
        for (name, mut rules) in by_name {
            rules.sort_by_key(|(i, _)| *i);
            self.policies.push(tc::AuthorizationPolicy {
                name,
                action,
                dry_run,
                rules: rules.into_iter().map(|(_, r)| r).collect(),
            });
        }
        Ok(())
    }
}

/// `<policy>/rule[<i>]` as the policy and the index.
fn split_rule(name: &str) -> Option<(&str, usize)> {
    let inner = name.strip_suffix(']')?;
    let at = inner.rfind(super::RULE)?;
    let index = inner[at + super::RULE.len()..].parse().ok()?;
    Some((&name[..at], index))
}

fn policy(p: &Policy) -> Result<tc::AuthorizationRule> {
    if p.condition.is_some() || p.checked_condition.is_some() || p.cel_config.is_some() {
        return Err("condition: CEL conditions are not supported".into());
    }
    let ([permission], [principal]) = (p.permissions.as_slice(), p.principals.as_slice()) else {
        return Err("a rule is one permission and one principal".into());
    };
    let mut rule = tc::AuthorizationRule::default();
    permissions(permission, &mut rule).map_err(|e| format!("permissions[0]{e}"))?;
    principals(principal, &mut rule).map_err(|e| format!("principals[0]{e}"))?;
    Ok(rule)
}

/// What a leaf matcher is about.
#[derive(Clone, Debug, PartialEq)]
enum Attr {
    Method,
    Host,
    Path,
    Port,
    Header(String),
    DestinationIp,
    Sni,
    Principal,
    Namespace,
    ServiceAccount,
    TrustDomain,
    SourceIp,
    RemoteIp,
    /// The `istio_authn` metadata path (`request.auth.principal`, ...).
    Auth(Vec<String>),
}

/// A field item: the attribute, whether its values must match (or must not), the values.
type Item = (Attr, bool, Vec<String>);

fn permissions(p: &Permission, rule: &mut tc::AuthorizationRule) -> Result<()> {
    let items = match &p.rule {
        Some(Rule::AndRules(s)) if !s.rules.is_empty() => &s.rules,
        _ => return Err(": and_rules of the operations and conditions".into()),
    };
    match &items[0].rule {
        Some(Rule::Any(true)) => {}
        Some(Rule::OrRules(ops)) if !ops.rules.is_empty() => {
            for (i, op) in ops.rules.iter().enumerate() {
                let path = format!(".and_rules.rules[0].or_rules.rules[{i}]");
                rule.to.push(tc::RuleTo {
                    operation: operation(op).map_err(|e| format!("{path}{e}"))?,
                });
            }
        }
        _ => return Err(".and_rules.rules[0]: any, or or_rules of the operations".into()),
    }
    for (i, item) in items.iter().enumerate().skip(1) {
        let it = permission_item(item).map_err(|e| format!(".and_rules.rules[{i}]{e}"))?;
        condition(it, rule).map_err(|e| format!(".and_rules.rules[{i}]: {e}"))?;
    }
    Ok(())
}

fn principals(p: &Principal, rule: &mut tc::AuthorizationRule) -> Result<()> {
    let items = match &p.identifier {
        Some(Identifier::AndIds(s)) if !s.ids.is_empty() => &s.ids,
        _ => return Err(": and_ids of the sources and conditions".into()),
    };
    match &items[0].identifier {
        Some(Identifier::Any(true)) => {}
        Some(Identifier::OrIds(srcs)) if !srcs.ids.is_empty() => {
            for (i, s) in srcs.ids.iter().enumerate() {
                let path = format!(".and_ids.ids[0].or_ids.ids[{i}]");
                rule.from.push(tc::RuleFrom {
                    source: source(s).map_err(|e| format!("{path}{e}"))?,
                });
            }
        }
        _ => return Err(".and_ids.ids[0]: any, or or_ids of the sources".into()),
    }
    for (i, item) in items.iter().enumerate().skip(1) {
        let it = principal_item(item).map_err(|e| format!(".and_ids.ids[{i}]{e}"))?;
        condition(it, rule).map_err(|e| format!(".and_ids.ids[{i}]: {e}"))?;
    }
    Ok(())
}

fn operation(p: &Permission) -> Result<tc::RuleOperation> {
    let mut o = tc::RuleOperation::default();
    let items = match &p.rule {
        Some(Rule::Any(true)) => return Ok(o),
        Some(Rule::AndRules(s)) if !s.rules.is_empty() => &s.rules,
        _ => return Err(": any, or and_rules of the operation's fields".into()),
    };
    for (i, item) in items.iter().enumerate() {
        let (attr, positive, values) =
            permission_item(item).map_err(|e| format!(".and_rules.rules[{i}]{e}"))?;
        let (any, none) = match attr {
            Attr::Method => (&mut o.methods, &mut o.not_methods),
            Attr::Path => (&mut o.paths, &mut o.not_paths),
            Attr::Port => (&mut o.ports, &mut o.not_ports),
            Attr::Host => (&mut o.hosts, &mut o.not_hosts),
            other => {
                return Err(format!(
                    ".and_rules.rules[{i}]: {other:?} is not a field of an operation"
                ))
            }
        };
        set(if positive { any } else { none }, values)
            .map_err(|e| format!(".and_rules.rules[{i}]: {e}"))?;
    }
    Ok(o)
}

fn source(p: &Principal) -> Result<tc::RuleSource> {
    let mut s = tc::RuleSource::default();
    let items = match &p.identifier {
        Some(Identifier::Any(true)) => return Ok(s),
        Some(Identifier::AndIds(ids)) if !ids.ids.is_empty() => &ids.ids,
        _ => return Err(": any, or and_ids of the source's fields".into()),
    };
    for (i, item) in items.iter().enumerate() {
        let (attr, positive, values) =
            principal_item(item).map_err(|e| format!(".and_ids.ids[{i}]{e}"))?;
        let (any, none) = match attr {
            Attr::Principal => (&mut s.principals, &mut s.not_principals),
            Attr::Namespace => (&mut s.namespaces, &mut s.not_namespaces),
            Attr::ServiceAccount => (&mut s.service_accounts, &mut s.not_service_accounts),
            Attr::TrustDomain => (&mut s.trust_domains, &mut s.not_trust_domains),
            Attr::SourceIp => (&mut s.ip_blocks, &mut s.not_ip_blocks),
            Attr::RemoteIp => (&mut s.remote_ip_blocks, &mut s.not_remote_ip_blocks),
            Attr::Auth(k) if k == ["request.auth.principal"] => {
                (&mut s.request_principals, &mut s.not_request_principals)
            }
            other => {
                return Err(format!(
                    ".and_ids.ids[{i}]: {other:?} is not a field of a source"
                ))
            }
        };
        set(if positive { any } else { none }, values)
            .map_err(|e| format!(".and_ids.ids[{i}]: {e}"))?;
    }
    Ok(s)
}

fn set(field: &mut Vec<String>, values: Vec<String>) -> Result<()> {
    if !field.is_empty() {
        return Err("the field appears twice".into());
    }
    *field = values;
    Ok(())
}

/// A `when` item; a `not_values` item right after the `values` of the same key joins
/// that condition.
fn condition((attr, positive, values): Item, rule: &mut tc::AuthorizationRule) -> Result<()> {
    let key = match attr {
        Attr::Header(name) => format!("request.headers[{name}]"),
        Attr::DestinationIp => "destination.ip".into(),
        Attr::Port => "destination.port".into(),
        Attr::Sni => "connection.sni".into(),
        Attr::Principal => "source.principal".into(),
        Attr::Namespace => "source.namespace".into(),
        Attr::ServiceAccount => "source.serviceAccount".into(),
        Attr::TrustDomain => "source.trustDomain".into(),
        Attr::SourceIp => "source.ip".into(),
        Attr::RemoteIp => "remote.ip".into(),
        Attr::Auth(path) => match path.split_first() {
            Some((first, rest)) if first == super::CLAIMS => {
                format!(
                    "{first}{}",
                    rest.iter().map(|k| format!("[{k}]")).collect::<String>()
                )
            }
            _ => path.join("."),
        },
        other => return Err(format!("{other:?} is not a condition")),
    };
    if !positive {
        if let Some(last) = rule.when.last_mut() {
            if last.key == key && last.not_values.is_empty() && !last.values.is_empty() {
                last.not_values = values;
                return Ok(());
            }
        }
    }
    let (values, not_values) = match positive {
        true => (values, Vec::new()),
        false => (Vec::new(), values),
    };
    rule.when.push(tc::RuleCondition {
        key,
        values,
        not_values,
    });
    Ok(())
}

/// `or_rules` of one attribute's values, or `not_rule` of that.
fn permission_item(p: &Permission) -> Result<Item> {
    let (positive, set) = match &p.rule {
        Some(Rule::OrRules(s)) => (true, s),
        Some(Rule::NotRule(n)) => match &n.rule {
            Some(Rule::OrRules(s)) => (false, s),
            _ => return Err(".not_rule: or_rules of one field's values".into()),
        },
        _ => return Err(": or_rules of one field's values, or not_rule of that".into()),
    };
    let path = if positive {
        ".or_rules.rules"
    } else {
        ".not_rule.or_rules.rules"
    };
    same_attr(set.rules.iter().map(permission_leaf), positive, path)
}

fn principal_item(p: &Principal) -> Result<Item> {
    let (positive, set) = match &p.identifier {
        Some(Identifier::OrIds(s)) => (true, s),
        Some(Identifier::NotId(n)) => match &n.identifier {
            Some(Identifier::OrIds(s)) => (false, s),
            _ => return Err(".not_id: or_ids of one field's values".into()),
        },
        _ => return Err(": or_ids of one field's values, or not_id of that".into()),
    };
    let path = if positive {
        ".or_ids.ids"
    } else {
        ".not_id.or_ids.ids"
    };
    same_attr(set.ids.iter().map(principal_leaf), positive, path)
}

fn same_attr(
    leaves: impl Iterator<Item = Result<(Attr, String)>>,
    positive: bool,
    path: &str,
) -> Result<Item> {
    let mut attr = None;
    let mut values = Vec::new();
    for (i, leaf) in leaves.enumerate() {
        let (a, v) = leaf.map_err(|e| format!("{path}[{i}]: {e}"))?;
        match &attr {
            Some(first) if *first != a => {
                return Err(format!(
                    "{path}[{i}]: {a:?} beside {first:?}: one field's values only"
                ))
            }
            _ => attr = Some(a),
        }
        values.push(v);
    }
    let attr = attr.ok_or_else(|| format!("{path}: no values"))?;
    Ok((attr, positive, values))
}

fn permission_leaf(p: &Permission) -> Result<(Attr, String)> {
    Ok(match &p.rule {
        Some(Rule::Header(h)) => {
            if h.invert_match || h.treat_missing_header_as_empty {
                return Err("header: invert_match and treat_missing_header_as_empty are not supported".into());
            }
            let Some(HeaderMatchSpecifier::StringMatch(m)) = &h.header_match_specifier else {
                return Err("header: only string_match".into());
            };
            match h.name.as_str() {
                ":method" => (Attr::Method, form(m, "", false)?),
                ":authority" => (Attr::Host, form(m, "", true)?),
                name => (Attr::Header(name.to_string()), form(m, "", false)?),
            }
        }
        Some(Rule::UrlPath(p)) => match &p.rule {
            Some(path_matcher::Rule::Path(m)) => {
                let f = form(m, "", false)?;
                if f.contains("{*}") || f.contains("{**}") {
                    return Err(format!("url_path {f:?} looks like a template"));
                }
                (Attr::Path, f)
            }
            None => return Err("url_path: no path".into()),
        },
        Some(Rule::UriTemplate(t)) => {
            let Some(any) = t.typed_config.as_ref().filter(|a| a.type_url == super::URI_TEMPLATE_TYPE) else {
                return Err(format!("uri_template: expected {}", super::URI_TEMPLATE_TYPE));
            };
            let c = UriTemplateMatchConfig::decode(any.value.as_slice()).map_err(|e| e.to_string())?;
            if !c.path_template.contains("{*}") && !c.path_template.contains("{**}") {
                return Err(format!("uri_template {:?} has no {{*}} or {{**}}", c.path_template));
            }
            (Attr::Path, c.path_template)
        }
        Some(Rule::DestinationPort(p)) => (Attr::Port, p.to_string()),
        Some(Rule::DestinationIp(c)) => (Attr::DestinationIp, cidr(c)?),
        Some(Rule::RequestedServerName(m)) => (Attr::Sni, form(m, "", false)?),
        _ => return Err("a header, url_path, uri_template, destination_port, destination_ip or requested_server_name".into()),
    })
}

fn principal_leaf(p: &Principal) -> Result<(Attr, String)> {
    #[allow(deprecated)] // `metadata` is what Istio writes.
    Ok(match &p.identifier {
        Some(Identifier::Authenticated(a)) => {
            let m = a
                .principal_name
                .as_ref()
                .ok_or("authenticated: principal_name is required")?;
            peer(m)?
        }
        Some(Identifier::DirectRemoteIp(c)) => (Attr::SourceIp, cidr(c)?),
        Some(Identifier::RemoteIp(c)) => (Attr::RemoteIp, cidr(c)?),
        Some(Identifier::Metadata(m)) => auth(m)?,
        _ => {
            return Err("authenticated, direct_remote_ip, remote_ip or istio_authn metadata".into())
        }
    })
}

/// A principal's SPIFFE ID: whole (a string matcher), or one of its parts (a regular
/// expression of the encoder's shape).
fn peer(m: &StringMatcher) -> Result<(Attr, String)> {
    let spiffe = super::SPIFFE;
    let re = match &m.match_pattern {
        Some(MatchPattern::SafeRegex(r)) if r.regex != ".+" => r.regex.as_str(),
        _ => return Ok((Attr::Principal, form(m, spiffe, false)?)),
    };
    if m.ignore_case {
        return Err("principal_name: ignore_case is not supported".into());
    }
    if let Some(ns) = re
        .strip_prefix(".*/ns/")
        .and_then(|r| r.strip_suffix("/.*"))
    {
        let f = segment_form(ns)?;
        debug_assert_eq!(namespace_regex(&f), re);
        return Ok((Attr::Namespace, f));
    }
    if let Some(td) = re
        .strip_prefix(spiffe)
        .and_then(|r| r.strip_suffix("/ns/.*"))
    {
        return Ok((Attr::TrustDomain, segment_form(td)?));
    }
    let account = re
        .strip_prefix(spiffe)
        .and_then(|r| r.strip_prefix("[^/]+/ns/"));
    if let Some((ns, sa)) = account.and_then(|r| r.split_once("/sa/")) {
        return Ok((
            Attr::ServiceAccount,
            format!("{}/{}", segment_form(ns)?, segment_form(sa)?),
        ));
    }
    Err(format!(
        "principal_name regex {re:?} is not a namespace, service account or trust domain"
    ))
}

fn auth(m: &MetadataMatcher) -> Result<(Attr, String)> {
    if m.filter != super::ISTIO_AUTHN || m.invert {
        return Err(format!(
            "metadata: only {} (not inverted)",
            super::ISTIO_AUTHN
        ));
    }
    let path = m
        .path
        .iter()
        .map(|s| match &s.segment {
            Some(Segment::Key(k)) => Ok(k.clone()),
            None => Err("metadata.path: a key".to_string()),
        })
        .collect::<Result<Vec<_>>>()?;
    let list = match path.as_slice() {
        [k] if k == "request.auth.principal" || k == "request.auth.presenter" => false,
        [k] if k == "request.auth.audiences" => true,
        [k, _, ..] if k == super::CLAIMS => true,
        _ => {
            return Err(format!(
                "metadata.path {path:?} is not a request.auth attribute"
            ))
        }
    };
    let value = m.value.as_ref().and_then(|v| v.match_pattern.as_ref());
    let string = match (list, value) {
        (false, Some(value_matcher::MatchPattern::StringMatch(s))) => s,
        (true, Some(value_matcher::MatchPattern::ListMatch(l))) => match &l.match_pattern {
            Some(list_matcher::MatchPattern::OneOf(v)) => match &v.match_pattern {
                Some(value_matcher::MatchPattern::StringMatch(s)) => s,
                _ => return Err("metadata.value.list_match.one_of: string_match".into()),
            },
            None => return Err("metadata.value.list_match: one_of".into()),
        },
        (false, _) => return Err("metadata.value: string_match".into()),
        (true, _) => return Err("metadata.value: list_match".into()),
    };
    Ok((Attr::Auth(path), form(string, "", false)?))
}

/// An address (`1.2.3.4`, the whole address) or CIDR.
fn cidr(c: &CidrRange) -> Result<String> {
    let ip: std::net::IpAddr = c
        .address_prefix
        .parse()
        .map_err(|_| format!("{:?} is not an address", c.address_prefix))?;
    // Unset is 0 in Envoy: every address.
    let len = c.prefix_len.as_ref().map_or(0, |l| l.value);
    let whole = if ip.is_ipv4() { 32 } else { 128 };
    if len > whole {
        return Err(format!("prefix_len {len} is longer than the address"));
    }
    Ok(match len == whole {
        true => c.address_prefix.clone(),
        false => format!("{}/{len}", c.address_prefix),
    })
}
