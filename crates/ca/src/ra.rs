//! RA mode, as istiod's `EXTERNAL_CA=ISTIOD_RA_KUBERNETES_API`: the CA authenticates the
//! workload as always, checks that the CSR names exactly that identity, and forwards it
//! to the Kubernetes certificates API as a CertificateSigningRequest for a signer (the
//! configured one, or per workload the request's `CertSigner` metadata under the signer
//! domain, as Istio's `CERT_SIGNER` proxy metadata and `CERT_SIGNER_DOMAIN`). It approves
//! the request itself (the control plane is the approver of the workloads it
//! authenticated), waits for the signer's certificate, deletes the request, checks the
//! certificate (the CSR's key, the caller's identity, a chain to a configured signer
//! root) and returns the chain ending in that root.

use std::time::Duration;

use boring::nid::Nid;
use boring::x509::store::X509StoreBuilder;
use boring::x509::{X509Req, X509StoreContext, X509};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::Api;
use trellis_tls::SpiffeId;

use crate::error::SignError;
use crate::request::verified_csr;
use crate::workload_attestation::WorkloadAttestation;

/// The usages a workload certificate is asked for: TLS both ways.
const USAGES: &[&str] = &[
    "digital signature",
    "key encipherment",
    "server auth",
    "client auth",
];

/// The Kubernetes API refuses shorter CSRs.
const MIN_TTL: Duration = Duration::from_secs(600);

#[derive(Clone, Debug)]
pub struct RaConfig {
    /// The signer workloads' CSRs go to (`clusterissuers.trellis.io/mesh`).
    pub signer: String,
    /// With it, a request's `CertSigner` metadata picks `<domain>/<CertSigner>`.
    pub signer_domain: Option<String>,
    /// The signers' roots (PEM): what issued chains must end in, and what workloads trust.
    pub roots: std::path::PathBuf,
    /// How long to wait for a signer's certificate.
    pub timeout: Duration,
    /// A key file for [`crate::workload_attestation::InsecureTestDoubleQuotes`]: workloads
    /// must present a test-double quote before their CSRs are approved. Not security;
    /// for tests where there is no SGX.
    pub insecure_test_double_quotes: Option<std::path::PathBuf>,
}

pub struct KubernetesRa {
    api: Api<CertificateSigningRequest>,
    config: RaConfig,
    roots: Vec<X509>,
    attestation: Option<Box<dyn WorkloadAttestation>>,
}

/// Names in a CSR's subjectAltName: (GeneralName tag, value).
/// Every name (tag, value) of the CSR's subjectAltName extensions.
pub(crate) fn csr_names(csr: &X509Req) -> Result<crate::der::Names, SignError> {
    let mut out = Vec::new();
    for ext in csr.extensions().into_iter().flatten() {
        match crate::der::general_names(&ext.to_der()?) {
            Ok(Some(names)) => out.extend(names),
            Ok(None) => {}
            Err(()) => return Err(SignError::MalformedCsr),
        }
    }
    Ok(out)
}

/// The CSR must name exactly `identity` (one URI SAN, no other name, no common name):
/// the signer copies what the CSR names, so it must name nothing the caller is not.
fn names_only(csr: &X509Req, identity: &SpiffeId) -> Result<(), SignError> {
    let want = identity.to_string();
    let names = csr_names(csr)?;
    let only_uri = matches!(names.as_slice(), [(0x86, uri)] if uri == want.as_bytes());
    if !only_uri {
        return Err(SignError::NotTheCaller(format!(
            "in RA mode the CSR must name exactly the caller's identity {want} (one URI SAN), as Istio's agent writes it"
        )));
    }
    if csr
        .subject_name()
        .entries()
        .any(|e| e.object().nid() != Nid::ORGANIZATIONNAME)
    {
        return Err(SignError::NotTheCaller(
            "in RA mode the CSR's subject may hold an organization only".into(),
        ));
    }
    Ok(())
}

impl KubernetesRa {
    pub fn new(client: kube::Client, config: RaConfig) -> anyhow::Result<KubernetesRa> {
        let pem = std::fs::read(&config.roots)
            .map_err(|e| anyhow::anyhow!("--signer-root {}: {e}", config.roots.display()))?;
        let roots = X509::stack_from_pem(&pem)
            .ok()
            .filter(|r| !r.is_empty())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "--signer-root {}: no PEM certificate",
                    config.roots.display()
                )
            })?;
        let attestation = match &config.insecure_test_double_quotes {
            None => None,
            Some(path) => {
                let key = std::fs::read(path).map_err(|e| {
                    anyhow::anyhow!(
                        "--insecure-test-double-workload-quotes {}: {e}",
                        path.display()
                    )
                })?;
                tracing::warn!("workload attestation by an INSECURE TEST DOUBLE of SGX quote verification: for tests only");
                Some(
                    Box::new(crate::workload_attestation::InsecureTestDoubleQuotes::new(
                        key,
                    )?) as Box<dyn WorkloadAttestation>,
                )
            }
        };
        if !config.signer.contains('/') {
            anyhow::bail!(
                "--signer {:?}: a Kubernetes signer name is <domain>/<path>",
                config.signer
            );
        }
        Ok(KubernetesRa {
            api: Api::all(client),
            config,
            roots,
            attestation,
        })
    }

    pub fn roots(&self) -> &[X509] {
        &self.roots
    }

    /// The signer for a request: its `CertSigner` under the signer domain, or the
    /// configured signer.
    fn signer_for(&self, cert_signer: Option<&str>) -> Result<String, SignError> {
        match (cert_signer.filter(|s| !s.is_empty()), &self.config.signer_domain) {
            (None, _) => Ok(self.config.signer.clone()),
            (Some(s), Some(domain)) if !s.contains('/') => Ok(format!("{domain}/{s}")),
            (Some(s), _) => Err(SignError::NotTheCaller(format!(
                "CertSigner {s:?} is not allowed (the control plane has no --signer-domain, or the name holds a '/')"
            ))),
        }
    }

    /// The chain for `identity`'s CSR, leaf first, the signer's root last.
    pub async fn sign(
        &self,
        csr_pem: &str,
        identity: &SpiffeId,
        ttl: Duration,
        cert_signer: Option<&str>,
        evidence: Option<&[u8]>,
    ) -> Result<Vec<String>, SignError> {
        let (csr, key) = verified_csr(csr_pem.as_bytes())?;
        names_only(&csr, identity)?;
        let attested = match &self.attestation {
            None => String::new(),
            Some(a) => {
                a.check(identity, &key.public_key_to_der()?, evidence)
                    .map_err(|e| {
                        SignError::NotTheCaller(format!("workload attestation ({}): {e}", a.name()))
                    })?;
                format!("; attested by {}", a.name())
            }
        };
        let signer = self.signer_for(cert_signer)?;
        use base64::Engine as _;
        let object: CertificateSigningRequest = serde_json::from_value(serde_json::json!({
            "apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
            "metadata": {"generateName": "csr-workload-"},
            "spec": {"request": base64::engine::general_purpose::STANDARD.encode(csr_pem),
                     "signerName": signer, "usages": USAGES,
                     "expirationSeconds": ttl.max(MIN_TTL).as_secs()}
        }))
        .map_err(|e| SignError::Internal(e.to_string()))?;
        let upstream = |what: &str, e: kube::Error| SignError::Upstream(format!("{what}: {e}"));
        let created = self
            .api
            .create(&PostParams::default(), &object)
            .await
            .map_err(|e| upstream("creating the CertificateSigningRequest", e))?;
        let name = created.metadata.name.clone().unwrap_or_default();
        let result = self.approve_and_wait(&name, identity, &attested).await;
        if let Err(e) = self.api.delete(&name, &DeleteParams::default()).await {
            tracing::warn!(csr = %name, "deleting the answered CertificateSigningRequest: {e}");
        }
        let chain = result?;
        self.checked(chain, &key, identity)
    }

    async fn approve_and_wait(
        &self,
        name: &str,
        identity: &SpiffeId,
        attested: &str,
    ) -> Result<Vec<u8>, SignError> {
        let approval = serde_json::json!({"status": {"conditions": [{
            "type": "Approved", "status": "True", "reason": "TrellisRA",
            "message": format!("approved by the Trellis control plane for {identity}, whom it authenticated{attested}"),
            "lastUpdateTime": k8s_openapi::jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        }]}});
        self.api
            .patch_approval(name, &PatchParams::default(), &Patch::Merge(approval))
            .await
            .map_err(|e| {
                SignError::Upstream(format!("approving CertificateSigningRequest {name}: {e}"))
            })?;
        let answered = |c: Option<&CertificateSigningRequest>| {
            c.and_then(|c| c.status.as_ref()).is_some_and(|s| {
                s.certificate.is_some()
                    || s.conditions.iter().flatten().any(|c| {
                        matches!(c.type_.as_str(), "Failed" | "Denied") && c.status == "True"
                    })
            })
        };
        let waited = tokio::time::timeout(
            self.config.timeout,
            kube::runtime::wait::await_condition(self.api.clone(), name, answered),
        )
        .await
        .map_err(|_| {
            SignError::Upstream(format!(
                "the signer did not answer CertificateSigningRequest {name} within {:?}",
                self.config.timeout
            ))
        })?
        .map_err(|e| {
            SignError::Upstream(format!("watching CertificateSigningRequest {name}: {e}"))
        })?;
        let status = waited.and_then(|c| c.status).unwrap_or_default();
        if let Some(cert) = status.certificate {
            return Ok(cert.0);
        }
        let why = status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.status == "True" && matches!(c.type_.as_str(), "Failed" | "Denied"))
            .map(|c| {
                format!(
                    "{} ({}): {}",
                    c.type_,
                    c.reason.clone().unwrap_or_default(),
                    c.message.clone().unwrap_or_default()
                )
            })
            .unwrap_or_default();
        Err(SignError::Upstream(format!(
            "the signer refused CertificateSigningRequest {name}: {why}"
        )))
    }

    /// The issued chain, if it is for the CSR's key and the caller's identity and chains
    /// to a configured root; with that root appended.
    fn checked(
        &self,
        pem: Vec<u8>,
        key: &boring::pkey::PKeyRef<boring::pkey::Public>,
        identity: &SpiffeId,
    ) -> Result<Vec<String>, SignError> {
        let bad = |why: String| SignError::Upstream(format!("the signer's certificate: {why}"));
        let certs = X509::stack_from_pem(&pem).map_err(|e| bad(e.to_string()))?;
        let leaf = certs.first().ok_or_else(|| bad("empty".into()))?;
        if !leaf.public_key().is_ok_and(|p| p.public_eq(key)) {
            return Err(bad("it is for another key".into()));
        }
        let want = identity.to_string();
        let uris: Vec<String> = leaf
            .subject_alt_names()
            .into_iter()
            .flatten()
            .filter_map(|n| n.uri().map(str::to_string))
            .collect();
        if uris != [want.clone()] {
            return Err(bad(format!("it names {uris:?}, not {want}")));
        }
        let mut store = X509StoreBuilder::new()?;
        for r in &self.roots {
            store.add_cert(r.clone())?;
        }
        let store = store.build();
        let mut untrusted = boring::stack::Stack::new()?;
        for c in &certs[1..] {
            untrusted.push(c.clone())?;
        }
        let mut ctx = X509StoreContext::new()?;
        let root = ctx
            .init(&store, leaf, &untrusted, |c| {
                if !c.verify_cert()? {
                    return Ok(None);
                }
                Ok(c.chain()
                    .and_then(|ch| ch.iter().next_back().map(|r| r.to_owned())))
            })?
            .ok_or_else(|| bad("it does not chain to a --signer-root".into()))?;
        let mut out = Vec::new();
        for c in certs.iter().chain(std::iter::once(&root)) {
            out.push(crate::authority::pem(c)?);
        }
        Ok(out)
    }
}
