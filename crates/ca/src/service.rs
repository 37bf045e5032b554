//! `CreateCertificate`: authenticate the caller, then sign its CSR for its identity.
//!
//! Callers authenticate with, in order: a bearer token in the `authorization` metadata
//! (a Trellis bootstrap token, or a Kubernetes ServiceAccount token checked with a
//! TokenReview), or the client certificate of the mTLS connection (renewal with a
//! certificate this CA issued). The identity comes from that proof, never from the CSR.

use crate::authority::SignError;
use crate::kube::TokenReviewer;
use crate::proto::istio_certificate_service_server::IstioCertificateService;
use crate::proto::{IstioCertificateRequest, IstioCertificateResponse};
use crate::tenancy::{Tenancy, TenantCa};
use crate::token::TokenIssuer;
use arc_swap::ArcSwap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status};
use trellis_tls::SpiffeId;

/// The verified identity of the mTLS client certificate, if the caller sent one.
#[derive(Clone, Debug, Default)]
pub struct PeerIdentity(pub Option<String>);

#[derive(Default)]
pub struct CaCounters {
    pub issued: AtomicU64,
    pub refused: AtomicU64,
    /// Refused because the caller asked for another tenant's identity or trust domain
    /// (also counted in `refused`).
    pub cross_tenant: AtomicU64,
    /// When the last certificate issued for each identity (SPIFFE ID) expires, in Unix
    /// seconds: what the control plane's dashboard shows per workload.
    pub expiries: std::sync::Mutex<std::collections::BTreeMap<String, i64>>,
}

pub struct CaService {
    /// The tenants: whose authority signs for a caller's namespace.
    pub tenancy: Arc<ArcSwap<Tenancy>>,
    /// RA mode: workloads' CSRs go to a Kubernetes signer instead of `authority`.
    pub ra: Option<Arc<crate::ra::KubernetesRa>>,
    pub tokens: Arc<TokenIssuer>,
    pub kube: Option<Arc<TokenReviewer>>,
    pub counters: Arc<CaCounters>,
}

impl CaService {
    /// Who is asking, and with what: `bootstrap-token` (the token, which is bound to
    /// the CSR's key once the certificate is ready), `kubernetes-token` or
    /// `client-certificate`.
    async fn authenticate<'r, T>(
        &self,
        req: &'r Request<T>,
    ) -> Result<(SpiffeId, &'static str, Option<&'r str>), Status> {
        let bearer = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        let (id, how, bootstrap) = match bearer {
            Some(token) if TokenIssuer::is_ours(token) => {
                let id = self
                    .tokens
                    .verify(token)
                    .map_err(|e| Status::unauthenticated(format!("bootstrap token: {e}")))?;
                (id, "bootstrap-token", Some(token))
            }
            Some(token) => {
                let Some(kube) = &self.kube else {
                    return Err(Status::unauthenticated(
                        "bearer token is not a Trellis bootstrap token and Kubernetes authentication is not configured",
                    ));
                };
                let id = kube
                    .review(token)
                    .await
                    .map_err(|e| Status::unauthenticated(e.to_string()))?;
                (id, "kubernetes-token", None)
            }
            None => {
                let peer = req
                    .extensions()
                    .get::<PeerIdentity>()
                    .and_then(|p| p.0.clone())
                    .ok_or_else(|| {
                        Status::unauthenticated(
                            "no bearer token and no client certificate from this CA",
                        )
                    })?;
                let id = SpiffeId::parse(&peer)
                    .map_err(|e| Status::unauthenticated(format!("client certificate: {e}")))?;
                (id, "client-certificate", None)
            }
        };
        Ok((id, how, bootstrap))
    }

    /// The tenant that signs for `id` (by its namespace) and the identity it issues.
    /// A Kubernetes token proves a namespace and service account: the trust domain is
    /// the tenant's. A bootstrap token names a whole identity, and a renewing
    /// certificate chained to its trust domain's roots in the handshake: their trust
    /// domain must be the tenant's of their namespace.
    fn tenant_identity(
        &self,
        id: SpiffeId,
        how: &str,
    ) -> Result<(Arc<TenantCa>, SpiffeId), Status> {
        let tenancy = self.tenancy.load();
        let tenant = tenancy.tenant_for(&id.namespace).clone();
        if how != "kubernetes-token" && id.trust_domain != tenant.trust_domain {
            self.counters.cross_tenant.fetch_add(1, Ordering::Relaxed);
            return Err(Status::permission_denied(format!(
                "identity {id} is not in trust domain {:?} of tenant {:?}, whose namespace {} is",
                tenant.trust_domain, tenant.name, id.namespace
            )));
        }
        let issued = SpiffeId::new(&tenant.trust_domain, &id.namespace, &id.service_account);
        Ok((tenant, issued))
    }

    /// Istio's `CERT_SIGNER` metadata, when sent, must be the caller's tenant's signer
    /// (RA mode passes the default tenant's on to its Kubernetes signer instead).
    fn signer_is_the_tenants(&self, tenant: &TenantCa, asked: Option<&str>) -> Result<(), Status> {
        let Some(asked) = asked else {
            return Ok(());
        };
        if self.ra.is_some() && tenant.name == "default" {
            return Ok(());
        }
        if tenant.cert_signer.as_deref() == Some(asked) {
            return Ok(());
        }
        self.counters.cross_tenant.fetch_add(1, Ordering::Relaxed);
        let tenancy = self.tenancy.load();
        let whose = tenancy
            .all()
            .find(|t| t.cert_signer.as_deref() == Some(asked))
            .map(|t| format!("tenant {:?}'s signer", t.name))
            .unwrap_or_else(|| "no tenant's signer".into());
        Err(Status::permission_denied(format!(
            "CERT_SIGNER {asked:?} is {whose}; the caller is of tenant {:?}",
            tenant.name
        )))
    }

    /// The CA issues for the caller's identity whatever the CSR names; but a CSR that
    /// names an identity of another trust domain, or of a namespace of another tenant,
    /// is an attempt to cross tenants: refused and counted.
    fn csr_stays_in_tenant(&self, csr: &str, identity: &SpiffeId) -> Result<(), Status> {
        let req = boring::x509::X509Req::from_pem(csr.as_bytes())
            .map_err(|_| Status::invalid_argument(SignError::MalformedCsr.to_string()))?;
        let names =
            crate::ra::csr_names(&req).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let tenancy = self.tenancy.load();
        let mine = &tenancy.tenant_for(&identity.namespace).name;
        for (tag, value) in names {
            // URI SANs: SPIFFE IDs. Other names never reach the certificate.
            if tag != 0x86 {
                continue;
            }
            let Ok(asked) = SpiffeId::parse(&String::from_utf8_lossy(&value)) else {
                continue;
            };
            let other_domain = asked.trust_domain != identity.trust_domain;
            let other_tenant = &tenancy.tenant_for(&asked.namespace).name != mine;
            if other_domain || other_tenant {
                self.counters.cross_tenant.fetch_add(1, Ordering::Relaxed);
                let whose = tenancy
                    .of_trust_domain(&asked.trust_domain)
                    .map(|t| t.name.clone())
                    .unwrap_or_else(|| tenancy.tenant_for(&asked.namespace).name.clone());
                return Err(Status::permission_denied(format!(
                    "the CSR asks for {asked} (tenant {whose:?}); the caller is {identity} of tenant {mine:?}"
                )));
            }
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl IstioCertificateService for CaService {
    async fn create_certificate(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        let result: Result<Vec<String>, Status> = async {
            let (authenticated, how, bootstrap) = self.authenticate(&request).await?;
            let (tenant, identity) = self.tenant_identity(authenticated, how)?;
            let req = request.get_ref();
            self.csr_stays_in_tenant(&req.csr, &identity)?;
            self.signer_is_the_tenants(&tenant, metadata(req, "CertSigner"))?;
            let requested = (req.validity_duration > 0)
                .then(|| Duration::from_secs(req.validity_duration as u64));
            let signed = match &self.ra {
                Some(ra) => {
                    let max = tenant.authority.max_ttl;
                    let ttl = requested.unwrap_or(max).min(max);
                    let evidence = metadata(req, "WorkloadQuote").and_then(|q| {
                        use base64::Engine as _;
                        base64::engine::general_purpose::STANDARD.decode(q).ok()
                    });
                    ra.sign(
                        &req.csr,
                        &identity,
                        ttl,
                        metadata(req, "CertSigner"),
                        evidence.as_deref(),
                    )
                    .await
                }
                None => {
                    // Off the runtime's threads: with a key in a token, signing is a token call.
                    let (authority, csr, id) =
                        (tenant.authority.clone(), req.csr.clone(), identity.clone());
                    tokio::task::spawn_blocking(move || authority.sign_csr(&csr, &id, requested))
                        .await
                        .map_err(|e| Status::internal(e.to_string()))?
                }
            };
            let chain = signed.map_err(|e| match e {
                SignError::Internal(_) => Status::internal(e.to_string()),
                SignError::Upstream(_) => Status::unavailable(e.to_string()),
                SignError::NotTheCaller(_) => Status::permission_denied(e.to_string()),
                _ => Status::invalid_argument(e.to_string()),
            })?;
            if let Some(token) = bootstrap {
                self.tokens
                    .bind(token, csr_key_hash(&req.csr)?)
                    .map_err(|e| Status::unauthenticated(format!("bootstrap token: {e}")))?;
            }
            tracing::info!(%identity, auth = how, tenant = %tenant.name, "issued workload certificate");
            let leaf = chain
                .first()
                .and_then(|pem| boring::x509::X509::from_pem(pem.as_bytes()).ok());
            if let Some(leaf) = leaf {
                let expiry = crate::authority::asn1_unix(leaf.not_after());
                let mut expiries = self.counters.expiries.lock().unwrap_or_else(|e| e.into_inner());
                expiries.insert(identity.to_string(), expiry);
            }
            Ok(chain)
        }
        .await;
        match result {
            Ok(cert_chain) => {
                self.counters.issued.fetch_add(1, Ordering::Relaxed);
                Ok(Response::new(IstioCertificateResponse { cert_chain }))
            }
            Err(status) => {
                self.counters.refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(code = ?status.code(), "certificate request refused: {}", status.message());
                Err(status)
            }
        }
    }
}

/// A string field of a request's metadata: `CertSigner` (Istio's `CERT_SIGNER` proxy
/// metadata), `WorkloadQuote` (attestation evidence, base64).
fn metadata<'r>(req: &'r IstioCertificateRequest, key: &str) -> Option<&'r str> {
    let field = req.metadata.as_ref()?.fields.get(key)?;
    match field.kind.as_ref()? {
        prost_types::value::Kind::StringValue(s) => Some(s),
        _ => None,
    }
}

/// SHA-256 of a PEM CSR's SubjectPublicKeyInfo.
fn csr_key_hash(csr: &str) -> Result<[u8; 32], Status> {
    let bad = |e: boring::error::ErrorStack| Status::invalid_argument(format!("csr: {e}"));
    let req = boring::x509::X509Req::from_pem(csr.as_bytes()).map_err(bad)?;
    let der = req
        .public_key()
        .and_then(|k| k.public_key_to_der())
        .map_err(bad)?;
    Ok(boring::sha::sha256(&der))
}
