//! The control plane's inputs and what they generate.
//!
//! [`load`] reads Istio resources (`networking.istio.io/v1` VirtualService,
//! DestinationRule, ServiceEntry, WorkloadEntry, Sidecar; `security.istio.io/v1`
//! PeerAuthentication, AuthorizationPolicy) with warnings for what Trellis ignores and
//! refusals for what is invalid. [`Registry`] is the service registry: services with
//! ports and protocols, workloads with addresses, labels and service accounts (from
//! ServiceEntry/WorkloadEntry here, from Kubernetes objects in Kubernetes mode).
//! [`generate`] turns both into one sidecar's listeners and clusters in the proxy's
//! own config model, which `trellis-envoy` encodes for xDS.
//!
//! Local-mode sidecars run without traffic capture, so a workload says where its
//! sidecar listens through annotations (see [`annotations`]).

pub mod access_logs;
mod annotations;
pub mod capture;
pub mod credentials;
pub mod fail_closed;
pub mod gateway;
pub mod gateway_api;
pub mod generate;
mod incremental;
mod inputs;
pub mod istio;
pub mod load;
pub mod mesh_config;
mod metrics_api;
mod registry;
mod security;
mod telemetry;
mod telemetry_api;
mod telemetry_levels;
pub mod tenant;
mod trace;
mod trust_domain;
mod unhonoured;
mod validate;

pub use annotations::{parse_go_bool, DRY_RUN};
pub use generate::{
    egress_collisions, egress_unresolved, generate, generate_client, generate_clusters,
    generate_inbound, generate_outbound, observation, outbound_scope, own_outbound, Observation,
    Outbound,
};
pub use incremental::endpoint_moves;
pub use inputs::{selects, Diagnostic, Inputs, Loaded, Resource};
pub use load::{
    load_dir, load_dir_cached, load_dir_into, load_str, load_value, DocCache, DocChange,
};
pub use registry::{Port, Protocol, Registry, Service, Workload};
pub use telemetry_api::Telemetry;
pub use validate::cross_check;

/// The mesh's root namespace: resources here without a selector apply mesh-wide.
pub const ROOT_NAMESPACE: &str = "istio-system";

/// `reviews` in namespace `default` → `reviews.default.svc.cluster.local`; names with a
/// dot other than Kubernetes forms (`api.example.com`) stay as they are.
pub fn fqdn(host: &str, namespace: &str) -> String {
    let dots = host.matches('.').count();
    if host.ends_with(".svc.cluster.local") || host.contains('*') {
        host.to_string()
    } else if dots == 0 {
        format!("{host}.{namespace}.svc.cluster.local")
    } else if dots == 1 {
        format!("{host}.svc.cluster.local")
    } else if host.ends_with(".svc") {
        format!("{host}.cluster.local")
    } else {
        host.to_string()
    }
}

/// The SPIFFE identity of a service account.
/// A DNS-1123 label (Istio's IsDNS1123Label, Kubernetes' names): lowercase letters,
/// digits and '-', starting and ending with a letter or digit, at most 63 characters.
pub(crate) fn dns1123_label(l: &str) -> bool {
    !l.is_empty()
        && l.len() <= 63
        && l.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !l.starts_with('-')
        && !l.ends_with('-')
}

/// Istio's `host.Name.SubsetOf`: every name `a` matches is matched by `b`.
pub fn host_subset_of(a: &str, b: &str) -> bool {
    match (a.strip_prefix('*'), b.strip_prefix('*')) {
        (Some(a), Some(b)) => a.ends_with(b),
        (Some(_), None) => false,
        (None, Some(b)) => a.ends_with(b),
        (None, None) => a == b,
    }
}

pub fn spiffe_id(namespace: &str, service_account: &str) -> String {
    format!("spiffe://cluster.local/ns/{namespace}/sa/{service_account}")
}

/// The namespace of a proxyless gRPC client's node id, `grpc~<namespace>[~...]`.
pub fn proxyless_namespace(node_id: &str) -> Option<&str> {
    node_id
        .strip_prefix("grpc~")
        .map(|rest| rest.split('~').next().unwrap_or("default"))
}

/// The workload a node id names, in Istio's form
/// `sidecar~<ip>~<name>.<namespace>~<namespace>.svc.cluster.local`: (namespace, name).
pub fn workload_of(node_id: &str) -> Option<(String, String)> {
    let mut parts = node_id.split('~');
    let (_kind, _ip, pod) = (parts.next()?, parts.next()?, parts.next()?);
    let (name, namespace) = pod.rsplit_once('.')?;
    Some((namespace.to_string(), name.to_string()))
}

/// The node id a workload's sidecar presents.
pub fn node_id(w: &Workload) -> String {
    format!(
        "sidecar~{}~{}.{}~{}.svc.cluster.local",
        w.address, w.name, w.namespace, w.namespace
    )
}

/// `ip:port` with IPv6 in brackets.
pub fn socket(ip: &str, port: u16) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}
