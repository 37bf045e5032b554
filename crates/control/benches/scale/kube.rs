//! The scale bench in Kubernetes mode: N Services with one EndpointSlice of 10 ready
//! endpoints each (the first 100 endpoints are pods with sidecars), served by the
//! replaying API server; an endpoint's readiness flips in a watch event, and the time
//! is taken from the event to every client holding the new endpoint set.

use std::fmt::Write as _;
use std::path::Path;

use trellis_kube::fake::FakeApiServer;

/// `{"kind": "<kind>List", "apiVersion": ..., "items": [...]}` in `dir/<file>.json`.
fn write_list(dir: &Path, file: &str, api_version: &str, kind: &str, items: &str) {
    let list = format!(
        r#"{{"kind":"{kind}List","apiVersion":"{api_version}","metadata":{{"resourceVersion":"1000"}},"items":[{items}]}}"#
    );
    std::fs::write(dir.join(format!("{file}.json")), list).unwrap();
}

fn address(i: usize, e: usize) -> String {
    format!("10.{}.{}.{e}", i / 256, i % 256)
}

fn pod_name(i: usize, e: usize) -> String {
    format!("svc-{i}-{e}")
}

/// Service `i`'s slice, with endpoint 9 ready or not.
pub fn slice(i: usize, last_ready: bool) -> String {
    let mut endpoints = String::new();
    for e in 0..super::ENDPOINTS {
        let ready = e != super::ENDPOINTS - 1 || last_ready;
        // Endpoints of the first 100 pods name them (they have sidecars).
        let target = if i * super::ENDPOINTS + e < super::PROXIES {
            format!(
                r#","targetRef":{{"kind":"Pod","namespace":"default","name":"{}"}}"#,
                pod_name(i, e)
            )
        } else {
            String::new()
        };
        let _ = write!(
            endpoints,
            r#"{}{{"addresses":["{}"],"conditions":{{"ready":{ready}}}{target}}}"#,
            if e == 0 { "" } else { "," },
            address(i, e)
        );
    }
    format!(
        r#"{{"metadata":{{"name":"svc-{i}-x1","namespace":"default","labels":{{"kubernetes.io/service-name":"svc-{i}"}}}},"addressType":"IPv4","endpoints":[{endpoints}],"ports":[{{"name":"http","protocol":"TCP","port":9080}}]}}"#
    )
}

/// Service `i`, labelled `generation: <generation>` (a change that is not an endpoint's).
fn service(i: usize, generation: usize) -> String {
    format!(
        r#"{{"metadata":{{"name":"svc-{i}","namespace":"default","labels":{{"generation":"{generation}"}}}},"spec":{{"ports":[{{"name":"http","protocol":"TCP","port":8080,"targetPort":9080}}],"selector":{{"app":"svc-{i}"}},"type":"ClusterIP","ipFamilies":["IPv4"]}}}}"#
    )
}

/// The lists of a cluster with `services` Services.
pub fn write_cluster(dir: &Path, services: usize) {
    write_list(
        dir,
        "namespaces",
        "v1",
        "Namespace",
        r#"{"metadata":{"name":"default"}}"#,
    );
    let items: Vec<String> = (0..services).map(|i| service(i, 0)).collect();
    write_list(dir, "services", "v1", "Service", &items.join(","));
    let items: Vec<String> = (0..services).map(|i| slice(i, true)).collect();
    write_list(
        dir,
        "endpointslices",
        "discovery.k8s.io/v1",
        "EndpointSlice",
        &items.join(","),
    );
    let items: Vec<String> = (0..super::PROXIES)
        .map(|p| {
            let (i, e) = (p / super::ENDPOINTS, p % super::ENDPOINTS);
            format!(
                r#"{{"metadata":{{"name":"{}","namespace":"default","labels":{{"app":"svc-{i}"}},"annotations":{{"sidecar.trellis.dev/app-ports":"http=9000"}}}},"spec":{{"serviceAccountName":"svc-{i}","containers":[{{"name":"app","ports":[{{"name":"http","containerPort":9080}}]}}]}},"status":{{"phase":"Running","podIP":"{}"}}}}"#,
                pod_name(i, e),
                address(i, e)
            )
        })
        .collect();
    write_list(dir, "pods", "v1", "Pod", &items.join(","));
    for k in trellis_kube::ISTIO_KINDS {
        write_list(
            dir,
            &format!("{}.{}", k.plural, k.group),
            &format!("{}/{}", k.group, k.version),
            k.kind,
            "",
        );
    }
}

/// The replaying API server on the lists of `dir`, and a kubeconfig file for it.
pub fn serve(dir: &Path) -> (FakeApiServer, std::path::PathBuf) {
    let fake = FakeApiServer::start(dir, None).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, fake.kubeconfig()).unwrap();
    (fake, kubeconfig)
}

/// A MODIFIED watch event for service 0's slice.
pub fn slice_event(last_ready: bool) -> String {
    format!(
        r#"{{"type":"MODIFIED","object":{}}}"#,
        slice(0, last_ready).replacen(
            r#"{"metadata""#,
            r#"{"kind":"EndpointSlice","apiVersion":"discovery.k8s.io/v1","metadata""#,
            1
        )
    )
}

/// A MODIFIED watch event for service `i` with a new label.
pub fn service_event(i: usize) -> String {
    format!(
        r#"{{"type":"MODIFIED","object":{}}}"#,
        service(i, 1).replacen(
            r#"{"metadata""#,
            r#"{"kind":"Service","apiVersion":"v1","metadata""#,
            1
        )
    )
}
