//! A listener's tracing: how it samples, its spans' kind and tags, and the exporter of
//! its provider. Exporters are kept per provider (collector cluster and service name)
//! across config updates, so that a push does not restart an export thread nor lose
//! its queue.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use trellis_config as tc;
use trellis_trace::{Exporter, Kind, Sampling};

use crate::cluster::{ClusterRef, ClusterSet};
use crate::stats::Metrics;

pub struct ListenerTracer {
    pub kind: Kind,
    pub sampling: Sampling,
    pub tags: Arc<[(String, String)]>,
    pub node_id: String,
    pub exporter: Exporter,
}

/// The export threads of a config, by provider.
#[derive(Clone, Default)]
pub struct Exporters {
    by_provider: HashMap<(String, String), Provider>,
    /// Each provider's collector cluster in the config being built, handed to its export
    /// thread only once that config serves ([`Exporters::commit`]): a refused config
    /// must not move a running exporter.
    pending: Vec<(Arc<ArcSwapOption<ClusterRef>>, ClusterRef)>,
}

#[derive(Clone)]
struct Provider {
    exporter: Exporter,
    /// The collector's cluster in the config being served; the export thread reads its
    /// endpoints whenever it connects.
    cluster: Arc<ArcSwapOption<ClusterRef>>,
}

impl Exporters {
    /// The config these exporters were built for serves: each export thread connects to
    /// its collector cluster's endpoints as that config has them.
    pub fn commit(&mut self) {
        for (slot, cluster) in self.pending.drain(..) {
            slot.store(Some(Arc::new(cluster)));
        }
    }

    /// The tracer of a listener with `config`, reusing `running`'s exporter for the same
    /// provider. The collector's cluster must exist and be plaintext: spans name URLs
    /// and identities, and are not sent in the clear where TLS was asked for.
    pub fn tracer(
        &mut self,
        running: &Exporters,
        config: &tc::Tracing,
        clusters: &ClusterSet,
        metrics: &Metrics,
        node_id: &str,
    ) -> Result<Arc<ListenerTracer>, String> {
        let otel = &config.provider.opentelemetry;
        let field = "tracing.provider.opentelemetry.cluster";
        let cluster = clusters
            .get(&otel.cluster)
            .ok_or_else(|| format!("{field} {:?}: no such cluster", otel.cluster))?;
        if cluster.get().config.tls.is_some() {
            return Err(format!(
                "{field} {:?}: the cluster originates TLS, which the span exporter does not speak",
                otel.cluster
            ));
        }
        let key = (otel.cluster.clone(), otel.service_name.clone());
        let provider = match self.by_provider.get(&key).or(running.by_provider.get(&key)) {
            Some(p) => p.clone(),
            None => {
                let slot: Arc<ArcSwapOption<ClusterRef>> = Arc::default();
                let read = slot.clone();
                let target: trellis_trace::Target = Arc::new(move || {
                    read.load()
                        .as_ref()
                        .map(|c| c.get().endpoints().iter().map(|e| e.addr).collect())
                        .unwrap_or_default()
                });
                let exporter = Exporter::start(&otel.service_name, target, metrics.spans.clone())
                    .map_err(|e| format!("tracing: the export thread: {e}"))?;
                Provider {
                    exporter,
                    cluster: slot,
                }
            }
        };
        self.pending
            .push((provider.cluster.clone(), cluster.clone()));
        self.by_provider.insert(key, provider.clone());
        Ok(Arc::new(ListenerTracer {
            kind: match config.span_kind {
                tc::SpanKind::Server => Kind::Server,
                tc::SpanKind::Client => Kind::Client,
            },
            sampling: Sampling {
                random: config.random_sampling,
                client: config.client_sampling,
                overall: config.overall_sampling,
            },
            tags: config
                .tags
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            node_id: node_id.to_string(),
            exporter: provider.exporter,
        }))
    }
}
