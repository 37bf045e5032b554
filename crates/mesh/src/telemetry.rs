//! What a proxy needs for Istio's standard metrics: its workload as Istio's labels name
//! it (the peer metadata sidecars exchange), which side each listener reports, and the
//! service behind each cluster.

use trellis_config as tc;

use crate::registry::{Service, Workload};
use crate::Inputs;

/// Istio's `CLUSTER_ID` when none is configured.
const CLUSTER_ID: &str = "Kubernetes";

/// `w` as Istio names it: canonical service from `service.istio.io/canonical-name`,
/// else `app`, else the workload's name; canonical revision from
/// `service.istio.io/canonical-revision`, else `version`, else `latest`.
pub(crate) fn workload_metadata(inputs: &Inputs, w: &Workload) -> tc::WorkloadMetadata {
    let label = |keys: &[&str]| keys.iter().find_map(|k| w.labels.get(*k)).cloned();
    let trust_domain = crate::security::local_trust_domains(inputs, w)
        .into_iter()
        .next()
        .unwrap_or_else(|| "cluster.local".into());
    tc::WorkloadMetadata {
        name: w.name.clone(),
        namespace: w.namespace.clone(),
        app: label(&[
            "service.istio.io/canonical-name",
            "app.kubernetes.io/name",
            "app",
        ])
        .unwrap_or_else(|| w.name.clone()),
        version: label(&[
            "service.istio.io/canonical-revision",
            "app.kubernetes.io/version",
            "version",
        ])
        .unwrap_or_else(|| "latest".into()),
        cluster: CLUSTER_ID.into(),
        principal: format!(
            "spiffe://{trust_domain}/ns/{}/sa/{}",
            w.namespace, w.service_account
        ),
    }
}

/// A listener's reporting: with the workload where the listener is the workload's own,
/// without where several workloads share it.
pub(crate) fn stats(
    inputs: &Inputs,
    w: &Workload,
    reporter: tc::Reporter,
    own: bool,
) -> Option<tc::IstioStats> {
    let side = crate::telemetry_api::side_of_reporter(reporter);
    Some(tc::IstioStats {
        reporter,
        workload: own.then(|| workload_metadata(inputs, w)),
        overrides: crate::metrics_api::overrides(inputs, w, side),
    })
}

/// The service behind a cluster, for the `destination_service*` labels.
pub(crate) fn service_ref(s: &Service) -> tc::ServiceRef {
    tc::ServiceRef {
        host: s.host.clone(),
        name: s.host.split('.').next().unwrap_or(&s.host).to_string(),
        namespace: s.namespace.clone(),
    }
}
