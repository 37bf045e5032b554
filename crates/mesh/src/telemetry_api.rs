//! The Telemetry API's resource (`telemetry.istio.io/v1` Telemetry) as Trellis reads
//! it, and its checks; [`crate::trace`] resolves what it means for a sidecar.

use std::collections::BTreeMap;

use serde::Deserialize;

use trellis_config as tc;

use crate::istio::Selector;

/// `telemetry.istio.io/v1` Telemetry, the parts Trellis reads: tracing, access logging
/// and Istio's standard metrics' overrides ([`crate::metrics_api`]).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Telemetry {
    #[serde(default)]
    pub selector: Option<Selector>,
    /// Gateways and waypoints by reference: refused.
    #[serde(default)]
    pub target_ref: Option<serde_yaml::Value>,
    #[serde(default)]
    pub target_refs: Vec<serde_yaml::Value>,
    #[serde(default)]
    pub tracing: Vec<TracingSpec>,
    #[serde(default)]
    pub access_logging: Vec<AccessLoggingSpec>,
    #[serde(default)]
    pub metrics: Vec<MetricsSpec>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MetricsSpec {
    #[serde(default)]
    pub providers: Vec<ProviderRef>,
    #[serde(default)]
    pub overrides: Vec<MetricsOverride>,
    /// How often TCP metrics are reported: Trellis reports them as bytes move (warned).
    #[serde(default)]
    pub reporting_interval: Option<serde_yaml::Value>,
}

impl MetricsSpec {
    /// Whether the entry is for Trellis's Prometheus metrics (no provider named: the
    /// default one, which is Prometheus).
    pub(crate) fn prometheus(&self) -> bool {
        self.providers.is_empty() || self.providers.iter().any(|p| p.name == "prometheus")
    }
}

/// An override's `match.mode`, `CLIENT_AND_SERVER` by default.
pub(crate) fn metric_mode(m: Option<&MetricSelector>) -> &str {
    mode_or_default(m.and_then(|m| m.mode.as_deref()))
}

/// A `match.mode` as written, `CLIENT_AND_SERVER` when unset (tracing, access logging
/// and metrics alike).
fn mode_or_default(mode: Option<&str>) -> &str {
    mode.unwrap_or("CLIENT_AND_SERVER")
}

/// Whether `mode` is one of the Telemetry API's.
fn is_mode(mode: &str) -> bool {
    matches!(mode, "CLIENT" | "SERVER" | "CLIENT_AND_SERVER")
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MetricsOverride {
    #[serde(default, rename = "match")]
    pub matches: Option<MetricSelector>,
    #[serde(default)]
    pub disabled: Option<bool>,
    #[serde(default)]
    pub tag_overrides: BTreeMap<String, TagOverride>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MetricSelector {
    #[serde(default)]
    pub metric: Option<String>,
    #[serde(default)]
    pub custom_metric: Option<String>,
    #[serde(default)]
    pub mode: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct TagOverride {
    /// `UPSERT` (the default) or `REMOVE`.
    #[serde(default)]
    pub operation: Option<String>,
    /// A CEL expression (UPSERT).
    #[serde(default)]
    pub value: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AccessLoggingSpec {
    #[serde(default, rename = "match")]
    pub matches: Option<TracingMatch>,
    #[serde(default)]
    pub providers: Vec<ProviderRef>,
    #[serde(default)]
    pub disabled: Option<bool>,
    /// A CEL expression choosing the requests logged: refused.
    #[serde(default)]
    pub filter: Option<serde_yaml::Value>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TracingSpec {
    #[serde(default, rename = "match")]
    pub matches: Option<TracingMatch>,
    #[serde(default)]
    pub providers: Vec<ProviderRef>,
    #[serde(default)]
    pub random_sampling_percentage: Option<f64>,
    #[serde(default)]
    pub disable_span_reporting: Option<bool>,
    #[serde(default)]
    pub custom_tags: BTreeMap<String, CustomTag>,
    /// Istio's default (true) keeps a trace's decision in `x-request-id`; Trellis
    /// decides per trace from the propagated context, which the same setting means.
    #[serde(default)]
    pub use_request_id_for_trace_sampling: Option<bool>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct TracingMatch {
    #[serde(default)]
    pub mode: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct ProviderRef {
    pub name: String,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct CustomTag {
    #[serde(default)]
    pub literal: Option<Literal>,
    #[serde(default)]
    pub environment: Option<serde_yaml::Value>,
    #[serde(default)]
    pub header: Option<serde_yaml::Value>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct Literal {
    pub value: String,
}

/// The side (`CLIENT` or `SERVER`) of a listener whose spans are of `kind`.
pub(crate) fn side_of(kind: trellis_config::SpanKind) -> &'static str {
    match kind {
        trellis_config::SpanKind::Client => "CLIENT",
        trellis_config::SpanKind::Server => "SERVER",
    }
}

/// The side of a listener that reports as `reporter`.
pub(crate) fn side_of_reporter(reporter: tc::Reporter) -> &'static str {
    match reporter {
        tc::Reporter::Source => "CLIENT",
        tc::Reporter::Destination => "SERVER",
    }
}

/// Whether an entry with match `m` applies to `side`.
pub(crate) fn applies(m: Option<&TracingMatch>, side: &str) -> bool {
    mode(m).is_some_and(|mode| mode.contains(side))
}

/// `CLIENT`, `SERVER` or `CLIENT_AND_SERVER` (the default); None when it is none of them.
pub(crate) fn mode(m: Option<&TracingMatch>) -> Option<&str> {
    let mode = mode_or_default(m.and_then(|m| m.mode.as_deref()));
    is_mode(mode).then_some(mode)
}

/// The checks of a Telemetry resource.
pub(crate) fn validate(t: &Telemetry) -> Vec<String> {
    let mut errors = Vec::new();
    for (i, a) in t.access_logging.iter().enumerate() {
        if mode(a.matches.as_ref()).is_none() {
            errors.push(format!(
                "spec.accessLogging[{i}].match.mode: not CLIENT, SERVER or CLIENT_AND_SERVER"
            ));
        }
        if a.filter.is_some() {
            errors.push(format!("spec.accessLogging[{i}].filter: CEL filters are not supported by Trellis (every request would be logged)"));
        }
        if a.providers.len() > 1 {
            errors.push(format!(
                "spec.accessLogging[{i}].providers: Trellis writes one access log per proxy"
            ));
        }
    }
    errors.extend(validate_metrics(&t.metrics));
    if t.target_ref.is_some() || !t.target_refs.is_empty() {
        errors.push("spec.targetRefs: Telemetry for gateways and waypoints by reference is not supported by Trellis (use a selector)".into());
    }
    let mut modes = Vec::new();
    for (i, s) in t.tracing.iter().enumerate() {
        let mode = mode_or_default(s.matches.as_ref().and_then(|m| m.mode.as_deref()));
        if !is_mode(mode) {
            errors.push(format!(
                "spec.tracing[{i}].match.mode: {mode:?} is not CLIENT, SERVER or CLIENT_AND_SERVER"
            ));
        }
        for side in ["CLIENT", "SERVER"] {
            if mode.contains(side) {
                if modes.contains(&side) {
                    errors.push(format!(
                        "spec.tracing[{i}]: a second tracing entry for the {side} side"
                    ));
                }
                modes.push(side);
            }
        }
        if s.providers.len() > 1 {
            errors.push(format!(
                "spec.tracing[{i}].providers: at most one tracing provider per proxy"
            ));
        }
        if let Some(p) = s
            .random_sampling_percentage
            .filter(|p| !(0.0..=100.0).contains(p))
        {
            errors.push(format!(
                "spec.tracing[{i}].randomSamplingPercentage: {p} is not a percentage (0 to 100)"
            ));
        }
        for (name, tag) in &s.custom_tags {
            let kinds = [
                tag.literal.is_some(),
                tag.environment.is_some(),
                tag.header.is_some(),
            ];
            if kinds.iter().filter(|k| **k).count() != 1 {
                errors.push(format!(
                    "spec.tracing[{i}].customTags.{name}: exactly one of literal, environment or header"
                ));
            } else if tag.literal.is_none() {
                errors.push(format!("spec.tracing[{i}].customTags.{name}: only literal tags are supported by Trellis"));
            }
        }
    }
    errors
}

/// Istio's metric names Trellis does not produce (gRPC message counts): an override
/// of them changes nothing.
const NOT_PRODUCED: [&str; 2] = ["GRPC_REQUEST_MESSAGES", "GRPC_RESPONSE_MESSAGES"];

/// The errors of a Telemetry's `metrics`: names Istio does not have.
pub(crate) fn validate_metrics(metrics: &[MetricsSpec]) -> Vec<String> {
    let mut errors = Vec::new();
    for (i, spec) in metrics.iter().enumerate() {
        for (j, o) in spec.overrides.iter().enumerate() {
            let path = format!("spec.metrics[{i}].overrides[{j}]");
            let m = o.matches.as_ref();
            if !is_mode(metric_mode(m)) {
                errors.push(format!(
                    "{path}.match.mode: {:?} is not CLIENT, SERVER or CLIENT_AND_SERVER",
                    metric_mode(m)
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
pub(crate) fn metrics_notes(metrics: &[MetricsSpec]) -> Vec<String> {
    let mut notes = Vec::new();
    for (i, spec) in metrics.iter().enumerate() {
        let path = format!("spec.metrics[{i}]");
        if !spec.prometheus() {
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
