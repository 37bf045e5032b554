//! The cert-manager external issuer: `cert-manager.io/v1` CertificateRequests whose
//! `issuerRef` is group `trellis.io`, kind TrellisIssuer (same namespace) or
//! TrellisClusterIssuer, answered as cert-manager's external issuer contract says:
//!
//! - a request whose `Ready` condition is `True`, or `False` with reason `Failed` or
//!   `Denied`, is final and left alone;
//! - a `Denied` request gets `Ready=False` reason `Denied` and a `failureTime`, never a
//!   certificate; one not yet `Approved` waits with `Ready=False` reason `Pending`;
//! - an approved one is signed: `status.certificate` (the certificate and the
//!   intermediates, PEM), `status.ca` (the root, PEM) and `Ready=True` reason `Issued`; or
//!   it fails with `Ready=False` reason `Failed` and a `failureTime`.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use futures_util::StreamExt;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::{watcher, Controller};
use kube::{Api, Client, ResourceExt};
use serde_json::{json, Value};

use crate::ca::Failure;
use crate::conditions;
use crate::issuers::Registry;
use crate::names::IssuerRef;
use crate::{policy, sign};

pub fn resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cert-manager.io", "v1", "CertificateRequest"),
        "certificaterequests",
    )
}

struct Context {
    client: Client,
    registry: Arc<Registry>,
}

#[derive(Debug, thiserror::Error)]
enum Error {
    #[error("writing the CertificateRequest's status: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Sign(String),
}

pub async fn run(client: Client, registry: Arc<Registry>) {
    let ar = resource();
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    let context = Arc::new(Context {
        client,
        registry: registry.clone(),
    });
    Controller::new_with(api, watcher::Config::default(), ar)
        .reconcile_all_on(registry.changes())
        .run(
            reconcile,
            |_, e, _| {
                tracing::warn!("CertificateRequest: {e}");
                Action::requeue(Duration::from_secs(1))
            },
            context,
        )
        .for_each(|_| async {})
        .await;
}

/// What to write: the Ready condition, and the certificate and CA when issued.
enum Answer {
    Pending(String),
    Denied,
    Failed(Failure),
    Issued(sign::Issued, String),
}

async fn reconcile(cr: Arc<DynamicObject>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = cr.namespace().unwrap_or_default();
    let spec = &cr.data["spec"];
    let status = &cr.data["status"];
    let issuer_ref = &spec["issuerRef"];
    let Some(issuer) = IssuerRef::from_issuer_ref(
        &namespace,
        issuer_ref["group"].as_str().unwrap_or("cert-manager.io"),
        issuer_ref["kind"].as_str().unwrap_or("Issuer"),
        issuer_ref["name"].as_str().unwrap_or_default(),
    ) else {
        return Ok(Action::await_change());
    };
    if let Some(ready) = conditions::find(status, "Ready") {
        let final_reason = matches!(ready["reason"].as_str(), Some("Failed" | "Denied"));
        if ready["status"] == "True" || (ready["status"] == "False" && final_reason) {
            return Ok(Action::await_change());
        }
    }
    let answer = if conditions::is_true(status, "Denied") {
        Answer::Denied
    } else if !conditions::is_true(status, "Approved") {
        Answer::Pending("Waiting for the request to be approved".into())
    } else {
        match ctx.registry.ca(&issuer) {
            None => Answer::Pending(format!("Waiting for {issuer} to be ready")),
            Some(ca) => match decide(spec, &ca.spec) {
                Err(f) => Answer::Failed(f),
                Ok((csr, usages, ttl)) => match sign::sign(ca, csr, usages, ttl).await {
                    Ok(issued) => Answer::Issued(issued, format!("Certificate issued by {issuer}")),
                    Err(sign::Error::Refused(f)) => Answer::Failed(f),
                    Err(sign::Error::Retry(e)) => return Err(Error::Sign(e)),
                },
            },
        }
    };
    let mut new_status = status.clone();
    let (state, reason, message) = match &answer {
        Answer::Pending(m) => ("False", "Pending", m.clone()),
        Answer::Denied => (
            "False",
            "Denied",
            "The CertificateRequest was denied by an approval controller".into(),
        ),
        Answer::Failed(f) => ("False", "Failed", format!("{}: {}", f.reason, f.message)),
        Answer::Issued(_, m) => ("True", "Issued", m.clone()),
    };
    conditions::set(&mut new_status, "Ready", state, reason, &message, json!({}));
    match answer {
        Answer::Denied | Answer::Failed(_) => new_status["failureTime"] = conditions::now().into(),
        Answer::Issued(issued, _) => {
            let chain = issued.certificate_pem + &issued.intermediates_pem;
            new_status["certificate"] = B64.encode(chain).into();
            new_status["ca"] = B64.encode(issued.root_pem).into();
        }
        Answer::Pending(_) => {
            if conditions::same(
                conditions::find(status, "Ready"),
                conditions::find(&new_status, "Ready"),
            ) {
                return Ok(Action::await_change());
            }
        }
    }
    let mut updated = (*cr).clone();
    updated.data["status"] = new_status;
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &namespace, &resource());
    // Decided on this resourceVersion; a request changed meanwhile is looked at again.
    api.replace_status(&cr.name_any(), &PostParams::default(), &updated)
        .await?;
    tracing::info!(request = %format!("{namespace}/{}", cr.name_any()), reason, "CertificateRequest answered");
    Ok(Action::await_change())
}

/// The CSR, usages and lifetime of a request, under its issuer's policy.
fn decide(
    spec: &Value,
    issuer: &crate::spec::IssuerSpec,
) -> Result<(Vec<u8>, Vec<trellis_ca::request::Usage>, Duration), Failure> {
    let invalid = |message: String| Failure {
        reason: "InvalidRequest",
        message,
    };
    let csr = spec["request"]
        .as_str()
        .and_then(|r| B64.decode(r).ok())
        .ok_or_else(|| invalid("spec.request is not base64 of a PEM CSR".into()))?;
    let ttl = match spec["duration"].as_str() {
        None => None,
        Some(d) => Some(
            trellis_config::parse_duration(d)
                .map_err(|e| invalid(format!("spec.duration: {e}")))?,
        ),
    };
    let usages: Vec<String> = spec["usages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|u| u.as_str().map(str::to_string))
        .collect();
    let is_ca = spec["isCA"] == true;
    let (usages, ttl) = policy::decide(issuer, &usages, ttl, is_ca)?;
    Ok((csr, usages, ttl))
}
