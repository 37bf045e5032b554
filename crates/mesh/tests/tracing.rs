//! Istio's tracing configuration (meshConfig's extension providers, the Telemetry API)
//! in the views of sidecars: which listeners trace, at what rate, with which tags, to
//! which collector cluster, and what leaves tracing off.

use trellis_config as tc;
use trellis_mesh::{cross_check, generate, load_str, Loaded, Registry};

const MESH: &str = r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: reviews, namespace: default }
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{ number: 9080, name: http, protocol: HTTP }]
  workloadSelector: { labels: { app: reviews } }
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: reviews-v1
  namespace: default
  annotations:
    sidecar.trellis.dev/app-ports: "http=19080"
    sidecar.trellis.dev/outbound: "127.0.0.1:15001"
spec:
  address: 127.0.0.1
  ports: { http: 15006 }
  labels: { app: reviews, version: v1 }
  serviceAccount: reviews
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: ratings-v1
  namespace: other
  annotations:
    sidecar.trellis.dev/app-ports: "http=19081"
    sidecar.trellis.dev/outbound: "127.0.0.1:15002"
spec:
  address: 127.0.0.1
  ports: { http: 15007 }
  labels: { app: ratings, version: v1 }
  serviceAccount: ratings
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: ratings, namespace: other }
spec:
  hosts: [ratings.other.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{ number: 9080, name: http, protocol: HTTP }]
  workloadSelector: { labels: { app: ratings } }
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: otel, namespace: observability }
spec:
  hosts: [otel.observability.svc.cluster.local]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{ number: 4317, name: grpc, protocol: GRPC }]
  endpoints: [{ address: 10.0.0.9 }]
---
"#;

const PROVIDERS: &str = r#"apiVersion: v1
kind: ConfigMap
metadata: { name: istio, namespace: istio-system }
data:
  mesh: |
    defaultConfig:
      tracing:
        sampling: 10
    extensionProviders:
      - name: otel
        opentelemetry: { service: observability/otel.observability.svc.cluster.local, port: 4317 }
      - name: zipkin
        zipkin: { service: zipkin.istio-system.svc.cluster.local, port: 9411 }
---
"#;

fn load(extra: &str) -> Loaded {
    let mut loaded = Loaded::default();
    load_str(MESH, "mesh.yaml", &mut loaded);
    load_str(extra, "extra.yaml", &mut loaded);
    cross_check(&mut loaded);
    loaded
}

/// The tracing of `workload`'s (in `ns`) outbound and inbound listeners.
fn tracing(extra: &str, ns: &str, workload: &str) -> (Option<tc::Tracing>, Option<tc::Tracing>) {
    let loaded = load(extra);
    assert!(loaded.refused.is_empty(), "{:?}", loaded.refused);
    let registry = Registry::from_inputs(&loaded.inputs);
    let c = generate(&loaded.inputs, &registry, ns, workload).unwrap();
    let of = |name: &str| {
        c.listeners
            .iter()
            .find(|l| l.name.starts_with(name))
            .and_then(|l| l.http.as_ref()?.tracing.clone())
    };
    (of("outbound"), of("inbound|"))
}

fn telemetry(ns: &str, spec: &str) -> String {
    format!("apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {{ name: t-{ns}, namespace: {ns} }}\nspec:\n{spec}---\n")
}

#[test]
fn a_mesh_wide_telemetry_traces_both_sides_to_the_providers_cluster() {
    let extra = PROVIDERS.to_string()
        + &telemetry(
            "istio-system",
            "  tracing:\n    - providers: [{ name: otel }]\n",
        );
    let (out, inb) = tracing(&extra, "default", "reviews-v1");
    let out = out.expect("the outbound listener traces");
    let inb = inb.expect("the inbound listener traces");
    assert_eq!(out.span_kind, tc::SpanKind::Client);
    assert_eq!(inb.span_kind, tc::SpanKind::Server);
    // defaultConfig's sampling, when the Telemetry does not say.
    assert_eq!(out.random_sampling, 10.0);
    assert_eq!(out.client_sampling, 100.0);
    let p = &out.provider.opentelemetry;
    assert_eq!(
        p.cluster,
        "outbound|4317||otel.observability.svc.cluster.local"
    );
    assert_eq!(p.service_name, "reviews.default");
    let tags: Vec<(&str, &str)> = out
        .tags
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        tags,
        vec![
            ("istio.canonical_revision", "v1"),
            ("istio.canonical_service", "reviews"),
            ("istio.cluster_id", "Kubernetes"),
            ("istio.mesh_id", "cluster.local"),
            ("istio.namespace", "default"),
        ]
    );
    // The routes carry Istio's operations.
    let loaded = load(&extra);
    let registry = Registry::from_inputs(&loaded.inputs);
    let c = generate(&loaded.inputs, &registry, "default", "reviews-v1").unwrap();
    let ops: Vec<String> = c
        .listeners
        .iter()
        .filter_map(|l| l.http.as_ref())
        .flat_map(|h| h.virtual_hosts.iter().flat_map(|v| v.routes.iter()))
        .filter_map(|r| r.operation.clone())
        .collect();
    assert!(
        ops.contains(&"ratings.other.svc.cluster.local:9080/*".to_string()),
        "{ops:?}"
    );
    assert!(
        ops.contains(&"reviews.default.svc.cluster.local:9080/*".to_string()),
        "{ops:?}"
    );
    assert!(c.clusters.iter().any(|c| c.name == p.cluster));
}

#[test]
fn the_most_specific_telemetry_wins_field_by_field() {
    let extra = PROVIDERS.to_string()
        + &telemetry(
            "istio-system",
            "  tracing:\n    - providers: [{ name: otel }]\n      randomSamplingPercentage: 5\n      customTags:\n        team: { literal: { value: mesh } }\n",
        )
        + &telemetry(
            "other",
            "  tracing:\n    - randomSamplingPercentage: 50\n      customTags:\n        team: { literal: { value: ratings } }\n",
        )
        + "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: { name: server-off, namespace: other }\nspec:\n  selector: { matchLabels: { app: ratings } }\n  tracing:\n    - match: { mode: SERVER }\n      disableSpanReporting: true\n---\n";
    let (out, inb) = tracing(&extra, "other", "ratings-v1");
    let out = out.unwrap();
    assert_eq!(out.random_sampling, 50.0);
    assert_eq!(out.tags["team"], "ratings");
    assert_eq!(
        inb, None,
        "the workload's Telemetry turns the server's side off"
    );
    // Another namespace keeps the mesh's settings.
    let (out, inb) = tracing(&extra, "default", "reviews-v1");
    assert_eq!(out.unwrap().random_sampling, 5.0);
    assert_eq!(inb.unwrap().tags["team"], "mesh");
}

#[test]
fn tracing_stays_off_where_it_cannot_be_honoured() {
    let mesh_wide = |provider: &str| {
        PROVIDERS.to_string()
            + &telemetry(
                "istio-system",
                &format!("  tracing:\n    - providers: [{{ name: {provider} }}]\n"),
            )
    };
    // No Telemetry and no default provider; a zipkin provider; an unknown one.
    for extra in [
        PROVIDERS.to_string(),
        mesh_wide("zipkin"),
        mesh_wide("nope"),
    ] {
        assert_eq!(
            tracing(&extra, "default", "reviews-v1"),
            (None, None),
            "{extra}"
        );
    }
    // enableTracing: false.
    let off = mesh_wide("otel").replace(
        "    defaultConfig:",
        "    enableTracing: false\n    defaultConfig:",
    );
    assert_eq!(tracing(&off, "default", "reviews-v1"), (None, None));
    // defaultProviders names the provider without a Telemetry.
    let default = PROVIDERS.replace(
        "    defaultConfig:",
        "    defaultProviders: { tracing: [otel] }\n    defaultConfig:",
    );
    assert!(tracing(&default, "default", "reviews-v1").0.is_some());
}

#[test]
fn telemetry_resources_are_checked() {
    for (spec, want) in [
        (
            "  targetRefs: [{ kind: Gateway, name: gw }]\n",
            "spec.targetRefs",
        ),
        (
            "  tracing:\n    - randomSamplingPercentage: 101\n",
            "randomSamplingPercentage: 101",
        ),
        (
            "  tracing:\n    - customTags:\n        h: { header: { name: x-user } }\n",
            "only literal tags",
        ),
        ("  tracing:\n    - match: { mode: BOTH }\n", "match.mode"),
        (
            "  tracing:\n    - providers: [{ name: a }, { name: b }]\n",
            "at most one tracing provider",
        ),
    ] {
        let loaded = load(&telemetry("default", spec));
        assert!(
            loaded.refused.iter().any(|d| d.message.contains(want)),
            "{spec}: {:?}",
            loaded.refused
        );
    }
    for (spec, want) in [
        (
            "  accessLogging:\n    - filter: { expression: \"response.code >= 400\" }\n",
            "CEL filters are not supported",
        ),
        (
            "  accessLogging:\n    - providers: [{ name: a }, { name: b }]\n",
            "one access log per proxy",
        ),
    ] {
        let loaded = load(&telemetry("default", spec));
        assert!(
            loaded.refused.iter().any(|d| d.message.contains(want)),
            "{spec}: {:?}",
            loaded.refused
        );
    }
    // Metrics for a provider Trellis does not have: said, not refused.
    let loaded = load(&telemetry(
        "default",
        "  metrics:\n    - providers: [{ name: stackdriver }]\n",
    ));
    assert!(loaded.refused.is_empty());
    assert!(
        loaded
            .warnings
            .iter()
            .any(|d| d.message.contains("spec.metrics[0].providers")),
        "{:?}",
        loaded.warnings
    );
}

/// The access logs of `workload`'s outbound and inbound listeners.
fn logs(extra: &str, ns: &str, workload: &str) -> (Option<tc::AccessLog>, Option<tc::AccessLog>) {
    let loaded = load(extra);
    assert!(loaded.refused.is_empty(), "{:?}", loaded.refused);
    let registry = Registry::from_inputs(&loaded.inputs);
    let c = generate(&loaded.inputs, &registry, ns, workload).unwrap();
    let of = |name: &str| {
        c.listeners
            .iter()
            .find(|l| l.name.starts_with(name))
            .and_then(|l| l.http.as_ref()?.access_log.clone())
    };
    (of("outbound"), of("inbound|"))
}

fn mesh_config(body: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{ name: istio, namespace: istio-system }}\ndata:\n  mesh: |\n{body}---\n")
}

#[test]
fn mesh_configs_access_log_file_logs_every_sidecar_in_istios_formats() {
    let text = |s: &str| Some(s.to_string());
    // accessLogFile alone: Istio's default text format.
    let (out, inb) = logs(
        &mesh_config("    accessLogFile: /dev/stdout\n"),
        "default",
        "reviews-v1",
    );
    let out = out.expect("the outbound side logs");
    assert_eq!(out.path, "/dev/stdout");
    assert_eq!(out.text_format, text("istio"));
    assert_eq!(inb.unwrap(), out);
    // JSON encoding, Istio's default fields; a format of our own, as JSON.
    let (out, _) = logs(
        &mesh_config("    accessLogFile: /var/log/a.log\n    accessLogEncoding: JSON\n"),
        "default",
        "reviews-v1",
    );
    assert_eq!(
        out.unwrap().json_format,
        Some(tc::JsonFormat::Named("istio".into()))
    );
    let (out, _) = logs(
        &mesh_config(
            "    accessLogFile: /var/log/a.log\n    accessLogEncoding: JSON\n    accessLogFormat: '{\"code\": \"%RESPONSE_CODE%\"}'\n",
        ),
        "default",
        "reviews-v1",
    );
    let fields = match out.unwrap().json_format {
        Some(tc::JsonFormat::Fields(f)) => f,
        other => panic!("{other:?}"),
    };
    assert_eq!(fields["code"], "%RESPONSE_CODE%");
    // A text format gets its line ending, as istiod adds it.
    let (out, _) = logs(
        &mesh_config("    accessLogFile: /dev/stdout\n    accessLogFormat: \"%RESPONSE_CODE%\"\n"),
        "default",
        "reviews-v1",
    );
    assert_eq!(out.unwrap().text_format, text("%RESPONSE_CODE%\n"));
    // Without accessLogFile, nothing is logged.
    assert_eq!(
        logs(
            &mesh_config("    enableTracing: true\n"),
            "default",
            "reviews-v1"
        ),
        (None, None)
    );
    // A JSON format that is not an object of strings refuses the meshConfig.
    let mut loaded = Loaded::default();
    load_str(
        &mesh_config(
            "    accessLogFile: /dev/stdout\n    accessLogEncoding: JSON\n    accessLogFormat: '[1]'\n",
        ),
        "mesh.yaml",
        &mut loaded,
    );
    assert!(
        loaded
            .refused
            .iter()
            .any(|d| d.message.contains("accessLogFormat")),
        "{:?}",
        loaded.refused
    );
}

#[test]
fn telemetry_access_logging_picks_providers_sides_and_turns_logging_off() {
    let providers = mesh_config(
        "    accessLogFile: /var/log/mesh.log\n    extensionProviders:\n      - name: json-file\n        envoyFileAccessLog:\n          path: /var/log/json.log\n          logFormat: { labels: { code: \"%RESPONSE_CODE%\", path: \"%REQ(:PATH)%\" } }\n",
    );
    // The built-in provider writes where meshConfig says.
    let extra = providers.clone()
        + &telemetry(
            "istio-system",
            "  accessLogging:\n    - providers: [{ name: envoy }]\n",
        );
    let (out, _) = logs(&extra, "default", "reviews-v1");
    assert_eq!(out.unwrap().path, "/var/log/mesh.log");
    // A namespace's Telemetry names the extension provider for the server's side only;
    // a workload's turns the client's side off.
    let extra = providers.clone()
        + &telemetry(
            "istio-system",
            "  accessLogging:\n    - providers: [{ name: envoy }]\n",
        )
        + &telemetry(
            "default",
            "  accessLogging:\n    - match: { mode: SERVER }\n      providers: [{ name: json-file }]\n",
        )
        + "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: { name: quiet, namespace: default }\nspec:\n  selector: { matchLabels: { app: reviews } }\n  accessLogging:\n    - match: { mode: CLIENT }\n      disabled: true\n---\n";
    let (out, inb) = logs(&extra, "default", "reviews-v1");
    assert_eq!(out, None);
    let inb = inb.unwrap();
    assert_eq!(inb.path, "/var/log/json.log");
    let fields = match inb.json_format {
        Some(tc::JsonFormat::Fields(f)) => f,
        other => panic!("{other:?}"),
    };
    assert_eq!(fields["path"], "%REQ(:PATH)%");
    // Another namespace keeps the mesh-wide provider on both sides.
    let (out, inb) = logs(&extra, "other", "ratings-v1");
    assert_eq!(out.unwrap().path, "/var/log/mesh.log");
    assert_eq!(inb.unwrap().path, "/var/log/mesh.log");
    // A provider of another kind leaves logging off.
    let extra = providers
        + &telemetry(
            "istio-system",
            "  accessLogging:\n    - providers: [{ name: otel }]\n",
        );
    assert_eq!(logs(&extra, "default", "reviews-v1"), (None, None));
}

/// Istio's TCP metadata exchange: clusters to sidecars offer it and inbound listeners
/// that carry TCP take it (HTTP-only ones exchange in headers);
/// `PILOT_ENABLE_METADATA_EXCHANGE=false` (the inputs' switch) turns both off.
#[test]
fn tcp_listeners_and_mesh_clusters_exchange_metadata_unless_switched_off() {
    let db = r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: db, namespace: default }
spec:
  hosts: [db.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{ number: 5432, name: tcp, protocol: TCP }]
  workloadSelector: { labels: { app: db } }
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: db-v1
  namespace: default
  annotations:
    sidecar.trellis.dev/app-ports: "tcp=15432"
spec:
  address: 127.0.0.1
  ports: { tcp: 15008 }
  labels: { app: db }
  serviceAccount: db
"#;
    let mut loaded = load(db);
    assert!(loaded.refused.is_empty(), "{:?}", loaded.refused);
    for switched_off in [false, true] {
        loaded.inputs.disable_tcp_metadata_exchange = switched_off;
        let registry = Registry::from_inputs(&loaded.inputs);
        let server = generate(&loaded.inputs, &registry, "default", "db-v1").unwrap();
        let inbound = server
            .listeners
            .iter()
            .find(|l| l.name.starts_with("inbound|"))
            .unwrap();
        assert_eq!(
            inbound.tls.as_ref().unwrap().metadata_exchange,
            !switched_off
        );
        let client = generate(&loaded.inputs, &registry, "default", "reviews-v1").unwrap();
        // Every cluster to sidecars offers it, as Istio's do (an HTTP pool of Trellis's
        // does not use it; Envoy's does, and the server's HTTP chains take the frame off).
        let to_ratings = client
            .clusters
            .iter()
            .find(|c| c.name == "outbound|9080||ratings.other.svc.cluster.local")
            .unwrap_or_else(|| {
                panic!(
                    "{:?}",
                    client.clusters.iter().map(|c| &c.name).collect::<Vec<_>>()
                )
            });
        assert_eq!(
            to_ratings.tls.as_ref().unwrap().metadata_exchange,
            !switched_off
        );
        let http_inbound = client
            .listeners
            .iter()
            .find(|l| l.name.starts_with("inbound|"))
            .unwrap();
        assert!(!http_inbound.tls.as_ref().unwrap().metadata_exchange);
    }
}

/// The Telemetry API's `metrics`: overrides from the mesh, then the namespace, then the
/// workload, on the side each names, in the listeners' `istio_stats`; what is read but
/// not applied is warned about, and names Istio does not have are refused.
#[test]
fn metric_overrides_reach_each_side_in_order() {
    let extra = r#"apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: { name: mesh-default, namespace: istio-system }
spec:
  metrics:
    - overrides:
        - match: { metric: ALL_METRICS, mode: CLIENT_AND_SERVER }
          tagOverrides:
            destination_principal: { operation: REMOVE }
            request_host: { value: "request.host" }
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: { name: reviews, namespace: default }
spec:
  selector: { matchLabels: { app: reviews } }
  metrics:
    - providers: [{ name: prometheus }]
      overrides:
        - match: { metric: REQUEST_COUNT, mode: SERVER }
          disabled: true
"#;
    let loaded = load(extra);
    assert!(loaded.refused.is_empty(), "{:?}", loaded.refused);
    assert!(
        loaded
            .warnings
            .iter()
            .any(|w| w.message.contains("tagOverrides.request_host: UPSERT")),
        "{:?}",
        loaded.warnings
    );
    let registry = Registry::from_inputs(&loaded.inputs);
    let c = generate(&loaded.inputs, &registry, "default", "reviews-v1").unwrap();
    let overrides = |prefix: &str| {
        c.listeners
            .iter()
            .find(|l| l.name.starts_with(prefix))
            .and_then(|l| l.istio_stats.clone())
            .unwrap()
            .overrides
    };
    let removal = tc::MetricOverride {
        metric: tc::IstioMetric::AllMetrics,
        disabled: None,
        remove_labels: vec!["destination_principal".into()],
    };
    assert_eq!(overrides("outbound"), std::slice::from_ref(&removal));
    assert_eq!(
        overrides("inbound|"),
        [
            removal,
            tc::MetricOverride {
                metric: tc::IstioMetric::RequestCount,
                disabled: Some(true),
                remove_labels: Vec::new(),
            }
        ]
    );
    let bad = load(
        r#"apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: { name: bad, namespace: default }
spec:
  metrics: [{ overrides: [{ match: { metric: REQUEST_COUNTS }, disabled: true }] }]
"#,
    );
    assert!(
        bad.refused.iter().any(|r| r
            .message
            .contains("spec.metrics[0].overrides[0].match.metric: \"REQUEST_COUNTS\"")),
        "{:?}",
        bad.refused
    );
}
