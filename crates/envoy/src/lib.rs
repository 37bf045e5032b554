//! The proxy's config model ([`trellis_config::Config`]) as Envoy v3 resources and back.
//!
//! The control plane builds each proxy's listeners and clusters in Trellis's own model
//! and [`encode`]s them; the proxy [`decode`]s what arrives over xDS into the same model
//! and applies it as it would a file. Everything is expressed with Envoy's own fields
//! where Envoy has one (routes, retries, faults, clusters, TLS with SDS secret names),
//! so any xDS client reads the routes and clusters. Two Trellis settings have no Envoy
//! field and travel as `TypedStruct` filters: Istio-semantics authorization
//! (`trellis.authorization`) and the TLS knobs Envoy lacks.
//!
//! The route configuration of an HTTP listener has the listener's name; an EDS
//! cluster's endpoints are the ClusterLoadAssignment of the cluster's name.

mod decode;
mod encode;
mod structs;

pub use decode::{decode, DecodeError, Decoded};
pub use encode::{
    encode, encode_listener, encode_proxyless, encode_routes, EncodeError, Resources,
};

/// Names of the filters Trellis writes and reads.
pub const HCM: &str = "envoy.filters.network.http_connection_manager";
pub const TCP_PROXY: &str = "envoy.filters.network.tcp_proxy";
pub const ROUTER: &str = "envoy.filters.http.router";
pub const FAULT: &str = "envoy.filters.http.fault";
pub const AUTHZ: &str = "trellis.authorization";
pub const TLS_SOCKET: &str = "envoy.transport_sockets.tls";
pub const HTTP_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

pub(crate) mod types {
    pub const HCM: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
    pub const TCP_PROXY: &str =
        "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";
    pub const ROUTER: &str = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";
    pub const FAULT: &str = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault";
    pub const TYPED_STRUCT: &str = "type.googleapis.com/xds.type.v3.TypedStruct";
    pub const DOWNSTREAM_TLS: &str =
        "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext";
    pub const UPSTREAM_TLS: &str =
        "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext";
    pub const HTTP_OPTIONS: &str =
        "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
    /// What a TypedStruct carrying Trellis authorization says it is.
    pub const AUTHZ: &str = "type.googleapis.com/trellis.config.v1.Authorization";
}

pub(crate) fn any<M: prost::Message>(
    type_url: &str,
    m: &M,
) -> trellis_xds::pb::google::protobuf::Any {
    trellis_xds::pb::google::protobuf::Any {
        type_url: type_url.to_string(),
        value: m.encode_to_vec(),
    }
}

/// The route configurations the HTTP listeners among `listeners` load by RDS.
pub fn route_names<'a>(
    listeners: impl IntoIterator<Item = &'a trellis_xds::pb::google::protobuf::Any>,
) -> std::collections::BTreeSet<String> {
    use prost::Message;
    use trellis_xds::pb::envoy::config::listener::v3::{filter::ConfigType, Listener};
    use trellis_xds::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
        http_connection_manager::RouteSpecifier, HttpConnectionManager,
    };
    let mut names = std::collections::BTreeSet::new();
    for any in listeners {
        let Ok(l) = Listener::decode(any.value.as_slice()) else {
            continue;
        };
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
                        names.insert(rds.route_config_name);
                    }
                }
            }
        }
    }
    names
}

/// The endpoint assignments the EDS clusters among `clusters` load.
pub fn endpoint_names<'a>(
    clusters: impl IntoIterator<Item = &'a trellis_xds::pb::google::protobuf::Any>,
) -> std::collections::BTreeSet<String> {
    use prost::Message;
    use trellis_xds::pb::envoy::config::cluster::v3::{
        cluster::{ClusterDiscoveryType, DiscoveryType},
        Cluster,
    };
    clusters
        .into_iter()
        .filter_map(|any| Cluster::decode(any.value.as_slice()).ok())
        .filter(|c| {
            c.cluster_discovery_type == Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32))
        })
        .map(|c| {
            c.eds_cluster_config
                .map(|e| e.service_name)
                .filter(|n| !n.is_empty())
                .unwrap_or(c.name)
        })
        .collect()
}

/// What a sidecar subscribes to given what it holds: every listener and cluster, the
/// route configurations its listeners name and the endpoints its EDS clusters name.
///
/// Asked after every response, so it remembers what each resource version refers to and
/// decodes only resources it has not seen (a sidecar holds thousands of clusters).
type Refs = std::collections::HashMap<String, (String, std::collections::BTreeSet<String>)>;

#[derive(Default)]
pub struct SidecarInterest {
    /// Per type: resource name → (version, the names that version refers to).
    seen: std::sync::Mutex<(Refs, Refs)>,
}

impl SidecarInterest {
    pub fn interest(
        &self,
        state: &trellis_xds::client::ClientState,
    ) -> trellis_xds::client::Interest {
        use std::collections::{BTreeSet, HashSet};
        use trellis_xds::{CLUSTER, ENDPOINT, LISTENER, ROUTE};
        fn refs(
            state: &trellis_xds::client::ClientState,
            type_url: &str,
            seen: &mut Refs,
        ) -> BTreeSet<String> {
            let mut out = BTreeSet::new();
            let mut held = HashSet::new();
            for (name, r) in state.of(type_url) {
                held.insert(name.as_str());
                let stale = seen.get(name).is_none_or(|(v, _)| v != &r.version);
                if stale {
                    let names = if type_url == LISTENER {
                        route_names([&r.body])
                    } else {
                        endpoint_names([&r.body])
                    };
                    seen.insert(name.clone(), (r.version.clone(), names));
                }
                out.extend(seen[name].1.iter().cloned());
            }
            seen.retain(|name, _| held.contains(name.as_str()));
            out
        }
        let mut seen = self.seen.lock().unwrap();
        let (listeners, clusters) = &mut *seen;
        let routes = refs(state, LISTENER, listeners);
        let endpoints = refs(state, CLUSTER, clusters);
        vec![
            (CLUSTER, None),
            (ENDPOINT, Some(endpoints)),
            (LISTENER, None),
            (ROUTE, Some(routes)),
        ]
    }
}
