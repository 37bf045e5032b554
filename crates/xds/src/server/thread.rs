use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_stream::StreamExt;

use crate::{AdsServer, Cache, ServerStats};

/// An ADS server on a thread and runtime of its own, for embedding beside other work
/// (`trellis up`, tests). Stopping or dropping it closes every stream at once, as a
/// killed control plane would.
pub struct ServerThread {
    pub addr: SocketAddr,
    pub cache: Cache,
    pub stats: Arc<ServerStats>,
    /// Bytes written into the streams' sockets: when it stops growing, the control
    /// plane's part of a push is done (what is left is in the kernel and the clients).
    pub written: Arc<AtomicU64>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl ServerThread {
    /// Serves `cache` on `addr` (port 0 picks one).
    pub fn start(cache: Cache, addr: SocketAddr) -> std::io::Result<ServerThread> {
        Self::start_with(cache, addr, |s| s)
    }

    /// The same, with the server's settings changed by `settings`.
    pub fn start_with(
        cache: Cache,
        addr: SocketAddr,
        settings: impl FnOnce(AdsServer) -> AdsServer,
    ) -> std::io::Result<ServerThread> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("trellis-xds")
            .enable_all()
            .build()?;
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let server = settings(AdsServer::new(cache.clone()));
        let stats = server.stats();
        let written = Arc::new(AtomicU64::new(0));
        let counter = written.clone();
        runtime.spawn(async move {
            let listener = match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => l,
                Err(e) => return tracing::error!("xDS listener: {e}"),
            };
            let incoming =
                tokio_stream::wrappers::TcpListenerStream::new(listener).map(move |tcp| {
                    tcp.map(|inner| Counted {
                        inner,
                        written: counter.clone(),
                    })
                });
            if let Err(e) = tonic::transport::Server::builder()
                .add_service(server.into_service())
                .serve_with_incoming(incoming)
                .await
            {
                tracing::error!("xDS server: {e}");
            }
        });
        Ok(ServerThread {
            addr,
            cache,
            stats,
            written,
            runtime: Some(runtime),
        })
    }

    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A connection that counts the bytes written to it.
struct Counted {
    inner: tokio::net::TcpStream,
    written: Arc<AtomicU64>,
}

impl tonic::transport::server::Connected for Counted {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.count(r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.count(r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl Counted {
    fn count(&self, r: Poll<std::io::Result<usize>>) -> Poll<std::io::Result<usize>> {
        if let Poll::Ready(Ok(n)) = &r {
            self.written.fetch_add(*n as u64, Ordering::Relaxed);
        }
        r
    }
}
