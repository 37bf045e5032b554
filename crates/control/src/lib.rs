//! The control plane's loop: read the mesh's inputs, build each connected sidecar's
//! view, and keep the ADS cache current as files change. Pushes are debounced, and a
//! proxy hears only about resources of its own view that changed (the cache compares
//! snapshots, delta streams compare resource versions).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use trellis_mesh::{Inputs, Loaded, Registry};
use trellis_xds::{Cache, Snapshot, Versioned};

/// What the control plane currently serves, for status views.
#[derive(Clone, Debug, Default)]
pub struct Status {
    /// Increments on every accepted change of the inputs.
    pub generation: u64,
    pub warnings: Vec<String>,
    pub refused: Vec<String>,
    pub services: usize,
    pub workloads: usize,
    /// How long the last reload took: reading and checking the inputs, building the
    /// registry, and regenerating every view.
    pub reload_timing: [Duration; 3],
}

pub struct ControlPlane {
    dirs: Vec<PathBuf>,
    /// Kubernetes mode: Services, EndpointSlices, Pods and Istio CRs from a cluster.
    kube: Option<trellis_kube::KubeInputs>,
    cache: Cache,
    state: Arc<std::sync::Mutex<(Inputs, Registry)>>,
    status: watch::Sender<Status>,
    /// The outbound half of the views, per scope, for the current inputs: sidecars in
    /// one namespace and Sidecar scope share it (and its memory).
    shared: std::sync::Mutex<std::collections::HashMap<String, Arc<SharedOutbound>>>,
    /// Parsed documents of the directories, reused while their text is unchanged.
    documents: std::sync::Mutex<trellis_mesh::DocCache>,
}

/// The encoded outbound half of a view.
struct SharedOutbound {
    /// Its address differs per workload; everything else is shared.
    listener: Option<trellis_config::Listener>,
    /// The shared resources as a sealed snapshot, cloned into each sidecar's.
    snapshot: Snapshot,
}

fn shared<M: prost::Message>(type_url: &str, name: &str, m: &M) -> (String, Arc<Versioned>) {
    let body = trellis_xds::pb::google::protobuf::Any {
        type_url: type_url.to_string(),
        value: m.encode_to_vec(),
    };
    (name.to_string(), Arc::new(Versioned::new(body)))
}

impl ControlPlane {
    /// Reads every YAML file of each of `dirs` (Istio resources and the registry).
    pub fn new(dirs: &[PathBuf], cache: Cache) -> ControlPlane {
        ControlPlane {
            dirs: dirs.to_vec(),
            kube: None,
            cache,
            state: Default::default(),
            status: watch::channel(Status::default()).0,
            shared: Default::default(),
            documents: Default::default(),
        }
    }

    /// Adds a cluster's objects to the inputs (after the directories' files).
    pub fn with_kube(mut self, kube: trellis_kube::KubeInputs) -> ControlPlane {
        self.kube = Some(kube);
        self
    }

    pub fn status(&self) -> watch::Receiver<Status> {
        self.status.subscribe()
    }

    /// Reads the directories (and the cluster's objects) and regenerates every known
    /// node's view.
    pub fn reload(&self) -> Result<(), String> {
        let started = std::time::Instant::now();
        let mut loaded = Loaded::default();
        {
            let mut documents = self.documents.lock().unwrap();
            for dir in &self.dirs {
                trellis_mesh::load_dir_cached(dir, &mut loaded, Some(&mut documents))?;
            }
            documents.sweep();
        }
        let (k8s_services, k8s_workloads) = match &self.kube {
            Some(k) => k.load_into(&mut loaded),
            None => Default::default(),
        };
        trellis_mesh::cross_check(&mut loaded);
        let Loaded {
            mut inputs,
            warnings,
            mut refused,
        } = loaded;
        inputs.keep_previous(&self.state.lock().unwrap().0, &mut refused);
        for w in &warnings {
            tracing::warn!("{w}");
        }
        for r in &refused {
            tracing::error!("refused: {r}");
        }
        let parsed = started.elapsed();
        let registry = Registry::from_parts(&inputs, k8s_services, k8s_workloads);
        let indexed = started.elapsed();
        let (services, workloads) = (registry.services.len(), registry.workloads.len());
        *self.state.lock().unwrap() = (inputs, registry);
        self.shared.lock().unwrap().clear();
        // Every node that has a view, plus every sidecar the registry knows.
        let mut nodes: Vec<String> = self.cache.nodes();
        nodes.extend(
            self.state
                .lock()
                .unwrap()
                .1
                .workloads
                .iter()
                .filter(|w| w.has_sidecar())
                .map(trellis_mesh::node_id),
        );
        nodes.sort();
        nodes.dedup();
        for node in &nodes {
            self.refresh(node);
        }
        self.status.send_modify(|s| {
            s.generation += 1;
            s.warnings = warnings.iter().map(|d| d.to_string()).collect();
            s.refused = refused.iter().map(|d| d.to_string()).collect();
            s.services = services;
            s.workloads = workloads;
            s.reload_timing = [parsed, indexed - parsed, started.elapsed() - indexed];
        });
        Ok(())
    }

    /// Whether a caller authenticated as `peer` (a SPIFFE ID from its client
    /// certificate) may have `node`'s view: a sidecar only its own workload's (the
    /// workload's service account), a proxyless client only its own namespace's, as
    /// istiod checks. Without a certificate (the plaintext port, for loopback) any node.
    pub fn authorize(&self, node: &str, peer: Option<&str>) -> Result<(), String> {
        let Some(peer) = peer else {
            return Ok(());
        };
        let id = trellis_tls::SpiffeId::parse(peer).map_err(|e| format!("peer identity: {e}"))?;
        let (ns, sa) = (id.namespace.as_str(), id.service_account.as_str());
        if let Some(namespace) = trellis_mesh::proxyless_namespace(node) {
            return if namespace == ns {
                Ok(())
            } else {
                Err(format!(
                    "{peer} may not ask for namespace {namespace}'s view"
                ))
            };
        }
        let (namespace, name) = trellis_mesh::workload_of(node)
            .ok_or_else(|| "not sidecar~<ip>~<name>.<namespace>~<domain>".to_string())?;
        let state = self.state.lock().unwrap();
        let w = state
            .1
            .workload(&namespace, &name)
            .ok_or_else(|| format!("no workload {namespace}/{name}"))?;
        if w.namespace == ns && w.service_account == sa {
            Ok(())
        } else {
            Err(format!(
                "{peer} is not the identity of workload {namespace}/{name} ({})",
                w.spiffe_id()
            ))
        }
    }

    /// Builds `node`'s view from the current inputs and hands it to the cache.
    pub fn refresh(&self, node: &str) {
        let snapshot = match self.view(node) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%node, "no view: {e}");
                Snapshot::new()
            }
        };
        self.cache.set(node, snapshot);
    }

    fn view(&self, node: &str) -> Result<Snapshot, String> {
        if let Some(namespace) = trellis_mesh::proxyless_namespace(node) {
            let state = self.state.lock().unwrap();
            let config = trellis_mesh::generate_client(&state.0, &state.1, namespace);
            let resources = trellis_envoy::encode_proxyless(&config).map_err(|e| e.to_string())?;
            return Ok(resources.snapshot());
        }
        let (namespace, name) = trellis_mesh::workload_of(node).ok_or_else(|| {
            format!("node id {node:?} is not sidecar~<ip>~<name>.<namespace>~<domain>")
        })?;
        let state = self.state.lock().unwrap();
        let (inputs, registry) = (&state.0, &state.1);
        let w = registry
            .workload(&namespace, &name)
            .ok_or_else(|| format!("no workload {namespace}/{name} (WorkloadEntry or Pod)"))?;
        let key = trellis_mesh::outbound_scope(inputs, w);
        let cached = self.shared.lock().unwrap().get(&key).cloned();
        let outbound = match cached {
            Some(o) => o,
            None => {
                let (listener, clusters) = trellis_mesh::generate_outbound(inputs, registry, w);
                let encoded = trellis_envoy::encode(&trellis_config::Config {
                    clusters,
                    ..Default::default()
                })
                .map_err(|e| e.to_string())?;
                let mut resources = Snapshot::new();
                if let Some(l) = &listener {
                    if let Some(r) = trellis_envoy::encode_routes(l).map_err(|e| e.to_string())? {
                        let (name, r) = shared(trellis_xds::ROUTE, &r.name, &r);
                        resources.insert_shared(name, r);
                    }
                }
                for c in &encoded.clusters {
                    let (name, r) = shared(trellis_xds::CLUSTER, &c.name, c);
                    resources.insert_shared(name, r);
                }
                for e in &encoded.endpoints {
                    let (name, r) = shared(trellis_xds::ENDPOINT, &e.cluster_name, e);
                    resources.insert_shared(name, r);
                }
                // Each sidecar's copy differs only in its address; the virtual hosts
                // travel in the shared RouteConfiguration, so the copy leaves them out.
                let listener = listener.map(|mut l| {
                    if let Some(h) = l.http.as_mut() {
                        h.virtual_hosts.clear();
                    }
                    l
                });
                resources.seal();
                let o = Arc::new(SharedOutbound {
                    listener,
                    snapshot: resources,
                });
                self.shared.lock().unwrap().insert(key, o.clone());
                o
            }
        };
        // This workload's own parts: the outbound listener's address and the inbound side.
        let (listeners, clusters) = trellis_mesh::generate_inbound(inputs, registry, w);
        let own = trellis_config::Config {
            listeners,
            clusters,
            ..Default::default()
        };
        let mut snapshot = outbound.snapshot.clone();
        snapshot.extend(
            &trellis_envoy::encode(&own)
                .map_err(|e| e.to_string())?
                .snapshot(),
        );
        if let Some(template) = &outbound.listener {
            let mut l = template.clone();
            l.address = Some(w.outbound.clone());
            let encoded = trellis_envoy::encode_listener(&l).map_err(|e| e.to_string())?;
            let (name, r) = shared(trellis_xds::LISTENER, &l.name, &encoded);
            snapshot.insert_shared(name, r);
        }
        Ok(snapshot)
    }

    /// Watches the directories (and the cluster) and serves views to nodes as they
    /// connect, forever.
    pub async fn run(self: Arc<Self>, poll: Duration) {
        let mut connections = self.cache.connections();
        let mut kube_changes = self.kube.as_ref().map(|k| k.changes());
        let mut last = self.stamp();
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + poll, poll);
        loop {
            tokio::select! {
                node = connections.recv() => {
                    if let Ok(node) = node {
                        if self.cache.get(&node).is_none_or(|s| s.is_empty()) {
                            self.refresh(&node);
                        }
                    }
                }
                _ = changed(&mut kube_changes) => {
                    // Debounce: a rollout is a burst of Pod and EndpointSlice events.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    if let Some(rx) = kube_changes.as_mut() {
                        rx.borrow_and_update();
                    }
                    self.reload_logged("cluster changed");
                }
                _ = tick.tick() => {
                    let now = self.stamp();
                    if now == last {
                        continue;
                    }
                    // Debounce: editors write in several steps; wait for quiet.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    last = self.stamp();
                    self.reload_logged("inputs changed");
                }
            }
        }
    }
}

/// The next change of the cluster's objects; never, without a cluster.
async fn changed(rx: &mut Option<watch::Receiver<u64>>) {
    match rx {
        Some(rx) => {
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

impl ControlPlane {
    fn reload_logged(&self, why: &str) {
        match self.reload() {
            Ok(()) => tracing::info!("{why}; views regenerated"),
            Err(e) => tracing::error!("{e}"),
        }
    }

    /// Names, sizes and modification times of the directories' files.
    fn stamp(&self) -> BTreeMap<PathBuf, (u64, Option<SystemTime>)> {
        self.dirs
            .iter()
            .flat_map(|d| std::fs::read_dir(d).into_iter().flatten().flatten())
            .filter_map(|e| {
                let m = e.metadata().ok()?;
                Some((e.path(), (m.len(), m.modified().ok())))
            })
            .collect()
    }
}
