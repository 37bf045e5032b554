//! The mesh's inputs from the Kubernetes API (Kubernetes mode of `trellis control`).
//!
//! One `kube` watcher per kind — Namespaces, Services, EndpointSlices, Pods and the
//! seven Istio kinds — keeps [`Objects`] current: a paginated list, then a watch from
//! its resourceVersion, a fresh list when the server says the version is too old (410)
//! and backoff on errors. [`KubeInputs::load_into`] turns the objects into the same
//! `Loaded` + registry parts that files give, so generation is one code path:
//!
//! - a Service is a registry service (`name.namespace.svc.cluster.local`) whose
//!   endpoints are the *ready* endpoints of its EndpointSlices of its first IP family;
//! - a Pod is a workload: its sidecar's node id names it, its Services' selectors say
//!   what it serves, `sidecar.trellis.dev/app-ports` says it has a sidecar;
//! - Istio custom resources (and the Gateway API's) go through
//!   `trellis_mesh::load_value`: an invalid one is refused with its field named and its
//!   previous version keeps serving; the Gateway API's status conditions are written
//!   back (`gateway_status.rs`).
//!
//! A kind the server does not have (Istio's CRDs not installed) counts as empty, so the
//! control plane still starts; its watcher keeps retrying and picks the kind up later.

mod convert;
pub mod fake;
mod gateway_status;
mod objects;

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::Resource as _;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use trellis_mesh::{Loaded, Workload};

pub use convert::Discovery;
pub use objects::Objects;
use objects::{key, trim, Kept, Key};

/// A custom resource kind (Istio's, the Gateway API's, Trellis's own) and where the
/// API server serves it.
#[derive(Clone, Copy, Debug)]
pub struct IstioKind {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    /// Unique among the kinds (Istio and the Gateway API both have a Gateway).
    pub key: &'static str,
}

/// The Istio kinds Trellis reads, at the version it watches, and its own Tenant.
pub const ISTIO_KINDS: &[IstioKind] = &[
    net("VirtualService", "virtualservices"),
    net("DestinationRule", "destinationrules"),
    net("ServiceEntry", "serviceentries"),
    net("WorkloadEntry", "workloadentries"),
    net("Sidecar", "sidecars"),
    net("Gateway", "gateways"),
    sec("PeerAuthentication", "peerauthentications"),
    sec("AuthorizationPolicy", "authorizationpolicies"),
    sec("RequestAuthentication", "requestauthentications"),
    // Istio's Telemetry API (a cluster without its CRD has none).
    IstioKind {
        group: "telemetry.istio.io",
        version: "v1",
        kind: "Telemetry",
        plural: "telemetries",
        key: "Telemetry",
    },
    // Trellis's own: cluster-scoped tenants (deploy/crds/trellis.io_tenants.yaml).
    IstioKind {
        group: "trellis.io",
        version: "v1alpha1",
        kind: "Tenant",
        plural: "tenants",
        key: "Tenant",
    },
    // The Kubernetes Gateway API.
    gw(
        "v1",
        "GatewayClass",
        "gatewayclasses",
        "GatewayClass.gateway.networking.k8s.io",
    ),
    gw(
        "v1",
        "Gateway",
        "gateways",
        "Gateway.gateway.networking.k8s.io",
    ),
    gw(
        "v1",
        "HTTPRoute",
        "httproutes",
        "HTTPRoute.gateway.networking.k8s.io",
    ),
    gw(
        "v1",
        "GRPCRoute",
        "grpcroutes",
        "GRPCRoute.gateway.networking.k8s.io",
    ),
    // Experimental-channel kinds: a cluster without their CRDs has none of them.
    gw(
        "v1alpha2",
        "TLSRoute",
        "tlsroutes",
        "TLSRoute.gateway.networking.k8s.io",
    ),
    gw(
        "v1alpha2",
        "TCPRoute",
        "tcproutes",
        "TCPRoute.gateway.networking.k8s.io",
    ),
    gw(
        "v1beta1",
        "ReferenceGrant",
        "referencegrants",
        "ReferenceGrant.gateway.networking.k8s.io",
    ),
];

const fn gw(
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    key: &'static str,
) -> IstioKind {
    IstioKind {
        group: "gateway.networking.k8s.io",
        version,
        kind,
        plural,
        key,
    }
}

const fn net(kind: &'static str, plural: &'static str) -> IstioKind {
    IstioKind {
        group: "networking.istio.io",
        version: "v1",
        kind,
        plural,
        key: kind,
    }
}

const fn sec(kind: &'static str, plural: &'static str) -> IstioKind {
    IstioKind {
        group: "security.istio.io",
        version: "v1",
        kind,
        plural,
        key: kind,
    }
}

/// Where the API server is and how to authenticate: a kubeconfig file, or inferred as
/// kubectl does (`$KUBECONFIG`, `~/.kube/config`, the in-cluster service account).
pub async fn client(kubeconfig: Option<&Path>) -> Result<Client, String> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| format!("no Kubernetes configuration found: {e}"))?,
    };
    Client::try_from(config).map_err(|e| format!("Kubernetes client: {e}"))
}

struct Shared {
    objects: Mutex<Objects>,
    /// What changed since the control plane last asked.
    dirty: Mutex<Dirty>,
    /// Bumped on every change after the kind's first list.
    changes: watch::Sender<u64>,
    /// Kinds whose first list has not completed.
    pending: Mutex<BTreeSet<&'static str>>,
    synced: watch::Sender<bool>,
}

/// What changed in the cluster since [`KubeInputs::take_endpoint_changes`] last asked.
struct Dirty {
    /// Anything but an EndpointSlice (or a kind listed again).
    other: bool,
    /// The Services whose EndpointSlices changed.
    services: BTreeSet<Key>,
}

impl Shared {
    fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    /// Anything the control plane must read in full.
    fn changed_other(&self) {
        self.dirty.lock().unwrap().other = true;
        self.changed();
    }

    /// One object of `kind` changed; for an EndpointSlice, `services` are the Services
    /// its old and new versions name.
    fn changed_object(&self, kind: &str, services: [Option<Key>; 2]) {
        if kind != EndpointSlice::KIND {
            return self.changed_other();
        }
        self.dirty
            .lock()
            .unwrap()
            .services
            .extend(services.into_iter().flatten());
        self.changed();
    }

    fn listed(&self, kind: &'static str) {
        let mut pending = self.pending.lock().unwrap();
        if pending.remove(kind) && pending.is_empty() {
            self.synced.send_replace(true);
        }
    }
}

/// The watched objects of one cluster.
#[derive(Clone)]
pub struct KubeInputs {
    shared: Arc<Shared>,
    discovery: Discovery,
}

impl KubeInputs {
    /// Starts a watcher per kind on the current tokio runtime.
    pub fn start(client: Client, discovery: Discovery) -> KubeInputs {
        let mut kinds: BTreeSet<&'static str> = [
            Namespace::KIND,
            Service::KIND,
            EndpointSlice::KIND,
            Pod::KIND,
            Secret::KIND,
        ]
        .into();
        kinds.extend(ISTIO_KINDS.iter().map(|k| k.key));
        let shared = Arc::new(Shared {
            objects: Mutex::new(Objects::default()),
            dirty: Mutex::new(Dirty {
                other: true,
                services: BTreeSet::new(),
            }),
            changes: watch::channel(0).0,
            pending: Mutex::new(kinds),
            synced: watch::channel(false).0,
        });
        let s = &shared;
        tokio::spawn(keep::<Namespace>(
            Namespace::KIND,
            Api::all(client.clone()),
            s.clone(),
        ));
        tokio::spawn(keep::<Service>(
            Service::KIND,
            Api::all(client.clone()),
            s.clone(),
        ));
        tokio::spawn(keep::<EndpointSlice>(
            EndpointSlice::KIND,
            Api::all(client.clone()),
            s.clone(),
        ));
        tokio::spawn(keep::<Pod>(Pod::KIND, Api::all(client.clone()), s.clone()));
        tokio::spawn(keep::<Secret>(
            Secret::KIND,
            Api::all(client.clone()),
            s.clone(),
        ));
        for k in ISTIO_KINDS {
            let gvk = GroupVersionKind::gvk(k.group, k.version, k.kind);
            let resource = ApiResource::from_gvk_with_plural(&gvk, k.plural);
            let api = Api::<DynamicObject>::all_with(client.clone(), &resource);
            tokio::spawn(keep::<DynamicObject>(k.key, api, s.clone()));
        }
        KubeInputs { shared, discovery }
    }

    /// Writes the Gateway API's status conditions back to the cluster as `status`
    /// changes (on the current tokio runtime).
    pub fn write_gateway_status(
        &self,
        client: Client,
        status: watch::Receiver<Arc<trellis_mesh::gateway_api::status::Status>>,
    ) {
        tokio::spawn(gateway_status::run(client, self.shared.clone(), status));
    }

    /// Changes to any kind after its first list.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.shared.changes.subscribe()
    }

    /// Waits until every kind has been listed once; on timeout, names those that have not.
    pub async fn synced(&self, timeout: Duration) -> Result<(), String> {
        let mut rx = self.shared.synced.subscribe();
        let synced = tokio::time::timeout(timeout, rx.wait_for(|s| *s))
            .await
            .is_ok();
        match synced {
            true => Ok(()),
            false => {
                let pending = self.shared.pending.lock().unwrap();
                Err(format!(
                    "the Kubernetes API server did not list {} within {timeout:?}",
                    pending.iter().copied().collect::<Vec<_>>().join(", ")
                ))
            }
        }
    }

    /// What changed since the last call: `Some(services)` when only EndpointSlices did
    /// (the Services, by namespace and name, whose slices changed: their endpoints are
    /// all that can differ), `None` when anything else did, or on the first call.
    pub fn take_endpoint_changes(&self) -> Option<BTreeSet<(String, String)>> {
        let mut dirty = self.shared.dirty.lock().unwrap();
        let services = std::mem::take(&mut dirty.services);
        (!std::mem::take(&mut dirty.other)).then_some(services)
    }

    /// The registry service of the Kubernetes Service `namespace/name` as
    /// [`load_into`](Self::load_into) makes it now; `None` when it is not part of the
    /// mesh.
    pub fn service(&self, namespace: &str, name: &str) -> Option<trellis_mesh::Service> {
        let objects = self.shared.objects.lock().unwrap();
        convert::one_service(
            &objects,
            &self.discovery,
            &(namespace.to_string(), name.to_string()),
        )
    }

    /// Adds the Istio resources to `loaded`; returns the services and workloads.
    pub fn load_into(&self, loaded: &mut Loaded) -> (Vec<trellis_mesh::Service>, Vec<Workload>) {
        let objects = self.shared.objects.lock().unwrap();
        convert::load(&objects, &self.discovery, loaded)
    }
}

/// Keeps the objects of one kind current, forever.
async fn keep<K>(kind: &'static str, api: Api<K>, shared: Arc<Shared>)
where
    K: Kept + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut listing = None;
    let mut last_error = String::new();
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                let message = describe(kind, &e);
                if message != last_error {
                    tracing::warn!("{message}");
                    last_error = message;
                }
                if not_found(&e) || (kind == "Secret" && forbidden(&e)) {
                    // The kind does not exist on this server: empty until it appears.
                    let had = {
                        let mut objects = shared.objects.lock().unwrap();
                        let slot = K::slot(&mut objects, kind);
                        let had = !slot.is_empty();
                        slot.clear();
                        had
                    };
                    if had {
                        shared.changed_other();
                    }
                    shared.listed(kind);
                }
                continue;
            }
        };
        last_error.clear();
        match event {
            Event::Init => listing = Some(std::collections::BTreeMap::new()),
            Event::InitApply(o) => {
                if let Some(l) = listing.as_mut().filter(|_| o.wanted()) {
                    l.insert(key(&o), trim(o));
                }
            }
            Event::InitDone => {
                let listed = listing.take().unwrap_or_default();
                tracing::debug!(kind, objects = listed.len(), "listed");
                *K::slot(&mut shared.objects.lock().unwrap(), kind) = listed;
                // Changed before listed: whoever waits for the lists then reads them all.
                shared.changed_other();
                shared.listed(kind);
            }
            Event::Apply(o) => {
                let now = convert::slice_service(&o);
                let mut objects = shared.objects.lock().unwrap();
                let slot = K::slot(&mut objects, kind);
                // One no longer wanted (a Secret that lost its TLS entries) goes.
                let old = match o.wanted() {
                    true => slot.insert(key(&o), trim(o)),
                    false => slot.remove(&key(&o)),
                };
                drop(objects);
                shared.changed_object(kind, [old.as_ref().and_then(convert::slice_service), now]);
            }
            Event::Delete(o) => {
                let old = K::slot(&mut shared.objects.lock().unwrap(), kind).remove(&key(&o));
                let was = old.as_ref().and_then(convert::slice_service);
                shared.changed_object(kind, [was, convert::slice_service(&o)]);
            }
        }
    }
}

fn status_of(e: &watcher::Error) -> Option<(u16, String)> {
    match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => Some((s.code, s.message.clone())),
        watcher::Error::WatchError(s) => Some((s.code, s.message.clone())),
        _ => None,
    }
}

/// Listing refused: for Secrets (which a control plane may be denied), empty.
fn forbidden(e: &watcher::Error) -> bool {
    matches!(e, watcher::Error::InitialListFailed(_)) && status_of(e).is_some_and(|(c, _)| c == 403)
}

fn not_found(e: &watcher::Error) -> bool {
    matches!(e, watcher::Error::InitialListFailed(_)) && status_of(e).is_some_and(|(c, _)| c == 404)
}

/// One line that says which kind failed and what the operator can do about it.
fn describe(kind: &'static str, e: &watcher::Error) -> String {
    match status_of(e) {
        Some((404, _)) => format!(
            "Kubernetes: the API server has no {kind} resource (is its CRD installed?); \
             treated as empty, retrying"
        ),
        Some((401, m)) => format!("Kubernetes: {kind}: unauthorized ({m}); check the credentials"),
        Some((403, m)) => format!(
            "Kubernetes: {kind}: forbidden ({m}); the control plane's account needs list and watch"
        ),
        Some((410, m)) => format!("Kubernetes: {kind}: watch expired ({m}); listing again"),
        _ => format!("Kubernetes: {kind}: {e}; retrying"),
    }
}
