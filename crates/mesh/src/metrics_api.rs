//! The Telemetry API's `metrics`: which of Istio's standard metrics a sidecar records on
//! each side, and which labels it leaves off, through the `prometheus` provider (the
//! only one Trellis has; it is what `/stats/prometheus` serves). Overrides apply mesh,
//! then namespace, then workload, each in its order, so the most specific wins.
//!
//! Honoured: `disabled`, `tagOverrides` with `operation: REMOVE`, `match.metric`
//! (Istio's names, `ALL_METRICS` by default) and `match.mode`. Read but not applied,
//! with a warning (a metric's labels are not a security setting): `tagOverrides` that
//! UPSERT (a CEL expression), `customMetric`, `reportingInterval`, other providers
//! (the checks and warnings are the resource's, in [`crate::telemetry_api`]).

use trellis_config as tc;

use crate::telemetry_api::metric_mode as mode;
use crate::{Inputs, Workload};

/// The overrides of `w`'s listeners on `side` (`CLIENT` or `SERVER`), in the order
/// they apply.
pub(crate) fn overrides(inputs: &Inputs, w: &Workload, side: &str) -> Vec<tc::MetricOverride> {
    let mut out = Vec::new();
    for t in crate::telemetry_levels::levels(inputs, w) {
        for spec in t.spec.metrics.iter().filter(|s| s.prometheus()) {
            for o in &spec.overrides {
                let m = o.matches.as_ref();
                if !mode(m).contains(side) || m.is_some_and(|m| m.custom_metric.is_some()) {
                    continue;
                }
                let metric = m
                    .and_then(|m| m.metric.as_deref())
                    .map_or(Some(tc::IstioMetric::AllMetrics), tc::IstioMetric::of_name);
                let Some(metric) = metric else { continue };
                let remove_labels: Vec<String> = o
                    .tag_overrides
                    .iter()
                    .filter(|(_, t)| t.operation.as_deref() == Some("REMOVE"))
                    .map(|(name, _)| name.clone())
                    .collect();
                if o.disabled.is_none() && remove_labels.is_empty() {
                    continue;
                }
                out.push(tc::MetricOverride {
                    metric,
                    disabled: o.disabled,
                    remove_labels,
                });
            }
        }
    }
    out
}
