//! The HTTP connection manager: one per HTTP listener. It selects a virtual host
//! and route through a [`RouteMatcher`], then runs the listener's filter chain
//! ([`filter`]: authorization, header mutation, fault injection, the router), and
//! records the request's stats and access log line.

mod action;
mod cors_policy;
mod filter;
pub mod flags;
mod forward;
pub mod headers;
mod reply;
mod route_table;

pub use crate::conn::ConnInfo;
pub(crate) use action::named;
pub use flags::Flags;
pub use reply::local_reply;
use route_table::VirtualHost;

use crate::access_log::{self, AccessLog, LogFormat};
use crate::body::{Body, BoxError};
use crate::cluster::Cluster;
use crate::istio_stats::{self, ListenerTelemetry};
use crate::stats::{ListenerStats, Metrics};
use crate::tracer::ListenerTracer;
use bytes::Bytes;
use filter::{Chain, Exchange, JwtAuthn};
use http::header::HOST;
use http::{Request, Response, StatusCode};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use trellis_config::{HttpManager as HttpConfig, Limits};
use trellis_config::{MatcherEngine, Reporter};
use trellis_routing::{CompiledMatcher, Engine, RequestView, RouteMatcher, SequentialMatcher};

pub struct HttpManager {
    listener: String,
    matcher: Box<dyn RouteMatcher>,
    virtual_hosts: Vec<VirtualHost>,
    stats: ListenerStats,
    access_log: Option<AccessLog>,
    /// How its lines are made, and the request headers that takes.
    log_format: LogFormat,
    log_headers: Vec<http::HeaderName>,
    log_response_headers: Vec<http::HeaderName>,
    buffer_limit: usize,
    chain: Chain,
    /// Istio's standard metrics for this listener, and the peer metadata it exchanges.
    telemetry: Option<Arc<ListenerTelemetry>>,
    tracer: Option<Arc<ListenerTracer>>,
}

/// The engine a compiled matcher uses for `matcher.engine`; None for Envoy's sequential
/// matching. Routes and authorization policies follow the same setting.
pub(crate) fn compiled_engine(engine: MatcherEngine) -> Option<Engine> {
    match engine {
        MatcherEngine::Sequential => None,
        MatcherEngine::Automata => Some(Engine::Automata),
        MatcherEngine::Hyperscan => Some(Engine::Hyperscan),
    }
}

impl HttpManager {
    /// `jwt`: the listener's RequestAuthentication, the chain's first filter; `authz`:
    /// its AuthorizationPolicy, checked next.
    #[allow(clippy::too_many_arguments)]
    pub fn build(
        listener: &str,
        config: &HttpConfig,
        jwt: Option<Arc<trellis_jwt::Authenticator>>,
        authz: Option<Arc<crate::authz::ListenerAuthz>>,
        limits: &Limits,
        matcher: &trellis_config::Matcher,
        clusters: &crate::cluster::ClusterSet,
        metrics: &Arc<Metrics>,
        access_logs: &mut HashMap<String, AccessLog>,
        telemetry: Option<Arc<ListenerTelemetry>>,
        tracer: Option<Arc<ListenerTracer>>,
    ) -> Result<Self, String> {
        let program_bytes = matcher.max_regex_program_mb as usize * (1 << 20);
        let hosts = &config.virtual_hosts;
        let matcher: Box<dyn RouteMatcher> = match compiled_engine(matcher.engine) {
            None => Box::new(SequentialMatcher::new(hosts)?),
            Some(engine) => Box::new(CompiledMatcher::new(hosts, engine, program_bytes).map_err(
                |e| {
                    if engine == Engine::Hyperscan {
                        format!("matcher.engine hyperscan: {e}")
                    } else {
                        e
                    }
                },
            )?),
        };
        let virtual_hosts = route_table::build(listener, config, clusters, metrics);
        let log_format = match &config.access_log {
            Some(a) => LogFormat::of(a)?,
            None => LogFormat::Entry,
        };
        let log_headers = log_format.request_headers();
        let log_response_headers = log_format.response_headers();
        let access_log = match &config.access_log {
            None => None,
            Some(a) => Some(AccessLog::shared(
                &a.path,
                access_logs,
                &metrics.access_log_dropped,
            )?),
        };
        Ok(HttpManager {
            listener: listener.to_string(),
            matcher,
            chain: Chain::new(
                jwt.map(|a| JwtAuthn::new(a, metrics.jwt_authn(listener))),
                authz,
                &virtual_hosts,
            ),
            virtual_hosts,
            stats: metrics.listener(listener),
            access_log,
            log_format,
            log_headers,
            log_response_headers,
            buffer_limit: limits.retry_buffer_bytes as usize,
            telemetry,
            tracer,
        })
    }

    /// The filters requests go through, in order.
    pub fn filters(&self) -> Vec<&'static str> {
        self.chain.names()
    }

    pub async fn handle(
        self: Arc<Self>,
        mut req: Request<Incoming>,
        conn: ConnInfo,
    ) -> Response<Body> {
        let started = Instant::now();
        // Before routing, so that routes can match on the verified caller identity.
        headers::set_client_cert_details(req.headers_mut(), conn.client_cert_details.as_ref());
        // The server's side takes the client's metadata out before the app sees it.
        let telemetry = self.telemetry.as_ref();
        let (mut istio_peer, mut answer_peer) = (None, false);
        if let Some(t) = telemetry.filter(|t| t.reporter == Reporter::Destination) {
            answer_peer = req.headers().contains_key(istio_stats::PEER_METADATA);
            istio_peer = istio_stats::take_peer(&t.metrics, req.headers_mut());
        }
        let grpc = telemetry.is_some()
            && req
                .headers()
                .get(http::header::CONTENT_TYPE)
                .is_some_and(|c| c.as_bytes().starts_with(b"application/grpc"));
        let authority = req
            .uri()
            .authority()
            .map(|a| a.as_str().to_string())
            .or_else(|| {
                req.headers()
                    .get(HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_string)
            });
        let Some(authority) = authority else {
            return local_reply(StatusCode::BAD_REQUEST, "missing host header");
        };
        let method = req.method().clone();
        let version = req.version();
        let selected = {
            let view = RequestView {
                method: req.method(),
                authority: &authority,
                path: req.uri().path(),
                query: req.uri().query(),
                headers: req.headers(),
            };
            self.matcher
                .select_virtual_host(&authority)
                .and_then(|vh| Some((vh, self.matcher.select_route(vh, &view)?)))
        };
        // The span's context goes to the next hop whether or not it is recorded.
        let trace = self.tracer.as_ref().and_then(|t| {
            // The request id first, as Envoy makes it before tracing: spans carry it.
            headers::ensure_request_id(req.headers_mut());
            let started = trellis_trace::Started::begin(req.headers_mut(), &t.sampling);
            started.context.sampled.then(|| {
                Box::new(SpanFacts::of(
                    started,
                    &req,
                    &authority,
                    selected.and_then(|(vh, r)| self.virtual_hosts[vh].routes[r].operation.clone()),
                    conn.tls,
                ))
            })
        });
        // What only the log reads is kept only when there is a log, and shared with the
        // request rather than copied.
        let logging = self.access_log.is_some();
        let mut log = LogContext {
            manager: self.clone(),
            started,
            started_at: logging.then(std::time::SystemTime::now),
            method: method.clone(),
            authority: match (logging, req.uri().authority()) {
                (false, _) => LoggedAuthority::Unread,
                (true, Some(a)) => LoggedAuthority::Uri(a.as_str().to_string()),
                (true, None) => req
                    .headers()
                    .get(HOST)
                    .map_or(LoggedAuthority::Unread, |h| {
                        LoggedAuthority::Host(h.clone())
                    }),
            },
            path: req.uri().path_and_query().cloned().filter(|_| logging),
            protocol: version,
            route: None,
            upstream: None,
            flags: Flags::default(),
            peer: conn.peer,
            bytes_received: req.body().size_hint().exact().unwrap_or(0),
            istio_peer: istio_peer.take(),
            answer_peer,
            grpc,
            cluster: None,
            peer_identity: conn.peer_identity.clone(),
            request_headers: match logging {
                true => access_log::KeptValues::keep(&self.log_headers, req.headers()),
                false => Default::default(),
            },
            local: conn.local,
            server_name: conn.server_name.clone(),
            tls: conn.tls,
            trace,
        };
        let (parts, body) = req.into_parts();
        let mut x = Exchange {
            routes: &self.virtual_hosts,
            no_route: &self.stats.no_route,
            buffer_limit: self.buffer_limit,
            conn: &conn,
            parts,
            body: Some(body),
            authority,
            selected,
            flags: Flags::default(),
            upstream: None,
            request_auth: None,
            cors_origin: None,
            metadata: telemetry
                .filter(|t| t.reporter == Reporter::Source)
                .map(|t| &t.headers),
            upstream_cluster: None,
        };
        let response = self.chain.run(&mut x).await;
        log.route = x.selected;
        log.upstream = x.upstream;
        log.flags = x.flags;
        log.cluster = x.upstream_cluster.take();
        log.finish(response)
    }
}

/// The request's authority as its log reads it: the Host header's value (shared with
/// the request, not copied), or the URI's (HTTP/2).
enum LoggedAuthority {
    Host(http::HeaderValue),
    Uri(String),
    /// No log reads it (or the request had none).
    Unread,
}

impl LoggedAuthority {
    fn as_str(&self) -> &str {
        match self {
            LoggedAuthority::Host(h) => h.to_str().unwrap_or_default(),
            LoggedAuthority::Uri(a) => a,
            LoggedAuthority::Unread => "",
        }
    }
}

/// Per-request facts for stats and the access log.
struct LogContext {
    manager: Arc<HttpManager>,
    started: Instant,
    /// When the request started (Envoy's `START_TIME`), for the log.
    started_at: Option<std::time::SystemTime>,
    method: http::Method,
    authority: LoggedAuthority,
    /// None without a log, or for a request without a path (CONNECT).
    path: Option<http::uri::PathAndQuery>,
    protocol: http::Version,
    route: Option<(usize, usize)>,
    upstream: Option<SocketAddr>,
    flags: Flags,
    peer: SocketAddr,
    bytes_received: u64,
    /// The other side's workload, from its metadata headers.
    istio_peer: Option<istio_stats::Peer>,
    /// The client sent its metadata: the server's side answers with its own.
    answer_peer: bool,
    grpc: bool,
    /// The cluster the request went to.
    cluster: Option<Arc<Cluster>>,
    peer_identity: Option<Arc<str>>,
    /// The request headers the access log format reads.
    request_headers: access_log::KeptValues,
    local: SocketAddr,
    server_name: Option<Arc<str>>,
    tls: bool,
    /// The request's span, when its trace is recorded.
    trace: Option<Box<SpanFacts>>,
}

/// What a recorded span says of its request, taken as it arrives.
struct SpanFacts {
    started: trellis_trace::Started,
    /// The route's operation (Istio's `<host>:<port>/*`), or the authority and path.
    name: String,
    url: String,
    method: String,
    protocol: &'static str,
    user_agent: Option<String>,
    request_id: Option<String>,
}

impl SpanFacts {
    fn of(
        started: trellis_trace::Started,
        req: &Request<Incoming>,
        authority: &str,
        operation: Option<String>,
        tls: bool,
    ) -> SpanFacts {
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        // Envoy's `http.url` takes the scheme the request was first made with.
        let scheme = header("x-forwarded-proto")
            .unwrap_or_else(|| if tls { "https" } else { "http" }.to_string());
        SpanFacts {
            started,
            name: operation.unwrap_or_else(|| format!("{authority}{}", req.uri().path())),
            url: format!("{scheme}://{authority}{path}"),
            method: req.method().as_str().to_string(),
            protocol: protocol_name(req.version()),
            user_agent: header("user-agent"),
            request_id: header("x-request-id"),
        }
    }
}

fn protocol_name(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_2 => "HTTP/2",
        http::Version::HTTP_10 => "HTTP/1.0",
        _ => "HTTP/1.1",
    }
}

impl LogContext {
    fn start_time(&self) -> access_log::Timestamp {
        access_log::Timestamp::at(self.started_at.unwrap_or_else(std::time::SystemTime::now))
    }

    fn path(&self) -> &str {
        self.path.as_ref().map_or("", |p| p.as_str())
    }

    fn finish(mut self, mut response: Response<Body>) -> Response<Body> {
        let status = response.status().as_u16();
        if let Some((vh, r)) = self.route {
            self.manager.virtual_hosts[vh].routes[r]
                .stats
                .record(status, self.started.elapsed().as_secs_f64());
        }
        let mut grpc_status = None;
        if let Some(t) = &self.manager.telemetry {
            match t.reporter {
                // The client's side reads the server's metadata off the response.
                Reporter::Source => {
                    self.istio_peer = istio_stats::take_peer(&t.metrics, response.headers_mut())
                }
                Reporter::Destination if self.answer_peer => {
                    t.headers.insert(response.headers_mut())
                }
                Reporter::Destination => {}
            }
            grpc_status = grpc_status_of(response.headers());
        }
        if self.manager.access_log.is_none()
            && self.manager.telemetry.is_none()
            && self.trace.is_none()
        {
            return response;
        }
        // Envoy's formats may read the response's headers.
        let response_headers = match self.manager.access_log {
            Some(_) => {
                access_log::KeptValues::keep(&self.manager.log_response_headers, response.headers())
            }
            None => Default::default(),
        };
        response.map(|b| {
            LoggedBody {
                inner: b,
                sent: 0,
                status,
                grpc_status,
                response_headers,
                ctx: Some(self),
            }
            .boxed()
        })
    }
}

static GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");

/// A gRPC status (`grpc-status`, in the headers of a trailers-only response or in the
/// trailers).
fn grpc_status_of(headers: &http::HeaderMap) -> Option<u16> {
    headers
        .get(&GRPC_STATUS)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Counts response bytes, and when the body ends records Istio's metrics and writes
/// the access log line.
struct LoggedBody {
    inner: Body,
    sent: u64,
    status: u16,
    grpc_status: Option<u16>,
    response_headers: access_log::KeptValues,
    ctx: Option<LogContext>,
}

impl LoggedBody {
    fn emit(&mut self) {
        let Some(mut ctx) = self.ctx.take() else {
            return;
        };
        if let Some(facts) = ctx.trace.take() {
            self.end_span(&ctx, *facts);
        }
        if let Some(t) = &ctx.manager.telemetry {
            t.record(&istio_stats::RequestRecord {
                peer: ctx.istio_peer.take(),
                peer_identity: ctx.peer_identity.take(),
                service: ctx.cluster.as_ref().and_then(|c| c.istio_service.clone()),
                status: self.status,
                grpc: ctx.grpc,
                grpc_status: self.grpc_status,
                flags: ctx.flags,
                duration_ms: ctx.started.elapsed().as_secs_f64() * 1000.0,
                request_bytes: ctx.bytes_received,
                response_bytes: self.sent,
            });
        }
        let Some(log) = &ctx.manager.access_log else {
            return;
        };
        if !matches!(ctx.manager.log_format, LogFormat::Entry) {
            return self.envoy_line(&ctx, log);
        }
        let (virtual_host, route) = ctx
            .route
            .map(|(vh, r)| {
                let vh = &ctx.manager.virtual_hosts[vh];
                (vh.name.as_str(), vh.routes[r].name.as_str())
            })
            .unwrap_or(("-", "-"));
        log.write(&access_log::Entry {
            timestamp: ctx.start_time(),
            method: ctx.method.as_str(),
            authority: ctx.authority.as_str(),
            path: ctx.path(),
            protocol: protocol_name(ctx.protocol),
            status: self.status,
            bytes_received: ctx.bytes_received,
            bytes_sent: self.sent,
            duration_ms: ctx.started.elapsed().as_secs_f64() * 1000.0,
            upstream_host: ctx.upstream.map(|a| a.to_string()),
            listener: &ctx.manager.listener,
            virtual_host,
            route,
            response_flags: ctx.flags.render(),
            downstream_remote: ctx.peer.to_string(),
        });
    }
}

impl LoggedBody {
    /// Hands the request's span to the exporter, with Envoy's tags.
    fn end_span(&self, ctx: &LogContext, facts: SpanFacts) {
        use trellis_trace::Value::{Int, Str};
        let Some(tracer) = &ctx.manager.tracer else {
            return;
        };
        let mut attributes = vec![
            ("component", Str("proxy".into())),
            ("node_id", Str(tracer.node_id.clone())),
            ("http.url", Str(facts.url)),
            ("http.method", Str(facts.method)),
            ("http.protocol", Str(facts.protocol.into())),
            ("http.status_code", Int(self.status as i64)),
            ("peer.address", Str(ctx.peer.to_string())),
            ("request_size", Int(ctx.bytes_received as i64)),
            ("response_size", Int(self.sent as i64)),
            ("response_flags", Str(ctx.flags.render().into_owned())),
        ];
        if let Some(ua) = facts.user_agent {
            attributes.push(("user_agent", Str(ua)));
        }
        if let Some(id) = facts.request_id {
            attributes.push(("guid:x-request-id", Str(id)));
        }
        if let Some(c) = &ctx.cluster {
            attributes.push(("upstream_cluster", Str(c.name.clone())));
            attributes.push(("upstream_cluster.name", Str(c.name.clone())));
        }
        if let Some(a) = ctx.upstream {
            attributes.push(("upstream_address", Str(a.to_string())));
        }
        let error = self.status >= 500;
        if error {
            attributes.push(("error", Str("true".into())));
        }
        tracer.exporter.submit(trellis_trace::Span {
            started: facts.started,
            end: std::time::SystemTime::now(),
            kind: tracer.kind,
            name: facts.name,
            error,
            attributes,
            tags: tracer.tags.clone(),
        });
    }

    /// The line of an Envoy format.
    fn envoy_line(&self, ctx: &LogContext, log: &AccessLog) {
        let flags = ctx.flags.render();
        let route = ctx
            .route
            .map(|(vh, r)| ctx.manager.virtual_hosts[vh].routes[r].name.as_str());
        let start_time = ctx.start_time();
        let record = access_log::format::Record {
            start_time: start_time.as_str(),
            method: ctx.method.as_str(),
            path: ctx.path(),
            authority: ctx.authority.as_str(),
            scheme: if ctx.tls { "https" } else { "http" },
            request_headers: access_log::KeptHeaders {
                names: &ctx.manager.log_headers,
                values: &ctx.request_headers,
            },
            response_headers: access_log::KeptHeaders {
                names: &ctx.manager.log_response_headers,
                values: &self.response_headers,
            },
            protocol: protocol_name(ctx.protocol),
            status: self.status,
            flags: &flags,
            via_upstream: ctx.upstream.is_some() && flags == "-",
            bytes_received: ctx.bytes_received,
            bytes_sent: self.sent,
            duration_ms: ctx.started.elapsed().as_millis() as u64,
            upstream_host: ctx.upstream,
            upstream_cluster: ctx.cluster.as_ref().map(|c| c.name.as_str()),
            downstream_local: ctx.local,
            downstream_remote: ctx.peer,
            peer_uri_san: ctx.peer_identity.as_deref(),
            server_name: ctx.server_name.as_deref(),
            route: route.filter(|r| !r.is_empty()),
        };
        let mut line = String::with_capacity(256);
        match &ctx.manager.log_format {
            LogFormat::Text(f) => record.text(f, &mut line),
            LogFormat::Json(fields) => record.json(fields, &mut line),
            LogFormat::Entry => return,
        }
        log.write_line(line);
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        self.emit();
    }
}

impl http_body::Body for LoggedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    self.sent += d.len() as u64;
                } else if let Some(status) = f.trailers_ref().and_then(grpc_status_of) {
                    self.grpc_status = Some(status);
                }
            }
            Poll::Ready(None) => self.emit(),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
