//! `DiscoveryResponse` and `DeltaDiscoveryResponse` as the server writes them: the
//! stream's own fields, then its resources (`Arc`s of the snapshot's) written straight
//! into the frame, and runs of resources encoded once for every stream ([`Encoded`]).

use std::sync::Arc;

use prost::bytes::{BufMut, Bytes};

use super::{bytes_len, field_len, put_bytes, put_header, Wire};
use crate::Versioned;

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

#[cfg_attr(not(feature = "client"), allow(dead_code))]
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::test_support::{resource, written};
    use envoy_types::pb::envoy::service::discovery::v3::{
        DeltaDiscoveryResponse, DiscoveryResponse, Resource,
    };
    use envoy_types::pb::google::protobuf::Any;
    use prost::Message;

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
        let (head, shared) = crate::server::body::message_chunks(r, usize::MAX).unwrap();
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
        let err = crate::server::body::message_chunks(&r, 50).unwrap_err();
        assert_eq!(err.code(), tonic::Code::OutOfRange);
        assert!(
            err.message().contains("over the limit of 50"),
            "{}",
            err.message()
        );
    }
}
