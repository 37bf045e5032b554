use std::net::SocketAddr;
use std::sync::Arc;

use crate::{AdsServer, Cache, ServerStats};

/// An ADS server on a thread and runtime of its own, for embedding beside other work
/// (`trellis up`, tests). Stopping or dropping it closes every stream at once, as a
/// killed control plane would.
pub struct ServerThread {
    pub addr: SocketAddr,
    pub cache: Cache,
    pub stats: Arc<ServerStats>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl ServerThread {
    /// Serves `cache` on `addr` (port 0 picks one).
    pub fn start(cache: Cache, addr: SocketAddr) -> std::io::Result<ServerThread> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("trellis-xds")
            .enable_all()
            .build()?;
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let server = AdsServer::new(cache.clone());
        let stats = server.stats();
        runtime.spawn(async move {
            let listener = match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => l,
                Err(e) => return tracing::error!("xDS listener: {e}"),
            };
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
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
