//! Changes that move endpoints and nothing else, applied in place.
//!
//! Most changes in a running mesh are endpoints coming and going (Istio's "EDS
//! push"). When every changed document only moves a WorkloadEntry (its address or
//! ports; the same labels, annotations and service account), the listeners, routes
//! and cluster settings of every view stay as they were: only the endpoint sets of the
//! services that select those workloads differ. The control plane then regenerates
//! those services' clusters alone instead of every view.

use std::collections::BTreeSet;

use crate::inputs::{Inputs, Resource};
use crate::istio::WorkloadEntry;
use crate::load::DocChange;
use crate::registry::{Registry, Workload};

/// The moved WorkloadEntries, if `changes` are nothing but moves: each document
/// replaced one accepted WorkloadEntry by another with the same namespace, name,
/// labels, annotations and service account, without warnings or refusals.
pub fn endpoint_moves(changes: &[DocChange]) -> Option<Vec<Resource<WorkloadEntry>>> {
    let only_entry = |l: &crate::Loaded| -> Option<Resource<WorkloadEntry>> {
        let i = &l.inputs;
        let others = i.virtual_services.len()
            + i.destination_rules.len()
            + i.service_entries.len()
            + i.sidecars.len()
            + i.gateways.len()
            + i.peer_authentications.len()
            + i.authorization_policies.len();
        let clean = l.warnings.is_empty() && l.refused.is_empty() && others == 0;
        match i.workload_entries.as_slice() {
            [e] if clean => Some(e.clone()),
            _ => None,
        }
    };
    if changes.is_empty() {
        return None;
    }
    changes
        .iter()
        .map(|c| {
            let before = only_entry(c.before.as_ref()?)?;
            let after = only_entry(c.after.as_ref()?)?;
            let same = before.namespace == after.namespace
                && before.name == after.name
                && before.source == after.source
                && before.labels == after.labels
                && before.annotations == after.annotations
                && before.spec.labels == after.spec.labels
                && before.spec.service_account == after.spec.service_account;
            same.then_some(after)
        })
        .collect()
}

impl Inputs {
    /// Replaces the accepted WorkloadEntry that `entry` is a new version of (same
    /// namespace, name and document); false when there is none (it was refused, or a
    /// duplicate of another).
    pub fn replace_workload_entry(&mut self, entry: &Resource<WorkloadEntry>) -> bool {
        match self.workload_entries.iter_mut().find(|e| {
            e.namespace == entry.namespace && e.name == entry.name && e.source == entry.source
        }) {
            Some(e) => {
                *e = entry.clone();
                true
            }
            None => false,
        }
    }
}

impl Registry {
    /// Replaces the workload that `entry` defines, keeping its labels (so the label
    /// index stays right); returns the old and new workload and the hosts of the
    /// services it backs, or `None` when the registry has no such workload or its
    /// labels differ.
    pub fn move_workload(
        &mut self,
        entry: &Resource<WorkloadEntry>,
    ) -> Option<(Workload, Workload, BTreeSet<String>)> {
        let moved = Workload::from_entry(
            &entry.name,
            &entry.namespace,
            &entry.spec,
            &entry.annotations,
        );
        let i = self
            .workloads
            .iter()
            .position(|w| w.namespace == moved.namespace && w.name == moved.name)?;
        if self.workloads[i].labels != moved.labels {
            return None;
        }
        let old = std::mem::replace(&mut self.workloads[i], moved.clone());
        let hosts = self
            .served_by(&moved)
            .filter(|s| !s.endpoints_listed)
            .map(|s| s.host.clone())
            .collect();
        Some((old, moved, hosts))
    }
}
