//! One sidecar's listeners and clusters from the registry and the Istio resources,
//! following Istio's rules: VirtualService routes (or a default route) per service
//! port on the outbound listener, one cluster per service port and DestinationRule
//! subset (`outbound|<port>|<subset>|<host>`), automatic mutual TLS to workloads that
//! have sidecars, PeerAuthentication and AuthorizationPolicy on each inbound port.

use std::collections::{BTreeMap, BTreeSet};

use trellis_config as tc;
use trellis_config::{Dur, SDS_ROOT_CA, SDS_WORKLOAD_CERT};

use crate::inputs::{selects, Inputs, Resource};
use crate::istio::{self, Labels, MtlsMode, TrafficPolicy};
use crate::{fqdn, Port, Registry, Service, Workload, ROOT_NAMESPACE};

/// The generated part of a sidecar's config (listeners and clusters), or why there is
/// none (the workload is not in the registry).
pub fn generate(
    inputs: &Inputs,
    registry: &Registry,
    namespace: &str,
    workload: &str,
) -> Result<tc::Config, String> {
    let w = registry.known_workload(namespace, workload)?;
    Ok(generate_for(inputs, registry, w))
}

/// What a client in `namespace` that is not a registered workload (a proxyless gRPC
/// client) may reach: the outbound side only.
pub fn generate_client(inputs: &Inputs, registry: &Registry, namespace: &str) -> tc::Config {
    let w = Workload {
        name: "proxyless".into(),
        namespace: namespace.to_string(),
        labels: Labels::new(),
        service_account: "default".into(),
        address: "0.0.0.0".into(),
        additional_addresses: Vec::new(),
        ports: Default::default(),
        app_ports: Default::default(),
        outbound: "0.0.0.0:0".into(),
        weight: 1,
        capture: false,
    };
    generate_for(inputs, registry, &w)
}

fn generate_for(inputs: &Inputs, registry: &Registry, w: &Workload) -> tc::Config {
    let Outbound {
        http,
        egress,
        mut clusters,
    } = generate_outbound(inputs, registry, w);
    let http = http.map(|mut l| {
        observe_listener(inputs, registry, w, &mut l);
        l
    });
    let egress = egress.into_iter().map(|mut l| {
        observe_listener(inputs, registry, w, &mut l);
        l
    });
    let (inbound, inbound_clusters) = generate_inbound(inputs, registry, w);
    let listeners = http.into_iter().chain(egress).chain(inbound).collect();
    clusters.extend(inbound_clusters);
    tc::Config {
        listeners,
        clusters,
        ..Default::default()
    }
}

/// Makes the outbound HTTP listener of a shared scope (see [`outbound_scope`]) `w`'s own:
/// its address, the workload its metrics and peer metadata name, its tracing.
pub fn own_outbound(inputs: &Inputs, registry: &Registry, w: &Workload, l: &mut tc::Listener) {
    l.address = Some(w.outbound.clone());
    l.istio_stats = crate::telemetry::stats(inputs, w, tc::Reporter::Source, true);
    observe_listener(inputs, registry, w, l);
}

/// Sets the tracing and the access log of `w`'s listener `l` (see [`crate::trace`] and
/// [`crate::access_logs`]): an HTTP listener's both, a TCP proxy's access log.
pub fn observe_listener(inputs: &Inputs, registry: &Registry, w: &Workload, l: &mut tc::Listener) {
    if let Some(kind) = crate::trace::kind_of(l) {
        observation(inputs, registry, w, kind).apply(l);
    }
}

/// What `w`'s listeners of one side get from the Telemetry API and meshConfig: the
/// access log, and the tracing of HTTP listeners.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    access_log: Option<tc::AccessLog>,
    tracing: Option<tc::Tracing>,
}

/// `w`'s [`Observation`] on the side whose spans are of `kind`.
pub fn observation(
    inputs: &Inputs,
    registry: &Registry,
    w: &Workload,
    kind: tc::SpanKind,
) -> Observation {
    let side = crate::telemetry_api::side_of(kind);
    let access_log = crate::access_logs::access_log(inputs, w, side);
    let tracing = crate::trace::tracing(inputs, w, kind, |host, port| {
        // The cluster as this sidecar's view makes it.
        let mut g = Gen::new(inputs, registry, w);
        let name = g.cluster(host, port, None)?;
        g.clusters
            .get(&name)
            .filter(|c| c.tls.is_none())
            .map(|_| name)
    });
    Observation {
        access_log,
        tracing,
    }
}

impl Observation {
    pub fn apply(&self, l: &mut tc::Listener) {
        for t in l
            .tcp
            .iter_mut()
            .chain(l.sni_routes.iter_mut().map(|r| &mut r.tcp))
        {
            t.access_log = self.access_log.clone();
        }
        if let Some(h) = l.http.as_mut() {
            h.tracing = self.tracing.clone();
            h.access_log = self.access_log.clone();
        }
    }
}

/// The outbound half of a view: the same for every workload with the same
/// [`outbound_scope`] except for the HTTP listener's address.
pub struct Outbound {
    /// The HTTP listener the app uses as its proxy, on the workload's own address.
    pub http: Option<tc::Listener>,
    /// Listeners of their own for TCP services (Sidecar egress listeners with a port).
    pub egress: Vec<tc::Listener>,
    pub clusters: Vec<tc::Cluster>,
}

pub fn generate_outbound(inputs: &Inputs, registry: &Registry, w: &Workload) -> Outbound {
    let mut g = Gen::new(inputs, registry, w);
    // The collectors' clusters, whichever listener's spans go there.
    for (host, port) in crate::trace::collectors(inputs) {
        g.cluster(&host, port, None);
    }
    if w.capture {
        let listeners = g.captured_outbound();
        return Outbound {
            http: None,
            egress: listeners,
            clusters: g.clusters.into_values().collect(),
        };
    }
    let http = g.outbound();
    let egress = g.egress();
    Outbound {
        http,
        egress,
        clusters: g.clusters.into_values().collect(),
    }
}

/// The inbound half of a view: a listener per served port, and the local app clusters.
pub fn generate_inbound(
    inputs: &Inputs,
    registry: &Registry,
    w: &Workload,
) -> (Vec<tc::Listener>, Vec<tc::Cluster>) {
    let mut g = Gen::new(inputs, registry, w);
    let mut listeners = g.inbound();
    for l in &mut listeners {
        observe_listener(inputs, registry, w, l);
    }
    (listeners, g.clusters.into_values().collect())
}

/// Outbound clusters of `w`'s scope by name (`outbound|<port>|<subset>|<host>`), made
/// again from the current registry: after endpoints moved, the only part of a view that
/// can differ. `None` when one of them can no longer be made.
pub fn generate_clusters(
    inputs: &Inputs,
    registry: &Registry,
    w: &Workload,
    names: &[String],
) -> Option<Vec<tc::Cluster>> {
    let mut g = Gen::new(inputs, registry, w);
    for name in names {
        let mut parts = name.splitn(4, '|');
        let (_, port, subset, host) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let subset = (!subset.is_empty()).then_some(subset);
        g.cluster(host, port.parse().ok()?, subset)?;
    }
    Some(g.clusters.into_values().collect())
}

/// What the outbound half depends on: the namespace, the Sidecar resource that scopes
/// the workload's egress, and the workload's values of the labels that VirtualService
/// matches ask the client for (`sourceLabels`).
pub fn outbound_scope(inputs: &Inputs, w: &Workload) -> String {
    let registry = Registry::default();
    let sidecar = match Gen::new(inputs, &registry, w).sidecar_scope() {
        Some(sc) => format!("{}/{}", sc.namespace, sc.name),
        None => "*".to_string(),
    };
    let asked: BTreeSet<&str> = inputs
        .virtual_services
        .iter()
        .flat_map(|vs| &vs.spec.http)
        .flat_map(|r| &r.matches)
        .flat_map(|m| m.source_labels.keys())
        .map(String::as_str)
        .collect();
    let labels: String = asked
        .iter()
        .filter_map(|k| w.labels.get(*k).map(|v| format!("|{k}={v}")))
        .collect();
    // A captured sidecar's outbound listeners differ from an HTTP-proxy sidecar's.
    let capture = if w.capture { "|captured" } else { "" };
    format!("{}|{sidecar}{labels}{capture}", w.namespace)
}

/// Sidecar resources whose egress listeners (those with a port) would be bound by two
/// or more sidecars on one address, each refused with the reason. Workloads with the
/// same address share a network namespace (every workload of a local mesh is on
/// 127.0.0.1): the first sidecar would bind the port and every other one would refuse
/// each listener update from then on, since a port it cannot bind refuses the update.
pub fn egress_collisions(inputs: &Inputs, registry: &Registry) -> Vec<crate::Diagnostic> {
    // Sidecar (namespace, name) → it, and by address the sidecars there it scopes.
    type ByAddress<'a> = BTreeMap<&'a str, Vec<String>>;
    let mut scoped: BTreeMap<(&str, &str), (&Resource<istio::Sidecar>, ByAddress)> =
        BTreeMap::new();
    let empty = Registry::default();
    for w in registry.workloads.iter().filter(|w| w.has_sidecar()) {
        let Some(sc) = Gen::new(inputs, &empty, w).sidecar_scope() else {
            continue;
        };
        if !sc.spec.egress.iter().any(|e| e.port.is_some()) {
            continue;
        }
        let (_, by_address) =
            (scoped.entry((&sc.namespace, &sc.name))).or_insert_with(|| (sc, ByAddress::new()));
        by_address
            .entry(&w.address)
            .or_default()
            .push(format!("{}.{}", w.name, w.namespace));
    }
    let mut refused = Vec::new();
    for ((ns, name), (sc, by_address)) in scoped {
        let Some((address, sidecars)) = by_address.iter().find(|(_, s)| s.len() > 1) else {
            continue;
        };
        let ports: Vec<String> = (sc.spec.egress.iter())
            .filter_map(|e| e.port.as_ref().map(|p| p.number.to_string()))
            .collect();
        refused.push(crate::Diagnostic {
            resource: sc.source.clone(),
            message: format!(
                "spec.egress: the sidecars of {} workloads at the same address \
                 {address} ({}) would each bind port {}, which only one can; give them \
                 Sidecar resources with different ports or bind addresses (until then \
                 they are scoped as if this Sidecar did not exist)",
                sidecars.len(),
                sidecars.join(", "),
                ports.join(", "),
            ),
            key: Some(("Sidecar".into(), ns.to_string(), name.to_string())),
        });
    }
    refused
}

/// The service (FQDN) and port a Sidecar egress listener with a port forwards to.
fn egress_target(
    sc: &Resource<istio::Sidecar>,
    e: &istio::EgressListener,
) -> Option<(String, u16)> {
    let (port, h) = (e.port.as_ref()?, e.hosts.first()?);
    let (ns, host) = h.split_once('/').unwrap_or(("*", h));
    let ns = if ns == "." || ns == "*" {
        &sc.namespace
    } else {
        ns
    };
    Some((fqdn(host, ns), port.number))
}

/// Warnings for Sidecar egress listeners with a port whose service, or port of it, the
/// registry does not have: no listener is made for them until it does (a service
/// defined after the Sidecar, or gone).
pub fn egress_unresolved(inputs: &Inputs, registry: &Registry) -> Vec<crate::Diagnostic> {
    let mut warnings = Vec::new();
    for sc in &inputs.sidecars {
        for (i, e) in sc.spec.egress.iter().enumerate() {
            let Some((host, port)) = egress_target(sc, e) else {
                continue;
            };
            let service = registry.service(&host);
            if service.is_some_and(|s| s.ports.iter().any(|p| p.number == port)) {
                continue;
            }
            let what = match service {
                None => format!("no service {host}"),
                Some(_) => format!("service {host} has no port {port}"),
            };
            warnings.push(crate::Diagnostic {
                resource: sc.source.clone(),
                message: format!(
                    "spec.egress[{i}]: {what}; its listener on port {port} is made once there is"
                ),
                key: None,
            });
        }
    }
    warnings
}

pub(crate) struct Gen<'a> {
    pub(crate) inputs: &'a Inputs,
    pub(crate) registry: &'a Registry,
    pub(crate) w: &'a Workload,
    pub(crate) clusters: BTreeMap<String, tc::Cluster>,
}

pub fn cluster_name(port: u16, subset: Option<&str>, host: &str) -> String {
    format!("outbound|{port}|{}|{host}", subset.unwrap_or(""))
}

impl<'a> Gen<'a> {
    pub(crate) fn new(inputs: &'a Inputs, registry: &'a Registry, w: &'a Workload) -> Self {
        Gen {
            inputs,
            registry,
            w,
            clusters: BTreeMap::new(),
        }
    }

    /// The Sidecar resource that scopes this workload's egress, if any.
    pub(crate) fn sidecar_scope(&self) -> Option<&'a Resource<istio::Sidecar>> {
        self.inputs
            .sidecars
            .iter()
            .filter(|sc| sc.namespace == self.w.namespace)
            .find(|sc| {
                sc.spec
                    .workload_selector
                    .as_ref()
                    .is_some_and(|sel| selects(&sel.labels, &self.w.labels))
            })
            .or_else(|| {
                self.inputs.sidecars.iter().find(|sc| {
                    sc.spec.workload_selector.is_none()
                        && (sc.namespace == self.w.namespace || sc.namespace == ROOT_NAMESPACE)
                })
            })
    }

    /// Services this sidecar may reach: all, or those its Sidecar resource's egress lists.
    pub(crate) fn visible(&self, s: &Service) -> bool {
        if !exported(&s.export_to, &s.namespace, &self.w.namespace) {
            return false;
        }
        // A Sidecar without egress listeners keeps the default egress (every service;
        // Istio: "if not specified, inherits the system detected defaults").
        let Some(sc) = self.sidecar_scope().filter(|sc| !sc.spec.egress.is_empty()) else {
            return true;
        };
        sc.spec.egress.iter().flat_map(|e| &e.hosts).any(|h| {
            let (ns, host) = h.split_once('/').unwrap_or(("*", h));
            let ns_ok =
                ns == "*" || (ns == "." && s.namespace == sc.namespace) || ns == s.namespace;
            let host_ok = host == "*"
                || fqdn(host, &s.namespace) == s.host
                || host
                    .strip_prefix('*')
                    .is_some_and(|suffix| s.host.ends_with(suffix));
            ns_ok && host_ok
        })
    }

    pub(crate) fn destination_rule(&self, host: &str) -> Option<&Resource<istio::DestinationRule>> {
        // The workload's own namespace first, then the service's, then the root.
        let rules: Vec<_> = self
            .inputs
            .destination_rules
            .iter()
            .filter(|dr| fqdn(&dr.spec.host, &dr.namespace) == host)
            .filter(|dr| exported(&dr.spec.export_to, &dr.namespace, &self.w.namespace))
            .collect();
        rules
            .iter()
            .find(|dr| dr.namespace == self.w.namespace)
            .or_else(|| rules.first())
            .copied()
    }

    pub(crate) fn outbound(&mut self) -> Option<tc::Listener> {
        let mut virtual_hosts = Vec::new();
        let services: Vec<&Service> = self
            .registry
            .services
            .iter()
            .filter(|s| self.visible(s))
            .collect();
        for s in services {
            // A captured sidecar detects the protocol of undeclared ports: their HTTP
            // requests are routed as the declared ones are.
            let detects = self.w.capture;
            let http_ports: Vec<&Port> = s
                .ports
                .iter()
                .filter(|p| p.protocol.is_http() || (detects && p.protocol.detected()))
                .collect();
            for p in &http_ports {
                // The proxy matches `Host: name:port` by `name` when no domain carries
                // the port (Envoy's `ignore_port_in_host_matching`, Istio's default since
                // 1.16), so a service with one HTTP port is reached by its names alone.
                // Port-qualified names as well would add ~1 MB to the route configuration
                // of every sidecar at 10 000 services. A service with several HTTP ports
                // keeps them: the port picks the virtual host.
                let one_port = http_ports.len() == 1;
                let with_port = |n: String| {
                    if one_port {
                        n
                    } else {
                        format!("{n}:{}", p.number)
                    }
                };
                let mut domains = Vec::new();
                if one_port || s.host.ends_with(".svc.cluster.local") {
                    domains.push(s.host.clone());
                }
                if !one_port {
                    domains.push(with_port(s.host.clone()));
                }
                let short = s.short_name().to_string();
                domains.push(with_port(format!("{short}.{}", s.namespace)));
                domains.push(with_port(format!("{short}.{}.svc", s.namespace)));
                if s.namespace == self.w.namespace {
                    domains.push(with_port(short));
                }
                let routes = self.routes(s, p);
                virtual_hosts.push(tc::VirtualHost::new(
                    format!("{}:{}", s.host, p.number),
                    domains,
                    routes,
                ));
            }
        }
        if virtual_hosts.is_empty() {
            return None;
        }
        Some(tc::Listener {
            name: "outbound".into(),
            address: Some(self.w.outbound.clone()),
            addresses: Vec::new(),
            tcp: None,
            http: Some(tc::HttpManager {
                tracing: None,
                codec: tc::Codec::Auto,
                virtual_hosts,
                access_log: None,
            }),
            tls: None,
            authorization: None,
            jwt: None,
            use_original_dst: false,
            bind_to_port: true,
            sni_routes: Vec::new(),
            istio_stats: self.stats(tc::Reporter::Source, true),
        })
    }

    /// A TCP listener on `bind:port` for each egress listener of the Sidecar resource
    /// with a port (validated: TCP, one host), forwarding to that service's port. One
    /// whose service or port is not (yet) in the registry gets no listener.
    fn egress(&mut self) -> Vec<tc::Listener> {
        let Some(sc) = self.sidecar_scope() else {
            return Vec::new();
        };
        let mut listeners = Vec::new();
        for e in &sc.spec.egress {
            let Some((host, port)) = egress_target(sc, e) else {
                continue;
            };
            // A service or port that is not there yet: `egress_unresolved` warns.
            let Some(cluster) = self.cluster(&host, port, None) else {
                continue;
            };
            // Without capture, Istio binds such a listener to loopback by default.
            let bind = e.bind.as_deref().unwrap_or("127.0.0.1");
            let address = crate::socket(bind, port);
            listeners.push(tc::Listener {
                name: format!("{bind}_{port}"),
                address: Some(address),
                addresses: Vec::new(),
                tcp: Some(tc::TcpProxy::to(cluster)),
                http: None,
                tls: None,
                authorization: None,
                jwt: None,
                use_original_dst: false,
                bind_to_port: true,
                sni_routes: Vec::new(),
                istio_stats: self.stats(tc::Reporter::Source, false),
            });
        }
        listeners
    }

    /// A listener's Istio metrics: `own` for a listener only this workload has.
    pub(crate) fn stats(&self, reporter: tc::Reporter, own: bool) -> Option<tc::IstioStats> {
        crate::telemetry::stats(self.inputs, self.w, reporter, own)
    }

    /// A cluster for `host`'s `port` (and `subset`), made on first use.
    pub(crate) fn cluster(
        &mut self,
        host: &str,
        port: u16,
        subset: Option<&str>,
    ) -> Option<String> {
        let name = cluster_name(port, subset, host);
        if self.clusters.contains_key(&name) {
            return Some(name);
        }
        let service = self.registry.service(host)?;
        // A service not exported to this namespace has no cluster here (a route to it
        // answers 503, as in Istio).
        if !exported(&service.export_to, &service.namespace, &self.w.namespace) {
            return None;
        }
        let p = service.ports.iter().find(|p| p.number == port)?;
        let dr = self.destination_rule(host);
        let subset_def = subset
            .and_then(|name| dr.and_then(|dr| dr.spec.subsets.iter().find(|s| s.name == name)));
        if subset.is_some() && subset_def.is_none() {
            return None;
        }
        let empty = Labels::new();
        let labels = subset_def.map(|s| &s.labels).unwrap_or(&empty);
        let workloads = self.registry.endpoints(service, labels);
        let policy = merge(
            dr.and_then(|d| d.spec.traffic_policy.as_ref()),
            subset_def.and_then(|s| s.traffic_policy.as_ref()),
            port,
        );
        // Istio's auto mTLS: without a DestinationRule TLS mode, endpoints whose sidecar
        // takes mutual TLS get it, and the others (no sidecar, or PeerAuthentication
        // DISABLE on that port) plaintext, endpoint by endpoint. An explicit
        // ISTIO_MUTUAL asks for mutual TLS to every endpoint.
        let tls_mode = policy.tls.as_ref().map(|t| t.mode);
        let explicit = tls_mode == Some(istio::ClientTlsMode::IstioMutual);
        let mtls_wanted = tls_mode != Some(istio::ClientTlsMode::Disable);
        let takes_mtls = |w: &Workload| {
            w.has_sidecar()
                && w.app_ports.get(&p.name).is_none_or(|app| {
                    crate::security::mtls_mode(self.inputs, w, *app) != MtlsMode::Disable
                })
        };
        let sidecars: Vec<&Workload> = workloads
            .iter()
            .copied()
            .filter(|w| takes_mtls(w))
            .collect();
        let tls = (mtls_wanted && (explicit || !sidecars.is_empty())).then(|| {
            let trust = self.inputs.trust.as_deref();
            let mut ids: Vec<String> = sidecars
                .iter()
                .map(|w| match trust {
                    Some(t) => t.spiffe_id(&w.namespace, &w.service_account),
                    None => w.spiffe_id(),
                })
                .collect();
            ids.sort();
            ids.dedup();
            // With tenants: the roots of this sidecar's tenant and of those it may
            // call, each bound to its trust domain; a tenant it may not call fails the
            // handshake.
            let (trusted_ca, trust_bundles) = match trust {
                Some(t) => (String::new(), t.outbound_bundles(&self.w.namespace)),
                None => (SDS_ROOT_CA.into(), Vec::new()),
            };
            tc::UpstreamTls {
                trusted_ca,
                trust_bundles,
                certificate: Some(workload_cert()),
                sni: Some(format!(
                    "outbound_.{port}_.{}_.{host}",
                    subset.unwrap_or("")
                )),
                match_identities: ids,
                min_version: tc::TlsVersion::V1_3,
                max_version: tc::TlsVersion::V1_3,
                // Istio's clusters to sidecars offer `istio-peer-exchange`.
                metadata_exchange: !self.inputs.disable_tcp_metadata_exchange,
            }
        });
        // SIMPLE / MUTUAL: TLS to the service itself (an external one, usually), verified
        // with its CA (the system's roots without one) and its names.
        let originated = policy
            .tls
            .as_ref()
            .filter(|t| {
                matches!(
                    t.mode,
                    istio::ClientTlsMode::Simple | istio::ClientTlsMode::Mutual
                )
            })
            .map(|t| originate(t, host));
        let (tls, plaintext_exceptions) = match originated {
            Some(o) => (Some(o), false),
            None => {
                let exceptions = tls.is_some() && !explicit;
                (tls, exceptions)
            }
        };
        let mut endpoints: Vec<tc::Endpoint> = workloads
            .iter()
            .map(|w| {
                let port = w.port_for(p);
                let additional = w
                    .additional_addresses
                    .iter()
                    .map(|a| crate::socket(a, port))
                    .collect();
                tc::Endpoint::with_additional(
                    crate::socket(&w.address, port),
                    w.weight,
                    plaintext_exceptions && !takes_mtls(w),
                    additional,
                )
            })
            .collect();
        // A DNS ServiceEntry without endpoints (nor a selector) is reached at its host
        // name (Istio's behaviour for `resolution: DNS`).
        if service.resolve_dns && endpoints.is_empty() && service.selector.is_none() {
            endpoints.push(tc::Endpoint::new(format!("{host}:{}", p.number), 1, false));
        }
        let mut c = tc::Cluster {
            name: name.clone(),
            discovery: if service.resolve_dns {
                tc::DiscoveryType::Dns
            } else {
                tc::DiscoveryType::Static
            },
            endpoints,
            lb_policy: tc::LbPolicy::RoundRobin,
            connect_timeout: Dur::secs(10),
            // Between sidecars HTTP/2 needs ALPN over mTLS; plaintext keeps the app's protocol.
            http2: p.protocol.is_h2(),
            dns_refresh_rate: Dur::secs(5),
            circuit_breakers: Default::default(),
            outlier_detection: None,
            tls,
            service: Some(crate::telemetry::service_ref(service)),
        };
        apply_policy(&policy, &mut c);
        self.clusters.insert(name.clone(), c);
        Some(name)
    }

    fn routes(&mut self, s: &Service, p: &Port) -> Vec<tc::Route> {
        let vs = self
            .inputs
            .virtual_services
            .iter()
            .find(|vs| {
                crate::validate::applies_to_mesh(&vs.spec)
                    && exported(&vs.spec.export_to, &vs.namespace, &self.w.namespace)
                    && vs
                        .spec
                        .hosts
                        .iter()
                        .any(|h| fqdn(h, &vs.namespace) == s.host)
            })
            .cloned();
        let mut routes = Vec::new();
        let vs_name = vs.as_ref().map(|vs| vs.name.clone());
        if let Some(vs) = vs {
            for (i, r) in vs.spec.http.iter().enumerate() {
                let name = r
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("{}.{}.{i}", vs.namespace, vs.name));
                routes.extend(self.http_route(&vs.namespace, &name, r, Some(p)));
            }
        }
        // Istio's default route comes last (also after a VirtualService's routes).
        if let Some(cluster) = self.cluster(&s.host.clone(), p.number, None) {
            let mut default = tc::Route::new(Some("default".into()), tc::RouteMatch::prefix("/"));
            default.route = Some(action(cluster, None, default_retries()));
            routes.push(default);
        }
        self.hash_policies(&mut routes);
        let name = vs_name.unwrap_or_else(|| s.host.clone());
        for r in &mut routes {
            r.operation = Some(crate::trace::operation(r, &name, p.number));
        }
        routes
    }

    /// The cluster of a route destination; without a port, the service's only one, or
    /// the port `p` of the service whose route this is.
    pub(crate) fn destination_cluster(
        &mut self,
        ns: &str,
        d: &istio::Destination,
        p: Option<&Port>,
    ) -> Option<String> {
        let host = fqdn(&d.host, ns);
        let port = d.port.as_ref().map(|p| p.number).or_else(|| {
            let s = self.registry.service(&host)?;
            if s.ports.len() == 1 {
                Some(s.ports[0].number)
            } else {
                s.ports
                    .iter()
                    .find(|q| Some(q.number) == p.map(|p| p.number))
                    .map(|q| q.number)
            }
        })?;
        self.cluster(&host, port, d.subset.as_deref())
    }

    pub(crate) fn http_route(
        &mut self,
        ns: &str,
        name: &str,
        r: &istio::HttpRoute,
        p: Option<&Port>,
    ) -> Vec<tc::Route> {
        let mut base = tc::Route::new(Some(name.to_string()), Default::default());
        if let Some(h) = &r.headers {
            header_ops(h, &mut base);
        }
        if !r.route.is_empty() {
            let mut weighted = Vec::new();
            for d in &r.route {
                // A destination with no cluster (unknown host or subset) gets no traffic,
                // as in Istio, where such a route answers 503.
                let cluster = self
                    .destination_cluster(ns, &d.destination, p)
                    .unwrap_or_else(|| format!("unknown|{}", d.destination.host));
                // Without a weight: all of it alone, none of it beside others (Istio).
                let alone = if r.route.len() == 1 { 100 } else { 0 };
                weighted.push((cluster, d.weight.unwrap_or(alone)));
            }
            let retries = match &r.retries {
                None => default_retries(),
                Some(rt) if rt.attempts == 0 => None,
                Some(rt) => Some(tc::RetryPolicy {
                    retry_on: retry_on(rt.retry_on.as_deref()),
                    num_retries: rt.attempts,
                    per_try_timeout: rt.per_try_timeout.as_deref().and_then(dur),
                    retriable_status_codes: retry_codes(rt.retry_on.as_deref()),
                }),
            };
            let mut a = if weighted.len() == 1 {
                action(weighted.remove(0).0, None, retries)
            } else {
                action(String::new(), Some(weighted), retries)
            };
            // Per-destination headers: on the route itself when it has one destination
            // (after the route's own), on each weighted cluster otherwise (Istio's
            // translation).
            for (i, d) in r.route.iter().enumerate() {
                let Some(h) = &d.headers else { continue };
                let (req, resp) = (
                    header_operations(h.request.as_ref()),
                    header_operations(h.response.as_ref()),
                );
                if r.route.len() == 1 {
                    base.request_headers_to_add.extend(req.0);
                    base.request_headers_to_remove.extend(req.1);
                    base.response_headers_to_add.extend(resp.0);
                    base.response_headers_to_remove.extend(resp.1);
                } else if let Some(w) = a.weighted_clusters.get_mut(i) {
                    (w.request_headers_to_add, w.request_headers_to_remove) = req;
                    (w.response_headers_to_add, w.response_headers_to_remove) = resp;
                }
            }
            a.timeout = r.timeout.as_deref().and_then(dur).unwrap_or(Dur::secs(0));
            if let Some(rw) = &r.rewrite {
                a.prefix_rewrite = rw.uri.clone();
                a.host_rewrite = rw.authority.clone();
            }
            if let Some(m) = &r.mirror {
                if let Some(c) = self.destination_cluster(ns, m, p) {
                    a.request_mirror = Some(tc::Mirror {
                        cluster: c,
                        percent: r
                            .mirror_percentage
                            .as_ref()
                            .map(|p| p.value)
                            .unwrap_or(100.0),
                    });
                }
            }
            base.route = Some(a);
        } else if let Some(d) = &r.redirect {
            base.redirect = Some(tc::Redirect {
                scheme: d.scheme.clone(),
                host: d.authority.clone(),
                port: d.port,
                path: d.uri.clone(),
                prefix_rewrite: None,
                response_code: d.redirect_code.filter(|c| *c != 0).unwrap_or(301),
                strip_query: false,
            });
        } else if let Some(d) = &r.direct_response {
            base.direct_response = Some(tc::DirectResponse {
                status: d.status,
                body: d
                    .body
                    .as_ref()
                    .and_then(|b| b.string.clone())
                    .unwrap_or_default(),
            });
        }
        if let Some(c) = &r.cors_policy {
            base.cors = Some(tc::Cors {
                allow_origins: c
                    .allow_origins
                    .iter()
                    .map(|o| tc::StringMatcher {
                        exact: o.exact.clone(),
                        prefix: o.prefix.clone(),
                        suffix: None,
                        regex: o.regex.clone(),
                    })
                    .collect(),
                allow_methods: c.allow_methods.clone(),
                allow_headers: c.allow_headers.clone(),
                expose_headers: c.expose_headers.clone(),
                max_age: c.max_age.as_deref().and_then(dur),
                allow_credentials: c.allow_credentials.unwrap_or(false),
                forward_unmatched_preflights: c.unmatched_preflights.as_deref() != Some("IGNORE"),
            });
        }
        if let Some(f) = &r.fault {
            base.fault = Some(tc::Fault {
                delay: f.delay.as_ref().and_then(|d| {
                    Some(tc::FaultDelay {
                        fixed: dur(&d.fixed_delay)?,
                        percent: d.percentage.as_ref().map(|p| p.value).unwrap_or(100.0),
                    })
                }),
                abort: f.abort.as_ref().map(|a| tc::FaultAbort {
                    status: a.http_status,
                    percent: a.percentage.as_ref().map(|p| p.value).unwrap_or(100.0),
                }),
            });
        }
        if r.matches.is_empty() {
            base.matches.prefix = Some("/".into());
            return vec![base];
        }
        // Istio's matches are alternatives: one route per match, same action; a match
        // with a port is one for the virtual host of that port only (a route whose
        // matches all name other ports, or other clients, has none here).
        // Matches on the client (sourceLabels, sourceNamespace) are decided here: each
        // sidecar's view holds the routes whose matches can apply to its workload.
        let w = self.w;
        let routes = r
            .matches
            .iter()
            .filter(|m| {
                m.port
                    .is_none_or(|port| port == 0 || p.is_none_or(|p| port == p.number))
            })
            // A match for named gateways only is not the sidecars' (gateway routes
            // come here with the gateway's matches already chosen and unnamed).
            .filter(|m| m.gateways.is_empty() || m.gateways.iter().any(|g| g == "mesh"))
            .filter(|m| {
                m.source_labels
                    .iter()
                    .all(|(k, v)| w.labels.get(k) == Some(v))
                    && m.source_namespace
                        .as_ref()
                        .is_none_or(|ns| *ns == w.namespace)
            })
            .map(|m| {
                let mut route = base.clone();
                route.matches = route_match(m);
                route
            })
            .collect();
        match &r.gateway_api {
            Some(semantics) => gateway_api_routes(routes, semantics),
            None => routes,
        }
    }

    /// Consistent-hash DestinationRules hash on what the routes to them say.
    fn hash_policies(&self, routes: &mut [tc::Route]) {
        for r in routes.iter_mut() {
            let Some(a) = r.route.as_mut() else { continue };
            let cluster = a
                .cluster
                .clone()
                .or_else(|| a.weighted_clusters.first().map(|w| w.name.clone()));
            let Some(c) = cluster.and_then(|c| self.clusters.get(&c)) else {
                continue;
            };
            if !matches!(c.lb_policy, tc::LbPolicy::RingHash | tc::LbPolicy::Maglev) {
                continue;
            }
            let host = c.name.rsplit('|').next().unwrap_or_default();
            if let Some(ch) = self
                .destination_rule(host)
                .and_then(|dr| dr.spec.traffic_policy.as_ref())
                .and_then(|tp| tp.load_balancer.as_ref())
                .and_then(|lb| lb.consistent_hash.as_ref())
            {
                a.hash_policy = vec![tc::HashPolicy {
                    header: ch.http_header_name.clone(),
                    source_ip: ch.use_source_ip,
                }];
            }
        }
    }

    fn inbound(&mut self) -> Vec<tc::Listener> {
        if !self.w.has_sidecar() {
            return Vec::new();
        }
        let mut listeners = Vec::new();
        let services: Vec<Service> = self.registry.served_by(self.w).cloned().collect();
        let mut done = std::collections::BTreeSet::new();
        for s in &services {
            for p in &s.ports {
                let Some(&app_port) = self.w.app_ports.get(&p.name) else {
                    continue;
                };
                let inbound_port = self.w.port_for(p);
                if !done.insert(inbound_port) {
                    continue;
                }
                let cluster = format!("inbound|{inbound_port}||");
                self.clusters.insert(
                    cluster.clone(),
                    tc::Cluster {
                        name: cluster.clone(),
                        discovery: tc::DiscoveryType::Static,
                        endpoints: vec![tc::Endpoint::Address(format!("127.0.0.1:{app_port}"))],
                        lb_policy: tc::LbPolicy::RoundRobin,
                        connect_timeout: Dur::secs(10),
                        http2: p.protocol.is_h2(),
                        dns_refresh_rate: Dur::secs(5),
                        circuit_breakers: Default::default(),
                        outlier_detection: None,
                        tls: None,
                        service: Some(crate::telemetry::service_ref(s)),
                    },
                );
                let address = crate::socket(&self.w.address, inbound_port);
                // A captured dual-stack workload takes connections to each address.
                let more: Vec<String> = if self.w.capture {
                    self.w
                        .additional_addresses
                        .iter()
                        .map(|a| crate::socket(a, inbound_port))
                        .collect()
                } else {
                    Vec::new()
                };
                // With tenants: client certificates of this sidecar's tenant and of
                // those federated to call it, each chained to its own tenant's roots.
                let mut tls = self.inbound_tls(app_port);
                let authorization = self.authorization();
                let jwt = (p.protocol.is_http() || p.protocol.detected())
                    .then(|| crate::security::jwt(self.inputs, self.w))
                    .flatten();
                // An undeclared protocol is detected per connection: HTTP requests take
                // the HTTP chain, anything else the TCP one.
                let detected = p
                    .protocol
                    .detected()
                    .then(|| tc::TcpProxy::to(cluster.clone()));
                let (http, tcp) = if p.protocol.is_http() || p.protocol.detected() {
                    let mut to_app =
                        tc::Route::new(Some("inbound".into()), tc::RouteMatch::prefix("/"));
                    to_app.route = Some(action(cluster, None, None));
                    to_app.operation = Some(format!("{}:{}/*", s.host, p.number));
                    (
                        Some(tc::HttpManager {
                            tracing: None,
                            codec: tc::Codec::Auto,
                            virtual_hosts: vec![tc::VirtualHost::new(
                                "inbound",
                                vec!["*".into()],
                                vec![to_app],
                            )],
                            access_log: None,
                        }),
                        detected,
                    )
                } else {
                    (None, Some(tc::TcpProxy::to(cluster)))
                };
                // As Istio's inbound TCP chains: the client's metadata arrives in the
                // stream (HTTP carries it in headers).
                if let Some(t) = tls.as_mut().filter(|_| tcp.is_some()) {
                    t.metadata_exchange = !self.inputs.disable_tcp_metadata_exchange;
                }
                listeners.push(tc::Listener {
                    name: format!("inbound|{inbound_port}"),
                    address: Some(address),
                    addresses: more,
                    tcp,
                    http,
                    tls,
                    authorization,
                    jwt,
                    use_original_dst: false,
                    // A captured workload's inbound listeners take what virtualInbound
                    // hands them: the app itself listens on these ports.
                    bind_to_port: !self.w.capture,
                    sni_routes: Vec::new(),
                    istio_stats: self.stats(tc::Reporter::Destination, true),
                });
            }
        }
        if self.w.capture {
            listeners.push(self.virtual_inbound());
        }
        listeners
    }

    pub(crate) fn authorization(&self) -> Option<tc::Authorization> {
        crate::security::authorization(self.inputs, self.w)
    }
}

/// Istio's `exportTo`: which namespaces see a resource of `namespace`. Empty or `*`:
/// all; `.`: its own; `~`: none; otherwise the namespaces named.
fn exported(export_to: &[String], namespace: &str, to: &str) -> bool {
    export_to.is_empty()
        || export_to
            .iter()
            .any(|e| e == "*" || (e == "." && namespace == to) || e == to)
}

/// The system's roots (Debian's ca-certificates): what SIMPLE / MUTUAL origination
/// verifies against without `caCertificates`, as Istio's proxies do.
const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Upstream TLS for a DestinationRule's SIMPLE / MUTUAL `tls` (validated): the SNI is
/// `sni` or the service's host; the server must carry one of `subjectAltNames`, or the
/// SNI name.
fn originate(t: &istio::ClientTls, host: &str) -> tc::UpstreamTls {
    let sni = t.sni.clone().unwrap_or_else(|| host.to_string());
    tc::UpstreamTls {
        trusted_ca: t
            .ca_certificates
            .clone()
            .unwrap_or_else(|| SYSTEM_ROOTS.into()),
        trust_bundles: Vec::new(),
        certificate: (t.mode == istio::ClientTlsMode::Mutual).then(|| tc::TlsCertificate {
            certificate_chain: t.client_certificate.clone().unwrap_or_default(),
            private_key: t.private_key.clone(),
            private_key_provider: tc::PrivateKeyProvider::Memory,
            server_names: Vec::new(),
        }),
        match_identities: if t.subject_alt_names.is_empty() {
            vec![sni.clone()]
        } else {
            t.subject_alt_names.clone()
        },
        sni: Some(sni),
        min_version: tc::TlsVersion::V1_2,
        max_version: tc::TlsVersion::V1_3,
        metadata_exchange: false,
    }
}

pub(crate) fn workload_cert() -> tc::TlsCertificate {
    tc::TlsCertificate {
        certificate_chain: SDS_WORKLOAD_CERT.into(),
        private_key: None,
        private_key_provider: tc::PrivateKeyProvider::Memory,
        server_names: Vec::new(),
    }
}

fn dur(s: &str) -> Option<Dur> {
    trellis_config::parse_duration(s).ok().map(Dur)
}

/// Istio's default: two retries on connect failure, reset and 503.
fn default_retries() -> Option<tc::RetryPolicy> {
    Some(tc::RetryPolicy {
        retry_on: "connect-failure,reset,retriable-status-codes".into(),
        num_retries: 2,
        per_try_timeout: None,
        retriable_status_codes: vec![503],
    })
}

/// Istio's retryOn conditions that the proxy knows; gRPC-status ones are left out.
/// The retry conditions Trellis's proxy knows, from Istio's `retryOn`: status codes
/// given as numbers become `retriable-status-codes` (as Istio translates them); the
/// conditions it does not know are left out (fewer retries, warned when the resource is
/// read).
fn retry_on(v: Option<&str>) -> String {
    let Some(v) = v else {
        return "connect-failure,reset,retriable-status-codes".into();
    };
    let mut picked: Vec<&str> = v
        .split(',')
        .map(str::trim)
        .filter(|c| crate::validate::RETRY_ON_HONOURED.contains(c))
        .collect();
    if !retry_codes(Some(v)).is_empty() && !picked.contains(&"retriable-status-codes") {
        picked.push("retriable-status-codes");
    }
    if picked.is_empty() {
        "connect-failure,reset".into()
    } else {
        picked.join(",")
    }
}

/// The status codes `retryOn` lists as numbers (503 when it is not given: Istio's
/// default).
fn retry_codes(v: Option<&str>) -> Vec<u16> {
    match v {
        None => vec![503],
        Some(v) => v
            .split(',')
            .filter_map(|c| c.trim().parse::<u16>().ok())
            .collect(),
    }
}

pub(crate) fn action(
    cluster: String,
    weighted: Option<Vec<(String, u32)>>,
    retry_policy: Option<tc::RetryPolicy>,
) -> tc::RouteAction {
    let (cluster, weighted_clusters) = match weighted {
        None => (Some(cluster), Vec::new()),
        Some(w) => (
            None,
            w.into_iter()
                .map(|(name, weight)| tc::WeightedCluster {
                    name,
                    weight,
                    request_headers_to_add: Vec::new(),
                    request_headers_to_remove: Vec::new(),
                    response_headers_to_add: Vec::new(),
                    response_headers_to_remove: Vec::new(),
                })
                .collect(),
        ),
    };
    tc::RouteAction {
        cluster,
        weighted_clusters,
        prefix_rewrite: None,
        regex_rewrite: None,
        host_rewrite: None,
        // Istio disables the route timeout unless a VirtualService sets one.
        timeout: Dur::secs(0),
        retry_policy,
        request_mirror: None,
        hash_policy: Vec::new(),
    }
}

/// The Gateway API's meaning of routes converted from HTTPRoutes: a `PathPrefix` is
/// whole segments (`/foo` is the exact `/foo` and everything under `/foo/`), and its
/// prefix replacements keep the segment boundary; a full path replacement is a
/// rewrite of the whole path.
fn gateway_api_routes(
    routes: Vec<tc::Route>,
    s: &crate::gateway_api::RouteSemantics,
) -> Vec<tc::Route> {
    let slash = |x: &str| {
        if x.ends_with('/') {
            x.to_string()
        } else {
            format!("{x}/")
        }
    };
    let mut out = Vec::with_capacity(routes.len() * 2);
    for mut r in routes {
        if let Some(full) = &s.full_path {
            if let Some(a) = r.route.as_mut() {
                a.prefix_rewrite = None;
                a.regex_rewrite = Some(tc::RegexRewrite {
                    pattern: "^.*$".into(),
                    substitution: full.replace('\\', "\\\\"),
                });
            }
        }
        if let (Some(p), Some(rd)) = (&s.redirect_prefix, r.redirect.as_mut()) {
            rd.prefix_rewrite = Some(p.clone());
        }
        match r.matches.prefix.clone() {
            Some(p) if s.path_separated && p != "/" => {
                // The exact path: a prefix replacement is the whole path.
                let mut exact = r.clone();
                exact.matches.prefix = None;
                exact.matches.path = Some(p.clone());
                // Under it: the replacement keeps the `/` that ends the segment.
                r.matches.prefix = Some(format!("{p}/"));
                if let Some(a) = r.route.as_mut() {
                    a.prefix_rewrite = a.prefix_rewrite.as_deref().map(slash);
                }
                if let Some(rd) = r.redirect.as_mut() {
                    rd.prefix_rewrite = rd.prefix_rewrite.as_deref().map(slash);
                }
                out.push(exact);
                out.push(r);
            }
            Some(_) => {
                // `/` itself: what follows it is the rest of the path.
                if let Some(a) = r.route.as_mut() {
                    a.prefix_rewrite = a.prefix_rewrite.as_deref().map(slash);
                }
                if let Some(rd) = r.redirect.as_mut() {
                    rd.prefix_rewrite = rd.prefix_rewrite.as_deref().map(slash);
                }
                out.push(r);
            }
            None => out.push(r),
        }
    }
    out
}

fn string_matcher(name: &str, m: &istio::StringMatch) -> tc::HeaderMatcher {
    tc::HeaderMatcher {
        name: name.to_string(),
        exact: m.exact.clone(),
        prefix: m.prefix.clone(),
        regex: m.regex.clone(),
        ..Default::default()
    }
}

fn route_match(m: &istio::HttpMatch) -> tc::RouteMatch {
    let mut out = tc::RouteMatch {
        ignore_case: m.ignore_uri_case,
        ..Default::default()
    };
    match &m.uri {
        Some(u) if u.exact.is_some() => out.path = u.exact.clone(),
        Some(u) if u.regex.is_some() => out.regex = u.regex.clone(),
        Some(u) => out.prefix = u.prefix.clone(),
        None => out.prefix = Some("/".into()),
    }
    // Istio matches the method and the authority as the :method and :authority
    // pseudo-headers (exact, prefix or a whole-value regex); an exact method is a
    // method list entry.
    if let Some(method) = &m.method {
        match &method.exact {
            Some(e) => out.methods.push(e.clone()),
            None => out.headers.push(string_matcher(":method", method)),
        }
    }
    if let Some(authority) = &m.authority {
        out.headers.push(string_matcher(":authority", authority));
    }
    for (name, sm) in &m.headers {
        out.headers.push(string_matcher(name, sm));
    }
    for (name, sm) in &m.without_headers {
        let mut h = string_matcher(name, sm);
        if h.exact.is_none() && h.prefix.is_none() && h.regex.is_none() {
            h.present = Some(false);
        } else {
            h.invert = true;
        }
        out.headers.push(h);
    }
    for (name, sm) in &m.query_params {
        out.query_params.push(string_matcher(name, sm));
    }
    out
}

fn header_ops(h: &istio::Headers, r: &mut tc::Route) {
    if h.request.is_some() {
        (r.request_headers_to_add, r.request_headers_to_remove) =
            header_operations(h.request.as_ref());
    }
    if h.response.is_some() {
        (r.response_headers_to_add, r.response_headers_to_remove) =
            header_operations(h.response.as_ref());
    }
}

/// Istio's header operations as the headers to add (`set` replaces, `add` appends) and
/// the names to remove.
fn header_operations(o: Option<&istio::HeaderOperations>) -> (Vec<tc::HeaderValue>, Vec<String>) {
    let Some(o) = o else {
        return (Vec::new(), Vec::new());
    };
    let mut add: Vec<tc::HeaderValue> = o
        .set
        .iter()
        .map(|(k, v)| tc::HeaderValue {
            name: k.clone(),
            value: v.clone(),
            append: false,
        })
        .collect();
    add.extend(o.add.iter().map(|(k, v)| tc::HeaderValue {
        name: k.clone(),
        value: v.clone(),
        append: true,
    }));
    (add, o.remove.clone())
}

/// A subset's traffic policy overrides the rule's, field by field.
/// The policy of a cluster for `port`: the DestinationRule's (at that port), overridden
/// field by field by the subset's (at that port; a port-level subset policy overrides
/// every field, set or not), as Istio's MergeSubsetTrafficPolicy.
fn merge(base: Option<&TrafficPolicy>, over: Option<&TrafficPolicy>, port: u16) -> TrafficPolicy {
    let base = base.map(|b| b.at_port(port).0);
    let Some(over) = over else {
        return base.unwrap_or_default();
    };
    let (o, whole) = over.at_port(port);
    let Some(mut p) = base else {
        return o;
    };
    if o.load_balancer.is_some() || whole {
        p.load_balancer = o.load_balancer;
    }
    if o.connection_pool.is_some() || whole {
        p.connection_pool = o.connection_pool;
    }
    if o.outlier_detection.is_some() || whole {
        p.outlier_detection = o.outlier_detection;
    }
    if o.tls.is_some() || whole {
        p.tls = o.tls;
    }
    p.port_level_settings = Vec::new();
    p
}

fn apply_policy(p: &TrafficPolicy, c: &mut tc::Cluster) {
    if let Some(lb) = &p.load_balancer {
        use istio::SimpleLb;
        c.lb_policy = match (lb.simple, &lb.consistent_hash) {
            (_, Some(ch)) if ch.maglev.is_some() => tc::LbPolicy::Maglev,
            (_, Some(_)) => tc::LbPolicy::RingHash,
            (Some(SimpleLb::LeastConn | SimpleLb::LeastRequest), _) => tc::LbPolicy::LeastRequest,
            (Some(SimpleLb::Random), _) => tc::LbPolicy::Random,
            _ => tc::LbPolicy::RoundRobin,
        };
    }
    if let Some(pool) = &p.connection_pool {
        if let Some(tcp) = &pool.tcp {
            if let Some(m) = tcp.max_connections {
                c.circuit_breakers.max_connections = m;
            }
            if let Some(t) = tcp.connect_timeout.as_deref().and_then(dur) {
                c.connect_timeout = t;
            }
        }
        if let Some(http) = &pool.http {
            if let Some(m) = http.http1_max_pending_requests {
                c.circuit_breakers.max_pending_requests = m;
            }
            if let Some(m) = http.http2_max_requests {
                c.circuit_breakers.max_requests = m;
            }
            if let Some(m) = http.max_retries {
                c.circuit_breakers.max_retries = m;
            }
        }
    }
    if let Some(o) = &p.outlier_detection {
        let d = tc::OutlierDetection::default();
        c.outlier_detection = Some(tc::OutlierDetection {
            consecutive_5xx: o.consecutive_5xx_errors.unwrap_or(d.consecutive_5xx),
            consecutive_gateway_failure: o.consecutive_gateway_errors.unwrap_or(0),
            interval: o.interval.as_deref().and_then(dur).unwrap_or(d.interval),
            base_ejection_time: o
                .base_ejection_time
                .as_deref()
                .and_then(dur)
                .unwrap_or(d.base_ejection_time),
            max_ejection_time: d.max_ejection_time,
            max_ejection_percent: o.max_ejection_percent.unwrap_or(d.max_ejection_percent),
        });
    }
}
