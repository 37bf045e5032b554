//! A Kubernetes API server for tests and demos (no cluster runs on a developer machine
//! or in CI). It keeps state and speaks the API server's wire format, so that the real
//! `kubectl` and kube-rs clients work against it unchanged.
//!
//! It starts from recorded list responses (`ServiceList`, `VirtualServiceList`, ... as
//! `kubectl get --raw` prints them) in a directory, or from nothing, and always knows
//! CustomResourceDefinitions and CertificateSigningRequests; applying a CRD adds its
//! kind, as on a cluster. It serves:
//! - discovery (`/api`, `/apis`, `/apis/<group>/<version>`, `/version`) and an OpenAPI v3
//!   index that tells kubectl every kind takes server-side field validation;
//! - `GET` of lists (cluster-wide or one namespace) at the current resourceVersion and of
//!   single objects; `?watch=1&resourceVersion=N` streams of newline-delimited watch events
//!   from that version on, `410 Expired` for versions older than the last compaction;
//!   `fieldSelector=metadata.name=<name>` (what `kubectl get <kind> <name> -w` and kube-rs'
//!   single-object watchers send); label selectors are refused with 400;
//! - `POST` (create, with `generateName`), `PUT` (replace, 409 Conflict on a stale
//!   resourceVersion), `PATCH` (JSON merge patch; a strategic merge patch is read as one),
//!   `DELETE`, and the `status` subresource of kinds that have one (the main resource
//!   then leaves status alone, the subresource everything else);
//! - CertificateSigningRequests as the API server keeps them (`semantics.rs`): the
//!   requester's user name on create, `approval` the only way to add or remove
//!   `Approved`/`Denied`, `status.certificate` settable once and only as PEM;
//! - custom resources pruned and checked against their CRD's structural schema.
//!
//! Requests must carry `Authorization: Bearer <token>` when a token is set (401
//! otherwise). Recorded watch events are fed in with [`FakeApiServer::apply`];
//! [`FakeApiServer::expire`] compacts a kind's history, as etcd does, so that watchers
//! must list again.

mod handler;
mod kinds;
mod kubectl;
mod protobuf;
mod semantics;
mod tls;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use kinds::{collection_path, Collection, KindInfo};
pub use kubectl::{Kubectl, Output};

struct Watch {
    namespace: Option<String>,
    /// `fieldSelector=metadata.name=<name>`.
    name: Option<String>,
    tx: mpsc::UnboundedSender<Bytes>,
}

impl Watch {
    fn wants(&self, key: &(String, String)) -> bool {
        self.namespace.as_ref().is_none_or(|n| n == &key.0)
            && self.name.as_ref().is_none_or(|n| n == &key.1)
    }
}

struct State {
    resource_version: u64,
    /// Collection path (`/api/v1/services`) → its objects.
    collections: BTreeMap<String, Collection>,
    token: Option<String>,
    requests: Vec<String>,
    uid: u64,
}

/// The test API server; it runs on its own thread until dropped.
pub struct FakeApiServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    /// The CA of its serving certificate (PEM).
    ca_pem: String,
    _stop: tokio::sync::oneshot::Sender<()>,
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

impl State {
    /// Records a change to `path`'s collection under a new resourceVersion and tells
    /// its watchers; the object gets that version.
    fn record(&mut self, path: &str, typ: &str, mut object: Value) -> Value {
        self.resource_version += 1;
        let rv = self.resource_version;
        object["metadata"]["resourceVersion"] = rv.to_string().into();
        let c = self.collections.get_mut(path).expect("a known collection");
        let key = object_key(&object);
        if typ == "DELETED" {
            c.items.remove(&key);
        } else {
            c.items.insert(key.clone(), object.clone());
        }
        let line = event_line(typ, &object);
        c.log.push((rv, key.clone(), line.clone()));
        c.watches
            .retain(|w| !w.wants(&key) || w.tx.send(line.clone()).is_ok());
        object
    }
}

impl FakeApiServer {
    /// Serves every `*.json` list in `fixtures` on 127.0.0.1 (a free port); requests
    /// must carry `Authorization: Bearer <token>` when `token` is set.
    pub fn start(fixtures: &Path, token: Option<&str>) -> std::io::Result<FakeApiServer> {
        let mut state = State {
            resource_version: 0,
            collections: kinds::built_in(),
            token: token.map(str::to_string),
            requests: Vec::new(),
            uid: 0,
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
            let mut c = Collection::new(KindInfo::recorded(&api_version, kind));
            for item in list["items"].as_array().into_iter().flatten() {
                let mut item = item.clone();
                item["apiVersion"] = api_version.clone().into();
                item["kind"] = kind.into();
                c.items.insert(object_key(&item), item);
            }
            state
                .collections
                .insert(collection_path(&api_version, kind), c);
        }
        Self::serve(state)
    }

    /// A server with no objects: only the kinds it always knows, and those of the CRDs
    /// applied to it.
    /// Namespaces must exist for objects to be created in them; `default`, `kube-system`
    /// and `kube-public` do.
    pub fn empty(token: Option<&str>) -> std::io::Result<FakeApiServer> {
        let mut collections = kinds::built_in();
        let mut namespaces = Collection::new(KindInfo {
            short_names: vec!["ns".into()],
            subresources: vec!["status"],
            ..KindInfo::recorded("v1", "Namespace")
        });
        for ns in ["default", "kube-system", "kube-public"] {
            let o = json!({"apiVersion": "v1", "kind": "Namespace",
                           "metadata": {"name": ns, "resourceVersion": "1"},
                           "status": {"phase": "Active"}});
            namespaces.items.insert(object_key(&o), o);
        }
        collections.insert(namespaces.info.path(), namespaces);
        Self::serve(State {
            resource_version: 1,
            collections,
            token: token.map(str::to_string),
            requests: Vec::new(),
            uid: 0,
        })
    }

    fn serve(state: State) -> std::io::Result<FakeApiServer> {
        let state = Arc::new(Mutex::new(state));
        let (acceptor, ca_pem) = tls::acceptor().map_err(std::io::Error::other)?;
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
                        _ = handler::accept(listener, acceptor, serving) => {}
                        _ = stopped => {}
                    }
                });
            })?;
        Ok(FakeApiServer {
            addr,
            state,
            ca_pem,
            _stop: stop,
        })
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The CA that signed its serving certificate, in PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A kubeconfig that points kubectl or `trellis control --kubeconfig` here.
    pub fn kubeconfig(&self) -> String {
        use base64::Engine as _;
        let token = self.state.lock().unwrap().token.clone();
        let user = match token {
            Some(t) => format!("{{token: {t}}}"),
            None => "{}".into(),
        };
        let ca = base64::engine::general_purpose::STANDARD.encode(&self.ca_pem);
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster: {{server: \"{}\", certificate-authority-data: {ca}}}\n\
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
        if !matches!(typ.as_str(), "ADDED" | "MODIFIED" | "DELETED") {
            return Err(format!("event type {typ:?}"));
        }
        let object = event["object"].clone();
        let (api, kind) = (
            object["apiVersion"].as_str().unwrap_or_default(),
            object["kind"].as_str().unwrap_or_default(),
        );
        let path = collection_path(api, kind);
        let mut state = self.state.lock().unwrap();
        if !state.collections.contains_key(&path) {
            return Err(format!("no collection {path} for {api} {kind}"));
        }
        let object = state.record(&path, &typ, object);
        Ok(object["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|v| v.parse().ok())
            .unwrap_or_default())
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

    /// The stored object (with apiVersion and kind), if there is one.
    pub fn object(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Option<Value> {
        let state = self.state.lock().unwrap();
        let c = state
            .collections
            .values()
            .find(|c| c.info.api_version == api_version && c.info.kind == kind)?;
        c.items
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// Every version the object has had since its kind's history was last compacted,
    /// oldest first (the objects of its watch events, a deletion included).
    pub fn history(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Vec<Value> {
        let state = self.state.lock().unwrap();
        let Some(c) = state
            .collections
            .values()
            .find(|c| c.info.api_version == api_version && c.info.kind == kind)
        else {
            return Vec::new();
        };
        let key = (namespace.to_string(), name.to_string());
        c.log
            .iter()
            .filter(|(_, k, _)| *k == key)
            .filter_map(|(_, _, line)| serde_json::from_slice::<Value>(line).ok())
            .map(|event| event["object"].clone())
            .collect()
    }

    /// Every request so far: `GET /api/v1/pods?watch=true&resourceVersion=12...`.
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }
}

pub(crate) fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    rfc3339(secs)
}

/// `2026-12-07T00:32:15Z` for seconds since the epoch.
pub(crate) fn rfc3339(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
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
