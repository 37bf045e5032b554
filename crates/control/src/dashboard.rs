//! The control plane's dashboard (`trellis control --dashboard ADDR`): the page of
//! `trellis-dashboard` with what the control plane knows — every workload of the
//! registry with its tenant and identity and whether its sidecar holds an xDS stream,
//! the inputs it refused and what each proxy refuses now — and, with `--prometheus`,
//! the service graph from the Prometheus that scrapes the sidecars (Istio's metrics over
//! the last minute, as Kiali reads them). The control plane does not reach the sidecars'
//! admin ports itself: in a cluster they answer on the pod's loopback only. With the
//! embedded CA, a workload's certificate expiry is that of the last certificate the CA
//! issued for its identity.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use trellis_dashboard::model::{ConfigStatus, Edge, Node, State};

use crate::ControlPlane;

#[derive(Clone, Debug)]
pub struct DashboardOptions {
    pub listen: SocketAddr,
    /// Prometheus' base URL, for the graph.
    pub prometheus: Option<String>,
}

type Http = Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>;

/// How often the page's state is made again.
const EVERY: Duration = Duration::from_secs(2);

/// Serves the dashboard on `listener` and keeps its state current.
pub(crate) async fn serve(
    listener: TcpListener,
    plane: Arc<ControlPlane>,
    xds: Arc<trellis_xds::ServerStats>,
    ca: Option<Arc<trellis_ca::CaCounters>>,
    prometheus: Option<String>,
) -> anyhow::Result<()> {
    let dashboard = trellis_dashboard::Dashboard::default();
    tokio::spawn(dashboard.clone().serve(listener));
    let http: Http = Client::builder(TokioExecutor::new()).build_http();
    let started = Instant::now();
    loop {
        let edges = match &prometheus {
            Some(url) => graph(&http, url).await,
            None => Vec::new(),
        };
        dashboard.publish(&state(
            &plane,
            &xds,
            ca.as_deref(),
            edges,
            started.elapsed(),
        ));
        tokio::time::sleep(EVERY).await;
    }
}

fn state(
    plane: &ControlPlane,
    xds: &trellis_xds::ServerStats,
    ca: Option<&trellis_ca::CaCounters>,
    edges: Vec<Edge>,
    uptime: Duration,
) -> State {
    let expiries = ca
        .map(|c| c.expiries.lock().unwrap_or_else(|e| e.into_inner()).clone())
        .unwrap_or_default();
    let connected: Vec<(String, String)> = xds
        .connected
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .keys()
        .filter_map(|node| trellis_mesh::workload_of(node))
        .collect();
    let nodes = {
        let state = plane.state.lock().unwrap_or_else(|e| e.into_inner());
        let (inputs, registry) = (&state.0, &state.1);
        registry
            .workloads
            .iter()
            .map(|w| {
                let (tenant, trust_domain) = match &inputs.trust {
                    Some(t) => {
                        let t = t.tenant_of(&w.namespace);
                        (t.name.clone(), t.trust_domain.clone())
                    }
                    None => ("default".into(), "cluster.local".into()),
                };
                let identity = format!(
                    "spiffe://{trust_domain}/ns/{}/sa/{}",
                    w.namespace, w.service_account
                );
                Node {
                    cert_expiry: expiries.get(&identity).map(|t| *t as f64),
                    id: w.name.clone(),
                    service: w.labels.get("app").cloned().unwrap_or_default(),
                    namespace: w.namespace.clone(),
                    kind: if w.has_sidecar() {
                        "workload"
                    } else {
                        "endpoint"
                    }
                    .into(),
                    identity,
                    tenant,
                    trust_domain,
                    xds_connected: connected
                        .iter()
                        .any(|(ns, name)| *ns == w.namespace && *name == w.name),
                    updates_accepted: 0.0,
                    updates_rejected: 0.0,
                }
            })
            .collect()
    };
    let status = plane.status().borrow().clone();
    let rejected = xds
        .rejections()
        .into_iter()
        .map(|(node, kind, message)| format!("{node} ({kind}): {message}"))
        .collect();
    State {
        title: format!(
            "control plane, {} services, {} workloads",
            status.services, status.workloads
        ),
        uptime_s: uptime.as_secs(),
        nodes,
        edges,
        requests: Vec::new(),
        config: ConfigStatus {
            generation: status.generation,
            refused: status.refused.clone(),
            warnings: status.warnings.len(),
            rejected_by_proxies: rejected,
        },
        // With the embedded CA, the last certificate it issued for each identity.
        certificates: ca.is_some(),
    }
}

/// The service graph over the last minute, from Istio's metrics in Prometheus (the
/// server's side, as Kiali counts).
async fn graph(http: &Http, prometheus: &str) -> Vec<Edge> {
    const BY: &str = "source_workload, destination_workload";
    let rate = |filter: &str| {
        format!(
            "sum by ({BY}) (rate(istio_requests_total{{reporter=\"destination\"{filter}}}[1m]))"
        )
    };
    let quantile = |q: f64| {
        format!("histogram_quantile({q}, sum by ({BY}, le) (rate(istio_request_duration_milliseconds_bucket{{reporter=\"destination\"}}[1m])))")
    };
    let total = format!("sum by ({BY}) (istio_requests_total{{reporter=\"destination\"}})");
    let (rps, errors, mtls, p50, p99, totals) = (
        query(http, prometheus, &rate("")).await,
        query(http, prometheus, &rate(",response_code=~\"5..\"")).await,
        query(
            http,
            prometheus,
            &rate(",connection_security_policy=\"mutual_tls\""),
        )
        .await,
        query(http, prometheus, &quantile(0.5)).await,
        query(http, prometheus, &quantile(0.99)).await,
        query(http, prometheus, &total).await,
    );
    totals
        .iter()
        .map(|(key, total)| {
            let of = |m: &BTreeMap<(String, String), f64>| m.get(key).copied();
            let r = of(&rps).unwrap_or(0.0);
            Edge {
                source: key.0.clone(),
                destination: key.1.clone(),
                rps: r,
                error_rate: if r > 0.0 {
                    of(&errors).unwrap_or(0.0) / r
                } else {
                    0.0
                },
                p50_ms: of(&p50).filter(|v| v.is_finite()),
                p99_ms: of(&p99).filter(|v| v.is_finite()),
                mtls: of(&mtls).is_some(),
                total: *total,
            }
        })
        .collect()
}

/// An instant query's vector, by (source, destination) workload; empty on any error
/// (the page then shows no edge rather than a wrong one).
async fn query(http: &Http, prometheus: &str, q: &str) -> BTreeMap<(String, String), f64> {
    let url = format!(
        "{}/api/v1/query?query={}",
        prometheus.trim_end_matches('/'),
        encode(q)
    );
    let Ok(uri) = url.parse::<hyper::Uri>() else {
        return BTreeMap::new();
    };
    let Ok(Ok(resp)) = tokio::time::timeout(Duration::from_secs(2), http.get(uri)).await else {
        return BTreeMap::new();
    };
    let Ok(body) = resp.into_body().collect().await else {
        return BTreeMap::new();
    };
    let doc: serde_json::Value = serde_json::from_slice(&body.to_bytes()).unwrap_or_default();
    doc["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| {
            let m = &r["metric"];
            let key = (
                m["source_workload"].as_str()?.to_string(),
                m["destination_workload"].as_str()?.to_string(),
            );
            let value: f64 = r["value"][1].as_str()?.parse().ok()?;
            Some((key, value))
        })
        .collect()
}

/// Percent-encoding of a query parameter (RFC 3986 unreserved characters kept).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
