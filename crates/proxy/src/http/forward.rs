//! Sending a routed request upstream: cluster choice by weight, circuit breakers,
//! retries with backoff, per-try and whole-request timeouts, mirroring and upgrades.

use super::flags::Flags;
use super::headers::strip_hop_by_hop;
use super::reply::local_reply;
use crate::body::{self, Body};
use crate::cluster::outlier::Outcome;
use crate::cluster::{Cluster, UpstreamError};
use crate::istio_stats::OwnHeaders;
use bytes::Bytes;
use http::header::HOST;
use http::uri::{Authority, PathAndQuery};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use rand::Rng;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use trellis_config::{HashPolicy, RetryPolicy};
use xxhash_rust::xxh64::xxh64;

pub struct RetryRule {
    num_retries: u32,
    per_try_timeout: Option<Duration>,
    on_5xx: bool,
    on_gateway_error: bool,
    on_connect_failure: bool,
    on_reset: bool,
    status_codes: Vec<u16>,
}

impl RetryRule {
    pub fn new(p: &RetryPolicy) -> Self {
        let has = |t: &str| p.retry_on.split(',').any(|x| x.trim() == t);
        RetryRule {
            num_retries: p.num_retries,
            per_try_timeout: p.per_try_timeout.map(|d| d.get()).filter(|d| !d.is_zero()),
            on_5xx: has("5xx"),
            on_gateway_error: has("gateway-error"),
            on_connect_failure: has("connect-failure"),
            on_reset: has("reset"),
            status_codes: if has("retriable-status-codes") {
                p.retriable_status_codes.clone()
            } else {
                Vec::new()
            },
        }
    }

    fn retries(&self, outcome: Outcome) -> bool {
        match outcome {
            Outcome::Status(s) => {
                (self.on_5xx && s >= 500)
                    || (self.on_gateway_error && (502..=504).contains(&s))
                    || self.status_codes.contains(&s)
            }
            Outcome::ConnectFailure => {
                self.on_5xx || self.on_gateway_error || self.on_connect_failure
            }
            Outcome::Reset => self.on_5xx || self.on_reset,
            Outcome::Timeout => self.on_5xx || self.on_gateway_error,
        }
    }
}

/// A cluster a route sends to, its weight, and the header edits that go with it (Envoy's
/// weighted cluster headers, Istio's per-destination `headers`).
pub struct Target {
    pub cluster: crate::cluster::ClusterRef,
    pub weight: u32,
    pub request: super::headers::Mutations,
    pub response: super::headers::Mutations,
}

pub struct Forward {
    pub targets: Vec<Target>,
    pub total_weight: u32,
    /// (length of the matched prefix, replacement); the whole path for path/regex routes.
    pub prefix_rewrite: Option<(Option<usize>, String)>,
    /// Every match in the path replaced (Envoy's regex_rewrite; the substitution in the
    /// regex crate's form, `${1}` for Envoy's `\1`).
    pub regex_rewrite: Option<(regex::Regex, String)>,
    pub host_rewrite: Option<HeaderValue>,
    pub timeout: Option<Duration>,
    pub retry: Option<RetryRule>,
    pub mirror: Option<(crate::cluster::ClusterRef, f64)>,
    pub hash_policy: Vec<HashPolicy>,
}

/// The request as routing left it, ready to be turned into one or more attempts.
pub struct Outgoing {
    pub method: Method,
    pub authority: String,
    pub path_and_query: PathAndQuery,
    pub headers: HeaderMap,
    pub peer: SocketAddr,
    /// Where the downstream connection was going, when it was captured (for
    /// `original_dst` clusters).
    pub original_dst: Option<SocketAddr>,
}

pub struct Forwarded {
    pub response: Response<Body>,
    pub upstream: Option<SocketAddr>,
    pub flags: Flags,
}

enum ReqBody {
    Buffered(Bytes),
    Streamed(Option<Incoming>),
}

impl Forward {
    fn pick(&self) -> &Target {
        if self.targets.len() == 1 {
            return &self.targets[0];
        }
        let mut x = rand::thread_rng().gen_range(0..self.total_weight);
        for t in &self.targets {
            if x < t.weight {
                return t;
            }
            x -= t.weight;
        }
        &self.targets[self.targets.len() - 1]
    }

    /// Applies the route's path and authority rewrites.
    pub fn rewrite(&self, out: &mut Outgoing) {
        if let Some((prefix_len, replacement)) = &self.prefix_rewrite {
            let (path, query) = (out.path_and_query.path(), out.path_and_query.query());
            let rest = match prefix_len {
                Some(n) => path.get(*n..).unwrap_or(""),
                None => "",
            };
            out.path_and_query = path_and_query(format!("{replacement}{rest}"), query);
        }
        if let Some((pattern, substitution)) = &self.regex_rewrite {
            let (path, query) = (out.path_and_query.path(), out.path_and_query.query());
            let new = pattern
                .replace_all(path, substitution.as_str())
                .into_owned();
            out.path_and_query = path_and_query(new, query);
        }
        if let Some(h) = &self.host_rewrite {
            out.authority = h.to_str().unwrap_or_default().to_string();
        }
    }

    fn hash_key(&self, out: &Outgoing) -> Option<u64> {
        self.hash_policy.iter().find_map(|p| {
            if let Some(h) = &p.header {
                let v = out.headers.get(h.as_str())?;
                Some(xxh64(v.as_bytes(), 0))
            } else {
                let ip = out.peer.ip().to_string();
                Some(xxh64(ip.as_bytes(), 0))
            }
        })
    }

    /// Sends the request to one of the route's clusters; `metadata`, this workload's
    /// peer metadata, goes with it when that cluster is a mesh service. Also returns
    /// that cluster.
    pub async fn forward(
        &self,
        mut out: Outgoing,
        body: Incoming,
        buffer_limit: usize,
        upgrade: Option<hyper::upgrade::OnUpgrade>,
        metadata: Option<&OwnHeaders>,
    ) -> (Forwarded, Arc<Cluster>) {
        let target = self.pick();
        let cluster = target.cluster.get();
        target.request.apply(&mut out.headers);
        if let Some(m) = metadata.filter(|_| cluster.in_mesh) {
            m.insert(&mut out.headers);
        }
        let mut forwarded = self
            .forward_to(cluster.clone(), out, body, buffer_limit, upgrade)
            .await;
        target.response.apply(forwarded.response.headers_mut());
        (forwarded, cluster)
    }

    async fn forward_to(
        &self,
        cluster: Arc<Cluster>,
        mut out: Outgoing,
        body: Incoming,
        buffer_limit: usize,
        upgrade: Option<hyper::upgrade::OnUpgrade>,
    ) -> Forwarded {
        let Some(guard) = cluster.start_request() else {
            return fail(UpstreamError::Overflow("max_requests"));
        };
        strip_hop_by_hop(&mut out.headers, upgrade.is_some());
        let replayable = self.retry.is_some() || self.mirror.is_some();
        let mut body = if replayable && upgrade.is_none() && fits(&body, buffer_limit) {
            match Limited::new(body, buffer_limit).collect().await {
                Ok(b) => ReqBody::Buffered(b.to_bytes()),
                Err(e) => {
                    return Forwarded {
                        response: local_reply(
                            StatusCode::BAD_REQUEST,
                            &format!("request body: {e}"),
                        ),
                        upstream: None,
                        flags: Flags::DOWNSTREAM_ERROR,
                    }
                }
            }
        } else {
            ReqBody::Streamed(Some(body))
        };
        if let (Some((mirror, percent)), ReqBody::Buffered(b)) = (&self.mirror, &body) {
            if rand::thread_rng().gen_range(0.0..100.0) < *percent {
                spawn_mirror(mirror.get(), &out, b.clone());
            }
        }
        let hash = self.hash_key(&out);
        let downstream_failed = Arc::new(AtomicBool::new(false));
        let attempts = async {
            let mut flags = Flags::default();
            let mut retried = 0;
            let mut _retry_guard = None;
            loop {
                let Some(endpoint) = cluster.pick(hash, out.original_dst) else {
                    flags.set(Flags::NO_HEALTHY_UPSTREAM);
                    return Forwarded {
                        response: local_reply(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "no healthy upstream",
                        ),
                        upstream: None,
                        flags,
                    };
                };
                let attempt_body = match &mut body {
                    ReqBody::Buffered(b) => body::full(b.clone()),
                    ReqBody::Streamed(b) => match b.take() {
                        // Nothing to stream (a GET): no body to watch for failures.
                        Some(inner) if http_body::Body::is_end_stream(&inner) => body::empty(),
                        Some(inner) => Downstream {
                            inner,
                            failed: downstream_failed.clone(),
                        }
                        .boxed(),
                        None => body::empty(),
                    },
                };
                let can_replay = matches!(body, ReqBody::Buffered(_));
                // Without a retry policy this is the only attempt: its headers move.
                let req = build_request(
                    &mut out,
                    attempt_body,
                    cluster.config.http2,
                    self.retry.is_none(),
                );
                let started = Instant::now();
                let send = cluster.send(&endpoint, req, upgrade.is_some());
                let per_try = self.retry.as_ref().and_then(|r| r.per_try_timeout);
                let result = match per_try {
                    Some(t) => tokio::time::timeout(t, send)
                        .await
                        .unwrap_or(Err(UpstreamError::Timeout)),
                    None => send.await,
                };
                if result.is_err() && downstream_failed.load(Ordering::Relaxed) {
                    // The client sent a broken body (bad chunking, early close): its
                    // fault, not the upstream's.
                    return Forwarded {
                        response: local_reply(StatusCode::BAD_REQUEST, "malformed request body"),
                        upstream: Some(endpoint.addr),
                        flags: Flags::DOWNSTREAM_ERROR,
                    };
                }
                let outcome = match &result {
                    Ok(resp) => Outcome::Status(resp.status().as_u16()),
                    Err(UpstreamError::ConnectFailure(_)) => Outcome::ConnectFailure,
                    Err(UpstreamError::Timeout) => Outcome::Timeout,
                    Err(UpstreamError::Reset(_)) => Outcome::Reset,
                    Err(UpstreamError::Overflow(_)) => {
                        return fail(result.err().unwrap());
                    }
                };
                match &result {
                    Ok(resp) => cluster
                        .stats
                        .record(resp.status().as_u16(), started.elapsed().as_secs_f64()),
                    Err(UpstreamError::Timeout) => {
                        cluster.stats.rq_timeout.inc();
                    }
                    Err(UpstreamError::Reset(_)) => {
                        cluster.stats.rq_reset.inc();
                    }
                    Err(_) => {}
                }
                cluster.record_outcome(&endpoint, outcome);
                let wants_retry = self
                    .retry
                    .as_ref()
                    .is_some_and(|r| retried < r.num_retries && r.retries(outcome));
                if wants_retry && can_replay {
                    if let Some(g) = cluster.start_retry() {
                        _retry_guard = Some(g);
                        retried += 1;
                        drop(result);
                        tokio::time::sleep(backoff(retried)).await;
                        continue;
                    }
                    flags.set(Flags::RETRY_LIMIT);
                } else if wants_retry {
                    flags.set(Flags::RETRY_LIMIT);
                }
                return match result {
                    Ok(mut resp) => {
                        let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
                        let up =
                            (switching && upgrade.is_some()).then(|| hyper::upgrade::on(&mut resp));
                        let (mut parts, mut ubody) = resp.into_parts();
                        ubody.hold(guard);
                        if let Some(up) = up {
                            if let Some(down) = upgrade {
                                tokio::spawn(splice(down, up));
                                parts.headers.insert(
                                    http::header::CONNECTION,
                                    HeaderValue::from_static("upgrade"),
                                );
                                return Forwarded {
                                    response: Response::from_parts(parts, body::empty()),
                                    upstream: Some(endpoint.addr),
                                    flags,
                                };
                            }
                        }
                        strip_hop_by_hop(&mut parts.headers, false);
                        Forwarded {
                            response: Response::from_parts(parts, ubody.boxed()),
                            upstream: Some(endpoint.addr),
                            flags,
                        }
                    }
                    Err(e) => {
                        let mut f = fail(e);
                        f.upstream = Some(endpoint.addr);
                        f.flags.set(flags);
                        f
                    }
                };
            }
        };
        match self.timeout {
            Some(t) => match tokio::time::timeout(t, attempts).await {
                Ok(f) => f,
                Err(_) => {
                    cluster.stats.rq_timeout.inc();
                    Forwarded {
                        response: local_reply(
                            StatusCode::GATEWAY_TIMEOUT,
                            "upstream request timeout",
                        ),
                        upstream: None,
                        flags: Flags::UPSTREAM_TIMEOUT,
                    }
                }
            },
            None => attempts.await,
        }
    }
}

fn fail(e: UpstreamError) -> Forwarded {
    let (flag, status, text) = match &e {
        UpstreamError::Overflow(_) => (
            Flags::UPSTREAM_OVERFLOW,
            StatusCode::SERVICE_UNAVAILABLE,
            "upstream connect error or disconnect/reset before headers. reset reason: overflow".to_string(),
        ),
        UpstreamError::ConnectFailure(m) => (
            Flags::UPSTREAM_CONNECT_FAILURE,
            StatusCode::SERVICE_UNAVAILABLE,
            format!("upstream connect error or disconnect/reset before headers. reset reason: connection failure ({m})"),
        ),
        UpstreamError::Timeout => (
            Flags::UPSTREAM_TIMEOUT,
            StatusCode::GATEWAY_TIMEOUT,
            "upstream request timeout".to_string(),
        ),
        UpstreamError::Reset(_) => (
            Flags::UPSTREAM_RESET,
            StatusCode::SERVICE_UNAVAILABLE,
            "upstream connect error or disconnect/reset before headers. reset reason: connection termination".to_string(),
        ),
    };
    Forwarded {
        response: local_reply(status, &text),
        upstream: None,
        flags: flag,
    }
}

/// Envoy's default retry back-off: jittered, 25 ms base doubling to a 250 ms cap.
fn backoff(retry: u32) -> Duration {
    let ceiling = (25u64 << retry.min(4)).min(250);
    Duration::from_millis(rand::thread_rng().gen_range(0..=ceiling))
}

fn fits(body: &Incoming, limit: usize) -> bool {
    use http_body::Body as _;
    body.size_hint().upper().is_some_and(|n| n <= limit as u64)
}

/// A rewritten path with the request's query after it; one that is not a valid request
/// target becomes `/`.
fn path_and_query(mut path: String, query: Option<&str>) -> PathAndQuery {
    if let Some(q) = query {
        path.push('?');
        path.push_str(q);
    }
    PathAndQuery::try_from(path).unwrap_or_else(|_| PathAndQuery::from_static("/"))
}

/// One attempt's request. `last`: no attempt follows, so the headers are moved, not
/// copied.
fn build_request(out: &mut Outgoing, body: Body, http2: bool, last: bool) -> Request<Body> {
    let mut req = Request::new(body);
    *req.method_mut() = out.method.clone();
    *req.headers_mut() = match last {
        true => std::mem::take(&mut out.headers),
        false => out.headers.clone(),
    };
    let pq = out.path_and_query.clone();
    if http2 {
        *req.version_mut() = Version::HTTP_2;
        let authority = Authority::try_from(out.authority.as_str()).ok();
        let mut uri = Uri::builder().scheme("http").path_and_query(pq.clone());
        if let Some(a) = authority {
            uri = uri.authority(a);
        }
        *req.uri_mut() = uri.build().unwrap_or_else(|_| Uri::from(pq));
        req.headers_mut().remove(HOST);
    } else {
        *req.version_mut() = Version::HTTP_11;
        *req.uri_mut() = Uri::from(pq);
        // The request's own Host header stays unless the authority was rewritten.
        let same = req.headers().get(HOST).map(|h| h.as_bytes()) == Some(out.authority.as_bytes());
        if !same {
            if let Ok(v) = HeaderValue::from_str(&out.authority) {
                req.headers_mut().insert(HOST, v);
            }
        }
    }
    req
}

fn spawn_mirror(cluster: Arc<Cluster>, out: &Outgoing, body: Bytes) {
    // Envoy marks shadow traffic by suffixing the authority's host with -shadow.
    let authority = match out.authority.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => format!("{h}-shadow:{p}"),
        _ => format!("{}-shadow", out.authority),
    };
    let mut shadow = Outgoing {
        method: out.method.clone(),
        authority,
        path_and_query: out.path_and_query.clone(),
        headers: out.headers.clone(),
        peer: out.peer,
        original_dst: None,
    };
    tokio::spawn(async move {
        let Some(guard) = cluster.start_request() else {
            return;
        };
        let Some(endpoint) = cluster.pick(None, None) else {
            return;
        };
        let req = build_request(&mut shadow, body::full(body), cluster.config.http2, true);
        let started = Instant::now();
        if let Ok(resp) = cluster.send(&endpoint, req, false).await {
            cluster
                .stats
                .record(resp.status().as_u16(), started.elapsed().as_secs_f64());
            let _ = resp.into_body().collect().await;
        }
        drop(guard);
    });
}

/// Joins the two halves of an upgraded connection and copies bytes both ways.
async fn splice(down: hyper::upgrade::OnUpgrade, up: hyper::upgrade::OnUpgrade) {
    let (down, up) = match tokio::try_join!(down, up) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!("upgrade failed: {e}");
            return;
        }
    };
    let mut down = hyper_util::rt::TokioIo::new(down);
    let mut up = hyper_util::rt::TokioIo::new(up);
    let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
}

/// A streamed downstream body that remembers whether the client broke it.
struct Downstream {
    inner: Incoming,
    failed: Arc<AtomicBool>,
}

impl http_body::Body for Downstream {
    type Data = Bytes;
    type Error = crate::body::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Err(_))) = &polled {
            self.failed.store(true, Ordering::Relaxed);
        }
        polled.map(|o| o.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
