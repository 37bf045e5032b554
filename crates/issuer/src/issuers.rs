//! The issuer resources: one controller per kind keeps each issuer's CA loaded (or says
//! why not in its `Ready` condition) in the [`Registry`] the signing controllers read.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::StreamExt;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{watcher, Controller};
use kube::{Api, Client, ResourceExt};
use serde_json::{json, Value};

use crate::attestation::KeyAttestation;
use crate::ca::{Failure, IssuerCa, Tokens};
use crate::conditions;
use crate::names::{IssuerRef, CLUSTER_ISSUER, GROUP, ISSUER, VERSION};
use crate::spec::IssuerSpec;

/// How often a ready issuer's token and key are looked at again.
const RECHECK: Duration = Duration::from_secs(300);
/// How soon an issuer that is not ready is tried again.
const RETRY: Duration = Duration::from_secs(10);

struct Loaded {
    uid: String,
    ca: Arc<IssuerCa>,
}

/// The ready CAs, by issuer.
pub struct Registry {
    loaded: RwLock<HashMap<IssuerRef, Loaded>>,
    /// The issuer objects, so that a deleted issuer's CA is never used.
    stores: RwLock<Vec<(bool, Store<DynamicObject>)>>,
    changed: tokio::sync::watch::Sender<u64>,
}

impl Registry {
    pub fn new() -> Arc<Registry> {
        Arc::new(Registry {
            loaded: RwLock::default(),
            stores: RwLock::default(),
            changed: tokio::sync::watch::channel(0).0,
        })
    }

    /// The CA of issuer `r`, if it exists and is ready.
    pub fn ca(&self, r: &IssuerRef) -> Option<Arc<IssuerCa>> {
        let loaded = self.loaded.read().unwrap();
        let entry = loaded.get(r)?;
        let cluster = matches!(r, IssuerRef::Cluster(_));
        let stores = self.stores.read().unwrap();
        let (_, store) = stores.iter().find(|(c, _)| *c == cluster)?;
        let ar = resource(cluster);
        let mut key = ObjectRef::<DynamicObject>::new_with(r.name(), ar);
        if let Some(ns) = r.namespace() {
            key = key.within(ns);
        }
        let object = store.get(&key)?;
        (object.uid().as_deref() == Some(entry.uid.as_str())).then(|| entry.ca.clone())
    }

    /// Ticks whenever an issuer becomes ready or stops being ready.
    pub fn changes(&self) -> impl futures_util::Stream<Item = ()> + Send + 'static {
        tokio_stream::wrappers::WatchStream::from_changes(self.changed.subscribe()).map(|_| ())
    }

    fn put(&self, r: &IssuerRef, uid: String, ca: Arc<IssuerCa>) {
        let fresh = self
            .loaded
            .write()
            .unwrap()
            .insert(r.clone(), Loaded { uid, ca })
            .is_none();
        if fresh {
            self.changed.send_modify(|n| *n += 1);
        }
    }

    fn remove(&self, r: &IssuerRef) {
        if self.loaded.write().unwrap().remove(r).is_some() {
            self.changed.send_modify(|n| *n += 1);
        }
    }
}

/// The API resource of TrellisClusterIssuer (`cluster`) or TrellisIssuer.
pub fn resource(cluster: bool) -> ApiResource {
    let (kind, plural) = if cluster {
        (CLUSTER_ISSUER, "trellisclusterissuers")
    } else {
        (ISSUER, "trellisissuers")
    };
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, VERSION, kind), plural)
}

struct Context {
    client: Client,
    tokens: Tokens,
    attestation: Arc<dyn KeyAttestation>,
    registry: Arc<Registry>,
    cluster: bool,
}

#[derive(Debug, thiserror::Error)]
enum Error {
    #[error("writing the issuer's status: {0}")]
    Kube(#[from] kube::Error),
    #[error("loading the CA stopped: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// Runs the controller of one issuer kind until the process ends.
pub async fn run(
    client: Client,
    tokens: Tokens,
    attestation: Arc<dyn KeyAttestation>,
    registry: Arc<Registry>,
    cluster: bool,
) {
    let ar = resource(cluster);
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    let controller = Controller::new_with(api, watcher::Config::default(), ar);
    registry
        .stores
        .write()
        .unwrap()
        .push((cluster, controller.store()));
    let context = Arc::new(Context {
        client,
        tokens,
        attestation,
        registry,
        cluster,
    });
    controller
        .run(reconcile, |_, _, _| Action::requeue(RETRY), context)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!("issuer controller: {e}");
            }
        })
        .await;
}

async fn reconcile(issuer: Arc<DynamicObject>, ctx: Arc<Context>) -> Result<Action, Error> {
    let name = issuer.name_any();
    let r = match issuer.namespace() {
        Some(ns) if !ctx.cluster => IssuerRef::Namespaced(ns, name),
        _ => IssuerRef::Cluster(name),
    };
    let uid = issuer.uid().unwrap_or_default();
    let outcome = match IssuerSpec::parse(&r, &issuer.data["spec"]) {
        Err(message) => Err(Failure {
            reason: "InvalidSpec",
            message,
        }),
        Ok(spec) => load(&ctx, &r, spec).await?,
    };
    let (ready, action) = match outcome {
        Ok(ca) => {
            let message = format!(
                "signing CA ready ({}); key attested ({}): {}",
                ca.authority.chain()[0]
                    .subject_name()
                    .entries()
                    .filter_map(|e| e.data().as_utf8().ok().map(|s| s.to_string()))
                    .collect::<Vec<_>>()
                    .join(", "),
                ctx.attestation.name(),
                ca.evidence
            );
            let root = ca.authority.root_pem();
            ctx.registry.put(&r, uid, Arc::new(ca));
            (
                ("True", "Verified", message, Some(root)),
                Action::requeue(RECHECK),
            )
        }
        Err(f) => {
            tracing::warn!(issuer = %r, reason = f.reason, "issuer not ready: {}", f.message);
            ctx.registry.remove(&r);
            (("False", f.reason, f.message, None), Action::requeue(RETRY))
        }
    };
    write_status(&ctx, &issuer, &r, ready).await?;
    Ok(action)
}

async fn load(
    ctx: &Context,
    r: &IssuerRef,
    spec: IssuerSpec,
) -> Result<Result<IssuerCa, Failure>, Error> {
    let parent = match &spec.parent {
        None => None,
        Some(p) => match ctx.registry.ca(p) {
            Some(ca) => Some(ca),
            None => {
                return Ok(Err(Failure {
                    reason: "ParentNotReady",
                    message: format!("the parent issuer, {p}, is not ready"),
                }))
            }
        },
    };
    let (r, tokens, attestation) = (r.clone(), ctx.tokens.clone(), ctx.attestation.clone());
    Ok(tokio::task::spawn_blocking(move || {
        IssuerCa::load(&r, &spec, &tokens, parent.as_deref(), attestation.as_ref())
    })
    .await?)
}

type Ready = (&'static str, &'static str, String, Option<String>);

/// Writes the Ready condition (and the CA certificate) when they changed.
async fn write_status(
    ctx: &Context,
    issuer: &DynamicObject,
    r: &IssuerRef,
    (state, reason, message, root): Ready,
) -> Result<(), Error> {
    let old = issuer.data["status"].clone();
    let mut status = old.clone();
    let generation = json!({"observedGeneration": issuer.metadata.generation});
    conditions::set(&mut status, "Ready", state, reason, &message, generation);
    status["caCertificate"] = root.map(Value::String).unwrap_or(Value::Null);
    if conditions::same(
        conditions::find(&old, "Ready"),
        conditions::find(&status, "Ready"),
    ) && old["caCertificate"] == status["caCertificate"]
    {
        return Ok(());
    }
    let ar = resource(ctx.cluster);
    let api: Api<DynamicObject> = match r.namespace() {
        Some(ns) => Api::namespaced_with(ctx.client.clone(), ns, &ar),
        None => Api::all_with(ctx.client.clone(), &ar),
    };
    api.patch_status(
        r.name(),
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": status })),
    )
    .await?;
    Ok(())
}
