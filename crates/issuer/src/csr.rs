//! The Kubernetes signer: CertificateSigningRequests for one of the issuers' signer
//! names are signed once approved, never when denied, and fail with a reason when the
//! issuer's policy or the CSR itself rules them out. Requests for other signers are
//! not touched.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::ByteString;
use kube::api::PostParams;
use kube::runtime::controller::Action;
use kube::runtime::{watcher, Controller};
use kube::{Api, Client, ResourceExt};

use crate::ca::Failure;
use crate::issuers::Registry;
use crate::names::IssuerRef;
use crate::{policy, sign};

struct Context {
    api: Api<CertificateSigningRequest>,
    registry: Arc<Registry>,
}

#[derive(Debug, thiserror::Error)]
enum Error {
    #[error("writing the CSR's status: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Sign(String),
}

pub async fn run(client: Client, registry: Arc<Registry>) {
    let api: Api<CertificateSigningRequest> = Api::all(client);
    let context = Arc::new(Context {
        api: api.clone(),
        registry: registry.clone(),
    });
    Controller::new(api, watcher::Config::default())
        .reconcile_all_on(registry.changes())
        .run(
            reconcile,
            |_, e, _| {
                tracing::warn!("CertificateSigningRequest: {e}");
                Action::requeue(Duration::from_secs(1))
            },
            context,
        )
        .for_each(|_| async {})
        .await;
}

fn has(csr: &CertificateSigningRequest, kind: &str) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == kind && c.status == "True"))
}

async fn reconcile(
    csr: Arc<CertificateSigningRequest>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let Some(issuer) = IssuerRef::from_signer_name(&csr.spec.signer_name) else {
        return Ok(Action::await_change());
    };
    let signed = csr.status.as_ref().is_some_and(|s| s.certificate.is_some());
    if signed || has(&csr, "Denied") || has(&csr, "Failed") || !has(&csr, "Approved") {
        return Ok(Action::await_change());
    }
    // Issued when the issuer is ready (a registry change runs this again).
    let Some(ca) = ctx.registry.ca(&issuer) else {
        return Ok(Action::await_change());
    };
    let usages = csr.spec.usages.clone().unwrap_or_default();
    let ttl = csr
        .spec
        .expiration_seconds
        .map(|s| Duration::from_secs(s.max(0) as u64));
    let started = Instant::now();
    let outcome = match policy::decide(&ca.spec, &usages, ttl, false) {
        Err(f) => Err(f),
        Ok((usages, ttl)) => {
            let request = csr.spec.request.0.clone();
            match sign::sign(ca, request, usages, ttl).await {
                Ok(issued) => Ok(issued),
                Err(sign::Error::Refused(f)) => Err(f),
                Err(sign::Error::Retry(e)) => return Err(Error::Sign(e)),
            }
        }
    };
    let mut updated = (*csr).clone();
    let status = updated.status.get_or_insert_with(Default::default);
    match outcome {
        Ok(issued) => {
            let mut chain = issued.certificate_pem;
            chain.push_str(&issued.intermediates_pem);
            status.certificate = Some(ByteString(chain.into_bytes()));
        }
        Err(Failure { reason, message }) => {
            let now = Time(k8s_openapi::jiff::Timestamp::now());
            status.conditions.get_or_insert_with(Vec::new).push(
                CertificateSigningRequestCondition {
                    type_: "Failed".into(),
                    status: "True".into(),
                    reason: Some(reason.into()),
                    message: Some(message),
                    last_update_time: Some(now.clone()),
                    last_transition_time: Some(now),
                },
            );
        }
    }
    // With the resourceVersion this was decided on: if the request changed meanwhile
    // (another signer wrote it), the write fails and the next pass sees the change.
    ctx.api
        .replace_status(&csr.name_any(), &PostParams::default(), &updated)
        .await?;
    tracing::info!(
        csr = %csr.name_any(),
        signer = %csr.spec.signer_name,
        failed = updated.status.as_ref().is_some_and(|s| s.certificate.is_none()),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "CertificateSigningRequest answered"
    );
    Ok(Action::await_change())
}
