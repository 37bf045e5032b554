//! The Telemetry API's `metrics`: which of Istio's standard metrics a sidecar records on
//! each side, and which labels it leaves off, through the `prometheus` provider (the
//! only one Trellis has; it is what `/stats/prometheus` serves). Overrides apply mesh,
//! then namespace, then workload, each in its order, so the most specific wins.
//!
//! Honoured: `disabled`, `tagOverrides` with `operation: REMOVE`, `match.metric`
//! (Istio's names, `ALL_METRICS` by default) and `match.mode`. Read but not applied,
//! with a warning (a metric's labels are not a security setting): `tagOverrides` that
//! UPSERT (a CEL expression), `customMetric`, `reportingInterval`, other providers.

use trellis_config as tc;

use crate::telemetry_api::{MetricSelector, MetricsSpec};
use crate::{Inputs, Workload};

/// Istio's metric names Trellis does not produce (gRPC message counts): an override
/// of them changes nothing.
const NOT_PRODUCED: [&str; 2] = ["GRPC_REQUEST_MESSAGES", "GRPC_RESPONSE_MESSAGES"];

/// Whether an entry's providers include Trellis's Prometheus metrics (none named: the
/// default provider, which is Prometheus).
fn prometheus(spec: &MetricsSpec) -> bool {
    spec.providers.is_empty() || spec.providers.iter().any(|p| p.name == "prometheus")
}

fn mode(m: Option<&MetricSelector>) -> &str {
    m.and_then(|m| m.mode.as_deref())
        .unwrap_or("CLIENT_AND_SERVER")
}

/// The overrides of `w`'s listeners on `side` (`CLIENT` or `SERVER`), in the order
/// they apply.
pub(crate) fn overrides(inputs: &Inputs, w: &Workload, side: &str) -> Vec<tc::MetricOverride> {
    let mut out = Vec::new();
    for t in crate::trace::levels(inputs, w) {
        for spec in t.spec.metrics.iter().filter(|s| prometheus(s)) {
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

/// The errors of a Telemetry's `metrics`: names Istio does not have.
pub(crate) fn validate(metrics: &[MetricsSpec]) -> Vec<String> {
    let mut errors = Vec::new();
    for (i, spec) in metrics.iter().enumerate() {
        for (j, o) in spec.overrides.iter().enumerate() {
            let path = format!("spec.metrics[{i}].overrides[{j}]");
            let m = o.matches.as_ref();
            if !matches!(mode(m), "CLIENT" | "SERVER" | "CLIENT_AND_SERVER") {
                errors.push(format!(
                    "{path}.match.mode: {:?} is not CLIENT, SERVER or CLIENT_AND_SERVER",
                    mode(m)
                ));
            }
            if let Some(name) = m.and_then(|m| m.metric.as_deref()) {
                if tc::IstioMetric::of_name(name).is_none() && !NOT_PRODUCED.contains(&name) {
                    errors.push(format!(
                        "{path}.match.metric: {name:?} is not one of Istio's standard metrics"
                    ));
                }
            }
            for (tag, t) in &o.tag_overrides {
                match t.operation.as_deref() {
                    None | Some("UPSERT") | Some("REMOVE") => {}
                    Some(other) => errors.push(format!(
                        "{path}.tagOverrides.{tag}.operation: {other:?} is not UPSERT or REMOVE"
                    )),
                }
                if t.operation.as_deref() == Some("REMOVE")
                    && !tc::ISTIO_LABELS.contains(&tag.as_str())
                {
                    errors.push(format!(
                        "{path}.tagOverrides.{tag}: not one of Istio's labels, so there is nothing to remove"
                    ));
                }
            }
        }
    }
    errors
}

/// What is read but not applied, for the loader's warnings.
pub(crate) fn notes(metrics: &[MetricsSpec]) -> Vec<String> {
    let mut notes = Vec::new();
    for (i, spec) in metrics.iter().enumerate() {
        let path = format!("spec.metrics[{i}]");
        if !prometheus(spec) {
            notes.push(format!(
                "{path}.providers: Trellis's metrics are Prometheus's (`prometheus`); other providers are not sent to"
            ));
        }
        if spec.reporting_interval.is_some() {
            notes.push(format!(
                "{path}.reportingInterval: Trellis reports TCP metrics as the bytes move"
            ));
        }
        for (j, o) in spec.overrides.iter().enumerate() {
            let path = format!("{path}.overrides[{j}]");
            if o.matches
                .as_ref()
                .is_some_and(|m| m.custom_metric.is_some())
            {
                notes.push(format!(
                    "{path}.match.customMetric: custom metrics are not supported by Trellis; the override is not applied"
                ));
            }
            for (tag, t) in &o.tag_overrides {
                if t.operation.as_deref() != Some("REMOVE") {
                    notes.push(format!(
                        "{path}.tagOverrides.{tag}: UPSERT (a CEL expression) is not supported by Trellis yet; the label is not added"
                    ));
                }
            }
        }
    }
    notes
}
