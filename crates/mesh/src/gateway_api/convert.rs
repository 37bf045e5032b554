//! Kubernetes Gateway API resources as the Istio ones the gateway generation reads, as
//! Istio's own controller converts them: each listener of a Gateway of a Trellis class
//! becomes an Istio Gateway (`<gateway>~<listener>`, selecting the gateway proxies
//! labelled `gateway.networking.k8s.io/gateway-name: <gateway>`), and the HTTPRoutes
//! attached to it one VirtualService per (listener, hostname) whose routes are every
//! attached rule's matches in the Gateway API's order of precedence. What the Istio
//! fields cannot say rides in `HttpRoute::gateway_api`.

use std::collections::BTreeMap;

use super::status::*;
use super::types::{self as k8s, HttpRoute, ParentRef};
use super::{RouteSemantics, BUILT_IN_CLASSES, CONTROLLER, GATEWAY_NAME_LABEL, GROUP};

use crate::inputs::{Inputs, Resource};
use crate::istio;
use crate::Registry;

/// Adds the Istio Gateways and VirtualServices of the Gateway API resources in `inputs`
/// (those of Trellis's classes) and says what became of each.
pub fn convert(inputs: &mut Inputs, registry: &Registry) -> Status {
    let mut status = Status::default();
    let ours = classes(inputs, &mut status);
    let mut gateways: Vec<Served> = Vec::new();
    for gw in inputs
        .k8s_gateways
        .iter()
        .filter(|g| ours.contains(&g.spec.gateway_class_name))
    {
        gateways.push(listeners(gw, inputs));
    }
    let mut buckets: BTreeMap<(String, String, String), Vec<Entry>> = BTreeMap::new();
    // HTTPRoutes, and GRPCRoutes as the HTTPRoutes they mean.
    let routes: Vec<(&'static str, Resource<HttpRoute>)> = inputs
        .http_routes
        .iter()
        .map(|r| ("HTTPRoute", r.clone()))
        .chain(inputs.grpc_routes.iter().map(|r| {
            let http = Resource {
                name: r.name.clone(),
                namespace: r.namespace.clone(),
                labels: r.labels.clone(),
                annotations: r.annotations.clone(),
                spec: r.spec.as_http(),
                source: r.source.clone(),
            };
            ("GRPCRoute", http)
        }))
        .collect();
    for (order, (route_kind, route)) in routes.iter().enumerate() {
        let backends = route.spec.rules.iter().flat_map(|r| &r.backend_refs);
        let resolved = resolved_refs(route_kind, backends, &route.namespace, inputs, registry);
        let named = RouteRef {
            kind: route_kind,
            namespace: &route.namespace,
            name: &route.name,
            parents: &route.spec.parent_refs,
            hostnames: &route.spec.hostnames,
        };
        let rs = attach_route(&named, resolved, &mut gateways, inputs, |gw, i, hosts| {
            add_entries(&mut buckets, gw, i, hosts, route, order)
        });
        status.routes.push(rs);
    }
    for ((ns, gateway, host), mut entries) in buckets {
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        let http = entries
            .iter()
            .map(|e| http_route(e, &routes, inputs, registry))
            .collect();

        inputs.virtual_services.push(Resource {
            name: format!("{gateway}~{host}"),
            namespace: ns.clone(),
            labels: Default::default(),
            annotations: Default::default(),
            spec: istio::VirtualService {
                hosts: vec![host],
                gateways: vec![format!("{ns}/{gateway}")],
                http,
                ..Default::default()
            },
            source: super::SOURCE.into(),
        });
    }
    l4_routes(inputs, registry, &mut gateways, &mut status);
    for g in gateways {
        inputs.gateways.extend(g.istio);
        status.gateways.push(g.status);
    }
    status
}

/// TLSRoutes and TCPRoutes: attached to their listeners as HTTPRoutes are to HTTP ones.
/// A TLSRoute's rules become `tls` routes of a VirtualService bound to the listener,
/// matching the hostnames the route shares with the listener as SNI hosts; a TCPRoute's
/// become `tcp` routes (the listener's first one is served, as a TCP port has nothing
/// to tell connections apart by).
fn l4_routes(
    inputs: &mut Inputs,
    registry: &Registry,
    gateways: &mut [Served],
    status: &mut Status,
) {
    struct L4<'a> {
        route: RouteRef<'a>,
        rules: &'a [k8s::TlsRouteRule],
    }
    let routes = (inputs.tls_routes.iter().map(|r| L4 {
        route: RouteRef {
            kind: "TLSRoute",
            namespace: &r.namespace,
            name: &r.name,
            parents: &r.spec.parent_refs,
            hostnames: &r.spec.hostnames,
        },
        rules: &r.spec.rules,
    }))
    .chain(inputs.tcp_routes.iter().map(|r| L4 {
        route: RouteRef {
            kind: "TCPRoute",
            namespace: &r.namespace,
            name: &r.name,
            parents: &r.spec.parent_refs,
            hostnames: &[],
        },
        rules: &r.spec.rules,
    }));
    let mut bound: BTreeMap<(String, String), (Vec<istio::TlsRoute>, Vec<istio::TcpRoute>)> =
        BTreeMap::new();
    for L4 { route, rules } in routes {
        let (kind, route_ns) = (route.kind, route.namespace);
        let backends = rules.iter().flat_map(|r| &r.backend_refs);
        let resolved = resolved_refs(kind, backends, route_ns, inputs, registry);
        let rs = attach_route(&route, resolved, gateways, inputs, |gw, i, hosts| {
            let gateway = format!("{}~{}", gw.name, gw.spec.listeners[i].name);
            let (tls, tcp) = bound.entry((gw.namespace.clone(), gateway)).or_default();
            for rule in rules {
                let to = destinations(kind, rule, route_ns, inputs, registry);
                match kind {
                    "TLSRoute" => tls.push(istio::TlsRoute {
                        matches: vec![istio::L4Match {
                            sni_hosts: hosts.clone(),
                            ..Default::default()
                        }],
                        route: to,
                    }),
                    _ => tcp.push(istio::TcpRoute {
                        matches: Vec::new(),
                        route: to,
                    }),
                }
            }
        });
        status.routes.push(rs);
    }
    for ((ns, gateway), (tls, tcp)) in bound {
        let mut hosts: Vec<String> = tls
            .iter()
            .flat_map(|r| r.matches[0].sni_hosts.clone())
            .collect();
        if !tcp.is_empty() {
            hosts.push("*".into());
        }
        hosts.sort();
        hosts.dedup();
        inputs.virtual_services.push(Resource {
            name: format!("{gateway}~l4"),
            namespace: ns.clone(),
            labels: Default::default(),
            annotations: Default::default(),
            spec: istio::VirtualService {
                hosts,
                gateways: vec![format!("{ns}/{gateway}")],
                tls,
                tcp,
                ..Default::default()
            },
            source: super::SOURCE.into(),
        });
    }
}

/// A TLSRoute or TCPRoute rule's backends that resolve, by weight.
fn destinations(
    kind: &str,
    rule: &k8s::TlsRouteRule,
    route_ns: &str,
    inputs: &Inputs,
    registry: &Registry,
) -> Vec<istio::RouteDestination> {
    rule.backend_refs
        .iter()
        .filter(|b| backend_error(kind, &b.backend, route_ns, inputs, registry).is_none())
        .map(|b| istio::RouteDestination {
            destination: destination(&b.backend, route_ns),
            weight: Some(b.weight.unwrap_or(1)),
            headers: None,
        })
        .collect()
}

/// What attaching a route of any kind needs of it.
struct RouteRef<'a> {
    kind: &'static str,
    namespace: &'a str,
    name: &'a str,
    parents: &'a [ParentRef],
    hostnames: &'a [String],
}

/// A route attached to each Gateway of ours it names as a parent: `add` is given each
/// listener it attaches to, with the hostnames it serves there. Its status says, per
/// parent, whether it was accepted and whether its backends resolved.
fn attach_route(
    route: &RouteRef,
    resolved: Condition,
    gateways: &mut [Served],
    inputs: &Inputs,
    mut add: impl FnMut(&Served, usize, Vec<String>),
) -> RouteStatus {
    let mut rs = RouteStatus {
        kind: route.kind,
        namespace: route.namespace.to_string(),
        name: route.name.to_string(),
        parents: Vec::new(),
    };
    for parent in route.parents {
        let Some((gw, named)) = parent_gateway(gateways, parent, route.namespace) else {
            continue;
        };
        let attached = attach(
            gw,
            route.kind,
            route.namespace,
            route.hostnames,
            parent,
            inputs,
        );
        let accepted = match attached {
            Ok(listeners) => {
                for (i, hosts) in listeners {
                    add(gw, i, hosts);
                }
                Condition::ok("Accepted", "Accepted")
            }
            Err(why) => why,
        };
        rs.parents.push(ParentStatus {
            parent: named,
            conditions: vec![accepted, resolved.clone()],
        });
    }
    rs
}

/// The Gateway of ours a parentRef names, with the ref's namespace filled in; `None`
/// for another kind of parent (a mesh Service) or a Gateway that is not ours (its
/// controller reports on it).
fn parent_gateway<'a>(
    gateways: &'a mut [Served],
    parent: &ParentRef,
    route_ns: &str,
) -> Option<(&'a mut Served, ParentRef)> {
    let group = parent.group.as_deref().unwrap_or(GROUP);
    let kind = parent.kind.as_deref().unwrap_or("Gateway");
    if group != GROUP || kind != "Gateway" {
        return None;
    }
    let ns = parent.namespace.clone().unwrap_or(route_ns.to_string());
    let gw = gateways
        .iter_mut()
        .find(|g| g.namespace == ns && g.name == parent.name)?;
    let mut named = parent.clone();
    named.namespace = Some(ns);
    Some((gw, named))
}

/// The classes Trellis serves: GatewayClasses with its controller name, and the
/// built-in names when no GatewayClass of that name says otherwise.
fn classes(inputs: &Inputs, status: &mut Status) -> Vec<String> {
    let mut ours: Vec<String> = BUILT_IN_CLASSES
        .iter()
        .filter(|n| !inputs.k8s_gateway_classes.iter().any(|c| c.name == **n))
        .map(|n| n.to_string())
        .collect();
    for c in &inputs.k8s_gateway_classes {
        if c.spec.controller_name == CONTROLLER {
            ours.push(c.name.clone());
            status.classes.push(ClassStatus {
                name: c.name.clone(),
                conditions: vec![Condition::ok("Accepted", "Accepted")],
            });
        }
    }
    ours
}

/// A Gateway of ours: its listeners as Istio Gateways (the valid ones) and its status.
struct Served {
    namespace: String,
    name: String,
    spec: k8s::Gateway,
    /// Per listener: whether routes may attach (valid, not conflicted).
    usable: Vec<bool>,
    istio: Vec<Resource<istio::Gateway>>,
    status: GatewayStatus,
}

fn listeners(gw: &Resource<k8s::Gateway>, inputs: &Inputs) -> Served {
    let spec = &gw.spec;
    let mut status = GatewayStatus {
        namespace: gw.namespace.clone(),
        name: gw.name.clone(),
        conditions: Vec::new(),
        listeners: Vec::new(),
    };
    let mut usable = Vec::new();
    let mut istio = Vec::new();
    for (i, l) in spec.listeners.iter().enumerate() {
        let mut conditions = Vec::new();
        let protocol = l.protocol.to_ascii_uppercase();
        let mut ok = true;
        let mut tls = None;
        match protocol.as_str() {
            "HTTP" => {}
            // TLS passthrough: TLSRoutes route it by SNI, not terminated.
            "TLS" if l.tls.as_ref().and_then(|t| t.mode.as_deref()) == Some("Passthrough") => {
                tls = Some(istio::ServerTls {
                    mode: Some("PASSTHROUGH".into()),
                    ..Default::default()
                })
            }
            "TCP" => {}
            "HTTPS" | "TLS" => match certificate(l, &gw.namespace, inputs) {
                Ok(credential) => {
                    tls = Some(istio::ServerTls {
                        mode: Some("SIMPLE".into()),
                        credential_name: Some(credential),
                        ..Default::default()
                    })
                }
                Err((reason, message)) => {
                    ok = false;
                    conditions.push(Condition::new("ResolvedRefs", false, reason, message));
                }
            },
            other => {
                ok = false;
                conditions.push(Condition::new(
                    "Accepted",
                    false,
                    "UnsupportedProtocol",
                    format!("{other} listeners are not supported by Trellis (HTTP, HTTPS, TLS and TCP are)"),
                ));
            }
        }
        // Listeners on one port must agree on the protocol, and not repeat a hostname.
        let others = spec
            .listeners
            .iter()
            .enumerate()
            .filter(|(j, o)| *j != i && o.port == l.port);
        for (_, o) in others {
            if !o.protocol.eq_ignore_ascii_case(&l.protocol) {
                ok = false;
                conditions.push(Condition::new(
                    "Conflicted",
                    true,
                    "ProtocolConflict",
                    format!(
                        "listener {} has port {} with protocol {}",
                        o.name, o.port, o.protocol
                    ),
                ));
                break;
            }
            if o.hostname == l.hostname {
                ok = false;
                conditions.push(Condition::new(
                    "Conflicted",
                    true,
                    "HostnameConflict",
                    format!(
                        "listener {} has port {} and the same hostname",
                        o.name, o.port
                    ),
                ));
                break;
            }
        }
        let (kinds, invalid_kinds) = route_kinds(l);
        if invalid_kinds {
            conditions.push(Condition::new(
                "ResolvedRefs",
                false,
                "InvalidRouteKinds",
                "a route kind this listener cannot take (HTTP and HTTPS: HTTPRoute, GRPCRoute; TLS Passthrough: TLSRoute; TLS Terminate and TCP: TCPRoute)",
            ));
        }
        if !conditions.iter().any(|c| c.kind == "Conflicted") {
            conditions.push(Condition::new("Conflicted", false, "NoConflicts", ""));
        }
        for kind in ["Accepted", "ResolvedRefs"] {
            if !conditions.iter().any(|c| c.kind == kind) {
                conditions.push(Condition::ok(kind, kind));
            }
        }
        conditions.push(if ok {
            Condition::ok("Programmed", "Programmed")
        } else {
            Condition::new("Programmed", false, "Invalid", "the listener is not served")
        });
        status.listeners.push(ListenerStatus {
            name: l.name.clone(),
            attached_routes: 0,
            supported_kinds: kinds,
            conditions,
        });
        usable.push(ok);
        if ok {
            istio.push(Resource {
                name: format!("{}~{}", gw.name, l.name),
                namespace: gw.namespace.clone(),
                labels: Default::default(),
                annotations: Default::default(),
                spec: istio::Gateway {
                    selector: [(GATEWAY_NAME_LABEL.to_string(), gw.name.clone())].into(),
                    servers: vec![istio::GatewayServer {
                        port: Some(istio::GatewayPort {
                            number: l.port,
                            name: l.name.clone(),
                            protocol: protocol.clone(),
                            target_port: None,
                        }),
                        hosts: vec![format!("*/{}", l.hostname.as_deref().unwrap_or("*"))],
                        name: Some(l.name.clone()),
                        tls,
                        ..Default::default()
                    }],
                },
                source: gw.source.clone(),
            });
        }
    }
    let any = usable.iter().any(|u| *u);
    status.conditions = vec![
        Condition::ok("Accepted", "Accepted"),
        if any {
            Condition::new(
                "Programmed",
                true,
                "Programmed",
                format!(
                    "served by the gateway proxies labelled {GATEWAY_NAME_LABEL}={}",
                    gw.name
                ),
            )
        } else {
            Condition::new("Programmed", false, "Invalid", "no listener can be served")
        },
    ];
    Served {
        namespace: gw.namespace.clone(),
        name: gw.name.clone(),
        spec: spec.clone(),
        usable,
        istio,
        status,
    }
}

/// An HTTPS listener's certificate: its first `certificateRefs` entry, a Secret in the
/// Gateway's namespace (or another, with a ReferenceGrant there) with a certificate and
/// key; the credential name a server takes (`<namespace>/<name>` for another
/// namespace), or the `ResolvedRefs` reason why not.
fn certificate(
    l: &k8s::Listener,
    gw_ns: &str,
    inputs: &Inputs,
) -> Result<String, (&'static str, String)> {
    let Some(r) = l.tls.as_ref().and_then(|t| t.certificate_refs.first()) else {
        return Err((
            "InvalidCertificateRef",
            "a listener that terminates TLS needs certificateRefs".into(),
        ));
    };
    let (group, kind) = (
        r.group.as_deref().unwrap_or(""),
        r.kind.as_deref().unwrap_or("Secret"),
    );
    if !group.is_empty() || kind != "Secret" {
        return Err((
            "InvalidCertificateRef",
            format!("{group}/{kind}: certificates come from Secrets"),
        ));
    }
    let ns = r.namespace.as_deref().unwrap_or(gw_ns);
    if ns != gw_ns {
        let granted = inputs
            .reference_grants
            .iter()
            .filter(|g| g.namespace == ns)
            .any(|g| {
                g.spec
                    .from
                    .iter()
                    .any(|f| f.group == GROUP && f.kind == "Gateway" && f.namespace == gw_ns)
                    && g.spec.to.iter().any(|t| {
                        t.group.is_empty()
                            && t.kind == "Secret"
                            && t.name.as_deref().is_none_or(|n| n == r.name)
                    })
            });
        if !granted {
            return Err((
                "RefNotPermitted",
                format!(
                    "no ReferenceGrant in {ns} lets Gateways of {gw_ns} refer to Secret {}",
                    r.name
                ),
            ));
        }
    }
    let usable = inputs
        .credentials
        .iter()
        .any(|c| c.namespace == ns && c.name == r.name && c.spec.certificate_chain.is_some());
    if !usable {
        return Err((
            "InvalidCertificateRef",
            format!(
                "Secret {ns}/{} not found, or without tls.crt and tls.key",
                r.name
            ),
        ));
    }
    Ok(match ns == gw_ns {
        true => r.name.clone(),
        false => format!("{ns}/{}", r.name),
    })
}

/// The route kinds a listener takes, and whether it names one Trellis cannot serve.
fn route_kinds(l: &k8s::Listener) -> (Vec<String>, bool) {
    let asked = l
        .allowed_routes
        .as_ref()
        .map(|a| a.kinds.as_slice())
        .unwrap_or_default();
    // A TLS listener takes TLSRoutes in Passthrough mode and TCPRoutes once it has
    // terminated; a TCP one TCPRoutes; HTTP and HTTPS ones HTTPRoutes and GRPCRoutes.
    let protocol = l.protocol.to_ascii_uppercase();
    let passthrough = l.tls.as_ref().and_then(|t| t.mode.as_deref()) == Some("Passthrough");
    let takes: &[&str] = match protocol.as_str() {
        "TLS" if passthrough => &["TLSRoute"],
        "TLS" | "TCP" => &["TCPRoute"],
        _ => &["HTTPRoute", "GRPCRoute"],
    };
    if asked.is_empty() {
        return (takes.iter().map(|k| k.to_string()).collect(), false);
    }
    let valid = |k: &&k8s::RouteGroupKind| {
        k.group.as_deref().unwrap_or(GROUP) == GROUP && takes.contains(&k.kind.as_str())
    };
    let kinds: Vec<String> = asked.iter().filter(valid).map(|k| k.kind.clone()).collect();
    let invalid = kinds.len() < asked.len();
    (kinds, invalid)
}

/// One match of one rule of one route, attached to a listener for a hostname, with its
/// place in the Gateway API's order of precedence.
struct Entry {
    key: Precedence,
    route: usize,
    rule: usize,
    matched: k8s::HttpRouteMatch,
    /// The listener's port (a redirect without scheme or port keeps it).
    port: u32,
}

/// Exact path first, then the longest prefix; then a method, more headers, more query
/// parameters; then the older route, then by namespace/name; then rule and match order.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Precedence {
    path: (u8, std::cmp::Reverse<usize>),
    method: u8,
    headers: std::cmp::Reverse<usize>,
    query: std::cmp::Reverse<usize>,
    order: usize,
    name: (String, String),
    rule: usize,
    matched: usize,
}

fn precedence(
    m: &k8s::HttpRouteMatch,
    route: &Resource<HttpRoute>,
    order: usize,
    rule: usize,
    matched: usize,
) -> Precedence {
    let (kind, value) = path_of(m);
    let path = match kind {
        "Exact" => (0, std::cmp::Reverse(value.len())),
        "PathPrefix" => (1, std::cmp::Reverse(value.len())),
        _ => (2, std::cmp::Reverse(value.len())),
    };
    Precedence {
        path,
        method: u8::from(m.method.is_none()),
        headers: std::cmp::Reverse(m.headers.len()),
        query: std::cmp::Reverse(m.query_params.len()),
        order,
        name: (route.namespace.clone(), route.name.clone()),
        rule,
        matched,
    }
}

/// A match's path: its type and value, `PathPrefix /` when absent; a prefix's trailing
/// `/` is dropped ("a trailing / is ignored").
fn path_of(m: &k8s::HttpRouteMatch) -> (&str, String) {
    let kind = m
        .path
        .as_ref()
        .and_then(|p| p.kind.as_deref())
        .unwrap_or("PathPrefix");
    let value = m
        .path
        .as_ref()
        .and_then(|p| p.value.clone())
        .unwrap_or("/".into());
    let value = if kind == "PathPrefix" && value.len() > 1 {
        value.trim_end_matches('/').to_string()
    } else {
        value
    };
    (kind, if value.is_empty() { "/".into() } else { value })
}

/// The listeners of `gw` a route of `kind` attaches to through `parent`, each with the
/// hostnames it serves there (counted in the listener's attached routes); or its
/// `Accepted` condition saying why it attaches to none.
fn attach(
    gw: &mut Served,
    kind: &str,
    route_ns: &str,
    hostnames: &[String],
    parent: &ParentRef,
    inputs: &Inputs,
) -> Result<Vec<(usize, Vec<String>)>, Condition> {
    let named: Vec<usize> = (0..gw.spec.listeners.len())
        .filter(|i| {
            let l = &gw.spec.listeners[*i];
            parent.section_name.as_ref().is_none_or(|s| *s == l.name)
                && parent.port.is_none_or(|p| p == l.port)
        })
        .collect();
    if named.is_empty() {
        return Err(Condition::new(
            "Accepted",
            false,
            "NoMatchingParent",
            "no listener has the sectionName and port the parentRef names",
        ));
    }
    let allowed: Vec<usize> = named
        .into_iter()
        .filter(|i| {
            gw.usable[*i]
                && admits(
                    &gw.spec.listeners[*i],
                    kind,
                    &gw.namespace,
                    route_ns,
                    inputs,
                )
        })
        .collect();
    if allowed.is_empty() {
        return Err(Condition::new(
            "Accepted",
            false,
            "NotAllowedByListeners",
            "no listener of the parent allows routes of this kind from this namespace",
        ));
    }
    let mut attached = Vec::new();
    for i in allowed {
        let hosts = intersect(gw.spec.listeners[i].hostname.as_deref(), hostnames);
        if !hosts.is_empty() {
            gw.status.listeners[i].attached_routes += 1;
            attached.push((i, hosts));
        }
    }
    if attached.is_empty() {
        return Err(Condition::new(
            "Accepted",
            false,
            "NoMatchingListenerHostname",
            "no hostname of the route matches a listener's hostname",
        ));
    }
    Ok(attached)
}

/// Every match of every rule of `route` (a rule without matches: `PathPrefix /`), for
/// each of `hosts` on listener `i` of `gw`.
fn add_entries(
    buckets: &mut BTreeMap<(String, String, String), Vec<Entry>>,
    gw: &Served,
    i: usize,
    hosts: Vec<String>,
    route: &Resource<HttpRoute>,
    order: usize,
) {
    let l = &gw.spec.listeners[i];
    let gateway = format!("{}~{}", gw.name, l.name);
    for host in hosts {
        let bucket = buckets
            .entry((gw.namespace.clone(), gateway.clone(), host))
            .or_default();
        for (r, rule) in route.spec.rules.iter().enumerate() {
            let matches = if rule.matches.is_empty() {
                vec![k8s::HttpRouteMatch::default()]
            } else {
                rule.matches.clone()
            };
            for (m, matched) in matches.into_iter().enumerate() {
                bucket.push(Entry {
                    key: precedence(&matched, route, order, r, m),
                    route: order,
                    rule: r,
                    matched,
                    port: l.port,
                });
            }
        }
    }
}

/// Whether a listener's `allowedRoutes` admit an HTTPRoute from `route_ns`.
fn admits(l: &k8s::Listener, kind: &str, gw_ns: &str, route_ns: &str, inputs: &Inputs) -> bool {
    let (kinds, _) = route_kinds(l);
    if !kinds.iter().any(|k| k == kind) {
        return false;
    }
    let namespaces = l
        .allowed_routes
        .as_ref()
        .and_then(|a| a.namespaces.as_ref());
    match namespaces.and_then(|n| n.from.as_deref()).unwrap_or("Same") {
        "All" => true,
        "Selector" => {
            let Some(sel) = namespaces.and_then(|n| n.selector.as_ref()) else {
                return false;
            };
            let empty = Default::default();
            let labels = inputs.namespace_labels.get(route_ns).unwrap_or(&empty);
            super::selector_matches(sel, labels)
        }
        _ => route_ns == gw_ns,
    }
}

/// The hostnames a route serves on a listener: the intersection of the listener's
/// hostname and the route's (a wildcard narrowed by the other side's name).
fn intersect(listener: Option<&str>, route: &[String]) -> Vec<String> {
    match (listener, route.is_empty()) {
        (None, true) => vec!["*".into()],
        (None, false) => route.to_vec(),
        (Some(l), true) => vec![l.to_string()],
        (Some(l), false) => {
            let mut out = Vec::new();
            for r in route {
                let h = if r == l || covers(l, r) {
                    r.clone()
                } else if covers(r, l) {
                    l.to_string()
                } else {
                    continue;
                };
                if !out.contains(&h) {
                    out.push(h);
                }
            }
            out
        }
    }
}

/// Whether the wildcard `pattern` (`*.example.com`) covers `name` (any host one or
/// more labels under it; a wildcard name only by a wider wildcard).
fn covers(pattern: &str, name: &str) -> bool {
    let Some(suffix) = pattern.strip_prefix('*') else {
        return false;
    };
    match name.strip_prefix('*') {
        Some(inner) => inner.len() > suffix.len() && inner.ends_with(suffix),
        None => name.len() > suffix.len() && name.ends_with(suffix),
    }
}

fn backend_error(
    route_kind: &str,
    b: &k8s::BackendObjectRef,
    route_ns: &str,
    inputs: &Inputs,
    registry: &Registry,
) -> Option<(&'static str, String)> {
    let group = b.group.as_deref().unwrap_or("");
    let kind = b.kind.as_deref().unwrap_or("Service");
    if !group.is_empty() || kind != "Service" {
        return Some((
            "InvalidKind",
            format!("{group}/{kind} is not a kind of backend Trellis knows (Service is)"),
        ));
    }
    let ns = b.namespace.as_deref().unwrap_or(route_ns);
    if ns != route_ns && !granted(inputs, route_kind, route_ns, ns, &b.name) {
        return Some((
            "RefNotPermitted",
            format!(
                "no ReferenceGrant in {ns} lets HTTPRoutes of {route_ns} refer to Service {}",
                b.name
            ),
        ));
    }
    let host = format!("{}.{ns}.svc.cluster.local", b.name);
    let Some(service) = registry.service(&host) else {
        return Some((
            "BackendNotFound",
            format!("Service {ns}/{} not found", b.name),
        ));
    };
    match b.port {
        None => Some((
            "BackendNotFound",
            format!("Service {ns}/{}: port is required", b.name),
        )),
        Some(p) if !service.ports.iter().any(|q| q.number == p) => Some((
            "BackendNotFound",
            format!("Service {ns}/{} has no port {p}", b.name),
        )),
        Some(_) => None,
    }
}

/// A route's `ResolvedRefs`: false with the first backend that does not resolve.
fn resolved_refs<'a>(
    kind: &str,
    backends: impl Iterator<Item = &'a k8s::HttpBackendRef>,
    route_ns: &str,
    inputs: &Inputs,
    registry: &Registry,
) -> Condition {
    for b in backends {
        if let Some((reason, message)) = backend_error(kind, &b.backend, route_ns, inputs, registry)
        {
            return Condition::new("ResolvedRefs", false, reason, message);
        }
    }
    Condition::ok("ResolvedRefs", "ResolvedRefs")
}

/// Whether a ReferenceGrant in `to_ns` lets HTTPRoutes of `from_ns` refer to Service `name`.
fn granted(inputs: &Inputs, kind: &str, from_ns: &str, to_ns: &str, name: &str) -> bool {
    inputs
        .reference_grants
        .iter()
        .filter(|g| g.namespace == to_ns)
        .any(|g| {
            g.spec
                .from
                .iter()
                .any(|f| f.group == GROUP && f.kind == kind && f.namespace == from_ns)
                && g.spec.to.iter().any(|t| {
                    t.group.is_empty()
                        && t.kind == "Service"
                        && t.name.as_deref().is_none_or(|n| n == name)
                })
        })
}

/// One attached match as the Istio route it becomes.
fn http_route(
    e: &Entry,
    routes: &[(&'static str, Resource<HttpRoute>)],
    inputs: &Inputs,
    registry: &Registry,
) -> istio::HttpRoute {
    let (route_kind, route) = (routes[e.route].0, &routes[e.route].1);
    let rule = &route.spec.rules[e.rule];
    let ns = &route.namespace;
    let (kind, path) = path_of(&e.matched);
    let mut semantics = RouteSemantics::default();
    let uri = match kind {
        "Exact" => istio::StringMatch {
            exact: Some(path.clone()),
            ..Default::default()
        },
        "RegularExpression" => istio::StringMatch {
            regex: Some(path.clone()),
            ..Default::default()
        },
        _ => {
            semantics.path_separated = true;
            istio::StringMatch {
                prefix: Some(path.clone()),
                ..Default::default()
            }
        }
    };
    let value = |v: &k8s::ValueMatch| match v.kind.as_deref() {
        Some("RegularExpression") => istio::StringMatch {
            regex: Some(v.value.clone()),
            ..Default::default()
        },
        _ => istio::StringMatch {
            exact: Some(v.value.clone()),
            ..Default::default()
        },
    };
    let mut headers = BTreeMap::new();
    for h in &e.matched.headers {
        // "The first entry with an equivalent name MUST be considered for a match."
        headers
            .entry(h.name.to_ascii_lowercase())
            .or_insert_with(|| value(h));
    }
    let mut query_params = BTreeMap::new();
    for q in &e.matched.query_params {
        query_params
            .entry(q.name.clone())
            .or_insert_with(|| value(q));
    }
    let mut out = istio::HttpRoute {
        name: Some(format!(
            "{ns}.{}.{}.{}",
            route.name,
            rule.name.clone().unwrap_or(e.rule.to_string()),
            e.key.matched
        )),
        matches: vec![istio::HttpMatch {
            uri: Some(uri),
            method: e.matched.method.clone().map(|m| istio::StringMatch {
                exact: Some(m),
                ..Default::default()
            }),
            headers,
            query_params,
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut unsupported = None;
    // A backend's redirect, rewrite or mirror is the rule's when it is the only
    // backend; with several, Trellis cannot say it (the rule answers 500).
    let per_backend: Vec<&k8s::HttpRouteFilter> = rule
        .backend_refs
        .iter()
        .flat_map(|b| &b.filters)
        .filter(|f| {
            matches!(
                f.kind.as_str(),
                "RequestRedirect" | "URLRewrite" | "RequestMirror"
            )
        })
        .collect();
    if !per_backend.is_empty() && rule.backend_refs.len() > 1 {
        unsupported = Some("a redirect, rewrite or mirror per backend among several".to_string());
    }
    for f in rule.filters.iter().chain(per_backend) {
        match f.kind.as_str() {
            "RequestHeaderModifier" => {
                let h = out.headers.get_or_insert_with(Default::default);
                h.request = f.request_header_modifier.as_ref().map(header_operations);
            }
            "ResponseHeaderModifier" => {
                let h = out.headers.get_or_insert_with(Default::default);
                h.response = f.response_header_modifier.as_ref().map(header_operations);
            }
            "RequestRedirect" => {
                let r = f.request_redirect.clone().unwrap_or_default();
                let mut redirect = istio::HttpRedirect {
                    authority: r.hostname.clone(),
                    scheme: r.scheme.clone(),
                    // A scheme without a port: the scheme's own port (left out of the
                    // Location); neither: the listener's port (the Gateway API's rule).
                    port: r.port.or_else(|| {
                        r.scheme
                            .is_none()
                            .then(|| u16::try_from(e.port).unwrap_or(80))
                    }),
                    redirect_code: Some(r.status_code.unwrap_or(302)),
                    uri: None,
                };
                if let Some(p) = &r.path {
                    match p.kind.as_str() {
                        "ReplaceFullPath" => redirect.uri = p.replace_full_path.clone(),
                        _ => semantics.redirect_prefix = p.replace_prefix_match.clone(),
                    }
                }
                out.redirect = Some(redirect);
            }
            "URLRewrite" => {
                let r = f.url_rewrite.clone().unwrap_or_default();
                let mut rewrite = istio::HttpRewrite {
                    authority: r.hostname.clone(),
                    uri: None,
                };
                if let Some(p) = &r.path {
                    match p.kind.as_str() {
                        "ReplaceFullPath" => semantics.full_path = p.replace_full_path.clone(),
                        _ => rewrite.uri = p.replace_prefix_match.clone(),
                    }
                }
                out.rewrite = Some(rewrite);
            }
            "RequestMirror" => {
                let Some(m) = &f.request_mirror else { continue };
                if out.mirror.is_some()
                    || backend_error(route_kind, &m.backend_ref, ns, inputs, registry).is_some()
                {
                    continue; // one mirror per route; an invalid one mirrors nothing
                }
                out.mirror = Some(destination(&m.backend_ref, ns));
                let percent = match (&m.percent, &m.fraction) {
                    (Some(p), _) => Some(*p),
                    (None, Some(f)) => Some(100.0 * f.numerator / f.denominator.unwrap_or(100.0)),
                    _ => None,
                };
                out.mirror_percentage = percent.map(|value| istio::Percent { value });
            }
            "CORS" => out.cors_policy = f.cors.as_ref().map(cors_policy),
            other => unsupported = Some(other.to_string()),
        }
    }
    if let Some(t) = &rule.timeouts {
        out.timeout = t.request.clone();
        if let Some(b) = &t.backend_request {
            out.retries = Some(istio::HttpRetry {
                attempts: 2,
                per_try_timeout: Some(b.clone()),
                retry_on: None,
            });
        }
    }
    // Requests a rule cannot send anywhere get 500: an unsupported filter, no backends,
    // backends none of which resolve, or weights that add up to 0.
    let valid: Vec<&k8s::HttpBackendRef> = rule
        .backend_refs
        .iter()
        .filter(|b| backend_error(route_kind, &b.backend, ns, inputs, registry).is_none())
        .collect();
    let weight = |b: &k8s::HttpBackendRef| b.weight.unwrap_or(1);
    let total: u32 = valid.iter().map(|b| weight(b)).sum();
    if out.redirect.is_none() {
        if unsupported.is_some() || valid.is_empty() || total == 0 {
            out.direct_response = Some(istio::HttpDirectResponse {
                status: 500,
                body: None,
            });
            out.rewrite = None;
            out.mirror = None;
        } else {
            out.route = valid
                .iter()
                .map(|b| istio::RouteDestination {
                    destination: destination(&b.backend, ns),
                    weight: Some(weight(b)),
                    headers: backend_headers(b),
                })
                .collect();
        }
    }
    out.gateway_api = Some(semantics);
    out
}

/// The CORS filter as Istio's corsPolicy: an origin with `*` in it matches any text
/// there (`https://*.example.com` any subdomain, `*` any origin); preflights from other
/// origins are answered by the gateway, without CORS headers.
fn cors_policy(c: &k8s::CorsFilter) -> istio::CorsPolicy {
    let origin = |o: &String| match o.contains('*') {
        true => istio::StringMatch {
            regex: Some(
                o.split('*')
                    .map(regex::escape)
                    .collect::<Vec<_>>()
                    .join(".*"),
            ),
            ..Default::default()
        },
        false => istio::StringMatch {
            exact: Some(o.clone()),
            ..Default::default()
        },
    };
    istio::CorsPolicy {
        allow_origins: c.allow_origins.iter().map(origin).collect(),
        allow_methods: c.allow_methods.clone(),
        allow_headers: c.allow_headers.clone(),
        expose_headers: c.expose_headers.clone(),
        max_age: c.max_age.map(|s| format!("{s}s")),
        allow_credentials: c.allow_credentials,
        unmatched_preflights: Some("IGNORE".into()),
    }
}

fn destination(b: &k8s::BackendObjectRef, route_ns: &str) -> istio::Destination {
    let ns = b.namespace.as_deref().unwrap_or(route_ns);
    istio::Destination {
        host: format!("{}.{ns}.svc.cluster.local", b.name),
        subset: None,
        port: b.port.map(|number| istio::PortSelector { number }),
    }
}

fn backend_headers(b: &k8s::HttpBackendRef) -> Option<istio::Headers> {
    let mut h = istio::Headers::default();
    for f in &b.filters {
        match f.kind.as_str() {
            "RequestHeaderModifier" => {
                h.request = f.request_header_modifier.as_ref().map(header_operations)
            }
            "ResponseHeaderModifier" => {
                h.response = f.response_header_modifier.as_ref().map(header_operations)
            }
            _ => {}
        }
    }
    (h != istio::Headers::default()).then_some(h)
}

fn header_operations(m: &k8s::HeaderModifier) -> istio::HeaderOperations {
    istio::HeaderOperations {
        set: m
            .set
            .iter()
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect(),
        add: m
            .add
            .iter()
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect(),
        remove: m.remove.clone(),
    }
}
