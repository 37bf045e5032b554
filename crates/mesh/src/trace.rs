//! Istio's tracing settings for one sidecar: the Telemetry API's `tracing`
//! (`telemetry.istio.io`: mesh-wide in the root namespace, a namespace's without a
//! selector, a workload's with one; the most specific level wins field by field, as
//! istiod merges them) over meshConfig's `enableTracing`, `defaultProviders.tracing`,
//! `extensionProviders` and `defaultConfig.tracing.sampling`. Spans go to an
//! `opentelemetry` provider's collector over OTLP/gRPC through the sidecar's cluster for
//! that service, with Istio's tags and service name; a route's operation is Istio's
//! `<host>:<port><path>`.
//!
//! What Trellis cannot do leaves tracing off rather than half on: a provider of another
//! kind, OTLP over HTTP, a collector that is not in the registry or is reached over
//! mutual TLS (the exporter speaks plaintext gRPC).

use std::collections::BTreeMap;

use trellis_config as tc;

use crate::telemetry_api::{applies, side_of};
use crate::{Inputs, Workload};

/// A tracing entry's fields after merging the levels that apply.
#[derive(Default)]
struct Merged {
    provider: Option<String>,
    sampling: Option<f64>,
    disabled: Option<bool>,
    tags: BTreeMap<String, String>,
}

fn merged(inputs: &Inputs, w: &Workload, kind: tc::SpanKind) -> Merged {
    let side = side_of(kind);
    let mut m = Merged::default();
    for t in crate::telemetry_levels::levels(inputs, w) {
        let entry = t
            .spec
            .tracing
            .iter()
            .find(|s| applies(s.matches.as_ref(), side));
        let Some(e) = entry else { continue };
        if let Some(p) = e.providers.first() {
            m.provider = Some(p.name.clone());
        }
        m.sampling = e.random_sampling_percentage.or(m.sampling);
        m.disabled = e.disable_span_reporting.or(m.disabled);
        for (k, tag) in &e.custom_tags {
            if let Some(l) = &tag.literal {
                m.tags.insert(k.clone(), l.value.clone());
            }
        }
    }
    m
}

/// The OpenTelemetry collector a provider name stands for: its service's host and port.
fn collector(inputs: &Inputs, name: &str) -> Option<(String, u16)> {
    let mesh = inputs.mesh_config.first()?;
    let p = mesh
        .spec
        .extension_providers
        .iter()
        .find(|p| p.name == name)?;
    let o = p.opentelemetry.as_ref().filter(|o| o.http.is_none())?;
    let host = o.service.rsplit('/').next().unwrap_or(&o.service);
    Some((host.to_string(), o.port))
}

/// The provider tracing uses for `w`'s side `kind`, if any.
fn provider(inputs: &Inputs, w: &Workload, kind: tc::SpanKind) -> Option<(Merged, String, u16)> {
    let mesh = inputs.mesh_config.first().map(|m| &m.spec);
    if mesh.and_then(|m| m.enable_tracing) == Some(false) {
        return None;
    }
    let m = merged(inputs, w, kind);
    if m.disabled == Some(true) {
        return None;
    }
    let name = m
        .provider
        .clone()
        .or_else(|| mesh?.default_providers.as_ref()?.tracing.first().cloned())?;
    let (host, port) = collector(inputs, &name)?;
    Some((m, host, port))
}

/// Every collector some sidecar may trace to (their clusters are part of every
/// outbound view, as the services they are).
pub(crate) fn collectors(inputs: &Inputs) -> Vec<(String, u16)> {
    let mut names: Vec<&str> = inputs
        .telemetries
        .iter()
        .flat_map(|t| t.spec.tracing.iter())
        .flat_map(|s| s.providers.iter().map(|p| p.name.as_str()))
        .collect();
    if let Some(d) = inputs
        .mesh_config
        .first()
        .and_then(|m| m.spec.default_providers.as_ref())
    {
        names.extend(d.tracing.iter().map(String::as_str));
    }
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter_map(|n| collector(inputs, n))
        .collect()
}

/// The tracing of `w`'s listeners of `kind`, or None when tracing is off for them.
/// `plaintext_cluster` names the cluster this sidecar's view has for a collector's host
/// and port, when it has one without TLS (the exporter speaks plaintext gRPC).
pub(crate) fn tracing(
    inputs: &Inputs,
    w: &Workload,
    kind: tc::SpanKind,
    plaintext_cluster: impl FnOnce(&str, u16) -> Option<String>,
) -> Option<tc::Tracing> {
    let (m, host, port) = provider(inputs, w, kind)?;
    let cluster = plaintext_cluster(&host, port)?;
    let meta = crate::telemetry::workload_metadata(inputs, w);
    let mesh_id = meta
        .principal
        .strip_prefix("spiffe://")
        .and_then(|p| p.split('/').next())
        .unwrap_or("cluster.local")
        .to_string();
    let sampling = m.sampling.unwrap_or_else(|| {
        inputs
            .mesh_config
            .first()
            .and_then(|c| c.spec.default_config.as_ref()?.tracing.as_ref()?.sampling)
            .unwrap_or(1.0)
    });
    let mut tags = BTreeMap::from([
        ("istio.canonical_revision".to_string(), meta.version.clone()),
        ("istio.canonical_service".to_string(), meta.app.clone()),
        ("istio.mesh_id".to_string(), mesh_id),
        ("istio.namespace".to_string(), meta.namespace.clone()),
        ("istio.cluster_id".to_string(), meta.cluster.clone()),
    ]);
    tags.extend(m.tags);
    Some(tc::Tracing {
        span_kind: kind,
        random_sampling: sampling,
        client_sampling: 100.0,
        overall_sampling: 100.0,
        tags,
        provider: tc::TraceProvider {
            opentelemetry: tc::OpenTelemetry {
                cluster,
                service_name: format!("{}.{}", meta.app, meta.namespace),
            },
        },
    })
}

/// The spans' kind of a sidecar listener (which side of its traffic it is): the
/// client's where it reports as the source, the server's where as the destination;
/// None for a listener without reporting.
pub(crate) fn kind_of(l: &tc::Listener) -> Option<tc::SpanKind> {
    Some(match l.istio_stats.as_ref()?.reporter {
        tc::Reporter::Source => tc::SpanKind::Client,
        tc::Reporter::Destination => tc::SpanKind::Server,
    })
}

/// Istio's operation (span name) of a route: `<host>:<port><path>` for a route to one
/// service's cluster, else `<name>:<port><path>` (`name`: the VirtualService's, or the
/// service host when none); the path is the match's (`prefix*`, the exact path, the
/// regex) or `/*`.
pub(crate) fn operation(r: &tc::Route, name: &str, port: u16) -> String {
    let m = &r.matches;
    let path = if let Some(p) = &m.prefix {
        format!("{p}*")
    } else if let Some(p) = m.path.as_ref().or(m.regex.as_ref()) {
        p.clone()
    } else {
        "/*".into()
    };
    let single = r
        .route
        .as_ref()
        .and_then(|a| a.cluster.as_deref())
        .and_then(|c| {
            let mut parts = c.splitn(4, '|');
            match (parts.next()?, parts.next()?, parts.next()?, parts.next()?) {
                ("outbound", port, _, host) if !host.is_empty() => Some(format!("{host}:{port}")),
                _ => None,
            }
        });
    match single {
        Some(host_port) => format!("{host_port}{path}"),
        None => format!("{name}:{port}{path}"),
    }
}
