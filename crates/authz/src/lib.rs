//! Istio AuthorizationPolicy semantics, evaluated per request (or per TCP connection).
//!
//! - Any matching DENY policy denies. Otherwise, if there are ALLOW policies, one must
//!   match; with none, the request is allowed. AUDIT policies never change the
//!   decision; their matches are reported for logging.
//! - A policy matches when any of its rules matches; a rule when any `from`, any `to`
//!   and every `when` condition match. Inside a field any value matches; `not_` fields
//!   match when no value does.
//! - Values: exact, prefix `abc*`, suffix `*abc`, presence `*`; paths also as
//!   templates (`/books/{*}/pages`, `/files/{**}`).
//! - Dry-run policies (`istio.io/dry-run`) are evaluated beside the enforced ones: the
//!   verdict reports what the decision would have been with them, and never uses it.
//! - Request principals and `request.auth.*` conditions read the request's verified
//!   JWT (RequestAuthentication); a request without one matches only their `not_`
//!   forms.
//! - On TCP there is no HTTP request: an ALLOW rule that names HTTP-only attributes
//!   (methods, paths, hosts, request headers, request principals, `request.auth.*`)
//!   never matches, and a DENY rule ignores
//!   them, so that a TCP policy can only be stricter than its HTTP reading (Istio's rule).

mod matcher;
mod values;

use http::HeaderMap;
use matcher::{IpBlock, StrMatch};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::net::IpAddr;
use trellis_config::{Authorization, AuthorizationAction, AuthorizationRule, RuleCondition};
pub use values::MatchMode;
use values::ValueSet;

/// What the proxy knows about a request or connection.
pub struct Attributes<'a> {
    /// The connection's peer address (`source.ip`, `ipBlocks`).
    pub source_ip: IpAddr,
    /// The original client (`remote.ip`, `remoteIpBlocks`): the peer address unless
    /// trusted proxies named another in `X-Forwarded-For`.
    pub remote_ip: IpAddr,
    /// The peer's SPIFFE ID without `spiffe://` (`cluster.local/ns/default/sa/sleep`).
    pub principal: Option<&'a str>,
    /// The address the connection was accepted on (`destination.ip`).
    pub destination_ip: IpAddr,
    pub destination_port: u16,
    /// The TLS server name the client asked for (`connection.sni`).
    pub sni: Option<&'a str>,
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
    /// The request's verified JWT, if it carried one.
    pub auth: Option<RequestAuth<'a>>,
}

/// A verified JWT, as authorization reads it (`request.auth.*`).
#[derive(Clone, Copy)]
pub struct RequestAuth<'a> {
    pub issuer: &'a str,
    pub subject: &'a str,
    pub audiences: &'a [String],
    /// `azp`.
    pub presenter: Option<&'a str>,
    pub claims: &'a Map<String, Value>,
}

impl<'a> Attributes<'a> {
    /// `<trust domain>`, `<namespace>`, `<service account>` of a principal of the form
    /// `<trust domain>/ns/<namespace>/sa/<service account>`.
    fn identity(&self) -> Option<(&'a str, &'a str, &'a str)> {
        let p = self.principal?;
        let (td, rest) = p.split_once("/ns/")?;
        let (ns, sa) = rest.split_once("/sa/")?;
        (!td.is_empty() && !ns.is_empty() && !sa.is_empty() && !sa.contains('/'))
            .then_some((td, ns, sa))
    }

    fn namespace(&self) -> Option<&'a str> {
        self.identity().map(|(_, ns, _)| ns)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Names the DENY policy that matched, or says that no ALLOW policy did.
    Deny(String),
}

pub struct Verdict {
    pub decision: Decision,
    /// AUDIT policies that matched.
    pub audited: Vec<String>,
    /// With dry-run policies (`istio.io/dry-run`): the decision had they been
    /// enforced too. Reported, never enforced.
    pub dry_run: Option<Decision>,
}

pub struct Engine {
    deny: Vec<Policy>,
    allow: Vec<Policy>,
    audit: Vec<Policy>,
    /// Dry-run policies, by action: evaluated, never enforced.
    dry_deny: Vec<Policy>,
    dry_allow: Vec<Policy>,
    sets: Sets,
}

/// Every value each attribute is compared with, across all policies.
#[derive(Default)]
struct Sets {
    principals: ValueSet,
    namespaces: ValueSet,
    service_accounts: ValueSet,
    trust_domains: ValueSet,
    snis: ValueSet,
    methods: ValueSet,
    paths: ValueSet,
    ports: ValueSet,
    hosts: ValueSet,
    headers: HashMap<http::HeaderName, ValueSet>,
}

/// Which values of each set the request matched, by id.
struct Hits {
    principals: Vec<bool>,
    namespaces: Vec<bool>,
    service_accounts: Vec<bool>,
    trust_domains: Vec<bool>,
    snis: Vec<bool>,
    methods: Vec<bool>,
    paths: Vec<bool>,
    ports: Vec<bool>,
    hosts: Vec<bool>,
    headers: HashMap<http::HeaderName, Vec<bool>>,
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
    principals: Field<usize>,
    namespaces: Field<usize>,
    service_accounts: Field<usize>,
    trust_domains: Field<usize>,
    ip_blocks: Field<IpBlock>,
    remote_ip_blocks: Field<IpBlock>,
    request_principals: Field<RequestPrincipal>,
}

/// Istio's request principal forms: `iss/sub` split at the last `/`, each side exact,
/// or `*` (any non-empty), or a prefix or suffix form at the outer ends.
struct RequestPrincipal {
    iss: StrMatch,
    sub: StrMatch,
}

impl RequestPrincipal {
    fn parse(value: &str) -> Self {
        let (iss, sub) = match value.rfind('/') {
            Some(i) => (&value[..i], Some(&value[i + 1..])),
            None => (value, None),
        };
        let exact = |v: &str| StrMatch::Exact(v.to_string());
        let (iss, sub) = match sub {
            _ if value == "*" => (StrMatch::Present, StrMatch::Present),
            Some(sub) if value.starts_with('*') => (
                if iss == "*" {
                    StrMatch::Present
                } else {
                    StrMatch::Suffix(iss[1..].to_string())
                },
                exact(sub),
            ),
            None if value.starts_with('*') => {
                (StrMatch::Present, StrMatch::Suffix(value[1..].to_string()))
            }
            Some(sub) if value.ends_with('*') => (
                exact(iss),
                if sub == "*" {
                    StrMatch::Present
                } else {
                    StrMatch::Prefix(sub[..sub.len() - 1].to_string())
                },
            ),
            None if value.ends_with('*') => (
                StrMatch::Prefix(value[..value.len() - 1].to_string()),
                StrMatch::Present,
            ),
            Some(sub) => (exact(iss), exact(sub)),
            None => (exact(iss), exact("")),
        };
        RequestPrincipal { iss, sub }
    }

    fn is(&self, auth: &RequestAuth) -> bool {
        self.iss.is(auth.issuer) && self.sub.is(auth.subject)
    }
}

impl Field<RequestPrincipal> {
    fn check(&self, auth: Option<&RequestAuth>) -> bool {
        self.check_by(|p| auth.is_some_and(|a| p.is(a)))
    }
}

impl Field<StrMatch> {
    /// Whether the field holds for an attribute with these values (none: absent).
    fn check_all(&self, values: &[&str]) -> bool {
        self.check_by(|m| values.iter().any(|v| m.is(v)))
    }
}

#[derive(Default)]
struct Operation {
    methods: Field<usize>,
    paths: Field<usize>,
    ports: Field<usize>,
    hosts: Field<usize>,
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
    /// Values parsed by `parse`: those that must match and those that must not.
    fn parse(any: &[String], none: &[String], mut parse: impl FnMut(&str) -> M) -> Field<M> {
        Field {
            any: any.iter().map(|v| parse(v)).collect(),
            none: none.iter().map(|v| parse(v)).collect(),
        }
    }

    fn is_set(&self) -> bool {
        !self.any.is_empty() || !self.none.is_empty()
    }

    /// Unset fields match; otherwise some value must `hit` and no `not_` value may.
    fn check_by(&self, hit: impl Fn(&M) -> bool) -> bool {
        (self.any.is_empty() || self.any.iter().any(&hit)) && !self.none.iter().any(&hit)
    }
}

impl Field<usize> {
    /// An absent attribute (no hits) matches only a `not_` list.
    fn check(&self, hits: &[bool]) -> bool {
        self.check_by(|&i| hits[i])
    }
}

impl Field<IpBlock> {
    fn check(&self, ip: IpAddr) -> bool {
        self.check_by(|b| b.contains(ip))
    }
}

enum ConditionKey {
    Header(http::HeaderName),
    SourceIp,
    RemoteIp,
    SourceNamespace,
    SourcePrincipal,
    SourceServiceAccount,
    SourceTrustDomain,
    DestinationIp,
    DestinationPort,
    ConnectionSni,
    RequestPrincipal,
    RequestAudiences,
    RequestPresenter,
    /// The claim's path: `request.auth.claims[a][b]` is `["a", "b"]`.
    RequestClaim(Vec<String>),
}

impl ConditionKey {
    fn http_only(&self) -> bool {
        matches!(
            self,
            ConditionKey::Header(_)
                | ConditionKey::RequestPrincipal
                | ConditionKey::RequestAudiences
                | ConditionKey::RequestPresenter
                | ConditionKey::RequestClaim(_)
        )
    }
}

/// The `when` keys this engine evaluates (Istio's, less `experimental.*`).
pub const CONDITION_KEYS: &[&str] = &[
    "request.headers[<name>]",
    "request.auth.principal",
    "request.auth.audiences",
    "request.auth.presenter",
    "request.auth.claims[<name>]...",
    "source.ip",
    "remote.ip",
    "source.namespace",
    "source.principal",
    "source.serviceAccount",
    "source.trustDomain",
    "destination.ip",
    "destination.port",
    "connection.sni",
];

struct Condition {
    key: ConditionKey,
    ips: Field<IpBlock>,
    values: Field<usize>,
    /// `request.auth.audiences`, `presenter` and `claims`.
    strs: Field<StrMatch>,
    request_principals: Field<RequestPrincipal>,
}

fn ids(set: &mut ValueSet, any: &[String], none: &[String], fold: bool) -> Field<usize> {
    Field::parse(any, none, |v| {
        if fold {
            set.id(&v.to_ascii_lowercase())
        } else {
            set.id(v)
        }
    })
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
    if key.starts_with("request.auth.claims") {
        return trellis_config::claim_path(key)
            .map(ConditionKey::RequestClaim)
            .ok_or_else(|| format!("{key:?} is not of the form request.auth.claims[<name>]..."));
    }
    match key {
        "request.auth.principal" => Ok(ConditionKey::RequestPrincipal),
        "request.auth.audiences" => Ok(ConditionKey::RequestAudiences),
        "request.auth.presenter" => Ok(ConditionKey::RequestPresenter),
        "source.ip" => Ok(ConditionKey::SourceIp),
        "remote.ip" => Ok(ConditionKey::RemoteIp),
        "source.namespace" => Ok(ConditionKey::SourceNamespace),
        "source.principal" => Ok(ConditionKey::SourcePrincipal),
        "source.serviceAccount" => Ok(ConditionKey::SourceServiceAccount),
        "source.trustDomain" => Ok(ConditionKey::SourceTrustDomain),
        "destination.ip" => Ok(ConditionKey::DestinationIp),
        "destination.port" => Ok(ConditionKey::DestinationPort),
        "connection.sni" => Ok(ConditionKey::ConnectionSni),
        other => Err(format!(
            "condition key {other:?} is not supported ({})",
            CONDITION_KEYS.join(", ")
        )),
    }
}

impl Sets {
    fn rule(&mut self, r: &AuthorizationRule) -> Result<Rule, String> {
        let mut from = Vec::new();
        for f in &r.from {
            let s = &f.source;
            from.push(Source {
                principals: ids(
                    &mut self.principals,
                    &s.principals,
                    &s.not_principals,
                    false,
                ),
                namespaces: ids(
                    &mut self.namespaces,
                    &s.namespaces,
                    &s.not_namespaces,
                    false,
                ),
                // `namespace/name`; the control plane refuses wildcards here.
                service_accounts: ids(
                    &mut self.service_accounts,
                    &s.service_accounts,
                    &s.not_service_accounts,
                    false,
                ),
                trust_domains: ids(
                    &mut self.trust_domains,
                    &s.trust_domains,
                    &s.not_trust_domains,
                    false,
                ),
                ip_blocks: ips(&s.ip_blocks, &s.not_ip_blocks)?,
                remote_ip_blocks: ips(&s.remote_ip_blocks, &s.not_remote_ip_blocks)?,
                request_principals: Field::parse(
                    &s.request_principals,
                    &s.not_request_principals,
                    RequestPrincipal::parse,
                ),
            });
        }
        let to =
            r.to.iter()
                .map(|t| {
                    let o = &t.operation;
                    Operation {
                        methods: ids(&mut self.methods, &o.methods, &o.not_methods, false),
                        paths: Field::parse(&o.paths, &o.not_paths, |v| self.paths.path_id(v)),
                        ports: ids(&mut self.ports, &o.ports, &o.not_ports, false),
                        hosts: ids(&mut self.hosts, &o.hosts, &o.not_hosts, true),
                    }
                })
                .collect();
        let when = r
            .when
            .iter()
            .map(|c| self.condition(c))
            .collect::<Result<_, String>>()?;
        Ok(Rule { from, to, when })
    }

    fn condition(&mut self, c: &RuleCondition) -> Result<Condition, String> {
        let key = condition_key(&c.key)?;
        let (v, nv) = (&c.values, &c.not_values);
        let mut strs_field = Field::default();
        let mut principals_field = Field::default();
        let (ips, values) = match &key {
            ConditionKey::RequestPrincipal => {
                principals_field = Field::parse(v, nv, RequestPrincipal::parse);
                (Field::default(), Field::default())
            }
            ConditionKey::RequestAudiences
            | ConditionKey::RequestPresenter
            | ConditionKey::RequestClaim(_) => {
                strs_field = Field::parse(v, nv, StrMatch::parse);
                (Field::default(), Field::default())
            }
            ConditionKey::SourceIp | ConditionKey::RemoteIp | ConditionKey::DestinationIp => {
                (ips(v, nv)?, Field::default())
            }
            ConditionKey::SourceServiceAccount => (
                Field::default(),
                ids(&mut self.service_accounts, v, nv, false),
            ),
            ConditionKey::SourceTrustDomain => {
                (Field::default(), ids(&mut self.trust_domains, v, nv, false))
            }
            ConditionKey::ConnectionSni => (Field::default(), ids(&mut self.snis, v, nv, false)),
            ConditionKey::SourceNamespace => {
                (Field::default(), ids(&mut self.namespaces, v, nv, false))
            }
            ConditionKey::SourcePrincipal => {
                (Field::default(), ids(&mut self.principals, v, nv, false))
            }
            ConditionKey::DestinationPort => (Field::default(), ids(&mut self.ports, v, nv, false)),
            ConditionKey::Header(name) => {
                let set = self.headers.entry(name.clone()).or_default();
                (Field::default(), ids(set, v, nv, false))
            }
        };
        Ok(Condition {
            key,
            ips,
            values,
            strs: strs_field,
            request_principals: principals_field,
        })
    }

    fn compile(&mut self, mode: MatchMode) -> Result<(), String> {
        for set in [
            &mut self.principals,
            &mut self.namespaces,
            &mut self.service_accounts,
            &mut self.trust_domains,
            &mut self.snis,
            &mut self.methods,
            &mut self.paths,
            &mut self.ports,
            &mut self.hosts,
        ] {
            set.compile(mode)?;
        }
        for set in self.headers.values_mut() {
            set.compile(mode)?;
        }
        Ok(())
    }

    fn hits(&self, a: &Attributes) -> Hits {
        let mark = |set: &ValueSet, values: &[&str]| {
            let mut hits = vec![false; set.len()];
            if !hits.is_empty() {
                for v in values {
                    set.mark(v, &mut hits);
                }
            }
            hits
        };
        let port = a.destination_port.to_string();
        let identity = a.identity();
        let service_account = identity.map(|(_, ns, sa)| format!("{ns}/{sa}"));
        let mut h = Hits {
            principals: mark(&self.principals, a.principal.as_slice()),
            namespaces: mark(&self.namespaces, a.namespace().as_slice()),
            service_accounts: mark(
                &self.service_accounts,
                service_account.as_deref().as_slice(),
            ),
            trust_domains: mark(
                &self.trust_domains,
                identity.map(|(td, _, _)| td).as_slice(),
            ),
            snis: mark(&self.snis, a.sni.as_slice()),
            ports: mark(&self.ports, &[&port]),
            methods: Vec::new(),
            paths: Vec::new(),
            hosts: Vec::new(),
            headers: HashMap::new(),
        };
        if let Some(http) = &a.http {
            let host = http.host.to_ascii_lowercase();
            let bare = host
                .rsplit_once(':')
                .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
                .map_or(host.as_str(), |(h, _)| h);
            h.methods = mark(&self.methods, &[http.method]);
            h.paths = mark(&self.paths, &[http.path]);
            h.hosts = mark(&self.hosts, &[&host, bare]);
            for (name, set) in &self.headers {
                let v = http.headers.get(name).and_then(|v| v.to_str().ok());
                h.headers.insert(name.clone(), mark(set, v.as_slice()));
            }
        }
        h
    }
}

impl Engine {
    /// Compiles the policies, with every attribute's values in one compiled index.
    pub fn new(config: &Authorization) -> Result<Self, String> {
        Self::with_mode(
            config,
            MatchMode::Compiled(trellis_matcher::Engine::Automata),
        )
    }

    pub fn with_mode(config: &Authorization, mode: MatchMode) -> Result<Self, String> {
        let mut e = Engine {
            deny: Vec::new(),
            allow: Vec::new(),
            audit: Vec::new(),
            dry_deny: Vec::new(),
            dry_allow: Vec::new(),
            sets: Sets::default(),
        };
        for p in &config.policies {
            let rules = p
                .rules
                .iter()
                .map(|r| e.sets.rule(r))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|err| format!("policy {:?}: {err}", p.name))?;
            let policy = Policy {
                name: p.name.clone(),
                action: p.action,
                rules,
            };
            match (p.action, p.dry_run) {
                (AuthorizationAction::Deny, false) => e.deny.push(policy),
                (AuthorizationAction::Allow, false) => e.allow.push(policy),
                (AuthorizationAction::Deny, true) => e.dry_deny.push(policy),
                (AuthorizationAction::Allow, true) => e.dry_allow.push(policy),
                (AuthorizationAction::Audit, _) => e.audit.push(policy),
            }
        }
        e.sets.compile(mode)?;
        Ok(e)
    }

    pub fn evaluate(&self, a: &Attributes) -> Verdict {
        let hits = self.sets.hits(a);
        let audited = self
            .audit
            .iter()
            .filter(|p| p.matches(a, &hits))
            .map(|p| p.name.clone())
            .collect();
        let decision = decide(a, &hits, [&self.deny[..], &[]], [&self.allow[..], &[]]);
        let dry_run = (!self.dry_deny.is_empty() || !self.dry_allow.is_empty()).then(|| {
            decide(
                a,
                &hits,
                [&self.deny[..], &self.dry_deny[..]],
                [&self.allow[..], &self.dry_allow[..]],
            )
        });
        Verdict {
            decision,
            audited,
            dry_run,
        }
    }
}

/// Any matching DENY policy denies; otherwise, with ALLOW policies, one must match.
fn decide(a: &Attributes, hits: &Hits, deny: [&[Policy]; 2], allow: [&[Policy]; 2]) -> Decision {
    if let Some(p) = deny
        .iter()
        .flat_map(|d| d.iter())
        .find(|p| p.matches(a, hits))
    {
        return Decision::Deny(p.name.clone());
    }
    let mut allow = allow.iter().flat_map(|a| a.iter()).peekable();
    if allow.peek().is_none() {
        return Decision::Allow;
    }
    if allow.any(|p| p.matches(a, hits)) {
        Decision::Allow
    } else {
        Decision::Deny("no ALLOW policy matched".into())
    }
}

impl Policy {
    fn matches(&self, a: &Attributes, h: &Hits) -> bool {
        self.rules.iter().any(|r| r.matches(a, h, self.action))
    }
}

impl Rule {
    fn http_only(&self) -> bool {
        self.to
            .iter()
            .any(|o| o.methods.is_set() || o.paths.is_set() || o.hosts.is_set())
            || self.from.iter().any(|s| s.request_principals.is_set())
            || self.when.iter().any(|c| c.key.http_only())
    }

    fn matches(&self, a: &Attributes, h: &Hits, action: AuthorizationAction) -> bool {
        let tcp = a.http.is_none();
        if tcp && action == AuthorizationAction::Allow && self.http_only() {
            return false;
        }
        let from = self.from.is_empty() || self.from.iter().any(|s| s.matches(a, h));
        let to = self.to.is_empty() || self.to.iter().any(|o| o.matches(a, h));
        from && to && self.when.iter().all(|c| c.matches(a, h))
    }
}

impl Source {
    fn matches(&self, a: &Attributes, h: &Hits) -> bool {
        self.principals.check(&h.principals)
            && self.namespaces.check(&h.namespaces)
            && self.service_accounts.check(&h.service_accounts)
            && self.trust_domains.check(&h.trust_domains)
            && self.ip_blocks.check(a.source_ip)
            && self.remote_ip_blocks.check(a.remote_ip)
            // On TCP (DENY or AUDIT), HTTP-only fields are ignored.
            && match &a.http {
                None => true,
                Some(http) => self.request_principals.check(http.auth.as_ref()),
            }
    }
}

impl Operation {
    fn matches(&self, a: &Attributes, h: &Hits) -> bool {
        if !self.ports.check(&h.ports) {
            return false;
        }
        // On TCP (DENY or AUDIT), HTTP-only fields are ignored.
        if a.http.is_none() {
            return true;
        }
        self.methods.check(&h.methods) && self.paths.check(&h.paths) && self.hosts.check(&h.hosts)
    }
}

impl Condition {
    fn matches(&self, a: &Attributes, h: &Hits) -> bool {
        if self.key.http_only() && a.http.is_none() {
            return true;
        }
        let auth = a.http.as_ref().and_then(|h| h.auth.as_ref());
        match &self.key {
            ConditionKey::RequestPrincipal => self.request_principals.check(auth),
            ConditionKey::RequestAudiences => {
                let auds: Vec<&str> = auth
                    .map(|x| x.audiences.iter().map(String::as_str).collect())
                    .unwrap_or_default();
                self.strs.check_all(&auds)
            }
            ConditionKey::RequestPresenter => self
                .strs
                .check_all(auth.and_then(|x| x.presenter).as_slice()),
            ConditionKey::RequestClaim(path) => self.strs.check_all(
                &auth
                    .map(|x| claim_strings(x.claims, path))
                    .unwrap_or_default(),
            ),
            ConditionKey::Header(name) => match &a.http {
                None => true,
                Some(_) => h
                    .headers
                    .get(name)
                    .is_none_or(|hits| self.values.check(hits)),
            },
            ConditionKey::SourceIp => self.ips.check(a.source_ip),
            ConditionKey::RemoteIp => self.ips.check(a.remote_ip),
            ConditionKey::DestinationIp => self.ips.check(a.destination_ip),
            ConditionKey::SourceNamespace => self.values.check(&h.namespaces),
            ConditionKey::SourcePrincipal => self.values.check(&h.principals),
            ConditionKey::SourceServiceAccount => self.values.check(&h.service_accounts),
            ConditionKey::SourceTrustDomain => self.values.check(&h.trust_domains),
            ConditionKey::ConnectionSni => self.values.check(&h.snis),
            ConditionKey::DestinationPort => self.values.check(&h.ports),
        }
    }
}

/// A claim by path, as the strings it holds: a string, or the strings of a list.
fn claim_strings<'v>(claims: &'v Map<String, Value>, path: &[String]) -> Vec<&'v str> {
    let Some((first, rest)) = path.split_first() else {
        return Vec::new();
    };
    let mut v = claims.get(first);
    for p in rest {
        v = v.and_then(|v| v.get(p));
    }
    match v {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests;
