//! Istio AuthorizationPolicy semantics, evaluated per request (or per TCP connection).
//!
//! - Any matching DENY policy denies. Otherwise, if there are ALLOW policies, one must
//!   match; with none, the request is allowed. AUDIT policies never change the
//!   decision; their matches are reported for logging.
//! - A policy matches when any of its rules matches; a rule when any `from`, any `to`
//!   and every `when` condition match. Inside a field any value matches; `not_` fields
//!   match when no value does.
//! - Values: exact, prefix `abc*`, suffix `*abc`, presence `*`.
//! - On TCP there is no HTTP request: an ALLOW rule that names HTTP-only attributes
//!   (methods, paths, hosts, request headers) never matches, and a DENY rule ignores
//!   them, so that a TCP policy can only be stricter than its HTTP reading (Istio's rule).

mod matcher;

use http::HeaderMap;
use matcher::{IpBlock, StrMatch};
use std::net::IpAddr;
use trellis_config::{Authorization, AuthorizationAction, AuthorizationRule, RuleCondition};

/// What the proxy knows about a request or connection.
pub struct Attributes<'a> {
    pub source_ip: IpAddr,
    /// The peer's SPIFFE ID without `spiffe://` (`cluster.local/ns/default/sa/sleep`).
    pub principal: Option<&'a str>,
    pub destination_port: u16,
    /// None on TCP listeners.
    pub http: Option<HttpAttributes<'a>>,
}

pub struct HttpAttributes<'a> {
    pub method: &'a str,
    /// Without the query string.
    pub path: &'a str,
    /// The authority (host, maybe with a port).
    pub host: &'a str,
    pub headers: &'a HeaderMap,
}

impl Attributes<'_> {
    fn namespace(&self) -> Option<&str> {
        let p = self.principal?;
        let mut parts = p.split('/');
        parts.find(|s| *s == "ns")?;
        parts.next()
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Names the DENY policy that matched, or says that no ALLOW policy did.
    Deny(String),
}

pub struct Verdict {
    pub decision: Decision,
    /// AUDIT policies that matched.
    pub audited: Vec<String>,
}

pub struct Engine {
    deny: Vec<Policy>,
    allow: Vec<Policy>,
    audit: Vec<Policy>,
}

struct Policy {
    name: String,
    action: AuthorizationAction,
    rules: Vec<Rule>,
}

#[derive(Default)]
struct Rule {
    from: Vec<Source>,
    to: Vec<Operation>,
    when: Vec<Condition>,
}

#[derive(Default)]
struct Source {
    principals: Field<StrMatch>,
    namespaces: Field<StrMatch>,
    ip_blocks: Field<IpBlock>,
}

#[derive(Default)]
struct Operation {
    methods: Field<StrMatch>,
    paths: Field<StrMatch>,
    ports: Field<StrMatch>,
    hosts: Field<StrMatch>,
}

/// Values that must match (any of) and values that must not (none of).
struct Field<M> {
    any: Vec<M>,
    none: Vec<M>,
}

impl<M> Default for Field<M> {
    fn default() -> Self {
        Field {
            any: Vec::new(),
            none: Vec::new(),
        }
    }
}

impl<M> Field<M> {
    fn is_set(&self) -> bool {
        !self.any.is_empty() || !self.none.is_empty()
    }

    /// Unset fields match; a set field needs a value (absent attributes match only
    /// a `not_` list).
    fn check(&self, value: Option<&str>, m: impl Fn(&M, &str) -> bool) -> bool {
        if !self.is_set() {
            return true;
        }
        let hit = |list: &[M]| value.is_some_and(|v| list.iter().any(|x| m(x, v)));
        (self.any.is_empty() || hit(&self.any)) && !hit(&self.none)
    }
}

enum ConditionKey {
    Header(http::HeaderName),
    SourceIp,
    SourceNamespace,
    SourcePrincipal,
    DestinationPort,
}

struct Condition {
    key: ConditionKey,
    ips: Field<IpBlock>,
    values: Field<StrMatch>,
}

fn strs(any: &[String], none: &[String]) -> Field<StrMatch> {
    Field {
        any: any.iter().map(|v| StrMatch::parse(v)).collect(),
        none: none.iter().map(|v| StrMatch::parse(v)).collect(),
    }
}

fn ci(v: &[String]) -> Vec<String> {
    v.iter().map(|s| s.to_ascii_lowercase()).collect()
}

fn ips(any: &[String], none: &[String]) -> Result<Field<IpBlock>, String> {
    let parse = |v: &[String]| {
        v.iter()
            .map(|s| IpBlock::parse(s))
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(Field {
        any: parse(any)?,
        none: parse(none)?,
    })
}

/// Checks that an ip block or condition key is one this engine understands; the
/// config validator reports the field path.
pub fn check_ip_block(s: &str) -> Result<(), String> {
    IpBlock::parse(s).map(|_| ())
}

pub fn check_condition_key(key: &str) -> Result<(), String> {
    condition_key(key).map(|_| ())
}

fn condition_key(key: &str) -> Result<ConditionKey, String> {
    if let Some(name) = key
        .strip_prefix("request.headers[")
        .and_then(|k| k.strip_suffix(']'))
    {
        return http::HeaderName::try_from(name)
            .map(ConditionKey::Header)
            .map_err(|_| format!("{name:?} is not a header name"));
    }
    match key {
        "source.ip" | "remote.ip" => Ok(ConditionKey::SourceIp),
        "source.namespace" => Ok(ConditionKey::SourceNamespace),
        "source.principal" => Ok(ConditionKey::SourcePrincipal),
        "destination.port" => Ok(ConditionKey::DestinationPort),
        other => Err(format!("condition key {other:?} is not supported (request.headers[...], source.ip, source.namespace, source.principal, destination.port)")),
    }
}

fn rule(r: &AuthorizationRule) -> Result<Rule, String> {
    let from = r
        .from
        .iter()
        .map(|f| {
            let s = &f.source;
            Ok(Source {
                principals: strs(&s.principals, &s.not_principals),
                namespaces: strs(&s.namespaces, &s.not_namespaces),
                ip_blocks: ips(&s.ip_blocks, &s.not_ip_blocks)?,
            })
        })
        .collect::<Result<_, String>>()?;
    let to =
        r.to.iter()
            .map(|t| {
                let o = &t.operation;
                Operation {
                    methods: strs(&o.methods, &o.not_methods),
                    paths: strs(&o.paths, &o.not_paths),
                    ports: strs(&o.ports, &o.not_ports),
                    hosts: strs(&ci(&o.hosts), &ci(&o.not_hosts)),
                }
            })
            .collect();
    let when = r
        .when
        .iter()
        .map(condition)
        .collect::<Result<_, String>>()?;
    Ok(Rule { from, to, when })
}

fn condition(c: &RuleCondition) -> Result<Condition, String> {
    let key = condition_key(&c.key)?;
    let ips = match key {
        ConditionKey::SourceIp => ips(&c.values, &c.not_values)?,
        _ => Field::default(),
    };
    Ok(Condition {
        key,
        ips,
        values: strs(&c.values, &c.not_values),
    })
}

impl Engine {
    pub fn new(config: &Authorization) -> Result<Self, String> {
        let mut e = Engine {
            deny: Vec::new(),
            allow: Vec::new(),
            audit: Vec::new(),
        };
        for p in &config.policies {
            let rules = p
                .rules
                .iter()
                .map(rule)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|err| format!("policy {:?}: {err}", p.name))?;
            let policy = Policy {
                name: p.name.clone(),
                action: p.action,
                rules,
            };
            match p.action {
                AuthorizationAction::Deny => e.deny.push(policy),
                AuthorizationAction::Allow => e.allow.push(policy),
                AuthorizationAction::Audit => e.audit.push(policy),
            }
        }
        Ok(e)
    }

    pub fn evaluate(&self, a: &Attributes) -> Verdict {
        let audited = self
            .audit
            .iter()
            .filter(|p| p.matches(a))
            .map(|p| p.name.clone())
            .collect();
        let decision = if let Some(p) = self.deny.iter().find(|p| p.matches(a)) {
            Decision::Deny(p.name.clone())
        } else if self.allow.is_empty() || self.allow.iter().any(|p| p.matches(a)) {
            Decision::Allow
        } else {
            Decision::Deny("no ALLOW policy matched".into())
        };
        Verdict { decision, audited }
    }
}

impl Policy {
    fn matches(&self, a: &Attributes) -> bool {
        self.rules.iter().any(|r| r.matches(a, self.action))
    }
}

impl Rule {
    fn http_only(&self) -> bool {
        self.to
            .iter()
            .any(|o| o.methods.is_set() || o.paths.is_set() || o.hosts.is_set())
            || self
                .when
                .iter()
                .any(|c| matches!(c.key, ConditionKey::Header(_)))
    }

    fn matches(&self, a: &Attributes, action: AuthorizationAction) -> bool {
        let tcp = a.http.is_none();
        if tcp && action == AuthorizationAction::Allow && self.http_only() {
            return false;
        }
        let from = self.from.is_empty() || self.from.iter().any(|s| s.matches(a));
        let to = self.to.is_empty() || self.to.iter().any(|o| o.matches(a));
        from && to && self.when.iter().all(|c| c.matches(a))
    }
}

impl Source {
    fn matches(&self, a: &Attributes) -> bool {
        let ip = a.source_ip;
        self.principals.check(a.principal, StrMatch::is)
            && self.namespaces.check(a.namespace(), StrMatch::is)
            && self.ip_blocks.check(Some(""), |b, _| b.contains(ip))
    }
}

impl Operation {
    fn matches(&self, a: &Attributes) -> bool {
        let port = a.destination_port.to_string();
        if !self.ports.check(Some(&port), StrMatch::is) {
            return false;
        }
        // On TCP (DENY or AUDIT), HTTP-only fields are ignored.
        let Some(h) = &a.http else { return true };
        let host = h.host.to_ascii_lowercase();
        let bare = host
            .rsplit_once(':')
            .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
            .map_or(host.as_str(), |(h, _)| h);
        let host_ok = self.hosts.check(Some(&host), |m, v| m.is(v) || m.is(bare));
        self.methods.check(Some(h.method), StrMatch::is)
            && self.paths.check(Some(h.path), StrMatch::is)
            && host_ok
    }
}

impl Condition {
    fn matches(&self, a: &Attributes) -> bool {
        match &self.key {
            ConditionKey::Header(name) => match &a.http {
                None => true,
                Some(h) => {
                    let v = h.headers.get(name).and_then(|v| v.to_str().ok());
                    self.values.check(v, StrMatch::is)
                }
            },
            ConditionKey::SourceIp => self.ips.check(Some(""), |b, _| b.contains(a.source_ip)),
            ConditionKey::SourceNamespace => self.values.check(a.namespace(), StrMatch::is),
            ConditionKey::SourcePrincipal => self.values.check(a.principal, StrMatch::is),
            ConditionKey::DestinationPort => self
                .values
                .check(Some(&a.destination_port.to_string()), StrMatch::is),
        }
    }
}

#[cfg(test)]
mod tests;
