//! The proxy's config model ([`trellis_config::Config`]) as Envoy v3 resources and back.
//!
//! The control plane builds each proxy's listeners and clusters in Trellis's own model
//! and [`encode`]s them; the proxy [`decode`]s what arrives over xDS into the same model
//! and applies it as it would a file. Everything is expressed with Envoy's own fields
//! where Envoy has one (routes, retries, faults, clusters, TLS with SDS secret names),
//! so any xDS client reads the routes and clusters. AuthorizationPolicy is Envoy's RBAC
//! filter in Istio's shape (module `rbac`). JWT verification has no field here
//! and travels as a `TypedStruct` filter of Trellis's own (`trellis.jwt_authn`).
//!
//! The route configuration of an HTTP listener has the listener's name; an EDS
//! cluster's endpoints are the ClusterLoadAssignment of the cluster's name.

mod access_log;
mod decode;
mod decoder;
mod encode;
mod metadata;
mod metadata_exchange;
mod rbac;
mod socket_match;
mod structs;
mod trace;

use prost::bytes::Bytes;

pub use decode::{decode, DecodeError, Decoded, Lookup};
pub use decoder::{Decoder, SharedDecoded};
pub use encode::{
    encode, encode_listener, encode_proxyless, encode_routes, EncodeError, Resources,
};

/// Names of the filters Trellis writes and reads.
pub const HCM: &str = "envoy.filters.network.http_connection_manager";
pub const TCP_PROXY: &str = "envoy.filters.network.tcp_proxy";
pub const ROUTER: &str = "envoy.filters.http.router";
pub const FAULT: &str = "envoy.filters.http.fault";
pub const CORS: &str = "envoy.filters.http.cors";
pub const JWT_AUTHN: &str = "trellis.jwt_authn";
pub const TLS_INSPECTOR: &str = "envoy.filters.listener.tls_inspector";
pub const TLS_SOCKET: &str = "envoy.transport_sockets.tls";
pub const HTTP_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// The cluster a sidecar's bootstrap defines for its node agent's SDS socket, which the
/// workload certificate (`default`) and roots (`ROOTCA`) are fetched from, as in Istio's
/// bootstrap; other secrets (a gateway's credentials) come over ADS.
pub const SDS_CLUSTER: &str = "sds-grpc";

/// The secrets of the workload's own identity, which its node agent serves (and the
/// Trellis proxy's identity agent holds): the certificate and the mesh roots.
pub(crate) fn from_node_agent(secret: &str) -> bool {
    secret == "default" || secret == "ROOTCA"
}

/// The type URLs of the four resource types (what `prost::Name` says of each message).
pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
pub const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

pub(crate) mod types {
    pub const HCM: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
    pub const TLS_INSPECTOR: &str =
        "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector";
    pub const HTTP_INSPECTOR: &str =
        "type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector";
    pub const TCP_PROXY: &str =
        "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";
    pub const ROUTER: &str = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";
    pub const FAULT: &str = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault";
    pub const CORS: &str = "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors";
    pub const CORS_POLICY: &str =
        "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy";
    pub const TYPED_STRUCT: &str = "type.googleapis.com/xds.type.v3.TypedStruct";
    pub const DOWNSTREAM_TLS: &str =
        "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext";
    pub const UPSTREAM_TLS: &str =
        "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext";
    pub const HTTP_OPTIONS: &str =
        "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
    /// What a TypedStruct carrying Trellis JWT verification (RequestAuthentication)
    /// says it is.
    pub const JWT_AUTHN: &str = "type.googleapis.com/trellis.config.v1.JwtAuthn";
}

pub(crate) fn any<M: prost::Message>(
    type_url: &str,
    m: &M,
) -> envoy_types::pb::google::protobuf::Any {
    envoy_types::pb::google::protobuf::Any {
        type_url: type_url.to_string(),
        value: m.encode_to_vec(),
    }
}

/// The route configuration an HTTP listener loads by RDS, by name (none for a TCP
/// listener or an inline route table, or a body that is not a Listener).
pub fn route_names(listener: &[u8]) -> Vec<String> {
    use envoy_types::pb::envoy::config::listener::v3::{filter::ConfigType, Listener};
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
        http_connection_manager::RouteSpecifier, HttpConnectionManager,
    };
    use prost::Message;
    let Ok(l) = Listener::decode(listener) else {
        return Vec::new();
    };
    let mut names = Vec::new();
    for chain in &l.filter_chains {
        for f in &chain.filters {
            let Some(ConfigType::TypedConfig(c)) = &f.config_type else {
                continue;
            };
            if c.type_url != types::HCM {
                continue;
            }
            if let Ok(h) = HttpConnectionManager::decode(c.value.as_slice()) {
                if let Some(RouteSpecifier::Rds(rds)) = h.route_specifier {
                    names.push(rds.route_config_name);
                }
            }
        }
    }
    names
}

/// The SDS secrets a listener's TLS names, besides the identity agent's (`default`,
/// `ROOTCA`): a gateway's credentials, which it subscribes to.
pub fn secret_names(listener: &[u8]) -> Vec<String> {
    use envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType;
    use envoy_types::pb::envoy::config::listener::v3::Listener;
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
        common_tls_context::ValidationContextType, DownstreamTlsContext,
    };
    use prost::Message;
    let Ok(l) = Listener::decode(listener) else {
        return Vec::new();
    };
    let mut names = Vec::new();
    let chains = l
        .filter_chains
        .iter()
        .chain(l.default_filter_chain.as_ref());
    for socket in chains.filter_map(|c| c.transport_socket.as_ref()) {
        let Some(ConfigType::TypedConfig(c)) = &socket.config_type else {
            continue;
        };
        let Ok(d) = DownstreamTlsContext::decode(c.value.as_slice()) else {
            continue;
        };
        let Some(common) = d.common_tls_context else {
            continue;
        };
        names.extend(
            common
                .tls_certificate_sds_secret_configs
                .iter()
                .map(|s| s.name.clone()),
        );
        match common.validation_context_type {
            Some(ValidationContextType::ValidationContextSdsSecretConfig(s)) => names.push(s.name),
            Some(ValidationContextType::CombinedValidationContext(c)) => {
                names.extend(c.validation_context_sds_secret_config.map(|s| s.name))
            }
            _ => {}
        }
    }
    names.retain(|n| !from_node_agent(n));
    names.sort();
    names.dedup();
    names
}

/// The fields of a Cluster that say which endpoint assignment it loads. Decoding only
/// these skips the rest (transport sockets, policies) without allocating: a sidecar
/// reads thousands of clusters for their names after every cluster update, and the
/// names stay slices of the cluster's body.
#[derive(Clone, PartialEq, prost::Message)]
struct ClusterRefs {
    #[prost(bytes = "bytes", tag = "1")]
    name: Bytes,
    /// The `type` arm of the discovery type oneof (`cluster_type`, tag 38, is not EDS).
    #[prost(int32, optional, tag = "2")]
    discovery: Option<i32>,
    #[prost(message, optional, tag = "3")]
    eds: Option<EdsRefs>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct EdsRefs {
    #[prost(bytes = "bytes", tag = "2")]
    service_name: Bytes,
}

/// The endpoint assignment one cluster loads, if it is an EDS cluster: a slice of the
/// cluster's body (not checked to be UTF-8).
pub fn endpoint_name(cluster: &Bytes) -> Option<Bytes> {
    use envoy_types::pb::envoy::config::cluster::v3::cluster::DiscoveryType;
    use prost::Message;
    let c = ClusterRefs::decode(cluster.clone()).ok()?;
    if c.discovery != Some(DiscoveryType::Eds as i32) {
        return None;
    }
    Some(
        (c.eds.map(|e| e.service_name))
            .filter(|n| !n.is_empty())
            .unwrap_or(c.name),
    )
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::cluster::v3::cluster::{
        ClusterDiscoveryType, CustomClusterType, DiscoveryType, EdsClusterConfig,
    };
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::google::protobuf::Any;
    use prost::bytes::Bytes;
    use prost::Message;

    use super::CLUSTER;

    #[test]
    fn type_urls_are_the_messages_own() {
        use envoy_types::pb::envoy::config as c;
        use prost::Name;
        assert_eq!(super::LISTENER, c::listener::v3::Listener::type_url());
        assert_eq!(super::ROUTE, c::route::v3::RouteConfiguration::type_url());
        assert_eq!(super::CLUSTER, Cluster::type_url());
        assert_eq!(
            super::ENDPOINT,
            c::endpoint::v3::ClusterLoadAssignment::type_url()
        );
    }

    fn any(c: &Cluster) -> Any {
        Any {
            type_url: CLUSTER.into(),
            value: c.encode_to_vec(),
        }
    }

    /// The partial decode names what a whole decode of each cluster names.
    #[test]
    fn endpoint_names_reads_only_eds_clusters() {
        let eds = |name: &str, service: &str| Cluster {
            name: name.into(),
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
            eds_cluster_config: Some(EdsClusterConfig {
                eds_config: None,
                service_name: service.into(),
            }),
            ..Default::default()
        };
        let clusters = [
            eds("outbound|80||a", ""),
            eds("outbound|80||b", "b-endpoints"),
            Cluster {
                name: "static".into(),
                cluster_discovery_type: Some(ClusterDiscoveryType::Type(
                    DiscoveryType::Static as i32,
                )),
                ..Default::default()
            },
            Cluster {
                name: "custom".into(),
                cluster_discovery_type: Some(ClusterDiscoveryType::ClusterType(
                    CustomClusterType {
                        name: "envoy.clusters.aggregate".into(),
                        typed_config: None,
                    },
                )),
                eds_cluster_config: Some(EdsClusterConfig {
                    eds_config: None,
                    service_name: "not-loaded".into(),
                }),
                ..Default::default()
            },
            Cluster {
                name: "eds-without-config".into(),
                cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
                connect_timeout: Some(Default::default()),
                ..Default::default()
            },
        ];
        let bodies: Vec<Bytes> = clusters.iter().map(|c| any(c).value.into()).collect();
        let mut names: Vec<Bytes> = bodies.iter().filter_map(super::endpoint_name).collect();
        names.sort();
        assert_eq!(
            names,
            ["b-endpoints", "eds-without-config", "outbound|80||a"]
        );
        // Not a cluster at all: skipped, not a panic.
        let junk = Any {
            type_url: CLUSTER.into(),
            value: vec![0xff, 0xff, 0xff],
        };
        assert_eq!(super::endpoint_name(&Bytes::from(junk.value)), None);
    }
}
