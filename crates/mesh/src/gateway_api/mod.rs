//! The Kubernetes Gateway API (`gateway.networking.k8s.io`): GatewayClass, Gateway,
//! HTTPRoute, GRPCRoute, TLSRoute and ReferenceGrant, read as Istio reads them. Gateways of a class whose
//! `controllerName` is Trellis's (or of the built-in classes `trellis` and `istio`) are
//! served by the gateway proxies labelled `gateway.networking.k8s.io/gateway-name:
//! <gateway>` in any namespace, as Istio's deployments are; `convert.rs` turns them into
//! the Istio resources the gateway generation reads, and says in `status.rs` terms what
//! became of each.

mod convert;
pub mod status;
pub mod types;
mod validate;

pub use convert::convert;
pub use validate::{
    gateway, gateway_class, grpc_route, http_route, reference_grant, tcp_route, tls_route,
};

/// The `controllerName` of Trellis's GatewayClasses.
pub const CONTROLLER: &str = "trellis.dev/gateway-controller";
/// Class names Trellis serves without a GatewayClass object: its own, and Istio's
/// (which istiod creates itself, so Istio users' Gateways name it without defining it).
pub const BUILT_IN_CLASSES: [&str; 2] = ["trellis", "istio"];
/// The label that names the Gateway a gateway proxy serves (Istio's, on its deployments).
pub const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";
pub const GROUP: &str = "gateway.networking.k8s.io";
/// The `source` of the Istio resources converted from Gateway API ones.
pub const SOURCE: &str = "Gateway API";

/// What a route converted from an HTTPRoute means beyond the Istio fields it is in.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RouteSemantics {
    /// A `prefix` match is the Gateway API's `PathPrefix`: whole path segments
    /// (`/foo` matches `/foo` and `/foo/bar`, not `/foobar`).
    pub path_separated: bool,
    /// `URLRewrite` with `ReplaceFullPath`.
    pub full_path: Option<String>,
    /// `RequestRedirect` with `ReplacePrefixMatch`.
    pub redirect_prefix: Option<String>,
}

/// A Kubernetes label selector (`matchLabels` and `matchExpressions`).
pub fn selector_matches(
    s: &types::LabelSelector,
    labels: &std::collections::BTreeMap<String, String>,
) -> bool {
    s.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
        && s.match_expressions.iter().all(|e| {
            let v = labels.get(&e.key);
            match e.operator.as_str() {
                "In" => v.is_some_and(|v| e.values.contains(v)),
                "NotIn" => v.is_none_or(|v| !e.values.contains(v)),
                "Exists" => v.is_some(),
                "DoesNotExist" => v.is_none(),
                _ => false,
            }
        })
}
