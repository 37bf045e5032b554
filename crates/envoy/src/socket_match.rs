//! Endpoints of one cluster reached with and without TLS: Envoy's transport socket
//! matches, which Istio's auto mTLS relies on. An endpoint's metadata under
//! `envoy.transport_socket_match` is compared with each of the cluster's
//! `transport_socket_matches` in order; the first that matches picks the endpoint's
//! transport socket, and an endpoint that matches none gets the cluster's own.
//!
//! Trellis writes the exceptions only: a cluster whose endpoints all have sidecars carries
//! no match and no metadata (10 000 such clusters are a sidecar's whole view at scale),
//! and an endpoint without a sidecar is labelled `tlsMode: disabled`, which one match
//! sends to `raw_buffer`. Istio labels every sidecar endpoint `tlsMode: istio` instead;
//! both forms decode.

use std::collections::HashMap;

use envoy_types::pb::envoy::config::cluster::v3 as cl;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::extensions::transport_sockets::raw_buffer::v3::RawBuffer;
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};
use trellis_config as tc;

/// The metadata filter an endpoint's transport socket label lives under.
pub const FILTER: &str = "envoy.transport_socket_match";
pub const RAW_BUFFER: &str = "envoy.transport_sockets.raw_buffer";
pub(crate) const RAW_BUFFER_TYPE: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer";
const TLS_MODE: &str = "tlsMode";
const DISABLED: &str = "disabled";

fn disabled() -> Struct {
    Struct {
        fields: HashMap::from([(
            TLS_MODE.to_string(),
            Value {
                kind: Some(Kind::StringValue(DISABLED.into())),
            },
        )]),
    }
}

/// The label of an endpoint without a sidecar.
pub fn plaintext_metadata() -> core::Metadata {
    core::Metadata {
        filter_metadata: HashMap::from([(FILTER.to_string(), disabled())]),
        ..Default::default()
    }
}

/// The match that sends labelled endpoints to plaintext, for a cluster with TLS that
/// has any.
pub fn plaintext_match() -> cl::cluster::TransportSocketMatch {
    cl::cluster::TransportSocketMatch {
        name: format!("{TLS_MODE}-{DISABLED}"),
        r#match: Some(disabled()),
        transport_socket: Some(core::TransportSocket {
            name: RAW_BUFFER.into(),
            config_type: Some(core::transport_socket::ConfigType::TypedConfig(crate::any(
                RAW_BUFFER_TYPE,
                &RawBuffer {},
            ))),
        }),
    }
}

/// One of a cluster's matches, decoded: its criteria and the TLS it picks (none for
/// `raw_buffer`).
pub(crate) struct Match {
    pub criteria: Struct,
    pub tls: Option<tc::UpstreamTls>,
}

/// The TLS an endpoint with `metadata` gets: the first match's whose criteria all hold,
/// else the cluster's `default`.
pub(crate) fn pick<'a>(
    matches: &'a [Match],
    default: &'a Option<tc::UpstreamTls>,
    metadata: Option<&core::Metadata>,
) -> &'a Option<tc::UpstreamTls> {
    let label = metadata.and_then(|m| m.filter_metadata.get(FILTER));
    let holds = |m: &&Match| {
        m.criteria
            .fields
            .iter()
            .all(|(k, v)| label.and_then(|l| l.fields.get(k)) == Some(v))
    };
    matches.iter().find(holds).map_or(default, |m| &m.tls)
}
