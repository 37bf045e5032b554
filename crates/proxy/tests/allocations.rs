//! Recording Istio's metrics for a request allocates nothing once the request's label
//! set has been seen: the peer's metadata header is parsed once and kept, and a
//! listener's series are found by a small key (counted with a per-thread counting
//! allocator, in this test binary only).

use std::sync::Arc;

use http::HeaderMap;
use trellis_config::{Reporter, ServiceRef, WorkloadMetadata};
use trellis_proxy::http::flags::Flags;
use trellis_proxy::istio_stats::{
    take_peer, IstioMetrics, ListenerTelemetry, RequestRecord, Service,
};

fn workload(name: &str, app: &str) -> WorkloadMetadata {
    WorkloadMetadata {
        name: name.into(),
        namespace: "default".into(),
        app: app.into(),
        version: "v1".into(),
        cluster: "Kubernetes".into(),
        principal: format!("spiffe://cluster.local/ns/default/sa/{app}"),
    }
}

#[test]
fn recording_a_request_allocates_nothing_once_its_label_set_was_seen() {
    let metrics = Arc::new(IstioMetrics::default());
    let server = ListenerTelemetry::new(
        metrics.clone(),
        &trellis_config::IstioStats::new(Reporter::Destination),
        &workload("reviews-v1", "reviews"),
        "sidecar~10.0.0.2~reviews-v1.default~default.svc.cluster.local",
    );
    let client = ListenerTelemetry::new(
        metrics.clone(),
        &trellis_config::IstioStats::new(Reporter::Source),
        &workload("productpage-v1", "productpage"),
        "sidecar~10.0.0.1~productpage-v1.default~default.svc.cluster.local",
    );
    // The request's headers as the client's sidecar sends them.
    let mut sent = HeaderMap::new();
    client.headers.insert(&mut sent);
    let identity: Arc<str> = "spiffe://cluster.local/ns/default/sa/productpage".into();
    let service = Service::of(&ServiceRef {
        host: "reviews.default.svc.cluster.local".into(),
        name: "reviews".into(),
        namespace: "default".into(),
    });
    let record = |headers: &mut HeaderMap| {
        let peer = take_peer(&metrics, headers);
        assert!(peer.is_some());
        server.record(&RequestRecord {
            peer,
            peer_identity: Some(identity.clone()),
            service: Some(service.clone()),
            status: 200,
            grpc: false,
            grpc_status: None,
            flags: Flags::default(),
            duration_ms: 1.5,
            request_bytes: 0,
            response_bytes: 1024,
        });
    };
    // The first request of its kind parses the header and makes the series.
    record(&mut sent.clone());
    let mut requests: Vec<HeaderMap> = (0..1000).map(|_| sent.clone()).collect();
    let info = allocation_counter::measure(|| {
        for headers in &mut requests {
            record(headers);
        }
    });
    assert_eq!(info.count_total, 0, "{info:?}");
    // The counter sees allocations: a label set not seen before makes its series.
    let first = allocation_counter::measure(|| {
        server.record(&RequestRecord {
            peer: None,
            peer_identity: None,
            service: None,
            status: 503,
            grpc: false,
            grpc_status: None,
            flags: Flags::UPSTREAM_CONNECT_FAILURE,
            duration_ms: 0.0,
            request_bytes: 0,
            response_bytes: 0,
        })
    });
    assert!(first.count_total > 0, "{first:?}");
    let text = {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &metrics.registry).unwrap();
        out
    };
    let line = text
        .lines()
        .find(|l| l.starts_with("istio_requests_total{") && l.contains("response_code=\"200\""))
        .unwrap();
    assert!(line.ends_with(" 1001"), "{line}");
    assert!(
        line.contains("source_workload=\"productpage-v1\""),
        "{line}"
    );
}
