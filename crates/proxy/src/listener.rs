//! Listeners: bound sockets, the accept loop, per-connection limits and draining.
//!
//! A listener's behaviour (its HTTP manager or TCP proxy, and the limits) sits
//! behind an `ArcSwap`, so a reload that keeps the listener's addresses swaps the
//! behaviour without touching the socket or any open connection.

use crate::capture::Handoffs;
use crate::conn::ConnInfo;
use crate::http::HttpManager;
use crate::io::{Activity, ActivityIo};
use crate::stats::ListenerStats;
use crate::tcp::TcpProxy;
use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::{watch, Notify};
use trellis_config::{Codec, Limits};
use trellis_tls::MaybeTls;

pub enum Behaviour {
    Http(Arc<HttpManager>, Codec),
    Tcp(Arc<TcpProxy>),
    /// Both, chosen per connection by its first bytes (`sniff.rs`).
    Detect {
        http: Arc<HttpManager>,
        codec: Codec,
        tcp: Arc<TcpProxy>,
    },
    /// TLS passthrough: spliced by the SNI of the client's ClientHello.
    Passthrough(Arc<Passthrough>),
}

/// A passthrough listener's routes by server name, and the TCP proxy for connections
/// no route names (none: they are closed).
pub struct Passthrough {
    pub routes: trellis_tls::ServerNames<Arc<TcpProxy>>,
    pub default: Option<Arc<TcpProxy>>,
}

/// How long a passthrough listener waits for a ClientHello (Envoy's tls_inspector
/// waits for the listener filter timeout, 15 s by default).
const CLIENT_HELLO_TIMEOUT: Duration = Duration::from_secs(15);

pub struct ListenerRuntime {
    pub behaviour: Behaviour,
    pub limits: Limits,
    pub stats: ListenerStats,
    pub tls: Option<DownstreamTls>,
    /// What connections accepted under this runtime were admitted by: the TLS
    /// settings, and on a TCP listener its authorization (HTTP requests are authorized
    /// each against the current runtime). A replacement that differs here retires them.
    pub admission: Admission,
    /// Set once this runtime is replaced by one that admits differently: its
    /// connections drain (graceful close, then closed after the drain timeout).
    /// Shared by successive runtimes that admit alike.
    pub retired: Arc<watch::Sender<bool>>,
    /// A capture listener (`use_original_dst`): redirected connections are handed to
    /// the listener of their original destination (`capture.rs`).
    pub capture: bool,
    /// This workload's metadata frame, written on streams that negotiate
    /// `istio-peer-exchange` (`peer_exchange.rs`).
    pub peer_frame: bytes::Bytes,
}

/// A listener a capture listener may hand connections to.
#[derive(Clone)]
pub struct Target {
    pub name: Arc<str>,
    pub runtime: Arc<ArcSwap<ListenerRuntime>>,
    /// The target listener's drain signal (its connections close with it).
    pub shutdown: watch::Receiver<bool>,
}

/// The parts of a listener's config that decided whether a connection got in.
#[derive(Clone, Debug, PartialEq)]
pub struct Admission {
    pub tls: Option<trellis_config::DownstreamTls>,
    pub tcp_authorization: Option<trellis_config::Authorization>,
}

impl ListenerRuntime {
    /// Takes over from `previous`: its connections stay when both admit alike (and
    /// later drain with this runtime's), and drain now otherwise.
    pub fn succeed(&mut self, previous: &ListenerRuntime, listener: &str) {
        if self.admission == previous.admission {
            self.retired = previous.retired.clone();
        } else {
            tracing::info!(%listener, "listener security changed; draining its open connections");
            let _ = previous.retired.send(true);
        }
    }
}

/// When a connection must close: the listener drains (removed, or the process
/// stops), or the runtime that admitted it was retired.
struct Drain {
    shutdown: watch::Receiver<bool>,
    retired: watch::Receiver<bool>,
}

impl Drain {
    /// Resolves once either says so (a closed channel counts: its owner is gone).
    async fn requested(&mut self) {
        loop {
            if *self.shutdown.borrow() || *self.retired.borrow() {
                return;
            }
            tokio::select! {
                r = self.shutdown.changed() => if r.is_err() { return },
                r = self.retired.changed() => if r.is_err() { return },
            }
        }
    }
}

/// A listener's TLS termination: the context and how long a handshake may take.
pub struct DownstreamTls {
    pub server: trellis_tls::ServerTls,
    pub handshake_timeout: Duration,
    pub handshakes: crate::stats::HandshakeCounters,
    /// PERMISSIVE: plaintext is served too, told apart by the first byte.
    pub permissive: bool,
}

/// Whether the client's first byte is a TLS handshake record (0x16). A client that
/// sends nothing within the timeout is treated as TLS, whose handshake then times out.
async fn starts_with_tls(stream: &TcpStream, timeout: Duration) -> bool {
    let mut first = [0u8; 1];
    match tokio::time::timeout(timeout, stream.peek(&mut first)).await {
        Ok(Ok(1)) => first[0] == 0x16,
        _ => true,
    }
}

/// Open downstream connections across all listeners, for the global limit and drain.
#[derive(Default)]
pub struct Connections {
    active: AtomicUsize,
    closed: Notify,
}

impl Connections {
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    /// Waits until no connection is open, or the deadline passes.
    pub async fn wait_idle(&self, deadline: Duration) -> bool {
        let wait = async {
            loop {
                let closed = self.closed.notified();
                if self.active() == 0 {
                    return;
                }
                closed.await;
            }
        };
        tokio::time::timeout(deadline, wait).await.is_ok()
    }
}

struct ConnGuard {
    conns: Arc<Connections>,
    stats: ListenerStats,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.conns.active.fetch_sub(1, Ordering::AcqRel);
        self.stats.cx_active.dec();
        self.conns.closed.notify_waiters();
    }
}

pub struct Listener {
    pub name: String,
    /// Addresses as configured: a reload keeps the listener when these are unchanged.
    pub configured: Vec<String>,
    /// Whether it has sockets of its own (`bind_to_port`); a reload that changes this
    /// makes the listener again.
    pub bind_to_port: bool,
    pub bound: Vec<SocketAddr>,
    pub runtime: Arc<ArcSwap<ListenerRuntime>>,
    shutdown: watch::Sender<bool>,
    sockets: Vec<std::net::TcpListener>,
}

impl Listener {
    /// Binds every address (IPv6 sockets are v6-only, so `0.0.0.0:p` and `[::]:p`
    /// can both be listed). Nothing is accepted until [`Listener::start`]. Without
    /// `bind_to_port` nothing is bound: the listener takes what capture listeners hand it.
    pub fn bind(
        name: &str,
        configured: Vec<String>,
        bind_to_port: bool,
        runtime: ListenerRuntime,
    ) -> std::io::Result<Self> {
        let mut sockets = Vec::new();
        let mut bound = Vec::new();
        for a in &configured {
            let addr: SocketAddr = a
                .parse()
                .map_err(|_| std::io::Error::other(format!("bad address {a:?}")))?;
            if !bind_to_port {
                bound.push(addr);
                continue;
            }
            let s = bind_socket(addr).map_err(|e| {
                std::io::Error::new(e.kind(), format!("listener {name:?}: bind {addr}: {e}"))
            })?;
            bound.push(s.local_addr()?);
            sockets.push(s);
        }
        let (shutdown, _) = watch::channel(false);
        Ok(Listener {
            name: name.to_string(),
            configured,
            bind_to_port,
            bound,
            runtime: Arc::new(ArcSwap::from_pointee(runtime)),
            shutdown,
            sockets,
        })
    }

    /// Starts the accept loops on the worker runtime.
    pub fn start(
        &mut self,
        worker: &Handle,
        conns: Arc<Connections>,
        handoffs: Arc<ArcSwap<Handoffs<Target>>>,
    ) -> std::io::Result<()> {
        let _enter = worker.enter();
        for s in std::mem::take(&mut self.sockets) {
            let listener = TcpListener::from_std(s)?;
            let own = self.target();
            worker.spawn(accept_loop(listener, own, conns.clone(), handoffs.clone()));
        }
        Ok(())
    }

    /// This listener as a capture listener's hand-off target.
    pub fn target(&self) -> Target {
        Target {
            name: Arc::from(self.name.as_str()),
            runtime: self.runtime.clone(),
            shutdown: self.shutdown.subscribe(),
        }
    }

    /// Stops accepting and asks every open connection to finish gracefully.
    pub fn drain(&self) {
        let _ = self.shutdown.send(true);
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.drain();
    }
}

fn bind_socket(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

async fn accept_loop(
    listener: TcpListener,
    own: Target,
    conns: Arc<Connections>,
    handoffs: Arc<ArcSwap<Handoffs<Target>>>,
) {
    let mut shutdown = own.shutdown.clone();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.changed() => return,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let mut local = stream.local_addr().unwrap_or(peer);
        let mut original_dst = None;
        let mut target = &own;
        let table;
        if own.runtime.load().capture {
            original_dst = crate::capture::original_dst(&stream, local);
            if let Some(dst) = original_dst {
                local = dst;
                table = handoffs.load();
                if let Some(t) = table.find(dst) {
                    target = t;
                }
            }
        }
        let runtime = target.runtime.clone();
        let rt = runtime.load_full();
        let max = rt.limits.max_downstream_connections as usize;
        if conns.active.fetch_add(1, Ordering::AcqRel) >= max {
            conns.active.fetch_sub(1, Ordering::AcqRel);
            rt.stats.cx_overflow.inc();
            drop(stream);
            continue;
        }
        rt.stats.cx_total.inc();
        rt.stats.cx_active.inc();
        let guard = ConnGuard {
            conns: conns.clone(),
            stats: rt.stats.clone(),
        };
        let _ = stream.set_nodelay(true);
        let drain = Drain {
            shutdown: target.shutdown.clone(),
            retired: rt.retired.subscribe(),
        };
        let addrs = Addrs {
            peer,
            local,
            original_dst,
        };
        tokio::spawn(async move {
            serve_connection(stream, addrs, rt, runtime, drain).await;
            drop(guard);
        });
    }
}

/// A connection's two ends, and where it was going before a capture rule redirected it
/// (then also its `local`, as Envoy restores it).
struct Addrs {
    peer: SocketAddr,
    local: SocketAddr,
    original_dst: Option<SocketAddr>,
}

/// Runs the TLS handshake when the listener terminates TLS, then serves the
/// connection with the listener's behaviour.
///
/// The task lives as long as the connection, sized for its largest state: every path
/// but plain HTTP (TLS handshakes, detection, the TCP proxy, the peer exchange) is
/// boxed, so a held keep-alive connection does not carry room for them.
async fn serve_connection(
    stream: TcpStream,
    addrs: Addrs,
    rt: Arc<ListenerRuntime>,
    runtime: Arc<ArcSwap<ListenerRuntime>>,
    drain: Drain,
) {
    let peer = addrs.peer;
    let mut info = ConnInfo {
        peer,
        local: addrs.local,
        original_dst: addrs.original_dst,
        tls: false,
        peer_identity: None,
        client_cert_details: None,
        server_name: None,
        peer_metadata: None,
    };
    let mut alpn_codec = None;
    let mut exchange = false;
    let io = match &rt.tls {
        None => MaybeTls::Plain(stream),
        Some(tls) if tls.permissive && !starts_with_tls(&stream, tls.handshake_timeout).await => {
            MaybeTls::Plain(stream)
        }
        Some(tls) => {
            let handshake =
                tokio::time::timeout(tls.handshake_timeout, Box::pin(tls.server.accept(stream)))
                    .await;
            let accepted = match handshake.unwrap_or_else(|_| Err("timed out".into())) {
                Ok(a) => a,
                Err(e) => {
                    tls.handshakes.failed(&e);
                    tracing::debug!(%peer, "downstream TLS handshake failed: {e}");
                    return;
                }
            };
            tls.handshakes.success.inc();
            info.tls = true;
            info.peer_identity = accepted
                .peer_identities
                .first()
                .map(|s| Arc::from(s.as_str()));
            info.client_cert_details = info
                .peer_identity
                .as_deref()
                .and_then(crate::http::headers::client_cert_details);
            info.server_name = accepted.server_name.as_deref().map(Arc::from);
            alpn_codec = match accepted.alpn.as_deref() {
                Some(b"h2") => Some(Codec::Http2),
                Some(b"http/1.1") => Some(Codec::Http1),
                _ => None,
            };
            exchange = crate::peer_exchange::negotiated(accepted.alpn.as_deref());
            MaybeTls::Tls(Box::new(accepted.stream))
        }
    };
    match &rt.behaviour {
        Behaviour::Http(_, codec) if exchange => {
            // HTTP carries the peer's metadata in headers; the frame is only taken off.
            let (io, _) = Box::pin(crate::peer_exchange::exchange(io, &rt.peer_frame)).await;
            Box::pin(serve_http(
                io,
                info,
                runtime,
                *codec,
                rt.limits.clone(),
                drain,
            ))
            .await;
        }
        Behaviour::Http(_, codec) => {
            let codec = alpn_codec.unwrap_or(*codec);
            serve_http(io, info, runtime, codec, rt.limits.clone(), drain).await;
        }
        Behaviour::Tcp(proxy) if exchange => {
            let (io, peer) = Box::pin(crate::peer_exchange::exchange(io, &rt.peer_frame)).await;
            info.peer_metadata = peer;
            Box::pin(serve_tcp(io, proxy, &info, &rt.limits, drain)).await
        }
        Behaviour::Tcp(proxy) => Box::pin(serve_tcp(io, proxy, &info, &rt.limits, drain)).await,
        Behaviour::Passthrough(p) => {
            let mut io = io;
            let hello = tokio::time::timeout(
                CLIENT_HELLO_TIMEOUT,
                Box::pin(trellis_tls::read_client_hello(&mut io)),
            )
            .await;
            let Ok((read, hello)) = hello else {
                tracing::debug!(%peer, "passthrough: no ClientHello in time");
                return;
            };
            let proxy = match &hello {
                Ok(h) => {
                    info.server_name = h.server_name.as_deref().map(Arc::from);
                    h.server_name
                        .as_deref()
                        .and_then(|n| p.routes.lookup(n))
                        .or(p.default.as_ref())
                }
                Err(e) => {
                    tracing::debug!(%peer, "passthrough: {e}");
                    p.default.as_ref()
                }
            };
            let Some(proxy) = proxy else {
                rt.stats.no_route.inc();
                tracing::debug!(%peer, sni = ?info.server_name, "passthrough: no route for this server name");
                return;
            };
            let io = crate::sniff::Prefixed::new(read, io);
            Box::pin(serve_tcp(io, proxy, &info, &rt.limits, drain)).await;
        }
        Behaviour::Detect { codec, tcp, .. } => {
            let (io, peer) = match exchange {
                true => Box::pin(crate::peer_exchange::exchange(io, &rt.peer_frame)).await,
                false => (crate::sniff::Prefixed::new(Vec::new(), io), None),
            };
            info.peer_metadata = peer;
            let (detected, io) =
                Box::pin(crate::sniff::detect(io, crate::sniff::DETECTION_TIMEOUT)).await;
            if detected == crate::sniff::Detected::Http {
                let codec = alpn_codec.unwrap_or(*codec);
                Box::pin(serve_http(
                    io,
                    info,
                    runtime,
                    codec,
                    rt.limits.clone(),
                    drain,
                ))
                .await;
            } else {
                Box::pin(serve_tcp(io, tcp, &info, &rt.limits, drain)).await;
            }
        }
    }
}

/// A TCP stream cannot be closed gracefully: on drain it gets the drain timeout to
/// finish, then it is closed.
async fn serve_tcp<S>(io: S, proxy: &TcpProxy, info: &ConnInfo, limits: &Limits, mut drain: Drain)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let idle = limits.idle_timeout.get();
    let grace = limits.drain_timeout.get();
    tokio::select! {
        _ = proxy.serve(io, info, idle) => {}
        _ = async {
            drain.requested().await;
            tokio::time::sleep(grace).await;
        } => tracing::debug!(peer = %info.peer, "tcp connection closed by drain"),
    }
}

/// Drives a connection until it ends: graceful shutdown on drain (closed outright
/// when in-flight requests outlast the drain timeout), on idle timeout, and for a
/// connection that sends nothing within the request header timeout.
macro_rules! drive {
    ($conn:expr, $activity:expr, $limits:expr, $drain:expr) => {{
        let conn = $conn;
        tokio::pin!(conn);
        let idle = $limits.idle_timeout.get();
        let first_bytes = $limits.request_headers_timeout.get();
        let grace = $limits.drain_timeout.get();
        let tick =
            (idle.min(first_bytes) / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
        let mut closing = false;
        let deadline = tokio::time::sleep(Duration::MAX / 4);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = conn.as_mut() => break,
                _ = $drain.requested(), if !closing => {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                    deadline.as_mut().reset(tokio::time::Instant::now() + grace);
                }
                _ = &mut deadline, if closing => break,
                _ = tokio::time::sleep(tick), if !closing => {
                    if $activity.is_idle(idle) || $activity.silent_for(first_bytes) {
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
        }
    }};
}

/// Serves one downstream HTTP connection (HTTP/1.1, h2c prior knowledge, upgrades).
async fn serve_http<S>(
    stream: S,
    info: ConnInfo,
    runtime: Arc<ArcSwap<ListenerRuntime>>,
    codec: Codec,
    limits: Limits,
    mut drain: Drain,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let activity = Activity::new();
    let io = TokioIo::new(ActivityIo::new(stream, activity.clone()));
    let header_bytes = limits.max_request_headers_kb as usize * 1024;
    let service_activity = activity.clone();
    // Whether the settings this connection was admitted under (plaintext under
    // PERMISSIVE, say) have been replaced by stricter ones.
    let retired = drain.retired.clone();
    let service = service_fn(move |req| {
        // Each request sees the listener's current config, so a reload applies to
        // requests on connections that were open before it; a connection whose
        // admission was retired serves nothing more, even a request read before its
        // drain took effect.
        let manager = match &runtime.load().behaviour {
            _ if *retired.borrow() => None,
            Behaviour::Http(m, _) | Behaviour::Detect { http: m, .. } => Some(m.clone()),
            Behaviour::Tcp(_) | Behaviour::Passthrough(_) => None,
        };
        let activity = service_activity.clone();
        let info = info.clone();
        activity.active_requests.fetch_add(1, Ordering::Relaxed);
        async move {
            let response = match manager {
                // Boxed: hyper keeps room for this future for the connection's whole
                // life, idle or not, and moves it into place for every request.
                Some(m) => Box::pin(m.handle(req, info)).await,
                None => crate::http::local_reply(
                    http::StatusCode::SERVICE_UNAVAILABLE,
                    "listener changed",
                ),
            };
            activity.active_requests.fetch_sub(1, Ordering::Relaxed);
            Ok::<_, Infallible>(response)
        }
    });
    if codec == Codec::Http1 {
        let mut h1 = hyper::server::conn::http1::Builder::new();
        h1.timer(TokioTimer::new())
            .header_read_timeout(limits.request_headers_timeout.get())
            .max_buf_size(header_bytes.max(8192))
            .max_headers(limits.max_request_headers_count as usize);
        drive!(
            h1.serve_connection(io, service).with_upgrades(),
            activity,
            limits,
            drain
        );
        return;
    }
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.request_headers_timeout.get())
        .max_buf_size(header_bytes.max(8192))
        .max_headers(limits.max_request_headers_count as usize);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(header_bytes as u32);
    if codec == Codec::Http2 {
        let builder = builder.http2_only();
        drive!(
            builder.serve_connection(io, service),
            activity,
            limits,
            drain
        );
    } else {
        drive!(
            builder.serve_connection_with_upgrades(io, service),
            activity,
            limits,
            drain
        );
    }
}
