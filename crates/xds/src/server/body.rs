//! The response half of an ADS call as an HTTP/2 body, written without tonic's encoder.
//!
//! tonic copies every message into a fresh buffer before HTTP/2 sends it. A full push at
//! 10 000 services is a ~10 MB message per type per stream; a hundred streams sending
//! the same base copied the same bytes a hundred times into a hundred new buffers (and
//! took the page faults of each). Here a message is the 5-byte gRPC prefix with the
//! fields this stream writes, then the [`Encoded`](crate::wire::Encoded) run shared by
//! every stream, handed to HTTP/2 as it is: h2 writes it from the shared buffer.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::HeaderMap;
use http_body::Frame;
use prost::bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::mpsc;
use tonic::Status;

use crate::wire::response::Response;

/// Reads responses from the stream's task and frames them as gRPC messages; the
/// stream's end (or its error) becomes the trailers.
pub(crate) struct ResponseBody<R> {
    responses: mpsc::Receiver<Result<R, Status>>,
    chunks: VecDeque<Bytes>,
    max_message: usize,
    done: bool,
}

impl<R> ResponseBody<R> {
    pub fn new(responses: mpsc::Receiver<Result<R, Status>>, max_message: usize) -> Self {
        ResponseBody {
            responses,
            chunks: VecDeque::new(),
            max_message,
            done: false,
        }
    }
}

/// One gRPC message (not compressed): prefix and own fields in one chunk, the shared
/// run as a second.
pub(crate) fn message_chunks<R: Response>(
    r: &R,
    max_message: usize,
) -> Result<(Bytes, Option<Bytes>), Status> {
    let len = r.encoded_len();
    if len > max_message {
        return Err(Status::out_of_range(format!(
            "response of {len} bytes is over the limit of {max_message}"
        )));
    }
    let shared = r.shared().map(|e| e.bytes.clone());
    let own = len - shared.as_ref().map_or(0, Bytes::len);
    let mut head = BytesMut::with_capacity(5 + own);
    head.put_u8(0);
    head.put_u32(len as u32);
    r.encode_own(&mut head);
    debug_assert_eq!(head.len(), 5 + own, "encoded_len matches what is written");
    Ok((head.freeze(), shared.filter(|s| !s.is_empty())))
}

fn trailers(status: Option<Status>) -> HeaderMap {
    let status = status.unwrap_or_else(|| Status::ok(""));
    let mut map = HeaderMap::new();
    if let Err(e) = status.add_header(&mut map) {
        tracing::warn!("xDS: cannot write the stream's status: {e}");
    }
    map
}

impl<R: Response> http_body::Body for ResponseBody<R> {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        if let Some(chunk) = this.chunks.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if this.done {
            return Poll::Ready(None);
        }
        let end = match this.responses.poll_recv(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Some(Ok(r))) => match message_chunks(&r, this.max_message) {
                Ok((head, shared)) => {
                    this.chunks.extend(shared);
                    return Poll::Ready(Some(Ok(Frame::data(head))));
                }
                Err(status) => Some(status),
            },
            Poll::Ready(Some(Err(status))) => Some(status),
            Poll::Ready(None) => None,
        };
        this.done = true;
        this.responses.close();
        Poll::Ready(Some(Ok(Frame::trailers(trailers(end)))))
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.chunks.is_empty()
    }
}
