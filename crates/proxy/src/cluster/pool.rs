//! Upstream connections for one endpoint: a stack of idle HTTP/1.1 connections
//! (keep-alive) or one multiplexed HTTP/2 connection. A connection counts against
//! the cluster's max_connections for as long as its driver task runs.

use super::{Cluster, UpstreamError};
use crate::body::Body;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use tokio::net::TcpStream;
use trellis_tls::MaybeTls;

pub struct EndpointPool {
    addr: SocketAddr,
    /// The endpoint's addresses when it has more than one (dual stack), raced with
    /// Happy Eyeballs; empty otherwise.
    addrs: Vec<SocketAddr>,
    /// The endpoint has no sidecar: the cluster's TLS is not used to reach it.
    plaintext: bool,
    idle: Mutex<Vec<http1::SendRequest<Body>>>,
    h2: Mutex<Option<http2::SendRequest<Body>>>,
    h2_connecting: tokio::sync::Mutex<()>,
}

/// A connection checked out for one request.
pub enum Sender {
    /// `reused` tells whether a failure may be a race with the server closing an idle
    /// connection, which is safe to retry on a fresh one.
    Http1 {
        sender: http1::SendRequest<Body>,
        reused: bool,
    },
    Http2(http2::SendRequest<Body>),
}

/// Decrements the cluster's connection count when a connection's driver ends.
struct ConnSlot(Arc<Cluster>);

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.0.limits.connections.fetch_sub(1, Ordering::AcqRel);
        self.0.stats.cx_active.dec();
        self.0.limits.released.notify_waiters();
    }
}

impl EndpointPool {
    pub fn new(addr: SocketAddr, additional: &[SocketAddr], plaintext: bool) -> Self {
        let addrs = if additional.is_empty() {
            Vec::new()
        } else {
            std::iter::once(addr)
                .chain(additional.iter().copied())
                .collect()
        };
        EndpointPool {
            addr,
            addrs,
            plaintext,
            idle: Mutex::new(Vec::new()),
            h2: Mutex::new(None),
            h2_connecting: tokio::sync::Mutex::new(()),
        }
    }

    /// Returns a finished HTTP/1.1 connection for reuse.
    pub fn release(&self, cluster: &Cluster, sender: http1::SendRequest<Body>) {
        if !sender.is_closed() {
            self.idle.lock().unwrap().push(sender);
            cluster.limits.released.notify_waiters();
        }
    }

    pub async fn checkout(
        &self,
        cluster: &Arc<Cluster>,
        fresh: bool,
    ) -> Result<Sender, UpstreamError> {
        if cluster.config.http2 {
            return self.checkout_h2(cluster).await.map(Sender::Http2);
        }
        loop {
            if !fresh {
                while let Some(mut s) = self.pop_idle() {
                    if s.ready().await.is_ok() {
                        return Ok(Sender::Http1 {
                            sender: s,
                            reused: true,
                        });
                    }
                }
            }
            let released = cluster.limits.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if let Some(slot) = cluster.try_connection_slot() {
                // Boxed: connecting (TCP, Happy Eyeballs, TLS) is rare next to reusing a
                // pooled connection, and would otherwise size every request's future.
                let io = Box::pin(self.connect(cluster)).await?;
                let (sender, conn) = http1::Builder::new()
                    .handshake(io)
                    .await
                    .map_err(|e| UpstreamError::ConnectFailure(e.to_string()))?;
                tokio::spawn(async move {
                    let _slot = slot;
                    let _ = conn.with_upgrades().await;
                });
                return Ok(Sender::Http1 {
                    sender,
                    reused: false,
                });
            }
            // At max_connections: wait as a pending request for a connection to free up.
            let _pending = cluster.enter_pending()?;
            released.await;
        }
    }

    fn pop_idle(&self) -> Option<http1::SendRequest<Body>> {
        let mut idle = self.idle.lock().unwrap();
        while let Some(s) = idle.pop() {
            if !s.is_closed() {
                return Some(s);
            }
        }
        None
    }

    async fn checkout_h2(
        &self,
        cluster: &Arc<Cluster>,
    ) -> Result<http2::SendRequest<Body>, UpstreamError> {
        if let Some(s) = self.live_h2() {
            return Ok(s);
        }
        let _one_at_a_time = self.h2_connecting.lock().await;
        if let Some(s) = self.live_h2() {
            return Ok(s);
        }
        let slot = match cluster.try_connection_slot() {
            Some(slot) => slot,
            None => {
                cluster.stats.overflow_connections.inc();
                return Err(UpstreamError::Overflow("max_connections"));
            }
        };
        let io = Box::pin(self.connect(cluster)).await?;
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(hyper_util::rt::TokioTimer::new())
            .handshake(io)
            .await
            .map_err(|e| UpstreamError::ConnectFailure(e.to_string()))?;
        tokio::spawn(async move {
            let _slot = slot;
            let _ = conn.await;
        });
        *self.h2.lock().unwrap() = Some(sender.clone());
        Ok(sender)
    }

    fn live_h2(&self) -> Option<http2::SendRequest<Body>> {
        let guard = self.h2.lock().unwrap();
        guard.as_ref().filter(|s| !s.is_closed()).cloned()
    }

    async fn connect(
        &self,
        cluster: &Arc<Cluster>,
    ) -> Result<TokioIo<MaybeTls<TcpStream>>, UpstreamError> {
        self.connect_stream(cluster, false).await.map(TokioIo::new)
    }

    /// A TCP connection, with TLS on top when the cluster originates it and the endpoint
    /// is not one left in plaintext. The connect timeout covers the handshake too.
    /// `for_tcp_proxy`: a TCP proxy's stream, which may offer the metadata exchange.
    async fn connect_stream(
        &self,
        cluster: &Arc<Cluster>,
        for_tcp_proxy: bool,
    ) -> Result<MaybeTls<TcpStream>, UpstreamError> {
        let tcp = self.connect_tcp(cluster).await?;
        let tls = cluster.tls.load_full().filter(|_| !self.plaintext);
        let Some(tls) = tls else {
            return Ok(MaybeTls::Plain(tcp));
        };
        let timeout = cluster.config.connect_timeout.get();
        let handshake = async {
            match for_tcp_proxy {
                true => tls.connect_stream(tcp).await,
                false => tls.connect(tcp).await,
            }
        };
        let result = match tokio::time::timeout(timeout, handshake).await {
            Ok(r) => r,
            Err(_) => Err(format!("TLS handshake timeout after {timeout:?}")),
        };
        match result {
            Ok((stream, _alpn)) => Ok(MaybeTls::Tls(Box::new(stream))),
            Err(e) => {
                cluster.stats.cx_connect_fail.inc();
                cluster.stats.tls_fail.inc();
                tracing::debug!(cluster = %cluster.name, endpoint = %self.addr, "upstream TLS: {e}");
                Err(UpstreamError::ConnectFailure(format!(
                    "{}: TLS: {e}",
                    self.addr
                )))
            }
        }
    }

    async fn connect_tcp(&self, cluster: &Arc<Cluster>) -> Result<TcpStream, UpstreamError> {
        let timeout = cluster.config.connect_timeout.get();
        let connect = async {
            if self.addrs.is_empty() {
                TcpStream::connect(self.addr).await
            } else {
                let (s, addr) = super::happy_eyeballs::connect(
                    &self.addrs,
                    super::happy_eyeballs::ATTEMPT_DELAY,
                )
                .await?;
                tracing::debug!(cluster = %cluster.name, endpoint = %self.addr, connected = %addr, "happy eyeballs");
                Ok(s)
            }
        };
        let result = tokio::time::timeout(timeout, connect).await;
        let stream = match result {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                cluster.stats.cx_connect_fail.inc();
                return Err(UpstreamError::ConnectFailure(format!("{}: {e}", self.addr)));
            }
            Err(_) => {
                cluster.stats.cx_connect_fail.inc();
                return Err(UpstreamError::ConnectFailure(format!(
                    "{}: connect timeout after {timeout:?}",
                    self.addr
                )));
            }
        };
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }
}

/// Holds a cluster connection slot for as long as it lives.
pub struct TcpSlot {
    _slot: ConnSlot,
}

impl Cluster {
    /// A raw TCP connection for the TCP proxy, counted against max_connections.
    pub async fn connect_tcp(
        self: &Arc<Self>,
        endpoint: &super::Endpoint,
    ) -> Result<(MaybeTls<TcpStream>, TcpSlot), UpstreamError> {
        let Some(slot) = self.try_connection_slot() else {
            self.stats.overflow_connections.inc();
            return Err(UpstreamError::Overflow("max_connections"));
        };
        let stream = endpoint.pool.connect_stream(self, true).await?;
        Ok((stream, TcpSlot { _slot: slot }))
    }

    /// Claims a connection slot, or None at max_connections.
    fn try_connection_slot(self: &Arc<Self>) -> Option<ConnSlot> {
        let max = self.config.circuit_breakers.max_connections;
        let prev = self.limits.connections.fetch_add(1, Ordering::AcqRel);
        if prev >= max {
            self.limits.connections.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        self.stats.cx_active.inc();
        self.stats.cx_total.inc();
        Some(ConnSlot(self.clone()))
    }
}
