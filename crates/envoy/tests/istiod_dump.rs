//! What Trellis's decoder makes of the resources istiod sends a plain sidecar: the
//! dynamic resources of two Istio sidecars' Envoy config dumps (Istio's published
//! testdata, `fixtures/istiod/SOURCE`), read with Envoy's own message classes (PyPI
//! xds-protos, `fixtures/istiod/resources.py`) and decoded one resource at a time. Each
//! is accepted or refused naming the resource, the field and why; the report is
//! printed, and the refusals are pinned here (and listed in the README) so that a change
//! in what Trellis honours shows.

use base64::Engine as _;
use envoy_types::pb::google::protobuf::Any;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use trellis_envoy::decode;

/// A Python with xds-protos: `TRELLIS_PYTHON` (the venv `./run test` makes), or none
/// (the test then says so, and fails in CI or where `TRELLIS_REQUIRE_GRPCIO` asks).
fn python() -> Option<String> {
    let python = std::env::var("TRELLIS_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&python)
        .args(["-c", "import envoy.config.listener.v3.listener_pb2"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(python);
    }
    let required = std::env::var_os("TRELLIS_REQUIRE_GRPCIO").is_some()
        || std::env::var("CI").is_ok_and(|v| v == "true");
    if required {
        panic!("{python} cannot import xds-protos, and CI or TRELLIS_REQUIRE_GRPCIO requires it");
    }
    eprintln!("SKIPPED: {python} has no xds-protos (pip install xds-protos, or run ./run test)");
    None
}

#[derive(Default)]
struct Resources {
    listeners: BTreeMap<String, Any>,
    routes: BTreeMap<String, Any>,
    clusters: BTreeMap<String, Any>,
    endpoints: BTreeMap<String, Any>,
    secrets: BTreeMap<String, Any>,
}

fn resources(python: &str, dump: &str) -> Resources {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/istiod");
    let out = Command::new(python)
        .arg(dir.join("resources.py"))
        .arg(dir.join(dump))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{dump}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut r = Resources::default();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let type_url = v["type_url"].as_str().unwrap().to_string();
        let name = v["name"].as_str().unwrap().to_string();
        let value = base64::engine::general_purpose::STANDARD
            .decode(v["value"].as_str().unwrap())
            .unwrap();
        let map = match type_url.rsplit('/').next().unwrap() {
            "envoy.config.listener.v3.Listener" => &mut r.listeners,
            "envoy.config.route.v3.RouteConfiguration" => &mut r.routes,
            "envoy.config.cluster.v3.Cluster" => &mut r.clusters,
            "envoy.config.endpoint.v3.ClusterLoadAssignment" => &mut r.endpoints,
            "envoy.extensions.transport_sockets.tls.v3.Secret" => &mut r.secrets,
            other => panic!("{dump}: a resource of type {other}"),
        };
        map.insert(name, Any { type_url, value });
    }
    r
}

/// Each listener and cluster decoded alone: `(kind name, None)` when accepted, or the
/// refusal.
fn report(r: &Resources) -> Vec<(String, Option<String>)> {
    let none = BTreeMap::new();
    let mut out = Vec::new();
    for (name, l) in &r.listeners {
        let one = BTreeMap::from([(name.clone(), l.clone())]);
        let got = decode(&one, &r.routes, &none, &r.endpoints, &r.secrets);
        out.push((format!("Listener {name}"), got.err().map(|e| e.to_string())));
    }
    for (name, c) in &r.clusters {
        let one = BTreeMap::from([(name.clone(), c.clone())]);
        let got = decode(&none, &r.routes, &one, &r.endpoints, &r.secrets);
        out.push((format!("Cluster {name}"), got.err().map(|e| e.to_string())));
    }
    out
}

#[test]
fn istiods_resources_for_a_sidecar_are_accepted_or_refused_by_name() {
    let Some(python) = python() else { return };
    let mut refusals: BTreeMap<String, usize> = BTreeMap::new();
    let (mut accepted, mut refused) = (0, 0);
    for dump in ["proxyconfig-config_dump.json", "authz-configdump.json"] {
        let r = resources(&python, dump);
        for (resource, verdict) in report(&r) {
            match verdict {
                None => {
                    accepted += 1;
                    println!("{dump}: {resource}: accepted");
                }
                Some(why) => {
                    refused += 1;
                    println!("{dump}: {resource}: refused: {why}");
                    // "<resource>: <path>: <message>": the refusal names all three.
                    let parts: Vec<&str> = why.splitn(3, ": ").collect();
                    assert_eq!(parts.len(), 3, "{why}");
                    assert!(parts[0].starts_with(&resource), "{why}");
                    assert!(!parts[1].is_empty() && !parts[2].is_empty(), "{why}");
                    *refusals.entry(parts[2].to_string()).or_default() += 1;
                }
            }
        }
    }
    println!("accepted {accepted}, refused {refused}");
    for (why, n) in &refusals {
        println!("{n:3} × {why}");
    }
    // Where Trellis stands on istiod's sidecar config (each listener's first refusal):
    // Istio's capture listeners (original_dst, destination-port chain matches, the
    // HBONE internal listeners) and its telemetry filter. Change these when that changes.
    let expected: BTreeMap<String, usize> = [
        ("envoy.filters.listener.original_dst is not supported", 2),
        ("istio.stats (type.googleapis.com/google.protobuf.Struct) is not supported (tcp_proxy and http_connection_manager are)", 10),
        ("istio_authn (type.googleapis.com/udpa.type.v1.TypedStruct) is not supported (tcp_proxy and http_connection_manager are)", 1),
        ("set_dst_address is not supported", 2),
        ("two filter chains are supported only as PERMISSIVE's tls/raw_buffer pair", 1),
        ("with TLS passthrough only server_names (and transport_protocol \"tls\") are supported", 12),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(refusals, expected);
    assert_eq!((accepted, refused), (1, 28));
}
