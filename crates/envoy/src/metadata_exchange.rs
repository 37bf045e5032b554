//! Istio's TCP metadata exchange as Envoy is configured for it: the network filter
//! `istio.metadata_exchange` (a TypedStruct of `envoy.tcp.metadataexchange.config.
//! MetadataExchange`, `protocol: istio-peer-exchange`) first on an inbound listener's
//! chains and on a cluster's `filters`, with `istio-peer-exchange` offered in ALPN, as
//! istiod writes them. The proxy's model is one flag on each side's TLS.

use envoy_types::pb::google::protobuf::Any;

/// The filter's name, on listeners and clusters alike.
pub const FILTER: &str = "istio.metadata_exchange";
/// What the filter's TypedStruct says it is.
pub const CONFIG_TYPE: &str =
    "type.googleapis.com/envoy.tcp.metadataexchange.config.MetadataExchange";
/// The ALPN protocol that announces the exchange.
pub const ALPN: &str = "istio-peer-exchange";

/// The filter's config, as istiod writes it (without `enable_discovery`: Trellis knows
/// a peer by its frame only).
pub fn config() -> Any {
    crate::structs::typed_struct(CONFIG_TYPE, &serde_json::json!({ "protocol": ALPN }))
}

/// Reads a filter's config: it must exchange over `istio-peer-exchange`.
pub fn check(json: &serde_json::Value) -> Result<(), String> {
    match json.get("protocol").and_then(|p| p.as_str()) {
        Some(ALPN) => Ok(()),
        other => Err(format!(
            "protocol {other:?}: only {ALPN:?} is supported (the stream's frame is read only then)"
        )),
    }
}

/// A client's ALPN with the exchange: Istio's in-mesh lists (`istio` marks mesh
/// traffic, `h2` follows for HTTP/2 clusters).
pub fn upstream_alpn(http2: bool) -> Vec<String> {
    let mut alpn = vec![ALPN.to_string(), "istio".to_string()];
    if http2 {
        alpn.push("h2".into());
    }
    alpn
}
