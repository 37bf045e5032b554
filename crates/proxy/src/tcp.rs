//! The TCP proxy: each downstream connection is spliced to one upstream endpoint.

use crate::cluster::outlier::Outcome;
use crate::cluster::Cluster;
use crate::conn::ConnInfo;
use crate::io::{Activity, ActivityIo};
use crate::stats::ListenerStats;
use std::sync::Arc;
use std::time::Duration;
use xxhash_rust::xxh64::xxh64;

pub struct TcpProxy {
    pub cluster: Arc<Cluster>,
    pub stats: ListenerStats,
    pub authz: Option<Arc<crate::authz::ListenerAuthz>>,
}

/// Envoy's tcp_proxy tries one endpoint by default; we allow one more so a single
/// dead endpoint does not fail a connection that another endpoint could take.
const CONNECT_ATTEMPTS: usize = 2;

impl TcpProxy {
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
        let peer = conn.peer;
        let hash = Some(xxh64(peer.ip().to_string().as_bytes(), 0));
        let mut upstream = None;
        for _ in 0..CONNECT_ATTEMPTS {
            let Some(endpoint) = self.cluster.pick(hash, conn.original_dst) else {
                break;
            };
            match self.cluster.connect_tcp(&endpoint).await {
                Ok(pair) => {
                    self.cluster.record_outcome(&endpoint, Outcome::Status(200));
                    upstream = Some(pair);
                    break;
                }
                Err(e) => {
                    tracing::debug!(cluster = %self.cluster.name, "tcp proxy: {e}");
                    self.cluster
                        .record_outcome(&endpoint, Outcome::ConnectFailure);
                }
            }
        }
        let Some((up, _slot)) = upstream else { return };
        let activity = Activity::new();
        let mut down = ActivityIo::new(downstream, activity.clone());
        let mut up = up;
        let copy = tokio::io::copy_bidirectional(&mut down, &mut up);
        tokio::pin!(copy);
        let tick = (idle_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
        loop {
            tokio::select! {
                done = &mut copy => {
                    if let Ok((rx, tx)) = done {
                        self.stats.tcp_rx.inc_by(rx);
                        self.stats.tcp_tx.inc_by(tx);
                    }
                    return;
                }
                _ = tokio::time::sleep(tick) => {
                    if activity.is_idle(idle_timeout) {
                        return;
                    }
                }
            }
        }
    }
}
