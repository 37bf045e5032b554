//! Which Telemetry API resources apply to a workload: the root namespace's without a
//! selector (mesh-wide), its namespace's without one, and the one whose selector
//! matches it, least specific first (tracing, access logging and metrics all merge
//! them in that order).

use crate::inputs::selects;
use crate::telemetry_api::Telemetry;
use crate::{Inputs, Resource, Workload, ROOT_NAMESPACE};

/// The Telemetry resources that apply to `w`, least specific first.
pub(crate) fn levels<'a>(inputs: &'a Inputs, w: &Workload) -> Vec<&'a Resource<Telemetry>> {
    let unselected = |t: &&Resource<Telemetry>| {
        t.spec
            .selector
            .as_ref()
            .is_none_or(|s| s.match_labels.is_empty())
    };
    let all = &inputs.telemetries;
    let mesh = all
        .iter()
        .filter(unselected)
        .find(|t| t.namespace == ROOT_NAMESPACE);
    let namespace = all
        .iter()
        .filter(unselected)
        .find(|t| t.namespace == w.namespace && w.namespace != ROOT_NAMESPACE);
    let workload = all.iter().find(|t| {
        t.namespace == w.namespace
            && t.spec
                .selector
                .as_ref()
                .is_some_and(|s| !s.match_labels.is_empty() && selects(&s.match_labels, &w.labels))
    });
    [mesh, namespace, workload].into_iter().flatten().collect()
}
