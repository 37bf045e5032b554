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
mod socket_match;
mod structs;

use prost::bytes::Bytes;
use trellis_xds::Name;

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
    listeners: impl IntoIterator<Item = &'a [u8]>,
) -> std::collections::BTreeSet<Name> {
    use prost::Message;
    use trellis_xds::pb::envoy::config::listener::v3::{filter::ConfigType, Listener};
    use trellis_xds::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
        http_connection_manager::RouteSpecifier, HttpConnectionManager,
    };
    let mut names = std::collections::BTreeSet::new();
    for body in listeners {
        let Ok(l) = Listener::decode(body) else {
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
                        names.insert(Name::from(rds.route_config_name));
                    }
                }
            }
        }
    }
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

/// The endpoint assignments the EDS clusters among `clusters` load (slices of their
/// bodies; a name that is not UTF-8 is skipped, as an undecodable cluster is).
pub fn endpoint_names<'a>(
    clusters: impl IntoIterator<Item = &'a Bytes>,
) -> std::collections::BTreeSet<Name> {
    clusters.into_iter().filter_map(endpoint_name).collect()
}

/// The endpoint assignment one cluster loads, if it is an EDS cluster.
fn endpoint_name(cluster: &Bytes) -> Option<Name> {
    use prost::Message;
    use trellis_xds::pb::envoy::config::cluster::v3::cluster::DiscoveryType;
    let c = ClusterRefs::decode(cluster.clone()).ok()?;
    if c.discovery != Some(DiscoveryType::Eds as i32) {
        return None;
    }
    let name = (c.eds.map(|e| e.service_name))
        .filter(|n| !n.is_empty())
        .unwrap_or(c.name);
    Name::from_utf8(name).ok()
}

/// Per resource, in name order: the version read (a shared slice, not a copy) and the
/// names it refers to.
type Refs = Vec<(Name, (trellis_xds::client::Resource, Vec<Name>))>;

/// The names one type's resources refer to, and the type's stamp they were read at.
#[derive(Default)]
struct Referred {
    refs: Refs,
    stamp: u64,
    names: std::sync::Arc<std::collections::BTreeSet<Name>>,
}

/// What a sidecar subscribes to given what it holds: every listener and cluster, the
/// route configurations its listeners name and the endpoints its EDS clusters name.
///
/// Asked after every response, so it remembers what each resource version refers to and
/// decodes only resources it has not seen (a sidecar holds thousands of clusters).
/// A type that did not change gives the same set again (the same `Arc`).
#[derive(Default)]
pub struct SidecarInterest {
    /// Listeners → route configurations, clusters → endpoint assignments.
    seen: std::sync::Mutex<(Referred, Referred)>,
}

impl SidecarInterest {
    pub fn interest(
        &self,
        state: &trellis_xds::client::ClientState,
    ) -> trellis_xds::client::Interest {
        use std::collections::BTreeSet;
        use std::sync::Arc;
        use trellis_xds::{CLUSTER, ENDPOINT, LISTENER, ROUTE};
        fn refs(
            state: &trellis_xds::client::ClientState,
            type_url: &str,
            seen: &mut Referred,
        ) -> Arc<BTreeSet<Name>> {
            // An unchanged type refers to the same names: the same set, not a copy.
            let stamp = state.revision(type_url);
            if stamp != 0 && stamp == seen.stamp {
                return seen.names.clone();
            }
            // Held resources and what was read before are both in name order: one walk
            // keeps what is still current and reads only new versions.
            let mut before = std::mem::take(&mut seen.refs).into_iter().peekable();
            let mut refs = Vec::with_capacity(state.count(type_url));
            let mut all: Vec<&Name> = Vec::new();
            for (name, r) in state.of(type_url) {
                while before.next_if(|(b, _)| b < name).is_some() {}
                let entry = match before.next_if(|(b, _)| b == name) {
                    Some(mut e) if e.1 .0.same_version(r) => {
                        // The held one: an older copy would keep its response's buffer.
                        e.1 .0 = r.clone();
                        e
                    }
                    _ => {
                        // A cluster names one assignment at most: no set for it.
                        let names = if type_url == LISTENER {
                            route_names([r.body()]).into_iter().collect()
                        } else {
                            endpoint_name(r.body_shared()).into_iter().collect()
                        };
                        (name.clone(), (r.clone(), names))
                    }
                };
                refs.push(entry);
            }
            seen.refs = refs;
            all.extend(seen.refs.iter().flat_map(|(_, (_, n))| n.iter()));
            all.sort_unstable();
            all.dedup();
            // Usually the same names as before (a cluster changed, not which assignment
            // it loads): compared before a set is built.
            let same = all.len() == seen.names.len()
                && all.iter().zip(seen.names.iter()).all(|(a, b)| *a == b);
            if !same {
                seen.names = Arc::new(all.into_iter().cloned().collect());
            }
            seen.stamp = stamp;
            seen.names.clone()
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

#[cfg(test)]
mod tests {
    use prost::bytes::Bytes;
    use prost::Message;
    use trellis_xds::pb::envoy::config::cluster::v3::cluster::{
        ClusterDiscoveryType, CustomClusterType, DiscoveryType, EdsClusterConfig,
    };
    use trellis_xds::pb::envoy::config::cluster::v3::Cluster;
    use trellis_xds::pb::google::protobuf::Any;
    use trellis_xds::Name;

    fn any(c: &Cluster) -> Any {
        Any {
            type_url: trellis_xds::CLUSTER.into(),
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
        let names: Vec<String> = super::endpoint_names(&bodies)
            .iter()
            .map(Name::to_string)
            .collect();
        assert_eq!(
            names,
            ["b-endpoints", "eds-without-config", "outbound|80||a"]
        );
        // Not a cluster at all: skipped, not a panic.
        let junk = Any {
            type_url: trellis_xds::CLUSTER.into(),
            value: vec![0xff, 0xff, 0xff],
        };
        assert!(super::endpoint_names([&Bytes::from(junk.value)]).is_empty());
    }
}
