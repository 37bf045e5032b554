//! The Gateway API's status, written back to the cluster as its specification asks:
//! GatewayClasses of Trellis's controller `Accepted`; Gateways `Accepted` and
//! `Programmed`, with each listener's conditions, route kinds and attached routes;
//! HTTPRoutes and GRPCRoutes one entry per parent of Trellis's (`Accepted`, `ResolvedRefs`). Each
//! object's status is written (a merge patch of its `status` subresource) only when
//! what it says or the object's generation changed, so the watch events the writes cause
//! do not cause more writes.

use std::collections::HashMap;
use std::sync::Arc;

use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{json, Value};
use tokio::sync::watch;
use trellis_mesh::gateway_api::status::{Condition, Status};
use trellis_mesh::gateway_api::{CONTROLLER, GROUP};

use crate::{IstioKind, Shared, ISTIO_KINDS};

fn kind(key: &str) -> &'static IstioKind {
    ISTIO_KINDS
        .iter()
        .find(|k| k.key == key)
        .expect("a Gateway API kind of ISTIO_KINDS")
}

const CLASS: &str = "GatewayClass.gateway.networking.k8s.io";
const GATEWAY: &str = "Gateway.gateway.networking.k8s.io";
const HTTP_ROUTE: &str = "HTTPRoute.gateway.networking.k8s.io";
const GRPC_ROUTE: &str = "GRPCRoute.gateway.networking.k8s.io";
const TLS_ROUTE: &str = "TLSRoute.gateway.networking.k8s.io";
const TCP_ROUTE: &str = "TCPRoute.gateway.networking.k8s.io";

/// The status documents `status` says, by (kind key, namespace, name), without the
/// per-write stamps (transition time, observed generation).
fn documents(status: &Status) -> Vec<((&'static str, String, String), Value)> {
    let mut out = Vec::new();
    for c in &status.classes {
        out.push((
            (CLASS, String::new(), c.name.clone()),
            json!({ "conditions": conditions(&c.conditions) }),
        ));
    }
    for g in &status.gateways {
        let listeners: Vec<Value> = g
            .listeners
            .iter()
            .map(|l| {
                json!({
                    "name": l.name,
                    "supportedKinds": l.supported_kinds.iter().map(|k| json!({"group": GROUP, "kind": k})).collect::<Vec<_>>(),
                    "attachedRoutes": l.attached_routes,
                    "conditions": conditions(&l.conditions),
                })
            })
            .collect();
        out.push((
            (GATEWAY, g.namespace.clone(), g.name.clone()),
            json!({ "conditions": conditions(&g.conditions), "listeners": listeners }),
        ));
    }
    for r in &status.routes {
        if r.parents.is_empty() {
            continue;
        }
        let parents: Vec<Value> = r
            .parents
            .iter()
            .map(|p| {
                let mut parent = json!({
                    "group": p.parent.group.as_deref().unwrap_or(GROUP),
                    "kind": p.parent.kind.as_deref().unwrap_or("Gateway"),
                    "namespace": p.parent.namespace,
                    "name": p.parent.name,
                });
                if let Some(s) = &p.parent.section_name {
                    parent["sectionName"] = json!(s);
                }
                if let Some(port) = p.parent.port {
                    parent["port"] = json!(port);
                }
                json!({
                    "parentRef": parent,
                    "controllerName": CONTROLLER,
                    "conditions": conditions(&p.conditions),
                })
            })
            .collect();
        let kind = match r.kind {
            "GRPCRoute" => GRPC_ROUTE,
            "TLSRoute" => TLS_ROUTE,
            "TCPRoute" => TCP_ROUTE,
            _ => HTTP_ROUTE,
        };
        out.push((
            (kind, r.namespace.clone(), r.name.clone()),
            json!({ "parents": parents }),
        ));
    }
    out
}

fn conditions(list: &[Condition]) -> Vec<Value> {
    list.iter()
        .map(|c| {
            json!({
                "type": c.kind,
                "status": if c.status { "True" } else { "False" },
                "reason": c.reason,
                "message": c.message,
            })
        })
        .collect()
}

/// Adds `lastTransitionTime` and `observedGeneration` to every condition in `doc`.
fn stamp(doc: &mut Value, generation: i64, now: &str) {
    match doc {
        Value::Object(map) => {
            if map.contains_key("type") && map.contains_key("reason") {
                map.insert("lastTransitionTime".into(), json!(now));
                map.insert("observedGeneration".into(), json!(generation));
            }
            for v in map.values_mut() {
                stamp(v, generation, now);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| stamp(v, generation, now)),
        _ => {}
    }
}

/// Writes what `status` says whenever it changes, until the sender is dropped.
pub(crate) async fn run(
    client: Client,
    shared: Arc<Shared>,
    mut status: watch::Receiver<Arc<Status>>,
) {
    let mut written: HashMap<(&'static str, String, String), (Value, i64)> = HashMap::new();
    loop {
        let current = status.borrow_and_update().clone();
        for (key, doc) in documents(&current) {
            let (kind_key, ns, name) = &key;
            let generation = {
                let objects = shared.objects.lock().unwrap();
                objects
                    .istio
                    .get(kind_key)
                    .and_then(|m| m.get(&(ns.clone(), name.clone())))
                    .map(|o| o.metadata.generation.unwrap_or(1))
            };
            // An object the watch no longer has: nothing to write to.
            let Some(generation) = generation else {
                continue;
            };
            if written.get(&key) == Some(&(doc.clone(), generation)) {
                continue;
            }
            let k = kind(kind_key);
            let gvk = GroupVersionKind::gvk(k.group, k.version, k.kind);
            let resource = ApiResource::from_gvk_with_plural(&gvk, k.plural);
            let api: Api<DynamicObject> = if ns.is_empty() {
                Api::all_with(client.clone(), &resource)
            } else {
                Api::namespaced_with(client.clone(), ns, &resource)
            };
            let mut body = doc.clone();
            stamp(&mut body, generation, &crate::fake::now_rfc3339());
            let patch = Patch::Merge(json!({ "status": body }));
            match api
                .patch_status(name, &PatchParams::default(), &patch)
                .await
            {
                Ok(o) => {
                    tracing::debug!(kind = k.kind, namespace = %ns, name = %o.name_any(), "Gateway API status written");
                    written.insert(key, (doc, generation));
                }
                Err(e) => {
                    tracing::warn!(kind = k.kind, namespace = %ns, %name, "writing the Gateway API status: {e}")
                }
            }
        }
        if status.changed().await.is_err() {
            return;
        }
    }
}
