//! The TCP proxy: each downstream connection is spliced to one upstream endpoint.

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
    pub clusters: Vec<(Arc<Cluster>, u32)>,
    pub stats: ListenerStats,
    pub authz: Option<Arc<crate::authz::ListenerAuthz>>,
    /// Istio's TCP metrics for this listener.
    pub telemetry: Option<Arc<ListenerTelemetry>>,
    /// This workload's metadata frame, for upstreams that take `istio-peer-exchange`.
    pub peer_frame: bytes::Bytes,
}

/// Envoy's tcp_proxy tries one endpoint by default; we allow one more so a single
/// dead endpoint does not fail a connection that another endpoint could take.
const CONNECT_ATTEMPTS: usize = 2;

impl TcpProxy {
    pub fn new(
        config: &trellis_config::TcpProxy,
        clusters: &std::collections::HashMap<String, Arc<Cluster>>,
        stats: ListenerStats,
        authz: Option<Arc<crate::authz::ListenerAuthz>>,
        telemetry: Option<Arc<ListenerTelemetry>>,
        peer_frame: bytes::Bytes,
    ) -> TcpProxy {
        let clusters = match config.weighted_clusters.is_empty() {
            true => vec![(clusters[&config.cluster].clone(), 1)],
            false => config
                .weighted_clusters
                .iter()
                .filter(|w| w.weight > 0)
                .map(|w| (clusters[&w.name].clone(), w.weight))
                .collect(),
        };
        TcpProxy {
            clusters,
            stats,
            authz,
            telemetry,
            peer_frame,
        }
    }

    /// This connection's cluster, by weight.
    fn cluster(&self) -> &Arc<Cluster> {
        if let [(only, _)] = self.clusters.as_slice() {
            return only;
        }
        let total: u32 = self.clusters.iter().map(|(_, w)| w).sum();
        let mut x = rand::Rng::gen_range(&mut rand::thread_rng(), 0..total);
        for (c, w) in &self.clusters {
            if x < *w {
                return c;
            }
            x -= w;
        }
        &self.clusters[0].0
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
                    upstream = Some(pair);
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
        let Some((up, _slot)) = upstream else {
            if let Some(mut s) = series(conn.peer_metadata.clone()) {
                s.report(0, 0, true);
            }
            return;
        };
        // The client's side learns the server's workload from its frame; the server's
        // side learned the client's before this.
        let (mut up, peer) = match &up {
            MaybeTls::Tls(s)
                if s.ssl().selected_alpn_protocol()
                    == Some(crate::peer_exchange::ALPN.as_bytes()) =>
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
        // Istio's byte counts go out as they move, not only at the close.
        let report = |series: &mut Option<TcpSeries>, closed: bool| {
            if let Some(s) = series {
                s.report(
                    activity.received.load(Ordering::Relaxed),
                    activity.sent.load(Ordering::Relaxed),
                    closed,
                );
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
                    report(&mut series, false);
                    if activity.is_idle(idle_timeout) {
                        report(&mut series, true);
                        return;
                    }
                }
            }
        }
    }
}
