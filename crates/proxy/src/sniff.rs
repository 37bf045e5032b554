//! Protocol detection on a listener that has both an HTTP manager and a TCP proxy
//! (Envoy's `http_inspector` choosing between filter chains by application protocol,
//! as Istio configures ports whose protocol is not declared): the first bytes of the
//! (decrypted) stream decide. An HTTP/1.x request line or the HTTP/2 connection
//! preface goes to the HTTP manager, anything else (a TLS ClientHello from the app, a
//! database protocol) to the TCP proxy. A client that sends nothing within the
//! detection timeout (a server-first protocol) is TCP. The bytes read are replayed.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// How long a silent client is waited for before its connection counts as TCP.
pub const DETECTION_TIMEOUT: Duration = Duration::from_millis(100);

const METHODS: [&[u8]; 9] = [
    b"GET ",
    b"HEAD ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
    b"TRACE ",
];
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detected {
    Http,
    Tcp,
}

/// What `prefix` says so far: `None` while it could still be either.
fn classify(prefix: &[u8]) -> Option<Detected> {
    let candidates = METHODS.iter().copied().chain([H2_PREFACE]);
    let mut open = false;
    for c in candidates {
        let n = prefix.len().min(c.len());
        if prefix[..n] == c[..n] {
            if prefix.len() >= c.len() {
                return Some(Detected::Http);
            }
            open = true;
        }
    }
    (!open).then_some(Detected::Tcp)
}

/// Reads from `stream` until its protocol is known; returns it with the stream, which
/// yields the bytes read first.
pub async fn detect<S>(mut stream: S, timeout: Duration) -> (Detected, Prefixed<S>)
where
    S: AsyncRead + Unpin,
{
    let mut buf = Vec::with_capacity(H2_PREFACE.len());
    let verdict = tokio::time::timeout(timeout, async {
        let mut chunk = [0u8; 16];
        loop {
            let want = H2_PREFACE.len() - buf.len().min(H2_PREFACE.len());
            let n = match stream.read(&mut chunk[..want.max(1)]).await {
                Ok(0) | Err(_) => return Detected::Tcp,
                Ok(n) => n,
            };
            buf.extend_from_slice(&chunk[..n]);
            if let Some(d) = classify(&buf) {
                return d;
            }
        }
    })
    .await
    .unwrap_or(Detected::Tcp);
    (
        verdict,
        Prefixed {
            prefix: buf,
            at: 0,
            inner: stream,
        },
    )
}

/// A stream that yields `prefix` before the rest of `inner`.
pub struct Prefixed<S> {
    prefix: Vec<u8>,
    at: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    /// `inner`, yielding `prefix` (bytes already read from it) first.
    pub fn new(prefix: Vec<u8>, inner: S) -> Self {
        Prefixed {
            prefix,
            at: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.at < self.prefix.len() {
            let n = (self.prefix.len() - self.at).min(buf.remaining());
            let at = self.at;
            buf.put_slice(&self.prefix[at..at + n]);
            self.at += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn request_lines_and_the_h2_preface_are_http_and_the_rest_tcp() {
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(Detected::Http));
        assert_eq!(classify(b"OPTIONS "), Some(Detected::Http));
        assert_eq!(classify(b"PRI * HTTP/2.0\r\n"), Some(Detected::Http));
        assert_eq!(classify(b"PRI * HT"), None);
        assert_eq!(classify(b"GE"), None);
        assert_eq!(classify(b"\x16\x03\x01\x02\x00"), Some(Detected::Tcp));
        assert_eq!(classify(b"GET/"), Some(Detected::Tcp));
        assert_eq!(
            classify(b"\x00\x00\x00\x08\x04\xd2\x16\x2f"),
            Some(Detected::Tcp)
        );
    }

    #[tokio::test]
    async fn bytes_read_to_decide_are_replayed_and_a_silent_client_is_tcp() {
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(b"POST /x HTTP/1.1\r\n\r\n").await.unwrap();
        let (d, mut s) = detect(server, Duration::from_secs(1)).await;
        assert_eq!(d, Detected::Http);
        let mut all = vec![0u8; 20];
        s.read_exact(&mut all).await.unwrap();
        assert_eq!(&all, b"POST /x HTTP/1.1\r\n\r\n");

        let (_client, server) = tokio::io::duplex(64);
        let t = std::time::Instant::now();
        let (d, _) = detect(server, Duration::from_millis(50)).await;
        assert_eq!(d, Detected::Tcp);
        assert!(t.elapsed() < Duration::from_secs(1));
    }
}
