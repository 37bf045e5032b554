//! Istio's TCP metadata exchange. Between sidecars over mutual TLS, a TCP stream that
//! negotiated the ALPN protocol `istio-peer-exchange` starts, in each direction, with
//! one frame: the magic `0x3D230467` and a length (both 32-bit big-endian), then a
//! `google.protobuf.Any` holding a `Struct` whose `x-envoy-peer-metadata` field is the
//! sender's workload metadata (the same Struct the HTTP exchange carries in a header)
//! and `x-envoy-peer-metadata-id` its node id. It is the shape of Istio's
//! `istio.metadata_exchange` network filter, so Trellis and Envoy sidecars read each
//! other.
//!
//! Both sides write their frame as soon as the handshake is done and then read the
//! peer's, so neither waits on the other (Envoy writes its own once it sees data). The
//! frame never reaches the app: a stream that does not start with one is passed on
//! untouched, with whatever was read put back in front.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use envoy_types::pb::google::protobuf::{value::Kind, Any, Struct, Value};
use prost::Message;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use trellis_config as tc;

use crate::istio_stats::{metadata_struct, peer_of, Peer, PEER_METADATA, PEER_METADATA_ID};
use crate::sniff::Prefixed;

/// The ALPN protocol that announces the exchange.
pub const ALPN: &str = "istio-peer-exchange";

const MAGIC: u32 = 0x3D23_0467;
const HEADER: usize = 8;
/// A peer's frame larger than this is not taken for one (a workload's metadata is a few
/// hundred bytes; Envoy's is under 2 KiB with every label).
const MAX_FRAME: usize = 64 * 1024;
/// How long the peer's frame may take once ours is written.
const FRAME_WAIT: Duration = Duration::from_secs(2);
const STRUCT_TYPE: &str = "type.googleapis.com/google.protobuf.Struct";

/// Whether a handshake that chose `alpn` starts the exchange.
pub fn negotiated(alpn: Option<&[u8]>) -> bool {
    alpn == Some(ALPN.as_bytes())
}

/// This workload's frame, as written at the start of an exchanging stream.
pub fn frame(own: &tc::WorkloadMetadata, node_id: &str) -> Bytes {
    let mut fields = std::collections::HashMap::new();
    fields.insert(
        PEER_METADATA.as_str().to_string(),
        Value {
            kind: Some(Kind::StructValue(metadata_struct(own))),
        },
    );
    fields.insert(
        PEER_METADATA_ID.as_str().to_string(),
        Value {
            kind: Some(Kind::StringValue(node_id.to_string())),
        },
    );
    let any = Any {
        type_url: STRUCT_TYPE.into(),
        value: Struct { fields }.encode_to_vec(),
    };
    let body = any.encode_to_vec();
    let mut out = BytesMut::with_capacity(HEADER + body.len());
    out.put_u32(MAGIC);
    out.put_u32(body.len() as u32);
    out.put_slice(&body);
    out.freeze()
}

/// Writes `own` on `io`, then reads the peer's frame: the stream positioned after it
/// (or, without one, at its start) and the peer it names.
pub async fn exchange<S>(mut io: S, own: &[u8]) -> (Prefixed<S>, Option<Peer>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if io.write_all(own).await.is_err() || io.flush().await.is_err() {
        return (Prefixed::new(Vec::new(), io), None);
    }
    let mut read = Vec::with_capacity(1024);
    let peer = tokio::time::timeout(FRAME_WAIT, read_frame(&mut io, &mut read))
        .await
        .ok()
        .flatten();
    match peer {
        Some((taken, peer)) => {
            read.drain(..taken);
            (Prefixed::new(read, io), peer)
        }
        None => (Prefixed::new(read, io), None),
    }
}

/// Reads until `read` holds a whole frame: how many bytes it took and the peer it
/// names. `None` when the stream does not start with a frame (the bytes stay in
/// `read`).
async fn read_frame<S: AsyncRead + Unpin>(
    io: &mut S,
    read: &mut Vec<u8>,
) -> Option<(usize, Option<Peer>)> {
    let mut need = HEADER;
    loop {
        while read.len() < need {
            let mut chunk = [0u8; 2048];
            let n = io.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            read.extend_from_slice(&chunk[..n]);
        }
        if need > HEADER {
            return Some((need, decode(&read[HEADER..need])));
        }
        let magic = u32::from_be_bytes(read[..4].try_into().expect("4 bytes"));
        let len = u32::from_be_bytes(read[4..8].try_into().expect("4 bytes")) as usize;
        if magic != MAGIC || len > MAX_FRAME {
            return None;
        }
        need = HEADER + len;
    }
}

/// The peer a frame's `Any` names; a frame without metadata names none (it is still
/// taken off the stream).
fn decode(body: &[u8]) -> Option<Peer> {
    let any = Any::decode(body).ok()?;
    if any.type_url != STRUCT_TYPE {
        return None;
    }
    let s = Struct::decode(any.value.as_slice()).ok()?;
    match s.fields.get(PEER_METADATA.as_str())?.kind.as_ref()? {
        Kind::StructValue(m) => Some(peer_of(m)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(name: &str) -> tc::WorkloadMetadata {
        tc::WorkloadMetadata {
            name: name.into(),
            namespace: "default".into(),
            app: "db".into(),
            version: "v1".into(),
            cluster: "Kubernetes".into(),
            principal: "spiffe://cluster.local/ns/default/sa/db".into(),
        }
    }

    #[test]
    fn the_frame_has_istios_header() {
        let f = frame(
            &workload("db-v1"),
            "sidecar~10.0.0.1~db-v1.default~default.svc.cluster.local",
        );
        assert_eq!(&f[..4], &[0x3D, 0x23, 0x04, 0x67]);
        let len = u32::from_be_bytes(f[4..8].try_into().unwrap()) as usize;
        assert_eq!(len, f.len() - 8);
        let any = Any::decode(&f[8..]).unwrap();
        assert_eq!(any.type_url, "type.googleapis.com/google.protobuf.Struct");
        let s = Struct::decode(any.value.as_slice()).unwrap();
        assert!(matches!(
            s.fields["x-envoy-peer-metadata-id"].kind,
            Some(Kind::StringValue(ref id)) if id.starts_with("sidecar~")
        ));
    }

    #[tokio::test]
    async fn both_sides_read_each_other_and_the_bytes_after_pass_untouched() {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let fa = frame(&workload("client-v1"), "a");
        let fb = frame(&workload("db-v1"), "b");
        let server = tokio::spawn(async move {
            let (mut io, peer) = exchange(b, &fb).await;
            let mut got = [0u8; 5];
            io.read_exact(&mut got).await.unwrap();
            (peer, got)
        });
        let (mut io, peer) = exchange(a, &fa).await;
        io.write_all(b"hello").await.unwrap();
        let (server_peer, got) = server.await.unwrap();
        assert_eq!(peer.unwrap().workload.as_str(), "db-v1");
        assert_eq!(server_peer.unwrap().workload.as_str(), "client-v1");
        assert_eq!(&got, b"hello");
    }

    #[tokio::test]
    async fn a_stream_without_a_frame_reaches_the_app_whole() {
        let (a, mut b) = tokio::io::duplex(64 * 1024);
        b.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let (mut io, peer) = exchange(a, &frame(&workload("db-v1"), "a")).await;
        assert!(peer.is_none());
        let mut got = [0u8; 18];
        io.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"GET / HTTP/1.1\r\n\r\n");
    }

    #[tokio::test]
    async fn a_split_frame_is_read_whole() {
        let (a, mut b) = tokio::io::duplex(64 * 1024);
        let f = frame(&workload("client-v1"), "a");
        let writer = tokio::spawn(async move {
            for byte in f.iter() {
                b.write_all(&[*byte]).await.unwrap();
            }
            b.write_all(b"after").await.unwrap();
            b
        });
        let (mut io, peer) = exchange(a, b"").await;
        assert_eq!(peer.unwrap().workload.as_str(), "client-v1");
        let mut got = [0u8; 5];
        io.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"after");
        drop(writer.await.unwrap());
    }
}
