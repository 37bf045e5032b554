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

/// Adds `lastTransitionTime` and `observedGeneration` to every condition in `doc`. A
/// condition whose status is what it was in `old` (the object's current status) keeps
/// its transition time: the time is when the status last changed, not when it was
/// last written.
fn stamp(doc: &mut Value, old: Option<&Value>, generation: i64, now: &str) {
    match doc {
        Value::Object(map) => {
            if map.contains_key("type") && map.contains_key("reason") {
                let unchanged = old.is_some_and(|o| o.get("status") == map.get("status"));
                let since = old
                    .and_then(|o| o.get("lastTransitionTime"))
                    .filter(|_| unchanged)
                    .cloned()
                    .unwrap_or_else(|| json!(now));
                map.insert("lastTransitionTime".into(), since);
                map.insert("observedGeneration".into(), json!(generation));
            }
            for (k, v) in map.iter_mut() {
                stamp(v, old.and_then(|o| o.get(k)), generation, now);
            }
        }
        Value::Array(items) => {
            for v in items.iter_mut() {
                let before = old
                    .and_then(Value::as_array)
                    .and_then(|o| counterpart(v, o));
                stamp(v, before, generation, now);
            }
        }
        _ => {}
    }
}

/// The entry of `old` that stands for `item`: a condition by type, a route's parent by
/// its parentRef, a listener by name.
fn counterpart<'a>(item: &Value, old: &'a [Value]) -> Option<&'a Value> {
    ["type", "parentRef", "name"]
        .iter()
        .find_map(|k| item.get(*k).map(|v| (*k, v)))
        .and_then(|(k, v)| old.iter().find(|o| o.get(k) == Some(v)))
}

/// A route's `parents` as written: ours, then the entries of other controllers as they
/// are (a merge patch replaces the whole list).
fn keep_other_controllers(doc: &mut Value, old: Option<&Value>) {
    let others = old
        .and_then(|o| o.get("parents"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|p| p.get("controllerName").and_then(Value::as_str) != Some(CONTROLLER))
        .cloned();
    if let Some(Value::Array(parents)) = doc.get_mut("parents") {
        parents.extend(others);
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
            let seen = {
                let objects = shared.objects.lock().unwrap();
                objects
                    .istio
                    .get(kind_key)
                    .and_then(|m| m.get(&(ns.clone(), name.clone())))
                    .map(|o| {
                        (
                            o.metadata.generation.unwrap_or(1),
                            o.data.get("status").cloned(),
                        )
                    })
            };
            // An object the watch no longer has: nothing to write to.
            let Some((generation, old)) = seen else {
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
            stamp(
                &mut body,
                old.as_ref(),
                generation,
                &crate::fake::now_rfc3339(),
            );
            keep_other_controllers(&mut body, old.as_ref());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_condition_keeps_its_transition_time_until_its_status_changes() {
        let old = json!({ "parents": [
            { "parentRef": { "name": "edge" }, "controllerName": CONTROLLER, "conditions": [
                { "type": "Accepted", "status": "True", "reason": "Accepted", "lastTransitionTime": "2026-01-01T00:00:00Z" },
                { "type": "ResolvedRefs", "status": "True", "reason": "ResolvedRefs", "lastTransitionTime": "2026-01-01T00:00:00Z" }
            ] },
            { "parentRef": { "name": "theirs" }, "controllerName": "example.com/other", "conditions": [] }
        ] });
        let mut doc = json!({ "parents": [
            { "parentRef": { "name": "edge" }, "controllerName": CONTROLLER, "conditions": [
                { "type": "Accepted", "status": "True", "reason": "Accepted" },
                { "type": "ResolvedRefs", "status": "False", "reason": "BackendNotFound" }
            ] }
        ] });
        stamp(&mut doc, Some(&old), 3, "2026-12-07T12:00:00Z");
        keep_other_controllers(&mut doc, Some(&old));
        let ours = &doc["parents"][0]["conditions"];
        assert_eq!(ours[0]["lastTransitionTime"], "2026-01-01T00:00:00Z");
        assert_eq!(ours[1]["lastTransitionTime"], "2026-12-07T12:00:00Z");
        assert_eq!(ours[1]["observedGeneration"], 3);
        // Another controller's entry is written back as it was.
        assert_eq!(doc["parents"].as_array().unwrap().len(), 2);
        assert_eq!(doc["parents"][1]["controllerName"], "example.com/other");
        // A first write stamps now.
        let mut first = json!({ "conditions": [{ "type": "Accepted", "status": "True", "reason": "Accepted" }] });
        stamp(&mut first, None, 1, "2026-12-07T12:00:00Z");
        assert_eq!(
            first["conditions"][0]["lastTransitionTime"],
            "2026-12-07T12:00:00Z"
        );
    }
}
