//! The outbound half of the views, generated and encoded once per scope (namespace and
//! Sidecar resource) and shared by every sidecar of that scope as its snapshot's base.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use trellis_mesh::{Inputs, Registry, Workload};
use trellis_xds::{Base, Snapshot, Versioned};

/// The encoded outbound half of a view.
#[derive(Clone)]
pub(crate) struct SharedOutbound {
    /// Its address differs per workload; everything else is shared.
    pub listener: Option<trellis_config::Listener>,
    /// The shared resources: the base of each sidecar's snapshot.
    pub base: Arc<Base>,
    /// The workload it was made for (the scope's others differ only where it does not
    /// matter: their address and inbound side).
    workload: Workload,
    /// Its cluster names by service host.
    clusters: Arc<HashMap<String, Vec<String>>>,
    /// The egress listeners (TCP services' and a captured sidecar's per-port ones) as
    /// generated, before the Telemetry API's tracing and access logs (HTTP ones without
    /// their virtual hosts, which travel in the shared routes).
    pub egress: Arc<Vec<trellis_config::Listener>>,
    /// What the base's egress listeners got from the Telemetry API (the scope's first
    /// workload's): a sidecar that gets otherwise has copies of its own.
    pub observed: trellis_mesh::Observation,
}

/// `m` encoded as an xDS resource of `type_url`, with its content version.
pub(crate) fn shared<M: prost::Message>(
    type_url: &str,
    name: &str,
    m: &M,
) -> (String, Arc<Versioned>) {
    let body = trellis_xds::pb::google::protobuf::Any {
        type_url: type_url.to_string(),
        value: m.encode_to_vec(),
    };
    (name.to_string(), Arc::new(Versioned::new(body)))
}

/// Clusters and their endpoint assignments as resources.
fn encode_clusters(
    clusters: Vec<trellis_config::Cluster>,
) -> Result<Vec<(String, Arc<Versioned>)>, String> {
    let encoded = trellis_envoy::encode(&trellis_config::Config {
        clusters,
        ..Default::default()
    })
    .map_err(|e| e.to_string())?;
    let clusters = encoded
        .clusters
        .iter()
        .map(|c| shared(trellis_xds::CLUSTER, &c.name, c));
    let endpoints = encoded
        .endpoints
        .iter()
        .map(|e| shared(trellis_xds::ENDPOINT, &e.cluster_name, e));
    Ok(clusters.chain(endpoints).collect())
}

impl SharedOutbound {
    /// The outbound half of `w`'s view.
    pub fn new(inputs: &Inputs, registry: &Registry, w: &Workload) -> Result<Self, String> {
        let trellis_mesh::Outbound {
            http: listener,
            egress,
            clusters,
        } = trellis_mesh::generate_outbound(inputs, registry, w);
        let mut by_host: HashMap<String, Vec<String>> = HashMap::new();
        for c in &clusters {
            let host = c.name.rsplit('|').next().unwrap_or_default();
            by_host
                .entry(host.to_string())
                .or_default()
                .push(c.name.clone());
        }
        let mut resources = Snapshot::new();
        for (name, r) in encode_clusters(clusters)? {
            resources.insert_shared(name, r);
        }
        // TCP egress listeners are bound where the Sidecar resource says, and a captured
        // sidecar's outbound listeners are the same for every sidecar of the scope.
        let observed =
            trellis_mesh::observation(inputs, registry, w, trellis_config::SpanKind::Client);
        for l in &egress {
            let mut l = l.clone();
            observed.apply(&mut l);
            let l = &l;
            let encoded = trellis_envoy::encode_listener(l).map_err(|e| e.to_string())?;
            let (name, r) = shared(trellis_xds::LISTENER, &l.name, &encoded);
            resources.insert_shared(name, r);
            if let Some(r) = trellis_envoy::encode_routes(l).map_err(|e| e.to_string())? {
                let (name, r) = shared(trellis_xds::ROUTE, &r.name, &r);
                resources.insert_shared(name, r);
            }
        }
        if let Some(l) = &listener {
            if let Some(r) = trellis_envoy::encode_routes(l).map_err(|e| e.to_string())? {
                let (name, r) = shared(trellis_xds::ROUTE, &r.name, &r);
                resources.insert_shared(name, r);
            }
        }
        // Each sidecar's copy differs only in its address; the virtual hosts travel in the
        // shared RouteConfiguration, so the copy leaves them out.
        let listener = listener.map(|mut l| {
            if let Some(h) = l.http.as_mut() {
                h.virtual_hosts.clear();
            }
            l
        });
        let egress = egress
            .into_iter()
            .map(|mut l| {
                if let Some(h) = l.http.as_mut() {
                    h.virtual_hosts.clear();
                }
                l
            })
            .collect();
        Ok(SharedOutbound {
            listener,
            base: Base::new(resources),
            workload: w.clone(),
            clusters: Arc::new(by_host),
            egress: Arc::new(egress),
            observed,
        })
    }

    /// After workloads moved (addresses or ports; `registry` already has them where they
    /// are now): this scope with the clusters of `hosts` made again, or `None` when it
    /// has none of them. Only clusters and assignments whose content changed count as
    /// changed in the new base.
    pub fn with_moved(
        &self,
        inputs: &Inputs,
        registry: &Registry,
        hosts: &BTreeSet<String>,
    ) -> Result<Option<Self>, String> {
        let names: Vec<String> = hosts
            .iter()
            .filter_map(|h| self.clusters.get(h))
            .flatten()
            .cloned()
            .collect();
        if names.is_empty() {
            return Ok(None);
        }
        let clusters = trellis_mesh::generate_clusters(inputs, registry, &self.workload, &names)
            .ok_or("a cluster of a moved endpoint cannot be made again")?;
        let upserts = encode_clusters(clusters)?;
        // A cluster whose endpoints are no longer assigned through EDS loses its assignment.
        let removals: Vec<(String, String)> = names
            .iter()
            .filter(|n| {
                !upserts
                    .iter()
                    .any(|(u, r)| u == *n && r.body.type_url == trellis_xds::ENDPOINT)
            })
            .map(|n| (trellis_xds::ENDPOINT.to_string(), n.clone()))
            .collect();
        Ok(Some(SharedOutbound {
            base: self.base.update(upserts, removals),
            ..self.clone()
        }))
    }
}
