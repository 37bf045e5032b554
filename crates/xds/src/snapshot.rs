use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, Weak};

use envoy_types::pb::google::protobuf::Any;
use tokio::sync::{broadcast, watch};

use crate::wanted::Fingerprint;
use crate::wire::response::{Encoded, Flavor};

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

/// Resources by name, in name order; clones share their nodes.
pub(crate) type Items = imbl::OrdMap<String, Arc<Versioned>>;

/// Resources with their names, in a response.
pub(crate) type Named = Vec<(String, Arc<Versioned>)>;

/// The resources of one type in one layer, by name. Resources are shared: the same
/// cluster in a hundred sidecars' views is one allocation, and a copy of the map shares
/// its nodes with the original until either changes.
#[derive(Clone, Debug, Default)]
pub struct TypeResources {
    items: Items,
    /// The sum of the items' hashes: a fingerprint of the set kept up to date as items
    /// come and go, so that changing one of 10 000 does not hash the other 9 999.
    sum: u64,
}

impl TypeResources {
    fn item_hash(name: &str, r: &Versioned) -> u64 {
        let version = xxhash_rust::xxh3::xxh3_64(r.version.as_bytes());
        xxhash_rust::xxh3::xxh3_64_with_seed(name.as_bytes(), version)
    }

    /// Sets `name`; the resource it replaces, if any.
    fn insert(&mut self, name: String, r: Arc<Versioned>) -> Option<Arc<Versioned>> {
        let added = Self::item_hash(&name, &r);
        let old = self.items.get(&name).map(|o| Self::item_hash(&name, o));
        self.sum = self
            .sum
            .wrapping_add(added)
            .wrapping_sub(old.unwrap_or_default());
        self.items.insert(name, r)
    }

    fn remove(&mut self, name: &str) -> Option<Arc<Versioned>> {
        let old = self.items.remove(name)?;
        self.sum = self.sum.wrapping_sub(Self::item_hash(name, &old));
        Some(old)
    }

    /// The version of the whole set: equal sets have equal versions.
    fn version(&self) -> String {
        let h =
            xxhash_rust::xxh3::xxh3_64_with_seed(&self.sum.to_le_bytes(), self.items.len() as u64);
        format!("{h:016x}")
    }
}

/// Names by type URL: what changed between two snapshots.
pub type Changes = BTreeMap<String, BTreeSet<String>>;

/// Everything one proxy should have, by type URL: its own resources over an optional
/// [`Base`] that many proxies share (a namespace's outbound clusters, say). A resource
/// of its own hides a base one of the same name.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    base: Option<Arc<Base>>,
    types: BTreeMap<String, TypeResources>,
    /// Per type, the version of the whole set (base and own); set by `seal`.
    versions: BTreeMap<String, String>,
    /// Sealed: a view the control plane made, not the stand-in a node's streams watch
    /// before it has one.
    sealed: bool,
}

/// Versions are content hashes: snapshots are equal when, once sealed, every type's
/// set version is.
impl PartialEq for Snapshot {
    fn eq(&self, other: &Self) -> bool {
        self.versions == other.versions && self.sealed == other.sealed
    }
}

impl Snapshot {
    pub fn new() -> Self {
        Self::default()
    }

    /// A snapshot over `base`, with nothing of its own yet.
    pub fn with_base(base: Arc<Base>) -> Self {
        Snapshot {
            base: Some(base),
            ..Default::default()
        }
    }

    /// The shared part under this snapshot's own resources.
    pub fn base(&self) -> Option<&Arc<Base>> {
        self.base.as_ref()
    }

    /// The same own resources over another base (a shared part that changed).
    pub fn rebased(&self, base: Arc<Base>) -> Self {
        let mut s = Snapshot {
            base: Some(base),
            types: self.types.clone(),
            versions: BTreeMap::new(),
            sealed: false,
        };
        s.seal();
        s
    }

    /// Adds `body` under `name`; its type is the `Any`'s type URL.
    pub fn insert(&mut self, name: impl Into<String>, body: Any) -> &mut Self {
        self.insert_shared(name, Arc::new(Versioned::new(body)))
    }

    /// Adds a resource that other snapshots may hold too.
    pub fn insert_shared(&mut self, name: impl Into<String>, r: Arc<Versioned>) -> &mut Self {
        let entry = self.types.entry(r.body.type_url.clone()).or_default();
        entry.insert(name.into(), r);
        self
    }

    /// Computes the set versions after inserts; the cache calls it before storing.
    pub fn seal(&mut self) -> &mut Self {
        let mut versions = BTreeMap::new();
        if let Some(base) = &self.base {
            versions = base.resources.versions.clone();
        }
        for (type_url, t) in &self.types {
            let own = t.version();
            let v = match versions.get(type_url) {
                // Both layers: a version of the pair.
                Some(base) => {
                    let mut h = xxhash_rust::xxh64::Xxh64::new(3);
                    h.update(base.as_bytes());
                    h.update(own.as_bytes());
                    format!("{:016x}", h.digest())
                }
                None => own,
            };
            versions.insert(type_url.clone(), v);
        }
        self.versions = versions;
        self.sealed = true;
        self
    }

    /// Whether this is a view the control plane set (see [`Cache::set`]).
    pub fn is_sealed(&self) -> bool {
        self.sealed
    }

    /// Declares a type with no resources (so a wildcard subscriber hears "none").
    pub fn declare(&mut self, type_url: &str) -> &mut Self {
        self.types.entry(type_url.to_string()).or_default();
        self
    }

    /// Adds every resource and declared type of `other`'s own layer.
    pub fn extend(&mut self, other: &Snapshot) -> &mut Self {
        for (type_url, resources) in &other.types {
            let entry = self.types.entry(type_url.clone()).or_default();
            for (name, r) in &resources.items {
                entry.insert(name.clone(), r.clone());
            }
        }
        self
    }

    /// The version of a type's whole set, if the type is declared (after `seal`).
    pub fn version(&self, type_url: &str) -> Option<&str> {
        self.versions.get(type_url).map(String::as_str)
    }

    /// The types this snapshot declares (after `seal`).
    pub fn type_urls(&self) -> impl Iterator<Item = &String> {
        self.versions.keys()
    }

    /// One resource, own first.
    pub fn resource(&self, type_url: &str, name: &str) -> Option<&Arc<Versioned>> {
        self.types
            .get(type_url)
            .and_then(|t| t.items.get(name))
            .or_else(|| {
                self.base
                    .as_ref()
                    .and_then(|b| b.resources.types.get(type_url))
                    .and_then(|t| t.items.get(name))
            })
    }

    /// A type's resources in name order, own hiding base.
    pub fn iter<'a>(
        &'a self,
        type_url: &str,
    ) -> impl Iterator<Item = (&'a String, &'a Arc<Versioned>)> + 'a {
        let own = self
            .types
            .get(type_url)
            .into_iter()
            .flat_map(|t| t.items.iter());
        let base = self
            .base
            .as_ref()
            .and_then(|b| b.resources.types.get(type_url))
            .into_iter()
            .flat_map(|t| t.items.iter());
        Merge {
            own: own.peekable(),
            base: base.peekable(),
        }
    }

    /// A type's whole set in two parts, when its base has the type and this snapshot's
    /// own resources hide none of the base's: the base's set encoded once for every
    /// stream, and the own resources.
    pub(crate) fn split(&self, type_url: &str, flavor: Flavor) -> Option<(Encoded, Named)> {
        let base = self.base.as_ref()?;
        base.resources.types.get(type_url)?;
        let own: Vec<(String, Arc<Versioned>)> = self
            .types
            .get(type_url)
            .into_iter()
            .flat_map(|t| t.items.iter())
            .map(|(name, r)| (name.clone(), r.clone()))
            .collect();
        if own
            .iter()
            .any(|(name, _)| base.resource(type_url, name).is_some())
        {
            return None;
        }
        Some((base.encoded(type_url, flavor), own))
    }

    /// The fingerprint of a type's names: the base's, made once, plus the own ones.
    /// (An own name that hides a base one counts twice: a fingerprint no subscription
    /// has, so the stream compares name by name.)
    pub(crate) fn fingerprint(&self, type_url: &str) -> Fingerprint {
        let own = Fingerprint::of(
            self.types
                .get(type_url)
                .into_iter()
                .flat_map(|t| t.items.keys()),
        );
        match &self.base {
            Some(base) => base.fingerprint(type_url).plus(own),
            None => own,
        }
    }

    /// The own layer's resources of a type (few), and the base's whole map (shared).
    pub(crate) fn layers(&self, type_url: &str) -> (Option<&Items>, Option<&Items>) {
        let own = self.types.get(type_url).map(|t| &t.items);
        let base = self
            .base
            .as_ref()
            .and_then(|b| b.resources.types.get(type_url))
            .map(|t| &t.items);
        (own, base)
    }

    /// Number of resources of all types.
    pub fn len(&self) -> usize {
        let types: BTreeSet<&String> = self
            .types
            .keys()
            .chain(self.base.iter().flat_map(|b| b.resources.types.keys()))
            .collect();
        types.into_iter().map(|t| self.iter(t).count()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.types.values().all(|t| t.items.is_empty())
            && self
                .base
                .as_ref()
                .is_none_or(|b| b.resources.types.values().all(|t| t.items.is_empty()))
    }

    /// The names that may differ from `previous`, by type, when that is cheaper to know
    /// than a walk of everything: what differs between the own layers, plus what the
    /// base recorded as changed since `previous`'s base. `None`: unknown (a base that
    /// did not come from `previous`'s by [`Base::update`]); compare everything.
    pub fn changes_since(&self, previous: &Snapshot) -> Option<Changes> {
        let mut out = Changes::new();
        // Own layers are small: compare them name by name.
        for (a, b) in [(self, previous), (previous, self)] {
            for (type_url, t) in &a.types {
                let other = b.types.get(type_url);
                for (name, r) in &t.items {
                    let same = other
                        .and_then(|o| o.items.get(name))
                        .is_some_and(|o| o.version == r.version);
                    if !same {
                        out.entry(type_url.clone())
                            .or_default()
                            .insert(name.clone());
                    }
                }
            }
        }
        match (&self.base, &previous.base) {
            (None, None) => {}
            (Some(now), Some(before)) => {
                let mut at = now.clone();
                // A stream may have missed a few versions; beyond that, walk everything.
                for _ in 0..64 {
                    if Arc::ptr_eq(&at, before) {
                        return Some(out);
                    }
                    let (parent, changed) = at.parent.as_ref()?;
                    for (type_url, names) in changed {
                        out.entry(type_url.clone())
                            .or_default()
                            .extend(names.iter().cloned());
                    }
                    at = parent.upgrade()?;
                }
                return None;
            }
            _ => return None,
        }
        Some(out)
    }
}

/// Two sorted layers as one: on equal names the own one wins.
struct Merge<A: Iterator, B: Iterator> {
    own: std::iter::Peekable<A>,
    base: std::iter::Peekable<B>,
}

impl<'a, A, B> Iterator for Merge<A, B>
where
    A: Iterator<Item = (&'a String, &'a Arc<Versioned>)>,
    B: Iterator<Item = (&'a String, &'a Arc<Versioned>)>,
{
    type Item = (&'a String, &'a Arc<Versioned>);

    fn next(&mut self) -> Option<Self::Item> {
        match (self.own.peek(), self.base.peek()) {
            (Some(o), Some(b)) => match o.0.cmp(b.0) {
                std::cmp::Ordering::Less => self.own.next(),
                std::cmp::Ordering::Greater => self.base.next(),
                std::cmp::Ordering::Equal => {
                    self.base.next();
                    self.own.next()
                }
            },
            (Some(_), None) => self.own.next(),
            (None, _) => self.base.next(),
        }
    }
}

/// Resources shared by many snapshots, sealed. A base made from another by
/// [`update`](Base::update) remembers which names changed, so that a stream that
/// sent the old one compares only those instead of every resource (one endpoint
/// change among 20 000 resources, times every connected proxy).
#[derive(Debug)]
pub struct Base {
    resources: Snapshot,
    parent: Option<(Weak<Base>, Changes)>,
    /// Per type and response variant, the whole set encoded once (made when a stream
    /// first sends it whole).
    encoded: Mutex<HashMap<(String, Flavor), Encoded>>,
    /// Per type, the fingerprint of its names (made when a stream first asks).
    fingerprints: Mutex<HashMap<String, Fingerprint>>,
}

impl Base {
    pub fn new(mut resources: Snapshot) -> Arc<Base> {
        assert!(resources.base.is_none(), "a base has no base of its own");
        resources.seal();
        Arc::new(Base {
            resources,
            parent: None,
            encoded: Mutex::default(),
            fingerprints: Mutex::default(),
        })
    }

    /// A copy with `upserts` set and `removals` (type URL, name) gone; only resources
    /// whose version differs count as changed. The copy shares every untouched map
    /// node with this base, so an update costs what it changes, not the base's size.
    pub fn update(
        self: &Arc<Self>,
        upserts: impl IntoIterator<Item = (String, Arc<Versioned>)>,
        removals: impl IntoIterator<Item = (String, String)>,
    ) -> Arc<Base> {
        let mut resources = self.resources.clone();
        let mut changed = Changes::new();
        for (name, r) in upserts {
            let t = resources.types.entry(r.body.type_url.clone()).or_default();
            if t.items
                .get(&name)
                .is_some_and(|old| old.version == r.version)
            {
                continue;
            }
            changed
                .entry(r.body.type_url.clone())
                .or_default()
                .insert(name.clone());
            t.insert(name, r);
        }
        for (type_url, name) in removals {
            if let Some(t) = resources.types.get_mut(&type_url) {
                if t.remove(&name).is_some() {
                    changed.entry(type_url).or_default().insert(name);
                }
            }
        }
        resources.seal();
        // A type this update left alone is the same set: its encoding and fingerprint
        // carry over (an endpoint change does not encode 10 000 clusters again).
        let kept = |type_url: &String| !changed.contains_key(type_url);
        let encoded: HashMap<_, _> = (self.encoded.lock().unwrap().iter())
            .filter(|((type_url, _), _)| kept(type_url))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let fingerprints: HashMap<_, _> = (self.fingerprints.lock().unwrap().iter())
            .filter(|(type_url, _)| kept(type_url))
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        Arc::new(Base {
            resources,
            parent: Some((Arc::downgrade(self), changed)),
            encoded: Mutex::new(encoded),
            fingerprints: Mutex::new(fingerprints),
        })
    }

    /// A type's whole set as a response variant's `resources` fields, encoded by the
    /// first stream that asks and shared by the others.
    pub(crate) fn encoded(&self, type_url: &str, flavor: Flavor) -> Encoded {
        let mut cache = self.encoded.lock().unwrap();
        cache
            .entry((type_url.to_string(), flavor))
            .or_insert_with(|| Encoded::new(flavor, self.iter(type_url)))
            .clone()
    }

    fn fingerprint(&self, type_url: &str) -> Fingerprint {
        let mut cache = self.fingerprints.lock().unwrap();
        *cache
            .entry(type_url.to_string())
            .or_insert_with(|| Fingerprint::of(self.iter(type_url).map(|(name, _)| name)))
    }

    /// One resource of the base.
    pub fn resource(&self, type_url: &str, name: &str) -> Option<&Arc<Versioned>> {
        self.resources.resource(type_url, name)
    }

    /// A type's resources in name order.
    pub fn iter<'a>(
        &'a self,
        type_url: &str,
    ) -> impl Iterator<Item = (&'a String, &'a Arc<Versioned>)> + 'a {
        self.resources.iter(type_url)
    }
}

/// The current snapshot of each node. Streams watch their node's entry; a node that
/// connects before it has a snapshot watches an unsealed stand-in, and its streams
/// answer nothing until the control plane sets one.
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
