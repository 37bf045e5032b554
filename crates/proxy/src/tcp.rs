//! The TCP proxy: each downstream connection is spliced to one upstream endpoint.

use crate::access_log::{format, AccessLog, LogFormat};
use crate::cluster::outlier::Outcome;
use crate::cluster::Cluster;
use crate::conn::ConnInfo;
use crate::http::flags::Flags;
use crate::io::{Activity, ActivityIo};
use crate::istio_stats::{ListenerTelemetry, Peer, TcpSeries};
use crate::sniff::Prefixed;
use crate::stats::ListenerStats;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use trellis_tls::MaybeTls;
use xxhash_rust::xxh64::xxh64;

pub struct TcpProxy {
    /// The clusters with their weights (one, weight 1, without weighted clusters).
    pub clusters: Vec<(crate::cluster::ClusterRef, u32)>,
    pub stats: ListenerStats,
    pub authz: Option<Arc<crate::authz::ListenerAuthz>>,
    /// Istio's TCP metrics for this listener.
    pub telemetry: Option<Arc<ListenerTelemetry>>,
    /// This workload's metadata frame, for upstreams that take `istio-peer-exchange`.
    pub peer_frame: bytes::Bytes,
    /// A line per connection when it closes.
    pub access_log: Option<TcpLog>,
}

/// A TCP proxy's access log and its format.
pub struct TcpLog {
    pub log: AccessLog,
    pub format: LogFormat,
    pub listener: String,
}

/// What a connection's line says.
struct Closed<'a> {
    started: (std::time::Instant, std::time::SystemTime),
    flags: Flags,
    upstream: Option<std::net::SocketAddr>,
    cluster: &'a str,
    received: u64,
    sent: u64,
}

impl TcpLog {
    fn write(&self, conn: &ConnInfo, c: Closed<'_>) {
        let flags = c.flags.render();
        let duration = c.started.0.elapsed();
        let mut line = String::with_capacity(256);
        let start_time = crate::access_log::Timestamp::at(c.started.1);
        let none = crate::access_log::KeptValues::default();
        let headers = crate::access_log::KeptHeaders {
            names: &[],
            values: &none,
        };
        let record = format::Record {
            start_time: start_time.as_str(),
            method: "",
            path: "",
            authority: "",
            scheme: "",
            request_headers: headers,
            response_headers: headers,
            protocol: "",
            status: 0,
            flags: &flags,
            via_upstream: c.upstream.is_some(),
            bytes_received: c.received,
            bytes_sent: c.sent,
            duration_ms: duration.as_millis() as u64,
            upstream_host: c.upstream,
            upstream_cluster: Some(c.cluster),
            downstream_local: conn.local,
            downstream_remote: conn.peer,
            peer_uri_san: conn.peer_identity.as_deref(),
            server_name: conn.server_name.as_deref(),
            route: None,
        };
        match &self.format {
            LogFormat::Text(f) => record.text(f, &mut line),
            LogFormat::Json(fields) => record.json(fields, &mut line),
            LogFormat::Entry => {
                let upstream = c.upstream.map(|a| a.to_string());
                return self.log.write(&crate::access_log::Entry {
                    timestamp: start_time,
                    method: "-",
                    authority: "-",
                    path: "-",
                    protocol: "tcp",
                    status: 0,
                    bytes_received: c.received,
                    bytes_sent: c.sent,
                    duration_ms: duration.as_secs_f64() * 1000.0,
                    upstream_host: upstream,
                    listener: &self.listener,
                    virtual_host: "-",
                    route: "-",
                    response_flags: flags,
                    downstream_remote: conn.peer.to_string(),
                });
            }
        }
        self.log.write_line(line);
    }
}

/// Envoy's tcp_proxy tries one endpoint by default; we allow one more so a single
/// dead endpoint does not fail a connection that another endpoint could take.
const CONNECT_ATTEMPTS: usize = 2;

impl TcpProxy {
    pub fn new(
        config: &trellis_config::TcpProxy,
        clusters: &crate::cluster::ClusterSet,
        stats: ListenerStats,
        authz: Option<Arc<crate::authz::ListenerAuthz>>,
        telemetry: Option<Arc<ListenerTelemetry>>,
        peer_frame: bytes::Bytes,
        access_log: Option<TcpLog>,
    ) -> TcpProxy {
        let clusters = match config.weighted_clusters.is_empty() {
            true => vec![(crate::http::named(clusters, &config.cluster), 1)],
            false => config
                .weighted_clusters
                .iter()
                .filter(|w| w.weight > 0)
                .map(|w| (crate::http::named(clusters, &w.name), w.weight))
                .collect(),
        };
        TcpProxy {
            clusters,
            stats,
            authz,
            telemetry,
            peer_frame,
            access_log,
        }
    }

    /// This connection's cluster, by weight.
    fn cluster(&self) -> Arc<Cluster> {
        if let [(only, _)] = self.clusters.as_slice() {
            return only.get();
        }
        let total: u32 = self.clusters.iter().map(|(_, w)| w).sum();
        let mut x = rand::Rng::gen_range(&mut rand::thread_rng(), 0..total);
        for (c, w) in &self.clusters {
            if x < *w {
                return c.get();
            }
            x -= w;
        }
        self.clusters[0].0.get()
    }

    pub async fn serve<S>(&self, downstream: S, conn: &ConnInfo, idle_timeout: Duration)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        // The L4 subset of the listener's AuthorizationPolicy, once per connection.
        if let Some(authz) = &self.authz {
            if !authz.check(conn, None) {
                return;
            }
        }
        let started = (std::time::Instant::now(), std::time::SystemTime::now());
        let cluster = self.cluster();
        let peer = conn.peer;
        let hash = Some(xxh64(peer.ip().to_string().as_bytes(), 0));
        let mut upstream = None;
        let mut no_endpoint = false;
        for _ in 0..CONNECT_ATTEMPTS {
            let Some(endpoint) = cluster.pick(hash, conn.original_dst) else {
                no_endpoint = true;
                break;
            };
            match cluster.connect_tcp(&endpoint).await {
                Ok(pair) => {
                    cluster.record_outcome(&endpoint, Outcome::Status(200));
                    upstream = Some((pair, endpoint.addr));
                    break;
                }
                Err(e) => {
                    tracing::debug!(cluster = %cluster.name, "tcp proxy: {e}");
                    cluster.record_outcome(&endpoint, Outcome::ConnectFailure);
                }
            }
        }
        let flags = match (&upstream, no_endpoint) {
            (Some(_), _) => Flags::default(),
            (None, true) => Flags::NO_HEALTHY_UPSTREAM,
            (None, false) => Flags::UPSTREAM_CONNECT_FAILURE,
        };
        let series = |peer: Option<Peer>| {
            self.telemetry.as_ref().map(|t| {
                t.tcp(
                    peer,
                    conn.peer_identity.as_ref(),
                    cluster.istio_service.as_ref(),
                    flags,
                )
            })
        };
        let log = |upstream, received, sent| {
            if let Some(l) = &self.access_log {
                l.write(
                    conn,
                    Closed {
                        started,
                        flags,
                        upstream,
                        cluster: &cluster.name,
                        received,
                        sent,
                    },
                );
            }
        };
        let Some(((up, _slot), endpoint)) = upstream else {
            if let Some(mut s) = series(conn.peer_metadata.clone()) {
                s.report(0, 0, true);
            }
            log(None, 0, 0);
            return;
        };
        // The client's side learns the server's workload from its frame; the server's
        // side learned the client's before this.
        let (mut up, peer) = match &up {
            MaybeTls::Tls(s)
                if crate::peer_exchange::negotiated(s.ssl().selected_alpn_protocol()) =>
            {
                crate::peer_exchange::exchange(up, &self.peer_frame).await
            }
            _ => (Prefixed::new(Vec::new(), up), conn.peer_metadata.clone()),
        };
        let mut series = series(peer);
        let activity = Activity::new();
        let mut down = ActivityIo::new(downstream, activity.clone());
        let copy = tokio::io::copy_bidirectional(&mut down, &mut up);
        tokio::pin!(copy);
        let tick = (idle_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
        // Istio's byte counts go out as they move, not only at the close; the close
        // also writes the log line.
        let report = |series: &mut Option<TcpSeries>, closed: bool| {
            let (rx, tx) = (
                activity.received.load(Ordering::Relaxed),
                activity.sent.load(Ordering::Relaxed),
            );
            if let Some(s) = series {
                s.report(rx, tx, closed);
            }
            if closed {
                log(Some(endpoint), rx, tx);
            }
        };
        loop {
            tokio::select! {
                done = &mut copy => {
                    if let Ok((rx, tx)) = done {
                        self.stats.tcp_rx.inc_by(rx);
                        self.stats.tcp_tx.inc_by(tx);
                    }
                    report(&mut series, true);
                    return;
                }
                _ = tokio::time::sleep(tick) => {
                    let idle = activity.is_idle(idle_timeout);
                    report(&mut series, idle);
                    if idle {
                        return;
                    }
                }
            }
        }
    }
}
