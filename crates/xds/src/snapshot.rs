use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use envoy_types::pb::google::protobuf::Any;
use tokio::sync::{broadcast, watch};

/// One resource with the version the server gives it: a hash of its encoded bytes, so
/// two builds of the same content have the same version across restarts.
#[derive(Clone, Debug, PartialEq)]
pub struct Versioned {
    pub version: String,
    pub body: Any,
}

impl Versioned {
    pub fn new(body: Any) -> Self {
        let mut h = xxhash_rust::xxh64::Xxh64::new(0);
        h.update(body.type_url.as_bytes());
        h.update(&body.value);
        Versioned {
            version: format!("{:016x}", h.digest()),
            body,
        }
    }
}

/// The resources of one type, by name, with a version for the whole set (state of the
/// world sends a set at a time). Resources are shared: the same cluster in a hundred
/// sidecars' views is one allocation.
#[derive(Clone, Debug, Default)]
pub struct TypeResources {
    pub version: String,
    pub items: BTreeMap<String, Arc<Versioned>>,
    sealed: bool,
}

/// Versions are content hashes, so equal versions mean equal contents.
impl PartialEq for TypeResources {
    fn eq(&self, other: &Self) -> bool {
        self.version == other.version
    }
}

impl TypeResources {
    fn seal(&mut self) {
        let mut h = xxhash_rust::xxh64::Xxh64::new(1);
        for (name, r) in &self.items {
            h.update(name.as_bytes());
            h.update(r.version.as_bytes());
        }
        self.version = format!("{:016x}", h.digest());
        self.sealed = true;
    }
}

/// Everything one proxy should have, by type URL.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    types: BTreeMap<String, TypeResources>,
}

impl Snapshot {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `body` under `name`; its type is the `Any`'s type URL.
    pub fn insert(&mut self, name: impl Into<String>, body: Any) -> &mut Self {
        self.insert_shared(name, Arc::new(Versioned::new(body)))
    }

    /// Adds a resource that other snapshots may hold too.
    pub fn insert_shared(&mut self, name: impl Into<String>, r: Arc<Versioned>) -> &mut Self {
        let entry = self.types.entry(r.body.type_url.clone()).or_default();
        entry.items.insert(name.into(), r);
        entry.sealed = false;
        self
    }

    /// Computes the set versions after inserts; the cache calls it before storing.
    pub fn seal(&mut self) -> &mut Self {
        for t in self.types.values_mut() {
            if !t.sealed {
                t.seal();
            }
        }
        self
    }

    /// Declares a type with no resources (so a wildcard subscriber hears "none").
    pub fn declare(&mut self, type_url: &str) -> &mut Self {
        self.types.entry(type_url.to_string()).or_default();
        self
    }

    /// The resources of a type (call [`seal`](Self::seal) first for its set version).
    /// Adds every resource and declared type of `other`. A type that gains nothing
    /// keeps its seal, so a large shared base cloned into many snapshots is hashed once.
    pub fn extend(&mut self, other: &Snapshot) -> &mut Self {
        for (type_url, resources) in &other.types {
            let entry = self.types.entry(type_url.clone()).or_default();
            if !resources.items.is_empty() {
                entry.sealed = false;
            }
            for (name, r) in &resources.items {
                entry.items.insert(name.clone(), r.clone());
            }
        }
        self
    }

    pub fn get(&self, type_url: &str) -> Option<&TypeResources> {
        self.types.get(type_url)
    }

    pub fn types(&self) -> impl Iterator<Item = (&String, &TypeResources)> {
        self.types.iter()
    }

    /// Number of resources of all types.
    pub fn len(&self) -> usize {
        self.types.values().map(|t| t.items.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The current snapshot of each node. Streams watch their node's entry; a node that
/// connects before it has a snapshot sees an empty one until the control plane sets it.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<CacheInner>,
}

struct CacheInner {
    nodes: Mutex<HashMap<String, watch::Sender<Arc<Snapshot>>>>,
    connected: broadcast::Sender<String>,
}

impl Default for Cache {
    fn default() -> Self {
        Cache {
            inner: Arc::new(CacheInner {
                nodes: Mutex::default(),
                connected: broadcast::channel(1024).0,
            }),
        }
    }
}

impl Cache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces `node`'s snapshot; its streams send what changed. Setting an equal
    /// snapshot wakes nobody.
    pub fn set(&self, node: &str, mut snapshot: Snapshot) {
        snapshot.seal();
        let mut nodes = self.inner.nodes.lock().unwrap();
        let tx = nodes
            .entry(node.to_string())
            .or_insert_with(|| watch::channel(Arc::new(Snapshot::new())).0);
        tx.send_if_modified(|current| {
            if **current == snapshot {
                false
            } else {
                *current = Arc::new(snapshot);
                true
            }
        });
    }

    pub fn get(&self, node: &str) -> Option<Arc<Snapshot>> {
        self.inner
            .nodes
            .lock()
            .unwrap()
            .get(node)
            .map(|tx| tx.borrow().clone())
    }

    /// Node ids that have a snapshot.
    pub fn nodes(&self) -> Vec<String> {
        self.inner.nodes.lock().unwrap().keys().cloned().collect()
    }

    pub(crate) fn subscribe(&self, node: &str) -> watch::Receiver<Arc<Snapshot>> {
        let rx = {
            let mut nodes = self.inner.nodes.lock().unwrap();
            nodes
                .entry(node.to_string())
                .or_insert_with(|| watch::channel(Arc::new(Snapshot::new())).0)
                .subscribe()
        };
        let _ = self.inner.connected.send(node.to_string());
        rx
    }

    /// Node ids as their streams open: the control plane builds a snapshot for a
    /// proxy it has not seen before.
    pub fn connections(&self) -> broadcast::Receiver<String> {
        self.inner.connected.subscribe()
    }
}
