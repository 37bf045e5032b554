//! What a stream's client holds of one type, as far as the server knows: the
//! bookkeeping behind every response that carries only what differs (delta streams,
//! and the route and endpoint types of state-of-the-world streams).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use super::push::{Phase, Push};
use crate::{Snapshot, Versioned};

/// Name → the resource the client holds; only its version is read (a resuming
/// client's versions come without bodies).
pub(crate) type HeldMap = crate::snapshot::Items;

#[derive(Default)]
pub(crate) struct Held {
    /// A persistent map sorted like the snapshot's items: a whole set sent is the
    /// base's own map, shared (no entry per resource per stream), and a full comparison
    /// walks both in step (one comparison per resource, no hashing of 30 000 names).
    pub versions: HeldMap,
    /// Per unanswered response: what `versions` said before it, restored on NACK so the
    /// refused resources count as not held and go out again with the next change.
    pending: HashMap<String, Before>,
    /// Names a NACK put back: compared again with the next push whatever changed.
    recheck: BTreeSet<String>,
    /// A NACK put back a whole set: the next push compares everything.
    recheck_all: bool,
}

/// What a response changed in [`Held::versions`], to put back on NACK.
enum Before {
    /// Per name, the entry before.
    Names(Vec<(String, Option<Arc<Versioned>>)>),
    /// The map before a response that set it whole.
    Whole(HeldMap),
}

/// What differs between the resources a client wants and what it holds.
#[derive(Default)]
pub(crate) struct Diff<'a> {
    /// New or changed (not in the removal phase).
    pub upserts: Vec<(String, &'a Arc<Versioned>)>,
    /// Held, and gone from the snapshot or no longer wanted (not in the upsert phase).
    pub removed: Vec<String>,
}

impl Held {
    /// The client answered response `nonce`; a NACK puts back what that response
    /// changed.
    pub fn answered(&mut self, nonce: &str, nack: bool) {
        let Some(before) = self.pending.remove(nonce) else {
            return;
        };
        if !nack {
            return;
        }
        match before {
            Before::Names(names) => {
                for (name, old) in names {
                    self.recheck.insert(name.clone());
                    match old {
                        Some(r) => self.versions.insert(name, r),
                        None => self.versions.remove(&name),
                    };
                }
            }
            Before::Whole(map) => {
                self.versions = map;
                self.recheck_all = true;
            }
        }
    }

    /// Whether nothing of `type_url` can differ from what was sent.
    pub fn unchanged(&self, type_url: &str, push: Push<'_>) -> bool {
        push.unchanged(type_url) && self.recheck.is_empty() && !self.recheck_all
    }

    /// Whether the client holds nothing of the type (a whole set can go as it is).
    pub fn is_empty(&self) -> bool {
        self.versions.is_empty()
    }

    /// What differs in the push's phase. When the push knows which names changed, only
    /// those (and the ones a NACK put back) are compared; otherwise every resource is.
    pub fn diff<'a>(
        &mut self,
        type_url: &str,
        snapshot: &'a Snapshot,
        push: Push<'_>,
        wanted: impl Fn(&str) -> bool,
    ) -> Diff<'a> {
        let phase = push.phase;
        let mut diff = Diff::default();
        let mut decide =
            |name: &String, r: Option<&'a Arc<Versioned>>, have: Option<&Arc<Versioned>>| {
                if let Some(r) = r.filter(|_| wanted(name)) {
                    let same = have.is_some_and(|h| Arc::ptr_eq(h, r) || h.version == r.version);
                    if phase != Phase::Removals && !same {
                        diff.upserts.push((name.clone(), r));
                    }
                } else if have.is_some() && phase != Phase::Upserts {
                    // Held, and gone from the snapshot or no longer wanted.
                    diff.removed.push(name.clone());
                }
            };
        match push
            .changes
            .filter(|_| phase != Phase::All && !self.recheck_all)
        {
            Some(changes) => {
                let names: BTreeSet<&String> = changes
                    .get(type_url)
                    .into_iter()
                    .flatten()
                    .chain(&self.recheck)
                    .collect();
                for name in names {
                    decide(
                        name,
                        snapshot.resource(type_url, name),
                        self.versions.get(name),
                    );
                }
            }
            None => {
                let mut held = self.versions.iter().peekable();
                for (name, r) in snapshot.iter(type_url) {
                    while let Some((h, v)) = held.next_if(|(h, _)| h.as_str() < name.as_str()) {
                        decide(h, None, Some(v));
                    }
                    let have = held.next_if(|(h, _)| *h == name).map(|(_, v)| v);
                    decide(name, Some(r), have);
                }
                for (h, v) in held {
                    decide(h, None, Some(v));
                }
            }
        }
        if phase != Phase::Upserts {
            self.recheck.clear();
            self.recheck_all = false;
        }
        diff
    }

    /// Records what response `nonce` carries as held, until the client answers it.
    pub fn sent(&mut self, nonce: &str, diff: &Diff<'_>) {
        if self.versions.is_empty() && diff.removed.is_empty() {
            // A first response: on NACK the client holds nothing again.
            let before = Before::Whole(HeldMap::new());
            self.versions = diff
                .upserts
                .iter()
                .map(|(name, r)| (name.clone(), Arc::clone(r)))
                .collect();
            self.pending.insert(nonce.to_string(), before);
            return;
        }
        let mut before = Vec::with_capacity(diff.upserts.len() + diff.removed.len());
        for (name, r) in &diff.upserts {
            let old = self.versions.insert(name.clone(), Arc::clone(r));
            before.push((name.clone(), old));
        }
        for name in &diff.removed {
            before.push((name.clone(), self.versions.remove(name)));
        }
        self.pending
            .insert(nonce.to_string(), Before::Names(before));
    }

    /// Records that response `nonce` carries the snapshot's whole set of `type_url`:
    /// the base's map itself, with the snapshot's few own resources over it.
    pub fn sent_whole(&mut self, nonce: &str, snapshot: &Snapshot, type_url: &str) {
        let (own, base) = snapshot.layers(type_url);
        let mut map = base.cloned().unwrap_or_default();
        for (name, r) in own.into_iter().flatten() {
            map.insert(name.clone(), r.clone());
        }
        let before = std::mem::replace(&mut self.versions, map);
        self.pending
            .insert(nonce.to_string(), Before::Whole(before));
    }

    /// The client holds exactly `snapshot`'s resources of `type_url` that it wants (it
    /// resumed a stream with their version).
    pub fn resume(&mut self, type_url: &str, snapshot: &Snapshot, wanted: impl Fn(&str) -> bool) {
        self.versions = snapshot
            .iter(type_url)
            .filter(|(name, _)| wanted(name))
            .map(|(name, r)| (name.clone(), r.clone()))
            .collect();
    }
}
