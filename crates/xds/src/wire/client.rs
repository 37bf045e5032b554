//! The four ADS messages from the client's side: `DiscoveryRequest` written with the
//! subscription's names encoded once ([`NamesOut`]), `DeltaDiscoveryRequest` with the
//! client's own name slices, and both responses read with their resources, versions
//! and names left as slices of the received buffer.

use std::collections::BTreeMap;
use std::marker::PhantomData;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::rpc::Status as RpcStatus;
use prost::bytes::{BufMut, Bytes};
use prost::encoding::message;
use tonic::codec::{Codec, EncodeBuf, Encoder};
use tonic::Status;

use super::{
    bytes_len, put_bytes, put_header, Wire, REQ_ERROR_DETAIL, REQ_NODE, REQ_RESOURCE_NAMES,
    REQ_RESPONSE_NONCE, REQ_TYPE_URL, REQ_VERSION_INFO,
};

/// `DiscoveryRequest` as the client writes it: the names it asks for are written once
/// per subscription ([`NamesOut`]), not copied into 10 000 strings for every ACK.
#[derive(Debug, Default)]
pub(crate) struct SotwRequestOut {
    pub version_info: String,
    pub node: Option<Node>,
    pub names: NamesOut,
    pub type_url: String,
    pub response_nonce: String,
    pub error_detail: Option<RpcStatus>,
}

/// A subscription's names as a request's `resource_names` fields, encoded once: every
/// state-of-the-world ACK of endpoints names all 10 000 sets, and the set changes far
/// less often than it is acknowledged.
#[derive(Clone, Debug, Default)]
pub(crate) struct NamesOut(Bytes);

impl NamesOut {
    pub fn new(names: &std::collections::BTreeSet<crate::Name>) -> Self {
        let mut buf = Vec::new();
        for name in names {
            // A repeated string is written even when empty: the element counts.
            put_header(REQ_RESOURCE_NAMES, name.as_bytes().len(), &mut buf);
            buf.put_slice(name.as_bytes());
        }
        NamesOut(Bytes::from(buf))
    }
}

impl Wire for SotwRequestOut {
    fn encoded_len(&self) -> usize {
        bytes_len(REQ_VERSION_INFO, self.version_info.len())
            + self
                .node
                .as_ref()
                .map_or(0, |n| message::encoded_len(REQ_NODE, n))
            + self.names.0.len()
            + bytes_len(REQ_TYPE_URL, self.type_url.len())
            + bytes_len(REQ_RESPONSE_NONCE, self.response_nonce.len())
            + self
                .error_detail
                .as_ref()
                .map_or(0, |e| message::encoded_len(REQ_ERROR_DETAIL, e))
    }

    fn encode(&self, buf: &mut impl BufMut) {
        put_bytes(REQ_VERSION_INFO, self.version_info.as_bytes(), buf);
        if let Some(n) = &self.node {
            message::encode(REQ_NODE, n, buf);
        }
        buf.put_slice(&self.names.0);
        put_bytes(REQ_TYPE_URL, self.type_url.as_bytes(), buf);
        put_bytes(REQ_RESPONSE_NONCE, self.response_nonce.as_bytes(), buf);
        if let Some(e) = &self.error_detail {
            message::encode(REQ_ERROR_DETAIL, e, buf);
        }
    }
}

/// gRPC codec for the client's side of state of the world: requests written by
/// [`Wire`], responses decoded by prost.
pub(crate) struct SotwClientCodec;

impl Codec for SotwClientCodec {
    type Encode = SotwRequestOut;
    type Decode = SotwResponseIn;
    type Encoder = WireEncoder<SotwRequestOut>;
    type Decoder = tonic_prost::ProstDecoder<Self::Decode>;

    fn encoder(&mut self) -> Self::Encoder {
        WireEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::default()
    }
}

/// `DeltaDiscoveryResponse` as the client reads it. Decoding into the generated type
/// builds a `Resource` of ~250 bytes per resource (TTL, aliases, metadata maps it never
/// uses) and copies every name, version, type URL and body into allocations of their
/// own; a full push at 10 000 services decoded 600 MB of those into fresh pages. Here
/// fields left out are skipped, and versions and bodies are slices of tonic's buffer
/// (prost decodes a `Bytes` field by splitting it off, without a copy). Each resource
/// stays a slice until it is read: a `Vec` of 32-byte slices, not of 120-byte decoded
/// resources grown by doubling (2.4 MB of fresh pages per 10 000-resource response).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct DeltaResponseIn {
    /// `ResourceIn`s, undecoded.
    #[prost(bytes = "bytes", repeated, tag = "2")]
    pub resources: Vec<Bytes>,
    #[prost(string, tag = "4")]
    pub type_url: String,
    /// Names, checked to be UTF-8 when read.
    #[prost(bytes = "bytes", repeated, tag = "6")]
    pub removed_resources: Vec<Bytes>,
    #[prost(string, tag = "5")]
    pub nonce: String,
}

/// `envoy.service.discovery.v3.Resource`: name, version and body.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ResourceIn {
    /// A string on the wire; read as bytes to keep it a slice (checked to be UTF-8).
    #[prost(bytes = "bytes", tag = "3")]
    pub name: Bytes,
    /// A string on the wire; read as bytes to keep it a slice (checked to be UTF-8).
    #[prost(bytes = "bytes", tag = "1")]
    pub version: Bytes,
    #[prost(message, optional, tag = "2")]
    pub resource: Option<AnyIn>,
}

/// `DeltaDiscoveryRequest` as the client writes it: the names are the client's own
/// (slices of what it received; `bytes` and `string` are the same on the wire), not a
/// `String` made for each of 10 000 names per subscription.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct DeltaRequestOut {
    #[prost(message, optional, tag = "1")]
    pub node: Option<Node>,
    #[prost(string, tag = "2")]
    pub type_url: String,
    #[prost(bytes = "bytes", repeated, tag = "3")]
    pub resource_names_subscribe: Vec<Bytes>,
    #[prost(bytes = "bytes", repeated, tag = "4")]
    pub resource_names_unsubscribe: Vec<Bytes>,
    #[prost(btree_map = "string, string", tag = "5")]
    pub initial_resource_versions: BTreeMap<String, String>,
    #[prost(string, tag = "6")]
    pub response_nonce: String,
    #[prost(message, optional, tag = "7")]
    pub error_detail: Option<RpcStatus>,
}

/// `google.protobuf.Any`, its type URL checked against the response's and its body kept
/// as a slice.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct AnyIn {
    #[prost(bytes = "bytes", tag = "1")]
    pub type_url: Bytes,
    #[prost(bytes = "bytes", tag = "2")]
    pub value: Bytes,
}

/// `DiscoveryResponse` (state of the world) as the client reads it.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct SotwResponseIn {
    #[prost(string, tag = "1")]
    pub version_info: String,
    /// `AnyIn`s, undecoded (as in `DeltaResponseIn`).
    #[prost(bytes = "bytes", repeated, tag = "2")]
    pub resources: Vec<Bytes>,
    #[prost(string, tag = "4")]
    pub type_url: String,
    #[prost(string, tag = "5")]
    pub nonce: String,
}

/// Field 1 of a message, a string: the name of a Listener, RouteConfiguration and
/// Cluster, the cluster name of a ClusterLoadAssignment. Decoding only it skips the
/// rest of the resource without allocating.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct NameField {
    #[prost(bytes = "bytes", tag = "1")]
    pub name: Bytes,
}

/// Writes a [`Wire`] message into tonic's buffer (the state-of-the-world client's requests).
pub(crate) struct WireEncoder<Resp>(PhantomData<fn() -> Resp>);

impl<Resp: Wire> Encoder for WireEncoder<Resp> {
    type Item = Resp;
    type Error = Status;

    fn encode(&mut self, item: Resp, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.reserve(item.encoded_len());
        item.encode(dst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::test_support::written;
    use prost::Message;

    #[test]
    fn sotw_request_out_is_the_prost_message() {
        use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
        let names: std::collections::BTreeSet<crate::Name> = ["", "a", "outbound|80||b"]
            .iter()
            .map(|s| crate::Name::from(*s))
            .collect();
        let ours = SotwRequestOut {
            version_info: "v7".into(),
            node: Some(Node {
                id: "sidecar~1".into(),
                ..Default::default()
            }),
            names: NamesOut::new(&names),
            type_url: crate::ENDPOINT.into(),
            response_nonce: "3".into(),
            error_detail: Some(RpcStatus {
                code: 3,
                message: "no".into(),
                details: Vec::new(),
            }),
        };
        let prost = DiscoveryRequest {
            version_info: "v7".into(),
            node: ours.node.clone(),
            resource_names: names.iter().map(crate::Name::to_string).collect(),
            type_url: crate::ENDPOINT.into(),
            response_nonce: "3".into(),
            error_detail: ours.error_detail.clone(),
            ..Default::default()
        };
        let bytes = written(&ours);
        assert_eq!(
            bytes,
            prost.encode_to_vec(),
            "the same bytes, in field order"
        );
        let bare = SotwRequestOut::default();
        assert_eq!(written(&bare), DiscoveryRequest::default().encode_to_vec());
    }
}
