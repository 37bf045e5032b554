//! `trellis demo-app`: a small upstream service for demos, tests and benchmarks.
//!
//! It answers on HTTP/1.1 and h2c and can be told to misbehave, per request with
//! query parameters or for every request through its control endpoints:
//!
//! - `GET /anything` — JSON describing the request as received (method, path,
//!   query, headers), `peer` (the connection's source address) and `service`;
//!   header `x-served-by: <name>`.
//! - `?status=503` — answer with that status; `?delay=200ms` — wait first;
//!   `x-echo-set-header: name:value,...` — those response headers too.
//! - `GET /size/N` — N bytes of body (benchmarks use `/size/1024`).
//! - `POST /echo` — the request body back.
//! - `content-type: application/grpc` — echoes the gRPC message frames and ends
//!   with trailers `grpc-status: 0` and `x-served-by`.
//! - `Upgrade: websocket` — `101 Switching Protocols`, then echoes bytes.
//! - `POST /control/fail?rate=0.3&status=503`, `POST /control/delay?d=100ms`,
//!   `POST /control/reset` — change behaviour for all later requests.
//! - `GET /control/stats` — requests served, by status.
//! - With `--call URL` (see [`calls`]): every described request first calls those
//!   services, propagating its trace headers, and lists their answers as `calls`.

pub mod calls;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE, UPGRADE};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rand::Rng;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

type Body = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

#[derive(Clone, Debug, Default)]
pub struct Behaviour {
    /// Fraction of requests (0..=1) answered with `fail_status`.
    pub fail_rate: f64,
    pub fail_status: u16,
    pub delay: Duration,
    /// Services called while answering a request.
    pub calls: calls::Calls,
}

pub struct DemoApp {
    name: String,
    behaviour: Mutex<Behaviour>,
    served: AtomicU64,
    by_status: Mutex<BTreeMap<u16, u64>>,
}

impl DemoApp {
    pub fn new(name: &str, behaviour: Behaviour) -> Arc<Self> {
        Arc::new(DemoApp {
            name: name.to_string(),
            behaviour: Mutex::new(behaviour),
            served: AtomicU64::new(0),
            by_status: Mutex::new(BTreeMap::new()),
        })
    }

    /// Serves on an already bound listener until the task is dropped.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let _ = stream.set_nodelay(true);
            let app = self.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |mut req: Request<Incoming>| {
                    // The connection's source, as the app sees it (echoed as `peer`).
                    req.extensions_mut().insert(Peer(peer));
                    let app = app.clone();
                    async move { Ok::<_, Infallible>(app.handle(req).await) }
                });
                let mut builder = auto::Builder::new(TokioExecutor::new());
                // Answer clients that shut down their sending side after the request.
                builder.http1().half_close(true);
                let _ = builder
                    .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                    .await;
            });
        }
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let mut response = self.respond(req).await;
        self.served.fetch_add(1, Ordering::Relaxed);
        *self
            .by_status
            .lock()
            .unwrap()
            .entry(response.status().as_u16())
            .or_default() += 1;
        if let Ok(v) = HeaderValue::from_str(&self.name) {
            response.headers_mut().insert("x-served-by", v);
        }
        response
    }

    async fn respond(&self, mut req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or("").to_string();
        let param = |k: &str| query_param(&query, k);
        if let Some(r) = self.control(req.method(), &path, &query) {
            return r;
        }
        let behaviour = self.behaviour.lock().unwrap().clone();
        let delay = param("delay")
            .and_then(|d| parse_duration(&d))
            .unwrap_or(behaviour.delay);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if let Some(status) = param("status").and_then(|s| s.parse::<u16>().ok()) {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            return text(
                status,
                &format!("{} status {}\n", self.name, status.as_u16()),
            );
        }
        if behaviour.fail_rate > 0.0 && rand::thread_rng().gen_bool(behaviour.fail_rate.min(1.0)) {
            let status = StatusCode::from_u16(behaviour.fail_status)
                .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            return text(status, &format!("{} failing on purpose\n", self.name));
        }
        if req.headers().contains_key(UPGRADE) {
            return self.upgrade(&mut req);
        }
        let is_grpc = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/grpc"));
        if is_grpc {
            return self.grpc(req).await;
        }
        if let Some(n) = path
            .strip_prefix("/size/")
            .and_then(|n| n.parse::<usize>().ok())
        {
            return Response::new(full(vec![b'x'; n.min(64 << 20)]));
        }
        if path == "/echo" {
            return match req.into_body().collect().await {
                Ok(b) => Response::new(full(b.to_bytes())),
                Err(e) => text(StatusCode::BAD_REQUEST, &format!("reading body: {e}\n")),
            };
        }
        let peer = req.extensions().get::<Peer>().map(|p| p.0.to_string());
        let calls: Vec<serde_json::Value> = behaviour
            .calls
            .make(req.headers())
            .await
            .into_iter()
            .map(|o| {
                serde_json::json!({
                    "url": o.url, "status": o.status, "served_by": o.served_by, "error": o.error,
                })
            })
            .collect();
        let description = serde_json::json!({
            "calls": calls,
            "service": self.name,
            "peer": peer,
            "method": req.method().as_str(),
            "path": path,
            "query": query,
            "version": format!("{:?}", req.version()),
            "headers": headers_json(req.headers()),
        });
        let mut r = Response::new(full(description.to_string()));
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        // `x-echo-set-header: name:value,name2:value2` sets response headers (as the
        // Gateway API conformance suite's echo server does).
        let set = req.headers().get_all("x-echo-set-header");
        for pair in set
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
        {
            let Some((name, value)) = pair.split_once(':') else {
                continue;
            };
            if let (Ok(n), Ok(v)) = (
                http::header::HeaderName::from_bytes(name.trim().as_bytes()),
                HeaderValue::from_str(value.trim()),
            ) {
                r.headers_mut().append(n, v);
            }
        }
        r
    }

    fn control(&self, method: &http::Method, path: &str, query: &str) -> Option<Response<Body>> {
        let param = |k: &str| query_param(query, k);
        let reply = match (method.as_str(), path) {
            ("POST", "/control/fail") => {
                let mut b = self.behaviour.lock().unwrap();
                b.fail_rate = param("rate").and_then(|r| r.parse().ok()).unwrap_or(1.0);
                b.fail_status = param("status").and_then(|s| s.parse().ok()).unwrap_or(503);
                format!(
                    "{} now fails {}% with {}\n",
                    self.name,
                    b.fail_rate * 100.0,
                    b.fail_status
                )
            }
            ("POST", "/control/delay") => {
                let mut b = self.behaviour.lock().unwrap();
                b.delay = param("d")
                    .and_then(|d| parse_duration(&d))
                    .unwrap_or_default();
                format!("{} now delays {:?}\n", self.name, b.delay)
            }
            ("POST", "/control/reset") => {
                *self.behaviour.lock().unwrap() = Behaviour::default();
                format!("{} behaves normally\n", self.name)
            }
            ("GET", "/control/stats") => {
                let by_status = self.by_status.lock().unwrap().clone();
                serde_json::json!({
                    "service": self.name,
                    "served": self.served.load(Ordering::Relaxed),
                    "by_status": by_status,
                })
                .to_string()
            }
            _ => return None,
        };
        Some(text(StatusCode::OK, &reply))
    }

    fn upgrade(&self, req: &mut Request<Incoming>) -> Response<Body> {
        let protocol = req
            .headers()
            .get(UPGRADE)
            .cloned()
            .unwrap_or(HeaderValue::from_static("websocket"));
        let on_upgrade = hyper::upgrade::on(req);
        tokio::spawn(async move {
            if let Ok(upgraded) = on_upgrade.await {
                let io = TokioIo::new(upgraded);
                let (mut r, mut w) = tokio::io::split(io);
                let _ = tokio::io::copy(&mut r, &mut w).await;
            }
        });
        let mut r = Response::new(empty());
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        r.headers_mut().insert(UPGRADE, protocol);
        r.headers_mut().insert(
            http::header::CONNECTION,
            HeaderValue::from_static("upgrade"),
        );
        r
    }

    /// Echoes the request's gRPC frames and finishes with trailers, as a unary or
    /// streaming gRPC server would.
    async fn grpc(&self, req: Request<Incoming>) -> Response<Body> {
        let body = match req.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return text(StatusCode::BAD_REQUEST, &format!("reading body: {e}\n")),
        };
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        trailers.insert("grpc-message", HeaderValue::from_static("OK"));
        if let Ok(v) = HeaderValue::from_str(&self.name) {
            trailers.insert("x-served-by", v);
        }
        let frames: Vec<Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>> =
            vec![Ok(Frame::data(body)), Ok(Frame::trailers(trailers))];
        let stream = futures_util::stream::iter(frames);
        let mut r = Response::new(StreamBody::new(stream).boxed());
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        r
    }
}

/// Binds and serves in the background; returns the bound addresses.
pub async fn start(app: Arc<DemoApp>, addrs: &[SocketAddr]) -> std::io::Result<Vec<SocketAddr>> {
    let mut bound = Vec::new();
    for a in addrs {
        let l = TcpListener::bind(a).await?;
        bound.push(l.local_addr()?);
        tokio::spawn(app.clone().serve(l));
    }
    Ok(bound)
}

fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then(|| v.to_string())
    })
}

fn parse_duration(s: &str) -> Option<Duration> {
    trellis_config::parse_duration(s).ok()
}

fn headers_json(h: &HeaderMap) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    for (k, v) in h {
        let v = String::from_utf8_lossy(v.as_bytes()).to_string();
        match map.get_mut(k.as_str()) {
            Some(serde_json::Value::String(existing)) => {
                existing.push(',');
                existing.push_str(&v);
            }
            _ => {
                map.insert(k.as_str().to_string(), serde_json::Value::String(v));
            }
        }
    }
    serde_json::Value::Object(map)
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|e| match e {}).boxed()
}

fn empty() -> Body {
    full(Bytes::new())
}

fn text(status: StatusCode, s: &str) -> Response<Body> {
    let mut r = Response::new(full(s.to_string()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

/// The TCP peer of a request's connection.
#[derive(Clone, Copy)]
struct Peer(std::net::SocketAddr);
