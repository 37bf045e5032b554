//! What the loader gives: the accepted resources by kind (with where each came from),
//! the fail-closed stand-ins of refused security resources, and the diagnostics.

use std::collections::BTreeMap;
use std::fmt;

use crate::fail_closed::FailClosed;
use crate::istio::*;

/// A resource with where it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Resource<T> {
    pub name: String,
    pub namespace: String,
    pub labels: Labels,
    pub annotations: Labels,
    pub spec: T,
    /// `file.yaml#2` (document index from 1).
    pub source: String,
}

/// Everything the control plane reads, by kind.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Inputs {
    pub virtual_services: Vec<Resource<VirtualService>>,
    pub destination_rules: Vec<Resource<DestinationRule>>,
    pub service_entries: Vec<Resource<ServiceEntry>>,
    pub workload_entries: Vec<Resource<WorkloadEntry>>,
    pub sidecars: Vec<Resource<Sidecar>>,
    pub gateways: Vec<Resource<crate::istio::Gateway>>,
    pub peer_authentications: Vec<Resource<PeerAuthentication>>,
    pub authorization_policies: Vec<Resource<AuthorizationPolicy>>,
    pub request_authentications: Vec<Resource<RequestAuthentication>>,
    /// Telemetry API resources (`telemetry.istio.io`): their tracing is read.
    pub telemetries: Vec<Resource<crate::telemetry_api::Telemetry>>,
    /// The JWK Sets of the `jwksUri`s RequestAuthentications name, as the control
    /// plane fetched them (an error when the last fetch failed).
    pub jwks: BTreeMap<String, Result<String, String>>,
    /// Refused security resources, in their strictest reading (see [`crate::fail_closed`]).
    pub fail_closed: Vec<Resource<FailClosed>>,
    /// Tenants (`trellis.io/v1alpha1`), as loaded.
    pub tenants: Vec<Resource<crate::tenant::Tenant>>,
    /// The labels of the cluster's namespaces (Kubernetes mode), for Tenants'
    /// `namespaceSelector`s.
    pub namespace_labels: BTreeMap<String, Labels>,
    /// Istio's meshConfig (the `istio` ConfigMap or an IstioOperator): at most one.
    pub mesh_config: Vec<Resource<crate::mesh_config::MeshConfig>>,
    /// Kubernetes Gateway API resources (`gateway.networking.k8s.io`), as loaded; the
    /// Istio resources they mean are added by [`crate::gateway_api::convert`].
    pub k8s_gateway_classes: Vec<Resource<crate::gateway_api::types::GatewayClass>>,
    pub k8s_gateways: Vec<Resource<crate::gateway_api::types::Gateway>>,
    pub http_routes: Vec<Resource<crate::gateway_api::types::HttpRoute>>,
    pub grpc_routes: Vec<Resource<crate::gateway_api::types::GrpcRoute>>,
    pub tls_routes: Vec<Resource<crate::gateway_api::types::TlsRoute>>,
    pub tcp_routes: Vec<Resource<crate::gateway_api::types::TcpRoute>>,
    pub reference_grants: Vec<Resource<crate::gateway_api::types::ReferenceGrant>>,
    /// TLS credentials from Secrets (Kubernetes, or `v1` Secret documents in the
    /// directories), for gateways' `credentialName` and `certificateRefs`.
    pub credentials: Vec<Resource<crate::credentials::Credential>>,
    /// The tenants' trust as the control plane resolved it (their CAs' roots); `None`
    /// without tenants: every sidecar trusts the mesh CA's roots (`sds://ROOTCA`).
    pub trust: Option<std::sync::Arc<crate::tenant::Trust>>,
    /// Istio's `PILOT_ENABLE_METADATA_EXCHANGE=false`: sidecars do not offer or take
    /// the TCP metadata exchange (`istio-peer-exchange`), for a fleet of Envoys built
    /// without Envoy's contrib extension that does it.
    pub disable_tcp_metadata_exchange: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// `mesh.yaml#3 VirtualService default/reviews`.
    pub resource: String,
    pub message: String,
    /// (kind, namespace, name) when the document got that far.
    pub key: Option<(String, String, String)>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.resource, self.message)
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Loaded {
    pub inputs: Inputs,
    pub warnings: Vec<Diagnostic>,
    pub refused: Vec<Diagnostic>,
}

impl Loaded {
    pub(crate) fn extend_from(&mut self, other: &Loaded) {
        let (i, o) = (&mut self.inputs, &other.inputs);
        i.virtual_services.extend_from_slice(&o.virtual_services);
        i.destination_rules.extend_from_slice(&o.destination_rules);
        i.service_entries.extend_from_slice(&o.service_entries);
        i.workload_entries.extend_from_slice(&o.workload_entries);
        i.sidecars.extend_from_slice(&o.sidecars);
        i.gateways.extend_from_slice(&o.gateways);
        i.peer_authentications
            .extend_from_slice(&o.peer_authentications);
        i.authorization_policies
            .extend_from_slice(&o.authorization_policies);
        i.request_authentications
            .extend_from_slice(&o.request_authentications);
        i.telemetries.extend_from_slice(&o.telemetries);
        i.fail_closed.extend_from_slice(&o.fail_closed);
        i.tenants.extend_from_slice(&o.tenants);
        i.mesh_config.extend_from_slice(&o.mesh_config);
        i.k8s_gateway_classes
            .extend_from_slice(&o.k8s_gateway_classes);
        i.k8s_gateways.extend_from_slice(&o.k8s_gateways);
        i.http_routes.extend_from_slice(&o.http_routes);
        i.grpc_routes.extend_from_slice(&o.grpc_routes);
        i.tls_routes.extend_from_slice(&o.tls_routes);
        i.tcp_routes.extend_from_slice(&o.tcp_routes);
        i.reference_grants.extend_from_slice(&o.reference_grants);
        i.credentials.extend_from_slice(&o.credentials);
        i.namespace_labels.extend(
            o.namespace_labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        self.warnings.extend_from_slice(&other.warnings);
        self.refused.extend_from_slice(&other.refused);
    }
}

impl Inputs {
    /// For each resource refused now that was accepted before, keeps the earlier
    /// version serving (an edit that breaks a resource does not remove it). A refused
    /// security resource without one keeps its fail-closed stand-in, and its
    /// refusal says so.
    pub fn keep_previous(&mut self, previous: &Inputs, refused: &mut [Diagnostic]) {
        macro_rules! carry {
            ($field:ident, $kind:literal) => {
                for d in refused.iter_mut() {
                    let Some((kind, ns, name)) = &d.key else {
                        continue;
                    };
                    if kind != $kind
                        || self
                            .$field
                            .iter()
                            .any(|r| &r.namespace == ns && &r.name == name)
                    {
                        continue;
                    }
                    if let Some(old) = previous
                        .$field
                        .iter()
                        .find(|r| &r.namespace == ns && &r.name == name)
                    {
                        self.$field.push(old.clone());
                        d.message.push_str(" (the previous version keeps serving)");
                    }
                }
            };
        }
        carry!(virtual_services, "VirtualService");
        carry!(destination_rules, "DestinationRule");
        carry!(service_entries, "ServiceEntry");
        carry!(workload_entries, "WorkloadEntry");
        carry!(sidecars, "Sidecar");
        carry!(gateways, "Gateway");
        carry!(peer_authentications, "PeerAuthentication");
        carry!(authorization_policies, "AuthorizationPolicy");
        carry!(request_authentications, "RequestAuthentication");
        carry!(telemetries, "Telemetry");
        carry!(tenants, "Tenant");
        carry!(mesh_config, "MeshConfig");
        carry!(
            k8s_gateway_classes,
            "GatewayClass.gateway.networking.k8s.io"
        );
        carry!(k8s_gateways, "Gateway.gateway.networking.k8s.io");
        carry!(http_routes, "HTTPRoute.gateway.networking.k8s.io");
        carry!(grpc_routes, "GRPCRoute.gateway.networking.k8s.io");
        carry!(tls_routes, "TLSRoute.gateway.networking.k8s.io");
        carry!(tcp_routes, "TCPRoute.gateway.networking.k8s.io");
        carry!(reference_grants, "ReferenceGrant.gateway.networking.k8s.io");
        carry!(credentials, "Secret");
        // A stand-in goes where the earlier version serves; elsewhere it says so.
        let serving = |f: &Resource<FailClosed>| match f.spec.kind {
            "PeerAuthentication" => self
                .peer_authentications
                .iter()
                .any(|r| r.namespace == f.namespace && r.name == f.name),
            "RequestAuthentication" => self
                .request_authentications
                .iter()
                .any(|r| r.namespace == f.namespace && r.name == f.name),
            _ => self
                .authorization_policies
                .iter()
                .any(|r| r.namespace == f.namespace && r.name == f.name),
        };
        let standing: Vec<bool> = self.fail_closed.iter().map(|f| !serving(f)).collect();
        let mut standing = standing.into_iter();
        self.fail_closed.retain(|_| standing.next().unwrap_or(true));
        for d in refused.iter_mut() {
            let Some((kind, ns, name)) = &d.key else {
                continue;
            };
            if let Some(f) = self
                .fail_closed
                .iter()
                .find(|f| f.spec.kind == kind.as_str() && &f.namespace == ns && &f.name == name)
            {
                d.message.push(' ');
                d.message.push_str(f.spec.stance.note());
            }
        }
    }
}

/// Labels `selector` selects (every key equal).
pub fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}
