//! Responses written straight from the snapshots' shared resources.
//!
//! A full push at 10 000 services sends 2 million resources. Building prost's
//! `DiscoveryResponse` for that means cloning each resource's `Any` (two allocations
//! and a copy) only for tonic to copy it again into the frame and free the clone. Here
//! a response holds `Arc`s of the resources the snapshot already has, and the encoder
//! writes their bytes once, into the gRPC frame. The bytes on the wire are the same
//! protobuf messages (`envoy.service.discovery.v3.DiscoveryResponse` and
//! `DeltaDiscoveryResponse`); requests are decoded with prost as before.

use std::marker::PhantomData;
use std::sync::Arc;

use prost::bytes::BufMut;
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, key_len, WireType};
use tonic::codec::{Codec, EncodeBuf, Encoder};
use tonic::Status;
use tonic_prost::ProstDecoder;

use crate::Versioned;

/// A message this module writes by hand.
pub(crate) trait Wire {
    fn encoded_len(&self) -> usize;
    fn encode(&self, buf: &mut impl BufMut);
}

/// `DiscoveryResponse` (state of the world): bare resources as `Any`.
#[derive(Debug, Default)]
pub(crate) struct SotwResponse {
    pub version_info: String,
    pub resources: Vec<Arc<Versioned>>,
    pub type_url: String,
    pub nonce: String,
}

/// `DeltaDiscoveryResponse`: each resource wrapped in a `Resource` with its name and
/// version.
#[derive(Debug, Default)]
pub(crate) struct DeltaResponse {
    pub system_version_info: String,
    pub resources: Vec<(String, Arc<Versioned>)>,
    pub type_url: String,
    pub removed_resources: Vec<String>,
    pub nonce: String,
}

// Field numbers, from envoy/service/discovery/v3/discovery.proto and google/protobuf/any.proto.
const ANY_TYPE_URL: u32 = 1;
const ANY_VALUE: u32 = 2;
const RESOURCE_VERSION: u32 = 1;
const RESOURCE_BODY: u32 = 2;
const RESOURCE_NAME: u32 = 3;
const SOTW_VERSION_INFO: u32 = 1;
const SOTW_RESOURCES: u32 = 2;
const SOTW_TYPE_URL: u32 = 4;
const SOTW_NONCE: u32 = 5;
const DELTA_SYSTEM_VERSION_INFO: u32 = 1;
const DELTA_RESOURCES: u32 = 2;
const DELTA_TYPE_URL: u32 = 4;
const DELTA_NONCE: u32 = 5;
const DELTA_REMOVED_RESOURCES: u32 = 6;

/// A length-delimited field of `len` bytes; proto3 leaves out empty strings and bytes,
/// as prost does.
fn bytes_len(tag: u32, len: usize) -> usize {
    if len == 0 {
        0
    } else {
        field_len(tag, len)
    }
}

/// A length-delimited field that is always written (an embedded message).
fn field_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

fn put_bytes(tag: u32, value: &[u8], buf: &mut impl BufMut) {
    if !value.is_empty() {
        put_header(tag, value.len(), buf);
        buf.put_slice(value);
    }
}

fn put_header(tag: u32, len: usize, buf: &mut impl BufMut) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

fn any_len(r: &Versioned) -> usize {
    bytes_len(ANY_TYPE_URL, r.body.type_url.len()) + bytes_len(ANY_VALUE, r.body.value.len())
}

fn put_any(tag: u32, r: &Versioned, buf: &mut impl BufMut) {
    put_header(tag, any_len(r), buf);
    put_bytes(ANY_TYPE_URL, r.body.type_url.as_bytes(), buf);
    put_bytes(ANY_VALUE, &r.body.value, buf);
}

fn resource_len(name: &str, r: &Versioned) -> usize {
    bytes_len(RESOURCE_VERSION, r.version.len())
        + field_len(RESOURCE_BODY, any_len(r))
        + bytes_len(RESOURCE_NAME, name.len())
}

impl Wire for SotwResponse {
    fn encoded_len(&self) -> usize {
        bytes_len(SOTW_VERSION_INFO, self.version_info.len())
            + self
                .resources
                .iter()
                .map(|r| field_len(SOTW_RESOURCES, any_len(r)))
                .sum::<usize>()
            + bytes_len(SOTW_TYPE_URL, self.type_url.len())
            + bytes_len(SOTW_NONCE, self.nonce.len())
    }

    fn encode(&self, buf: &mut impl BufMut) {
        put_bytes(SOTW_VERSION_INFO, self.version_info.as_bytes(), buf);
        for r in &self.resources {
            put_any(SOTW_RESOURCES, r, buf);
        }
        put_bytes(SOTW_TYPE_URL, self.type_url.as_bytes(), buf);
        put_bytes(SOTW_NONCE, self.nonce.as_bytes(), buf);
    }
}

impl Wire for DeltaResponse {
    fn encoded_len(&self) -> usize {
        bytes_len(DELTA_SYSTEM_VERSION_INFO, self.system_version_info.len())
            + self
                .resources
                .iter()
                .map(|(name, r)| field_len(DELTA_RESOURCES, resource_len(name, r)))
                .sum::<usize>()
            + bytes_len(DELTA_TYPE_URL, self.type_url.len())
            + bytes_len(DELTA_NONCE, self.nonce.len())
            + self
                .removed_resources
                .iter()
                .map(|n| field_len(DELTA_REMOVED_RESOURCES, n.len()))
                .sum::<usize>()
    }

    fn encode(&self, buf: &mut impl BufMut) {
        put_bytes(
            DELTA_SYSTEM_VERSION_INFO,
            self.system_version_info.as_bytes(),
            buf,
        );
        for (name, r) in &self.resources {
            put_header(DELTA_RESOURCES, resource_len(name, r), buf);
            put_bytes(RESOURCE_VERSION, r.version.as_bytes(), buf);
            put_any(RESOURCE_BODY, r, buf);
            put_bytes(RESOURCE_NAME, name.as_bytes(), buf);
        }
        put_bytes(DELTA_TYPE_URL, self.type_url.as_bytes(), buf);
        put_bytes(DELTA_NONCE, self.nonce.as_bytes(), buf);
        for name in &self.removed_resources {
            // A repeated string is written even when empty: the element counts.
            put_header(DELTA_REMOVED_RESOURCES, name.len(), buf);
            buf.put_slice(name.as_bytes());
        }
    }
}

/// gRPC codec for one ADS variant: requests `Req` decoded by prost, responses `Resp`
/// written by [`Wire`].
pub(crate) struct AdsCodec<Resp, Req>(PhantomData<fn() -> (Resp, Req)>);

impl<Resp, Req> Default for AdsCodec<Resp, Req> {
    fn default() -> Self {
        AdsCodec(PhantomData)
    }
}

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

impl<Resp, Req> Codec for AdsCodec<Resp, Req>
where
    Resp: Wire + Send + 'static,
    Req: prost::Message + Default + Send + 'static,
{
    type Encode = Resp;
    type Decode = Req;
    type Encoder = WireEncoder<Resp>;
    type Decoder = ProstDecoder<Req>;

    fn encoder(&mut self) -> Self::Encoder {
        WireEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::service::discovery::v3::{
        DeltaDiscoveryResponse, DiscoveryResponse, Resource,
    };
    use envoy_types::pb::google::protobuf::Any;
    use prost::Message;

    fn resource(type_url: &str, value: &[u8]) -> Arc<Versioned> {
        Arc::new(Versioned::new(Any {
            type_url: type_url.into(),
            value: value.to_vec(),
        }))
    }

    fn written(w: &impl Wire) -> Vec<u8> {
        let mut buf = Vec::new();
        w.encode(&mut buf);
        assert_eq!(
            buf.len(),
            w.encoded_len(),
            "encoded_len matches what is written"
        );
        buf
    }

    #[test]
    fn delta_response_is_the_prost_message() {
        let big = vec![7u8; 300]; // a length that takes a two-byte varint
        let resources = vec![
            ("a".to_string(), resource(crate::CLUSTER, &big)),
            ("b".to_string(), resource(crate::CLUSTER, b"")),
            (String::new(), resource(crate::CLUSTER, b"x")),
        ];
        let ours = DeltaResponse {
            system_version_info: "v1".into(),
            resources: resources.clone(),
            type_url: crate::CLUSTER.into(),
            removed_resources: vec!["gone".into(), String::new()],
            nonce: "7".into(),
        };
        let prost = DeltaDiscoveryResponse {
            system_version_info: "v1".into(),
            resources: resources
                .iter()
                .map(|(name, r)| Resource {
                    name: name.clone(),
                    version: r.version.clone(),
                    resource: Some(r.body.clone()),
                    ..Default::default()
                })
                .collect(),
            type_url: crate::CLUSTER.into(),
            removed_resources: vec!["gone".into(), String::new()],
            nonce: "7".into(),
            ..Default::default()
        };
        let bytes = written(&ours);
        assert_eq!(
            DeltaDiscoveryResponse::decode(bytes.as_slice()).unwrap(),
            prost
        );
        assert_eq!(bytes.len(), prost.encoded_len());
    }

    #[test]
    fn sotw_response_is_the_prost_message() {
        let resources = vec![
            resource(crate::ENDPOINT, &[1u8; 200]),
            resource(crate::ENDPOINT, b""),
        ];
        let ours = SotwResponse {
            version_info: String::new(),
            resources: resources.clone(),
            type_url: crate::ENDPOINT.into(),
            nonce: "12".into(),
        };
        let prost = DiscoveryResponse {
            resources: resources.iter().map(|r| r.body.clone()).collect(),
            type_url: crate::ENDPOINT.into(),
            nonce: "12".into(),
            ..Default::default()
        };
        let bytes = written(&ours);
        assert_eq!(DiscoveryResponse::decode(bytes.as_slice()).unwrap(), prost);
        assert_eq!(bytes.len(), prost.encoded_len());
    }
}
