//! A Kubernetes API server that replays recorded responses, for tests and demos (no
//! cluster runs on a developer machine or in CI).
//!
//! It loads list responses (`ServiceList`, `VirtualServiceList`, ... as
//! `kubectl get --raw` prints them) from a directory and serves them the way the API
//! server does: `GET` lists (cluster-wide or one namespace) with the current
//! resourceVersion, `?watch=1&resourceVersion=N` streams of newline-delimited watch
//! events from that version on, `410 Expired` for versions older than the last
//! compaction, 401 without the bearer token, 404 for kinds it does not have. Recorded
//! watch events (`{"type":"MODIFIED","object":{...}}`) are fed in with
//! [`FakeApiServer::apply`]; [`FakeApiServer::expire`] compacts a kind's history, as
//! etcd does, so that watchers must list again. Label and field selectors are not
//! implemented (Trellis's watchers use neither).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::{Request, Response};
use serde_json::{json, Value};
use tokio::sync::mpsc;

type Body = BoxBody<Bytes, Infallible>;

struct Watch {
    namespace: Option<String>,
    tx: mpsc::UnboundedSender<Bytes>,
}

struct Collection {
    list_kind: String,
    api_version: String,
    /// (namespace, name) → object, with its apiVersion and kind.
    items: BTreeMap<(String, String), Value>,
    /// Events (resourceVersion, object's namespace, line), for watches that resume from
    /// an older version.
    log: Vec<(u64, String, Bytes)>,
    /// Watches from a version below this get 410 Expired.
    compacted: u64,
    watches: Vec<Watch>,
}

struct State {
    resource_version: u64,
    /// Collection path (`/api/v1/services`) → its objects.
    collections: BTreeMap<String, Collection>,
    token: Option<String>,
    requests: Vec<String>,
}

/// The replaying API server; it runs on its own thread until dropped.
pub struct FakeApiServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// `/api/v1/pods` for (`v1`, `Pod`); `/apis/networking.istio.io/v1/virtualservices`.
fn collection_path(api_version: &str, kind: &str) -> String {
    let lower = kind.to_ascii_lowercase();
    let plural = if let Some(stem) = lower.strip_suffix('y') {
        format!("{stem}ies")
    } else if lower.ends_with('s') {
        format!("{lower}es")
    } else {
        format!("{lower}s")
    };
    if api_version.contains('/') {
        format!("/apis/{api_version}/{plural}")
    } else {
        format!("/api/{api_version}/{plural}")
    }
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "details": {}, "code": code})
}

fn object_key(o: &Value) -> (String, String) {
    let m = &o["metadata"];
    (
        m["namespace"].as_str().unwrap_or_default().to_string(),
        m["name"].as_str().unwrap_or_default().to_string(),
    )
}

impl FakeApiServer {
    /// Serves every `*.json` list in `fixtures` on 127.0.0.1 (a free port); requests
    /// must carry `Authorization: Bearer <token>` when `token` is set.
    pub fn start(fixtures: &Path, token: Option<&str>) -> std::io::Result<FakeApiServer> {
        let mut state = State {
            resource_version: 0,
            collections: BTreeMap::new(),
            token: token.map(str::to_string),
            requests: Vec::new(),
        };
        let mut files: Vec<_> = std::fs::read_dir(fixtures)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        for file in files {
            let bad = |m: String| std::io::Error::other(format!("{}: {m}", file.display()));
            let list: Value = serde_json::from_str(&std::fs::read_to_string(&file)?)
                .map_err(|e| bad(e.to_string()))?;
            let list_kind = list["kind"].as_str().unwrap_or_default().to_string();
            let api_version = list["apiVersion"].as_str().unwrap_or_default().to_string();
            let Some(kind) = list_kind.strip_suffix("List") else {
                return Err(bad(format!("kind {list_kind:?} is not a list")));
            };
            if let Some(rv) = list["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|v| v.parse().ok())
            {
                state.resource_version = state.resource_version.max(rv);
            }
            let mut items = BTreeMap::new();
            for item in list["items"].as_array().into_iter().flatten() {
                let mut item = item.clone();
                item["apiVersion"] = api_version.clone().into();
                item["kind"] = kind.into();
                items.insert(object_key(&item), item);
            }
            state.collections.insert(
                collection_path(&api_version, kind),
                Collection {
                    list_kind: list_kind.clone(),
                    api_version,
                    items,
                    log: Vec::new(),
                    compacted: 0,
                    watches: Vec::new(),
                },
            );
        }
        let state = Arc::new(Mutex::new(state));
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let serving = state.clone();
        std::thread::Builder::new()
            .name("fake-apiserver".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                    tokio::select! {
                        _ = accept(listener, serving) => {}
                        _ = stopped => {}
                    }
                });
            })?;
        Ok(FakeApiServer {
            addr,
            state,
            _stop: stop,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig that points kubectl or `trellis control --kubeconfig` here.
    pub fn kubeconfig(&self) -> String {
        let token = self.state.lock().unwrap().token.clone();
        let user = match token {
            Some(t) => format!("{{token: {t}}}"),
            None => "{}".into(),
        };
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster: {{server: \"{}\"}}\n\
             users:\n- name: trellis-control\n  user: {user}\n\
             contexts:\n- name: fake\n  context: {{cluster: fake, user: trellis-control, namespace: istio-system}}\n\
             current-context: fake\n",
            self.url()
        )
    }

    /// Applies a recorded watch event (`ADDED`, `MODIFIED`, `DELETED`) as the API server
    /// would: a new resourceVersion, the stored object updated, watchers told.
    pub fn apply(&self, event: &str) -> Result<u64, String> {
        let event: Value = serde_json::from_str(event).map_err(|e| e.to_string())?;
        let typ = event["type"].as_str().unwrap_or_default().to_string();
        let mut object = event["object"].clone();
        let (api, kind) = (
            object["apiVersion"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            object["kind"].as_str().unwrap_or_default().to_string(),
        );
        let path = collection_path(&api, &kind);
        let mut state = self.state.lock().unwrap();
        state.resource_version += 1;
        let rv = state.resource_version;
        let c = state
            .collections
            .get_mut(&path)
            .ok_or_else(|| format!("no collection {path} for {api} {kind}"))?;
        object["metadata"]["resourceVersion"] = rv.to_string().into();
        let key = object_key(&object);
        match typ.as_str() {
            "ADDED" | "MODIFIED" => {
                c.items.insert(key.clone(), object.clone());
            }
            "DELETED" => {
                c.items.remove(&key);
            }
            other => return Err(format!("event type {other:?}")),
        }
        let line = event_line(&typ, &object);
        c.log.push((rv, key.0.clone(), line.clone()));
        c.watches.retain(|w| {
            w.namespace.as_ref().is_some_and(|n| n != &key.0) || w.tx.send(line.clone()).is_ok()
        });
        Ok(rv)
    }

    /// Compacts `kind`'s history: open watches end with 410 Expired and resuming from
    /// any version seen so far is refused, so watchers list again.
    pub fn expire(&self, api_version: &str, kind: &str) {
        let mut state = self.state.lock().unwrap();
        let rv = state.resource_version;
        if let Some(c) = state
            .collections
            .get_mut(&collection_path(api_version, kind))
        {
            c.compacted = rv + 1;
            c.log.clear();
            let expired = expired_event(rv);
            for w in c.watches.drain(..) {
                let _ = w.tx.send(expired.clone());
            }
        }
        // The next list must report a version at or past the compaction.
        state.resource_version = rv + 1;
    }

    /// Every request so far: `GET /api/v1/pods?watch=true&resourceVersion=12...`.
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }
}

/// One watch event as the API server streams it: a JSON object and a newline.
fn event_line(typ: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": typ, "object": object})).unwrap();
    line.push(b'\n');
    Bytes::from(line)
}

fn expired_event(rv: u64) -> Bytes {
    let expired = status(410, "Expired", &format!("too old resource version: {rv}"));
    event_line("ERROR", &expired)
}

async fn accept(listener: tokio::net::TcpListener, state: Arc<Mutex<State>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, req)) }
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

fn handle(state: &Mutex<State>, req: Request<hyper::body::Incoming>) -> Response<Body> {
    let mut state = state.lock().unwrap();
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    state.requests.push(format!("{} {target}", req.method()));
    if let Some(token) = &state.token {
        let auth = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        if auth != Some(&format!("Bearer {token}")) {
            return full(401, &status(401, "Unauthorized", "Unauthorized"));
        }
    }
    if req.method() != hyper::Method::GET {
        return full(
            405,
            &status(405, "MethodNotAllowed", "the fake API server only reads"),
        );
    }
    let query: BTreeMap<String, String> = req
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let (path, namespace) = split_namespace(req.uri().path());
    let rv_now = state.resource_version;
    let Some(c) = state.collections.get_mut(&path) else {
        return full(
            404,
            &status(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ),
        );
    };
    let watching = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
    if !watching {
        // Built-in kinds' list items carry no apiVersion/kind; custom resources' do.
        let builtin = !c.api_version.contains(".istio.io");
        let items: Vec<Value> = c
            .items
            .iter()
            .filter(|((ns, _), _)| namespace.as_ref().is_none_or(|n| n == ns))
            .map(|(_, o)| {
                let mut o = o.clone();
                if builtin {
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
            &json!({"kind": c.list_kind, "apiVersion": c.api_version,
                    "metadata": {"resourceVersion": rv_now.to_string()}, "items": items}),
        );
    }
    let from: u64 = query
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(rv_now);
    let (tx, rx) = mpsc::unbounded_channel();
    if from != 0 && from < c.compacted {
        let _ = tx.send(expired_event(from));
    } else {
        for (rv, ns, line) in &c.log {
            if *rv > from && namespace.as_ref().is_none_or(|n| n == ns) {
                let _ = tx.send(line.clone());
            }
        }
        c.watches.push(Watch { namespace, tx });
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

/// `/api/v1/namespaces/shop/pods` → (`/api/v1/pods`, Some("shop")).
fn split_namespace(path: &str) -> (String, Option<String>) {
    let parts: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    let base = if parts.get(1) == Some(&"api") { 3 } else { 4 };
    if parts.len() == base + 3 && parts[base] == "namespaces" {
        let mut p = parts[..base].join("/");
        p.push('/');
        p.push_str(parts[base + 2]);
        return (p, Some(parts[base + 1].to_string()));
    }
    (path.trim_end_matches('/').to_string(), None)
}
