//! The Envoy bootstrap for a sidecar of this agent: ADS through the agent's xDS socket,
//! the `sds-grpc` cluster the control plane's TLS contexts name for the workload
//! certificate and roots, and Envoy's admin address (Istio's bootstrap, trimmed to what
//! the mesh's config relies on).

use serde_json::{json, Value};
use std::path::Path;

use trellis_envoy::SDS_CLUSTER;

pub const XDS_CLUSTER: &str = "xds-grpc";

/// A static HTTP/2 cluster of one Unix socket.
fn socket_cluster(name: &str, path: &Path) -> Value {
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{ "lb_endpoints": [{ "endpoint": { "address": {
                "pipe": { "path": path.display().to_string() }
            } } }] }]
        },
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": { "http2_protocol_options": {} }
            }
        }
    })
}

pub struct Bootstrap<'a> {
    pub node_id: &'a str,
    pub xds_socket: &'a Path,
    pub sds_socket: &'a Path,
    /// Envoy's admin listener, `host:port`.
    pub admin: &'a str,
    /// Incremental xDS (`DELTA_GRPC`, Istio's default) rather than state of the world.
    pub delta: bool,
}

impl Bootstrap<'_> {
    pub fn to_json(&self) -> Result<Value, String> {
        let (host, port) = self
            .admin
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.trim_matches(['[', ']']), p.parse::<u16>().ok()?)))
            .ok_or_else(|| format!("--envoy-admin {:?} is not host:port", self.admin))?;
        // Istio's node ids: `<type>~<ip>~<pod>.<namespace>~<namespace>.svc.<domain>`; the
        // cluster is `<pod>.<namespace>` (Envoy requires one for some features).
        let cluster = self.node_id.split('~').nth(2).unwrap_or(self.node_id);
        let ads = |source: Value| json!({ "ads": source, "initial_fetch_timeout": "0s", "resource_api_version": "V3" });
        Ok(json!({
            "node": { "id": self.node_id, "cluster": cluster },
            "admin": { "address": { "socket_address": { "address": host, "port_value": port } } },
            "dynamic_resources": {
                "ads_config": {
                    "api_type": if self.delta { "DELTA_GRPC" } else { "GRPC" },
                    "transport_api_version": "V3",
                    "set_node_on_first_message_only": true,
                    "grpc_services": [{ "envoy_grpc": { "cluster_name": XDS_CLUSTER } }]
                },
                "cds_config": ads(json!({})),
                "lds_config": ads(json!({}))
            },
            "static_resources": {
                "clusters": [
                    socket_cluster(XDS_CLUSTER, self.xds_socket),
                    socket_cluster(SDS_CLUSTER, self.sds_socket)
                ]
            }
        }))
    }
}
