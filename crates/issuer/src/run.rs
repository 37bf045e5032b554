//! `trellis issuer`: the issuer controllers, the CSR signer and the cert-manager
//! issuer on one Kubernetes client, until the process ends.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kube::Client;

use crate::attestation::KeyAttestation;
use crate::ca::Tokens;
use crate::issuers::{self, Registry};

pub struct Options {
    pub kubeconfig: Option<PathBuf>,
    pub tokens: Tokens,
    pub attestation: Arc<dyn KeyAttestation>,
}

/// Waits until the API server serves `path` (a group version's resource list) and
/// has `plural` in it; says once why it waits.
async fn served(client: &Client, path: &str, plural: &str, hint: &str) {
    let mut said = false;
    loop {
        let request = http::Request::get(path)
            .body(Vec::new())
            .expect("a request");
        match client.request::<serde_json::Value>(request).await {
            Ok(list)
                if list["resources"]
                    .as_array()
                    .is_some_and(|r| r.iter().any(|r| r["name"] == plural)) =>
            {
                if said {
                    tracing::info!("{plural} are served now");
                }
                return;
            }
            _ => {
                if !said {
                    tracing::warn!("{plural} are not served ({hint}); waiting for them");
                    said = true;
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

pub async fn run(options: Options) -> anyhow::Result<()> {
    let client = trellis_kube::client(options.kubeconfig.as_deref())
        .await
        .map_err(anyhow::Error::msg)?;
    let registry = Registry::new();
    let mut tasks = tokio::task::JoinSet::new();
    for cluster in [false, true] {
        let (client, tokens, attestation, registry) = (
            client.clone(),
            options.tokens.clone(),
            options.attestation.clone(),
            registry.clone(),
        );
        tasks.spawn(async move {
            let plural = issuers::resource(cluster).plural;
            served(
                &client,
                "/apis/trellis.io/v1alpha1",
                &plural,
                "kubectl apply -f deploy/crds/",
            )
            .await;
            issuers::run(client, tokens, attestation, registry, cluster).await;
        });
    }
    tasks.spawn(crate::csr::run(client.clone(), registry.clone()));
    tasks.spawn(async move {
        served(
            &client,
            "/apis/cert-manager.io/v1",
            "certificaterequests",
            "cert-manager is not installed",
        )
        .await;
        crate::certificate_request::run(client, registry).await;
    });
    if let Some(Err(e)) = tasks.join_next().await {
        anyhow::bail!("a controller stopped: {e}");
    }
    anyhow::bail!("a controller stopped")
}
