//! What a stream's client holds of one type, as far as the server knows: the
//! bookkeeping behind every response that carries only what differs (delta streams,
//! and the route and endpoint types of state-of-the-world streams).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use crate::server::{Phase, Push};
use crate::{Snapshot, Versioned};

#[derive(Default)]
pub(crate) struct Held {
    /// Name → version. Sorted like the snapshot's items, so that a full comparison
    /// walks both in step (one comparison per resource, no hashing of 30 000 names).
    pub versions: BTreeMap<String, String>,
    /// Per unanswered response: what `versions` said before it, restored on NACK so the
    /// refused resources count as not held and go out again with the next change.
    pending: HashMap<String, Vec<(String, Option<String>)>>,
    /// Names a NACK put back: compared again with the next push whatever changed.
    recheck: BTreeSet<String>,
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
        let before = self.pending.remove(nonce);
        if !nack {
            return;
        }
        for (name, version) in before.into_iter().flatten() {
            self.recheck.insert(name.clone());
            match version {
                Some(v) => self.versions.insert(name, v),
                None => self.versions.remove(&name),
            };
        }
    }

    /// Whether nothing of `type_url` can differ from what was sent.
    pub fn unchanged(&self, type_url: &str, push: Push<'_>) -> bool {
        push.unchanged(type_url) && self.recheck.is_empty()
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
        let mut decide = |name: &String, r: Option<&'a Arc<Versioned>>, have: Option<&String>| {
            if let Some(r) = r.filter(|_| wanted(name)) {
                if phase != Phase::Removals && have != Some(&r.version) {
                    diff.upserts.push((name.clone(), r));
                }
            } else if have.is_some() && phase != Phase::Upserts {
                // Held, and gone from the snapshot or no longer wanted.
                diff.removed.push(name.clone());
            }
        };
        match push.changes.filter(|_| phase != Phase::All) {
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
        }
        diff
    }

    /// Records what response `nonce` carries as held, until the client answers it.
    pub fn sent(&mut self, nonce: &str, diff: &Diff<'_>) {
        let mut before = Vec::with_capacity(diff.upserts.len() + diff.removed.len());
        let after_held = |first: &String| {
            self.versions
                .last_key_value()
                .is_none_or(|(l, _)| first > l)
        };
        let ordered = diff.upserts.windows(2).all(|w| w[0].0 < w[1].0);
        if diff.removed.is_empty()
            && ordered
            && diff.upserts.first().is_some_and(|(n, _)| after_held(n))
        {
            // New names past everything held (a subscription's first response, in a
            // full push): one bulk append instead of a tree insert per name.
            let mut added: BTreeMap<String, String> = diff
                .upserts
                .iter()
                .map(|(name, r)| (name.clone(), r.version.clone()))
                .collect();
            self.versions.append(&mut added);
            before.extend(diff.upserts.iter().map(|(name, _)| (name.clone(), None)));
            self.pending.insert(nonce.to_string(), before);
            return;
        }
        for (name, r) in &diff.upserts {
            let old = self.versions.insert(name.clone(), r.version.clone());
            before.push((name.clone(), old));
        }
        for name in &diff.removed {
            before.push((name.clone(), self.versions.remove(name)));
        }
        self.pending.insert(nonce.to_string(), before);
    }

    /// The client holds exactly `snapshot`'s resources of `type_url` that it wants (it
    /// resumed a stream with their version).
    pub fn resume(&mut self, type_url: &str, snapshot: &Snapshot, wanted: impl Fn(&str) -> bool) {
        self.versions = snapshot
            .iter(type_url)
            .filter(|(name, _)| wanted(name))
            .map(|(name, r)| (name.clone(), r.version.clone()))
            .collect();
    }
}
