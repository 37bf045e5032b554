//! Responses written straight from the snapshots' shared resources.
//!
//! A full push at 10 000 services sends 2 million resources. Building prost's
//! `DiscoveryResponse` for that means cloning each resource's `Any` (two allocations
//! and a copy) only for tonic to copy it again into the frame and free the clone. Here
//! a response holds `Arc`s of the resources the snapshot already has, and the encoder
//! writes their bytes once, into the gRPC frame. The bytes on the wire are the same
//! protobuf messages (`envoy.service.discovery.v3.DiscoveryResponse` and
//! `DeltaDiscoveryResponse`). Requests are read the same way: their resource names
//! stay slices of the request (`Names`).

use std::marker::PhantomData;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::rpc::Status as RpcStatus;
use prost::bytes::{Buf, BufMut, Bytes};
use prost::encoding::{
    decode_key, encode_key, encode_varint, encoded_len_varint, key_len, message, skip_field,
    string, DecodeContext, WireType,
};
use prost::DecodeError;

use crate::Name;

/// Why a request cannot be read.
#[derive(Debug)]
pub(crate) struct BadRequest(String);

impl From<DecodeError> for BadRequest {
    fn from(e: DecodeError) -> Self {
        BadRequest(e.to_string())
    }
}

impl std::fmt::Display for BadRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What is wrong with a request's `field`.
fn bad(field: &str, what: &str) -> BadRequest {
    BadRequest(format!("{field}: {what}"))
}
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

use crate::Versioned;

/// The two methods of `envoy.service.discovery.v3.AggregatedDiscoveryService`.
pub(crate) const SOTW_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
pub(crate) const DELTA_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

/// A message this module writes by hand.
pub(crate) trait Wire {
    fn encoded_len(&self) -> usize;
    fn encode(&self, buf: &mut impl BufMut);
}

/// A response: the fields this stream writes, and resources encoded once for every
/// stream that sends them (written after the rest: protobuf fields may come in any
/// order, and the elements of a repeated field keep theirs).
pub(crate) trait Response: Wire {
    fn shared(&self) -> Option<&Encoded>;
    /// Writes what is not shared.
    fn encode_own(&self, buf: &mut impl BufMut);
}

/// A run of `resources` fields of one response variant, encoded once: a base's whole
/// set of one type, sent as it is to every stream of that base that holds nothing of
/// the type yet (a full push, a reconnect storm).
#[derive(Clone, Debug)]
pub(crate) struct Encoded {
    pub bytes: Bytes,
    pub count: usize,
}

/// Which response variant an [`Encoded`] run is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Flavor {
    Sotw,
    Delta,
}

impl Encoded {
    pub fn new<'a>(
        flavor: Flavor,
        items: impl Iterator<Item = (&'a String, &'a Arc<Versioned>)>,
    ) -> Encoded {
        let mut buf = Vec::new();
        let mut count = 0;
        for (name, r) in items {
            match flavor {
                Flavor::Sotw => put_any(SOTW_RESOURCES, r, &mut buf),
                Flavor::Delta => put_delta_resource(name, r, &mut buf),
            }
            count += 1;
        }
        Encoded {
            bytes: Bytes::from(buf),
            count,
        }
    }
}

/// `DiscoveryResponse` (state of the world): bare resources as `Any`.
#[derive(Debug, Default)]
pub(crate) struct SotwResponse {
    pub version_info: String,
    pub resources: Vec<Arc<Versioned>>,
    pub shared: Option<Encoded>,
    pub type_url: String,
    pub nonce: String,
}

/// `DeltaDiscoveryResponse`: each resource wrapped in a `Resource` with its name and
/// version.
#[derive(Debug, Default)]
pub(crate) struct DeltaResponse {
    pub system_version_info: String,
    pub resources: Vec<(String, Arc<Versioned>)>,
    pub shared: Option<Encoded>,
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
            + shared_len(&self.shared)
    }

    fn encode(&self, buf: &mut impl BufMut) {
        self.encode_own(buf);
        put_shared(&self.shared, buf);
    }
}

impl Response for SotwResponse {
    fn shared(&self) -> Option<&Encoded> {
        self.shared.as_ref()
    }

    fn encode_own(&self, buf: &mut impl BufMut) {
        put_bytes(SOTW_VERSION_INFO, self.version_info.as_bytes(), buf);
        for r in &self.resources {
            put_any(SOTW_RESOURCES, r, buf);
        }
        put_bytes(SOTW_TYPE_URL, self.type_url.as_bytes(), buf);
        put_bytes(SOTW_NONCE, self.nonce.as_bytes(), buf);
    }
}

fn shared_len(shared: &Option<Encoded>) -> usize {
    shared.as_ref().map_or(0, |e| e.bytes.len())
}

fn put_shared(shared: &Option<Encoded>, buf: &mut impl BufMut) {
    if let Some(e) = shared {
        buf.put_slice(&e.bytes);
    }
}

fn put_delta_resource(name: &str, r: &Versioned, buf: &mut impl BufMut) {
    put_header(DELTA_RESOURCES, resource_len(name, r), buf);
    put_bytes(RESOURCE_VERSION, r.version.as_bytes(), buf);
    put_any(RESOURCE_BODY, r, buf);
    put_bytes(RESOURCE_NAME, name.as_bytes(), buf);
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
            + shared_len(&self.shared)
    }

    fn encode(&self, buf: &mut impl BufMut) {
        self.encode_own(buf);
        put_shared(&self.shared, buf);
    }
}

impl Response for DeltaResponse {
    fn shared(&self) -> Option<&Encoded> {
        self.shared.as_ref()
    }

    fn encode_own(&self, buf: &mut impl BufMut) {
        put_bytes(
            DELTA_SYSTEM_VERSION_INFO,
            self.system_version_info.as_bytes(),
            buf,
        );
        for (name, r) in &self.resources {
            put_delta_resource(name, r, buf);
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
    type Decode = crate::client::SotwResponseIn;
    type Encoder = WireEncoder<SotwRequestOut>;
    type Decoder = tonic_prost::ProstDecoder<Self::Decode>;

    fn encoder(&mut self) -> Self::Encoder {
        WireEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::default()
    }
}

/// A request message this module reads.
pub(crate) trait WireRequest: Sized + Send + 'static {
    fn decode(buf: &mut impl Buf) -> Result<Self, BadRequest>;
}

/// `DiscoveryRequest` (state of the world) as the server reads it. Every ACK names every
/// resource the client subscribes to: 10 000 endpoint sets, say. Decoded by prost, that
/// is 10 000 strings per ACK per stream, and an endpoint change to 100 clients kept the
/// server's thread decoding a million of them while later streams waited for their
/// response. Here the names go into one buffer, which also gives the hash that tells an
/// ACK of the same subscription; they become strings only when the subscription changed.
#[derive(Debug, Default)]
pub(crate) struct SotwRequest {
    pub version_info: String,
    pub node: Option<Node>,
    pub names: Names,
    pub type_url: String,
    pub response_nonce: String,
    pub error_detail: Option<RpcStatus>,
}

/// The resource names of a request where they are, in the request's bytes (a slice of
/// tonic's buffer): no string per name, and one hash of the bytes they take tells an ACK
/// of the same subscription.
#[derive(Debug, Default)]
pub(crate) struct Names {
    raw: Bytes,
    /// Each name's start and end in `raw` (checked to be UTF-8 when decoded).
    spans: Vec<(u32, u32)>,
    hash: u64,
}

impl Names {
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.spans.iter().map(|&(s, e)| {
            std::str::from_utf8(&self.raw[s as usize..e as usize]).unwrap_or_default()
        })
    }

    /// Whether one of the names is `name` (compared as bytes: no name read as text).
    pub fn contains(&self, name: &str) -> bool {
        let raw = &self.raw;
        (self.spans.iter()).any(|&(s, e)| &raw[s as usize..e as usize] == name.as_bytes())
    }

    /// The names as slices of the request (no copy).
    pub fn shared(&self) -> impl Iterator<Item = Name> + '_ {
        self.spans
            .iter()
            .map(|&(s, e)| Name::checked(self.raw.slice(s as usize..e as usize)))
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Reads one name of `field` (its key read) from `rest`, a tail of `raw`: a span
    /// of it.
    fn read(
        &mut self,
        field: &str,
        wire_type: WireType,
        raw: &[u8],
        rest: &mut &[u8],
    ) -> Result<(), BadRequest> {
        if wire_type != WireType::LengthDelimited {
            return Err(bad(field, "not a string"));
        }
        let len = prost::encoding::decode_varint(rest)? as usize;
        if len > rest.len() {
            return Err(bad(field, "shorter than its length"));
        }
        let start = raw.len() - rest.len();
        let end = start + len;
        let span = u32::try_from(start).and_then(|s| Ok((s, u32::try_from(end)?)));
        self.spans.push(span.map_err(|_| bad(field, "past 4 GiB"))?);
        *rest = &rest[len..];
        Ok(())
    }

    /// Checks that every name of `field` is UTF-8 and keeps `raw`, which they are
    /// slices of.
    fn finish(&mut self, field: &str, raw: &Bytes) -> Result<(), BadRequest> {
        if let (Some(&(first, _)), Some(&(_, last))) = (self.spans.first(), self.spans.last()) {
            let (from, to) = (first as usize, last as usize);
            if !utf8(&raw[from..to.max(from)], from, &self.spans) {
                return Err(bad(field, "not UTF-8"));
            }
        }
        self.raw = raw.clone();
        Ok(())
    }

    /// A hash of the bytes from the first name's field to the last one's (the names
    /// in order; encoders write a repeated field's elements together). Equal hashes
    /// mean the same names, a collision aside, which would only make the server take a
    /// changed subscription for an ACK until the next request.
    pub fn hash(&self) -> u64 {
        self.hash
    }
}

// Field numbers of envoy.service.discovery.v3.DiscoveryRequest.
const REQ_VERSION_INFO: u32 = 1;
const REQ_NODE: u32 = 2;
const REQ_RESOURCE_NAMES: u32 = 3;
const REQ_TYPE_URL: u32 = 4;
const REQ_RESPONSE_NONCE: u32 = 5;
const REQ_ERROR_DETAIL: u32 = 6;
const SOTW_NAMES: &str = "DiscoveryRequest.resource_names";

impl WireRequest for SotwRequest {
    fn decode(buf: &mut impl Buf) -> Result<Self, BadRequest> {
        // Zero-copy from tonic's buffer: the names stay where they are.
        let raw = buf.copy_to_bytes(buf.remaining());
        let mut req = SotwRequest::default();
        let mut names_from = None;
        let mut names_to = 0;
        let ctx = DecodeContext::default();
        let mut rest: &[u8] = &raw;
        while !rest.is_empty() {
            let field_start = raw.len() - rest.len();
            let (tag, wire_type) = decode_key(&mut rest)?;
            match tag {
                REQ_VERSION_INFO => {
                    string::merge(wire_type, &mut req.version_info, &mut rest, ctx.clone())?
                }
                REQ_NODE => message::merge(
                    wire_type,
                    req.node.get_or_insert_with(Node::default),
                    &mut rest,
                    ctx.clone(),
                )?,
                REQ_RESOURCE_NAMES => {
                    req.names.read(SOTW_NAMES, wire_type, &raw, &mut rest)?;
                    names_from.get_or_insert(field_start);
                    names_to = raw.len() - rest.len();
                }
                REQ_TYPE_URL => {
                    string::merge(wire_type, &mut req.type_url, &mut rest, ctx.clone())?
                }
                REQ_RESPONSE_NONCE => {
                    string::merge(wire_type, &mut req.response_nonce, &mut rest, ctx.clone())?
                }
                REQ_ERROR_DETAIL => message::merge(
                    wire_type,
                    req.error_detail.get_or_insert_with(RpcStatus::default),
                    &mut rest,
                    ctx.clone(),
                )?,
                _ => skip_field(wire_type, tag, &mut rest, ctx.clone())?,
            }
        }
        let from = names_from.unwrap_or(0);
        req.names.hash = xxhash_rust::xxh64::xxh64(&raw[from..names_to.max(from)], 4);
        req.names.finish(SOTW_NAMES, &raw)?;
        Ok(req)
    }
}

/// `DeltaDiscoveryRequest` as the server reads it: the names to subscribe and
/// unsubscribe stay in the request's bytes (a sidecar's first endpoint subscription
/// is 10 000 names; prost made a `String` of each, a fifth of the server's thread in a
/// full push to 100 sidecars), and the server's subscription sets hold slices of them.
#[derive(Debug, Default)]
pub(crate) struct DeltaRequest {
    pub node: Option<Node>,
    pub type_url: String,
    pub subscribe: Names,
    pub unsubscribe: Names,
    pub initial_resource_versions: std::collections::BTreeMap<String, String>,
    pub response_nonce: String,
    pub error_detail: Option<RpcStatus>,
}

// Field numbers of envoy.service.discovery.v3.DeltaDiscoveryRequest.
const DREQ_NODE: u32 = 1;
const DREQ_TYPE_URL: u32 = 2;
const DREQ_SUBSCRIBE: u32 = 3;
const DREQ_UNSUBSCRIBE: u32 = 4;
const DREQ_INITIAL_VERSIONS: u32 = 5;
const DREQ_RESPONSE_NONCE: u32 = 6;
const DREQ_ERROR_DETAIL: u32 = 7;
const SUBSCRIBE: &str = "DeltaDiscoveryRequest.resource_names_subscribe";
const UNSUBSCRIBE: &str = "DeltaDiscoveryRequest.resource_names_unsubscribe";

impl WireRequest for DeltaRequest {
    fn decode(buf: &mut impl Buf) -> Result<Self, BadRequest> {
        let raw = buf.copy_to_bytes(buf.remaining());
        let mut req = DeltaRequest::default();
        let ctx = DecodeContext::default();
        let mut rest: &[u8] = &raw;
        while !rest.is_empty() {
            let (tag, wire_type) = decode_key(&mut rest)?;
            match tag {
                DREQ_NODE => message::merge(
                    wire_type,
                    req.node.get_or_insert_with(Node::default),
                    &mut rest,
                    ctx.clone(),
                )?,
                DREQ_TYPE_URL => {
                    string::merge(wire_type, &mut req.type_url, &mut rest, ctx.clone())?
                }
                DREQ_SUBSCRIBE => req.subscribe.read(SUBSCRIBE, wire_type, &raw, &mut rest)?,
                DREQ_UNSUBSCRIBE => {
                    (req.unsubscribe).read(UNSUBSCRIBE, wire_type, &raw, &mut rest)?
                }
                DREQ_INITIAL_VERSIONS => {
                    if wire_type != WireType::LengthDelimited {
                        return Err(bad(
                            "DeltaDiscoveryRequest.initial_resource_versions",
                            "not a map entry",
                        ));
                    }
                    prost::encoding::btree_map::merge(
                        string::merge,
                        string::merge,
                        &mut req.initial_resource_versions,
                        &mut rest,
                        ctx.clone(),
                    )?
                }
                DREQ_RESPONSE_NONCE => {
                    string::merge(wire_type, &mut req.response_nonce, &mut rest, ctx.clone())?
                }
                DREQ_ERROR_DETAIL => message::merge(
                    wire_type,
                    req.error_detail.get_or_insert_with(RpcStatus::default),
                    &mut rest,
                    ctx.clone(),
                )?,
                _ => skip_field(wire_type, tag, &mut rest, ctx.clone())?,
            }
        }
        req.subscribe.finish(SUBSCRIBE, &raw)?;
        req.unsubscribe.finish(UNSUBSCRIBE, &raw)?;
        Ok(req)
    }
}

/// Whether every name (`spans`, in the request) is UTF-8: checked once over the bytes
/// from the first name to the last one, which hold the names and the keys and lengths
/// of their fields (ASCII when names are shorter than 128 bytes), instead of 10 000
/// times.
fn utf8(region: &[u8], from: usize, spans: &[(u32, u32)]) -> bool {
    if let Ok(text) = std::str::from_utf8(region) {
        // A name is valid when its ends are character boundaries of valid text.
        let boundary = |i: u32| text.is_char_boundary(i as usize - from);
        if spans.iter().all(|&(s, e)| boundary(s) && boundary(e)) {
            return true;
        }
    }
    let whole = |&(s, e): &(u32, u32)| {
        std::str::from_utf8(&region[s as usize - from..e as usize - from]).is_ok()
    };
    spans.iter().all(whole)
}

/// Reads a [`WireRequest`] out of tonic's buffer (the server's requests).
pub(crate) struct WireDecoder<Req>(PhantomData<fn() -> Req>);

impl<Req> Default for WireDecoder<Req> {
    fn default() -> Self {
        WireDecoder(PhantomData)
    }
}

impl<Req: WireRequest> Decoder for WireDecoder<Req> {
    type Item = Req;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Req>, Status> {
        Req::decode(src)
            .map(Some)
            .map_err(|e| Status::invalid_argument(format!("malformed request: {e}")))
    }
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
            shared: None,
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
    fn sotw_request_reads_what_prost_writes() {
        use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
        let names: Vec<String> = vec!["a".into(), String::new(), "outbound|80||b".into()];
        let prost = DiscoveryRequest {
            version_info: "v7".into(),
            node: Some(Node {
                id: "sidecar~1".into(),
                ..Default::default()
            }),
            resource_names: names.clone(),
            type_url: crate::ENDPOINT.into(),
            response_nonce: "3".into(),
            error_detail: Some(RpcStatus {
                code: 3,
                message: "no".into(),
                details: Vec::new(),
            }),
            ..Default::default()
        };
        let bytes = prost.encode_to_vec();
        let ours = <SotwRequest as WireRequest>::decode(&mut bytes.as_slice()).unwrap();
        assert_eq!(ours.version_info, "v7");
        assert_eq!(ours.node, prost.node);
        assert_eq!(ours.names.iter().collect::<Vec<_>>(), names);
        assert_eq!(ours.type_url, crate::ENDPOINT);
        assert_eq!(ours.response_nonce, "3");
        assert_eq!(ours.error_detail, prost.error_detail);
        // The same names give the same hash; other names another.
        let again = <SotwRequest as WireRequest>::decode(&mut bytes.as_slice()).unwrap();
        assert_eq!(ours.names.hash(), again.names.hash());
        let other = DiscoveryRequest {
            resource_names: vec!["a".into(), "outbound|80||b".into()],
            ..prost.clone()
        };
        let other = <SotwRequest as WireRequest>::decode(&mut other.encode_to_vec().as_slice());
        assert_ne!(other.unwrap().names.hash(), ours.names.hash());
        // An ACK of the same names with another version and nonce: the same hash.
        let ack = DiscoveryRequest {
            version_info: "v8".into(),
            response_nonce: "4".into(),
            error_detail: None,
            node: None,
            ..prost.clone()
        };
        let ack = <SotwRequest as WireRequest>::decode(&mut ack.encode_to_vec().as_slice());
        assert_eq!(ack.unwrap().names.hash(), ours.names.hash());
        // A name that is not UTF-8 is refused, naming the field.
        let bad = [0x1a, 0x02, 0xff, 0xfe];
        let e = <SotwRequest as WireRequest>::decode(&mut &bad[..]).unwrap_err();
        assert!(e.to_string().contains("resource_names: not UTF-8"), "{e}");
        // Names of 128 bytes and more have two-byte lengths, which are not UTF-8: each
        // name is then checked on its own.
        let long = DiscoveryRequest {
            resource_names: vec!["é".repeat(100), "a".into(), "ü".repeat(70)],
            ..Default::default()
        };
        let got = <SotwRequest as WireRequest>::decode(&mut long.encode_to_vec().as_slice());
        let got = got.unwrap();
        assert_eq!(got.names.iter().collect::<Vec<_>>(), long.resource_names);
        let mut bad_long = long.encode_to_vec();
        let at = bad_long.len() - 1; // inside the last name
        bad_long[at] = 0xff;
        let e = <SotwRequest as WireRequest>::decode(&mut bad_long.as_slice()).unwrap_err();
        assert!(e.to_string().contains("not UTF-8"), "{e}");
        let empty = <SotwRequest as WireRequest>::decode(&mut &[][..]).unwrap();
        assert!(empty.names.is_empty() && empty.names.iter().next().is_none());
        // Not a request: an error, not a panic.
        assert!(<SotwRequest as WireRequest>::decode(&mut &[0x1a, 0x05, b'a'][..]).is_err());
    }

    #[test]
    fn delta_request_reads_what_prost_writes() {
        use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
        let read = |r: &DeltaDiscoveryRequest| {
            <DeltaRequest as WireRequest>::decode(&mut r.encode_to_vec().as_slice())
        };
        let prost = DeltaDiscoveryRequest {
            node: Some(Node {
                id: "sidecar~1".into(),
                ..Default::default()
            }),
            type_url: crate::ENDPOINT.into(),
            resource_names_subscribe: vec!["outbound|80||a".into(), "é".repeat(100), "*".into()],
            resource_names_unsubscribe: vec!["outbound|80||gone".into()],
            initial_resource_versions: [("outbound|80||a".to_string(), "v3".to_string())].into(),
            response_nonce: "7".into(),
            error_detail: Some(RpcStatus {
                code: 3,
                message: "no".into(),
                details: Vec::new(),
            }),
            ..Default::default()
        };
        let ours = read(&prost).unwrap();
        assert_eq!(ours.node, prost.node);
        assert_eq!(ours.type_url, crate::ENDPOINT);
        let subscribe: Vec<Name> = ours.subscribe.shared().collect();
        assert!(ours.subscribe.contains("*") && !ours.unsubscribe.contains("*"));
        assert_eq!(subscribe, prost.resource_names_subscribe);
        assert_eq!(
            ours.unsubscribe.iter().collect::<Vec<_>>(),
            prost.resource_names_unsubscribe
        );
        assert_eq!(
            ours.initial_resource_versions,
            prost
                .initial_resource_versions
                .clone()
                .into_iter()
                .collect()
        );
        assert_eq!(ours.response_nonce, "7");
        assert_eq!(ours.error_detail, prost.error_detail);
        // An ACK: no names either way.
        let ack = read(&DeltaDiscoveryRequest {
            type_url: crate::CLUSTER.into(),
            response_nonce: "8".into(),
            ..Default::default()
        })
        .unwrap();
        assert!(ack.subscribe.is_empty() && ack.unsubscribe.is_empty());
        // A name that is not UTF-8 is refused, naming the field.
        let mut bad = prost.encode_to_vec();
        let name = bad.windows(4).position(|w| w == b"gone").unwrap();
        bad[name] = 0xff;
        let e = <DeltaRequest as WireRequest>::decode(&mut bad.as_slice()).unwrap_err();
        assert!(
            e.to_string()
                .contains("resource_names_unsubscribe: not UTF-8"),
            "{e}"
        );
        // Not a request: an error, not a panic.
        assert!(<DeltaRequest as WireRequest>::decode(&mut &[0x1a, 0x05, b'a'][..]).is_err());
        assert!(<DeltaRequest as WireRequest>::decode(&mut &[0x2a, 0x05, b'a'][..]).is_err());
    }

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

    #[test]
    fn sotw_response_is_the_prost_message() {
        let resources = vec![
            resource(crate::ENDPOINT, &[1u8; 200]),
            resource(crate::ENDPOINT, b""),
        ];
        let ours = SotwResponse {
            version_info: String::new(),
            resources: resources.clone(),
            shared: None,
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

    /// The bytes a stream hands to HTTP/2: the gRPC prefix and its own fields, then the
    /// shared run.
    fn framed(r: &impl Response) -> Vec<u8> {
        let (head, shared) = crate::body::message_chunks(r, usize::MAX).unwrap();
        let mut out = head.to_vec();
        out.extend(shared.iter().flat_map(|s| s.iter()));
        assert_eq!(out[0], 0, "not compressed");
        let len = u32::from_be_bytes(out[1..5].try_into().unwrap()) as usize;
        assert_eq!(len, out.len() - 5, "the prefix gives the message's length");
        assert_eq!(&out[5..], written(r), "the same bytes as one piece");
        out.split_off(5)
    }

    #[test]
    fn a_shared_run_decodes_as_the_resources_after_the_own_ones() {
        let base: Vec<(String, Arc<Versioned>)> = (0..3)
            .map(|i| {
                (
                    format!("b{i}"),
                    resource(crate::CLUSTER, &vec![i; 150 * i as usize]),
                )
            })
            .collect();
        let own = vec![("own".to_string(), resource(crate::CLUSTER, b"inbound"))];
        let items = || base.iter().map(|(n, r)| (n, r));
        let delta = DeltaResponse {
            system_version_info: "v2".into(),
            resources: own.clone(),
            shared: Some(Encoded::new(Flavor::Delta, items())),
            type_url: crate::CLUSTER.into(),
            removed_resources: Vec::new(),
            nonce: "9".into(),
        };
        assert_eq!(delta.shared.as_ref().unwrap().count, 3);
        let got = DeltaDiscoveryResponse::decode(framed(&delta).as_slice()).unwrap();
        let names: Vec<&str> = got.resources.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["own", "b0", "b1", "b2"]);
        for (got, (_, want)) in got.resources.iter().zip(own.iter().chain(&base)) {
            assert_eq!(got.version, want.version);
            assert_eq!(got.resource.as_ref(), Some(&want.body));
        }
        assert_eq!(
            (got.nonce.as_str(), got.system_version_info.as_str()),
            ("9", "v2")
        );

        let sotw = SotwResponse {
            version_info: "v3".into(),
            resources: vec![own[0].1.clone()],
            shared: Some(Encoded::new(Flavor::Sotw, items())),
            type_url: crate::CLUSTER.into(),
            nonce: "10".into(),
        };
        let got = DiscoveryResponse::decode(framed(&sotw).as_slice()).unwrap();
        let want: Vec<Any> = own
            .iter()
            .chain(&base)
            .map(|(_, r)| r.body.clone())
            .collect();
        assert_eq!(got.resources, want);
        assert_eq!(
            (got.version_info.as_str(), got.nonce.as_str()),
            ("v3", "10")
        );
    }

    #[test]
    fn a_response_over_the_limit_is_an_error() {
        let r = SotwResponse {
            resources: vec![resource(crate::CLUSTER, &[0u8; 100])],
            ..Default::default()
        };
        let err = crate::body::message_chunks(&r, 50).unwrap_err();
        assert_eq!(err.code(), tonic::Code::OutOfRange);
        assert!(
            err.message().contains("over the limit of 50"),
            "{}",
            err.message()
        );
    }
}
