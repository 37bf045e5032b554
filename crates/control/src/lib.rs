//! The control plane's loop: read the mesh's inputs, build each connected sidecar's
//! view, and keep the ADS cache current as files change. Pushes are debounced, and a
//! proxy hears only about resources of its own view that changed (the cache compares
//! snapshots, delta streams compare resource versions).
//!
//! A change that only moves endpoints (WorkloadEntry addresses or ports; in Kubernetes
//! mode, EndpointSlices) takes a short path: the clusters of the services whose
//! endpoints moved are made again in each shared scope, and every sidecar of the scope
//! gets its own resources over the new shared base; nothing else is regenerated or
//! compared.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use trellis_mesh::istio::WorkloadEntry;
use trellis_mesh::{Inputs, Loaded, Registry, Resource};
use trellis_xds::{Base, Cache, Snapshot};

mod check;
mod dashboard;
mod jwks;
mod serve;
mod shared;
mod status;
mod tenancy;
pub use check::Report;
pub use dashboard::DashboardOptions;
pub use jwks::JwksResolver;
pub use serve::{plane, serve, KubeOptions, Options, Serving};
use shared::{shared, SharedOutbound};
pub use tenancy::{RootStatus, TenantStatus};

/// The resources of one view as a snapshot for the ADS server.
pub fn snapshot(r: &trellis_envoy::Resources) -> Snapshot {
    use prost::Message;
    use trellis_xds::pb::google::protobuf::Any;
    use trellis_xds::{CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET};
    let any = |type_url: &str, value: Vec<u8>| Any {
        type_url: type_url.to_string(),
        value,
    };
    let mut s = Snapshot::new();
    for t in [LISTENER, ROUTE, CLUSTER, ENDPOINT, SECRET] {
        s.declare(t);
    }
    for l in &r.listeners {
        s.insert(&l.name, any(LISTENER, l.encode_to_vec()));
    }
    for rc in &r.routes {
        s.insert(&rc.name, any(ROUTE, rc.encode_to_vec()));
    }
    for c in &r.clusters {
        s.insert(&c.name, any(CLUSTER, c.encode_to_vec()));
    }
    for e in &r.endpoints {
        s.insert(&e.cluster_name, any(ENDPOINT, e.encode_to_vec()));
    }
    for secret in &r.secrets {
        s.insert(&secret.name, any(SECRET, secret.encode_to_vec()));
    }
    s
}

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
    /// registry, and regenerating every view (for a change that only moved endpoints:
    /// reading, nothing, and updating the affected clusters).
    pub reload_timing: [Duration; 3],
    /// Whether the last reload only moved endpoints (the short path).
    pub endpoints_only: bool,
    /// The tenants (the default one first), their roots and federations; empty
    /// without Tenant resources.
    pub tenants: Vec<TenantStatus>,
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
    shared: std::sync::Mutex<HashMap<String, Arc<SharedOutbound>>>,
    /// The scope of each sidecar's view, so that a scope's change reaches its sidecars.
    scopes: std::sync::Mutex<HashMap<String, String>>,
    /// Parsed documents of the directories, reused while their text is unchanged.
    documents: std::sync::Mutex<trellis_mesh::DocCache>,
    /// The JWK Sets of RequestAuthentication `jwksUri`s.
    jwks: Arc<JwksResolver>,
    /// The tenants' CAs, installed in the embedded CA.
    tenants: tenancy::Tenants,
    /// What became of the Gateway API's resources at the last full reload (written back
    /// to the cluster in Kubernetes mode).
    gateway_status: watch::Sender<Arc<trellis_mesh::gateway_api::status::Status>>,
    /// The directories' files as the last reload found them, so that the watch loop
    /// sees an edit made between a reload and its own start.
    read_stamp: std::sync::Mutex<BTreeMap<PathBuf, (u64, Option<SystemTime>)>>,
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
            scopes: Default::default(),
            documents: Default::default(),
            jwks: Arc::new(JwksResolver::new()),
            tenants: Default::default(),
            gateway_status: watch::channel(Default::default()).0,
            read_stamp: Default::default(),
        }
    }

    /// The Gateway API's conditions as of each full reload.
    pub fn gateway_status(
        &self,
    ) -> watch::Receiver<Arc<trellis_mesh::gateway_api::status::Status>> {
        self.gateway_status.subscribe()
    }

    /// Tenants' CAs go into this CA (the embedded one) as Tenant resources come and go.
    pub fn with_tenancy(mut self, ca: trellis_ca::TenancyHandle) -> ControlPlane {
        self.tenants = tenancy::Tenants::new(Some(ca));
        self
    }

    /// The cluster's objects, in Kubernetes mode.
    pub fn kube(&self) -> Option<&trellis_kube::KubeInputs> {
        self.kube.as_ref()
    }

    /// Adds a cluster's objects to the inputs (after the directories' files).
    pub fn with_kube(mut self, kube: trellis_kube::KubeInputs) -> ControlPlane {
        self.kube = Some(kube);
        self
    }

    /// The views, as the ADS server serves them.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    pub fn jwks(&self) -> &Arc<JwksResolver> {
        &self.jwks
    }

    pub fn status(&self) -> watch::Receiver<Status> {
        self.status.subscribe()
    }

    /// Reads the directories (and the cluster's objects) and regenerates every known
    /// node's view.
    pub fn reload(&self) -> Result<(), String> {
        let started = std::time::Instant::now();
        *self.read_stamp.lock().unwrap() = self.stamp();
        let changes = {
            let mut documents = self.documents.lock().unwrap();
            for dir in &self.dirs {
                documents.refresh(dir)?;
            }
            documents.sweep();
            documents.take_changes()
        };
        // Taken on every reload, so that what it reports is what changed since the last.
        let kube_changes = self.kube.as_ref().map(|k| k.take_endpoint_changes());
        let running = self.status.borrow().generation > 0;
        let read = started.elapsed();
        let short = match (&self.kube, kube_changes) {
            _ if !running => None,
            (Some(kube), Some(Some(services))) if changes.is_empty() => {
                Some(self.change_service_endpoints(kube, &services))
            }
            (None, _) => trellis_mesh::endpoint_moves(&changes).map(|m| self.move_endpoints(&m)),
            _ => None,
        };
        match short {
            Some(Ok(())) => {
                self.status.send_modify(|s| {
                    s.generation += 1;
                    s.reload_timing = [read, Duration::ZERO, started.elapsed() - read];
                    s.endpoints_only = true;
                });
                return Ok(());
            }
            Some(Err(why)) => tracing::info!("endpoint change needs a full rebuild: {why}"),
            None => {}
        }
        let mut loaded = Loaded::default();
        {
            let documents = self.documents.lock().unwrap();
            for dir in &self.dirs {
                documents.load_into(dir, &mut loaded);
            }
        }
        let (k8s_services, k8s_workloads) = match &self.kube {
            Some(k) => k.load_into(&mut loaded),
            None => Default::default(),
        };
        trellis_mesh::cross_check(&mut loaded);
        let Loaded {
            mut inputs,
            mut warnings,
            mut refused,
        } = loaded;
        inputs.disable_tcp_metadata_exchange = !metadata_exchange_enabled();
        self.tenants.resolve(&mut inputs, &mut refused);
        inputs.keep_previous(&self.state.lock().unwrap().0, &mut refused);
        let tenants = self.tenants.install(&mut inputs)?;
        self.jwks.resolve(&mut inputs);
        let parsed = started.elapsed();
        let registry = Registry::from_parts(&inputs, k8s_services, k8s_workloads);
        // The Gateway API's resources become Istio Gateways and VirtualServices; what
        // could not be served is said as the Gateway API's conditions would say it.
        let gateway_api = trellis_mesh::gateway_api::convert(&mut inputs, &registry);
        warnings.extend(gateway_api.problems().into_iter().map(|message| {
            trellis_mesh::Diagnostic {
                resource: "Gateway API".into(),
                message,
                key: None,
            }
        }));
        self.gateway_status.send_replace(Arc::new(gateway_api));
        // Known only with the registry: a Sidecar whose egress ports several sidecars
        // on one address would bind, or whose egress names a service not there.
        for d in trellis_mesh::egress_collisions(&inputs, &registry) {
            if let Some((_, ns, name)) = &d.key {
                (inputs.sidecars).retain(|sc| !(&sc.namespace == ns && &sc.name == name));
            }
            refused.push(d);
        }
        warnings.extend(trellis_mesh::egress_unresolved(&inputs, &registry));
        for w in &warnings {
            tracing::warn!("{w}");
        }
        for r in &refused {
            tracing::error!("refused: {r}");
        }
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
            s.endpoints_only = false;
            s.tenants = tenants;
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
        if let Some(trust) = &state.0.trust {
            let tenant = trust.tenant_of(&w.namespace);
            if tenant.trust_domain != id.trust_domain {
                return Err(format!(
                    "{peer} is not in trust domain {:?} of tenant {:?}",
                    tenant.trust_domain, tenant.name
                ));
            }
        }
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
                // Nor a scope: an endpoint move must not give it a shared base.
                self.scopes.lock().unwrap().remove(node);
                // A node that never had a view keeps waiting for one: its streams
                // answer nothing, and end after a while saying why. One that had a
                // view loses it.
                if !self.cache.get(node).is_some_and(|s| s.is_sealed()) {
                    return;
                }
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
            return Ok(snapshot(&resources));
        }
        let (namespace, name) = trellis_mesh::workload_of(node).ok_or_else(|| {
            format!("node id {node:?} is not sidecar~<ip>~<name>.<namespace>~<domain>")
        })?;
        let state = self.state.lock().unwrap();
        let (inputs, registry) = (&state.0, &state.1);
        // A gateway proxy (Istio's node type `router`): its Gateways' servers.
        if node.starts_with("router~") {
            let config =
                trellis_mesh::gateway::generate_gateway(inputs, registry, &namespace, &name)?;
            return Ok(crate::snapshot(
                &trellis_envoy::encode(&config).map_err(|e| e.to_string())?,
            ));
        }
        let w = registry.known_workload(&namespace, &name)?;
        let key = trellis_mesh::outbound_scope(inputs, w);
        let cached = self.shared.lock().unwrap().get(&key).cloned();
        let outbound = match cached {
            Some(o) => o,
            None => {
                let o = Arc::new(SharedOutbound::new(inputs, registry, w)?);
                self.shared.lock().unwrap().insert(key.clone(), o.clone());
                o
            }
        };
        self.scopes.lock().unwrap().insert(node.to_string(), key);
        // This workload's own parts: the outbound listener's address and the inbound side.
        let (listeners, clusters) = trellis_mesh::generate_inbound(inputs, registry, w);
        let own = trellis_config::Config {
            listeners,
            clusters,
            ..Default::default()
        };
        let mut snapshot = Snapshot::with_base(outbound.base.clone());
        snapshot.extend(&crate::snapshot(
            &trellis_envoy::encode(&own).map_err(|e| e.to_string())?,
        ));
        if let Some(template) = &outbound.listener {
            let mut l = template.clone();
            trellis_mesh::own_outbound(inputs, registry, w, &mut l);
            let encoded = trellis_envoy::encode_listener(&l).map_err(|e| e.to_string())?;
            let (name, r) = shared(trellis_xds::LISTENER, &l.name, &encoded);
            snapshot.insert_shared(name, r);
        }
        // A workload whose Telemetry differs from its scope's first (a workload
        // selector, other labels in the spans' tags) has its own egress listeners, which
        // hide the base's.
        if !outbound.egress.is_empty() {
            let observed =
                trellis_mesh::observation(inputs, registry, w, trellis_config::SpanKind::Client);
            if observed != outbound.observed {
                for template in outbound.egress.iter() {
                    let mut l = template.clone();
                    observed.apply(&mut l);
                    let encoded = trellis_envoy::encode_listener(&l).map_err(|e| e.to_string())?;
                    let (name, r) = shared(trellis_xds::LISTENER, &l.name, &encoded);
                    snapshot.insert_shared(name, r);
                }
            }
        }
        Ok(snapshot)
    }

    /// The short path for a change that only moved endpoints: updates the moved
    /// WorkloadEntries in place, makes the clusters of the services they back again in
    /// every shared scope, and gives each scope's sidecars the new base. A moved
    /// workload's own sidecar gets its whole view again (its inbound ports may have
    /// moved). `Err` says why the change needs the full rebuild instead.
    ///
    /// The state stays locked until every sidecar has its new base, so a view built
    /// for a connecting sidecar meanwhile is of one generation or the other.
    fn move_endpoints(&self, moves: &[Resource<WorkloadEntry>]) -> Result<(), String> {
        let started = std::time::Instant::now();
        let mut own = Vec::new();
        {
            let mut state = self.state.lock().unwrap();
            let (inputs, registry) = &mut *state;
            let mut hosts = BTreeSet::new();
            for e in moves {
                let what = format!("WorkloadEntry {}/{} ({})", e.namespace, e.name, e.source);
                if !inputs.replace_workload_entry(e) {
                    return Err(format!("{what} is not an accepted one"));
                }
                let (old, new, served) = registry
                    .move_workload(e)
                    .ok_or_else(|| format!("{what} is not in the registry"))?;
                if old.has_sidecar() || new.has_sidecar() {
                    if old.address != new.address {
                        return Err(format!("{what}: its sidecar's address (node id) changed"));
                    }
                    own.push(trellis_mesh::node_id(&new));
                }
                hosts.extend(served);
            }
            self.rebase_scopes(inputs, registry, &hosts, &own)?;
        }
        for node in own {
            self.refresh(&node);
        }
        self.refresh_unshared();
        let mut names: Vec<String> = moves
            .iter()
            .take(5)
            .map(|m| format!("{}/{}", m.namespace, m.name))
            .collect();
        if moves.len() > names.len() {
            names.push("...".into());
        }
        tracing::info!(
            "endpoints moved: {} WorkloadEntr{} ({}); views updated in {:?}",
            moves.len(),
            if moves.len() == 1 { "y" } else { "ies" },
            names.join(", "),
            started.elapsed()
        );
        Ok(())
    }

    /// The short path in Kubernetes mode, for a change of EndpointSlices only: the
    /// endpoints of `services` (namespace, name) are read again from the cluster's
    /// objects, and the clusters of those whose endpoints differ are made again as for
    /// moved WorkloadEntries. Pods, and so the sidecars' own views, did not change.
    /// `Err` says why the change needs the full rebuild instead.
    fn change_service_endpoints(
        &self,
        kube: &trellis_kube::KubeInputs,
        services: &BTreeSet<(String, String)>,
    ) -> Result<(), String> {
        let started = std::time::Instant::now();
        let mut hosts = BTreeSet::new();
        {
            let mut state = self.state.lock().unwrap();
            let (inputs, registry) = &mut *state;
            for (namespace, name) in services {
                let host = trellis_mesh::fqdn(name, namespace);
                match (registry.service_mut(&host), kube.service(namespace, name)) {
                    // Not part of the mesh, before or now.
                    (None, None) => {}
                    (Some(s), Some(now))
                        if s.endpoints_listed
                            && s.namespace == now.namespace
                            && s.ports == now.ports
                            && s.selector == now.selector =>
                    {
                        if s.endpoints != now.endpoints {
                            s.endpoints = now.endpoints;
                            hosts.insert(host);
                        }
                    }
                    _ => {
                        return Err(format!(
                            "Service {namespace}/{name} is not the one the registry has"
                        ))
                    }
                }
            }
            self.rebase_scopes(inputs, registry, &hosts, &[])?;
        }
        self.refresh_unshared();
        tracing::info!(
            "endpoints changed: {} Service{} ({}); views updated in {:?}",
            hosts.len(),
            if hosts.len() == 1 { "" } else { "s" },
            hosts.iter().take(5).cloned().collect::<Vec<_>>().join(", "),
            started.elapsed()
        );
        Ok(())
    }

    /// Makes the clusters of `hosts` again in every shared scope that has them and gives
    /// each sidecar of those scopes its own resources over the new base, but the sidecars
    /// of `own`, whose whole view the caller makes again. Called with the state locked,
    /// so that a view built meanwhile for a connecting sidecar is of one generation or
    /// the other.
    fn rebase_scopes(
        &self,
        inputs: &Inputs,
        registry: &Registry,
        hosts: &BTreeSet<String>,
        own: &[String],
    ) -> Result<(), String> {
        let mut rebased: HashMap<String, Arc<Base>> = HashMap::new();
        let mut shared = self.shared.lock().unwrap();
        for (key, outbound) in shared.iter_mut() {
            if let Some(moved) = outbound.with_moved(inputs, registry, hosts)? {
                rebased.insert(key.clone(), moved.base.clone());
                *outbound = Arc::new(moved);
            }
        }
        for (node, key) in self.scopes.lock().unwrap().iter() {
            let Some(base) = rebased.get(key) else {
                continue;
            };
            if own.contains(node) {
                continue;
            }
            if let Some(s) = self.cache.get(node) {
                self.cache.set(node, s.rebased(base.clone()));
            }
        }
        Ok(())
    }

    /// Proxyless clients' views are small: made again whole.
    /// Views without a shared base (proxyless clients, gateways), made again whole
    /// after endpoints moved.
    fn refresh_unshared(&self) {
        for node in self.cache.nodes() {
            if trellis_mesh::proxyless_namespace(&node).is_some() || node.starts_with("router~") {
                self.refresh(&node);
            }
        }
    }

    /// Watches the directories (and the cluster) and serves views to nodes as they
    /// connect, forever; views are made again when the JWK Sets change (the fetching
    /// itself is [`JwksResolver::run`], which `serve` runs beside this).
    pub async fn run(self: Arc<Self>, poll: Duration) {
        let mut connections = self.cache.connections();
        let mut kube_changes = self.kube.as_ref().map(|k| k.changes());
        let mut jwks_changes = self.jwks.changes();
        let mut last = self.read_stamp.lock().unwrap().clone();
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
                Ok(()) = jwks_changes.changed() => {
                    self.reload_logged("JWKS changed");
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

/// Istio's switch, read as istiod reads it: `PILOT_ENABLE_METADATA_EXCHANGE=false` turns
/// the TCP metadata exchange off (Envoys built without the contrib extension need that).
fn metadata_exchange_enabled() -> bool {
    std::env::var("PILOT_ENABLE_METADATA_EXCHANGE")
        .map(|v| !v.eq_ignore_ascii_case("false") && v != "0")
        .unwrap_or(true)
}
