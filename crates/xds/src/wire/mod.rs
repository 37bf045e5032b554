//! The ADS messages Trellis writes and reads by hand, byte for byte the protobuf
//! messages of `envoy.service.discovery.v3`: one module per side of the protocol.
//!
//! A full push at 10 000 services sends 2 million resources. Building prost's
//! `DiscoveryResponse` for that means cloning each resource's `Any` (two allocations
//! and a copy) only for tonic to copy it again into the frame and free the clone. Here
//! a response holds `Arc`s of the resources the snapshot already has, and the encoder
//! writes their bytes once, into the gRPC frame; requests are read the same way, their
//! resource names staying slices of the request ([`request::Names`]).
//!
//! - [`response`]: `DiscoveryResponse` and `DeltaDiscoveryResponse` as the server writes
//!   them (and runs of resources encoded once for every stream).
//! - [`request`]: `DiscoveryRequest` and `DeltaDiscoveryRequest` as the server reads them.
//! - [`client`]: the same four messages from the client's side (requests written,
//!   responses read as slices of the received buffer).
//! - here: the field writers they share, and the codecs that hand them to tonic.

use prost::bytes::BufMut;
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, key_len, WireType};

#[cfg(feature = "client")]
pub(crate) mod client;
#[cfg(feature = "server")]
pub(crate) mod request;
#[cfg(feature = "server")]
pub(crate) mod response;

/// The two methods of `envoy.service.discovery.v3.AggregatedDiscoveryService`.
pub(crate) const SOTW_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
pub(crate) const DELTA_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";
/// The two methods of `envoy.service.secret.v3.SecretDiscoveryService` (an SDS config
/// source of its own, as an Envoy's `sds-grpc` cluster is): the same messages.
#[cfg(feature = "server")]
pub(crate) const SDS_SOTW_PATH: &str =
    "/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets";
#[cfg(feature = "server")]
pub(crate) const SDS_DELTA_PATH: &str =
    "/envoy.service.secret.v3.SecretDiscoveryService/DeltaSecrets";

// Field numbers of envoy.service.discovery.v3.DiscoveryRequest.
pub(crate) const REQ_VERSION_INFO: u32 = 1;
pub(crate) const REQ_NODE: u32 = 2;
pub(crate) const REQ_RESOURCE_NAMES: u32 = 3;
pub(crate) const REQ_TYPE_URL: u32 = 4;
pub(crate) const REQ_RESPONSE_NONCE: u32 = 5;
pub(crate) const REQ_ERROR_DETAIL: u32 = 6;

/// A message this module writes by hand.
pub(crate) trait Wire {
    fn encoded_len(&self) -> usize;
    /// The whole message. The server's streams write a response as its own part and
    /// a shared run instead ([`response::Response`]); its tests compare this with prost's.
    #[cfg_attr(not(feature = "client"), allow(dead_code))]
    fn encode(&self, buf: &mut impl BufMut);
}

/// A length-delimited field of `len` bytes; proto3 leaves out empty strings and bytes,
/// as prost does.
pub(super) fn bytes_len(tag: u32, len: usize) -> usize {
    if len == 0 {
        0
    } else {
        field_len(tag, len)
    }
}

/// A length-delimited field that is always written (an embedded message).
pub(super) fn field_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

pub(super) fn put_bytes(tag: u32, value: &[u8], buf: &mut impl BufMut) {
    if !value.is_empty() {
        put_header(tag, value.len(), buf);
        buf.put_slice(value);
    }
}

pub(super) fn put_header(tag: u32, len: usize, buf: &mut impl BufMut) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

#[cfg(test)]
pub(crate) mod test_support {
    use std::sync::Arc;

    use envoy_types::pb::google::protobuf::Any;

    use super::Wire;
    use crate::Versioned;

    pub fn resource(type_url: &str, value: &[u8]) -> Arc<Versioned> {
        Arc::new(Versioned::new(Any {
            type_url: type_url.into(),
            value: value.to_vec(),
        }))
    }

    pub fn written(w: &impl Wire) -> Vec<u8> {
        let mut buf = Vec::new();
        w.encode(&mut buf);
        assert_eq!(
            buf.len(),
            w.encoded_len(),
            "encoded_len matches what is written"
        );
        buf
    }
}
