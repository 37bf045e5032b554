//! Istio's metrics facts as Envoy metadata, which Envoy keeps without reading: a
//! listener's reporting side and workload (`istio.stats`), a cluster's service
//! (`istio.service`). Each is one string of `;`-separated fields (as Istio's endpoint
//! metadata `istio.workload` is), so that the encoding is the same every time (the
//! generated Struct keeps its fields in a `HashMap`).

use envoy_types::pb::envoy::config::core::v3::Metadata;
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};
use trellis_config as tc;

const ISTIO: &str = "istio";
const STATS: &str = "stats";
const OVERRIDES: &str = "stats_overrides";
const SERVICE: &str = "service";

fn one(key: &str, text: String) -> Option<Metadata> {
    fields(&[(key, text)])
}

fn fields(items: &[(&str, String)]) -> Option<Metadata> {
    let mut fields = std::collections::HashMap::new();
    for (key, text) in items {
        fields.insert(
            key.to_string(),
            Value {
                kind: Some(Kind::StringValue(text.clone())),
            },
        );
    }
    let mut filter_metadata = std::collections::HashMap::new();
    filter_metadata.insert(ISTIO.to_string(), Struct { fields });
    Some(Metadata {
        filter_metadata,
        ..Default::default()
    })
}

/// `<reporter>;<name>;<namespace>;<app>;<version>;<cluster>;<principal>`, the workload
/// fields empty when the listener does not carry them; with metric overrides,
/// `stats_overrides` too: `<METRIC>:<disabled: -, 0 or 1>:<label>,<label>` each, `;`
/// between them, in order.
pub fn stats(s: &tc::IstioStats) -> Option<Metadata> {
    let reporter = match s.reporter {
        tc::Reporter::Source => "source",
        tc::Reporter::Destination => "destination",
    };
    let w = s.workload.clone().unwrap_or_default();
    let fields = [
        reporter,
        &w.name,
        &w.namespace,
        &w.app,
        &w.version,
        &w.cluster,
        &w.principal,
    ];
    let stats = (STATS, fields.join(";"));
    if s.overrides.is_empty() {
        return self::fields(&[stats]);
    }
    let overrides = s
        .overrides
        .iter()
        .map(|o| {
            let disabled = match o.disabled {
                None => "-",
                Some(false) => "0",
                Some(true) => "1",
            };
            format!(
                "{}:{disabled}:{}",
                o.metric.name(),
                o.remove_labels.join(",")
            )
        })
        .collect::<Vec<_>>()
        .join(";");
    self::fields(&[stats, (OVERRIDES, overrides)])
}

fn read_overrides(m: Option<&Metadata>) -> Result<Vec<tc::MetricOverride>, String> {
    let Some(text) = read(m, OVERRIDES)? else {
        return Ok(Vec::new());
    };
    text.split(';')
        .map(|o| {
            let bad = || {
                format!("metadata.filter_metadata.istio.stats_overrides {o:?}: not METRIC:disabled:labels")
            };
            let f: Vec<&str> = o.split(':').collect();
            let [metric, disabled, labels] = f[..] else {
                return Err(bad());
            };
            Ok(tc::MetricOverride {
                metric: tc::IstioMetric::of_name(metric).ok_or_else(bad)?,
                disabled: match disabled {
                    "-" => None,
                    "0" => Some(false),
                    "1" => Some(true),
                    _ => return Err(bad()),
                },
                remove_labels: labels
                    .split(',')
                    .filter(|l| !l.is_empty())
                    .map(String::from)
                    .collect(),
            })
        })
        .collect()
}

/// `<host>;<name>;<namespace>`.
pub fn service(s: &tc::ServiceRef) -> Option<Metadata> {
    one(
        SERVICE,
        [&s.host, &s.name, &s.namespace]
            .map(String::as_str)
            .join(";"),
    )
}

/// The `istio` string `key` of `m`, if there is one; other metadata is Envoy's or
/// another extension's and is left alone.
fn read<'a>(m: Option<&'a Metadata>, key: &str) -> Result<Option<&'a str>, String> {
    let Some(istio) = m.and_then(|m| m.filter_metadata.get(ISTIO)) else {
        return Ok(None);
    };
    match istio.fields.get(key).and_then(|v| v.kind.as_ref()) {
        None => Ok(None),
        Some(Kind::StringValue(s)) => Ok(Some(s)),
        Some(_) => Err(format!(
            "metadata.filter_metadata.istio.{key}: not a string"
        )),
    }
}

pub fn read_stats(m: Option<&Metadata>) -> Result<Option<tc::IstioStats>, String> {
    let Some(text) = read(m, STATS)? else {
        return Ok(None);
    };
    let bad = || {
        format!("metadata.filter_metadata.istio.stats {text:?}: not reporter;name;namespace;app;version;cluster;principal")
    };
    let f: Vec<&str> = text.split(';').collect();
    let [reporter, name, namespace, app, version, cluster, principal] = f[..] else {
        return Err(bad());
    };
    let reporter = match reporter {
        "source" => tc::Reporter::Source,
        "destination" => tc::Reporter::Destination,
        _ => return Err(bad()),
    };
    let workload = tc::WorkloadMetadata {
        name: name.into(),
        namespace: namespace.into(),
        app: app.into(),
        version: version.into(),
        cluster: cluster.into(),
        principal: principal.into(),
    };
    Ok(Some(tc::IstioStats {
        reporter,
        workload: (workload != tc::WorkloadMetadata::default()).then_some(workload),
        overrides: read_overrides(m)?,
    }))
}

pub fn read_service(m: Option<&Metadata>) -> Result<Option<tc::ServiceRef>, String> {
    let Some(text) = read(m, SERVICE)? else {
        return Ok(None);
    };
    let f: Vec<&str> = text.split(';').collect();
    let [host, name, namespace] = f[..] else {
        return Err(format!(
            "metadata.filter_metadata.istio.service {text:?}: not host;name;namespace"
        ));
    };
    Ok(Some(tc::ServiceRef {
        host: host.into(),
        name: name.into(),
        namespace: namespace.into(),
    }))
}
