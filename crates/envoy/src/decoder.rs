//! Decoding update after update: each listener and cluster is decoded again only when
//! its own body or something it looked up (its route configuration, its endpoint
//! assignment, a secret) changed; the rest is the same shared value as before, so the
//! proxy can tell what changed by pointer.
//!
//! What changed is found by walking each type's resources beside the last decode's, in
//! name order, comparing pointers first: a delta client keeps an unchanged resource's
//! name and body in the same buffers, so an update that changes one endpoint
//! assignment of 10 000 costs a walk of pointer comparisons and one decode.

use std::collections::BTreeSet;
use std::sync::Arc;

use prost::bytes::Bytes;
use rustc_hash::FxHashSet;
use trellis_config as tc;

use crate::decode::{decode_cluster, decode_listener, decode_secret, Dep, Lookup, One};
use crate::DecodeError;

/// The listeners and clusters of a complete set of resources, shared with the decoder's
/// cache: a value that did not change is the same `Arc` as in the previous result.
#[derive(Clone, Debug, Default)]
pub struct SharedDecoded {
    pub listeners: Vec<Arc<tc::Listener>>,
    pub clusters: Vec<Arc<tc::Cluster>>,
    /// The SDS secrets the listeners and clusters name (besides the identity agent's).
    pub secrets: Vec<tc::Secret>,
    /// Resources referred to but not received yet (`RouteConfiguration/<name>`); apply
    /// nothing until this is empty.
    pub waiting_for: Vec<String>,
}

/// The types a decode looks things up in, in the order of [`Last::named`].
const NAMED: [&str; 3] = [crate::ROUTE, crate::ENDPOINT, crate::SECRET];

/// Keeps what each listener and cluster decoded to, with what it depended on.
#[derive(Default)]
pub struct Decoder {
    /// What the last good decode saw and made; `None` before the first and after a
    /// refused one (then everything is decoded).
    last: Option<Last>,
    /// How many resources the last decode decoded (the rest came from the cache).
    pub decoded: usize,
}

struct Last {
    /// In name order.
    listeners: Vec<Slot<tc::Listener>>,
    clusters: Vec<Slot<tc::Cluster>>,
    /// Per type of [`NAMED`], every resource (name, body), in name order.
    named: [Vec<(Bytes, Bytes)>; 3],
}

/// A listener or cluster as last decoded: its name and body, what it decoded to, and
/// what it looked up.
struct Slot<T> {
    name: Bytes,
    body: Bytes,
    out: Option<Arc<T>>,
    deps: Vec<Dep>,
    waiting: Vec<String>,
    secrets: BTreeSet<String>,
}

/// Equal content, found without reading it when both are the same slice (what a delta
/// client holds for an unchanged resource).
fn same(a: &Bytes, b: &Bytes) -> bool {
    a.len() == b.len() && (a.as_ptr() == b.as_ptr() || a == b)
}

/// What changed in one named type since the last decode: names added, removed or with
/// a new body.
type Changed = FxHashSet<Bytes>;

/// Walks `type_url`'s resources beside `before` (both in name order): what changed,
/// and the resources as they are now.
fn walk(
    held: &dyn Lookup,
    type_url: &'static str,
    before: &[(Bytes, Bytes)],
) -> (Changed, Vec<(Bytes, Bytes)>) {
    let mut now = Vec::with_capacity(before.len());
    let mut changed = Changed::default();
    let mut i = 0;
    held.for_each(type_url, &mut |name, body| {
        while let Some((old, _)) = before.get(i) {
            if same(old, name) || old[..] > name[..] {
                break;
            }
            changed.insert(old.clone());
            i += 1;
        }
        match before.get(i) {
            Some((old, old_body)) if same(old, name) => {
                if !same(old_body, body) {
                    changed.insert(name.clone());
                }
                i += 1;
            }
            _ => {
                changed.insert(name.clone());
            }
        }
        now.push((name.clone(), body.clone()));
    });
    changed.extend(before[i..].iter().map(|(n, _)| n.clone()));
    (changed, now)
}

/// Whether nothing a slot looked up is among the names that changed.
fn deps_current(deps: &[Dep], changed: &[Changed; 3]) -> bool {
    deps.iter().all(|d| {
        let i = NAMED.iter().position(|t| *t == d.type_url).unwrap_or(2);
        let name = d.name.as_bytes();
        match changed[i].len() {
            0 => true,
            // An update changes a few: comparing lengths first beats hashing.
            1..=8 => !changed[i]
                .iter()
                .any(|c| c.len() == name.len() && c[..] == *name),
            _ => !changed[i].contains(name),
        }
    })
}

/// Decodes one resource (name, body) looking up what it names.
type DecodeOne<T> = fn(&str, &[u8], &dyn Lookup) -> Result<One<T>, DecodeError>;

/// `type_url`'s resources as slots, in name order: the slot of `before` (walked beside
/// them) where the resource and what it looked up (`changed` since `before` was made)
/// are unchanged, a new decode where not; and how many were decoded.
fn update<T>(
    before: Vec<Slot<T>>,
    held: &dyn Lookup,
    type_url: &'static str,
    changed: &[Changed; 3],
    decode: DecodeOne<T>,
) -> Result<(Vec<Slot<T>>, usize), DecodeError> {
    let mut now = Vec::with_capacity(before.len());
    let mut before = before.into_iter().peekable();
    let (mut decoded, mut failed) = (0, None);
    held.for_each(type_url, &mut |name, body| {
        if failed.is_some() {
            return;
        }
        while before
            .next_if(|o| !same(&o.name, name) && o.name[..] < name[..])
            .is_some()
        {}
        if let Some(o) = before.next_if(|o| same(&o.name, name)) {
            if same(&o.body, body) && deps_current(&o.deps, changed) {
                now.push(o);
                return;
            }
        }
        let name_str = std::str::from_utf8(name).unwrap_or_default();
        match decode(name_str, body, held) {
            Ok(one) => {
                decoded += 1;
                now.push(Slot {
                    name: name.clone(),
                    body: body.clone(),
                    out: one.out.map(Arc::new),
                    deps: one.deps,
                    waiting: one.waiting,
                    secrets: one.secrets,
                });
            }
            Err(e) => failed = Some(e),
        }
    });
    match failed {
        Some(e) => Err(e),
        None => Ok((now, decoded)),
    }
}

impl Decoder {
    /// Decodes the listeners and clusters `held` holds, looking up what they name in
    /// it. A refused set leaves the decoder empty: the next decode decodes everything.
    pub fn decode(&mut self, held: &dyn Lookup) -> Result<SharedDecoded, DecodeError> {
        let last = self.last.take();
        let mut now: [Vec<(Bytes, Bytes)>; 3] = Default::default();
        // With no last decode there is nothing to keep, so nothing to compare with.
        let mut changed: [Changed; 3] = Default::default();
        for (i, t) in NAMED.into_iter().enumerate() {
            match &last {
                Some(last) => (changed[i], now[i]) = walk(held, t, &last.named[i]),
                None => held.for_each(t, &mut |n, b| now[i].push((n.clone(), b.clone()))),
            }
        }
        let (listeners, clusters) =
            last.map_or_else(Default::default, |l| (l.listeners, l.clusters));
        let (listeners, l) = update(listeners, held, crate::LISTENER, &changed, decode_listener)?;
        let (clusters, c) = update(clusters, held, crate::CLUSTER, &changed, decode_cluster)?;
        self.decoded = l + c;
        let mut out = SharedDecoded {
            listeners: listeners.iter().filter_map(|s| s.out.clone()).collect(),
            clusters: clusters.iter().filter_map(|s| s.out.clone()).collect(),
            ..Default::default()
        };
        let mut secrets = BTreeSet::new();
        for (waiting, named) in listeners
            .iter()
            .map(|s| (&s.waiting, &s.secrets))
            .chain(clusters.iter().map(|s| (&s.waiting, &s.secrets)))
        {
            out.waiting_for.extend(waiting.iter().cloned());
            secrets.extend(named.iter());
        }
        for name in secrets {
            if let Some(body) = held.body(crate::SECRET, name) {
                out.secrets.push(decode_secret(name, &body)?);
            }
        }
        // Several resources may wait for the same one.
        out.waiting_for.sort();
        out.waiting_for.dedup();
        self.last = Some(Last {
            listeners,
            clusters,
            named: now,
        });
        Ok(out)
    }
}
