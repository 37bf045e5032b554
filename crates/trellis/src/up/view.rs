//! The built-in client and the live view of `trellis up`.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::meshfile::Traffic;
use super::Running;
use trellis_dashboard::model::RequestRow;

/// How the built-in client reaches the services.
pub(crate) enum Entry {
    /// Through the client's sidecar as an HTTP proxy.
    Proxy(SocketAddr),
    /// From the client's `--netns` host, to each service's virtual IP (by name), captured.
    Captured {
        namespace: String,
        vips: BTreeMap<String, std::net::IpAddr>,
    },
}

impl Entry {
    /// Where a request for `url` connects, its Host and its path.
    pub fn target(&self, url: &str) -> Option<(SocketAddr, String, String)> {
        let uri: hyper::Uri = url.parse().ok()?;
        let authority = uri.authority()?.to_string();
        let path = uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_else(|| "/".into());
        let addr = match self {
            Entry::Proxy(a) => *a,
            Entry::Captured { vips, .. } => {
                let vip = vips.get(uri.host()?)?;
                SocketAddr::new(*vip, uri.port_u16().unwrap_or(80))
            }
        };
        Some((addr, authority, path))
    }
}

pub(crate) struct Setup {
    pub entry: Entry,
    /// Where the mesh's gateways serve.
    pub ingress: Vec<String>,
    pub traffic: Option<Traffic>,
    pub sidecars: Vec<Running>,
    pub config_dir: PathBuf,
    pub logs: PathBuf,
    pub xds: String,
    pub duration: Option<Duration>,
    pub bypass_pins: Option<PathBuf>,
    /// Where the web dashboard serves (bound already).
    pub dashboard: Option<std::net::TcpListener>,
    /// The control plane's status address.
    pub control_status: String,
    pub dashboard_url: Option<String>,
}

/// What the client saw for one request line.
#[derive(Default, Clone)]
struct Line {
    sent: u64,
    by_class: [u64; 4], // 2xx-3xx, 4xx, 5xx, transport error
    served_by: BTreeMap<String, u64>,
    latencies_us: Vec<u64>,
}

type Http = Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>;

pub(crate) async fn drive(mut setup: Setup) -> anyhow::Result<String> {
    let http: Http = Client::builder(TokioExecutor::new()).build_http();
    let dashboard = match setup.dashboard.take() {
        Some(l) => {
            let d = trellis_dashboard::Dashboard::default();
            tokio::spawn(d.clone().serve(tokio::net::TcpListener::from_std(l)?));
            Some(d)
        }
        None => None,
    };
    let mut scraped: Option<trellis_dashboard::Scrape> = None;
    let requests = setup
        .traffic
        .as_ref()
        .map(|t| t.requests.as_slice())
        .unwrap_or(&[]);
    let total = Arc::new(Mutex::new(vec![Line::default(); requests.len()]));
    let window = Arc::new(Mutex::new(vec![Line::default(); requests.len()]));
    // A weighted round robin over the request lines.
    let schedule: Vec<usize> = requests
        .iter()
        .enumerate()
        .flat_map(|(i, r)| std::iter::repeat_n(i, r.weight.max(1) as usize))
        .collect();
    let rps = setup.traffic.as_ref().map(|t| t.rps).unwrap_or(0);
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rps.max(1))));
    let mut report = tokio::time::interval(Duration::from_secs(1));
    report.tick().await;
    let started = Instant::now();
    let tty = std::io::stdout().is_terminal();
    let mut n = 0usize;
    // Listeners made once: a signal that arrives while the loop is busy (say, scraping
    // sidecars) is kept for the next select, where a fresh ctrl_c() would miss it.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    loop {
        tokio::select! {
            _ = ticker.tick(), if rps > 0 && !schedule.is_empty() => {
                let i = schedule[n % schedule.len()];
                n += 1;
                let r = &requests[i];
                // Through the client's sidecar (as a proxy, or captured), which routes by
                // the Host header.
                let Some((addr, authority, path)) = setup.entry.target(&r.url) else {
                    anyhow::bail!("traffic: {}: not http://<service>:<port>/<path> of a service in the mesh file", r.url);
                };
                let mut req = hyper::Request::get(format!("http://{addr}{path}"))
                    .header(hyper::header::HOST, authority);
                for (k, v) in &r.headers {
                    req = req.header(k.as_str(), v.as_str());
                }
                let req = req.body(Empty::<Bytes>::new())?;
                let (http, total, window) = (http.clone(), total.clone(), window.clone());
                tokio::spawn(async move {
                    let t = Instant::now();
                    let result = tokio::time::timeout(Duration::from_secs(10), http.request(req)).await;
                    let us = t.elapsed().as_micros() as u64;
                    let (class, served) = match &result {
                        Ok(Ok(resp)) => {
                            let class = match resp.status().as_u16() {
                                s if s < 400 => 0,
                                s if s < 500 => 1,
                                _ => 2,
                            };
                            let by = resp.headers().get("x-served-by").and_then(|v| v.to_str().ok()).unwrap_or("(sidecar)").to_string();
                            (class, Some(by))
                        }
                        _ => (3, None),
                    };
                    for t in [&total, &window] {
                        let mut lines = t.lock().unwrap();
                        let line = &mut lines[i];
                        line.sent += 1;
                        line.by_class[class] += 1;
                        if let Some(by) = &served {
                            *line.served_by.entry(by.clone()).or_default() += 1;
                        }
                        line.latencies_us.push(us);
                    }
                    if let Ok(Ok(resp)) = result {
                        let _ = resp.into_body().collect().await;
                    }
                });
            }
            _ = report.tick() => {
                let last = std::mem::replace(&mut *window.lock().unwrap(), vec![Line::default(); requests.len()]);
                let health = sidecar_health(&http, &setup.sidecars).await;
                let rows = request_rows(&setup, &last, &total.lock().unwrap());
                if let Some(d) = &dashboard {
                    let scrape = trellis_dashboard::Scrape::parse(
                        health.texts.iter().map(String::as_str),
                        Instant::now(),
                    );
                    let edges = scraped
                        .as_ref()
                        .map(|before| trellis_dashboard::edges(before, &scrape))
                        .unwrap_or_default();
                    scraped = Some(scrape);
                    let config = control_status(&http, &setup.control_status).await;
                    let state = dashboard_state(&setup, rows.clone(), &health, edges, config, started.elapsed());
                    d.publish(&state);
                }
                let text = render(&setup, &rows, &health, started.elapsed());
                let mut out = std::io::stdout().lock();
                if tty {
                    let _ = write!(out, "\x1b[2J\x1b[H{text}");
                } else if started.elapsed().as_secs().is_multiple_of(5) {
                    let _ = writeln!(out, "{text}");
                }
                let _ = out.flush();
                if setup.duration.is_some_and(|d| started.elapsed() >= d) {
                    break;
                }
            }
            _ = int.recv() => break,
            _ = term.recv() => break,
        }
    }
    let lines = total.lock().unwrap();
    let sent: u64 = lines.iter().map(|l| l.sent).sum();
    let errors: u64 = lines.iter().map(|l| l.by_class[2] + l.by_class[3]).sum();
    Ok(format!(
        "trellis up: stopped after {} requests ({errors} answered 5xx or failed)",
        sent
    ))
}

/// Per sidecar: connected to xDS, certificate installed.
#[derive(Default)]
struct Health {
    connected: usize,
    certified: usize,
    accepted_updates: f64,
    rejected_updates: f64,
    /// Each sidecar's facts, in the order of the setup's sidecars.
    sidecars: Vec<SidecarFacts>,
    /// The sidecars' metrics as scraped.
    texts: Vec<String>,
}

#[derive(Default, Clone, Copy)]
struct SidecarFacts {
    connected: bool,
    cert_expiry: Option<f64>,
    accepted: f64,
    rejected: f64,
}

async fn get_text(http: &Http, url: &str) -> Option<String> {
    let uri = url.parse::<hyper::Uri>().ok()?;
    let resp = tokio::time::timeout(Duration::from_millis(500), http.get(uri))
        .await
        .ok()?
        .ok()?;
    let body = resp.into_body().collect().await.ok()?;
    Some(String::from_utf8_lossy(&body.to_bytes()).into_owned())
}

async fn sidecar_health(http: &Http, sidecars: &[Running]) -> Health {
    let mut h = Health::default();
    for s in sidecars {
        let Some(text) = get_text(http, &format!("http://{}/stats/prometheus", s.admin)).await
        else {
            h.sidecars.push(SidecarFacts::default());
            continue;
        };
        let value = |prefix: &str| crate::metric_sum(&text, prefix);
        let facts = SidecarFacts {
            connected: value("trellis_xds_connected ") >= 1.0,
            cert_expiry: Some(value("trellis_identity_cert_expiry_timestamp_seconds "))
                .filter(|t| *t > 0.0),
            accepted: value("trellis_xds_updates_total{result=\"accepted\"}"),
            rejected: value("trellis_xds_updates_total{result=\"rejected\"}"),
        };
        h.connected += usize::from(facts.connected);
        h.certified += usize::from(facts.cert_expiry.is_some());
        h.accepted_updates += facts.accepted;
        h.rejected_updates += facts.rejected;
        h.sidecars.push(facts);
        h.texts.push(text);
    }
    h
}

/// What the control plane refused and warned, from its status page.
async fn control_status(http: &Http, addr: &str) -> trellis_dashboard::model::ConfigStatus {
    let doc: serde_json::Value = get_text(http, &format!("http://{addr}/status"))
        .await
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    trellis_dashboard::model::ConfigStatus {
        generation: doc["generation"].as_u64().unwrap_or(0),
        refused: doc["refused"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
        warnings: doc["warnings"].as_array().map_or(0, Vec::len),
        rejected_by_proxies: doc["rejected_by_proxies"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|r| {
                        format!(
                            "{} ({}): {}",
                            r["node"].as_str().unwrap_or("?"),
                            r["type"].as_str().unwrap_or("?"),
                            r["message"].as_str().unwrap_or("")
                        )
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// The dashboard's state: the sidecars as nodes, the graph's edges, the request table.
fn dashboard_state(
    setup: &Setup,
    requests: Vec<RequestRow>,
    health: &Health,
    edges: Vec<trellis_dashboard::model::Edge>,
    config: trellis_dashboard::model::ConfigStatus,
    elapsed: Duration,
) -> trellis_dashboard::model::State {
    use trellis_dashboard::model::{Node, State};
    let nodes = setup
        .sidecars
        .iter()
        .zip(
            health
                .sidecars
                .iter()
                .copied()
                .chain(std::iter::repeat(SidecarFacts::default())),
        )
        .map(|(r, f)| Node {
            id: r.name.clone(),
            service: r.service.clone(),
            namespace: r.namespace.clone(),
            kind: r.kind.into(),
            tenant: r.tenant.0.clone(),
            trust_domain: r.tenant.1.clone(),
            identity: r.identity.clone(),
            cert_expiry: f.cert_expiry,
            xds_connected: f.connected,
            updates_accepted: f.accepted,
            updates_rejected: f.rejected,
        })
        .collect();
    State {
        title: format!(
            "local mesh, {} workloads, control plane {}",
            setup
                .sidecars
                .iter()
                .filter(|r| r.kind == "workload")
                .count(),
            setup.xds
        ),
        uptime_s: elapsed.as_secs(),
        nodes,
        edges,
        requests,
        config,
        certificates: true,
    }
}

/// A request line as the tables show it: its URL and the headers it sets.
fn request_label(r: &super::meshfile::RequestDef) -> String {
    if r.headers.is_empty() {
        r.url.clone()
    } else {
        format!(
            "{} +{}",
            r.url,
            r.headers.keys().cloned().collect::<Vec<_>>().join(",")
        )
    }
}

/// The request table, once per report for both views: the last second's rate and
/// latencies, the counts and who served since the start.
fn request_rows(setup: &Setup, last: &[Line], total: &[Line]) -> Vec<RequestRow> {
    let requests = setup
        .traffic
        .as_ref()
        .map(|t| t.requests.as_slice())
        .unwrap_or(&[]);
    requests
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let (w, t) = (&last[i], &total[i]);
            let served: u64 = t.served_by.values().sum();
            let mut latencies = w.latencies_us.clone();
            latencies.sort_unstable();
            RequestRow {
                request: request_label(r),
                rps: w.sent as f64,
                ok: t.by_class[0],
                client_errors: t.by_class[1],
                server_errors: t.by_class[2] + t.by_class[3],
                p50_ms: percentile_ms(&latencies, 0.5),
                p99_ms: percentile_ms(&latencies, 0.99),
                served_by: t
                    .served_by
                    .iter()
                    .map(|(k, n)| format!("{k} {:.0}%", 100.0 * *n as f64 / served.max(1) as f64))
                    .collect::<Vec<_>>()
                    .join("  "),
            }
        })
        .collect()
}

/// The `p` quantile of sorted latencies in µs, in ms.
fn percentile_ms(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize] as f64 / 1000.0
}

fn render(setup: &Setup, rows: &[RequestRow], health: &Health, elapsed: Duration) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let workloads = setup
        .sidecars
        .iter()
        .filter(|r| r.service != "client")
        .count();
    let _ = writeln!(
        s,
        "Trellis local mesh — up {}s — {} workloads; control plane (xDS over mutual TLS) {}",
        elapsed.as_secs(),
        workloads,
        setup.xds
    );
    let _ = writeln!(
        s,
        "sidecars: {}/{} connected to xDS, {}/{} with certificates; config updates accepted {} rejected {}",
        health.connected,
        setup.sidecars.len(),
        health.certified,
        setup.sidecars.len(),
        health.accepted_updates,
        health.rejected_updates
    );
    // With tenants: each workload's tenant and trust domain.
    if setup.sidecars.iter().any(|r| r.tenant.0 != "default") {
        let mut by_tenant: std::collections::BTreeMap<&(String, String), Vec<&str>> =
            Default::default();
        for r in &setup.sidecars {
            by_tenant.entry(&r.tenant).or_default().push(&r.name);
        }
        let shown: Vec<String> = by_tenant
            .iter()
            .map(|((t, td), names)| format!("{t} ({td}): {}", names.join(", ")))
            .collect();
        let _ = writeln!(s, "tenants: {}", shown.join(" · "));
    }
    if let Some(pins) = &setup.bypass_pins {
        match trellis_bypass::status(pins) {
            Ok(b) => {
                let _ = writeln!(
                    s,
                    "eBPF bypass on {}: {} sockets tracked, {} messages ({:.1} MiB) skipped TCP/IP, {} took the normal path",
                    b.cgroup,
                    b.sockets_tracked,
                    b.counters.msgs_redirected,
                    b.counters.bytes_redirected as f64 / (1024.0 * 1024.0),
                    b.counters.msgs_passed
                );
            }
            Err(e) => {
                let _ = writeln!(s, "eBPF bypass: {e}");
            }
        }
    }
    let _ = writeln!(
        s,
        "\n{:<40} {:>6} {:>6} {:>6} {:>6} {:>8} {:>8}  served by (since start)",
        "request (through the client sidecar)", "req/s", "2xx3xx", "4xx", "5xx", "p50 ms", "p99 ms"
    );
    for r in rows {
        let _ = writeln!(
            s,
            "{:<40} {:>6} {:>6} {:>6} {:>6} {:>8.1} {:>8.1}  {}",
            r.request,
            r.rps,
            r.ok,
            r.client_errors,
            r.server_errors,
            r.p50_ms,
            r.p99_ms,
            r.served_by
        );
    }
    let _ = match &setup.entry {
        Entry::Proxy(client) => writeln!(
            s,
            "\ntry:  curl -x http://{client} http://<service>:<port>/   (the client sidecar as HTTP proxy)"
        ),
        Entry::Captured { namespace, .. } => writeln!(
            s,
            "\ntry:  ip netns exec {namespace} curl http://<service>:<port>/   (captured by the client's sidecar)"
        ),
    };
    for url in &setup.ingress {
        let _ = writeln!(s, "ingress: {url}");
    }
    if let Some(url) = &setup.dashboard_url {
        let _ = writeln!(s, "dashboard: {url}");
    }
    let _ = writeln!(
        s,
        "edit: {} (Istio resources; applied live)   logs: {}   Ctrl-C stops",
        setup.config_dir.display(),
        setup.logs.display()
    );
    s
}
