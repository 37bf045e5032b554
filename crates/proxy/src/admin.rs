//! The admin listener: stats, config dump, clusters, listeners, readiness.
//! It runs on the main (single-threaded) runtime, never on the data-path workers,
//! so a stats scrape cannot add latency to traffic.

use crate::body::{self, Body};
use crate::cluster::Cluster;
use crate::stats::Metrics;
use arc_swap::ArcSwap;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::net::TcpListener;

/// What the admin endpoints show; replaced as a whole on every applied config.
pub struct AdminView {
    pub serving: Arc<crate::serving::Serving>,
    /// In no order (sorted when asked for).
    pub clusters: Vec<Arc<Cluster>>,
    pub listeners: Vec<(String, Vec<SocketAddr>)>,
}

pub struct AdminState {
    pub view: ArcSwap<AdminView>,
    pub metrics: Arc<Metrics>,
    pub draining: AtomicBool,
    pub identity: Option<Arc<crate::identity::Agent>>,
}

pub async fn serve(listener: TcpListener, state: Arc<AdminState>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn handle(state: &AdminState, req: Request<hyper::body::Incoming>) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "admin endpoints are read-only (GET)\n",
        );
    }
    match req.uri().path() {
        "/ready" => {
            if state.draining.load(Ordering::Relaxed) {
                text(StatusCode::SERVICE_UNAVAILABLE, "DRAINING\n")
            } else {
                text(StatusCode::OK, "LIVE\n")
            }
        }
        "/healthz" => text(StatusCode::OK, "OK\n"),
        "/certs" => {
            let mut certs = crate::identity::describe(state.identity.as_deref());
            certs["trust_bundles"] = crate::trust::describe(&state.view.load().serving);
            json_reply(certs)
        }
        "/stats/prometheus" | "/metrics" => {
            let mut r = Response::new(body::full(state.metrics.encode()));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
            );
            r
        }
        "/config_dump" => {
            let view = state.view.load();
            json_reply(serde_json::to_value(view.serving.to_config()).unwrap_or_default())
        }
        "/listeners" => {
            let view = state.view.load();
            json_reply(json!(view
                .listeners
                .iter()
                .map(|(name, addrs)| json!({"name": name, "addresses": addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>()}))
                .collect::<Vec<_>>()))
        }
        "/clusters" => json_reply(clusters_json(&state.view.load().clusters)),
        _ => text(
            StatusCode::NOT_FOUND,
            "admin endpoints: /ready /healthz /stats/prometheus /config_dump /clusters /listeners\n",
        ),
    }
}

fn clusters_json(clusters: &[Arc<Cluster>]) -> serde_json::Value {
    let mut clusters: Vec<&Arc<Cluster>> = clusters.iter().collect();
    clusters.sort_by(|a, b| a.name.cmp(&b.name));
    json!(clusters
        .iter()
        .map(|c| {
            let now = c.now_ms();
            let tls = c.tls.load().is_some();
            json!({
                "name": c.name,
                "lb_policy": c.config.lb_policy,
                "endpoints": c.endpoints().iter().map(|e| {
                    let until = e.health.ejected_until_ms();
                    let ejected = !e.health.is_available(now);
                    json!({
                        "address": e.addr.to_string(),
                        "weight": e.weight,
                        // Whether connections to it originate the cluster's TLS.
                        "tls": tls && !e.plaintext,
                        "active_requests": e.active_requests(),
                        "health": if ejected { "ejected" } else { "healthy" },
                        "ejection_count": e.health.ejection_count(),
                        "ejected_for_ms": if ejected { until.saturating_sub(now) } else { 0 },
                    })
                }).collect::<Vec<_>>(),
            })
        })
        .collect::<Vec<_>>())
}

fn text(status: StatusCode, s: &'static str) -> Response<Body> {
    let mut r = Response::new(body::full(s));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

fn json_reply(v: serde_json::Value) -> Response<Body> {
    let mut s = serde_json::to_string_pretty(&v).unwrap_or_default();
    s.push('\n');
    let mut r = Response::new(body::full(s));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}
