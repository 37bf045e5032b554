use std::collections::{BTreeMap, BTreeSet};

use crate::inputs::{selects, Inputs};
use crate::istio::{Labels, WorkloadEntry};
use crate::{annotations, fqdn};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Http,
    Http2,
    Grpc,
    Tcp,
    /// TLS or HTTPS: TCP whose connections carry the client's own TLS, which a
    /// captured sidecar routes by SNI (Istio's TLS routes for ServiceEntry hosts).
    Tls,
    /// Not declared, and the port name says nothing Istio knows: detected per
    /// connection by a sidecar that can (HTTP, else TCP), as Istio does.
    Auto,
}

/// Protocols Istio knows by name (port name prefixes and declared protocols) that
/// Trellis carries as TCP.
const OTHER_KNOWN: [&str; 9] = [
    "tcp",
    "tls",
    "https",
    "mongo",
    "mysql",
    "redis",
    "thrift",
    "udp",
    "http_proxy",
];

impl Protocol {
    /// Istio's rule: the declared protocol (ServiceEntry `protocol`, Kubernetes
    /// `appProtocol`), else the port name's prefix before the first `-` (`http-web`,
    /// `grpc`); a name with no known prefix is detected (`Auto`). A declared protocol
    /// Trellis does not carry as HTTP is TCP.
    pub fn parse(p: Option<&str>, name: &str) -> Protocol {
        // An empty protocol is unset, as in Istio: the port name says.
        let declared = p.filter(|p| !p.is_empty()).map(str::to_ascii_lowercase);
        let word = match &declared {
            Some(d) => d.clone(),
            None => name
                .split('-')
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase(),
        };
        match word.as_str() {
            "http" | "kubernetes.io/ws" => Protocol::Http,
            "http2" | "kubernetes.io/h2c" => Protocol::Http2,
            "grpc" | "grpc-web" => Protocol::Grpc,
            "tls" | "https" => Protocol::Tls,
            w if declared.is_none() && !OTHER_KNOWN.contains(&w) => Protocol::Auto,
            _ => Protocol::Tcp,
        }
    }

    /// Whether a sidecar detects the protocol of each connection.
    pub fn detected(self) -> bool {
        self == Protocol::Auto
    }

    /// Declared (or named) HTTP, HTTP/2 or gRPC.
    pub fn is_http(self) -> bool {
        matches!(self, Protocol::Http | Protocol::Http2 | Protocol::Grpc)
    }

    pub fn is_h2(self) -> bool {
        matches!(self, Protocol::Http2 | Protocol::Grpc)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Port {
    pub name: String,
    pub number: u16,
    pub protocol: Protocol,
    pub target_port: Option<u16>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Service {
    /// `reviews.default.svc.cluster.local`.
    pub host: String,
    pub namespace: String,
    pub ports: Vec<Port>,
    /// Workloads in the namespace with these labels back the service.
    pub selector: Option<Labels>,
    /// Or these, inline (ServiceEntry endpoints).
    pub endpoints: Vec<Workload>,
    /// The endpoints are `endpoints` even though `selector` is set: Kubernetes
    /// Services, whose EndpointSlices say which selected pods are ready. The selector
    /// still says which services a workload serves (its inbound side).
    pub endpoints_listed: bool,
    /// The endpoints' addresses (or, with none, the host itself) are names resolved by
    /// the proxy, as a ServiceEntry with `resolution: DNS` or `DNS_ROUND_ROBIN` says.
    pub resolve_dns: bool,
    /// The namespaces that see it (Istio's exportTo; empty is every namespace).
    pub export_to: Vec<String>,
    /// Its virtual IPs (ServiceEntry `addresses`, a Kubernetes Service's cluster IPs):
    /// what a captured app connects to when it resolves the name.
    pub addresses: Vec<String>,
}

impl Service {
    /// `reviews` for `reviews.default.svc.cluster.local`.
    pub fn short_name(&self) -> &str {
        self.host.split('.').next().unwrap_or(&self.host)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Workload {
    pub name: String,
    pub namespace: String,
    pub labels: Labels,
    pub service_account: String,
    pub address: String,
    /// Its other addresses (dual stack: the other family), raced by peers with Happy
    /// Eyeballs.
    pub additional_addresses: Vec<String>,
    /// Port name → the port peers connect to (the sidecar's inbound port).
    pub ports: BTreeMap<String, u16>,
    /// Port name → where the application listens on 127.0.0.1 (has a sidecar when set).
    pub app_ports: BTreeMap<String, u16>,
    pub outbound: String,
    /// Its share of the load balancing against the service's other endpoints (Istio's
    /// WorkloadEntry `weight`; at least 1).
    pub weight: u32,
    /// The app's traffic is captured by `trellis init`'s rules (Istio's
    /// `sidecar.istio.io/interceptionMode: REDIRECT`): the sidecar gets capture
    /// listeners instead of an HTTP proxy listener, and the app listens on the
    /// workload's own ports.
    pub capture: bool,
}

impl Workload {
    pub(crate) fn from_entry(
        name: &str,
        namespace: &str,
        e: &WorkloadEntry,
        annotations: &Labels,
    ) -> Workload {
        let mut w = Workload::new(
            name,
            namespace,
            e.labels.clone(),
            e.service_account.as_deref(),
            &e.address,
            e.ports.clone(),
            annotations,
            "127.0.0.1",
        );
        w.weight = e.weight.unwrap_or(1).max(1);
        w
    }

    /// A workload with the sidecar placement its [`annotations`] give; without the
    /// outbound annotation its sidecar's outbound listener is on `outbound_host:15001`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: &str,
        namespace: &str,
        labels: Labels,
        service_account: Option<&str>,
        address: &str,
        ports: BTreeMap<String, u16>,
        annotations: &Labels,
        outbound_host: &str,
    ) -> Workload {
        let capture = annotations::captured(annotations);
        let app_ports = annotations
            .get(annotations::APP_PORTS)
            .map(|v| {
                v.split(',')
                    .filter_map(|kv| kv.split_once('='))
                    .filter_map(|(k, v)| Some((k.trim().to_string(), v.trim().parse().ok()?)))
                    .collect()
            })
            // A captured app listens on the ports peers connect to.
            .unwrap_or_else(|| {
                if capture {
                    ports.clone()
                } else {
                    BTreeMap::new()
                }
            });
        let additional_addresses = annotations
            .get(annotations::ADDITIONAL_ADDRESSES)
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|a| !a.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        Workload {
            name: name.to_string(),
            namespace: namespace.to_string(),
            labels,
            service_account: service_account.unwrap_or("default").to_string(),
            address: address.to_string(),
            additional_addresses,
            ports,
            app_ports,
            outbound: annotations
                .get(annotations::OUTBOUND)
                .cloned()
                .unwrap_or_else(|| crate::socket(outbound_host, 15001)),
            weight: 1,
            capture,
        }
    }

    /// Every address of the workload: `address` first.
    pub fn addresses(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.address.as_str())
            .chain(self.additional_addresses.iter().map(String::as_str))
    }

    pub fn has_sidecar(&self) -> bool {
        !self.app_ports.is_empty()
    }

    pub fn spiffe_id(&self) -> String {
        crate::spiffe_id(&self.namespace, &self.service_account)
    }

    /// The port peers use for `port` of a service.
    pub fn port_for(&self, port: &Port) -> u16 {
        self.ports
            .get(&port.name)
            .copied()
            .or(port.target_port)
            .unwrap_or(port.number)
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Registry {
    pub services: Vec<Service>,
    pub workloads: Vec<Workload>,
    /// (namespace, label key, label value) → workloads carrying it, so that selecting
    /// a service's endpoints does not scan every workload.
    by_label: BTreeMap<(String, String, String), Vec<usize>>,
    by_host: BTreeMap<String, usize>,
}

impl Registry {
    /// Services from ServiceEntries (one per host), workloads from WorkloadEntries.
    pub fn from_inputs(inputs: &Inputs) -> Registry {
        Registry::from_parts(inputs, Vec::new(), Vec::new())
    }

    /// As [`from_inputs`](Self::from_inputs), plus services and workloads discovered
    /// elsewhere (Kubernetes). A host defined twice keeps its first definition: the
    /// discovered one, as Istio prefers a Kubernetes Service over a ServiceEntry.
    pub fn from_parts(
        inputs: &Inputs,
        services: Vec<Service>,
        workloads: Vec<Workload>,
    ) -> Registry {
        let mut r = Registry {
            services,
            workloads,
            ..Default::default()
        };
        // An entry without an address is behind its network's gateway, which Trellis
        // does not have: not an endpoint here (warned when loaded).
        let addressed = |e: &crate::istio::WorkloadEntry| !e.address.is_empty();
        for w in inputs
            .workload_entries
            .iter()
            .filter(|w| addressed(&w.spec))
        {
            r.workloads.push(Workload::from_entry(
                &w.name,
                &w.namespace,
                &w.spec,
                &w.annotations,
            ));
        }
        for se in &inputs.service_entries {
            let ports: Vec<Port> = se
                .spec
                .ports
                .iter()
                .map(|p| Port {
                    name: p.name.clone(),
                    number: p.number,
                    protocol: Protocol::parse(p.protocol.as_deref(), &p.name),
                    target_port: p.target_port,
                })
                .collect();
            for host in &se.spec.hosts {
                r.services.push(Service {
                    host: fqdn(host, &se.namespace),
                    namespace: se.namespace.clone(),
                    ports: ports.clone(),
                    selector: se.spec.workload_selector.as_ref().map(|s| s.labels.clone()),
                    endpoints: se
                        .spec
                        .endpoints
                        .iter()
                        .enumerate()
                        .filter(|(_, e)| addressed(e))
                        .map(|(i, e)| {
                            Workload::from_entry(
                                &format!("{}-{i}", se.name),
                                &se.namespace,
                                e,
                                &Labels::new(),
                            )
                        })
                        .collect(),
                    endpoints_listed: false,
                    resolve_dns: se
                        .spec
                        .resolution
                        .as_deref()
                        .is_some_and(|r| r.starts_with("DNS")),
                    export_to: se.spec.export_to.clone(),
                    addresses: se.spec.addresses.clone(),
                });
            }
        }
        // One service per host name, the first (the control plane warns of the
        // others): every lookup by host finds that one, so views must not be made from
        // another, whose ports the lookups would not find.
        let mut seen = BTreeSet::new();
        r.services.retain(|s| seen.insert(s.host.clone()));
        for (i, s) in r.services.iter().enumerate() {
            r.by_host.insert(s.host.clone(), i);
        }
        for (i, w) in r.workloads.iter().enumerate() {
            for (k, v) in &w.labels {
                r.by_label
                    .entry((w.namespace.clone(), k.clone(), v.clone()))
                    .or_default()
                    .push(i);
            }
        }
        r
    }

    /// The service with this host name.
    pub fn service(&self, host: &str) -> Option<&Service> {
        self.by_host.get(host).map(|&i| &self.services[i])
    }

    /// The service of `host`, to change its endpoints in place (Kubernetes endpoint
    /// changes); its host, namespace and selector must stay as they are, since the
    /// registry's indexes use them.
    pub fn service_mut(&mut self, host: &str) -> Option<&mut Service> {
        self.by_host.get(host).map(|&i| &mut self.services[i])
    }

    pub fn workload(&self, namespace: &str, name: &str) -> Option<&Workload> {
        self.workloads
            .iter()
            .find(|w| w.namespace == namespace && w.name == name)
    }

    /// [`workload`](Self::workload), or why a proxy of that name gets no view.
    pub fn known_workload(&self, namespace: &str, name: &str) -> Result<&Workload, String> {
        self.workload(namespace, name)
            .ok_or_else(|| format!("no workload {namespace}/{name} (WorkloadEntry or Pod)"))
    }

    /// The workloads behind `service`, optionally narrowed by subset labels.
    pub fn endpoints<'a>(&'a self, service: &'a Service, subset: &'a Labels) -> Vec<&'a Workload> {
        let selected: Vec<&Workload> = match &service.selector {
            Some(sel) if !service.endpoints_listed => self.selected(&service.namespace, sel),
            _ => service.endpoints.iter().collect(),
        };
        selected
            .into_iter()
            .filter(|w| selects(subset, &w.labels))
            .collect()
    }

    /// Workloads in `namespace` whose labels `selector` selects: the candidates are the
    /// shortest index list among the selector's pairs.
    fn selected<'a>(&'a self, namespace: &str, selector: &Labels) -> Vec<&'a Workload> {
        if selector.is_empty() {
            return self
                .workloads
                .iter()
                .filter(|w| w.namespace == namespace)
                .collect();
        }
        let empty = Vec::new();
        let shortest = selector
            .iter()
            .map(|(k, v)| {
                self.by_label
                    .get(&(namespace.to_string(), k.clone(), v.clone()))
                    .unwrap_or(&empty)
            })
            .min_by_key(|l| l.len())
            .unwrap_or(&empty);
        shortest
            .iter()
            .map(|&i| &self.workloads[i])
            .filter(|w| selects(selector, &w.labels))
            .collect()
    }

    /// The services (and their ports) a workload serves.
    pub fn served_by<'a>(&'a self, w: &'a Workload) -> impl Iterator<Item = &'a Service> + 'a {
        self.services.iter().filter(move |s| {
            s.selector
                .as_ref()
                .is_some_and(|sel| s.namespace == w.namespace && selects(sel, &w.labels))
        })
    }
}
