//! The HTTP side of the test API server: authentication, routing a path to a kind and
//! an object, and the verbs.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::{Method, Request, Response};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::kinds::{self, Collection, KindInfo};
use super::{event_line, expired_event, now_rfc3339, object_key, status, State, Watch};
use super::{protobuf, semantics};

type Body = BoxBody<Bytes, Infallible>;

pub(super) async fn accept(
    listener: tokio::net::TcpListener,
    acceptor: boring::ssl::SslAcceptor,
    state: Arc<Mutex<State>>,
) {
    let acceptor = Arc::new(acceptor);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Ok(stream) = tokio_boring::accept(&acceptor, stream).await else {
                return;
            };
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

fn full(code: u16, body: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())).boxed())
        .unwrap()
}

/// A Status object as the response, with its code.
fn failure(status: Value) -> Response<Body> {
    let code = status["code"]
        .as_u64()
        .and_then(|c| u16::try_from(c).ok())
        .unwrap_or(500);
    full(code, &status)
}

fn not_found() -> Response<Body> {
    full(
        404,
        &status(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ),
    )
}

/// `%3D` → `=`; `+` stays (selectors do not use it).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Where a request goes: a kind's collection, maybe one namespace, one object, one
/// subresource.
struct Target {
    path: String,
    namespace: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

fn route(collections: &BTreeMap<String, Collection>, path: &str) -> Option<Target> {
    let parts: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    let base = match parts.get(1) {
        Some(&"api") => 3,
        Some(&"apis") => 4,
        _ => return None,
    };
    let api_version = parts.get(2..base)?.join("/");
    let rest = parts.get(base..)?;
    let find = |plural: &str| {
        collections
            .iter()
            .find(|(_, c)| c.info.api_version == api_version && c.info.plural == plural)
            .map(|(p, c)| (p.clone(), c.info.namespaced))
    };
    let target = |plural: &str, ns: Option<&str>, name: Option<&&str>, sub: Option<&&str>| {
        let (path, namespaced) = find(plural)?;
        if namespaced == ns.is_none() && name.is_some() {
            return None;
        }
        Some(Target {
            path,
            namespace: ns.map(str::to_string),
            name: name.map(|s| s.to_string()),
            sub: sub.map(|s| s.to_string()),
        })
    };
    match rest {
        ["namespaces", ns, plural, more @ ..]
            if more.len() <= 2 && !matches!(*plural, "status" | "finalize") =>
        {
            target(plural, Some(ns), more.first(), more.get(1))
        }
        [plural, more @ ..] if more.len() <= 2 => target(plural, None, more.first(), more.get(1)),
        _ => None,
    }
}

async fn handle(state: &Mutex<State>, req: Request<hyper::body::Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return full(400, &status(400, "BadRequest", "unreadable body")),
    };
    let mut state = state.lock().unwrap();
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    state.requests.push(format!("{} {target}", parts.method));
    let user = match &state.token {
        Some(token) => {
            let auth = parts
                .headers
                .get("authorization")
                .and_then(|v| v.to_str().ok());
            if auth != Some(&format!("Bearer {token}")) {
                return full(401, &status(401, "Unauthorized", "Unauthorized"));
            }
            "kubernetes-admin"
        }
        None => "system:anonymous",
    };
    let query: BTreeMap<String, String> = parts
        .uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), percent_decode(v)))
        .collect();
    let path = parts.uri.path();
    if parts.method == Method::GET {
        if path == "/openapi/v2" {
            return openapi_v2(&parts.headers);
        }
        if let Some(doc) = kinds::discovery(&state.collections, path) {
            return full(200, &doc);
        }
    }
    let Some(t) = route(&state.collections, path) else {
        return not_found();
    };
    let content_type = parts
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    let parsed = || -> Result<Value, Value> {
        if content_type.starts_with("application/vnd.kubernetes.protobuf") {
            return protobuf::to_json(&body).map_err(|e| status(415, "UnsupportedMediaType", &e));
        }
        if !body.is_empty() && !content_type.contains("json") {
            return Err(status(
                415,
                "UnsupportedMediaType",
                &format!("the body is {content_type}; the test API server reads JSON"),
            ));
        }
        serde_json::from_slice(&body)
            .map_err(|e| status(400, "BadRequest", &format!("the body is not JSON: {e}")))
    };
    match (&parts.method, &t.name) {
        (&Method::GET, None) => list_or_watch(&mut state, &t, &query),
        (&Method::POST, None) => match parsed() {
            Ok(o) => create(&mut state, &t, o, user),
            Err(r) => failure(r),
        },
        (&Method::GET, Some(name)) => match get(&state, &t, name) {
            Ok(o) => full(200, &o),
            Err(r) => failure(r),
        },
        (&Method::PUT, Some(_)) => match parsed() {
            Ok(o) => update(&mut state, &t, o),
            Err(r) => failure(r),
        },
        (&Method::PATCH, Some(name)) => {
            let patch = match parsed() {
                Ok(p) => p,
                Err(r) => return failure(r),
            };
            if !(content_type.starts_with("application/merge-patch+json")
                || content_type.starts_with("application/strategic-merge-patch+json"))
            {
                return full(
                    415,
                    &status(
                        415,
                        "UnsupportedMediaType",
                        &format!("the test API server takes merge patches, not {content_type}"),
                    ),
                );
            }
            let mut object = match get(&state, &t, name) {
                Ok(o) => o,
                Err(r) => return failure(r),
            };
            merge(&mut object, &patch);
            update(&mut state, &t, object)
        }
        (&Method::DELETE, Some(name)) => match get(&state, &t, name) {
            Ok(o) => {
                if t.sub.is_some() {
                    return not_found();
                }
                if o["kind"] == "CustomResourceDefinition" {
                    if let Ok(infos) = kinds::from_crd(&o) {
                        for i in infos {
                            state.collections.remove(&i.path());
                        }
                    }
                }
                let o = state.record(&t.path, "DELETED", o);
                full(200, &o)
            }
            Err(r) => failure(r),
        },
        _ => full(
            405,
            &status(405, "MethodNotAllowed", "the method is not allowed here"),
        ),
    }
}

/// An OpenAPI v2 document without definitions: kubectl before 1.27 downloads it to
/// validate on the client side (it asks for gnostic's protobuf encoding), and
/// validates nothing against kinds it does not describe.
fn openapi_v2(headers: &hyper::HeaderMap) -> Response<Body> {
    let protobuf = headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("protobuf"));
    if !protobuf {
        return full(
            200,
            &json!({"swagger": "2.0", "info": {"title": "Kubernetes", "version": "v1.33.0"},
                    "paths": {}, "definitions": {}}),
        );
    }
    // openapi_v2.Document { swagger = 1; info = 2 { title = 1; version = 2 } }.
    let info = [&[0x0a, 10][..], b"Kubernetes", &[0x12, 7], b"v1.33.0"].concat();
    let doc = [&[0x0a, 3][..], b"2.0", &[0x12, info.len() as u8], &info].concat();
    Response::builder()
        .status(200)
        .header(
            "content-type",
            "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
        )
        .body(Full::new(Bytes::from(doc)).boxed())
        .unwrap()
}

/// RFC 7386 JSON merge patch.
fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let t = target.as_object_mut().unwrap();
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

fn resource_name(info: &KindInfo) -> String {
    match info.group() {
        "" => info.plural.clone(),
        g => format!("{}.{g}", info.plural),
    }
}

fn get(state: &State, t: &Target, name: &str) -> Result<Value, Value> {
    let c = &state.collections[&t.path];
    if t.sub
        .as_deref()
        .is_some_and(|s| !c.info.subresources.contains(&s))
    {
        return Err(status(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ));
    }
    let key = (t.namespace.clone().unwrap_or_default(), name.to_string());
    c.items.get(&key).cloned().ok_or_else(|| {
        let mut s = status(
            404,
            "NotFound",
            &format!("{} {name:?} not found", resource_name(&c.info)),
        );
        s["details"] = json!({"name": name, "group": c.info.group(), "kind": c.info.plural});
        s
    })
}

fn create(state: &mut State, t: &Target, mut object: Value, user: &str) -> Response<Body> {
    let info = state.collections[&t.path].info.clone();
    if object["kind"] != info.kind.as_str() || object["apiVersion"] != info.api_version.as_str() {
        return full(
            400,
            &status(
                400,
                "BadRequest",
                &format!(
                    "the body is {} {}, not {} {}",
                    object["apiVersion"], object["kind"], info.api_version, info.kind
                ),
            ),
        );
    }
    let meta = &mut object["metadata"];
    if !meta.is_object() {
        *meta = json!({});
    }
    if meta["name"].as_str().is_none_or(str::is_empty) {
        let Some(prefix) = meta["generateName"].as_str() else {
            return full(
                422,
                &status(
                    422,
                    "Invalid",
                    "metadata.name: Required value: name or generateName is required",
                ),
            );
        };
        state.uid += 1;
        meta["name"] = format!("{prefix}{:05x}", state.uid).into();
    }
    match (&t.namespace, info.namespaced) {
        (Some(ns), true) => {
            if let Some(namespaces) = state.collections.get("/api/v1/namespaces") {
                if !namespaces.items.contains_key(&(String::new(), ns.clone())) {
                    let mut s = status(404, "NotFound", &format!("namespaces {ns:?} not found"));
                    s["details"] = json!({"name": ns, "kind": "namespaces"});
                    return full(404, &s);
                }
            }
            if meta["namespace"].as_str().is_some_and(|n| n != ns) {
                return full(
                    400,
                    &status(
                        400,
                        "BadRequest",
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ),
                );
            }
            meta["namespace"] = ns.clone().into();
        }
        (None, false) => {
            if let Some(m) = meta.as_object_mut() {
                m.remove("namespace");
            }
        }
        _ => return not_found(),
    }
    state.uid += 1;
    meta["uid"] = format!("00000000-0000-4000-8000-{:012x}", state.uid).into();
    meta["creationTimestamp"] = now_rfc3339().into();
    meta["generation"] = 1.into();
    let key = object_key(&object);
    let name = key.1.clone();
    if state.collections[&t.path].items.contains_key(&key) {
        let mut s = status(
            409,
            "AlreadyExists",
            &format!("{} {name:?} already exists", resource_name(&info)),
        );
        s["details"] = json!({"name": name, "group": info.group(), "kind": info.plural});
        return full(409, &s);
    }
    if let Err(r) = semantics::on_create(&info, &mut object, user) {
        return failure(r);
    }
    if info.kind == "Namespace" {
        object["status"] = json!({"phase": "Active"});
    }
    if info.kind == "CustomResourceDefinition" {
        match kinds::from_crd(&object) {
            Ok(infos) => register(state, infos),
            Err(e) => {
                return failure(status(
                    422,
                    "Invalid",
                    &format!(
                        "CustomResourceDefinition.apiextensions.k8s.io {name:?} is invalid: {e}"
                    ),
                ))
            }
        }
    }
    let object = state.record(&t.path, "ADDED", object);
    full(201, &object)
}

/// Serves the kinds of an applied CRD (objects already stored stay).
fn register(state: &mut State, infos: Vec<KindInfo>) {
    for i in infos {
        let path = i.path();
        match state.collections.get_mut(&path) {
            Some(c) => c.info = i,
            None => {
                state.collections.insert(path, Collection::new(i));
            }
        }
    }
}

fn update(state: &mut State, t: &Target, new: Value) -> Response<Body> {
    let name = t.name.clone().unwrap_or_default();
    let old = match get(state, t, &name) {
        Ok(o) => o,
        Err(r) => return failure(r),
    };
    let info = state.collections[&t.path].info.clone();
    if new["metadata"]["name"].as_str() != Some(name.as_str()) {
        return full(
            400,
            &status(
                400,
                "BadRequest",
                "the name of the object does not match the name on the URL",
            ),
        );
    }
    if let Some(rv) = new["metadata"]["resourceVersion"].as_str() {
        if Some(rv) != old["metadata"]["resourceVersion"].as_str() {
            let message = format!(
                "Operation cannot be fulfilled on {} {name:?}: the object has been modified; please apply your changes to the latest version and try again",
                resource_name(&info)
            );
            let mut s = status(409, "Conflict", &message);
            s["details"] = json!({"name": name, "group": info.group(), "kind": info.plural});
            return full(409, &s);
        }
    }
    let mut object = match semantics::on_update(&info, t.sub.as_deref(), &old, new) {
        Ok(o) => o,
        Err(r) => return failure(r),
    };
    for keep in ["uid", "creationTimestamp", "namespace", "generation"] {
        object["metadata"][keep] = old["metadata"][keep].clone();
    }
    if let Some(m) = object["metadata"].as_object_mut() {
        m.retain(|_, v| !v.is_null());
    }
    if t.sub.is_none() && object.get("spec") != old.get("spec") {
        let g = old["metadata"]["generation"].as_i64().unwrap_or(1);
        object["metadata"]["generation"] = (g + 1).into();
    }
    if info.kind == "CustomResourceDefinition" {
        if let Ok(infos) = kinds::from_crd(&object) {
            register(state, infos);
        }
    }
    if object == old {
        return full(200, &object);
    }
    let object = state.record(&t.path, "MODIFIED", object);
    full(200, &object)
}

fn list_or_watch(
    state: &mut State,
    t: &Target,
    query: &BTreeMap<String, String>,
) -> Response<Body> {
    if query.get("labelSelector").is_some_and(|s| !s.is_empty()) {
        return full(
            400,
            &status(
                400,
                "BadRequest",
                "label selectors are not implemented by the test API server",
            ),
        );
    }
    let name = match query.get("fieldSelector").filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => match s.strip_prefix("metadata.name=") {
            Some(n) if !n.contains(',') => Some(n.to_string()),
            _ => {
                return full(
                    400,
                    &status(
                        400,
                        "BadRequest",
                        &format!(
                        "field selector {s:?}: the test API server takes metadata.name=<name> only"
                    ),
                    ),
                )
            }
        },
    };
    let rv_now = state.resource_version;
    let c = state.collections.get_mut(&t.path).unwrap();
    let wanted = |key: &(String, String)| {
        t.namespace.as_ref().is_none_or(|n| n == &key.0)
            && name.as_ref().is_none_or(|n| n == &key.1)
    };
    let watching = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
    if !watching {
        let built_in = c.info.built_in();
        let items: Vec<Value> = c
            .items
            .iter()
            .filter(|(k, _)| wanted(k))
            .map(|(_, o)| {
                let mut o = o.clone();
                if built_in {
                    if let Some(m) = o.as_object_mut() {
                        m.remove("apiVersion");
                        m.remove("kind");
                    }
                }
                o
            })
            .collect();
        return full(
            200,
            &json!({"kind": format!("{}List", c.info.kind), "apiVersion": c.info.api_version,
                    "metadata": {"resourceVersion": rv_now.to_string()}, "items": items}),
        );
    }
    let from: Option<u64> = query
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .filter(|v| *v != 0);
    let (tx, rx) = mpsc::unbounded_channel();
    match from {
        // No version (or 0): the current objects first, as ADDED events.
        None => {
            for (k, o) in &c.items {
                if wanted(k) {
                    let _ = tx.send(event_line("ADDED", o));
                }
            }
        }
        Some(from) if from < c.compacted => {
            let _ = tx.send(expired_event(from));
        }
        Some(from) => {
            for (rv, key, line) in &c.log {
                if *rv > from && wanted(key) {
                    let _ = tx.send(line.clone());
                }
            }
        }
    }
    if from.is_none_or(|f| f >= c.compacted) {
        c.watches.push(Watch {
            namespace: t.namespace.clone(),
            name,
            tx,
        });
    }
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let line = rx.recv().await?;
        Some((Ok::<_, Infallible>(Frame::data(line)), rx))
    });
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(StreamBody::new(stream).boxed())
        .unwrap()
}
