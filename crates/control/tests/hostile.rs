//! Istio YAML changed at random — values replaced by odd ones, lines dropped or doubled —
//! beside a small mesh, through what `trellis control --check` does: whatever the control
//! plane accepts must give every sidecar a view the sidecar takes (its config check, its
//! authorization compiled, its Envoy encoding). A view it would refuse is a mesh whose
//! sidecars get no new config (as a `unix://` endpoint once did). Nothing panics.

use proptest::prelude::*;
use proptest::sample::Index;
use std::path::Path;
use trellis_control::ControlPlane;
use trellis_xds::Cache;

const MESH: &str = r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: ratings, namespace: default }
spec:
  hosts: [ratings.default.svc.cluster.local]
  ports: [{ number: 9080, name: http, protocol: HTTP }]
  workloadSelector: { labels: { app: ratings } }
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: ratings-v1
  namespace: default
  annotations: { sidecar.trellis.dev/app-ports: "http=19080" }
spec: { address: 127.0.0.2, ports: { http: 29080 }, labels: { app: ratings, version: v1 }, serviceAccount: ratings }
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: { name: gw, namespace: default }
spec: { address: 127.0.0.3, labels: { istio: ingressgateway } }
"#;

/// Every document of Istio's validation cases (`fixtures/istio-api`).
fn corpus() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../mesh/tests/fixtures/istio-api");
    let mut docs = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(f).unwrap();
        for d in text.split("\n---\n").filter(|d| d.contains("kind:")) {
            let d: String = d
                .lines()
                .filter(|l| !l.starts_with("_err:"))
                .map(|l| format!("{l}\n"))
                .collect();
            docs.push(d);
        }
    }
    docs
}

const ODD: &[&str] = &[
    "\"\"",
    "0",
    "-1",
    "65536",
    "99999999999",
    "1.5",
    "true",
    "null",
    "[]",
    "{}",
    "\"*\"",
    "\"a/b/c\"",
    "\"::1\"",
    "\"[::1]:80\"",
    "\"unix:///x\"",
    "\"10.0.0.0/8\"",
    "\"é\"",
    "\"a\\u0000b\"",
    "\"-5s\"",
    "\"1e9h\"",
    "\"~\"",
    "\".\"",
    "\"*.example.com\"",
    "\"spiffe://x/ns/y/sa/z\"",
    "[\"\", \"*\"]",
    "{ a: b }",
];

/// One change to a document: replace the value of line `at` (if it has one) with an
/// odd value, drop the line, or double it.
fn change(doc: &str, at: &Index, how: u8, odd: &Index) -> String {
    let lines: Vec<&str> = doc.lines().collect();
    if lines.is_empty() {
        return doc.to_string();
    }
    let i = at.index(lines.len());
    let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    match how % 3 {
        0 => {
            if let Some((key, _)) = lines[i].split_once(": ") {
                out[i] = format!("{key}: {}", ODD[odd.index(ODD.len())]);
            }
        }
        1 => {
            out.remove(i);
        }
        _ => out.insert(i, lines[i].to_string()),
    }
    out.join("\n") + "\n"
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]
    #[test]
    fn odd_istio_yaml_is_refused_or_gives_views_a_sidecar_takes(
        picks in proptest::collection::vec((any::<Index>(), any::<Index>(), any::<u8>(), any::<Index>()), 1..4),
    ) {
        let corpus = corpus();
        let mut extra = String::new();
        for (doc, at, how, odd) in &picks {
            let d = &corpus[doc.index(corpus.len())];
            extra.push_str("---\n");
            extra.push_str(&change(d, at, *how, odd));
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("mesh.yaml"), MESH).unwrap();
        std::fs::write(dir.path().join("odd.yaml"), &extra).unwrap();
        let plane = ControlPlane::new(&[dir.path().to_path_buf()], Cache::new());
        let report = plane.check().unwrap();
        prop_assert!(report.view_errors.is_empty(), "{:?}\n{extra}", report.view_errors);
    }
}

/// Found by the test above: two ServiceEntries for one host, the first without ports.
/// Lookups by host found the first, the views were made from both, and every sidecar
/// got a virtual host without routes, which it refuses. The first is the service now,
/// and the second is warned of.
#[test]
fn a_host_two_service_entries_define_is_the_first_ones() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mesh.yaml"), MESH).unwrap();
    std::fs::write(
        dir.path().join("twice.yaml"),
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: { name: first, namespace: default }\nspec: { hosts: [example.com] }\n---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: { name: second, namespace: default }\nspec:\n  hosts: [example.com]\n  endpoints: [{ address: 127.0.0.9 }]\n  ports: [{ name: http, protocol: HTTP, number: 1234 }]\n",
    )
    .unwrap();
    let report = ControlPlane::new(&[dir.path().to_path_buf()], Cache::new())
        .check()
        .unwrap();
    assert!(report.view_errors.is_empty(), "{:?}", report.view_errors);
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("example.com is also defined by ServiceEntry default/first")),
        "{:?}",
        report.warnings
    );
}
