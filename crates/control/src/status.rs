//! The control plane's status page (`trellis control --status-listen`, istiod's
//! monitoring port 15014 in spirit): `GET /status` answers JSON with what the last
//! reload accepted and refused, what proxies refuse now and why (their last NACK of
//! each type), the tenants (their trust domains, roots and
//! federations) and the CA's counters. Read-only, plaintext: bind it to loopback.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::{ControlPlane, Status};

pub(crate) fn document(
    status: &Status,
    ca: Option<&trellis_ca::CaCounters>,
    xds: &trellis_xds::ServerStats,
) -> serde_json::Value {
    // What proxies refuse now, with their reasons (their last NACK of each type).
    let rejected: Vec<serde_json::Value> = xds
        .rejections()
        .into_iter()
        .map(|(node, kind, message)| {
            serde_json::json!({ "node": node, "type": kind, "message": message })
        })
        .collect();
    serde_json::json!({
        "rejected_by_proxies": rejected,
        "generation": status.generation,
        "services": status.services,
        "workloads": status.workloads,
        "refused": status.refused,
        "warnings": status.warnings,
        "tenants": status.tenants,
        "ca": ca.map(|c| serde_json::json!({
            "issued": c.issued.load(Ordering::Relaxed),
            "refused": c.refused.load(Ordering::Relaxed),
            "refused_cross_tenant": c.cross_tenant.load(Ordering::Relaxed),
        })),
    })
}

/// Serves `/status` until the future is dropped.
pub(crate) async fn serve(
    listener: TcpListener,
    plane: Arc<ControlPlane>,
    ca: Option<Arc<trellis_ca::CaCounters>>,
    xds: Arc<trellis_xds::ServerStats>,
) -> anyhow::Result<()> {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (plane, ca, xds) = (plane.clone(), ca.clone(), xds.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                let reply = match (req.method(), req.uri().path()) {
                    (&http::Method::GET, "/status") => {
                        let status = plane.status().borrow().clone();
                        let body = document(&status, ca.as_deref(), &xds).to_string();
                        Response::builder()
                            .header(http::header::CONTENT_TYPE, "application/json")
                            .body(Full::new(Bytes::from(body)))
                    }
                    (&http::Method::GET, _) => Response::builder()
                        .status(StatusCode::NOT_FOUND)
                        .body(Full::new(Bytes::from_static(b"GET /status\n"))),
                    _ => Response::builder()
                        .status(StatusCode::METHOD_NOT_ALLOWED)
                        .body(Full::new(Bytes::from_static(b"read-only (GET)\n"))),
                };
                async move { Ok::<_, Infallible>(reply.expect("a valid response")) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
