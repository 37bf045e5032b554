//! Kubernetes objects → the mesh's inputs: Services with their EndpointSlices become
//! registry services, Pods become workloads (the sidecars' nodes), Istio custom
//! resources go through the same loader as files, with the same warnings and refusals.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, Service as KService};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use trellis_mesh::istio::Labels;
use trellis_mesh::{Diagnostic, Loaded, Port, Protocol, Service, Workload};

use crate::objects::{Key, Objects};
use crate::IstioKind;

/// The label an EndpointSlice carries to name its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Which namespaces are part of the mesh (Istio's `discoverySelectors`): all of them
/// when `None`, else those whose labels the selector selects.
#[derive(Clone, Debug, Default)]
pub struct Discovery {
    pub namespace_selector: Option<Labels>,
}

impl Discovery {
    fn includes(&self, objects: &Objects, namespace: &str) -> bool {
        let Some(selector) = &self.namespace_selector else {
            return true;
        };
        objects
            .namespaces
            .get(&(String::new(), namespace.to_string()))
            .is_some_and(|ns| trellis_mesh::selects(selector, ns.labels()))
    }
}

/// Adds everything `objects` holds to `loaded` (Istio resources) and returns the
/// registry's services and workloads.
pub fn load(
    objects: &Objects,
    discovery: &Discovery,
    loaded: &mut Loaded,
) -> (Vec<Service>, Vec<Workload>) {
    for (kind, items) in &objects.istio {
        let Some(kind) = crate::ISTIO_KINDS.iter().find(|k| k.key == *kind) else {
            continue;
        };
        for ((ns, _), o) in items {
            // Cluster-scoped objects (Tenants) belong to no namespace a selector could drop.
            if ns.is_empty() || discovery.includes(objects, ns) {
                istio_resource(kind, o, loaded);
            }
        }
    }
    // Secrets with TLS entries: gateways' credentials.
    for ((ns, name), secret) in &objects.secrets {
        if !discovery.includes(objects, ns) {
            continue;
        }
        let entries: BTreeMap<String, Vec<u8>> = secret
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.0.clone()))
            .collect();
        match trellis_mesh::credentials::from_entries(&entries) {
            Ok(Some(credential)) => loaded.inputs.credentials.push(trellis_mesh::Resource {
                name: name.clone(),
                namespace: ns.clone(),
                labels: Default::default(),
                annotations: Default::default(),
                spec: credential,
                source: format!("kubernetes Secret {ns}/{name}"),
            }),
            Ok(None) => {}
            Err(message) => loaded.refused.push(Diagnostic {
                resource: format!("kubernetes Secret {ns}/{name}"),
                message,
                key: Some(("Secret".into(), ns.clone(), name.clone())),
            }),
        }
    }
    // Namespaces' labels, for Tenants' namespace selectors.
    loaded.inputs.namespace_labels = objects
        .namespaces
        .iter()
        .filter(|((_, name), _)| discovery.includes(objects, name))
        .map(|((_, name), ns)| (name.clone(), ns.labels().clone()))
        .collect();
    // Each pod once: the workloads, and what the endpoints naming it copy.
    let pods: BTreeMap<Key, Workload> = objects
        .pods
        .iter()
        .filter(|((ns, _), _)| discovery.includes(objects, ns))
        .filter_map(|(k, p)| Some((k.clone(), pod_workload(objects, p)?)))
        .collect();
    let mut services = Vec::new();
    let pod = |k: &Key| pods.get(k).cloned();
    // Each Service's slices by one pass over them, not a scan of its namespace's slices
    // per Service (10 000 Services in one namespace: 10^8 label lookups).
    let mut slices: BTreeMap<Key, Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in objects.endpoint_slices.values() {
        if let Some(key) = slice_service(slice) {
            slices.entry(key).or_default().push(slice);
        }
    }
    for (key, s) in &objects.services {
        if discovery.includes(objects, &key.0) {
            let own = slices.get(key).map(Vec::as_slice).unwrap_or_default();
            services.extend(service(&pod, s, own, loaded));
        }
    }
    (services, pods.into_values().collect())
}

/// The registry service of one Kubernetes Service (`key`: namespace and name) as
/// [`load`] makes it, reading only the pods its EndpointSlices name; `None` when it is
/// not part of the mesh (absent, ExternalName, outside the discovery selector).
pub fn one_service(objects: &Objects, discovery: &Discovery, key: &Key) -> Option<Service> {
    if !discovery.includes(objects, &key.0) {
        return None;
    }
    let pod = |k: &Key| {
        if !discovery.includes(objects, &k.0) {
            return None;
        }
        pod_workload(objects, objects.pods.get(k)?)
    };
    let slices: Vec<&EndpointSlice> = in_namespace(&objects.endpoint_slices, &key.0)
        .filter(|slice| slice.labels().get(SERVICE_NAME_LABEL) == Some(&key.1))
        .collect();
    service(
        &pod,
        objects.services.get(key)?,
        &slices,
        &mut Loaded::default(),
    )
}

/// The Service an EndpointSlice belongs to (its namespace and the Service named by its
/// label), if any: a slice without the label backs no Service.
pub fn slice_service<K: kube::Resource>(slice: &K) -> Option<Key> {
    Some((
        slice.namespace().unwrap_or_default(),
        slice.labels().get(SERVICE_NAME_LABEL)?.clone(),
    ))
}

/// A pod, as a workload, by namespace and name.
type PodLookup<'a> = dyn Fn(&Key) -> Option<Workload> + 'a;

fn istio_resource(kind: &IstioKind, o: &kube::api::DynamicObject, loaded: &mut Loaded) {
    let mut json = match serde_json::to_value(o) {
        Ok(v) => v,
        Err(e) => {
            loaded.refused.push(Diagnostic {
                resource: format!("kubernetes {} {}", kind.kind, o.name_any()),
                message: format!("cannot re-encode: {e}"),
                key: None,
            });
            return;
        }
    };
    // Items of a list may come without their type; the watch knows it.
    if let Some(map) = json.as_object_mut() {
        map.entry("apiVersion")
            .or_insert_with(|| format!("{}/{}", kind.group, kind.version).into());
        map.entry("kind").or_insert_with(|| kind.kind.into());
    }
    let source = format!(
        "kubernetes (resourceVersion {})",
        o.resource_version().unwrap_or_default()
    );
    match serde_yaml::to_value(&json) {
        Ok(v) => trellis_mesh::load_value(v, &source, loaded),
        Err(e) => loaded.refused.push(Diagnostic {
            resource: source,
            message: format!("cannot convert: {e}"),
            key: None,
        }),
    }
}

/// The objects of one namespace in a map keyed by (namespace, name).
fn in_namespace<'a, V>(map: &'a BTreeMap<Key, V>, ns: &'a str) -> impl Iterator<Item = &'a V> {
    map.range((ns.to_string(), String::new())..)
        .take_while(move |((n, _), _)| n == ns)
        .map(|(_, v)| v)
}

/// The registry service of `s`, whose EndpointSlices are `slices`.
fn service(
    pod: &PodLookup<'_>,
    s: &KService,
    slices: &[&EndpointSlice],
    loaded: &mut Loaded,
) -> Option<Service> {
    let (ns, name) = (s.namespace().unwrap_or_default(), s.name_any());
    let spec = s.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        loaded.warnings.push(Diagnostic {
            resource: format!("kubernetes Service {ns}/{name}"),
            message: format!(
                "spec.type ExternalName ({}) is not supported by Trellis yet; ignored",
                spec.external_name.as_deref().unwrap_or("")
            ),
            key: None,
        });
        return None;
    }
    let ports: Vec<Port> = spec
        .ports
        .iter()
        .flatten()
        .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
        .map(|p| {
            let name = p.name.clone().unwrap_or_default();
            Port {
                protocol: Protocol::parse(p.app_protocol.as_deref(), &name),
                name,
                number: p.port as u16,
                target_port: match &p.target_port {
                    Some(IntOrString::Int(n)) => Some(*n as u16),
                    Some(IntOrString::String(_)) => None,
                    None => Some(p.port as u16),
                },
            }
        })
        .collect();
    // A dual-stack Service lists a slice per family: one endpoint per pod, at its
    // address of the Service's first family, with the other as its additional address
    // (peers race the two with Happy Eyeballs).
    let family = spec
        .ip_families
        .as_ref()
        .and_then(|f| f.first())
        .map(String::as_str)
        .unwrap_or("IPv4");
    let dual = spec.ip_families.as_ref().is_some_and(|f| f.len() > 1);
    let endpoints = slices
        .iter()
        .filter(|slice| slice.address_type == family)
        .flat_map(|slice| slice_endpoints(pod, slice, dual))
        .collect();
    Some(Service {
        host: trellis_mesh::fqdn(&name, &ns),
        namespace: ns,
        ports,
        selector: spec.selector.clone().filter(|s| !s.is_empty()),
        endpoints,
        endpoints_listed: true,
        resolve_dns: false,
        export_to: Vec::new(),
        addresses: spec
            .cluster_ips
            .iter()
            .flatten()
            .chain(spec.cluster_ip.iter())
            .filter(|ip| ip.parse::<std::net::IpAddr>().is_ok())
            .fold(Vec::new(), |mut all, ip| {
                if !all.contains(ip) {
                    all.push(ip.clone());
                }
                all
            }),
    })
}

/// The ready endpoints of a slice, as workloads (the pod's, when the slice names it);
/// for a dual-stack Service (`dual`) with the pod's address of the other family too.
fn slice_endpoints(pod: &PodLookup<'_>, slice: &EndpointSlice, dual: bool) -> Vec<Workload> {
    let ports: BTreeMap<String, u16> = slice
        .ports
        .iter()
        .flatten()
        .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
        .filter_map(|p| Some((p.name.clone().unwrap_or_default(), p.port? as u16)))
        .collect();
    let ns = slice.namespace().unwrap_or_default();
    let mut out = Vec::new();
    for (i, e) in slice.endpoints.iter().enumerate() {
        // Kubernetes: a missing `ready` means ready.
        if e.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
            continue;
        }
        let target = e
            .target_ref
            .as_ref()
            .filter(|r| r.kind.as_deref() == Some("Pod"))
            .and_then(|r| {
                let pns = r.namespace.clone().unwrap_or_else(|| ns.clone());
                pod(&(pns, r.name.clone()?))
            });
        for address in &e.addresses {
            let w = match &target {
                Some(w) => Workload {
                    address: address.clone(),
                    // The pod's addresses of the other family.
                    additional_addresses: w
                        .addresses()
                        .filter(|a| dual && a != address)
                        .map(str::to_string)
                        .collect(),
                    ports: ports.clone(),
                    ..w.clone()
                },
                None => Workload::new(
                    &format!("{}-{i}", slice.name_any()),
                    &ns,
                    Labels::new(),
                    None,
                    address,
                    ports.clone(),
                    &Labels::new(),
                    address,
                ),
            };
            out.push(w);
        }
    }
    out
}

/// A pod as a workload: its primary address, labels and service account, the ports
/// its Services reach it on, and its sidecar's placement from its annotations.
fn pod_workload(objects: &Objects, p: &Pod) -> Option<Workload> {
    let status = p.status.as_ref()?;
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return None;
    }
    let address = status.pod_ip.clone()?;
    let spec = p.spec.as_ref()?;
    let ns = p.namespace().unwrap_or_default();
    let container_ports: BTreeMap<String, u16> = spec
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|cp| cp.protocol.as_deref().unwrap_or("TCP") == "TCP")
        .filter_map(|cp| Some((cp.name.clone()?, cp.container_port as u16)))
        .collect();
    // Service port name → the port it reaches on this pod (named targetPorts resolved).
    let mut ports = container_ports.clone();
    for s in in_namespace(&objects.services, &ns) {
        let Some(sspec) = &s.spec else { continue };
        let selects = sspec
            .selector
            .as_ref()
            .is_some_and(|sel| !sel.is_empty() && trellis_mesh::selects(sel, p.labels()));
        if !selects {
            continue;
        }
        for sp in sspec.ports.iter().flatten() {
            let target = match &sp.target_port {
                Some(IntOrString::Int(n)) => Some(*n as u16),
                Some(IntOrString::String(n)) => container_ports.get(n).copied(),
                None => Some(sp.port as u16),
            };
            if let Some(t) = target {
                ports
                    .entry(sp.name.clone().unwrap_or_default())
                    .or_insert(t);
            }
        }
    }
    let mut w = Workload::new(
        &p.name_any(),
        &ns,
        p.labels().clone(),
        spec.service_account_name.as_deref(),
        &address,
        ports.clone(),
        p.annotations(),
        &address,
    );
    // A dual-stack pod's other address (status.podIPs lists podIP first).
    if w.additional_addresses.is_empty() {
        w.additional_addresses = status
            .pod_ips
            .iter()
            .flatten()
            .map(|ip| ip.ip.clone())
            .filter(|ip| *ip != address)
            .collect();
    }
    // The app-ports annotation may name container ports; the generator looks them up by
    // service port name.
    let by_container: Vec<(u16, u16)> = w
        .app_ports
        .iter()
        .filter_map(|(name, app)| Some((*container_ports.get(name)?, *app)))
        .collect();
    for (target, app) in by_container {
        for (sname, port) in &ports {
            if *port == target {
                w.app_ports.entry(sname.clone()).or_insert(app);
            }
        }
    }
    Some(w)
}
