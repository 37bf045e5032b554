//! `DiscoveryRequest` and `DeltaDiscoveryRequest` as the server reads them: resource
//! names stay where they are in the request ([`Names`]), checked to be UTF-8 once.

use prost::bytes::{Buf, Bytes};
use prost::encoding::{decode_key, message, skip_field, string, DecodeContext, WireType};

use std::marker::PhantomData;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::rpc::Status as RpcStatus;
use prost::DecodeError;
use tonic::codec::{DecodeBuf, Decoder};
use tonic::Status;

use super::{
    REQ_ERROR_DETAIL, REQ_NODE, REQ_RESOURCE_NAMES, REQ_RESPONSE_NONCE, REQ_TYPE_URL,
    REQ_VERSION_INFO,
};
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

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

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
}
