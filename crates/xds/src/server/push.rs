//! Where a response stands in a push: the snapshot the stream had before, which names
//! may have changed since, and whether it answers a request or carries the upserts or
//! the removals of a change.

use crate::Snapshot;

/// Which part of a change a response carries. A change is pushed make-before-break,
/// as the xDS protocol asks: first what is new or changed, clusters → endpoints →
/// listeners → routes, so that nothing refers to what a proxy does not have yet; then
/// removals, in the reverse order, once nothing refers to them any more (a removed
/// subset's cluster goes only after the routes that used it).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Answering a request: the whole current state.
    All,
    Upserts,
    Removals,
}

/// The context of a response: the snapshot the stream had before, which names may
/// differ from it (`None`: any), and the phase.
#[derive(Clone, Copy)]
pub(crate) struct Push<'a> {
    pub previous: &'a Snapshot,
    pub changes: Option<&'a crate::Changes>,
    pub phase: Phase,
}

impl Push<'_> {
    /// Nothing of this type can differ from what the stream sent before.
    pub fn unchanged(&self, type_url: &str) -> bool {
        self.phase != Phase::All
            && self
                .changes
                .is_some_and(|c| c.get(type_url).is_none_or(|n| n.is_empty()))
    }
}
